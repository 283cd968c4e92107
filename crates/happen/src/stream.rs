//! Streaming results: a step emits items, then the flow's final value ends the stream.
//!
//! A streaming step takes an [`Emitter`] as its third argument. Items go through a bounded
//! channel (the node's `stream_buffer`, default 64): when the consumer is slower than the
//! producer, [`Emitter::emit`] waits, so memory stays constant however long the stream;
//! [`Emitter::try_emit`] does not wait and drops the item instead (for progress updates).
//! The consumer reads items as JSON values, or as any `Deserialize` type with
//! [`ReplyStream::typed`](crate::ReplyStream::typed); the final value stays reachable after a
//! combinator consumed the stream through [`ReplyStream::outcome`](crate::ReplyStream::outcome).
//! When the consumer drops the stream before its end, the producing flow is cancelled: its
//! future is dropped at its current await point, so `Drop` guards (the seed's `finally`) run.
//! When nobody consumes (the sender dropped its [`Reply`](crate::Reply) without awaiting it,
//! i.e. fire-and-forget), items are discarded and the flow runs to its end.
//!
//! ```
//! use futures::StreamExt;
//! use happen::{Context, Emitter, Event, Happen};
//!
//! async fn count(event: Event, _ctx: Context, emit: Emitter) -> happen::Result<&'static str> {
//!     let n = event.payload().as_u64().unwrap_or(0);
//!     for i in 0..n {
//!         emit.emit(i).await?;
//!     }
//!     Ok("done")
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
//! let happen = Happen::new();
//! let node = happen.node("counter").await?;
//! node.on("count", count)?;
//!
//! let mut stream = node.send(&node, Event::new("count", 3)).into_stream();
//! let mut items = Vec::new();
//! while let Some(item) = stream.next().await {
//!     items.push(item?);
//! }
//! assert_eq!(items, [0, 1, 2]);
//! assert_eq!(stream.final_value(), Some(&serde_json::json!("done")));
//!
//! // Awaiting the reply directly skips the items and yields the final value.
//! assert_eq!(node.send(&node, Event::new("count", 5)).await?, "done");
//! # Ok(()) }
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context as TaskContext, Poll};

use futures::task::AtomicWaker;
use parking_lot::Mutex;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::{broadcast, mpsc};

use crate::slot::{SlotReceiver, SlotSender};
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

use crate::context::Context;
use crate::error::{Error, ErrorKind, Result};

/// What a flow answers to its sender: a final outcome, or a stream of items that ends with one.
///
/// Transports pass this between a node's flow and a (possibly remote) sender.
pub enum Response {
    /// The flow finished without streaming.
    Done(Result<Value>),
    /// The flow streams items; the stream ends with the final outcome.
    Stream(ItemStream),
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Response::Done(r) => f.debug_tuple("Done").field(r).finish(),
            Response::Stream(_) => f.write_str("Stream(..)"),
        }
    }
}

/// The sending half of a reply path: the engine (or a transport) answers through it once.
pub struct ReplySender(pub(crate) SlotSender);

/// The receiving half of a reply path: resolves to the [`Response`], or to
/// [`ErrorKind::ShutDown`] if the answering side went away without answering.
pub struct ReplyReceiver(pub(crate) SlotReceiver);

impl fmt::Debug for ReplySender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplySender").finish_non_exhaustive()
    }
}

impl fmt::Debug for ReplyReceiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplyReceiver").finish_non_exhaustive()
    }
}

/// A fresh reply path. Transports use it to receive the outcome of a local flow (to forward it
/// over the wire) or to hand a remote outcome to a local sender.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use happen::stream::{reply_channel, Response};
/// let (tx, rx) = reply_channel();
/// tx.send(Response::Done(Ok(serde_json::json!(1))));
/// assert!(matches!(rx.await, Response::Done(Ok(v)) if v == 1));
/// # }
/// ```
pub fn reply_channel() -> (ReplySender, ReplyReceiver) {
    let (tx, rx) = crate::slot::slot();
    (ReplySender(tx), ReplyReceiver(rx))
}

impl ReplySender {
    /// Answers. Returns the response back if the receiver is gone.
    pub fn send(self, response: Response) -> std::result::Result<(), Response> {
        self.0.send(response)
    }

    /// Is the receiving side gone?
    pub fn is_closed(&self) -> bool {
        self.0.is_closed()
    }
}

impl Future for ReplyReceiver {
    type Output = Response;
    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Response> {
        self.0.poll_value(cx).map(|r| {
            r.unwrap_or_else(|| {
                Response::Done(Err(Error::new(
                    ErrorKind::ShutDown,
                    "the answering side went away without answering (node or transport shut down)",
                )))
            })
        })
    }
}

/// State shared by the producing and consuming ends of one stream.
pub(crate) struct StreamShared {
    cancelled: AtomicBool,
    /// Woken when the consumer cancels, so the producing flow is dropped promptly.
    producer: AtomicWaker,
    /// Woken when the end is set (emitter handles may keep the channel open).
    consumer: AtomicWaker,
    end: Mutex<Option<Result<Value>>>,
}

/// Creates a bounded stream: items sent through the [`StreamSender`] are received from the
/// [`ItemStream`] in order, then the final outcome. Transports use this to bridge remote
/// streams; handlers use an [`Emitter`] instead.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use futures::StreamExt;
/// let (tx, mut rx) = happen::stream::channel(4);
/// tokio::spawn(async move {
///     tx.send(serde_json::json!(1)).await.unwrap();
///     tx.finish(Ok(serde_json::json!("end")));
/// });
/// assert_eq!(rx.next().await.unwrap().unwrap(), 1);
/// assert!(rx.next().await.is_none());
/// assert_eq!(rx.final_value(), Some(&serde_json::json!("end")));
/// # }
/// ```
pub fn channel(capacity: usize) -> (StreamSender, ItemStream) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let shared = Arc::new(StreamShared {
        cancelled: AtomicBool::new(false),
        producer: AtomicWaker::new(),
        consumer: AtomicWaker::new(),
        end: Mutex::new(None),
    });
    (
        StreamSender {
            tx,
            shared: shared.clone(),
        },
        ItemStream {
            rx,
            shared,
            state: EndState::Open,
            consumed: false,
        },
    )
}

/// The producing end of a stream (see [`channel`]).
pub struct StreamSender {
    tx: mpsc::Sender<Value>,
    shared: Arc<StreamShared>,
}

impl StreamSender {
    /// Sends one item, waiting while the buffer is full.
    ///
    /// # Errors
    /// [`ErrorKind::Cancelled`] when the consumer dropped the stream.
    ///
    /// # Cancel safety
    /// Cancel-safe: if the future is dropped before completing, the item was not sent.
    pub async fn send(&self, item: Value) -> Result<()> {
        self.tx.send(item).await.map_err(|_| Error::cancelled())
    }

    /// Ends the stream with its final outcome.
    pub fn finish(self, outcome: Result<Value>) {
        *self.shared.end.lock() = Some(outcome);
        // The consumer reads the end after the items: when the channel closes (dropping
        // `tx`), or when woken here while an emitter handle still holds a sender.
        self.shared.consumer.wake();
    }

    /// Did the consumer drop the stream?
    pub fn is_cancelled(&self) -> bool {
        self.shared.cancelled.load(Ordering::Acquire)
    }

    /// Resolves when the consumer drops the stream before its end.
    pub async fn cancelled(&self) {
        futures::future::poll_fn(|cx| {
            self.shared.producer.register(cx.waker());
            if self.is_cancelled() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    }

    /// Number of items that may be sent without waiting.
    pub fn capacity(&self) -> usize {
        self.tx.capacity()
    }
}

impl fmt::Debug for StreamSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamSender").finish_non_exhaustive()
    }
}

enum EndState {
    Open,
    Ended(Option<Value>),
}

/// The consuming end of a stream: a [`futures::Stream`] of items, then the final value.
///
/// Yields `Ok(item)` for each item in order; if the producer failed, yields one `Err` after the
/// items it produced; then `None`. After the end, [`final_value`](ItemStream::final_value) holds
/// the flow's final value. Dropping it before the end cancels the producer.
pub struct ItemStream {
    rx: mpsc::Receiver<Value>,
    shared: Arc<StreamShared>,
    state: EndState,
    /// Set once a consumer has read from it; only a consumer that started reading cancels the
    /// producer on drop (an unconsumed reply is fire-and-forget).
    consumed: bool,
}

impl ItemStream {
    /// The final value, once the stream has ended successfully.
    pub fn final_value(&self) -> Option<&Value> {
        match &self.state {
            EndState::Ended(v) => v.as_ref(),
            EndState::Open => None,
        }
    }

    /// Skips the remaining items and resolves to the final value (or the producer's error).
    ///
    /// # Cancel safety
    /// Dropping the future drops the stream, which cancels the producer.
    pub async fn finish(mut self) -> Result<Value> {
        use futures::StreamExt;
        while let Some(item) = self.next().await {
            item?;
        }
        self.final_value()
            .cloned()
            .ok_or_else(|| Error::new(ErrorKind::Cancelled, "stream ended without a final value"))
    }

    /// Marks the stream as consumed (dropping it will cancel the producer).
    pub(crate) fn mark_consumed(&mut self) {
        self.consumed = true;
    }
}

impl futures::Stream for ItemStream {
    type Item = Result<Value>;

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Value>>> {
        self.consumed = true;
        if let EndState::Ended(_) = self.state {
            return Poll::Ready(None);
        }
        let polled = match self.rx.poll_recv(cx) {
            Poll::Pending => {
                self.shared.consumer.register(cx.waker());
                if self.shared.end.lock().is_none() {
                    return Poll::Pending;
                }
                // The end is set, so every item was sent before it: drain, then end.
                match self.rx.try_recv() {
                    Ok(v) => Poll::Ready(Some(v)),
                    Err(_) => Poll::Ready(None),
                }
            }
            other => other,
        };
        match polled {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(v)) => Poll::Ready(Some(Ok(v))),
            Poll::Ready(None) => {
                let end = self.shared.end.lock().take();
                match end {
                    Some(Ok(v)) => {
                        self.state = EndState::Ended(Some(v));
                        Poll::Ready(None)
                    }
                    Some(Err(e)) => {
                        self.state = EndState::Ended(None);
                        Poll::Ready(Some(Err(e)))
                    }
                    None => {
                        self.state = EndState::Ended(None);
                        Poll::Ready(Some(Err(Error::new(
                            ErrorKind::ShutDown,
                            "the producer went away before finishing the stream",
                        ))))
                    }
                }
            }
        }
    }
}

impl Drop for ItemStream {
    fn drop(&mut self) {
        if self.consumed && matches!(self.state, EndState::Open) {
            self.shared.cancelled.store(true, Ordering::Release);
            self.shared.producer.wake();
        }
    }
}

impl fmt::Debug for ItemStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ItemStream").finish_non_exhaustive()
    }
}

// ---- the flow side --------------------------------------------------------------------------

/// Per-flow reply state: where the outcome goes, and the stream once one started.
pub(crate) struct FlowStream {
    state: Mutex<FlowReply>,
    capacity: usize,
    /// Set when the flow's event is a broadcast carrying a stream to subscribers.
    broadcast: Option<Arc<BroadcastSource>>,
    /// Set once the flow streams to a consumer (a lock-free check for every poll).
    streaming: AtomicBool,
}

enum FlowReply {
    /// Not streaming yet; `None` when nobody asked for a reply.
    Pending(Option<SlotSender>),
    /// Streaming to a consumer.
    Streaming(StreamSender),
    /// Streaming to the subscribers of a broadcast.
    Broadcasting(broadcast::Sender<Frame>),
    /// Streaming with nobody listening: items are discarded.
    Discarding,
    Finished,
}

/// Outcome of finishing a flow's reply.
pub(crate) enum Delivered {
    Yes,
    /// Nobody was listening; the outcome is returned for logging.
    Unobserved(Result<Value>),
}

impl FlowStream {
    pub(crate) fn new(
        reply: Option<SlotSender>,
        capacity: usize,
        broadcast: Option<Arc<BroadcastSource>>,
    ) -> FlowStream {
        FlowStream {
            state: Mutex::new(FlowReply::Pending(reply)),
            capacity,
            broadcast,
            streaming: AtomicBool::new(false),
        }
    }

    /// Starts streaming (idempotent); returns the sender, or `None` when items are discarded.
    pub(crate) fn start(&self) -> Option<Arc<StreamShared>> {
        let mut st = self.state.lock();
        if let FlowReply::Pending(reply) = &mut *st {
            let next = match reply.take() {
                Some(tx) if !tx.is_closed() => {
                    let (sender, items) = channel(self.capacity);
                    match tx.send(Response::Stream(items)) {
                        Ok(()) => {
                            self.streaming.store(true, Ordering::Release);
                            FlowReply::Streaming(sender)
                        }
                        Err(_) => FlowReply::Discarding,
                    }
                }
                Some(_) => FlowReply::Discarding,
                None => match self.broadcast.as_ref().and_then(|b| b.claim()) {
                    Some(tx) => FlowReply::Broadcasting(tx),
                    None => FlowReply::Discarding,
                },
            };
            *st = next;
        }
        match &*st {
            FlowReply::Streaming(s) => Some(s.shared.clone()),
            _ => None,
        }
    }

    /// Tells a waiting sender that the answer will not be immediate (see [`crate::slot`]).
    pub(crate) fn nudge(&self, node: &crate::id::NodeId) {
        if let FlowReply::Pending(Some(tx)) = &*self.state.lock() {
            tx.nudge(node);
        }
    }

    /// Where this flow's items go, once streaming has started.
    fn sink(&self) -> Sink {
        match &*self.state.lock() {
            FlowReply::Streaming(s) => Sink::Channel(s.tx.clone(), s.shared.clone()),
            FlowReply::Broadcasting(tx) => Sink::Broadcast(tx.clone()),
            FlowReply::Discarding => Sink::Discard,
            FlowReply::Pending(_) | FlowReply::Finished => Sink::Ended,
        }
    }

    /// The shared state of an active stream, for cancellation checks.
    pub(crate) fn active(&self) -> Option<Arc<StreamShared>> {
        if !self.streaming.load(Ordering::Acquire) {
            return None;
        }
        match &*self.state.lock() {
            FlowReply::Streaming(s) => Some(s.shared.clone()),
            _ => None,
        }
    }

    /// Delivers the flow's outcome (as a plain reply or as the stream's end).
    pub(crate) fn finish(&self, outcome: Result<Value>) -> Delivered {
        let prev = std::mem::replace(&mut *self.state.lock(), FlowReply::Finished);
        match prev {
            FlowReply::Pending(Some(tx)) => match tx.send(Response::Done(outcome)) {
                Ok(()) => Delivered::Yes,
                Err(Response::Done(outcome)) => Delivered::Unobserved(outcome),
                Err(Response::Stream(_)) => Delivered::Yes,
            },
            FlowReply::Pending(None) | FlowReply::Discarding | FlowReply::Finished => {
                Delivered::Unobserved(outcome)
            }
            FlowReply::Broadcasting(tx) => {
                let failed = outcome.as_ref().err().cloned();
                let _ = tx.send(Frame::End(outcome));
                match failed {
                    Some(e) => Delivered::Unobserved(Err(e)),
                    None => Delivered::Yes,
                }
            }
            FlowReply::Streaming(s) => {
                let observed = !s.tx.is_closed();
                if observed {
                    s.finish(outcome);
                    Delivered::Yes
                } else {
                    Delivered::Unobserved(outcome)
                }
            }
        }
    }
}

impl StreamShared {
    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }

    pub(crate) fn register(&self, cx: &TaskContext<'_>) {
        self.producer.register(cx.waker());
    }
}

/// Emits the intermediate items of a streaming step (the third handler argument).
///
/// The first emit turns the flow's reply into a stream. Items are JSON values; use
/// [`emit_json`](Emitter::emit_json) for any `Serialize` type. [`emit`](Emitter::emit) waits
/// while the consumer's buffer is full (nothing is lost, the producer goes at the reader's
/// pace); [`try_emit`](Emitter::try_emit) never waits and drops the item instead (for
/// progress updates, where only the latest matters).
#[derive(Clone)]
pub struct Emitter {
    ctx: Context,
    /// The destination, looked up once so each item goes straight into the channel.
    sink: std::sync::OnceLock<Sink>,
}

/// Where a streaming flow's items go.
#[derive(Clone)]
enum Sink {
    Channel(mpsc::Sender<Value>, Arc<StreamShared>),
    Broadcast(broadcast::Sender<Frame>),
    Discard,
    Ended,
}

impl Emitter {
    pub(crate) fn new(ctx: Context) -> Emitter {
        Emitter {
            ctx,
            sink: std::sync::OnceLock::new(),
        }
    }

    /// Emits one item, waiting while the consumer's buffer is full.
    ///
    /// # Errors
    /// [`ErrorKind::Cancelled`] when the consumer dropped the stream (the flow is being
    /// cancelled; return the error with `?`).
    ///
    /// # Cancel safety
    /// If the future is dropped before completing, the item was not emitted.
    pub async fn emit(&self, item: impl Into<Value>) -> Result<()> {
        match self.sink() {
            Sink::Channel(tx, shared) => match tx.send(item.into()).await {
                Ok(()) => Ok(()),
                Err(_) if shared.is_cancelled() => Err(Error::cancelled()),
                // The reply was dropped without being read: fire-and-forget, discard.
                Err(_) => Ok(()),
            },
            Sink::Broadcast(tx) => {
                // Never blocks: subscribers that fall behind skip items (they are told).
                let _ = tx.send(Frame::Item(item.into()));
                Ok(())
            }
            Sink::Discard => Ok(()),
            Sink::Ended => Err(ended()),
        }
    }

    /// Emits a `Serialize` item.
    ///
    /// # Errors
    /// As [`emit`](Emitter::emit), plus [`ErrorKind::InvalidPayload`] if `item` is not JSON-able.
    pub async fn emit_json<T: Serialize>(&self, item: &T) -> Result<()> {
        self.emit(to_item(item)?).await
    }

    /// Emits one item if the consumer's buffer has room, without waiting: `Ok(true)` when the
    /// item was taken, `Ok(false)` when the buffer was full and the item was dropped. For
    /// updates where only the latest matters (progress, a gauge): a slow reader then never
    /// slows the producer; it reads the items already buffered and misses those dropped in
    /// between.
    ///
    /// Delivery: the newest item is the one dropped (the buffered ones stay), so the reader
    /// is at most one buffer behind; a small buffer
    /// ([`NodeOptions::stream_buffer`](crate::NodeOptions::stream_buffer)) keeps what it reads
    /// recent. An item that must arrive (the last one, "100%") goes through
    /// [`emit`](Emitter::emit), or into the flow's final value. With nobody reading (a
    /// fire-and-forget send) and in broadcast streams, which never wait, items are taken:
    /// `Ok(true)`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// use futures::StreamExt;
    /// use happen::{Context, Emitter, Event, Happen, NodeOptions};
    /// use serde_json::json;
    ///
    /// async fn import(_e: Event, _c: Context, progress: Emitter) -> happen::Result<serde_json::Value> {
    ///     let (mut shown, mut skipped) = (0, 0);
    ///     for done in 1..=100_000u64 {
    ///         // ... import one record ...
    ///         if done % 1_000 == 0 {
    ///             if progress.try_emit(json!({"done": done}))? { shown += 1 } else { skipped += 1 }
    ///         }
    ///     }
    ///     Ok(json!({"imported": 100_000, "shown": shown, "skipped": skipped}))
    /// }
    ///
    /// let happen = Happen::new();
    /// let importer = happen.node_with("importer", NodeOptions::new().stream_buffer(2)).await?;
    /// importer.on("import", import)?;
    /// let mut stream = importer.send(&importer, Event::new("import", ())).into_stream();
    /// let outcome = stream.outcome();
    /// // This reader is slow (it starts after the job is done): the job did not wait for it.
    /// let seen: Vec<_> = stream.collect().await;
    /// let summary = outcome.await?;
    /// assert_eq!(summary["imported"], 100_000);
    /// assert_eq!(summary["shown"], seen.len());
    /// assert_eq!(summary["shown"].as_u64().unwrap() + summary["skipped"].as_u64().unwrap(), 100);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`ErrorKind::Cancelled`] when the consumer dropped the stream (the flow is being
    /// cancelled; return the error with `?`).
    pub fn try_emit(&self, item: impl Into<Value>) -> Result<bool> {
        match self.sink() {
            Sink::Channel(tx, shared) => match tx.try_send(item.into()) {
                Ok(()) => Ok(true),
                Err(mpsc::error::TrySendError::Full(_)) => Ok(false),
                Err(mpsc::error::TrySendError::Closed(_)) if shared.is_cancelled() => {
                    Err(Error::cancelled())
                }
                // The reply was dropped without being read: fire-and-forget, discard.
                Err(mpsc::error::TrySendError::Closed(_)) => Ok(true),
            },
            Sink::Broadcast(tx) => {
                let _ = tx.send(Frame::Item(item.into()));
                Ok(true)
            }
            Sink::Discard => Ok(true),
            Sink::Ended => Err(ended()),
        }
    }

    /// [`try_emit`](Emitter::try_emit) for a `Serialize` item.
    ///
    /// # Errors
    /// As [`try_emit`](Emitter::try_emit), plus [`ErrorKind::InvalidPayload`] if `item` is not
    /// JSON-able.
    pub fn try_emit_json<T: Serialize>(&self, item: &T) -> Result<bool> {
        self.try_emit(to_item(item)?)
    }

    /// Where items go, looked up at the first emit (which turns the reply into a stream).
    fn sink(&self) -> &Sink {
        self.sink.get_or_init(|| {
            let stream = &self.ctx.inner.stream;
            stream.start();
            stream.sink()
        })
    }
}

fn to_item<T: Serialize>(item: &T) -> Result<Value> {
    serde_json::to_value(item).map_err(|e| {
        Error::new(
            ErrorKind::InvalidPayload,
            format!("stream item cannot be serialized: {e}"),
        )
        .with_source(e)
    })
}

fn ended() -> Error {
    Error::new(ErrorKind::Cancelled, "this flow's stream has already ended")
}

impl fmt::Debug for Emitter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Emitter").finish_non_exhaustive()
    }
}

// ---- streams over broadcast -----------------------------------------------------------------

/// A frame of a broadcast stream.
#[derive(Clone)]
pub(crate) enum Frame {
    Item(Value),
    /// Items lost before they reached this process (reported by a transport).
    Lagged(u64),
    End(Result<Value>),
}

/// The channel behind one broadcast stream. Created when a broadcast reaches a streaming
/// handler; every other receiving node subscribes before any item is produced.
pub(crate) struct BroadcastSource {
    tx: Mutex<Option<broadcast::Sender<Frame>>>,
}

impl BroadcastSource {
    pub(crate) fn new(capacity: usize) -> Arc<BroadcastSource> {
        let (tx, _) = broadcast::channel(capacity.max(1));
        Arc::new(BroadcastSource {
            tx: Mutex::new(Some(tx)),
        })
    }

    pub(crate) fn subscribe(&self) -> Option<broadcast::Receiver<Frame>> {
        self.tx.lock().as_ref().map(broadcast::Sender::subscribe)
    }

    /// The first streaming flow claims the producing end; later ones get `None`.
    fn claim(&self) -> Option<broadcast::Sender<Frame>> {
        self.tx.lock().take()
    }
}

/// The feeding end of a broadcast stream whose producer runs elsewhere: a transport creates one
/// per remote broadcast stream, delivers the broadcast event to each local subscribing node
/// with [`Inbox::deliver_with_items`](crate::Inbox::deliver_with_items), and feeds it the frames
/// that arrive. Never blocks; local subscribers lag per the [`BroadcastItems`] policy.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use futures::StreamExt;
/// use happen::stream::{BroadcastFeed, StreamItem};
///
/// let feed = BroadcastFeed::new(16);
/// let mut items = feed.subscribe().into_items();
/// feed.item(serde_json::json!(1));
/// feed.lagged(2); // two items were lost on the way
/// feed.finish(Ok(serde_json::json!("done")));
/// assert_eq!(items.next().await.unwrap().unwrap(), StreamItem::Item(serde_json::json!(1)));
/// assert_eq!(items.next().await.unwrap().unwrap(), StreamItem::Lagged(2));
/// assert!(items.next().await.is_none());
/// assert_eq!(items.final_value(), Some(&serde_json::json!("done")));
/// # }
/// ```
pub struct BroadcastFeed {
    tx: broadcast::Sender<Frame>,
}

/// One subscriber's receiving end of a [`BroadcastFeed`].
pub struct FeedSubscription(pub(crate) broadcast::Receiver<Frame>);

impl BroadcastFeed {
    /// A feed buffering up to `capacity` frames per subscriber.
    pub fn new(capacity: usize) -> BroadcastFeed {
        BroadcastFeed {
            tx: broadcast::channel(capacity.max(1)).0,
        }
    }

    /// A new subscriber (subscribe every local node before feeding the first item).
    pub fn subscribe(&self) -> FeedSubscription {
        FeedSubscription(self.tx.subscribe())
    }

    /// Feeds one item.
    pub fn item(&self, item: Value) {
        let _ = self.tx.send(Frame::Item(item));
    }

    /// Reports `missed` items lost before they reached this process.
    pub fn lagged(&self, missed: u64) {
        let _ = self.tx.send(Frame::Lagged(missed));
    }

    /// Ends the stream with the producer's outcome.
    pub fn finish(self, outcome: Result<Value>) {
        let _ = self.tx.send(Frame::End(outcome));
    }
}

impl FeedSubscription {
    /// Reads the subscription directly (transports deliver it to a node instead).
    pub fn into_items(self) -> BroadcastItems {
        BroadcastItems::new(self.0)
    }
}

impl fmt::Debug for BroadcastFeed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BroadcastFeed").finish_non_exhaustive()
    }
}

impl fmt::Debug for FeedSubscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FeedSubscription").finish_non_exhaustive()
    }
}

/// One item of a broadcast stream as a subscriber sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamItem {
    /// The next item.
    Item(Value),
    /// This subscriber fell more than its buffer behind: this many items were skipped.
    Lagged(u64),
}

/// The items of a broadcast stream, as received by one subscribing node's flow
/// (from [`Context::items`](crate::Context::items)).
///
/// # Lag policy
/// Each subscriber has its own bounded buffer (`streams.broadcast_buffer`, default 256, rounded
/// up to a power of two; the end marker takes one slot). The
/// producer never waits for subscribers. A subscriber that falls further behind than its buffer
/// skips the oldest items and receives one [`StreamItem::Lagged`] with the number it missed,
/// then continues with the oldest item still buffered. Other subscribers are not affected.
///
/// Yields `Ok(StreamItem)`s; if the producer failed, one `Err`; then `None`. After the end,
/// [`final_value`](BroadcastItems::final_value) holds the producer's final value.
pub struct BroadcastItems {
    inner: BroadcastStream<Frame>,
    end: Option<Option<Value>>,
}

impl BroadcastItems {
    pub(crate) fn new(rx: broadcast::Receiver<Frame>) -> BroadcastItems {
        BroadcastItems {
            inner: BroadcastStream::new(rx),
            end: None,
        }
    }

    /// The producer's final value, once the stream has ended successfully.
    pub fn final_value(&self) -> Option<&Value> {
        self.end.as_ref().and_then(Option::as_ref)
    }
}

impl futures::Stream for BroadcastItems {
    type Item = Result<StreamItem>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        if self.end.is_some() {
            return Poll::Ready(None);
        }
        match futures::ready!(Pin::new(&mut self.inner).poll_next(cx)) {
            Some(Ok(Frame::Item(v))) => Poll::Ready(Some(Ok(StreamItem::Item(v)))),
            Some(Ok(Frame::Lagged(n))) => Poll::Ready(Some(Ok(StreamItem::Lagged(n)))),
            Some(Err(BroadcastStreamRecvError::Lagged(n))) => {
                Poll::Ready(Some(Ok(StreamItem::Lagged(n))))
            }
            Some(Ok(Frame::End(Ok(v)))) => {
                self.end = Some(Some(v));
                Poll::Ready(None)
            }
            Some(Ok(Frame::End(Err(e)))) => {
                self.end = Some(None);
                Poll::Ready(Some(Err(e)))
            }
            None => {
                self.end = Some(None);
                Poll::Ready(Some(Err(Error::new(
                    ErrorKind::ShutDown,
                    "the producer of the broadcast stream went away before finishing it",
                ))))
            }
        }
    }
}

impl fmt::Debug for BroadcastItems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BroadcastItems").finish_non_exhaustive()
    }
}
