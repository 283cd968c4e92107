//! The engine keeps events apart: a handler that blocks its thread, or user code the engine
//! calls (lane-key functions, pattern predicates) that panics, affects only its own event,
//! and one node's flows run on every worker within `max_concurrent`.

use std::future::IntoFuture;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use happen::pattern::Pattern;
use happen::{Context, ErrorKind, Event, Happen, NodeOptions, SequentialKey};
use tokio::sync::oneshot;
use tokio::time::timeout;

mod support;
use support::{Latch, OpenOnDrop, quiet_intentional_panics};

const T: Duration = Duration::from_secs(30);

/// Registers `block` (tells `started`, then blocks its thread on the latch — before or after
/// its first await) and `fast` (answers at once) on one node.
async fn blocking_node(
    happen: &Happen,
    after_an_await: bool,
) -> (happen::Node, Arc<Latch>, oneshot::Receiver<()>) {
    let node = happen.node("shared").await.unwrap();
    let latch = Arc::new(Latch::default());
    let (started_tx, started_rx) = oneshot::channel();
    let started_tx = Mutex::new(Some(started_tx));
    let l = latch.clone();
    node.on("block", move |_e: Event, _c: Context| {
        let l = l.clone();
        let started = started_tx.lock().unwrap().take();
        async move {
            if after_an_await {
                tokio::task::yield_now().await;
            }
            if let Some(tx) = started {
                let _ = tx.send(());
            }
            l.wait(); // blocks this worker thread until the test opens the latch
            "unblocked"
        }
    })
    .unwrap();
    node.on("fast", |_e: Event, _c: Context| async { "fast" })
        .unwrap();
    (node, latch, started_rx)
}

async fn a_blocked_thread_stalls_only_its_worker(after_an_await: bool) {
    let happen = Happen::new();
    let (node, latch, started) = blocking_node(&happen, after_an_await).await;
    let _guard = OpenOnDrop(latch.clone());
    let client = happen.node("client").await.unwrap();

    let blocked = client.send(&node, Event::new("block", ()));
    timeout(T, started).await.unwrap().unwrap();
    // One worker is now stuck inside `block`. Events at the same node still run on the other.
    for _ in 0..100 {
        let v = timeout(T, client.send(&node, Event::new("fast", ())))
            .await
            .expect("a fast event at the same node waited for the blocked one")
            .unwrap();
        assert_eq!(v, "fast");
    }
    latch.open();
    assert_eq!(timeout(T, blocked).await.unwrap().unwrap(), "unblocked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_blocking_before_its_first_await_stalls_only_its_worker() {
    a_blocked_thread_stalls_only_its_worker(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_blocking_after_an_await_stalls_only_its_worker() {
    a_blocked_thread_stalls_only_its_worker(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_lane_key_fails_only_that_event() {
    quiet_intentional_panics();
    let happen = Happen::new();
    let key = SequentialKey::by(|e: &Event| {
        if e.payload()["boom"] == true {
            panic!("intentional panic in a lane key");
        }
        e.payload()["key"].as_str().unwrap_or("none").to_owned()
    });
    let node = happen
        .node_with("laned", NodeOptions::new().sequential(key))
        .await
        .unwrap();
    node.on("work", |e: Event, _c: Context| async move {
        e.payload()["n"].clone()
    })
    .unwrap();
    let client = happen.node("client").await.unwrap();

    let err = timeout(
        T,
        client.send(&node, Event::new("work", serde_json::json!({"boom": true}))),
    )
    .await
    .unwrap()
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Panic, "{err}");
    assert!(err.message().contains("intentional"), "{err}");
    let tell = client.tell(&node, Event::new("work", serde_json::json!({"boom": true})));
    assert_eq!(tell.unwrap_err().kind(), ErrorKind::Panic);

    let replies: Vec<_> = (0..1_000)
        .map(|n| {
            let key = format!("k{}", n % 10);
            client
                .send(
                    &node,
                    Event::new("work", serde_json::json!({"key": key, "n": n})),
                )
                .into_future()
        })
        .collect();
    let out = timeout(T, futures::future::join_all(replies))
        .await
        .unwrap();
    for (n, r) in out.into_iter().enumerate() {
        assert_eq!(r.unwrap(), n, "event {n} after the panic");
    }
    // The two events whose key panicked were refused at admission, never accepted.
    support::wait_until("all counted", || node.stats().completed == 1_000).await;
    let stats = node.stats();
    assert_eq!(
        (stats.accepted, stats.rejected, stats.failed),
        (1_000, 2, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_pattern_predicate_fails_only_that_event() {
    quiet_intentional_panics();
    let happen = Happen::new();
    let node = happen.node("predicated").await.unwrap();
    node.on(
        Pattern::predicate(|t| {
            if t == "explode" {
                panic!("intentional panic in a predicate");
            }
            t.starts_with("work")
        }),
        |e: Event, _c: Context| async move { e.payload().clone() },
    )
    .unwrap();
    let client = happen.node("client").await.unwrap();

    let err = timeout(T, client.send(&node, Event::new("explode", ())))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Panic, "{err}");
    assert!(err.message().contains("intentional"), "{err}");

    let replies: Vec<_> = (0..1_000)
        .map(|n| client.send(&node, Event::new("work.item", n)).into_future())
        .collect();
    let out = timeout(T, futures::future::join_all(replies))
        .await
        .unwrap();
    for (n, r) in out.into_iter().enumerate() {
        assert_eq!(r.unwrap(), n, "event {n} after the panic");
    }
    // A broadcast asks the same predicate whether the node accepts it: a panic there is
    // "no", never a dead caller.
    node.broadcast(Event::new("explode", ())).unwrap();
    assert_eq!(
        timeout(T, client.send(&node, Event::new("work.last", 7)))
            .await
            .unwrap()
            .unwrap(),
        7
    );
}

/// Counts running handlers and keeps the high-water mark.
#[derive(Default)]
struct Gauge {
    now: AtomicUsize,
    peak: AtomicUsize,
    done: AtomicU64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_producers_never_see_more_than_max_concurrent_and_lose_nothing() {
    const PRODUCERS: u64 = 8;
    const EACH: u64 = 100_000;
    let happen = Happen::new();
    let node = happen
        .node_with("four", NodeOptions::new().max_concurrent(4))
        .await
        .unwrap();
    let gauge = Arc::new(Gauge::default());
    let g = gauge.clone();
    node.on("tick", move |e: Event, _c: Context| {
        let g = g.clone();
        async move {
            let n = g.now.fetch_add(1, Ordering::SeqCst) + 1;
            g.peak.fetch_max(n, Ordering::SeqCst);
            // One in four waits, so flows also run in their own tasks, on both workers.
            if e.payload().as_u64().unwrap_or(0).is_multiple_of(4) {
                tokio::task::yield_now().await;
            }
            g.now.fetch_sub(1, Ordering::SeqCst);
            g.done.fetch_add(1, Ordering::SeqCst);
        }
    })
    .unwrap();

    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let (happen, node) = (happen.clone(), node.clone());
            tokio::spawn(async move {
                let me = happen.node(format!("producer-{p}")).await.unwrap();
                let mut rejected = 0u64;
                for i in 0..EACH {
                    loop {
                        match me.tell(&node, Event::new("tick", i)) {
                            Ok(()) => break,
                            Err(e) if e.kind() == ErrorKind::QueueFull => {
                                rejected += 1;
                                tokio::task::yield_now().await;
                            }
                            Err(e) => panic!("unexpected error: {e}"),
                        }
                    }
                }
                rejected
            })
        })
        .collect();
    let mut rejected = 0;
    for p in producers {
        rejected += timeout(T * 4, p).await.unwrap().unwrap();
    }
    let total = PRODUCERS * EACH;
    timeout(T * 4, async {
        while gauge.done.load(Ordering::SeqCst) < total {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("every accepted event was handled");
    assert_eq!(gauge.done.load(Ordering::SeqCst), total);
    assert!(
        gauge.peak.load(Ordering::SeqCst) <= 4,
        "peak {}",
        gauge.peak.load(Ordering::SeqCst)
    );
    // The handler counts before its flow finishes: wait for the node's own count.
    support::wait_until("every flow counted", || node.stats().completed == total).await;
    let stats = node.stats();
    assert_eq!(stats.accepted, total);
    assert_eq!(stats.rejected, rejected);
    assert_eq!((stats.active, stats.queued), (0, 0));
}

/// A node whose runtime shuts down under it answers everything it held (`ShutDown`) instead
/// of leaving its senders waiting, and counts the fault.
#[test]
fn a_node_whose_runtime_shuts_down_answers_its_senders() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (happen, node, replies) = rt.block_on(async {
        let happen = Happen::new();
        let node = happen
            .node_with("doomed", NodeOptions::new().max_concurrent(1))
            .await
            .unwrap();
        node.on("hang", |_e: Event, _c: Context| async {
            std::future::pending::<()>().await;
        })
        .unwrap();
        let client = happen.node("client").await.unwrap();
        let replies: Vec<_> = (0..5)
            .map(|_| client.send(&node, Event::new("hang", ())))
            .collect();
        support::wait_until("one running, four queued", || {
            let s = node.stats();
            (s.active, s.queued) == (1, 4)
        })
        .await;
        (happen, node, replies)
    });
    drop(rt); // drops every task: the node's driver and its running flow

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        for (i, r) in replies.into_iter().enumerate() {
            let err = timeout(T, r)
                .await
                .unwrap_or_else(|_| panic!("reply {i} not answered: {:?}", node.stats()))
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::ShutDown, "{err}");
        }
    });
    assert_eq!(node.stats().engine_faults, 1);
    drop(happen);
}
