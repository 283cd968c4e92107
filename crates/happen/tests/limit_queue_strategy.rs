//! Queue strategies: FIFO start order per type; priority order (stable) and displacement.

use std::future::IntoFuture;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use happen::{Context, ErrorKind, Event, Happen, Node, NodeOptions, QueueStrategy};
use parking_lot::Mutex;
use serde_json::json;
use tokio::sync::Semaphore;
use tokio::time::timeout;

mod support;
use support::wait_until;

const T: Duration = Duration::from_secs(30);

/// A node whose handlers record `payload["tag"]` when they start, then wait for a permit.
async fn recording_node(
    happen: &Happen,
    id: &str,
    options: NodeOptions,
) -> (Node, Arc<Mutex<Vec<String>>>, Arc<Semaphore>) {
    let node = happen.node_with(id.to_string(), options).await.unwrap();
    let started: Arc<Mutex<Vec<String>>> = Arc::default();
    let gate = Arc::new(Semaphore::new(0));
    let (s, g) = (started.clone(), gate.clone());
    node.on("*", move |e: Event, _c: Context| {
        let (s, g) = (s.clone(), g.clone());
        // Recorded synchronously when the flow is started, before any await.
        s.lock()
            .push(e.payload()["tag"].as_str().unwrap_or_default().to_owned());
        async move {
            g.acquire().await.unwrap().forget();
            tokio::task::yield_now().await;
            e.payload()["tag"].clone()
        }
    })
    .unwrap();
    (node, started, gate)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifo_start_order_per_type_under_contention() {
    let happen = Happen::new();
    let (node, started, gate) = recording_node(
        &happen,
        "fifo",
        NodeOptions::new().max_concurrent(4).queue_limit(10_000),
    )
    .await;
    let client = happen.node("client").await.unwrap();
    // Let handlers finish while we send, so starts interleave with admissions.
    gate.add_permits(1_000);
    let mut replies = Vec::new();
    for i in 0..2_000 {
        let t = if i % 3 == 0 { "alpha" } else { "beta" };
        replies.push(
            client
                .send(&node, Event::new(t, json!({"tag": format!("{t}:{i}")})))
                .into_future(),
        );
        if i % 100 == 0 {
            tokio::task::yield_now().await;
        }
    }
    gate.add_permits(1_000);
    let out = timeout(T, futures::future::join_all(replies))
        .await
        .unwrap();
    for r in &out {
        r.as_ref().unwrap();
    }
    let started = started.lock().clone();
    assert_eq!(started.len(), 2_000);
    for t in ["alpha", "beta"] {
        let seq: Vec<u32> = started
            .iter()
            .filter_map(|s| s.strip_prefix(&format!("{t}:")))
            .map(|n| n.parse().unwrap())
            .collect();
        let mut sorted = seq.clone();
        sorted.sort_unstable();
        assert_eq!(seq, sorted, "{t} did not start in arrival order");
    }
    // FIFO is in fact global arrival order for one sender.
    let all: Vec<u32> = started
        .iter()
        .map(|s| s.rsplit(':').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(all, (0..2_000).collect::<Vec<_>>());
}

/// Flows that finish on their first poll give their slot straight to the next waiting event
/// (in the driver that polled them), while flows that wait finish in their own tasks and wake
/// the other driver: both drivers start events, and starts must still follow arrival order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifo_start_order_holds_while_finishing_flows_hand_their_slots_over() {
    const N: u64 = 20_000;
    let happen = Happen::new();
    let node = happen
        .node_with(
            "handover",
            NodeOptions::new().max_concurrent(2).queue_limit(N as usize),
        )
        .await
        .unwrap();
    let started: Arc<Mutex<Vec<u64>>> = Arc::default();
    let s = started.clone();
    node.on("job", move |e: Event, _c: Context| {
        let i = e.payload().as_u64().unwrap();
        s.lock().push(i); // at the start, before any await
        async move {
            if i.is_multiple_of(5) {
                tokio::task::yield_now().await; // this flow moves to its own task
            }
        }
    })
    .unwrap();
    let client = happen.node("client").await.unwrap();
    for i in 0..N {
        client.tell(&node, Event::new("job", i)).unwrap();
        if i.is_multiple_of(1_000) {
            tokio::task::yield_now().await; // let the drivers run while events arrive
        }
    }
    wait_until("every flow counted", || node.stats().completed == N).await;
    let started = started.lock().clone();
    assert_eq!(
        started,
        (0..N).collect::<Vec<_>>(),
        "starts out of arrival order"
    );
    let stats = node.stats();
    assert_eq!((stats.accepted, stats.rejected), (N, 0));
    assert_eq!((stats.active, stats.queued), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn priority_order_is_stable_within_a_priority() {
    let happen = Happen::new();
    let (node, started, gate) = recording_node(
        &happen,
        "prio",
        NodeOptions::new()
            .max_concurrent(1)
            .queue_limit(1_000)
            .queue_strategy(QueueStrategy::Priority),
    )
    .await;
    assert_eq!(node.limits().queue_strategy, QueueStrategy::Priority);
    let held = node.send(&node, Event::new("x", json!({"tag": "held"})));
    wait_until("the first event to run", || node.stats().active == 1).await;
    let mut expected = Vec::new();
    let mut replies = Vec::new();
    for i in 0..300i32 {
        let p = (i * 7) % 5 - 2; // -2..=2, interleaved
        let tag = format!("{p}:{i}");
        expected.push((p, i, tag.clone()));
        replies.push(
            node.send(&node, Event::new("x", json!({"tag": tag})).with_priority(p))
                .into_future(),
        );
    }
    gate.add_permits(301);
    timeout(T, held).await.unwrap().unwrap();
    let out = timeout(T, futures::future::join_all(replies))
        .await
        .unwrap();
    for r in &out {
        r.as_ref().unwrap();
    }
    expected.sort_by_key(|(p, i, _)| (-p, *i));
    let mut want = vec!["held".to_owned()];
    want.extend(expected.into_iter().map(|(_, _, t)| t));
    assert_eq!(*started.lock(), want);
}

#[tokio::test(start_paused = true)]
async fn full_priority_queue_displaces_the_newest_lowest() {
    let happen = Happen::new();
    let (node, started, gate) = recording_node(
        &happen,
        "disp",
        NodeOptions::new()
            .max_concurrent(1)
            .queue_limit(3)
            .queue_strategy(QueueStrategy::Priority),
    )
    .await;
    let send = |tag: &str, p: i32| {
        Box::pin(
            node.send(&node, Event::new("x", json!({"tag": tag})).with_priority(p))
                .into_future(),
        )
    };
    let h = send("H", 0);
    wait_until("H to run", || node.stats().active == 1).await;
    let a = send("A", 1);
    let mut b = send("B", 0);
    let mut c = send("C", 0);
    assert_eq!(node.stats().queued, 3);
    // D outranks the lowest queued priority: C (the newest of the p0 events) is displaced.
    let d = send("D", 5);
    let c_err = match futures::poll!(c.as_mut()) {
        Poll::Ready(Err(e)) => e,
        other => panic!("C should have been displaced at once: {other:?}"),
    };
    assert_eq!(c_err.kind(), ErrorKind::QueueFull);
    assert!(c_err.message().contains("displaced"), "{c_err}");
    assert_eq!(c_err.limit(), Some(3));
    assert_eq!(c_err.node().map(|n| n.as_str()), Some("disp"));
    assert!(matches!(futures::poll!(b.as_mut()), Poll::Pending));
    // E is not higher than the lowest queued (0): rejected itself.
    let e_err = timeout(T, send("E", 0)).await.unwrap().unwrap_err();
    assert_eq!(e_err.kind(), ErrorKind::QueueFull);
    assert!(!e_err.message().contains("displaced"), "{e_err}");
    // F (1) outranks B (0): B is displaced.
    let f = send("F", 1);
    let b_err = timeout(T, b).await.unwrap().unwrap_err();
    assert_eq!(b_err.kind(), ErrorKind::QueueFull);
    assert!(b_err.message().contains("displaced"), "{b_err}");
    // G (1) ties with the lowest queued (A and F at 1): rejected.
    let g_err = timeout(T, send("G", 1)).await.unwrap().unwrap_err();
    assert_eq!(g_err.kind(), ErrorKind::QueueFull);
    assert!(!g_err.message().contains("displaced"));
    let ids: std::collections::HashSet<String> = [&c_err, &e_err, &b_err, &g_err]
        .iter()
        .map(|e| e.event_id().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 4);

    gate.add_permits(10);
    for (name, r) in [("H", h), ("D", d), ("A", a), ("F", f)] {
        assert_eq!(timeout(T, r).await.unwrap().unwrap(), json!(name));
    }
    assert_eq!(*started.lock(), ["H", "D", "A", "F"]);
    wait_until("stats", || node.stats().completed == 4).await;
    let st = node.stats();
    // C and B were accepted, then displaced; E and G were refused at admission.
    assert_eq!((st.rejected, st.displaced), (2, 2), "{st:?}");
    assert_eq!(st.failed, 0, "{st:?}");
    assert_eq!(
        st.accepted,
        st.completed + st.failed + st.cancelled + st.displaced,
        "the counters reconcile: {st:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn fifo_queue_never_displaces() {
    let happen = Happen::new();
    let (node, started, gate) = recording_node(
        &happen,
        "fifo-full",
        NodeOptions::new().max_concurrent(1).queue_limit(2),
    )
    .await;
    let h = node.send(&node, Event::new("x", json!({"tag": "H"})));
    wait_until("H", || node.stats().active == 1).await;
    let a = node.send(&node, Event::new("x", json!({"tag": "A"})));
    let b = node.send(&node, Event::new("x", json!({"tag": "B"})));
    let err = timeout(
        T,
        node.send(
            &node,
            Event::new("x", json!({"tag": "C"})).with_priority(100),
        ),
    )
    .await
    .unwrap()
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::QueueFull);
    gate.add_permits(3);
    for r in [h, a, b] {
        timeout(T, r).await.unwrap().unwrap();
    }
    assert_eq!(*started.lock(), ["H", "A", "B"]);
}
