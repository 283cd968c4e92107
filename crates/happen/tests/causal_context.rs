//! Causal context: events sent from inside a flow continue the chain.

use std::sync::Arc;
use std::time::Duration;

use happen::{Causal, Context, CorrelationId, Event, Happen};
use parking_lot::Mutex;
use serde_json::json;
use tokio::time::timeout;

const T: Duration = Duration::from_secs(10);

#[tokio::test(start_paused = true)]
async fn a_to_b_to_c_carries_causation_correlation_and_path() {
    let happen = Happen::new();
    let a = happen.node("a").await.unwrap();
    let b = happen.node("b").await.unwrap();
    let c = happen.node("c").await.unwrap();
    let seen: Arc<Mutex<Vec<(String, Causal)>>> = Arc::default();

    let s = seen.clone();
    a.on("start", move |event: Event, ctx: Context| {
        let s = s.clone();
        async move {
            s.lock().push(("a".into(), event.causal().clone()));
            ctx.send("b", Event::new("step.b", json!(1))).await
        }
    })
    .unwrap();
    let s = seen.clone();
    b.on("step.b", move |event: Event, ctx: Context| {
        let s = s.clone();
        async move {
            s.lock().push(("b".into(), event.causal().clone()));
            let from_c = ctx.send("c", Event::new("step.c", json!(2))).await?;
            Ok::<_, happen::Error>(json!({"b": true, "c": from_c}))
        }
    })
    .unwrap();
    let s = seen.clone();
    c.on("step.c", move |event: Event, _ctx: Context| {
        let s = s.clone();
        async move {
            s.lock().push(("c".into(), event.causal().clone()));
            json!("from c")
        }
    })
    .unwrap();

    let client = happen.node("client").await.unwrap();
    let v = timeout(T, client.send(&a, Event::new("start", ())))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v, json!({"b": true, "c": "from c"}));

    let seen = seen.lock().clone();
    let names: Vec<&str> = seen.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["a", "b", "c"]);
    let (at_a, at_b, at_c) = (&seen[0].1, &seen[1].1, &seen[2].1);

    // The root event: sent by client, no causation, a fresh transaction.
    assert_eq!(at_a.sender().as_str(), "client");
    assert!(at_a.causation_id().is_none());
    assert_eq!(at_a.path(), ["client"]);
    assert!(at_a.id().to_string().starts_with("evt-"), "{}", at_a.id());
    assert!(
        at_a.correlation_id().to_string().starts_with("txn-"),
        "{}",
        at_a.correlation_id()
    );
    assert!(at_a.timestamp() > 0);

    // a -> b: caused by the root event, same transaction, path extended with a.
    assert_eq!(at_b.sender().as_str(), "a");
    assert_eq!(at_b.causation_id(), Some(at_a.id()));
    assert_eq!(at_b.correlation_id(), at_a.correlation_id());
    assert_eq!(at_b.path(), ["client", "a"]);
    assert_ne!(at_b.id(), at_a.id());

    // b -> c: caused by b's event, same transaction, path extended with b.
    assert_eq!(at_c.sender().as_str(), "b");
    assert_eq!(at_c.causation_id(), Some(at_b.id()));
    assert_eq!(at_c.correlation_id(), at_a.correlation_id());
    assert_eq!(at_c.path(), ["client", "a", "b"]);
    assert_ne!(at_c.id(), at_b.id());
}

#[tokio::test(start_paused = true)]
async fn node_send_starts_a_new_transaction_and_broadcast_from_ctx_continues_it() {
    let happen = Happen::new();
    let a = happen.node("a").await.unwrap();
    let b = happen.node("b").await.unwrap();
    let seen: Arc<Mutex<Vec<(String, Causal)>>> = Arc::default();
    let s = seen.clone();
    b.on("*", move |event: Event, _ctx: Context| {
        let s = s.clone();
        async move {
            s.lock()
                .push((event.event_type().to_owned(), event.causal().clone()));
        }
    })
    .unwrap();
    let bb = b.clone();
    a.on("go", move |_event: Event, ctx: Context| {
        let bb = bb.clone();
        async move {
            // A plain node send from inside a handler starts a new transaction...
            ctx.node().send(&bb, Event::new("fresh", ())).await?;
            // ...the context's send and broadcast continue this one.
            ctx.send(&bb, Event::new("child", ())).await?;
            ctx.broadcast(Event::new("told", ()))?;
            Ok::<_, happen::Error>(ctx.event().id().to_string())
        }
    })
    .unwrap();
    let root_id = timeout(T, a.send(&a, Event::new("go", ())))
        .await
        .unwrap()
        .unwrap();
    let wait = async {
        while seen.lock().len() < 3 {
            tokio::task::yield_now().await;
        }
    };
    timeout(T, wait).await.unwrap();
    let seen = seen.lock().clone();
    let get = |t: &str| seen.iter().find(|(n, _)| n == t).unwrap().1.clone();
    let (fresh, child, told) = (get("fresh"), get("child"), get("told"));
    assert!(fresh.causation_id().is_none());
    assert_eq!(fresh.path(), ["a"]);
    assert_ne!(fresh.correlation_id(), child.correlation_id());
    assert_eq!(child.causation_id().unwrap().to_string(), root_id);
    assert_eq!(told.causation_id().unwrap().to_string(), root_id);
    assert_eq!(told.correlation_id(), child.correlation_id());
    assert_eq!(child.path(), ["a", "a"]);
    assert_eq!(told.path(), ["a", "a"]);
}

#[tokio::test(start_paused = true)]
async fn explicit_correlation_id_on_a_root_event() {
    let happen = Happen::new();
    let a = happen.node("a").await.unwrap();
    a.on("x", |event: Event, _ctx: Context| async move {
        event.correlation_id().to_string()
    })
    .unwrap();
    let txn = CorrelationId::new();
    let v = timeout(
        T,
        a.send(&a, Event::new("x", ()).with_correlation_id(txn.clone())),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(v, txn.to_string());
}
