//! Durable delivery as the page shows it, read from JetStream (only while a page is open):
//! per durable node its consumer's pending, ack-pending and redelivered counts, the dead
//! letters per node, and the latest dead letters with their error headers (`WIRE.md`,
//! "Durable delivery").

use std::collections::BTreeMap;

use async_nats::jetstream;
use futures::StreamExt;
use happen_nats::DurableConfig;
use serde_json::{Value, json};

/// Dead letters shown with their headers.
const LATEST: u64 = 10;

fn header(h: &async_nats::HeaderMap, name: &str) -> Option<String> {
    h.get(name)
        .map(|v| crate::observed::percent_decode(v.as_str()))
}

/// The durable state of the system on `prefix` (the default stream names), or `None` when
/// it has no durable stream (no durable node ever ran) or JetStream is not there.
pub(crate) async fn snapshot(client: &async_nats::Client, prefix: &str) -> Option<Value> {
    let js = jetstream::new(client.clone());
    let name = DurableConfig::default().stream_name(prefix);
    let mut stream = js.get_stream(&name).await.ok()?;
    let stored = stream.info().await.ok()?.state.messages;
    let mut consumers = Vec::new();
    let mut list = stream.consumers();
    while let Some(Ok(c)) = list.next().await {
        consumers.push(json!({
            // `happen_<node id, escaped>`
            "node": c.name.strip_prefix("happen_").unwrap_or(&c.name),
            "consumer": c.name,
            "pending": c.num_pending,
            "ackPending": c.num_ack_pending,
            "redelivered": c.num_redelivered,
            "waiting": c.num_waiting,
        }));
    }
    let mut dead = BTreeMap::new();
    let mut latest = Vec::new();
    let dlq_prefix = format!("{prefix}.dlq.");
    if let Ok(mut dlq) = js.get_stream(format!("{name}_DLQ")).await {
        if let Ok(mut subjects) = dlq.info_with_subjects(format!("{dlq_prefix}>")).await {
            while let Some(Ok((subject, n))) = subjects.next().await {
                let node = subject.strip_prefix(&dlq_prefix).unwrap_or(&subject);
                dead.insert(node.to_owned(), n);
            }
        }
        let last = dlq.info().await.ok().map_or(0, |i| i.state.last_sequence);
        let mut seq = last;
        while seq > 0 && (latest.len() as u64) < LATEST && last - seq < LATEST * 4 {
            if let Ok(m) = dlq.get_raw_message(seq).await {
                let event: Value = serde_json::from_slice(&m.payload).unwrap_or(Value::Null);
                latest.push(json!({
                    "sequence": m.sequence,
                    "node": header(&m.headers, "Happen-Dead-Node"),
                    "deliveries": header(&m.headers, "Happen-Deliveries"),
                    "errorKind": header(&m.headers, "Happen-Error-Kind"),
                    "errorMessage": header(&m.headers, "Happen-Error-Message"),
                    "errorCode": header(&m.headers, "Happen-Error-Code"),
                    "type": event["type"],
                    "eventId": event["context"]["causal"]["id"],
                    "correlationId": event["context"]["causal"]["correlationId"],
                }));
            }
            seq -= 1;
        }
    }
    Some(json!({
        "stream": name, "stored": stored, "consumers": consumers,
        "deadLetters": dead, "latestDeadLetters": latest,
    }))
}
