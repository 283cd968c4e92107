//! Stored state on NATS JetStream key-value (real nats-server with JetStream): it survives a
//! restart and is the raw JSON in the layout NATS key-value (and the TS reference) uses;
//! two processes' concurrent increments are all applied (conflicts retried); history with
//! causal context, `when`, history depth; watch; views and global state across processes.

mod common;

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use common::within;
use futures::StreamExt;
use happen::{Config, Context, CorrelationId, ErrorKind, Event, EventId, Happen, Json};
use happen_nats::{NatsConfig, NatsTransport};
use serde::{Deserialize, Serialize};
use test_support::{NatsServer, NatsServerOptions};

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
struct Stock {
    count: i64,
}

fn server() -> NatsServer {
    NatsServer::start_with(NatsServerOptions::new().with_jetstream())
}

/// A "process": its own connection and instance, with `config` (`[state]` settings).
async fn process(url: &str, config: Config) -> Happen {
    let transport = NatsTransport::connect(NatsConfig::with_server(url))
        .await
        .expect("connect to nats");
    Happen::builder()
        .config(config)
        .transport(transport)
        .build()
        .expect("build happen")
}

/// A node whose `add` handler adds the payload to its stored count and answers the event id.
async fn inventory(happen: &Happen, id: &str) -> happen::Node {
    let node = happen.node(id).await.unwrap();
    node.on("add", |Json(n): Json<i64>, ctx: Context| async move {
        ctx.stored::<Stock>()
            .update(|s| s.count += n)
            .await
            .map(|_| ctx.event().id().to_string())
    })
    .unwrap();
    node
}

async fn js(url: &str) -> jetstream::Context {
    jetstream::new(async_nats::connect(url).await.unwrap())
}

/// State written by one process is there after it stopped, for a new process; the bucket is
/// `KV_node-<id>` laid out as NATS key-value lays it out, the value is the raw JSON (what a TS
/// node reads), the causal context is in the headers, and async-nats' key-value API reads it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_survives_a_restart_as_raw_json() {
    let server = server();
    let url = server.url();
    let first = process(&url, Config::default()).await;
    let node = inventory(&first, "inventory").await;
    let mut last_id = String::new();
    for n in [5, 3, -1] {
        let id = within(10, "add", node.send(&node, Event::new("add", n))).await;
        last_id = id.unwrap().as_str().unwrap().to_owned();
    }
    within(10, "shutdown", first.shutdown(Duration::from_secs(5))).await;
    drop(first);

    let second = process(&url, Config::default()).await;
    let node = inventory(&second, "inventory").await;
    let v = within(10, "get", node.stored::<Stock>().get())
        .await
        .unwrap();
    assert_eq!(v.value.count, 7);
    assert_eq!(v.revision, 3);

    let js = js(&url).await;
    let stream = js.get_stream("KV_node-inventory").await.unwrap();
    let c = &stream.cached_info().config;
    assert_eq!(c.subjects, ["$KV.node-inventory.>"]);
    assert_eq!(c.max_messages_per_subject, 64);
    assert!(c.allow_rollup && c.deny_delete && !c.deny_purge && c.allow_direct);
    assert_eq!(c.discard, jetstream::stream::DiscardPolicy::New);
    let raw = stream
        .direct_get_last_for_subject("$KV.node-inventory.state")
        .await
        .unwrap();
    assert_eq!(&raw.payload[..], br#"{"count":7}"#);
    assert_eq!(
        raw.headers.get("Happen-Event-Id").map(|v| v.as_str()),
        Some(last_id.as_str())
    );
    assert_eq!(
        raw.headers.get("Happen-Event-Type").map(|v| v.as_str()),
        Some("add")
    );
    // async-nats' own key-value reader (what nats.js' `js.views.kv` is in TS) reads it
    let kv = js.get_key_value("node-inventory").await.unwrap();
    let value = kv.get("state").await.unwrap().unwrap();
    assert_eq!(&value[..], br#"{"count":7}"#);

    // an id outside the bucket characters is escaped
    let dotted = second.node("shop.orders").await.unwrap();
    dotted
        .stored::<Stock>()
        .update(|s| s.count = 1)
        .await
        .unwrap();
    js.get_stream("KV_node-_shop_2Eorders").await.unwrap();
    second.shutdown(Duration::from_secs(5)).await;
}

/// Two processes each apply 500 concurrent increments to one node's state: exactly 1,000;
/// conflicts happened and were retried; a stale `set_if_revision` is a conflict.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_lose_no_increment() {
    let server = server();
    let url = server.url();
    let a = process(&url, Config::default()).await;
    let b = process(&url, Config::default()).await;
    let na = a.node("counter").await.unwrap();
    let nb = b.node("counter").await.unwrap();
    // both processes have the bucket before the race, so the race is on the key
    na.stored::<Stock>().get().await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..1000 {
        let s = if i % 2 == 0 { &na } else { &nb }.stored::<Stock>();
        tasks.push(tokio::spawn(
            async move { s.update(|c| c.count += 1).await },
        ));
    }
    for t in tasks {
        within(60, "increment", t).await.unwrap().unwrap();
    }
    let v = b.view::<Stock>("counter").await.unwrap().unwrap();
    assert_eq!(v.value.count, 1000);
    let (ca, cb) = (
        na.stored::<Stock>().conflicts(),
        nb.stored::<Stock>().conflicts(),
    );
    assert!(ca + cb > 0, "two processes writing one key must conflict");
    eprintln!("conflicts retried: {ca} + {cb}");

    let err = na
        .stored::<Stock>()
        .set_if_revision(&Stock { count: 0 }, v.revision - 1)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    na.stored::<Stock>()
        .set_if_revision(&Stock { count: 0 }, v.revision)
        .await
        .unwrap();
    assert_eq!(
        a.view::<Stock>("counter")
            .await
            .unwrap()
            .unwrap()
            .value
            .count,
        0
    );
    a.shutdown(Duration::from_secs(5)).await;
    b.shutdown(Duration::from_secs(5)).await;
}

/// Five updates from events e1..e5: five snapshots with their event ids, `when(e3)` is the
/// state after e3, a correlation predicate selects the right ones; 70 updates keep 64; a
/// node pattern's history depth is the bucket's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_when_and_depth() {
    let server = server();
    let url = server.url();
    let config = Config::from_toml_str("[state.patterns.\"small-*\"]\nhistory = 3").unwrap();
    let happen = process(&url, config).await;
    let node = inventory(&happen, "ledger").await;
    let client = happen.node("client").await.unwrap();
    let txn = CorrelationId::new();
    let mut ids = Vec::new();
    for i in 1..=5i64 {
        let mut e = Event::new("add", i);
        if i == 2 || i == 4 {
            e = e.with_correlation_id(txn.clone());
        }
        let id = within(10, "add", client.send(&node, e)).await.unwrap();
        ids.push(EventId::parse(id.as_str().unwrap()));
    }
    let state = node.stored::<Stock>();
    let history = within(10, "history", state.history()).await.unwrap();
    assert_eq!(history.len(), 5);
    assert_eq!(
        history.iter().map(|s| s.state.count).collect::<Vec<_>>(),
        [1, 3, 6, 10, 15]
    );
    for (s, id) in history.iter().zip(&ids) {
        let c = s.change.as_ref().unwrap();
        assert_eq!(&c.event_id, id);
        assert_eq!(c.sender, "client");
        assert_eq!(c.event_type, "add");
    }
    assert_eq!(state.when(&ids[2]).await.unwrap().unwrap().state.count, 6);
    let in_txn = state
        .when_matching(|s| s.change.as_ref().is_some_and(|c| c.correlation_id == txn))
        .await
        .unwrap();
    assert_eq!(
        in_txn.iter().map(|s| s.state.count).collect::<Vec<_>>(),
        [3, 10]
    );

    let deep = happen.node("deep").await.unwrap().stored::<i64>();
    let small = happen.node("small-1").await.unwrap().stored::<i64>();
    for _ in 0..70 {
        deep.update(|n| *n += 1).await.unwrap();
        small.update(|n| *n += 1).await.unwrap();
    }
    let h = within(10, "deep history", deep.history()).await.unwrap();
    assert_eq!(h.len(), 64);
    assert_eq!((h[0].state, h[63].state), (7, 70));
    let h = within(10, "small history", small.history()).await.unwrap();
    assert_eq!(h.iter().map(|s| s.state).collect::<Vec<_>>(), [68, 69, 70]);

    // restore: the state of e1 again, as a new revision
    let first = history.into_iter().next().unwrap();
    let back = state.restore(&first).await.unwrap();
    assert_eq!(back.value.count, 1);
    assert_eq!(state.get().await.unwrap().value.count, 1);
    happen.shutdown(Duration::from_secs(5)).await;
}

/// A watch sees every revision in order; another process's view reads the owner's state
/// (`None` for an unknown node); global state set in one process is read and watched in
/// another; invalid keys are clear errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_views_and_global_across_processes() {
    let server = server();
    let url = server.url();
    let owner = process(&url, Config::default()).await;
    let other = process(&url, Config::default()).await;
    let node = inventory(&owner, "inventory").await;
    let mut changes = within(10, "watch", node.stored::<Stock>().watch())
        .await
        .unwrap();
    for n in 1..=30 {
        within(10, "add", node.send(&node, Event::new("add", n)))
            .await
            .unwrap();
    }
    let mut total = 0;
    let mut last = 0;
    for n in 1..=30 {
        let s = within(10, "a revision", changes.next())
            .await
            .unwrap()
            .unwrap();
        total += n;
        assert_eq!(s.state.count, total);
        assert!(s.revision > last);
        last = s.revision;
        assert_eq!(s.change.unwrap().event_type, "add");
    }

    let seen = other.view::<Stock>("inventory").await.unwrap().unwrap();
    assert_eq!((seen.value.count, seen.revision), (total, last));
    assert_eq!(other.view::<Stock>("nobody").await.unwrap(), None);
    let all = other
        .collect::<Stock>(&["inventory", "nobody"])
        .await
        .unwrap();
    assert_eq!(all.len(), 1);

    let mut global_changes = other.global().watch::<String>("mode").await.unwrap();
    owner.global().set("mode", &"sale").await.unwrap();
    assert_eq!(
        other
            .global()
            .get::<String>("mode")
            .await
            .unwrap()
            .as_deref(),
        Some("sale")
    );
    let v = other
        .global()
        .update::<String>("mode", |m| m.push_str("-ending"))
        .await
        .unwrap();
    assert_eq!(v.value, "sale-ending");
    owner.global().delete("mode").await.unwrap();
    assert_eq!(other.global().get::<String>("mode").await.unwrap(), None);
    let mut seen = Vec::new();
    for _ in 0..3 {
        let s = within(10, "global change", global_changes.next())
            .await
            .unwrap()
            .unwrap();
        seen.push(s.state);
    }
    assert_eq!(
        seen,
        [Some("sale".into()), Some("sale-ending".into()), None]
    );
    let err = owner.global().set("a b", &1).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidKey);

    let shared = Arc::new(owner);
    shared.shutdown(Duration::from_secs(5)).await;
    other.shutdown(Duration::from_secs(5)).await;
}

/// Without JetStream the first use of stored state fails with a clear error.
#[tokio::test]
async fn without_jetstream_the_error_says_so() {
    let server = NatsServer::start();
    let happen = process(&server.url(), Config::default()).await;
    let node = happen.node("n").await.unwrap();
    let err = within(
        20,
        "update",
        node.stored::<Stock>().update(|s| s.count += 1),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transport);
    assert!(err.message().contains("JetStream"), "{err}");
    happen.shutdown(Duration::from_secs(5)).await;
}

/// The child process of [`state_survives_process_restarts`]: hosts `inventory`, adds 5 through
/// an event, exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run as a child process by state_survives_process_restarts"]
async fn state_writer_process() {
    let Ok(url) = std::env::var("HAPPEN_STATE_URL") else {
        return;
    };
    let happen = process(&url, Config::default()).await;
    let node = inventory(&happen, "inventory").await;
    within(10, "add", node.send(&node, Event::new("add", 5)))
        .await
        .unwrap();
    happen.shutdown(Duration::from_secs(5)).await;
}

/// Two real processes, one after the other, each adding 5 to the state of the node they
/// host; this process (which never hosted it) then reads 10 through a view.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_survives_process_restarts() {
    let server = server();
    let url = server.url();
    for run in 1..=2 {
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "state_writer_process",
                "--ignored",
                "--nocapture",
            ])
            .env("HAPPEN_STATE_URL", &url)
            .stdout(std::process::Stdio::null())
            .status()
            .expect("run the writer process");
        assert!(status.success(), "writer run {run}: {status}");
    }
    let reader = process(&url, Config::default()).await;
    let v = reader.view::<Stock>("inventory").await.unwrap().unwrap();
    assert_eq!((v.value.count, v.revision), (10, 2));
    reader.shutdown(Duration::from_secs(5)).await;
}
