//! Every error kind produced by a remote node and recognised by the caller.

mod common;

use std::future::IntoFuture;
use std::time::{Duration, Instant};

use common::{instance, within};
use happen::{Context, ErrorKind, Event, NodeOptions};
use test_support::NatsServer;
use tokio::sync::Notify;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_errors_keep_their_kind() {
    let server = NatsServer::start();
    let (a, _) = instance(&server.url()).await;
    let (b, _) = instance(&server.url()).await;
    let svc = b.node("svc").await.unwrap();
    svc.on("fail", |_e: Event, _c: Context| async {
        Err::<(), _>("card declined\nsecond line")
    })
    .unwrap();
    svc.on("boom", |_e: Event, _c: Context| async {
        if true {
            panic!("kaboom");
        }
    })
    .unwrap();
    svc.on("slow", |_e: Event, _c: Context| async {
        tokio::time::sleep(Duration::from_secs(5)).await;
    })
    .unwrap();
    svc.on("inner-timeout", |_e: Event, ctx: Context| async move {
        // a timeout inside the remote flow, passed on: the caller sees a downstream failure
        ctx.send("svc", Event::new("slow", ()))
            .timeout(Duration::from_millis(50))
            .await
    })
    .unwrap();
    let client = a.node("client").await.unwrap();

    // unknown node: fast, not a timeout
    let started = Instant::now();
    let err = within(10, "unknown", client.send("nobody", Event::new("x", ())))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::UnknownNode, "{err}");
    assert_eq!(err.node().map(|n| n.as_str()), Some("nobody"));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    let err = within(
        10,
        "no handler",
        client.send("svc", Event::new("nothing", ())),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NoHandler, "{err}");

    let err = within(10, "handler", client.send("svc", Event::new("fail", ())))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Handler);
    assert_eq!(err.message(), "card declined\nsecond line");

    let err = within(10, "panic", client.send("svc", Event::new("boom", ())))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Panic);
    assert!(err.message().contains("kaboom"), "{err}");

    let err = within(
        10,
        "timeout",
        client
            .send("svc", Event::new("slow", ()))
            .timeout(Duration::from_millis(200)),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);

    let err = within(
        10,
        "inner timeout",
        client.send("svc", Event::new("inner-timeout", ())),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Downstream, "{err}");
    assert_eq!(err.node().map(|n| n.as_str()), Some("svc"), "{err:?}");
    assert!(err.message().contains("timeout"), "{err}");

    // the node keeps serving after all of that
    svc.on("ok", |_e: Event, _c: Context| async { 1 }).unwrap();
    let v = within(10, "ok", client.send("svc", Event::new("ok", ()))).await;
    assert_eq!(v.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_queue_full_carries_node_and_limit() {
    let server = NatsServer::start();
    let (a, _) = instance(&server.url()).await;
    let (b, _) = instance(&server.url()).await;
    let gate = std::sync::Arc::new(Notify::new());
    let busy = b
        .node_with("busy", NodeOptions::new().max_concurrent(1).queue_limit(2))
        .await
        .unwrap();
    let g = gate.clone();
    busy.on("work", move |_e: Event, _c: Context| {
        let g = g.clone();
        async move { g.notified().await }
    })
    .unwrap();
    let client = a.node("client").await.unwrap();
    // 1 running + 2 queued fill the node; the rest are rejected remotely
    let replies: Vec<_> = (0..6)
        .map(|_| client.send("busy", Event::new("work", ())).into_future())
        .collect();
    let mut replies: futures::stream::FuturesUnordered<_> = replies.into_iter().collect();
    use futures::StreamExt;
    let mut rejected = 0;
    while rejected < 3 {
        let err = within(10, "rejections", replies.next())
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::QueueFull, "{err}");
        assert_eq!(err.node().map(|n| n.as_str()), Some("busy"));
        assert_eq!(err.limit(), Some(2));
        rejected += 1;
    }
    // release the admitted three
    for _ in 0..3 {
        gate.notify_one();
        within(10, "admitted", replies.next())
            .await
            .unwrap()
            .unwrap();
    }
    assert!(replies.next().await.is_none());
    assert_eq!(busy.stats().rejected, 3);
}
