//! The requester side: one shared inbox subscription (`<inbox>.*`) multiplexes every reply and
//! stream frame of this process, and the control frames (`<inbox>.c<token>`) sent to this
//! process's stream producers. No subscription and no task per request.

use std::sync::Arc;
use std::time::Duration;

use async_nats::{Message, StatusCode, Subscriber};
use futures::StreamExt;
use happen::transport::{Response, StreamSender};
use happen::{Error, ErrorKind, NodeId};

use crate::pacing::InFlight;
use crate::stats::inc;
use crate::transport::{Headers, Outgoing, Pending, Shared};
use crate::wire::{self, Frame, ReplyFrame, header};

/// How often waiting entries whose caller went away are removed.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

pub(crate) async fn run(shared: Arc<Shared>, mut sub: Subscriber) {
    let mut sweep = tokio::time::interval(SWEEP_EVERY);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            msg = sub.next() => match msg {
                Some(msg) => on_message(&shared, msg),
                None => return,
            },
            _ = sweep.tick() => sweep_pending(&shared),
        }
    }
}

/// Removes entries nobody will read: callers that timed out or dropped their reply (a
/// request counted for pacing stays counted until its reply arrives or the request timeout
/// passes: the target may still be working on it), and limits queries that got no answer.
fn sweep_pending(shared: &Shared) {
    let now = tokio::time::Instant::now();
    let mut unanswered = Vec::new();
    shared.pending.lock().retain(|_, p| match p {
        Pending::Reply { tx, in_flight, .. } => {
            !tx.is_closed() || in_flight.as_ref().is_some_and(|f| !f.expired(now))
        }
        Pending::Stream { frames, .. } => !frames.is_closed(),
        Pending::Limits { remote, expires } => {
            let keep = *expires > now;
            if !keep {
                unanswered.push(remote.clone());
            }
            keep
        }
        Pending::Relay { expires, .. } => *expires > now,
        Pending::Probe(done) => !done.is_closed(),
    });
    for remote in unanswered {
        // no answer (a reference node, say): pace by its reports only
        remote.set_limits(None);
    }
}

fn on_message(shared: &Arc<Shared>, msg: Message) {
    let token = msg
        .subject
        .as_str()
        .strip_prefix(shared.inbox.as_str())
        .and_then(|t| t.strip_prefix('.'))
        .unwrap_or("");
    if let Some(ctl) = token.strip_prefix('c') {
        on_control(shared, ctl.parse().ok(), &msg);
        return;
    }
    let Ok(token) = token.parse::<u64>() else {
        shared.counters.bad_input("protocol");
        return;
    };
    let entry = {
        let mut pending = shared.pending.lock();
        match pending.get_mut(&token) {
            Some(Pending::Relay {
                to, node, first, ..
            }) => {
                let (to, node, first) = (to.clone(), node.clone(), first.take());
                if !relay_continues(&msg) {
                    pending.remove(&token);
                }
                drop(pending);
                relay(shared, to, &node, msg);
                if let Some(first) = first {
                    let _ = first.send(());
                }
                return;
            }
            Some(Pending::Stream { frames, .. }) => Err(frames.clone()),
            Some(Pending::Reply { .. } | Pending::Limits { .. } | Pending::Probe(_)) => {
                Ok(pending.remove(&token))
            }
            None => Ok(None),
        }
    };
    match entry {
        Err(frames) => {
            // the producer never sends more than the granted credit, so this never blocks
            if frames.try_send(msg).is_err() {
                shared.counters.bad_input("protocol");
                tracing::warn!(target: "happen_nats", "a remote stream producer exceeded its credit; ending the stream");
                shared.pending.lock().remove(&token);
            }
        }
        Ok(Some(Pending::Reply {
            tx,
            target,
            in_flight,
            ..
        })) => on_reply(shared, token, tx, target, in_flight, msg),
        Ok(Some(Pending::Probe(done))) => {
            let _ = done.send(());
        }
        Ok(Some(Pending::Limits { remote, .. })) => {
            if msg.status == Some(StatusCode::NO_RESPONDERS) {
                remote.query_failed();
            } else {
                let limits = msg
                    .headers
                    .as_ref()
                    .and_then(|h| h.get(header::LIMITS))
                    .and_then(|v| wire::parse_limits(v.as_str()));
                remote.set_limits(limits);
            }
        }
        Ok(_) => inc(&shared.counters.unmatched),
    }
}

/// Does a relayed request get more messages after `msg` (a stream start or item)?
fn relay_continues(msg: &Message) -> bool {
    let get = |name| {
        msg.headers
            .as_ref()
            .and_then(|h| h.get(name))
            .map(|v| v.as_str().trim())
    };
    get(header::STATUS) == Some("stream") || get(header::FRAME) == Some("item")
}

/// Passes an answer to a relayed request back to its sender: as it is, or, when the server
/// found no process serving the node ("no responders", sent to us as the publisher), as an
/// `unknown_node` error.
fn relay(shared: &Arc<Shared>, to: async_nats::Subject, node: &NodeId, msg: Message) {
    let (headers, payload) = if msg.status == Some(StatusCode::NO_RESPONDERS) {
        let err = crate::wire::error_from_parts(
            ErrorKind::UnknownNode,
            format!(
                "node `{node}` stopped and no other process serves it (no responders on `{}`); start one or check the id",
                shared.subjects.node(node)
            ),
            Some(node.clone()),
            None,
            None,
        );
        let mut h = async_nats::HeaderMap::new();
        h.insert(header::STATUS, "error");
        let body = wire::encode_error(&err, &mut h, shared.client.max_payload(), 0);
        (Some(h), body)
    } else {
        (msg.headers, msg.payload)
    };
    let out = Outgoing {
        subject: to,
        reply: None,
        headers: headers.map_or(Headers::None, Headers::Custom),
        payload,
    };
    if let Some(out) = shared.try_enqueue(out) {
        let shared = shared.clone();
        tokio::spawn(async move {
            if let Err(e) = shared.publish_now(out).await {
                tracing::warn!(target: "happen_nats", error = %e, "cannot pass back a relayed answer");
            }
        });
    }
}

fn on_reply(
    shared: &Arc<Shared>,
    token: u64,
    tx: happen::transport::ReplySender,
    target: NodeId,
    in_flight: Option<InFlight>,
    msg: Message,
) {
    if msg.status == Some(StatusCode::NO_RESPONDERS) {
        let err = crate::wire::error_from_parts(
            ErrorKind::UnknownNode,
            format!(
                "no process hosts node `{target}` (no responders on `{}`); start one or check the id",
                shared.subjects.node(&target)
            ),
            Some(target),
            None,
            None,
        );
        let _ = tx.send(Response::Done(Err(err)));
        return;
    }
    let headers = msg.headers.as_ref();
    shared.observe_pressure(
        &target,
        headers
            .and_then(|h| h.get(header::PRESSURE))
            .map(|v| v.as_str()),
    );
    match wire::decode_reply(headers, &msg.payload) {
        Ok(ReplyFrame::Value(v)) => {
            let _ = tx.send(Response::Done(Ok(v)));
        }
        Ok(ReplyFrame::Error(e)) => {
            let _ = tx.send(Response::Done(Err(e)));
        }
        Ok(ReplyFrame::Stream { control }) => {
            let window = shared.config.stream_window;
            let (sender, items) = happen::transport::stream_channel((window / 4).max(1));
            let (frames_tx, frames_rx) = tokio::sync::mpsc::channel(window + 4);
            shared.pending.lock().insert(
                token,
                Pending::Stream {
                    frames: frames_tx,
                    _in_flight: in_flight,
                },
            );
            if tx.send(Response::Stream(items)).is_err() {
                // the caller is gone: release the producer
                shared.pending.lock().remove(&token);
                tokio::spawn(send_control(shared.clone(), control, Frame::Cancel));
                return;
            }
            tokio::spawn(consume(
                shared.clone(),
                token,
                control,
                sender,
                frames_rx,
                window,
            ));
        }
        Err(e) => {
            shared.counters.bad_input("malformed");
            let _ = tx.send(Response::Done(Err(e)));
        }
    }
}

fn on_control(shared: &Arc<Shared>, token: Option<u64>, msg: &Message) {
    let frame = match wire::decode_frame(msg.headers.as_ref(), &msg.payload) {
        Ok(f @ (Frame::Credit(_) | Frame::Cancel)) => f,
        Ok(_) | Err(_) => {
            shared.counters.bad_input("protocol");
            return;
        }
    };
    let producer = token.and_then(|t| shared.controls.lock().get(&t).cloned());
    match producer {
        Some(p) => {
            if p.try_send(frame).is_err() {
                shared.counters.bad_input("protocol");
            }
        }
        None => inc(&shared.counters.unmatched),
    }
}

pub(crate) async fn send_control(shared: Arc<Shared>, control: String, frame: Frame) {
    let headers = wire::frame_headers(&frame);
    if let Err(e) = shared
        .client
        .publish_with_headers(control, headers, bytes::Bytes::new())
        .await
    {
        tracing::debug!(target: "happen_nats", error = %e, "cannot send a stream control frame");
    }
}

/// Feeds a remote stream to the local consumer, granting credit as items are handed over.
async fn consume(
    shared: Arc<Shared>,
    token: u64,
    control: String,
    sender: StreamSender,
    mut frames: tokio::sync::mpsc::Receiver<Message>,
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
                send_control(shared.clone(), control.clone(), Frame::Cancel).await;
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
                        send_control(shared.clone(), control.clone(), Frame::Cancel).await;
                        break;
                    }
                    discarding = true;
                }
                ungranted += 1;
                if ungranted >= grant_every {
                    send_control(shared.clone(), control.clone(), Frame::Credit(ungranted)).await;
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
                shared.counters.bad_input("protocol");
                send_control(shared.clone(), control.clone(), Frame::Cancel).await;
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
                shared.counters.bad_input("protocol");
                send_control(shared.clone(), control.clone(), Frame::Cancel).await;
                sender.end(Err(e));
                break;
            }
        }
    }
    shared.pending.lock().remove(&token);
}
