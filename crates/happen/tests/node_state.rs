//! Node-level state (`NodeOptions::state`, `Context::state`): one value shared by every flow
//! and every step of a node, under concurrent load, in every handler shape; dropped with the
//! node.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use happen::{Context, Emitter, Event, Flow, Happen, Json, NodeOptions, Reply};
use serde_json::json;
use tokio::time::timeout;

const T: Duration = Duration::from_secs(10);

/// A shared counter with a high-water mark of flows inside it at once.
#[derive(Default)]
struct Meter {
    hits: AtomicU64,
    inside: AtomicUsize,
    peak: AtomicUsize,
}

struct Label(&'static str);

async fn enter(_e: Event, ctx: Context) -> Flow {
    let m = ctx.state::<Meter>().unwrap();
    let now = m.inside.fetch_add(1, Ordering::SeqCst) + 1;
    m.peak.fetch_max(now, Ordering::SeqCst);
    tokio::task::yield_now().await;
    Flow::next(leave)
}

async fn leave(_e: Event, ctx: Context) -> u64 {
    let m = ctx.state::<Meter>().unwrap();
    m.inside.fetch_sub(1, Ordering::SeqCst);
    m.hits.fetch_add(1, Ordering::SeqCst) + 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_flow_and_step_shares_one_value_under_load() {
    let happen = Happen::new();
    let options = NodeOptions::new()
        .max_concurrent(16)
        .state(Meter::default())
        .state(Label("first"))
        .state(Label("meter")); // replaces the earlier value of the same type
    let node = happen.node_with("meter", options).await.unwrap();
    node.on("hit", enter).unwrap();
    let client = happen.node("client").await.unwrap();
    let replies: Vec<Reply> = (0..2_000)
        .map(|_| client.send(&node, Event::new("hit", ())))
        .collect();
    let results = timeout(T, futures::future::join_all(replies))
        .await
        .unwrap();
    let mut answers: Vec<u64> = results
        .into_iter()
        .map(|r| r.unwrap().as_u64().unwrap())
        .collect();
    answers.sort_unstable();
    // Each flow saw the same counter: the answers are 1..=2000, each once.
    assert_eq!(answers, (1..=2_000).collect::<Vec<_>>());
    let meter = node.state::<Meter>().unwrap();
    assert_eq!(meter.hits.load(Ordering::SeqCst), 2_000);
    assert_eq!(meter.inside.load(Ordering::SeqCst), 0);
    let peak = meter.peak.load(Ordering::SeqCst);
    assert!(peak > 1, "flows overlapped inside the state (peak {peak})");
    assert!(peak <= 16, "peak {peak} above max_concurrent");
    assert_eq!(node.state::<Label>().unwrap().0, "meter");
    assert!(node.state::<String>().is_none());
    // Another node has its own state (here: none).
    assert!(client.state::<Meter>().is_none());
}

#[tokio::test]
async fn streaming_and_typed_handlers_read_state() {
    #[derive(serde::Deserialize)]
    struct Ask {
        n: u64,
    }
    let happen = Happen::new();
    let node = happen
        .node_with("n", NodeOptions::new().state(Label("unit")))
        .await
        .unwrap();
    node.on("typed", |Json(ask): Json<Ask>, ctx: Context| async move {
        format!("{} {}", ask.n, ctx.state::<Label>().unwrap().0)
    })
    .unwrap();
    node.on(
        "stream",
        |Json(ask): Json<Ask>, ctx: Context, emit: Emitter| async move {
            let label = ctx.state::<Label>().unwrap().0;
            for i in 0..ask.n {
                emit.emit(format!("{i} {label}")).await?;
            }
            Ok::<_, happen::Error>(label)
        },
    )
    .unwrap();
    let v = timeout(T, node.send(&node, Event::new("typed", json!({"n": 2}))))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v, "2 unit");
    let mut stream = node
        .send(&node, Event::new("stream", json!({"n": 2})))
        .into_stream();
    let mut items = Vec::new();
    while let Some(item) = timeout(T, stream.next()).await.unwrap() {
        items.push(item.unwrap());
    }
    assert_eq!(items, [json!("0 unit"), json!("1 unit")]);
    assert_eq!(stream.final_value(), Some(&json!("unit")));
}

#[tokio::test]
async fn the_state_is_dropped_with_the_node() {
    struct Guard(Arc<AtomicBool>);
    impl Drop for Guard {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let dropped = Arc::new(AtomicBool::new(false));
    let happen = Happen::new();
    let node = happen
        .node_with("n", NodeOptions::new().state(Guard(dropped.clone())))
        .await
        .unwrap();
    node.on("x", |_e: Event, c: Context| async move {
        c.state::<Guard>().is_some()
    })
    .unwrap();
    let v = timeout(T, node.send(&node, Event::new("x", ())))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v, true);
    assert!(!dropped.load(Ordering::SeqCst));
    timeout(T, node.close(Duration::from_secs(1)))
        .await
        .unwrap();
    drop(node);
    support::wait_until("the node's state to be dropped", || {
        dropped.load(Ordering::SeqCst)
    })
    .await;
}
