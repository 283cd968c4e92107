//! [`Reply`]: the handle `send` returns — await it for the final value, stream it, or drop it.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll, ready};
use std::time::Duration;

use futures::Stream;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::time::Sleep;

use crate::error::{Error, ErrorKind, Result};
use crate::event::decode_value;
use crate::node::Node;
use crate::slot::{Received, SlotReceiver};
use crate::stream::{ItemStream, Response};

/// When an awaited reply arms its timeout timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Arm {
    /// At the first wait (a remote target: the answer is never immediate).
    Now,
    /// When the answering side says the answer will take a while (a local target: a flow that
    /// completes on its first poll answers before any timer would matter).
    OnNudge,
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
/// # Cancel safety
/// Awaiting `&mut reply` (for example as one branch of a `tokio::select!` loop) is cancel-safe:
/// the state lives in the `Reply`, so polling it again later continues where it stopped and
/// no answer is lost. Dropping the `Reply` itself abandons the answer: a plain flow still runs
/// to its end (its outcome is discarded; a failure is logged and counted as unobserved), and a
/// streaming flow is cancelled once the reply had started receiving its items.
#[must_use = "a Reply does nothing more when dropped: the event was sent; await it to get the final value"]
pub struct Reply {
    stream: ReplyStream,
    /// The sending node, to count a failure nobody observed.
    sender: Option<Node>,
}

impl Reply {
    pub(crate) fn waiting(rx: SlotReceiver, arm: Arm, timeout: Duration) -> Reply {
        Reply {
            stream: ReplyStream::new(StreamState::Waiting(rx, arm), timeout),
            sender: None,
        }
    }

    pub(crate) fn failed(err: Error, timeout: Duration, sender: Node) -> Reply {
        Reply {
            stream: ReplyStream::new(StreamState::Failed(Some(err)), timeout),
            sender: Some(sender),
        }
    }

    /// Sets how long to wait for the reply (for a stream: for each next item), counted from
    /// when the reply is first awaited. For a target in this process the timer is armed only
    /// once the answer is known not to be immediate (the event was queued, or its flow
    /// waits), so a flow that completes at once costs no timer; the deadline is the same.
    /// Set it before the first poll: a timer already armed keeps its deadline.
    pub fn timeout(mut self, timeout: Duration) -> Reply {
        self.stream.timeout = timeout;
        self
    }

    /// Waits for the final value and deserializes it into `T`.
    ///
    /// # Errors
    /// Every error of awaiting the reply, plus [`ErrorKind::InvalidPayload`] naming the field
    /// when the value does not fit `T`.
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
            sender.unobserved_failure(err);
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

/// A reply read as a stream: `Ok(item)`s in order; one `Err` if the flow failed; then `None`.
/// After `None`, [`final_value`](ReplyStream::final_value) holds the final value.
///
/// Each wait for the next item is bounded by the reply's timeout: a stream that stalls fails
/// with [`ErrorKind::Timeout`] after between one and two timeouts without an item (the timer
/// is re-armed lazily, to keep the clock off the per-item path).
pub struct ReplyStream {
    state: StreamState,
    timeout: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    /// An item arrived since the timer was last armed.
    progress: bool,
}

enum StreamState {
    Waiting(SlotReceiver, Arm),
    Streaming(ItemStream),
    Failed(Option<Error>),
    Done(Option<Value>),
}

impl ReplyStream {
    /// The flow's final value once the stream has ended successfully.
    pub fn final_value(&self) -> Option<&Value> {
        match &self.state {
            StreamState::Done(v) => v.as_ref(),
            _ => None,
        }
    }

    /// Skips remaining items and resolves to the final value.
    ///
    /// # Errors
    /// The flow's error, or a timeout waiting for an item.
    ///
    /// # Cancel safety
    /// Dropping the future drops the stream, which cancels a streaming producer.
    pub async fn finish(mut self) -> Result<Value> {
        std::future::poll_fn(|cx| self.poll_final(cx)).await
    }

    fn new(state: StreamState, timeout: Duration) -> ReplyStream {
        ReplyStream {
            state,
            timeout,
            sleep: None,
            progress: false,
        }
    }

    /// Polls past the remaining items to the final value (what awaiting a [`Reply`] does).
    fn poll_final(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<Value>> {
        loop {
            match ready!(Pin::new(&mut *self).poll_next(cx)) {
                Some(Ok(_item)) => continue,
                Some(Err(e)) => return Poll::Ready(Err(e)),
                // Taken, not cloned: a final value is read once through this path.
                None => {
                    let v = match &mut self.state {
                        StreamState::Done(v) => v.take(),
                        _ => None,
                    };
                    return Poll::Ready(Ok(v.unwrap_or(Value::Null)));
                }
            }
        }
    }

    fn poll_timeout(&mut self, cx: &mut TaskContext<'_>) -> Poll<Error> {
        let timeout = self.timeout;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        loop {
            ready!(sleep.as_mut().poll(cx));
            if !std::mem::take(&mut self.progress) {
                return Poll::Ready(Error::timeout(timeout));
            }
            // Items arrived since the timer was armed: re-arm instead of failing. Re-arming
            // lazily (not on every item) keeps the clock off the per-item path.
            sleep.as_mut().reset(tokio::time::Instant::now() + timeout);
        }
    }

    fn item_arrived(&mut self) {
        self.progress = true;
    }
}

impl Stream for ReplyStream {
    type Item = Result<Value>;

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Value>>> {
        // Every error a sender receives is marked as received, so a flow that passes it on
        // reports it as a downstream failure (see `ErrorKind::Downstream`).
        self.poll_inner(cx)
            .map(|item| item.map(|r| r.map_err(Error::received)))
    }
}

impl ReplyStream {
    fn poll_inner(&mut self, cx: &mut TaskContext<'_>) -> Poll<Option<Result<Value>>> {
        let this = self;
        loop {
            match &mut this.state {
                StreamState::Waiting(rx, arm) => match rx.poll_recv(cx) {
                    Received::Value(Response::Done(Ok(v))) => {
                        this.state = StreamState::Done(Some(v));
                        return Poll::Ready(None);
                    }
                    Received::Value(Response::Done(Err(e))) => {
                        this.state = StreamState::Done(None);
                        return Poll::Ready(Some(Err(e)));
                    }
                    Received::Value(Response::Stream(mut items)) => {
                        items.mark_consumed();
                        this.item_arrived();
                        this.state = StreamState::Streaming(items);
                    }
                    Received::Gone => {
                        this.state = StreamState::Done(None);
                        return Poll::Ready(Some(Err(Error::new(
                            ErrorKind::ShutDown,
                            "the target went away without answering (node or instance shut down)",
                        ))));
                    }
                    Received::Waiting { nudged } => {
                        if !nudged && *arm == Arm::OnNudge && this.sleep.is_none() {
                            return Poll::Pending;
                        }
                        let e = ready!(this.poll_timeout(cx));
                        this.state = StreamState::Done(None);
                        return Poll::Ready(Some(Err(e)));
                    }
                },
                StreamState::Streaming(items) => match Pin::new(&mut *items).poll_next(cx) {
                    Poll::Ready(Some(item)) => {
                        if item.is_err() {
                            this.state = StreamState::Done(None);
                        } else {
                            this.item_arrived();
                        }
                        return Poll::Ready(Some(item));
                    }
                    Poll::Ready(None) => {
                        let v = items.final_value().cloned();
                        this.state = StreamState::Done(v);
                        return Poll::Ready(None);
                    }
                    Poll::Pending => {
                        let e = ready!(this.poll_timeout(cx));
                        this.state = StreamState::Done(None); // drops the items: cancels the producer
                        return Poll::Ready(Some(Err(e)));
                    }
                },
                StreamState::Failed(e) => {
                    let e = e.take();
                    this.state = StreamState::Done(None);
                    match e {
                        Some(e) => return Poll::Ready(Some(Err(e))),
                        None => return Poll::Ready(None),
                    }
                }
                StreamState::Done(_) => return Poll::Ready(None),
            }
        }
    }
}

impl fmt::Debug for ReplyStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplyStream")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}
