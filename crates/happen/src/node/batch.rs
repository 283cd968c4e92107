//! Batches: many events delivered to one handler call ([`Node::on_batch`],
//! [`Node::send_batch`]).
//!
//! A batch travels as one carrier event of type [`BATCH_EVENT`] whose payload is the events
//! in wire form, each with its own causal context: admission counts it as one flow, and the
//! target's batch step unpacks it.

use std::fmt;
use std::future::Future;
use std::ops::Deref;
use std::sync::{Arc, OnceLock};

use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::Value;

use super::context::Context;
use super::flow::{ErasedStep, Flow, IntoFlow};
use super::liner::continuum;
use super::{Node, Target};
use crate::error::{Error, ErrorKind, Result};
use crate::event::pattern::{IntoPattern, Pattern};
use crate::event::{Event, EventType, now_ms};
use crate::reply::Reply;

/// The event type of a batch's carrier event (reserved: a handler registered for it is
/// never called for batches).
pub const BATCH_EVENT: &str = "happen.batch";

/// The events of a batch, in the order they were sent, as one handler call gets them (see
/// [`Node::on_batch`]). Derefs to `[Event]`; each event keeps its own causal context (id,
/// sender, correlation id).
#[derive(Clone)]
pub struct Batch {
    events: Vec<Event>,
    received_at: u64,
}

impl Batch {
    /// When the batch's flow started at the receiving node, in milliseconds since the Unix
    /// epoch (the clock of [`Causal::timestamp`](crate::Causal::timestamp)).
    pub fn received_at(&self) -> u64 {
        self.received_at
    }

    /// The events, owned.
    pub fn into_events(self) -> Vec<Event> {
        self.events
    }
}

impl Deref for Batch {
    type Target = [Event];

    fn deref(&self) -> &[Event] {
        &self.events
    }
}

impl fmt::Debug for Batch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batch")
            .field("len", &self.events.len())
            .field("received_at", &self.received_at)
            .finish_non_exhaustive()
    }
}

pub(super) trait BatchFn: Send + Sync + 'static {
    fn call(&self, batch: Batch, ctx: Context) -> BoxFuture<'static, Result<Flow>>;
}

struct FnBatch<F>(F);

impl<F, Fut, R> BatchFn for FnBatch<F>
where
    F: Fn(Batch, Context) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = R> + Send + 'static,
    R: IntoFlow + 'static,
{
    fn call(&self, batch: Batch, ctx: Context) -> BoxFuture<'static, Result<Flow>> {
        (self.0)(batch, ctx).map(IntoFlow::into_flow).boxed()
    }
}

/// A registered batch handler.
pub(super) struct BatchEntry {
    pub(super) pattern: Pattern,
    pub(super) handler: Arc<dyn BatchFn>,
}

/// What `event` weighs at a node whose admission counts a batch's events: a carrier its
/// events (at least one), anything else one.
pub(super) fn weight(event: &Event) -> u32 {
    if event.event_type() != BATCH_EVENT {
        return 1;
    }
    let events = event.payload().as_array().map_or(1, Vec::len);
    u32::try_from(events.max(1)).unwrap_or(u32::MAX)
}

/// The step every node runs for a carrier event.
pub(super) fn batch_step() -> Arc<dyn ErasedStep> {
    static STEP: OnceLock<Arc<dyn ErasedStep>> = OnceLock::new();
    STEP.get_or_init(|| Arc::new(BatchStep)).clone()
}

struct BatchStep;

impl ErasedStep for BatchStep {
    fn call(&self, carrier: Event, ctx: Context) -> BoxFuture<'static, Result<Flow>> {
        Box::pin(run_batch(carrier, ctx))
    }

    fn is_streaming(&self) -> bool {
        false
    }
}

async fn run_batch(carrier: Event, ctx: Context) -> Result<Flow> {
    let received_at = now_ms();
    let events: Vec<Event> = serde_json::from_value(carrier.payload().clone()).map_err(|e| {
        Error::invalid_event(format_args!(
            "a `{BATCH_EVENT}` event must carry an array of events: {e}"
        ))
    })?;
    let Some(first) = events.first() else {
        return Ok(Flow::Done(Value::Null));
    };
    let node = ctx.node().clone();
    if let Some((pattern, handler)) = node.batch_handler(first.event_type()) {
        if let Some(odd) = events.iter().find(|e| !pattern.matches(e.event_type())) {
            return Err(Error::invalid_event(format_args!(
                "event type `{}` in a batch for the batch handler `{pattern}` of node `{}`: every event of a batch must match its handler's pattern; send other types in another batch",
                odd.event_type(),
                node.id()
            )));
        }
        let batch = Batch {
            events,
            received_at,
        };
        return handler.call(batch, ctx).await;
    }
    // No batch handler: the single-event handler runs once per event, in order.
    let mut values = Vec::with_capacity(events.len());
    for event in events {
        let Some(step) = node.lookup(event.event_type()) else {
            return Err(Error::no_handler(node.id(), event.event_type()));
        };
        let first = step.call(event.clone(), ctx.clone());
        values.push(continuum(first, event, ctx.clone()).await?);
    }
    Ok(Flow::Done(Value::Array(values)))
}

impl Node {
    /// Registers `handler` for batches whose events match `pattern`: one call gets the whole
    /// [`Batch`] sent with [`send_batch`](Node::send_batch), and its return value is the
    /// batch's reply. Every event of a batch must match the pattern (else the batch fails
    /// with [`ErrorKind::InvalidEvent`] and the handler is not called); the batch handler is
    /// chosen by the first event's type.
    ///
    /// A node without a batch handler for a batch still takes it: its single-event handler
    /// runs once per event, in order, and the reply is the array of their values. An empty
    /// batch is answered `null` without a call. Node liners ([`Node::line`]) wrap single-event
    /// handlers, so the per-event calls, but not a batch handler.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// use happen::{Batch, Context, Event, Happen};
    ///
    /// let happen = Happen::new();
    /// let store = happen.node("store").await?;
    /// store.on_batch("sensor.reading", |batch: Batch, _ctx: Context| async move {
    ///     let sum: f64 = batch.iter().filter_map(|e| e.payload().as_f64()).sum();
    ///     sum / batch.len() as f64
    /// })?;
    /// let sensor = happen.node("sensor").await?;
    /// let readings = (1..=4).map(|i| Event::new("sensor.reading", f64::from(i)));
    /// assert_eq!(sensor.send_batch(&store, readings).await?, 2.5);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`ErrorKind::InvalidPattern`] for an invalid pattern; [`ErrorKind::DuplicateHandler`]
    /// if the node already has a batch handler for the same pattern.
    pub fn on_batch<P, F, Fut, R>(&self, pattern: P, handler: F) -> Result<()>
    where
        P: IntoPattern,
        F: Fn(Batch, Context) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = R> + Send + 'static,
        R: IntoFlow + 'static,
    {
        let pattern = pattern.into_pattern()?;
        let mut reg = self.shared.registry.write();
        if reg.batch.iter().any(|e| e.pattern.same_as(&pattern)) {
            return Err(Error::duplicate_handler(self.id(), &pattern));
        }
        let entry = BatchEntry {
            pattern,
            handler: Arc::new(FnBatch(handler)),
        };
        super::registry::insert_ranked(&mut reg.batch, entry, |e| &e.pattern);
        Ok(())
    }

    /// Sends `events` to `target` as one batch, delivered to one call of its batch handler
    /// ([`on_batch`](Node::on_batch); without one, its single-event handler runs per event)
    /// and returns a [`Reply`] for the batch's value. Each event gets its own causal context,
    /// as [`send`](Node::send) would give it (its own id and transaction, this node as
    /// sender); the target's admission counts the batch as one flow.
    ///
    /// Across processes the batch is one message: an event of type [`BATCH_EVENT`] whose
    /// payload is the events in wire form (happen-nats' `WIRE.md`, "Batches"). A node of
    /// Happen's TypeScript reference does not take that form: happen-nats finds out through
    /// discovery and sends it the events one at a time, in order, answering with the array.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// use happen::{Context, Event, Happen};
    /// use serde_json::json;
    ///
    /// let happen = Happen::new();
    /// let n = happen.node("n").await?;
    /// n.on("double", |e: Event, _c: Context| async move { e.payload().as_u64().unwrap_or(0) * 2 })?;
    /// let batch = (1..=3).map(|i| Event::new("double", i));
    /// assert_eq!(n.send_batch(&n, batch).await?, json!([2, 4, 6])); // one call per event
    /// assert!(n.send_batch(&n, Vec::new()).await?.is_null()); // empty: no call
    /// # Ok(()) }
    /// ```
    ///
    /// Errors arrive through the [`Reply`]: those of [`send`](Node::send), and
    /// [`ErrorKind::InvalidEvent`] for an invalid event or a batch whose events do not all
    /// match the batch handler's pattern.
    pub fn send_batch<'t>(
        &self,
        target: impl Into<Target<'t>>,
        events: impl IntoIterator<Item = Event>,
    ) -> Reply {
        self.send_batch_inner(target.into(), events, None)
    }

    pub(crate) fn send_batch_inner(
        &self,
        target: Target<'_>,
        events: impl IntoIterator<Item = Event>,
        parent: Option<&Event>,
    ) -> Reply {
        let stamped: Result<Vec<Value>> = events
            .into_iter()
            .map(|e| {
                let e = self.prepare(e, parent)?;
                serde_json::to_value(&e).map_err(|err| {
                    Error::new(
                        ErrorKind::InvalidPayload,
                        format!("event `{}` cannot be serialized: {err}", e.event_type()),
                    )
                })
            })
            .collect();
        let carrier = match stamped {
            Ok(events) => Event::new(EventType::from_static(BATCH_EVENT), Value::Array(events)),
            Err(e) => return self.failed_reply(e),
        };
        self.send_inner(target, carrier, parent)
    }

    /// The batch handler for batches whose first event has type `event_type`.
    fn batch_handler(&self, event_type: &str) -> Option<(Pattern, Arc<dyn BatchFn>)> {
        let reg = self.shared.registry.read();
        reg.batch
            .iter()
            .find(|e| e.pattern.matches(event_type))
            .map(|e| (e.pattern.clone(), e.handler.clone()))
    }
}
