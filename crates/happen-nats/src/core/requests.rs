//! This process's requests in flight: one reply inbox (`_INBOX.<nuid>`) for the whole process,
//! a token per request (replies arrive on `<inbox>.<token>`, stream control frames for this
//! process's producers on `<inbox>.c<token>`), and what waits for each token
//! ([`Pending`]). Also the one round trip through the server that confirms subscriptions
//! ([`Requests::round_trip`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::{Client, Subject};
use bytes::Bytes;
use happen::transport::{ReplySender, Response};
use happen::{Error, ErrorKind, NodeId, Result};
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::stats::{Counters, inc};
use super::transport_error;
use crate::pacing::{InFlight, Remote};
use crate::wire::Frame;

/// Where a reply on the shared inbox goes.
pub(crate) enum Pending {
    /// Waiting for the first reply message. `in_flight` counts the request for pacing when
    /// a producer of this process paces sends to `target` (see [`crate::pacing`]).
    Reply {
        tx: ReplySender,
        target: NodeId,
        in_flight: Option<InFlight>,
        /// A durable send (its reply still comes after a reconnect): what asking for its
        /// answer again needs (see [`Requests::durable_waiting`]). `None` for any other
        /// request.
        durable: Option<Box<DurableSend>>,
        /// When it was published (see [`Requests::fail_gone`]); `None` for a durable send.
        sent: Option<Instant>,
        /// The replica that said it holds the request (an `accepted` frame).
        replica: Option<Arc<str>>,
    },
    /// A remote stream being consumed: frames go to its consumer task. The request counts
    /// as in flight until the stream ends (its flow holds a slot at the target).
    Stream {
        frames: mpsc::Sender<async_nats::Message>,
        /// Held for its `Drop`.
        _in_flight: Option<InFlight>,
        /// The replica producing it (`Happen-Replica` on the stream start).
        replica: Option<Arc<str>>,
    },
    /// A `Happen-Query: limits` request for the pacing view of a target.
    Limits {
        remote: Arc<Remote>,
        expires: Instant,
    },
    /// A round trip through the server ([`Requests::round_trip`]): signalled when its probe
    /// comes back.
    Probe(oneshot::Sender<()>),
    /// A request that reached a stopped node of this process and was relayed to another
    /// replica: its answer (and stream frames) go back to `to`, the original reply subject.
    Relay {
        to: Subject,
        node: NodeId,
        /// Signalled when the first answer was passed back.
        first: Option<oneshot::Sender<()>>,
        /// Forgotten after the request timeout.
        expires: Instant,
    },
}

/// A durable send waiting for its answer: its event id and, once the server acknowledged
/// storing it, its stream sequence.
pub(crate) struct DurableSend {
    pub(crate) event: Box<str>,
    /// 0 until stored.
    pub(crate) seq: u64,
}

/// A durable send still waiting for its answer (see [`Requests::durable_waiting`]).
pub(crate) struct Waiting {
    pub(crate) token: u64,
    pub(crate) target: NodeId,
    pub(crate) event: Box<str>,
    /// Its stream sequence; 0 while not stored.
    pub(crate) seq: u64,
}

/// What a message arriving on `<inbox>.<token>` is for (see [`Requests::arrived`]).
pub(crate) enum Arrival {
    /// An answer to a relayed request: pass it back to `to`, then signal `first` (if set).
    Relay {
        to: Subject,
        node: NodeId,
        first: Option<oneshot::Sender<()>>,
    },
    /// A frame of a remote stream being consumed.
    Stream(mpsc::Sender<async_nats::Message>),
    /// The entry waiting for this message, removed: a reply, a limits answer or a probe.
    Taken(Pending),
    /// Nobody waits for it (any more).
    Unmatched,
}

/// Hashes the maps keyed by token: tokens are this process's own counter (nobody else picks
/// them, so no flooding to defend against), and SipHash cost ~100 instructions per lookup,
/// two or three per request. A multiplication spreads consecutive tokens over the high bits
/// the table uses.
type Tokens = std::hash::BuildHasherDefault<TokenHasher>;

#[derive(Default)]
struct TokenHasher(u64);

impl std::hash::Hasher for TokenHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // not used by `u64` keys; kept correct for anything else
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// The requests of this process (see the module docs).
pub(crate) struct Requests {
    client: Client,
    /// `_INBOX.<nuid>`: replies arrive on `<inbox>.<token>`, stream control on `<inbox>.c<token>`.
    inbox: String,
    next_token: AtomicU64,
    pending: Mutex<HashMap<u64, Pending, Tokens>>,
    /// The control channels of this process's stream producers, by token.
    controls: Mutex<HashMap<u64, mpsc::Sender<Frame>, Tokens>>,
    /// How long a relay is remembered.
    request_timeout: Duration,
    counters: Arc<Counters>,
    /// A test hook: round trips wait while it is held.
    #[cfg(test)]
    pub(crate) hold: RoundTripHold,
}

impl Requests {
    /// Requests with replies on `<inbox>.*`.
    pub(crate) fn new(
        client: Client,
        inbox: String,
        request_timeout: Duration,
        counters: Arc<Counters>,
    ) -> Requests {
        Requests {
            client,
            inbox,
            next_token: AtomicU64::new(1),
            pending: Mutex::new(HashMap::default()),
            controls: Mutex::new(HashMap::default()),
            request_timeout,
            counters,
            #[cfg(test)]
            hold: RoundTripHold::default(),
        }
    }

    /// The reply inbox: `_INBOX.<nuid>`.
    pub(crate) fn inbox(&self) -> &str {
        &self.inbox
    }

    /// Is `subject` a reply subject of this process (`<inbox>.<token>`)?
    pub(crate) fn is_own(&self, subject: &str) -> bool {
        subject
            .strip_prefix(self.inbox.as_str())
            .is_some_and(|t| t.starts_with('.'))
    }

    /// A fresh token.
    pub(crate) fn token(&self) -> u64 {
        self.next_token.fetch_add(1, Ordering::Relaxed)
    }

    /// `<inbox>.<token>`.
    pub(crate) fn reply_subject(&self, token: u64) -> Subject {
        // itoa, not `write!`: the formatting machinery was ~1,000 instructions per request
        let mut digits = itoa::Buffer::new();
        let token = digits.format(token);
        let mut reply = String::with_capacity(self.inbox.len() + 1 + token.len());
        reply.push_str(&self.inbox);
        reply.push('.');
        reply.push_str(token);
        Subject::from(reply)
    }

    /// Registers what waits for `token` (before the request is published).
    pub(crate) fn insert(&self, token: u64, pending: Pending) {
        self.pending.lock().insert(token, pending);
    }

    /// Forgets `token` (its caller went away).
    pub(crate) fn remove(&self, token: u64) {
        self.pending.lock().remove(&token);
    }

    /// An `accepted` frame for `token`: the request is tied to `replica`. Returns where to
    /// pass the frame on when `token` is a relayed request (its requester may wait for it).
    pub(crate) fn accepted(&self, token: u64, replica: &str) -> Option<Subject> {
        match self.pending.lock().get_mut(&token) {
            Some(Pending::Reply { replica: r, .. }) => {
                if r.as_deref() != Some(replica) {
                    *r = Some(Arc::from(replica));
                }
                None
            }
            Some(Pending::Relay { to, .. }) => Some(to.clone()),
            _ => None,
        }
    }

    /// Fails the requests a replica can no longer answer (see `WIRE.md`, "Liveness"): to a
    /// node it served (`serves`), those tied to `replica` (when `tied`), and those not tied
    /// to any replica that were published before `before` and have waited at least
    /// `untied_for` (a live replica would have named itself by then). Durable sends are left
    /// alone (stored in JetStream, answered whenever a replica runs them). Returns how many
    /// failed.
    pub(crate) fn fail_gone(
        &self,
        replica: &str,
        serves: impl Fn(&str) -> bool,
        tied: bool,
        before: Instant,
        untied_for: Duration,
        err: impl Fn(&NodeId) -> Error,
    ) -> usize {
        let now = Instant::now();
        let failed: Vec<Pending> = {
            let mut pending = self.pending.lock();
            let tokens: Vec<u64> = pending
                .iter()
                .filter(|(_, p)| match p {
                    Pending::Reply {
                        replica: Some(r),
                        target,
                        ..
                    } => tied && &**r == replica && serves(target.as_str()),
                    // its consumer sees the frames end: a `transport` error
                    Pending::Stream {
                        replica: Some(r), ..
                    } => tied && &**r == replica,
                    Pending::Reply {
                        replica: None,
                        sent: Some(sent),
                        target,
                        ..
                    } => {
                        *sent <= before
                            && now.saturating_duration_since(*sent) >= untied_for
                            && serves(target.as_str())
                    }
                    _ => false,
                })
                .map(|(t, _)| *t)
                .collect();
            tokens.iter().filter_map(|t| pending.remove(t)).collect()
        };
        let n = failed.len();
        for p in failed {
            inc(&self.counters.failed_replica_gone);
            if let Pending::Reply { tx, target, .. } = p {
                let _ = tx.send(Response::Done(Err(err(&target))));
            }
        }
        n
    }

    /// Takes what waits for a message on `<inbox>.<token>`. A relay stays registered while
    /// `continues` (a stream start or item: more answers follow).
    pub(crate) fn arrived(&self, token: u64, continues: impl FnOnce() -> bool) -> Arrival {
        let mut pending = self.pending.lock();
        match pending.get_mut(&token) {
            Some(Pending::Relay {
                to, node, first, ..
            }) => {
                let arrival = Arrival::Relay {
                    to: to.clone(),
                    node: node.clone(),
                    first: first.take(),
                };
                if !continues() {
                    pending.remove(&token);
                }
                arrival
            }
            Some(Pending::Stream { frames, .. }) => Arrival::Stream(frames.clone()),
            Some(Pending::Reply { .. } | Pending::Limits { .. } | Pending::Probe(_)) => {
                match pending.remove(&token) {
                    Some(p) => Arrival::Taken(p),
                    None => Arrival::Unmatched,
                }
            }
            None => Arrival::Unmatched,
        }
    }

    /// Removes entries nobody will read: callers that timed out or dropped their reply (a
    /// request counted for pacing stays counted until its reply arrives or the request
    /// timeout passes: the target may still be working on it), and limits queries that got
    /// no answer (returned, to be told).
    pub(crate) fn sweep(&self, now: Instant) -> Vec<Arc<Remote>> {
        let mut unanswered = Vec::new();
        self.pending.lock().retain(|_, p| match p {
            Pending::Reply { tx, in_flight, .. } => {
                !tx.is_closed() || in_flight.as_ref().is_some_and(|f| !f.expired(now))
            }
            Pending::Stream { frames, .. } => !frames.is_closed(),
            Pending::Limits { remote, expires } => {
                let keep = *expires > now;
                if !keep {
                    unanswered.push(remote.clone());
                }
                keep
            }
            Pending::Relay { expires, .. } => *expires > now,
            Pending::Probe(done) => !done.is_closed(),
        });
        unanswered
    }

    /// The connection was lost: fails the requests whose replies can no longer arrive (a
    /// durable request keeps waiting: it is stored in JetStream, and its reply comes after
    /// the reconnect).
    pub(crate) fn fail_pending(&self, why: &str) {
        let drained: Vec<(u64, Pending)> = self.pending.lock().drain().collect();
        for (token, p) in drained {
            match p {
                p @ Pending::Reply {
                    durable: Some(_), ..
                } => {
                    self.pending.lock().insert(token, p);
                }
                Pending::Reply { tx, target, .. } => {
                    inc(&self.counters.failed_on_disconnect);
                    let err = crate::wire::error_from_parts(
                        ErrorKind::Transport,
                        why,
                        Some(target),
                        None,
                        None,
                    );
                    let _ = tx.send(Response::Done(Err(err)));
                }
                Pending::Limits { remote, .. } => remote.query_failed(),
                // a stream consumer sees its frame channel close and ends with a transport
                // error; a relayed request's sender sees its own connection's state; a round
                // trip fails when its probe is dropped
                Pending::Stream { .. } | Pending::Relay { .. } | Pending::Probe(_) => {}
            }
        }
    }

    /// The server refused to carry requests to `target` (subject permissions): the
    /// requests waiting for it fail with [`ErrorKind::Auth`].
    pub(crate) fn fail_target(&self, target: &str, why: &str) {
        let failed: Vec<Pending> = {
            let mut pending = self.pending.lock();
            let tokens: Vec<u64> = pending
                .iter()
                .filter(
                    |(_, p)| matches!(p, Pending::Reply { target: t, .. } if t.as_str() == target),
                )
                .map(|(t, _)| *t)
                .collect();
            tokens.iter().filter_map(|t| pending.remove(t)).collect()
        };
        for p in failed {
            if let Pending::Reply { tx, target, .. } = p {
                let err =
                    crate::wire::error_from_parts(ErrorKind::Auth, why, Some(target), None, None);
                let _ = tx.send(Response::Done(Err(err)));
            }
        }
    }

    /// The transport shut down: every request still waiting fails with `ShutDown`. Returns
    /// the requests relayed for a stopped node whose answer has not come back yet (the
    /// requester's reply subject and the node), for the caller to tell their requesters.
    pub(crate) fn fail_all(&self) -> Vec<(Subject, NodeId)> {
        let drained: Vec<Pending> = self.pending.lock().drain().map(|(_, p)| p).collect();
        let mut relays = Vec::new();
        for p in drained {
            match p {
                Pending::Reply { tx, .. } => {
                    let _ = tx.send(Response::Done(Err(Error::new(
                        ErrorKind::ShutDown,
                        "the nats transport shut down before the reply arrived",
                    ))));
                }
                // not answered at all yet (a stream under way keeps its frames)
                Pending::Relay {
                    to,
                    node,
                    first: Some(_),
                    ..
                } => relays.push((to, node)),
                _ => {}
            }
        }
        relays
    }

    /// The durable send `token` was stored at stream sequence `seq`.
    pub(crate) fn stored(&self, token: u64, seq: u64) {
        if let Some(Pending::Reply {
            durable: Some(d), ..
        }) = self.pending.lock().get_mut(&token)
        {
            d.seq = seq;
        }
    }

    /// The durable sends still waiting for their answers (to ask for them again after a
    /// reconnect), oldest token first.
    pub(crate) fn durable_waiting(&self) -> Vec<Waiting> {
        let mut waiting: Vec<Waiting> = self
            .pending
            .lock()
            .iter()
            .filter_map(|(token, p)| match p {
                Pending::Reply {
                    durable: Some(d),
                    target,
                    tx,
                    ..
                } if !tx.is_closed() => Some(Waiting {
                    token: *token,
                    target: target.clone(),
                    event: d.event.clone(),
                    seq: d.seq,
                }),
                _ => None,
            })
            .collect();
        waiting.sort_unstable_by_key(|w| w.token);
        waiting
    }

    /// Is the request `token` still waiting for its reply?
    pub(crate) fn is_waiting(&self, token: u64) -> bool {
        matches!(self.pending.lock().get(&token), Some(Pending::Reply { tx, .. }) if !tx.is_closed())
    }

    /// Answers the request `token` with `outcome` (found elsewhere than in a reply, e.g. an
    /// exactly-once record). `false` when it no longer waits.
    pub(crate) fn resolve(&self, token: u64, outcome: Result<serde_json::Value>) -> bool {
        let removed = {
            let mut pending = self.pending.lock();
            match pending.get(&token) {
                Some(Pending::Reply { .. }) => pending.remove(&token),
                _ => None,
            }
        };
        match removed {
            Some(Pending::Reply { tx, .. }) => tx.send(Response::Done(outcome)).is_ok(),
            _ => false,
        }
    }

    /// Removes the request `token` that could not be published, failing its sender with
    /// `err()`.
    pub(crate) fn forget(&self, token: u64, err: impl FnOnce() -> Error) {
        let removed = self.pending.lock().remove(&token);
        match removed {
            Some(Pending::Reply { tx, .. }) => {
                let _ = tx.send(Response::Done(Err(err())));
            }
            Some(Pending::Limits { remote, .. }) => remote.query_failed(),
            _ => {}
        }
    }

    /// Registers a relay of a request to `node` whose answer goes back to `to`; returns the
    /// token of this process's reply subject to publish it with.
    pub(crate) fn relay(&self, to: Subject, node: NodeId, first: oneshot::Sender<()>) -> u64 {
        let token = self.token();
        self.insert(
            token,
            Pending::Relay {
                to,
                node,
                first: Some(first),
                expires: Instant::now() + self.request_timeout,
            },
        );
        token
    }

    /// Registers a stream producer of this process: its control frames arrive on the
    /// returned subject (`<inbox>.c<token>`) and go to `frames`. Unregister with
    /// [`end_control`](Requests::end_control).
    pub(crate) fn start_control(&self, frames: mpsc::Sender<Frame>) -> (u64, String) {
        let token = self.token();
        self.controls.lock().insert(token, frames);
        (token, format!("{}.c{token}", self.inbox))
    }

    /// Unregisters the stream producer `token`.
    pub(crate) fn end_control(&self, token: u64) {
        self.controls.lock().remove(&token);
    }

    /// Where a control frame for the producer `token` goes.
    pub(crate) fn control(&self, token: u64) -> Option<mpsc::Sender<Frame>> {
        self.controls.lock().get(&token).cloned()
    }

    /// Waits (at most `within`) for a message to this process's reply inbox to come back
    /// through the server: the server handles one connection's commands in order, so every
    /// subscribe and unsubscribe sent before has then taken effect, and every message the
    /// server routed to this connection before has arrived. One round trip through the
    /// shared inbox; no subscription of its own. The one helper for every such confirmation
    /// (attach, broadcast-stream set-up, stopping a node, a tap).
    ///
    /// # Errors
    /// [`ErrorKind::Transport`] when the probe cannot be published, the connection is lost
    /// meanwhile, or it does not come back within `within`.
    ///
    /// # Cancel safety
    /// Cancel safe; a dropped probe's entry is swept by the reply inbox task.
    pub(crate) async fn round_trip(&self, within: Duration) -> Result<()> {
        let token = self.token();
        let (done, back) = oneshot::channel();
        self.insert(token, Pending::Probe(done));
        let probe = format!("{}.{token}", self.inbox);
        let result = match self.client.publish(probe, Bytes::new()).await {
            Err(e) => Err(transport_error("cannot reach the nats server", e)),
            Ok(()) => match tokio::time::timeout(within, back).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(_)) => Err(Error::new(
                    ErrorKind::Transport,
                    "the connection to the nats server was lost during a round trip through it",
                )),
                Err(_) => Err(Error::new(
                    ErrorKind::Transport,
                    format!(
                        "the nats server did not answer a round trip within {within:?}; check the connection"
                    ),
                )),
            },
        };
        self.remove(token);
        #[cfg(test)]
        if result.is_ok() {
            self.hold.pass().await;
        }
        result
    }
}

/// A test hook: while held, every round trip through the server waits after its probe came
/// back, as if the server were slow (there is no server-side way to delay one connection's
/// round trips alone).
#[cfg(test)]
#[derive(Default)]
pub(crate) struct RoundTripHold {
    /// Round trips wait while this is `true`.
    hold: tokio::sync::watch::Sender<bool>,
    /// How many round trips wait.
    waiting: tokio::sync::watch::Sender<usize>,
}

#[cfg(test)]
impl RoundTripHold {
    /// Holds (`true`) or releases (`false`) round trips.
    pub(crate) fn set(&self, hold: bool) {
        self.hold.send_replace(hold);
    }

    /// Waits until at least `n` round trips wait in the hold.
    pub(crate) async fn waiting(&self, n: usize) {
        let mut waiting = self.waiting.subscribe();
        let _ = waiting.wait_for(|w| *w >= n).await;
    }

    /// Waits while the hold is on.
    async fn pass(&self) {
        let mut hold = self.hold.subscribe();
        if !*hold.borrow_and_update() {
            return;
        }
        struct Waiting<'a>(&'a tokio::sync::watch::Sender<usize>);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.send_modify(|n| *n -= 1);
            }
        }
        self.waiting.send_modify(|n| *n += 1);
        let _waiting = Waiting(&self.waiting);
        let _ = hold.wait_for(|held| !held).await;
    }
}

#[cfg(test)]
mod token_tests {
    use std::collections::HashSet;
    use std::hash::BuildHasher;

    use super::Tokens;

    #[test]
    fn consecutive_tokens_spread_over_the_bits_a_table_uses() {
        let h = Tokens::default();
        // hashbrown takes its control byte from the top 7 bits and the bucket from the low ones
        let top: HashSet<u64> = (0..128u64).map(|t| h.hash_one(t) >> 57).collect();
        let low: HashSet<u64> = (0..1024u64).map(|t| h.hash_one(t) & 1023).collect();
        assert!(top.len() > 64, "{} distinct top bits", top.len());
        assert!(low.len() > 512, "{} distinct low bits", low.len());
        let mut map = std::collections::HashMap::with_hasher(Tokens::default());
        for t in 0..100_000u64 {
            map.insert(t, t);
        }
        assert!((0..100_000u64).all(|t| map.remove(&t) == Some(t)));
    }
}
