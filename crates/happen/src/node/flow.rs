//! The Event Continuum: a step returns either the next step to run or the flow's final value.
//!
//! A handler is the first step of a flow. Each step gets the flow's event and its
//! [`Context`] (typed data the steps share); it returns a [`Flow`]: [`Flow::next`] runs
//! another step, [`Flow::done`] (or any plain value, through [`IntoFlow`]) ends the flow with
//! the value the sender's reply resolves to. An `Err` ends the flow with that error. [`Json`]
//! reads a typed payload and returns a typed value. The items of this module are also at the
//! crate root.
//!
//! ```
//! use happen::{Context, Event, Flow, Happen};
//! use serde_json::json;
//!
//! async fn validate(event: Event, ctx: Context) -> happen::Result<Flow> {
//!     let qty = event.payload()["qty"].as_u64().unwrap_or(0);
//!     if qty == 0 {
//!         return Ok(Flow::done(json!({"ok": false, "reason": "empty order"})));
//!     }
//!     ctx.insert(qty);
//!     Ok(Flow::next(charge))
//! }
//!
//! async fn charge(_event: Event, ctx: Context) -> serde_json::Value {
//!     let qty: u64 = ctx.get().unwrap();
//!     json!({"ok": true, "charged": qty * 10})
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
//! let happen = Happen::new();
//! let shop = happen.node("shop").await?;
//! shop.on("order", validate)?;
//! let reply = shop.send(&shop, Event::new("order", json!({"qty": 3}))).await?;
//! assert_eq!(reply, json!({"ok": true, "charged": 30}));
//! # Ok(()) }
//! ```

use std::fmt;

use futures::future::BoxFuture;
use serde::Serialize;
use serde_json::Value;

use super::context::Context;
use super::handler::Handler;
use super::handler::sealed::HandlerFn;
use crate::error::{BoxError, Error, ErrorKind, Result};
use crate::event::Event;

/// What a step returns: run another step, or finish with a value.
///
/// Steps usually return plain values or `Result`s, which convert through [`IntoFlow`];
/// return a `Flow` when the step decides what runs next. Build one with [`Flow::next`] or
/// [`Flow::done`] (examples there, and in the [module docs](self)).
///
/// ```
/// use happen::{Context, Event, Flow};
///
/// async fn route(event: Event, _ctx: Context) -> Flow {
///     match event.payload()["express"].as_bool() {
///         Some(true) => Flow::next(express),
///         _ => Flow::done("standard shipping"),
///     }
/// }
/// async fn express(_e: Event, _c: Context) -> &'static str {
///     "express shipping"
/// }
/// # let _ = route;
/// assert!(matches!(Flow::done(1), Flow::Done(v) if v == 1));
/// ```
pub enum Flow {
    /// Run this step next, with the same event and context.
    Next(Step),
    /// The flow is complete; the value is what the sender's reply resolves to.
    Done(Value),
}

impl Flow {
    /// Continue with `step` (an `async fn(Event, Context)` or a closure of that shape; any
    /// [`Handler`] shape). The step gets the same event and context. Each step counts against
    /// `flow.max_chain_depth`, so a loop that never ends fails with
    /// [`ErrorKind::ChainTooDeep`].
    ///
    /// A step may return itself to loop. Rust cannot check that an `async fn` is `Send` from
    /// inside its own body, so write a looping step as a plain `fn` that returns
    /// `impl Future<Output = Flow> + Send`:
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// use std::future::Future;
    /// use happen::{Context, Event, Flow, Happen};
    ///
    /// struct Left(u64);
    ///
    /// async fn start(event: Event, ctx: Context) -> Flow {
    ///     ctx.insert(Left(event.payload().as_u64().unwrap_or(0)));
    ///     Flow::next(countdown)
    /// }
    /// fn countdown(_e: Event, ctx: Context) -> impl Future<Output = Flow> + Send {
    ///     async move {
    ///         match ctx.with(|left: &mut Left| { left.0 = left.0.saturating_sub(1); left.0 }) {
    ///             Some(0) | None => Flow::done("liftoff"),
    ///             Some(_) => Flow::next(countdown), // loop
    ///         }
    ///     }
    /// }
    ///
    /// let happen = Happen::new();
    /// let rocket = happen.node("rocket").await?;
    /// rocket.on("launch", start)?;
    /// assert_eq!(rocket.send(&rocket, Event::new("launch", 3)).await?, "liftoff");
    /// # Ok(()) }
    /// ```
    pub fn next<H, Args>(step: H) -> Flow
    where
        H: Handler<Args>,
        Args: 'static,
    {
        Flow::Next(Step::new(step))
    }

    /// Finish with `value` (anything convertible into a JSON value; for a `Serialize` type,
    /// return [`Json`] instead of a `Flow`).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// use happen::{Context, Event, Flow, Happen};
    /// use serde_json::json;
    ///
    /// async fn check(event: Event, _ctx: Context) -> Flow {
    ///     if event.payload()["qty"] == 0 {
    ///         return Flow::done(json!({"ok": false})); // finish early
    ///     }
    ///     Flow::next(|_e: Event, _c: Context| async { json!({"ok": true}) })
    /// }
    ///
    /// let happen = Happen::new();
    /// let shop = happen.node("shop").await?;
    /// shop.on("order", check)?;
    /// assert_eq!(shop.send(&shop, Event::new("order", json!({"qty": 0}))).await?["ok"], false);
    /// assert_eq!(shop.send(&shop, Event::new("order", json!({"qty": 1}))).await?["ok"], true);
    /// # Ok(()) }
    /// ```
    pub fn done(value: impl Into<Value>) -> Flow {
        Flow::Done(value.into())
    }
}

impl fmt::Debug for Flow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Flow::Next(_) => f.write_str("Flow::Next(..)"),
            Flow::Done(v) => f.debug_tuple("Flow::Done").field(v).finish(),
        }
    }
}

/// A type-erased step of a flow, made by [`Flow::next`] (the only way to make one). A step
/// may return itself to loop (see [`Flow::next`] for how to write one).
///
/// Steps that are plain functions or closures capturing nothing are zero-sized, so making one
/// does not allocate.
pub struct Step(pub(crate) Box<dyn ErasedStep>);

pub(crate) trait ErasedStep: Send + Sync + 'static {
    fn call(&self, event: Event, ctx: Context) -> BoxFuture<'static, Result<Flow>>;
    fn is_streaming(&self) -> bool;
}

struct StepFn<H, Args> {
    handler: H,
    _args: std::marker::PhantomData<fn() -> Args>,
}

impl<H, Args> ErasedStep for StepFn<H, Args>
where
    H: Handler<Args>,
    Args: 'static,
{
    fn call(&self, event: Event, ctx: Context) -> BoxFuture<'static, Result<Flow>> {
        HandlerFn::call(&self.handler, event, ctx)
    }
    fn is_streaming(&self) -> bool {
        HandlerFn::is_streaming(&self.handler)
    }
}

impl Step {
    /// Wraps a handler as a step.
    pub(crate) fn new<H, Args>(handler: H) -> Step
    where
        H: Handler<Args>,
        Args: 'static,
    {
        Step(Box::new(StepFn {
            handler,
            _args: std::marker::PhantomData,
        }))
    }
}

impl fmt::Debug for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Step(..)")
    }
}

/// Conversion of a step's return value into a [`Flow`].
///
/// Implemented for [`Flow`], [`serde_json::Value`], `()` (null), strings, numbers, `bool`,
/// [`Json<T>`] (any `Serialize` value), `Option<T>` (`None` is null) and `Result<T, E>` where
/// `E` converts into a boxed error — an `Err` ends the flow with [`ErrorKind::Handler`] and the
/// error's message (a [`happen::Error`](Error) keeps its own kind).
///
/// You do not call `into_flow` yourself: happen calls it on what a step returns.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
/// use happen::{Context, Event, Happen, Json};
/// use serde_json::json;
///
/// #[derive(serde::Serialize)]
/// struct Receipt { total: u32 }
///
/// let happen = Happen::new();
/// let n = happen.node("n").await?;
/// n.on("unit", |_e: Event, _c: Context| async {})?; // () is null
/// n.on("text", |_e: Event, _c: Context| async { "ok" })?;
/// n.on("value", |_e: Event, _c: Context| async { json!([1, 2]) })?;
/// n.on("typed", |_e: Event, _c: Context| async { Json(Receipt { total: 5 }) })?;
/// n.on("maybe", |_e: Event, _c: Context| async { None::<u32> })?; // None is null
/// n.on("fallible", |_e: Event, _c: Context| async { "x".parse::<u32>() })?; // Err ends the flow
///
/// assert!(n.send(&n, Event::new("unit", ())).await?.is_null());
/// assert_eq!(n.send(&n, Event::new("text", ())).await?, "ok");
/// assert_eq!(n.send(&n, Event::new("value", ())).await?, json!([1, 2]));
/// assert_eq!(n.send(&n, Event::new("typed", ())).await?, json!({"total": 5}));
/// assert!(n.send(&n, Event::new("maybe", ())).await?.is_null());
/// let err = n.send(&n, Event::new("fallible", ())).await.unwrap_err();
/// assert_eq!(err.kind(), happen::ErrorKind::Handler);
/// assert_eq!(err.message(), "invalid digit found in string");
/// # Ok(()) }
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be returned from a happen step",
    note = "return a `Flow`, a `serde_json::Value`, `Json(value)` for any `Serialize` type, `()`, or a `Result` of those"
)]
pub trait IntoFlow {
    /// Converts into a flow decision, or the error that ends the flow.
    fn into_flow(self) -> Result<Flow>;
}

impl IntoFlow for Flow {
    fn into_flow(self) -> Result<Flow> {
        Ok(self)
    }
}

impl IntoFlow for Value {
    fn into_flow(self) -> Result<Flow> {
        Ok(Flow::Done(self))
    }
}

impl IntoFlow for () {
    fn into_flow(self) -> Result<Flow> {
        Ok(Flow::Done(Value::Null))
    }
}

macro_rules! into_flow_via_value {
    ($($t:ty),*) => {$(
        impl IntoFlow for $t {
            fn into_flow(self) -> Result<Flow> {
                Ok(Flow::Done(Value::from(self)))
            }
        }
    )*};
}
into_flow_via_value!(bool, String, &'static str, i32, i64, u32, u64, usize, f64);

impl<T: IntoFlow> IntoFlow for Option<T> {
    fn into_flow(self) -> Result<Flow> {
        match self {
            Some(v) => v.into_flow(),
            None => Ok(Flow::Done(Value::Null)),
        }
    }
}

impl<T: IntoFlow, E: Into<BoxError>> IntoFlow for std::result::Result<T, E> {
    fn into_flow(self) -> Result<Flow> {
        match self {
            Ok(v) => v.into_flow(),
            Err(e) => Err(Error::from_handler(e.into())),
        }
    }
}

/// A typed value: as a step's return value it is serialized to JSON; as a handler's first
/// argument the event payload is deserialized into `T` (a mismatch ends the flow with
/// [`ErrorKind::InvalidPayload`] naming the field).
///
/// ```
/// use happen::{Context, Event, Happen, Json};
///
/// #[derive(serde::Deserialize)]
/// struct Order { qty: u32 }
/// #[derive(serde::Serialize)]
/// struct Receipt { total: u32 }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
/// let happen = Happen::new();
/// let shop = happen.node("shop").await?;
/// shop.on("order", |Json(order): Json<Order>, _ctx: Context| async move {
///     Json(Receipt { total: order.qty * 10 })
/// })?;
/// let total = shop.send(&shop, Event::new("order", serde_json::json!({"qty": 2}))).await?;
/// assert_eq!(total["total"], 20);
///
/// let err = shop.send(&shop, Event::new("order", serde_json::json!({}))).await.unwrap_err();
/// assert_eq!(err.kind(), happen::ErrorKind::InvalidPayload);
/// assert!(err.message().contains("qty"));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Json<T>(pub T);

impl<T: Serialize> IntoFlow for Json<T> {
    fn into_flow(self) -> Result<Flow> {
        serde_json::to_value(&self.0).map(Flow::Done).map_err(|e| {
            Error::new(
                ErrorKind::InvalidPayload,
                format!(
                    "final value of type `{}` cannot be serialized to JSON: {e}",
                    std::any::type_name::<T>()
                ),
            )
            .with_source(e)
        })
    }
}
