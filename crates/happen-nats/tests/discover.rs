//! Discovery (`<prefix>.discover`, see `WIRE.md`): every process that serves nodes answers
//! with its nodes, their limits and live counters; the requester merges what it gathers.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{instance, within};
use futures::StreamExt;
use happen::{Context, Event, NodeOptions};
use happen_nats::discover::{self, ProcessInfo};
use test_support::{NatsServer, NatsServerOptions};

/// Generous: on a loaded machine one process may answer well after another.
const QUIET: Duration = Duration::from_secs(2);
use tokio::sync::Semaphore;

fn node<'a>(processes: &'a [ProcessInfo], id: &str) -> Vec<&'a discover::NodeInfo> {
    processes
        .iter()
        .flat_map(|p| p.nodes.iter())
        .filter(|n| n.id == id)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_process_answers_with_limits_and_live_queue() {
    let server = NatsServer::start();
    let (a, _) = instance(&server.url()).await;
    let (b, _) = instance(&server.url()).await;
    let (c, tc) = instance(&server.url()).await;
    // `orders` has two replicas; `billing` one, loaded below
    for h in [&a, &b] {
        h.node("orders").await.unwrap();
    }
    let gate = Arc::new(Semaphore::new(0));
    let billing = b
        .node_with(
            "billing",
            NodeOptions::new().max_concurrent(2).queue_limit(10),
        )
        .await
        .unwrap();
    let g = gate.clone();
    billing
        .on("charge", move |_e: Event, _c: Context| {
            let g = g.clone();
            async move {
                g.acquire().await.unwrap().forget();
                "charged"
            }
        })
        .unwrap();
    let client = c.node("client").await.unwrap();
    let replies: Vec<_> = (0..7)
        .map(|_| client.send("billing", Event::new("charge", ())))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while billing.stats().queued < 5 {
        assert!(Instant::now() < deadline, "billing never queued 5 events");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let found = within(20, "discover", tc.discover(Duration::from_secs(10), QUIET))
        .await
        .unwrap();
    assert_eq!(found.len(), 3, "{found:#?}");
    assert_eq!(node(&found, "orders").len(), 2, "two replicas of orders");
    assert_eq!(node(&found, "client").len(), 1);
    let billing_info = node(&found, "billing");
    assert_eq!(billing_info.len(), 1);
    let info = billing_info[0];
    assert_eq!((info.max_concurrent, info.queue_limit), (2, 10));
    assert_eq!(info.high_water, 8, "⌈0.8 × 10⌉");
    assert_eq!(info.queue_strategy, "fifo");
    assert_eq!((info.active, info.queued), (2, 5));
    assert_eq!(info.accepted, 7);
    assert!(
        !info.under_pressure,
        "5 queued is below the high-water mark 8"
    );
    // the answering process is named by the same replica id as its pressure reports
    assert!(
        found
            .iter()
            .all(|p| !p.replica.is_empty() && p.name == "happen")
    );

    gate.add_permits(7);
    for r in replies {
        assert_eq!(within(10, "reply", r).await.unwrap(), "charged");
    }
    let after = tc.discover(Duration::from_secs(10), QUIET).await.unwrap();
    let info = node(&after, "billing")[0].clone();
    assert_eq!((info.active, info.queued, info.completed), (0, 0, 7));
    assert_eq!(info.peak_queued, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_without_nodes_does_not_answer() {
    let server = NatsServer::start();
    let (_idle, _) = instance(&server.url()).await;
    let (_asker, t) = instance(&server.url()).await;
    let found = t.discover(Duration::from_millis(500), QUIET).await.unwrap();
    assert!(found.is_empty(), "{found:#?}");
}

/// The answer as a non-happen requester (`nats req happen.discover ''`) sees it: camelCase
/// JSON and the `Happen-Replica` header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_answer_on_the_wire() {
    let server = NatsServer::start();
    let (h, _) = instance(&server.url()).await;
    h.node_with("orders", NodeOptions::new().max_concurrent(3))
        .await
        .unwrap();
    let raw = async_nats::connect(server.url()).await.unwrap();
    let msg = within(
        10,
        "raw discovery answer",
        raw.request("happen.discover", "".into()),
    )
    .await
    .unwrap();
    let replica = msg
        .headers
        .as_ref()
        .and_then(|h| h.get("Happen-Replica"))
        .map(|v| v.as_str().to_owned())
        .expect("Happen-Replica header");
    let body: serde_json::Value = serde_json::from_slice(&msg.payload).unwrap();
    assert_eq!(body["replica"], replica.as_str());
    let n = &body["nodes"][0];
    assert_eq!(n["id"], "orders");
    assert_eq!(n["maxConcurrent"], 3);
    for key in [
        "queueLimit",
        "highWater",
        "queueStrategy",
        "active",
        "queued",
        "peakQueued",
        "underPressure",
        "accepted",
        "rejected",
        "completed",
        "failed",
        "unobservedFailures",
        "displaced",
        "cancelled",
        "engineFaults",
        "queueWaitP50Us",
        "queueWaitP99Us",
    ] {
        assert!(n.get(key).is_some(), "missing {key} in {n}");
    }
}

/// A process whose nodes do not fit in one message answers in several; the requester merges
/// them into one process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_nodes_are_split_over_messages_and_merged() {
    let server = NatsServer::start_with(NatsServerOptions::new().with_max_payload(4096));
    let (h, t) = instance(&server.url()).await;
    for i in 0..60 {
        h.node(format!("worker-{i:02}")).await.unwrap();
    }
    // count the raw answers: more than one message
    let raw = async_nats::connect(server.url()).await.unwrap();
    let inbox = raw.new_inbox();
    let mut answers = raw.subscribe(inbox.clone()).await.unwrap();
    raw.publish_with_reply("happen.discover", inbox, "".into())
        .await
        .unwrap();
    let mut messages = 0;
    let mut nodes = 0;
    while nodes < 60 {
        let msg = within(10, "answers", answers.next()).await.unwrap();
        assert!(msg.payload.len() <= 4096);
        let info: ProcessInfo = serde_json::from_slice(&msg.payload).unwrap();
        nodes += info.nodes.len();
        messages += 1;
    }
    assert_eq!(nodes, 60);
    assert!(messages > 1, "60 nodes fit in one message of 4096 bytes?");

    let found = t.discover(Duration::from_secs(10), QUIET).await.unwrap();
    assert_eq!(found.len(), 1);
    let ids: Vec<_> = found[0].nodes.iter().map(|n| n.id.clone()).collect();
    let expected: Vec<_> = (0..60).map(|i| format!("worker-{i:02}")).collect();
    assert_eq!(ids, expected, "merged and sorted");
}

/// A node holding thousands of queued requests from another process is described with its
/// exact queue depth and its pressure, within the requester's usual wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_thousands_queued_is_described_promptly() {
    const N: usize = 5_000;
    let server = NatsServer::start();
    let (serving, _) = instance(&server.url()).await;
    let (asking, t) = instance(&server.url()).await;
    let gate = Arc::new(Semaphore::new(0));
    let busy = serving
        .node_with("busy", NodeOptions::new().max_concurrent(1).queue_limit(N))
        .await
        .unwrap();
    let g = gate.clone();
    busy.on("work", move |_e: Event, _c: Context| {
        let g = g.clone();
        async move { g.acquire().await.unwrap().forget() }
    })
    .unwrap();
    let client = asking.node("client").await.unwrap();
    let replies: Vec<_> = (0..N)
        .map(|_| client.send("busy", Event::new("work", ())))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while busy.stats().queued < N - 1 {
        assert!(Instant::now() < deadline, "queued {}", busy.stats().queued);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let found = within(20, "discover", t.discover(Duration::from_secs(10), QUIET))
        .await
        .unwrap();
    let info = node(&found, "busy")[0].clone();
    assert_eq!((info.active, info.queued), (1, N - 1));
    assert!(
        info.under_pressure,
        "{} queued is over the high-water mark",
        N - 1
    );
    gate.add_permits(N);
    for r in futures::future::join_all(replies).await {
        r.unwrap();
    }
}

/// Queue waits and (for a node that times them) handler times travel as cumulative log2
/// histograms; an answer of an older process, without them, reads as empty histograms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn histograms_of_queue_waits_and_handler_times_are_discovered() {
    let server = NatsServer::start();
    let (a, t) = instance(&server.url()).await;
    let gate = Arc::new(Semaphore::new(0));
    let timed = a
        .node_with(
            "timed",
            NodeOptions::new()
                .max_concurrent(1)
                .queue_limit(10)
                .handler_timing(true),
        )
        .await
        .unwrap();
    let g = gate.clone();
    timed
        .on("job", move |_e: Event, _c: Context| {
            let g = g.clone();
            async move {
                g.acquire().await.unwrap().forget();
            }
        })
        .unwrap();
    a.node("untimed").await.unwrap();
    let client = a.node("client").await.unwrap();
    // one runs, three wait for it
    let replies: Vec<_> = (0..4)
        .map(|_| client.send("timed", Event::new("job", ())))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while timed.stats().queued < 3 {
        assert!(Instant::now() < deadline, "three jobs never queued");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    gate.add_permits(4);
    for r in replies {
        within(10, "the jobs", r).await.unwrap();
    }
    let found = t.discover(Duration::from_secs(10), QUIET).await.unwrap();
    let timed = node(&found, "timed")[0];
    assert_eq!(
        timed.handler_time_buckets.iter().sum::<u64>(),
        4,
        "{timed:?}"
    );
    assert_eq!(timed.queue_wait_buckets.iter().sum::<u64>(), 3, "{timed:?}");
    assert!(timed.handler_time_buckets.last().is_some_and(|&n| n > 0));
    let untimed = node(&found, "untimed")[0];
    assert!(untimed.handler_time_buckets.is_empty(), "{untimed:?}");

    let older: ProcessInfo = serde_json::from_str(
        r#"{"replica": "r", "name": "n", "nodes": [{"id": "x", "queueWaitP99Us": 5}]}"#,
    )
    .unwrap();
    assert!(older.nodes[0].queue_wait_buckets.is_empty());
    assert!(older.nodes[0].handler_time_buckets.is_empty());
    // and an answer without the histograms leaves them out
    let json = serde_json::to_value(&older).unwrap();
    assert!(
        json["nodes"][0].get("handlerTimeBuckets").is_none(),
        "{json}"
    );
}

/// Every answer carries the process's transport counters (`transport`, `NatsStats` by their
/// camelCase names): a process that sent 3 requests and a broadcast says so; an answer of an
/// older process, without them, reads as none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_carry_the_transport_counters() {
    let server = NatsServer::start();
    let (worker, _) = instance(&server.url()).await;
    let (asker, ta) = instance(&server.url()).await;
    let echo = worker.node("echo").await.unwrap();
    echo.on("ping", |e: Event, _c: Context| async move {
        e.payload().clone()
    })
    .unwrap();
    let client = asker.node("client").await.unwrap();
    for i in 0..3 {
        within(10, "a request", client.send("echo", Event::new("ping", i)))
            .await
            .unwrap();
    }
    client.broadcast(Event::new("nobody.listens", ())).unwrap();
    let found = within(20, "discover", ta.discover(Duration::from_secs(10), QUIET))
        .await
        .unwrap();
    let of = |name: &str| {
        found
            .iter()
            .find(|p| p.nodes.iter().any(|n| n.id == name))
            .unwrap_or_else(|| panic!("no process serves {name}: {found:#?}"))
    };
    let (asking, serving) = (of("client"), of("echo"));
    assert_eq!(asking.transport.get("sent"), Some(&3), "{asking:#?}");
    assert_eq!(asking.transport.get("broadcasts"), Some(&1), "{asking:#?}");
    assert_eq!(serving.transport.get("replies"), Some(&3), "{serving:#?}");
    for key in [
        "disconnects",
        "failedReplicaGone",
        "answersReplayed",
        "rejectedWhileDisconnected",
    ] {
        assert_eq!(serving.transport.get(key), Some(&0), "{key}: {serving:#?}");
    }
    // they read back as `NatsStats`
    let stats: happen_nats::NatsStats =
        serde_json::from_value(serde_json::to_value(&serving.transport).unwrap()).unwrap();
    assert_eq!(stats.replies, 3);

    let older: ProcessInfo =
        serde_json::from_str(r#"{"replica": "r", "name": "n", "nodes": [{"id": "x"}]}"#).unwrap();
    assert!(older.transport.is_empty());
    let json = serde_json::to_value(&older).unwrap();
    assert!(json.get("transport").is_none(), "{json}");
}
