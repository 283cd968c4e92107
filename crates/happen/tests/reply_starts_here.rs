//! A request to a node of this process: the requester's task starts the next flow that can
//! start there when it first awaits its `Reply` (no driver wake, no thread hop), in admission
//! order, within Tokio's co-operative budget; a handler that blocks its thread holds up one
//! requester and then runs in the drivers; requests made inside such a flow, and replies
//! read as streams, are left to the drivers.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use happen::{Context, Event, Happen, Node, NodeOptions};
use serde_json::json;
use tokio::task::Id;
use tokio::time::timeout;

use support::wait_until;

const T: Duration = Duration::from_secs(30);

/// The Tokio task each flow of `event_type` started in (its handler's synchronous part runs
/// in the task that starts it).
type Starts = Arc<Mutex<Vec<Option<Id>>>>;

/// Each flow's index and the task it started in.
type IndexedStarts = Arc<Mutex<Vec<(u64, Option<Id>)>>>;

/// A node whose `tick` handler records the task it started in; with `slow`, it then blocks
/// its thread for 2 ms.
async fn recording(happen: &Happen, id: &str) -> (Node, Starts) {
    let node = happen.node(id).await.unwrap();
    let starts: Starts = Arc::default();
    let s = starts.clone();
    node.on("tick", move |e: Event, _c: Context| {
        s.lock().unwrap().push(tokio::task::try_id());
        if e.payload()["slow"] == json!(true) {
            std::thread::sleep(Duration::from_millis(2));
        }
        async move { e.payload().clone() }
    })
    .unwrap();
    (node, starts)
}

/// Sends `n` `tick`s one after another from a task of its own, the ones `slow` picks marked
/// slow, checks each answer, and returns that task's id.
async fn request_ticks(
    client: Node,
    server: Node,
    n: u64,
    slow: impl Fn(u64) -> bool + Send + 'static,
) -> Option<Id> {
    let requester = tokio::spawn(async move {
        for i in 0..n {
            let payload = json!({"slow": slow(i), "i": i});
            let v = client.send(&server, Event::new("tick", payload)).await;
            assert_eq!(v.unwrap()["i"], i);
        }
        tokio::task::id()
    });
    Some(timeout(T, requester).await.unwrap().unwrap())
}

#[tokio::test(flavor = "current_thread")]
async fn a_request_starts_its_flow_in_the_requesters_task() {
    let happen = Happen::new();
    let (server, starts) = recording(&happen, "server").await;
    let client = happen.node("client").await.unwrap();
    let requester = request_ticks(client, server, 1_000, |_| false).await;
    let starts = starts.lock().unwrap();
    assert_eq!(starts.len(), 1_000);
    // Except when the task's co-operative budget (128 polls) is spent: then it yields, and
    // a driver starts that flow.
    let elsewhere = starts.iter().filter(|t| **t != requester).count();
    assert!(
        elsewhere <= 1_000 / 100,
        "{elsewhere} of 1,000 flows started elsewhere"
    );
}

/// A handler that blocks its thread (a misuse: blocking work belongs in `Context::cpu`) runs
/// in its requester's task once; the next 64 requests leave that node's flows to its
/// drivers, and then requesters start them again.
#[tokio::test(flavor = "current_thread")]
async fn a_blocking_handler_holds_up_one_requester_then_runs_in_the_drivers() {
    let happen = Happen::new();
    let (server, starts) = recording(&happen, "server").await;
    let client = happen.node("client").await.unwrap();
    let requester = request_ticks(client, server, 100, |i| i == 0).await;
    let starts = starts.lock().unwrap();
    assert_eq!(starts[0], requester, "the first flow started elsewhere");
    let elsewhere = starts[1..=64].iter().filter(|t| **t != requester).count();
    assert_eq!(
        elsewhere, 64,
        "the requester went on starting flows after a slow one"
    );
    assert!(
        starts[65..].contains(&requester),
        "the requester never started a flow again"
    );
}

/// A handler that turns slow after fast calls is noticed within 8 requests (the clock is
/// read one call in 8), after which the drivers run it.
#[tokio::test(flavor = "current_thread")]
async fn a_handler_that_turns_slow_is_left_to_the_drivers_within_8_requests() {
    let happen = Happen::new();
    let (server, starts) = recording(&happen, "server").await;
    let client = happen.node("client").await.unwrap();
    // slow after 21 fast ones: not at a multiple of 8
    let requester = request_ticks(client, server, 60, |i| i >= 21).await;
    let starts = starts.lock().unwrap();
    assert!(starts[..21].iter().all(|t| *t == requester));
    let slow_here = starts[21..].iter().filter(|t| **t == requester).count();
    assert!(
        (1..=8).contains(&slow_here),
        "{slow_here} slow flows started in the requester's task"
    );
}

/// A flow started in its requester's task that makes a request and awaits it leaves that
/// request's flow to the drivers: requests do not nest on one stack.
#[tokio::test(flavor = "current_thread")]
async fn a_request_inside_a_flow_started_here_is_left_to_the_drivers() {
    let happen = Happen::new();
    let (inner, starts) = recording(&happen, "inner").await;
    let outer = happen.node("outer").await.unwrap();
    let outer_starts: Starts = Arc::default();
    let s = outer_starts.clone();
    outer
        .on("relay", move |e: Event, ctx: Context| {
            s.lock().unwrap().push(tokio::task::try_id());
            let inner = inner.clone();
            async move {
                let v = ctx
                    .send(&inner, Event::new("tick", e.payload().clone()))
                    .await?;
                Ok::<_, happen::Error>(json!({ "relayed": v }))
            }
        })
        .unwrap();
    let client = happen.node("client").await.unwrap();
    let requester = tokio::spawn(async move {
        for i in 0..200u64 {
            let v = client.send(&outer, Event::new("relay", i)).await.unwrap();
            assert_eq!(v["relayed"], i);
        }
        tokio::task::id()
    });
    let requester = Some(timeout(T, requester).await.unwrap().unwrap());
    assert!(outer_starts.lock().unwrap().iter().all(|t| *t == requester));
    let starts = starts.lock().unwrap();
    assert_eq!(starts.len(), 200);
    assert!(
        starts.iter().all(|t| *t != requester),
        "a nested request's flow ran on the requester's stack"
    );
}

/// Answers that keep arriving at once do not let a requester monopolise its thread: each
/// start counts against Tokio's co-operative budget, so the task yields and a task beside it
/// runs.
#[tokio::test(flavor = "current_thread")]
async fn a_requester_whose_answers_come_at_once_still_yields() {
    let happen = Happen::new();
    let (server, _starts) = recording(&happen, "server").await;
    let client = happen.node("client").await.unwrap();
    let requester = tokio::spawn(async move {
        let ticked = Arc::new(AtomicBool::new(false));
        let t = ticked.clone();
        // runs only once the requester yields (one thread)
        tokio::spawn(async move { t.store(true, Ordering::SeqCst) });
        for i in 0..2_000u64 {
            client.send(&server, Event::new("tick", i)).await.unwrap();
        }
        ticked.load(Ordering::SeqCst)
    });
    assert!(
        timeout(T, requester).await.unwrap().unwrap(),
        "2,000 requests answered at once never let the task beside them run"
    );
}

/// Under load, with requesters starting flows beside the node's drivers: every flow starts
/// in admission order (two slots force a queue and slot hand-overs; one flow in five waits and
/// moves to its own task), the slots are never exceeded, none is lost, and requesters did
/// start flows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_under_load_start_in_admission_order_within_the_limits() {
    const IN_FLIGHT: u64 = 64;
    const N: u64 = 320 * IN_FLIGHT;
    let happen = Happen::new();
    let server = happen
        .node_with(
            "server",
            NodeOptions::new().max_concurrent(2).queue_limit(1_000_000),
        )
        .await
        .unwrap();
    let started: IndexedStarts = Arc::default();
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (s, r, p) = (started.clone(), running.clone(), peak.clone());
    server
        .on("tick", move |e: Event, _c: Context| {
            let i = e.payload().as_u64().unwrap();
            s.lock().unwrap().push((i, tokio::task::try_id())); // at the start, in order
            p.fetch_max(r.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
            let r = r.clone();
            async move {
                if i.is_multiple_of(5) {
                    tokio::task::yield_now().await;
                }
                r.fetch_sub(1, Ordering::SeqCst);
                i
            }
        })
        .unwrap();
    server
        .on("other", |_e: Event, _c: Context| async { "other" })
        .unwrap();
    let client = happen.node("client").await.unwrap();
    // Two more requesters of another type on the same node.
    let others: Vec<_> = (0..2)
        .map(|_| {
            let (client, server) = (client.clone(), server.clone());
            tokio::spawn(async move {
                for _ in 0..2_000 {
                    assert_eq!(
                        client.send(&server, Event::new("other", ())).await.unwrap(),
                        "other"
                    );
                }
            })
        })
        .collect();
    let producer = {
        let (client, server) = (client.clone(), server.clone());
        tokio::spawn(async move {
            for batch in 0..N / IN_FLIGHT {
                let replies: Vec<_> = (0..IN_FLIGHT)
                    .map(|i| client.send(&server, Event::new("tick", batch * IN_FLIGHT + i)))
                    .collect();
                for (i, v) in futures::future::join_all(replies)
                    .await
                    .into_iter()
                    .enumerate()
                {
                    assert_eq!(v.unwrap(), batch * IN_FLIGHT + i as u64);
                }
            }
            tokio::task::id()
        })
    };
    let producer = timeout(T, producer).await.unwrap().unwrap();
    for o in others {
        timeout(T, o).await.unwrap().unwrap();
    }
    let started = started.lock().unwrap();
    let order: Vec<u64> = started.iter().map(|(i, _)| *i).collect();
    assert!(
        order == (0..N).collect::<Vec<_>>(),
        "starts out of admission order"
    );
    assert!(
        peak.load(Ordering::SeqCst) <= 2,
        "more flows ran than slots"
    );
    assert!(
        started.iter().any(|(_, t)| *t == Some(producer)),
        "the requester started no flow itself"
    );
    let stats = server.stats();
    assert_eq!((stats.completed, stats.failed), (N + 4_000, 0), "{stats:?}");
    assert_eq!((stats.active, stats.queued), (0, 0));
}

/// A node that was closed is not kept alive by what requesters keep of it (a spare flow
/// context, which holds the node): once the instance shut down and the handles are gone,
/// the node and its handlers are freed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_node_is_freed_after_requesters_started_its_flows() {
    let marker = Arc::new(());
    let happen = Happen::new();
    let server = happen.node("server").await.unwrap();
    let m = marker.clone();
    server
        .on("tick", move |e: Event, _c: Context| {
            let _held = &m;
            async move { e.payload().clone() }
        })
        .unwrap();
    let client = happen.node("client").await.unwrap();
    for i in 0..1_000u64 {
        assert_eq!(
            client.send(&server, Event::new("tick", i)).await.unwrap(),
            i
        );
    }
    happen.shutdown(Duration::from_secs(5)).await;
    drop((server, client, happen));
    wait_until("the node and its handler to be freed", || {
        Arc::strong_count(&marker) == 1
    })
    .await;
}

/// A reply polled inside a handler's synchronous part (which runs while its node starts
/// flows, under that node's start lock) starts nothing there, and nothing deadlocks — also
/// when the reply is from the handler's own node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_polled_in_a_handlers_synchronous_part_does_not_deadlock() {
    use futures::FutureExt;
    let happen = Happen::new();
    let (other, _starts) = recording(&happen, "other").await;
    let node = happen.node("n").await.unwrap();
    let me = node.clone();
    node.on("poll-in-sync-part", move |e: Event, ctx: Context| {
        // polled once, now, then dropped (fire-and-forget): to its own node and another
        let _ = ctx.send(&me, Event::new("tick", 1)).now_or_never();
        let _ = ctx.send(&other, Event::new("tick", 2)).now_or_never();
        async move { json!({ "i": e.payload().clone() }) }
    })
    .unwrap();
    node.on("tick", |e: Event, _c: Context| async move {
        e.payload().clone()
    })
    .unwrap();
    let client = happen.node("client").await.unwrap();
    for i in 0..500u64 {
        let v = timeout(T, client.send(&node, Event::new("poll-in-sync-part", i)))
            .await
            .expect("a reply polled in a synchronous part deadlocked")
            .unwrap();
        assert_eq!(v["i"], i);
    }
}

/// A requester on another runtime than the node's leaves its flows to the node's drivers: a
/// flow's first poll binds what it creates (timers, sockets, spawned tasks) to the runtime it
/// runs on, which must stay the node's.
#[test]
fn a_requester_on_another_runtime_leaves_the_flows_to_the_nodes_runtime() {
    let nodes_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let requesters_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ran_on: Arc<Mutex<Vec<tokio::runtime::Id>>> = Arc::default();
    let r = ran_on.clone();
    let (happen, server, client) = nodes_rt.block_on(async move {
        let happen = Happen::new();
        let server = happen.node("server").await.unwrap();
        server
            .on("where", move |_e: Event, _c: Context| {
                r.lock()
                    .unwrap()
                    .push(tokio::runtime::Handle::current().id());
                async {}
            })
            .unwrap();
        let client = happen.node("client").await.unwrap();
        (happen, server, client)
    });
    requesters_rt.block_on(async {
        for _ in 0..200 {
            timeout(T, client.send(&server, Event::new("where", ())))
                .await
                .unwrap()
                .unwrap();
        }
    });
    let ran_on = ran_on.lock().unwrap();
    assert_eq!(ran_on.len(), 200);
    assert!(
        ran_on.iter().all(|id| *id == nodes_rt.handle().id()),
        "a handler ran on the requester's runtime"
    );
    nodes_rt.block_on(happen.shutdown(Duration::from_secs(5)));
}
