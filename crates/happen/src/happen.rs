//! [`Happen`]: the instance that owns the configuration and the transport and creates nodes.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use parking_lot::Mutex;
use tokio::sync::watch;

use crate::admission::Pressure;
use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};
use crate::event::Event;
use crate::id::NodeId;
use crate::node::{
    Instance, Node, NodeOptions, Scope, ShutdownReport, Target, close_nodes, hard_deadline,
    validate_node_id,
};
use crate::store::stored::{self, Global, Versioned};
use crate::store::{MemoryStore, StoreHub};
use crate::stream::ReplySender;
use crate::transport::{Inbox, LocalTransport, Transport};

/// A Happen instance: creates nodes and connects them through a transport.
///
/// Cheap to clone (a handle). Three ways to make one, all the same type:
/// - [`Happen::new`]: defaults, in-process transport;
/// - [`Happen::with_config`]: a [`Config`] (from code or a file), in-process transport;
/// - [`Happen::builder`]: a config and another transport, such as `happen-nats`:
///   `Happen::builder().config(config).transport(NatsTransport::from_config(&config).await?).build()?`.
///
/// Nodes must be created inside a Tokio runtime (each node runs on it); creating one outside
/// fails with [`ErrorKind::NoRuntime`]. Call [`shutdown`](Happen::shutdown) to stop
/// gracefully; dropping the last `Happen` handle shuts the instance down at once (queued and
/// waiting flows are cancelled and their senders get [`ErrorKind::ShutDown`]). [`Node`]
/// handles do not keep the instance alive: keep a `Happen` handle as long as its nodes work.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
/// use std::time::Duration;
/// use happen::{Config, Happen};
///
/// let mut config = Config::default();
/// config.concurrency.default.max_concurrent = 16;
/// let happen = Happen::with_config(config)?;
/// let node = happen.node("order-service").await?;
/// assert_eq!(node.limits().max_concurrent, 16);
/// assert!(happen.node("order-service").await.is_err()); // ids are unique
/// happen.shutdown(Duration::from_secs(5)).await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Happen {
    shared: Arc<HappenShared>,
    /// Shared by every clone of this handle (nodes and flows do not hold it): when the last
    /// clone is dropped, the instance shuts down.
    _owner: Arc<Owner>,
}

/// Shuts the instance down when the last [`Happen`] handle goes away.
struct Owner(std::sync::Weak<HappenShared>);

impl Drop for Owner {
    fn drop(&mut self) {
        if let Some(shared) = self.0.upgrade() {
            shared.close_now();
        }
    }
}

pub(crate) struct HappenShared {
    config: Config,
    dispatch: Dispatch,
    nodes: Mutex<HashMap<NodeId, Node>>,
    /// Closed flag, CPU pool and routing facts shared with every node.
    scope: Arc<Scope>,
}

enum Dispatch {
    /// The in-process transport, called directly (no dynamic dispatch on the hot path).
    Local(Arc<LocalTransport>),
    Custom(Arc<dyn Transport>),
}

/// Builds a [`Happen`] with a configuration and a transport.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
/// use happen::transport::LocalTransport;
/// use happen::{Config, Happen};
///
/// let config = Config::from_toml_str("[flow]\nrequest_timeout_ms = 5000")?;
/// let happen = Happen::builder()
///     .config(config)
///     .transport(LocalTransport::new()) // or `happen_nats::NatsTransport`
///     .build()?;
/// assert_eq!(happen.config().flow.request_timeout.as_secs(), 5);
/// # Ok(()) }
/// ```
#[derive(Default)]
#[must_use]
pub struct HappenBuilder {
    config: Config,
    transport: Option<Dispatch>,
}

impl HappenBuilder {
    /// Uses `config` (validated by [`build`](HappenBuilder::build)); without it, the default
    /// configuration.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Uses `transport` instead of the in-process default (see
    /// [`happen::transport`](crate::transport) for writing one).
    pub fn transport<T: Transport>(mut self, transport: T) -> Self {
        // The in-process transport keeps its direct calls however it was chosen.
        let any: Box<dyn std::any::Any> = Box::new(transport);
        self.transport = Some(match any.downcast::<LocalTransport>() {
            Ok(local) => Dispatch::Local(Arc::new(*local)),
            Err(any) => match any.downcast::<T>() {
                Ok(custom) => Dispatch::Custom(Arc::new(*custom)),
                Err(_) => unreachable!("a box of T downcasts to T"),
            },
        });
        self
    }

    /// Validates the configuration and builds the instance.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidConfig`] naming the offending key.
    pub fn build(self) -> Result<Happen> {
        self.config.validate()?;
        let dispatch = self
            .transport
            .unwrap_or_else(|| Dispatch::Local(Arc::new(LocalTransport::new())));
        let store = match &dispatch {
            Dispatch::Local(_) => None,
            Dispatch::Custom(t) => t.state_store(),
        }
        .unwrap_or_else(|| Arc::new(MemoryStore::new()));
        let scope = Arc::new(Scope::new(
            matches!(dispatch, Dispatch::Local(_)),
            self.config.streams.broadcast_buffer,
            self.config.cpu.threads,
            Arc::new(StoreHub::new(store, self.config.state.clone())),
        ));
        let shared = Arc::new(HappenShared {
            config: self.config,
            dispatch,
            nodes: Mutex::new(HashMap::new()),
            scope,
        });
        Ok(Happen {
            _owner: Arc::new(Owner(Arc::downgrade(&shared))),
            shared,
        })
    }
}

impl fmt::Debug for HappenBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HappenBuilder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Default for Happen {
    fn default() -> Self {
        Happen::new()
    }
}

impl Happen {
    /// An instance with the default configuration and the in-process transport.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// use happen::{Context, Event, Happen};
    ///
    /// let happen = Happen::new();
    /// let echo = happen.node("echo").await?;
    /// echo.on("say", |event: Event, _ctx: Context| async move { event.payload().clone() })?;
    /// assert_eq!(echo.send(&echo, Event::new("say", "hi")).await?, "hi");
    /// # Ok(()) }
    /// ```
    pub fn new() -> Happen {
        HappenBuilder::default()
            .build()
            .expect("the default configuration is valid")
    }

    /// An instance with `config` and the in-process transport.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// use happen::{Config, ErrorKind, Happen};
    ///
    /// let config = Config::from_toml_str(r#"
    ///     [concurrency.patterns."api-*"]
    ///     max_concurrent = 8
    /// "#)?;
    /// let happen = Happen::with_config(config)?;
    /// assert_eq!(happen.node("api-orders").await?.limits().max_concurrent, 8);
    ///
    /// let mut bad = Config::default();
    /// bad.streams.buffer = 0;
    /// assert_eq!(Happen::with_config(bad).unwrap_err().kind(), ErrorKind::InvalidConfig);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`ErrorKind::InvalidConfig`] naming the offending key.
    pub fn with_config(config: Config) -> Result<Happen> {
        HappenBuilder::default().config(config).build()
    }

    /// A builder (to choose the transport); see [`HappenBuilder`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// use happen::transport::LocalTransport;
    /// use happen::{Config, Happen};
    ///
    /// let happen = Happen::builder()
    ///     .config(Config::default())
    ///     .transport(LocalTransport::new())
    ///     .build()?;
    /// let node = happen.node("n").await?;
    /// assert_eq!(node.limits().max_concurrent, 100); // the default configuration
    /// # Ok(()) }
    /// ```
    pub fn builder() -> HappenBuilder {
        HappenBuilder::default()
    }

    /// The configuration in use.
    ///
    /// ```
    /// use std::time::Duration;
    /// use happen::{Config, Happen};
    ///
    /// let mut config = Config::default();
    /// config.flow.request_timeout = Duration::from_secs(3);
    /// let happen = Happen::with_config(config)?;
    /// assert_eq!(happen.config().flow.request_timeout, Duration::from_secs(3));
    /// # Ok::<(), happen::Error>(())
    /// ```
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// Creates the node `id` with limits from the configuration. The node takes events as
    /// soon as this resolves; register its handlers with [`Node::on`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// use happen::{ErrorKind, Happen};
    ///
    /// let happen = Happen::new();
    /// let orders = happen.node("orders").await?;
    /// assert_eq!(orders.id(), "orders");
    ///
    /// let err = happen.node("orders").await.unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::DuplicateNode);
    /// let err = happen.node("has space").await.unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::InvalidConfig);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`ErrorKind::DuplicateNode`] if this instance already has a node `id`;
    /// [`ErrorKind::InvalidConfig`] for an invalid id (empty, whitespace, `*`, `>`);
    /// [`ErrorKind::NoRuntime`] outside a Tokio runtime;
    /// [`ErrorKind::ShutDown`] after shutdown; transport errors from attaching.
    ///
    /// # Cancel safety
    /// As [`node_with`](Happen::node_with).
    pub async fn node(&self, id: impl Into<NodeId>) -> Result<Node> {
        self.node_with(id, NodeOptions::default()).await
    }

    /// Creates the node `id` with per-node options over the configuration (see
    /// [`NodeOptions`] for an example).
    ///
    /// # Errors
    /// As [`node`](Happen::node), plus [`ErrorKind::InvalidConfig`] for invalid option values
    /// (a zero `max_concurrent`, `queue_limit` or `stream_buffer`, a threshold outside (0, 1]).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// use happen::{ErrorKind, Happen, NodeOptions};
    ///
    /// let happen = Happen::new();
    /// let err = happen.node_with("n", NodeOptions::new().max_concurrent(0)).await.unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::InvalidConfig);
    /// assert!(happen.find_node("n").is_none()); // nothing was created
    /// # Ok(()) }
    /// ```
    ///
    /// # Cancel safety
    /// Cancel-safe: if the future is dropped before it resolves (for example while a slow
    /// transport attaches the node), the half-made node is removed again, so creating the
    /// same id later succeeds.
    pub async fn node_with(&self, id: impl Into<NodeId>, options: NodeOptions) -> Result<Node> {
        self.prepare_with(id, options)?.start().await
    }

    /// Creates the node `id` without making it reachable yet: register its handlers (a
    /// [`PreparedNode`] derefs to its [`Node`]), then [`start`](PreparedNode::start) it. A
    /// node made with [`node`](Happen::node) is reachable from the moment it is made, so an
    /// event that arrives before its handler is registered fails with
    /// [`ErrorKind::NoHandler`] — over NATS, a replica restarting among others would answer
    /// a share of the requests that way until its handlers are in. A prepared node takes
    /// nothing until it starts, with every handler in place.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// use happen::{Context, ErrorKind, Event, Happen};
    ///
    /// let happen = Happen::new();
    /// let client = happen.node("client").await?;
    /// let orders = happen.prepare("orders")?;
    /// orders.on("order.place", |_e: Event, _c: Context| async { "placed" })?;
    /// // not reachable until it starts
    /// let err = client.send("orders", Event::new("order.place", ())).await.unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::UnknownNode);
    ///
    /// let orders = orders.start().await?;
    /// assert_eq!(client.send(&orders, Event::new("order.place", ())).await?, "placed");
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`node`](Happen::node), except transport errors, which [`start`](PreparedNode::start)
    /// returns.
    pub fn prepare(&self, id: impl Into<NodeId>) -> Result<PreparedNode> {
        self.prepare_with(id, NodeOptions::default())
    }

    /// [`prepare`](Happen::prepare) with per-node options (see [`node_with`](Happen::node_with)).
    ///
    /// # Errors
    /// As [`node_with`](Happen::node_with), except transport errors, which
    /// [`start`](PreparedNode::start) returns.
    pub fn prepare_with(
        &self,
        id: impl Into<NodeId>,
        options: NodeOptions,
    ) -> Result<PreparedNode> {
        let id = id.into();
        validate_node_id(&id)?;
        if self.shared.scope.is_closed() {
            return Err(Error::new(
                ErrorKind::ShutDown,
                "this happen instance is shut down; create a new one",
            ));
        }
        let node = Node::create(
            id.clone(),
            self.shared.clone(),
            self.shared.scope.clone(),
            &self.shared.config,
            options,
        )?;
        {
            let mut nodes = self.shared.nodes.lock();
            if nodes.contains_key(&id) {
                return Err(Error::new(
                    ErrorKind::DuplicateNode,
                    format!(
                        "a node `{id}` already exists in this instance; node ids must be unique"
                    ),
                )
                .with_node(&id));
            }
            nodes.insert(id.clone(), node.clone());
        }
        Ok(PreparedNode {
            shared: self.shared.clone(),
            node,
            started: false,
        })
    }

    /// The node `id` of this instance, if it exists (nodes of other processes are not
    /// found here: a send by id reaches them).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// let happen = happen::Happen::new();
    /// let orders = happen.node("orders").await?;
    /// assert_eq!(happen.find_node("orders").map(|n| n.id().clone()), Some(orders.id().clone()));
    /// assert!(happen.find_node("nobody").is_none());
    /// # Ok(()) }
    /// ```
    pub fn find_node(&self, id: &str) -> Option<Node> {
        self.shared.local_node(id)
    }

    /// A view into node `id`'s stored state ([`Node::stored`]), wherever the node runs: its
    /// state and revision, or `None` when nothing is stored for that id. Read-only; see
    /// [`stored`](crate::stored).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidPayload`] when the state is not an `S`; the store's errors.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// let happen = happen::Happen::new();
    /// let inventory = happen.node("inventory").await?;
    /// inventory.stored::<u32>().update(|n| *n = 12).await?;
    /// assert_eq!(happen.view::<u32>("inventory").await?.map(|v| v.value), Some(12));
    /// assert_eq!(happen.view::<u32>("unknown").await?, None);
    /// # Ok(()) }
    /// ```
    pub async fn view<S: serde::de::DeserializeOwned + Default>(
        &self,
        id: &str,
    ) -> Result<Option<Versioned<S>>> {
        stored::view(&self.shared.scope.store, id).await
    }

    /// [`view`](Happen::view) of several nodes at once (read concurrently): the ids that
    /// have state, with it, in the order given (the reference's `views.collect`).
    ///
    /// # Errors
    /// As [`view`](Happen::view), for any of them.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// let happen = happen::Happen::new();
    /// for (id, n) in [("a", 1), ("b", 2)] {
    ///     happen.node(id).await?.stored::<u32>().update(|v| *v = n).await?;
    /// }
    /// let all = happen.collect::<u32>(&["a", "b", "c"]).await?;
    /// let seen: Vec<(&str, u32)> = all.iter().map(|(id, v)| (id.as_str(), v.value)).collect();
    /// assert_eq!(seen, [("a", 1), ("b", 2)]); // `c` has no state
    /// # Ok(()) }
    /// ```
    pub async fn collect<S: serde::de::DeserializeOwned + Default>(
        &self,
        ids: &[&str],
    ) -> Result<Vec<(NodeId, Versioned<S>)>> {
        stored::collect(&self.shared.scope.store, ids).await
    }

    /// System-wide state shared by every process of the system (see [`Global`]).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// let happen = happen::Happen::new();
    /// happen.global().set("feature.dark_mode", &true).await?;
    /// assert_eq!(happen.global().get::<bool>("feature.dark_mode").await?, Some(true));
    /// # Ok(()) }
    /// ```
    pub fn global(&self) -> Global {
        Global::new(self.shared.scope.store.clone(), None)
    }

    /// Stops accepting events (senders get [`ErrorKind::ShutDown`]), lets running and queued
    /// flows finish for up to `grace`, then cancels what is left (their senders get
    /// `ShutDown`), stops the transport and returns.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// use std::time::Duration;
    /// use happen::{Context, ErrorKind, Event, Happen};
    ///
    /// let happen = Happen::new();
    /// let worker = happen.node("worker").await?;
    /// worker.on("work", |_e: Event, _c: Context| async {
    ///     tokio::time::sleep(Duration::from_millis(10)).await;
    ///     "done"
    /// })?;
    /// let reply = worker.send(&worker, Event::new("work", ()));
    /// happen.shutdown(Duration::from_secs(5)).await; // the running flow finishes first
    /// assert_eq!(reply.await?, "done");
    /// let err = worker.send(&worker, Event::new("work", ())).await.unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::ShutDown);
    /// # Ok(()) }
    /// ```
    ///
    /// With a transport other than the in-process one, the transport first stops routing to
    /// the nodes ([`Transport::detach`]); events that reached a node before that still run
    /// (within `grace`) and are answered.
    ///
    /// It returns in time whatever the transport does (its server gone, slow or unreachable):
    /// at most `grace` plus a quarter of it (and never more than 500 ms beyond `grace`). What
    /// could not be finished by then — flows cancelled, nodes the transport had not detached,
    /// a transport that had not shut down — is logged and counted in the [`ShutdownReport`],
    /// so a process can exit (and be restarted by its supervisor) during an outage.
    ///
    /// # Panics
    /// Panics if polled outside a Tokio runtime with timers enabled (the grace period is a
    /// Tokio timer).
    ///
    /// # Cancel safety
    /// Sends from this instance are refused from the first poll; dropping the future early
    /// skips the waiting and leaves remaining flows running until they finish, and the
    /// transport is not stopped.
    pub async fn shutdown(&self, grace: Duration) -> ShutdownReport {
        self.shared.scope.close();
        let nodes: Vec<Node> = self.shared.nodes.lock().values().cloned().collect();
        let until = tokio::time::Instant::now() + grace;
        let hard = hard_deadline(until, grace);
        let mut report = match &self.shared.dispatch {
            // The in-process transport forgets a node at once: nothing to detach.
            Dispatch::Local(_) => close_nodes(&nodes, None, until, hard).await,
            Dispatch::Custom(t) => {
                close_nodes(&nodes, Some(&|n| t.detach(n.id())), until, hard).await
            }
        };
        match &self.shared.dispatch {
            Dispatch::Local(t) => {
                t.shutdown().await;
                t.clear();
            }
            Dispatch::Custom(t) => {
                if tokio::time::timeout_at(hard, t.shutdown()).await.is_err() {
                    tracing::warn!(
                        ?grace,
                        "the transport did not shut down in time; giving up on it"
                    );
                    report.transport_unfinished = true;
                }
            }
        }
        self.shared.nodes.lock().clear();
        report
    }
}

/// A node made by [`Happen::prepare`], not reachable until [`start`](PreparedNode::start)ed:
/// register its handlers and liners through it (it derefs to [`Node`]). Dropped without
/// starting (or while starting), the node is removed again, so the id can be used later.
#[must_use = "a prepared node takes no event until it is started"]
pub struct PreparedNode {
    shared: Arc<HappenShared>,
    node: Node,
    started: bool,
}

impl PreparedNode {
    /// Makes the node reachable (attaches it to the transport) and returns it.
    ///
    /// # Errors
    /// Transport errors from attaching (see [`Happen::node`]).
    ///
    /// # Cancel safety
    /// Cancel-safe: if the future is dropped before it resolves, the half-made node is
    /// removed again, as for [`Happen::node_with`].
    pub async fn start(mut self) -> Result<Node> {
        let inbox = Inbox::new(self.node.clone());
        match &self.shared.dispatch {
            Dispatch::Local(t) => t.attach(inbox).await?,
            Dispatch::Custom(t) => t.attach(inbox).await?,
        }
        self.started = true;
        Ok(self.node.clone())
    }
}

impl std::ops::Deref for PreparedNode {
    type Target = Node;
    fn deref(&self) -> &Node {
        &self.node
    }
}

impl fmt::Debug for PreparedNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PreparedNode")
            .field("id", self.node.id())
            .finish_non_exhaustive()
    }
}

impl Drop for PreparedNode {
    fn drop(&mut self) {
        if !self.started {
            // a start may have been cancelled half way through attaching
            if self.shared.unregister(&self.node) {
                self.shared
                    .detach_later(vec![self.node.id().clone()], false);
            }
            self.node.close_now(true);
        }
    }
}

impl HappenShared {
    /// Detaches `ids` in the background (from `Drop`, which cannot wait), then stops the
    /// transport if `then_shutdown`.
    fn detach_later(&self, ids: Vec<NodeId>, then_shutdown: bool) {
        match &self.dispatch {
            Dispatch::Local(t) => {
                for id in &ids {
                    // The in-process transport's detach is ready at once.
                    let detached = futures::FutureExt::now_or_never(t.detach(id));
                    debug_assert!(detached.is_some());
                }
            }
            Dispatch::Custom(t) => {
                let t = t.clone();
                match tokio::runtime::Handle::try_current() {
                    Ok(rt) => {
                        rt.spawn(async move {
                            for id in &ids {
                                t.detach(id).await;
                            }
                            if then_shutdown {
                                t.shutdown().await;
                            }
                        });
                    }
                    Err(_) => tracing::warn!(
                        nodes = ids.len(),
                        "dropped outside a Tokio runtime: the transport could not be told to stop routing to these nodes; call `shutdown` before dropping the last handle"
                    ),
                }
            }
        }
    }

    /// Shuts down at once: the last `Happen` handle was dropped (without `shutdown`).
    fn close_now(&self) {
        if self.scope.close() && self.nodes.lock().is_empty() {
            return; // shut down already
        }
        let nodes: Vec<Node> = self.nodes.lock().drain().map(|(_, n)| n).collect();
        for n in &nodes {
            n.close_now(true);
        }
        if let Dispatch::Local(t) = &self.dispatch {
            t.clear();
        }
        self.detach_later(nodes.iter().map(|n| n.id().clone()).collect(), true);
    }

    pub(crate) fn local_node(&self, id: &str) -> Option<Node> {
        self.nodes.lock().get(id).cloned()
    }
}

impl Instance for HappenShared {
    fn dispatch(&self, target: Target<'_>, event: Event, reply: Option<ReplySender>) -> Result<()> {
        match &self.dispatch {
            Dispatch::Local(t) => t.send(target.id(), event, reply),
            Dispatch::Custom(t) => t.send(target.id(), event, reply),
        }
    }

    fn broadcast(&self, event: Event) -> Result<()> {
        match &self.dispatch {
            Dispatch::Local(t) => t.broadcast(event),
            Dispatch::Custom(t) => t.broadcast(event),
        }
    }

    fn pressure_of(&self, target: &Target<'_>) -> Option<watch::Receiver<Pressure>> {
        match &self.dispatch {
            Dispatch::Local(t) => t.pressure(target.id()),
            Dispatch::Custom(t) => t.pressure(target.id()),
        }
    }

    fn local_node(&self, id: &str) -> Option<Node> {
        HappenShared::local_node(self, id)
    }

    fn unregister(&self, node: &Node) -> bool {
        let mut nodes = self.nodes.lock();
        match nodes.get(node.id()) {
            Some(n) if Arc::ptr_eq(&n.shared, &node.shared) => nodes.remove(node.id()).is_some(),
            _ => false,
        }
    }

    fn detach<'a>(&'a self, node: &'a Node) -> BoxFuture<'a, ()> {
        match &self.dispatch {
            Dispatch::Local(t) => t.detach(node.id()),
            Dispatch::Custom(t) => t.detach(node.id()),
        }
    }
}

impl fmt::Debug for Happen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Happen")
            .field("nodes", &self.shared.nodes.lock().len())
            .finish_non_exhaustive()
    }
}
