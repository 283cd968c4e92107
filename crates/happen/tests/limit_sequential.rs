//! Sequential lanes: one event per key at a time, in arrival order; different keys overlap.

use std::future::IntoFuture;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use happen::{Context, CorrelationId, Event, Happen, NodeOptions, SequentialKey};
use parking_lot::Mutex;
use serde_json::json;
use tokio::time::timeout;

const T: Duration = Duration::from_secs(60);

struct Lanes {
    running: Vec<AtomicUsize>,
    order: Vec<Mutex<Vec<u64>>>,
    overlap_violations: AtomicUsize,
    now: AtomicUsize,
    peak: AtomicUsize,
}

impl Lanes {
    fn new(keys: usize) -> Lanes {
        Lanes {
            running: (0..keys).map(|_| AtomicUsize::new(0)).collect(),
            order: (0..keys).map(|_| Mutex::new(Vec::new())).collect(),
            overlap_violations: AtomicUsize::new(0),
            now: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
        }
    }

    async fn run(&self, key: usize, seq: u64) {
        if self.running[key].fetch_add(1, Ordering::SeqCst) != 0 {
            self.overlap_violations.fetch_add(1, Ordering::SeqCst);
        }
        self.order[key].lock().push(seq);
        let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(n, Ordering::SeqCst);
        for _ in 0..3 {
            tokio::task::yield_now().await;
        }
        self.now.fetch_sub(1, Ordering::SeqCst);
        self.running[key].fetch_sub(1, Ordering::SeqCst);
    }

    fn check(&self, keys: usize, per_key: u64, max_concurrent: usize) {
        assert_eq!(
            self.overlap_violations.load(Ordering::SeqCst),
            0,
            "two events of one key ran at once"
        );
        for k in 0..keys {
            assert_eq!(
                *self.order[k].lock(),
                (0..per_key).collect::<Vec<_>>(),
                "key {k} out of order"
            );
        }
        let peak = self.peak.load(Ordering::SeqCst);
        assert!(peak >= 2, "different keys never overlapped (peak {peak})");
        assert!(peak <= max_concurrent, "peak {peak} > max_concurrent");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_keys_by_hundred_events_keep_per_key_order() {
    const KEYS: usize = 100;
    const PER_KEY: u64 = 100;
    let happen = Happen::new();
    let node = happen
        .node_with(
            "ledger",
            NodeOptions::new()
                .max_concurrent(16)
                .queue_limit(20_000)
                .sequential(SequentialKey::by(|e: &Event| {
                    e.payload()["key"].to_string()
                })),
        )
        .await
        .unwrap();
    let lanes = Arc::new(Lanes::new(KEYS));
    let l = lanes.clone();
    node.on("entry", move |e: Event, _c: Context| {
        let l = l.clone();
        async move {
            let key = e.payload()["key"].as_u64().unwrap() as usize;
            let seq = e.payload()["seq"].as_u64().unwrap();
            l.run(key, seq).await;
        }
    })
    .unwrap();
    let client = happen.node("client").await.unwrap();
    let mut replies = Vec::new();
    for seq in 0..PER_KEY {
        for key in 0..KEYS {
            replies.push(
                client
                    .send(&node, Event::new("entry", json!({"key": key, "seq": seq})))
                    .into_future(),
            );
        }
        tokio::task::yield_now().await;
    }
    let out = timeout(T, futures::future::join_all(replies))
        .await
        .unwrap();
    assert!(out.iter().all(|r| r.is_ok()));
    lanes.check(KEYS, PER_KEY, 16);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn correlation_id_lanes() {
    const TXNS: usize = 10;
    const PER: u64 = 50;
    let happen = Happen::new();
    let node = happen
        .node_with(
            "txn",
            NodeOptions::new()
                .max_concurrent(8)
                .sequential(SequentialKey::CorrelationId),
        )
        .await
        .unwrap();
    let lanes = Arc::new(Lanes::new(TXNS));
    let l = lanes.clone();
    node.on("step", move |e: Event, _c: Context| {
        let l = l.clone();
        async move {
            let key = e.payload()["key"].as_u64().unwrap() as usize;
            let seq = e.payload()["seq"].as_u64().unwrap();
            l.run(key, seq).await;
        }
    })
    .unwrap();
    let txns: Vec<CorrelationId> = (0..TXNS).map(|_| CorrelationId::new()).collect();
    let mut replies = Vec::new();
    for seq in 0..PER {
        for (key, txn) in txns.iter().enumerate() {
            replies.push(
                node.send(
                    &node,
                    Event::new("step", json!({"key": key, "seq": seq}))
                        .with_correlation_id(txn.clone()),
                )
                .into_future(),
            );
        }
    }
    let out = timeout(T, futures::future::join_all(replies))
        .await
        .unwrap();
    assert!(out.iter().all(|r| r.is_ok()));
    lanes.check(TXNS, PER, 8);
}
