//! The [`Transport`] trait: how events reach nodes, and the in-process implementation.
//!
//! # Contract
//! - **Attach.** When a node is created, the instance calls [`Transport::attach`] with the
//!   node's [`Inbox`]. From the moment `attach` resolves, events addressed to the node (direct
//!   and broadcast) must reach [`Inbox::deliver`].
//! - **Delivery.** [`Transport::send`] delivers one event to the node with the target id,
//!   wherever it lives. Errors known at once (no such node, queue full in-process, disconnected)
//!   are returned; the event was then not delivered. Otherwise exactly what the target's flow
//!   answers must reach `reply` (if given) as a [`Response`] — including
//!   errors detected later (a remote `QueueFull`, a remote panic). A transport that cannot
//!   deliver a reply must answer with an error rather than drop it; a `reply` dropped without an
//!   answer surfaces to the sender as [`ErrorKind::ShutDown`](crate::ErrorKind::ShutDown).
//! - **Detach.** [`Transport::detach`] stops routing to the node before anything else: once
//!   it has taken effect, new events for the node go elsewhere (another replica) or fail as
//!   for an unknown node. Events that reached the node before are still delivered to it, and
//!   the returned future resolves when every answer to them has been handed on (the instance
//!   keeps the node running meanwhile, within its shutdown deadline).
//! - **Broadcast.** [`Transport::broadcast`] reaches every node (in every process) whose
//!   [`Inbox::accepts`] the event type, once per node id.
//! - **Pressure.** [`Transport::pressure`] exposes the backpressure state of a target, if known.
//! - `send` and `broadcast` must not block: they are called from inside flows and from the
//!   engine. Asynchronous work (network I/O) is spawned.
//!
//! # The pieces
//! | item | for |
//! |---|---|
//! | [`Transport`] | the trait; [`LocalTransport`] is the in-process implementation (wrap it, or see [`Inbox`] for one from scratch) |
//! | [`Inbox`] | a node's entrance: deliver events, ask what it accepts, read its limits, stats and pressure |
//! | [`reply_channel`], [`ReplySender`], [`ReplyReceiver`], [`Response`] | the reply path of one send |
//! | [`stream_channel`], [`StreamSender`], [`ItemStream`] | a streaming reply's items (to forward a remote stream) |
//! | [`BroadcastFeed`], [`FeedSubscription`], [`BroadcastItems`], [`StreamItem`] | broadcast streams produced elsewhere |
//! | [`ErrorParts`] | an [`Error`](crate::Error) taken apart and rebuilt across a process boundary |
//! | [`pressure()`] | a [`Pressure`] mirrored from a remote node |
//! | [`StateStore`], [`MemoryStore`], [`Entry`], [`Change`], [`node_bucket`], [`validate_key`] | where stored state is kept ([`Transport::state_store`]) |
//!
//! # A transport, end to end
//! A transport that hands every event to the in-process transport, counting what it carries:
//!
//! ```
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicU64, Ordering};
//!
//! use futures::future::BoxFuture;
//! use happen::transport::{Inbox, LocalTransport, ReplySender, Transport};
//! use happen::{Context, Event, Happen, NodeId};
//!
//! #[derive(Default)]
//! struct Counting {
//!     inner: LocalTransport,
//!     carried: Arc<AtomicU64>,
//! }
//!
//! impl Transport for Counting {
//!     fn attach(&self, inbox: Inbox) -> BoxFuture<'_, happen::Result<()>> {
//!         self.inner.attach(inbox)
//!     }
//!     fn detach(&self, node: &NodeId) -> BoxFuture<'_, ()> {
//!         self.inner.detach(node)
//!     }
//!     fn send(&self, target: &NodeId, event: Event, reply: Option<ReplySender>) -> happen::Result<()> {
//!         self.carried.fetch_add(1, Ordering::Relaxed);
//!         self.inner.send(target, event, reply)
//!     }
//!     fn broadcast(&self, event: Event) -> happen::Result<()> {
//!         self.carried.fetch_add(1, Ordering::Relaxed);
//!         self.inner.broadcast(event)
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
//! let transport = Counting::default();
//! let carried = transport.carried.clone();
//! let happen = Happen::builder().transport(transport).build()?;
//! let echo = happen.node("echo").await?;
//! echo.on("say", |event: Event, _ctx: Context| async move { event.payload().clone() })?;
//! assert_eq!(echo.send(&echo, Event::new("say", "hi")).await?, "hi");
//! assert_eq!(carried.load(Ordering::Relaxed), 1);
//! # Ok(()) }
//! ```
//!
//! # Only here
//! None of this module is part of an application's API, so none of it is at the crate root:
//!
//! ```compile_fail,E0432
//! use happen::Transport; // `happen::transport::Transport`
//! ```
//! ```compile_fail,E0432
//! use happen::{Inbox, LocalTransport};
//! ```
//! ```compile_fail,E0603
//! use happen::stream::Response; // `happen::transport::Response`
//! ```
//! ```compile_fail,E0603
//! let (tx, rx) = happen::stream::reply_channel();
//! ```
//! ```compile_fail,E0599
//! let e = happen::Error::from_parts(happen::ErrorKind::Timeout, "t", None, None, None);
//! ```
//! ```compile_fail,E0624
//! let p = happen::Pressure::new(true, 1, 2); // `happen::transport::pressure`
//! ```
//! ```compile_fail,E0432
//! use happen::Step; // made by `Flow::next` only
//! ```

mod inbox;
mod local;

use std::sync::Arc;

use futures::future::BoxFuture;
use tokio::sync::watch;

use crate::admission::Pressure;
use crate::error::Result;
use crate::event::Event;
use crate::id::NodeId;

pub use inbox::{HeldWakes, Inbox, RunHere};
pub use local::LocalTransport;

/// Moves events between nodes. See the [module docs](self) for the contract and an example;
/// give one to an instance with [`HappenBuilder::transport`](crate::HappenBuilder::transport).
///
/// Happen calls these methods (an application never does): `attach` when a node is created,
/// `send`/`broadcast` for every send, `detach` when a node closes, `shutdown` last.
pub trait Transport: Send + Sync + 'static {
    /// A node was created at this instance; route its events to `inbox` from the moment the
    /// future resolves.
    ///
    /// # Errors
    /// An error (for example [`ErrorKind::Transport`](crate::ErrorKind::Transport)) fails the
    /// node's creation; happen then removes the half-made node.
    ///
    /// # Cancel safety
    /// Happen may drop the future before it resolves (when the `node` call is cancelled); it
    /// then calls [`detach`](Transport::detach) for the node.
    fn attach(&self, inbox: Inbox) -> BoxFuture<'_, Result<()>>;

    /// The node is being removed: stop routing to it, and resolve once the answers to what
    /// reached it before have been delivered (see the [module docs](self)).
    ///
    /// # Cancel safety
    /// Stop routing before returning the future (as [`LocalTransport`] does): happen drops
    /// the future unfinished when the [`close`](crate::Node::close) or
    /// [`shutdown`](crate::Happen::shutdown) awaiting it is cancelled.
    fn detach(&self, node: &NodeId) -> BoxFuture<'_, ()>;

    /// Delivers `event` to the node `target`, answering through `reply` if given.
    ///
    /// # Errors
    /// Errors known at once; the event was then not delivered.
    fn send(&self, target: &NodeId, event: Event, reply: Option<ReplySender>) -> Result<()>;

    /// Delivers `event` to every node that accepts its type, except nodes that take no
    /// broadcasts ([`Inbox::receives_broadcasts`]).
    ///
    /// # Errors
    /// [`ErrorKind::Transport`](crate::ErrorKind::Transport) when it cannot be published.
    fn broadcast(&self, event: Event) -> Result<()>;

    /// The backpressure state of `target`, if the transport knows it: what
    /// [`Node::ready`](crate::Node::ready) waits on. The default knows nothing (`None`), so
    /// `ready` resolves at once; a transport that can watch its targets (locally, or mirrored
    /// with [`pressure()`]) returns a receiver.
    ///
    /// ```
    /// # use std::sync::{Arc, Mutex};
    /// # use futures::future::BoxFuture;
    /// # use happen::NodeId;
    /// use happen::transport::{Inbox, LocalTransport, ReplySender, Transport};
    /// use happen::{Context, Event, Happen, NodeOptions, Pressure};
    /// use tokio::sync::watch;
    ///
    /// #[derive(Default)]
    /// struct Wrapped(LocalTransport);
    ///
    /// impl Transport for Wrapped {
    ///     // ... attach, detach, send and broadcast forward to `self.0` ...
    /// #     fn attach(&self, inbox: Inbox) -> BoxFuture<'_, happen::Result<()>> { self.0.attach(inbox) }
    /// #     fn detach(&self, node: &NodeId) -> BoxFuture<'_, ()> { self.0.detach(node) }
    /// #     fn send(&self, t: &NodeId, e: Event, r: Option<ReplySender>) -> happen::Result<()> { self.0.send(t, e, r) }
    /// #     fn broadcast(&self, e: Event) -> happen::Result<()> { self.0.broadcast(e) }
    ///     fn pressure(&self, target: &NodeId) -> Option<watch::Receiver<Pressure>> {
    ///         self.0.pressure(target) // without this, `ready` could not pace senders
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// let happen = Happen::builder().transport(Wrapped::default()).build()?;
    /// let slow = happen.node_with("slow", NodeOptions::new().max_concurrent(1).queue_limit(10)).await?;
    /// slow.on("job", |_e: Event, _c: Context| async {})?;
    /// let producer = happen.node("producer").await?;
    /// for i in 0..100 {
    ///     producer.ready(&slow).await?;
    ///     producer.tell(&slow, Event::new("job", i))?;
    /// }
    /// assert_eq!(slow.stats().rejected, 0);
    /// # Ok(()) }
    /// ```
    fn pressure(&self, target: &NodeId) -> Option<watch::Receiver<Pressure>> {
        let _ = target;
        None
    }

    /// Where this instance keeps stored state ([`Node::stored`](crate::Node::stored), views,
    /// global state): a [`StateStore`] other processes can reach. The default, `None`, gives
    /// each instance its own [`MemoryStore`].
    ///
    /// ```
    /// # use futures::future::BoxFuture;
    /// # use happen::NodeId;
    /// use std::sync::Arc;
    /// use happen::transport::{Inbox, LocalTransport, MemoryStore, ReplySender, StateStore, Transport};
    /// use happen::{Event, Happen};
    ///
    /// /// In-process delivery, state shared by every instance built with the same store.
    /// struct SharedState(LocalTransport, Arc<MemoryStore>);
    ///
    /// impl Transport for SharedState {
    /// #     fn attach(&self, inbox: Inbox) -> BoxFuture<'_, happen::Result<()>> { self.0.attach(inbox) }
    /// #     fn detach(&self, node: &NodeId) -> BoxFuture<'_, ()> { self.0.detach(node) }
    /// #     fn send(&self, t: &NodeId, e: Event, r: Option<ReplySender>) -> happen::Result<()> { self.0.send(t, e, r) }
    /// #     fn broadcast(&self, e: Event) -> happen::Result<()> { self.0.broadcast(e) }
    ///     // ... attach, detach, send and broadcast forward to `self.0` ...
    ///     fn state_store(&self) -> Option<Arc<dyn StateStore>> {
    ///         Some(self.1.clone())
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// let store = Arc::new(MemoryStore::new());
    /// let a = Happen::builder().transport(SharedState(LocalTransport::new(), store.clone())).build()?;
    /// let b = Happen::builder().transport(SharedState(LocalTransport::new(), store)).build()?;
    /// a.global().set("greeting", &"hi").await?;
    /// assert_eq!(b.global().get::<String>("greeting").await?.as_deref(), Some("hi"));
    /// # Ok(()) }
    /// ```
    fn state_store(&self) -> Option<Arc<dyn StateStore>> {
        None
    }

    /// Stops the transport (called by [`Happen::shutdown`](crate::Happen::shutdown) after the
    /// nodes have drained; also spawned when the last `Happen` handle is dropped without a
    /// shutdown). The default does nothing.
    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

pub use crate::error::ErrorParts;
pub use crate::store::{
    Change, Entry, GLOBAL_BUCKET, MemoryStore, STATE_KEY, StateStore, node_bucket, node_of_bucket,
    validate_key,
};
pub use crate::stream::channel::{ItemStream, StreamSender, channel as stream_channel};
pub use crate::stream::feed::{BroadcastFeed, BroadcastItems, FeedSubscription, StreamItem};
pub use crate::stream::oneshot::{ReplyReceiver, ReplySender, Response, reply_channel};

/// A [`Pressure`] built from its parts, for a transport that mirrors the state of a remote
/// node (see [`Transport::pressure`]): publish it through a `tokio::sync::watch` channel
/// whose receivers `pressure` hands out.
///
/// ```
/// let p = happen::transport::pressure(true, 80, 100);
/// assert!(p.under_pressure);
/// assert_eq!((p.queued, p.queue_limit), (80, 100));
/// ```
pub fn pressure(under_pressure: bool, queued: usize, queue_limit: usize) -> Pressure {
    Pressure::new(under_pressure, queued, queue_limit)
}

/// Appends `event` in Happen's wire JSON: byte for byte what `serde_json::to_writer(out,
/// event)` writes, about twice as fast — the strings that need no escape (ids, node ids,
/// most types and text) are copied as they are instead of looked up byte by byte. What a
/// transport sends as the body of an event.
///
/// ```
/// use happen::Event;
/// let event = Event::new("order.created", serde_json::json!({"id": 7}));
/// let mut body = Vec::new();
/// happen::transport::write_event(&event, &mut body);
/// assert_eq!(body, serde_json::to_vec(&event).unwrap());
/// ```
pub fn write_event(event: &Event, out: &mut Vec<u8>) {
    event.write_wire_json(out);
}

/// Appends `value` as `serde_json::to_writer(out, value)` writes it (compact), with
/// [`write_event`]'s fast path for strings. For a reply's value or a stream item.
///
/// ```
/// let value = serde_json::json!({"total": 42, "items": ["a", "b\"c"]});
/// let mut body = Vec::new();
/// happen::transport::write_value(&value, &mut body);
/// assert_eq!(body, serde_json::to_vec(&value).unwrap());
/// ```
pub fn write_value(value: &serde_json::Value, out: &mut Vec<u8>) {
    crate::json::write_value(out, value);
}

/// Marks `event` as decoded from `body`, a message received from another process: the
/// receiving node's security gate then treats it as foreign (its sender as claimed until a
/// signature proves it) and, for a signed event, verifies the signature against the
/// canonical form of these bytes rather than of a re-serialized event. A transport calls it
/// on every event it decodes; `durable` says the message came from a durable (JetStream)
/// delivery, whose redeliveries are not replays.
///
/// ```
/// use happen::Event;
/// use happen::security::body_hash;
///
/// let body = br#"{"type":"ping","context":{"causal":{"sender":"far","hash":"00"},"integrity":{"signature":"AA"}}}"#;
/// let mut event: Event = serde_json::from_slice(body).unwrap();
/// happen::transport::received(&mut event, body, false);
/// assert_eq!(event.hash(), Some("00")); // as received; the gate compares it with:
/// assert_eq!(body_hash(body).unwrap().len(), 64);
/// ```
pub fn received(event: &mut Event, body: &[u8], durable: bool) {
    crate::security::note_received(event, body, durable);
}
