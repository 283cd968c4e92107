//! A tap sees every event under the prefix, decoded, with how it travelled and to whom; it
//! skips what is not an event (pressure copies, queries) and reports what does not decode.

mod common;

use std::time::Duration;

use async_nats::HeaderMap;
use common::{instance, within};
use futures::StreamExt;
use happen::{Context, ErrorKind, Event};
use happen_nats::tap::{Tap, TapKind, Tapped, Undecodable};
use serde_json::{Value, json};
use test_support::NatsServer;

/// `(kind, target, type, payload)` of a tapped event.
type Seen = (TapKind, Option<String>, String, Value);

fn seen(t: Tapped) -> Seen {
    (
        t.kind,
        t.target.map(|n| n.to_string()),
        t.event.event_type().to_owned(),
        t.event.payload().clone(),
    )
}

async fn next(tap: &mut Tap) -> Result<Tapped, Undecodable> {
    within(10, "the next tapped item", tap.next())
        .await
        .expect("the tap is open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tap_sees_sends_tells_and_broadcasts_and_nothing_else() {
    let server = NatsServer::start();
    let (h, t) = instance(&server.url()).await;
    let mut all = within(10, "tap", t.tap()).await.unwrap();
    let mut broadcasts = within(10, "tap", t.tap_broadcasts()).await.unwrap();
    let echo = h.node("echo").await.unwrap();
    echo.on("ping", |e: Event, _c: Context| async move {
        e.payload().clone()
    })
    .unwrap();
    let client = h.node("client").await.unwrap();
    let v = within(10, "send", client.send("echo", Event::new("ping", 1)))
        .await
        .unwrap();
    assert_eq!(v, json!(1));
    client.tell("echo", Event::new("ping", 2)).unwrap();
    client.broadcast(Event::new("tick", 3)).unwrap();

    let mut got: Vec<Seen> = Vec::new();
    for _ in 0..3 {
        got.push(seen(next(&mut all).await.expect("an event")));
    }
    got.sort_by_key(|s| s.3.as_i64());
    assert_eq!(
        got,
        vec![
            (
                TapKind::Send,
                Some("echo".to_owned()),
                "ping".to_owned(),
                json!(1)
            ),
            (
                TapKind::Tell,
                Some("echo".to_owned()),
                "ping".to_owned(),
                json!(2)
            ),
            (TapKind::Broadcast, None, "tick".to_owned(), json!(3)),
        ]
    );

    // from one connection, in order: a message that is not an event on a node subject, a
    // pressure copy and a query (not events), then a marker broadcast
    let raw = async_nats::connect(server.url()).await.unwrap();
    raw.publish("happen.node.echo", "not json".into())
        .await
        .unwrap();
    raw.publish("happen.pressure.echo", r#"{"type":"node.pressure"}"#.into())
        .await
        .unwrap();
    let mut query = HeaderMap::new();
    query.insert("Happen-Query", "limits");
    raw.publish_with_headers("happen.node.echo", query, "".into())
        .await
        .unwrap();
    raw.publish(
        "happen.broadcast",
        r#"{"type":"marker","payload":4}"#.into(),
    )
    .await
    .unwrap();
    common::round_trip(&raw).await;

    let bad = next(&mut all).await.expect_err("not an event");
    assert_eq!(
        (bad.subject.as_str(), bad.bytes, bad.error.kind()),
        ("happen.node.echo", 8, ErrorKind::InvalidEvent)
    );
    assert!(
        bad.to_string()
            .starts_with("an undecodable message on `happen.node.echo` (8 bytes): "),
        "{bad}"
    );
    let marker = seen(next(&mut all).await.expect("the marker"));
    assert_eq!(
        marker,
        (TapKind::Broadcast, None, "marker".to_owned(), json!(4))
    );

    // the broadcast tap saw the broadcasts only
    let tick = seen(next(&mut broadcasts).await.unwrap());
    assert_eq!(tick.2, "tick");
    let marker = seen(next(&mut broadcasts).await.unwrap());
    assert_eq!(marker.2, "marker");
    within(10, "shutdown", h.shutdown(Duration::from_secs(5))).await;
}
