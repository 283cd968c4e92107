//! The [`Handler`] trait: which functions can be handlers and steps.

use std::future::Future;

use futures::FutureExt;
use futures::future::BoxFuture;
use serde::de::DeserializeOwned;

use super::context::Context;
use super::emitter::Emitter;
use super::flow::{Flow, IntoFlow, Json};
use crate::error::Result;
use crate::event::Event;

/// A function usable as a handler or a flow step.
///
/// Implemented for `async fn`s and closures of these shapes (`R` is any [`IntoFlow`]):
///
/// - `Fn(Event, Context) -> impl Future<Output = R>` — the general form;
/// - `Fn(Json<T>, Context) -> impl Future<Output = R>` — the payload deserialized into `T`;
/// - `Fn(Event, Context, Emitter) -> impl Future<Output = R>` — a streaming step
///   (see [`Emitter`]);
/// - `Fn(Json<T>, Context, Emitter) -> impl Future<Output = R>` — a streaming step with the
///   payload deserialized into `T`.
///
/// State shared by every flow of a node (a database pool, a client) is not an argument: give
/// it to the node with [`NodeOptions::state`](crate::NodeOptions::state) and read it in any
/// step with [`Context::state`].
///
/// Closures need their argument types written out (`|event: Event, ctx: Context| async move { .. }`)
/// because several shapes exist. Captured state must be `Send + Sync + 'static` (wrap shared
/// state in an `Arc`).
///
/// The trait is sealed: the shapes above (and [`cpu::cpu_bound`](crate::cpu::cpu_bound)) are
/// all there is, so happen can tell a streaming step from a plain one without asking.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
/// use futures::StreamExt;
/// use happen::{Context, Emitter, Event, Happen, Json};
///
/// async fn plain(event: Event, _ctx: Context) -> String {
///     format!("got {}", event.payload())
/// }
/// async fn typed(Json(n): Json<u32>, _ctx: Context) -> u32 {
///     n * 2
/// }
/// async fn streaming(_e: Event, _ctx: Context, emit: Emitter) -> happen::Result<&'static str> {
///     emit.emit(1).await?;
///     Ok("end")
/// }
/// async fn typed_streaming(Json(n): Json<u32>, _ctx: Context, emit: Emitter) -> happen::Result<()> {
///     for i in 0..n {
///         emit.emit(i).await?;
///     }
///     Ok(())
/// }
///
/// let happen = Happen::new();
/// let node = happen.node("n").await?;
/// node.on("plain", plain)?;
/// node.on("typed", typed)?;
/// node.on("streaming", streaming)?;
/// node.on("typed_streaming", typed_streaming)?;
/// let shared = std::sync::Arc::new(String::from("state")); // closures capture what they need
/// node.on("closure", move |_e: Event, _c: Context| {
///     let shared = shared.clone();
///     async move { shared.len() }
/// })?;
///
/// assert_eq!(node.send(&node, Event::new("plain", 1)).await?, "got 1");
/// assert_eq!(node.send(&node, Event::new("typed", 21)).await?, 42);
/// assert_eq!(node.send(&node, Event::new("streaming", ())).await?, "end");
/// let items: Vec<_> = node.send(&node, Event::new("typed_streaming", 3)).into_stream().collect().await;
/// assert_eq!(items.len(), 3);
/// assert_eq!(node.send(&node, Event::new("closure", ())).await?, 5);
/// # Ok(()) }
/// ```
///
/// ```compile_fail
/// // A handler cannot be written by hand: the trait is sealed.
/// struct Mine;
/// impl happen::Handler<()> for Mine {}
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a happen handler",
    label = "not a handler",
    note = "a handler is an `async fn(Event, Context) -> R` (or `Json<T>` instead of `Event`, and/or an extra `Emitter` argument) where `R: IntoFlow`",
    note = "closures need annotated arguments: `|event: Event, ctx: Context| async move {{ .. }}`"
)]
pub trait Handler<Args>: sealed::HandlerFn<Args> {}

impl<H: sealed::HandlerFn<Args>, Args> Handler<Args> for H {}

pub(crate) mod sealed {
    use super::{BoxFuture, Context, Event, Flow, Result};

    /// What a handler does; not nameable outside happen (see [`Handler`](super::Handler)).
    #[diagnostic::on_unimplemented(
        message = "`{Self}` is not a happen handler",
        label = "not a handler",
        note = "a handler is an `async fn(Event, Context) -> R` (or `Json<T>` instead of `Event`, and/or an extra `Emitter` argument) where `R: IntoFlow`",
        note = "closures need annotated arguments: `|event: Event, ctx: Context| async move {{ .. }}`"
    )]
    pub trait HandlerFn<Args>: Send + Sync + 'static {
        /// Runs the handler for one event.
        fn call(&self, event: Event, ctx: Context) -> BoxFuture<'static, Result<Flow>>;

        /// Does this handler stream (take an `Emitter`)?
        fn is_streaming(&self) -> bool {
            false
        }
    }
}

impl<F, Fut, R> sealed::HandlerFn<(Event, Context)> for F
where
    F: Fn(Event, Context) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = R> + Send + 'static,
    R: IntoFlow + 'static,
{
    fn call(&self, event: Event, ctx: Context) -> BoxFuture<'static, Result<Flow>> {
        self(event, ctx).map(IntoFlow::into_flow).boxed()
    }
}

impl<F, Fut, R, T> sealed::HandlerFn<(Json<T>, Context)> for F
where
    F: Fn(Json<T>, Context) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = R> + Send + 'static,
    R: IntoFlow + 'static,
    T: DeserializeOwned + Send + 'static,
{
    fn call(&self, event: Event, ctx: Context) -> BoxFuture<'static, Result<Flow>> {
        match event.decode::<T>() {
            Ok(payload) => self(Json(payload), ctx).map(IntoFlow::into_flow).boxed(),
            Err(e) => futures::future::ready(Err(e)).boxed(),
        }
    }
}

impl<F, Fut, R> sealed::HandlerFn<(Event, Context, Emitter)> for F
where
    F: Fn(Event, Context, Emitter) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = R> + Send + 'static,
    R: IntoFlow + 'static,
{
    fn is_streaming(&self) -> bool {
        true
    }

    fn call(&self, event: Event, ctx: Context) -> BoxFuture<'static, Result<Flow>> {
        // Open the stream before the step runs so the consumer sees it even if the step
        // finishes without emitting.
        ctx.inner.stream.start();
        let emitter = Emitter::new(ctx.clone());
        self(event, ctx, emitter).map(IntoFlow::into_flow).boxed()
    }
}

impl<F, Fut, R, T> sealed::HandlerFn<(Json<T>, Context, Emitter)> for F
where
    F: Fn(Json<T>, Context, Emitter) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = R> + Send + 'static,
    R: IntoFlow + 'static,
    T: DeserializeOwned + Send + 'static,
{
    fn is_streaming(&self) -> bool {
        true
    }

    fn call(&self, event: Event, ctx: Context) -> BoxFuture<'static, Result<Flow>> {
        // A payload that does not fit fails the flow before it streams: the consumer reads
        // no items, then the error.
        match event.decode::<T>() {
            Ok(payload) => {
                ctx.inner.stream.start();
                let emitter = Emitter::new(ctx.clone());
                self(Json(payload), ctx, emitter)
                    .map(IntoFlow::into_flow)
                    .boxed()
            }
            Err(e) => futures::future::ready(Err(e)).boxed(),
        }
    }
}
