//! A tap: every event sent, told or broadcast under the transport's prefix, decoded, as a
//! plain subscription beside the nodes' queue groups (so the nodes still get every event).
//! Public as [`crate::tap`].

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use async_nats::{Client, Message, Subscriber};
use futures::{Stream, StreamExt};
use happen::{Error, ErrorKind, Event, NodeId, Result};

use crate::core::requests::Requests;
use crate::wire::{self, Subjects, header};

/// How long [`Tap`]'s set-up waits for the server to confirm the subscription.
const CONFIRM_WITHIN: Duration = Duration::from_secs(10);

/// The events on a happen system's subjects, decoded, in the order the server delivers them
/// (made by [`NatsTransport::tap`](crate::NatsTransport::tap) and
/// [`NatsTransport::tap_broadcasts`](crate::NatsTransport::tap_broadcasts)).
///
/// A [`Stream`] of [`Tapped`] events; a message on an event subject that is not a happen
/// event is an [`Undecodable`] item (the tap goes on). Only `<prefix>.node.<id>` and
/// `<prefix>.broadcast` messages are events: pressure copies, stream frames, discovery and
/// `Happen-Query` requests are skipped. The tap only listens; dropping it unsubscribes.
///
/// One side effect: while a tap of every event runs, a request to a node nobody serves has a
/// subscriber (the tap), so the server does not answer "no responders" and the sender waits
/// for its timeout instead of failing at once with
/// [`ErrorKind::UnknownNode`](happen::ErrorKind::UnknownNode).
pub struct Tap {
    sub: Subscriber,
    /// `<prefix>.node.`
    node_prefix: String,
    /// `<prefix>.broadcast`
    broadcast: String,
}

/// How an event travelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TapKind {
    /// A request to one node (`send`: it has a reply subject).
    Send,
    /// A direct event without a reply (`tell`).
    Tell,
    /// A broadcast.
    Broadcast,
}

/// One event as a [`Tap`] saw it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Tapped {
    /// How it travelled.
    pub kind: TapKind,
    /// The node it was sent to (`None` for a broadcast).
    pub target: Option<NodeId>,
    /// The event.
    pub event: Event,
    /// The request's reply subject (`Some` for a [`TapKind::Send`]): the answer is published
    /// there, so a watcher that also listens on the reply subjects (`_INBOX.>`) can pair each
    /// answer with its request.
    pub reply: Option<String>,
}

/// A message on an event subject that is not a happen event.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Undecodable {
    /// Where it was published.
    pub subject: String,
    /// Its size in bytes.
    pub bytes: usize,
    /// What is wrong with it ([`ErrorKind::InvalidEvent`]).
    pub error: Error,
}

impl fmt::Display for Undecodable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "an undecodable message on `{}` ({} bytes): {}",
            self.subject,
            self.bytes,
            self.error.message()
        )
    }
}

impl std::error::Error for Undecodable {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

impl Tap {
    /// Subscribes to every event subject under `subjects` (or to the broadcast subject only)
    /// and waits until the server confirmed the subscription.
    pub(crate) async fn start(
        client: &Client,
        subjects: &Subjects,
        requests: &Requests,
        broadcasts_only: bool,
    ) -> Result<Tap> {
        let subject = if broadcasts_only {
            subjects.broadcast().to_owned()
        } else {
            subjects.all()
        };
        let sub = client.subscribe(subject.clone()).await.map_err(|e| {
            Error::new(
                ErrorKind::Transport,
                format!("cannot subscribe to `{subject}`: {e}"),
            )
        })?;
        // the server has the subscription before the tap is handed out
        requests.round_trip(CONFIRM_WITHIN).await.map_err(|e| {
            Error::new(
                ErrorKind::Transport,
                format!(
                    "the nats server did not confirm the subscription: {}",
                    e.message()
                ),
            )
        })?;
        Ok(Tap {
            sub,
            node_prefix: subjects.node(""),
            broadcast: subjects.broadcast().to_owned(),
        })
    }

    /// The event in `msg`; `None` when `msg` is not an event.
    fn decode(&self, msg: Message) -> Option<std::result::Result<Tapped, Undecodable>> {
        let subject = msg.subject.as_str();
        let target = match subject.strip_prefix(self.node_prefix.as_str()) {
            _ if subject == self.broadcast => None,
            Some(target) => Some(NodeId::from(target)),
            // pressure copies, broadcast stream frames, discovery: not events
            None => return None,
        };
        // queries (`Happen-Query: limits`) and stray frames are not events
        if msg
            .headers
            .as_ref()
            .is_some_and(|h| h.get(header::QUERY).is_some() || h.get(header::FRAME).is_some())
        {
            return None;
        }
        let event = match wire::decode_event(&msg.payload, usize::MAX) {
            Ok(e) => e,
            Err(error) => {
                return Some(Err(Undecodable {
                    subject: subject.to_owned(),
                    bytes: msg.payload.len(),
                    error,
                }));
            }
        };
        let kind = match (&target, &msg.reply) {
            (None, _) => TapKind::Broadcast,
            (Some(_), Some(_)) => TapKind::Send,
            (Some(_), None) => TapKind::Tell,
        };
        Some(Ok(Tapped {
            kind,
            target,
            event,
            reply: msg.reply.map(|r| r.to_string()),
        }))
    }
}

impl Stream for Tap {
    type Item = std::result::Result<Tapped, Undecodable>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            match this.sub.poll_next_unpin(cx) {
                Poll::Ready(Some(msg)) => {
                    if let Some(item) = this.decode(msg) {
                        return Poll::Ready(Some(item));
                    }
                }
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl fmt::Debug for Tap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tap")
            .field("node_prefix", &self.node_prefix)
            .field("broadcast", &self.broadcast)
            .finish_non_exhaustive()
    }
}
