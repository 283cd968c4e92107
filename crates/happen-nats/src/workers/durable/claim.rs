//! Exactly-once claims: one flow per (node, event id), whatever the concurrency.
//!
//! In a process, [`InFlight`] lets one copy of an event id run and makes the others wait for
//! its outcome. Across processes, the copy that runs first stores a claim in the record
//! stream with `Nats-Expected-Last-Subject-Sequence` 0 (create if absent); a copy that finds
//! a claim waits for the record, and takes the claim over (a compare-and-set on the claim's
//! sequence) when its owner stopped renewing it for the lease (the node's `ack_wait`): the
//! owner renews it with every in-progress signal, a third of `ack_wait`.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::Message;
use async_nats::jetstream::AckKind;
use happen::Result;
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::time::Instant;

use super::consume::{Node, settle};
use super::records::{Entry, Records, encode_claim, encode_free};
use crate::config::Backoff;
use crate::core::stats::inc;

/// Pauses between looks at a record another replica has claimed.
const POLL: Backoff = Backoff::new(Duration::from_millis(5), Duration::from_millis(200));

/// What the copy that ran tells the copies of its event id that waited for it.
#[derive(Clone)]
pub(super) enum Settled {
    /// The event's outcome (recorded): answer with it and acknowledge.
    Done(Result<serde_json::Value>),
    /// It did not finish here (failed and handed back, or the node stopped): look again.
    Retry,
}

/// The event ids being processed by this process's node, and the copies waiting for them.
#[derive(Default)]
pub(super) struct InFlight {
    map: Mutex<HashMap<String, watch::Receiver<Option<Settled>>>>,
}

/// Either this copy runs the event id here, or it waits for the copy that does.
pub(super) enum Acquired<'a> {
    Owner(Slot<'a>),
    Waiter(watch::Receiver<Option<Settled>>),
}

impl InFlight {
    /// Becomes the one copy of `key` in flight here, or returns the receiver of the one that
    /// is.
    pub(super) fn acquire(&self, key: &str) -> Acquired<'_> {
        let mut map = self.map.lock();
        if let Some(rx) = map.get(key) {
            return Acquired::Waiter(rx.clone());
        }
        let (tx, rx) = watch::channel(None);
        map.insert(key.to_owned(), rx);
        Acquired::Owner(Slot {
            inflight: self,
            key: key.to_owned(),
            tx,
            outcome: None,
        })
    }
}

/// The right to run an event id in this process; on drop its waiters learn the outcome
/// ([`Settled::Retry`] unless [`finish`](Slot::finish)ed).
pub(super) struct Slot<'a> {
    inflight: &'a InFlight,
    key: String,
    tx: watch::Sender<Option<Settled>>,
    outcome: Option<Settled>,
}

impl Slot<'_> {
    /// The waiters answer with `outcome` (already recorded).
    pub(super) fn finish(mut self, outcome: Result<serde_json::Value>) {
        self.outcome = Some(Settled::Done(outcome));
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        // out of the map first: a copy arriving after this looks at the record, never at a
        // finished slot
        self.inflight.map.lock().remove(&self.key);
        self.tx
            .send_replace(Some(self.outcome.take().unwrap_or(Settled::Retry)));
    }
}

/// Waits for the copy running `rx`'s event id here, telling the server meanwhile that `msg` is
/// being worked on. `None` when the node stops or `deadline` passes first.
pub(super) async fn wait_local(
    node: &Node,
    msg: &Message,
    mut rx: watch::Receiver<Option<Settled>>,
    deadline: Instant,
) -> Option<Settled> {
    let progress_every = node.settings.ack_wait / 3;
    loop {
        tokio::select! {
            // the guard `wait_for` returns is not `Send`: cloned out before the select ends
            settled = async { rx.wait_for(Option::is_some).await.ok().and_then(|v| v.clone()) } => {
                return Some(settled.unwrap_or(Settled::Retry));
            }
            () = tokio::time::sleep(progress_every) => {
                if node.stopping.load(Ordering::Acquire) || Instant::now() >= deadline {
                    return None;
                }
                settle(&node.d, msg, AckKind::Progress).await;
            }
        }
    }
}

/// What the claim of an event id found.
pub(super) enum Claim {
    /// This copy owns the event id: the claim's sequence (renew it with [`renew`]).
    Owned(u64),
    /// The event finished elsewhere (or earlier): its recorded outcome.
    Done(Result<serde_json::Value>),
    /// Cannot tell now (the records cannot be read or written, a claim held past the
    /// deadline, the node stopping): hand the message back.
    Later(String),
}

/// Claims `key` for this replica, or waits for the record of the replica that holds it (taking
/// the claim over when its owner stops renewing it for a lease), until `deadline`.
pub(super) async fn claim(
    node: &Node,
    msg: &Message,
    records: &Records,
    key: &str,
    deadline: Instant,
) -> Claim {
    let d = &node.d;
    let me = d.ep.replica.as_str();
    let lease = node.settings.ack_wait;
    let mut expect = 0u64;
    // the foreign claim last seen and when it was first seen with that sequence
    let mut seen: Option<(u64, Instant)> = None;
    let mut progress = Instant::now();
    let mut polls = 0usize;
    loop {
        match records.put_if(&d.js, key, encode_claim(me), expect).await {
            Ok(Some(seq)) => return Claim::Owned(seq),
            Ok(None) => {}
            Err(e) => return Claim::Later(format!("cannot store the claim: {e}")),
        }
        // something is there: a record, a claim, or a given-up claim
        loop {
            if node.stopping.load(Ordering::Acquire) {
                return Claim::Later("the node is stopping".into());
            }
            // from the leader: it decides the compare-and-set below (see `get_from_leader`)
            let found = match records.get_from_leader(key).await {
                Ok(found) => found,
                Err(e) => return Claim::Later(format!("cannot read the record: {e}")),
            };
            let Some((seq, body)) = found else {
                // expired meanwhile: claim it afresh
                expect = 0;
                break;
            };
            match super::records::decode_entry(&body) {
                Entry::Done(outcome) => return Claim::Done(outcome),
                Entry::Free => {
                    expect = seq;
                    break;
                }
                // this replica's own claim (an earlier attempt whose acknowledgement was
                // lost, or one never given up): only this copy runs the id here
                Entry::Claimed { owner } if owner == me => {
                    expect = seq;
                    break;
                }
                Entry::Claimed { owner } => match seen {
                    Some((s, since)) if s == seq => {
                        if since.elapsed() >= lease {
                            tracing::warn!(target: "happen_nats", node = %node.inbox.id(), %owner, ?lease, "an exactly-once claim was not renewed for its lease; taking it over (its owner died or lost the server)");
                            inc(&d.counters.durable_claims_taken_over);
                            expect = seq;
                            break;
                        }
                    }
                    Some(_) => seen = Some((seq, Instant::now())),
                    None => {
                        inc(&d.counters.durable_claims_waited);
                        seen = Some((seq, Instant::now()));
                    }
                },
            }
            if Instant::now() >= deadline {
                return Claim::Later("the event id is still claimed by another replica".into());
            }
            if progress.elapsed() >= node.settings.ack_wait / 3 {
                settle(d, msg, AckKind::Progress).await;
                progress = Instant::now();
            }
            tokio::time::sleep(POLL.delay(polls)).await;
            polls += 1;
        }
    }
}

/// Renews the claim stored at `seq`; the renewed claim's sequence, or `None` when it was
/// taken over (or cannot be renewed now: the next renewal tries again).
pub(super) async fn renew(node: &Node, records: &Records, key: &str, seq: u64) -> Option<u64> {
    let d = &node.d;
    match records
        .put_if(&d.js, key, encode_claim(&d.ep.replica), seq)
        .await
    {
        Ok(Some(next)) => Some(next),
        // a renewal whose acknowledgement was lost is stored: still ours
        Ok(None)
            if let Ok(Some((next, body))) = records.get_from_leader(key).await
                && matches!(super::records::decode_entry(&body), Entry::Claimed { owner } if owner == d.ep.replica) =>
        {
            Some(next)
        }
        Ok(None) => {
            tracing::warn!(target: "happen_nats", node = %node.inbox.id(), "an exactly-once claim was taken over while its flow still ran here (the flow outlived its lease without renewing it); the event may run twice");
            None
        }
        Err(e) => {
            tracing::debug!(target: "happen_nats", node = %node.inbox.id(), error = %e, "cannot renew an exactly-once claim; retrying with the next progress signal");
            Some(seq)
        }
    }
}

/// Gives the claim stored at `seq` up, so the next copy (a redelivery, another replica) can
/// claim it at once instead of waiting out the lease. Best effort.
pub(super) async fn release(node: &Node, records: &Records, key: &str, seq: u64) {
    if let Err(e) = records.put_if(&node.d.js, key, encode_free(), seq).await {
        tracing::debug!(target: "happen_nats", node = %node.inbox.id(), error = %e, "cannot give an exactly-once claim up; the next copy takes it over after the lease");
    }
}
