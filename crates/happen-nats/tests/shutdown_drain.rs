//! A replica that leaves drains (issue 23): two replicas of one node id under 8 concurrent
//! requesters, one shut down gracefully, again and again. Every request is answered, with
//! its value or `shut_down`; none waits out its timeout. Real nats-server.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::{instance, within};
use happen::{Context, ErrorKind, Event, Happen, NodeOptions};
use parking_lot::Mutex;
use serde_json::json;
use test_support::NatsServer;

const ROUNDS: usize = 20;
const REQUESTERS: usize = 8;
/// Far above a round trip, far below the test's length: a lost request shows as `timeout`.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// A replica of `worker` answering with its number; `answered` counts its runs.
async fn replica(url: &str, r: u64, answered: Arc<AtomicU64>) -> Happen {
    let (h, _t) = instance(url).await;
    let worker = h
        .node_with("worker", NodeOptions::new().max_concurrent(16))
        .await
        .unwrap();
    worker
        .on("job", move |_e: Event, _c: Context| {
            answered.fetch_add(1, Ordering::Relaxed);
            async move {
                tokio::time::sleep(Duration::from_micros(200)).await;
                json!({ "replica": r })
            }
        })
        .unwrap();
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_shut_down_under_load_leaves_no_request_unanswered() {
    let server = NatsServer::start();
    let url = server.url();
    let stays = Arc::new(AtomicU64::new(0));
    let _stays = replica(&url, 0, stays.clone()).await;
    let (client_h, _) = instance(&url).await;
    let client = client_h
        .node_with(
            "client",
            NodeOptions::new().request_timeout(REQUEST_TIMEOUT),
        )
        .await
        .unwrap();
    let outcomes: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let mut total_by_leaving = 0;
    for round in 0..ROUNDS {
        let leaving_count = Arc::new(AtomicU64::new(0));
        let leaving = replica(&url, 1, leaving_count.clone()).await;
        let stop = Arc::new(AtomicBool::new(false));
        let mut requesters = Vec::new();
        for _ in 0..REQUESTERS {
            let (client, stop, outcomes) = (client.clone(), stop.clone(), outcomes.clone());
            requesters.push(tokio::spawn(async move {
                let mut mine: BTreeMap<String, u64> = BTreeMap::new();
                while !stop.load(Ordering::Relaxed) {
                    let key = match client.send("worker", Event::new("job", ())).await {
                        Ok(v) => format!("ok from replica {}", v["replica"]),
                        Err(e) => e.kind().as_str().to_owned(),
                    };
                    *mine.entry(key).or_default() += 1;
                }
                let mut all = outcomes.lock();
                for (k, n) in mine {
                    *all.entry(k).or_default() += n;
                }
            }));
        }
        // the leaving replica is serving: it has answered some
        let started = tokio::time::Instant::now();
        while leaving_count.load(Ordering::Relaxed) < 50 {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "round {round}: the new replica never got a request"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let report = within(
            10,
            "graceful shutdown",
            leaving.shutdown(Duration::from_secs(2)),
        )
        .await;
        assert!(report.is_clean(), "round {round}: {report:?}");
        // requests go on a little to the replica that stays
        let after = stays.load(Ordering::Relaxed);
        while stays.load(Ordering::Relaxed) < after + 100 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        stop.store(true, Ordering::Relaxed);
        for r in requesters {
            // a request lost in the shutdown waits out its timeout, then the loop ends
            within(20, "requesters", r).await.unwrap();
        }
        total_by_leaving += leaving_count.load(Ordering::Relaxed);
    }
    let outcomes = outcomes.lock().clone();
    println!("{ROUNDS} rounds: {outcomes:?}; the leaving replicas ran {total_by_leaving}");
    let unexpected: Vec<_> = outcomes
        .iter()
        .filter(|(k, _)| !k.starts_with("ok") && k.as_str() != ErrorKind::ShutDown.as_str())
        .collect();
    assert!(
        unexpected.is_empty(),
        "every request answered ok or shut_down: {outcomes:?}"
    );
    assert!(outcomes.get("ok from replica 1").is_some_and(|n| *n > 0));
    assert!(outcomes.get("ok from replica 0").is_some_and(|n| *n > 0));
}
