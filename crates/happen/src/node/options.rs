//! [`NodeOptions`]: per-node settings over the instance configuration, and [`SequentialKey`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::state::StateMap;
use crate::config::{PartialLimits, QueueStrategy};
use crate::event::Event;
use crate::security::Security;

/// Makes a node process events with the same key one at a time, in arrival order, while
/// events with different keys run concurrently (all within `max_concurrent`). Set it with
/// [`NodeOptions::sequential`].
///
/// An event waiting behind another of its key counts as queued (against `queue_limit`). If a
/// [`Custom`](SequentialKey::Custom) key function panics, that event is rejected with
/// [`ErrorKind::Panic`](crate::ErrorKind::Panic) and the node keeps serving.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
/// use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
/// use happen::{Context, Event, Happen, NodeOptions, SequentialKey};
/// use serde_json::json;
///
/// #[derive(Default)]
/// struct InFlight { now: AtomicUsize, peak: AtomicUsize }
///
/// async fn post(_e: Event, ctx: Context) {
///     let f = ctx.state::<InFlight>().unwrap();
///     let now = f.now.fetch_add(1, SeqCst) + 1;
///     f.peak.fetch_max(now, SeqCst);
///     tokio::task::yield_now().await; // other flows may run meanwhile
///     f.now.fetch_sub(1, SeqCst);
/// }
///
/// let happen = Happen::new();
/// let by_account = SequentialKey::by(|e: &Event| e.payload()["account"].to_string());
/// let options = NodeOptions::new().sequential(by_account).state(InFlight::default());
/// let ledger = happen.node_with("ledger", options).await?;
/// ledger.on("post", post)?;
/// let postings = (0..10).map(|_| ledger.send(&ledger, Event::new("post", json!({"account": "a-1"}))));
/// futures::future::try_join_all(postings).await?;
/// assert_eq!(ledger.state::<InFlight>().unwrap().peak.load(SeqCst), 1); // one at a time
/// # Ok(()) }
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub enum SequentialKey {
    /// One lane per event type.
    EventType,
    /// One lane per transaction (correlation id).
    CorrelationId,
    /// One lane per key the function returns.
    Custom(Arc<dyn Fn(&Event) -> String + Send + Sync>),
}

impl SequentialKey {
    /// A lane per key computed by `f` (see the [type docs](SequentialKey) for an example).
    pub fn by(f: impl Fn(&Event) -> String + Send + Sync + 'static) -> SequentialKey {
        SequentialKey::Custom(Arc::new(f))
    }
}

impl fmt::Debug for SequentialKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SequentialKey::EventType => f.write_str("EventType"),
            SequentialKey::CorrelationId => f.write_str("CorrelationId"),
            SequentialKey::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

/// Per-node options for [`Happen::node_with`](crate::Happen::node_with), applied over the
/// instance configuration.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
/// use std::time::Duration;
/// use happen::{Happen, NodeOptions, SequentialKey};
///
/// let happen = Happen::new();
/// let node = happen
///     .node_with(
///         "ledger",
///         NodeOptions::new()
///             .max_concurrent(8)
///             .sequential(SequentialKey::CorrelationId)
///             .request_timeout(Duration::from_secs(5)),
///     )
///     .await?;
/// assert_eq!(node.limits().max_concurrent, 8);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct NodeOptions {
    pub(super) limits: PartialLimits,
    pub(super) request_timeout: Option<Duration>,
    pub(super) sequential: Option<SequentialKey>,
    pub(super) stream_buffer: Option<usize>,
    pub(super) state: StateMap,
    pub(super) security: Option<Security>,
    pub(super) deaf_to_broadcasts: bool,
}

impl NodeOptions {
    /// No overrides: the node gets what the configuration says for its id.
    pub fn new() -> NodeOptions {
        NodeOptions::default()
    }
    /// Flows of this node that run at once (over the configuration's default and pattern
    /// entries).
    pub fn max_concurrent(mut self, n: usize) -> Self {
        self.limits.max_concurrent = Some(n);
        self
    }
    /// Events that may wait beyond `max_concurrent`; more are rejected with
    /// [`ErrorKind::QueueFull`](crate::ErrorKind::QueueFull) (see [`Error::limit`](crate::Error::limit) for an example).
    pub fn queue_limit(mut self, n: usize) -> Self {
        self.limits.queue_limit = Some(n);
        self
    }
    /// Which waiting event starts next (see [`QueueStrategy`] for an example).
    pub fn queue_strategy(mut self, strategy: QueueStrategy) -> Self {
        self.limits.queue_strategy = Some(strategy);
        self
    }
    /// Fraction of `queue_limit` (0 < t ≤ 1) at which the node is under pressure (see
    /// [`Node::pressure`](crate::Node::pressure) for an example).
    pub fn backpressure_threshold(mut self, threshold: f64) -> Self {
        self.limits.backpressure_threshold = Some(threshold);
        self
    }
    /// How admission counts a batch sent to this node: one flow (the default) or its events
    /// (see [`BatchAdmission`](crate::BatchAdmission) for an example).
    pub fn batch_admission(mut self, b: crate::config::BatchAdmission) -> Self {
        self.limits.batch_admission = Some(b);
        self
    }
    /// Time every flow of this node into a histogram
    /// ([`NodeStats::handler_time_buckets`](crate::NodeStats::handler_time_buckets);
    /// `handler_timing` in the configuration). Off by default: each flow then reads no clock
    /// for it.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// use happen::{Context, Event, Happen, NodeOptions};
    ///
    /// let happen = Happen::new();
    /// let node = happen.node_with("timed", NodeOptions::new().handler_timing(true)).await?;
    /// node.on("job", |_e: Event, _c: Context| async {})?;
    /// node.send(&node, Event::new("job", 1)).await?;
    /// let timed: u64 = node.stats().handler_time_buckets.iter().sum();
    /// assert_eq!(timed, 1);
    /// # Ok(()) }
    /// ```
    pub fn handler_timing(mut self, on: bool) -> Self {
        self.limits.handler_timing = Some(on);
        self
    }
    /// Default reply timeout for sends from this node (over `flow.request_timeout_ms`); one
    /// send may set its own with [`Reply::timeout`](crate::Reply::timeout).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> happen::Result<()> {
    /// use std::time::Duration;
    /// use happen::{Context, ErrorKind, Event, Happen, NodeOptions};
    ///
    /// let happen = Happen::new();
    /// let stuck = happen.node("stuck").await?;
    /// stuck.on("ask", |_e: Event, _c: Context| std::future::pending::<()>())?;
    /// let impatient = happen
    ///     .node_with("impatient", NodeOptions::new().request_timeout(Duration::from_millis(50)))
    ///     .await?;
    /// let err = impatient.send(&stuck, Event::new("ask", ())).await.unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::Timeout);
    /// assert_eq!(err.node().unwrap(), "stuck"); // the node that did not answer
    /// # Ok(()) }
    /// ```
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = Some(timeout);
        self
    }
    /// The node's identity and gates: signing key, mode, trust entries, `accept_from`,
    /// policies (over the config's `[security]`; see [`security`](crate::security) for an
    /// example).
    pub fn security(mut self, security: Security) -> Self {
        self.security = Some(security);
        self
    }
    /// Whether the node receives broadcasts (default `true`). A node that only sends — an
    /// API gateway, a producer — can say `false`: it then takes no broadcast, whatever its
    /// handlers, and over a transport such as NATS it does not subscribe to them at all, so
    /// the server and this process do not carry a copy of every broadcast to a node that
    /// would skip it. Direct sends and requests reach it as before.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
    /// use happen::{Context, Event, Happen, NodeOptions};
    ///
    /// static HEARD: AtomicU32 = AtomicU32::new(0);
    /// let happen = Happen::new();
    /// let listener = happen.node("listener").await?;
    /// let gateway = happen
    ///     .node_with("gateway", NodeOptions::new().receive_broadcasts(false))
    ///     .await?;
    /// for node in [&listener, &gateway] {
    ///     node.on("price", |_e: Event, _c: Context| async { HEARD.fetch_add(1, SeqCst); })?;
    /// }
    /// gateway.broadcast(Event::new("price", 42))?;
    /// gateway.send(&gateway, Event::new("price", 43)).await?; // direct: still handled
    /// happen.shutdown(std::time::Duration::from_secs(1)).await; // lets the broadcast finish
    /// assert_eq!(HEARD.load(SeqCst), 2); // the listener's broadcast and the gateway's send
    /// # Ok(()) }
    /// ```
    pub fn receive_broadcasts(mut self, on: bool) -> Self {
        self.deaf_to_broadcasts = !on;
        self
    }
    /// Sequential processing per key (see [`SequentialKey`] for an example).
    pub fn sequential(mut self, key: SequentialKey) -> Self {
        self.sequential = Some(key);
        self
    }
    /// Buffer between this node's streaming flows and their consumers, in items (over
    /// `streams.buffer`; at least 1). [`Emitter::emit`](crate::Emitter::emit) waits while it is full,
    /// [`Emitter::try_emit`](crate::Emitter::try_emit) drops the item (see there for an example).
    pub fn stream_buffer(mut self, items: usize) -> Self {
        self.stream_buffer = Some(items);
        self
    }

    /// Gives the node a value every one of its flows can read with
    /// [`Context::state`](crate::Context::state) (and anyone with [`Node::state`](crate::Node::state)): a
    /// database pool, an HTTP client, a cache. One value per type (a later value of the same
    /// type replaces the earlier one; wrap values in newtypes to keep two of one type apart).
    /// The node holds the value as long as it exists and never clones it; flows get a shared
    /// reference, so mutable state needs its own synchronisation (an atomic, a mutex) inside.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// use std::collections::HashMap;
    /// use std::sync::Mutex;
    /// use happen::{Context, Event, Happen, Json, NodeOptions};
    ///
    /// #[derive(Default)]
    /// struct Db(Mutex<HashMap<String, u64>>);
    ///
    /// #[derive(serde::Deserialize)]
    /// struct Put { key: String, value: u64 }
    ///
    /// async fn put(Json(put): Json<Put>, ctx: Context) -> u64 {
    ///     let db = ctx.state::<Db>().expect("the store node has a Db");
    ///     let mut rows = db.0.lock().unwrap();
    ///     rows.insert(put.key, put.value);
    ///     rows.len() as u64
    /// }
    ///
    /// let happen = Happen::new();
    /// let store = happen.node_with("store", NodeOptions::new().state(Db::default())).await?;
    /// store.on("put", put)?;
    /// let rows = store
    ///     .send(&store, Event::new("put", serde_json::json!({"key": "a", "value": 1})))
    ///     .await?;
    /// assert_eq!(rows, 1);
    /// assert_eq!(store.state::<Db>().unwrap().0.lock().unwrap()["a"], 1);
    /// # Ok(()) }
    /// ```
    pub fn state<T: Send + Sync + 'static>(mut self, value: T) -> Self {
        self.state.insert(value);
        self
    }
}
