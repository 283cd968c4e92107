//! The exactly-once records: for each event id at a node, its claim while a flow runs, then
//! its outcome, kept for the dedup window in a plain stream (one subject per record,
//! `max_msgs_per_subject` 1: async-nats' key-value API cannot read a 2.9 server's account
//! info). A claim is stored only if the subject's last message is the one its writer saw
//! (`Nats-Expected-Last-Subject-Sequence`, 0 for none), so one writer wins.

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
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

    /// The record of `key` and its stream sequence, if stored, as the stream's leader has it:
    /// the state a compare-and-set is checked against. Not a direct get, which any replica of
    /// a clustered stream may answer: one that lags (or, on nats-server 2.9 after member
    /// restarts, diverged) reports a sequence the leader refuses, and a claim whose owner died
    /// was never taken over (found by the chaos soak). Read only when a claim is contended.
    pub(super) async fn get_from_leader(
        &self,
        key: &str,
    ) -> std::result::Result<Option<(u64, Bytes)>, String> {
        match self
            .stream
            .get_last_raw_message_by_subject(&format!("{}{key}", self.prefix))
            .await
        {
            Ok(m) => Ok(Some((m.sequence, m.payload))),
            Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => Ok(None),
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

impl Records {
    /// Stores `value` as the record of `key` only if the record's last message has the
    /// sequence `expect` (0: no message). `Ok(Some(seq))` when stored, `Ok(None)` when another
    /// message is there.
    pub(super) async fn put_if(
        &self,
        js: &jetstream::Context,
        key: &str,
        value: Bytes,
        expect: u64,
    ) -> std::result::Result<Option<u64>, String> {
        let m = PublishMessage::build()
            .payload(value)
            .expected_last_subject_sequence(expect);
        let ack = js
            .send_publish(format!("{}{key}", self.prefix), m)
            .await
            .map_err(|e| e.to_string())?;
        match ack.await {
            Ok(a) => Ok(Some(a.sequence)),
            Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// What a record holds.
#[derive(Debug)]
pub(super) enum Entry {
    /// The event finished (or was dead-lettered) with this outcome.
    Done(Result<serde_json::Value>),
    /// A flow of the event runs (or ran and its owner died) in the replica `owner`.
    Claimed { owner: String },
    /// A claim given up (the flow failed and is redelivered, or its node stopped): anyone
    /// may claim it.
    Free,
}

/// The claim of replica `owner`.
pub(super) fn encode_claim(owner: &str) -> Bytes {
    Bytes::from(
        serde_json::to_vec(&serde_json::json!({ "claim": { "owner": owner } })).unwrap_or_default(),
    )
}

/// A claim given up.
pub(super) fn encode_free() -> Bytes {
    Bytes::from_static(br#"{"free":true}"#)
}

/// What a record's body tells.
pub(super) fn decode_entry(bytes: &[u8]) -> Entry {
    let v: serde_json::Value = serde_json::from_slice(bytes).unwrap_or_default();
    if let Some(owner) = v.pointer("/claim/owner") {
        return Entry::Claimed {
            owner: owner.as_str().unwrap_or_default().to_owned(),
        };
    }
    if v.get("free").is_some() {
        return Entry::Free;
    }
    Entry::Done(decode_record(bytes))
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
    fn claims_round_trip() {
        assert!(
            matches!(decode_entry(&encode_claim("r1")), Entry::Claimed { owner } if owner == "r1")
        );
        assert!(matches!(decode_entry(&encode_free()), Entry::Free));
        let v = serde_json::json!({"n": 1});
        assert!(matches!(decode_entry(&encode_record(&v)), Entry::Done(Ok(x)) if x == v));
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
