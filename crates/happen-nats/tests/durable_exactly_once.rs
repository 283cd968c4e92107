//! Exactly-once per event id, whatever the concurrency: copies of one event id stored apart
//! (outside the server's dedup window, or by publishers that use other message ids) and
//! pulled at the same moment, by one replica with `max_concurrent` ≥ 2 and by two replicas,
//! run the handler once; every copy's requester gets the first run's answer. Real nats-server
//! with JetStream.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::{instance_with, within};
use futures::StreamExt;
use happen::{Context, Event, NodeOptions};
use happen_nats::{DeliveryMode, DurableNode, NatsConfig};
use parking_lot::Mutex;
use serde_json::{Value, json};
use test_support::{NatsServer, NatsServerOptions};

const NODE: &str = "worker-once";

fn config(url: &str) -> NatsConfig {
    config_with_ack_wait(url, Duration::from_secs(10))
}

/// The claim lease is the node's `ack_wait`.
fn config_with_ack_wait(url: &str, ack_wait: Duration) -> NatsConfig {
    NatsConfig::with_server(url).with_durable(
        NODE,
        DurableNode::new(DeliveryMode::ExactlyOnce)
            .with_backoff(Duration::from_millis(20), Duration::from_millis(200))
            .with_ack_wait(ack_wait),
    )
}

/// An event as a reference publisher writes it, with the id `evt-…-<n>`.
fn event_body(n: u64) -> bytes::Bytes {
    bytes::Bytes::from(
        json!({
            "type": "charge",
            "payload": { "n": n },
            "context": { "causal": {
                "id": format!("evt-00000000-0000-4000-8000-{n:012}"),
                "sender": "billing",
                "correlationId": format!("txn-00000000-0000-4000-8000-{n:012}"),
                "path": ["billing"],
                "timestamp": 1_700_000_000_000u64,
            }},
        })
        .to_string(),
    )
}

/// Stores `pairs` events twice each (copies `a` and `b` next to each other, different
/// message ids, so the server keeps both) while no replica serves the node, then starts
/// `replicas` replicas with `max_concurrent` 4 (small pulls, so the replicas take turns and
/// the copies of many events go to different replicas) and collects every copy's answer.
/// Returns (runs per event, answers per event and copy, copies that waited for another
/// replica's claim).
async fn run_pairs(
    pairs: u64,
    replicas: usize,
) -> (HashMap<u64, u32>, HashMap<String, Value>, u64) {
    let server = NatsServer::start_with(NatsServerOptions::new().with_jetstream());
    let url = server.url();
    // connecting a transport with the durable settings creates the streams
    let (_setup, _setup_t) = instance_with(config(&url)).await;
    let raw = async_nats::connect(&url).await.unwrap();
    let js = async_nats::jetstream::new(raw.clone());
    let mut answers_sub = raw.subscribe("answers.>").await.unwrap();
    common::round_trip(&raw).await;
    let mut acks = Vec::new();
    for n in 0..pairs {
        let body = event_body(n);
        for copy in ["a", "b"] {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", format!("{n}-{copy}").as_str());
            headers.insert("Happen-Reply-To", format!("answers.{n}.{copy}").as_str());
            acks.push(
                js.publish_with_headers(format!("happen.durable.{NODE}"), headers, body.clone())
                    .await
                    .unwrap(),
            );
        }
    }
    for ack in acks {
        within(20, "stored", ack).await.unwrap();
    }

    let runs: Arc<Mutex<HashMap<u64, u32>>> = Arc::default();
    let mut hosts = Vec::new();
    for r in 0..replicas {
        let (h, t) = instance_with(config(&url)).await;
        let node = h
            .node_with(NODE, NodeOptions::new().max_concurrent(4).queue_limit(4))
            .await
            .unwrap();
        let runs = runs.clone();
        node.on("charge", move |e: Event, _c: Context| {
            let runs = runs.clone();
            async move {
                let n = e.payload()["n"].as_u64().unwrap();
                let run = {
                    let mut runs = runs.lock();
                    let c = runs.entry(n).or_insert(0);
                    *c += 1;
                    *c
                };
                // long enough for the other copy to be pulled meanwhile
                tokio::time::sleep(Duration::from_millis(3)).await;
                json!({ "n": n, "run": run, "replica": r })
            }
        })
        .unwrap();
        hosts.push((h, t));
    }
    let mut answers = HashMap::new();
    while answers.len() < (pairs * 2) as usize {
        let m = within(60, "every copy answered", answers_sub.next())
            .await
            .unwrap();
        let v: Value = serde_json::from_slice(&m.payload).unwrap_or_else(
            |_| json!({ "undecodable": String::from_utf8_lossy(&m.payload).to_string() }),
        );
        assert!(
            answers.insert(m.subject.to_string(), v).is_none(),
            "one answer per copy: {}",
            m.subject
        );
    }
    let stats: Vec<_> = hosts.iter().map(|(_, t)| t.stats()).collect();
    let skipped: u64 = stats.iter().map(|s| s.durable_duplicates_skipped).sum();
    let waited: u64 = stats.iter().map(|s| s.durable_claims_waited).sum();
    let acked: Vec<u64> = stats.iter().map(|s| s.durable_acked).collect();
    println!(
        "{pairs} pairs, {replicas} replicas: runs acked per replica {acked:?}, {skipped} copies answered without a run, {waited} of them after waiting for another replica's claim"
    );
    assert_eq!(
        skipped, pairs,
        "one copy of each pair answered without a run"
    );
    assert_eq!(acked.iter().sum::<u64>(), pairs, "one run of each pair");
    let runs = runs.lock().clone();
    (runs, answers, waited)
}

fn check(pairs: u64, runs: &HashMap<u64, u32>, answers: &HashMap<String, Value>) {
    let double: Vec<(u64, u32)> = runs
        .iter()
        .filter(|(_, c)| **c > 1)
        .map(|(n, c)| (*n, *c))
        .collect();
    println!(
        "events run: {}, run more than once: {}",
        runs.len(),
        double.len()
    );
    assert!(double.is_empty(), "double runs: {double:?}");
    assert_eq!(runs.len() as u64, pairs, "every event ran");
    for n in 0..pairs {
        let a = &answers[&format!("answers.{n}.a")];
        let b = &answers[&format!("answers.{n}.b")];
        assert_eq!(a["n"], n, "{a}");
        assert_eq!(a, b, "both copies of event {n} get the same answer");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_copies_pulled_together_by_one_replica_run_once() {
    const PAIRS: u64 = 1_000;
    let (runs, answers, waited) = run_pairs(PAIRS, 1).await;
    check(PAIRS, &runs, &answers);
    assert_eq!(
        waited, 0,
        "one replica: every second copy waits in the process"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_copies_pulled_together_by_two_replicas_run_once() {
    const PAIRS: u64 = 1_000;
    let (runs, answers, waited) = run_pairs(PAIRS, 2).await;
    check(PAIRS, &runs, &answers);
    assert!(
        waited > 0,
        "some pairs were split between the replicas (the claim in JetStream decided)"
    );
}

/// A claim whose owner died (stored by a replica that is gone, never renewed) is taken over
/// after the lease (`ack_wait`): the event runs once, here, and is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_whose_owner_died_is_taken_over_after_the_lease() {
    let server = NatsServer::start_with(NatsServerOptions::new().with_jetstream());
    let config = config_with_ack_wait(&server.url(), LEASE);
    take_over_a_dead_claim(config, &server.url()).await;
}

/// The same on a 3-server cluster whose record stream has 3 replicas, after a member was
/// killed and restarted: the claim is read from the stream's leader, which decides the
/// compare-and-set (a direct get, answered by any replica, could report a sequence the leader
/// refuses: the chaos soak lost exactly-once events that way).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_whose_owner_died_is_taken_over_on_a_cluster() {
    let mut cluster = tokio::task::spawn_blocking(test_support::NatsCluster::start)
        .await
        .unwrap();
    let mut config = config_with_ack_wait(&cluster.urls()[0], LEASE);
    config.servers = cluster.urls();
    config.durable.replicas = 3;
    config.reconnect.delay = Duration::from_millis(10);
    config.reconnect.max_delay = Duration::from_millis(200);
    let url = cluster.urls()[0].clone();
    // a member that is not ours (nor the raw client's) goes down and comes back: the streams'
    // replicas there catch up from the others
    let cluster = tokio::task::spawn_blocking(move || {
        cluster.kill(2);
        cluster.restart(2);
        cluster.wait_formed();
        cluster
    })
    .await
    .unwrap();
    take_over_a_dead_claim(config, &url).await;
    drop(cluster);
}

const LEASE: Duration = Duration::from_secs(1);

async fn take_over_a_dead_claim(config: NatsConfig, url: &str) {
    let lease = LEASE;
    let (h, t) = instance_with(config).await;
    let raw = async_nats::connect(url).await.unwrap();
    let js = async_nats::jetstream::new(raw.clone());
    // the claim a replica stored before it died
    js.publish(
        format!("happen.done.{NODE}.evt-00000000-0000-4000-8000-000000000007"),
        bytes::Bytes::from_static(br#"{"claim":{"owner":"a-replica-that-died"}}"#),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let mut answers_sub = raw.subscribe("answers.>").await.unwrap();
    common::round_trip(&raw).await;
    let runs = Arc::new(Mutex::new(0u32));
    let node = h.node(NODE).await.unwrap();
    let r = runs.clone();
    node.on("charge", move |e: Event, _c: Context| {
        let r = r.clone();
        async move {
            *r.lock() += 1;
            json!({ "n": e.payload()["n"] })
        }
    })
    .unwrap();
    let started = tokio::time::Instant::now();
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Happen-Reply-To", "answers.7");
    js.publish_with_headers(format!("happen.durable.{NODE}"), headers, event_body(7))
        .await
        .unwrap()
        .await
        .unwrap();
    let m = within(20, "answer after the takeover", answers_sub.next())
        .await
        .unwrap();
    let waited = started.elapsed();
    let v: Value = serde_json::from_slice(&m.payload).unwrap();
    assert_eq!(v, json!({ "n": 7 }));
    assert_eq!(*runs.lock(), 1);
    assert!(
        waited >= lease,
        "taken over only after the lease: {waited:?}"
    );
    let s = t.stats();
    assert_eq!(
        (s.durable_claims_taken_over, s.durable_claims_waited),
        (1, 1)
    );
    println!("taken over after {waited:?}");
}
