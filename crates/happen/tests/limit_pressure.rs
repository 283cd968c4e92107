//! Backpressure: observed once per crossing (hysteresis), honoured by paced sends.

use std::future::IntoFuture;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use happen::{Context, ErrorKind, Event, Happen, Node, NodeOptions, PRESSURE_EVENT};
use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::Semaphore;
use tokio::time::timeout;

mod support;
use support::wait_until;

const T: Duration = Duration::from_secs(60);

async fn settle() {
    for _ in 0..200 {
        tokio::task::yield_now().await;
    }
}

/// max_concurrent 1, queue_limit 100, threshold 0.5: pressure at 50 queued, relief at 37.
async fn held_node(happen: &Happen) -> (Node, Arc<Semaphore>) {
    let node = happen
        .node_with(
            "busy",
            NodeOptions::new()
                .max_concurrent(1)
                .queue_limit(100)
                .backpressure_threshold(0.5),
        )
        .await
        .unwrap();
    let gate = Arc::new(Semaphore::new(0));
    let g = gate.clone();
    node.on("work", move |_e: Event, _c: Context| {
        let g = g.clone();
        async move {
            g.acquire().await.unwrap().forget();
        }
    })
    .unwrap();
    (node, gate)
}

#[tokio::test(start_paused = true)]
async fn each_crossing_is_announced_once() {
    let happen = Happen::new();
    let monitor = happen.node("monitor").await.unwrap();
    let seen: Arc<Mutex<Vec<Value>>> = Arc::default();
    let s = seen.clone();
    monitor
        .on(PRESSURE_EVENT, move |e: Event, _c: Context| {
            let s = s.clone();
            async move { s.lock().push(e.payload().clone()) }
        })
        .unwrap();
    let (node, gate) = held_node(&happen).await;
    let watch = node.watch_pressure();
    let client = happen.node("client").await.unwrap();
    let tell = |n: usize| {
        for _ in 0..n {
            client.tell(&node, Event::new("work", ())).unwrap();
        }
    };
    let levels = || {
        seen.lock()
            .iter()
            .map(|v| v["level"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    let release = |n: usize, queued_after: usize| {
        gate.add_permits(n);
        let node = node.clone();
        async move {
            wait_until("the queue to drain", || node.stats().queued == queued_after).await;
        }
    };

    tell(1);
    wait_until("one running", || node.stats().active == 1).await;
    tell(49);
    settle().await;
    assert_eq!(node.stats().queued, 49);
    assert!(levels().is_empty());
    assert!(!node.pressure().under_pressure);

    tell(1); // 50 queued: the threshold.
    wait_until("high", || levels().len() == 1).await;
    assert_eq!(levels(), ["high"]);
    let first = seen.lock()[0].clone();
    assert_eq!(first["nodeId"], "busy");
    assert_eq!(first["underPressure"], true);
    assert_eq!(first["queued"], 50);
    assert_eq!(first["queueLimit"], 100);
    assert!(watch.borrow().under_pressure);
    assert!(node.pressure().under_pressure);

    // Hovering around the threshold does not flap.
    tell(10);
    for _ in 0..5 {
        release(1, 59).await;
        tell(1);
        settle().await;
        assert_eq!(node.stats().queued, 60);
    }
    release(22, 38).await;
    settle().await;
    assert_eq!(levels(), ["high"], "still above the low-water mark");

    release(1, 37).await; // Down to 3/4 of the threshold: relief.
    wait_until("normal", || levels().len() == 2).await;
    assert_eq!(levels(), ["high", "normal"]);
    assert!(!watch.borrow().under_pressure);
    assert_eq!(seen.lock()[1]["queued"], 37);

    for _ in 0..5 {
        tell(1);
        settle().await;
        release(1, 37).await;
    }
    tell(12);
    settle().await;
    assert_eq!(node.stats().queued, 49);
    assert_eq!(
        levels(),
        ["high", "normal"],
        "no flapping below the threshold"
    );

    tell(1);
    wait_until("high again", || levels().len() == 3).await;
    gate.add_permits(1_000);
    wait_until("drained", || {
        node.stats().queued == 0 && levels().len() == 4
    })
    .await;
    settle().await;
    assert_eq!(levels(), ["high", "normal", "high", "normal"]);
    // The monitor itself has no pressure events to report.
    assert!(seen.lock().iter().all(|v| v["nodeId"] == "busy"));
}

#[tokio::test(start_paused = true)]
async fn paced_send_times_out_while_the_target_stays_under_pressure() {
    let happen = Happen::new();
    let (node, gate) = held_node(&happen).await;
    let client = happen.node("client").await.unwrap();
    client.tell(&node, Event::new("work", ())).unwrap();
    wait_until("one running", || node.stats().active == 1).await;
    for _ in 0..60 {
        client.tell(&node, Event::new("work", ())).unwrap();
    }
    assert!(node.pressure().under_pressure);
    let accepted = node.stats().accepted;

    let start = tokio::time::Instant::now();
    let err = timeout(T, client.ready(&node).timeout(Duration::from_secs(5)))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert_eq!(err.node().map(|n| n.as_str()), Some("busy"));
    assert_eq!(start.elapsed(), Duration::from_secs(5));
    assert_eq!(node.stats().accepted, accepted, "nothing was sent");

    // By id too.
    let err = timeout(T, client.ready("busy").timeout(Duration::from_secs(1)))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);

    // A producer waiting for relief is let through once the node drains.
    let mut ready = client.ready(&node);
    assert!(matches!(futures::poll!(&mut ready), Poll::Pending));
    gate.add_permits(1_000);
    timeout(T, ready).await.unwrap().unwrap();
    let reply = client.send(&node, Event::new("work", ()));
    timeout(T, reply).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paced_producer_never_hits_queue_full_in_a_hundred_thousand_events() {
    const N: usize = 100_000;
    let happen = Happen::new();
    let node = happen
        .node_with(
            "slow",
            NodeOptions::new().max_concurrent(2).queue_limit(100),
        )
        .await
        .unwrap();
    node.on("work", |_e: Event, _c: Context| async move {
        for _ in 0..5 {
            tokio::task::yield_now().await;
        }
    })
    .unwrap();
    let monitor = happen.node("monitor").await.unwrap();
    let highs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let h = highs.clone();
    monitor
        .on(PRESSURE_EVENT, move |e: Event, _c: Context| {
            let h = h.clone();
            async move {
                if e.payload()["underPressure"] == true {
                    h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            }
        })
        .unwrap();
    let client = happen.node("client").await.unwrap();

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let checker = tokio::spawn(async move {
        let (mut ok, mut failed) = (0usize, Vec::new());
        while let Some(reply) = rx.recv().await {
            match timeout(T, reply).await.expect("reply timed out") {
                Ok(_) => ok += 1,
                Err(e) => failed.push(e),
            }
        }
        (ok, failed)
    });
    let producer = async {
        for i in 0..N {
            client
                .ready(&node)
                .await
                .expect("the node stayed under pressure too long");
            let reply = client.send(&node, Event::new("work", i));
            tx.send(reply.into_future()).unwrap();
        }
        drop(tx);
    };
    timeout(Duration::from_secs(300), producer).await.unwrap();
    let (ok, failed) = timeout(T, checker).await.unwrap().unwrap();
    assert!(
        failed.is_empty(),
        "{} failures, first: {:?}",
        failed.len(),
        failed.first()
    );
    assert_eq!(ok, N);
    let st = node.stats();
    assert_eq!(st.rejected, 0);
    assert_eq!(st.accepted, N as u64);
    // The run did push the node into pressure, so pacing was exercised.
    assert!(st.peak_queued >= 80, "peak_queued {}", st.peak_queued);
    wait_until("a pressure announcement", || {
        highs.load(std::sync::atomic::Ordering::SeqCst) >= 1
    })
    .await;
}
