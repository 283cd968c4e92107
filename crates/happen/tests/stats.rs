//! Node stats: counts match what happened; fire-and-forget failures are counted.

use std::sync::Arc;
use std::time::Duration;

use happen::{Context, ErrorKind, Event, Happen, NodeOptions};
use serde_json::json;
use tokio::sync::Semaphore;
use tokio::time::timeout;

mod support;
use support::wait_until;

const T: Duration = Duration::from_secs(10);

#[tokio::test(start_paused = true)]
async fn completed_and_failed_counts() {
    let happen = Happen::new();
    let node = happen.node("n").await.unwrap();
    node.on("ok", |_e: Event, _c: Context| async move { json!(1) })
        .unwrap();
    node.on("err", |_e: Event, _c: Context| async move {
        Err::<(), _>("nope")
    })
    .unwrap();
    let client = happen.node("client").await.unwrap();
    for _ in 0..10 {
        timeout(T, client.send(&node, Event::new("ok", ())))
            .await
            .unwrap()
            .unwrap();
    }
    for _ in 0..5 {
        let e = timeout(T, client.send(&node, Event::new("err", ())))
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Handler);
    }
    for _ in 0..3 {
        let e = timeout(T, client.send(&node, Event::new("missing", ())))
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NoHandler);
    }
    wait_until("stats", || {
        let st = node.stats();
        st.completed + st.failed == 18 && st.active == 0
    })
    .await;
    let st = node.stats();
    assert_eq!(st.accepted, 18);
    assert_eq!(st.completed, 10);
    assert_eq!(st.failed, 8);
    assert_eq!(st.rejected, 0);
    assert_eq!(st.active, 0);
    assert_eq!(st.queued, 0);
    // Every reply was awaited: nothing unobserved anywhere.
    assert_eq!(client.stats().unobserved_failures, 0);
    assert_eq!(node.stats().unobserved_failures, 0);
}

async fn fire_and_forget_failures(happen: &Happen) -> (happen::Node, happen::Node) {
    let server = happen.node("server").await.unwrap();
    server
        .on("fail", |_e: Event, _c: Context| async move {
            tokio::task::yield_now().await;
            Err::<(), _>("failed with nobody listening")
        })
        .unwrap();
    server
        .on("fine", |_e: Event, _c: Context| async move {})
        .unwrap();
    let client = happen.node("client").await.unwrap();
    // A successful fire-and-forget is not a failure; an awaited failure is observed.
    drop(client.send(&server, Event::new("fine", ())));
    let e = timeout(T, client.send(&server, Event::new("fail", ())))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(e.message(), "failed with nobody listening");
    for _ in 0..3 {
        drop(client.send(&server, Event::new("fail", ())));
    }
    wait_until("all flows to finish", || {
        let st = server.stats();
        st.completed + st.failed == 5
    })
    .await;
    (client, server)
}

#[tokio::test(start_paused = true)]
async fn dropped_reply_of_a_failing_flow_is_counted_once() {
    let happen = Happen::new();
    let (client, server) = fire_and_forget_failures(&happen).await;
    let total = client.stats().unobserved_failures + server.stats().unobserved_failures;
    assert_eq!(total, 3, "each unobserved failure is counted exactly once");
}

#[tokio::test(start_paused = true)]
async fn dropped_reply_of_a_failing_flow_is_counted_at_the_sender() {
    let happen = Happen::new();
    let (client, server) = fire_and_forget_failures(&happen).await;
    assert_eq!(
        client.stats().unobserved_failures,
        3,
        "counted at the sender (client {}, server {})",
        client.stats().unobserved_failures,
        server.stats().unobserved_failures
    );
}

#[tokio::test(start_paused = true)]
async fn dropped_reply_of_a_failed_send_is_counted_at_the_sender() {
    let happen = Happen::new();
    let client = happen.node("client").await.unwrap();
    drop(client.send("nobody", Event::new("x", ())));
    assert_eq!(client.stats().unobserved_failures, 1);
    drop(client.send(&client, Event::new(String::new(), ())));
    assert_eq!(client.stats().unobserved_failures, 2);
}

#[tokio::test(start_paused = true)]
async fn broadcast_rejections_are_counted_at_the_receiver() {
    let happen = Happen::new();
    let node = happen
        .node_with("tiny", NodeOptions::new().max_concurrent(1).queue_limit(1))
        .await
        .unwrap();
    let gate = Arc::new(Semaphore::new(0));
    let g = gate.clone();
    node.on("tick", move |_e: Event, _c: Context| {
        let g = g.clone();
        async move { g.acquire().await.unwrap().forget() }
    })
    .unwrap();
    let sender = happen.node("sender").await.unwrap();
    for _ in 0..5 {
        sender.broadcast(Event::new("tick", ())).unwrap();
    }
    let st = node.stats();
    assert_eq!((st.accepted, st.rejected), (2, 3));
    assert_eq!(st.unobserved_failures, 3);
    gate.add_permits(2);
    wait_until("completion", || node.stats().completed == 2).await;
}

#[tokio::test(start_paused = true)]
async fn queue_wait_is_measured() {
    let happen = Happen::new();
    let node = happen
        .node_with("w", NodeOptions::new().max_concurrent(1))
        .await
        .unwrap();
    node.on("x", |_e: Event, _c: Context| async move {
        tokio::task::yield_now().await;
    })
    .unwrap();
    let replies: Vec<_> = (0..50)
        .map(|_| std::future::IntoFuture::into_future(node.send(&node, Event::new("x", ()))))
        .collect();
    timeout(T, futures::future::join_all(replies))
        .await
        .unwrap();
    let st = node.stats();
    assert!(st.peak_queued >= 48, "{st:?}");
    assert!(st.queue_wait_p99 >= st.queue_wait_p50);
}
