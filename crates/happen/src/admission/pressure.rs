//! Backpressure: the state a node publishes, and the hysteresis that decides it.

/// The type of the event a node broadcasts when its pressure state changes. Its payload:
/// `{"nodeId", "level": "high"|"normal", "underPressure", "queued", "queueLimit", "seq"}`, where
/// `seq` numbers the node's transitions (events may arrive out of order; the highest `seq` is the
/// current state; [`Node::watch_pressure`](crate::Node::watch_pressure) is always in order).
///
/// Any node can listen: register a handler for it like for any other event type.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
/// use happen::{Context, Event, Happen, NodeOptions, PRESSURE_EVENT};
///
/// let happen = Happen::new();
/// let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
/// let monitor = happen.node("monitor").await?;
/// monitor.on(PRESSURE_EVENT, move |event: Event, _c: Context| {
///     let tx = tx.clone();
///     async move { tx.send(event.payload().clone()).ok(); }
/// })?;
///
/// let options = NodeOptions::new().max_concurrent(1).queue_limit(4).backpressure_threshold(0.5);
/// let busy = happen.node_with("busy", options).await?;
/// busy.on("job", |_e: Event, _c: Context| async {})?;
/// for i in 0..3 {
///     busy.tell(&busy, Event::new("job", i))?; // 2 queued: the threshold
/// }
/// let high = rx.recv().await.unwrap();
/// assert_eq!((high["nodeId"].as_str(), high["level"].as_str()), (Some("busy"), Some("high")));
/// assert_eq!((high["queued"].as_u64(), high["queueLimit"].as_u64()), (Some(2), Some(4)));
/// let normal = rx.recv().await.unwrap(); // the queue drained
/// assert_eq!(normal["level"], "normal");
/// assert!(normal["seq"].as_u64() > high["seq"].as_u64());
/// # Ok(()) }
/// ```
pub const PRESSURE_EVENT: &str = "node.pressure";

/// The backpressure state of a node.
///
/// A node is under pressure from the moment its queue holds `threshold × queue_limit` events
/// until it drains to three quarters of that (hysteresis, so the state does not flap).
/// Read it with [`Node::pressure`](crate::Node::pressure) (an example is there), follow it
/// with [`Node::watch_pressure`](crate::Node::watch_pressure), or wait for relief with
/// [`Node::ready`](crate::Node::ready).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
/// let happen = happen::Happen::new();
/// let node = happen.node("n").await?;
/// let p = node.pressure();
/// assert!(!p.under_pressure);
/// assert_eq!((p.queued, p.queue_limit), (0, 10_000));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Pressure {
    /// Is the node under pressure?
    pub under_pressure: bool,
    /// Events waiting when the state last changed (or when read).
    pub queued: usize,
    /// The node's queue limit.
    pub queue_limit: usize,
}

impl Pressure {
    /// A pressure state built from its parts.
    pub(crate) fn new(under_pressure: bool, queued: usize, queue_limit: usize) -> Pressure {
        Pressure {
            under_pressure,
            queued,
            queue_limit,
        }
    }
}

/// The hysteresis: on at `high` waiting events, off again at `low`.
pub(crate) struct Levels {
    pub(crate) high: usize,
    pub(crate) low: usize,
}

impl Levels {
    pub(crate) fn new(threshold: f64, queue_limit: usize) -> Levels {
        let high = ((threshold * queue_limit as f64).ceil() as usize).clamp(1, queue_limit);
        Levels {
            high,
            low: high * 3 / 4,
        }
    }

    /// The next state for `depth` waiting events, given the current one.
    pub(crate) fn next(&self, under_pressure: bool, depth: usize) -> bool {
        if under_pressure {
            depth > self.low
        } else {
            depth >= self.high
        }
    }
}
