//! The receiving side: one task per attached node reads its direct and broadcast subscriptions,
//! admits events into the node and publishes the answers. Replies are awaited in a
//! `FuturesUnordered` inside the same task (no task per request); only streams get a task.
//! After each run of messages the task starts their flows itself (`Inbox::run_here`), so a
//! handler that finishes at once runs on the thread that decoded its event; flows that wait
//! move to their own tasks, and a handler that blocks its thread is left to the node's
//! drivers.
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
//! ([`Outbox::publish_answer`]), and a broadcast stream's set-up (a subscribe and a round trip
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
use happen::transport::{Inbox, RunHere};
use happen::transport::{ReplyReceiver, Response, reply_channel};
use happen::{Error, ErrorKind, NodeId, Pressure};
use tokio::sync::{oneshot, watch};

use super::completions::{Completing, Completions};
use super::discover;
use super::streams::broadcast::{Incoming, Prepared};
use super::streams::{Streams, produce};
use crate::core::Endpoint;
use crate::core::nodes::LocalNodes;
use crate::core::outbox::{Headers, Outbox, Outgoing};
use crate::core::requests::Requests;
use crate::core::stats::{BadInput, Counters, inc};
use crate::wire::header::NodeHeaders;
use crate::wire::{self, header, value_body};
use futures::future::BoxFuture;

/// Messages a serve task takes in one run when they are already waiting, and flows it starts
/// itself after the run (see [`Serving::on_broadcasts`]).
const BROADCAST_RUN: usize = 64;

/// What the serve tasks of this process's nodes use.
pub(crate) struct Serve {
    pub(crate) ep: Arc<Endpoint>,
    /// Round trips, and relays of requests a stopped node passes on.
    pub(crate) requests: Arc<Requests>,
    /// Answers are published through it.
    pub(crate) outbox: Arc<Outbox>,
    /// The nodes' last pressure reports, for reply headers.
    pub(crate) nodes: Arc<LocalNodes>,
    pub(crate) counters: Arc<Counters>,
    /// Streams produced by the node, and broadcast streams.
    pub(crate) streams: Arc<Streams>,
    /// Completion records of tells and broadcasts (when on).
    pub(crate) completions: Arc<Completions>,
}

/// A reply being computed by the local node.
struct Waiting {
    reply: Subject,
    /// The requester's initial stream credit (`None`: it cannot consume streams).
    credit: Option<u64>,
    /// Whether (and how far) the requester is told that this replica holds the request.
    track: Track,
    rx: ReplyReceiver,
}

/// The `accepted` frame of a waiting request (see [`Serving::on_accept_tick`]).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Track {
    /// The requester did not ask (`Happen-Track`), or liveness is off.
    No,
    /// Asked; no tick has seen it yet.
    New,
    /// Seen by one tick: the next one sends the frame.
    Seen,
    /// Sent (again after a reconnect).
    Sent,
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

/// The longest a stopping node waits to learn whether another replica serves its node id.
const ELSEWHERE_WAIT: Duration = Duration::from_secs(1);

/// How long after the last discovery answer a stopping node takes it that no other replica
/// will name its node (processes answer within milliseconds; a late one only means the
/// plain ending, as before).
const ELSEWHERE_QUIET: Duration = Duration::from_millis(50);

/// The allowance a stopping node cuts its subscriptions to once another replica is known to
/// serve the node and a round trip brought nothing (see [`Serving::finish`]).
const CUT_TO: u64 = 32;

/// The `Happen-Query` value of a stopping replica's fillers (see [`Serving::fill`]).
const DRAIN_QUERY: &str = "drain";

/// Once cut, how long without a message before the node stops waiting for the allowance to
/// be used up (nothing is arriving, so nothing is on its way).
const IDLE_END: Duration = Duration::from_millis(50);

pub(crate) async fn run(
    ctx: Arc<Serve>,
    inbox: Inbox,
    direct: Subscriber,
    broadcast: Option<Subscriber>,
    disconnects: u64,
    stop: oneshot::Receiver<()>,
) {
    let mut node = Serving {
        disconnects,
        pressure: inbox.watch_pressure(),
        drain: inbox.watch_pressure(),
        ctx,
        inbox,
        direct: Sub::new(Some(direct)),
        broadcast: Sub::new(broadcast),
        waiting: FuturesUnordered::new(),
        completing: FuturesUnordered::new(),
        relays: FuturesUnordered::new(),
        held: None,
        here: RunHere::default(),
        preparing: None,
        elsewhere: None,
        accept_tick: None,
        epoch: disconnects,
    };
    // named in this process's heartbeats until this task ends, however it ends
    let _served = Served(node.ctx.clone(), node.inbox.id().clone());
    node.serve(stop).await;
    node.stop_intake().await;
    node.finish().await;
    if !node.completing.is_empty() {
        // flows still running: their records are written when they end
        let (completions, inbox) = (node.ctx.completions.clone(), node.inbox.clone());
        let mut completing = std::mem::take(&mut node.completing);
        tokio::spawn(async move {
            while let Some((started, response)) = completing.next().await {
                completions.finish(&inbox, started, response);
            }
        });
    }
}

/// Tells [`LocalNodes`] that a node's serve task ended, when dropped.
struct Served(Arc<Serve>, NodeId);

impl Drop for Served {
    fn drop(&mut self) {
        self.0.nodes.stopped(&self.1);
    }
}

/// A subscription and how many messages were taken from it.
struct Sub {
    /// `None`: never made (the broadcasts of a node that takes none); counts as ended.
    sub: Option<Subscriber>,
    taken: u64,
    /// The client closed it (unsubscribed after its last message, or the connection closed
    /// for good), or it was never made.
    ended: bool,
}

impl Sub {
    fn new(sub: Option<Subscriber>) -> Sub {
        Sub {
            ended: sub.is_none(),
            sub,
            taken: 0,
        }
    }

    /// The next message; pending forever once the subscription ended.
    async fn next(&mut self) -> Option<Message> {
        let Some(sub) = self.sub.as_mut().filter(|_| !self.ended) else {
            return std::future::pending().await;
        };
        let msg = sub.next().await;
        self.count(msg.is_some());
        msg
    }

    /// A message the client already holds for us, without waiting.
    fn try_next(&mut self) -> Option<Message> {
        let sub = self.sub.as_mut().filter(|_| !self.ended)?;
        // unconstrained: out of tokio's co-operative budget a channel poll is `Pending` even
        // with messages waiting, and a stopping node would drop them with the subscription
        let msg = tokio::task::unconstrained(sub.next()).now_or_never()?;
        self.count(msg.is_some());
        msg
    }

    /// Unsubscribes now, or after `after` more messages in all; nothing for an ended one.
    async fn unsubscribe(&mut self, after: Option<u64>) {
        let Some(sub) = self.sub.as_mut().filter(|_| !self.ended) else {
            return;
        };
        let _ = match after {
            Some(n) => sub.unsubscribe_after(n).await,
            None => sub.unsubscribe().await,
        };
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
    ctx: Arc<Serve>,
    /// The connection's disconnect count when the subscriptions were made.
    disconnects: u64,
    inbox: Inbox,
    direct: Sub,
    broadcast: Sub,
    pressure: watch::Receiver<Pressure>,
    /// A second receiver, to wait for the node to drain while a broadcast is held.
    drain: watch::Receiver<Pressure>,
    waiting: FuturesUnordered<Waiting>,
    /// Tells and broadcasts whose completion records are written when their flows end.
    completing: FuturesUnordered<Completing>,
    /// Requests relayed to another replica after the node stopped: resolve when the first
    /// answer was passed back (see [`Serving::pass_on`]).
    relays: FuturesUnordered<oneshot::Receiver<()>>,
    /// A broadcast waiting for the node to drain (see the module docs).
    held: Option<Held>,
    /// For starting the flows of a run of messages in this task (see `on_broadcasts`).
    here: RunHere,
    /// A broadcast whose stream subscription is being set up (see the module docs); never
    /// together with `held`.
    preparing: Option<BoxFuture<'static, Incoming>>,
    /// Whether another replica serves the node: asked when the node stops.
    elsewhere: Option<tokio::task::JoinHandle<bool>>,
    /// Armed while requests that asked for an `accepted` frame wait (see
    /// [`Serving::on_accept_tick`]).
    accept_tick: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The connection's disconnect count at the last accept tick.
    epoch: u64,
}

/// How a stopping node ends its subscriptions (see [`Serving::finish`]).
#[derive(Clone, Copy)]
enum Ending {
    /// No other replica is known (or the subscription was remade after a reconnect): a plain
    /// unsubscribe after a quiet round trip.
    Plain,
    /// Another replica serves the node: the allowance was cut, wait for it to be used up.
    Cut,
}

impl Serving {
    /// Serves until `stop` (sent by `detach` and `shutdown`, or its sender dropped).
    async fn serve(&mut self, mut stop: oneshot::Receiver<()>) {
        loop {
            tokio::select! {
                biased;
                _ = &mut stop => return,
                Some((reply, credit, response)) = self.waiting.next(), if !self.waiting.is_empty() => {
                    answer(&self.ctx, reply, credit, response, &self.pressure, self.inbox.id());
                }
                Some((started, response)) = self.completing.next(), if !self.completing.is_empty() => {
                    self.ctx.completions.finish(&self.inbox, started, response);
                }
                () = ticked(&mut self.accept_tick), if self.accept_tick.is_some() => self.on_accept_tick(),
                Some(msg) = self.direct.next() => self.on_direct(msg),
                incoming = prepared(&mut self.preparing), if self.preparing.is_some() => {
                    self.preparing = None;
                    self.held = offer(&self.ctx, &self.inbox, &self.pressure, &mut self.completing, incoming);
                }
                () = drained(&mut self.drain, self.held.as_ref().is_some_and(|h| h.rejected)), if self.held.is_some() => {
                    let h = self.held.take().expect("guarded by `held.is_some()`");
                    self.held = offer(&self.ctx, &self.inbox, &self.pressure, &mut self.completing, h.event);
                }
                Some(msg) = self.broadcast.next(), if self.held.is_none() && self.preparing.is_none() => {
                    self.on_broadcasts(msg);
                }
            }
        }
    }

    /// Takes `msg` and the broadcasts already waiting behind it as one run (see
    /// [`Serving::take_run`]). Stops at a broadcast that is held (the node is under pressure)
    /// or whose stream is being set up.
    fn on_broadcasts(&mut self, msg: Message) {
        self.take_run(
            msg,
            |s| &mut s.broadcast,
            |s, inbox, msg| {
                match on_broadcast(&s.ctx, inbox, msg) {
                    Some(Prepared::Ready(incoming)) => {
                        s.held = offer(&s.ctx, inbox, &s.pressure, &mut s.completing, incoming);
                    }
                    Some(Prepared::Subscribing(subscribing)) => s.preparing = Some(subscribing),
                    None => {}
                }
                s.held.is_none() && s.preparing.is_none()
            },
        );
    }

    /// Admits `first` and the messages already waiting behind it on `sub` (up to
    /// [`BROADCAST_RUN`]) with `take`, which says whether to go on, holding the node's
    /// driver wakes over the run (see `Inbox::hold_wakes`); then starts their flows in this
    /// task (`Inbox::run_here`: where they were decoded, no driver woken on another thread;
    /// a handler that blocks its thread is left to the drivers).
    fn take_run(
        &mut self,
        first: Message,
        sub: fn(&mut Serving) -> &mut Sub,
        mut take: impl FnMut(&mut Serving, &Inbox, Message) -> bool,
    ) {
        let inbox = self.inbox.clone();
        let _wakes = inbox.hold_wakes();
        let mut next = Some(first);
        let mut taken = 0;
        while let Some(msg) = next.take() {
            taken += 1;
            if take(self, &inbox, msg) && taken < BROADCAST_RUN {
                next = sub(self).try_next();
            }
        }
        inbox.run_here(&mut self.here, BROADCAST_RUN);
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
        let ep = self.ctx.ep.clone();
        let node = self.inbox.id().to_string();
        self.elsewhere = Some(tokio::spawn(async move {
            let (client, subjects) = (&ep.client, &ep.subjects);
            let except = Some(ep.replica.as_str());
            discover::serves_except(
                client,
                subjects,
                &node,
                except,
                ELSEWHERE_WAIT,
                ELSEWHERE_QUIET,
            )
            .await
            .unwrap_or(false)
        }));
        // a broadcast being set up is admitted first (in order); answers keep flowing meanwhile
        while self.preparing.is_some() {
            tokio::select! {
                biased;
                Some((reply, credit, response)) = self.waiting.next(), if !self.waiting.is_empty() => {
                    answer(&self.ctx, reply, credit, response, &self.pressure, self.inbox.id());
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
            if let Err(err) = h.event.deliver(&self.inbox, None) {
                self.inbox.report_unobserved(&err);
            }
        }
        self.take_buffered().await;
        // After a reconnect the client counts the subscription's messages from its start but
        // the server from the resubscription, so an allowance would not end both at once:
        // then a plain unsubscribe (what is on its way may be lost).
        let resubscribed =
            self.ctx.counters.disconnects.load(Ordering::Acquire) != self.disconnects;
        for sub in [&mut self.direct, &mut self.broadcast] {
            let after = (!resubscribed).then_some(sub.taken + UNSUBSCRIBE_AFTER);
            sub.unsubscribe(after).await;
        }
        let ctx = self.ctx.clone();
        let confirm = ctx.requests.round_trip(CONFIRM_WITHIN);
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
                    answer(&self.ctx, reply, credit, response, &self.pressure, self.inbox.id());
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
    /// no other replica serves the node). A plain unsubscribe loses what the server routes
    /// here in the moment before it processes it, so:
    /// - when another replica serves the node (asked through discovery when the node
    ///   stopped), a round trip that brings nothing cuts the allowance to [`CUT_TO`] (nothing
    ///   is on its way, so that many more is plenty), and the node passes messages on until
    ///   the server has routed the last of them here: the subscription then ends on both
    ///   sides with nothing dropped. Only when nothing arrives for [`IDLE_END`] (no traffic)
    ///   does it unsubscribe plainly;
    /// - with only this replica, passed-on messages come back, and the server drops a message
    ///   routed to a queue member over its allowance when no other member exists, so the
    ///   subscriptions are removed once a round trip after the last one passed on brings
    ///   nothing new; the allowance runs out after at most [`UNSUBSCRIBE_AFTER`] such returns,
    ///   and later senders are told the node is gone ("no responders").
    async fn finish(&mut self) {
        let relays_until = Instant::now() + RELAY_WAIT;
        let mut give_up = None;
        let mut ending = None;
        let mut last_message = Instant::now();
        loop {
            while !self.waiting.is_empty()
                || (!self.relays.is_empty() && Instant::now() < relays_until)
            {
                tokio::select! {
                    biased;
                    Some((reply, credit, response)) = self.waiting.next(), if !self.waiting.is_empty() => {
                        answer(&self.ctx, reply, credit, response, &self.pressure, self.inbox.id());
                    }
                    Some(_) = self.relays.next(), if !self.relays.is_empty() => {}
                    () = ticked(&mut self.accept_tick), if self.accept_tick.is_some() => self.on_accept_tick(),
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
            self.ctx.outbox.flush().await;
            // not confirmed (the connection is gone): the loop ends at `give_up`
            let _ = self.ctx.requests.round_trip(CONFIRM_WITHIN).await;
            let mut quiet = true;
            while let Some(msg) = self.direct.try_next() {
                self.pass_on(msg);
                quiet = false;
            }
            while let Some(msg) = self.broadcast.try_next() {
                self.admit_broadcast(msg).await;
                quiet = false;
            }
            if !quiet {
                last_message = Instant::now();
                continue;
            }
            if !self.relays.is_empty() {
                continue;
            }
            let ending = match ending {
                Some(e) => e,
                None => *ending.insert(self.choose_ending().await),
            };
            match ending {
                Ending::Plain => break,
                Ending::Cut if !self.direct.ended => {
                    // use the allowance up: of these, the server routes some here
                    self.fill();
                    continue;
                }
                // the direct subscription ended on both sides; the broadcast one ends when
                // nothing arrives any more
                Ending::Cut if last_message.elapsed() >= IDLE_END => break,
                Ending::Cut => {
                    // wait for a message (or the idle end) instead of spinning round trips
                    let idle_end = last_message + IDLE_END;
                    tokio::select! {
                        Some(msg) = self.direct.next() => {
                            self.pass_on(msg);
                            last_message = Instant::now();
                        }
                        Some(msg) = self.broadcast.next() => {
                            self.admit_broadcast(msg).await;
                            last_message = Instant::now();
                        }
                        () = tokio::time::sleep_until(idle_end.min(give_up)) => {}
                    }
                }
            }
        }
        for sub in [&mut self.direct, &mut self.broadcast] {
            sub.unsubscribe(None).await;
        }
        // what the client still holds (it stopped taking more)
        while let Some(msg) = self.direct.try_next() {
            self.pass_on(msg);
        }
        while let Some(msg) = self.broadcast.try_next() {
            self.admit_broadcast(msg).await;
        }
        self.report_closed();
        self.ctx.outbox.flush().await;
    }

    /// Publishes [`CUT_TO`] fillers on the node's subject: messages with `Happen-Query: drain`
    /// and no reply subject, which every replica ignores (a query without a reply subject is
    /// not answered). The server routes them among the node's queue group like any message,
    /// so the ones it routes here use up what is left of this subscription's allowance
    /// without waiting for senders to send more.
    fn fill(&self) {
        let subject = Subject::from(self.ctx.ep.subjects.node(self.inbox.id()));
        for _ in 0..CUT_TO {
            let mut h = HeaderMap::new();
            h.insert(header::QUERY, DRAIN_QUERY);
            self.ctx.outbox.publish_answer(Outgoing {
                subject: subject.clone(),
                reply: None,
                headers: Headers::Custom(h),
                payload: Bytes::new(),
            });
        }
    }

    /// After a quiet round trip: cuts the allowance when another replica serves the node
    /// (see [`Serving::finish`]).
    async fn choose_ending(&mut self) -> Ending {
        let elsewhere = match self.elsewhere.take() {
            Some(asking) => asking.await.unwrap_or(false),
            None => false,
        };
        let resubscribed =
            self.ctx.counters.disconnects.load(Ordering::Acquire) != self.disconnects;
        if !elsewhere || resubscribed {
            return Ending::Plain;
        }
        for sub in [&mut self.direct, &mut self.broadcast] {
            sub.unsubscribe(Some(sub.taken + CUT_TO)).await;
        }
        Ending::Cut
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
        let query = msg.headers.as_ref().and_then(|h| h.get(header::QUERY));
        if query.is_some() && msg.reply.is_none() {
            return; // a filler (see `fill`): nobody waits for it
        }
        let own = |r: &Subject| self.ctx.requests.is_own(r.as_str());
        let reply = match msg.reply {
            Some(r) if !own(&r) => {
                let (first, answered) = oneshot::channel();
                let token = self.ctx.requests.relay(r, self.inbox.id().clone(), first);
                self.relays.push(answered);
                Some(self.ctx.requests.reply_subject(token))
            }
            other => other,
        };
        let out = Outgoing {
            subject: msg.subject,
            reply,
            headers: Headers::from(msg.headers),
            payload: msg.payload,
        };
        self.ctx.outbox.publish_answer(out);
        inc(&self.ctx.counters.forwarded);
    }

    /// Takes `msg` and the direct messages already waiting behind it as one run (see
    /// [`Serving::take_run`]): an answer that is ready at once is published on this task's
    /// next turn, with no wake in between.
    fn on_direct(&mut self, msg: Message) {
        let mut tracked = false;
        self.take_run(
            msg,
            |s| &mut s.direct,
            |s, inbox, msg| {
                tracked |= on_direct(
                    &s.ctx,
                    inbox,
                    msg,
                    &mut s.waiting,
                    &mut s.completing,
                    &s.pressure,
                );
                true
            },
        );
        if tracked && self.accept_tick.is_none() {
            self.arm_accept_tick();
        }
    }

    fn arm_accept_tick(&mut self) {
        let tick = self.ctx.ep.config.liveness.accept_tick();
        self.accept_tick = Some(Box::pin(tokio::time::sleep(tick)));
    }

    /// Names this replica to the requesters still waiting (`Happen-Frame: accepted`, see
    /// `WIRE.md`, "Liveness"): a request that asked is named at the second tick it is seen
    /// waiting (so one answered within a tick costs nothing), and every named one again after
    /// a reconnect (a frame written just before the loss may be lost). Ticks while any such
    /// request waits.
    fn on_accept_tick(&mut self) {
        self.accept_tick = None;
        let epoch = self.ctx.counters.disconnects.load(Ordering::Acquire);
        let reconnected = epoch != self.epoch;
        self.epoch = epoch;
        let mut tracked = false;
        for w in self.waiting.iter_mut() {
            let send = match w.track {
                Track::No => continue,
                Track::New if !reconnected => {
                    w.track = Track::Seen;
                    false
                }
                Track::New | Track::Seen => true,
                Track::Sent => reconnected,
            };
            tracked = true;
            if send {
                w.track = Track::Sent;
                send_accepted(&self.ctx, &w.reply);
            }
        }
        if tracked {
            self.arm_accept_tick();
        }
    }

    /// Admits a broadcast without waiting for the node to drain (the node is closing);
    /// counted at the node if it does not fit.
    async fn admit_broadcast(&mut self, msg: Message) {
        let mut incoming = match on_broadcast(&self.ctx, &self.inbox, msg) {
            Some(Prepared::Ready(incoming)) => incoming,
            Some(Prepared::Subscribing(subscribing)) => subscribing.await,
            None => return,
        };
        if let Err(err) = incoming.deliver(&self.inbox, None) {
            self.inbox.report_unobserved(&err);
        }
    }

    /// Tells pacing senders elsewhere that this replica no longer serves the node (so a
    /// last "under pressure" report of it does not hold them back), if it ever reported.
    fn report_closed(&mut self) {
        let id = self.inbox.id().clone();
        if !self.ctx.nodes.forget_reports(&id) {
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
        let body = wire::encode_event(&event);
        let mut h = HeaderMap::new();
        h.insert(header::REPLICA, self.ctx.ep.replica.as_str());
        publish(
            &self.ctx,
            Subject::from(self.ctx.ep.subjects.pressure(&id)),
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

/// Resolves when the accept tick fires; pending when it is not armed.
async fn ticked(tick: &mut Option<Pin<Box<tokio::time::Sleep>>>) {
    match tick {
        Some(sleep) => sleep.as_mut().await,
        None => std::future::pending().await,
    }
}

/// Tells a waiting requester that this replica holds its request: `Happen-Frame: accepted`
/// and `Happen-Replica`, no body. Best effort: dropped when the outgoing buffer is full.
fn send_accepted(ctx: &Serve, reply: &Subject) {
    let mut h = HeaderMap::new();
    h.insert(header::FRAME, header::ACCEPTED);
    h.insert(header::REPLICA, ctx.ep.replica.as_str());
    let out = Outgoing {
        subject: reply.clone(),
        reply: None,
        headers: Headers::Custom(h),
        payload: Bytes::new(),
    };
    if ctx.outbox.try_enqueue(out).is_none() {
        inc(&ctx.counters.accepted_sent);
    }
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
/// offered again once the node drains. Other failures are counted at the node. A plain
/// broadcast's flow is tracked for its completion record while records are on.
fn offer(
    ctx: &Serve,
    inbox: &Inbox,
    pressure: &watch::Receiver<Pressure>,
    completing: &mut FuturesUnordered<Completing>,
    mut event: Incoming,
) -> Option<Held> {
    if pressure.borrow().under_pressure {
        return Some(Held {
            event,
            rejected: false,
        });
    }
    let (reply, tracked) = match event.plain_event() {
        Some(e) if ctx.completions.on() => {
            let (tx, c) = Completions::track(e, "broadcast");
            (Some(tx), Some(c))
        }
        _ => (None, None),
    };
    match event.deliver(inbox, reply) {
        Ok(()) => {
            if let Some(c) = tracked {
                completing.push(c);
            }
            None
        }
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

/// Decodes the event in `msg`, checking size and stray frames (`frame`: its `Happen-Frame`
/// header); counts and explains what is wrong.
fn decode(ctx: &Serve, msg: &Message, frame: Option<&str>) -> Result<happen::Event, Error> {
    if msg.payload.len() > ctx.ep.max_bytes {
        ctx.counters.bad_input(BadInput::Oversized);
        return wire::decode_event(&msg.payload, ctx.ep.max_bytes);
    }
    if let Some(kind) = frame {
        ctx.counters.bad_input(BadInput::Protocol);
        return Err(Error::new(
            happen::ErrorKind::InvalidEvent,
            format!(
                "unexpected stream frame `{kind}` on a node subject; only events are accepted here"
            ),
        ));
    }
    wire::decode_event(&msg.payload, ctx.ep.max_bytes).inspect_err(|_| {
        ctx.counters.bad_input(BadInput::Malformed);
    })
}

/// Admits a direct message; `true` when it is a request waiting that asked to be told which
/// replica holds it (`Happen-Track`).
fn on_direct(
    ctx: &Arc<Serve>,
    inbox: &Inbox,
    msg: Message,
    waiting: &mut FuturesUnordered<Waiting>,
    completing: &mut FuturesUnordered<Completing>,
    pressure: &watch::Receiver<Pressure>,
) -> bool {
    let node = inbox.id();
    let headers = NodeHeaders::read(msg.headers.as_ref());
    if let Some(query) = headers.query {
        if let Some(reply) = msg.reply {
            answer_query(ctx, inbox, query, reply, pressure);
        }
        return false;
    }
    let event = match decode(ctx, &msg, headers.frame) {
        Ok(e) => e,
        Err(err) => {
            tracing::warn!(target: "happen_nats", node = %node, subject = %msg.subject, error = %err, "rejected a bad message");
            if let Some(reply) = msg.reply {
                publish_error(ctx, reply, &err, pressure, node);
            }
            return false;
        }
    };
    match msg.reply {
        Some(reply) => {
            let credit = headers
                .stream
                .and_then(|c| c.trim().parse::<u64>().ok())
                .filter(|c| *c > 0);
            let track = if ctx.ep.config.liveness.enabled && headers.track {
                Track::New
            } else {
                Track::No
            };
            let (tx, rx) = reply_channel();
            match inbox.deliver(event, Some(tx)) {
                Ok(()) => {
                    waiting.push(Waiting {
                        reply,
                        credit,
                        track,
                        rx,
                    });
                    track == Track::New
                }
                Err(err) => {
                    publish_error(ctx, reply, &err, pressure, node);
                    false
                }
            }
        }
        None if ctx.completions.on() => {
            let (tx, c) = Completions::track(&event, "tell");
            match inbox.deliver(event, Some(tx)) {
                Ok(()) => completing.push(c),
                Err(err) => inbox.report_unobserved(&err),
            }
            false
        }
        None => {
            if let Err(err) = inbox.deliver(event, None) {
                inbox.report_unobserved(&err);
            }
            false
        }
    }
}

/// Decodes a broadcast; `None` when it is bad or the node has no handler for it. A broadcast
/// carrying a stream is prepared for it (see [`broadcast`](super::streams::broadcast)).
fn on_broadcast(ctx: &Arc<Serve>, inbox: &Inbox, msg: Message) -> Option<Prepared> {
    // the type at the start of the body says whether the node wants it, without decoding
    // (see `WIRE.md`, "Broadcasts")
    let peeked = wire::peek_type(&msg.payload);
    if let Some(t) = peeked
        && !inbox.accepts(t)
    {
        inc(&ctx.counters.broadcasts_skipped);
        return None;
    }
    inc(&ctx.counters.broadcasts_decoded);
    let frame = msg
        .headers
        .as_ref()
        .and_then(|h| header::get(h, header::FRAME));
    let event = match decode(ctx, &msg, frame) {
        Ok(e) => e,
        Err(err) => {
            tracing::warn!(target: "happen_nats", node = %inbox.id(), subject = %msg.subject, error = %err, "rejected a bad broadcast");
            return None;
        }
    };
    // (a peeked type is the decoded one: it has no escapes)
    if peeked.is_none() && !inbox.accepts(event.event_type()) {
        return None;
    }
    Some(Incoming::prepare(&ctx.streams, inbox, &msg, event))
}

/// Answers a `Happen-Query` (no event is admitted): `limits` with the node's limits.
fn answer_query(
    ctx: &Serve,
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
        return publish_error(ctx, reply, &err, pressure, inbox.id());
    }
    let limits = wire::RemoteLimits::of(inbox.limits());
    let mut h = HeaderMap::new();
    h.insert(header::LIMITS, wire::limits_header(&limits).as_str());
    h.insert(header::REPLICA, ctx.ep.replica.as_str());
    publish(ctx, reply, Some(h), Bytes::new());
}

/// Adds `Happen-Pressure` when the node is under pressure, from its last `node.pressure`
/// report (with that report's `seq`, so a requester can order it against the reports).
fn pressure_headers(
    ctx: &Serve,
    node: &NodeId,
    pressure: &watch::Receiver<Pressure>,
    into: &mut Option<HeaderMap>,
) {
    if !pressure.borrow().under_pressure {
        return;
    }
    let Some((seq, p)) = ctx.nodes.report(node) else {
        return;
    };
    if let Some(v) = wire::pressure_report_header(&p, seq, &ctx.ep.replica) {
        into.get_or_insert_with(HeaderMap::new)
            .insert(header::PRESSURE, v.as_str());
    }
}

fn publish(ctx: &Serve, subject: Subject, headers: Option<HeaderMap>, body: Bytes) {
    // Through the transport's publisher task, like requests (it hands messages to the client
    // in batches); never waiting for room (see `Shared::publish_answer`).
    ctx.outbox.publish_answer(Outgoing {
        subject,
        reply: None,
        headers: Headers::from(headers),
        payload: body,
    });
    inc(&ctx.counters.replies);
}

/// Room for the `Happen-Pressure` header (about 100 bytes) added to an error reply after its
/// size was checked against the server's `max_payload`.
const PRESSURE_ROOM: usize = 256;

/// Publishes an error reply: `Happen-Status: error`, the `Happen-Error-*` headers and the JSON
/// error body (see `WIRE.md`, "Request / reply").
fn publish_error(
    ctx: &Serve,
    reply: Subject,
    err: &Error,
    pressure: &watch::Receiver<Pressure>,
    node: &NodeId,
) {
    let mut h = HeaderMap::new();
    h.insert(header::STATUS, "error");
    let body = wire::encode_error(err, &mut h, ctx.ep.client.max_payload(), PRESSURE_ROOM);
    let mut h = Some(h);
    pressure_headers(ctx, node, pressure, &mut h);
    publish(ctx, reply, h, body);
}

fn answer(
    ctx: &Arc<Serve>,
    reply: Subject,
    credit: Option<u64>,
    response: Response,
    pressure: &watch::Receiver<Pressure>,
    node: &NodeId,
) {
    match response {
        Response::Done(Ok(v)) => {
            let mut h = None;
            pressure_headers(ctx, node, pressure, &mut h);
            publish(ctx, reply, h, value_body(&v));
        }
        Response::Done(Err(e)) => publish_error(ctx, reply, &e, pressure, node),
        Response::Stream(items) => match credit {
            Some(credit) => {
                tokio::spawn(produce::run(ctx.streams.clone(), reply, items, credit));
            }
            None => {
                // a requester that cannot consume streams (e.g. the reference implementation)
                // gets the final value, as a plain reply
                let ctx = ctx.clone();
                let pressure = pressure.clone();
                let node = node.clone();
                tokio::spawn(async move {
                    match items.skip_to_final().await {
                        Ok(v) => publish(&ctx, reply, None, value_body(&v)),
                        Err(e) => publish_error(&ctx, reply, &e, &pressure, &node),
                    }
                });
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use std::future::IntoFuture;
    use std::sync::Arc;
    use std::time::Duration;

    use happen::{Context, Event, Happen};
    use parking_lot::Mutex;
    use serde_json::json;
    use test_support::NatsServer;
    use tokio::sync::oneshot;

    use crate::{NatsConfig, NatsTransport};

    async fn instance_with(config: NatsConfig) -> (Happen, NatsTransport) {
        let transport = NatsTransport::connect(config)
            .await
            .expect("connect to nats");
        let happen = Happen::builder()
            .transport(transport.clone())
            .build()
            .expect("build happen");
        (happen, transport)
    }

    async fn within<T>(secs: u64, what: &str, f: impl IntoFuture<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(secs), f)
            .await
            .unwrap_or_else(|_| panic!("timed out after {secs}s: {what}"))
    }

    /// `try_next` takes everything the client holds, however much: tokio's co-operative
    /// budget (128 channel polls per task poll) would otherwise make it report "nothing" half
    /// way, and a stopping node would drop the rest with its subscription.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn try_next_takes_everything_the_client_holds() {
        const N: usize = 1_000;
        let server = NatsServer::start();
        let client = async_nats::connect(server.url()).await.unwrap();
        let sub = client.subscribe("held").await.unwrap();
        for i in 0..N {
            client.publish("held", i.to_string().into()).await.unwrap();
        }
        // a request nobody answers comes back after every message before it was delivered
        let _ = within(10, "a round trip", client.request("nobody", "".into())).await;
        let mut sub = super::Sub::new(Some(sub));
        let mut taken = 0;
        while sub.try_next().is_some() {
            taken += 1;
        }
        assert_eq!(taken, N);
    }

    /// While a broadcast stream's set-up (a subscribe and a round trip through the server)
    /// is stalled, direct requests to the same node are still read and answered, and the
    /// broadcast is admitted once its set-up completes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stalled_broadcast_stream_set_up_does_not_hold_up_direct_requests() {
        let server = NatsServer::start();
        let mut config = NatsConfig::with_server(server.url());
        // a stalled set-up would hold the loop this long (longer than any bound below)
        config.request_timeout = Some(Duration::from_secs(60));
        // broadcasts of `metrics` carry a stream: receivers subscribe to it before admission
        config.stream_types = vec!["metrics".to_owned()];
        let (a, _ta) = instance_with(config.clone()).await;
        let (b, tb) = instance_with(config).await;

        let dash = b.node("dash").await.unwrap();
        let (admitted_tx, admitted_rx) = oneshot::channel();
        let admitted_tx = Arc::new(Mutex::new(Some(admitted_tx)));
        dash.on("metrics", move |_e: Event, ctx: Context| {
            let admitted = admitted_tx.lock().take();
            async move {
                if let Some(tx) = admitted {
                    let _ = tx.send(ctx.items().is_some());
                }
            }
        })
        .unwrap();
        dash.on("ping", |e: Event, _c: Context| async move {
            e.payload().clone()
        })
        .unwrap();

        // `dash`'s process: every round trip through the server now waits (a slow server)
        tb.round_trip_hold().set(true);
        let source = a.node("source").await.unwrap();
        source.broadcast(Event::new("metrics", ())).unwrap();
        within(
            10,
            "the stream set-up to reach its round trip",
            tb.round_trip_hold().waiting(1),
        )
        .await;

        // the set-up is stalled; requests to the same node are answered meanwhile
        let client = a.node("client").await.unwrap();
        let replies = (0..200).map(|i| {
            let client = client.clone();
            async move { client.send("dash", Event::new("ping", i)).await }
        });
        let replies = within(
            10,
            "200 requests while a set-up is stalled",
            futures::future::join_all(replies),
        )
        .await;
        for (i, r) in replies.into_iter().enumerate() {
            assert_eq!(r.unwrap(), json!(i));
        }

        // released: the broadcast is admitted, with its stream
        tb.round_trip_hold().set(false);
        let with_items = within(10, "the broadcast after its set-up", admitted_rx)
            .await
            .unwrap();
        assert!(with_items, "the broadcast was admitted without its stream");
        within(10, "shutdown", a.shutdown(Duration::from_secs(5))).await;
        within(10, "shutdown", b.shutdown(Duration::from_secs(5))).await;
    }
}
