//! Stored state with the in-process (memory) store: versions and compare-and-set under
//! concurrent load, two instances sharing one store (the cross-process case without a
//! server), history with causal context, `when`, history depth, watch, views, global state.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use happen::transport::{Inbox, LocalTransport, MemoryStore, ReplySender, StateStore, Transport};
use happen::{
    Config, Context, CorrelationId, ErrorKind, Event, EventId, Happen, Json, NodeId, Result,
};
use serde::{Deserialize, Serialize};
use tokio::time::timeout;

const T: Duration = Duration::from_secs(10);

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
struct Counter {
    count: u64,
}

/// In-process delivery with a store shared by every instance built on it: two "processes".
struct Shared(LocalTransport, Arc<MemoryStore>);

impl Transport for Shared {
    fn attach(&self, inbox: Inbox) -> BoxFuture<'_, Result<()>> {
        self.0.attach(inbox)
    }
    fn detach(&self, node: &NodeId) -> BoxFuture<'_, ()> {
        self.0.detach(node)
    }
    fn send(&self, t: &NodeId, e: Event, r: Option<ReplySender>) -> Result<()> {
        self.0.send(t, e, r)
    }
    fn broadcast(&self, e: Event) -> Result<()> {
        self.0.broadcast(e)
    }
    fn state_store(&self) -> Option<Arc<dyn StateStore>> {
        Some(self.1.clone())
    }
}

fn instance(store: &Arc<MemoryStore>, config: Config) -> Happen {
    Happen::builder()
        .config(config)
        .transport(Shared(LocalTransport::new(), store.clone()))
        .build()
        .unwrap()
}

/// 500 concurrent increments in one instance: all applied, no conflicts (they take turns on
/// the local lock).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_updates_in_one_process_never_conflict() {
    let happen = Happen::new();
    let node = happen.node("counter").await.unwrap();
    let tasks: Vec<_> = (0..500)
        .map(|_| {
            let s = node.stored::<Counter>();
            tokio::spawn(async move { s.update(|c| c.count += 1).await })
        })
        .collect();
    for t in tasks {
        timeout(T, t).await.unwrap().unwrap().unwrap();
    }
    let v = node.stored::<Counter>().get().await.unwrap();
    assert_eq!(v.value.count, 500);
    assert_eq!(v.revision, 500);
    assert_eq!(node.stored::<Counter>().conflicts(), 0);
}

/// Two instances on one store each apply 500 concurrent increments: exactly 1,000, and the
/// instances met conflicts and retried them; a stale `set_if_revision` is a conflict.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_sharing_a_store_lose_no_update() {
    let store = Arc::new(MemoryStore::new());
    let a = instance(&store, Config::default());
    let b = instance(&store, Config::default());
    let na = a.node("counter").await.unwrap();
    let nb = b.node("counter").await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..1000 {
        let s = if i % 2 == 0 { &na } else { &nb }.stored::<Counter>();
        tasks.push(tokio::spawn(
            async move { s.update(|c| c.count += 1).await },
        ));
    }
    for t in tasks {
        timeout(T, t).await.unwrap().unwrap().unwrap();
    }
    let v = a.view::<Counter>("counter").await.unwrap().unwrap();
    assert_eq!(v.value.count, 1000);
    let conflicts = na.stored::<Counter>().conflicts() + nb.stored::<Counter>().conflicts();
    assert!(conflicts > 0, "two writers on one store should conflict");

    let stale = v.revision - 1;
    let err = nb
        .stored::<Counter>()
        .set_if_revision(&Counter { count: 0 }, stale)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict);
    assert!(err.message().contains("get"), "says what to do: {err}");
    assert_eq!(
        b.view::<Counter>("counter")
            .await
            .unwrap()
            .unwrap()
            .value
            .count,
        1000
    );
}

async fn counting_node(happen: &Happen, id: &str) -> happen::Node {
    let node = happen.node(id).await.unwrap();
    // answers the event's id (given when the event is sent)
    node.on("add", |Json(n): Json<u64>, ctx: Context| async move {
        ctx.stored::<Counter>()
            .update(|c| c.count += n)
            .await
            .map(|_| ctx.event().id().to_string())
    })
    .unwrap();
    node
}

/// Five updates from events e1..e5: five snapshots with their event ids and causal context;
/// `when(e3)` is the state after e3; a correlation predicate selects the right ones.
#[tokio::test]
async fn history_carries_causal_context() {
    let happen = Happen::new();
    let node = counting_node(&happen, "ledger").await;
    let client = happen.node("client").await.unwrap();
    let txn = CorrelationId::new();
    let mut ids: Vec<EventId> = Vec::new();
    for i in 1..=5u64 {
        let mut e = Event::new("add", i);
        if i % 2 == 0 {
            e = e.with_correlation_id(txn.clone());
        }
        let id = client.send(&node, e).await.unwrap();
        ids.push(EventId::parse(id.as_str().unwrap()));
    }
    let state = node.stored::<Counter>();
    let history = state.history().await.unwrap();
    assert_eq!(history.len(), 5);
    let counts: Vec<u64> = history.iter().map(|s| s.state.count).collect();
    assert_eq!(counts, [1, 3, 6, 10, 15]);
    for (s, id) in history.iter().zip(&ids) {
        let c = s.change.as_ref().expect("made in a flow");
        assert_eq!(&c.event_id, id);
        assert_eq!(c.event_type, "add");
        assert_eq!(c.sender, "client");
        assert!(c.time > 0);
    }
    let after_e3 = state.when(&ids[2]).await.unwrap().unwrap();
    assert_eq!(after_e3.state.count, 6);
    assert!(state.when(&EventId::new()).await.unwrap().is_none());
    let in_txn = state
        .when_matching(|s| s.change.as_ref().is_some_and(|c| c.correlation_id == txn))
        .await
        .unwrap();
    assert_eq!(
        in_txn.iter().map(|s| s.state.count).collect::<Vec<_>>(),
        [3, 10]
    );
}

/// 70 updates keep the last 64 (the most NATS keeps); a pattern keeps fewer.
#[tokio::test]
async fn history_depth_is_bounded() {
    let config = Config::from_toml_str("[state.patterns.\"small-*\"]\nhistory = 3").unwrap();
    let happen = Happen::with_config(config).unwrap();
    let big = happen.node("big").await.unwrap().stored::<u64>();
    let small = happen.node("small-1").await.unwrap().stored::<u64>();
    for _ in 0..70 {
        big.update(|n| *n += 1).await.unwrap();
        small.update(|n| *n += 1).await.unwrap();
    }
    let h = big.history().await.unwrap();
    assert_eq!(h.len(), 64);
    assert_eq!(h.first().unwrap().state, 7);
    assert_eq!(h.last().unwrap().state, 70);
    let h = small.history().await.unwrap();
    assert_eq!(h.iter().map(|s| s.state).collect::<Vec<_>>(), [68, 69, 70]);
}

/// A watch sees every revision, in order, with its context; restore makes a new revision.
#[tokio::test]
async fn watch_sees_every_revision_in_order() {
    let happen = Happen::new();
    let node = counting_node(&happen, "w").await;
    let mut changes = node.stored::<Counter>().watch().await.unwrap();
    for i in 1..=20u64 {
        node.send(&node, Event::new("add", i)).await.unwrap();
    }
    let mut last = 0;
    let mut total = 0;
    for i in 1..=20u64 {
        let s = timeout(T, changes.next()).await.unwrap().unwrap().unwrap();
        total += i;
        assert_eq!(s.state.count, total);
        assert!(s.revision > last);
        last = s.revision;
        assert_eq!(s.change.unwrap().event_type, "add");
    }
    let state = node.stored::<Counter>();
    let first = state.history().await.unwrap().remove(0);
    let restored = state.restore(&first).await.unwrap();
    assert_eq!(restored.value.count, 1);
    let s = timeout(T, changes.next()).await.unwrap().unwrap().unwrap();
    assert_eq!((s.state.count, s.revision), (1, restored.revision));
    assert!(s.change.is_none(), "restored outside a flow");
}

/// Views: `None` for an unknown node, the state for a known one; a state that is not the
/// requested type is a clear error.
#[tokio::test]
async fn views_and_type_errors() {
    let happen = Happen::new();
    let node = counting_node(&happen, "inventory").await;
    node.send(&node, Event::new("add", 4)).await.unwrap();
    assert_eq!(happen.view::<Counter>("nobody").await.unwrap(), None);
    let v = happen.view::<Counter>("inventory").await.unwrap().unwrap();
    assert_eq!(v.value.count, 4);
    let err = happen.view::<String>("inventory").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidPayload);
    assert!(err.message().contains("node `inventory`"), "{err}");
    let all = happen
        .collect::<Counter>(&["nobody", "inventory"])
        .await
        .unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].0, "inventory");
}

/// Global state: set in one instance, read in another; update by compare-and-set; delete;
/// watch; invalid keys are clear errors.
#[tokio::test]
async fn global_state() {
    let store = Arc::new(MemoryStore::new());
    let a = instance(&store, Config::default());
    let b = instance(&store, Config::default());
    let mut changes = b.global().watch::<u32>("stock.total").await.unwrap();
    a.global().set("stock.total", &5u32).await.unwrap();
    assert_eq!(b.global().get::<u32>("stock.total").await.unwrap(), Some(5));
    let v = b
        .global()
        .update::<u32>("stock.total", |n| *n += 1)
        .await
        .unwrap();
    assert_eq!(v.value, 6);
    a.global().delete("stock.total").await.unwrap();
    assert_eq!(b.global().get::<u32>("stock.total").await.unwrap(), None);
    let seen: Vec<Option<u32>> = changes
        .by_ref()
        .take(3)
        .map(|s| s.unwrap().state)
        .collect()
        .await;
    assert_eq!(seen, [Some(5), Some(6), None]);
    for key in ["", "a b", ".a", "a.", "a*b", "ü"] {
        let err = a.global().set(key, &1).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidKey, "{key:?}");
        assert!(err.message().contains("keys are letters"), "{err}");
    }
}

/// History deeper than NATS allows is refused when the configuration is read.
#[test]
fn history_over_64_is_a_config_error() {
    let err = Config::from_toml_str("[state.patterns.\"a*\"]\nhistory = 100").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidConfig);
    assert!(err.message().contains("state.patterns"), "{err}");
}
