//! The Event Continuum: multi-step async flows, shared context, branching, early completion.

use std::future::IntoFuture;
use std::sync::Arc;
use std::time::Duration;

use happen::{Context, Event, Flow, Happen, Json};
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::time::timeout;

mod support;

const T: Duration = Duration::from_secs(10);

#[derive(Clone, Debug, PartialEq)]
struct Validated(u64);
#[derive(Clone, Debug, PartialEq)]
struct Charged(u64);
#[derive(Clone, Debug, Default, PartialEq)]
struct Trail(Vec<&'static str>);

fn trail(ctx: &Context, step: &'static str) {
    if ctx.with(|t: &mut Trail| t.0.push(step)).is_none() {
        ctx.insert(Trail(vec![step]));
    }
}

async fn validate(event: Event, ctx: Context) -> happen::Result<Flow> {
    trail(&ctx, "validate");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let qty = event.payload()["qty"].as_u64().unwrap_or(0);
    if qty == 0 {
        // Early completion with a value: no further step runs.
        return Ok(Flow::done(
            json!({"ok": false, "reason": "empty order", "trail": ctx.get::<Trail>().unwrap().0}),
        ));
    }
    ctx.insert(Validated(qty));
    if event.payload()["express"].as_bool() == Some(true) {
        Ok(Flow::next(charge_express))
    } else {
        Ok(Flow::next(charge))
    }
}

async fn charge(_event: Event, ctx: Context) -> Flow {
    trail(&ctx, "charge");
    tokio::task::yield_now().await;
    let Validated(qty) = ctx.get().expect("validate stored the quantity");
    ctx.insert(Charged(qty * 10));
    Flow::next(ship)
}

async fn charge_express(_event: Event, ctx: Context) -> Flow {
    trail(&ctx, "charge_express");
    tokio::time::sleep(Duration::from_millis(10)).await;
    let Validated(qty) = ctx.get().expect("validate stored the quantity");
    ctx.insert(Charged(qty * 10 + 5));
    Flow::next(ship)
}

async fn ship(event: Event, ctx: Context) -> Value {
    trail(&ctx, "ship");
    tokio::time::sleep(Duration::from_millis(5)).await;
    let Charged(total) = ctx.get().expect("a charge step stored the total");
    json!({
        "ok": true,
        "total": total,
        "order": event.payload()["id"],
        "trail": ctx.get::<Trail>().unwrap().0,
    })
}

async fn shop(happen: &Happen) -> happen::Node {
    let shop = happen.node("shop").await.unwrap();
    shop.on("order", validate).unwrap();
    shop
}

#[tokio::test(start_paused = true)]
async fn multi_step_async_flow_shares_context_and_returns_final_value() {
    let happen = Happen::new();
    let shop = shop(&happen).await;
    let client = happen.node("client").await.unwrap();
    let v = timeout(
        T,
        client.send(&shop, Event::new("order", json!({"id": 7, "qty": 3}))),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(
        v,
        json!({"ok": true, "total": 30, "order": 7, "trail": ["validate", "charge", "ship"]})
    );
}

#[tokio::test(start_paused = true)]
async fn branching_picks_the_next_step_by_condition() {
    let happen = Happen::new();
    let shop = shop(&happen).await;
    let v = timeout(
        T,
        shop.send(
            &shop,
            Event::new("order", json!({"id": 8, "qty": 2, "express": true})),
        ),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(v["total"], 25);
    assert_eq!(v["trail"], json!(["validate", "charge_express", "ship"]));
}

#[tokio::test(start_paused = true)]
async fn early_completion_returns_a_value_and_runs_no_further_step() {
    let happen = Happen::new();
    let shop = shop(&happen).await;
    let v = timeout(
        T,
        shop.send(&shop, Event::new("order", json!({"id": 9, "qty": 0}))),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(
        v,
        json!({"ok": false, "reason": "empty order", "trail": ["validate"]})
    );
}

#[tokio::test(start_paused = true)]
async fn concurrent_flows_have_separate_contexts() {
    let happen = Happen::new();
    let shop = shop(&happen).await;
    let replies: Vec<_> = (1..=200u64)
        .map(|i| {
            shop.send(
                &shop,
                Event::new("order", json!({"id": i, "qty": i, "express": i % 3 == 0})),
            )
            .into_future()
        })
        .collect();
    let out = timeout(T, futures::future::join_all(replies))
        .await
        .unwrap();
    for (i, r) in (1..=200u64).zip(out) {
        let v = r.unwrap();
        let expect = if i % 3 == 0 { i * 10 + 5 } else { i * 10 };
        assert_eq!(v["total"], expect, "order {i}");
        assert_eq!(v["order"], i);
        assert_eq!(v["trail"].as_array().unwrap().len(), 3, "order {i}: {v}");
    }
}

#[tokio::test(start_paused = true)]
async fn unit_and_typed_values_and_context_removal() {
    #[derive(serde::Deserialize)]
    struct In {
        a: i64,
        b: i64,
    }
    #[derive(serde::Serialize)]
    struct Out {
        sum: i64,
    }
    let happen = Happen::new();
    let n = happen.node("n").await.unwrap();
    n.on("add", |Json(p): Json<In>, _c: Context| async move {
        Json(Out { sum: p.a + p.b })
    })
    .unwrap();
    n.on("nothing", |_e: Event, _c: Context| async move {})
        .unwrap();
    let seen = Arc::new(Mutex::new(None));
    let s = seen.clone();
    n.on("remove", move |_e: Event, ctx: Context| {
        let s = s.clone();
        async move {
            ctx.insert(Validated(1));
            let first = ctx.remove::<Validated>();
            *s.lock() = Some((first, ctx.get::<Validated>()));
            Flow::done(true)
        }
    })
    .unwrap();
    let v = timeout(T, n.send(&n, Event::new("add", json!({"a": 2, "b": 40}))))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v, json!({"sum": 42}));
    let v = timeout(T, n.send(&n, Event::new("nothing", ())))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v, Value::Null);
    let v = timeout(T, n.send(&n, Event::new("remove", ())))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v, json!(true));
    assert_eq!(*seen.lock(), Some((Some(Validated(1)), None)));
    let sum: i64 = timeout(
        T,
        n.send(&n, Event::new("add", json!({"a": 1, "b": 1})))
            .decode::<serde_json::Map<String, Value>>(),
    )
    .await
    .unwrap()
    .unwrap()["sum"]
        .as_i64()
        .unwrap();
    assert_eq!(sum, 2);
}

/// What a step stores in its flow's context is dropped when the flow ends — a lock guard or a
/// transaction kept there must not outlive the flow (the engine reuses context allocations).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn context_data_does_not_outlive_its_flow() {
    struct Guard(Arc<std::sync::atomic::AtomicUsize>);
    impl Drop for Guard {
        fn drop(&mut self) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }
    let dropped = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let happen = Happen::new();
    let node = happen.node("keeper").await.unwrap();
    let d = dropped.clone();
    node.on("keep", move |_e: Event, ctx: Context| {
        let d = d.clone();
        async move {
            ctx.insert(Guard(d));
            "kept"
        }
    })
    .unwrap();
    for i in 1..=50 {
        let v = tokio::time::timeout(
            std::time::Duration::from_secs(30),
            node.send(&node, Event::new("keep", ())),
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(v, "kept");
        support::wait_until("the flow's context data is dropped", || {
            dropped.load(std::sync::atomic::Ordering::SeqCst) == i
        })
        .await;
    }
}

/// A driver reuses a finished flow's context allocation for the next flow it starts: no flow
/// may see an earlier flow's data, and a context a handler kept keeps its own event and data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reused_contexts_never_leak_between_flows() {
    use std::sync::atomic::{AtomicU64, Ordering};
    const N: u64 = 5_000;
    let happen = Happen::new();
    let node = happen.node("n").await.unwrap();
    let seen = Arc::new(AtomicU64::new(0));
    let stale = Arc::new(AtomicU64::new(0));
    let kept: Arc<Mutex<Vec<(u64, Context)>>> = Arc::default();
    let (s, st, k) = (seen.clone(), stale.clone(), kept.clone());
    node.on("job", move |event: Event, ctx: Context| {
        let (s, st, k) = (s.clone(), st.clone(), k.clone());
        async move {
            let i = event.payload().as_u64().unwrap();
            if ctx.get::<Validated>().is_some() || ctx.event().payload() != &json!(i) {
                st.fetch_add(1, Ordering::Relaxed);
            }
            ctx.insert(Validated(i));
            if i.is_multiple_of(7) {
                k.lock().push((i, ctx.clone()));
            }
            s.fetch_add(1, Ordering::Relaxed);
        }
    })
    .unwrap();
    for i in 0..N {
        node.tell(&node, Event::new("job", i)).unwrap();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while seen.load(Ordering::Relaxed) < N {
        assert!(
            tokio::time::Instant::now() < deadline,
            "flows did not finish"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        stale.load(Ordering::Relaxed),
        0,
        "a flow saw another flow's context"
    );
    let kept = kept.lock();
    assert_eq!(kept.len() as u64, N.div_ceil(7));
    for (i, ctx) in kept.iter() {
        assert_eq!(ctx.event().payload(), &json!(i));
        assert_eq!(ctx.get::<Validated>(), Some(Validated(*i)));
    }
}

/// `Context::with` holds no lock while its closure runs: the closure may read and write the
/// context's other values (it used to deadlock).
#[tokio::test]
async fn with_lets_its_closure_use_the_context() {
    #[derive(Clone, Debug, PartialEq)]
    struct Other(u32);
    struct Counter(u32);

    let happen = Happen::new();
    let node = happen.node("reentrant").await.unwrap();
    node.on("go", |_e: Event, ctx: Context| async move {
        ctx.insert(Other(7));
        ctx.insert(Counter(1));
        let seen = ctx
            .with(|c: &mut Counter| {
                c.0 += 1;
                // other data methods work in here; the value being worked on is out
                assert!(ctx.with(|_: &mut Counter| ()).is_none());
                ctx.insert(Other(ctx.get::<Other>().unwrap().0 + c.0));
                c.0
            })
            .unwrap();
        json!([
            seen,
            ctx.get::<Other>().unwrap().0,
            ctx.with(|c: &mut Counter| c.0)
        ])
    })
    .unwrap();
    let reply = tokio::time::timeout(
        Duration::from_secs(10),
        node.send(&node, Event::new("go", ())),
    )
    .await
    .expect("no deadlock")
    .unwrap();
    assert_eq!(reply, json!([2, 9, 2]));
}
