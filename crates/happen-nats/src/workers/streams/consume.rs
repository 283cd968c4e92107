//! The consuming side of a remote stream: feeds its items to the local consumer and grants
//! credit as they are handed over; cancels the producer when the consumer goes away.

use std::sync::Arc;

use async_nats::Message;
use happen::transport::{ReplySender, Response, StreamSender};
use happen::{Error, ErrorKind};
use tokio::sync::mpsc;

use super::Streams;
use crate::core::requests::Pending;
use crate::core::stats::BadInput;
use crate::pacing::InFlight;
use crate::wire::{self, Frame};

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
pub(crate) fn start(
    s: &Arc<Streams>,
    token: u64,
    tx: ReplySender,
    in_flight: Option<InFlight>,
    control: String,
    replica: Option<Arc<str>>,
) {
    let window = s.ep.config.stream_window;
    let (sender, items) = happen::transport::stream_channel((window / 4).max(1));
    let (frames_tx, frames_rx) = mpsc::channel(window + 4);
    s.requests.insert(
        token,
        Pending::Stream {
            frames: frames_tx,
            _in_flight: in_flight,
            replica,
        },
    );
    if tx.send(Response::Stream(items)).is_err() {
        // the caller is gone: release the producer
        s.requests.remove(token);
        let s = s.clone();
        tokio::spawn(async move { send_control(&s, control, Frame::Cancel).await });
        return;
    }
    tokio::spawn(run(s.clone(), token, control, sender, frames_rx, window));
}

/// Feeds a remote stream to the local consumer, granting credit as items are handed over.
async fn run(
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
            sender.end(Err(Error::new(
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
                sender.end(Ok(v));
                break;
            }
            Ok(Frame::Error(e)) => {
                sender.end(Err(e));
                break;
            }
            Ok(other) => {
                s.counters.bad_input(BadInput::Protocol);
                send_control(&s, control.clone(), Frame::Cancel).await;
                sender.end(Err(Error::new(
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
                sender.end(Err(e));
                break;
            }
        }
    }
    s.requests.remove(token);
}
