//! A bounded item stream ending with a final outcome (a streaming flow's reply).

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context as TaskContext, Poll};

use futures::task::AtomicWaker;
use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::error::{Error, ErrorKind, Result};

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
/// streams; handlers use an [`Emitter`](crate::Emitter) instead. Re-exported as
/// [`happen::transport::stream_channel`](crate::transport::stream_channel).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use futures::StreamExt;
/// let (tx, mut rx) = happen::transport::stream_channel(4);
/// tokio::spawn(async move {
///     tx.send(serde_json::json!(1)).await.unwrap();
///     tx.end(Ok(serde_json::json!("end")));
/// });
/// assert_eq!(rx.next().await.unwrap().unwrap(), 1);
/// assert!(rx.next().await.is_none());
/// assert_eq!(rx.final_value(), Some(&serde_json::json!("end")));
/// # }
/// ```
///
/// # Panics
/// Panics if `capacity` is larger than Tokio's channels allow (`usize::MAX >> 3`). A
/// `capacity` of 0 is taken as 1.
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
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
/// use futures::StreamExt;
/// use happen::ErrorKind;
/// use serde_json::json;
///
/// let (tx, mut rx) = happen::transport::stream_channel(2);
/// assert_eq!(tx.capacity(), 2);
/// tx.send(json!(1)).await?;
/// assert_eq!(tx.capacity(), 1);
///
/// assert_eq!(rx.next().await.unwrap()?, 1);
/// drop(rx); // the consumer goes away before the end
/// tx.cancelled().await; // resolves at once now
/// assert!(tx.is_cancelled());
/// assert_eq!(tx.send(json!(2)).await.unwrap_err().kind(), ErrorKind::Cancelled);
/// # Ok(()) }
/// ```
pub struct StreamSender {
    pub(crate) tx: mpsc::Sender<Value>,
    pub(crate) shared: Arc<StreamShared>,
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

    /// Ends the stream with its final outcome: the consumer reads the items sent before, then
    /// the end (`None` after an `Ok`, one `Err` then `None` after an `Err`). A sender dropped
    /// without `end` ends the stream with [`ErrorKind::ShutDown`].
    pub fn end(self, outcome: Result<Value>) {
        *self.shared.end.lock() = Some(outcome);
        // The consumer reads the end after the items: when the channel closes (dropping
        // `tx`), or when woken here while an emitter handle still holds a sender.
        self.shared.consumer.wake();
    }

    /// Did the consumer drop the stream (after it had started reading)?
    pub fn is_cancelled(&self) -> bool {
        self.shared.cancelled.load(Ordering::Acquire)
    }

    /// Resolves when the consumer drops the stream before its end (after it had started
    /// reading): a transport forwarding a remote stream selects on it to stop the remote
    /// producer.
    ///
    /// # Cancel safety
    /// Cancel-safe: it only watches; call it again to keep waiting.
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

    /// Number of items that may be sent now without waiting.
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
/// the flow's final value. Dropping it before the end cancels the producer, if it had started
/// reading (an unread stream is fire-and-forget). See [`channel`] for an example.
pub struct ItemStream {
    rx: mpsc::Receiver<Value>,
    shared: Arc<StreamShared>,
    state: EndState,
    /// Set once a consumer has read from it; only a consumer that started reading cancels the
    /// producer on drop (an unconsumed reply is fire-and-forget).
    consumed: bool,
}

impl ItemStream {
    /// The final value, once the stream has ended successfully (`None` before the end and
    /// after a failure).
    pub fn final_value(&self) -> Option<&Value> {
        match &self.state {
            EndState::Ended(v) => v.as_ref(),
            EndState::Open => None,
        }
    }

    /// Skips the remaining items and resolves to the final value (or the producer's error).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// use serde_json::json;
    ///
    /// let (tx, rx) = happen::transport::stream_channel(4);
    /// tx.send(json!("skipped")).await?;
    /// tx.end(Ok(json!("final")));
    /// assert_eq!(rx.skip_to_final().await?, "final");
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// The producer's error; [`ErrorKind::ShutDown`] if the producer went away without
    /// ending the stream.
    ///
    /// # Cancel safety
    /// Dropping the future drops the stream, which cancels the producer.
    pub async fn skip_to_final(mut self) -> Result<Value> {
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

impl StreamShared {
    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }

    pub(crate) fn register(&self, cx: &TaskContext<'_>) {
        self.producer.register(cx.waker());
    }
}
