//! The durable publisher task: stores durable sends in JetStream, many awaiting their
//! acknowledgement at once, each retried until acknowledged or the request timeout passes.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use happen::ErrorKind;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{Durable, Publish};
use crate::config::Backoff;
use crate::core::stats::inc;

/// Pauses between attempts to store a durable event.
const PUBLISH_RETRY: Backoff = Backoff::new(Duration::from_millis(50), Duration::from_millis(800));

/// Publishes durable messages, many awaiting their acknowledgement at once, each retried until
/// acknowledged or the request timeout passes.
pub(super) async fn run(d: Arc<Durable>, mut rx: mpsc::Receiver<Publish>) {
    let window = d.settings.publish_window;
    let give_up_after = d.ep.config.effective_request_timeout();
    let mut flying = FuturesUnordered::new();
    loop {
        tokio::select! {
            biased;
            Some(()) = flying.next(), if !flying.is_empty() => {}
            p = rx.recv(), if flying.len() < window => match p {
                Some(p) => {
                    d.took();
                    flying.push(publish_one(d.clone(), p, Instant::now() + give_up_after));
                }
                None => break,
            },
            else => break,
        }
    }
    while flying.next().await.is_some() {}
}

async fn publish_one(d: Arc<Durable>, p: Publish, deadline: Instant) {
    let mut attempt = 0u32;
    let result = loop {
        let msg = jetstream::message::PublishMessage::build()
            .payload(p.payload.clone())
            .headers(p.headers.clone());
        let r = match d.js.send_publish(p.subject.clone(), msg).await {
            Ok(ack) => ack.await.map(|a| a.sequence).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match r {
            Ok(seq) => {
                if let Some(t) = p.token {
                    // where to look after a reconnect whether it ran (`answers`)
                    d.requests.stored(t, seq);
                }
                break Ok(());
            }
            Err(e) => {
                let pause = PUBLISH_RETRY.delay(attempt as usize);
                if Instant::now() + pause >= deadline || d.link.is_closed() {
                    break Err(e);
                }
                attempt += 1;
                inc(&d.counters.durable_publish_retries);
                tracing::debug!(target: "happen_nats", node = %p.node, error = %e, attempt, "durable publish not acknowledged; retrying");
                tokio::time::sleep(pause).await;
            }
        }
    };
    match result {
        Ok(()) => inc(&d.counters.durable_published),
        Err(e) => {
            inc(&d.counters.durable_publish_failed);
            let err = crate::wire::error_from_parts(
                ErrorKind::Transport,
                format!(
                    "the durable event could not be stored in JetStream (stream `{}`) within the request timeout: {e}; is JetStream up?",
                    d.stream
                ),
                Some(p.node.clone()),
                None,
                None,
            );
            match p.token {
                Some(t) => d.requests.forget(t, || err),
                None => {
                    tracing::error!(target: "happen_nats", node = %p.node, error = %err, "a durable tell was lost before it was stored")
                }
            }
        }
    }
}
