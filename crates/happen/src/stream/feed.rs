//! Streams over broadcast: one producer, many subscribers that never slow it down.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

use crate::error::{Error, ErrorKind, Result};

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
    pub(crate) fn claim(&self) -> Option<broadcast::Sender<Frame>> {
        self.tx.lock().take()
    }
}

/// A broadcast event's part in a broadcast stream, carried beside the event to its flow.
pub(crate) enum BroadcastRole {
    /// The receiving node's handler streams: its flow may produce the stream (the first
    /// streaming flow to start claims the source).
    Producer(Arc<BroadcastSource>),
    /// The receiving node reads the stream another node produces
    /// (`Context::items`).
    Subscriber(broadcast::Receiver<Frame>),
}

/// The feeding end of a broadcast stream whose producer runs elsewhere: a transport creates one
/// per remote broadcast stream, delivers the broadcast event to each local subscribing node
/// with [`Inbox::deliver_with_items`](crate::transport::Inbox::deliver_with_items), and feeds it the frames
/// that arrive. Never blocks; local subscribers lag per the [`BroadcastItems`] policy.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use futures::StreamExt;
/// use happen::transport::{BroadcastFeed, StreamItem};
///
/// let feed = BroadcastFeed::new(16);
/// let mut items = feed.subscribe().into_items();
/// feed.item(serde_json::json!(1));
/// feed.lagged(2); // two items were lost on the way
/// feed.end(Ok(serde_json::json!("done")));
/// assert_eq!(items.next().await.unwrap().unwrap(), StreamItem::Item(serde_json::json!(1)));
/// assert_eq!(items.next().await.unwrap().unwrap(), StreamItem::Lagged(2));
/// assert!(items.next().await.is_none());
/// assert_eq!(items.final_value(), Some(&serde_json::json!("done")));
/// # }
/// ```
pub struct BroadcastFeed {
    tx: broadcast::Sender<Frame>,
}

/// One subscriber's receiving end of a [`BroadcastFeed`]: hand it to a node with
/// [`Inbox::deliver_with_items`](crate::transport::Inbox::deliver_with_items), or read it
/// with [`into_items`](FeedSubscription::into_items).
pub struct FeedSubscription(pub(crate) broadcast::Receiver<Frame>);

impl BroadcastFeed {
    /// A feed buffering up to `capacity` frames per subscriber (at least 1; rounded up to a
    /// power of two; the end takes one frame). A subscriber further behind skips the oldest
    /// frames and sees [`StreamItem::Lagged`].
    ///
    /// # Panics
    /// Panics if `capacity` is larger than `usize::MAX / 2` (Tokio's broadcast limit).
    pub fn new(capacity: usize) -> BroadcastFeed {
        BroadcastFeed {
            tx: broadcast::channel(capacity.max(1)).0,
        }
    }

    /// A new subscriber (subscribe every local node before feeding the first item).
    pub fn subscribe(&self) -> FeedSubscription {
        FeedSubscription(self.tx.subscribe())
    }

    /// Feeds one item. Never waits; with no subscriber left, the item is dropped.
    pub fn item(&self, item: Value) {
        let _ = self.tx.send(Frame::Item(item));
    }

    /// Reports `missed` items lost before they reached this process.
    pub fn lagged(&self, missed: u64) {
        let _ = self.tx.send(Frame::Lagged(missed));
    }

    /// Ends the stream with the producer's outcome.
    pub fn end(self, outcome: Result<Value>) {
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

/// One item of a broadcast stream as a subscriber sees it (see [`BroadcastItems`] for an
/// example).
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
/// [`final_value`](BroadcastItems::final_value) holds the producer's final value. If the
/// producer goes away without ending the stream, one `Err` of kind
/// [`ErrorKind::ShutDown`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
/// use futures::StreamExt;
/// use happen::stream::StreamItem;
/// use happen::{Config, Context, Emitter, Event, Happen};
///
/// let mut config = Config::default();
/// config.streams.broadcast_buffer = 4; // frames each subscriber may fall behind
/// let happen = Happen::with_config(config)?;
/// let ticker = happen.node("ticker").await?;
/// ticker.on("prices", |_e: Event, _c: Context, out: Emitter| async move {
///     for price in 0..10 {
///         out.emit(price).await?; // never waits for subscribers
///     }
///     Ok::<_, happen::Error>("closed")
/// })?;
/// let (tx, rx) = tokio::sync::oneshot::channel();
/// let tx = std::sync::Mutex::new(Some(tx));
/// let chart = happen.node("chart").await?;
/// chart.on("prices", move |_e: Event, ctx: Context| {
///     let tx = tx.lock().unwrap().take();
///     async move {
///         let mut items = ctx.items().expect("the broadcast carries a stream");
///         let mut seen = Vec::new();
///         while let Some(item) = items.next().await {
///             seen.push(item?);
///         }
///         tx.unwrap().send((seen, items.final_value().cloned())).unwrap();
///         Ok::<_, happen::Error>(())
///     }
/// })?;
/// ticker.broadcast(Event::new("prices", ()))?;
/// let (seen, end) = rx.await.unwrap();
/// // The chart started after the ticker had produced everything: it skipped the oldest items.
/// assert_eq!(seen[0], StreamItem::Lagged(7));
/// assert_eq!(seen[1..], [7, 8, 9].map(|p| StreamItem::Item(p.into())));
/// assert_eq!(end, Some("closed".into()));
/// # Ok(()) }
/// ```
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
