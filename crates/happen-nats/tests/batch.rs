//! Batches across processes: one NATS message per batch, one handler call, each event with its
//! own causal context (WIRE.md "Batches").

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};

use common::{instance_with, within};
use futures::StreamExt;
use happen::{BATCH_EVENT, Batch, Context, Event};
use happen_nats::NatsConfig;
use serde_json::{Value, json};
use test_support::NatsServer;
use tokio::sync::mpsc;

fn config(url: &str, prefix: &str) -> NatsConfig {
    let mut c = NatsConfig::with_server(url);
    c.prefix = prefix.to_owned();
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_fifty_is_one_message_and_one_call_across_processes() {
    let server = NatsServer::start();
    let prefix = "batchx";
    let (a, _) = instance_with(config(&server.url(), prefix)).await;
    let (b, _) = instance_with(config(&server.url(), prefix)).await;

    // A plain (not queue-group) subscriber sees every message sent to the node.
    let watcher = async_nats::connect(server.url()).await.unwrap();
    let mut wire = watcher
        .subscribe(format!("{prefix}.node.store"))
        .await
        .unwrap();
    common::round_trip(&watcher).await;

    let store = b.node("store").await.unwrap();
    let (tx, mut calls) = mpsc::unbounded_channel::<Vec<Event>>();
    store
        .on_batch("sensor.reading", move |batch: Batch, _ctx: Context| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(batch.to_vec());
                batch.len()
            }
        })
        .unwrap();
    let sensor = a.node("sensor").await.unwrap();

    let readings = (0..50).map(|i| Event::new("sensor.reading", json!({ "i": i })));
    let reply = within(10, "batch reply", sensor.send_batch("store", readings)).await;
    assert_eq!(reply.unwrap(), json!(50));

    let events = within(5, "the batch call", calls.recv()).await.unwrap();
    assert!(calls.try_recv().is_err(), "one call for the whole batch");
    assert_eq!(events.len(), 50);
    let mut ids = HashSet::new();
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.payload()["i"], i, "in order");
        assert_eq!(e.event_type(), "sensor.reading");
        assert_eq!(e.sender(), "sensor");
        assert_eq!(e.path(), ["sensor"]);
        assert!(ids.insert(e.id().clone()), "each event has its own id");
    }

    // Exactly one message crossed the wire for the 50 events: the carrier.
    let msg = within(5, "the wire message", wire.next()).await.unwrap();
    let carrier: Value = serde_json::from_slice(&msg.payload).unwrap();
    assert_eq!(carrier["type"], BATCH_EVENT);
    assert_eq!(carrier["payload"].as_array().map(Vec::len), Some(50));
    assert_eq!(carrier["payload"][7]["payload"], json!({ "i": 7 }));
    assert_eq!(
        carrier["payload"][7]["context"]["causal"]["sender"],
        "sensor"
    );
    common::round_trip(&watcher).await;
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(200), wire.next())
            .await
            .is_err(),
        "no second message on the node's subject"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn across_processes_a_single_event_handler_runs_per_event_and_a_mixed_batch_is_refused() {
    let server = NatsServer::start();
    let prefix = "batchy";
    let (a, _) = instance_with(config(&server.url(), prefix)).await;
    let (b, _) = instance_with(config(&server.url(), prefix)).await;
    let calls: &'static AtomicU64 = Box::leak(Box::new(AtomicU64::new(0)));
    let double = b.node("double").await.unwrap();
    double
        .on("n", move |e: Event, _c: Context| async move {
            calls.fetch_add(1, Ordering::Relaxed);
            e.payload().as_u64().unwrap_or(0) * 2
        })
        .unwrap();
    let batcher = b.node("batcher").await.unwrap();
    batcher
        .on_batch("n", |batch: Batch, _c: Context| async move { batch.len() })
        .unwrap();
    let client = a.node("client").await.unwrap();

    let reply = within(
        10,
        "fallback reply",
        client.send_batch("double", (1..=50).map(|i| Event::new("n", i))),
    )
    .await
    .unwrap();
    let expected: Vec<u64> = (1..=50).map(|i| i * 2).collect();
    assert_eq!(reply, json!(expected));
    assert_eq!(calls.load(Ordering::Relaxed), 50);

    let mixed = vec![Event::new("n", 1), Event::new("other", 2)];
    let err = within(10, "mixed reply", client.send_batch("batcher", mixed))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), happen::ErrorKind::InvalidEvent, "{err}");

    let empty = within(10, "empty reply", client.send_batch("batcher", Vec::new()))
        .await
        .unwrap();
    assert_eq!(empty, Value::Null);
}

/// A stand-in for a node of Happen's TypeScript reference on `<prefix>.node.<id>`: plain
/// NATS, answers each event with a bare JSON body (its payload doubled), sends no reply for
/// an event it fails on (a payload that is not a number; the reference answers nothing for a
/// failed flow), and does not answer discovery. Reports every body it got.
async fn reference_node(url: &str, prefix: &str, id: &str) -> mpsc::UnboundedReceiver<Value> {
    let client = async_nats::connect(url).await.unwrap();
    let mut sub = client
        .queue_subscribe(format!("{prefix}.node.{id}"), id.to_owned())
        .await
        .unwrap();
    common::round_trip(&client).await;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(msg) = sub.next().await {
            let event: Value = serde_json::from_slice(&msg.payload).unwrap();
            let answer = event["payload"].as_u64().map(|n| json!(n * 2));
            let _ = tx.send(event);
            if let (Some(reply), Some(answer)) = (msg.reply, answer) {
                let body = serde_json::to_vec(&answer).unwrap();
                client.publish(reply, body.into()).await.unwrap();
            }
        }
    });
    rx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_for_a_node_no_happen_process_serves_goes_one_event_at_a_time() {
    let server = NatsServer::start();
    let prefix = "batchref";
    let mut c = config(&server.url(), prefix);
    c.request_timeout = Some(std::time::Duration::from_secs(1));
    let (a, _) = instance_with(c).await;
    let mut reference = reference_node(&server.url(), prefix, "legacy").await;
    // Every discovery request on the wire, to check the answer is remembered.
    let watcher = async_nats::connect(server.url()).await.unwrap();
    let mut discovery = watcher
        .subscribe(format!("{prefix}.discover"))
        .await
        .unwrap();
    common::round_trip(&watcher).await;
    let client = a.node("client").await.unwrap(); // its process answers discovery

    let reply = within(
        10,
        "batch reply",
        client.send_batch("legacy", (1..=20).map(|i| Event::new("n", i))),
    )
    .await
    .unwrap();
    let doubled: Vec<u64> = (1..=20).map(|i| i * 2).collect();
    assert_eq!(reply, json!(doubled), "the values in order, as one array");
    let mut ids = HashSet::new();
    for i in 1..=20u64 {
        let event = within(5, "an event at the reference", reference.recv())
            .await
            .unwrap();
        assert_eq!(event["type"], "n", "single events, never the carrier");
        assert_eq!(event["payload"], i, "in order");
        assert_eq!(event["context"]["causal"]["sender"], "client");
        assert!(ids.insert(event["context"]["causal"]["id"].to_string()));
    }

    // A second batch: the node is remembered, no second discovery request.
    let again = within(
        10,
        "second batch",
        client.send_batch("legacy", (1..=3).map(|i| Event::new("n", i))),
    )
    .await
    .unwrap();
    assert_eq!(again, json!([2, 4, 6]));
    within(5, "the discovery request", discovery.next())
        .await
        .unwrap();
    common::round_trip(&watcher).await;
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(300), discovery.next())
            .await
            .is_err(),
        "one discovery request for two batches"
    );
    for _ in 0..3 {
        within(5, "second batch's events", reference.recv())
            .await
            .unwrap();
    }

    // From a thread outside the runtime: the transport runs the batch on its own runtime.
    let from_thread = client.clone();
    let reply = std::thread::spawn(move || {
        from_thread.send_batch("legacy", (1..=2).map(|i| Event::new("n", i)))
    })
    .join()
    .unwrap();
    assert_eq!(
        within(10, "from a plain thread", reply).await.unwrap(),
        json!([2, 4])
    );
    for _ in 0..2 {
        within(5, "the thread's batch events", reference.recv())
            .await
            .unwrap();
    }

    // An event that gets no answer fails the batch (after the request timeout); the events
    // after it are not sent.
    let events = vec![
        Event::new("n", 1),
        Event::new("n", "fail"),
        Event::new("n", 3),
    ];
    let err = within(10, "failing batch", client.send_batch("legacy", events))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), happen::ErrorKind::Timeout, "{err}");
    assert_eq!(
        within(5, "1", reference.recv()).await.unwrap()["payload"],
        1
    );
    assert_eq!(
        within(5, "fail", reference.recv()).await.unwrap()["payload"],
        "fail"
    );
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(300), reference.recv())
            .await
            .is_err(),
        "the event after the failure was not sent"
    );
}
