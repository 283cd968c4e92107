//! Broadcast streams over NATS (see `WIRE.md`, "Broadcast streams").
//!
//! A broadcast marked `Happen-Stream: broadcast` carries a stream. The receiving node whose
//! handler streams (takes an `Emitter`) is the producer: its items are published, numbered, on
//! `<prefix>.bstream.<event-id>`. Every other receiving node subscribes to that subject before
//! it is admitted and reads the items through `ctx.items()`, from a local [`BroadcastFeed`]
//! (its own bounded buffer, the core's lag policy). Items a subscriber missed on the way (it
//! subscribed late, the producer's forwarder lagged, or NATS dropped them) show up as a jump
//! in the sequence numbers and are reported as [`StreamItem::Lagged`](happen::stream::StreamItem).
//! The producer never waits for subscribers.

use std::sync::Arc;
use std::time::Duration;

use async_nats::{HeaderMap, Message, Subject, Subscriber};
use futures::StreamExt;
use futures::future::BoxFuture;
use happen::transport::Inbox;
use happen::transport::{BroadcastFeed, BroadcastItems, ReplySender, StreamItem};
use happen::{Error, ErrorKind, Event, NodeId, Result};
use serde_json::Value;

use super::Streams;
use crate::core::outbox::Headers;
use crate::core::stats::{BadInput, inc};
use crate::wire::{self, Frame, header, value_body};

/// The `Happen-Stream` value marking a broadcast that carries a stream.
pub(crate) const BROADCAST: &str = "broadcast";

/// The headers of an outgoing broadcast: `Happen-Stream: broadcast` when the event type is
/// configured as a stream type (`transport.nats.stream_types`) or a node of this process
/// streams it.
pub(crate) fn broadcast_headers(s: &Streams, event_type: &str) -> Headers {
    if s.ep.config.stream_types.iter().any(|t| t == event_type) || s.nodes.streams(event_type) {
        let mut h = HeaderMap::new();
        h.insert(header::STREAM, BROADCAST);
        Headers::Custom(h)
    } else {
        Headers::None
    }
}

/// Does this broadcast message carry a stream?
fn marked(msg: &Message) -> bool {
    msg.headers
        .as_ref()
        .and_then(|h| h.get(header::STREAM))
        .is_some_and(|v| v.as_str().trim() == BROADCAST)
}

/// How a broadcast is admitted into a node.
enum Mode {
    /// A plain broadcast.
    Plain,
    /// The node's handler produces the stream: forward its items.
    Producer(Arc<Streams>, Subject),
    /// The node reads the stream produced elsewhere; the subscription was made on arrival.
    Subscriber(Arc<Streams>, Option<Subscriber>),
}

/// A broadcast waiting to be admitted into a node (perhaps held back by its backpressure).
pub(crate) struct Incoming {
    event: Event,
    mode: Mode,
}

/// A broadcast the node accepts, classified: ready to be admitted, or still subscribing to
/// its stream (a subscribe and a round trip through the server, which the serve task polls
/// beside its other work instead of waiting for it).
pub(crate) enum Prepared {
    Ready(Incoming),
    Subscribing(BoxFuture<'static, Incoming>),
}

impl Incoming {
    /// Classifies a broadcast the node accepts. A subscriber subscribes to the stream subject
    /// on arrival, so items published while the broadcast is held back are buffered by the
    /// subscription (and reach the node's buffer, lagging per its policy, once admitted).
    pub(crate) fn prepare(
        s: &Arc<Streams>,
        inbox: &Inbox,
        msg: &Message,
        event: Event,
    ) -> Prepared {
        if !marked(msg) {
            return Prepared::Ready(Incoming {
                event,
                mode: Mode::Plain,
            });
        }
        let subject = s.ep.subjects.broadcast_stream(&event.id().to_string());
        if inbox.streams(event.event_type()) {
            return Prepared::Ready(Incoming {
                event,
                mode: Mode::Producer(s.clone(), Subject::from(subject)),
            });
        }
        let (s, node) = (s.clone(), inbox.id().clone());
        Prepared::Subscribing(Box::pin(async move {
            Incoming::subscribe(s, node, subject, event).await
        }))
    }

    async fn subscribe(s: Arc<Streams>, node: NodeId, subject: String, event: Event) -> Incoming {
        match s.ep.client.subscribe(subject).await {
            Ok(sub) => {
                // the producer starts publishing as soon as the same broadcast reaches it: make
                // sure the server knows the subscription before the node starts reading
                if let Err(e) = s
                    .requests
                    .round_trip(s.ep.config.effective_request_timeout())
                    .await
                {
                    // admitted anyway: items it missed are reported as lag
                    tracing::warn!(target: "happen_nats", node = %node, error = %e, "a broadcast stream's subscription was not confirmed; its first items may be reported as lag");
                }
                Incoming {
                    event,
                    mode: Mode::Subscriber(s, Some(sub)),
                }
            }
            Err(e) => {
                // the flow still runs; `ctx.items()` is `None`
                tracing::warn!(target: "happen_nats", node = %node, error = %e, "cannot subscribe to a broadcast stream; delivering the broadcast without its items");
                Incoming {
                    event,
                    mode: Mode::Plain,
                }
            }
        }
    }

    /// A plain broadcast (no stream): its flow's end can be tracked for a completion record.
    pub(crate) fn plain_event(&self) -> Option<&Event> {
        matches!(self.mode, Mode::Plain).then_some(&self.event)
    }

    /// Admits the broadcast into the node; on success starts forwarding (producer) or feeding
    /// (subscriber). On failure `self` is unchanged and may be offered again.
    ///
    /// `reply` (a completion record's channel) is used for a plain broadcast only.
    pub(crate) fn deliver(&mut self, inbox: &Inbox, reply: Option<ReplySender>) -> Result<()> {
        // `Event` is a shared handle: a clone is one reference count
        match &mut self.mode {
            Mode::Plain => inbox.deliver(self.event.clone(), reply),
            Mode::Producer(s, subject) => {
                let items = inbox.deliver_producer(self.event.clone())?;
                tokio::spawn(forward(s.clone(), subject.clone(), items));
                Ok(())
            }
            Mode::Subscriber(s, sub) => {
                let feed = BroadcastFeed::new(s.ep.config.broadcast_buffer.unwrap_or(256));
                inbox.deliver_with_items(self.event.clone(), feed.subscribe())?;
                if let Some(sub) = sub.take() {
                    tokio::spawn(feed_from(s.clone(), sub, feed));
                }
                Ok(())
            }
        }
    }
}

/// Room for the `Happen-Seq` header, added to an error frame after its size was checked.
const SEQ_ROOM: usize = 64;

fn frame_headers(frame: &Frame, seq: u64) -> HeaderMap {
    let mut h = wire::frame_headers(frame);
    h.insert(header::SEQ, seq.to_string().as_str());
    h
}

/// Publishes the producer's items, numbered from 1; the end (or error) frame takes the next
/// number. Items the forwarder itself missed (it lagged behind the producer) are skipped
/// numbers.
async fn forward(s: Arc<Streams>, subject: Subject, mut items: BroadcastItems) {
    let mut seq = 0u64;
    loop {
        let next = items.next().await;
        if let Some(Ok(StreamItem::Lagged(n))) = next {
            seq = seq.saturating_add(n);
            continue;
        }
        seq += 1;
        let last = !matches!(next, Some(Ok(StreamItem::Item(_))));
        let (h, body) = match next {
            Some(Ok(StreamItem::Item(v))) => (
                frame_headers(&Frame::Item(Value::Null), seq),
                value_body(&v),
            ),
            Some(Err(e)) => {
                let (mut h, body) = wire::error_frame(&e, s.ep.client.max_payload(), SEQ_ROOM);
                h.insert(header::SEQ, seq.to_string().as_str());
                (h, body)
            }
            _ => {
                let end = items.final_value().cloned().unwrap_or(Value::Null);
                (
                    frame_headers(&Frame::End(Value::Null), seq),
                    value_body(&end),
                )
            }
        };
        match s
            .ep
            .client
            .publish_with_headers(subject.clone(), h, body)
            .await
        {
            Ok(()) if !last => inc(&s.counters.stream_items),
            Ok(()) => return,
            Err(e) => {
                // keep reading: the producer must never wait, and a later frame may get through
                tracing::warn!(target: "happen_nats", error = %e, "cannot publish a broadcast stream frame");
                if last {
                    return;
                }
            }
        }
    }
}

/// Feeds the frames of one broadcast stream to the local subscribers until the end frame; a
/// stream silent for the request timeout ends with a `timeout` error.
async fn feed_from(s: Arc<Streams>, mut sub: Subscriber, feed: BroadcastFeed) {
    let idle = s.ep.config.effective_request_timeout();
    let outcome = read(&s, &mut sub, &feed, idle).await;
    feed.end(outcome);
    let _ = sub.unsubscribe().await;
}

async fn read(
    s: &Streams,
    sub: &mut Subscriber,
    feed: &BroadcastFeed,
    idle: Duration,
) -> Result<Value> {
    let mut expected = 1u64;
    loop {
        let msg = match tokio::time::timeout(idle, sub.next()).await {
            Ok(Some(msg)) => msg,
            Ok(None) => {
                return Err(Error::new(
                    ErrorKind::Transport,
                    "the subscription to a broadcast stream closed before its end",
                ));
            }
            Err(_) => {
                inc(&s.counters.stalled_streams);
                return Err(Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "no frame of the broadcast stream for {idle:?}: its producer is gone, or the stream ended before this process subscribed"
                    ),
                ));
            }
        };
        let seq = msg
            .headers
            .as_ref()
            .and_then(|h| h.get(header::SEQ))
            .and_then(|v| v.as_str().trim().parse::<u64>().ok());
        let frame = match (seq, wire::decode_frame(msg.headers.as_ref(), &msg.payload)) {
            (Some(seq), Ok(frame)) => (seq, frame),
            (_, Err(e)) => {
                s.counters.bad_input(BadInput::Protocol);
                return Err(e);
            }
            (None, Ok(_)) => {
                s.counters.bad_input(BadInput::Protocol);
                return Err(Error::new(
                    ErrorKind::Transport,
                    "broadcast stream frame without a valid `Happen-Seq`",
                ));
            }
        };
        let (seq, frame) = frame;
        if seq < expected {
            continue; // a duplicate or out of date: already accounted for
        }
        if seq > expected {
            feed.lagged(seq - expected);
        }
        expected = seq + 1;
        match frame {
            Frame::Item(v) => feed.item(v),
            Frame::End(v) => return Ok(v),
            Frame::Error(e) => return Err(e),
            Frame::Credit(_) | Frame::Cancel => {
                s.counters.bad_input(BadInput::Protocol);
                return Err(Error::new(
                    ErrorKind::Transport,
                    "unexpected `credit`/`cancel` frame in a broadcast stream",
                ));
            }
        }
    }
}
