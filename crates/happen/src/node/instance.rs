//! What a node needs from the instance that created it, without naming the instance.
//!
//! The instance (`Happen`) sits above nodes: it owns the registry of nodes and the transport.
//! A node reaches it through the [`Instance`] trait, one dynamic call for what goes through
//! the transport. What a send to a node handle of the same instance needs (is the instance
//! closed, may the event be admitted directly) is in [`Scope`], read without a dynamic call.

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::future::BoxFuture;
use tokio::sync::watch;

use super::{Node, Target};
use crate::admission::Pressure;
use crate::error::{Error, ErrorKind, Result};
use crate::event::Event;
use crate::stream::ReplySender;

/// The instance's side of routing, implemented by `Happen`'s shared state.
pub(crate) trait Instance: Send + Sync + 'static {
    /// Delivers `event` through the transport (the instance is known to be open).
    fn dispatch(&self, target: Target<'_>, event: Event, reply: Option<ReplySender>) -> Result<()>;

    /// Broadcasts `event` through the transport (the instance is known to be open).
    fn broadcast(&self, event: Event) -> Result<()>;

    /// The backpressure state of a target that is not a node handle of this instance.
    fn pressure_of(&self, target: &Target<'_>) -> Option<watch::Receiver<Pressure>>;

    /// The node `id` of this instance, if it exists.
    fn local_node(&self, id: &str) -> Option<Node>;

    /// Removes `node` from the registry, if it is still the node of its id.
    fn unregister(&self, node: &Node) -> bool;

    /// Detaches `node` from the transport (it stays open meanwhile, so what reached it is
    /// answered).
    fn detach<'a>(&'a self, node: &'a Node) -> BoxFuture<'a, ()>;
}

/// Instance-wide state every node of one instance shares.
pub(crate) struct Scope {
    closed: AtomicBool,
    /// The instance's state store (stored state, views, global state).
    pub(crate) store: Arc<crate::store::StoreHub>,
    /// Sends to a node handle of this instance are admitted directly (the in-process
    /// transport; another transport routes every send, so replicas elsewhere share them).
    pub(crate) direct: bool,
    /// Per-subscriber buffer of broadcast streams (`streams.broadcast_buffer`).
    pub(crate) broadcast_buffer: usize,
    cpu_threads: Option<usize>,
    cpu: OnceLock<Arc<rayon::ThreadPool>>,
}

impl Scope {
    pub(crate) fn new(
        direct: bool,
        broadcast_buffer: usize,
        cpu_threads: Option<usize>,
        store: Arc<crate::store::StoreHub>,
    ) -> Scope {
        Scope {
            closed: AtomicBool::new(false),
            store,
            direct,
            broadcast_buffer,
            cpu_threads,
            cpu: OnceLock::new(),
        }
    }

    #[inline]
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Marks the instance closed; `true` if it already was.
    pub(crate) fn close(&self) -> bool {
        self.closed.swap(true, Ordering::AcqRel)
    }

    /// Fails a send or broadcast after shutdown (the transport forgets its nodes then, so
    /// say why instead of `UnknownNode`).
    #[inline]
    pub(crate) fn check_open(&self, what: impl FnOnce() -> Error) -> Result<()> {
        if self.is_closed() {
            Err(what())
        } else {
            Ok(())
        }
    }

    /// The CPU pool, started on first use.
    pub(crate) fn cpu_pool(&self) -> Result<Arc<rayon::ThreadPool>> {
        if let Some(p) = self.cpu.get() {
            return Ok(p.clone());
        }
        let pool = Arc::new(super::cpu::build_pool(self.cpu_threads)?);
        Ok(self.cpu.get_or_init(|| pool).clone())
    }
}

/// The error of a send after shutdown.
pub(crate) fn closed_send(target: &Target<'_>) -> Error {
    Error::new(
        ErrorKind::ShutDown,
        format!(
            "this happen instance is shut down; nothing was sent to `{}`",
            target.id()
        ),
    )
    .with_node(target.id())
}

/// The error of a broadcast after shutdown.
pub(crate) fn closed_broadcast() -> Error {
    Error::new(
        ErrorKind::ShutDown,
        "this happen instance is shut down; nothing was broadcast",
    )
}
