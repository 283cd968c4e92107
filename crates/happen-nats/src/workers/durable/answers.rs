//! Durable answers that survive the requester's outage (see `WIRE.md`, "Guarantees" and
//! "Liveness").
//!
//! The answer of a durable `send` is published to the requester's reply subject (core NATS);
//! one published while the requester was disconnected is dropped by the server. So:
//!
//! - **Responder side.** Every answer a durable node of this process publishes is also kept
//!   ([`Kept`]), keyed by node and reply subject, for the request timeout (bounded: at most
//!   [`KEPT_AT_MOST`] answers and [`KEPT_BYTES_AT_MOST`] bytes of bodies, the oldest dropped
//!   first). A message on `<prefix>.answers.<node>` naming reply subjects
//!   (`{"replies": [...]}`) has the kept answers to them published again ([`serve`]).
//! - **Requester side.** After a reconnect ([`ask_again`]) the requester names the reply
//!   subjects of its durable sends still waiting on `<prefix>.answers.<node>`: every replica
//!   of the node that holds one of those answers publishes it again (the requester drops a
//!   second copy). A send still waiting a moment later (a replica would have answered by then)
//!   is looked up in JetStream, if the node's consumer delivered it already (one not yet
//!   delivered waits in the stream): an exactly-once node's record holds its outcome, which
//!   answers it; a stored event no longer in the work-queue stream was acknowledged, so it ran
//!   and was answered, and when no replica holds that answer any more (the one that ran it died, or
//!   dropped it for room) the send fails at once with `transport` instead of waiting out its
//!   timeout. An event still in the stream runs later, and its answer reaches the requester,
//!   now connected, as usual. A send whose store was not acknowledged before the loss is
//!   looked up once the publisher's retry has its stream sequence (every
//!   `max(500 ms, liveness.detection)`, within the request timeout).
//!
//! Nothing of this touches a plain request: only durable sends are kept and asked for.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::stream::LastRawMessageErrorKind;
use async_nats::{HeaderMap, Message, Subject};
use bytes::Bytes;
use happen::{ErrorKind, NodeId};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::Durable;
use super::records::{Entry, decode_entry, record_key};
use crate::config::DeliveryMode;
use crate::core::outbox::{Headers, Outgoing};
use crate::core::requests::Waiting;
use crate::core::stats::{BadInput, inc};

/// The most answers a process keeps for requesters that lost their connection.
pub(super) const KEPT_AT_MOST: usize = 65_536;
/// The most answer bytes (bodies) kept.
pub(super) const KEPT_BYTES_AT_MOST: usize = 16 << 20;
/// The most reply subjects one request for answers names (a requester splits longer lists).
const ASK_AT_MOST: usize = 256;
/// How long a requester waits, after asking, before it looks in JetStream (at least; the
/// liveness detection time when longer): a replica holding an answer publishes it again
/// within a round trip.
const ASK_SETTLE: Duration = Duration::from_millis(500);

/// The body of a request for answers (`<prefix>.answers.<node>`).
#[derive(Debug, Serialize, Deserialize)]
struct Ask {
    replies: Vec<String>,
}

/// An answer kept.
struct Answer {
    at: Instant,
    node: NodeId,
    headers: Option<HeaderMap>,
    payload: Bytes,
}

#[derive(Default)]
struct State {
    /// By reply subject (one per request).
    answers: HashMap<Box<str>, Answer>,
    /// Insertion order, for dropping the oldest: (when, reply subject).
    order: VecDeque<(Instant, Box<str>)>,
    /// The bodies' bytes in `answers`.
    bytes: usize,
}

/// The answers this process's durable nodes published lately (see the module docs).
pub(super) struct Kept {
    keep_for: Duration,
    state: Mutex<State>,
}

impl Kept {
    pub(super) fn new(keep_for: Duration) -> Kept {
        Kept {
            keep_for,
            state: Mutex::new(State::default()),
        }
    }

    /// Keeps the answer `node` publishes to `reply` (a later answer to the same subject
    /// replaces it).
    pub(super) fn keep(
        &self,
        node: &NodeId,
        reply: &Subject,
        headers: Option<HeaderMap>,
        payload: Bytes,
    ) {
        if self.keep_for.is_zero() {
            return;
        }
        let now = Instant::now();
        let size = payload.len();
        let mut s = self.state.lock();
        while let Some((at, _)) = s.order.front() {
            let expired = now.saturating_duration_since(*at) > self.keep_for;
            let full = s.order.len() >= KEPT_AT_MOST
                || (s.bytes + size > KEPT_BYTES_AT_MOST && !s.answers.is_empty());
            if !expired && !full {
                break;
            }
            let Some((at, key)) = s.order.pop_front() else {
                break;
            };
            // only if not replaced by a later answer
            if s.answers.get(&key).is_some_and(|a| a.at == at)
                && let Some(old) = s.answers.remove(&key)
            {
                s.bytes -= old.payload.len();
            }
        }
        let key: Box<str> = reply.as_str().into();
        s.bytes += size;
        if let Some(old) = s.answers.insert(
            key.clone(),
            Answer {
                at: now,
                node: node.clone(),
                headers,
                payload,
            },
        ) {
            s.bytes -= old.payload.len();
        }
        s.order.push_back((now, key));
    }

    /// The answer `node` published to `reply`, if kept and not expired.
    fn get(&self, node: &NodeId, reply: &str) -> Option<(Option<HeaderMap>, Bytes)> {
        let s = self.state.lock();
        let a = s.answers.get(reply)?;
        (a.node == *node && a.at.elapsed() <= self.keep_for)
            .then(|| (a.headers.clone(), a.payload.clone()))
    }

    /// How many answers are kept (tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.state.lock().answers.len()
    }
}

/// A request for answers arrived on `node`'s subject: publishes again those this process
/// kept.
pub(super) fn serve(d: &Durable, node: &NodeId, msg: &Message) {
    let Ok(ask) = serde_json::from_slice::<Ask>(&msg.payload) else {
        d.counters.bad_input(BadInput::Malformed);
        return;
    };
    for reply in ask.replies.iter().take(ASK_AT_MOST) {
        let Some((headers, payload)) = d.kept.get(node, reply) else {
            continue;
        };
        inc(&d.counters.durable_answers_resent);
        d.outbox.publish_answer(Outgoing {
            subject: Subject::from(reply.as_str()),
            reply: None,
            headers: Headers::from(headers),
            payload,
        });
    }
}

/// After a reconnect: asks for the answers of this process's durable sends still waiting,
/// then looks in JetStream for those still waiting (see the module docs).
pub(super) async fn ask_again(d: Arc<Durable>) {
    let waiting = d.requests.durable_waiting();
    if waiting.is_empty() {
        return;
    }
    tracing::info!(target: "happen_nats", waiting = waiting.len(), "reconnected: asking the durable nodes again for the answers of the durable sends still waiting");
    ask(&d, &waiting).await;
    let settle = ASK_SETTLE.max(d.ep.config.liveness.detection);
    let give_up = Instant::now() + d.ep.config.effective_request_timeout();
    let mut tokens: HashSet<u64> = waiting.iter().map(|w| w.token).collect();
    loop {
        tokio::time::sleep(settle).await;
        if d.link.is_closed() || Instant::now() >= give_up {
            return;
        }
        // looked up afresh: a send whose store was not acknowledged before the loss has its
        // sequence once the publisher's retry is
        let (stored, unstored): (Vec<Waiting>, Vec<Waiting>) = d
            .requests
            .durable_waiting()
            .into_iter()
            .filter(|w| tokens.contains(&w.token))
            .partition(|w| w.seq != 0);
        tokens = unstored.iter().map(|w| w.token).collect();
        let mut gone = look_up(&d, stored).await;
        // an exactly-once record may answer one not known to be stored yet
        gone.extend(look_up(&d, unstored).await);
        if !gone.is_empty() {
            // acknowledged, so answered: once more, for an answer on its way at the look-up
            ask(&d, &gone).await;
            tokio::time::sleep(settle).await;
            for w in gone {
                fail_lost(&d, &w);
            }
        }
        tokens.retain(|t| d.requests.is_waiting(*t));
        if tokens.is_empty() {
            return;
        }
    }
}

/// Fails the durable send `w` (if still waiting): its event ran and was answered, and nobody
/// holds the answer.
fn fail_lost(d: &Durable, w: &Waiting) {
    if !d.requests.is_waiting(w.token) {
        return;
    }
    let err = crate::wire::error_from_parts(
        ErrorKind::Transport,
        format!(
            "the durable event `{}` ran and was answered while this process was disconnected from nats, and no replica of node `{}` holds the answer any more (the one that ran it stopped, or the answer is older than its request timeout); it is not run again",
            w.event, w.target
        ),
        Some(w.target.clone()),
        None,
        None,
    );
    d.requests.forget(w.token, || err);
    inc(&d.counters.durable_answers_lost);
}

/// Publishes the requests for the answers of `waiting`, by node.
async fn ask(d: &Durable, waiting: &[Waiting]) {
    let mut by_node: HashMap<&NodeId, Vec<String>> = HashMap::new();
    for w in waiting {
        by_node
            .entry(&w.target)
            .or_default()
            .push(d.requests.reply_subject(w.token).to_string());
    }
    for (node, replies) in by_node {
        let subject = d.ep.subjects.answers(node);
        for chunk in replies.chunks(ASK_AT_MOST) {
            let Ok(body) = serde_json::to_vec(&Ask {
                replies: chunk.to_vec(),
            }) else {
                continue;
            };
            match d
                .ep
                .client
                .publish(subject.clone(), Bytes::from(body))
                .await
            {
                Ok(()) => {
                    d.counters
                        .durable_answers_asked
                        .fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed);
                }
                Err(e) => {
                    tracing::debug!(target: "happen_nats", node = %node, error = %e, "cannot ask for durable answers again");
                }
            }
        }
    }
}

/// Looks the durable sends still waiting up in JetStream: answers those an exactly-once record
/// tells the outcome of, and returns those that were acknowledged (no longer in the stream)
/// without a record to answer from.
async fn look_up(d: &Durable, still: Vec<Waiting>) -> Vec<Waiting> {
    if still.is_empty() {
        return Vec::new();
    }
    let stream = match d.js.get_stream(&d.stream).await {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(target: "happen_nats", error = %e, "cannot look durable sends up after a reconnect; they keep waiting");
            return Vec::new();
        }
    };
    let mut gone = Vec::new();
    // per node, the highest stream sequence its consumer delivered: a send stored after it was
    // never delivered, so it still waits in the stream and costs no read (a backlog of
    // waiting sends is not read one by one after every reconnect)
    let mut delivered: HashMap<NodeId, u64> = HashMap::new();
    for w in still {
        if !d.requests.is_waiting(w.token) {
            continue;
        }
        if w.seq != 0 {
            let upto = match delivered.get(&w.target) {
                Some(upto) => *upto,
                None => {
                    let upto = stream
                        .consumer_info(Durable::consumer_name(&w.target))
                        .await
                        .map_or(u64::MAX, |i| i.delivered.stream_sequence);
                    delivered.insert(w.target.clone(), upto);
                    upto
                }
            };
            if w.seq > upto {
                continue;
            }
        }
        let once = d
            .settings
            .node(&w.target)
            .is_some_and(|n| n.mode == DeliveryMode::ExactlyOnce);
        if once && let Some(done) = &d.done {
            let key = record_key(&w.target, &w.event);
            if let Ok(Some((_, body))) = done.get_from_leader(&key).await
                && let Entry::Done(outcome) = decode_entry(&body)
            {
                if d.requests.resolve(w.token, outcome) {
                    inc(&d.counters.durable_answers_from_record);
                }
                continue;
            }
        }
        if w.seq == 0 {
            // not known to be stored yet: looked up again once it is
            continue;
        }
        match stream.get_raw_message(w.seq).await {
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => gone.push(w),
            // still stored: it runs (again) and is answered
            _ => {}
        }
    }
    gone
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(n: &str) -> NodeId {
        NodeId::from(n)
    }

    /// An answer is found by node and reply subject until it expires; a later answer to the
    /// same subject replaces it.
    #[tokio::test(start_paused = true)]
    async fn kept_answers_expire_and_are_replaced() {
        let kept = Kept::new(Duration::from_secs(1));
        let r = Subject::from("_INBOX.a.1");
        kept.keep(&node("n"), &r, None, Bytes::from_static(b"1"));
        kept.keep(&node("n"), &r, None, Bytes::from_static(b"2"));
        assert_eq!(kept.get(&node("n"), "_INBOX.a.1").unwrap().1, "2");
        assert!(kept.get(&node("m"), "_INBOX.a.1").is_none());
        tokio::time::advance(Duration::from_millis(1100)).await;
        assert!(kept.get(&node("n"), "_INBOX.a.1").is_none());
        kept.keep(&node("n"), &Subject::from("_INBOX.a.2"), None, Bytes::new());
        assert_eq!(kept.len(), 1, "the expired ones were dropped");
        assert_eq!(kept.state.lock().bytes, 0);
    }

    /// At most `KEPT_AT_MOST` answers and `KEPT_BYTES_AT_MOST` bytes; nothing with a zero
    /// keep time.
    #[tokio::test(start_paused = true)]
    async fn kept_answers_are_bounded() {
        let kept = Kept::new(Duration::from_secs(60));
        for i in 0..KEPT_AT_MOST + 10 {
            kept.keep(
                &node("n"),
                &Subject::from(format!("_INBOX.a.{i}")),
                None,
                Bytes::from_static(b"x"),
            );
        }
        assert_eq!(kept.len(), KEPT_AT_MOST);
        assert!(kept.get(&node("n"), "_INBOX.a.0").is_none(), "oldest first");
        let big = Kept::new(Duration::from_secs(60));
        for i in 0..5 {
            big.keep(
                &node("n"),
                &Subject::from(format!("_INBOX.b.{i}")),
                None,
                Bytes::from(vec![0; KEPT_BYTES_AT_MOST / 4]),
            );
        }
        assert!(big.state.lock().bytes <= KEPT_BYTES_AT_MOST);
        let off = Kept::new(Duration::ZERO);
        off.keep(&node("n"), &Subject::from("_INBOX.c.1"), None, Bytes::new());
        assert_eq!(off.len(), 0);
    }
}
