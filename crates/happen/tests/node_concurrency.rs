//! Events at one node run concurrently, isolated from each other's failures and slowness.

use std::future::IntoFuture;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use happen::{Context, ErrorKind, Event, Happen, NodeOptions};
use serde_json::json;
use tokio::sync::{Barrier, oneshot};
use tokio::time::timeout;

mod support;
use support::quiet_intentional_panics;

const T: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_events_with_panics_and_errors_isolated() {
    quiet_intentional_panics();
    let happen = Happen::new();
    let node = happen
        .node_with("worker", NodeOptions::new().queue_limit(20_000))
        .await
        .unwrap();
    node.on("job", |event: Event, _ctx: Context| async move {
        let i = event.payload()["i"].as_u64().unwrap();
        if i.is_multiple_of(3) {
            tokio::task::yield_now().await;
        }
        if i.is_multiple_of(10) {
            panic!("intentional panic for job {i}");
        }
        if i.is_multiple_of(7) {
            return Err(format!("job {i} failed on purpose"));
        }
        Ok(json!(i * 2))
    })
    .unwrap();
    let client = happen.node("client").await.unwrap();
    const N: u64 = 10_000;
    let replies: Vec<_> = (0..N)
        .map(|i| {
            client
                .send(&node, Event::new("job", json!({"i": i})))
                .into_future()
        })
        .collect();
    let out = timeout(T, futures::future::join_all(replies))
        .await
        .unwrap();
    let (mut ok, mut panics, mut errors) = (0u64, 0u64, 0usize);
    for (i, r) in (0..N).zip(out) {
        if i % 10 == 0 {
            let e = r.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Panic, "job {i}: {e:?}");
            assert!(e.message().contains(&format!("job {i}")), "{e}");
            panics += 1;
        } else if i % 7 == 0 {
            let e = r.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Handler, "job {i}: {e:?}");
            assert_eq!(e.message(), format!("job {i} failed on purpose"));
            errors += 1;
        } else {
            assert_eq!(r.unwrap(), json!(i * 2), "job {i}");
            ok += 1;
        }
    }
    assert_eq!(panics, 1_000);
    assert_eq!(errors, (0..N).filter(|i| i % 7 == 0 && i % 10 != 0).count());
    assert_eq!(ok + panics + errors as u64, N);
    // The node still answers.
    let v = timeout(T, client.send(&node, Event::new("job", json!({"i": 1}))))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v, json!(2));
}

#[tokio::test(start_paused = true)]
async fn a_one_second_handler_does_not_delay_a_thousand_others() {
    let happen = Happen::new();
    let node = happen.node("n").await.unwrap();
    let slow_done = Arc::new(AtomicBool::new(false));
    let sd = slow_done.clone();
    node.on("slow", move |_e: Event, _c: Context| {
        let sd = sd.clone();
        async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            sd.store(true, Ordering::SeqCst);
            json!("slow")
        }
    })
    .unwrap();
    node.on("fast", |e: Event, _c: Context| async move {
        tokio::task::yield_now().await;
        e.payload().clone()
    })
    .unwrap();
    let client = happen.node("client").await.unwrap();
    let start = tokio::time::Instant::now();
    let slow = client.send(&node, Event::new("slow", ()));
    let fast: Vec<_> = (0..1_000)
        .map(|i| client.send(&node, Event::new("fast", i)).into_future())
        .collect();
    let out = timeout(T, futures::future::join_all(fast)).await.unwrap();
    // Virtual time has not moved: no fast event waited for the slow one.
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert!(!slow_done.load(Ordering::SeqCst));
    for (i, r) in out.into_iter().enumerate() {
        assert_eq!(r.unwrap(), json!(i));
    }
    assert_eq!(timeout(T, slow).await.unwrap().unwrap(), "slow");
    assert_eq!(start.elapsed(), Duration::from_secs(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_handler_does_not_block_others_under_load() {
    let happen = Happen::new();
    let node = happen.node("n").await.unwrap();
    let (release_tx, release_rx) = oneshot::channel::<()>();
    let release_rx = Arc::new(parking_lot::Mutex::new(Some(release_rx)));
    node.on("held", move |_e: Event, _c: Context| {
        let rx = release_rx.lock().take();
        async move {
            rx.expect("one held event").await.unwrap();
            json!("released")
        }
    })
    .unwrap();
    node.on("fast", |e: Event, _c: Context| async move {
        e.payload().clone()
    })
    .unwrap();
    let held = node.send(&node, Event::new("held", ()));
    for round in 0..5 {
        let fast: Vec<_> = (0..1_000)
            .map(|i| node.send(&node, Event::new("fast", i)).into_future())
            .collect();
        let out = timeout(T, futures::future::join_all(fast)).await.unwrap();
        assert!(
            out.iter().all(|r| r.is_ok()),
            "round {round}: a fast event failed"
        );
    }
    release_tx.send(()).unwrap();
    assert_eq!(timeout(T, held).await.unwrap().unwrap(), "released");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_at_one_node_really_overlap() {
    // 64 handlers wait on one barrier: this completes only if all 64 run at once.
    let happen = Happen::new();
    let node = happen.node("n").await.unwrap();
    let barrier = Arc::new(Barrier::new(64));
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (b, r, p) = (barrier.clone(), running.clone(), peak.clone());
    node.on("meet", move |_e: Event, _c: Context| {
        let (b, r, p) = (b.clone(), r.clone(), p.clone());
        async move {
            let now = r.fetch_add(1, Ordering::SeqCst) + 1;
            p.fetch_max(now, Ordering::SeqCst);
            b.wait().await;
            r.fetch_sub(1, Ordering::SeqCst);
        }
    })
    .unwrap();
    let replies: Vec<_> = (0..64)
        .map(|_| node.send(&node, Event::new("meet", ())).into_future())
        .collect();
    let out = timeout(T, futures::future::join_all(replies))
        .await
        .expect("64 concurrent handlers meet at the barrier");
    assert!(out.iter().all(|r| r.is_ok()));
    assert_eq!(peak.load(Ordering::SeqCst), 64);
}
