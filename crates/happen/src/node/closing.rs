//! Closing nodes within a grace period, whatever the transport does: [`ShutdownReport`].

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::time::Instant;

use super::Node;

/// What a [`Happen::shutdown`](crate::Happen::shutdown) or [`Node::close`] could not finish
/// within its grace period. A clean stop reports nothing; otherwise the stop still returned in
/// time (at most a quarter of the grace period, and at most 500 ms, after it) and this says
/// what was given up.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
/// use std::time::Duration;
/// use happen::{Context, Event, Happen};
///
/// let happen = Happen::new();
/// let stuck = happen.node("stuck").await?;
/// stuck.on("wait", |_e: Event, _c: Context| async {
///     futures::future::pending::<()>().await // never finishes
/// })?;
/// stuck.tell(&stuck, Event::new("wait", ()))?;
/// # while stuck.stats().active == 0 { tokio::task::yield_now().await }
/// let report = happen.shutdown(Duration::from_millis(50)).await;
/// assert_eq!(report.cancelled_flows, 1);
/// assert!(!report.is_clean());
///
/// let report = Happen::new().shutdown(Duration::from_secs(1)).await;
/// assert!(report.is_clean());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Flows still running or queued when the grace period ended; they were cancelled and
    /// their senders were answered [`ErrorKind::ShutDown`](crate::ErrorKind::ShutDown).
    pub cancelled_flows: usize,
    /// Nodes the transport had not finished detaching in time: answers to events that
    /// reached them may not have been delivered.
    pub undetached_nodes: usize,
    /// The transport's own shutdown did not finish in time (what it had not flushed to its
    /// server is lost).
    pub transport_unfinished: bool,
}

impl ShutdownReport {
    /// Did everything finish within the grace period?
    pub fn is_clean(&self) -> bool {
        *self == ShutdownReport::default()
    }
}

/// When a stop that started with `grace` gives up for good: a little after the grace period,
/// so what was cancelled at its end can answer, but never long after it.
pub(crate) fn hard_deadline(until: Instant, grace: Duration) -> Instant {
    until + (grace / 4).min(Duration::from_millis(500))
}

/// Closes `nodes`: the transport stops routing to them first (`detach`, if given), what
/// reached them runs until `until`, then what is left is cancelled; nothing waits past
/// `hard`.
pub(crate) async fn close_nodes<'a>(
    nodes: &'a [Node],
    detach: Option<&(dyn Fn(&'a Node) -> BoxFuture<'a, ()> + Sync)>,
    until: Instant,
    hard: Instant,
) -> ShutdownReport {
    let mut report = ShutdownReport::default();
    let cancel = |report: &mut ShutdownReport| {
        for n in nodes {
            let s = n.stats();
            report.cancelled_flows += s.active + s.queued;
            n.close_now(true);
        }
    };
    let mut cancelled = false;
    if let Some(detach) = detach {
        // The transport stops routing to the nodes first (so new events go to replicas
        // elsewhere or fail fast) and delivers the answers to what already reached them; the
        // nodes stay open for that until the deadline, then what is left is cancelled
        // (answered `ShutDown`).
        let done = AtomicUsize::new(0);
        let mut detached = std::pin::pin!(futures::future::join_all(nodes.iter().map(|n| {
            let detaching = detach(n);
            let done = &done;
            async move {
                detaching.await;
                done.fetch_add(1, Ordering::Relaxed);
            }
        })));
        if tokio::time::timeout_at(until, detached.as_mut())
            .await
            .is_err()
        {
            cancel(&mut report);
            cancelled = true;
            if tokio::time::timeout_at(hard, detached).await.is_err() {
                report.undetached_nodes = nodes.len() - done.load(Ordering::Relaxed);
                tracing::warn!(
                    nodes = report.undetached_nodes,
                    "the transport did not finish detaching nodes in time; answers to what reached them may be lost"
                );
            }
        }
    }
    for n in nodes {
        n.close_now(false);
    }
    let drained = || futures::future::join_all(nodes.iter().map(|n| n.engine().wait_drained()));
    if !cancelled && tokio::time::timeout_at(until, drained()).await.is_err() {
        tracing::warn!("grace period passed; cancelling the remaining flows");
        cancel(&mut report);
    }
    if tokio::time::timeout_at(hard, drained()).await.is_err() {
        // Only a flow that blocks its thread outside any await can still hold a slot here.
        tracing::warn!("cancelled flows did not end in time; not waiting for them");
    }
    report
}
