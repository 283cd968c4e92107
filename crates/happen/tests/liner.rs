//! Liners: order, short-circuit, node-level liners, changed events, observed outcomes,
//! the shipped `logging` and `shadow_mode`, and a liner under load.

mod support;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use happen::liner::{Approved, Liner, Next, PAUSED_STATUS, line, logging, shadow_mode};
use happen::{Context, Emitter, ErrorKind, Event, Flow, Happen};
use serde_json::{Value, json};

type Trail = Arc<Mutex<Vec<String>>>;

fn trail() -> Trail {
    Arc::new(Mutex::new(Vec::new()))
}

fn taken(trail: &Trail) -> Vec<String> {
    std::mem::take(&mut *trail.lock().unwrap())
}

/// A liner that records `<name> before` and `<name> after` around the rest of the chain.
fn recording(name: &'static str, trail: &Trail) -> Liner {
    let trail = trail.clone();
    Liner::new(move |event: Event, ctx: Context, next: Next| {
        let trail = trail.clone();
        async move {
            trail.lock().unwrap().push(format!("{name} before"));
            let outcome = next.run(event, ctx).await;
            trail.lock().unwrap().push(format!("{name} after"));
            outcome
        }
    })
}

/// A handler that records `h` and answers `"done"` after a second step that records `h2`.
fn two_steps(
    trail: &Trail,
) -> impl Fn(Event, Context) -> std::future::Ready<Flow> + Send + Sync + 'static {
    let trail = trail.clone();
    move |_e: Event, _c: Context| {
        trail.lock().unwrap().push("h".into());
        let trail = trail.clone();
        std::future::ready(Flow::next(move |_e: Event, _c: Context| {
            trail.lock().unwrap().push("h2".into());
            async { "done" }
        }))
    }
}

#[tokio::test]
async fn the_last_liner_is_outermost_and_wraps_the_whole_flow() {
    let happen = Happen::new();
    let node = happen.node("n").await.unwrap();
    let t = trail();
    let lined = line(two_steps(&t), [recording("l1", &t), recording("l2", &t)]);
    node.on("job", lined).unwrap();

    assert_eq!(
        node.send(&node, Event::new("job", ())).await.unwrap(),
        "done"
    );
    assert_eq!(
        taken(&t),
        ["l2 before", "l1 before", "h", "h2", "l1 after", "l2 after"]
    );
}

#[tokio::test]
async fn lining_a_lined_handler_puts_the_new_liners_outside() {
    let happen = Happen::new();
    let node = happen.node("n").await.unwrap();
    let t = trail();
    let inner = line(two_steps(&t), [recording("inner", &t)]);
    node.on("job", line(inner, [recording("outer", &t)]))
        .unwrap();

    node.send(&node, Event::new("job", ())).await.unwrap();
    assert_eq!(
        taken(&t),
        [
            "outer before",
            "inner before",
            "h",
            "h2",
            "inner after",
            "outer after"
        ]
    );
}

#[tokio::test]
async fn a_short_circuiting_liner_means_zero_handler_calls() {
    let happen = Happen::new();
    let node = happen.node("n").await.unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let handler = {
        let calls = calls.clone();
        move |_e: Event, _c: Context| {
            calls.fetch_add(1, Ordering::Relaxed);
            async { "handler" }
        }
    };
    let refuse = Liner::new(|_e: Event, _c: Context, _next: Next| async { json!("refused") });
    node.on("job", line(handler, [refuse])).unwrap();

    for _ in 0..10 {
        assert_eq!(
            node.send(&node, Event::new("job", ())).await.unwrap(),
            "refused"
        );
    }
    assert_eq!(calls.load(Ordering::Relaxed), 0);
    assert_eq!(node.stats().completed, 10);
}

#[tokio::test]
async fn a_node_liner_wraps_handlers_registered_before_and_after_it() {
    let happen = Happen::new();
    let node = happen.node("n").await.unwrap();
    let t = trail();
    node.on("early", two_steps(&t)).unwrap();
    node.line(recording("node", &t));
    node.on("late", two_steps(&t)).unwrap();
    node.on("lined", line(two_steps(&t), [recording("own", &t)]))
        .unwrap();

    for ty in ["early", "late"] {
        node.send(&node, Event::new(ty, ())).await.unwrap();
        assert_eq!(taken(&t), ["node before", "h", "h2", "node after"], "{ty}");
    }
    node.send(&node, Event::new("lined", ())).await.unwrap();
    assert_eq!(
        taken(&t),
        [
            "node before",
            "own before",
            "h",
            "h2",
            "own after",
            "node after"
        ]
    );

    // A second node liner is outside the first one, for old and new handlers alike.
    node.line(recording("second", &t));
    node.on("latest", two_steps(&t)).unwrap();
    for ty in ["early", "latest"] {
        node.send(&node, Event::new(ty, ())).await.unwrap();
        assert_eq!(
            taken(&t),
            [
                "second before",
                "node before",
                "h",
                "h2",
                "node after",
                "second after"
            ],
            "{ty}"
        );
    }
}

#[tokio::test]
async fn a_node_liner_covers_wildcard_handlers_too() {
    let happen = Happen::new();
    let node = happen.node("n").await.unwrap();
    let t = trail();
    node.on("order.*", two_steps(&t)).unwrap();
    node.line(recording("node", &t));
    node.on("{a,b}", two_steps(&t)).unwrap();
    for ty in ["order.paid", "b"] {
        node.send(&node, Event::new(ty, ())).await.unwrap();
        assert_eq!(taken(&t), ["node before", "h", "h2", "node after"], "{ty}");
    }
}

#[tokio::test]
async fn a_liner_may_change_the_event_the_handler_sees() {
    let happen = Happen::new();
    let node = happen.node("n").await.unwrap();
    let redact = Liner::new(|event: Event, ctx: Context, next: Next| async move {
        let mut payload = event.payload().clone();
        payload["card"] = json!("****");
        next.run(event.with_payload(payload), ctx).await
    });
    let handler = |event: Event, ctx: Context| async move {
        json!({
            "seen": event.payload(),
            "same_id": event.id() == ctx.event().id(),
            "arrived": ctx.event().payload(),
        })
    };
    node.on("pay", line(handler, [redact])).unwrap();

    let reply = node
        .send(
            &node,
            Event::new("pay", json!({"card": "4111", "amount": 5})),
        )
        .await
        .unwrap();
    assert_eq!(reply["seen"], json!({"card": "****", "amount": 5}));
    assert_eq!(reply["same_id"], true);
    assert_eq!(reply["arrived"]["card"], "4111");
}

#[tokio::test]
async fn a_liner_observes_values_and_errors_and_they_pass_through_unchanged() {
    let happen = Happen::new();
    let node = happen.node("n").await.unwrap();
    let seen: Arc<Mutex<Vec<std::result::Result<Value, ErrorKind>>>> = Arc::default();
    let observe = {
        let seen = seen.clone();
        Liner::new(move |event: Event, ctx: Context, next: Next| {
            let seen = seen.clone();
            async move {
                let outcome = next.run(event, ctx).await;
                seen.lock()
                    .unwrap()
                    .push(outcome.clone().map_err(|e| e.kind()));
                outcome
            }
        })
    };
    node.line(observe);
    node.on("ok", |_e: Event, _c: Context| async { 7 }).unwrap();
    node.on("fail", |_e: Event, _c: Context| async {
        Err::<(), _>(happen::Error::handler("broken").with_code("e42"))
    })
    .unwrap();
    node.on(
        "bad",
        |happen::Json(n): happen::Json<u32>, _c: Context| async move { n },
    )
    .unwrap();

    assert_eq!(node.send(&node, Event::new("ok", ())).await.unwrap(), 7);
    let err = node.send(&node, Event::new("fail", ())).await.unwrap_err();
    assert_eq!((err.kind(), err.code()), (ErrorKind::Handler, Some("e42")));
    assert_eq!(err.message(), "broken");
    assert_eq!(err.node().map(|n| n.as_str()), Some("n"));
    let err = node.send(&node, Event::new("bad", "x")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidPayload);

    assert_eq!(
        *seen.lock().unwrap(),
        [
            Ok(json!(7)),
            Err(ErrorKind::Handler),
            Err(ErrorKind::InvalidPayload)
        ]
    );
}

#[tokio::test]
async fn a_streaming_handler_still_streams_through_its_liners() {
    let happen = Happen::new();
    let node = happen.node("n").await.unwrap();
    node.line(logging());
    let t = trail();
    let handler = |_e: Event, _c: Context, emit: Emitter| async move {
        for i in 0..3 {
            emit.emit(i).await?;
        }
        Ok::<_, happen::Error>("end")
    };
    node.on("tail", line(handler, [recording("l", &t)]))
        .unwrap();

    let mut stream = node.send(&node, Event::new("tail", ())).into_stream();
    let mut items = Vec::new();
    while let Some(item) = stream.next().await {
        items.push(item.unwrap());
    }
    assert_eq!(items, [json!(0), json!(1), json!(2)]);
    assert_eq!(stream.final_value().unwrap(), "end");
    assert_eq!(taken(&t), ["l before", "l after"]);
}

#[tokio::test]
async fn a_panicking_liner_fails_only_its_flow() {
    support::quiet_intentional_panics();
    let happen = Happen::new();
    let node = happen.node("n").await.unwrap();
    let panicky = Liner::new(|event: Event, ctx: Context, next: Next| async move {
        if event.payload() == "boom" {
            panic!("intentional liner panic");
        }
        next.run(event, ctx).await
    });
    node.line(panicky);
    node.on("job", |_e: Event, _c: Context| async { "ok" })
        .unwrap();

    let err = node
        .send(&node, Event::new("job", "boom"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Panic);
    assert!(err.message().contains("intentional liner panic"), "{err}");
    assert_eq!(
        node.send(&node, Event::new("job", "fine")).await.unwrap(),
        "ok"
    );
}

#[tokio::test]
async fn steps_inside_a_liner_count_against_the_chain_depth() {
    #[allow(clippy::manual_async_fn)] // a step that returns itself needs a `Send` future
    fn forever(_e: Event, _c: Context) -> impl std::future::Future<Output = Flow> + Send {
        async { Flow::next(forever) }
    }
    let config = happen::Config::from_toml_str("[flow]\nmax_chain_depth = 16").unwrap();
    let happen = Happen::with_config(config).unwrap();
    let node = happen.node("n").await.unwrap();
    node.line(Liner::new(|e: Event, c: Context, next: Next| {
        next.run(e, c)
    }));
    node.on("loop", forever).unwrap();
    let err = node.send(&node, Event::new("loop", ())).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ChainTooDeep);
    assert_eq!(err.limit(), Some(16));
}

#[tokio::test]
async fn shadow_mode_pauses_unapproved_destructive_events() {
    let happen = Happen::new();
    let files = happen.node("files").await.unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let handler = {
        let calls = calls.clone();
        move |event: Event, _c: Context| {
            calls.fetch_add(1, Ordering::Relaxed);
            async move { format!("{} done", event.event_type()) }
        }
    };
    files.line(shadow_mode());
    files.on("file.*", handler).unwrap();

    let event = Event::new("file.delete", "a.txt");
    let reply = files.send(&files, event).await.unwrap();
    assert_eq!(reply["status"], PAUSED_STATUS);
    assert_eq!(reply["eventType"], "file.delete");
    assert!(reply["eventId"].as_str().unwrap().starts_with("evt-"));
    assert!(reply["reason"].as_str().unwrap().contains("Approved"));
    let reply = files
        .send(&files, Event::new("file.overwrite", ()))
        .await
        .unwrap();
    assert_eq!(reply["status"], PAUSED_STATUS);
    assert_eq!(calls.load(Ordering::Relaxed), 0);

    // Not destructive: runs.
    let reply = files
        .send(&files, Event::new("file.read", ()))
        .await
        .unwrap();
    assert_eq!(reply, "file.read done");
    assert_eq!(calls.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn shadow_mode_lets_approved_flows_through() {
    let happen = Happen::new();
    let files = happen.node("files").await.unwrap();
    files.line(shadow_mode());
    // Outside shadow mode: approves events whose payload carries the right ticket.
    files.line(Liner::new(
        |event: Event, ctx: Context, next: Next| async move {
            if event.payload()["ticket"] == "CHG-1" {
                ctx.insert(Approved);
            }
            next.run(event, ctx).await
        },
    ));
    files
        .on("file.delete", |_e: Event, _c: Context| async { "deleted" })
        .unwrap();

    let approved = Event::new("file.delete", json!({"ticket": "CHG-1"}));
    assert_eq!(files.send(&files, approved).await.unwrap(), "deleted");
    let unapproved = Event::new("file.delete", json!({"ticket": "nope"}));
    assert_eq!(
        files.send(&files, unapproved).await.unwrap()["status"],
        "paused"
    );
}

#[tokio::test]
async fn shadow_mode_for_a_pattern() {
    let happen = Happen::new();
    let db = happen.node("db").await.unwrap();
    db.line(happen::liner::shadow_mode_for("table.drop").unwrap());
    db.on("table.*", |_e: Event, _c: Context| async { "ran" })
        .unwrap();
    assert_eq!(
        db.send(&db, Event::new("table.drop", ())).await.unwrap()["status"],
        "paused"
    );
    // The pattern replaces the default: `delete` in the name is fine here.
    assert_eq!(
        db.send(&db, Event::new("table.delete", ())).await.unwrap(),
        "ran"
    );
    let err = happen::liner::shadow_mode_for("a.{").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidPattern);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_liner_sees_every_event_once_under_load() {
    const PRODUCERS: usize = 8;
    const EACH: usize = 1_000;
    let happen = Happen::new();
    let node = happen.node("n").await.unwrap();
    let seen: Arc<Mutex<HashSet<String>>> = Arc::default();
    let handled = Arc::new(AtomicUsize::new(0));
    {
        let seen = seen.clone();
        node.line(Liner::new(move |event: Event, ctx: Context, next: Next| {
            let fresh = seen.lock().unwrap().insert(event.id().to_string());
            assert!(fresh, "a liner saw an event twice");
            let value = event.payload().as_u64().unwrap_or(0);
            let outcome = next.run(event, ctx);
            async move {
                let got = outcome.await?;
                // Each flow gets its own event's answer back.
                assert_eq!(got, json!(value * 2));
                Ok::<_, happen::Error>(got)
            }
        }));
    }
    {
        let handled = handled.clone();
        node.on("double", move |event: Event, _c: Context| {
            handled.fetch_add(1, Ordering::Relaxed);
            async move {
                tokio::task::yield_now().await;
                event.payload().as_u64().unwrap() * 2
            }
        })
        .unwrap();
    }

    let mut tasks = Vec::new();
    for p in 0..PRODUCERS {
        let node = node.clone();
        tasks.push(tokio::spawn(async move {
            let replies: Vec<_> = (0..EACH)
                .map(|i| {
                    let n = (p * EACH + i) as u64;
                    (n, node.send(&node, Event::new("double", n)))
                })
                .collect();
            for (n, reply) in replies {
                assert_eq!(reply.await.unwrap(), json!(n * 2));
            }
        }));
    }
    support::join_all_within("every sender got its answers", tasks).await;
    assert_eq!(handled.load(Ordering::Relaxed), PRODUCERS * EACH);
    assert_eq!(seen.lock().unwrap().len(), PRODUCERS * EACH);
}
