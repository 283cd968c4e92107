//! Admission: `max_concurrent` is never exceeded, and a full queue rejects with `QueueFull`.

use std::collections::{HashMap, HashSet};
use std::future::IntoFuture;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;
use std::time::Duration;

use happen::{Context, ErrorKind, Event, Happen, NodeOptions};
use parking_lot::Mutex;
use serde_json::json;
use tokio::sync::Semaphore;
use tokio::time::timeout;

mod support;
use support::wait_until;

const T: Duration = Duration::from_secs(30);

/// Counts running handlers and keeps the high-water mark.
#[derive(Default)]
struct Gauge {
    now: AtomicUsize,
    peak: AtomicUsize,
}

impl Gauge {
    fn enter(&self) {
        let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(n, Ordering::SeqCst);
    }
    fn exit(&self) {
        self.now.fetch_sub(1, Ordering::SeqCst);
    }
    fn peak(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_concurrent_four_is_never_exceeded_and_all_complete() {
    let happen = Happen::new();
    let node = happen
        .node_with(
            "four",
            NodeOptions::new().max_concurrent(4).queue_limit(10_000),
        )
        .await
        .unwrap();
    let gauge = Arc::new(Gauge::default());
    let gate = Arc::new(Semaphore::new(0));
    let (g, s) = (gauge.clone(), gate.clone());
    node.on("work", move |e: Event, _c: Context| {
        let (g, s) = (g.clone(), s.clone());
        async move {
            g.enter();
            s.acquire().await.unwrap().forget();
            tokio::task::yield_now().await;
            g.exit();
            e.payload().clone()
        }
    })
    .unwrap();
    let client = happen.node("client").await.unwrap();
    let replies: Vec<_> = (0..1_000)
        .map(|i| client.send(&node, Event::new("work", i)).into_future())
        .collect();
    // Four run, the rest wait.
    wait_until("4 running handlers", || {
        gauge.now.load(Ordering::SeqCst) == 4
    })
    .await;
    for _ in 0..1_000 {
        tokio::task::yield_now().await;
    }
    let st = node.stats();
    assert_eq!((st.active, st.queued), (4, 996));
    assert_eq!(gauge.peak(), 4);
    // Release gradually, then all at once.
    for _ in 0..50 {
        gate.add_permits(1);
        tokio::task::yield_now().await;
    }
    gate.add_permits(1_000);
    let out = timeout(T, futures::future::join_all(replies))
        .await
        .unwrap();
    for (i, r) in out.into_iter().enumerate() {
        assert_eq!(r.unwrap(), json!(i));
    }
    assert_eq!(
        gauge.peak(),
        4,
        "more than max_concurrent handlers ran at once"
    );
    wait_until("stats to settle", || {
        let st = node.stats();
        st.completed == 1_000 && st.active == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_concurrent_holds_under_ten_thousand_short_events() {
    let happen = Happen::new();
    let node = happen
        .node_with(
            "three",
            NodeOptions::new().max_concurrent(3).queue_limit(20_000),
        )
        .await
        .unwrap();
    let gauge = Arc::new(Gauge::default());
    let g = gauge.clone();
    node.on("work", move |_e: Event, _c: Context| {
        let g = g.clone();
        async move {
            g.enter();
            for _ in 0..3 {
                tokio::task::yield_now().await;
            }
            g.exit();
        }
    })
    .unwrap();
    let replies: Vec<_> = (0..10_000)
        .map(|i| node.send(&node, Event::new("work", i)).into_future())
        .collect();
    let out = timeout(T, futures::future::join_all(replies))
        .await
        .unwrap();
    assert!(out.iter().all(|r| r.is_ok()));
    assert!(gauge.peak() <= 3, "peak {}", gauge.peak());
    assert!(
        gauge.peak() >= 2,
        "flows never overlapped (peak {})",
        gauge.peak()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_of_a_thousand_accepts_exactly_one_hundred_ten() {
    let happen = Happen::new();
    let node = happen
        .node_with(
            "burst",
            NodeOptions::new().max_concurrent(10).queue_limit(100),
        )
        .await
        .unwrap();
    let gate = Arc::new(Semaphore::new(0));
    let runs: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let (s, r) = (gate.clone(), runs.clone());
    node.on("job", move |e: Event, _c: Context| {
        let (s, r) = (s.clone(), r.clone());
        async move {
            *r.lock().entry(e.id().to_string()).or_default() += 1;
            s.acquire().await.unwrap().forget();
            e.id().to_string()
        }
    })
    .unwrap();
    let client = happen.node("client").await.unwrap();
    let replies: Vec<_> = (0..1_000)
        .map(|i| client.send(&node, Event::new("job", i)).into_future())
        .collect();

    // Rejections are immediate: poll every reply once, before releasing anything.
    let mut pending = Vec::new();
    let mut rejected = Vec::new();
    for r in replies {
        let mut f = Box::pin(r);
        match futures::poll!(f.as_mut()) {
            Poll::Ready(Err(e)) => rejected.push(e),
            Poll::Ready(Ok(v)) => panic!("completed while held: {v}"),
            Poll::Pending => pending.push(f),
        }
    }
    assert_eq!(rejected.len(), 890);
    assert_eq!(pending.len(), 110);
    let mut rejected_ids = HashSet::new();
    for e in &rejected {
        assert_eq!(e.kind(), ErrorKind::QueueFull, "{e:?}");
        assert!(e.is_queue_full());
        assert_eq!(e.node().map(|n| n.as_str()), Some("burst"));
        assert_eq!(e.limit(), Some(100));
        let id = e.event_id().expect("the rejected event's id").to_string();
        assert!(e.message().contains(&id), "{e}");
        assert!(
            e.message().contains("burst") && e.message().contains("100"),
            "{e}"
        );
        rejected_ids.insert(id);
    }
    assert_eq!(
        rejected_ids.len(),
        890,
        "each rejection names its own event"
    );

    wait_until("10 running", || node.stats().active == 10).await;
    let st = node.stats();
    assert_eq!((st.accepted, st.rejected, st.queued), (110, 890, 100));

    gate.add_permits(110);
    let done = timeout(T, futures::future::join_all(pending))
        .await
        .unwrap();
    let done_ids: HashSet<String> = done
        .into_iter()
        .map(|r| r.unwrap().as_str().unwrap().to_owned())
        .collect();
    assert_eq!(done_ids.len(), 110);
    assert!(done_ids.is_disjoint(&rejected_ids));

    wait_until("stats to settle", || node.stats().completed == 110).await;
    let runs = runs.lock().clone();
    assert_eq!(runs.len(), 110, "exactly the accepted events ran");
    assert!(runs.values().all(|&n| n == 1), "an event ran twice");
    assert_eq!(runs.keys().cloned().collect::<HashSet<_>>(), done_ids);

    let st = node.stats();
    assert_eq!(st.accepted, 110);
    assert_eq!(st.rejected, 890);
    assert_eq!(st.completed, 110);
    assert_eq!(st.failed, 0);
    assert_eq!(st.peak_queued, 100);
    assert_eq!((st.active, st.queued), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn tell_reports_queue_full_at_once() {
    let happen = Happen::new();
    let node = happen
        .node_with("small", NodeOptions::new().max_concurrent(1).queue_limit(2))
        .await
        .unwrap();
    node.on("hang", |_e: Event, _c: Context| {
        std::future::pending::<()>()
    })
    .unwrap();
    let results: Vec<_> = (0..5)
        .map(|_| node.tell(&node, Event::new("hang", ())))
        .collect();
    assert!(results[..3].iter().all(|r| r.is_ok()));
    for r in &results[3..] {
        let e = r.as_ref().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::QueueFull);
        assert_eq!(e.limit(), Some(2));
    }
    assert_eq!(node.stats().rejected, 2);
}
