//! Backpressure: the state a node publishes, and the hysteresis that decides it.

/// The type of the event a node broadcasts when its pressure state changes. Its payload:
/// `{"nodeId", "level": "high"|"normal", "underPressure", "queued", "queueLimit", "seq"}`, where
/// `seq` numbers the node's transitions (events may arrive out of order; the highest `seq` is the
/// current state; [`Node::watch_pressure`](crate::Node::watch_pressure) is always in order).
pub const PRESSURE_EVENT: &str = "node.pressure";

/// The backpressure state of a node.
///
/// A node is under pressure from the moment its queue holds `threshold × queue_limit` events
/// until it drains to three quarters of that (hysteresis, so the state does not flap).
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
