//! Streams between two processes, with credit: the producing side forwards a local flow's
//! items to a remote consumer, never more than the credit it granted; a `cancel` frame (or a
//! consumer that stops granting credit for the request timeout) drops the local stream, which
//! cancels the flow. The consuming side feeds a remote stream to the local consumer and
//! grants credit as items are handed over.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use async_nats::{HeaderMap, Message, Subject};
use bytes::Bytes;
use futures::StreamExt;
use happen::stream::{ItemStream, ReplySender, Response, StreamSender};
use happen::{Error, ErrorKind};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::core::Endpoint;
use crate::core::nodes::LocalNodes;
use crate::core::requests::{Pending, Requests};
use crate::core::stats::{BadInput, Counters, inc};
use crate::pacing::InFlight;
use crate::wire::{self, Frame, header, value_body};

/// What the stream workers (point-to-point and broadcast) use.
pub(crate) struct Streams {
    pub(crate) ep: Arc<Endpoint>,
    /// Tokens and control subjects of producers; consumers' entries.
    pub(crate) requests: Arc<Requests>,
    /// Which local nodes stream a broadcast type.
    pub(crate) nodes: Arc<LocalNodes>,
    pub(crate) counters: Arc<Counters>,
}

/// Forwards a local flow's `items` to a remote consumer that granted `credit` on `reply`.
pub(crate) async fn produce(streams: Arc<Streams>, reply: Subject, items: ItemStream, credit: u64) {
    let (ctl_tx, ctl_rx) = mpsc::channel(64);
    let (token, control) = streams.requests.start_control(ctl_tx);
    forward(&streams, reply, items, credit, control, ctl_rx).await;
    streams.requests.end_control(token);
}

async fn forward(
    s: &Streams,
    reply: Subject,
    mut items: ItemStream,
    mut credit: u64,
    control: String,
    mut ctl: mpsc::Receiver<Frame>,
) {
    let mut start = HeaderMap::new();
    start.insert(header::STATUS, "stream");
    start.insert(header::CONTROL, control.as_str());
    if !publish(s, &reply, start, Bytes::new()).await {
        return; // dropping `items` cancels the flow
    }
    let window = credit;
    let idle = s.ep.config.request_timeout();
    let item_headers = wire::frame_headers(&Frame::Item(Value::Null));
    loop {
        if credit == 0 {
            match tokio::time::timeout(idle, ctl.recv()).await {
                Ok(Some(Frame::Credit(n))) => credit = credit.saturating_add(n),
                Ok(Some(_)) | Ok(None) => return,
                Err(_) => {
                    inc(&s.counters.stalled_streams);
                    tracing::warn!(target: "happen_nats", ?idle, "a remote stream consumer granted no credit; cancelling the producer");
                    return;
                }
            }
            continue;
        }
        tokio::select! {
            // items first: at most `credit` more are sent before a cancel is read
            biased;
            item = items.next() => match item {
                Some(Ok(v)) => {
                    if !publish(s, &reply, item_headers.clone(), value_body(&v)).await {
                        return;
                    }
                    inc(&s.counters.stream_items);
                    credit -= 1;
                    s
                        .counters
                        .max_stream_in_flight
                        .fetch_max(window - credit.min(window), Ordering::Relaxed);
                }
                Some(Err(e)) => {
                    let (h, body) = wire::error_frame(&e, s.ep.client.max_payload(), 0);
                    publish(s, &reply, h, body).await;
                    return;
                }
                None => {
                    let end = items.final_value().cloned().unwrap_or(Value::Null);
                    let h = wire::frame_headers(&Frame::End(Value::Null));
                    publish(s, &reply, h, value_body(&end)).await;
                    return;
                }
            },
            frame = ctl.recv() => match frame {
                Some(Frame::Credit(n)) => credit = credit.saturating_add(n),
                _ => return, // cancel: dropping `items` cancels the flow and runs its cleanup
            },
        }
    }
}

async fn publish(s: &Streams, reply: &Subject, headers: HeaderMap, body: Bytes) -> bool {
    match s
        .ep
        .client
        .publish_with_headers(reply.clone(), headers, body)
        .await
    {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(target: "happen_nats", error = %e, "cannot publish a stream frame; cancelling the producer");
            false
        }
    }
}

/// Sends a `credit` or `cancel` frame to a remote producer's control subject.
async fn send_control(s: &Streams, control: String, frame: Frame) {
    let headers = wire::frame_headers(&frame);
    if let Err(e) =
        s.ep.client
            .publish_with_headers(control, headers, bytes::Bytes::new())
            .await
    {
        tracing::debug!(target: "happen_nats", error = %e, "cannot send a stream control frame");
    }
}

/// A reply started a remote stream (request `token`, the producer's `control` subject):
/// hands the local consumer its items, or, when the requester is gone, cancels the producer.
pub(crate) fn consume_remote(
    s: &Arc<Streams>,
    token: u64,
    tx: ReplySender,
    in_flight: Option<InFlight>,
    control: String,
) {
    let window = s.ep.config.stream_window;
    let (sender, items) = happen::stream::channel((window / 4).max(1));
    let (frames_tx, frames_rx) = mpsc::channel(window + 4);
    s.requests.insert(
        token,
        Pending::Stream {
            frames: frames_tx,
            _in_flight: in_flight,
        },
    );
    if tx.send(Response::Stream(items)).is_err() {
        // the caller is gone: release the producer
        s.requests.remove(token);
        let s = s.clone();
        tokio::spawn(async move { send_control(&s, control, Frame::Cancel).await });
        return;
    }
    tokio::spawn(consume(
        s.clone(),
        token,
        control,
        sender,
        frames_rx,
        window,
    ));
}

/// Feeds a remote stream to the local consumer, granting credit as items are handed over.
async fn consume(
    s: Arc<Streams>,
    token: u64,
    control: String,
    sender: StreamSender,
    mut frames: mpsc::Receiver<Message>,
    window: usize,
) {
    let grant_every = (window / 2).max(1) as u64;
    let mut ungranted = 0u64;
    // set when the local reply was dropped without being consumed (fire-and-forget): items
    // are discarded but the remote flow runs to its end, as in process
    let mut discarding = false;
    loop {
        let msg = tokio::select! {
            biased;
            _ = sender.cancelled(), if !discarding => {
                send_control(&s, control.clone(), Frame::Cancel).await;
                break;
            }
            msg = frames.recv() => msg,
        };
        let Some(msg) = msg else {
            sender.finish(Err(Error::new(
                ErrorKind::Transport,
                "the remote stream was interrupted (connection lost or a protocol violation); the producer may have stopped",
            )));
            break;
        };
        match wire::decode_frame(msg.headers.as_ref(), &msg.payload) {
            Ok(Frame::Item(v)) => {
                if !discarding && sender.send(v).await.is_err() {
                    if sender.is_cancelled() {
                        send_control(&s, control.clone(), Frame::Cancel).await;
                        break;
                    }
                    discarding = true;
                }
                ungranted += 1;
                if ungranted >= grant_every {
                    send_control(&s, control.clone(), Frame::Credit(ungranted)).await;
                    ungranted = 0;
                }
            }
            Ok(Frame::End(v)) => {
                sender.finish(Ok(v));
                break;
            }
            Ok(Frame::Error(e)) => {
                sender.finish(Err(e));
                break;
            }
            Ok(other) => {
                s.counters.bad_input(BadInput::Protocol);
                send_control(&s, control.clone(), Frame::Cancel).await;
                sender.finish(Err(Error::new(
                    ErrorKind::Transport,
                    format!(
                        "unexpected `{}` frame from a remote stream producer",
                        other.name()
                    ),
                )));
                break;
            }
            Err(e) => {
                s.counters.bad_input(BadInput::Protocol);
                send_control(&s, control.clone(), Frame::Cancel).await;
                sender.finish(Err(e));
                break;
            }
        }
    }
    s.requests.remove(token);
}
