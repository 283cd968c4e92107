//! Every error kind a sender can get back is produced and distinguished.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use happen::{Config, Context, ErrorKind, Event, Flow, Happen};
use serde_json::json;
use tokio::time::timeout;

mod support;
use support::quiet_intentional_panics;

const T: Duration = Duration::from_secs(10);

#[tokio::test(start_paused = true)]
async fn unknown_node_names_the_target() {
    let happen = Happen::new();
    let client = happen.node("client").await.unwrap();
    let err = timeout(T, client.send("nobody", Event::new("ping", ())))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::UnknownNode);
    assert_eq!(err.node().map(|n| n.as_str()), Some("nobody"));
    assert!(err.message().contains("nobody"), "{err}");
    // tell reports it at once, too.
    let err = client.tell("nobody", Event::new("ping", ())).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::UnknownNode);
}

#[tokio::test(start_paused = true)]
async fn no_handler_names_node_and_type() {
    let happen = Happen::new();
    let client = happen.node("client").await.unwrap();
    let server = happen.node("server").await.unwrap();
    server
        .on("order.*", |_e: Event, _c: Context| async move { json!(1) })
        .unwrap();
    let err = timeout(T, client.send(&server, Event::new("user.created", ())))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NoHandler);
    assert_eq!(err.node().map(|n| n.as_str()), Some("server"));
    assert!(err.message().contains("user.created"), "{err}");
    // `*` is one segment: order.item.added has no handler either.
    let err = timeout(T, client.send(&server, Event::new("order.item.added", ())))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NoHandler);
    // And the matching type still works.
    let v = timeout(T, client.send(&server, Event::new("order.created", ())))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v, json!(1));
}

#[tokio::test(start_paused = true)]
async fn handler_error_keeps_its_message() {
    let happen = Happen::new();
    let client = happen.node("client").await.unwrap();
    let server = happen.node("server").await.unwrap();
    server
        .on("charge", |_e: Event, _c: Context| async move {
            Err::<serde_json::Value, _>(format!("card declined: {}", 4242))
        })
        .unwrap();
    let err = timeout(T, client.send(&server, Event::new("charge", ())))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Handler);
    assert_eq!(err.message(), "card declined: 4242");
    assert!(std::error::Error::source(&err).is_some());
}

#[tokio::test(start_paused = true)]
async fn handler_error_from_a_later_step_keeps_its_message() {
    let happen = Happen::new();
    let server = happen.node("server").await.unwrap();
    async fn second(_e: Event, _c: Context) -> Result<serde_json::Value, std::io::Error> {
        Err(std::io::Error::other("disk on fire"))
    }
    server
        .on(
            "go",
            |_e: Event, _c: Context| async move { Flow::next(second) },
        )
        .unwrap();
    let err = timeout(T, server.send(&server, Event::new("go", ())))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Handler);
    assert_eq!(err.message(), "disk on fire");
}

#[tokio::test(start_paused = true)]
async fn panics_are_caught_with_their_message() {
    quiet_intentional_panics();
    let happen = Happen::new();
    let client = happen.node("client").await.unwrap();
    let server = happen.node("server").await.unwrap();
    // A panic before the first await (while creating the future)...
    server
        .on(
            "sync-panic",
            |_e: Event, _c: Context| -> std::future::Ready<()> { panic!("intentional sync panic") },
        )
        .unwrap();
    // ...and one inside the future after an await.
    server
        .on("async-panic", |_e: Event, _c: Context| async move {
            tokio::task::yield_now().await;
            if true {
                panic!("intentional async panic {}", 7);
            }
            json!(0)
        })
        .unwrap();
    server
        .on(
            "ok",
            |_e: Event, _c: Context| async move { json!("still here") },
        )
        .unwrap();

    let err = timeout(T, client.send(&server, Event::new("sync-panic", ())))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Panic);
    assert!(err.message().contains("intentional sync panic"), "{err}");

    let err = timeout(T, client.send(&server, Event::new("async-panic", ())))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Panic);
    assert!(err.message().contains("intentional async panic 7"), "{err}");
    assert_eq!(err.node().map(|n| n.as_str()), Some("server"));

    let v = timeout(T, client.send(&server, Event::new("ok", ())))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v, "still here");
}

#[tokio::test(start_paused = true)]
async fn timeout_is_an_error_and_per_send_override_applies() {
    let happen = Happen::new();
    let client = happen.node("client").await.unwrap();
    let server = happen.node("server").await.unwrap();
    server
        .on("hang", |_e: Event, _c: Context| async move {
            std::future::pending::<()>().await;
        })
        .unwrap();
    let start = tokio::time::Instant::now();
    let err = timeout(
        Duration::from_secs(60),
        client
            .send(&server, Event::new("hang", ()))
            .timeout(Duration::from_secs(2)),
    )
    .await
    .expect("the reply's own timeout fires first")
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert!(err.is_timeout());
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
}

/// A reply to a local node arms its timer only once the answer is known not to be
/// immediate: when the event is queued, or when its flow waits. Both must still time out.
#[tokio::test(start_paused = true)]
async fn queued_and_waiting_events_time_out_from_the_senders_clock() {
    let happen = Happen::new();
    let client = happen.node("client").await.unwrap();
    let server = happen
        .node_with(
            "one-at-a-time",
            happen::NodeOptions::new().max_concurrent(1),
        )
        .await
        .unwrap();
    server
        .on("hang", |_e: Event, _c: Context| async move {
            std::future::pending::<()>().await;
        })
        .unwrap();
    let start = tokio::time::Instant::now();
    let running = client
        .send(&server, Event::new("hang", ()))
        .timeout(Duration::from_secs(3));
    // Queued behind the hanging flow: it never starts, and still times out on time.
    let queued = client
        .send(&server, Event::new("hang", ()))
        .timeout(Duration::from_secs(2));
    let err = timeout(Duration::from_secs(60), queued)
        .await
        .expect("the queued reply's own timeout fires")
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    // A reply's timeout counts from when it is first awaited: this one from the 2 s mark.
    let err = timeout(Duration::from_secs(60), running)
        .await
        .expect("the running reply's own timeout fires")
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_secs(5) && waited < Duration::from_secs(6),
        "{waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn default_request_timeout_comes_from_config() {
    let mut config = Config::default();
    config.flow.request_timeout = Duration::from_millis(1_500);
    let happen = Happen::with_config(config).unwrap();
    let client = happen.node("client").await.unwrap();
    let server = happen.node("server").await.unwrap();
    server
        .on("hang", |_e: Event, _c: Context| async move {
            std::future::pending::<()>().await;
        })
        .unwrap();
    let start = tokio::time::Instant::now();
    let err = timeout(
        Duration::from_secs(60),
        client.send(&server, Event::new("hang", ())),
    )
    .await
    .unwrap()
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(1_500) && waited < Duration::from_secs(2),
        "{waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn shut_down_after_shutdown_by_handle_and_by_id() {
    let happen = Happen::new();
    let client = happen.node("client").await.unwrap();
    let server = happen.node("server").await.unwrap();
    server
        .on(
            "ping",
            |_e: Event, _c: Context| async move { json!("pong") },
        )
        .unwrap();
    assert_eq!(
        timeout(T, client.send(&server, Event::new("ping", ())))
            .await
            .unwrap()
            .unwrap(),
        "pong"
    );
    timeout(T, happen.shutdown(Duration::from_secs(1)))
        .await
        .unwrap();

    let err = timeout(T, client.send(&server, Event::new("ping", ())))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ShutDown, "{err:?}");
    assert!(err.is_shut_down());

    let err = timeout(T, client.send("server", Event::new("ping", ())))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::ShutDown,
        "sending by id after shutdown: {err:?}"
    );

    let err = client.broadcast(Event::new("ping", ())).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ShutDown);
    let err = happen.node("late").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ShutDown);
}

#[tokio::test(start_paused = true)]
async fn chain_too_deep_for_a_step_that_returns_itself() {
    let mut config = Config::default();
    config.flow.max_chain_depth = 5;
    let happen = Happen::with_config(config).unwrap();
    let server = happen.node("server").await.unwrap();
    let runs = Arc::new(AtomicUsize::new(0));
    fn looping(runs: Arc<AtomicUsize>) -> Flow {
        Flow::next(move |_e: Event, _c: Context| {
            let runs = runs.clone();
            async move {
                runs.fetch_add(1, Ordering::SeqCst);
                looping(runs)
            }
        })
    }
    let r = runs.clone();
    server
        .on("loop", move |_e: Event, _c: Context| {
            let r = r.clone();
            async move {
                r.fetch_add(1, Ordering::SeqCst);
                looping(r)
            }
        })
        .unwrap();
    let err = timeout(T, server.send(&server, Event::new("loop", ())))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ChainTooDeep);
    assert_eq!(err.limit(), Some(5));
    let n = runs.load(Ordering::SeqCst);
    assert!((1..=5).contains(&n), "the step ran {n} times with max 5");
}

#[tokio::test(start_paused = true)]
async fn chain_too_deep_across_nodes_via_ctx_send() {
    let mut config = Config::default();
    config.flow.max_chain_depth = 4;
    let happen = Happen::with_config(config).unwrap();
    let a = happen.node("a").await.unwrap();
    let b = happen.node("b").await.unwrap();
    // a and b ping each other forever through ctx.send, awaiting each reply.
    for (me, other) in [(&a, "b"), (&b, "a")] {
        me.on("ping", move |_e: Event, ctx: Context| async move {
            ctx.send(other, Event::new("ping", ())).await
        })
        .unwrap();
    }
    let client = happen.node("client").await.unwrap();
    let err = timeout(T, client.send(&a, Event::new("ping", ())))
        .await
        .unwrap()
        .unwrap_err();
    // Each hop passed the error on: the caller sees where its own call failed (a), and the
    // first error of the chain.
    assert_eq!(err.kind(), ErrorKind::Downstream, "{err:?}");
    assert_eq!(err.node().map(|n| n.as_str()), Some("a"));
    let origin = err.origin();
    assert_eq!(origin.kind(), ErrorKind::ChainTooDeep, "{err:?}");
    assert_eq!(origin.limit(), Some(4));
    assert!(err.message().contains("more than 4 nodes"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn kinds_are_distinct() {
    // Each outcome above maps to a different kind; a caller can match on all of them.
    let kinds = [
        ErrorKind::UnknownNode,
        ErrorKind::NoHandler,
        ErrorKind::Handler,
        ErrorKind::Panic,
        ErrorKind::Timeout,
        ErrorKind::ShutDown,
        ErrorKind::ChainTooDeep,
        ErrorKind::QueueFull,
    ];
    let set: std::collections::HashSet<_> = kinds.iter().collect();
    assert_eq!(set.len(), kinds.len());
}
