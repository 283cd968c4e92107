//! Node state that survives: typed, versioned, with history, views into other nodes' state
//! and global state.
//!
//! | handle | from | holds |
//! |---|---|---|
//! | [`Stored<S>`] | [`Node::stored`](crate::Node::stored), [`Context::stored`](crate::Context::stored) | one node's state: get, update (compare-and-set), history, `when`, watch, restore |
//! | views | [`Happen::view`](crate::Happen::view), [`Context::view`](crate::Context::view), [`Happen::collect`](crate::Happen::collect) | another node's state, read-only |
//! | [`Global`] | [`Happen::global`](crate::Happen::global), [`Context::global`](crate::Context::global) | system-wide keys |
//!
//! Where it is kept is the transport's choice: with `happen-nats` in NATS JetStream key-value
//! buckets (node `inventory`'s state in bucket `node-inventory`, key `state`, as JSON — what
//! the reference TypeScript implementation reads; other processes and restarts see it); with
//! the in-process transport in memory, per instance. A change made inside a flow (through
//! [`Context::stored`](crate::Context::stored) or [`Context::global`](crate::Context::global))
//! carries the flow's event as its [`Change`]: id, causation, correlation, type, sender, time.
//!
//! A key keeps its last 64 revisions at most (NATS key-value's limit; where the reference's
//! docs say `history: 100`, a NATS server refuses more than 64); `[state]` in the
//! [configuration](crate::config::StateConfig) sets fewer, and an age limit, per node pattern.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
//! use happen::{Context, Event, Happen, Json};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Default, Serialize, Deserialize)]
//! struct Stock { count: i64 }
//!
//! let happen = Happen::new(); // in memory; `happen-nats` keeps it in JetStream
//! let inventory = happen.node("inventory").await?;
//! inventory.on("restock", |Json(n): Json<i64>, ctx: Context| async move {
//!     let stock = ctx.stored::<Stock>().update(|s| s.count += n).await?;
//!     Ok::<_, happen::Error>(stock.value.count)
//! })?;
//! inventory.send(&inventory, Event::new("restock", 5)).await?;
//! let seen = happen.view::<Stock>("inventory").await?.expect("inventory has state");
//! assert_eq!((seen.value.count, seen.revision), (5, 1));
//! assert!(happen.view::<Stock>("nobody").await?.is_none());
//! # Ok(()) }
//! ```

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::Entry;
use super::hub::StoreHub;
use super::names::{GLOBAL_BUCKET, STATE_KEY, node_bucket, validate_key};
use crate::config::StateSettings;
use crate::error::{Error, ErrorKind, Result};
use crate::event::Event;
use crate::id::{EventId, NodeId};

pub use super::Change;

/// How many times [`Stored::update`] and [`Global::update`] try before failing with
/// [`ErrorKind::Conflict`].
///
/// ```
/// assert_eq!(happen::stored::UPDATE_TRIES, 32);
/// ```
pub const UPDATE_TRIES: u32 = 32;

/// A value with the revision it was read or written at (0: never written).
///
/// ```
/// let v = happen::stored::Versioned { value: 3, revision: 7 };
/// assert_eq!(v.revision, 7);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned<S> {
    /// The value.
    pub value: S,
    /// The store's revision of it; 0 when nothing was stored yet (the value is the default).
    pub revision: u64,
}

/// One revision of a node's state from its history: the state, its revision, and the causal
/// context of the change (`None` when it was made outside a flow).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
/// let happen = happen::Happen::new();
/// let n = happen.node("n").await?;
/// n.stored::<String>().update(|s| s.push_str("hi")).await?;
/// let snapshot = n.stored::<String>().history().await?.remove(0);
/// assert_eq!((snapshot.state.as_str(), snapshot.revision), ("hi", 1));
/// assert!(snapshot.change.is_none()); // written outside a flow
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Snapshot<S> {
    /// The state after the change.
    pub state: S,
    /// Its revision.
    pub revision: u64,
    /// The event whose flow made the change.
    pub change: Option<Change>,
}

/// One node's stored state of type `S` (missing → `S::default()`). Made by
/// [`Node::stored`](crate::Node::stored) (changes without causal context) or
/// [`Context::stored`](crate::Context::stored) (changes carry the flow's event). Cheap to
/// clone; every handle of an instance to the same node shares one lock, so updates from this
/// process never conflict with each other — only with other processes.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
/// use happen::Happen;
///
/// let happen = Happen::new();
/// let counter = happen.node("counter").await?;
/// let state = counter.stored::<u64>();
/// assert_eq!(state.get().await?.value, 0); // nothing stored yet: the default
/// state.update(|n| *n += 1).await?;
/// assert_eq!(state.get().await?.value, 1);
/// # Ok(()) }
/// ```
pub struct Stored<S> {
    hub: Arc<StoreHub>,
    node: NodeId,
    bucket: Arc<str>,
    /// The flow's event, whose causal context a change carries (made into a [`Change`] only
    /// when something is written).
    cause: Option<Event>,
    _s: PhantomData<fn() -> S>,
}

impl<S> Clone for Stored<S> {
    fn clone(&self) -> Self {
        Stored {
            hub: self.hub.clone(),
            node: self.node.clone(),
            bucket: self.bucket.clone(),
            cause: self.cause.clone(),
            _s: PhantomData,
        }
    }
}

impl<S> fmt::Debug for Stored<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stored")
            .field("node", &self.node.as_str())
            .field("bucket", &&*self.bucket)
            .field("cause", &self.cause.as_ref().map(|e| e.id().to_string()))
            .finish()
    }
}

impl<S> Stored<S> {
    pub(crate) fn new(hub: Arc<StoreHub>, node: NodeId, cause: Option<Event>) -> Stored<S> {
        Stored {
            bucket: node_bucket(&node).into(),
            hub,
            node,
            cause,
            _s: PhantomData,
        }
    }

    /// The node whose state this is.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// let happen = happen::Happen::new();
    /// let n = happen.node("n").await?;
    /// assert_eq!(n.stored::<u8>().node_id(), "n");
    /// # Ok(()) }
    /// ```
    pub fn node_id(&self) -> &NodeId {
        &self.node
    }

    /// The bucket the state is kept in: `node-<id>`, escaped as
    /// [`node_bucket`](crate::transport::node_bucket) says.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// let happen = happen::Happen::new();
    /// let n = happen.node("shop.orders").await?;
    /// assert_eq!(n.stored::<u8>().bucket(), "node-_shop_2Eorders");
    /// # Ok(()) }
    /// ```
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// How many compare-and-set conflicts this instance's updates of the node's state met
    /// (each was retried): a measure of how often other processes write it.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// let happen = happen::Happen::new();
    /// let n = happen.node("n").await?;
    /// n.stored::<u8>().update(|v| *v += 1).await?;
    /// assert_eq!(n.stored::<u8>().conflicts(), 0); // one process never conflicts with itself
    /// # Ok(()) }
    /// ```
    pub fn conflicts(&self) -> u64 {
        self.hub
            .cell(&self.bucket, STATE_KEY)
            .conflicts
            .load(Ordering::Relaxed)
    }

    fn settings(&self) -> StateSettings {
        self.hub.config.settings_for(&self.node)
    }

    fn what(&self) -> String {
        format!("the state of node `{}`", self.node)
    }
}

impl<S: Serialize + DeserializeOwned + Default + Send + 'static> Stored<S> {
    /// The state and its revision; `S::default()` at revision 0 when nothing is stored.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidPayload`] when the stored JSON is not an `S`; the store's errors
    /// ([`ErrorKind::Transport`]).
    ///
    /// # Cancel safety
    /// A read: dropping it changes nothing.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// let happen = happen::Happen::new();
    /// let n = happen.node("n").await?;
    /// let state = n.stored::<Vec<String>>();
    /// let v = state.update(|names| names.push("ada".into())).await?;
    /// let read = state.get().await?;
    /// assert_eq!((read.value, read.revision), (vec!["ada".to_string()], v.revision));
    /// # Ok(()) }
    /// ```
    pub async fn get(&self) -> Result<Versioned<S>> {
        let entry = self.hub.store.get(&self.bucket, STATE_KEY).await?;
        decode_entry(entry, &self.what())
    }

    /// Applies `f` to the state and stores the result if nobody changed the state meanwhile
    /// (compare-and-set on the revision); on a conflict, reads the state again and calls `f`
    /// again (so `f` may run more than once: keep it free of side effects), up to
    /// [`UPDATE_TRIES`] times. Updates from this instance take turns on a local lock, so only
    /// writers in other processes conflict. Returns the stored state and its revision.
    ///
    /// # Errors
    /// [`ErrorKind::Conflict`] after [`UPDATE_TRIES`] conflicts in a row;
    /// [`ErrorKind::InvalidPayload`] when the stored JSON is not an `S`; the store's errors.
    ///
    /// # Cancel safety
    /// Dropped before the store answered, the update may or may not have been stored.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// use std::collections::BTreeMap;
    ///
    /// let happen = happen::Happen::new();
    /// let n = happen.node("n").await?;
    /// let prices = n.stored::<BTreeMap<String, u32>>();
    /// let stored = prices.update(|p| { p.insert("tea".into(), 3); }).await?;
    /// assert_eq!(stored.value["tea"], 3);
    /// assert_eq!(stored.revision, 1);
    /// # Ok(()) }
    /// ```
    pub async fn update<F: FnMut(&mut S)>(&self, f: F) -> Result<Versioned<S>> {
        let change = self.cause.as_ref().map(Change::of);
        update_key(
            &self.hub,
            &self.bucket,
            STATE_KEY,
            self.settings(),
            change.as_ref(),
            &self.what(),
            f,
        )
        .await
    }

    /// Stores `value` only if the state is still at `revision` (0: nothing stored yet).
    /// Returns the new revision.
    ///
    /// # Errors
    /// [`ErrorKind::Conflict`] when the state is at another revision (read it again with
    /// [`get`](Stored::get)); the store's errors.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// use happen::ErrorKind;
    ///
    /// let happen = happen::Happen::new();
    /// let n = happen.node("n").await?;
    /// let state = n.stored::<u32>();
    /// let r1 = state.set_if_revision(&10, 0).await?;
    /// state.set_if_revision(&11, r1).await?;
    /// let stale = state.set_if_revision(&12, r1).await.unwrap_err();
    /// assert_eq!(stale.kind(), ErrorKind::Conflict);
    /// assert_eq!(state.get().await?.value, 11);
    /// # Ok(()) }
    /// ```
    pub async fn set_if_revision(&self, value: &S, revision: u64) -> Result<u64> {
        self.hub.ensure(&self.bucket, self.settings()).await?;
        let cell = self.hub.cell(&self.bucket, STATE_KEY);
        let mut last = cell.last.lock().await;
        let bytes = encode(value, &self.what())?;
        let change = self.cause.as_ref().map(Change::of);
        match self
            .hub
            .store
            .put(
                &self.bucket,
                STATE_KEY,
                Some(bytes.clone()),
                Some(revision),
                change.as_ref(),
            )
            .await
        {
            Ok(r) => {
                *last = Some((bytes, r));
                Ok(r)
            }
            Err(e) if e.kind() == ErrorKind::Conflict => {
                *last = None;
                Err(Error::new(
                    ErrorKind::Conflict,
                    format!(
                        "{} is no longer at revision {revision} (another writer changed it); \
                         read it again with `get` and retry ({})",
                        self.what(),
                        e.message()
                    ),
                )
                .with_node(&self.node))
            }
            Err(e) => Err(e),
        }
    }

    /// Sets the state back to `snapshot`'s (a new revision, carrying this handle's causal
    /// context, as the reference's `state.set(() => snapshot.state)`).
    ///
    /// # Errors
    /// As [`update`](Stored::update).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// let happen = happen::Happen::new();
    /// let n = happen.node("n").await?;
    /// let state = n.stored::<u32>();
    /// for _ in 0..3 { state.update(|v| *v += 1).await?; }
    /// let first = state.history().await?.remove(0);
    /// let back = state.restore(&first).await?;
    /// assert_eq!((back.value, back.revision), (1, 4));
    /// # Ok(()) }
    /// ```
    pub async fn restore(&self, snapshot: &Snapshot<S>) -> Result<Versioned<S>>
    where
        S: Clone,
    {
        let state = snapshot.state.clone();
        self.update(move |s| *s = state.clone()).await
    }

    /// The kept revisions of the state, oldest first (at most `history` of them; see
    /// [`StateConfig`](crate::config::StateConfig)).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidPayload`] when a stored revision is not an `S`; the store's errors.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// let happen = happen::Happen::new();
    /// let n = happen.node("n").await?;
    /// let state = n.stored::<u32>();
    /// for _ in 0..3 { state.update(|v| *v += 2).await?; }
    /// let states: Vec<u32> = state.history().await?.into_iter().map(|s| s.state).collect();
    /// assert_eq!(states, [2, 4, 6]);
    /// # Ok(()) }
    /// ```
    pub async fn history(&self) -> Result<Vec<Snapshot<S>>> {
        let what = self.what();
        self.hub
            .store
            .history(&self.bucket, STATE_KEY)
            .await?
            .into_iter()
            .map(|e| snapshot(e, &what))
            .collect()
    }

    /// The state right after the flow of event `event` changed it (the last of its changes),
    /// if that revision is still kept: the reference's `state.when(eventId)`.
    ///
    /// # Errors
    /// As [`history`](Stored::history).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// use happen::{Context, Event, Happen};
    ///
    /// let happen = Happen::new();
    /// let n = happen.node("n").await?;
    /// n.on("add", |e: Event, ctx: Context| async move {
    ///     let by = e.payload().as_u64().unwrap_or(0);
    ///     ctx.stored::<u64>().update(|v| *v += by).await?;
    ///     Ok::<_, happen::Error>(e.id().to_string()) // an event's id is given when it is sent
    /// })?;
    /// n.send(&n, Event::new("add", 1)).await?;
    /// let e2 = n.send(&n, Event::new("add", 2)).await?;
    /// n.send(&n, Event::new("add", 4)).await?;
    /// let e2 = happen::EventId::parse(e2.as_str().unwrap());
    /// let after_e2 = n.stored::<u64>().when(&e2).await?.expect("kept");
    /// assert_eq!(after_e2.state, 3);
    /// # Ok(()) }
    /// ```
    pub async fn when(&self, event: &EventId) -> Result<Option<Snapshot<S>>> {
        Ok(self
            .history()
            .await?
            .into_iter()
            .rev()
            .find(|s| s.change.as_ref().is_some_and(|c| &c.event_id == event)))
    }

    /// The kept snapshots `predicate` accepts, oldest first: the reference's
    /// `state.when(predicate)`.
    ///
    /// # Errors
    /// As [`history`](Stored::history).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// use happen::{Context, Event, Happen};
    ///
    /// let happen = Happen::new();
    /// let n = happen.node("n").await?;
    /// n.on("add", |_e: Event, ctx: Context| async move {
    ///     ctx.stored::<u64>().update(|v| *v += 1).await.map(|_| ())
    /// })?;
    /// for ty in ["add", "add", "add"] { n.send(&n, Event::new(ty, ())).await?; }
    /// let odd = n.stored::<u64>().when_matching(|s| s.state % 2 == 1).await?;
    /// assert_eq!(odd.iter().map(|s| s.state).collect::<Vec<_>>(), [1, 3]);
    /// # Ok(()) }
    /// ```
    pub async fn when_matching(
        &self,
        predicate: impl Fn(&Snapshot<S>) -> bool,
    ) -> Result<Vec<Snapshot<S>>> {
        let mut all = self.history().await?;
        all.retain(|s| predicate(s));
        Ok(all)
    }

    /// Every revision stored from now on, in order, with its causal context.
    ///
    /// # Errors
    /// The store's, when the watch cannot start; later errors end the stream with an `Err`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// use futures::StreamExt;
    ///
    /// let happen = happen::Happen::new();
    /// let n = happen.node("n").await?;
    /// let state = n.stored::<u32>();
    /// let mut changes = state.watch().await?;
    /// state.update(|v| *v = 7).await?;
    /// let seen = changes.next().await.expect("a revision")?;
    /// assert_eq!((seen.state, seen.revision), (7, 1));
    /// # Ok(()) }
    /// ```
    pub async fn watch(&self) -> Result<BoxStream<'static, Result<Snapshot<S>>>> {
        self.hub.ensure(&self.bucket, self.settings()).await?;
        let what = self.what();
        let entries = self.hub.store.watch(&self.bucket, STATE_KEY).await?;
        Ok(entries
            .map(move |e| e.and_then(|e| snapshot(e, &what)))
            .boxed())
    }
}

/// System-wide state: JSON values under keys in one shared bucket
/// ([`GLOBAL_BUCKET`](crate::transport::GLOBAL_BUCKET), `happen-global-state`), the
/// reference's `node.global`. Keys are letters, digits and `-/_=.`, not starting or ending
/// with `.`; others fail with [`ErrorKind::InvalidKey`]. Made by
/// [`Happen::global`](crate::Happen::global) or [`Context::global`](crate::Context::global).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
/// use happen::ErrorKind;
///
/// let happen = happen::Happen::new();
/// let global = happen.global();
/// global.set("config.currency", &"EUR").await?;
/// assert_eq!(global.get::<String>("config.currency").await?.as_deref(), Some("EUR"));
/// global.delete("config.currency").await?;
/// assert_eq!(global.get::<String>("config.currency").await?, None);
/// assert_eq!(global.get::<u8>("no spaces").await.unwrap_err().kind(), ErrorKind::InvalidKey);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Global {
    hub: Arc<StoreHub>,
    /// The flow's event, whose causal context a change carries.
    cause: Option<Event>,
}

impl fmt::Debug for Global {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Global")
            .field("cause", &self.cause.as_ref().map(|e| e.id().to_string()))
            .finish_non_exhaustive()
    }
}

impl Global {
    pub(crate) fn new(hub: Arc<StoreHub>, cause: Option<Event>) -> Global {
        Global { hub, cause }
    }

    fn change(&self) -> Option<Change> {
        self.cause.as_ref().map(Change::of)
    }

    async fn open(&self) -> Result<()> {
        self.hub
            .ensure(GLOBAL_BUCKET, self.hub.global_settings())
            .await
    }

    /// The value under `key`; `None` when unset or deleted.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidKey`]; [`ErrorKind::InvalidPayload`] when the value is not a `T`;
    /// the store's errors.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// let happen = happen::Happen::new();
    /// assert_eq!(happen.global().get::<u32>("unset").await?, None);
    /// # Ok(()) }
    /// ```
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        validate_key(key)?;
        let what = format!("global key `{key}`");
        match self.hub.store.get(GLOBAL_BUCKET, key).await? {
            Some(Entry {
                value: Some(bytes),
                revision,
                ..
            }) => decode(&bytes, &what, revision).map(Some),
            _ => Ok(None),
        }
    }

    /// Stores `value` under `key`; returns the revision.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidKey`]; the store's errors.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// let happen = happen::Happen::new();
    /// let rev = happen.global().set("limits/max", &10).await?;
    /// assert!(rev > 0);
    /// # Ok(()) }
    /// ```
    pub async fn set<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<u64> {
        validate_key(key)?;
        self.open().await?;
        let bytes = encode(value, &format!("global key `{key}`"))?;
        let cell = self.hub.cell(GLOBAL_BUCKET, key);
        let mut last = cell.last.lock().await;
        let r = self
            .hub
            .store
            .put(
                GLOBAL_BUCKET,
                key,
                Some(bytes.clone()),
                None,
                self.change().as_ref(),
            )
            .await?;
        *last = Some((bytes, r));
        Ok(r)
    }

    /// Applies `f` to the value under `key` (`T::default()` when unset) with compare-and-set,
    /// retried as [`Stored::update`] is.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidKey`]; [`ErrorKind::Conflict`] after [`UPDATE_TRIES`] conflicts;
    /// the store's errors.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// let happen = happen::Happen::new();
    /// happen.global().update::<u64>("visits", |v| *v += 1).await?;
    /// let v = happen.global().update::<u64>("visits", |v| *v += 1).await?;
    /// assert_eq!(v.value, 2);
    /// # Ok(()) }
    /// ```
    pub async fn update<T: Serialize + DeserializeOwned + Default>(
        &self,
        key: &str,
        f: impl FnMut(&mut T),
    ) -> Result<Versioned<T>> {
        validate_key(key)?;
        update_key(
            &self.hub,
            GLOBAL_BUCKET,
            key,
            self.hub.global_settings(),
            self.change().as_ref(),
            &format!("global key `{key}`"),
            f,
        )
        .await
    }

    /// Deletes `key` (a delete marker; [`get`](Global::get) then answers `None`).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidKey`]; the store's errors.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// let g = happen::Happen::new().global();
    /// g.set("k", &1).await?;
    /// g.delete("k").await?;
    /// assert_eq!(g.get::<i32>("k").await?, None);
    /// # Ok(()) }
    /// ```
    pub async fn delete(&self, key: &str) -> Result<()> {
        validate_key(key)?;
        self.open().await?;
        let cell = self.hub.cell(GLOBAL_BUCKET, key);
        let mut last = cell.last.lock().await;
        self.hub
            .store
            .put(GLOBAL_BUCKET, key, None, None, self.change().as_ref())
            .await?;
        *last = None;
        Ok(())
    }

    /// Every change of `key` from now on, in order: `Some(value)` for a set, `None` for a
    /// delete, with its revision and causal context.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidKey`]; the store's errors.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// use futures::StreamExt;
    ///
    /// let g = happen::Happen::new().global();
    /// let mut changes = g.watch::<String>("mode").await?;
    /// g.set("mode", &"maintenance").await?;
    /// g.delete("mode").await?;
    /// assert_eq!(changes.next().await.unwrap()?.state.as_deref(), Some("maintenance"));
    /// assert_eq!(changes.next().await.unwrap()?.state, None);
    /// # Ok(()) }
    /// ```
    pub async fn watch<T: DeserializeOwned + Send + 'static>(
        &self,
        key: &str,
    ) -> Result<BoxStream<'static, Result<Snapshot<Option<T>>>>> {
        validate_key(key)?;
        self.open().await?;
        let what = format!("global key `{key}`");
        let entries = self.hub.store.watch(GLOBAL_BUCKET, key).await?;
        Ok(entries
            .map(move |e| {
                let e = e?;
                let state = match &e.value {
                    Some(b) => Some(decode(b, &what, e.revision)?),
                    None => None,
                };
                Ok(Snapshot {
                    state,
                    revision: e.revision,
                    change: e.change,
                })
            })
            .boxed())
    }
}

/// Node `id`'s state read by another node: `None` when nothing is stored for it.
pub(crate) async fn view<S: DeserializeOwned + Default>(
    hub: &StoreHub,
    id: &str,
) -> Result<Option<Versioned<S>>> {
    let what = format!("the state of node `{id}`");
    match hub.store.get(&node_bucket(id), STATE_KEY).await? {
        None => Ok(None),
        entry => decode_entry(entry, &what).map(Some),
    }
}

/// [`view`] of each id (concurrently), keeping the ids that have state.
pub(crate) async fn collect<S: DeserializeOwned + Default>(
    hub: &StoreHub,
    ids: &[&str],
) -> Result<Vec<(NodeId, Versioned<S>)>> {
    let reads = ids.iter().map(|id| view::<S>(hub, id));
    let all = futures::future::join_all(reads).await;
    let mut out = Vec::with_capacity(ids.len());
    for (id, r) in ids.iter().zip(all) {
        if let Some(v) = r? {
            out.push((NodeId::from(*id), v));
        }
    }
    Ok(out)
}

async fn update_key<T: Serialize + DeserializeOwned + Default>(
    hub: &StoreHub,
    bucket: &str,
    key: &str,
    settings: StateSettings,
    change: Option<&Change>,
    what: &str,
    mut f: impl FnMut(&mut T),
) -> Result<Versioned<T>> {
    hub.ensure(bucket, settings).await?;
    let cell = hub.cell(bucket, key);
    // Local writers take turns here; what they wrote last is tried first.
    let mut last = cell.last.lock().await;
    for attempt in 0..UPDATE_TRIES {
        let (bytes, revision) = match last.take() {
            Some(known) => known,
            None => match hub.store.get(bucket, key).await? {
                Some(Entry {
                    value, revision, ..
                }) => (value.unwrap_or_default(), revision),
                None => (Vec::new(), 0),
            },
        };
        let mut value: T = if bytes.is_empty() {
            T::default()
        } else {
            decode(&bytes, what, revision)?
        };
        f(&mut value);
        let new = encode(&value, what)?;
        match hub
            .store
            .put(bucket, key, Some(new.clone()), Some(revision), change)
            .await
        {
            Ok(r) => {
                *last = Some((new, r));
                return Ok(Versioned { value, revision: r });
            }
            Err(e) if e.kind() == ErrorKind::Conflict => {
                cell.conflicts.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(backoff(attempt)).await;
            }
            Err(e) => return Err(e),
        }
    }
    Err(Error::new(
        ErrorKind::Conflict,
        format!(
            "{what} changed under {UPDATE_TRIES} updates in a row: other processes write it \
             too often; retry later, or let one node own it and send that node the changes"
        ),
    ))
}

/// A random pause after a conflict, doubling with each try from 0.1 ms up to 20 ms (between
/// half the cap and the cap), so two processes do not retry in lock step and a writer that
/// keeps losing to another process's run of cached writes waits past that run (32 tries span
/// ~0.4 s) instead of giving up within a few milliseconds.
fn backoff(attempt: u32) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let mut x = u64::from(nanos) ^ (u64::from(attempt) << 32) ^ 0x9E37_79B9_7F4A_7C15;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    let cap = (100u64 << attempt.min(8)).min(20_000);
    Duration::from_micros(cap / 2 + x % (cap / 2))
}

fn encode<T: Serialize + ?Sized>(value: &T, what: &str) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| {
        Error::new(
            ErrorKind::InvalidPayload,
            format!("{what} does not serialize to JSON: {e}"),
        )
    })
}

fn decode<T: DeserializeOwned>(bytes: &[u8], what: &str, revision: u64) -> Result<T> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        Error::new(
            ErrorKind::InvalidPayload,
            format!(
                "{what} (revision {revision}) does not fit the requested type `{}` at `{}`: {}",
                std::any::type_name::<T>(),
                e.path(),
                e.inner()
            ),
        )
    })
}

fn decode_entry<S: DeserializeOwned + Default>(
    entry: Option<Entry>,
    what: &str,
) -> Result<Versioned<S>> {
    match entry {
        None => Ok(Versioned {
            value: S::default(),
            revision: 0,
        }),
        Some(Entry {
            value, revision, ..
        }) => {
            let value = match value {
                Some(b) if !b.is_empty() => decode(&b, what, revision)?,
                _ => S::default(),
            };
            Ok(Versioned { value, revision })
        }
    }
}

fn snapshot<S: DeserializeOwned + Default>(mut e: Entry, what: &str) -> Result<Snapshot<S>> {
    let change = e.change.take();
    let Versioned { value, revision } = decode_entry(Some(e), what)?;
    Ok(Snapshot {
        state: value,
        revision,
        change,
    })
}
