//! `Reply` is a `Future`: it works with `join_all`, `FuturesUnordered`, `select!` and
//! `tokio::spawn`, and polling it by reference loses nothing (cancel safety).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use happen::{Context, Emitter, ErrorKind, Event, Happen, Node, Reply};
use serde_json::json;
use tokio::sync::Notify;
use tokio::time::timeout;

const T: Duration = Duration::from_secs(10);

async fn doubler(happen: &Happen) -> Node {
    let node = happen.node("doubler").await.unwrap();
    node.on("double", |e: Event, _c: Context| async move {
        e.payload().as_u64().unwrap_or(0) * 2
    })
    .unwrap();
    node
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_all_waits_for_a_vec_of_replies() {
    let happen = Happen::new();
    let node = doubler(&happen).await;
    let client = happen.node("client").await.unwrap();
    let replies: Vec<Reply> = (0..100u64)
        .map(|i| client.send(&node, Event::new("double", i)))
        .collect();
    let values = timeout(T, futures::future::join_all(replies))
        .await
        .unwrap();
    for (i, v) in values.into_iter().enumerate() {
        assert_eq!(v.unwrap(), json!(i * 2));
    }
    // `try_join_all` stops at the first error.
    let replies = vec![
        client.send(&node, Event::new("double", 1)),
        client.send("nobody", Event::new("double", 1)),
    ];
    let err = timeout(T, futures::future::try_join_all(replies))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::UnknownNode);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn futures_unordered_and_spawn_take_replies() {
    let happen = Happen::new();
    let node = doubler(&happen).await;
    // A streaming handler: awaiting the reply skips its items.
    node.on("count", |e: Event, _c: Context, emit: Emitter| async move {
        let n = e.payload().as_u64().unwrap_or(0);
        for i in 0..n {
            emit.emit(i).await?;
        }
        Ok::<_, happen::Error>(json!({ "counted": n }))
    })
    .unwrap();
    let mut pending: FuturesUnordered<Reply> = (0..50u64)
        .map(|i| node.send(&node, Event::new("count", i)))
        .collect();
    let mut seen = Vec::new();
    while let Some(v) = timeout(T, pending.next()).await.unwrap() {
        seen.push(v.unwrap()["counted"].as_u64().unwrap());
    }
    seen.sort_unstable();
    assert_eq!(seen, (0..50).collect::<Vec<_>>());

    let handle = tokio::spawn(node.send(&node, Event::new("double", 21)));
    assert_eq!(timeout(T, handle).await.unwrap().unwrap().unwrap(), 42);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_by_reference_is_cancel_safe() {
    let happen = Happen::new();
    let node = happen.node("gate").await.unwrap();
    let open = Arc::new(Notify::new());
    let gate = open.clone();
    node.on("wait", move |_e: Event, _c: Context| {
        let gate = gate.clone();
        async move {
            gate.notified().await;
            "through"
        }
    })
    .unwrap();
    let mut reply = node.send(&node, Event::new("wait", ()));
    // Lose several races against another branch: each time the select drops its `&mut reply`
    // future, the reply itself keeps its state.
    for _ in 0..5 {
        tokio::select! {
            biased;
            _ = &mut reply => panic!("the gate is still closed"),
            _ = tokio::task::yield_now() => {}
        }
    }
    open.notify_one();
    assert_eq!(timeout(T, &mut reply).await.unwrap().unwrap(), "through");
}
