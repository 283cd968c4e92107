//! [`Node`]: registers handlers, sends, broadcasts; and its options.

mod batch;
mod closing;
mod context;
pub mod cpu;
mod emitter;
mod fanout;
pub mod flow;
mod handler;
mod instance;
pub mod liner;
mod options;
mod ready;
mod registry;
mod run;
mod state;
mod target;

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::RwLock;
use serde_json::json;
use tokio::sync::watch;

use crate::admission::{Admitted, Effects, Engine, LaneKey, NodeStats, PRESSURE_EVENT, Pressure};
use crate::config::{Config, Limits};
use crate::error::{Error, ErrorKind, Result, panic_message};
use crate::event::pattern::{Class, IntoPattern, Pattern};
use crate::event::{Event, EventType};
use crate::id::{NodeId, SharedStr};
use crate::reply::{Reply, StartsHere};
use crate::security::Gate;
use crate::stream::{BroadcastRole, ReplySender, SlotSender};

pub use batch::{BATCH_EVENT, Batch};
pub use closing::ShutdownReport;
pub(crate) use closing::{close_nodes, hard_deadline};
pub use context::Context;
pub use emitter::Emitter;
pub use fanout::{AllReplies, SendAll};
pub use flow::{Flow, IntoFlow, Json};
pub use handler::Handler;
pub(crate) use instance::{Instance, Scope};
pub use liner::{Liner, line};
pub use options::{NodeOptions, SequentialKey};
pub use ready::Ready;
pub(crate) use registry::validate_node_id;
pub use target::Target;

use flow::ErasedStep;
use registry::{Entry, Registry};
pub(crate) use run::Here;
use run::Runner;
use state::StateMap;

/// A node: an autonomous component that receives events through handlers and emits events.
///
/// Cheap to clone (a handle). Every event arriving at a node runs as its own flow, concurrently
/// with the node's other flows, within the node's admission limits.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
/// use happen::{Context, Event, Happen};
/// use serde_json::json;
///
/// let happen = Happen::new();
/// let greeter = happen.node("greeter").await?;
/// greeter.on("greet", |event: Event, _ctx: Context| async move {
///     json!(format!("hello, {}", event.payload()["name"].as_str().unwrap_or("you")))
/// })?;
///
/// let client = happen.node("client").await?;
/// let reply = client.send(&greeter, Event::new("greet", json!({"name": "ada"}))).await?;
/// assert_eq!(reply, "hello, ada");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Node {
    pub(crate) shared: Arc<NodeShared>,
}

pub(crate) struct NodeShared {
    pub(crate) id: NodeId,
    /// The instance that created the node (routing through its transport).
    instance: Arc<dyn Instance>,
    /// What every node of that instance shares.
    pub(crate) scope: Arc<Scope>,
    registry: RwLock<Registry>,
    pub(crate) engine: Engine,
    runner: Runner,
    request_timeout: Duration,
    max_chain_depth: usize,
    stream_buffer: usize,
    /// `NodeOptions::receive_broadcasts(false)`.
    deaf_to_broadcasts: bool,
    sequential: Option<SequentialKey>,
    state: StateMap,
    /// Bumped by every registration (invalidates the driver's lookup cache).
    registry_version: AtomicU64,
    /// Holders of [`HeldWakes`](crate::transport::HeldWakes): while non-zero, an event that
    /// can start sets `wake_pending` instead of waking a driver; the last holder wakes one.
    wakes_held: AtomicU32,
    wake_pending: AtomicBool,
    /// Signing and the gates before admission; `None` (no cost) when the node has neither.
    security: Option<Box<Gate>>,
    /// What a requester's task keeps when it starts this node's flows itself (see
    /// [`StartsHere`]).
    here: parking_lot::Mutex<Here>,
}

/// Changes of handlers in this process, every node's together: the in-process transport
/// reuses a broadcast's receivers (which nodes take an event type) while this stays the same.
static REGISTRATIONS: AtomicU64 = AtomicU64::new(0);

/// See [`REGISTRATIONS`].
pub(crate) fn registrations() -> u64 {
    REGISTRATIONS.load(Ordering::Acquire)
}

impl StartsHere for NodeShared {
    fn start_here(self: Arc<Self>) -> bool {
        let node = Node { shared: self };
        run::start_for_requester(&node, &node.shared.here)
    }
}

impl Drop for NodeShared {
    fn drop(&mut self) {
        // A parked driver without a spare context holds only a weak reference: wake it so it
        // sees the node is gone.
        self.runner.wake_all();
    }
}

impl Node {
    pub(crate) fn create(
        id: NodeId,
        instance: Arc<dyn Instance>,
        scope: Arc<Scope>,
        config: &Config,
        options: NodeOptions,
    ) -> Result<Node> {
        let limits: Limits = config.concurrency.limits_for(&id).merged(&options.limits);
        limits.validate("node options")?;
        if let Some(items) = options.stream_buffer {
            crate::config::validate_buffer("node options.stream_buffer", items)?;
        }
        let security = Gate::build(&id, &config.security, options.security)?.map(Box::new);
        let shared = NodeShared {
            security,
            runner: Runner::new()?,
            engine: Engine::new(&id, limits, options.sequential.is_some()),
            request_timeout: options
                .request_timeout
                .unwrap_or(config.flow.request_timeout),
            max_chain_depth: config.flow.max_chain_depth,
            stream_buffer: options.stream_buffer.unwrap_or(config.streams.buffer),
            deaf_to_broadcasts: options.deaf_to_broadcasts,
            sequential: options.sequential,
            state: options.state,
            registry: RwLock::new(Registry::default()),
            registry_version: AtomicU64::new(0),
            wakes_held: AtomicU32::new(0),
            wake_pending: AtomicBool::new(false),
            here: parking_lot::Mutex::new(Here::default()),
            id,
            instance,
            scope,
        };
        Ok(Node {
            shared: Arc::new(shared),
        })
    }

    /// The node's id.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// let happen = happen::Happen::new();
    /// let node = happen.node("order-service").await?;
    /// assert_eq!(node.id(), "order-service");
    /// # Ok(()) }
    /// ```
    pub fn id(&self) -> &NodeId {
        &self.shared.id
    }

    /// The value of type `T` the node was given with
    /// [`NodeOptions::state`]; `None` if it has none of that type. Flows read it with
    /// [`Context::state`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// use happen::{Happen, NodeOptions};
    ///
    /// struct BaseUrl(&'static str);
    ///
    /// let happen = Happen::new();
    /// let api = happen.node_with("api", NodeOptions::new().state(BaseUrl("https://example.org"))).await?;
    /// assert_eq!(api.state::<BaseUrl>().unwrap().0, "https://example.org");
    /// assert!(api.state::<String>().is_none());
    /// # Ok(()) }
    /// ```
    pub fn state<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.shared.state.get::<T>()
    }

    /// The node's stored state of type `S`: versioned, kept where the transport keeps state
    /// (NATS JetStream key-value with `happen-nats`, so it survives restarts and other
    /// processes read it; memory in process). Changes made through this handle carry no
    /// causal context; inside a flow use [`Context::stored`]. See
    /// [`Stored`](crate::stored::Stored). (The in-memory [`state`](Node::state) given at
    /// creation is something else: shared values, never stored.)
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// let happen = happen::Happen::new();
    /// let inventory = happen.node("inventory").await?;
    /// let stock = inventory.stored::<u32>();
    /// let v = stock.update(|n| *n += 10).await?;
    /// assert_eq!((v.value, v.revision), (10, 1));
    /// # Ok(()) }
    /// ```
    pub fn stored<S>(&self) -> crate::stored::Stored<S> {
        crate::stored::Stored::new(self.shared.scope.store.clone(), self.id().clone(), None)
    }

    /// The node's effective admission limits: the configuration's default, its node-id
    /// pattern entry, then the node's [`NodeOptions`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// use happen::{Config, Happen, NodeOptions};
    ///
    /// let config = Config::from_toml_str(r#"
    ///     [concurrency.patterns."worker-*"]
    ///     max_concurrent = 4
    ///     queue_limit = 100
    /// "#)?;
    /// let happen = Happen::with_config(config)?;
    /// let worker = happen.node_with("worker-1", NodeOptions::new().queue_limit(10)).await?;
    /// assert_eq!(worker.limits().max_concurrent, 4); // from the pattern
    /// assert_eq!(worker.limits().queue_limit, 10); // from the options
    /// # Ok(()) }
    /// ```
    pub fn limits(&self) -> &Limits {
        self.shared.engine.limits()
    }

    /// Registers `handler` for events matching `pattern`.
    ///
    /// When several registered patterns match an event, only the most specific one's handler
    /// runs (see [`pattern`](crate::pattern)). Each pattern can be registered once per node:
    /// a second registration of the same pattern would never run, so it is an error (and the
    /// first registration stays in effect).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// use happen::{Context, ErrorKind, Event, Happen};
    ///
    /// let happen = Happen::new();
    /// let orders = happen.node("orders").await?;
    /// orders.on("order.*", |_e: Event, _c: Context| async { "any order event" })?;
    /// orders.on("order.created", |_e: Event, _c: Context| async { "created" })?; // more specific
    ///
    /// let err = orders
    ///     .on("order.created", |_e: Event, _c: Context| async { "again" })
    ///     .unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::DuplicateHandler);
    ///
    /// assert_eq!(orders.send(&orders, Event::new("order.created", ())).await?, "created");
    /// assert_eq!(orders.send(&orders, Event::new("order.paid", ())).await?, "any order event");
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// - [`ErrorKind::InvalidPattern`] if `pattern` is an invalid pattern string;
    /// - [`ErrorKind::DuplicateHandler`] if this node already has a handler for the same
    ///   pattern: the same exact type, the same wildcards or alternatives (in any order), the
    ///   same [`domain`](crate::pattern::domain), or a clone of the same predicate
    ///   [`Pattern`](crate::pattern::Pattern). Different patterns that overlap are fine.
    pub fn on<P, H, Args>(&self, pattern: P, handler: H) -> Result<()>
    where
        P: IntoPattern,
        H: Handler<Args>,
        Args: 'static,
    {
        self.register(pattern.into_pattern()?, liner::erase(handler))
    }

    /// Registers one handler on every node of `nodes` (Happen's `[n1, n2].on(...)`): each
    /// node runs its own flows with it, and [`Context::node_id`] tells a flow which node it
    /// runs on. Each node's own liners ([`Node::line`]) wrap it there.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// use happen::{Context, Event, Happen, Node};
    ///
    /// let happen = Happen::new();
    /// let eu = happen.node("pricing-eu").await?;
    /// let us = happen.node("pricing-us").await?;
    /// Node::on_all([&eu, &us], "quote", |_e: Event, ctx: Context| async move {
    ///     format!("quoted by {}", ctx.node_id())
    /// })?;
    /// assert_eq!(eu.send(&us, Event::new("quote", ())).await?, "quoted by pricing-us");
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`on`](Node::on). All nodes are checked first: if one of them already has a
    /// handler for the same pattern, the handler is registered on none of them.
    pub fn on_all<'n, P, H, Args>(
        nodes: impl IntoIterator<Item = &'n Node>,
        pattern: P,
        handler: H,
    ) -> Result<()>
    where
        P: IntoPattern,
        H: Handler<Args>,
        Args: 'static,
    {
        let pattern = pattern.into_pattern()?;
        let nodes: Vec<&Node> = nodes.into_iter().collect();
        if let Some(taken) = nodes.iter().find(|n| n.has_handler_for(&pattern)) {
            return Err(Error::duplicate_handler(taken.id(), &pattern));
        }
        let step = liner::erase(handler);
        for node in nodes {
            node.register(pattern.clone(), step.clone())?;
        }
        Ok(())
    }

    /// Does this node have a handler registered for exactly `pattern`?
    fn has_handler_for(&self, pattern: &Pattern) -> bool {
        let reg = self.shared.registry.read();
        match pattern.as_exact() {
            Some(exact) => reg.exact.contains_key(exact),
            None => reg.ordered.iter().any(|e| e.pattern.same_as(pattern)),
        }
    }

    fn register(&self, pattern: Pattern, step: Arc<dyn ErasedStep>) -> Result<()> {
        let mut reg = self.shared.registry.write();
        let step = liner::wrap(step, &reg.liners);
        reg.streaming |= step.is_streaming();
        if let Some(exact) = pattern.as_exact() {
            if reg.exact.contains_key(exact) {
                return Err(Error::duplicate_handler(self.id(), &pattern));
            }
            reg.exact.insert(exact.into(), step);
            self.registered();
            return Ok(());
        }
        if reg.ordered.iter().any(|e| e.pattern.same_as(&pattern)) {
            return Err(Error::duplicate_handler(self.id(), &pattern));
        }
        debug_assert!(pattern.specificity().0 != Class::Exact);
        registry::insert_ranked(&mut reg.ordered, Entry { pattern, step }, |e| &e.pattern);
        self.registered();
        Ok(())
    }

    /// Wraps every handler of this node in `liner`: those registered already and those
    /// registered later (see [`liner`] for what a liner may do). Node liners are outside a
    /// handler's own ([`line`](crate::line())); a node liner added later is outside the earlier
    /// ones. A node without liners pays nothing for them.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// use std::sync::Arc;
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// use happen::liner::{Liner, Next};
    /// use happen::{Context, Event, Happen};
    ///
    /// let seen = Arc::new(AtomicUsize::new(0));
    /// let counting = {
    ///     let seen = seen.clone();
    ///     Liner::new(move |event: Event, ctx: Context, next: Next| {
    ///         seen.fetch_add(1, Ordering::Relaxed);
    ///         next.run(event, ctx)
    ///     })
    /// };
    ///
    /// let happen = Happen::new();
    /// let node = happen.node("n").await?;
    /// node.on("before", |_e: Event, _c: Context| async {})?;
    /// node.line(counting);
    /// node.on("after", |_e: Event, _c: Context| async {})?; // wrapped too
    /// node.send(&node, Event::new("before", ())).await?;
    /// node.send(&node, Event::new("after", ())).await?;
    /// assert_eq!(seen.load(Ordering::Relaxed), 2);
    /// # Ok(()) }
    /// ```
    pub fn line(&self, liner: Liner) {
        let mut reg = self.shared.registry.write();
        let one = std::slice::from_ref(&liner);
        for step in reg.exact.values_mut() {
            *step = liner::wrap(step.clone(), one);
        }
        for entry in reg.ordered.iter_mut() {
            entry.step = liner::wrap(entry.step.clone(), one);
        }
        reg.liners.push(liner);
        self.registered();
    }

    /// Sends `event` to `target` and returns a [`Reply`] for the outcome.
    ///
    /// The event is dispatched at once (the call does not wait); await the [`Reply`] for the
    /// flow's final value, read it as a stream with [`Reply::into_stream`], or drop it to fire
    /// and forget. `target` is a [`Node`] handle or a node id (`&str`, `String`, [`NodeId`]).
    ///
    /// The event starts a new transaction (fresh correlation id); to continue the transaction
    /// of the event being handled, send through the flow's [`Context::send`](crate::Context::send).
    /// Errors (unknown node, full queue, handler error, ...) arrive through the [`Reply`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// use happen::{Context, ErrorKind, Event, Happen, Json};
    /// use serde_json::json;
    ///
    /// #[derive(serde::Deserialize)]
    /// struct Quote { price: f64 }
    ///
    /// let happen = Happen::new();
    /// let pricing = happen.node("pricing").await?;
    /// pricing.on("quote", |Json(qty): Json<u32>, _ctx: Context| async move {
    ///     json!({"price": f64::from(qty) * 2.5})
    /// })?;
    /// let shop = happen.node("shop").await?;
    ///
    /// let quote: Quote = shop.send(&pricing, Event::new("quote", 4)).decode().await?; // by handle
    /// assert_eq!(quote.price, 10.0);
    /// let value = shop.send("pricing", Event::new("quote", 2)).await?; // by id
    /// assert_eq!(value["price"], 5.0);
    ///
    /// let err = shop.send("nobody", Event::new("quote", 1)).await.unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::UnknownNode);
    /// # Ok(()) }
    /// ```
    pub fn send<'t>(&self, target: impl Into<Target<'t>>, event: Event) -> Reply {
        self.send_inner(target.into(), event, None)
    }

    /// Sends without a reply path: admission errors are returned at once; failures of the
    /// flow itself are logged and counted at the target. The cheapest way to fire and forget.
    ///
    /// Like [`send`](Node::send), the event starts a new transaction. Over a transport other
    /// than the in-process one, only errors known locally come back (a remote node's full
    /// queue does not).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// use happen::{Context, ErrorKind, Event, Happen};
    ///
    /// let happen = Happen::new();
    /// let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    /// let audit = happen.node("audit").await?;
    /// audit.on("log", move |event: Event, _c: Context| {
    ///     let tx = tx.clone();
    ///     async move { tx.send(event.payload().clone()).ok(); }
    /// })?;
    /// let web = happen.node("web").await?;
    ///
    /// web.tell(&audit, Event::new("log", "signed in"))?; // returns at once
    /// assert_eq!(rx.recv().await.unwrap(), "signed in"); // the handler ran
    ///
    /// let err = web.tell("nobody", Event::new("log", ())).unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::UnknownNode);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`ErrorKind::UnknownNode`], [`ErrorKind::QueueFull`], [`ErrorKind::ShutDown`],
    /// [`ErrorKind::InvalidEvent`], [`ErrorKind::ChainTooDeep`].
    pub fn tell<'t>(&self, target: impl Into<Target<'t>>, event: Event) -> Result<()> {
        let event = self.prepare(event, None)?;
        self.dispatch(target.into(), event, None)
    }

    /// Resolves once `target` is not under backpressure, so that a producer that awaits it
    /// before each send never hits `QueueFull` (the seed's "observe and honour"). Waits at
    /// most the node's request timeout; set another limit with [`Ready::timeout`] on the
    /// returned future. Resolves at once for a target that is not under pressure, and for a
    /// target whose pressure nobody knows (an unknown id, a remote node the transport cannot
    /// watch): the send that follows says what is wrong.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// use std::time::Duration;
    /// use happen::{Context, Event, Happen, NodeOptions};
    ///
    /// let happen = Happen::new();
    /// let slow = happen
    ///     .node_with("slow", NodeOptions::new().max_concurrent(1).queue_limit(10))
    ///     .await?;
    /// slow.on("job", |_e: Event, _c: Context| async {})?;
    /// let producer = happen.node("producer").await?;
    /// for i in 0..100 {
    ///     // Honour the backpressure: wait while 8 (0.8 × 10) or more events are queued.
    ///     producer.ready(&slow).timeout(Duration::from_secs(5)).await?;
    ///     producer.tell(&slow, Event::new("job", i))?; // never `QueueFull`
    /// }
    /// let stats = slow.stats();
    /// assert_eq!((stats.accepted, stats.rejected), (100, 0));
    /// assert!(stats.peak_queued <= 8);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// The future fails with [`ErrorKind::Timeout`] (naming the target) if the target stays
    /// under pressure for the whole wait.
    ///
    /// # Panics
    /// Awaiting it panics outside a Tokio runtime with timers enabled, if it has to wait.
    ///
    /// # Cancel safety
    /// Cancel-safe: the future only watches the target's state and sends nothing, so dropping
    /// it (for example when another `select!` branch wins) has no effect.
    pub fn ready<'t>(&self, target: impl Into<Target<'t>>) -> Ready {
        let target = target.into();
        Ready::new(
            self.pressure_of(&target),
            target.id().clone(),
            self.shared.request_timeout,
        )
    }

    /// Broadcasts `event` to every node with a matching handler (this node included if it
    /// has one). Each receiver runs its own flow; a receiver whose queue is full rejects the
    /// event (logged and counted at that receiver), which never blocks the broadcaster.
    /// Nobody answers a broadcast: results go nowhere, failures are logged and counted at the
    /// receiver. If one receiver's handler streams (takes an [`Emitter`]), the others read its
    /// items with [`Context::items`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// use happen::{Context, Event, Happen};
    ///
    /// let happen = Happen::new();
    /// let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    /// for id in ["email", "sms"] {
    ///     let node = happen.node(id).await?;
    ///     let tx = tx.clone();
    ///     node.on("user.signed_up", move |_e: Event, ctx: Context| {
    ///         let tx = tx.clone();
    ///         async move { tx.send(ctx.node_id().to_string()).ok(); }
    ///     })?;
    /// }
    /// let billing = happen.node("billing").await?; // no handler for the type
    /// let accounts = happen.node("accounts").await?;
    ///
    /// accounts.broadcast(Event::new("user.signed_up", "ada"))?;
    /// let mut notified = vec![rx.recv().await.unwrap(), rx.recv().await.unwrap()];
    /// notified.sort();
    /// assert_eq!(notified, ["email", "sms"]);
    /// assert_eq!(billing.stats().accepted, 0);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`ErrorKind::InvalidEvent`] for an invalid event, [`ErrorKind::ShutDown`] after shutdown,
    /// [`ErrorKind::Transport`] if the transport cannot publish.
    pub fn broadcast(&self, event: Event) -> Result<()> {
        self.broadcast_inner(event, None)
    }

    /// Removes this node from its instance: it stops taking events at once (sends by id then
    /// fail with [`ErrorKind::UnknownNode`], sends through a handle with
    /// [`ErrorKind::ShutDown`]), running and queued flows may finish for up to `grace`,
    /// then what is left is cancelled (its senders get `ShutDown`). The id can be used for a
    /// new node afterwards.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// use std::time::Duration;
    /// use happen::{ErrorKind, Event, Happen};
    ///
    /// let happen = Happen::new();
    /// let worker = happen.node("worker").await?;
    /// worker.close(Duration::from_secs(5)).await;
    /// assert!(happen.find_node("worker").is_none());
    /// let err = worker.send("worker", Event::new("ping", ())).await.unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::UnknownNode);
    /// let again = happen.node("worker").await?; // the id is free again
    /// # let _ = again; Ok(()) }
    /// ```
    ///
    /// Like [`Happen::shutdown`](crate::Happen::shutdown), it returns in time whatever the
    /// transport does and reports what it gave up in a [`ShutdownReport`].
    ///
    /// # Panics
    /// Panics if polled outside a Tokio runtime with timers enabled (the grace period is a
    /// Tokio timer).
    ///
    /// # Cancel safety
    /// The node stops taking events at the first poll; if the future is dropped before it
    /// resolves, its remaining flows keep running until they finish.
    pub async fn close(&self, grace: Duration) -> ShutdownReport {
        let until = tokio::time::Instant::now() + grace;
        let hard = closing::hard_deadline(until, grace);
        let instance = &self.shared.instance;
        let nodes = std::slice::from_ref(self);
        if instance.unregister(self) {
            // The transport stops routing here first; the node stays open meanwhile, so
            // what reached it is still answered.
            closing::close_nodes(nodes, Some(&|n| instance.detach(n)), until, hard).await
        } else {
            closing::close_nodes(nodes, None, until, hard).await
        }
    }

    /// A snapshot of the node's counters (see [`NodeStats`] for what each one counts).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// use happen::{Context, Error, Event, Happen};
    ///
    /// let happen = Happen::new();
    /// let node = happen.node("n").await?;
    /// node.on("ok", |_e: Event, _c: Context| async {})?;
    /// node.on("fail", |_e: Event, _c: Context| async { Err::<(), _>(Error::handler("no")) })?;
    /// node.send(&node, Event::new("ok", ())).await?;
    /// node.send(&node, Event::new("ok", ())).await?;
    /// node.send(&node, Event::new("fail", ())).await.unwrap_err();
    ///
    /// let stats = node.stats();
    /// assert_eq!((stats.accepted, stats.completed, stats.failed), (3, 2, 1));
    /// assert_eq!((stats.rejected, stats.queued), (0, 0));
    /// # Ok(()) }
    /// ```
    pub fn stats(&self) -> NodeStats {
        let mut stats = self.shared.engine.stats();
        if let Some(gate) = &self.shared.security {
            stats.denied = gate.denied();
        }
        stats
    }

    /// The node's current backpressure state (with the number of events queued now).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// use happen::{Context, Event, Happen, NodeOptions};
    ///
    /// let happen = Happen::new();
    /// let options = NodeOptions::new().max_concurrent(1).queue_limit(4).backpressure_threshold(0.5);
    /// let node = happen.node_with("n", options).await?;
    /// node.on("job", |_e: Event, _c: Context| async {})?;
    /// assert!(!node.pressure().under_pressure);
    ///
    /// for i in 0..3 {
    ///     node.tell(&node, Event::new("job", i))?; // one runs, two wait: 0.5 × 4 = 2 queued
    /// }
    /// let p = node.pressure();
    /// assert!(p.under_pressure);
    /// assert_eq!((p.queued, p.queue_limit), (2, 4));
    /// # Ok(()) }
    /// ```
    pub fn pressure(&self) -> Pressure {
        self.shared.engine.pressure_now()
    }

    /// A receiver of this node's pressure changes, in order (they are also broadcast as
    /// [`PRESSURE_EVENT`](crate::PRESSURE_EVENT) events). Its value's `queued` is the count
    /// when the state last changed; [`pressure`](Node::pressure) reads the count now.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// use happen::{Context, Event, Happen, NodeOptions};
    ///
    /// let happen = Happen::new();
    /// let options = NodeOptions::new().max_concurrent(1).queue_limit(4).backpressure_threshold(0.5);
    /// let node = happen.node_with("n", options).await?;
    /// node.on("job", |_e: Event, _c: Context| async {})?;
    /// let mut pressure = node.watch_pressure();
    /// for i in 0..3 {
    ///     node.tell(&node, Event::new("job", i))?;
    /// }
    /// assert!(pressure.has_changed().unwrap());
    /// assert!(pressure.borrow_and_update().under_pressure);
    /// pressure.wait_for(|p| !p.under_pressure).await.unwrap(); // the flows ran: relief
    /// # Ok(()) }
    /// ```
    ///
    /// # Deadlocks
    /// A pressure change is published while the node's admission lock is held. Do not keep a
    /// `borrow()` of the receiver alive while sending to this node: a send that changes the
    /// pressure then waits for the borrow to end (forever, on the same thread), and the node
    /// admits nothing meanwhile. Copy the value out (`*rx.borrow()`; `Pressure` is `Copy`).
    pub fn watch_pressure(&self) -> watch::Receiver<Pressure> {
        self.shared.engine.watch_pressure()
    }

    // ---- crate internals ------------------------------------------------------------------

    pub(crate) fn engine(&self) -> &Engine {
        &self.shared.engine
    }

    pub(crate) fn runner(&self) -> &Runner {
        &self.shared.runner
    }

    /// Runs `f` on the registry inside a panic boundary: pattern predicates are user code.
    /// `Err` with the panic message if one panicked.
    fn with_registry<T>(&self, f: impl FnOnce(&Registry) -> T) -> std::result::Result<T, String> {
        let registry = self.shared.registry.read();
        catch_unwind(AssertUnwindSafe(|| f(&registry))).map_err(|p| panic_message(&*p))
    }

    /// For callers that only route (broadcasts): a panicking predicate is logged and treated
    /// as "no match".
    fn routing<T>(&self, event_type: &str, f: impl FnOnce(&Registry) -> T, no: T) -> T {
        self.with_registry(f).unwrap_or_else(|panic| {
            tracing::warn!(node = %self.id(), event_type, panic, "a pattern predicate panicked; treated as not matching");
            no
        })
    }

    /// The handler for `event_type`; `Err` with the panic message if a predicate panicked.
    pub(crate) fn try_lookup(
        &self,
        event_type: &str,
    ) -> std::result::Result<Option<Arc<dyn ErasedStep>>, String> {
        self.with_registry(|r| r.lookup(event_type))
    }

    /// The handler for `event_type`, for routing (see `routing`).
    pub(crate) fn lookup(&self, event_type: &str) -> Option<Arc<dyn ErasedStep>> {
        self.routing(event_type, |r| r.lookup(event_type), None)
    }

    pub(crate) fn registry_version(&self) -> u64 {
        self.shared.registry_version.load(Ordering::Acquire)
    }

    /// Counts a change of this node's handlers (under its registry's write lock).
    fn registered(&self) {
        self.shared.registry_version.fetch_add(1, Ordering::AcqRel);
        REGISTRATIONS.fetch_add(1, Ordering::AcqRel);
    }

    /// Does the handler for `event_type` stream? (For routing: see `routing`.)
    pub(crate) fn streams(&self, event_type: &str) -> bool {
        self.routing(event_type, |r| r.streams(event_type), false)
    }

    /// Does a handler match `event_type`? (For routing: see `routing`.)
    pub(crate) fn accepts(&self, event_type: &str) -> bool {
        self.routing(event_type, |r| r.matches(event_type), false)
    }

    pub(crate) fn stream_buffer(&self) -> usize {
        self.shared.stream_buffer
    }

    /// Does the node take broadcasts (`NodeOptions::receive_broadcasts`)?
    pub(crate) fn receives_broadcasts(&self) -> bool {
        !self.shared.deaf_to_broadcasts
    }

    pub(crate) fn broadcast_buffer(&self) -> usize {
        self.shared.scope.broadcast_buffer
    }

    pub(crate) fn max_chain_depth(&self) -> usize {
        self.shared.max_chain_depth
    }

    /// Admits an event into this node (the in-process delivery path).
    #[inline]
    pub(crate) fn admit(
        &self,
        event: Event,
        reply: Option<SlotSender>,
        broadcast: Option<BroadcastRole>,
    ) -> Result<(), Error> {
        if let Some(gate) = &self.shared.security {
            // before admission: a refused event takes no slot and no queue place
            gate.check(&event)?;
        }
        let engine = &self.shared.engine;
        let lane = match &self.shared.sequential {
            Some(key) => Some(self.lane_key(key, &event)?),
            None => None,
        };
        let weight = if engine.weighs_batches() {
            batch::weight(&event)
        } else {
            1
        };
        let effects = engine.admit(Admitted {
            event,
            reply,
            enqueued: None,
            broadcast,
            lane,
            weight,
        })?;
        self.apply(effects);
        Ok(())
    }

    /// Computes the event's lane key; the key function is user code, so a panic fails only
    /// this event.
    fn lane_key(&self, key: &SequentialKey, event: &Event) -> Result<LaneKey> {
        catch_unwind(AssertUnwindSafe(|| match key {
            SequentialKey::EventType => SharedStr::from(event.event_type().to_owned()),
            SequentialKey::CorrelationId => SharedStr::from(event.correlation_id().to_string()),
            SequentialKey::Custom(f) => SharedStr::from(f(event)),
        }))
        .map_err(|panic| {
            // Refused at admission (never accepted), like a full queue.
            self.shared.engine.count_rejected();
            Error::panic(
                self.id(),
                &format!(
                    "in the node's sequential key function: {}",
                    panic_message(&*panic)
                ),
            )
        })
    }

    /// Does what a change of the admission state asks for.
    #[inline(always)]
    pub(crate) fn apply(&self, effects: Effects) {
        if effects.start() {
            self.start_drivers();
        }
        if effects.wake_all() {
            self.shared.runner.wake_all();
        }
        if effects.announce() {
            for (seq, p) in self.shared.engine.take_announcements() {
                self.announce_pressure(seq, p);
            }
        }
    }

    /// Makes sure a driver will take the events that can start, now or, while a transport
    /// holds the wakes ([`hold_wakes`](Node::hold_wakes)), when the last holder lets go.
    #[inline]
    fn start_drivers(&self) {
        let shared = &self.shared;
        if shared.wakes_held.load(Ordering::SeqCst) != 0 {
            shared.wake_pending.store(true, Ordering::SeqCst);
            // The last holder may have let go since the load: then the wake is ours.
            if shared.wakes_held.load(Ordering::SeqCst) != 0
                || !shared.wake_pending.swap(false, Ordering::SeqCst)
            {
                return;
            }
        }
        shared.runner.notify(self);
    }

    /// Starts up to `budget` flows that can start now in the calling task (see
    /// [`Inbox::run_here`](crate::transport::Inbox::run_here)); with wakes held, a wake left
    /// pending is dropped when nothing is left to start.
    pub(crate) fn run_here(&self, here: &mut Here, budget: usize) -> usize {
        let started = run::run_here_caught(self, here, budget, run::StartLock::Wait);
        let shared = &self.shared;
        // Swapped before the check: an event counted in after the check sets it again itself.
        if shared.wake_pending.swap(false, Ordering::SeqCst) && !self.engine().nothing_to_start() {
            shared.wake_pending.store(true, Ordering::SeqCst);
        }
        started
    }

    /// Holds back driver wakes until [`release_wakes`](Node::release_wakes).
    pub(crate) fn hold_wakes(&self) {
        self.shared.wakes_held.fetch_add(1, Ordering::SeqCst);
    }

    /// Ends one [`hold_wakes`](Node::hold_wakes); the last one wakes a driver if an event
    /// that can start arrived meanwhile.
    pub(crate) fn release_wakes(&self) {
        if self.shared.wakes_held.fetch_sub(1, Ordering::SeqCst) == 1
            && self.shared.wake_pending.swap(false, Ordering::SeqCst)
        {
            self.shared.runner.notify(self);
        }
    }

    /// A flow gave its slot back.
    #[inline]
    pub(crate) fn release(&self, lane: Option<LaneKey>) {
        let effects = self.shared.engine.release(lane);
        self.apply(effects);
    }

    /// Closes admission; with `cancel`, everything queued, ready or waiting in its own task
    /// is cancelled (its senders get `ShutDown`).
    pub(crate) fn close_now(&self, cancel: bool) {
        let effects = self.shared.engine.close(cancel);
        if cancel {
            self.shared.runner.abort_waiting();
        }
        // (held by a requester starting a flow: it drops the spare itself, seeing the close)
        if let Some(mut here) = self.shared.here.try_lock() {
            here.forget_spare();
        }
        self.apply(effects);
    }

    /// A flow for `event` failed and nobody awaited its reply: counted at the sending node
    /// when it lives in this instance (it made the fire-and-forget send), else here.
    pub(crate) fn flow_failure_unobserved(&self, event: &Event, err: &Error) {
        match self.shared.instance.local_node(event.sender()) {
            Some(sender) => sender.unobserved_failure(err),
            None => self.unobserved_failure(err),
        }
    }

    /// Is `err` a refusal of this node's security gate (counted and logged there)?
    pub(crate) fn refused_by_gate(&self, err: &Error) -> bool {
        self.shared.security.is_some()
            && matches!(
                err.kind(),
                ErrorKind::Unauthenticated | ErrorKind::Forbidden | ErrorKind::InvalidEvent
            )
    }

    pub(crate) fn unobserved_failure(&self, err: &Error) {
        self.shared.engine.unobserved().record(err);
    }

    fn prepare(&self, event: Event, parent: Option<&Event>) -> Result<Event> {
        let mut event = event.stamp(self.id(), parent)?;
        if let Some(key) = self.shared.security.as_ref().and_then(|g| g.signer()) {
            event = crate::security::sign(event, key);
        }
        let max = self.shared.max_chain_depth;
        if event.path().len() > max {
            return Err(Error::new(
                ErrorKind::ChainTooDeep,
                format!("causal chain of event type `{}` passed through more than {max} nodes; an event loop between nodes? (raise flow.max_chain_depth if not)", event.event_type()),
            )
            .with_limit(max));
        }
        Ok(event)
    }

    /// Sends through the instance: a node handle of the same in-process instance is admitted
    /// directly (no dynamic call); everything else goes through the transport.
    #[inline]
    fn dispatch(&self, target: Target<'_>, event: Event, reply: Option<ReplySender>) -> Result<()> {
        let direct = self.direct_target(&target);
        self.dispatch_to(direct, target, event, reply)
    }

    /// [`dispatch`](Node::dispatch) with `direct`, the target's [`direct_target`](Node::direct_target), known.
    #[inline]
    fn dispatch_to(
        &self,
        direct: Option<&Node>,
        target: Target<'_>,
        event: Event,
        reply: Option<ReplySender>,
    ) -> Result<()> {
        self.shared
            .scope
            .check_open(|| instance::closed_send(&target))?;
        match direct {
            Some(node) => node.admit(event, reply.map(|r| r.0), None),
            None => self.shared.instance.dispatch(target, event, reply),
        }
    }

    /// `target` when it is a node handle of this in-process instance (sent to directly).
    #[inline]
    fn direct_target<'t>(&self, target: &Target<'t>) -> Option<&'t Node> {
        let scope = &self.shared.scope;
        target
            .node()
            .filter(|n| scope.direct && Arc::ptr_eq(&n.shared.scope, scope))
    }

    /// The backpressure state of `target`, if known.
    fn pressure_of(&self, target: &Target<'_>) -> Option<watch::Receiver<Pressure>> {
        match self.direct_target(target) {
            Some(n) => Some(n.watch_pressure()),
            None => self.shared.instance.pressure_of(target),
        }
    }

    pub(crate) fn send_inner(
        &self,
        target: Target<'_>,
        event: Event,
        parent: Option<&Event>,
    ) -> Reply {
        match self.prepare(event, parent) {
            Ok(event) => self.send_prepared(target, event),
            Err(e) => self.failed_reply(e),
        }
    }

    /// A reply that failed before the event was sent.
    fn failed_reply(&self, err: Error) -> Reply {
        Reply::failed(err, self.shared.request_timeout, self.unobserved())
    }

    /// Sends a stamped event (see `prepare`).
    fn send_prepared(&self, target: Target<'_>, event: Event) -> Reply {
        let timeout = self.shared.request_timeout;
        let (tx, rx) = crate::stream::slot();
        if !self.shared.scope.direct {
            // Through another transport the answer is never immediate; the target is named
            // if it times out.
            tx.nudge(target.id());
        }
        let direct = self.direct_target(&target);
        // A target in this process: the requester's task may start its flow (`StartsHere`).
        let here = direct.map(|n| n.shared.clone() as Arc<dyn StartsHere>);
        match self.dispatch_to(direct, target, event, Some(ReplySender(tx))) {
            Ok(()) => Reply::waiting(rx, timeout, here),
            Err(e) => Reply::failed(e, timeout, self.unobserved()),
        }
    }

    pub(crate) fn broadcast_inner(&self, event: Event, parent: Option<&Event>) -> Result<()> {
        let event = self.prepare(event, parent)?;
        self.shared.scope.check_open(instance::closed_broadcast)?;
        self.shared.instance.broadcast(event)
    }

    fn unobserved(&self) -> Arc<crate::admission::Unobserved> {
        self.shared.engine.unobserved().clone()
    }

    /// Announces a pressure change as a `node.pressure` broadcast (watchers were told under
    /// the engine lock). Events from different threads may arrive out of order; `seq` orders them.
    pub(crate) fn announce_pressure(&self, seq: u64, p: Pressure) {
        tracing::debug!(node = %self.id(), under_pressure = p.under_pressure, queued = p.queued, "pressure changed");
        let event = Event::new(
            EventType::from_static(PRESSURE_EVENT),
            json!({
                "nodeId": self.id().as_str(),
                "level": if p.under_pressure { "high" } else { "normal" },
                "underPressure": p.under_pressure,
                "queued": p.queued,
                "queueLimit": p.queue_limit,
                "seq": seq,
            }),
        );
        if let Ok(event) = event.stamp(self.id(), None)
            && !self.shared.scope.is_closed()
        {
            let _ = self.shared.instance.broadcast(event);
        }
    }
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Node")
            .field("id", self.id())
            .finish_non_exhaustive()
    }
}
