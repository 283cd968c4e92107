//! The receiving side: one task per attached node reads its direct and broadcast subscriptions,
//! admits events into the node and publishes the answers. Replies are awaited in a
//! `FuturesUnordered` inside the same task (no task per request); only streams get a task.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_nats::{HeaderMap, Message, Subject, Subscriber};
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use happen::stream::{ReplyReceiver, Response, reply_channel};
use happen::transport::Inbox;
use happen::{Error, Pressure};
use tokio::sync::{oneshot, watch};

use crate::stats::inc;
use crate::transport::Shared;
use crate::wire::{self, header};

/// A reply being computed by the local node.
struct Waiting {
    reply: Subject,
    /// The requester's initial stream credit (`None`: it cannot consume streams).
    credit: Option<u64>,
    rx: ReplyReceiver,
}

impl Future for Waiting {
    type Output = (Subject, Option<u64>, Response);
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        Pin::new(&mut this.rx)
            .poll(cx)
            .map(|r| (this.reply.clone(), this.credit, r))
    }
}

pub(crate) async fn run(
    shared: Arc<Shared>,
    inbox: Inbox,
    mut direct: Subscriber,
    mut broadcast: Subscriber,
    mut stop: oneshot::Receiver<()>,
) {
    let pressure = inbox.watch_pressure();
    let mut waiting: FuturesUnordered<Waiting> = FuturesUnordered::new();
    loop {
        tokio::select! {
            biased;
            _ = &mut stop => break,
            Some((reply, credit, response)) = waiting.next(), if !waiting.is_empty() => {
                answer(&shared, reply, credit, response, &pressure).await;
            }
            msg = direct.next() => match msg {
                Some(msg) => on_direct(&shared, &inbox, msg, &mut waiting, &pressure).await,
                None => break,
            },
            msg = broadcast.next() => match msg {
                Some(msg) => on_broadcast(&shared, &inbox, msg),
                None => break,
            },
        }
    }
    // detached (the instance is shutting down, its flows have drained): send what is ready
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while let Some((reply, credit, response)) = waiting.next().await {
            answer(&shared, reply, credit, response, &pressure).await;
        }
    })
    .await;
}

/// Decodes an event, checking size and stray frames; counts and explains what is wrong.
fn decode(shared: &Shared, msg: &Message) -> Result<happen::Event, Error> {
    if msg.payload.len() > shared.max_bytes {
        shared.counters.bad_input("oversized");
        return wire::decode_event(&msg.payload, shared.max_bytes);
    }
    if let Some(kind) = msg.headers.as_ref().and_then(|h| h.get(header::FRAME)) {
        shared.counters.bad_input("protocol");
        return Err(Error::new(
            happen::ErrorKind::InvalidEvent,
            format!(
                "unexpected stream frame `{}` on a node subject; only events are accepted here",
                kind.as_str()
            ),
        ));
    }
    wire::decode_event(&msg.payload, shared.max_bytes).inspect_err(|_| {
        shared.counters.bad_input("malformed");
    })
}

async fn on_direct(
    shared: &Arc<Shared>,
    inbox: &Inbox,
    msg: Message,
    waiting: &mut FuturesUnordered<Waiting>,
    pressure: &watch::Receiver<Pressure>,
) {
    let event = match decode(shared, &msg) {
        Ok(e) => e,
        Err(err) => {
            tracing::warn!(target: "happen_nats", node = %inbox.id(), subject = %msg.subject, error = %err, "rejected a bad message");
            if let Some(reply) = msg.reply {
                publish_error(shared, reply, &err, pressure).await;
            }
            return;
        }
    };
    match msg.reply {
        Some(reply) => {
            let credit = msg
                .headers
                .as_ref()
                .and_then(|h| h.get(header::STREAM))
                .and_then(|c| c.as_str().trim().parse::<u64>().ok())
                .filter(|c| *c > 0);
            let (tx, rx) = reply_channel();
            match inbox.deliver(event, Some(tx)) {
                Ok(()) => waiting.push(Waiting { reply, credit, rx }),
                Err(err) => publish_error(shared, reply, &err, pressure).await,
            }
        }
        None => {
            if let Err(err) = inbox.deliver(event, None) {
                inbox.report_unobserved(&err);
            }
        }
    }
}

fn on_broadcast(shared: &Shared, inbox: &Inbox, msg: Message) {
    let event = match decode(shared, &msg) {
        Ok(e) => e,
        Err(err) => {
            tracing::warn!(target: "happen_nats", node = %inbox.id(), subject = %msg.subject, error = %err, "rejected a bad broadcast");
            return;
        }
    };
    if !inbox.accepts(event.event_type()) {
        return;
    }
    if let Err(err) = inbox.deliver(event, None) {
        inbox.report_unobserved(&err);
    }
}

fn pressure_headers(pressure: &watch::Receiver<Pressure>, into: &mut Option<HeaderMap>) {
    let p = *pressure.borrow();
    if let Some(v) = wire::pressure_header(&p) {
        into.get_or_insert_with(HeaderMap::new)
            .insert(header::PRESSURE, v.as_str());
    }
}

async fn publish(shared: &Shared, subject: Subject, headers: Option<HeaderMap>, body: Bytes) {
    let r = match headers {
        Some(h) => shared.client.publish_with_headers(subject, h, body).await,
        None => shared.client.publish(subject, body).await,
    };
    match r {
        Ok(()) => inc(&shared.counters.replies),
        Err(e) => {
            tracing::warn!(target: "happen_nats", error = %e, "cannot publish a reply");
        }
    }
}

pub(crate) async fn publish_error(
    shared: &Shared,
    reply: Subject,
    err: &Error,
    pressure: &watch::Receiver<Pressure>,
) {
    let mut h = HeaderMap::new();
    h.insert(header::STATUS, "error");
    wire::error_headers(err, &mut h);
    let mut h = Some(h);
    pressure_headers(pressure, &mut h);
    publish(shared, reply, h, Bytes::new()).await;
}

pub(crate) fn value_body(v: &serde_json::Value) -> Bytes {
    Bytes::from(serde_json::to_vec(v).unwrap_or_else(|_| b"null".to_vec()))
}

async fn answer(
    shared: &Arc<Shared>,
    reply: Subject,
    credit: Option<u64>,
    response: Response,
    pressure: &watch::Receiver<Pressure>,
) {
    match response {
        Response::Done(Ok(v)) => {
            let mut h = None;
            pressure_headers(pressure, &mut h);
            publish(shared, reply, h, value_body(&v)).await;
        }
        Response::Done(Err(e)) => publish_error(shared, reply, &e, pressure).await,
        Response::Stream(items) => match credit {
            Some(credit) => {
                tokio::spawn(crate::stream::produce(shared.clone(), reply, items, credit));
            }
            None => {
                // a requester that cannot consume streams (e.g. the reference implementation)
                // gets the final value, as a plain reply
                let shared = shared.clone();
                let pressure = pressure.clone();
                tokio::spawn(async move {
                    match items.finish().await {
                        Ok(v) => publish(&shared, reply, None, value_body(&v)).await,
                        Err(e) => publish_error(&shared, reply, &e, &pressure).await,
                    }
                });
            }
        },
    }
}
