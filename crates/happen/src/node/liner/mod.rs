//! Liners: middleware around handlers ("governance as code").
//!
//! A [`Liner`] wraps a handler: it gets the event, the flow's [`Context`] and [`Next`] (the
//! rest of the chain) and may
//! - run the rest and observe the outcome (`next.run(event, ctx).await`),
//! - change the event before the handler sees it ([`Event::with_payload`]),
//! - answer without calling the handler at all (return a value and drop `next`).
//!
//! [`line()`]`(handler, [l1, l2])` wraps one handler; the **last liner is outermost**, as in
//! Happen's reference (`line(h, l1, l2)` composes with `reduce`): the order is l2 before,
//! l1 before, the handler, l1 after, l2 after. [`Node::line`](crate::Node::line) wraps every
//! handler of a node, those registered before and after it; node liners are outside the
//! handler's own, and a node liner added later is outside the earlier ones.
//!
//! What a liner wraps is the handler's whole flow: `next.run` resolves to the flow's final
//! value, after every step the handler continued with ([`Flow::next`](crate::Flow::next)).
//!
//! Two liners ship here: [`logging`] (a line before and after each flow, at the `happen::liner`
//! tracing target) and [`shadow_mode`] (destructive event types answered with a "paused"
//! reply unless the flow is [`Approved`]).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
//! use std::sync::{Arc, Mutex};
//! use happen::liner::{Liner, Next, line};
//! use happen::{Context, Event, Happen};
//!
//! let trail = Arc::new(Mutex::new(Vec::new()));
//! let named = |name: &'static str| {
//!     let trail = trail.clone();
//!     Liner::new(move |event: Event, ctx: Context, next: Next| {
//!         let trail = trail.clone();
//!         async move {
//!             trail.lock().unwrap().push(format!("{name} before"));
//!             let value = next.run(event, ctx).await;
//!             trail.lock().unwrap().push(format!("{name} after"));
//!             value
//!         }
//!     })
//! };
//!
//! let happen = Happen::new();
//! let node = happen.node("n").await?;
//! let handler = |_e: Event, _c: Context| async { "done" };
//! node.on("job", line(handler, [named("l1"), named("l2")]))?;
//!
//! assert_eq!(node.send(&node, Event::new("job", ())).await?, "done");
//! assert_eq!(*trail.lock().unwrap(), ["l2 before", "l1 before", "l1 after", "l2 after"]);
//! # Ok(()) }
//! ```
//!
//! A handler registered without liners (and `line(handler, [])`) runs exactly as before:
//! the chain costs nothing per event unless a liner is in it.

mod builtin;

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::Value;

use super::context::Context;
use super::flow::{ErasedStep, Flow, IntoFlow, Step};
use super::handler::Handler;
use super::handler::sealed::HandlerFn;
use crate::error::{Error, Result};
use crate::event::Event;

pub use builtin::{Approved, PAUSED_STATUS, logging, shadow_mode, shadow_mode_for};

/// Middleware around a handler: see the [module docs](self).
///
/// Made from an `async` function or closure of `(Event, Context, Next)` returning anything a
/// step may return ([`IntoFlow`]): usually the `Result` of [`Next::run`], or a value of its
/// own to answer without calling the handler. Cheap to clone (an `Arc`); one liner may wrap
/// any number of handlers and nodes.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
/// use happen::liner::{Liner, Next, line};
/// use happen::{Context, Event, Happen};
/// use serde_json::json;
///
/// // Answers without the handler when the payload says so.
/// let cached = Liner::new(|event: Event, ctx: Context, next: Next| async move {
///     if event.payload()["cached"] == true {
///         return Ok(json!("from the cache"));
///     }
///     next.run(event, ctx).await
/// });
/// // Changes the event the handler sees.
/// let doubled = Liner::new(|event: Event, ctx: Context, next: Next| async move {
///     let n = event.payload()["n"].as_u64().unwrap_or(0);
///     next.run(event.with_payload(json!({"n": n * 2})), ctx).await
/// });
///
/// let happen = Happen::new();
/// let node = happen.node("n").await?;
/// let handler = |event: Event, _c: Context| async move { event.payload()["n"].clone() };
/// node.on("get", line(handler, [doubled, cached]))?;
/// assert_eq!(node.send(&node, Event::new("get", json!({"n": 4}))).await?, 8);
/// assert_eq!(node.send(&node, Event::new("get", json!({"cached": true}))).await?, "from the cache");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Liner(Arc<dyn LinerFn>);

trait LinerFn: Send + Sync + 'static {
    fn call(&self, event: Event, ctx: Context, next: Next) -> BoxFuture<'static, Result<Flow>>;
}

struct FnLiner<F>(F);

impl<F, Fut, R> LinerFn for FnLiner<F>
where
    F: Fn(Event, Context, Next) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = R> + Send + 'static,
    R: IntoFlow + 'static,
{
    fn call(&self, event: Event, ctx: Context, next: Next) -> BoxFuture<'static, Result<Flow>> {
        (self.0)(event, ctx, next).map(IntoFlow::into_flow).boxed()
    }
}

impl Liner {
    /// A liner from an `async` function or closure of `(Event, Context, Next)` (examples on
    /// [`Liner`]). Closures need their argument types written out.
    pub fn new<F, Fut, R>(liner: F) -> Liner
    where
        F: Fn(Event, Context, Next) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = R> + Send + 'static,
        R: IntoFlow + 'static,
    {
        Liner(Arc::new(FnLiner(liner)))
    }
}

impl fmt::Debug for Liner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Liner(..)")
    }
}

/// The rest of a liner chain: the inner liners, then the handler and the steps it continues
/// with. Run it with [`run`](Next::run), or drop it to answer without the handler.
pub struct Next {
    chain: Arc<Chain>,
    /// How many liners of `chain` are still to run (they run from the last one down).
    at: usize,
}

struct Chain {
    liners: Box<[Liner]>,
    handler: Arc<dyn ErasedStep>,
}

impl Next {
    /// Runs the rest of the chain with `event` (the one the liner got, or a changed one) and
    /// resolves to the flow's final value, or its error. Every step of the flow gets `event`
    /// as its argument; [`Context::event`] still reads the event as it arrived (the one a
    /// [`Context::send`] names as its cause).
    ///
    /// The steps count against `flow.max_chain_depth` as they do without liners.
    ///
    /// # Cancel safety
    /// Dropping the future stops the rest of the flow where it is (as a dropped step would).
    pub fn run(self, event: Event, ctx: Context) -> impl Future<Output = Result<Value>> + Send {
        let first = self.call(event.clone(), ctx.clone());
        continuum(first, event, ctx)
    }

    /// Calls the next liner, or the handler's first step when no liner is left.
    fn call(self, event: Event, ctx: Context) -> BoxFuture<'static, Result<Flow>> {
        match self.at.checked_sub(1) {
            Some(inner) => {
                let liner = self.chain.liners[inner].clone();
                let next = Next {
                    chain: self.chain,
                    at: inner,
                };
                liner.0.call(event, ctx, next)
            }
            None => self.chain.handler.call(event, ctx),
        }
    }
}

impl fmt::Debug for Next {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Next")
            .field("liners_left", &self.at)
            .finish_non_exhaustive()
    }
}

/// Runs a flow from its first step's future to its final value.
pub(in crate::node) async fn continuum(
    mut step: BoxFuture<'static, Result<Flow>>,
    event: Event,
    ctx: Context,
) -> Result<Value> {
    let max = ctx.node().max_chain_depth();
    let mut depth = 0;
    loop {
        match step.await? {
            Flow::Done(value) => return Ok(value),
            Flow::Next(next) => {
                depth += 1;
                if depth >= max {
                    return Err(Error::too_many_steps(ctx.node_id(), max));
                }
                step = next.0.call(event.clone(), ctx.clone());
            }
        }
    }
}

/// A handler with its liners, made by [`line()`]; register it with [`Node::on`](crate::Node::on)
/// (or use it as a step with [`Flow::next`](crate::Flow::next), or line it again).
#[derive(Clone)]
pub struct Lined {
    step: Arc<dyn ErasedStep>,
}

impl fmt::Debug for Lined {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Lined(..)")
    }
}

impl HandlerFn<Lined> for Lined {
    fn call(&self, event: Event, ctx: Context) -> BoxFuture<'static, Result<Flow>> {
        self.step.call(event, ctx)
    }

    fn is_streaming(&self) -> bool {
        self.step.is_streaming()
    }
}

/// Wraps `handler` in `liners`; the **last liner is outermost** (the reference's order): with
/// `line(h, [l1, l2])` an event passes l2, then l1, then `h`, and the outcome goes back through
/// l1, then l2. Example in the [module docs](self).
///
/// With no liners the handler is returned as it is: registering `line(h, [])` costs nothing
/// per event over registering `h`.
pub fn line<H, Args>(handler: H, liners: impl IntoIterator<Item = Liner>) -> Lined
where
    H: Handler<Args>,
    Args: 'static,
{
    let liners: Vec<Liner> = liners.into_iter().collect();
    Lined {
        step: wrap(erase(handler), &liners),
    }
}

/// A handler as the registry stores it; a [`Lined`] handler is unpacked (no extra layer).
pub(in crate::node) fn erase<H, Args>(handler: H) -> Arc<dyn ErasedStep>
where
    H: Handler<Args>,
    Args: 'static,
{
    if let Some(lined) = (&handler as &dyn Any).downcast_ref::<Lined>() {
        return lined.step.clone();
    }
    Arc::from(Step::new(handler).0)
}

/// `step` inside `liners` (the last outermost); `step` itself when there are none.
pub(in crate::node) fn wrap(step: Arc<dyn ErasedStep>, liners: &[Liner]) -> Arc<dyn ErasedStep> {
    if liners.is_empty() {
        return step;
    }
    Arc::new(LinedStep(Arc::new(Chain {
        liners: liners.into(),
        handler: step,
    })))
}

/// A handler inside its liner chain.
struct LinedStep(Arc<Chain>);

impl ErasedStep for LinedStep {
    fn call(&self, event: Event, ctx: Context) -> BoxFuture<'static, Result<Flow>> {
        let next = Next {
            chain: self.0.clone(),
            at: self.0.liners.len(),
        };
        next.call(event, ctx)
    }

    fn is_streaming(&self) -> bool {
        self.0.handler.is_streaming()
    }
}
