//! [`LocalTransport`]: the embedded default, between the nodes of one process.

use std::collections::HashMap;
use std::fmt;

use futures::future::BoxFuture;
use parking_lot::RwLock;
use tokio::sync::watch;

use super::{Inbox, Transport};
use crate::admission::Pressure;
use crate::error::{Error, Result};
use crate::event::Event;
use crate::id::NodeId;
use crate::node::Node;
use crate::stream::{BroadcastRole, BroadcastSource, ReplySender};

/// The embedded default: delivers between nodes of one process without serialization.
///
/// [`Happen::new`](crate::Happen::new) and [`Happen::with_config`](crate::Happen::with_config)
/// use it without being asked, and so does a
/// [`HappenBuilder::transport`](crate::HappenBuilder::transport) given one: the instance calls
/// it directly (no dynamic dispatch, sends to a node handle admitted at once). Wrapped inside
/// a transport of your own, it is called through that transport (see the
/// [module docs](super) for an example).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
/// use happen::transport::LocalTransport;
/// use happen::{Context, Event, Happen};
///
/// let happen = Happen::builder().transport(LocalTransport::new()).build()?;
/// let echo = happen.node("echo").await?;
/// echo.on("say", |event: Event, _c: Context| async move { event.payload().clone() })?;
/// assert_eq!(echo.send("echo", Event::new("say", "hi")).await?, "hi");
/// # Ok(()) }
/// ```
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
            .filter(|i| i.node.receives_broadcasts())
            .filter_map(|i| {
                let step = i.node.lookup(event.event_type())?;
                Some((i.node.clone(), step.is_streaming()))
            })
            .collect();
        let admit = |node: Node, event: Event, role| {
            if let Err(e) = node.admit(event, None, role) {
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
        let roles: Vec<_> = receivers
            .iter()
            .map(|(_, streams)| {
                if *streams {
                    Some(BroadcastRole::Producer(source.clone()))
                } else {
                    source.subscribe().map(BroadcastRole::Subscriber)
                }
            })
            .collect();
        for ((node, _), role) in receivers.into_iter().zip(roles) {
            admit(node, event.clone(), role);
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
