//! The parts the workers share, each with its own state behind its own methods:
//! [`outbox`] (queued publishes and flush), [`requests`] (pending replies, tokens, round
//! trips), [`link`] (connection state), [`nodes`] (this process's nodes), [`stats`] (the one
//! counter set), and [`Endpoint`], what is fixed once connected. [`connect`] makes the
//! client. `transport.rs` builds the parts and hands each worker those it needs.

pub(crate) mod connect;
pub(crate) mod link;
pub(crate) mod nodes;
pub(crate) mod outbox;
pub(crate) mod requests;
pub(crate) mod stats;

use std::fmt;

use async_nats::Client;
use happen::{Error, ErrorKind};

use crate::config::NatsConfig;
use crate::wire::Subjects;

/// What is fixed once the client is connected: the client, the settings, the subjects, this
/// process's id and the largest message accepted.
pub(crate) struct Endpoint {
    pub(crate) client: Client,
    pub(crate) config: NatsConfig,
    pub(crate) subjects: Subjects,
    /// This process's id in pressure reports and discovery answers (`Happen-Replica`): the
    /// reply inbox's unique part.
    pub(crate) replica: String,
    /// Larger incoming events are rejected (`max_message_bytes`, or the server's
    /// `max_payload`).
    pub(crate) max_bytes: usize,
}

/// A transport error: `<what>: <e>`.
pub(crate) fn transport_error(what: &str, e: impl fmt::Display) -> Error {
    Error::new(ErrorKind::Transport, format!("{what}: {e}"))
}

/// The error of a send after shutdown.
pub(crate) fn shut_down() -> Error {
    Error::new(
        ErrorKind::ShutDown,
        "the nats transport is shut down; nothing was sent",
    )
}
