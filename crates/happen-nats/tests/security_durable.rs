//! Security gates on durable (JetStream) delivery: a signed durable event from a trusted
//! node is verified against the body JetStream delivered; a refused one goes straight to the
//! dead letters with the reason (one delivery, no retries), and its requester hears why.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use common::{instance_with, within};
use futures::StreamExt;
use happen::security::{Security, SecurityMode, SigningKey, TrustRing};
use happen::{Context, ErrorKind, Event, NodeOptions};
use happen_nats::{DeliveryMode, DurableNode, NatsConfig};
use serde_json::json;
use test_support::{NatsServer, NatsServerOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_durable_events_are_dead_lettered_at_once_with_the_reason() {
    let server = NatsServer::start_with(NatsServerOptions::new().with_jetstream());
    let cfg = NatsConfig::with_server(server.url()).with_durable(
        "worker-*",
        DurableNode::new(DeliveryMode::AtLeastOnce)
            .with_max_deliveries(5)
            .with_backoff(Duration::from_millis(20), Duration::from_millis(100)),
    );
    let (h, t) = instance_with(cfg.clone()).await;
    let (other, _) = instance_with(cfg).await;
    let js = async_nats::jetstream::new(t.client().clone());
    let (_, dlq) = t.durable_streams().unwrap();

    let friend_key = SigningKey::generate();
    let ring = TrustRing::new()
        .trust("friend", friend_key.public_key())
        .unwrap();
    let security = Security::new()
        .trust(ring)
        .mode(SecurityMode::Enforce)
        .accept_from(["friend"]);
    let worker = h
        .node_with("worker-1", NodeOptions::new().security(security))
        .await
        .unwrap();
    let runs = Arc::new(AtomicUsize::new(0));
    let r = runs.clone();
    worker
        .on("job", move |e: Event, _c: Context| {
            r.fetch_add(1, SeqCst);
            async move { json!({"signed": e.integrity().is_some()}) }
        })
        .unwrap();
    // in another process: a trusted, signing friend and an unsigned stranger
    let friend = other
        .node_with(
            "friend",
            NodeOptions::new().security(Security::new().signing_key(friend_key)),
        )
        .await
        .unwrap();
    let stranger = other.node("stranger").await.unwrap();

    let ok = within(
        30,
        "signed durable send",
        friend.send("worker-1", Event::new("job", 1)),
    )
    .await
    .unwrap();
    assert_eq!(ok, json!({"signed": true}));

    let err = within(
        30,
        "refused durable send",
        stranger.send("worker-1", Event::new("job", 2)),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthenticated, "{err}");
    assert_eq!(runs.load(SeqCst), 1, "the refused event never ran");

    let stream = js.get_stream(dlq).await.unwrap();
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config::default())
        .await
        .unwrap();
    let mut msgs = consumer.fetch().max_messages(10).messages().await.unwrap();
    let mut letters = Vec::new();
    while let Some(m) = within(10, "dead letter", msgs.next()).await {
        letters.push(m.unwrap());
    }
    assert_eq!(letters.len(), 1);
    let h = letters[0].headers.as_ref().unwrap();
    assert_eq!(
        h.get("Happen-Error-Kind").unwrap().as_str(),
        "unauthenticated"
    );
    assert!(
        h.get("Happen-Error-Message")
            .unwrap()
            .as_str()
            .contains("not signed")
    );
    assert_eq!(
        h.get("Happen-Deliveries").unwrap().as_str(),
        "1",
        "no retries"
    );
    assert_eq!(t.stats().durable_retried, 0);
    assert_eq!(worker.stats().denied, 1);
}
