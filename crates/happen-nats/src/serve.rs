//! The receiving side: one task per attached node reads its direct and broadcast subscriptions,
//! admits events into the node and publishes the answers. Replies are awaited in a
//! `FuturesUnordered` inside the same task (no task per request); only streams get a task.
//!
//! Admission rule:
//! - a **request** (a message with a reply subject) is admitted or rejected at once; a rejection
//!   (`QueueFull`, `ShutDown`) is the answer, so the remote sender learns it promptly;
//! - a **tell** (direct, no reply subject) is admitted or rejected at once too, the rejection
//!   counted at the node as an unobserved failure (as a `tell` to a full local node fails);
//! - a **broadcast** is paced by the node's backpressure: while the node is under pressure (or
//!   its queue is full) the task stops reading the broadcast subscription and holds the one
//!   broadcast it has, until the node drains below its low-water mark; the subscription's
//!   buffer (`subscription_capacity`) absorbs the burst meanwhile. A broadcast is only lost when
//!   that buffer overflows, which the client counts as a slow-consumer drop. Direct messages
//!   and replies keep flowing while a broadcast is held.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_nats::{HeaderMap, Message, Subject, Subscriber};
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use happen::stream::{ReplyReceiver, Response, reply_channel};
use happen::transport::Inbox;
use happen::{Error, ErrorKind, Pressure};
use tokio::sync::{oneshot, watch};

use crate::bstream::Incoming;
use crate::stats::inc;
use crate::transport::{Headers, Outgoing, Shared};
use crate::wire::{self, header};

/// A reply being computed by the local node.
struct Waiting {
    reply: Subject,
    /// The requester's initial stream credit (`None`: it cannot consume streams).
    credit: Option<u64>,
    rx: ReplyReceiver,
}

impl Future for Waiting {
    type Output = (Subject, Option<u64>, Response);
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        Pin::new(&mut this.rx)
            .poll(cx)
            .map(|r| (this.reply.clone(), this.credit, r))
    }
}

pub(crate) async fn run(
    shared: Arc<Shared>,
    inbox: Inbox,
    mut direct: Subscriber,
    mut broadcast: Subscriber,
    mut stop: oneshot::Receiver<()>,
) {
    let pressure = inbox.watch_pressure();
    // a second receiver, to wait for the node to drain while a broadcast is held
    let mut drain = inbox.watch_pressure();
    let mut waiting: FuturesUnordered<Waiting> = FuturesUnordered::new();
    // a broadcast waiting for the node to drain (see the module docs)
    let mut held: Option<Held> = None;
    loop {
        tokio::select! {
            biased;
            _ = &mut stop => break,
            Some((reply, credit, response)) = waiting.next(), if !waiting.is_empty() => {
                answer(&shared, reply, credit, response, &pressure).await;
            }
            msg = direct.next() => match msg {
                Some(msg) => on_direct(&shared, &inbox, msg, &mut waiting, &pressure).await,
                None => break,
            },
            () = drained(&mut drain, held.as_ref().is_some_and(|h| h.rejected)), if held.is_some() => {
                let h = held.take().expect("guarded by `held.is_some()`");
                held = offer(&inbox, &pressure, h.event);
            }
            msg = broadcast.next(), if held.is_none() => match msg {
                Some(msg) => {
                    if let Some(incoming) = on_broadcast(&shared, &inbox, msg).await {
                        held = offer(&inbox, &pressure, incoming);
                    }
                }
                None => break,
            },
        }
    }
    if let Some(mut h) = held {
        // detached: the node is closing, so this fails with `ShutDown` (counted) unless it
        // still fits
        if let Err(err) = h.event.deliver(&inbox) {
            inbox.report_unobserved(&err);
        }
    }
    // detached (the instance is shutting down, its flows have drained): send what is ready
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while let Some((reply, credit, response)) = waiting.next().await {
            answer(&shared, reply, credit, response, &pressure).await;
        }
    })
    .await;
}

/// A broadcast held back until the node drains.
struct Held {
    event: Incoming,
    /// The node rejected it with `QueueFull` although its published state said "normal".
    rejected: bool,
}

/// How long to wait for the pressure report that follows a `QueueFull` before retrying anyway.
const REPORT_GRACE: Duration = Duration::from_millis(10);

/// Resolves when a held broadcast may be offered again: the node is not under pressure.
async fn drained(drain: &mut watch::Receiver<Pressure>, rejected_while_normal: bool) {
    if rejected_while_normal {
        // the node's state turned "under pressure" before it was published: wait for the
        // report (bounded, so a missed report cannot stall the node's broadcasts)
        let _ = tokio::time::timeout(REPORT_GRACE, drain.changed()).await;
    }
    // an error means the node is gone: offering again fails with `ShutDown`
    let _ = drain.wait_for(|p| !p.under_pressure).await;
}

/// Admits a broadcast unless the node is under pressure or full; then hands it back, to be
/// offered again once the node drains. Other failures are counted at the node.
fn offer(inbox: &Inbox, pressure: &watch::Receiver<Pressure>, mut event: Incoming) -> Option<Held> {
    if pressure.borrow().under_pressure {
        return Some(Held {
            event,
            rejected: false,
        });
    }
    match event.deliver(inbox) {
        Ok(()) => None,
        Err(err) if err.kind() == ErrorKind::QueueFull => Some(Held {
            event,
            rejected: !pressure.borrow().under_pressure,
        }),
        Err(err) => {
            inbox.report_unobserved(&err);
            None
        }
    }
}

/// Decodes an event, checking size and stray frames; counts and explains what is wrong.
fn decode(shared: &Shared, msg: &Message) -> Result<happen::Event, Error> {
    if msg.payload.len() > shared.max_bytes {
        shared.counters.bad_input("oversized");
        return wire::decode_event(&msg.payload, shared.max_bytes);
    }
    if let Some(kind) = msg.headers.as_ref().and_then(|h| h.get(header::FRAME)) {
        shared.counters.bad_input("protocol");
        return Err(Error::new(
            happen::ErrorKind::InvalidEvent,
            format!(
                "unexpected stream frame `{}` on a node subject; only events are accepted here",
                kind.as_str()
            ),
        ));
    }
    wire::decode_event(&msg.payload, shared.max_bytes).inspect_err(|_| {
        shared.counters.bad_input("malformed");
    })
}

async fn on_direct(
    shared: &Arc<Shared>,
    inbox: &Inbox,
    msg: Message,
    waiting: &mut FuturesUnordered<Waiting>,
    pressure: &watch::Receiver<Pressure>,
) {
    let event = match decode(shared, &msg) {
        Ok(e) => e,
        Err(err) => {
            tracing::warn!(target: "happen_nats", node = %inbox.id(), subject = %msg.subject, error = %err, "rejected a bad message");
            if let Some(reply) = msg.reply {
                publish_error(shared, reply, &err, pressure).await;
            }
            return;
        }
    };
    match msg.reply {
        Some(reply) => {
            let credit = msg
                .headers
                .as_ref()
                .and_then(|h| h.get(header::STREAM))
                .and_then(|c| c.as_str().trim().parse::<u64>().ok())
                .filter(|c| *c > 0);
            let (tx, rx) = reply_channel();
            match inbox.deliver(event, Some(tx)) {
                Ok(()) => waiting.push(Waiting { reply, credit, rx }),
                Err(err) => publish_error(shared, reply, &err, pressure).await,
            }
        }
        None => {
            if let Err(err) = inbox.deliver(event, None) {
                inbox.report_unobserved(&err);
            }
        }
    }
}

/// Decodes a broadcast; `None` when it is bad or the node has no handler for it. A broadcast
/// carrying a stream is prepared for it (see [`crate::bstream`]).
async fn on_broadcast(shared: &Arc<Shared>, inbox: &Inbox, msg: Message) -> Option<Incoming> {
    let event = match decode(shared, &msg) {
        Ok(e) => e,
        Err(err) => {
            tracing::warn!(target: "happen_nats", node = %inbox.id(), subject = %msg.subject, error = %err, "rejected a bad broadcast");
            return None;
        }
    };
    if !inbox.accepts(event.event_type()) {
        return None;
    }
    Some(Incoming::new(shared, inbox, &msg, event).await)
}

fn pressure_headers(pressure: &watch::Receiver<Pressure>, into: &mut Option<HeaderMap>) {
    let p = *pressure.borrow();
    if let Some(v) = wire::pressure_header(&p) {
        into.get_or_insert_with(HeaderMap::new)
            .insert(header::PRESSURE, v.as_str());
    }
}

async fn publish(shared: &Shared, subject: Subject, headers: Option<HeaderMap>, body: Bytes) {
    // Through the transport's publisher task, like requests (it hands messages to the client
    // in batches); when its buffer is full, straight to the client, waiting for room.
    let out = Outgoing {
        subject,
        reply: None,
        headers: headers.map_or(Headers::None, Headers::Custom),
        payload: body,
    };
    let r = match shared.try_enqueue(out) {
        None => Ok(()),
        Some(out) => match out.headers {
            Headers::Custom(h) => {
                shared
                    .client
                    .publish_with_headers(out.subject, h, out.payload)
                    .await
            }
            _ => shared.client.publish(out.subject, out.payload).await,
        },
    };
    match r {
        Ok(()) => inc(&shared.counters.replies),
        Err(e) => {
            tracing::warn!(target: "happen_nats", error = %e, "cannot publish a reply");
        }
    }
}

pub(crate) async fn publish_error(
    shared: &Shared,
    reply: Subject,
    err: &Error,
    pressure: &watch::Receiver<Pressure>,
) {
    let mut h = HeaderMap::new();
    h.insert(header::STATUS, "error");
    wire::error_headers(err, &mut h);
    let mut h = Some(h);
    pressure_headers(pressure, &mut h);
    publish(shared, reply, h, Bytes::new()).await;
}

pub(crate) fn value_body(v: &serde_json::Value) -> Bytes {
    Bytes::from(serde_json::to_vec(v).unwrap_or_else(|_| b"null".to_vec()))
}

async fn answer(
    shared: &Arc<Shared>,
    reply: Subject,
    credit: Option<u64>,
    response: Response,
    pressure: &watch::Receiver<Pressure>,
) {
    match response {
        Response::Done(Ok(v)) => {
            let mut h = None;
            pressure_headers(pressure, &mut h);
            publish(shared, reply, h, value_body(&v)).await;
        }
        Response::Done(Err(e)) => publish_error(shared, reply, &e, pressure).await,
        Response::Stream(items) => match credit {
            Some(credit) => {
                tokio::spawn(crate::stream::produce(shared.clone(), reply, items, credit));
            }
            None => {
                // a requester that cannot consume streams (e.g. the reference implementation)
                // gets the final value, as a plain reply
                let shared = shared.clone();
                let pressure = pressure.clone();
                tokio::spawn(async move {
                    match items.finish().await {
                        Ok(v) => publish(&shared, reply, None, value_body(&v)).await,
                        Err(e) => publish_error(&shared, reply, &e, &pressure).await,
                    }
                });
            }
        },
    }
}
