//! A node without a handler for a broadcast's type skips it without decoding the body (the
//! type is read from the start of the body); a body whose `type` is not its first field (a
//! client that orders fields differently) is decoded as before.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::{instance, within};
use happen::{Context, Event, NodeOptions};
use test_support::NatsServer;
use tokio::sync::mpsc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcasts_nobody_here_handles_are_not_decoded() {
    const N: u64 = 1_000;
    let server = NatsServer::start();
    let (a, ta) = instance(&server.url()).await;
    let (b, tb) = instance(&server.url()).await;

    // `a`: the publisher, whose node handles only `done`
    let source = a.node("source").await.unwrap();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    source
        .on("done", move |_e: Event, _c: Context| {
            let done = done_tx.clone();
            async move {
                let _ = done.send(());
            }
        })
        .unwrap();
    // `b`: a sink for `tick`
    let sink = b.node("sink").await.unwrap();
    let ticks = Arc::new(AtomicU64::new(0));
    let (all_tx, mut all_rx) = mpsc::unbounded_channel();
    let counted = ticks.clone();
    sink.on("tick", move |_e: Event, _c: Context| {
        let (counted, all) = (counted.clone(), all_tx.clone());
        async move {
            if counted.fetch_add(1, Ordering::SeqCst) + 1 == N {
                let _ = all.send(());
            }
        }
    })
    .unwrap();

    for i in 0..N {
        source.broadcast(Event::new("tick", i)).unwrap();
    }
    within(10, "every tick at the sink", all_rx.recv())
        .await
        .unwrap();
    // one subscription per node delivers in order: when `source` has handled `done`, it has
    // seen every tick before it
    source.broadcast(Event::new("done", ())).unwrap();
    within(10, "`done` at the source", done_rx.recv())
        .await
        .unwrap();

    let (sa, sb) = (ta.stats(), tb.stats());
    assert_eq!(ticks.load(Ordering::SeqCst), N);
    assert_eq!(sa.broadcasts_skipped, N, "{sa:?}");
    assert_eq!(sa.broadcasts_decoded, 1, "only `done`: {sa:?}");
    assert_eq!(sb.broadcasts_decoded, N, "{sb:?}");

    // a body whose `type` is not first is decoded (by `a` and `b`) and handled by `source`
    let raw = async_nats::connect(server.url()).await.unwrap();
    raw.publish(
        "happen.broadcast",
        r#"{"payload":null,"type":"done"}"#.into(),
    )
    .await
    .unwrap();
    common::round_trip(&raw).await;
    within(10, "the raw `done` at the source", done_rx.recv())
        .await
        .unwrap();
    assert_eq!(ta.stats().broadcasts_decoded, 2);
    assert_eq!(ta.stats().broadcasts_skipped, N);

    within(10, "shutdown", a.shutdown(Duration::from_secs(5))).await;
    within(10, "shutdown", b.shutdown(Duration::from_secs(5))).await;
}

/// A node made with `receive_broadcasts(false)` is not subscribed to broadcasts: its process
/// receives no copy of them (its own included), while another node of the same process that
/// listens gets every one; direct sends reach the deaf node as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_takes_no_broadcasts_is_not_sent_them() {
    const N: u64 = 1_000;
    let server = NatsServer::start();
    let (a, ta) = instance(&server.url()).await;
    let (b, tb) = instance(&server.url()).await;

    // `a` hosts only the deaf gateway, which would handle `tick` if it took broadcasts
    let handled = Arc::new(AtomicU64::new(0));
    let gateway = a
        .node_with("gateway", NodeOptions::new().receive_broadcasts(false))
        .await
        .unwrap();
    let count = handled.clone();
    gateway
        .on("tick", move |_e: Event, _c: Context| {
            let count = count.clone();
            async move {
                count.fetch_add(1, Ordering::SeqCst);
            }
        })
        .unwrap();
    // `b`: a listener for `tick`
    let listener = b.node("listener").await.unwrap();
    let ticks = Arc::new(AtomicU64::new(0));
    let (all_tx, mut all_rx) = mpsc::unbounded_channel();
    let counted = ticks.clone();
    listener
        .on("tick", move |_e: Event, _c: Context| {
            let (counted, all) = (counted.clone(), all_tx.clone());
            async move {
                if counted.fetch_add(1, Ordering::SeqCst) + 1 == N {
                    let _ = all.send(());
                }
            }
        })
        .unwrap();

    let before = ta.client().statistics().in_messages.load(Ordering::Relaxed);
    for i in 0..N {
        gateway.broadcast(Event::new("tick", i)).unwrap();
    }
    within(10, "every tick at the listener", all_rx.recv())
        .await
        .unwrap();
    // a round trip on `a`'s connection: the server writes what it routed to `a` before the
    // answer, so every copy it sent `a` has been read when this returns
    let reply = within(
        10,
        "a direct tick",
        b.node("asker")
            .await
            .unwrap()
            .send(&gateway, Event::new("tick", "direct")),
    )
    .await;
    reply.unwrap();
    let received = ta.client().statistics().in_messages.load(Ordering::Relaxed) - before;
    assert!(
        received < 10,
        "`a` received {received} messages (the request, no broadcast)"
    );
    assert_eq!(handled.load(Ordering::SeqCst), 1, "only the direct tick");
    let sa = ta.stats();
    assert_eq!(
        (sa.broadcasts_decoded, sa.broadcasts_skipped),
        (0, 0),
        "{sa:?}"
    );
    assert_eq!(ticks.load(Ordering::SeqCst), N);
    assert_eq!(tb.stats().broadcasts_decoded, N);

    within(10, "shutdown", a.shutdown(Duration::from_secs(5))).await;
    within(10, "shutdown", b.shutdown(Duration::from_secs(5))).await;
}
