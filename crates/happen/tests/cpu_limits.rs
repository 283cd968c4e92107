//! CPU-bound flows obey admission limits; panics and cancellation in CPU work.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use futures::FutureExt;
use happen::{Config, Context, ErrorKind, Event, Happen, NodeOptions};
use serde_json::json;
use tokio::sync::mpsc;
use tokio::time::timeout;

mod support;
use support::quiet_intentional_panics;
use support::{Latch, OpenOnDrop};

const T: Duration = Duration::from_secs(10);

fn happen_with_cpu_threads(n: usize) -> Happen {
    let mut config = Config::default();
    config.cpu.threads = Some(n);
    Happen::with_config(config).unwrap()
}

#[tokio::test]
async fn cpu_flows_obey_max_concurrent_and_queue_limit() {
    // More pool threads than max_concurrent: only admission can hold the work back.
    let happen = happen_with_cpu_threads(4);
    let node = happen
        .node_with(
            "cruncher",
            NodeOptions::new().max_concurrent(2).queue_limit(5),
        )
        .await
        .unwrap();
    let client = happen.node("client").await.unwrap();
    let gate = Arc::new(Latch::default());
    let _open_at_end = OpenOnDrop(gate.clone());
    let running = Arc::new(AtomicUsize::new(0));
    let high_water = Arc::new(AtomicUsize::new(0));
    let (started_tx, mut started_rx) = mpsc::unbounded_channel::<u64>();
    {
        let (gate, running, high_water) = (gate.clone(), running.clone(), high_water.clone());
        node.on("crunch", move |event: Event, ctx: Context| {
            let (gate, running, high_water) = (gate.clone(), running.clone(), high_water.clone());
            let started_tx = started_tx.clone();
            async move {
                let n = event.payload().as_u64().unwrap_or(0);
                ctx.cpu(move || {
                    let now = running.fetch_add(1, SeqCst) + 1;
                    high_water.fetch_max(now, SeqCst);
                    let _ = started_tx.send(n);
                    gate.wait();
                    running.fetch_sub(1, SeqCst);
                    n * n
                })
                .await
            }
        })
        .unwrap();
    }

    // 20 sends at once: 2 run, 5 wait, 13 are rejected.
    let mut replies: Vec<_> = (0..20u64)
        .map(|i| std::future::IntoFuture::into_future(client.send(&node, Event::new("crunch", i))))
        .collect();

    // The first two reach the pool and hold it.
    let mut first = Vec::new();
    for _ in 0..2 {
        first.push(timeout(T, started_rx.recv()).await.unwrap().unwrap());
    }
    first.sort_unstable();
    assert_eq!(first, [0, 1]);
    let stats = node.stats();
    assert_eq!(
        (stats.active, stats.queued, stats.accepted, stats.rejected),
        (2, 5, 7, 13),
        "{stats:?}"
    );
    // The rejections are answered at once, while the CPU work is still held.
    for (i, reply) in replies.iter_mut().enumerate() {
        let now = reply.now_or_never();
        if i < 7 {
            assert!(
                now.is_none(),
                "reply {i} resolved while the work is held: {now:?}"
            );
        } else {
            let err = now
                .unwrap_or_else(|| panic!("reply {i} should be rejected at once"))
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::QueueFull, "reply {i}: {err}");
            assert_eq!(err.limit(), Some(5));
        }
    }
    assert!(started_rx.try_recv().is_err(), "a third CPU job started");

    gate.open();
    for (i, reply) in replies.into_iter().enumerate().take(7) {
        let v = timeout(T, reply).await.unwrap().unwrap();
        assert_eq!(v, json!(i * i), "reply {i}");
    }
    assert_eq!(high_water.load(SeqCst), 2, "CPU jobs running at once");
    let stats = node.stats();
    assert_eq!((stats.active, stats.completed), (0, 7), "{stats:?}");
}

#[tokio::test]
async fn a_panic_in_cpu_work_is_a_panic_error_and_the_node_survives() {
    quiet_intentional_panics();
    let happen = happen_with_cpu_threads(1);
    let node = happen.node("cruncher").await.unwrap();
    node.on("boom", |_e: Event, ctx: Context| async move {
        ctx.cpu(|| -> u64 { panic!("intentional panic in CPU work") })
            .await
    })
    .unwrap();
    node.on(
        "square",
        happen::cpu::cpu_bound(|e: Event| {
            let n = e.payload().as_u64().unwrap_or(0);
            n * n
        }),
    )
    .unwrap();
    let client = happen.node("client").await.unwrap();

    let err = timeout(T, client.send(&node, Event::new("boom", ())))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Panic, "{err}");
    assert!(
        err.message().contains("intentional panic in CPU work"),
        "{err}"
    );

    // The node, and the one pool thread, keep serving.
    for n in [3u64, 12] {
        let v = timeout(T, client.send(&node, Event::new("square", n)))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(v, n * n);
    }
    let stats = node.stats();
    assert_eq!((stats.completed, stats.failed), (2, 1), "{stats:?}");
}

#[tokio::test]
async fn cpu_work_cancelled_before_it_starts_never_runs() {
    // One pool thread, held by a blocking job: later jobs wait in the pool's queue.
    let happen = happen_with_cpu_threads(1);
    let node = happen.node("cruncher").await.unwrap();
    let gate = Arc::new(Latch::default());
    let _open_at_end = OpenOnDrop(gate.clone());
    let ran = Arc::new(AtomicUsize::new(0));
    let (started_tx, mut started_rx) = mpsc::unbounded_channel::<()>();

    let g = gate.clone();
    node.on("block", move |_e: Event, ctx: Context| {
        let (gate, started_tx) = (g.clone(), started_tx.clone());
        async move {
            ctx.cpu(move || {
                let _ = started_tx.send(());
                gate.wait();
                "unblocked"
            })
            .await
        }
    })
    .unwrap();
    let r = ran.clone();
    // Waits `payload` ms for its CPU work; answers whether it gave up.
    node.on("maybe", move |e: Event, ctx: Context| {
        let ran = r.clone();
        async move {
            let wait = Duration::from_millis(e.payload().as_u64().unwrap_or(0));
            let outcome = timeout(
                wait,
                ctx.cpu(move || {
                    ran.fetch_add(1, SeqCst);
                }),
            )
            .await;
            match outcome {
                Ok(done) => done.map(|()| json!("ran")),
                Err(_) => Ok(json!("gave up")),
            }
        }
    })
    .unwrap();
    node.on("drain", |_e: Event, ctx: Context| async move {
        ctx.cpu(|| "drained").await
    })
    .unwrap();
    let client = happen.node("client").await.unwrap();

    let blocked = client.send(&node, Event::new("block", ()));
    timeout(T, started_rx.recv())
        .await
        .expect("the blocking job started")
        .unwrap();

    // Its CPU work is queued behind the blocking job; the timeout drops the awaiting future.
    let v = timeout(T, client.send(&node, Event::new("maybe", 50)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v, "gave up");

    // Queue a job behind the cancelled one, then free the pool. The pool runs its jobs in
    // order, so when `drain` answers, the cancelled job has been taken off the queue.
    let drained = client.send(&node, Event::new("drain", ()));
    gate.open();
    assert_eq!(timeout(T, blocked).await.unwrap().unwrap(), "unblocked");
    assert_eq!(timeout(T, drained).await.unwrap().unwrap(), "drained");
    assert_eq!(ran.load(SeqCst), 0, "cancelled CPU work ran");

    // Control: the same work, not cancelled, does run (so the counter can move).
    let v = timeout(T, client.send(&node, Event::new("maybe", 5_000)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v, "ran");
    assert_eq!(ran.load(SeqCst), 1);
}
