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
//!
//! The serve loop never waits for anything slow in line: answers are queued without waiting
//! ([`Shared::publish_answer`]), and a broadcast stream's set-up (a subscribe and a round trip
//! through the server) is polled as one more branch of the loop, which stops reading
//! broadcasts meanwhile (they stay in order) but keeps reading direct messages and answering.
//! (While a node stops, broadcasts that still arrive are set up in line.)

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;

use async_nats::{HeaderMap, Message, Subject, Subscriber};
use bytes::Bytes;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use happen::stream::{ReplyReceiver, Response, reply_channel};
use happen::transport::Inbox;
use happen::{Error, ErrorKind, NodeId, Pressure};
use tokio::sync::{oneshot, watch};

use crate::bstream::{Incoming, Prepared};
use crate::stats::inc;
use crate::transport::{Headers, Outgoing, Shared};
use crate::wire::{self, header, value_body};
use futures::future::BoxFuture;

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

/// How many more messages a subscription may deliver after the node stops taking new ones
/// (see [`Serving::stop_intake`]): more than can plausibly be on their way from the server to
/// this process when it processes the unsubscribe.
const UNSUBSCRIBE_AFTER: u64 = 256;

/// The longest a stopped node keeps passing late messages on once its answers are out.
const LINGER_AT_MOST: Duration = Duration::from_secs(1);

/// The longest a stopping node waits for the first answer to requests it relayed to another
/// replica (later answers are still passed back until the transport shuts down).
const RELAY_WAIT: Duration = Duration::from_secs(5);

/// The longest the server round trip that confirms the unsubscribe may take.
const CONFIRM_WITHIN: Duration = Duration::from_secs(5);

pub(crate) async fn run(
    shared: Arc<Shared>,
    inbox: Inbox,
    direct: Subscriber,
    broadcast: Subscriber,
    disconnects: u64,
    stop: oneshot::Receiver<()>,
) {
    let mut node = Serving {
        disconnects,
        pressure: inbox.watch_pressure(),
        drain: inbox.watch_pressure(),
        shared,
        inbox,
        direct: Sub::new(direct),
        broadcast: Sub::new(broadcast),
        waiting: FuturesUnordered::new(),
        relays: FuturesUnordered::new(),
        held: None,
        preparing: None,
    };
    node.serve(stop).await;
    node.stop_intake().await;
    node.finish().await;
}

/// A subscription and how many messages were taken from it.
struct Sub {
    sub: Subscriber,
    taken: u64,
    /// The client closed it (unsubscribed after its last message, or the connection closed
    /// for good).
    ended: bool,
}

impl Sub {
    fn new(sub: Subscriber) -> Sub {
        Sub {
            sub,
            taken: 0,
            ended: false,
        }
    }

    /// The next message; pending forever once the subscription ended.
    async fn next(&mut self) -> Option<Message> {
        if self.ended {
            return std::future::pending().await;
        }
        let msg = self.sub.next().await;
        self.count(msg.is_some());
        msg
    }

    /// A message the client already holds for us, without waiting.
    fn try_next(&mut self) -> Option<Message> {
        if self.ended {
            return None;
        }
        let msg = self.sub.next().now_or_never()?;
        self.count(msg.is_some());
        msg
    }

    fn count(&mut self, got: bool) {
        if got {
            self.taken += 1;
        } else {
            self.ended = true;
        }
    }
}

/// One node's serve task (see the module docs).
struct Serving {
    shared: Arc<Shared>,
    /// The connection's disconnect count when the subscriptions were made.
    disconnects: u64,
    inbox: Inbox,
    direct: Sub,
    broadcast: Sub,
    pressure: watch::Receiver<Pressure>,
    /// A second receiver, to wait for the node to drain while a broadcast is held.
    drain: watch::Receiver<Pressure>,
    waiting: FuturesUnordered<Waiting>,
    /// Requests relayed to another replica after the node stopped: resolve when the first
    /// answer was passed back (see [`Serving::pass_on`]).
    relays: FuturesUnordered<oneshot::Receiver<()>>,
    /// A broadcast waiting for the node to drain (see the module docs).
    held: Option<Held>,
    /// A broadcast whose stream subscription is being set up (see the module docs); never
    /// together with `held`.
    preparing: Option<BoxFuture<'static, Incoming>>,
}

impl Serving {
    /// Serves until `stop` (sent by `detach` and `shutdown`, or its sender dropped).
    async fn serve(&mut self, mut stop: oneshot::Receiver<()>) {
        loop {
            tokio::select! {
                biased;
                _ = &mut stop => return,
                Some((reply, credit, response)) = self.waiting.next(), if !self.waiting.is_empty() => {
                    answer(&self.shared, reply, credit, response, &self.pressure, self.inbox.id());
                }
                Some(msg) = self.direct.next() => self.on_direct(msg),
                incoming = prepared(&mut self.preparing), if self.preparing.is_some() => {
                    self.preparing = None;
                    self.held = offer(&self.inbox, &self.pressure, incoming);
                }
                () = drained(&mut self.drain, self.held.as_ref().is_some_and(|h| h.rejected)), if self.held.is_some() => {
                    let h = self.held.take().expect("guarded by `held.is_some()`");
                    self.held = offer(&self.inbox, &self.pressure, h.event);
                }
                Some(msg) = self.broadcast.next(), if self.held.is_none() && self.preparing.is_none() => {
                    match on_broadcast(&self.shared, &self.inbox, msg) {
                        Some(Prepared::Ready(incoming)) => {
                            self.held = offer(&self.inbox, &self.pressure, incoming);
                        }
                        Some(Prepared::Subscribing(subscribing)) => self.preparing = Some(subscribing),
                        None => {}
                    }
                }
            }
        }
    }

    /// Stops taking new events without losing any the server already routed here.
    ///
    /// A plain unsubscribe loses messages: the client forgets the subscription at once, and
    /// drops whatever the server routed to it before it processed the unsubscribe (still on
    /// the wire). So the subscriptions are told to end after [`UNSUBSCRIBE_AFTER`] more
    /// messages: the server stops routing to them either at once (when more than that were
    /// already on their way — not expected) or after that many, and the client keeps each
    /// subscription until exactly that count has arrived, so nothing in between is dropped.
    /// A round trip through the server then confirms the unsubscribe: what was routed before
    /// has arrived. Everything up to there is admitted as usual.
    async fn stop_intake(&mut self) {
        // a broadcast being set up is admitted first (in order); answers keep flowing meanwhile
        while self.preparing.is_some() {
            tokio::select! {
                biased;
                Some((reply, credit, response)) = self.waiting.next(), if !self.waiting.is_empty() => {
                    answer(&self.shared, reply, credit, response, &self.pressure, self.inbox.id());
                }
                Some(msg) = self.direct.next() => self.on_direct(msg),
                incoming = prepared(&mut self.preparing) => {
                    self.preparing = None;
                    self.held = Some(Held { event: incoming, rejected: false });
                }
            }
        }
        if let Some(mut h) = self.held.take() {
            // offered once more: the node is closing, so this is counted if it does not fit
            if let Err(err) = h.event.deliver(&self.inbox) {
                self.inbox.report_unobserved(&err);
            }
        }
        self.take_buffered().await;
        // After a reconnect the client counts the subscription's messages from its start but
        // the server from the resubscription, so an allowance would not end both at once:
        // then a plain unsubscribe (what is on its way may be lost).
        let resubscribed =
            self.shared.counters.disconnects.load(Ordering::Acquire) != self.disconnects;
        for sub in [&mut self.direct, &mut self.broadcast] {
            if sub.ended {
                continue;
            }
            let _ = if resubscribed {
                sub.sub.unsubscribe().await
            } else {
                sub.sub
                    .unsubscribe_after(sub.taken + UNSUBSCRIBE_AFTER)
                    .await
            };
        }
        let shared = self.shared.clone();
        let confirm = shared.round_trip(CONFIRM_WITHIN);
        tokio::pin!(confirm);
        loop {
            tokio::select! {
                biased;
                r = &mut confirm => {
                    if let Err(e) = r {
                        tracing::warn!(target: "happen_nats", node = %self.inbox.id(), error = %e, "the unsubscribe of a stopping node was not confirmed");
                    }
                    break;
                }
                Some((reply, credit, response)) = self.waiting.next(), if !self.waiting.is_empty() => {
                    answer(&self.shared, reply, credit, response, &self.pressure, self.inbox.id());
                }
                Some(msg) = self.direct.next() => self.on_direct(msg),
                Some(msg) = self.broadcast.next() => self.admit_broadcast(msg).await,
            }
        }
        self.take_buffered().await;
    }

    /// Delivers every answer, passing direct messages that arrive meanwhile (routed here after
    /// the unsubscribe, within its allowance) on to another replica (see [`Serving::pass_on`]);
    /// then removes what is left of the subscriptions and flushes.
    ///
    /// A message passed on may be routed here again while the allowance lasts (always, when
    /// no other replica serves the node), so the subscriptions are only removed once a round
    /// trip through the server after the last one passed on brings nothing new: then none of
    /// them is on its way here. With only this replica, the allowance runs out after at most
    /// [`UNSUBSCRIBE_AFTER`] such returns, and the senders are told the node is gone.
    async fn finish(&mut self) {
        let relays_until = Instant::now() + RELAY_WAIT;
        let mut give_up = None;
        loop {
            while !self.waiting.is_empty()
                || (!self.relays.is_empty() && Instant::now() < relays_until)
            {
                tokio::select! {
                    biased;
                    Some((reply, credit, response)) = self.waiting.next(), if !self.waiting.is_empty() => {
                        answer(&self.shared, reply, credit, response, &self.pressure, self.inbox.id());
                    }
                    Some(_) = self.relays.next(), if !self.relays.is_empty() => {}
                    Some(msg) = self.direct.next() => self.pass_on(msg),
                    Some(msg) = self.broadcast.next() => self.admit_broadcast(msg).await,
                    () = tokio::time::sleep_until(relays_until), if self.waiting.is_empty() => {}
                }
            }
            // counted from when the answers are out
            let give_up = *give_up.get_or_insert_with(|| Instant::now() + LINGER_AT_MOST);
            if (self.direct.ended && self.broadcast.ended) || Instant::now() >= give_up {
                break;
            }
            self.shared.flush_outbound().await;
            // not confirmed (the connection is gone): the loop ends at `give_up`
            let _ = self.shared.round_trip(CONFIRM_WITHIN).await;
            let mut quiet = true;
            while let Some(msg) = self.direct.try_next() {
                self.pass_on(msg);
                quiet = false;
            }
            while let Some(msg) = self.broadcast.try_next() {
                self.admit_broadcast(msg).await;
                quiet = false;
            }
            if quiet && self.relays.is_empty() {
                break;
            }
        }
        for sub in [&mut self.direct, &mut self.broadcast] {
            if !sub.ended {
                let _ = sub.sub.unsubscribe().await;
            }
        }
        // what the client still holds (it stopped taking more)
        while let Some(msg) = self.direct.try_next() {
            self.pass_on(msg);
        }
        while let Some(msg) = self.broadcast.try_next() {
            self.admit_broadcast(msg).await;
        }
        self.report_closed();
        self.shared.flush_outbound().await;
    }

    /// Takes in what the client already holds for the node.
    async fn take_buffered(&mut self) {
        while let Some(msg) = self.direct.try_next() {
            self.on_direct(msg);
        }
        while let Some(msg) = self.broadcast.try_next() {
            self.admit_broadcast(msg).await;
        }
    }

    /// Passes a direct message that reached the stopped node on to another replica: published
    /// again on its subject, where the server routes it to another member of the node's queue
    /// group (or here again while this subscription's allowance lasts).
    ///
    /// A request is relayed rather than re-sent as it is: with this process's reply inbox, so
    /// that when no process serves the node any more the server's "no responders" comes back
    /// here (it goes to the publisher) and the sender is told, instead of waiting out its
    /// timeout. Whatever answers it (a reply, an error, a stream's frames) is passed back to
    /// the sender unchanged by the reply inbox task. A request that comes back here already
    /// carrying this process's inbox (relayed before) is re-sent as it is.
    fn pass_on(&mut self, msg: Message) {
        let own = |r: &Subject| {
            r.as_str()
                .strip_prefix(self.shared.inbox.as_str())
                .is_some_and(|t| t.starts_with('.'))
        };
        let reply = match msg.reply {
            Some(r) if !own(&r) => {
                let (first, answered) = oneshot::channel();
                let token = self.shared.relay(r, self.inbox.id().clone(), first);
                self.relays.push(answered);
                Some(Subject::from(format!("{}.{token}", self.shared.inbox)))
            }
            other => other,
        };
        let out = Outgoing {
            subject: msg.subject,
            reply,
            headers: msg.headers.map_or(Headers::None, Headers::Custom),
            payload: msg.payload,
        };
        self.shared.publish_answer(out);
        inc(&self.shared.counters.forwarded);
    }

    fn on_direct(&mut self, msg: Message) {
        on_direct(
            &self.shared,
            &self.inbox,
            msg,
            &mut self.waiting,
            &self.pressure,
        );
    }

    /// Admits a broadcast without waiting for the node to drain (the node is closing);
    /// counted at the node if it does not fit.
    async fn admit_broadcast(&mut self, msg: Message) {
        let mut incoming = match on_broadcast(&self.shared, &self.inbox, msg) {
            Some(Prepared::Ready(incoming)) => incoming,
            Some(Prepared::Subscribing(subscribing)) => subscribing.await,
            None => return,
        };
        if let Err(err) = incoming.deliver(&self.inbox) {
            self.inbox.report_unobserved(&err);
        }
    }

    /// Tells pacing senders elsewhere that this replica no longer serves the node (so a
    /// last "under pressure" report of it does not hold them back), if it ever reported.
    fn report_closed(&mut self) {
        let id = self.inbox.id().clone();
        if self.shared.local_reports.lock().remove(&id).is_none() {
            return;
        }
        let event = happen::Event::new(
            happen::PRESSURE_EVENT,
            serde_json::json!({
                "nodeId": id.as_str(),
                "level": "normal",
                "underPressure": false,
                "queued": 0,
                "queueLimit": self.inbox.limits().queue_limit,
                "closed": true,
            }),
        );
        let Ok(body) = wire::encode_event(&event) else {
            return;
        };
        let mut h = HeaderMap::new();
        h.insert(header::REPLICA, self.shared.replica.as_str());
        publish(
            &self.shared,
            Subject::from(self.shared.subjects.pressure(&id)),
            Some(h),
            body,
        );
    }
}

/// A broadcast held back until the node drains.
struct Held {
    event: Incoming,
    /// The node rejected it with `QueueFull` although its published state said "normal".
    rejected: bool,
}

/// Resolves with the broadcast being set up; pending when there is none.
async fn prepared(preparing: &mut Option<BoxFuture<'static, Incoming>>) -> Incoming {
    match preparing {
        Some(subscribing) => subscribing.await,
        None => std::future::pending().await,
    }
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

fn on_direct(
    shared: &Arc<Shared>,
    inbox: &Inbox,
    msg: Message,
    waiting: &mut FuturesUnordered<Waiting>,
    pressure: &watch::Receiver<Pressure>,
) {
    let node = inbox.id();
    if let Some(query) = msg.headers.as_ref().and_then(|h| h.get(header::QUERY)) {
        if let Some(reply) = msg.reply {
            answer_query(shared, inbox, query.as_str(), reply, pressure);
        }
        return;
    }
    let event = match decode(shared, &msg) {
        Ok(e) => e,
        Err(err) => {
            tracing::warn!(target: "happen_nats", node = %node, subject = %msg.subject, error = %err, "rejected a bad message");
            if let Some(reply) = msg.reply {
                publish_error(shared, reply, &err, pressure, node);
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
                Err(err) => publish_error(shared, reply, &err, pressure, node),
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
fn on_broadcast(shared: &Arc<Shared>, inbox: &Inbox, msg: Message) -> Option<Prepared> {
    // the type at the start of the body says whether the node wants it, without decoding
    // (see `WIRE.md`, "Broadcasts")
    if let Some(t) = wire::peek_type(&msg.payload)
        && !inbox.accepts(t)
    {
        inc(&shared.counters.broadcasts_skipped);
        return None;
    }
    inc(&shared.counters.broadcasts_decoded);
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
    Some(Incoming::prepare(shared, inbox, &msg, event))
}

/// Answers a `Happen-Query` (no event is admitted): `limits` with the node's limits.
fn answer_query(
    shared: &Shared,
    inbox: &Inbox,
    query: &str,
    reply: Subject,
    pressure: &watch::Receiver<Pressure>,
) {
    if query.trim() != "limits" {
        let err = Error::new(
            ErrorKind::InvalidEvent,
            format!("unknown `Happen-Query` `{query}`; only `limits` is understood"),
        );
        return publish_error(shared, reply, &err, pressure, inbox.id());
    }
    let limits = wire::RemoteLimits::of(inbox.limits());
    let mut h = HeaderMap::new();
    h.insert(header::LIMITS, wire::limits_header(&limits).as_str());
    h.insert(header::REPLICA, shared.replica.as_str());
    publish(shared, reply, Some(h), Bytes::new());
}

/// Adds `Happen-Pressure` when the node is under pressure, from its last `node.pressure`
/// report (with that report's `seq`, so a requester can order it against the reports).
fn pressure_headers(
    shared: &Shared,
    node: &NodeId,
    pressure: &watch::Receiver<Pressure>,
    into: &mut Option<HeaderMap>,
) {
    if !pressure.borrow().under_pressure {
        return;
    }
    let Some((seq, p)) = shared.local_reports.lock().get(node).copied() else {
        return;
    };
    if let Some(v) = wire::pressure_report_header(&p, seq, &shared.replica) {
        into.get_or_insert_with(HeaderMap::new)
            .insert(header::PRESSURE, v.as_str());
    }
}

fn publish(shared: &Shared, subject: Subject, headers: Option<HeaderMap>, body: Bytes) {
    // Through the transport's publisher task, like requests (it hands messages to the client
    // in batches); never waiting for room (see `Shared::publish_answer`).
    shared.publish_answer(Outgoing {
        subject,
        reply: None,
        headers: headers.map_or(Headers::None, Headers::Custom),
        payload: body,
    });
    inc(&shared.counters.replies);
}

/// Room for the `Happen-Pressure` header (about 100 bytes) added to an error reply after its
/// size was checked against the server's `max_payload`.
const PRESSURE_ROOM: usize = 256;

/// Publishes an error reply: `Happen-Status: error`, the `Happen-Error-*` headers and the JSON
/// error body (see `WIRE.md`, "Request / reply").
pub(crate) fn publish_error(
    shared: &Shared,
    reply: Subject,
    err: &Error,
    pressure: &watch::Receiver<Pressure>,
    node: &NodeId,
) {
    let mut h = HeaderMap::new();
    h.insert(header::STATUS, "error");
    let body = wire::encode_error(err, &mut h, shared.client.max_payload(), PRESSURE_ROOM);
    let mut h = Some(h);
    pressure_headers(shared, node, pressure, &mut h);
    publish(shared, reply, h, body);
}

fn answer(
    shared: &Arc<Shared>,
    reply: Subject,
    credit: Option<u64>,
    response: Response,
    pressure: &watch::Receiver<Pressure>,
    node: &NodeId,
) {
    match response {
        Response::Done(Ok(v)) => {
            let mut h = None;
            pressure_headers(shared, node, pressure, &mut h);
            publish(shared, reply, h, value_body(&v));
        }
        Response::Done(Err(e)) => publish_error(shared, reply, &e, pressure, node),
        Response::Stream(items) => match credit {
            Some(credit) => {
                tokio::spawn(crate::stream::produce(shared.clone(), reply, items, credit));
            }
            None => {
                // a requester that cannot consume streams (e.g. the reference implementation)
                // gets the final value, as a plain reply
                let shared = shared.clone();
                let pressure = pressure.clone();
                let node = node.clone();
                tokio::spawn(async move {
                    match items.finish().await {
                        Ok(v) => publish(&shared, reply, None, value_body(&v)),
                        Err(e) => publish_error(&shared, reply, &e, &pressure, &node),
                    }
                });
            }
        },
    }
}
