//! A node's counters: the public snapshot, the queue-wait histogram and the metric handles.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::error::Error;
use crate::id::NodeId;

/// A snapshot of a node's counters (see [`Node::stats`](crate::Node::stats)).
///
/// The counters reconcile: every accepted event is, at any moment, exactly one of active,
/// queued, completed, failed, cancelled or displaced —
/// `accepted == active + queued + completed + failed + cancelled + displaced` once nothing is
/// in motion. Events refused at admission are `rejected` and never accepted.
///
/// The same counters are exported as `metrics` (`happen_events_accepted_total`,
/// `happen_flows_failed_total`, ... labelled by node) when a recorder is installed.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
/// use happen::{Context, Event, Happen, NodeOptions};
///
/// let happen = Happen::new();
/// let node = happen.node_with("n", NodeOptions::new().max_concurrent(1).queue_limit(1)).await?;
/// node.on("job", |_e: Event, _c: Context| async {})?;
/// let first = node.send(&node, Event::new("job", 1)); // runs
/// let second = node.send(&node, Event::new("job", 2)); // queued
/// let third = node.send(&node, Event::new("job", 3)); // rejected: the queue is full
/// assert!(third.await.unwrap_err().is_queue_full());
/// first.await?;
/// second.await?;
///
/// let s = node.stats();
/// assert_eq!((s.accepted, s.rejected, s.completed, s.peak_queued), (2, 1, 2, 1));
/// assert_eq!(s.accepted, s.completed + s.failed + s.cancelled + s.displaced);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct NodeStats {
    /// Flows holding a slot now: started, or admitted and about to start (a flow that just
    /// answered may still be counted for a moment; `completed`/`failed` are counted before
    /// the answer).
    pub active: usize,
    /// Events waiting to start now.
    pub queued: usize,
    /// The most events that ever waited at once.
    pub peak_queued: usize,
    /// Events admitted (started at once or queued).
    pub accepted: u64,
    /// Events refused at admission (never accepted): `QueueFull`, or `Panic` when the node's
    /// sequential-key function panicked for the event.
    pub rejected: u64,
    /// Accepted events that waited in a full priority queue and were pushed out by a
    /// higher-priority event (their senders got `QueueFull`).
    pub displaced: u64,
    /// Flows that finished with a value.
    pub completed: u64,
    /// Flows that finished with an error (handler error, panic, no handler, cancelled by a
    /// shutdown...).
    pub failed: u64,
    /// Streaming flows stopped because their consumer went away (what the consumer asked
    /// for, so not counted as failed).
    pub cancelled: u64,
    /// Failures nobody awaited (logged and counted): fire-and-forget sends from this node
    /// whose flow failed, plus failures this node noticed for senders outside this instance
    /// and broadcasts it rejected.
    pub unobserved_failures: u64,
    /// Faults of happen's engine itself at this node (never user code): a panic inside the
    /// engine, or a driver that ended while the node lived (its runtime shut down). Each is
    /// logged at error level; the node's flows were answered, never left waiting.
    pub engine_faults: u64,
    /// Median time an event waited in the queue before starting (an upper bound from a log2
    /// histogram; after the first 1,024 waits, 1 in 64 queued events is sampled).
    pub queue_wait_p50: Duration,
    /// 99th percentile of the queue wait.
    pub queue_wait_p99: Duration,
    /// The queue waits measured so far (sampled as for `queue_wait_p50`) as a log2 histogram
    /// in microseconds: `queue_wait_buckets[0]` counts waits under 1 µs, `[i]` those of at
    /// least 2^(i-1) and under 2^i µs (the last bucket also holds everything longer).
    /// Cumulative, so the waits between two snapshots are their difference; trailing empty
    /// buckets are left out. Events that started at once never waited and are not counted.
    pub queue_wait_buckets: Vec<u64>,
    /// Handler times (from a flow's start to its end) in the buckets of
    /// `queue_wait_buckets`, when the node times them
    /// ([`NodeOptions::handler_timing`](crate::NodeOptions::handler_timing)); empty otherwise.
    pub handler_time_buckets: Vec<u64>,
    /// Events the node's security gates turned away before admission (unauthenticated,
    /// forbidden or of a disallowed shape); never counted in `accepted` or `rejected`.
    pub denied: u64,
}

/// Failures nobody observed (a fire-and-forget send whose flow failed, a rejected broadcast):
/// logged and counted at the node. Shared by the node and its failed replies.
pub(crate) struct Unobserved {
    node: NodeId,
    count: AtomicU64,
}

impl Unobserved {
    pub(crate) fn new(node: NodeId) -> Unobserved {
        Unobserved {
            node,
            count: AtomicU64::new(0),
        }
    }

    /// Logs and counts `err`.
    pub(crate) fn record(&self, err: &Error) {
        self.count.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("happen_unobserved_failures_total", "node" => self.node.to_string())
            .increment(1);
        tracing::warn!(target: "happen::reply", node = %self.node, kind = %err.kind(), error = %err, "a flow failed and nobody awaited its reply");
    }

    pub(crate) fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

/// Log2 histogram of queue waits in microseconds (bucket i holds waits < 2^i µs).
#[derive(Clone)]
pub(crate) struct WaitHistogram {
    buckets: [u64; 40],
    pub(crate) count: u64,
}

impl Default for WaitHistogram {
    fn default() -> Self {
        WaitHistogram {
            buckets: [0; 40],
            count: 0,
        }
    }
}

impl WaitHistogram {
    pub(crate) fn record(&mut self, d: Duration) {
        let us = d.as_micros().min(u64::MAX as u128) as u64;
        let i = (64 - us.leading_zeros()) as usize;
        self.buckets[i.min(39)] += 1;
        self.count += 1;
    }

    /// The counts of the buckets, without the trailing empty ones.
    pub(crate) fn buckets(&self) -> Vec<u64> {
        trimmed(&self.buckets)
    }

    pub(crate) fn quantile(&self, q: f64) -> Duration {
        if self.count == 0 {
            return Duration::ZERO;
        }
        let target = ((self.count as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= target {
                return if i == 0 {
                    Duration::ZERO
                } else {
                    Duration::from_micros(1u64 << i.min(63))
                };
            }
        }
        Duration::MAX
    }
}

/// `counts` without its trailing zeros.
fn trimmed(counts: &[u64]) -> Vec<u64> {
    let len = counts.iter().rposition(|&n| n > 0).map_or(0, |i| i + 1);
    counts[..len].to_vec()
}

/// The log2 microsecond buckets of [`WaitHistogram`], written by many threads at once (the
/// handler times of the flows of a node that times them).
pub(crate) struct AtomicHistogram {
    buckets: [AtomicU64; 40],
}

impl Default for AtomicHistogram {
    fn default() -> Self {
        AtomicHistogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl AtomicHistogram {
    pub(crate) fn record(&self, d: Duration) {
        let us = d.as_micros().min(u64::MAX as u128) as u64;
        let i = (64 - us.leading_zeros()) as usize;
        self.buckets[i.min(39)].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn buckets(&self) -> Vec<u64> {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        trimmed(&counts)
    }
}

/// Metric handles of one node (no-ops unless a `metrics` recorder is installed).
pub(crate) struct Metrics {
    pub(crate) accepted: metrics::Counter,
    pub(crate) rejected: metrics::Counter,
    pub(crate) completed: metrics::Counter,
    pub(crate) failed: metrics::Counter,
    pub(crate) active: metrics::Gauge,
    pub(crate) queued: metrics::Gauge,
    pub(crate) wait: metrics::Histogram,
    pub(crate) faults: metrics::Counter,
}

impl Metrics {
    pub(crate) fn new(node: &str) -> Metrics {
        let label = [("node", node.to_owned())];
        Metrics {
            accepted: metrics::counter!("happen_events_accepted_total", &label),
            rejected: metrics::counter!("happen_events_rejected_total", &label),
            completed: metrics::counter!("happen_flows_completed_total", &label),
            failed: metrics::counter!("happen_flows_failed_total", &label),
            active: metrics::gauge!("happen_flows_active", &label),
            queued: metrics::gauge!("happen_events_queued", &label),
            wait: metrics::histogram!("happen_queue_wait_seconds", &label),
            faults: metrics::counter!("happen_engine_faults_total", &label),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_upper_bounds_of_log2_buckets() {
        let mut h = WaitHistogram::default();
        assert_eq!(h.quantile(0.5), Duration::ZERO);
        for us in [1, 3, 3, 100, 5_000] {
            h.record(Duration::from_micros(us));
        }
        assert_eq!(h.quantile(0.5), Duration::from_micros(4));
        assert_eq!(h.quantile(0.99), Duration::from_micros(8192));
        // 1 in [1, 2), 3 twice in [2, 4), 100 in [64, 128), 5,000 in [4096, 8192)
        assert_eq!(h.buckets().len(), 14);
        assert_eq!(&h.buckets()[..3], [0, 1, 2]);
        assert_eq!((h.buckets()[7], h.buckets()[13]), (1, 1));
        assert_eq!(WaitHistogram::default().buckets(), Vec::<u64>::new());
    }

    #[test]
    fn the_atomic_histogram_uses_the_same_buckets() {
        let h = AtomicHistogram::default();
        let mut w = WaitHistogram::default();
        for us in [0, 1, 3, 100, 5_000, u64::MAX / 2] {
            h.record(Duration::from_micros(us));
            w.record(Duration::from_micros(us));
        }
        assert_eq!(h.buckets(), w.buckets());
        assert_eq!(h.buckets().len(), 40);
    }
}
