//! The exactly-once records: for each completed event, its outcome, kept for the dedup
//! window in a plain stream (one subject per record, `max_msgs_per_subject` 1: async-nats'
//! key-value API cannot read a 2.9 server's account info).

use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use happen::{Error, ErrorKind, Result};

use super::escape_token;

/// The exactly-once records: the outcome of each completed event, for the dedup window.
pub(super) struct Records {
    stream: stream::Stream,
    /// `<prefix>.done.`
    prefix: String,
}

impl Records {
    /// The records in `stream`, on subjects `<prefix><key>`.
    pub(super) fn new(stream: stream::Stream, prefix: String) -> Records {
        Records { stream, prefix }
    }

    /// The record of `key`, if stored.
    pub(super) async fn get(&self, key: &str) -> std::result::Result<Option<Bytes>, String> {
        match self
            .stream
            .direct_get_last_for_subject(format!("{}{key}", self.prefix))
            .await
        {
            Ok(m) => Ok(Some(m.payload)),
            Err(e) if e.kind() == stream::DirectGetErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Stores the record of `key`.
    pub(super) async fn put(
        &self,
        js: &jetstream::Context,
        key: &str,
        value: Bytes,
    ) -> std::result::Result<(), String> {
        js.publish(format!("{}{key}", self.prefix), value)
            .await
            .map_err(|e| e.to_string())?
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// The exactly-once record key of `event` at `node` (the last two tokens of its subject).
pub(super) fn record_key(node: &str, event: &str) -> String {
    let mut k = String::with_capacity(node.len() + event.len() + 1);
    escape_token(node, &mut k);
    k.push('.');
    escape_token(event, &mut k);
    if event.is_empty() {
        k.push('_');
    }
    k
}

/// The record of a flow that finished with `value`.
pub(super) fn encode_record(value: &serde_json::Value) -> Bytes {
    Bytes::from(serde_json::to_vec(&serde_json::json!({ "ok": value })).unwrap_or_default())
}

/// The record of a flow that failed with `err`.
pub(super) fn encode_failure(err: &Error) -> Bytes {
    Bytes::from(
        serde_json::to_vec(&serde_json::json!({
            "error": { "kind": format!("{:?}", err.kind()), "message": err.message() }
        }))
        .unwrap_or_default(),
    )
}

/// The outcome a record tells.
pub(super) fn decode_record(bytes: &[u8]) -> Result<serde_json::Value> {
    let v: serde_json::Value = serde_json::from_slice(bytes).unwrap_or_default();
    if let Some(ok) = v.get("ok") {
        return Ok(ok.clone());
    }
    let message = v
        .pointer("/error/message")
        .and_then(|m| m.as_str())
        .unwrap_or("the event failed earlier")
        .to_owned();
    Err(Error::new(
        ErrorKind::Handler,
        format!("already processed (exactly-once record): {message}"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_escaped() {
        assert_eq!(record_key("n.1", "evt-1"), "n=2E1.evt-1");
    }

    #[test]
    fn records_round_trip() {
        let v = serde_json::json!({"n": 1});
        assert_eq!(decode_record(&encode_record(&v)).unwrap(), v);
        let e = Error::new(ErrorKind::Handler, "boom");
        let back = decode_record(&encode_failure(&e)).unwrap_err();
        assert!(back.message().contains("boom"), "{back}");
    }
}
