//! The connection as the transport sees it: `system.connection-status` events for this
//! process's nodes, and the bounded buffer of sends made while disconnected.
//!
//! The async-nats client reports connection changes as events (see
//! `NatsTransport::connect`); the transport's event task calls [`disconnected`],
//! [`connected`] and [`closed`] here. While the client is not connected, `send`, `tell` and
//! `broadcast` are accepted up to `transport.nats.disconnected_buffer` messages per outage
//! ([`Shared::admit_outbound`]): they wait, in order, in the outgoing buffer and the client's
//! command buffer and are written to the server after the client reconnected (and
//! resubscribed). Beyond the bound they fail at once with
//! [`ErrorKind::Transport`](happen::ErrorKind::Transport).

use std::sync::atomic::{AtomicUsize, Ordering};

use happen::transport::Inbox;
use happen::{Error, ErrorKind, Event, Result};
use parking_lot::Mutex;
use serde_json::json;
use tokio::sync::watch;

use crate::stats::inc;
use crate::transport::Shared;

/// The type of the event this process's nodes receive when the connection to NATS changes:
/// `{"status": "disconnected" | "reconnected" | "closed", "reason": "...", "server": "..."}`.
///
/// A node subscribes to it like to any event (`node.on("system.connection-status", ...)`);
/// it is delivered by the transport to the nodes of this process only (it is not sent over
/// NATS). See `WIRE.md`, "Connection status".
pub const CONNECTION_STATUS_EVENT: &str = "system.connection-status";

/// The connection's state as the transport's event task last saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LinkState {
    Up,
    Down,
    /// The client gave up reconnecting.
    Gone,
}

/// The connection state kept by the transport.
pub(crate) struct Link {
    /// The state as the transport's event task last saw it.
    state: watch::Sender<LinkState>,
    /// Sends accepted since the connection was lost (reset when it is back).
    buffered: AtomicUsize,
    /// The server of the current (or last) connection: `name (host:port)`.
    server: Mutex<String>,
}

impl Link {
    /// A link for a client connected to `server`.
    pub(crate) fn new(server: &async_nats::ServerInfo) -> Link {
        Link {
            state: watch::Sender::new(LinkState::Up),
            buffered: AtomicUsize::new(0),
            server: Mutex::new(describe(server)),
        }
    }

    /// Waits until the client is connected: the transport's event task saw it connect, or
    /// the client itself says so (looked at every [`STATE_RECHECK`], in case its event queue
    /// dropped an event).
    ///
    /// # Errors
    /// [`ErrorKind::Transport`] once the client gave up reconnecting.
    pub(crate) async fn wait_up(&self, client: &async_nats::Client) -> Result<()> {
        let mut state = self.state.subscribe();
        loop {
            let now = *state.borrow_and_update();
            match now {
                LinkState::Up => return Ok(()),
                LinkState::Gone => {
                    return Err(Error::new(
                        ErrorKind::Transport,
                        "the nats client gave up reconnecting (transport.nats.reconnect.max_attempts); restart the process",
                    ));
                }
                LinkState::Down => {}
            }
            if client.connection_state() == async_nats::connection::State::Connected {
                return Ok(());
            }
            // a change, or the next look at the client's own state
            let _ = tokio::time::timeout(STATE_RECHECK, state.changed()).await;
        }
    }
}

/// How often [`Link::wait_up`] looks at the client's own connection state.
const STATE_RECHECK: std::time::Duration = std::time::Duration::from_millis(50);

/// `name (host:port)` of a server, or what of it is known.
fn describe(info: &async_nats::ServerInfo) -> String {
    match (info.server_name.is_empty(), info.host.is_empty()) {
        (false, false) => format!("{} ({}:{})", info.server_name, info.host, info.port),
        (true, false) => format!("{}:{}", info.host, info.port),
        (false, true) => info.server_name.clone(),
        (true, true) => "unknown".to_owned(),
    }
}

impl Shared {
    /// Admits an outgoing `send`, `tell` or `broadcast`: at once while connected; while not,
    /// as one of at most `disconnected_buffer` messages buffered during this outage.
    ///
    /// # Errors
    /// [`ErrorKind::ShutDown`] after shutdown; [`ErrorKind::Transport`] while disconnected
    /// with the buffer full (or `disconnected_buffer = 0`).
    pub(crate) fn admit_outbound(&self) -> Result<()> {
        let err = match self.check_connected() {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == ErrorKind::Transport => e,
            Err(e) => return Err(e),
        };
        let bound = self.config.disconnected_bound();
        let taken = self
            .link
            .buffered
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < bound).then_some(n + 1)
            });
        if taken.is_ok() {
            inc(&self.counters.buffered_while_disconnected);
            return Ok(());
        }
        inc(&self.counters.rejected_while_disconnected);
        if bound == 0 {
            return Err(err);
        }
        Err(Error::new(
            ErrorKind::Transport,
            format!(
                "not connected to nats and {bound} messages already wait for the reconnect (transport.nats.disconnected_buffer); nothing was sent: retry after the reconnect (NatsTransport::wait_connected) or raise the bound"
            ),
        ))
    }

    /// The inboxes of this process's nodes that have a handler for `event_type`.
    fn inboxes_accepting(&self, event_type: &str) -> Vec<Inbox> {
        self.local_inboxes()
            .into_iter()
            .filter(|i| i.accepts(event_type))
            .collect()
    }
}

/// Delivers a `system.connection-status` event to every node of this process that handles
/// it; a node that cannot take it (queue full, stopping) has the failure logged and counted.
fn announce(shared: &Shared, status: &str, reason: &str, server: &str) {
    let inboxes = shared.inboxes_accepting(CONNECTION_STATUS_EVENT);
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

/// The client lost its connection (it reconnects on its own).
pub(crate) fn disconnected(shared: &Shared) {
    shared.link.state.send_replace(LinkState::Down);
    let server = shared.link.server.lock().clone();
    let buffering = match shared.config.disconnected_bound() {
        0 => "sends fail until then".to_owned(),
        n => format!("up to {n} sends are buffered until then"),
    };
    announce(
        shared,
        "disconnected",
        &format!("the connection to the nats server {server} was lost; reconnecting ({buffering})"),
        &server,
    );
}

/// The client is connected (again). Nothing is announced for the first connection, which
/// happens before any node exists.
pub(crate) fn connected(shared: &Shared) {
    let server = describe(&shared.client.server_info());
    *shared.link.server.lock() = server.clone();
    let buffered = shared.link.buffered.swap(0, Ordering::AcqRel);
    let before = shared.link.state.send_replace(LinkState::Up);
    if before == LinkState::Up {
        return;
    }
    tracing::info!(target: "happen_nats", server = %server, buffered, "reconnected to nats");
    announce(
        shared,
        "reconnected",
        &format!(
            "reconnected to the nats server {server}; {buffered} messages buffered while disconnected are being sent"
        ),
        &server,
    );
}

/// The client gave up reconnecting (`reconnect.max_attempts`): nothing more can be sent.
pub(crate) fn closed(shared: &Shared, why: &str) {
    shared.link.state.send_replace(LinkState::Gone);
    let server = shared.link.server.lock().clone();
    let lost = shared.link.buffered.swap(0, Ordering::AcqRel);
    if lost > 0 {
        tracing::error!(target: "happen_nats", lost, "the nats client gave up reconnecting; messages buffered while disconnected are lost");
    }
    announce(
        shared,
        "closed",
        &format!(
            "{why}; the nats client stopped reconnecting ({lost} buffered messages were not sent); restart the process or raise transport.nats.reconnect.max_attempts"
        ),
        &server,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_are_described_by_what_is_known() {
        let mut info = async_nats::ServerInfo {
            server_name: "n1".to_owned(),
            host: "127.0.0.1".to_owned(),
            port: 4333,
            ..Default::default()
        };
        assert_eq!(describe(&info), "n1 (127.0.0.1:4333)");
        info.server_name.clear();
        assert_eq!(describe(&info), "127.0.0.1:4333");
        info.host.clear();
        assert_eq!(describe(&info), "unknown");
    }
}
