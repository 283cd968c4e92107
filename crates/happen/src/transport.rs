//! The [`Transport`] trait: how events reach nodes, and the in-process implementation.
//!
//! # Contract
//! - **Attach.** When a node is created, the instance calls [`Transport::attach`] with the
//!   node's [`Inbox`]. From the moment `attach` resolves, events addressed to the node (direct
//!   and broadcast) must reach [`Inbox::deliver`].
//! - **Delivery.** [`Transport::send`] delivers one event to the node with the target id,
//!   wherever it lives. Errors known at once (no such node, queue full in-process, disconnected)
//!   are returned; the event was then not delivered. Otherwise exactly what the target's flow
//!   answers must reach `reply` (if given) as a [`Response`](crate::stream::Response) — including
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

use std::collections::HashMap;
use std::fmt;

use futures::future::BoxFuture;
use parking_lot::RwLock;
use tokio::sync::watch;

use crate::config::Limits;
use crate::engine::{NodeStats, Pressure};
use crate::error::{Error, Result};
use crate::event::Event;
use crate::id::NodeId;
use crate::node::Node;
use crate::stream::{BroadcastItems, BroadcastSource, FeedSubscription, ReplySender};

/// Moves events between nodes. See the [module docs](self) for the contract.
pub trait Transport: Send + Sync + 'static {
    /// A node was created at this instance; route its events to `inbox`.
    fn attach(&self, inbox: Inbox) -> BoxFuture<'_, Result<()>>;

    /// The node is being removed: stop routing to it, and resolve once the answers to what
    /// reached it before have been delivered (see the [module docs](self)).
    fn detach(&self, node: &NodeId) -> BoxFuture<'_, ()>;

    /// Delivers `event` to the node `target`, answering through `reply` if given.
    ///
    /// # Errors
    /// Errors known at once; the event was then not delivered.
    fn send(&self, target: &NodeId, event: Event, reply: Option<ReplySender>) -> Result<()>;

    /// Delivers `event` to every node that accepts its type.
    ///
    /// # Errors
    /// [`ErrorKind::Transport`](crate::ErrorKind::Transport) when it cannot be published.
    fn broadcast(&self, event: Event) -> Result<()>;

    /// The backpressure state of `target`, if the transport knows it.
    fn pressure(&self, target: &NodeId) -> Option<watch::Receiver<Pressure>> {
        let _ = target;
        None
    }

    /// Stops the transport (called by [`Happen::shutdown`](crate::Happen::shutdown) after the
    /// nodes have drained).
    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// A node's entrance, handed to a [`Transport`] by [`Transport::attach`].
#[derive(Clone)]
pub struct Inbox {
    node: Node,
}

impl Inbox {
    pub(crate) fn new(node: Node) -> Inbox {
        Inbox { node }
    }

    /// The node's id.
    pub fn id(&self) -> &NodeId {
        self.node.id()
    }

    /// Admits `event` into the node (start now, queue, or reject), answering through `reply`.
    ///
    /// # Errors
    /// [`ErrorKind::QueueFull`](crate::ErrorKind::QueueFull) or
    /// [`ErrorKind::ShutDown`](crate::ErrorKind::ShutDown); the event is then not admitted and
    /// `reply` was dropped unanswered.
    pub fn deliver(&self, event: Event, reply: Option<ReplySender>) -> Result<()> {
        self.node.admit(event, reply.map(|r| r.0), None)
    }

    /// Does the node have a handler for `event_type`?
    pub fn accepts(&self, event_type: &str) -> bool {
        self.node.accepts(event_type)
    }

    /// Does the node's handler for `event_type` stream (take an
    /// [`Emitter`](crate::Emitter))? For a broadcast, such a node produces the stream the other
    /// receivers read.
    pub fn streams(&self, event_type: &str) -> bool {
        self.node
            .lookup(event_type)
            .is_some_and(|step| step.is_streaming())
    }

    /// Admits a broadcast `event` whose stream is produced elsewhere: the node's flow reads
    /// the items of `items` through [`Context::items`](crate::Context::items).
    ///
    /// # Errors
    /// As [`deliver`](Inbox::deliver).
    pub fn deliver_with_items(&self, event: Event, items: FeedSubscription) -> Result<()> {
        self.node.admit(event, None, Some(items.0))
    }

    /// Admits a broadcast `event` that this node's streaming handler produces a stream for,
    /// and returns the items it produces (to forward to subscribers elsewhere). If the
    /// transport reads them slower than they are produced it sees
    /// [`StreamItem::Lagged`](crate::stream::StreamItem::Lagged), never blocks the producer.
    ///
    /// # Errors
    /// As [`deliver`](Inbox::deliver).
    pub fn deliver_producer(&self, event: Event) -> Result<BroadcastItems> {
        let source = BroadcastSource::new(self.node.broadcast_buffer());
        let tap = source
            .subscribe()
            .expect("a fresh broadcast source is unclaimed");
        self.node
            .admit(event.with_broadcast_source(source), None, None)?;
        Ok(BroadcastItems::new(tap))
    }

    /// The node's admission limits (a transport may tell remote senders, so they can pace
    /// themselves).
    pub fn limits(&self) -> &Limits {
        self.node.limits()
    }

    /// The node's counters now (for a transport that reports them to remote monitors, such
    /// as `happen nodes`).
    pub fn stats(&self) -> NodeStats {
        self.node.stats()
    }

    /// The node's current backpressure state.
    pub fn pressure(&self) -> Pressure {
        self.node.pressure()
    }

    /// The node's backpressure changes.
    pub fn watch_pressure(&self) -> watch::Receiver<Pressure> {
        self.node.watch_pressure()
    }

    /// Records a failure that nobody will observe (logged and counted at the node).
    pub fn report_unobserved(&self, err: &Error) {
        self.node.unobserved_failure(err);
    }
}

impl fmt::Debug for Inbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inbox").field("node", self.id()).finish()
    }
}

/// The embedded default: delivers between nodes of one process without serialization.
#[derive(Default)]
pub struct LocalTransport {
    nodes: RwLock<HashMap<NodeId, Inbox>>,
}

impl LocalTransport {
    /// An empty in-process transport.
    pub fn new() -> LocalTransport {
        LocalTransport::default()
    }

    pub(crate) fn node(&self, id: &NodeId) -> Option<Node> {
        self.nodes.read().get(id).map(|i| i.node.clone())
    }

    pub(crate) fn clear(&self) {
        self.nodes.write().clear();
    }
}

impl Transport for LocalTransport {
    fn attach(&self, inbox: Inbox) -> BoxFuture<'_, Result<()>> {
        self.nodes.write().insert(inbox.id().clone(), inbox);
        Box::pin(async { Ok(()) })
    }

    fn detach(&self, node: &NodeId) -> BoxFuture<'_, ()> {
        self.nodes.write().remove(node);
        Box::pin(async {})
    }

    fn send(&self, target: &NodeId, event: Event, reply: Option<ReplySender>) -> Result<()> {
        match self.node(target) {
            Some(node) => node.admit(event, reply.map(|r| r.0), None),
            None => Err(Error::unknown_node(target)),
        }
    }

    fn broadcast(&self, event: Event) -> Result<()> {
        // (node, does its matching handler stream?)
        let receivers: Vec<(Node, bool)> = self
            .nodes
            .read()
            .values()
            .filter_map(|i| {
                let step = i.node.lookup(event.event_type())?;
                Some((i.node.clone(), step.is_streaming()))
            })
            .collect();
        let admit = |node: Node, event: Event, items| {
            if let Err(e) = node.admit(event, None, items) {
                node.unobserved_failure(&e);
            }
        };
        let Some((producer, _)) = receivers.iter().find(|(_, streams)| *streams) else {
            for (node, _) in receivers {
                admit(node, event.clone(), None);
            }
            return Ok(());
        };
        // The broadcast carries a stream: every other receiver subscribes before any receiver
        // is admitted, so none misses the first items.
        let source = BroadcastSource::new(producer.broadcast_buffer());
        let subscriptions: Vec<_> = receivers
            .iter()
            .map(|(_, streams)| if *streams { None } else { source.subscribe() })
            .collect();
        let event = event.with_broadcast_source(source);
        for ((node, _), items) in receivers.into_iter().zip(subscriptions) {
            admit(node, event.clone(), items);
        }
        Ok(())
    }

    fn pressure(&self, target: &NodeId) -> Option<watch::Receiver<Pressure>> {
        self.node(target).map(|n| n.watch_pressure())
    }
}

impl fmt::Debug for LocalTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalTransport")
            .field("nodes", &self.nodes.read().len())
            .finish()
    }
}
