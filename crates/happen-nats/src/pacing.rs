//! Pacing sends to a node in another process: the view behind
//! [`Transport::pressure`](happen::transport::Transport::pressure) for a remote target, which
//! [`Node::ready`](happen::Node::ready) waits on (a "paced send" is a send made once `ready`
//! resolved).
//!
//! The view combines two things (the rule and its guarantee are in `WIRE.md`, "Backpressure
//! and pacing"):
//! - **this process's own requests in flight** to the target: counted when a request is
//!   queued for publishing, uncounted when its reply (or error, or stream end) arrives, or
//!   when nobody waits for it any more and the request timeout has passed. Checked against
//!   the target's limits (`max_concurrent` and its high-water mark), which the target tells
//!   once on a `Happen-Query: limits` request;
//! - **what the target reports**: `node.pressure` events (and the `Happen-Pressure` header of
//!   replies), per replica, ordered by their `seq`. Any replica reporting pressure holds
//!   paced sends back (others' load, which this process cannot count).

use std::collections::HashMap;
use std::sync::Arc;

use happen::Pressure;
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::time::Instant;

use std::sync::atomic::{AtomicBool, Ordering};

use happen::NodeId;

use crate::wire::{self, PressureEvent, RemoteLimits};

/// The pacing view of one remote node id.
pub(crate) struct Remote {
    state: Mutex<State>,
    tx: watch::Sender<Pressure>,
}

/// What this process knows of the target's limits.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Limits {
    /// Not known; ask (again) on the next `ready`. Also: no process hosted the node at the
    /// last query.
    Unknown,
    /// A query is on its way: `ready` waits for it (one round trip).
    Querying,
    Known(RemoteLimits),
    /// The target did not say (a reference or older node): pace by its reports only.
    Unreported,
}

#[derive(Debug, Clone, Copy)]
struct Report {
    seq: Option<u64>,
    under: bool,
    queued: usize,
    queue_limit: usize,
}

struct State {
    /// This process's requests to the target, published and not answered.
    own: usize,
    limits: Limits,
    /// The last report of each replica (keyed by its `Happen-Replica` id, `""` if none).
    replicas: HashMap<String, Report>,
}

impl Remote {
    pub(crate) fn new() -> Arc<Remote> {
        Arc::new(Remote {
            state: Mutex::new(State {
                own: 0,
                limits: Limits::Unknown,
                replicas: HashMap::new(),
            }),
            tx: watch::Sender::new(happen::transport::pressure(false, 0, 0)),
        })
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<Pressure> {
        self.tx.subscribe()
    }

    /// Should a limits query be sent now? Marks one as on its way if so (`ready` then waits
    /// for its answer).
    pub(crate) fn start_query(&self) -> bool {
        let mut st = self.state.lock();
        if st.limits != Limits::Unknown {
            return false;
        }
        st.limits = Limits::Querying;
        self.update(&st);
        true
    }

    /// The answer to a limits query: the limits, or `None` when the target did not tell them.
    pub(crate) fn set_limits(&self, limits: Option<RemoteLimits>) {
        let mut st = self.state.lock();
        st.limits = limits.map_or(Limits::Unreported, Limits::Known);
        self.update(&st);
    }

    /// No process hosts the target (or the query could not be sent): sends go ahead (and
    /// fail fast); the next `ready` asks again.
    pub(crate) fn query_failed(&self) {
        let mut st = self.state.lock();
        if st.limits == Limits::Querying {
            st.limits = Limits::Unknown;
            self.update(&st);
        }
    }

    /// A pressure report of one replica. Reports older (lower `seq`) than the last one seen
    /// from that replica are ignored.
    pub(crate) fn report(&self, replica: &str, seq: Option<u64>, pressure: Pressure) {
        let mut st = self.state.lock();
        let report = Report {
            seq,
            under: pressure.under_pressure,
            queued: pressure.queued,
            queue_limit: pressure.queue_limit,
        };
        match st.replicas.get_mut(replica) {
            Some(last) => {
                if let (Some(new), Some(old)) = (seq, last.seq)
                    && new < old
                {
                    return;
                }
                *last = report;
            }
            None => {
                st.replicas.insert(replica.to_owned(), report);
            }
        }
        self.update(&st);
    }

    /// The replica stopped serving the node (its last report says so).
    pub(crate) fn replica_closed(&self, replica: &str) {
        let mut st = self.state.lock();
        if st.replicas.remove(replica).is_some() {
            self.update(&st);
        }
    }

    /// Counts one request in flight until the returned guard is dropped.
    pub(crate) fn in_flight(self: &Arc<Remote>, expires: Instant) -> InFlight {
        let mut st = self.state.lock();
        st.own += 1;
        self.update(&st);
        InFlight {
            remote: self.clone(),
            expires,
        }
    }

    /// Publishes the view. Waiters (`Node::ready`) are only woken when "under pressure"
    /// changes; the counts are updated silently in between.
    fn update(&self, st: &State) {
        let high = st.replicas.values().filter(|r| r.under);
        let reported_queued = high.clone().map(|r| r.queued).max().unwrap_or(0);
        let reported_high = high.count() > 0;
        let reported_limit = st.replicas.values().map(|r| r.queue_limit).max();
        let next = match st.limits {
            Limits::Known(l) => {
                let own_queued = st.own.saturating_sub(l.max_concurrent);
                happen::transport::pressure(
                    reported_high || own_queued >= l.high_water,
                    own_queued.max(reported_queued),
                    l.queue_limit,
                )
            }
            Limits::Querying => {
                happen::transport::pressure(true, reported_queued, reported_limit.unwrap_or(0))
            }
            Limits::Unknown | Limits::Unreported => happen::transport::pressure(
                reported_high,
                reported_queued,
                reported_limit.unwrap_or(0),
            ),
        };
        self.tx.send_if_modified(|cur| {
            let flips = cur.under_pressure != next.under_pressure;
            *cur = next;
            flips
        });
    }
}

/// One request in flight to a remote target (see [`Remote::in_flight`]); uncounted on drop.
pub(crate) struct InFlight {
    remote: Arc<Remote>,
    /// When this process stops waiting for the reply (its request timeout).
    expires: Instant,
}

impl InFlight {
    /// Has the request timeout passed? (Then a request nobody waits for stops counting.)
    pub(crate) fn expired(&self, now: Instant) -> bool {
        now >= self.expires
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut st = self.remote.state.lock();
        st.own -= 1;
        self.remote.update(&st);
    }
}

/// The pacing views of remote targets, one per node id, created by the first
/// [`Transport::pressure`](happen::transport::Transport::pressure) for it (the first
/// [`Node::ready`](happen::Node::ready) for it).
#[derive(Default)]
pub(crate) struct Remotes {
    views: Mutex<HashMap<NodeId, Arc<Remote>>>,
    /// Set once any view exists: until then sends skip the in-flight bookkeeping.
    watching: AtomicBool,
}

impl Remotes {
    /// The view of `target`, if one was asked for.
    pub(crate) fn get(&self, target: &str) -> Option<Arc<Remote>> {
        if !self.watching.load(Ordering::Relaxed) {
            return None;
        }
        self.views.lock().get(target).cloned()
    }

    /// The view of `target`, created if needed.
    pub(crate) fn view(&self, target: &NodeId) -> Arc<Remote> {
        self.watching.store(true, Ordering::Relaxed);
        self.views
            .lock()
            .entry(target.clone())
            .or_insert_with(Remote::new)
            .clone()
    }

    /// Updates the view of `target` from a reply's `Happen-Pressure` header. A reply
    /// without the header says nothing (it may have been answered before a later report).
    pub(crate) fn observe_header(&self, target: &NodeId, value: Option<&str>) {
        let Some(value) = value else { return };
        if let Some(remote) = self.get(target) {
            let r = wire::parse_pressure_report(value);
            remote.report(r.replica.as_deref().unwrap_or(""), r.seq, r.pressure);
        }
    }

    /// A `node.pressure` report from `<prefix>.pressure.<id>`, sent by `replica`.
    pub(crate) fn observe_report(&self, report: &PressureEvent, replica: &str) {
        let Some(remote) = report.node.as_deref().and_then(|id| self.get(id)) else {
            return;
        };
        if report.closed {
            remote.replica_closed(replica);
            return;
        }
        remote.report(replica, report.seq, report.pressure);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn limits() -> RemoteLimits {
        RemoteLimits::new(4, 100, 80)
    }

    #[test]
    fn own_requests_beyond_max_concurrent_reach_the_high_water_mark() {
        let r = Remote::new();
        let rx = r.subscribe();
        assert!(r.start_query());
        assert!(rx.borrow().under_pressure, "waits for the limits");
        r.set_limits(Some(limits()));
        assert!(!rx.borrow().under_pressure);
        let expires = Instant::now() + Duration::from_secs(1);
        let mut flights: Vec<_> = (0..83).map(|_| r.in_flight(expires)).collect();
        assert!(!rx.borrow().under_pressure);
        flights.push(r.in_flight(expires));
        assert!(rx.borrow().under_pressure, "4 running + 80 queued");
        assert_eq!(rx.borrow().queued, 80);
        flights.pop();
        assert!(!rx.borrow().under_pressure);
    }

    #[test]
    fn reports_are_ordered_per_replica_and_closed_replicas_forgotten() {
        let r = Remote::new();
        let rx = r.subscribe();
        r.set_limits(Some(limits()));
        r.report("a", Some(3), happen::transport::pressure(true, 80, 100));
        assert!(rx.borrow().under_pressure);
        r.report("a", Some(2), happen::transport::pressure(false, 0, 100)); // late: ignored
        assert!(rx.borrow().under_pressure);
        r.report("b", Some(1), happen::transport::pressure(false, 0, 100));
        assert!(
            rx.borrow().under_pressure,
            "one replica under pressure holds sends"
        );
        r.report("a", Some(4), happen::transport::pressure(false, 60, 100));
        assert!(!rx.borrow().under_pressure);
        r.report("b", Some(5), happen::transport::pressure(true, 80, 100));
        r.replica_closed("b");
        assert!(!rx.borrow().under_pressure);
    }

    #[test]
    fn a_failed_query_lets_sends_through_and_asks_again() {
        let r = Remote::new();
        let rx = r.subscribe();
        assert!(r.start_query());
        assert!(!r.start_query(), "one query at a time");
        r.query_failed();
        assert!(!rx.borrow().under_pressure);
        assert!(r.start_query());
        r.set_limits(None);
        assert!(!rx.borrow().under_pressure);
        assert!(
            !r.start_query(),
            "unreported limits are not asked for again"
        );
    }
}
