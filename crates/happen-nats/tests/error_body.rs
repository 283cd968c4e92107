//! Error replies carry a JSON body that a requester without happen (a plain NATS client, as the
//! reference implementation or `nats req`) can read; happen clients go by the headers, so a
//! successful value shaped like that body stays a value.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{instance, within};
use happen::{Context, Error, ErrorKind, Event};
use serde_json::{Value, json};
use test_support::NatsServer;

const EVENT_ID: &str = "evt-3b241101-e2bb-4255-8caf-4136c566a962";

fn request(event_type: &str) -> Bytes {
    Bytes::from(
        json!({"type": event_type, "payload": {},
               "context": {"causal": {"id": EVENT_ID, "sender": "ts-node"}}})
        .to_string(),
    )
}

/// A raw request's reply: its `Happen-Status` header and its body as JSON.
async fn ask(raw: &async_nats::Client, subject: &str, body: Bytes) -> (Option<String>, Value) {
    let reply = within(10, subject, raw.request(subject.to_owned(), body))
        .await
        .unwrap();
    let status = reply
        .headers
        .as_ref()
        .and_then(|h| h.get("Happen-Status"))
        .map(|v| v.as_str().to_owned());
    let body = serde_json::from_slice(&reply.payload)
        .unwrap_or_else(|e| panic!("reply body is not JSON ({e}): {:?}", reply.payload));
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_nats_requester_reads_the_error() {
    let server = NatsServer::start();
    let (h, _) = instance(&server.url()).await;
    let payments = h.node("payments").await.unwrap();
    payments
        .on("refund", |_e: Event, _c: Context| async {
            Err::<(), _>(
                Error::new(ErrorKind::Handler, "refund window closed").with_code("refund_closed"),
            )
        })
        .unwrap();
    let orders = h.node("orders").await.unwrap();
    orders
        .on("return", |_e: Event, ctx: Context| async move {
            ctx.send("payments", Event::new("refund", ())).await?;
            Ok::<_, Error>(())
        })
        .unwrap();
    let raw = async_nats::connect(server.url()).await.unwrap();

    // a handler error with an application code
    let (status, body) = ask(&raw, "happen.node.payments", request("refund")).await;
    assert_eq!(status.as_deref(), Some("error"));
    let e = &body["error"];
    assert_eq!(e["kind"], "handler", "{body}");
    assert_eq!(e["message"], "refund window closed", "{body}");
    assert_eq!(e["code"], "refund_closed", "{body}");
    assert_eq!(e["node"], "payments", "{body}");
    assert_eq!(e["eventId"], EVENT_ID, "{body}");
    assert!(e.get("downstream").is_none(), "{body}");

    // passed on by another node: the chain, outermost first
    let (status, body) = ask(&raw, "happen.node.orders", request("return")).await;
    assert_eq!(status.as_deref(), Some("error"));
    let e = &body["error"];
    assert_eq!(e["kind"], "downstream", "{body}");
    assert_eq!(e["node"], "orders", "{body}");
    assert_eq!(e["eventId"], EVENT_ID, "{body}");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("refund window closed"),
        "{body}"
    );
    let d = &e["downstream"];
    assert_eq!(d["kind"], "handler", "{body}");
    assert_eq!(d["node"], "payments", "{body}");
    assert_eq!(d["code"], "refund_closed", "{body}");
    assert_eq!(d["message"], "refund window closed", "{body}");

    // errors of the transport and the engine too
    let (_, body) = ask(&raw, "happen.node.payments", request("nothing")).await;
    assert_eq!(body["error"]["kind"], "no_handler", "{body}");
    assert_eq!(body["error"]["node"], "payments", "{body}");
    let (_, body) = ask(&raw, "happen.node.payments", Bytes::from_static(b"{")).await;
    assert_eq!(body["error"]["kind"], "invalid_event", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("malformed")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_shaped_like_an_error_is_a_value() {
    let server = NatsServer::start();
    let (a, _) = instance(&server.url()).await;
    let (b, _) = instance(&server.url()).await;
    let shaped = json!({"error": {"kind": "handler", "message": "not really", "code": "x"}});
    let svc = b.node("svc").await.unwrap();
    let v = shaped.clone();
    svc.on("lookalike", move |_e: Event, _c: Context| {
        let v = v.clone();
        async move { v }
    })
    .unwrap();
    let client = a.node("client").await.unwrap();
    let got = within(
        10,
        "lookalike",
        client
            .send("svc", Event::new("lookalike", ()))
            .timeout(Duration::from_secs(5)),
    )
    .await
    .unwrap();
    assert_eq!(got, shaped);

    // a plain client tells them apart by the header
    let raw = async_nats::connect(server.url()).await.unwrap();
    let (status, body) = ask(&raw, "happen.node.svc", request("lookalike")).await;
    assert_eq!(status, None);
    assert_eq!(body, shaped);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_reply_without_a_body_still_decodes() {
    use futures::StreamExt;
    let server = NatsServer::start();
    let (a, _) = instance(&server.url()).await;
    // a node of an older happen: its error replies are headers only
    let raw = async_nats::connect(server.url()).await.unwrap();
    let mut requests = raw.subscribe("happen.node.legacy").await.unwrap();
    common::round_trip(&raw).await;
    let responder = tokio::spawn(async move {
        let request = requests.next().await.unwrap();
        let mut h = async_nats::HeaderMap::new();
        h.insert("Happen-Status", "error");
        h.insert("Happen-Error-Kind", "queue_full");
        h.insert("Happen-Error-Message", "queue of node `legacy` is full");
        h.insert("Happen-Error-Node", "legacy");
        h.insert("Happen-Error-Limit", "10");
        raw.publish_with_headers(request.reply.unwrap(), h, Bytes::new())
            .await
            .unwrap();
        common::round_trip(&raw).await;
    });
    let client = a.node("client").await.unwrap();
    let err = within(10, "legacy", client.send("legacy", Event::new("x", ())))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::QueueFull, "{err:?}");
    assert_eq!(err.node().map(|n| n.as_str()), Some("legacy"));
    assert_eq!(err.limit(), Some(10));
    assert_eq!(err.message(), "queue of node `legacy` is full");
    assert!(err.downstream().is_none() && err.code().is_none());
    within(10, "responder", responder).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_too_large_for_one_message_is_cut_not_lost() {
    let server = NatsServer::start();
    let (a, _) = instance(&server.url()).await;
    let (b, _) = instance(&server.url()).await;
    let verbose = b.node("verbose").await.unwrap();
    verbose
        .on("dump", |_e: Event, _c: Context| async {
            // twice the server's max_payload (1 MiB by default)
            let message = "x".repeat(2 << 20);
            Err::<(), _>(Error::new(ErrorKind::Handler, message).with_code("too_long"))
        })
        .unwrap();
    let client = a.node("client").await.unwrap();
    let err = within(
        10,
        "dump",
        client
            .send("verbose", Event::new("dump", ()))
            .timeout(Duration::from_secs(5)),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Handler, "{}", err.kind());
    assert_eq!(err.code(), Some("too_long"));
    assert_eq!(err.node().map(|n| n.as_str()), Some("verbose"));
    assert!(err.message().len() < 4096, "{}", err.message().len());
    assert!(err.message().contains("did not fit"), "{}", err.message());
}
