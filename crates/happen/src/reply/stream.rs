//! [`ReplyStream`]: a reply read as a stream of items, then the final value.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll, ready};
use std::time::Duration;

use std::marker::PhantomData;
use std::sync::Arc;

use futures::Stream;
use futures::channel::oneshot;
use futures::future::{FutureExt, Shared};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::time::Sleep;

use crate::error::{Error, ErrorKind, Result};
use crate::event::{decode_owned, decode_value};
use crate::stream::{ItemStream, Received, Response, SlotReceiver};

use super::StartsHere;

/// A reply read as a stream (from [`Reply::into_stream`](crate::Reply::into_stream)):
/// `Ok(item)`s in order; one `Err` if the flow failed; then `None`.
///
/// The flow's final value is reachable three ways:
/// - [`final_value`](ReplyStream::final_value) once the stream returned `None` (in a
///   `while let` loop that keeps the stream);
/// - [`outcome`](ReplyStream::outcome): a future taken *before* handing the stream to a
///   combinator (`collect`, `try_for_each`, `forward`...) that consumes it; it resolves once
///   the stream has been read to its end;
/// - [`skip_to_final`](ReplyStream::skip_to_final): skip the remaining items.
///
/// Items are JSON values; [`typed`](ReplyStream::typed) reads them as any `Deserialize` type.
///
/// Each wait for the next item is bounded by the reply's timeout: a stream that stalls fails
/// with [`ErrorKind::Timeout`] after between one and two timeouts without an item (the timer
/// is re-armed lazily, to keep the clock off the per-item path).
///
/// # Cancel safety
/// Dropping the stream before its end cancels a streaming producer (its flow is dropped at its
/// current await point and counted as cancelled, not failed); dropping it before reading
/// anything is fire-and-forget, as for a [`Reply`](crate::Reply). `next()` is cancel-safe: an
/// item not yet returned stays in the stream.
///
/// # Panics
/// As [`Reply`](crate::Reply): polling it outside a Tokio runtime with timers enabled panics
/// once it has to wait.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
/// use futures::TryStreamExt;
/// use happen::{Context, Emitter, Event, Happen, Json};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize, Debug, PartialEq)]
/// struct Progress { done: u64 }
///
/// async fn job(Json(n): Json<u64>, _ctx: Context, emit: Emitter) -> happen::Result<String> {
///     for done in 1..=n {
///         emit.emit(Progress { done }).await?;
///     }
///     Ok(format!("{n} records"))
/// }
///
/// let happen = Happen::new();
/// let worker = happen.node("worker").await?;
/// worker.on("job", job)?;
///
/// let mut stream = worker.send(&worker, Event::new("job", 3)).into_stream().typed::<Progress>();
/// let outcome = stream.outcome(); // before `try_collect` takes the stream
/// let progress: Vec<Progress> = stream.try_collect().await?;
/// assert_eq!(progress.last(), Some(&Progress { done: 3 }));
/// assert_eq!(outcome.decode::<String>().await?, "3 records");
/// # Ok(()) }
/// ```
pub struct ReplyStream {
    pub(crate) state: StreamState,
    pub(crate) timeout: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    /// An item arrived since the timer was last armed.
    progress: bool,
    /// How the stream ended: `None` while open, `Some(Err)` if the flow failed.
    ended: Option<std::result::Result<(), Error>>,
    /// Set once [`outcome`](ReplyStream::outcome) was called (boxed: rarely used, and a
    /// `Reply` under 128 bytes is moved without a `memcpy` call).
    outcome: Option<Box<OutcomeSlot>>,
}

/// The sending side of the [`Outcome`]s of one stream.
struct OutcomeSlot {
    /// `None` once the outcome was sent.
    tx: Option<oneshot::Sender<Result<Value>>>,
    rx: Shared<oneshot::Receiver<Result<Value>>>,
}

pub(crate) enum StreamState {
    /// The answer's slot, and the target in this process until the first poll starts what
    /// can start there.
    Waiting(SlotReceiver, Option<Arc<dyn StartsHere>>),
    Streaming(ItemStream),
    Failed(Option<Error>),
    Done(Option<Value>),
}

impl ReplyStream {
    /// The flow's final value once the stream has ended successfully (`None` before the end,
    /// and after a failure). See [`Reply::into_stream`](crate::Reply::into_stream) for an
    /// example.
    pub fn final_value(&self) -> Option<&Value> {
        match &self.state {
            StreamState::Done(v) => v.as_ref(),
            _ => None,
        }
    }

    /// Skips remaining items and resolves to the final value.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// use futures::StreamExt;
    /// use happen::{Context, Emitter, Event, Happen};
    ///
    /// let happen = Happen::new();
    /// let node = happen.node("n").await?;
    /// node.on("scan", |_e: Event, _c: Context, hits: Emitter| async move {
    ///     for i in 0..10 {
    ///         hits.emit(i).await?;
    ///     }
    ///     Ok::<_, happen::Error>("10 hits")
    /// })?;
    /// let mut stream = node.send(&node, Event::new("scan", ())).into_stream();
    /// assert_eq!(stream.next().await.unwrap()?, 0); // look at the first item only
    /// assert_eq!(stream.skip_to_final().await?, "10 hits");
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// The flow's error, or a timeout waiting for an item.
    ///
    /// # Cancel safety
    /// Dropping the future drops the stream, which cancels a streaming producer.
    pub async fn skip_to_final(mut self) -> Result<Value> {
        std::future::poll_fn(|cx| self.poll_final(cx)).await
    }

    /// A future of the flow's outcome, which stays reachable after the stream itself was
    /// consumed by a combinator: it resolves once the stream has been read to its end, to
    /// the final value, or to the flow's error (the same error the stream yielded).
    ///
    /// Take it before giving the stream away, and await it after the stream was read (or
    /// concurrently with reading it): awaiting it *instead* of reading the stream waits until
    /// the stream is dropped. Every call returns a handle to the same outcome; after the end
    /// it resolves at once.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// use futures::StreamExt;
    /// use happen::{Context, Emitter, Event, Happen};
    ///
    /// let happen = Happen::new();
    /// let node = happen.node("n").await?;
    /// node.on("count", |_e: Event, _c: Context, emit: Emitter| async move {
    ///     for i in 0..3 {
    ///         emit.emit(i).await?;
    ///     }
    ///     Ok::<_, happen::Error>("counted")
    /// })?;
    /// let mut stream = node.send(&node, Event::new("count", ())).into_stream();
    /// let outcome = stream.outcome();
    /// let items: Vec<_> = stream.map(|item| item.unwrap()).collect().await;
    /// assert_eq!(items, [0, 1, 2]);
    /// assert_eq!(outcome.await?, "counted");
    /// # Ok(()) }
    /// ```
    ///
    /// The outcome fails with [`ErrorKind::Cancelled`] when the stream is dropped before its
    /// end (for example by `take(n)`), which also cancels the producing flow.
    pub fn outcome(&mut self) -> Outcome {
        if let Some(slot) = &self.outcome {
            return Outcome {
                rx: slot.rx.clone(),
            };
        }
        let (tx, rx) = oneshot::channel();
        let rx = rx.shared();
        let mut slot = OutcomeSlot {
            tx: Some(tx),
            rx: rx.clone(),
        };
        if self.ended.is_some() {
            send_outcome(&mut slot, self.end_result());
        }
        self.outcome = Some(Box::new(slot));
        Outcome { rx }
    }

    /// Reads the items as `T` instead of JSON values (see [`TypedStream`]).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// use futures::StreamExt;
    /// use happen::{Context, Emitter, ErrorKind, Event, Happen};
    /// use serde_json::json;
    ///
    /// #[derive(Debug, serde::Deserialize)]
    /// struct Progress { pct: u8 }
    ///
    /// let happen = Happen::new();
    /// let node = happen.node("n").await?;
    /// node.on("job", |_e: Event, _c: Context, emit: Emitter| async move {
    ///     emit.emit(json!({"pct": 50})).await?;
    ///     emit.emit(json!({"pct": "done"})).await?; // does not fit `Progress`
    ///     Ok::<_, happen::Error>(())
    /// })?;
    /// let mut items = node.send(&node, Event::new("job", ())).into_stream().typed::<Progress>();
    /// assert_eq!(items.next().await.unwrap()?.pct, 50);
    /// let err = items.next().await.unwrap().unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::InvalidPayload);
    /// assert!(err.message().contains("pct"), "{err}");
    /// assert!(items.next().await.is_none()); // the stream goes on after a bad item
    /// # Ok(()) }
    /// ```
    pub fn typed<T: DeserializeOwned>(self) -> TypedStream<T> {
        TypedStream {
            inner: self,
            index: 0,
            _item: PhantomData,
        }
    }

    pub(crate) fn new(state: StreamState, timeout: Duration) -> ReplyStream {
        ReplyStream {
            state,
            timeout,
            sleep: None,
            progress: false,
            ended: None,
            outcome: None,
        }
    }

    /// At the first wait for a final value from a target in this process: starts the
    /// target's next ready flow in this task (usually this reply's own, which then answers
    /// before the slot is read). Counted against Tokio's co-operative budget like a receive:
    /// a requester whose answers keep arriving at once still yields to the scheduler. Not
    /// for a reply read as a stream: its consumer must stay free to stop reading, so a
    /// producer never runs in the consumer's task.
    #[inline]
    fn start_here(&mut self, cx: &mut TaskContext<'_>) {
        if let StreamState::Waiting(_, here @ Some(_)) = &mut self.state
            && let Some(target) = here.take()
        {
            start_here(target, cx);
        }
    }

    /// The outcome of an ended stream.
    fn end_result(&self) -> Result<Value> {
        match &self.ended {
            Some(Err(e)) => Err(e.clone()),
            _ => Ok(self.final_value().cloned().unwrap_or(Value::Null)),
        }
    }

    /// Records how the stream ended, given what the last poll returned.
    fn note_end(&mut self, polled: &Option<Result<Value>>) {
        if self.ended.is_some() {
            return;
        }
        // Every path that ends the stream leaves it `Done`: with `None` (success) or after
        // one `Err` (failure). An `Ok` item never ends it.
        let ended = match (polled, &self.state) {
            (None, StreamState::Done(_)) => Ok(()),
            (Some(Err(e)), StreamState::Done(_)) => Err(e.clone()),
            _ => return,
        };
        self.ended = Some(ended);
        if self.outcome.is_some() {
            let result = self.end_result();
            if let Some(slot) = &mut self.outcome {
                send_outcome(slot, result);
            }
        }
    }

    /// Polls past the remaining items to the final value (what awaiting a [`Reply`] does).
    pub(crate) fn poll_final(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<Value>> {
        // The usual answer to a request, one final value, is taken straight from the slot;
        // anything else goes the stream's way, starting from what the slot held.
        self.start_here(cx);
        let mut first = None;
        if self.outcome.is_none()
            && let StreamState::Waiting(rx, _) = &mut self.state
        {
            match rx.poll_recv(cx) {
                Received::Value(Response::Done(Ok(v))) => {
                    self.state = StreamState::Done(None);
                    self.ended = Some(Ok(()));
                    return Poll::Ready(Ok(v));
                }
                received => first = Some(received),
            }
        }
        loop {
            match ready!(self.poll_next_with(first.take(), cx)) {
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
        self.poll_next_with(None, cx)
    }
}

impl ReplyStream {
    /// `poll_next`, with `first` (if any) taken as what the reply slot held.
    fn poll_next_with(
        &mut self,
        first: Option<Received>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Value>>> {
        // Every error a sender receives is marked as received, so a flow that passes it on
        // reports it as a downstream failure (see `ErrorKind::Downstream`).
        let polled = ready!(self.poll_inner(first, cx)).map(|r| r.map_err(Error::received));
        self.note_end(&polled);
        Poll::Ready(polled)
    }

    fn poll_inner(
        &mut self,
        mut first: Option<Received>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Value>>> {
        let this = self;
        loop {
            match &mut this.state {
                StreamState::Waiting(rx, _) => {
                    match first.take().unwrap_or_else(|| rx.poll_recv(cx)) {
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
                            // No timer until the slot is nudged: a flow that completes at once
                            // answers before any timer would matter.
                            if !nudged && this.sleep.is_none() {
                                return Poll::Pending;
                            }
                            // The node that said it would answer, to name it if it does not.
                            let from = if nudged { rx.nudged_by() } else { None };
                            let mut e = ready!(this.poll_timeout(cx));
                            if let Some(node) = from {
                                e = e.unanswered_by(&node);
                            }
                            this.state = StreamState::Done(None);
                            return Poll::Ready(Some(Err(e)));
                        }
                    }
                }
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

/// See [`ReplyStream::start_here`].
fn start_here(target: Arc<dyn StartsHere>, cx: &mut TaskContext<'_>) {
    if let Poll::Ready(coop) = tokio::task::coop::poll_proceed(cx)
        && target.start_here()
    {
        coop.made_progress();
    }
}

fn send_outcome(slot: &mut OutcomeSlot, result: Result<Value>) {
    if let Some(tx) = slot.tx.take() {
        let _ = tx.send(result);
    }
}

/// The outcome of a [`ReplyStream`], from [`ReplyStream::outcome`]: resolves to the flow's
/// final value, or its error, once the stream has been read to its end.
///
/// It does not read the stream itself: await it after (or while) the stream is read. See
/// [`ReplyStream::outcome`] for an example.
///
/// # Errors
/// Resolves to the flow's error if it failed, a timeout if the stream timed out, and
/// [`ErrorKind::Cancelled`] if the stream was dropped before its end.
///
/// # Cancel safety
/// Cancel-safe: it only observes the stream; dropping it changes nothing, and another handle
/// (or the same one, awaited by reference) still resolves.
#[must_use = "futures do nothing unless awaited"]
pub struct Outcome {
    rx: Shared<oneshot::Receiver<Result<Value>>>,
}

impl Outcome {
    /// Waits for the final value and deserializes it into `T`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// use futures::StreamExt;
    /// use happen::{Context, Emitter, Event, Happen};
    /// use serde_json::json;
    ///
    /// #[derive(serde::Deserialize)]
    /// struct Summary { rows: u32 }
    ///
    /// let happen = Happen::new();
    /// let db = happen.node("db").await?;
    /// db.on("export", |_e: Event, _c: Context, rows: Emitter| async move {
    ///     rows.emit(json!({"id": 1})).await?;
    ///     Ok::<_, happen::Error>(json!({"rows": 1}))
    /// })?;
    /// let mut stream = db.send(&db, Event::new("export", ())).into_stream();
    /// let outcome = stream.outcome();
    /// assert_eq!(stream.count().await, 1);
    /// let summary: Summary = outcome.decode().await?;
    /// assert_eq!(summary.rows, 1);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As awaiting the outcome, plus [`ErrorKind::InvalidPayload`] naming the field when the
    /// value does not fit `T`.
    ///
    /// # Cancel safety
    /// Cancel-safe, as the [`Outcome`] itself.
    pub async fn decode<T: DeserializeOwned>(self) -> Result<T> {
        let v = self.await?;
        decode_value("reply", &v)
    }
}

impl Future for Outcome {
    type Output = Result<Value>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Result<Value>> {
        Pin::new(&mut self.rx).poll(cx).map(|r| {
            r.unwrap_or_else(|_| {
                Err(Error::new(
                    ErrorKind::Cancelled,
                    "the reply stream was dropped before its end, so the flow was cancelled and has no final value; read the stream to its end to get it",
                ))
            })
        })
    }
}

impl fmt::Debug for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Outcome").finish_non_exhaustive()
    }
}

/// A [`ReplyStream`] whose items are deserialized into `T` (from [`ReplyStream::typed`]).
///
/// Yields `Ok(T)` per item; an item that does not fit `T` yields one
/// `Err` of kind [`ErrorKind::InvalidPayload`] naming the item's index and the field, and the
/// stream goes on (stop reading it to cancel the producer). The flow's own error, if it fails,
/// is one `Err` as in [`ReplyStream`]; then `None`. The final value stays JSON:
/// [`final_value`](TypedStream::final_value), [`outcome`](TypedStream::outcome) (with
/// [`Outcome::decode`]) or [`skip_to_final`](TypedStream::skip_to_final).
///
/// Dropping it before the end cancels the producer, as for [`ReplyStream`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
/// use futures::StreamExt;
/// use happen::{Context, Emitter, Event, Happen, Json};
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Temp { celsius: f64 }
///
/// let happen = Happen::new();
/// let sensor = happen.node("sensor").await?;
/// sensor.on("read", |_e: Event, _c: Context, out: Emitter| async move {
///     for celsius in [20.5, 21.0] {
///         out.emit(Temp { celsius }).await?;
///     }
///     Ok::<_, happen::Error>(Json(Temp { celsius: 20.75 })) // the average
/// })?;
/// let mut temps = sensor.send(&sensor, Event::new("read", ())).into_stream().typed::<Temp>();
/// let first: Temp = temps.next().await.unwrap()?;
/// assert_eq!(first.celsius, 20.5);
/// let average = temps.skip_to_final().await?;
/// assert_eq!(average["celsius"], 20.75);
/// # Ok(()) }
/// ```
pub struct TypedStream<T> {
    inner: ReplyStream,
    /// Index of the next item, for error messages.
    index: u64,
    _item: PhantomData<fn() -> T>,
}

impl<T> TypedStream<T> {
    /// The flow's final value once the stream has ended successfully (see
    /// [`ReplyStream::final_value`]).
    pub fn final_value(&self) -> Option<&Value> {
        self.inner.final_value()
    }

    /// A future of the flow's outcome (see [`ReplyStream::outcome`]).
    pub fn outcome(&mut self) -> Outcome {
        self.inner.outcome()
    }

    /// Skips remaining items and resolves to the final value.
    ///
    /// # Errors
    /// The flow's error, or a timeout waiting for an item.
    ///
    /// # Cancel safety
    /// Dropping the future drops the stream, which cancels a streaming producer.
    pub async fn skip_to_final(self) -> Result<Value> {
        self.inner.skip_to_final().await
    }

    /// The untyped stream back (the items not read yet, as JSON values).
    pub fn into_inner(self) -> ReplyStream {
        self.inner
    }
}

impl<T: DeserializeOwned> Stream for TypedStream<T> {
    type Item = Result<T>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Result<T>>> {
        let this = &mut *self;
        Poll::Ready(match ready!(Pin::new(&mut this.inner).poll_next(cx)) {
            Some(Ok(v)) => {
                let index = this.index;
                this.index += 1;
                Some(decode_owned(format_args!("stream item {index}"), v))
            }
            Some(Err(e)) => Some(Err(e)),
            None => None,
        })
    }
}

impl<T> fmt::Debug for TypedStream<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TypedStream")
            .field("item", &std::any::type_name::<T>())
            .field("next_index", &self.index)
            .finish_non_exhaustive()
    }
}
