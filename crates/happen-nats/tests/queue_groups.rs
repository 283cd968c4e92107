//! Horizontal scaling: replicas of one node id share direct sends (NATS queue groups) and a
//! broadcast reaches the id once.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use common::{instance, within};
use futures::StreamExt;
use happen::{Context, Event};
use serde_json::json;
use test_support::NatsServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_share_3000_sends() {
    let server = NatsServer::start();
    let mut replicas = Vec::new();
    let handled: Vec<Arc<AtomicU64>> = (0..3).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let broadcasts = Arc::new(AtomicU64::new(0));
    let announced = Arc::new(tokio::sync::Notify::new());
    for (r, count) in handled.iter().enumerate() {
        let (h, _t) = instance(&server.url()).await;
        let worker = h.node("worker").await.unwrap();
        let count = count.clone();
        worker
            .on("job", move |event: Event, _c: Context| {
                count.fetch_add(1, Ordering::Relaxed);
                async move { json!({"replica": r, "job": event.payload().clone()}) }
            })
            .unwrap();
        let b = broadcasts.clone();
        let n = announced.clone();
        worker
            .on("announce", move |_e: Event, _c: Context| {
                b.fetch_add(1, Ordering::Relaxed);
                n.notify_one();
                async {}
            })
            .unwrap();
        replicas.push((h, worker));
    }
    let (client_h, _) = instance(&server.url()).await;
    let client = client_h.node("client").await.unwrap();

    let mut per_replica: HashMap<u64, u64> = HashMap::new();
    let mut seen = vec![false; 3000];
    let mut inflight = futures::stream::FuturesUnordered::new();
    let mut next = 0u64;
    let mut done = 0;
    while done < 3000 {
        while next < 3000 && inflight.len() < 128 {
            inflight.push(std::future::IntoFuture::into_future(
                client.send("worker", Event::new("job", next)),
            ));
            next += 1;
        }
        let v = within(30, "replies", inflight.next())
            .await
            .unwrap()
            .unwrap();
        let job = v["job"].as_u64().unwrap() as usize;
        assert!(!seen[job], "job {job} answered twice");
        seen[job] = true;
        *per_replica
            .entry(v["replica"].as_u64().unwrap())
            .or_default() += 1;
        done += 1;
    }
    assert!(seen.iter().all(|s| *s));
    assert_eq!(
        per_replica.len(),
        3,
        "every replica takes some: {per_replica:?}"
    );
    let total: u64 = handled.iter().map(|c| c.load(Ordering::Relaxed)).sum();
    assert_eq!(total, 3000, "each send handled exactly once");

    // a broadcast reaches the replicated id once
    client.broadcast(Event::new("announce", ())).unwrap();
    within(10, "broadcast", announced.notified()).await;
    // a later round trip through every replica's connection orders after the broadcast
    for _ in 0..30 {
        within(10, "probe", client.send("worker", Event::new("job", 0)))
            .await
            .unwrap();
    }
    assert_eq!(broadcasts.load(Ordering::Relaxed), 1);
}
