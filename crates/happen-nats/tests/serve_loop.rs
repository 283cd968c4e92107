//! The serve loop never waits in line for something slow: while a broadcast stream's set-up
//! (a subscribe and a round trip through the server) is stalled, direct requests to the same
//! node are still read and answered, and the broadcast is admitted once its set-up completes.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{instance_with, within};
use happen::{Context, Event};
use happen_nats::NatsConfig;
use parking_lot::Mutex;
use serde_json::json;
use test_support::NatsServer;
use tokio::sync::oneshot;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_broadcast_stream_set_up_does_not_hold_up_direct_requests() {
    let server = NatsServer::start();
    let mut config = NatsConfig::with_server(server.url());
    // a stalled set-up would hold the loop this long (longer than any bound below)
    config.request_timeout_ms = Some(60_000);
    // broadcasts of `metrics` carry a stream: receivers subscribe to it before admission
    config.stream_types = vec!["metrics".to_owned()];
    let (a, _ta) = instance_with(config.clone()).await;
    let (b, tb) = instance_with(config).await;

    let dash = b.node("dash").await.unwrap();
    let (admitted_tx, admitted_rx) = oneshot::channel();
    let admitted_tx = Arc::new(Mutex::new(Some(admitted_tx)));
    dash.on("metrics", move |_e: Event, ctx: Context| {
        let admitted = admitted_tx.lock().take();
        async move {
            if let Some(tx) = admitted {
                let _ = tx.send(ctx.items().is_some());
            }
        }
    })
    .unwrap();
    dash.on("ping", |e: Event, _c: Context| async move {
        e.payload().clone()
    })
    .unwrap();

    // `dash`'s process: every round trip through the server now waits (a slow server)
    tb.hold_round_trips(true);
    let source = a.node("source").await.unwrap();
    source.broadcast(Event::new("metrics", ())).unwrap();
    within(
        10,
        "the stream set-up to reach its round trip",
        tb.round_trips_held(1),
    )
    .await;

    // the set-up is stalled; requests to the same node are answered meanwhile
    let client = a.node("client").await.unwrap();
    let replies = (0..200).map(|i| {
        let client = client.clone();
        async move { client.send("dash", Event::new("ping", i)).await }
    });
    let replies = within(
        10,
        "200 requests while a set-up is stalled",
        futures::future::join_all(replies),
    )
    .await;
    for (i, r) in replies.into_iter().enumerate() {
        assert_eq!(r.unwrap(), json!(i));
    }

    // released: the broadcast is admitted, with its stream
    tb.hold_round_trips(false);
    let with_items = within(10, "the broadcast after its set-up", admitted_rx)
        .await
        .unwrap();
    assert!(with_items, "the broadcast was admitted without its stream");
    within(10, "shutdown", a.shutdown(Duration::from_secs(5))).await;
    within(10, "shutdown", b.shutdown(Duration::from_secs(5))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_that_find_the_outgoing_buffer_full_are_not_lost() {
    let server = NatsServer::start();
    let (a, _ta) = instance_with(NatsConfig::with_server(server.url())).await;
    // the answering process's outgoing buffer holds one message: most answers overflow
    let mut small = NatsConfig::with_server(server.url());
    small.outbound_buffer = 1;
    let (b, tb) = instance_with(small).await;
    let echo = b.node("echo").await.unwrap();
    echo.on("ping", |e: Event, _c: Context| async move {
        e.payload().clone()
    })
    .unwrap();
    let client = a.node("client").await.unwrap();
    let replies = (0..500).map(|i| {
        let client = client.clone();
        async move { client.send("echo", Event::new("ping", i)).await }
    });
    let replies = within(20, "500 replies", futures::future::join_all(replies)).await;
    for (i, r) in replies.into_iter().enumerate() {
        assert_eq!(r.unwrap(), json!(i));
    }
    let stats = tb.stats();
    assert_eq!(stats.replies, 500);
    assert!(stats.answers_overflowed > 0, "{stats:?}");
    within(10, "shutdown", a.shutdown(Duration::from_secs(5))).await;
    within(10, "shutdown", b.shutdown(Duration::from_secs(5))).await;
}
