//! A durable node's consumer task: pulls as many messages as the node has room for, runs
//! each one's flow, answers its requester and settles it (acknowledged, redelivered after a
//! back-off, or dead-lettered).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer};
use async_nats::{HeaderMap, Message, Subject};
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use happen::transport::{Inbox, RunHere};
use happen::transport::{ReplySender, Response, reply_channel};
use happen::{Error, ErrorKind, Event, Result};
use parking_lot::Mutex;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::Durable;
use super::claim::{self, Acquired, Claim, InFlight, Settled};
use super::records::{Records, decode_record, encode_failure, encode_record, record_key};
use crate::config::{Backoff, DeliveryMode, DurableNode};
use crate::core::outbox::{Headers, Outgoing};
use crate::core::stats::{BadInput, inc};
use crate::wire::{self, header};

/// How long a pull request waits at the server for messages.
const PULL_EXPIRES: Duration = Duration::from_secs(2);
/// How long a stopping node, once its flows are settled, waits for its outstanding pulls to
/// end before it unsubscribes: deliveries for them until then are handed back at once
/// (`-NAK`); one that arrives after the unsubscribe is redelivered after `ack_wait`. Waiting
/// for the pulls to expire (`PULL_EXPIRES`) made a detach under load take longer than a 2 s
/// shutdown grace, and the shutdown report unclean.
const STOP_PULL_LINGER: Duration = Duration::from_millis(250);
/// Largest pull.
const MAX_PULL: usize = 2048;
/// Most pulls outstanding at once per node.
const MAX_PULLS: usize = 4;
/// Most durable events one node holds at once, whatever its limits.
const MAX_HELD: usize = 16_384;
/// Pauses between attempts to store an exactly-once record.
const RECORD_RETRY: Backoff = Backoff::new(Duration::from_millis(20), Duration::from_millis(640));
/// Pauses between attempts to store a dead letter.
const DEAD_LETTER_RETRY: Backoff =
    Backoff::new(Duration::from_millis(100), Duration::from_millis(1600));

/// The consumer side of one durable node.
pub(super) struct Node {
    pub(super) d: Arc<Durable>,
    pub(super) inbox: Inbox,
    pub(super) settings: DurableNode,
    /// Stream sequences being processed here (a redelivery of one is ignored).
    working: Mutex<HashSet<u64>>,
    /// Exactly-once event ids being processed here (another copy waits for the first).
    inflight: InFlight,
    /// The node is being detached: a flow ending in `ShutDown` was cut short by it.
    pub(super) stopping: AtomicBool,
    /// For starting flows in the consumer task (see `run_flow`).
    here: Mutex<RunHere>,
}

/// One pull request in flight.
struct Pull {
    remaining: usize,
    expires: Instant,
}

pub(super) async fn run(
    d: Arc<Durable>,
    inbox: Inbox,
    settings: DurableNode,
    consumer: consumer::Consumer<consumer::pull::Config>,
    mut stop: oneshot::Receiver<()>,
) {
    let limits = inbox.limits();
    let cap = limits
        .max_concurrent
        .saturating_add(limits.queue_limit)
        .clamp(1, MAX_HELD);
    let node = Arc::new(Node {
        d: d.clone(),
        inbox,
        settings,
        working: Mutex::new(HashSet::new()),
        inflight: InFlight::default(),
        stopping: AtomicBool::new(false),
        here: Mutex::new(RunHere::default()),
    });
    let pull_inbox = d.ep.client.new_inbox();
    let mut sub = match d.ep.client.subscribe(format!("{pull_inbox}.*")).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(target: "happen_nats", node = %node.inbox.id(), error = %e, "cannot subscribe for durable deliveries; the node receives no durable events");
            return;
        }
    };
    // requests for answers again (after a requester's reconnect): without it a requester's
    // outage loses answers, but the node still works
    let mut asks = match d
        .ep
        .client
        .subscribe(d.ep.subjects.answers(node.inbox.id()))
        .await
    {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(target: "happen_nats", node = %node.inbox.id(), error = %e, "cannot subscribe for requests of durable answers; a requester that loses its connection may miss answers");
            None
        }
    };
    let mut pulls: HashMap<u64, Pull> = HashMap::new();
    let mut next_pull = 0u64;
    let mut jobs: FuturesUnordered<BoxFuture<'static, ()>> = FuturesUnordered::new();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stopping = false;
    let mut stopped_at = Instant::now();
    let mut last_pull_error: Option<Instant> = None;
    loop {
        // pull what there is room for
        let requested: usize = pulls.values().map(|p| p.remaining).sum();
        let room = cap.saturating_sub(jobs.len() + requested);
        let worth = room >= (cap / 4).clamp(1, MAX_PULL) || (pulls.is_empty() && room > 0);
        let backing_off = last_pull_error.is_some_and(|t| t.elapsed() < Duration::from_millis(250));
        if !stopping && worth && pulls.len() < MAX_PULLS && !backing_off {
            let n = room.min(MAX_PULL);
            next_pull += 1;
            let request = consumer::pull::BatchConfig {
                batch: n,
                expires: Some(PULL_EXPIRES),
                ..Default::default()
            };
            match consumer
                .request_batch(request, Subject::from(format!("{pull_inbox}.{next_pull}")))
                .await
            {
                Ok(()) => {
                    pulls.insert(
                        next_pull,
                        Pull {
                            remaining: n,
                            expires: Instant::now() + PULL_EXPIRES + Duration::from_secs(1),
                        },
                    );
                    continue;
                }
                Err(e) => {
                    last_pull_error = Some(Instant::now());
                    tracing::debug!(target: "happen_nats", node = %node.inbox.id(), error = %e, "durable pull failed; retrying");
                }
            }
        }
        if stopping
            && jobs.is_empty()
            && (pulls.is_empty() || stopped_at.elapsed() >= STOP_PULL_LINGER)
        {
            break;
        }
        tokio::select! {
            biased;
            _ = &mut stop, if !stopping => {
                stopping = true;
                stopped_at = Instant::now();
                node.stopping.store(true, Ordering::Release);
            }
            Some(()) = jobs.next(), if !jobs.is_empty() => {}
            Some(ask) = async { asks.as_mut()?.next().await }, if asks.is_some() => {
                super::answers::serve(&d, node.inbox.id(), &ask);
            }
            msg = sub.next() => {
                let Some(msg) = msg else { break };
                // status messages (408 expired, 409, 404) come on the pull's own subject
                let pull = msg
                    .subject
                    .as_str()
                    .rsplit('.')
                    .next()
                    .and_then(|t| t.parse::<u64>().ok());
                match msg.status {
                    None | Some(async_nats::StatusCode::OK) => {
                        // a delivery keeps its own subject: it is counted against the oldest
                        // pull (the server serves pull requests in order)
                        if let Some((&id, p)) = pulls.iter_mut().min_by_key(|(id, _)| **id) {
                            p.remaining = p.remaining.saturating_sub(1);
                            if p.remaining == 0 {
                                pulls.remove(&id);
                            }
                        }
                        inc(&d.counters.durable_pulled);
                        if stopping {
                            // not started: handed back at once for another replica
                            nak(&d, &msg, None).await;
                        } else {
                            jobs.push(Box::pin(run_job(node.clone(), msg)));
                            d.counters.durable_max_held.fetch_max(jobs.len() as u64, Ordering::Relaxed);
                        }
                    }
                    Some(async_nats::StatusCode::IDLE_HEARTBEAT) => {}
                    Some(status) => {
                        // 408: the pull expired; anything else (409: too many pulls waiting,
                        // leadership change, consumer deleted; 503) ends it too, and the next
                        // pull waits a little so a persistent refusal is not a hot loop
                        if let Some(id) = pull {
                            pulls.remove(&id);
                        }
                        if status != async_nats::StatusCode::TIMEOUT {
                            last_pull_error = Some(Instant::now());
                            tracing::debug!(target: "happen_nats", node = %node.inbox.id(), %status, description = ?msg.description, "durable pull refused");
                        }
                    }
                }
            }
            _ = tick.tick() => {
                let now = Instant::now();
                pulls.retain(|_, p| p.expires > now);
            }
        }
    }
    let _ = sub.unsubscribe().await;
    if let Some(mut asks) = asks {
        let _ = asks.unsubscribe().await;
    }
    // delivered after the unsubscribe: redelivered after the ack wait
    // (unconstrained: see `serve::Sub::try_next`)
    while let Some(Some(msg)) = tokio::task::unconstrained(sub.next()).now_or_never() {
        if msg.status.is_none() {
            nak(&d, &msg, None).await;
        }
    }
    while jobs.next().await.is_some() {}
    let _ = d.ep.client.flush().await;
}

async fn nak(d: &Durable, msg: &Message, delay: Option<Duration>) {
    settle(d, msg, AckKind::Nak(delay)).await;
}

pub(super) async fn settle(d: &Durable, msg: &Message, kind: AckKind) {
    if let Some(reply) = &msg.reply
        && let Err(e) = d.ep.client.publish(reply.clone(), kind.into()).await
    {
        tracing::warn!(target: "happen_nats", error = %e, "cannot acknowledge a durable event; it will be redelivered");
    }
}

/// (delivery count, stream sequence) from a message's ack subject:
/// `$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>`, or with a domain and
/// account hash after `$JS.ACK` (11 tokens or more).
fn delivery_info(msg: &Message) -> Option<(u32, u64)> {
    let reply = msg.reply.as_ref()?.as_str();
    let rest = reply.strip_prefix("$JS.ACK.")?;
    let tokens: Vec<&str> = rest.split('.').collect();
    let at = match tokens.len() {
        7 => 2,
        n if n >= 9 => 4,
        _ => return None,
    };
    let delivered = tokens[at].parse::<u64>().ok()?.max(1);
    let seq = tokens[at + 1].parse().ok()?;
    Some((u32::try_from(delivered).unwrap_or(u32::MAX), seq))
}

/// Processes one durable message: runs its flow (unless already done), answers the requester
/// and settles the message.
async fn run_job(node: Arc<Node>, msg: Message) {
    let d = &node.d;
    let Some((delivered, seq)) = delivery_info(&msg) else {
        d.counters.bad_input(BadInput::Protocol);
        tracing::warn!(target: "happen_nats", node = %node.inbox.id(), "a durable message without JetStream delivery info; ignored");
        return;
    };
    if !node.working.lock().insert(seq) {
        // redelivered while still running here (the ack wait passed): the running one settles
        return;
    }
    let reply_to = msg
        .headers
        .as_ref()
        .and_then(|h| h.get(header::REPLY_TO))
        .map(|v| Subject::from(v.as_str()));
    let event = match wire::decode_durable_event(&msg.payload, d.ep.max_bytes) {
        Ok(e) => e,
        Err(err) => {
            d.counters.bad_input(BadInput::Malformed);
            if dead_letter(&node, &msg, delivered, &err).await
                && let Some(r) = reply_to
            {
                answer(&node, r, Err(err)).await;
            }
            node.working.lock().remove(&seq);
            return;
        }
    };
    match &d.done {
        Some(done) if node.settings.mode == DeliveryMode::ExactlyOnce => {
            run_once(&node, &msg, event, reply_to, delivered, done).await;
        }
        _ => {
            let outcome = run_flow(&node, &msg, event, None).await;
            conclude(&node, &msg, delivered, reply_to, outcome, None).await;
        }
    }
    node.working.lock().remove(&seq);
}

/// An exactly-once event: runs its flow only as the one copy of its id in flight here and
/// after claiming the id in the records; a copy that finds the id taken waits for the
/// outcome and answers with it.
async fn run_once(
    node: &Node,
    msg: &Message,
    event: Event,
    reply_to: Option<Subject>,
    delivered: u32,
    done: &Records,
) {
    let d = &node.d;
    let key = record_key(node.inbox.id(), &event.id().to_string());
    let deadline = Instant::now()
        + d.ep
            .config
            .effective_request_timeout()
            .max(node.settings.ack_wait * 2);
    let answered = |outcome: Result<serde_json::Value>| async {
        inc(&d.counters.durable_duplicates_skipped);
        if let Some(r) = reply_to.clone() {
            answer(node, r, outcome).await;
        }
        settle(d, msg, AckKind::Ack).await;
    };
    let slot = loop {
        match node.inflight.acquire(&key) {
            Acquired::Owner(slot) => break slot,
            Acquired::Waiter(rx) => match claim::wait_local(node, msg, rx, deadline).await {
                Some(Settled::Done(outcome)) => return answered(outcome).await,
                Some(Settled::Retry) => {}
                None => {
                    // the node stops, or the first copy runs past the deadline: later
                    return nak(d, msg, Some(node.settings.redelivery_delay(1))).await;
                }
            },
        }
    };
    let mut seq = match claim::claim(node, msg, done, &key, deadline).await {
        Claim::Owned(seq) => seq,
        Claim::Done(outcome) => {
            answered(outcome.clone()).await;
            slot.finish(outcome);
            return;
        }
        Claim::Later(why) => {
            // cannot tell whether it ran: try again later rather than risk a second run
            tracing::debug!(target: "happen_nats", node = %node.inbox.id(), %why, "exactly-once event not claimed; redelivering");
            inc(&d.counters.durable_retried);
            let delay =
                (!node.stopping.load(Ordering::Acquire)).then(|| node.settings.redelivery_delay(1));
            return nak(d, msg, delay).await;
        }
    };
    let outcome = run_flow(node, msg, event, Some((done, &key, &mut seq))).await;
    let once = (done, key.as_str(), seq);
    if let Some(outcome) = conclude(node, msg, delivered, reply_to, outcome, Some(once)).await {
        slot.finish(outcome);
    }
}

/// Settles `msg` after its flow (`None`: not admitted, the node is closing) and answers its
/// requester. For an exactly-once event (`once`: its records, key and claim) the outcome is
/// recorded first, or the claim given up when the event is handed back; returns the final
/// outcome the waiting copies answer with.
async fn conclude(
    node: &Node,
    msg: &Message,
    delivered: u32,
    reply_to: Option<Subject>,
    outcome: Option<Result<serde_json::Value>>,
    once: Option<(&Records, &str, u64)>,
) -> Option<Result<serde_json::Value>> {
    let d = &node.d;
    let release = || async {
        if let Some((done, key, seq)) = once {
            claim::release(node, done, key, seq).await;
        }
    };
    let Some(outcome) = outcome else {
        // not admitted: the node is closing; another replica (or a restart) takes it
        release().await;
        nak(d, msg, None).await;
        return None;
    };
    match outcome {
        Ok(value) => {
            if let Some((done, key, _)) = once {
                record(node, msg, done, key, encode_record(&value)).await;
            }
            if let Some(r) = reply_to {
                answer(node, r, Ok(value.clone())).await;
            }
            settle(d, msg, AckKind::Ack).await;
            inc(&d.counters.durable_acked);
            Some(Ok(value))
        }
        Err(err) if err.kind() == ErrorKind::ShutDown && node.stopping.load(Ordering::Acquire) => {
            // the node stopped before the flow finished: another replica (or a restart) takes it
            release().await;
            nak(d, msg, None).await;
            None
        }
        // refused by the node's security gate (or invalid): no delivery will change that,
        // so it goes to the dead letters at once, with the reason
        Err(err) if delivered < node.settings.max_deliveries && !refused(&err) => {
            tracing::debug!(target: "happen_nats", node = %node.inbox.id(), delivered, error = %err, "durable flow failed; redelivering");
            inc(&d.counters.durable_retried);
            release().await;
            nak(d, msg, Some(node.settings.redelivery_delay(delivered))).await;
            None
        }
        Err(err) => {
            tracing::warn!(target: "happen_nats", node = %node.inbox.id(), delivered, error = %err, "durable flow failed on its last delivery; dead-lettered");
            // not stored: handed back for redelivery instead (and no record, no answer yet)
            if !dead_letter(node, msg, delivered, &err).await {
                release().await;
                return None;
            }
            let record_body = encode_failure(&err);
            if let Some((done, key, _)) = once {
                record(node, msg, done, key, record_body.clone()).await;
            }
            if let Some(r) = reply_to {
                answer(node, r, Err(err)).await;
            }
            // the waiting copies answer as a copy that finds the record would
            Some(decode_record(&record_body))
        }
    }
}

/// An error no redelivery can change: the node's gates refused the event, or it is invalid.
fn refused(err: &happen::Error) -> bool {
    matches!(
        err.kind(),
        ErrorKind::Unauthenticated | ErrorKind::Forbidden | ErrorKind::InvalidEvent
    )
}

/// Stores the exactly-once record of a finished event, retrying (the server may be restarting)
/// until stored or the request timeout passes; the message is acknowledged only afterwards, so
/// a redelivery meanwhile finds the record (or is ignored while this runs).
async fn record(node: &Node, msg: &Message, done: &Records, key: &str, value: Bytes) {
    let d = &node.d;
    let deadline = Instant::now() + d.ep.config.effective_request_timeout();
    let mut attempt = 0u32;
    let mut progress = Instant::now();
    loop {
        match done.put(&d.js, key, value.clone()).await {
            Ok(()) => return,
            Err(e) if Instant::now() >= deadline || d.link.is_closed() => {
                tracing::warn!(target: "happen_nats", node = %node.inbox.id(), error = %e, "cannot record a completed exactly-once event; a redelivery would run it again");
                return;
            }
            Err(_) => {
                attempt += 1;
                if progress.elapsed() >= node.settings.ack_wait / 3 {
                    settle(d, msg, AckKind::Progress).await;
                    progress = Instant::now();
                }
                tokio::time::sleep(RECORD_RETRY.delay(attempt as usize)).await;
            }
        }
    }
}

/// Admits `event` into the node (waiting while its queue is full) and waits for its flow,
/// telling the server meanwhile that the message is being worked on. `None` when the node is
/// closed and admits nothing.
///
/// For an exactly-once event (`claim`: its records, key and claim's sequence) every
/// in-progress signal also renews the claim.
async fn run_flow(
    node: &Node,
    msg: &Message,
    event: Event,
    mut claim: Option<(&Records, &str, &mut u64)>,
) -> Option<Result<serde_json::Value>> {
    let progress_every = node.settings.ack_wait / 3;
    let rx = loop {
        let (tx, rx): (ReplySender, _) = reply_channel();
        let delivered = {
            // the flow starts here, in this task, unless a driver is at work already (see
            // `Inbox::run_here`); the guard is not held across an await
            let _wakes = node.inbox.hold_wakes();
            let r = node.inbox.deliver(event.clone(), Some(tx));
            if r.is_ok() {
                node.inbox.run_here(&mut node.here.lock(), 1);
            }
            r
        };
        match delivered {
            Ok(()) => break rx,
            Err(e) if e.kind() == ErrorKind::QueueFull => {
                // room taken by non-durable events: wait a little, the message stays ours
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) if e.kind() == ErrorKind::ShutDown => return None,
            Err(e) => return Some(Err(e)),
        }
    };
    let mut rx = std::pin::pin!(rx);
    // an answer ready at once (the flow ran above) arms no progress timer
    let response = match futures::poll!(&mut rx) {
        std::task::Poll::Ready(r) => r,
        std::task::Poll::Pending => loop {
            tokio::select! {
                r = &mut rx => break r,
                () = tokio::time::sleep(progress_every) => progress(node, msg, &mut claim).await,
            }
        },
    };
    Some(match response {
        Response::Done(r) => r,
        Response::Stream(items) => {
            let finish = items.skip_to_final();
            let mut finish = std::pin::pin!(finish);
            loop {
                tokio::select! {
                    r = &mut finish => break r,
                    () = tokio::time::sleep(progress_every) => progress(node, msg, &mut claim).await,
                }
            }
        }
    })
}

/// Tells the server `msg` is being worked on and renews its exactly-once claim; a claim taken
/// over is not renewed again.
async fn progress(node: &Node, msg: &Message, claim: &mut Option<(&Records, &str, &mut u64)>) {
    settle(&node.d, msg, AckKind::Progress).await;
    if let Some((done, key, seq)) = claim {
        match claim::renew(node, done, key, **seq).await {
            Some(next) => **seq = next,
            None => *claim = None,
        }
    }
}

/// Publishes `msg`'s event to the dead-letter subject with `err` (stored in the dead-letter
/// stream; retried until stored), then terminates the message. When it cannot be stored the
/// message is handed back for redelivery instead, and `false` returned.
async fn dead_letter(node: &Node, msg: &Message, delivered: u32, err: &Error) -> bool {
    let d = &node.d;
    let mut h = HeaderMap::new();
    wire::error_headers(err, &mut h);
    h.insert(header::DEAD_NODE, node.inbox.id().as_str());
    h.insert(header::DELIVERIES, delivered.to_string().as_str());
    if let Some(id) = msg.headers.as_ref().and_then(|m| m.get(header::MSG_ID)) {
        h.insert(header::MSG_ID, id.as_str());
    }
    let subject = format!("{}{}", d.dlq_prefix, node.inbox.id());
    let mut attempt = 0u32;
    loop {
        let m = jetstream::message::PublishMessage::build()
            .payload(msg.payload.clone())
            .headers(h.clone());
        let r = match d.js.send_publish(subject.clone(), m).await {
            Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match r {
            Ok(()) => break,
            Err(e) if d.link.is_closed() || attempt >= 20 => {
                // not stored: leave the message to be redelivered rather than lose it
                tracing::error!(target: "happen_nats", node = %node.inbox.id(), error = %e, "cannot store a dead letter; the event stays in the stream for redelivery");
                nak(d, msg, Some(node.settings.redelivery_delay(delivered))).await;
                return false;
            }
            Err(_) => {
                attempt += 1;
                tokio::time::sleep(DEAD_LETTER_RETRY.delay(attempt as usize)).await;
            }
        }
    }
    inc(&d.counters.durable_dead_lettered);
    settle(d, msg, AckKind::Term).await;
    true
}

/// Sends the flow's outcome to the requester's reply subject (ignored if it gave up).
///
/// Straight into the client, not through the outgoing buffer, and before the caller
/// acknowledges the message: the connection writes in order, so the `+ACK` never reaches the
/// server before the answer. Through the buffer the acknowledgement (published directly)
/// could overtake it, and a process killed between the two left the event acknowledged and
/// its requester waiting out its timeout (seen in the chaos soak: 6 durable sends of ~41,500
/// over 18 worker SIGKILLs); now it dies with the event unacknowledged, which is redelivered
/// and answered (from its record, for an exactly-once node).
///
/// Also kept for the request timeout, for a requester that asks for it again after its
/// reconnect (see [`super::answers`]).
async fn answer(node: &Node, reply: Subject, outcome: Result<serde_json::Value>) {
    let d = &node.d;
    let (headers, payload) = match outcome {
        Ok(v) => (Headers::None, wire::value_body(&v)),
        Err(e) => {
            let mut h = HeaderMap::new();
            h.insert(header::STATUS, "error");
            let body = wire::encode_error(&e, &mut h, d.ep.client.max_payload(), 256);
            (Headers::Custom(h), body)
        }
    };
    let kept_headers = match &headers {
        Headers::Custom(h) => Some(h.clone()),
        _ => None,
    };
    d.kept
        .keep(node.inbox.id(), &reply, kept_headers, payload.clone());
    let published = d
        .outbox
        .publish_now(Outgoing {
            subject: reply,
            reply: None,
            headers,
            payload,
        })
        .await;
    if let Err(e) = published {
        tracing::warn!(target: "happen_nats", error = %e, "cannot answer a durable request");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ack_subjects_tell_the_delivery() {
        let msg = |reply: &str| Message {
            subject: Subject::from("happen.durable.x"),
            reply: Some(Subject::from(reply)),
            payload: Bytes::new(),
            headers: None,
            status: None,
            description: None,
            length: 0,
        };
        assert_eq!(
            delivery_info(&msg("$JS.ACK.S.happen_x.3.17.4.1700000000000000000.9")),
            Some((3, 17))
        );
        assert_eq!(
            delivery_info(&msg(
                "$JS.ACK.dom.ACCHASH.S.happen_x.2.5.4.1700000000000000000.0.tok"
            )),
            Some((2, 5))
        );
        assert_eq!(delivery_info(&msg("_INBOX.abc")), None);
        assert_eq!(delivery_info(&msg("$JS.ACK.S.c.x.y.1.2.3")), None);
    }
}
