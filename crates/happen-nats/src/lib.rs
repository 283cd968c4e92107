//! The NATS transport for [`happen`]: the same application code, nodes in many processes.
//!
//! ```
//! use happen::{Config, Context, Event, Happen};
//! use happen_nats::NatsTransport;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
//! # let server = test_support::NatsServer::start();
//! # let url = server.url();
//! let config = Config::from_toml_str(&format!(r#"
//! [transport.nats]
//! servers = ["{url}"]
//! "#))?;
//! let transport = NatsTransport::from_config(&config).await?;
//! let happen = Happen::builder().config(config).transport(transport).build()?;
//! // "greeter" may live in any process connected to the same server; here, in this one
//! let greeter = happen.node("greeter").await?;
//! greeter.on("greet", |e: Event, _ctx: Context| async move {
//!     format!("hello, {}", e.payload().as_str().unwrap_or("stranger"))
//! })?;
//! let client = happen.node("client").await?;
//! let greeting = client.send("greeter", Event::new("greet", "ada")).await?;
//! assert_eq!(greeting, "hello, ada");
//! # happen.shutdown(std::time::Duration::from_secs(1)).await;
//! # Ok(()) }
//! ```
//!
//! The instance is built as every [`happen::Happen`] is, with
//! [`Happen::builder`](happen::Happen::builder); the transport comes first because connecting
//! is async. [`NatsTransport::from_config`] reads `[transport.nats]` of a happen
//! configuration (and takes its `flow.request_timeout` as the default request timeout);
//! [`NatsTransport::connect`] takes a [`NatsConfig`] built in code. The transport is a cheap
//! handle: keep a clone for its [`stats`](NatsTransport::stats) or
//! [`discover`](NatsTransport::discover).
//!
//! # What goes over the wire
//! Events are the reference implementation's JSON on `<prefix>.node.<id>` (direct) and
//! `<prefix>.broadcast`; replies carry the raw JSON final value, and status, errors, streams and
//! pressure travel in `Happen-*` headers. See [`wire_format`] (`WIRE.md`) for every detail.
//!
//! # Delivery semantics
//! - **Durable nodes** (opt-in, [`DurableConfig`]): events to the node ids named in
//!   `[transport.nats.durable]` are stored in a JetStream stream (message id = event id, server
//!   dedup window default 5 min) and pulled by the node only as fast as its admission limits
//!   allow; acknowledged after the flow, redelivered with back-off on failure, dead-lettered to
//!   `<prefix>.dlq.<node-id>` with the error after `max_deliveries`. **At-least-once** (default)
//!   or **exactly-once effects** (at-least-once delivery plus a record of completed event ids:
//!   a redelivered completed event is acknowledged without running again). A `send` to a
//!   durable node returns the flow's value as usual; while disconnected, durable sends are
//!   buffered (`outbound_buffer`) and published after the reconnect, and a waiting durable
//!   request keeps waiting: an answer published meanwhile is asked for again after the
//!   reconnect (replicas keep their durable answers for the request timeout; an exactly-once
//!   record answers too), or the send fails at once with `transport` when its event ran and
//!   no replica holds the answer any more. Every process needs the same `durable` settings.
//!   Broadcasts are never durable. See `WIRE.md`, "Durable delivery".
//! - **Stored state** ([`happen::stored`]): node state, views and global state live in
//!   JetStream key-value buckets (`node-<id>`, key `state`, raw JSON; `happen-global-state`),
//!   laid out as NATS key-value lays them out, so they survive restarts and every process (and
//!   a TS reference node) reads them. Writes are compare-and-set on the revision; they need a
//!   server with JetStream. See `WIRE.md`, "Stored state".
//! - **At most once** for every other node. Core NATS does not store messages: an event
//!   published while no process hosts its target is lost (a `send` then fails fast with
//!   [`ErrorKind::UnknownNode`](happen::ErrorKind::UnknownNode) from NATS "no responders"; a
//!   `tell` or a broadcast is dropped silently by the server).
//! - **Disconnected.** While the client is disconnected, `send`, `tell` and `broadcast` are
//!   buffered, in order, up to `disconnected_buffer` messages per outage (default 8,192, or
//!   `outbound_buffer` if smaller) and written to the server once the client has reconnected
//!   and resubscribed; beyond the bound they fail at once with [`ErrorKind::Transport`](happen::ErrorKind::Transport) (the
//!   message names the key; [`NatsTransport::wait_connected`] waits for the reconnect). With
//!   `disconnected_buffer = 0` every send fails at once while disconnected. A buffered request
//!   keeps its own timeout. Requests waiting for a reply when the connection drops fail with
//!   `Transport` (the event may or may not have been handled), and so may a request made in
//!   the instant before the transport noticed the drop. Core NATS still applies once the
//!   buffer is written: a buffered `tell` to a node whose process has not reconnected yet is
//!   dropped by the server (a request gets `UnknownNode`); messages the client had already
//!   written into the lost connection are gone. Durable delivery is JetStream's job.
//! - **Connection status.** Nodes of this process with a handler for
//!   [`CONNECTION_STATUS_EVENT`] (`system.connection-status`) receive
//!   `{"status": "disconnected" | "reconnected" | "closed", "reason", "server"}` when the
//!   connection drops, comes back (possibly to another server of a cluster) or is given up
//!   (`reconnect.max_attempts`). Local only: the event does not travel over NATS.
//! - **Clusters.** Give every server of a NATS cluster in `servers`: when the connected
//!   server dies the client moves to another one (tested with a 3-server cluster: the requests
//!   in flight fail with `Transport`, later ones succeed; tells in between are buffered).
//! - **Local sends travel through the server too**, so replicas of a node id in other
//!   processes share them (a NATS queue group per node id). Broadcasts reach each node id once
//!   (a queue group per node id on the broadcast subject), whichever replica takes it.
//! - **No silent loss on our side.** Subscriptions buffer `subscription_capacity` messages
//!   (default 1,048,576); overflow is dropped by the client and counted
//!   ([`NatsStats::slow_consumer`]). Bad incoming messages are answered with an error when they
//!   have a reply subject, logged and counted ([`NatsStats`]).
//! - **Broadcasts are paced by the receiving node's backpressure.** While a node is under
//!   pressure (or its queue is full) its process stops reading the node's broadcast
//!   subscription and resumes when the node drains, so a burst waits in the subscription buffer
//!   instead of being rejected with `QueueFull`. A broadcast is only dropped when that buffer
//!   itself overflows (counted as a slow-consumer drop). Requests are never held back: a full
//!   node answers them with `QueueFull` at once, the admission contract to remote senders; a
//!   `tell` to a full node is rejected and counted at the node.
//! - **Shutdown and detach lose no answers.** A stopping node first stops taking new events
//!   (confirmed by a round trip through the server) without dropping what the server already
//!   routed to it; what it admitted finishes (or is cancelled at the shutdown deadline and
//!   answered `ShutDown`) and every answer is flushed to the server before `detach` returns.
//!   Requests that reach it after that are relayed to another replica, or answered
//!   [`ErrorKind::UnknownNode`](happen::ErrorKind::UnknownNode) when none is left. See
//!   `WIRE.md`, "Stopping a node".
//! - **Paced sends to remote nodes.** [`Node::ready`](happen::Node::ready) on a node of
//!   another process waits while this process's requests in flight to it exceed its limits or
//!   it reports pressure: a producer that awaits `ready` before each send never overruns the
//!   target's queue from one process. See `WIRE.md`, "Backpressure and pacing", for the exact
//!   guarantee (and what holds with several producer processes).
//! - **Outgoing.** `send`, `tell` and `broadcast` never block: messages wait, in order, in a
//!   bounded buffer (`outbound_buffer`) for the task that hands them to the client. When it is
//!   full they fail at once with [`ErrorKind::Transport`](happen::ErrorKind::Transport);
//!   [`NatsTransport::ready`] waits for room, to pace a producer.
//! - **Streams** are credit-based: the consumer grants `stream_window` items, the producer never
//!   has more in flight; dropping the consumer sends `cancel` and the remote flow is cancelled.
//! - **Broadcast streams**: a broadcast marked as a stream (its type is in `stream_types`, or a
//!   node of the broadcasting process streams it) that reaches a streaming handler in any
//!   process is read by every other receiving node through `ctx.items()`, each with its own
//!   buffer; a subscriber that falls behind, or subscribed late, gets `StreamItem::Lagged`; the
//!   producer never waits. See `WIRE.md`, "Broadcast streams".
//!
//! # Modules
//! - [`config`]: `[transport.nats]` settings, durable delivery's included
//!   ([`NatsConfig`], [`DurableConfig`]);
//! - [`discover`]: which processes serve which nodes, with limits and live counters;
//! - [`tap`]: every event under a prefix, decoded, for tools;
//! - [`wire_format`]: the wire format (`WIRE.md`).
//!
//! Inside the crate the layers run one way: `config` (settings) → `wire` (the codec) →
//! `pacing` → `core` (the outgoing buffer, requests, link, local nodes, counters) →
//! `workers` (serve, replies, streams, discovery, connection, pressure, durable, tap) →
//! `transport` ([`NatsTransport`], which builds the parts and hands each worker what it
//! needs).

mod core;
mod pacing;
mod transport;
mod wire;
mod workers;

pub mod config;

/// Discovery: which processes serve which nodes, with their limits and live counters (what
/// `happen nodes` shows); ask with [`NatsTransport::discover`]. See `WIRE.md`, "Discovery".
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
/// # let server = test_support::NatsServer::start();
/// # let url = server.url();
/// use std::time::Duration;
/// use happen::Happen;
/// use happen_nats::{NatsConfig, NatsTransport};
///
/// // a process serving a node (usually another one)
/// let worker = NatsTransport::connect(NatsConfig::with_server(url.clone())).await?;
/// let happen = Happen::builder().transport(worker).build()?;
/// let _billing = happen.node("billing").await?;
///
/// let transport = NatsTransport::connect(NatsConfig::with_server(url)).await?;
/// let (wait, quiet) = (Duration::from_secs(2), happen_nats::discover::QUIET);
/// for process in transport.discover(wait, quiet).await? {
///     for node in &process.nodes {
///         println!("{} at {}: {} active, {} queued", node.id, process.replica, node.active, node.queued);
///         assert_eq!(node.id, "billing");
///     }
/// }
/// # happen.shutdown(Duration::from_secs(1)).await;
/// # Ok(()) }
/// ```
pub mod discover {
    pub use crate::wire::discover::{NodeInfo, ProcessInfo};
    pub use crate::workers::discover::QUIET;
}

/// Watching a happen system's traffic: every event sent, told or broadcast under the
/// transport's prefix, decoded (what `happen tap` and `happen trace` show). For tools and
/// tests; start one with [`NatsTransport::tap`] or [`NatsTransport::tap_broadcasts`], whose
/// docs have examples.
pub mod tap {
    pub use crate::workers::tap::{Tap, TapKind, Tapped, Undecodable};
}

/// Completion records: the end, duration and outcome of the flow of a tell or a broadcast
/// at each node that took it, for watchers such as `happen web` (opt-in with
/// `transport.nats.completion_records`; see [`CompletionRecords`] and `WIRE.md`,
/// "Completion records").
pub mod completion {
    pub use crate::wire::completion::{
        Completion, CompletionError, WATCH_EVERY, WATCH_TTL, records_subject, watch_subject,
    };
}

/// The wire format on NATS, for writing a compatible client in another language: subjects,
/// the event JSON, the `Happen-*` headers, error bodies, streams, pressure, discovery and
/// durable delivery. This module holds no items; it is `WIRE.md`.
#[doc = include_str!("../WIRE.md")]
pub mod wire_format {}

pub use crate::config::{
    AuthConfig, CompletionRecords, DeliveryMode, DurableConfig, DurableNode, LivenessConfig,
    NatsConfig, ReconnectConfig, TlsConfig,
};
pub use crate::core::stats::NatsStats;
pub use crate::transport::NatsTransport;
pub use crate::workers::connection::CONNECTION_STATUS_EVENT;

/// What an application cannot name: the codec, the discovery subject, the durable headers
/// and the round-trip test hooks are the transport's own (compile-fail doctests; issue 18).
///
/// ```compile_fail
/// use happen_nats::wire::decode_event; // private: use `happen_nats::tap`
/// ```
///
/// ```compile_fail
/// let _ = happen_nats::discover::subject("happen"); // private
/// ```
///
/// ```compile_fail
/// let _ = happen_nats::durable::headers::REPLY_TO; // private (and `durable` is gone)
/// ```
///
/// ```compile_fail
/// async fn hold(t: happen_nats::NatsTransport) {
///     t.hold_round_trips(true); // a cfg(test) hook of the crate's own unit tests
/// }
/// ```
///
/// ```compile_fail
/// // gone: connect with `NatsTransport::from_config`, then `Happen::builder().transport(..)`
/// let _ = happen_nats::init;
/// ```
///
/// ```compile_fail
/// fn subjects(t: &happen_nats::NatsTransport) {
///     let _ = t.subjects(); // private: the subjects are the wire format's (see `wire_format`)
/// }
/// ```
///
/// The public paths compile:
///
/// ```
/// use happen_nats::discover::{NodeInfo, ProcessInfo, QUIET};
/// use happen_nats::tap::{Tap, TapKind, Tapped, Undecodable};
/// use happen_nats::{DeliveryMode, DurableConfig, DurableNode, NatsConfig, NatsStats};
/// use happen_nats::config::{AuthConfig, ReconnectConfig, TlsConfig};
/// ```
#[cfg(doctest)]
pub struct PrivateSurface;

#[cfg(test)]
mod assertions {
    fn send_sync<T: Send + Sync + Clone + 'static>() {}
    #[test]
    fn public_handles_are_send_sync() {
        send_sync::<crate::NatsTransport>();
        send_sync::<crate::NatsConfig>();
    }
}
