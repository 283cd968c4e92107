//! Broadcast: every node with a matching handler (the sender included), nobody else; one
//! handler per node (the most specific pattern).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use happen::pattern::Pattern;
use happen::{Context, Event, Happen, Node};
use parking_lot::Mutex;
use serde_json::json;
use tokio::time::timeout;

mod support;
use support::wait_until;

const T: Duration = Duration::from_secs(10);

#[tokio::test(start_paused = true)]
async fn reaches_matching_nodes_including_the_sender_and_skips_others() {
    let happen = Happen::new();
    let got: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut matching: Vec<Node> = Vec::new();
    for i in 0..5 {
        let n = happen.node(format!("listener-{i}")).await.unwrap();
        let g = got.clone();
        let pattern = if i % 2 == 0 {
            "order.*"
        } else {
            "order.created"
        };
        n.on(pattern, move |e: Event, ctx: Context| {
            let g = g.clone();
            async move {
                assert_eq!(e.payload()["id"], 1);
                g.lock().push(ctx.node_id().to_string());
            }
        })
        .unwrap();
        matching.push(n);
    }
    let mut others = Vec::new();
    for i in 0..3 {
        let n = happen.node(format!("other-{i}")).await.unwrap();
        let g = got.clone();
        n.on("user.*", move |_e: Event, ctx: Context| {
            let g = g.clone();
            async move { g.lock().push(ctx.node_id().to_string()) }
        })
        .unwrap();
        others.push(n);
    }
    let silent = happen.node("no-handlers").await.unwrap();
    // The sender has a matching handler: it hears its own broadcast.
    let sender = happen.node("sender").await.unwrap();
    let g = got.clone();
    sender
        .on("{order,payment}.created", move |_e: Event, ctx: Context| {
            let g = g.clone();
            async move { g.lock().push(ctx.node_id().to_string()) }
        })
        .unwrap();

    sender
        .broadcast(Event::new("order.created", json!({"id": 1})))
        .unwrap();
    wait_until("the condition", || got.lock().len() >= 6).await;
    // Let anything else that was (wrongly) delivered run too.
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    let mut got = got.lock().clone();
    got.sort();
    assert_eq!(
        got,
        [
            "listener-0",
            "listener-1",
            "listener-2",
            "listener-3",
            "listener-4",
            "sender"
        ]
    );
    for n in matching.iter().chain([&sender]) {
        assert_eq!(n.stats().accepted, 1, "{}", n.id());
    }
    for n in others.iter().chain([&silent]) {
        assert_eq!(n.stats().accepted, 0, "{} was not skipped", n.id());
    }
}

#[tokio::test(start_paused = true)]
async fn sender_without_a_matching_handler_does_not_hear_itself() {
    let happen = Happen::new();
    let sender = happen.node("sender").await.unwrap();
    sender
        .on("other", |_e: Event, _c: Context| async move {})
        .unwrap();
    let listener = happen.node("listener").await.unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    listener
        .on("ping", move |_e: Event, _c: Context| {
            let h = h.clone();
            async move {
                h.fetch_add(1, Ordering::SeqCst);
            }
        })
        .unwrap();
    sender.broadcast(Event::new("ping", ())).unwrap();
    wait_until("the condition", || hits.load(Ordering::SeqCst) == 1).await;
    assert_eq!(sender.stats().accepted, 0);
}

/// Registers handlers under several patterns at one node; each records its name.
fn register_all(node: &Node, ran: &Arc<Mutex<Vec<&'static str>>>, pats: &[(&'static str, bool)]) {
    for &(name, is_predicate) in pats {
        let r = ran.clone();
        let handler = move |_e: Event, _c: Context| {
            let r = r.clone();
            async move {
                r.lock().push(name);
                json!(name)
            }
        };
        if is_predicate {
            node.on(
                Pattern::predicate(|t: &str| t.starts_with("order")),
                handler,
            )
            .unwrap();
        } else {
            node.on(name, handler).unwrap();
        }
    }
}

#[tokio::test(start_paused = true)]
async fn only_the_most_specific_handler_runs_per_node() {
    let happen = Happen::new();
    let node = happen.node("n").await.unwrap();
    let ran: Arc<Mutex<Vec<&'static str>>> = Arc::default();
    // Registered least specific first, so registration order cannot explain the result.
    register_all(
        &node,
        &ran,
        &[
            ("predicate", true),
            ("*.*", false),
            ("order.*", false),
            ("{order,payment}.created", false),
            ("order.created", false),
        ],
    );
    node.broadcast(Event::new("order.created", ())).unwrap();
    wait_until("the condition", || node.stats().completed == 1).await;
    assert_eq!(*ran.lock(), ["order.created"]);

    // Direct sends pick by the same rule.
    let cases = [
        ("order.created", "order.created"),
        ("payment.created", "{order,payment}.created"),
        ("order.updated", "order.*"),
        ("user.updated", "*.*"),
        ("order", "predicate"),
        ("order.item.added", "predicate"),
    ];
    for (t, expect) in cases {
        let v = timeout(T, node.send(&node, Event::new(t, ())))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(v, expect, "event type {t}");
    }
    assert_eq!(ran.lock().len(), 1 + cases.len(), "one handler per event");
}

#[tokio::test(start_paused = true)]
async fn specificity_ties_go_to_the_earliest_registration() {
    let happen = Happen::new();
    let node = happen.node("n").await.unwrap();
    let ran: Arc<Mutex<Vec<&'static str>>> = Arc::default();
    // Same class (wildcard) and same literal length: first registered wins.
    register_all(&node, &ran, &[("a.*", false), ("*.b", false)]);
    let v = timeout(T, node.send(&node, Event::new("a.b", ())))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v, "a.*");
    let node2 = happen.node("n2").await.unwrap();
    register_all(&node2, &ran, &[("*.b", false), ("a.*", false)]);
    let v = timeout(T, node2.send(&node2, Event::new("a.b", ())))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v, "*.b");
    // More literal characters beat fewer within the wildcard class.
    let node3 = happen.node("n3").await.unwrap();
    register_all(&node3, &ran, &[("*.*.c", false), ("a.*.c", false)]);
    let v = timeout(T, node3.send(&node3, Event::new("a.b.c", ())))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v, "a.*.c");
    // Registering the same exact pattern twice is an error; the first stays in effect
    // (more in `node_registration.rs`).
    let node4 = happen.node("n4").await.unwrap();
    node4
        .on("x", |_e: Event, _c: Context| async move { json!("first") })
        .unwrap();
    let err = node4
        .on("x", |_e: Event, _c: Context| async move { json!("second") })
        .unwrap_err();
    assert_eq!(err.kind(), happen::ErrorKind::DuplicateHandler);
    let v = timeout(T, node4.send(&node4, Event::new("x", ())))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v, "first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_broadcasts_reach_every_matching_node_exactly_once_each() {
    let happen = Happen::new();
    let count = Arc::new(AtomicUsize::new(0));
    let mut nodes = Vec::new();
    for i in 0..10 {
        let n = happen.node(format!("n{i}")).await.unwrap();
        let c = count.clone();
        n.on("tick", move |_e: Event, _c: Context| {
            let c = c.clone();
            async move {
                c.fetch_add(1, Ordering::SeqCst);
            }
        })
        .unwrap();
        nodes.push(n);
    }
    let sender = happen.node("sender").await.unwrap();
    for _ in 0..1_000 {
        sender.broadcast(Event::new("tick", ())).unwrap();
    }
    wait_until("the condition", || count.load(Ordering::SeqCst) >= 10_000).await;
    for n in &nodes {
        wait_until("the condition", || n.stats().completed == 1_000).await;
    }
    assert_eq!(count.load(Ordering::SeqCst), 10_000);
}

/// `NodeOptions::receive_broadcasts(false)`: the node takes none of them — neither its own
/// nor another node's — while direct sends reach it; the listening nodes get every one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_takes_no_broadcasts_gets_none() {
    const N: u64 = 2_000;
    let happen = Happen::new();
    let deaf = happen
        .node_with("deaf", happen::NodeOptions::new().receive_broadcasts(false))
        .await
        .unwrap();
    let ears = [
        happen.node("ear-1").await.unwrap(),
        happen.node("ear-2").await.unwrap(),
    ];
    for n in ears.iter().chain([&deaf]) {
        n.on("tick", |_e: Event, _c: Context| async {}).unwrap();
    }
    for i in 0..N {
        deaf.broadcast(Event::new("tick", i)).unwrap();
        ears[0].broadcast(Event::new("tick", i)).unwrap();
    }
    deaf.send(&deaf, Event::new("tick", "direct"))
        .await
        .unwrap();
    for n in &ears {
        wait_until("every broadcast at the ears", || {
            n.stats().completed == 2 * N
        })
        .await;
    }
    let s = deaf.stats();
    assert_eq!(
        (s.accepted, s.completed),
        (1, 1),
        "only the direct send: {s:?}"
    );
}

/// Who takes a broadcast follows every change between two broadcasts: a handler registered
/// since, a node started since, a node closed since, and a run of another type in between.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receivers_follow_registrations_and_nodes_between_broadcasts() {
    let happen = Happen::new();
    let quiet = |_e: Event, _c: Context| async {};
    let sender = happen.node("sender").await.unwrap();
    let a = happen.node("a").await.unwrap();
    a.on("tick", quiet).unwrap();
    let b = happen.node("b").await.unwrap();
    let done = |n: &Node, want: u64| {
        let n = n.clone();
        async move {
            wait_until("the broadcasts handled", || n.stats().completed == want).await;
        }
    };

    sender.broadcast(Event::new("tick", 1)).unwrap();
    done(&a, 1).await;

    b.on("tick", quiet).unwrap(); // registered since the last broadcast
    sender.broadcast(Event::new("tick", 2)).unwrap();
    done(&a, 2).await;
    done(&b, 1).await;

    b.on("tock", quiet).unwrap();
    sender.broadcast(Event::new("tock", 3)).unwrap(); // another type in between
    done(&b, 2).await;
    assert_eq!(a.stats().accepted, 2, "a has no `tock` handler");

    let c = happen.node("c").await.unwrap(); // started since
    c.on("tick", quiet).unwrap();
    sender.broadcast(Event::new("tick", 4)).unwrap();
    done(&a, 3).await;
    done(&b, 3).await;
    done(&c, 1).await;

    timeout(T, c.close(Duration::from_secs(1))).await.unwrap(); // closed since
    sender.broadcast(Event::new("tick", 5)).unwrap();
    done(&a, 4).await;
    done(&b, 4).await;
    let s = c.stats();
    assert_eq!(
        (s.accepted, s.unobserved_failures),
        (1, 0),
        "a closed node is not offered broadcasts: {s:?}"
    );
}
