//! Two happen instances (separate connections) exchanging send/return, broadcasts and a flow
//! that sends onward across processes.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use common::{instance, within};
use happen::{Context, Event, Flow};
use serde_json::{Value, json};
use test_support::NatsServer;
use tokio::sync::mpsc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_and_return_across_instances() {
    let server = NatsServer::start();
    let (a, ta) = instance(&server.url()).await;
    let (b, _tb) = instance(&server.url()).await;
    let greeter = b.node("greeter").await.unwrap();
    greeter
        .on("greet", |event: Event, _ctx: Context| async move {
            let name = event.payload().as_str().unwrap_or("?").to_owned();
            assert_eq!(event.sender(), "client");
            assert!(event.id().to_string().starts_with("evt-"));
            json!({"hello": name})
        })
        .unwrap();
    greeter
        .on("quiet", |_e: Event, _c: Context| async move {})
        .unwrap();
    let client = a.node("client").await.unwrap();

    let v = within(
        10,
        "reply",
        client.send("greeter", Event::new("greet", "ada")),
    )
    .await;
    assert_eq!(v.unwrap(), json!({"hello": "ada"}));
    let unit = within(
        10,
        "unit reply",
        client.send("greeter", Event::new("quiet", ())),
    )
    .await;
    assert_eq!(unit.unwrap(), Value::Null);

    // many concurrent requests, all answered once
    let mut replies = Vec::new();
    for i in 0..500 {
        replies.push(client.send("greeter", Event::new("greet", format!("n{i}"))));
    }
    let all = within(
        20,
        "500 replies",
        futures::future::join_all(
            replies
                .into_iter()
                .map(std::future::IntoFuture::into_future),
        ),
    )
    .await;
    for (i, r) in all.into_iter().enumerate() {
        assert_eq!(r.unwrap(), json!({"hello": format!("n{i}")}));
    }
    assert!(ta.stats().sent >= 502);
    assert_eq!(ta.stats().malformed, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_sends_onward_to_another_process() {
    let server = NatsServer::start();
    let (a, _) = instance(&server.url()).await;
    let (b, _) = instance(&server.url()).await;
    // a: client + pricing; b: orders. client -> orders (b) -> pricing (a) -> back.
    let pricing = a.node("pricing").await.unwrap();
    pricing
        .on("price", |event: Event, _c: Context| async move {
            // the causal chain crossed the wire
            assert_eq!(event.path(), ["client", "orders"]);
            assert!(event.causation_id().is_some());
            json!(event.payload()["qty"].as_u64().unwrap() * 10)
        })
        .unwrap();
    let orders = b.node("orders").await.unwrap();
    orders
        .on("order", |event: Event, ctx: Context| async move {
            ctx.insert(event.correlation_id().clone());
            Ok::<_, happen::Error>(Flow::next(|event: Event, ctx: Context| async move {
                let price = ctx
                    .send("pricing", Event::new("price", event.payload().clone()))
                    .await?;
                let corr: happen::CorrelationId = ctx.get().unwrap();
                Ok::<_, happen::Error>(json!({"total": price, "correlation": corr.to_string()}))
            }))
        })
        .unwrap();
    let client = a.node("client").await.unwrap();
    let v = within(
        10,
        "multi-step",
        client.send("orders", Event::new("order", json!({"qty": 3}))),
    )
    .await
    .unwrap();
    assert_eq!(v["total"], 30);
    assert!(v["correlation"].as_str().unwrap().starts_with("txn-"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_reaches_every_matching_node_in_every_process_once() {
    let server = NatsServer::start();
    let (a, _) = instance(&server.url()).await;
    let (b, _) = instance(&server.url()).await;
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let mut nodes = Vec::new();
    for (h, id) in [(&a, "a1"), (&a, "a2"), (&b, "b1"), (&b, "b2")] {
        let n = h.node(id).await.unwrap();
        let tx = tx.clone();
        n.on("news.*", move |_e: Event, ctx: Context| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(ctx.node_id().to_string());
            }
        })
        .unwrap();
        nodes.push(n);
    }
    // a node without a matching handler is not disturbed
    let other = b.node("other").await.unwrap();
    let other_hits = Arc::new(AtomicU64::new(0));
    let hits = other_hits.clone();
    other
        .on("sports", move |_e: Event, _c: Context| {
            hits.fetch_add(1, Ordering::Relaxed);
            async {}
        })
        .unwrap();

    nodes[0].broadcast(Event::new("news.daily", 1)).unwrap();
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(within(10, "broadcast delivery", rx.recv()).await.unwrap());
    }
    got.sort();
    assert_eq!(got, ["a1", "a2", "b1", "b2"]); // the sender's own node too
    // exactly once: a second broadcast yields exactly four more, no extra from the first
    nodes[2].broadcast(Event::new("news.late", 2)).unwrap();
    let mut second = Vec::new();
    for _ in 0..4 {
        second.push(within(10, "second broadcast", rx.recv()).await.unwrap());
    }
    second.sort();
    assert_eq!(second, ["a1", "a2", "b1", "b2"]);
    // a round trip after both broadcasts proves no stragglers are still on the way
    let probe = a.node("probe").await.unwrap();
    probe
        .on("ping", |_e: Event, _c: Context| async { "pong" })
        .unwrap();
    let _ = within(10, "probe", nodes[2].send("probe", Event::new("ping", ())))
        .await
        .unwrap();
    assert!(rx.try_recv().is_err());
    assert_eq!(other_hits.load(Ordering::Relaxed), 0);
}
