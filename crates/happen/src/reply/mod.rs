//! [`Reply`]: the handle `send` returns — await it for the final value, stream it, or drop it.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::Value;

mod stream;

use std::sync::Arc;

use crate::admission::Unobserved;
use crate::error::{Error, Result};
use crate::event::decode_value;
use crate::stream::SlotReceiver;

use stream::StreamState;
pub use stream::{Outcome, ReplyStream, TypedStream};

/// A target in this process whose flows a requester's own task may start when it first
/// waits for its answer: a flow that finishes at once then answers without a driver's wake,
/// a thread hop or a wake of the requester. Implemented by the node (which this layer does
/// not know).
pub(crate) trait StartsHere: Send + Sync {
    /// Starts what can start now at the target in the calling task, as a driver would (see
    /// the node's `run` module); `true` if it started a flow.
    fn start_here(self: Arc<Self>) -> bool;
}

/// The handle returned by [`Node::send`](crate::Node::send): a [`Future`] of the flow's
/// final value.
///
/// The event is already on its way when you get this handle (dispatch is eager, and the reply
/// path exists before the event is dispatched, so a fast reply is never lost). Then:
///
/// - `.await` it (or hand it to anything that takes a future: `join_all`, `select!`,
///   `FuturesUnordered`, `tokio::spawn`) for the flow's final value; intermediate stream
///   items are skipped;
/// - [`decode`](Reply::decode) the final value into a type;
/// - [`into_stream`](Reply::into_stream) to read streamed items, then the final value;
/// - drop it for fire-and-forget: the event is still handled; failures are logged (target
///   `happen::reply`) and counted in the sending node's stats.
///
/// The default timeout is the sending node's `request_timeout` (30 s unless configured);
/// override it per send with [`timeout`](Reply::timeout).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
/// use std::time::Duration;
/// use happen::{Context, ErrorKind, Event, Happen, Reply};
///
/// let happen = Happen::new();
/// let doubler = happen.node("doubler").await?;
/// doubler.on("double", |event: Event, _ctx: Context| async move {
///     event.payload().as_u64().unwrap_or(0) * 2
/// })?;
/// let client = happen.node("client").await?;
///
/// // Replies are futures: wait for many at once.
/// let replies: Vec<Reply> = (1..=3).map(|i| client.send(&doubler, Event::new("double", i))).collect();
/// let doubled: Vec<u64> = futures::future::join_all(replies)
///     .await
///     .into_iter()
///     .map(|r| r.map(|v| v.as_u64().unwrap()))
///     .collect::<happen::Result<_>>()?;
/// assert_eq!(doubled, [2, 4, 6]);
///
/// let err = client
///     .send("nobody", Event::new("ping", ()))
///     .timeout(Duration::from_secs(1))
///     .await
///     .unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::UnknownNode);
/// # Ok(()) }
/// ```
///
/// # Where the flow runs
/// For a target node of this process sent to by handle, the first poll of a reply awaited
/// for its final value, on the node's own Tokio runtime, starts the target's next ready flow
/// in the awaiting task, exactly as one of the node's drivers would (in admission order,
/// within its limits): usually the request's own flow, which then answers without a driver
/// wake or a thread hop. So a handler's synchronous part may run in the requester's task. A handler that blocks its
/// thread (blocking work belongs in [`Context::cpu`](crate::Context::cpu)) holds up one
/// requester this way; the node's next 64 requests leave their flows to its drivers. A flow
/// that waits moves to its own task as usual; a request made inside a flow started this way,
/// and a reply read as a stream, are left to the drivers. Each start counts against Tokio's
/// co-operative budget, so a requester whose answers keep arriving at once still yields.
///
/// # Cancel safety
/// Awaiting `&mut reply` (for example as one branch of a `tokio::select!` loop) is cancel-safe:
/// the state lives in the `Reply`, so polling it again later continues where it stopped and
/// no answer is lost. Dropping the `Reply` itself abandons the answer: a plain flow still runs
/// to its end (its outcome is discarded; a failure is logged and counted as unobserved), and a
/// streaming flow is cancelled once the reply had started receiving its items.
///
/// # Panics
/// Polling it panics outside a Tokio runtime with timers enabled once the answer is not
/// immediate (the timeout is a Tokio timer). `#[tokio::main]` and `#[tokio::test]` enable
/// timers; a hand-built runtime needs `enable_time()` (or `enable_all()`).
#[must_use = "a Reply does nothing more when dropped: the event was sent; await it to get the final value"]
pub struct Reply {
    pub(crate) stream: ReplyStream,
    /// The sending node's counter of failures nobody observed.
    sender: Option<Arc<Unobserved>>,
}

impl Reply {
    /// A reply waiting on `rx`. Its timer is armed once the slot is nudged (see the
    /// `stream::oneshot` module): by the engine when the answer cannot be immediate, or at once for a
    /// send through another transport. `here`: the target in this process, whose ready
    /// flows the first poll starts.
    pub(crate) fn waiting(
        rx: SlotReceiver,
        timeout: Duration,
        here: Option<Arc<dyn StartsHere>>,
    ) -> Reply {
        Reply {
            stream: ReplyStream::new(StreamState::Waiting(rx, here), timeout),
            sender: None,
        }
    }

    pub(crate) fn failed(err: Error, timeout: Duration, sender: Arc<Unobserved>) -> Reply {
        Reply {
            stream: ReplyStream::new(StreamState::Failed(Some(err)), timeout),
            sender: Some(sender),
        }
    }

    /// A reply whose result is already known (a fan-out's answer taken out of its
    /// [`SendAll`](crate::SendAll) after it arrived).
    pub(crate) fn resolved(result: Result<Value>, timeout: Duration) -> Reply {
        let state = match result {
            Ok(v) => StreamState::Done(Some(v)),
            Err(e) => StreamState::Failed(Some(e)),
        };
        Reply {
            stream: ReplyStream::new(state, timeout),
            sender: None,
        }
    }

    /// Sets how long to wait for the reply (for a stream: for each next item), counted from
    /// when the reply is first awaited. For a target in this process the timer is armed only
    /// once the answer is known not to be immediate (the event was queued, or its flow
    /// waits), so a flow that completes at once costs no timer; the deadline is the same.
    /// Set it before the first poll: a timer already armed keeps its deadline.
    ///
    /// A reply that times out fails with [`ErrorKind::Timeout`](crate::ErrorKind::Timeout)
    /// naming the node that did not answer where it is known. A plain flow is not stopped by that (it runs to
    /// its end, unobserved); a streaming flow is cancelled, as when its stream is dropped.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> happen::Result<()> {
    /// use std::time::Duration;
    /// use happen::{Context, Event, Happen};
    ///
    /// let happen = Happen::new();
    /// let report = happen.node("report").await?;
    /// report.on("build", |_e: Event, _c: Context| async {
    ///     tokio::time::sleep(Duration::from_secs(1)).await; // a slow report
    ///     "report.pdf"
    /// })?;
    /// let quick = report.send(&report, Event::new("build", ())).timeout(Duration::from_millis(100));
    /// assert!(quick.await.unwrap_err().is_timeout());
    /// let patient = report.send(&report, Event::new("build", ())).timeout(Duration::from_secs(5));
    /// assert_eq!(patient.await?, "report.pdf");
    /// # Ok(()) }
    /// ```
    pub fn timeout(mut self, timeout: Duration) -> Reply {
        self.stream.timeout = timeout;
        self
    }

    /// Waits for the final value and deserializes it into `T`.
    ///
    /// # Errors
    /// Every error of awaiting the reply, plus [`ErrorKind::InvalidPayload`](crate::ErrorKind::InvalidPayload) naming the field
    /// when the value does not fit `T`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// use happen::{Context, ErrorKind, Event, Happen, Json};
    ///
    /// #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    /// struct User { id: u32, name: String }
    ///
    /// let happen = Happen::new();
    /// let users = happen.node("users").await?;
    /// users.on("get", |Json(id): Json<u32>, _c: Context| async move {
    ///     Json(User { id, name: "ada".into() })
    /// })?;
    /// let user: User = users.send(&users, Event::new("get", 7)).decode().await?;
    /// assert_eq!(user, User { id: 7, name: "ada".into() });
    ///
    /// let err = users.send(&users, Event::new("get", 7)).decode::<u32>().await.unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::InvalidPayload);
    /// # Ok(()) }
    /// ```
    ///
    /// # Cancel safety
    /// Dropping the returned future drops the reply (see [`Reply`]'s cancel safety).
    pub async fn decode<T: DeserializeOwned>(self) -> Result<T> {
        let v = self.await?;
        decode_value("reply", &v)
    }

    /// Turns the reply into a stream of the flow's intermediate items, followed (through
    /// [`ReplyStream::final_value`]) by its final value. A flow that does not stream yields no
    /// items, then its value. Dropping the stream before its end cancels a streaming producer.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// use futures::StreamExt;
    /// use happen::{Context, Emitter, Event, Happen};
    ///
    /// let happen = Happen::new();
    /// let node = happen.node("n").await?;
    /// node.on("tail", |_e: Event, _c: Context, lines: Emitter| async move {
    ///     lines.emit("line 1").await?;
    ///     lines.emit("line 2").await?;
    ///     Ok::<_, happen::Error>("eof")
    /// })?;
    /// node.on("plain", |_e: Event, _c: Context| async { 42 })?;
    ///
    /// let mut stream = node.send(&node, Event::new("tail", ())).into_stream();
    /// assert_eq!(stream.next().await.unwrap()?, "line 1");
    /// assert_eq!(stream.next().await.unwrap()?, "line 2");
    /// assert!(stream.next().await.is_none());
    /// assert_eq!(stream.final_value().unwrap(), "eof");
    ///
    /// let mut plain = node.send(&node, Event::new("plain", ())).into_stream();
    /// assert!(plain.next().await.is_none()); // no items
    /// assert_eq!(plain.final_value().unwrap(), 42);
    /// # Ok(()) }
    /// ```
    pub fn into_stream(mut self) -> ReplyStream {
        let done = ReplyStream::new(StreamState::Done(None), self.stream.timeout);
        std::mem::replace(&mut self.stream, done)
    }
}

impl Future for Reply {
    type Output = Result<Value>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Result<Value>> {
        self.get_mut().stream.poll_final(cx)
    }
}

impl Drop for Reply {
    fn drop(&mut self) {
        if let (StreamState::Failed(Some(err)), Some(sender)) = (&self.stream.state, &self.sender) {
            sender.record(err);
        }
    }
}

impl fmt::Debug for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reply")
            .field("timeout", &self.stream.timeout)
            .finish_non_exhaustive()
    }
}
