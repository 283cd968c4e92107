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
    /// histogram; after the first 1,024 waits, 1 in 8 queued events is sampled).
    pub queue_wait_p50: Duration,
    /// 99th percentile of the queue wait.
    pub queue_wait_p99: Duration,
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
    }
}
