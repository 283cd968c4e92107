//! [`Happen`]: the instance that owns the configuration and the transport and creates nodes.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::watch;

use crate::config::Config;
use crate::engine::{Pressure, drive};
use crate::error::{Error, ErrorKind, Result};
use crate::event::Event;
use crate::id::NodeId;
use crate::node::{Node, NodeOptions, Target, validate_node_id};
use crate::stream::ReplySender;
use crate::transport::{Inbox, LocalTransport, Transport};

/// A Happen instance: creates nodes and connects them through a transport.
///
/// Cheap to clone (a handle). The in-process transport is the default; build with
/// [`Happen::builder`] to use another (such as `happen-nats`). Nodes must be created inside a
/// Tokio runtime (each node runs a driver task).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
/// use happen::{Config, Happen};
///
/// let mut config = Config::default();
/// config.concurrency.default.max_concurrent = 16;
/// let happen = Happen::init(config)?;
/// let node = happen.node("order-service").await?;
/// assert_eq!(node.limits().max_concurrent, 16);
/// assert!(happen.node("order-service").await.is_err()); // ids are unique
/// happen.shutdown(std::time::Duration::from_secs(5)).await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Happen {
    shared: Arc<HappenShared>,
}

pub(crate) struct HappenShared {
    config: Config,
    dispatch: Dispatch,
    nodes: Mutex<HashMap<NodeId, Node>>,
    closed: AtomicBool,
    cpu: std::sync::OnceLock<Arc<rayon::ThreadPool>>,
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
/// use happen::{Config, Happen, LocalTransport};
/// let happen = Happen::builder()
///     .config(Config::default())
///     .transport(LocalTransport::new())
///     .build()?;
/// # let _ = happen; Ok(()) }
/// ```
#[derive(Default)]
#[must_use]
pub struct HappenBuilder {
    config: Config,
    transport: Option<Arc<dyn Transport>>,
}

impl HappenBuilder {
    /// Uses `config` (validated by [`build`](HappenBuilder::build)).
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Uses `transport` instead of the in-process default.
    pub fn transport(mut self, transport: impl Transport) -> Self {
        self.transport = Some(Arc::new(transport));
        self
    }

    /// Uses a shared transport.
    pub fn transport_arc(mut self, transport: Arc<dyn Transport>) -> Self {
        self.transport = Some(transport);
        self
    }

    /// Validates the configuration and builds the instance.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidConfig`] naming the offending key.
    pub fn build(self) -> Result<Happen> {
        self.config.validate()?;
        let dispatch = match self.transport {
            None => Dispatch::Local(Arc::new(LocalTransport::new())),
            Some(t) => Dispatch::Custom(t),
        };
        Ok(Happen {
            shared: Arc::new(HappenShared {
                config: self.config,
                dispatch,
                nodes: Mutex::new(HashMap::new()),
                closed: AtomicBool::new(false),
                cpu: std::sync::OnceLock::new(),
            }),
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
    pub fn new() -> Happen {
        HappenBuilder::default()
            .build()
            .expect("the default configuration is valid")
    }

    /// An instance with `config` and the in-process transport.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidConfig`] naming the offending key.
    pub fn init(config: Config) -> Result<Happen> {
        HappenBuilder::default().config(config).build()
    }

    /// A builder (to choose the transport).
    pub fn builder() -> HappenBuilder {
        HappenBuilder::default()
    }

    /// The configuration in use.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// Creates the node `id` with limits from the configuration.
    ///
    /// # Errors
    /// [`ErrorKind::DuplicateNode`] if this instance already has a node `id`;
    /// [`ErrorKind::InvalidConfig`] for an invalid id (empty, whitespace, `*`, `>`);
    /// [`ErrorKind::ShutDown`] after shutdown; transport errors from attaching.
    pub async fn node(&self, id: impl Into<NodeId>) -> Result<Node> {
        self.node_with(id, NodeOptions::default()).await
    }

    /// Creates the node `id` with per-node options over the configuration.
    ///
    /// # Errors
    /// As [`node`](Happen::node), plus invalid option values.
    pub async fn node_with(&self, id: impl Into<NodeId>, options: NodeOptions) -> Result<Node> {
        let id = id.into();
        validate_node_id(&id)?;
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(Error::new(
                ErrorKind::ShutDown,
                "this happen instance is shut down; create a new one",
            ));
        }
        let node = Node::create(id.clone(), self.shared.clone(), options)?;
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
        tokio::spawn(drive(node.clone()));
        let attached = match &self.shared.dispatch {
            Dispatch::Local(t) => t.attach(Inbox::new(node.clone())).await,
            Dispatch::Custom(t) => t.attach(Inbox::new(node.clone())).await,
        };
        if let Err(e) = attached {
            self.shared.nodes.lock().remove(&id);
            node.engine().close(true);
            return Err(e);
        }
        Ok(node)
    }

    /// The node `id` of this instance, if it exists.
    pub fn get_node(&self, id: &str) -> Option<Node> {
        self.shared.local_node(id)
    }

    /// Stops accepting events (senders get [`ErrorKind::ShutDown`]), lets running and queued
    /// flows finish for up to `deadline`, then cancels what is left (their senders get
    /// `ShutDown`), stops the transport and returns.
    ///
    /// With a transport other than the in-process one, the transport first stops routing to
    /// the nodes ([`Transport::detach`]); events that reached a node before that still run
    /// (within `deadline`) and are answered.
    ///
    /// # Cancel safety
    /// Sends from this instance are refused from the first poll; dropping the future early
    /// skips the waiting and leaves remaining flows running until they finish.
    pub async fn shutdown(&self, deadline: Duration) {
        self.shared.closed.store(true, Ordering::Release);
        let nodes: Vec<Node> = self.shared.nodes.lock().values().cloned().collect();
        let until = tokio::time::Instant::now() + deadline;
        if let Dispatch::Custom(t) = &self.shared.dispatch {
            // The transport stops routing to the nodes first (so new events go to replicas
            // elsewhere or fail fast) and delivers the answers to what already reached them;
            // the nodes stay open for that until the deadline, then what is left is cancelled
            // (answered `ShutDown`).
            let mut detached = std::pin::pin!(futures::future::join_all(
                nodes.iter().map(|n| t.detach(n.id()))
            ));
            if tokio::time::timeout_at(until, detached.as_mut())
                .await
                .is_err()
            {
                for n in &nodes {
                    n.engine().close(true);
                }
                detached.await;
            }
        }
        for n in &nodes {
            n.engine().close(false);
        }
        let all_drained =
            futures::future::join_all(nodes.iter().map(|n| n.engine().wait_drained()));
        if tokio::time::timeout_at(until, all_drained).await.is_err() {
            tracing::warn!(
                ?deadline,
                "shutdown deadline passed; cancelling the remaining flows"
            );
            for n in &nodes {
                n.engine().close(true);
            }
            futures::future::join_all(nodes.iter().map(|n| n.engine().wait_drained())).await;
        }
        match &self.shared.dispatch {
            Dispatch::Local(t) => {
                t.shutdown().await;
                t.clear();
            }
            Dispatch::Custom(t) => t.shutdown().await,
        }
        self.shared.nodes.lock().clear();
    }
}

impl HappenShared {
    pub(crate) fn config(&self) -> &Config {
        &self.config
    }

    pub(crate) fn local_node(&self, id: &str) -> Option<Node> {
        self.nodes.lock().get(id).cloned()
    }

    /// The CPU pool, started on first use.
    pub(crate) fn cpu_pool(&self) -> Result<Arc<rayon::ThreadPool>> {
        if let Some(p) = self.cpu.get() {
            return Ok(p.clone());
        }
        let pool = Arc::new(crate::cpu::build_pool(self.config.cpu.threads)?);
        Ok(self.cpu.get_or_init(|| pool).clone())
    }

    pub(crate) fn dispatch(
        &self,
        target: Target<'_>,
        event: Event,
        reply: Option<ReplySender>,
    ) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            // The transport forgets its nodes at shutdown; say why instead of `UnknownNode`.
            return Err(Error::new(
                ErrorKind::ShutDown,
                format!(
                    "this happen instance is shut down; nothing was sent to `{}`",
                    target.id()
                ),
            )
            .with_node(target.id()));
        }
        match &self.dispatch {
            Dispatch::Local(t) => match target {
                Target::Node(node) if std::ptr::eq(&*node.shared.happen, self) => {
                    node.admit(event, reply.map(|r| r.0), None)
                }
                target => t.send(target.id(), event, reply),
            },
            Dispatch::Custom(t) => t.send(target.id(), event, reply),
        }
    }

    pub(crate) fn broadcast(&self, event: Event) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::new(
                ErrorKind::ShutDown,
                "this happen instance is shut down; nothing was broadcast",
            ));
        }
        match &self.dispatch {
            Dispatch::Local(t) => t.broadcast(event),
            Dispatch::Custom(t) => t.broadcast(event),
        }
    }

    pub(crate) fn pressure_of(&self, target: &Target<'_>) -> Option<watch::Receiver<Pressure>> {
        match (&self.dispatch, target) {
            (Dispatch::Local(_), Target::Node(n)) if std::ptr::eq(&*n.shared.happen, self) => {
                Some(n.watch_pressure())
            }
            (Dispatch::Local(t), target) => t.pressure(target.id()),
            (Dispatch::Custom(t), target) => t.pressure(target.id()),
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
