//! [`Limits`]: a node's admission limits, and [`PartialLimits`], an override of some of them.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Admission limits of one node: `concurrency.default` in the configuration, and what
/// [`Node::limits`](crate::Node::limits) reports for a node.
///
/// Complete: every value is set (a default, or what the file says). An override of some of
/// them is a [`PartialLimits`].
///
/// ```
/// use happen::{Config, Limits, QueueStrategy};
///
/// let limits = Limits::default()
///     .with_max_concurrent(8)
///     .with_queue_limit(1_000)
///     .with_queue_strategy(QueueStrategy::Priority)
///     .with_backpressure_threshold(0.5);
/// assert_eq!(limits.max_concurrent, 8);
///
/// let mut config = Config::default();
/// config.concurrency.default = limits;
/// config.validate()?;
/// # Ok::<(), happen::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct Limits {
    /// Flows executing at once (default 100).
    #[serde(alias = "maxConcurrent")]
    pub max_concurrent: usize,
    /// Events waiting beyond `max_concurrent` (default 10,000); more are rejected with
    /// [`ErrorKind::QueueFull`](crate::ErrorKind::QueueFull).
    #[serde(alias = "queueLimit")]
    pub queue_limit: usize,
    /// Which waiting event starts next (default FIFO).
    #[serde(alias = "queueStrategy")]
    pub queue_strategy: QueueStrategy,
    /// Fraction of `queue_limit` (0 < t ≤ 1, default 0.8) at which the node is under pressure.
    #[serde(alias = "backpressureThreshold")]
    pub backpressure_threshold: f64,
    /// How admission counts a batch ([`Node::send_batch`](crate::Node::send_batch)): as one
    /// flow (default) or as its events (see [`BatchAdmission`]).
    #[serde(alias = "batchAdmission")]
    pub batch_admission: BatchAdmission,
    /// Time every flow of the node (default off): a log2 histogram of the handler times in
    /// [`NodeStats::handler_time_buckets`](crate::NodeStats::handler_time_buckets). Off, a
    /// flow reads no clock for it.
    #[serde(alias = "handlerTiming")]
    pub handler_timing: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_concurrent: 100,
            queue_limit: 10_000,
            queue_strategy: QueueStrategy::Fifo,
            backpressure_threshold: 0.8,
            batch_admission: BatchAdmission::Flow,
            handler_timing: false,
        }
    }
}

impl Limits {
    /// Sets `max_concurrent`.
    pub fn with_max_concurrent(mut self, n: usize) -> Self {
        self.max_concurrent = n;
        self
    }
    /// Sets `queue_limit`.
    pub fn with_queue_limit(mut self, n: usize) -> Self {
        self.queue_limit = n;
        self
    }
    /// Sets `queue_strategy`.
    pub fn with_queue_strategy(mut self, s: QueueStrategy) -> Self {
        self.queue_strategy = s;
        self
    }
    /// Sets `backpressure_threshold`.
    pub fn with_backpressure_threshold(mut self, t: f64) -> Self {
        self.backpressure_threshold = t;
        self
    }
    /// Sets `batch_admission`.
    pub fn with_batch_admission(mut self, b: BatchAdmission) -> Self {
        self.batch_admission = b;
        self
    }

    /// Limits so high they never apply (for comparison runs): no flow waits and no event is
    /// rejected, so nothing protects the node from overload.
    ///
    /// ```
    /// let limits = happen::Limits::unlimited();
    /// assert!(limits.max_concurrent > 1 << 40 && limits.queue_limit > 1 << 40);
    /// ```
    pub fn unlimited() -> Self {
        Limits {
            max_concurrent: usize::MAX / 4,
            queue_limit: usize::MAX / 4,
            ..Limits::default()
        }
    }

    pub(crate) fn merged(mut self, p: &PartialLimits) -> Limits {
        if let Some(v) = p.max_concurrent {
            self.max_concurrent = v;
        }
        if let Some(v) = p.queue_limit {
            self.queue_limit = v;
        }
        if let Some(v) = p.queue_strategy {
            self.queue_strategy = v;
        }
        if let Some(v) = p.backpressure_threshold {
            self.backpressure_threshold = v;
        }
        if let Some(v) = p.batch_admission {
            self.batch_admission = v;
        }
        if let Some(v) = p.handler_timing {
            self.handler_timing = v;
        }
        self
    }

    pub(crate) fn validate(&self, key: &str) -> Result<()> {
        if self.max_concurrent == 0 {
            return Err(Error::config(
                &format!("{key}.max_concurrent"),
                "must be at least 1",
            ));
        }
        if self.queue_limit == 0 {
            return Err(Error::config(
                &format!("{key}.queue_limit"),
                "must be at least 1",
            ));
        }
        validate_threshold(
            &format!("{key}.backpressure_threshold"),
            self.backpressure_threshold,
        )
    }
}

fn validate_threshold(key: &str, t: f64) -> Result<()> {
    if !(t > 0.0 && t <= 1.0) {
        return Err(Error::config(
            key,
            format!("{t} is outside (0, 1]; it is a fraction of queue_limit such as 0.8"),
        ));
    }
    Ok(())
}

/// A partial [`Limits`]: only the keys that are set override the default. The values of
/// `concurrency.patterns` in the configuration.
///
/// ```
/// use happen::config::{ConcurrencyConfig, PartialLimits};
///
/// let concurrency = ConcurrencyConfig::default()
///     .with_pattern("api-*", PartialLimits::default().with_max_concurrent(200));
/// let api = concurrency.limits_for("api-gateway");
/// assert_eq!(api.max_concurrent, 200); // overridden
/// assert_eq!(api.queue_limit, 10_000); // the default's
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct PartialLimits {
    /// Overrides `max_concurrent`.
    #[serde(alias = "maxConcurrent", skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<usize>,
    /// Overrides `queue_limit`.
    #[serde(alias = "queueLimit", skip_serializing_if = "Option::is_none")]
    pub queue_limit: Option<usize>,
    /// Overrides `queue_strategy`.
    #[serde(alias = "queueStrategy", skip_serializing_if = "Option::is_none")]
    pub queue_strategy: Option<QueueStrategy>,
    /// Overrides `backpressure_threshold`.
    #[serde(
        alias = "backpressureThreshold",
        skip_serializing_if = "Option::is_none"
    )]
    pub backpressure_threshold: Option<f64>,
    /// Overrides `batch_admission`.
    #[serde(alias = "batchAdmission", skip_serializing_if = "Option::is_none")]
    pub batch_admission: Option<BatchAdmission>,
    /// Overrides `handler_timing`.
    #[serde(alias = "handlerTiming", skip_serializing_if = "Option::is_none")]
    pub handler_timing: Option<bool>,
}

impl PartialLimits {
    /// Sets `max_concurrent`.
    pub fn with_max_concurrent(mut self, n: usize) -> Self {
        self.max_concurrent = Some(n);
        self
    }
    /// Sets `queue_limit`.
    pub fn with_queue_limit(mut self, n: usize) -> Self {
        self.queue_limit = Some(n);
        self
    }
    /// Sets `queue_strategy`.
    pub fn with_queue_strategy(mut self, s: QueueStrategy) -> Self {
        self.queue_strategy = Some(s);
        self
    }
    /// Sets `backpressure_threshold`.
    pub fn with_backpressure_threshold(mut self, t: f64) -> Self {
        self.backpressure_threshold = Some(t);
        self
    }
    /// Sets `batch_admission`.
    pub fn with_batch_admission(mut self, b: BatchAdmission) -> Self {
        self.batch_admission = Some(b);
        self
    }
}

impl PartialLimits {
    pub(crate) fn validate(&self, key: &str) -> Result<()> {
        if self.max_concurrent == Some(0) {
            return Err(Error::config(
                &format!("{key}.max_concurrent"),
                "must be at least 1",
            ));
        }
        if self.queue_limit == Some(0) {
            return Err(Error::config(
                &format!("{key}.queue_limit"),
                "must be at least 1",
            ));
        }
        if let Some(t) = self.backpressure_threshold {
            validate_threshold(&format!("{key}.backpressure_threshold"), t)?;
        }
        Ok(())
    }
}

/// Which waiting event starts next.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
/// use std::sync::{Arc, Mutex};
/// use happen::{Context, Event, Happen, NodeOptions, QueueStrategy};
///
/// let happen = Happen::new();
/// let options = NodeOptions::new().max_concurrent(1).queue_strategy(QueueStrategy::Priority);
/// let jobs = happen.node_with("jobs", options).await?;
/// let ran = Arc::new(Mutex::new(Vec::new()));
/// let log = ran.clone();
/// jobs.on("job", move |event: Event, _c: Context| {
///     let log = log.clone();
///     async move { log.lock().unwrap().push(event.payload().as_str().unwrap().to_owned()) }
/// })?;
/// let replies = [
///     jobs.send(&jobs, Event::new("job", "first")), // takes the one slot
///     jobs.send(&jobs, Event::new("job", "low")),   // these two wait
///     jobs.send(&jobs, Event::new("job", "high").with_priority(9)),
/// ];
/// futures::future::try_join_all(replies).await?;
/// assert_eq!(*ran.lock().unwrap(), ["first", "high", "low"]);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueStrategy {
    /// Arrival order (`"fifo"`).
    #[default]
    Fifo,
    /// Highest [`Event::priority`](crate::Event::priority) first, arrival order within a
    /// priority (`"priority"`). A full queue admits a higher-priority event by displacing the
    /// newest event of the lowest queued priority.
    Priority,
}

/// How a node's admission counts a batch ([`Node::send_batch`](crate::Node::send_batch)):
/// `concurrency.default.batch_admission` (or a pattern's) in the configuration,
/// [`NodeOptions::batch_admission`](crate::NodeOptions::batch_admission) for one node.
///
/// A batch is always one flow: one handler call, holding one of the node's `max_concurrent`
/// slots while it runs. What differs is what it weighs while it waits and in the counters:
///
/// - `Flow` (`"flow"`, the default): one queue place, one `accepted`, one `completed`.
/// - `Events` (`"events"`): one queue place per event (a batch that does not fit in the
///   queue's free places is rejected whole with `QueueFull`; it is never displaced nor
///   displaces), and `accepted`, `rejected`, `completed`, `failed` and `cancelled` count
///   its events, so the queue limit and the backpressure threshold bound the events waiting,
///   however they were sent. An empty batch weighs one. On a node with sequential lanes, a
///   batch parked behind its busy lane counts as one waiting event while parked.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
/// use happen::{BatchAdmission, Batch, Context, Event, Happen, NodeOptions};
///
/// let happen = Happen::new();
/// let options = NodeOptions::new().batch_admission(BatchAdmission::Events);
/// let store = happen.node_with("store", options).await?;
/// store.on_batch("reading", |batch: Batch, _c: Context| async move { batch.len() })?;
/// store.send_batch(&store, (0..10).map(|i| Event::new("reading", i))).await?;
/// let stats = store.stats();
/// assert_eq!((stats.accepted, stats.completed), (10, 10)); // the batch's events
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum BatchAdmission {
    /// A batch weighs one event.
    #[default]
    Flow,
    /// A batch weighs as many events as it holds.
    Events,
}
