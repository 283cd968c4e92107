#![doc = include_str!("../README.md")]
//!
//! # Modules
//! The crate root holds what most programs use (also in the [`prelude`]). The modules:
//! - [`event`]: events and their causal context ([`Event`], [`Causal`], [`EventType`]);
//! - [`pattern`]: event-type patterns ([`Pattern`](pattern::Pattern), [`domain`](pattern::domain),
//!   [`one_of`](pattern::one_of), ...) for [`Node::on`];
//! - [`flow`]: the Event Continuum ([`Flow`], [`IntoFlow`], [`Json`], [`Step`](flow::Step));
//! - [`stream`]: how streaming replies and broadcast streams behave, and the items a broadcast
//!   subscriber reads ([`BroadcastItems`](stream::BroadcastItems),
//!   [`StreamItem`](stream::StreamItem));
//! - [`liner`]: middleware around handlers ([`Liner`], [`line()`], [`Node::line`], the
//!   [`logging`](liner::logging) and [`shadow_mode`](liner::shadow_mode) liners);
//! - fan-out and batches, at the root: [`Node::send_all`] ([`SendAll`], [`AllReplies`]),
//!   [`Node::on_all`], [`Node::on_batch`], [`Node::send_batch`] ([`Batch`]);
//! - [`cpu`]: CPU-bound work off the async workers ([`cpu_bound`](cpu::cpu_bound));
//! - [`stored`]: node state that survives ([`Node::stored`], [`Context::stored`]: versions,
//!   compare-and-set updates, history, `when`, watch), views ([`Happen::view`]) and global
//!   state ([`Happen::global`]), kept where the transport says (NATS JetStream key-value with
//!   `happen-nats`, memory in process);
//! - [`config`]: configuration ([`Config`] and its sections, [`Limits`],
//!   [`NodePatterns`](config::NodePatterns), [`millis`](config::millis));
//! - [`security`]: node identity and signed events ([`SigningKey`](security::SigningKey),
//!   [`TrustRing`](security::TrustRing)), `accept_from` and policies
//!   ([`Security`](security::Security), [`Policy`](security::Policy)), checked before admission;
//! - [`transport`]: the implementor API — the [`Transport`](transport::Transport) trait, the
//!   in-process [`LocalTransport`](transport::LocalTransport), [`Inbox`](transport::Inbox),
//!   reply and stream channels;
//! - [`prelude`]: `use happen::prelude::*;`.

// The layers, bottom up: each module uses only the modules listed before it (CI checks that
// no import circle exists with `module-cycles.py`). See DESIGN.md, "Where things live".
mod error; // Error, ErrorKind
mod json; // strings and values written as serde_json writes them, faster

mod id; // NodeId, EventId, CorrelationId

pub mod event; // Event, Causal, EventType; patterns; the clock

pub mod config; // Config and its sections, Limits

pub mod security; // keys, trust ring, canonical JSON, the gates before admission

pub mod stream; // reply slot, item channel, broadcast feed

mod admission; // the per-node admission engine: limits, queues, pressure, stats

mod reply; // Reply, ReplyStream

mod store; // stored state: the StateStore trait, the in-memory store, typed handles

mod node; // Node, Context, Handler, Flow, Emitter, cpu, state; the node's runtime

pub mod transport; // the Transport trait, Inbox, the in-process transport

mod happen; // Happen: the instance

pub use crate::event::pattern;
pub use crate::node::{cpu, flow, liner};
pub use crate::store::stored;

pub use crate::admission::{NodeStats, PRESSURE_EVENT, Pressure};
pub use crate::config::{BatchAdmission, Config, Limits, PartialLimits, QueueStrategy};
pub use crate::error::{BoxError, Error, ErrorKind, Result};
pub use crate::event::{Causal, Event, EventType, Integrity, Origin};
pub use crate::happen::{Happen, HappenBuilder, PreparedNode};
pub use crate::id::{CorrelationId, EventId, NodeId};
pub use crate::node::{
    AllReplies, BATCH_EVENT, Batch, Context, Emitter, Flow, Handler, IntoFlow, Json, Liner, Node,
    NodeOptions, Ready, SendAll, SequentialKey, ShutdownReport, Target, line,
};
pub use crate::reply::{Outcome, Reply, ReplyStream, TypedStream};
pub use crate::security::schema_hash;

/// The names most programs need: `use happen::prelude::*;`.
///
/// ```
/// use happen::prelude::*;
///
/// async fn hello(event: Event, _ctx: Context) -> Result<Flow> {
///     Ok(Flow::done(format!("hello, {}", event.payload())))
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
/// let happen = Happen::new();
/// let node = happen.node_with("greeter", NodeOptions::new()).await?;
/// node.on("hello", hello)?;
/// assert_eq!(node.send(&node, Event::new("hello", "ada")).await?, r#"hello, "ada""#);
/// # Ok(()) }
/// ```
pub mod prelude {
    pub use crate::{
        Context, Emitter, Error, ErrorKind, Event, Flow, Happen, Json, Node, NodeOptions, Result,
    };
}

#[cfg(test)]
mod assertions {
    fn send_sync<T: Send + Sync + Clone + 'static>() {}
    #[test]
    fn public_handles_are_send_sync() {
        send_sync::<crate::Happen>();
        send_sync::<crate::Node>();
        send_sync::<crate::Context>();
        send_sync::<crate::Event>();
        send_sync::<crate::Error>();
        send_sync::<crate::Emitter>();
        send_sync::<crate::NodeOptions>();
    }

    fn send<T: Send + 'static>() {}
    #[test]
    fn reply_handles_are_send() {
        // Replies and their streams move into spawned tasks.
        send::<crate::Reply>();
        send::<crate::ReplyStream>();
        send::<crate::TypedStream<String>>();
        send::<crate::Outcome>();
    }
}
