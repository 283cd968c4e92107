//! The gates before admission in one process: `accept_from` and policies hit exactly, a
//! refused event is counted as denied (never as accepted or rejected) and never takes a slot
//! or a queue place from an admitted one.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use happen::security::{Policy, Security};
use happen::{Context, ErrorKind, Event, Happen, NodeOptions, schema_hash};
use serde_json::json;
use tokio::sync::Notify;

#[tokio::test]
async fn accept_from_and_policies_hit_exactly() {
    let happen = Happen::new();
    let web = happen.node("web-1").await.unwrap();
    let batch = happen.node("batch").await.unwrap();
    let shape = schema_hash(&json!({"amount": 1, "currency": "EUR"}));
    let security = Security::new()
        .accept_from(["web-*", "user:admin", "tenant:42:*"])
        .policy(
            "refund",
            Policy::new()
                .schemas([shape])
                .roles(["admin", "42:ops"])
                .check(|e| match e.payload()["amount"].as_f64() {
                    Some(a) if a > 1000.0 => Err(format!("{a} is over the refund limit")),
                    _ => Ok(()),
                }),
        )
        .unwrap();
    let billing = happen
        .node_with("billing", NodeOptions::new().security(security))
        .await
        .unwrap();
    let handled = Arc::new(AtomicUsize::new(0));
    for ty in ["refund", "ping"] {
        let h = handled.clone();
        billing
            .on(ty, move |_e: Event, _c: Context| {
                h.fetch_add(1, SeqCst);
                async { "ok" }
            })
            .unwrap();
    }
    let refund = |amount: serde_json::Value| {
        Event::new("refund", json!({"amount": amount, "currency": "EUR"}))
    };

    // accepted: by sender glob, by origin entry, by tenant glob
    assert_eq!(
        web.send(&billing, refund(json!(5)).with_source_id("admin"))
            .await
            .unwrap(),
        "ok"
    );
    let admin = Event::new("ping", ())
        .with_source_type("user")
        .with_source_id("admin");
    assert_eq!(batch.send(&billing, admin).await.unwrap(), "ok");
    let tenant = refund(json!(5))
        .with_source_type("tenant")
        .with_source_id("42:ops");
    assert_eq!(batch.send(&billing, tenant).await.unwrap(), "ok");

    // forbidden: sender not accepted, origin of another type, role not allowed, custom check
    let cases = [
        (
            batch.send(&billing, Event::new("ping", ())),
            ErrorKind::Forbidden,
            "accepts events only from",
        ),
        (
            batch.send(
                &billing,
                Event::new("ping", ())
                    .with_source_type("service")
                    .with_source_id("admin"),
            ),
            ErrorKind::Forbidden,
            "is not among them",
        ),
        (
            web.send(&billing, refund(json!(5)).with_source_id("bob")),
            ErrorKind::Forbidden,
            "allowed roles",
        ),
        (
            web.send(&billing, refund(json!(5000)).with_source_id("admin")),
            ErrorKind::Forbidden,
            "over the refund limit",
        ),
        // invalid_event: another payload shape
        (
            web.send(
                &billing,
                Event::new("refund", json!({"amount": "5", "currency": "EUR"}))
                    .with_source_id("admin"),
            ),
            ErrorKind::InvalidEvent,
            "has shape",
        ),
        (
            web.send(
                &billing,
                Event::new("refund", json!({"amount": 5})).with_source_id("admin"),
            ),
            ErrorKind::InvalidEvent,
            "has shape",
        ),
    ];
    for (reply, kind, text) in cases {
        let err = tokio::time::timeout(Duration::from_millis(100), reply)
            .await
            .expect("a refused request is answered at once")
            .unwrap_err();
        assert_eq!(err.kind(), kind, "{err}");
        assert!(err.message().contains(text), "{err}");
        assert_eq!(err.node().map(|n| n.as_str()), Some("billing"));
    }
    // a tell is dropped and counted (in process, the teller hears of it as of a full queue)
    let err = web
        .tell(&billing, refund(json!(5)).with_source_id("eve"))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Forbidden);
    let stats = billing.stats();
    assert_eq!(handled.load(SeqCst), 3);
    assert_eq!(stats.denied, 7);
    assert_eq!(
        stats.accepted, 3,
        "refused events are never counted as accepted"
    );
    assert_eq!(stats.rejected, 0, "nor as rejected by admission");
}

#[tokio::test]
async fn refused_events_take_no_slot_and_no_queue_place() {
    let happen = Happen::new();
    let friend = happen.node("friend").await.unwrap();
    let stranger = happen.node("stranger").await.unwrap();
    let options = NodeOptions::new()
        .max_concurrent(1)
        .queue_limit(1)
        .security(Security::new().accept_from(["friend"]));
    let node = happen.node_with("guarded", options).await.unwrap();
    let gate = Arc::new(Notify::new());
    let started = Arc::new(Notify::new());
    let (g, s) = (gate.clone(), started.clone());
    node.on("work", move |_e: Event, _c: Context| {
        let (g, s) = (g.clone(), s.clone());
        async move {
            s.notify_one();
            g.notified().await;
            "done"
        }
    })
    .unwrap();
    // the one slot busy
    let first = tokio::spawn(friend.send(&node, Event::new("work", ())));
    started.notified().await;
    // 1,000 refused events while the slot is busy: none takes the queue's one place
    for _ in 0..1000 {
        let err = stranger.tell(&node, Event::new("work", ())).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Forbidden);
        let err = stranger
            .send(&node, Event::new("work", ()))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Forbidden);
    }
    // the queue's place is still free for an accepted event
    let second = tokio::spawn(friend.send(&node, Event::new("work", ())));
    tokio::task::yield_now().await;
    assert_eq!(node.stats().queued, 1);
    gate.notify_one();
    assert_eq!(first.await.unwrap().unwrap(), "done");
    started.notified().await;
    gate.notify_one();
    assert_eq!(second.await.unwrap().unwrap(), "done");
    let stats = node.stats();
    assert_eq!((stats.accepted, stats.rejected, stats.denied), (2, 0, 2000));
    assert_eq!(stats.peak_queued, 1);
}
