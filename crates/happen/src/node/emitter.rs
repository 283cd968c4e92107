//! The flow side of a reply: [`Emitter`] for a streaming step's items, and the flow's reply
//! state (plain answer, stream to a consumer, or stream to broadcast subscribers).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::{broadcast, mpsc};

use super::context::Context;
use crate::error::{Error, ErrorKind, Result};
use crate::id::NodeId;
use crate::stream::{
    BroadcastSource, Frame, Response, SlotSender, StreamSender, StreamShared, channel,
};

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

    /// Does this flow's event carry a broadcast stream it may produce?
    pub(crate) fn has_broadcast(&self) -> bool {
        self.broadcast.is_some()
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

    /// Tells a waiting sender that the answer will not be immediate (see the `stream::oneshot` module).
    pub(crate) fn nudge(&self, node: &NodeId) {
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

    /// Puts `new` in the place of this stream (a spare context's, reused). A finished stream
    /// that carried no broadcast owns nothing, so it is not dropped through the out-of-line
    /// drop glue (~35 instructions per event).
    pub(crate) fn replace(&mut self, new: FlowStream) {
        let mut old = std::mem::replace(self, new);
        if old.broadcast.is_none() && matches!(old.state.get_mut(), FlowReply::Finished) {
            std::mem::forget(old);
        } else {
            drop(old);
        }
    }

    /// Delivers the flow's outcome (as a plain reply or as the stream's end).
    pub(crate) fn finish(&self, outcome: Result<Value>) -> Delivered {
        let prev = std::mem::replace(&mut *self.state.lock(), FlowReply::Finished);
        Self::deliver(prev, outcome)
    }

    /// [`finish`](Self::finish) for a stream nothing else can reach (its flow's context is
    /// held by the flow alone): no lock.
    pub(crate) fn finish_alone(&mut self, outcome: Result<Value>) -> Delivered {
        let prev = std::mem::replace(self.state.get_mut(), FlowReply::Finished);
        Self::deliver(prev, outcome)
    }

    fn deliver(prev: FlowReply, outcome: Result<Value>) -> Delivered {
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
                    s.end(outcome);
                    Delivered::Yes
                } else {
                    Delivered::Unobserved(outcome)
                }
            }
        }
    }
}

/// Emits the intermediate items of a streaming step (the third handler argument).
///
/// The first emit turns the flow's reply into a stream. Items are anything `Serialize` (a
/// `serde_json::Value`, a number, a string, your own types); the consumer reads them as JSON
/// values or decodes them with [`ReplyStream::typed`](crate::ReplyStream::typed).
/// [`emit`](Emitter::emit) waits
/// while the consumer's buffer is full (nothing is lost, the producer goes at the reader's
/// pace); [`try_emit`](Emitter::try_emit) never waits and drops the item instead (for
/// progress updates, where only the latest matters).
///
/// An emitter is handed to a streaming step as its third argument (see
/// [`Handler`](crate::Handler)); it is cheap to clone (to emit from a task the step spawns
/// and awaits).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
/// use futures::TryStreamExt;
/// use happen::{Context, Emitter, Event, Happen};
///
/// async fn words(event: Event, _ctx: Context, emit: Emitter) -> happen::Result<usize> {
///     let text = event.payload().as_str().unwrap_or_default().to_owned();
///     for word in text.split_whitespace() {
///         emit.emit(word).await?;
///     }
///     Ok(text.split_whitespace().count())
/// }
///
/// let happen = Happen::new();
/// let node = happen.node("splitter").await?;
/// node.on("split", words)?;
/// let mut stream = node.send(&node, Event::new("split", "to be or not")).into_stream();
/// let outcome = stream.outcome();
/// let items: Vec<_> = stream.try_collect().await?;
/// assert_eq!(items, ["to", "be", "or", "not"]);
/// assert_eq!(outcome.await?, 4);
/// # Ok(()) }
/// ```
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
    /// With nobody reading (a fire-and-forget send), the item is discarded. In a broadcast
    /// stream it never waits: subscribers that fall behind skip items (see
    /// [`BroadcastItems`](crate::stream::BroadcastItems)).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// use futures::StreamExt;
    /// use happen::{Context, Emitter, Event, Happen};
    ///
    /// #[derive(serde::Serialize)]
    /// struct Row { id: u32 }
    ///
    /// async fn export(_e: Event, _c: Context, rows: Emitter) -> happen::Result<u32> {
    ///     for id in 0..3 {
    ///         rows.emit(Row { id }).await?; // waits while the reader's buffer is full
    ///     }
    ///     Ok(3)
    /// }
    ///
    /// let happen = Happen::new();
    /// let db = happen.node("db").await?;
    /// db.on("export", export)?;
    /// let rows: Vec<_> = db.send(&db, Event::new("export", ())).into_stream().collect().await;
    /// assert_eq!(rows.len(), 3);
    /// assert_eq!(rows[2].as_ref().unwrap()["id"], 2);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`ErrorKind::Cancelled`] when the consumer dropped the stream (the flow is being
    /// cancelled; return the error with `?`); [`ErrorKind::InvalidPayload`] if `item` cannot be
    /// represented as JSON.
    ///
    /// # Cancel safety
    /// If the future is dropped before completing, the item was not emitted.
    pub async fn emit(&self, item: impl Serialize) -> Result<()> {
        let item = to_item(item)?;
        match self.sink() {
            Sink::Channel(tx, shared) => match tx.send(item).await {
                Ok(()) => Ok(()),
                Err(_) if shared.is_cancelled() => Err(Error::cancelled()),
                // The reply was dropped without being read: fire-and-forget, discard.
                Err(_) => Ok(()),
            },
            Sink::Broadcast(tx) => {
                // Never blocks: subscribers that fall behind skip items (they are told).
                let _ = tx.send(Frame::Item(item));
                Ok(())
            }
            Sink::Discard => Ok(()),
            Sink::Ended => Err(ended()),
        }
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
    /// cancelled; return the error with `?`); [`ErrorKind::InvalidPayload`] if `item` cannot be
    /// represented as JSON.
    pub fn try_emit(&self, item: impl Serialize) -> Result<bool> {
        let item = to_item(item)?;
        match self.sink() {
            Sink::Channel(tx, shared) => match tx.try_send(item) {
                Ok(()) => Ok(true),
                Err(mpsc::error::TrySendError::Full(_)) => Ok(false),
                Err(mpsc::error::TrySendError::Closed(_)) if shared.is_cancelled() => {
                    Err(Error::cancelled())
                }
                // The reply was dropped without being read: fire-and-forget, discard.
                Err(mpsc::error::TrySendError::Closed(_)) => Ok(true),
            },
            Sink::Broadcast(tx) => {
                let _ = tx.send(Frame::Item(item));
                Ok(true)
            }
            Sink::Discard => Ok(true),
            Sink::Ended => Err(ended()),
        }
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

fn to_item(item: impl Serialize) -> Result<Value> {
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
