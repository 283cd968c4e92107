//! Bad input on happen subjects never disturbs correct traffic; raw reference-format JSON
//! (no happen client involved) is handled.

mod common;

use async_nats::HeaderMap;
use bytes::Bytes;
use common::{instance, instance_with, within};
use happen::{Context, ErrorKind, Event};
use happen_nats::NatsConfig;
use serde_json::json;
use test_support::NatsServer;
use tokio::sync::mpsc;

/// The error kind of an error reply as a client without happen reads it (`WIRE.md`, "Error
/// body"): `Happen-Status: error`, the kind in `Happen-Error-Kind`, the same in the body.
fn error_kind(reply: &async_nats::Message) -> Option<String> {
    let h = reply.headers.as_ref()?;
    if h.get("Happen-Status").map(|v| v.as_str()) != Some("error") {
        return None;
    }
    let kind = h.get("Happen-Error-Kind")?.as_str().to_owned();
    let body: serde_json::Value = serde_json::from_slice(&reply.payload).ok()?;
    assert_eq!(body["error"]["kind"], kind.as_str(), "{body}");
    Some(kind)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_reference_json_is_handled() {
    let server = NatsServer::start();
    let (h, _) = instance(&server.url()).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let svc = h.node("svc").await.unwrap();
    svc.on("order.created", move |event: Event, _c: Context| {
        let tx = tx.clone();
        async move {
            let _ = tx.send(event.clone());
            json!({"seen": event.payload()["id"]})
        }
    })
    .unwrap();

    // a plain NATS client, as the reference implementation publishes
    let raw = async_nats::connect(server.url()).await.unwrap();
    let body = r#"{"type":"order.created","payload":{"id":7},"context":{"causal":{"id":"evt-3b241101-e2bb-4255-8caf-4136c566a962","sender":"ts-node","correlationId":"txn-0b8f2d6a-1111-4222-8333-444455556666","path":["ts-node"],"timestamp":1700000000000}}}"#;
    let reply = within(
        10,
        "raw request",
        raw.request("happen.node.svc", Bytes::from(body)),
    )
    .await
    .unwrap();
    // the reply is the raw JSON final value, as the reference expects
    assert!(
        reply.headers.is_none()
            || reply
                .headers
                .as_ref()
                .unwrap()
                .get("Happen-Status")
                .is_none()
    );
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&reply.payload).unwrap(),
        json!({"seen": 7})
    );
    let event = rx.recv().await.unwrap();
    assert_eq!(event.sender(), "ts-node");
    assert_eq!(
        event.id().to_string(),
        "evt-3b241101-e2bb-4255-8caf-4136c566a962"
    );
    assert_eq!(
        event.correlation_id().to_string(),
        "txn-0b8f2d6a-1111-4222-8333-444455556666"
    );
    assert_eq!(event.causal().timestamp(), 1_700_000_000_000);

    // a reference broadcast (no reply subject, minimal fields) reaches the node too
    raw.publish(
        "happen.broadcast",
        Bytes::from(r#"{"type":"order.created","payload":{"id":8}}"#),
    )
    .await
    .unwrap();
    let event = within(10, "raw broadcast", rx.recv()).await.unwrap();
    assert_eq!(event.payload()["id"], 8);

    // and our events are the reference JSON: a raw subscriber reads them
    let mut sub = raw.subscribe("happen.node.ts-node").await.unwrap();
    common::round_trip(&raw).await;
    svc.tell("ts-node", Event::new("hello", json!({"x": 1})))
        .unwrap();
    use futures::StreamExt;
    let msg = within(10, "raw receive", sub.next()).await.unwrap();
    let v: serde_json::Value = serde_json::from_slice(&msg.payload).unwrap();
    assert_eq!(v["type"], "hello");
    assert_eq!(v["payload"]["x"], 1);
    assert_eq!(v["context"]["causal"]["sender"], "svc");
    assert!(
        v["context"]["causal"]["id"]
            .as_str()
            .unwrap()
            .starts_with("evt-")
    );
    assert!(
        v["context"]["causal"]["correlationId"]
            .as_str()
            .unwrap()
            .starts_with("txn-")
    );
    assert_eq!(v["context"]["causal"]["path"], json!(["svc"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_do_not_disturb_correct_traffic() {
    let server = NatsServer::start();
    let mut config = NatsConfig::with_server(server.url());
    config.max_message_bytes = Some(4096);
    let (h, t) = instance_with(config).await;
    let svc = h.node("svc").await.unwrap();
    svc.on("echo", |event: Event, _c: Context| async move {
        event.payload().clone()
    })
    .unwrap();
    let (client_h, _) = instance(&server.url()).await;
    let client = client_h.node("client").await.unwrap();

    let raw = async_nats::connect(server.url()).await.unwrap();
    let bad: Vec<Bytes> = vec![
        Bytes::from_static(b"{"),
        Bytes::from_static(b"not json at all"),
        Bytes::from_static(b"[]"),
        Bytes::from_static(b"{\"payload\":1}"),
        Bytes::from_static(b"{\"type\":5}"),
        Bytes::from_static(b"{\"type\":\"\"}"),
        Bytes::from_static(b"{\"type\":\"echo\",\"context\":{\"causal\":{\"path\":\"nope\"}}}"),
        Bytes::from_static(&[0xff, 0xfe, 0x00]),
        Bytes::from(vec![b' '; 10_000]), // oversized
    ];
    // with a reply subject: each is answered with an `invalid_event` error
    for body in &bad {
        let reply = within(
            10,
            "error reply",
            raw.request("happen.node.svc", body.clone()),
        )
        .await
        .unwrap();
        assert_eq!(
            error_kind(&reply).as_deref(),
            Some(ErrorKind::InvalidEvent.as_str()),
            "{reply:?}"
        );
    }
    // an unknown frame kind on a node subject
    let mut h1 = HeaderMap::new();
    h1.insert("Happen-Frame", "bogus");
    let reply = within(
        10,
        "frame reply",
        raw.request_with_headers(
            "happen.node.svc",
            h1,
            Bytes::from_static(b"{\"type\":\"echo\"}"),
        ),
    )
    .await
    .unwrap();
    assert_eq!(
        error_kind(&reply).as_deref(),
        Some(ErrorKind::InvalidEvent.as_str()),
        "{reply:?}"
    );
    // without reply subjects, on the node and broadcast subjects, interleaved with real traffic
    let mut replies = Vec::new();
    for i in 0..200 {
        let body = bad[i % bad.len()].clone();
        raw.publish("happen.node.svc", body.clone()).await.unwrap();
        raw.publish("happen.broadcast", body).await.unwrap();
        replies.push(std::future::IntoFuture::into_future(
            client.send("svc", Event::new("echo", i)),
        ));
    }
    let results = within(20, "good traffic", futures::future::join_all(replies)).await;
    for (i, r) in results.into_iter().enumerate() {
        assert_eq!(r.unwrap(), json!(i));
    }
    common::round_trip(&raw).await;
    // a final round trip after the raw publisher flushed: every bad message was processed
    within(10, "final", client.send("svc", Event::new("echo", 0)))
        .await
        .unwrap();
    let stats = t.stats();
    assert!(stats.malformed >= 8 + 200, "{stats:?}");
    assert!(stats.oversized >= 1, "{stats:?}");
    assert!(stats.protocol_errors >= 1, "{stats:?}");
    assert_eq!(svc.stats().failed, 0);
}
