//! One event as a tap saw it.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::time;

/// One event as the tap saw it: the `--json` output and a line of a `--record` file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Seen {
    /// When the tap received it (UTC, RFC 3339).
    pub(crate) time: String,
    /// When the tap received it, in microseconds since the Unix epoch.
    pub(crate) received_us: u64,
    /// `send` (a request: it has a reply subject), `tell` (direct, no reply) or `broadcast`.
    pub(crate) kind: String,
    /// The target node id (`null` for a broadcast).
    pub(crate) target: Option<String>,
    /// The event type.
    #[serde(rename = "type")]
    pub(crate) event_type: String,
    pub(crate) id: String,
    pub(crate) sender: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) causation_id: Option<String>,
    pub(crate) correlation_id: String,
    #[serde(default)]
    pub(crate) path: Vec<String>,
    /// The sender's timestamp, in milliseconds since the Unix epoch.
    pub(crate) timestamp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) payload: Option<Value>,
    /// The public key a signed event says it was signed with (`context.integrity.publicKey`);
    /// `null` for an unsigned event. The tap has no trust ring: it shows the claim and
    /// whether the hash matches the event, the receiving node verifies the signature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) signed_by: Option<String>,
    /// For a signed event: does `causal.hash` match the event's content?
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) hash_ok: Option<bool>,
}

impl Seen {
    /// The text line: time, type, sender → target, ids (and the payload if kept).
    pub(crate) fn line(&self) -> String {
        let mut line = format!(
            "{} {} {} → {} id={} corr={}",
            time::clock(self.received_us),
            self.event_type,
            self.sender,
            self.target_label(),
            self.id,
            self.correlation_id
        );
        if let Some(c) = &self.causation_id {
            line.push_str(&format!(" cause={c}"));
        }
        if let Some(key) = &self.signed_by {
            line.push_str(&format!(" signed-by={key}"));
            if self.hash_ok == Some(false) {
                line.push_str(" (hash mismatch)");
            }
        }
        if let Some(p) = &self.payload {
            line.push_str(&format!(" payload={p}"));
        }
        line
    }

    /// The target node, `*` for a broadcast, with `(tell)` for a direct event without reply.
    pub(crate) fn target_label(&self) -> String {
        match (&self.target, self.kind.as_str()) {
            (Some(t), "tell") => format!("{t} (tell)"),
            (Some(t), _) => t.clone(),
            (None, _) => "*".to_owned(),
        }
    }
}

impl Seen {
    /// A request `id` of transaction `txn` from `s` to `target`, caused by `cause`, seen at
    /// `at` µs (for tests).
    #[cfg(test)]
    pub(crate) fn sample(id: &str, cause: Option<&str>, at: u64, target: &str) -> Seen {
        Seen {
            time: String::new(),
            received_us: at,
            kind: "send".into(),
            target: Some(target.into()),
            event_type: format!("t.{id}"),
            id: id.into(),
            sender: "s".into(),
            causation_id: cause.map(str::to_owned),
            correlation_id: "txn".into(),
            path: vec![],
            timestamp: at / 1000,
            payload: None,
            signed_by: None,
            hash_ok: None,
        }
    }
}
