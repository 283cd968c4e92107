//! The producing side of a stream over NATS: forwards a local flow's items to a remote
//! consumer, never more than the credit it granted; a `cancel` frame (or a consumer that stops
//! granting credit for the request timeout) drops the local stream, which cancels the flow.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use async_nats::{HeaderMap, Subject};
use bytes::Bytes;
use futures::StreamExt;
use happen::stream::ItemStream;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::stats::inc;
use crate::transport::Shared;
use crate::wire::value_body;
use crate::wire::{self, Frame, header};

pub(crate) async fn produce(shared: Arc<Shared>, reply: Subject, items: ItemStream, credit: u64) {
    let token = shared.next_token.fetch_add(1, Ordering::Relaxed);
    let (ctl_tx, ctl_rx) = mpsc::channel(64);
    shared.controls.lock().insert(token, ctl_tx);
    let control = format!("{}.c{token}", shared.inbox);
    forward(&shared, reply, items, credit, control, ctl_rx).await;
    shared.controls.lock().remove(&token);
}

async fn forward(
    shared: &Shared,
    reply: Subject,
    mut items: ItemStream,
    mut credit: u64,
    control: String,
    mut ctl: mpsc::Receiver<Frame>,
) {
    let mut start = HeaderMap::new();
    start.insert(header::STATUS, "stream");
    start.insert(header::CONTROL, control.as_str());
    if !publish(shared, &reply, start, Bytes::new()).await {
        return; // dropping `items` cancels the flow
    }
    let window = credit;
    let idle = shared.config.request_timeout();
    let item_headers = wire::frame_headers(&Frame::Item(Value::Null));
    loop {
        if credit == 0 {
            match tokio::time::timeout(idle, ctl.recv()).await {
                Ok(Some(Frame::Credit(n))) => credit = credit.saturating_add(n),
                Ok(Some(_)) | Ok(None) => return,
                Err(_) => {
                    inc(&shared.counters.stalled_streams);
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
                    if !publish(shared, &reply, item_headers.clone(), value_body(&v)).await {
                        return;
                    }
                    inc(&shared.counters.stream_items);
                    credit -= 1;
                    shared
                        .counters
                        .max_stream_in_flight
                        .fetch_max(window - credit.min(window), Ordering::Relaxed);
                }
                Some(Err(e)) => {
                    let (h, body) = wire::error_frame(&e, shared.client.max_payload(), 0);
                    publish(shared, &reply, h, body).await;
                    return;
                }
                None => {
                    let end = items.final_value().cloned().unwrap_or(Value::Null);
                    let h = wire::frame_headers(&Frame::End(Value::Null));
                    publish(shared, &reply, h, value_body(&end)).await;
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

async fn publish(shared: &Shared, reply: &Subject, headers: HeaderMap, body: Bytes) -> bool {
    match shared
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
