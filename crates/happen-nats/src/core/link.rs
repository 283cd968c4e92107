//! The connection as the transport sees it: up, down (the client reconnects by itself),
//! given up (`reconnect.max_attempts`) or shut down, the server it is connected to, and the
//! bound on sends accepted while disconnected.
//!
//! While the client is not connected, `send`, `tell` and `broadcast` are accepted up to
//! `transport.nats.disconnected_buffer` messages per outage ([`Link::admit`]): they wait, in
//! order, in the outgoing buffer and the client's command buffer and are written to the
//! server after the client reconnected (and resubscribed). Beyond the bound they fail at once
//! with [`ErrorKind::Transport`]. The connection task (`workers::connection`) moves the state
//! and tells this process's nodes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_nats::Client;
use async_nats::connection::State;
use happen::{Error, ErrorKind, Result};
use parking_lot::Mutex;
use tokio::sync::watch;

use super::shut_down;
use super::stats::{Counters, inc};

/// The connection's state as the connection task last saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LinkState {
    Up,
    Down,
    /// The client gave up reconnecting.
    Gone,
}

/// The connection state kept by the transport (see the module docs).
pub(crate) struct Link {
    client: Client,
    /// The state as the connection task last saw it.
    state: watch::Sender<LinkState>,
    /// Sends accepted since the connection was lost (reset when it is back).
    buffered: AtomicUsize,
    /// The most sends accepted per outage (`NatsConfig::disconnected_bound`).
    bound: usize,
    /// The server of the current (or last) connection: `name (host:port)`.
    server: Mutex<String>,
    /// The transport is shut down.
    closed: AtomicBool,
    counters: Arc<Counters>,
}

/// How often [`Link::wait_up`] looks at the client's own connection state.
const STATE_RECHECK: Duration = Duration::from_millis(50);

impl Link {
    /// A link for a connected client, buffering at most `bound` sends per outage.
    pub(crate) fn new(client: Client, bound: usize, counters: Arc<Counters>) -> Link {
        let server = describe(&client.server_info());
        Link {
            client,
            state: watch::Sender::new(LinkState::Up),
            buffered: AtomicUsize::new(0),
            bound,
            server: Mutex::new(server),
            closed: AtomicBool::new(false),
            counters,
        }
    }

    /// The most sends accepted per outage.
    pub(crate) fn bound(&self) -> usize {
        self.bound
    }

    /// Has the transport shut down?
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// The transport shuts down: nothing more is sent.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    /// Waits until the client is connected: the connection task saw it connect, or the
    /// client itself says so (looked at every [`STATE_RECHECK`], in case its event queue
    /// dropped an event).
    ///
    /// # Errors
    /// [`ErrorKind::Transport`] once the client gave up reconnecting.
    pub(crate) async fn wait_up(&self) -> Result<()> {
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
            if self.client.connection_state() == State::Connected {
                return Ok(());
            }
            // a change, or the next look at the client's own state
            let _ = tokio::time::timeout(STATE_RECHECK, state.changed()).await;
        }
    }

    /// Can something be sent now?
    ///
    /// # Errors
    /// [`ErrorKind::ShutDown`] after shutdown; [`ErrorKind::Transport`] while the client is
    /// not connected.
    pub(crate) fn check_connected(&self) -> Result<()> {
        if self.is_closed() {
            return Err(shut_down());
        }
        match self.client.connection_state() {
            State::Connected => Ok(()),
            state => Err(Error::new(
                ErrorKind::Transport,
                format!(
                    "not connected to nats (state: {state:?}); the client reconnects on its own, retry the send later"
                ),
            )),
        }
    }

    /// Admits an outgoing `send`, `tell` or `broadcast`: at once while connected; while not,
    /// as one of at most `disconnected_buffer` messages buffered during this outage.
    ///
    /// # Errors
    /// [`ErrorKind::ShutDown`] after shutdown; [`ErrorKind::Transport`] while disconnected
    /// with the buffer full (or `disconnected_buffer = 0`).
    pub(crate) fn admit(&self) -> Result<()> {
        let err = match self.check_connected() {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == ErrorKind::Transport => e,
            Err(e) => return Err(e),
        };
        let bound = self.bound;
        let taken = self
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

    /// The client lost its connection (it reconnects on its own). Returns the lost server.
    pub(crate) fn went_down(&self) -> String {
        self.state.send_replace(LinkState::Down);
        self.server.lock().clone()
    }

    /// The client is connected (again). Returns the server and how many sends were buffered
    /// meanwhile, or `None` when the link was up already (the first connection).
    pub(crate) fn came_up(&self) -> Option<(String, usize)> {
        let server = describe(&self.client.server_info());
        *self.server.lock() = server.clone();
        let buffered = self.buffered.swap(0, Ordering::AcqRel);
        let before = self.state.send_replace(LinkState::Up);
        (before != LinkState::Up).then_some((server, buffered))
    }

    /// The client gave up reconnecting: nothing more can be sent. Returns the last server
    /// and how many buffered sends are lost.
    pub(crate) fn gave_up(&self) -> (String, usize) {
        self.state.send_replace(LinkState::Gone);
        let server = self.server.lock().clone();
        (server, self.buffered.swap(0, Ordering::AcqRel))
    }
}

/// `name (host:port)` of a server, or what of it is known.
fn describe(info: &async_nats::ServerInfo) -> String {
    match (info.server_name.is_empty(), info.host.is_empty()) {
        (false, false) => format!("{} ({}:{})", info.server_name, info.host, info.port),
        (true, false) => format!("{}:{}", info.host, info.port),
        (false, true) => info.server_name.clone(),
        (true, true) => "unknown".to_owned(),
    }
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
