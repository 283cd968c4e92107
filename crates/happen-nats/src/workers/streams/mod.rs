//! Streams of items between processes.
//! - [`produce`] and [`consume`]: a stream from one remote flow to its requester, with credit:
//!   the producing side forwards a local flow's items, never more than the consumer granted;
//!   a `cancel` frame (or a consumer that stops granting credit for the request timeout)
//!   drops the local stream, which cancels the flow. The consuming side feeds a remote
//!   stream to the local consumer and grants credit as items are handed over.
//! - [`broadcast`]: a stream that rides on a broadcast, read by every receiving node.

pub(crate) mod broadcast;
pub(crate) mod consume;
pub(crate) mod produce;

use std::sync::Arc;

use crate::core::Endpoint;
use crate::core::nodes::LocalNodes;
use crate::core::requests::Requests;
use crate::core::stats::Counters;

/// What the stream workers (point-to-point and broadcast) use.
pub(crate) struct Streams {
    pub(crate) ep: Arc<Endpoint>,
    /// Tokens and control subjects of producers; consumers' entries.
    pub(crate) requests: Arc<Requests>,
    /// Which local nodes stream a broadcast type.
    pub(crate) nodes: Arc<LocalNodes>,
    pub(crate) counters: Arc<Counters>,
}
