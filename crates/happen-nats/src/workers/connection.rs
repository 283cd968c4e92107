//! The connection task: follows the client's connection events. It counts slow consumers
//! and disconnects, fails the requests whose replies can no longer arrive, moves the
//! [`Link`] state, and tells this process's nodes with a `system.connection-status` event
//! ([`CONNECTION_STATUS_EVENT`]).

use std::sync::Arc;

use happen::Event;
use serde_json::json;
use tokio::sync::mpsc;

use crate::core::link::Link;
use crate::core::nodes::LocalNodes;
use crate::core::outbox::Outbox;
use crate::core::requests::Requests;
use crate::core::stats::{Counters, inc};
use crate::workers::durable::Durable;

/// The type of the event this process's nodes receive when the connection to NATS changes:
/// `{"status": "disconnected" | "reconnected" | "closed", "reason": "...", "server": "..."}`.
///
/// A node subscribes to it like to any event; it is delivered by the transport to the nodes
/// of this process only (it is not sent over NATS). See `WIRE.md`, "Connection status".
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
/// # let server = test_support::NatsServer::start();
/// # let url = server.url();
/// use happen::{Context, Event, Happen};
/// use happen_nats::{CONNECTION_STATUS_EVENT, NatsConfig, NatsTransport};
///
/// let transport = NatsTransport::connect(NatsConfig::with_server(url)).await?;
/// let happen = Happen::builder().transport(transport).build()?;
/// let monitor = happen.node("monitor").await?;
/// monitor.on(CONNECTION_STATUS_EVENT, |e: Event, _ctx: Context| async move {
///     let status = e.payload()["status"].as_str().unwrap_or("?").to_owned();
///     eprintln!("nats: {status}: {}", e.payload()["reason"]);
/// })?;
/// # happen.shutdown(std::time::Duration::from_secs(1)).await;
/// # Ok(()) }
/// ```
pub const CONNECTION_STATUS_EVENT: &str = "system.connection-status";

/// What the connection task uses.
pub(crate) struct Connection {
    pub(crate) link: Arc<Link>,
    /// Requests waiting for a reply fail when the connection is lost.
    pub(crate) requests: Arc<Requests>,
    /// Answers written just before a loss are published again after the reconnect.
    pub(crate) outbox: Arc<Outbox>,
    /// The nodes to tell.
    pub(crate) nodes: Arc<LocalNodes>,
    pub(crate) counters: Arc<Counters>,
    /// `<prefix>.node.`: a refused publish under it names the node a request was for.
    pub(crate) node_subjects: String,
    /// Durable delivery: after a reconnect, the answers of durable sends still waiting are
    /// asked for again.
    pub(crate) durable: Option<Arc<Durable>>,
}

/// Follows the client's connection events until the client is gone.
pub(crate) async fn run(
    c: Arc<Connection>,
    mut events: mpsc::UnboundedReceiver<async_nats::Event>,
) {
    while let Some(event) = events.recv().await {
        match event {
            async_nats::Event::SlowConsumer(sid) => {
                inc(&c.counters.slow_consumer);
                metrics::counter!("happen_nats_slow_consumer_total").increment(1);
                tracing::warn!(target: "happen_nats", sid, "a subscription overflowed and dropped messages; raise transport.nats.subscription_capacity");
            }
            async_nats::Event::Disconnected => {
                c.outbox.connection_lost();
                inc(&c.counters.disconnects);
                tracing::warn!(target: "happen_nats", "disconnected from nats; reconnecting");
                c.requests.fail_pending(
                    "the connection to nats was lost before the reply arrived; the event may or may not have been handled",
                );
                c.disconnected();
            }
            async_nats::Event::Connected => {
                tracing::info!(target: "happen_nats", "connected to nats");
                let again = c.connected();
                let replayed = c.outbox.replay_lost();
                if replayed > 0 {
                    tracing::info!(target: "happen_nats", replayed, "answers written just before the connection was lost are published again");
                }
                if again && let Some(d) = &c.durable {
                    d.reconnected();
                }
            }
            async_nats::Event::ClientError(async_nats::ClientError::MaxReconnects) => {
                tracing::error!(target: "happen_nats", "the nats client gave up reconnecting");
                c.closed("reached transport.nats.reconnect.max_attempts");
            }
            async_nats::Event::ServerError(async_nats::ServerError::Other(msg)) => {
                match refused_publish(&msg) {
                    Some(subject) => c.refused(subject, &msg),
                    None => {
                        tracing::warn!(target: "happen_nats", error = %msg, "nats server error")
                    }
                }
            }
            other => tracing::info!(target: "happen_nats", event = %other, "nats connection event"),
        }
    }
}

/// The subject of a server's `Permissions Violation for Publish to "<subject>"`.
fn refused_publish(msg: &str) -> Option<&str> {
    let at = msg
        .to_ascii_lowercase()
        .find("permissions violation for publish to")?;
    let rest = &msg[at + "permissions violation for publish to".len()..];
    let subject = rest
        .trim()
        .trim_matches(|c| c == '"' || c == '\'' || c == ' ');
    (!subject.is_empty()).then_some(subject)
}

impl Connection {
    /// The server refused this process's user a publish (its subject permissions): the
    /// requests waiting for a node on that subject fail at once with `Auth` instead of
    /// timing out; a tell there is lost (logged).
    fn refused(&self, subject: &str, msg: &str) {
        tracing::warn!(target: "happen_nats", subject, error = %msg, "the nats server refused a publish: this process's user may not publish there");
        if let Some(node) = subject.strip_prefix(self.node_subjects.as_str()) {
            self.requests.fail_target(
                node,
                &format!(
                    "the nats server refused this process's user permission to publish to `{subject}` ({msg}); allow it in the user's `permissions.publish` on the server if this process should reach node `{node}`"
                ),
            );
        }
    }

    /// The client lost its connection (it reconnects on its own).
    fn disconnected(&self) {
        let server = self.link.went_down();
        let buffering = match self.link.bound() {
            0 => "sends fail until then".to_owned(),
            n => format!("up to {n} sends are buffered until then"),
        };
        self.announce(
            "disconnected",
            &format!(
                "the connection to the nats server {server} was lost; reconnecting ({buffering})"
            ),
            &server,
        );
    }

    /// The client is connected (again); `true` after a loss. Nothing is announced for the
    /// first connection, which happens before any node exists.
    fn connected(&self) -> bool {
        let Some((server, buffered)) = self.link.came_up() else {
            return false;
        };
        tracing::info!(target: "happen_nats", server = %server, buffered, "reconnected to nats");
        self.announce(
            "reconnected",
            &format!(
                "reconnected to the nats server {server}; {buffered} messages buffered while disconnected are being sent"
            ),
            &server,
        );
        true
    }

    /// The client gave up reconnecting (`reconnect.max_attempts`): nothing more can be sent.
    fn closed(&self, why: &str) {
        let (server, lost) = self.link.gave_up();
        if lost > 0 {
            tracing::error!(target: "happen_nats", lost, "the nats client gave up reconnecting; messages buffered while disconnected are lost");
        }
        self.announce(
            "closed",
            &format!(
                "{why}; the nats client stopped reconnecting ({lost} buffered messages were not sent); restart the process or raise transport.nats.reconnect.max_attempts"
            ),
            &server,
        );
    }

    /// Delivers a `system.connection-status` event to every node of this process that
    /// handles it; a node that cannot take it (queue full, stopping) has the failure logged
    /// and counted.
    fn announce(&self, status: &str, reason: &str, server: &str) {
        let inboxes = self.nodes.accepting(CONNECTION_STATUS_EVENT);
        if inboxes.is_empty() {
            return;
        }
        // decoded from the wire form: a fresh event id, correlation id and timestamp
        let event: Event = match serde_json::from_value(json!({
            "type": CONNECTION_STATUS_EVENT,
            "payload": {"status": status, "reason": reason, "server": server},
        })) {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(target: "happen_nats", error = %e, "cannot build a connection-status event");
                return;
            }
        };
        for inbox in inboxes {
            if let Err(err) = inbox.deliver(event.clone(), None) {
                inbox.report_unobserved(&err);
            }
        }
    }
}
