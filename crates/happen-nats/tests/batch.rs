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
    watcher.flush().await.unwrap();

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
    watcher.flush().await.unwrap();
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
