//! Completion records (`transport.nats.completion_records`, `WIRE.md` "Completion records"):
//! a node publishes `<prefix>.completed.<node>` when the flow of a tell or a broadcast it took
//! ends — always, only while a watcher beats on `<prefix>.watch`, or never (the default).

mod common;

use std::time::Duration;

use common::{instance_with, round_trip, within};
use futures::StreamExt;
use happen::{Context, Error, ErrorKind, Event, Happen, Node};
use happen_nats::completion::Completion;
use happen_nats::{CompletionRecords, NatsConfig};
use serde_json::json;
use test_support::NatsServer;

fn config(url: &str, records: CompletionRecords) -> NatsConfig {
    let mut c = NatsConfig::with_server(url);
    c.completion_records = records;
    c
}

/// `audit` (30 ms of work, fails for `bad`), `mirror-a` and `mirror-b` (broadcast receivers)
/// and `echo` (answers requests), all in one process.
async fn workers(h: &Happen) -> Node {
    let audit = h.node("audit").await.unwrap();
    audit
        .on("audit", |e: Event, _c: Context| async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            if e.payload() == &json!("bad") {
                return Err(Error::new(ErrorKind::Handler, "refused").with_code("nope"));
            }
            Ok(json!(true))
        })
        .unwrap();
    for id in ["mirror-a", "mirror-b"] {
        let n = h.node(id).await.unwrap();
        n.on("sync", |_e: Event, _c: Context| async move { 1 })
            .unwrap();
    }
    let echo = h.node("echo").await.unwrap();
    echo.on("ping", |e: Event, _c: Context| async move {
        e.payload().clone()
    })
    .unwrap();
    audit
}

async fn next_record(sub: &mut async_nats::Subscriber) -> Completion {
    let msg = within(10, "a completion record", sub.next())
        .await
        .expect("the subscription ended");
    Completion::parse(&msg.payload).unwrap()
}

/// A request to `echo` answered: the worker process read and handled every message before it.
async fn request_round_trip(client: &Node) {
    within(10, "a request", client.send("echo", Event::new("ping", 1)))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tells_and_broadcasts_end_with_a_record_per_receiver() {
    let server = NatsServer::start();
    let (worker, tw) = instance_with(config(&server.url(), CompletionRecords::Always)).await;
    let audit = workers(&worker).await;
    let (sender, ts) = instance_with(config(&server.url(), CompletionRecords::Off)).await;
    let mut records = ts.client().subscribe("happen.completed.>").await.unwrap();
    round_trip(ts.client()).await;
    let client = sender.node("client").await.unwrap();

    client.tell("audit", Event::new("audit", "fine")).unwrap();
    let r = next_record(&mut records).await;
    assert!(r.event_id.starts_with("evt-"), "{r:?}");
    assert_eq!(r.node, "audit");
    assert_eq!((r.kind.as_str(), r.outcome.as_str()), ("tell", "ok"));
    assert_eq!(r.event_type, "audit");
    assert!(r.error.is_none());
    assert!(
        r.ended_us - r.started_us >= 30_000,
        "the flow took 30 ms: {r:?}"
    );
    assert!(!r.replica.is_empty() && !r.correlation_id.is_empty());

    let corr = happen::CorrelationId::new();
    client
        .tell(
            "audit",
            Event::new("audit", "bad").with_correlation_id(corr.clone()),
        )
        .unwrap();
    let r = next_record(&mut records).await;
    assert_eq!(
        (r.outcome.as_str(), r.correlation_id.as_str()),
        ("error", corr.to_string().as_str())
    );
    let e = r.error.expect("the error");
    assert_eq!(
        (e.kind.as_str(), e.code.as_deref()),
        ("handler", Some("nope"))
    );
    assert!(e.message.contains("refused"), "{e:?}");
    // still counted at the node as a failure nobody awaited
    assert_eq!(audit.stats().unobserved_failures, 1);

    client.broadcast(Event::new("sync", ())).unwrap();
    let mut nodes = [
        next_record(&mut records).await,
        next_record(&mut records).await,
    ];
    nodes.sort_by(|a, b| a.node.cmp(&b.node));
    for (r, node) in nodes.iter().zip(["mirror-a", "mirror-b"]) {
        assert_eq!(
            (
                r.event_id.as_str(),
                r.node.as_str(),
                r.kind.as_str(),
                r.outcome.as_str()
            ),
            (nodes[0].event_id.as_str(), node, "broadcast", "ok")
        );
    }
    // requests get none: their reply is their completion
    request_round_trip(&client).await;
    let more = tokio::time::timeout(Duration::from_millis(300), records.next()).await;
    assert!(more.is_err(), "a record for a request: {more:?}");
    assert_eq!(tw.stats().completions_published, 4);
    worker.shutdown(Duration::from_secs(5)).await;
    sender.shutdown(Duration::from_secs(5)).await;
}

/// The default publishes nothing; "watched" publishes only after a watcher's beat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_are_off_by_default_and_watched_only_while_a_watcher_beats() {
    let server = NatsServer::start();
    let (off, t_off) = instance_with(NatsConfig::with_server(server.url())).await;
    let audit = workers(&off).await;
    let (sender, ts) = instance_with(NatsConfig::with_server(server.url())).await;
    let mut records = ts.client().subscribe("happen.completed.>").await.unwrap();
    round_trip(ts.client()).await;
    let client = sender.node("client").await.unwrap();
    client.tell("audit", Event::new("audit", "fine")).unwrap();
    client.broadcast(Event::new("sync", ())).unwrap();
    // the tell ran (it held `audit` 30 ms; the request after it was answered)
    common_eventually(|| audit.stats().completed == 1).await;
    request_round_trip(&client).await;
    // the records would have come on the same connection as the reply, before it
    let none = tokio::time::timeout(Duration::from_millis(300), records.next()).await;
    assert!(none.is_err(), "a record with records off: {none:?}");
    assert_eq!(t_off.stats().completions_published, 0);
    off.shutdown(Duration::from_secs(5)).await;

    let (watched, tw) = instance_with(config(&server.url(), CompletionRecords::Watched)).await;
    workers(&watched).await;
    client.tell("audit", Event::new("audit", "fine")).unwrap();
    request_round_trip(&client).await;
    let none = tokio::time::timeout(Duration::from_millis(300), records.next()).await;
    assert!(none.is_err(), "a record before any watcher: {none:?}");
    // a watcher beats: records follow (the beat and the tell travel on different
    // subscriptions of the worker, so a tell may overtake the first beat: tell until one
    // is recorded)
    let watch = happen_nats::completion::watch_subject("happen");
    let got = within(10, "a record while watched", async {
        loop {
            ts.client().publish(watch.clone(), "".into()).await.unwrap();
            client.tell("audit", Event::new("audit", "fine")).unwrap();
            if let Ok(Some(m)) =
                tokio::time::timeout(Duration::from_millis(200), records.next()).await
            {
                return Completion::parse(&m.payload).unwrap();
            }
        }
    })
    .await;
    assert_eq!((got.node.as_str(), got.kind.as_str()), ("audit", "tell"));
    assert!(tw.stats().completions_published >= 1);
    watched.shutdown(Duration::from_secs(5)).await;
    sender.shutdown(Duration::from_secs(5)).await;
}

async fn common_eventually(mut check: impl FnMut() -> bool) {
    within(10, "the tell's flow", async {
        while !check() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}
