//! The outgoing buffer: every message this process publishes through the transport waits
//! here, in order, for the one publisher task that hands messages to the client in batches
//! (`send`, `tell` and `broadcast` never block). Answers of this process's nodes never wait
//! for room: when the buffer is full they go to an unbounded overflow queue that the
//! publisher empties first ([`Outbox::publish_answer`]).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_nats::message::OutboundMessage;
use async_nats::{Client, HeaderMap, Subject};
use bytes::Bytes;
use futures::SinkExt;
use happen::{Error, ErrorKind, Result};
use parking_lot::Mutex;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::Instant;

use super::link::Link;
use super::requests::Requests;
use super::stats::{Counters, inc};
use super::{shut_down, transport_error};
use crate::wire::header;

/// An outgoing message (the `Happen-Stream` header is built from the shared template by the
/// publisher task, off the caller's path).
pub(crate) struct Outgoing {
    pub(crate) subject: Subject,
    pub(crate) reply: Option<Subject>,
    pub(crate) headers: Headers,
    pub(crate) payload: Bytes,
}

/// The headers of an [`Outgoing`] message.
pub(crate) enum Headers {
    None,
    /// `Happen-Stream` (requests), from the shared template.
    Stream,
    Custom(HeaderMap),
}

impl Headers {
    /// `Custom` with `h`, or `None`.
    pub(crate) fn from(h: Option<HeaderMap>) -> Headers {
        h.map_or(Headers::None, Headers::Custom)
    }
}

/// An entry of the outgoing buffer.
enum Queued {
    /// A message, and the token of the request it is (to fail it if publishing fails).
    Message(Outgoing, Option<u64>),
    /// An answer of a local node (kept for [`Replay`] once written).
    Answer(Outgoing),
    /// Hand everything queued before to the client, flush the client, then signal.
    Flush(oneshot::Sender<()>),
}

/// The outgoing buffer (see the module docs).
pub(crate) struct Outbox {
    client: Client,
    /// Outgoing messages, handed to the client in order by the publisher task.
    tx: mpsc::Sender<Queued>,
    /// Messages in `tx` or being handed to the client by the publisher.
    queued: AtomicUsize,
    /// Answers that found `tx` full: handed to the client by the publisher before anything
    /// else, so a serve task never waits for room (see [`Outbox::publish_answer`]).
    overflow: mpsc::UnboundedSender<Outgoing>,
    /// Signalled when `queued` falls to half of the capacity (for [`Outbox::ready`]).
    room: Notify,
    /// `transport.nats.outbound_buffer`.
    capacity: usize,
    /// `Happen-Stream: <stream_window>` (and `Happen-Track: 1` with liveness on), the headers
    /// of every request.
    stream_header: HeaderMap,
    /// To fail a request that could not be published.
    requests: Arc<Requests>,
    counters: Arc<Counters>,
    /// The answers written lately, published again after a lost connection.
    replay: Replay,
}

/// The receiving ends of an [`Outbox`], for its publisher task ([`run`]).
pub(crate) struct Drain {
    rx: mpsc::Receiver<Queued>,
    overflow: mpsc::UnboundedReceiver<Outgoing>,
}

/// Why a buffer refused a message: it is full (`full` says which and what to do), or the
/// transport is shut down. The one mapping of a refused `try_send` for every buffer.
pub(crate) fn refused<T>(e: &mpsc::error::TrySendError<T>, full: impl FnOnce() -> String) -> Error {
    match e {
        mpsc::error::TrySendError::Full(_) => Error::new(ErrorKind::Transport, full()),
        mpsc::error::TrySendError::Closed(_) => shut_down(),
    }
}

impl Outbox {
    /// An outbox of `capacity` messages whose requests carry `Happen-Stream: <stream_window>`
    /// and, when `track`, `Happen-Track: 1`.
    pub(crate) fn new(
        client: Client,
        capacity: usize,
        stream_window: usize,
        track: bool,
        replay_window: Duration,
        requests: Arc<Requests>,
        counters: Arc<Counters>,
    ) -> (Outbox, Drain) {
        let (tx, rx) = mpsc::channel(capacity);
        let (overflow_tx, overflow) = mpsc::unbounded_channel();
        let mut stream_header = HeaderMap::new();
        stream_header.insert(header::STREAM, stream_window.to_string().as_str());
        if track {
            stream_header.insert(header::TRACK, "1");
        }
        let outbox = Outbox {
            client,
            tx,
            queued: AtomicUsize::new(0),
            overflow: overflow_tx,
            room: Notify::new(),
            capacity,
            stream_header,
            requests,
            counters,
            replay: Replay::new(replay_window),
        };
        (outbox, Drain { rx, overflow })
    }

    /// Queues `out` for publishing; `token` is the request it is, failed if it cannot be
    /// queued or published.
    ///
    /// # Errors
    /// [`ErrorKind::Transport`] when the buffer is full; [`ErrorKind::ShutDown`] after
    /// shutdown.
    pub(crate) fn enqueue(&self, out: Outgoing, token: Option<u64>) -> Result<()> {
        // Always through the publisher task, never straight into the client from here:
        // measured with 64 requests in flight, publishing from every caller task gave 13% fewer
        // requests per second than letting one task hand them over (most likely: the client's
        // connection task then runs and writes once per message instead of in batches);
        // sequential latency did not measurably change either way.
        self.queued.fetch_add(1, Ordering::AcqRel);
        self.tx.try_send(Queued::Message(out, token)).map_err(|e| {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            if let Some(t) = token {
                self.requests
                    .forget(t, || Error::new(ErrorKind::Transport, "not published"));
            }
            refused(&e, || format!(
                "the outgoing buffer of the nats transport is full ({} messages); slow down (`NatsTransport::ready` waits for room) or raise transport.nats.outbound_buffer",
                self.capacity
            ))
        })
    }

    /// Queues a message for the publisher task; hands it back when the buffer is full or
    /// closed.
    pub(crate) fn try_enqueue(&self, out: Outgoing) -> Option<Outgoing> {
        self.try_queue(Queued::Message(out, None))
    }

    /// Queues an answer of a local node (kept for a replay once written; see
    /// [`replay_lost`](Outbox::replay_lost)); hands it back when the buffer is full or
    /// closed.
    pub(crate) fn try_enqueue_answer(&self, out: Outgoing) -> Option<Outgoing> {
        self.try_queue(Queued::Answer(out))
    }

    fn try_queue(&self, queued: Queued) -> Option<Outgoing> {
        self.queued.fetch_add(1, Ordering::AcqRel);
        let e = self.tx.try_send(queued).err()?;
        self.queued.fetch_sub(1, Ordering::AcqRel);
        match e.into_inner() {
            Queued::Message(out, _) | Queued::Answer(out) => Some(out),
            Queued::Flush(_) => unreachable!("a message was queued"),
        }
    }

    /// The connection was lost: answers written shortly before it may not have reached the
    /// server (see [`replay_lost`](Outbox::replay_lost)).
    pub(crate) fn connection_lost(&self) {
        self.replay.lost();
    }

    /// The connection is back: publishes again the answers written in the replay window
    /// before it was lost (requesters drop a second copy). Returns how many.
    pub(crate) fn replay_lost(&self) -> usize {
        let again = self.replay.take();
        let n = again.len();
        for out in again {
            self.publish_answer(out);
        }
        self.counters
            .answers_replayed
            .fetch_add(n as u64, Ordering::Relaxed);
        n
    }

    /// Publishes an answer of a local node (a reply, an error) without waiting: through the
    /// outgoing buffer, or, when that is full, through the unbounded overflow queue that the
    /// publisher task empties first. The overflow holds at most one answer per request the
    /// node has taken from its subscription, and is only used while the connection drains
    /// slower than the node answers.
    pub(crate) fn publish_answer(&self, out: Outgoing) {
        if let Some(out) = self.try_enqueue_answer(out) {
            inc(&self.counters.answers_overflowed);
            if self.overflow.send(out).is_err() {
                tracing::warn!(target: "happen_nats", "the nats transport is shut down; an answer was not published");
            }
        }
    }

    /// Publishes an answer straight into the client (waiting for room there), bypassing the
    /// outgoing buffer (a relayed answer when that is full; a durable answer, which must be
    /// in the connection before its `+ACK`). Kept for a replay like every answer.
    pub(crate) async fn publish_now(&self, out: Outgoing) -> Result<()> {
        let msg = self.message(out);
        self.replay.record(&msg);
        self.client
            .clone()
            .send(msg)
            .await
            .map_err(|e| transport_error("cannot publish", e))
    }

    /// Waits until everything queued for publishing so far has been handed to the client and
    /// the client has written it to the server.
    pub(crate) async fn flush(&self) {
        let (done, flushed) = oneshot::channel();
        self.queued.fetch_add(1, Ordering::AcqRel);
        if self.tx.send(Queued::Flush(done)).await.is_err() {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            return;
        }
        let _ = flushed.await;
    }

    /// Waits until at most half of the capacity waits in the buffer.
    ///
    /// # Errors
    /// [`ErrorKind::ShutDown`] once `link` says the transport is shut down.
    pub(crate) async fn ready(&self, link: &Link) -> Result<()> {
        until_room(&self.room, link, || self.is_backlogged()).await
    }

    /// Is the buffer more than half full?
    pub(crate) fn is_backlogged(&self) -> bool {
        self.queued.load(Ordering::Acquire) > self.room_mark()
    }

    /// Wakes every [`ready`](Outbox::ready) (the transport shuts down).
    pub(crate) fn wake_all(&self) {
        self.room.notify_waiters();
    }

    /// `ready` resolves once at most this many messages wait in the buffer.
    fn room_mark(&self) -> usize {
        self.capacity / 2
    }

    /// One entry left the buffer.
    fn dequeued(&self) {
        if self.queued.fetch_sub(1, Ordering::AcqRel) - 1 == self.room_mark() {
            self.room.notify_waiters();
        }
    }

    /// Builds the client's message (the `Happen-Stream` header from the shared template).
    fn message(&self, out: Outgoing) -> OutboundMessage {
        OutboundMessage {
            subject: out.subject,
            reply: out.reply,
            headers: match out.headers {
                Headers::None => None,
                Headers::Stream => Some(self.stream_header.clone()),
                Headers::Custom(h) => Some(h),
            },
            payload: out.payload,
        }
    }
}

/// Waits until `backlogged` says no, woken through `room` (signalled by whoever drains the
/// buffer); the check follows the wake's registration, so no signal is missed.
///
/// # Errors
/// [`ErrorKind::ShutDown`] once `link` says the transport is shut down.
pub(crate) async fn until_room(
    room: &Notify,
    link: &Link,
    backlogged: impl Fn() -> bool,
) -> Result<()> {
    loop {
        let notified = room.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if link.is_closed() {
            return Err(Error::new(
                ErrorKind::ShutDown,
                "the nats transport is shut down",
            ));
        }
        if !backlogged() {
            return Ok(());
        }
        notified.await;
    }
}

/// The publisher task: publishes queued messages in order (`send` and `broadcast` must not
/// block); answers that found the buffer full first.
pub(crate) async fn run(outbox: Arc<Outbox>, drain: Drain) {
    let Drain {
        mut rx,
        mut overflow,
    } = drain;
    let mut sink = outbox.client.clone();
    loop {
        let queued = tokio::select! {
            biased;
            Some(out) = overflow.recv() => {
                let msg = outbox.message(out);
                outbox.replay.record(&msg);
                if let Err(e) = sink.feed(msg).await {
                    tracing::warn!(target: "happen_nats", error = %e, "cannot publish an answer");
                }
                continue;
            }
            queued = rx.recv() => match queued {
                Some(queued) => queued,
                None => return,
            },
        };
        let (out, token) = match queued {
            Queued::Message(out, token) => (out, token),
            Queued::Answer(out) => {
                let msg = outbox.message(out);
                outbox.replay.record(&msg);
                let r = sink.feed(msg).await;
                outbox.dequeued();
                if let Err(e) = r {
                    tracing::warn!(target: "happen_nats", error = %e, "cannot publish an answer");
                }
                continue;
            }
            Queued::Flush(done) => {
                // everything before was fed to the client; its flush writes it to the socket
                let _ = outbox.client.flush().await;
                outbox.dequeued();
                let _ = done.send(());
                continue;
            }
        };
        let r = sink.feed(outbox.message(out)).await;
        outbox.dequeued();
        if let Err(e) = r {
            tracing::warn!(target: "happen_nats", error = %e, "publishing failed");
            if let Some(token) = token {
                outbox.requests.forget(token, || {
                    transport_error("the event could not be published to nats", &e)
                });
            }
        }
    }
}

/// The most answers kept for a replay.
const REPLAY_AT_MOST: usize = 4096;

/// The most answer bytes (bodies) kept for a replay.
const REPLAY_BYTES_AT_MOST: usize = 8 << 20;

/// The answers written in the last `window`, to publish again after a lost connection: the
/// client may have written them to a connection that died before the server passed them on
/// (see `WIRE.md`, "Liveness").
struct Replay {
    window: Duration,
    state: Mutex<Written>,
}

#[derive(Default)]
struct Written {
    /// (when it was handed to the client, the answer)
    answers: VecDeque<(Instant, Outgoing)>,
    /// The bodies' bytes in `answers`.
    bytes: usize,
    /// When the connection was lost (until it is back).
    lost_at: Option<Instant>,
}

impl Replay {
    fn new(window: Duration) -> Replay {
        Replay {
            window,
            state: Mutex::new(Written::default()),
        }
    }

    /// Keeps a copy of an answer handed to the client (cheap: the subject and body are
    /// shared buffers).
    fn record(&self, msg: &OutboundMessage) {
        if self.window.is_zero() {
            return;
        }
        let now = Instant::now();
        let size = msg.payload.len();
        let mut w = self.state.lock();
        while w
            .answers
            .front()
            .is_some_and(|(at, _)| now.saturating_duration_since(*at) > self.window)
            || w.answers.len() >= REPLAY_AT_MOST
            || (!w.answers.is_empty() && w.bytes + size > REPLAY_BYTES_AT_MOST)
        {
            if let Some((_, old)) = w.answers.pop_front() {
                w.bytes -= old.payload.len();
            }
        }
        w.bytes += size;
        w.answers.push_back((
            now,
            Outgoing {
                subject: msg.subject.clone(),
                reply: msg.reply.clone(),
                headers: Headers::from(msg.headers.clone()),
                payload: msg.payload.clone(),
            },
        ));
    }

    /// The connection was lost now (the first loss counts until it is back).
    fn lost(&self) {
        let mut w = self.state.lock();
        w.lost_at.get_or_insert_with(Instant::now);
    }

    /// The answers written in the window before the loss; forgets every kept answer.
    fn take(&self) -> Vec<Outgoing> {
        let mut w = self.state.lock();
        let Some(lost_at) = w.lost_at.take() else {
            return Vec::new();
        };
        let from = lost_at.checked_sub(self.window).unwrap_or(lost_at);
        w.bytes = 0;
        std::mem::take(&mut w.answers)
            .into_iter()
            .filter(|(at, _)| *at >= from && *at <= lost_at)
            .map(|(_, out)| out)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(n: usize) -> OutboundMessage {
        OutboundMessage {
            subject: Subject::from(format!("_INBOX.x.{n}")),
            reply: None,
            headers: None,
            payload: Bytes::from(vec![b'x'; n]),
        }
    }

    fn subjects(out: &[Outgoing]) -> Vec<String> {
        out.iter().map(|o| o.subject.to_string()).collect()
    }

    /// Only the answers written in the window before the loss come back, once.
    #[tokio::test(start_paused = true)]
    async fn a_replay_gives_the_answers_of_the_window_before_the_loss() {
        let replay = Replay::new(Duration::from_secs(1));
        replay.record(&answer(1));
        tokio::time::advance(Duration::from_millis(600)).await;
        replay.record(&answer(2));
        tokio::time::advance(Duration::from_millis(600)).await;
        replay.record(&answer(3));
        replay.lost();
        tokio::time::advance(Duration::from_millis(100)).await;
        replay.record(&answer(4)); // written while disconnected: the client holds it
        assert_eq!(subjects(&replay.take()), ["_INBOX.x.2", "_INBOX.x.3"]);
        assert!(replay.take().is_empty(), "a second take without a loss");
        assert_eq!(replay.state.lock().bytes, 0);
    }

    /// The kept bodies stay under the byte bound; a window of zero keeps nothing.
    #[tokio::test(start_paused = true)]
    async fn a_replay_is_bounded() {
        let replay = Replay::new(Duration::from_secs(1));
        for _ in 0..5 {
            replay.record(&answer(REPLAY_BYTES_AT_MOST / 4));
        }
        assert!(replay.state.lock().bytes <= REPLAY_BYTES_AT_MOST);
        assert_eq!(replay.state.lock().answers.len(), 4);
        let off = Replay::new(Duration::ZERO);
        off.record(&answer(1));
        off.lost();
        assert!(off.take().is_empty());
    }
}
