//! [`ReplyStream`]: a reply read as a stream of items, then the final value.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll, ready};
use std::time::Duration;

use futures::Stream;
use serde_json::Value;
use tokio::time::Sleep;

use crate::error::{Error, ErrorKind, Result};
use crate::reply::Arm;
use crate::slot::{Received, SlotReceiver};
use crate::stream::{ItemStream, Response};

/// A reply read as a stream: `Ok(item)`s in order; one `Err` if the flow failed; then `None`.
/// After `None`, [`final_value`](ReplyStream::final_value) holds the final value.
///
/// Each wait for the next item is bounded by the reply's timeout: a stream that stalls fails
/// with [`ErrorKind::Timeout`] after between one and two timeouts without an item (the timer
/// is re-armed lazily, to keep the clock off the per-item path).
pub struct ReplyStream {
    pub(crate) state: StreamState,
    pub(crate) timeout: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    /// An item arrived since the timer was last armed.
    progress: bool,
}

pub(crate) enum StreamState {
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

    pub(crate) fn new(state: StreamState, timeout: Duration) -> ReplyStream {
        ReplyStream {
            state,
            timeout,
            sleep: None,
            progress: false,
        }
    }

    /// Polls past the remaining items to the final value (what awaiting a [`Reply`] does).
    pub(crate) fn poll_final(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<Value>> {
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
