//! CPU-bound work: run it on a dedicated thread pool so the async workers stay responsive.
//!
//! A step calls [`Context::cpu`] with a closure; the closure runs on the instance's CPU pool
//! (a [rayon](https://docs.rs/rayon) pool of `cpu.threads` threads, default: the number of
//! cores) while the flow awaits the result. The work is part of its flow, so it counts
//! against the node's `max_concurrent` and queue like any other flow: CPU saturation shows up
//! as the same backpressure and `QueueFull` signals as any other overload.
//!
//! - A panic inside the closure becomes the flow's [`ErrorKind::Panic`] error; the pool and
//!   the node keep serving.
//! - If the awaiting future is dropped before the closure started (the flow was cancelled, or
//!   the step wrapped the call in a timeout that fired), the closure never runs. Once started,
//!   it runs to completion (threads cannot be interrupted) and its result is discarded.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
//! use happen::{Context, Event, Happen};
//!
//! let happen = Happen::new();
//! let hasher = happen.node("hasher").await?;
//! hasher.on("hash", |event: Event, ctx: Context| async move {
//!     let n = event.payload().as_u64().unwrap_or(0);
//!     ctx.cpu(move || (0..n).fold(0u64, |h, i| h.wrapping_mul(31).wrapping_add(i))).await
//! })?;
//! let h = hasher.send(&hasher, Event::new("hash", 1000)).await?;
//! assert!(h.is_u64());
//!
//! // Or make a whole synchronous handler CPU-bound:
//! hasher.on("square", happen::cpu::cpu_bound(|event: Event| {
//!     let n = event.payload().as_u64().unwrap_or(0);
//!     n * n
//! }))?;
//! assert_eq!(hasher.send(&hasher, Event::new("square", 12)).await?, 144);
//! # Ok(()) }
//! ```

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::future::BoxFuture;
use tokio::sync::oneshot;

use super::context::Context;
use super::flow::{Flow, IntoFlow};
use super::handler::sealed::HandlerFn;
use crate::error::{Error, ErrorKind, Result, panic_message};
use crate::event::Event;

/// Builds the CPU pool.
pub(crate) fn build_pool(threads: Option<usize>) -> Result<rayon::ThreadPool> {
    let n = threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(usize::from)
            .unwrap_or(1)
    });
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .thread_name(|i| format!("happen-cpu-{i}"))
        .build()
        .map_err(|e| {
            Error::new(
                ErrorKind::InvalidConfig,
                format!("cannot start the CPU pool of {n} threads (cpu.threads): {e}"),
            )
        })
}

/// Sets the flag when the awaiting future is dropped, so a job that has not started skips.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

impl Context {
    /// Runs `work` on the CPU pool and waits for its result (see [`cpu`](crate::cpu)). The
    /// pool starts on the first call (`cpu.threads` threads).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// use happen::{Context, ErrorKind, Event, Happen};
    ///
    /// let happen = Happen::new();
    /// let primes = happen.node("primes").await?;
    /// primes.on("count", |event: Event, ctx: Context| async move {
    ///     let below = event.payload().as_u64().unwrap_or(0);
    ///     let count = ctx
    ///         .cpu(move || (2..below).filter(|n| (2..*n).take_while(|d| d * d <= *n).all(|d| n % d != 0)).count())
    ///         .await?;
    ///     Ok::<_, happen::Error>(count)
    /// })?;
    /// assert_eq!(primes.send(&primes, Event::new("count", 100)).await?, 25);
    ///
    /// primes.on("crash", |_e: Event, ctx: Context| async move {
    ///     ctx.cpu(|| -> u32 { panic!("bad input") }).await
    /// })?;
    /// let err = primes.send(&primes, Event::new("crash", ())).await.unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::Panic); // the pool and the node keep serving
    /// assert_eq!(primes.send(&primes, Event::new("count", 10)).await?, 4);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`ErrorKind::Panic`] if `work` panicked; [`ErrorKind::ShutDown`] if the pool is gone;
    /// [`ErrorKind::InvalidConfig`] if the pool cannot be started (the first call).
    ///
    /// # Cancel safety
    /// Dropping the future before `work` started means it never runs; after it started, it
    /// finishes and the result is discarded.
    pub async fn cpu<F, T>(&self, work: F) -> Result<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let pool = self.node().shared.scope.cpu_pool()?;
        let cancelled = Arc::new(AtomicBool::new(false));
        let _guard = CancelOnDrop(cancelled.clone());
        let (tx, rx) = oneshot::channel();
        pool.spawn(move || {
            if cancelled.load(Ordering::Acquire) {
                return;
            }
            let _ = tx.send(catch_unwind(AssertUnwindSafe(work)));
        });
        match rx.await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(panic)) => {
                let msg = panic_message(&*panic);
                Err(Error::panic(self.node_id(), &format!("in CPU work: {msg}")))
            }
            Err(_) => Err(Error::new(
                ErrorKind::ShutDown,
                "the CPU pool went away before running the work",
            )),
        }
    }
}

/// Makes a synchronous function a handler whose whole body runs on the CPU pool: a
/// `Fn(Event) -> R` where `R` is any [`IntoFlow`] (a value, a `Result`, a [`Flow`]). A panic
/// in it fails the flow with [`ErrorKind::Panic`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
/// use happen::{Event, Happen, cpu::cpu_bound};
///
/// fn checksum(event: Event) -> u64 {
///     event.payload().as_str().unwrap_or("").bytes().map(u64::from).sum()
/// }
///
/// let happen = Happen::new();
/// let hasher = happen.node("hasher").await?;
/// hasher.on("checksum", cpu_bound(checksum))?;
/// assert_eq!(hasher.send(&hasher, Event::new("checksum", "ab")).await?, 97 + 98);
/// # Ok(()) }
/// ```
pub fn cpu_bound<F, R>(f: F) -> CpuBound<F>
where
    F: Fn(Event) -> R + Clone + Send + Sync + 'static,
    R: IntoFlow + Send + 'static,
{
    CpuBound(f)
}

/// A handler running a synchronous function on the CPU pool, made by [`cpu_bound`]; pass it
/// to [`Node::on`](crate::Node::on) or [`Flow::next`].
#[derive(Clone, Debug)]
pub struct CpuBound<F>(F);

impl<F, R> HandlerFn<(CpuBound<F>,)> for CpuBound<F>
where
    F: Fn(Event) -> R + Clone + Send + Sync + 'static,
    R: IntoFlow + Send + 'static,
{
    fn call(&self, event: Event, ctx: Context) -> BoxFuture<'static, Result<Flow>> {
        let f = self.0.clone();
        Box::pin(async move { ctx.cpu(move || f(event)).await?.into_flow() })
    }
}
