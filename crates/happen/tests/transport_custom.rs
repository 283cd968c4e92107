//! A transport written only against the public `Transport` trait, and the inbox entry points
//! transports use for broadcast streams whose producer or subscribers live elsewhere.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use happen::transport::{BroadcastFeed, Inbox, ReplySender, RunHere, StreamItem, Transport};
use happen::{Context, Emitter, Error, ErrorKind, Event, Happen, NodeId};
use serde_json::{Value, json};
use tokio::time::timeout;

const T: Duration = Duration::from_secs(10);

/// Two local nodes, each telling `count` events of `event_type` to `node` in a task of its own.
fn tellers(
    happen: &Happen,
    node: &happen::Node,
    event_type: &'static str,
    count: u64,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..2)
        .map(|s| {
            let (happen, node) = (happen.clone(), node.clone());
            tokio::spawn(async move {
                let me = happen.node(format!("teller-{s}")).await.unwrap();
                for i in 0..count {
                    me.tell(&node, Event::new(event_type, i)).unwrap();
                    if i % 32 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            })
        })
        .collect()
}

/// The node behind `inbox` accepted and completed `total` events and has none running or
/// waiting.
fn at_rest(inbox: &Inbox, total: u64) {
    let s = inbox.stats();
    assert_eq!(
        (s.accepted, s.completed, s.active, s.queued),
        (total, total, 0, 0)
    );
}

/// Delivers `events` under held wakes, then starts what it can in this task (as a transport's
/// receive task does): how many flows `run_here` started.
fn deliver_and_run(
    inbox: &Inbox,
    here: &mut RunHere,
    events: impl IntoIterator<Item = Event>,
) -> usize {
    let _held = inbox.hold_wakes();
    for event in events {
        inbox.deliver(event, None).unwrap();
    }
    inbox.run_here(here, 64)
}

/// Waits (at most [`T`]) until the node behind `inbox` has completed `n` flows.
async fn completed(inbox: &Inbox, n: u64, what: &str) {
    timeout(T, async {
        while inbox.stats().completed < n {
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what}: {} of {n} completed", inbox.stats().completed));
}

/// Delivers in process, and lets the test reach every node's inbox.
#[derive(Clone, Default)]
struct Capture {
    inboxes: Arc<Mutex<HashMap<NodeId, Inbox>>>,
}

impl Capture {
    /// A `Happen` instance on a fresh `Capture`.
    fn happen() -> (Capture, Happen) {
        let transport = Capture::default();
        let happen = Happen::builder()
            .transport(transport.clone())
            .build()
            .unwrap();
        (transport, happen)
    }

    fn inbox(&self, id: &str) -> Inbox {
        self.inboxes.lock().unwrap()[id].clone()
    }
}

impl Transport for Capture {
    fn attach(&self, inbox: Inbox) -> BoxFuture<'_, happen::Result<()>> {
        self.inboxes
            .lock()
            .unwrap()
            .insert(inbox.id().clone(), inbox);
        Box::pin(async { Ok(()) })
    }

    fn detach(&self, node: &NodeId) -> BoxFuture<'_, ()> {
        self.inboxes.lock().unwrap().remove(node);
        Box::pin(async {})
    }

    fn send(
        &self,
        target: &NodeId,
        event: Event,
        reply: Option<ReplySender>,
    ) -> happen::Result<()> {
        let inbox = self.inboxes.lock().unwrap().get(target).cloned();
        match inbox {
            Some(i) => i.deliver(event, reply),
            None => Err(Error::new(
                ErrorKind::UnknownNode,
                format!("no node `{target}`"),
            )),
        }
    }

    fn broadcast(&self, event: Event) -> happen::Result<()> {
        let inboxes: Vec<Inbox> = self.inboxes.lock().unwrap().values().cloned().collect();
        for i in inboxes.iter().filter(|i| i.accepts(event.event_type())) {
            i.deliver(event.clone(), None)?;
        }
        Ok(())
    }
}

#[tokio::test]
async fn sends_go_through_a_custom_transport() {
    let (transport, happen) = Capture::happen();
    let echo = happen.node("echo").await.unwrap();
    echo.on("echo", |e: Event, _c: Context| async move {
        e.payload().clone()
    })
    .unwrap();
    let client = happen.node("client").await.unwrap();
    let v = timeout(T, client.send("echo", Event::new("echo", json!(7))))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v, 7);
    let err = timeout(T, client.send("nobody", Event::new("echo", ())))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::UnknownNode);
    assert!(transport.inbox("echo").accepts("echo"));
    assert!(!transport.inbox("echo").streams("echo"));
}

#[tokio::test]
async fn a_stream_produced_elsewhere_reaches_a_local_subscriber() {
    let (transport, happen) = Capture::happen();
    let dash = happen.node("dash").await.unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let tx = Mutex::new(Some(tx));
    dash.on("metrics", move |_e: Event, ctx: Context| {
        let tx = tx.lock().unwrap().take();
        async move {
            let mut items = ctx.items().expect("the event carries a stream");
            let mut seen = Vec::new();
            while let Some(item) = items.next().await {
                seen.push(item?);
            }
            let end = items.final_value().cloned();
            if let Some(tx) = tx {
                let _ = tx.send((seen, end));
            }
            Ok::<_, Error>(())
        }
    })
    .unwrap();

    let feed = BroadcastFeed::new(16);
    transport
        .inbox("dash")
        .deliver_with_items(Event::new("metrics", ()), feed.subscribe())
        .unwrap();
    feed.item(json!(1));
    feed.lagged(3);
    feed.item(json!(5));
    feed.end(Ok(json!("end")));
    let (seen, end) = timeout(T, rx).await.unwrap().unwrap();
    assert_eq!(
        seen,
        [
            StreamItem::Item(json!(1)),
            StreamItem::Lagged(3),
            StreamItem::Item(json!(5))
        ]
    );
    assert_eq!(end, Some(json!("end")));
}

#[tokio::test]
async fn a_local_producer_streams_to_the_transport() {
    let (transport, happen) = Capture::happen();
    let monitor = happen.node("monitor").await.unwrap();
    monitor
        .on(
            "metrics",
            |_e: Event, _c: Context, emit: Emitter| async move {
                for cpu in [10, 20, 30] {
                    emit.emit(cpu).await?;
                }
                Ok::<_, Error>("done")
            },
        )
        .unwrap();
    let inbox = transport.inbox("monitor");
    assert!(inbox.streams("metrics"));
    let mut tap = inbox.deliver_producer(Event::new("metrics", ())).unwrap();
    let mut seen = Vec::new();
    while let Some(item) = timeout(T, tap.next()).await.unwrap() {
        match item.unwrap() {
            StreamItem::Item(v) => seen.push(v),
            StreamItem::Lagged(n) => panic!("the tap lagged by {n}"),
        }
    }
    assert_eq!(seen, [json!(10), json!(20), json!(30)]);
    assert_eq!(tap.final_value(), Some(&Value::from("done")));
}

/// While a transport holds a node's wakes, what it delivers waits for a driver; letting go
/// wakes one, and everything delivered meanwhile runs.
#[tokio::test]
async fn held_wakes_start_flows_when_released() {
    let (transport, happen) = Capture::happen();
    let node = happen.node("n").await.unwrap();
    node.on("tick", |_e: Event, _c: Context| async {}).unwrap();
    let inbox = transport.inbox("n");
    let held = inbox.hold_wakes();
    for i in 0..10 {
        inbox.deliver(Event::new("tick", i), None).unwrap();
    }
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    assert_eq!(inbox.stats().completed, 0, "no driver was woken while held");
    drop(held);
    completed(&inbox, 10, "the release woke a driver for all ten").await;
}

/// Runs of deliveries under held wakes from four tasks, while two local senders tell the
/// same node: no event waits for a wake that never comes (a sender that finds the wakes
/// held just as the last holder lets go wakes the driver itself).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_wakes_lose_no_event_under_concurrent_senders() {
    const RUNS: u64 = 500;
    const RUN: u64 = 16;
    const TELLS: u64 = 8_000;
    let (transport, happen) = Capture::happen();
    let node = happen
        .node_with("n", happen::NodeOptions::new().queue_limit(1_000_000))
        .await
        .unwrap();
    node.on("tick", |_e: Event, _c: Context| async {}).unwrap();
    let inbox = transport.inbox("n");
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let inbox = inbox.clone();
        tasks.push(tokio::spawn(async move {
            for r in 0..RUNS {
                {
                    let _held = inbox.hold_wakes();
                    for i in 0..RUN {
                        inbox
                            .deliver(Event::new("tick", r * RUN + i), None)
                            .unwrap();
                    }
                }
                tokio::task::yield_now().await;
            }
        }));
    }
    tasks.extend(tellers(&happen, &node, "tick", TELLS));
    for t in tasks {
        timeout(T, t).await.unwrap().unwrap();
    }
    let total = 4 * RUNS * RUN + 2 * TELLS;
    completed(&inbox, total, "every delivered event ran").await;
    at_rest(&inbox, total);
}

/// A receive task that runs flows itself (`Inbox::run_here`) after each run of deliveries,
/// while the node's drivers and two local senders work on the same node: every flow starts
/// in admission order (one in five waits and moves to its own task, two slots force a queue
/// and slot hand-overs), none is lost, and the counters end at rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flows_run_here_start_in_admission_order_beside_drivers_and_senders() {
    const N: u64 = 20_000;
    const RUN: u64 = 32;
    const TELLS: u64 = 4_000;
    let (transport, happen) = Capture::happen();
    let node = happen
        .node_with(
            "n",
            happen::NodeOptions::new()
                .max_concurrent(2)
                .queue_limit(1_000_000),
        )
        .await
        .unwrap();
    let started: Arc<Mutex<Vec<u64>>> = Arc::default();
    let s = started.clone();
    node.on("tick", move |e: Event, _c: Context| {
        let i = e.payload().as_u64().unwrap();
        s.lock().unwrap().push(i); // at the start, before any await
        async move {
            if i.is_multiple_of(5) {
                tokio::task::yield_now().await;
            }
        }
    })
    .unwrap();
    node.on("other", |_e: Event, _c: Context| async {}).unwrap();
    let inbox = transport.inbox("n");
    let receiver = {
        let inbox = inbox.clone();
        tokio::spawn(async move {
            let mut here = RunHere::default();
            let mut ran_here = 0;
            for r in 0..N / RUN {
                {
                    let _held = inbox.hold_wakes();
                    for i in 0..RUN {
                        inbox
                            .deliver(Event::new("tick", r * RUN + i), None)
                            .unwrap();
                    }
                    ran_here += inbox.run_here(&mut here, 64);
                }
                tokio::task::yield_now().await;
            }
            ran_here
        })
    };
    let senders = tellers(&happen, &node, "other", TELLS);
    let ran_here = timeout(T, receiver).await.unwrap().unwrap();
    for t in senders {
        timeout(T, t).await.unwrap().unwrap();
    }
    let total = N + 2 * TELLS;
    completed(&inbox, total, "every delivered event ran").await;
    assert!(ran_here > 0, "the receive task started no flow itself");
    assert_eq!(
        *started.lock().unwrap(),
        (0..N).collect::<Vec<_>>(),
        "starts out of admission order"
    );
    at_rest(&inbox, total);
}

/// A handler that blocks its thread holds up a task running flows itself once: the call
/// stops after that flow (and the one it handed its slot to), the next 64 calls start
/// nothing (the drivers run the rest), and then the task runs flows again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_here_leaves_a_blocking_handler_to_the_drivers() {
    let (transport, happen) = Capture::happen();
    let node = happen.node("n").await.unwrap();
    node.on("tick", |e: Event, _c: Context| {
        if e.payload()["slow"] == json!(true) {
            std::thread::sleep(Duration::from_millis(5)); // blocks its thread
        }
        async {}
    })
    .unwrap();
    let inbox = transport.inbox("n");
    let mut here = RunHere::default();
    let first = deliver_and_run(
        &inbox,
        &mut here,
        (0..10).map(|_| Event::new("tick", json!({"slow": true}))),
    ); // the rest left to a driver, woken for them
    // the slow flow, and the one its slot went to straight away (an event was waiting)
    assert!(
        (1..=2).contains(&first),
        "the call went on after a slow flow: {first} started"
    );
    for _ in 0..64 {
        assert_eq!(
            inbox.run_here(&mut here, 64),
            0,
            "ran flows while backing off"
        );
    }
    completed(&inbox, 10, "the drivers ran the rest").await;
    let again = deliver_and_run(
        &inbox,
        &mut here,
        (0..5).map(|_| Event::new("tick", json!({"slow": false}))),
    );
    // Usually all five; fewer only if this thread was preempted past the 250 µs slice
    // (a loaded machine), after which the call stops, as it should. The first one always
    // starts here.
    assert!(
        (1..=5).contains(&again),
        "the task did not take flows back after backing off: {again} started"
    );
    completed(&inbox, 15, "every event ran").await;
}

/// One `RunHere` used for two nodes whose handlers share an event type (and so a handler
/// lookup key): each event runs its own node's handler.
#[tokio::test]
async fn one_run_here_for_two_nodes_runs_each_nodes_own_handler() {
    let (transport, happen) = Capture::happen();
    let ran: Arc<Mutex<Vec<&'static str>>> = Arc::default();
    for name in ["a", "b"] {
        let node = happen.node(name).await.unwrap();
        let ran = ran.clone();
        node.on("tick", move |_e: Event, _c: Context| {
            ran.lock().unwrap().push(name);
            async {}
        })
        .unwrap();
    }
    let mut here = RunHere::default();
    for name in ["a", "b", "a", "b"] {
        let inbox = transport.inbox(name);
        let started = deliver_and_run(&inbox, &mut here, [Event::new("tick", ())]);
        assert_eq!(started, 1);
    }
    assert_eq!(*ran.lock().unwrap(), ["a", "b", "a", "b"]);
}
