//! [`LocalTransport`]: the embedded default, between the nodes of one process.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use futures::future::BoxFuture;
use parking_lot::{Mutex, RwLock};
use tokio::sync::watch;

use super::{Inbox, Transport};
use crate::admission::Pressure;
use crate::error::{Error, Result};
use crate::event::Event;
use crate::id::{NodeId, SharedStr};
use crate::node::{Node, registrations};
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
    /// The receivers of the last broadcast's type (see [`Route`]).
    route: Mutex<Option<Route>>,
}

/// Which nodes take broadcasts of one event type (and whether their handler streams), kept
/// while no node attaches, detaches or changes its handlers: finding them asks every node's
/// registry (a lock, a hash and a comparison per node, ~650 instructions a broadcast to four
/// nodes of five).
struct Route {
    event_type: SharedStr,
    /// [`registrations`] when the route was found.
    registrations: u64,
    receivers: Arc<[(Node, bool)]>,
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
        let mut nodes = self.nodes.write();
        nodes.clear();
        *self.route.lock() = None;
    }

    /// The nodes taking broadcasts of `event`'s type: the last route when it is still
    /// right (same type, no attach, detach or handler change since), else found anew.
    fn receivers(&self, event: &Event) -> Arc<[(Node, bool)]> {
        // Read before the registries: a change during the search leaves an older count
        // with the route, so the next broadcast searches again.
        let registrations = registrations();
        // Under the nodes' read lock: attach and detach (which clear the route) wait.
        let nodes = self.nodes.read();
        if let Some(r) = &*self.route.lock()
            && r.registrations == registrations
            && r.event_type.same(event.event_type_shared())
        {
            return r.receivers.clone();
        }
        // Not under the route's lock: pattern predicates are user code.
        // (node, does its matching handler stream?)
        let receivers: Arc<[(Node, bool)]> = nodes
            .values()
            .filter(|i| i.node.receives_broadcasts())
            .filter_map(|i| {
                let step = i.node.lookup(event.event_type())?;
                Some((i.node.clone(), step.is_streaming()))
            })
            .collect();
        *self.route.lock() = Some(Route {
            event_type: event.event_type_shared().clone(),
            registrations,
            receivers: receivers.clone(),
        });
        receivers
    }
}

impl Transport for LocalTransport {
    fn attach(&self, inbox: Inbox) -> BoxFuture<'_, Result<()>> {
        let mut nodes = self.nodes.write();
        nodes.insert(inbox.id().clone(), inbox);
        *self.route.lock() = None;
        Box::pin(async { Ok(()) })
    }

    fn detach(&self, node: &NodeId) -> BoxFuture<'_, ()> {
        let mut nodes = self.nodes.write();
        nodes.remove(node);
        // (also lets go of the node: a route holds its handle)
        *self.route.lock() = None;
        Box::pin(async {})
    }

    fn send(&self, target: &NodeId, event: Event, reply: Option<ReplySender>) -> Result<()> {
        match self.node(target) {
            Some(node) => node.admit(event, reply.map(|r| r.0), None),
            None => Err(Error::unknown_node(target)),
        }
    }

    fn broadcast(&self, event: Event) -> Result<()> {
        let receivers = self.receivers(&event);
        let admit = |node: &Node, event: Event, role| {
            if let Err(e) = node.admit(event, None, role) {
                node.unobserved_failure(&e);
            }
        };
        let Some((producer, _)) = receivers.iter().find(|(_, streams)| *streams) else {
            for (node, _) in receivers.iter() {
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
        for ((node, _), role) in receivers.iter().zip(roles) {
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
