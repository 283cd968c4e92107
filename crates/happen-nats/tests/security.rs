//! Signed events over NATS (real nats-server): trusted signatures pass, altered bodies,
//! foreign keys, unsigned events under enforce, replays and stale timestamps are refused
//! with `unauthenticated` at once, before admission.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use bytes::Bytes;
use common::{instance, within};
use futures::StreamExt;
use happen::security::{
    Security, SecurityMode, SigningKey, TrustRing, body_hash, event_hash, sign_body,
};
use happen::{Context, Event, Happen, Node, NodeOptions};
use serde_json::{Value, json};
use test_support::NatsServer;

/// The kind of an error reply (`Happen-Error-Kind`), `None` for a value reply.
fn error_kind(reply: &async_nats::Message) -> Option<String> {
    let h = reply.headers.as_ref()?;
    (h.get("Happen-Status").map(|v| v.as_str()) == Some("error"))
        .then(|| h.get("Happen-Error-Kind").map(|v| v.as_str().to_owned()))
        .flatten()
}

struct Setup {
    server: NatsServer,
    orders_key: SigningKey,
    orders: Node,
    billing: Node,
    handled: Arc<AtomicUsize>,
    raw: async_nats::Client,
    _instances: (Happen, Happen),
}

/// `orders` (signing) in one process, `billing` (trusting `orders`' key, in `mode`) in another.
async fn setup(mode: SecurityMode) -> Setup {
    let server = NatsServer::start();
    let (a, _) = instance(&server.url()).await;
    let (b, _) = instance(&server.url()).await;
    let orders_key = SigningKey::generate();
    let orders = a
        .node_with(
            "orders",
            NodeOptions::new().security(Security::new().signing_key(orders_key.clone())),
        )
        .await
        .unwrap();
    let ring = TrustRing::new()
        .trust("orders", orders_key.public_key())
        .unwrap();
    let billing = b
        .node_with(
            "billing",
            NodeOptions::new().security(Security::new().trust(ring).mode(mode)),
        )
        .await
        .unwrap();
    let handled = Arc::new(AtomicUsize::new(0));
    let h = handled.clone();
    billing
        .on("invoice", move |e: Event, _c: Context| {
            h.fetch_add(1, SeqCst);
            async move {
                json!({"n": e.payload()["n"], "rehash": e.hash() == Some(event_hash(&e).as_str())})
            }
        })
        .unwrap();
    let raw = async_nats::connect(server.url()).await.unwrap();
    Setup {
        server,
        orders_key,
        orders,
        billing,
        handled,
        raw,
        _instances: (a, b),
    }
}

/// A signed body as `orders` sent it, captured on the wire.
async fn capture(s: &Setup) -> Bytes {
    let mut sub = s.raw.subscribe("happen.node.billing").await.unwrap();
    // a round trip (answered "no responders" by the server) after the SUB: the server has
    // registered the subscription before `orders` publishes
    let _ = s.raw.request("security-test.probe", Bytes::new()).await;
    let reply = s
        .orders
        .send("billing", Event::new("invoice", json!({"n": 0})));
    within(10, "signed send", reply).await.unwrap();
    within(10, "captured body", sub.next())
        .await
        .unwrap()
        .payload
}

/// A raw request to `billing` answered within 100 ms; the error kind if it failed.
async fn request(s: &Setup, body: impl Into<Bytes>) -> Option<String> {
    let reply = tokio::time::timeout(
        Duration::from_millis(100),
        s.raw.request("happen.node.billing", body.into()),
    )
    .await
    .expect("answered within 100 ms")
    .unwrap();
    error_kind(&reply)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_signed_events_from_a_trusted_node_are_all_handled() {
    let s = setup(SecurityMode::Enforce).await;
    let body = capture(&s).await;
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        v["context"]["causal"]["hash"],
        body_hash(&body).unwrap(),
        "recomputing the hash reproduces it"
    );
    assert_eq!(
        v["context"]["integrity"]["publicKey"],
        s.orders_key.public_key()
    );
    for n in 1..=1000 {
        let seen = within(
            10,
            "signed send",
            s.orders
                .send("billing", Event::new("invoice", json!({"n": n}))),
        )
        .await
        .unwrap();
        assert_eq!(seen, json!({"n": n, "rehash": true}));
    }
    assert_eq!(s.handled.load(SeqCst), 1001);
    assert_eq!(s.billing.stats().denied, 0);
    drop(s.server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn altered_bodies_are_unauthenticated_at_once() {
    let s = setup(SecurityMode::Enforce).await;
    let body = capture(&s).await;
    assert_eq!(s.handled.load(SeqCst), 1);
    let original: Value = serde_json::from_slice(&body).unwrap();
    type Alter = fn(&mut Value);
    let alterations: [(&str, Alter); 5] = [
        ("payload", |v| v["payload"]["n"] = json!(1_000_000)),
        ("sender", |v| {
            v["context"]["causal"]["sender"] = json!("orders-2")
        }),
        ("type", |v| v["type"] = json!("invoice.void")),
        ("origin", |v| {
            v["context"]["origin"] = json!({"nodeId": "orders", "sourceId": "admin"})
        }),
        ("id", |v| v["context"]["causal"]["id"] = json!("evt-forged")),
    ];
    for (what, alter) in alterations {
        let mut v = original.clone();
        alter(&mut v);
        let kind = request(&s, serde_json::to_vec(&v).unwrap()).await;
        assert_eq!(kind.as_deref(), Some("unauthenticated"), "{what} altered");
    }
    assert_eq!(
        s.handled.load(SeqCst),
        1,
        "no altered event reached the handler"
    );
    assert_eq!(s.billing.stats().denied, 5);
    assert_eq!(s.billing.stats().accepted, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_not_bound_to_the_sender_is_refused_even_when_carried_in_the_body() {
    let s = setup(SecurityMode::Permissive).await;
    let mallory = SigningKey::generate();
    let body = json!({"type": "invoice", "payload": {"n": 1},
        "context": {"causal": {"id": "evt-m1", "sender": "orders", "timestamp": now_ms()}}});
    let signed = sign_body(&serde_json::to_vec(&body).unwrap(), &mallory).unwrap();
    assert_eq!(
        request(&s, signed).await.as_deref(),
        Some("unauthenticated")
    );
    // the same event signed by the bound key passes
    let mut good = body.clone();
    good["context"]["causal"]["id"] = json!("evt-g1");
    let signed = sign_body(&serde_json::to_vec(&good).unwrap(), &s.orders_key).unwrap();
    assert_eq!(request(&s, signed).await, None);
    assert_eq!(s.handled.load(SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_events_are_refused_under_enforce_and_handled_otherwise() {
    let unsigned = || {
        serde_json::to_vec(&json!({"type": "invoice", "payload": {"n": 1},
            "context": {"causal": {"sender": "orders", "timestamp": now_ms()}}}))
        .unwrap()
    };
    let s = setup(SecurityMode::Enforce).await;
    assert_eq!(
        request(&s, unsigned()).await.as_deref(),
        Some("unauthenticated")
    );
    assert_eq!(s.handled.load(SeqCst), 0);
    // a tell (no reply subject) is dropped and counted; a request after it on the same
    // connection is served after it
    s.raw
        .publish("happen.node.billing", unsigned().into())
        .await
        .unwrap();
    assert_eq!(
        request(&s, unsigned()).await.as_deref(),
        Some("unauthenticated")
    );
    let stats = s.billing.stats();
    assert_eq!(stats.denied, 3);
    assert_eq!(stats.accepted, 0);
    assert_eq!(
        stats.unobserved_failures, 0,
        "counted as denied, not once more"
    );

    for mode in [SecurityMode::Permissive, SecurityMode::Off] {
        let s = setup(mode).await;
        assert_eq!(request(&s, unsigned()).await, None, "{mode:?}");
        assert_eq!(s.handled.load(SeqCst), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_and_timestamps_out_of_bounds_are_refused() {
    let s = setup(SecurityMode::Enforce).await;
    let body = capture(&s).await;
    // the byte-identical body again: a replay
    assert_eq!(
        request(&s, body.clone()).await.as_deref(),
        Some("unauthenticated")
    );
    assert_eq!(request(&s, body).await.as_deref(), Some("unauthenticated"));
    assert_eq!(s.handled.load(SeqCst), 1, "the handler ran once");
    // properly signed, but stamped 10 minutes ago / ahead (bounds: 5 min, 30 s)
    for (id, skew) in [("evt-old", -600_000i64), ("evt-future", 600_000)] {
        let ts = now_ms().saturating_add_signed(skew);
        let body = json!({"type": "invoice", "payload": {"n": 1},
            "context": {"causal": {"id": id, "sender": "orders", "timestamp": ts}}});
        let signed = sign_body(&serde_json::to_vec(&body).unwrap(), &s.orders_key).unwrap();
        assert_eq!(
            request(&s, signed).await.as_deref(),
            Some("unauthenticated"),
            "{id}"
        );
    }
    // within the bounds it passes
    let body = json!({"type": "invoice", "payload": {"n": 1},
        "context": {"causal": {"id": "evt-now", "sender": "orders", "timestamp": now_ms() - 1000}}});
    let signed = sign_body(&serde_json::to_vec(&body).unwrap(), &s.orders_key).unwrap();
    assert_eq!(request(&s, signed).await, None);
    assert_eq!(s.handled.load(SeqCst), 2);
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}
