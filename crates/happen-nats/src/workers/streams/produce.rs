//! The producing side of a stream to a remote requester: forwards a local flow's items, never
//! more than the credit the consumer granted; a `cancel` frame (or a consumer that stops
//! granting credit for the request timeout) drops the local stream, which cancels the flow.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use async_nats::{HeaderMap, Subject};
use bytes::Bytes;
use futures::StreamExt;
use happen::transport::ItemStream;
use serde_json::Value;
use tokio::sync::mpsc;

use super::Streams;
use crate::core::stats::inc;
use crate::wire::{self, Frame, header, value_body};

/// Forwards a local flow's `items` to a remote consumer that granted `credit` on `reply`.
pub(crate) async fn run(streams: Arc<Streams>, reply: Subject, items: ItemStream, credit: u64) {
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
    // the consumer ties the stream to this replica (see `WIRE.md`, "Liveness")
    start.insert(header::REPLICA, s.ep.replica.as_str());
    if !publish(s, &reply, start, Bytes::new()).await {
        return; // dropping `items` cancels the flow
    }
    let window = credit;
    let idle = s.ep.config.effective_request_timeout();
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
