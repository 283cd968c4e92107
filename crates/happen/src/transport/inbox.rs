//! [`Inbox`]: a node's entrance, as a transport sees it.

use std::fmt;

use tokio::sync::watch;

use crate::admission::{NodeStats, Pressure};
use crate::config::Limits;
use crate::error::{Error, Result};
use crate::event::Event;
use crate::id::NodeId;
use crate::node::Node;
use crate::stream::{
    BroadcastItems, BroadcastRole, BroadcastSource, FeedSubscription, ReplySender,
};

/// A node's entrance, handed to a [`Transport`] by [`Transport::attach`].
#[derive(Clone)]
pub struct Inbox {
    pub(super) node: Node,
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
        self.node
            .admit(event, None, Some(BroadcastRole::Subscriber(items.0)))
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
            .admit(event, None, Some(BroadcastRole::Producer(source)))?;
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
