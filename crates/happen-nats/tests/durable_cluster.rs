//! Durable delivery over a 3-server NATS cluster (JetStream streams with 3 replicas): a member
//! is killed while 100,000 events flow (the one the worker's client is connected to, so that client
//! also has to move) and later restarted; no event is lost, duplicates stay within what the
//! worker held unacknowledged (plus acknowledgements lost with the connection), and every
//! durable publish was acknowledged by the cluster.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::instance_with;
use happen::{Context, ErrorKind, Event, NodeOptions};
use happen_nats::NatsConfig;
use happen_nats::{DeliveryMode, DurableNode};
use parking_lot::Mutex;
use serde_json::json;
use test_support::NatsCluster;

const EVENTS: u64 = 100_000;
const MAX_CONCURRENT: usize = 8;
const QUEUE_LIMIT: usize = 256;

fn config(urls: Vec<String>) -> NatsConfig {
    let mut c = NatsConfig::with_server(urls[0].clone()).with_durable(
        "ledger",
        DurableNode::new(DeliveryMode::AtLeastOnce)
            .with_backoff(Duration::from_millis(20), Duration::from_millis(200))
            .with_ack_wait(Duration::from_secs(2)),
    );
    c.servers = urls;
    c.durable.replicas = 3;
    c.reconnect.delay = Duration::from_millis(10);
    c.reconnect.max_delay = Duration::from_millis(200);
    // the cluster elects new stream leaders after the kill: publishes are retried that long
    c.request_timeout = Some(Duration::from_secs(60));
    c
}

/// Polls `done` every 10 ms until it holds, failing with `what` after `secs` seconds.
async fn wait_until(secs: u64, what: impl Fn() -> String, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(Instant::now() < deadline, "{}", what());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_event_is_lost_when_a_cluster_member_dies() {
    let mut cluster = tokio::task::spawn_blocking(NatsCluster::start)
        .await
        .unwrap();

    // the worker: its own instance, counting every run of every event
    let (w, tw) = instance_with(config(cluster.urls())).await;
    let seen: Arc<Mutex<HashMap<u64, u32>>> = Arc::default();
    let processed = Arc::new(AtomicU64::new(0));
    let ledger = w
        .node_with(
            "ledger",
            NodeOptions::new()
                .max_concurrent(MAX_CONCURRENT)
                .queue_limit(QUEUE_LIMIT),
        )
        .await
        .unwrap();
    let (s, p) = (seen.clone(), processed.clone());
    ledger
        .on("entry", move |e: Event, _c: Context| {
            let (s, p) = (s.clone(), p.clone());
            async move {
                let n = e.payload()["n"].as_u64().unwrap();
                *s.lock().entry(n).or_insert(0) += 1;
                p.fetch_add(1, Ordering::Relaxed);
            }
        })
        .unwrap();

    // the producer: another instance, telling as fast as its outgoing buffer takes it
    let (a, ta) = instance_with(config(cluster.urls())).await;
    let producer = a.node("producer").await.unwrap();
    let sending = tokio::spawn(async move {
        let mut n = 0;
        while n < EVENTS {
            match producer.tell("ledger", Event::new("entry", json!({ "n": n }))) {
                Ok(()) => n += 1,
                // the outgoing buffer is full: wait for room
                Err(e) if e.kind() == ErrorKind::Transport => {
                    tokio::time::sleep(Duration::from_millis(2)).await
                }
                Err(e) => panic!("tell {n}: {e}"),
            }
        }
    });

    // kill the worker's server a quarter of the way in
    wait_until(
        120,
        || "the worker did not get a quarter of the events before the kill".into(),
        || processed.load(Ordering::Relaxed) >= EVENTS / 4,
    )
    .await;
    let victim = cluster
        .index_of_port(tw.client().server_info().port)
        .expect("the worker is connected to a member");
    cluster.kill(victim);
    println!(
        "killed member {victim} after {} events",
        processed.load(Ordering::Relaxed)
    );

    // the remaining two members keep the streams (quorum of 3): the work goes on
    let at_kill = processed.load(Ordering::Relaxed);
    wait_until(
        120,
        || "no progress on the surviving members".into(),
        || processed.load(Ordering::Relaxed) >= at_kill + EVENTS / 4,
    )
    .await;
    // and the killed member rejoins
    let cluster = tokio::task::spawn_blocking(move || {
        cluster.restart(victim);
        cluster
    })
    .await
    .unwrap();

    sending.await.unwrap();
    wait_until(
        180,
        || {
            format!(
                "only {} of {EVENTS} events processed; worker {:?}, producer {:?}",
                seen.lock().len(),
                tw.stats(),
                ta.stats()
            )
        },
        || seen.lock().len() as u64 == EVENTS,
    )
    .await;

    let seen = seen.lock();
    assert!((0..EVENTS).all(|n| seen.contains_key(&n)));
    let duplicates: u32 = seen.values().map(|c| c - 1).sum();
    let (ws, ps) = (tw.stats(), ta.stats());
    println!("{duplicates} duplicates; worker {ws:?}; producer {ps:?}");
    // what the worker held unacknowledged when its server died comes again (at most its room),
    // and so may events whose acknowledgements were written into the lost connection (a
    // socket buffer's worth): twice the room is a generous bound, far below the 100k sent
    assert!(
        duplicates as usize <= 2 * (MAX_CONCURRENT + QUEUE_LIMIT),
        "{duplicates} duplicates"
    );
    assert_eq!(ps.durable_publish_failed, 0, "{ps:?}");
    assert_eq!(ps.durable_published, EVENTS, "{ps:?}");
    assert!(
        ws.durable_max_held as usize <= MAX_CONCURRENT + QUEUE_LIMIT,
        "{ws:?}"
    );
    drop(cluster);
}
