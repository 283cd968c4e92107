//! The requester side: one shared inbox subscription (`<inbox>.*`) multiplexes every reply and
//! stream frame of this process, and the control frames (`<inbox>.c<token>`) sent to this
//! process's stream producers. No subscription and no task per request.

use std::sync::Arc;
use std::time::Duration;

use async_nats::{Message, StatusCode, Subscriber};
use futures::StreamExt;
use happen::transport::Response;
use happen::{ErrorKind, NodeId};

use super::streams::{Streams, consume};
use crate::core::Endpoint;
use crate::core::outbox::{Headers, Outbox, Outgoing};
use crate::core::requests::{Arrival, Pending, Requests};
use crate::core::stats::{BadInput, Counters, inc};
use crate::pacing::{InFlight, Remotes};
use crate::wire::{self, Frame, ReplyFrame, header};

/// What the reply inbox task uses.
pub(crate) struct Replies {
    pub(crate) ep: Arc<Endpoint>,
    pub(crate) requests: Arc<Requests>,
    /// Answers to relayed requests are passed back through it.
    pub(crate) outbox: Arc<Outbox>,
    /// Replies carry the target's pressure.
    pub(crate) remotes: Arc<Remotes>,
    pub(crate) counters: Arc<Counters>,
    /// Remote streams are consumed by the stream worker.
    pub(crate) streams: Arc<Streams>,
}

/// How often waiting entries whose caller went away are removed.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

pub(crate) async fn run(r: Arc<Replies>, mut sub: Subscriber) {
    let mut sweep = tokio::time::interval(SWEEP_EVERY);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            msg = sub.next() => match msg {
                Some(msg) => on_message(&r, msg),
                None => return,
            },
            _ = sweep.tick() => {
                for remote in r.requests.sweep(tokio::time::Instant::now()) {
                    // no answer (a reference node, say): pace by its reports only
                    remote.set_limits(None);
                }
            }
        }
    }
}

fn on_message(r: &Arc<Replies>, msg: Message) {
    let token = msg
        .subject
        .as_str()
        .strip_prefix(r.requests.inbox())
        .and_then(|t| t.strip_prefix('.'))
        .unwrap_or("");
    if let Some(ctl) = token.strip_prefix('c') {
        on_control(r, ctl.parse().ok(), &msg);
        return;
    }
    let Ok(token) = token.parse::<u64>() else {
        r.counters.bad_input(BadInput::Protocol);
        return;
    };
    if let Some(replica) = accepted_by(&msg) {
        // the request is tied to `replica` (see `WIRE.md`, "Liveness"); a relayed one's
        // requester is told too
        if let Some(to) = r.requests.accepted(token, replica) {
            pass_back(r, to, msg.headers, msg.payload);
        }
        return;
    }
    match r.requests.arrived(token, || relay_continues(&msg)) {
        Arrival::Relay { to, node, first } => {
            relay(r, to, &node, msg);
            if let Some(first) = first {
                let _ = first.send(());
            }
        }
        Arrival::Stream(frames) => {
            // the producer never sends more than the granted credit, so this never blocks
            if frames.try_send(msg).is_err() {
                r.counters.bad_input(BadInput::Protocol);
                tracing::warn!(target: "happen_nats", "a remote stream producer exceeded its credit; ending the stream");
                r.requests.remove(token);
            }
        }
        Arrival::Taken(Pending::Reply {
            tx,
            target,
            in_flight,
            replica,
            ..
        }) => on_reply(r, token, tx, target, in_flight, replica, msg),
        Arrival::Taken(Pending::Probe(done)) => {
            let _ = done.send(());
        }
        Arrival::Taken(Pending::Limits { remote, .. }) => {
            if msg.status == Some(StatusCode::NO_RESPONDERS) {
                remote.query_failed();
            } else {
                let limits = msg
                    .headers
                    .as_ref()
                    .and_then(|h| h.get(header::LIMITS))
                    .and_then(|v| wire::parse_limits(v.as_str()));
                remote.set_limits(limits);
            }
        }
        Arrival::Taken(_) | Arrival::Unmatched => inc(&r.counters.unmatched),
    }
}

/// The replica an `accepted` frame names (`Happen-Frame: accepted`, `Happen-Replica`).
fn accepted_by(msg: &Message) -> Option<&str> {
    let h = msg.headers.as_ref()?;
    if h.get(header::FRAME)?.as_str().trim() != header::ACCEPTED {
        return None;
    }
    h.get(header::REPLICA)
        .map(|v| v.as_str().trim())
        .filter(|r| !r.is_empty())
}

/// Does a relayed request get more messages after `msg` (a stream start or item)?
fn relay_continues(msg: &Message) -> bool {
    let get = |name| {
        msg.headers
            .as_ref()
            .and_then(|h| h.get(name))
            .map(|v| v.as_str().trim())
    };
    get(header::STATUS) == Some("stream") || get(header::FRAME) == Some("item")
}

/// Passes an answer to a relayed request back to its sender: as it is, or, when the server
/// found no process serving the node ("no responders", sent to us as the publisher), as an
/// `unknown_node` error.
fn relay(r: &Replies, to: async_nats::Subject, node: &NodeId, msg: Message) {
    let (headers, payload) = if msg.status == Some(StatusCode::NO_RESPONDERS) {
        let err = crate::wire::error_from_parts(
            ErrorKind::UnknownNode,
            format!(
                "node `{node}` stopped and no other process serves it (no responders on `{}`); start one or check the id",
                r.ep.subjects.node(node)
            ),
            Some(node.clone()),
            None,
            None,
        );
        let mut h = async_nats::HeaderMap::new();
        h.insert(header::STATUS, "error");
        let body = wire::encode_error(&err, &mut h, r.ep.client.max_payload(), 0);
        (Some(h), body)
    } else {
        (msg.headers, msg.payload)
    };
    pass_back(r, to, headers, payload);
}

/// Publishes an answer to a relayed request to its sender's reply subject `to`.
fn pass_back(
    r: &Replies,
    to: async_nats::Subject,
    headers: Option<async_nats::HeaderMap>,
    payload: bytes::Bytes,
) {
    let out = Outgoing {
        subject: to,
        reply: None,
        headers: Headers::from(headers),
        payload,
    };
    if let Some(out) = r.outbox.try_enqueue_answer(out) {
        let outbox = r.outbox.clone();
        tokio::spawn(async move {
            if let Err(e) = outbox.publish_now(out).await {
                tracing::warn!(target: "happen_nats", error = %e, "cannot pass back a relayed answer");
            }
        });
    }
}

fn on_reply(
    r: &Arc<Replies>,
    token: u64,
    tx: happen::transport::ReplySender,
    target: NodeId,
    in_flight: Option<InFlight>,
    replica: Option<Arc<str>>,
    msg: Message,
) {
    if msg.status == Some(StatusCode::NO_RESPONDERS) {
        let err = crate::wire::error_from_parts(
            ErrorKind::UnknownNode,
            format!(
                "no process hosts node `{target}` (no responders on `{}`); start one or check the id",
                r.ep.subjects.node(&target)
            ),
            Some(target),
            None,
            None,
        );
        let _ = tx.send(Response::Done(Err(err)));
        return;
    }
    let headers = msg.headers.as_ref();
    r.remotes.observe_header(
        &target,
        headers
            .and_then(|h| h.get(header::PRESSURE))
            .map(|v| v.as_str()),
    );
    match wire::decode_reply(headers, &msg.payload) {
        Ok(ReplyFrame::Value(v)) => {
            let _ = tx.send(Response::Done(Ok(v)));
        }
        Ok(ReplyFrame::Error(e)) => {
            let _ = tx.send(Response::Done(Err(e)));
        }
        Ok(ReplyFrame::Stream { control }) => {
            // tied to the producing replica (named on the stream start by newer processes)
            let producer = headers
                .and_then(|h| h.get(header::REPLICA))
                .map(|v| Arc::from(v.as_str().trim()))
                .or(replica);
            consume::start(&r.streams, token, tx, in_flight, control, producer);
        }
        Err(e) => {
            r.counters.bad_input(BadInput::Malformed);
            let _ = tx.send(Response::Done(Err(e)));
        }
    }
}

fn on_control(r: &Replies, token: Option<u64>, msg: &Message) {
    let frame = match wire::decode_frame(msg.headers.as_ref(), &msg.payload) {
        Ok(f @ (Frame::Credit(_) | Frame::Cancel)) => f,
        Ok(_) | Err(_) => {
            r.counters.bad_input(BadInput::Protocol);
            return;
        }
    };
    let producer = token.and_then(|t| r.requests.control(t));
    match producer {
        Some(p) => {
            if p.try_send(frame).is_err() {
                r.counters.bad_input(BadInput::Protocol);
            }
        }
        None => inc(&r.counters.unmatched),
    }
}
