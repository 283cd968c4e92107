//! Batches to nodes that do not take them whole (see `WIRE.md`, "Batches").
//!
//! A batch travels as one carrier event ([`happen::BATCH_EVENT`]) to a node a happen process
//! serves. A node of Happen's TypeScript reference has no handler for the carrier, so a batch
//! for it goes one event at a time, in order, as the reference itself sends batches. Which
//! kind of node a target is comes from discovery: happen processes answer it, the reference
//! does not. The answer is kept for a while per node id ([`REMEMBER_HAPPEN`],
//! [`REMEMBER_OTHER`]); concurrent batches to a node not yet known share one discovery
//! request.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use happen::transport::{ReplySender, Response};
use happen::{Error, ErrorKind, Event, NodeId, Result};
use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::OnceCell;
use tokio::time::Instant;

use crate::core::Endpoint;
use crate::workers::discover;

/// How long a node found in discovery is taken to be a happen node.
pub(crate) const REMEMBER_HAPPEN: Duration = Duration::from_secs(60);
/// How long a node no happen process named is taken to be another kind (it may be started as
/// a happen node later, so it is asked about again sooner).
pub(crate) const REMEMBER_OTHER: Duration = Duration::from_secs(10);
/// The longest a discovery request for one node may take.
const DISCOVER_WAIT: Duration = Duration::from_secs(2);

/// Which node ids take batches whole.
pub(crate) struct Batches {
    ep: Arc<Endpoint>,
    kinds: Mutex<HashMap<NodeId, Arc<OnceCell<Known>>>>,
    /// The transport's runtime: a batch may be sent from a thread outside it.
    runtime: tokio::runtime::Handle,
}

#[derive(Clone, Copy)]
struct Known {
    happen: bool,
    until: Instant,
}

impl Batches {
    /// Called inside the transport's runtime (at connect).
    pub(crate) fn new(ep: Arc<Endpoint>) -> Batches {
        Batches {
            ep,
            kinds: Mutex::new(HashMap::new()),
            runtime: tokio::runtime::Handle::current(),
        }
    }

    /// Runs `task` on the transport's runtime.
    pub(crate) fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        self.runtime.spawn(task);
    }

    /// Is `event` a batch carrier?
    pub(crate) fn is_carrier(event: &Event) -> bool {
        event.event_type() == happen::BATCH_EVENT
    }

    /// Whether `target` is known, now, to be served by a happen process (then the carrier
    /// goes as it is, without waiting).
    pub(crate) fn takes_whole(&self, target: &NodeId) -> bool {
        let kinds = self.kinds.lock();
        kinds
            .get(target)
            .and_then(|cell| cell.get().copied())
            .is_some_and(|k| k.happen && k.until > Instant::now())
    }

    /// Whether `target` takes a batch whole, asking discovery when not known (or no longer).
    ///
    /// # Errors
    /// [`ErrorKind::Transport`] when the discovery request cannot be published.
    pub(crate) async fn ask_takes_whole(&self, target: &NodeId) -> Result<bool> {
        let cell = {
            let mut kinds = self.kinds.lock();
            let now = Instant::now();
            // Forget what has expired (and keep the map from growing without bound).
            kinds.retain(|_, c| c.get().is_none_or(|k| k.until > now));
            kinds.entry(target.clone()).or_default().clone()
        };
        let known = cell
            .get_or_try_init(|| async {
                let ep = &self.ep;
                let wait = DISCOVER_WAIT.min(ep.config.effective_request_timeout());
                let happen = discover::serves(&ep.client, &ep.subjects, target, wait).await?;
                let keep = if happen {
                    REMEMBER_HAPPEN
                } else {
                    REMEMBER_OTHER
                };
                Ok::<_, Error>(Known {
                    happen,
                    until: Instant::now() + keep,
                })
            })
            .await?;
        Ok(known.happen)
    }
}

/// The events a carrier holds.
///
/// # Errors
/// [`ErrorKind::InvalidEvent`] when its payload is not an array of events.
pub(crate) fn unpack(carrier: &Event) -> Result<Vec<Event>> {
    serde_json::from_value(carrier.payload().clone()).map_err(|e| {
        Error::new(
            ErrorKind::InvalidEvent,
            format!(
                "a `{}` event must carry an array of events: {e}",
                happen::BATCH_EVENT
            ),
        )
    })
}

/// Sends a batch's `events` one at a time through `send`, each after the previous one's
/// answer, and answers `reply` with the array of their values, or the first error (the rest
/// are not sent), as a batch to a node without a batch handler answers. Without `reply` (a
/// batch told, not sent) the events are told, in order. Each answer is awaited at most
/// `timeout`; a requester that gave up stops the rest.
pub(crate) async fn one_at_a_time(
    events: Vec<Event>,
    reply: Option<ReplySender>,
    timeout: Duration,
    send: impl Fn(Event, Option<ReplySender>) -> Result<()>,
) {
    let Some(reply) = reply else {
        for event in events {
            if let Err(e) = send(event, None) {
                tracing::warn!(target: "happen_nats", error = %e, "a batch told one event at a time stopped");
                return;
            }
        }
        return;
    };
    let mut values = Vec::with_capacity(events.len());
    for event in events {
        if reply.is_closed() {
            return; // nobody waits for the batch any more
        }
        let (tx, rx) = happen::transport::reply_channel();
        if let Err(e) = send(event, Some(tx)) {
            let _ = reply.send(Response::Done(Err(e)));
            return;
        }
        let value = match tokio::time::timeout(timeout, rx).await {
            Ok(Response::Done(r)) => r,
            Ok(Response::Stream(items)) => items.skip_to_final().await,
            Err(_) => Err(Error::new(
                ErrorKind::Timeout,
                format!(
                    "an event of a batch sent one at a time got no answer within {timeout:?}; \
                     raise transport.nats.request_timeout or look at the target"
                ),
            )),
        };
        match value {
            Ok(v) => values.push(v),
            Err(e) => {
                let _ = reply.send(Response::Done(Err(e)));
                return;
            }
        }
    }
    let _ = reply.send(Response::Done(Ok(Value::Array(values))));
}
