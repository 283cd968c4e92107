//! Completion records on the wire: the end of the flow of a tell or a broadcast at one node,
//! published on `<prefix>.completed.<node-id>` while records are on (see `WIRE.md`,
//! "Completion records").

use serde::{Deserialize, Serialize};

/// How long after a watcher's last beat on `<prefix>.watch` the nodes of a process with
/// `completion_records = "watched"` keep publishing records.
pub const WATCH_TTL: std::time::Duration = std::time::Duration::from_secs(5);

/// How often a watcher beats on `<prefix>.watch` (well within [`WATCH_TTL`]).
pub const WATCH_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// The subject a watcher beats on: `<prefix>.watch`.
pub fn watch_subject(prefix: &str) -> String {
    format!("{prefix}.watch")
}

/// The subject of every node's completion records: `<prefix>.completed.>`.
pub fn records_subject(prefix: &str) -> String {
    format!("{prefix}.completed.>")
}

/// One completion record (the JSON body of a message on `<prefix>.completed.<node-id>`).
/// Every field but `eventId` and `node` is optional on input (0, empty); unknown fields are
/// ignored, so later additions do not break older readers.
///
/// ```
/// use happen_nats::completion::Completion;
///
/// let c = Completion::parse(br#"{"eventId": "evt-1", "correlationId": "txn-1", "type": "audit",
///     "node": "audit", "replica": "r1", "kind": "tell", "startedUs": 10, "endedUs": 25,
///     "outcome": "error", "error": {"kind": "handler", "message": "no", "code": "nope"}}"#)
///     .unwrap();
/// assert_eq!((c.ended_us - c.started_us, c.outcome.as_str()), (15, "error"));
/// assert_eq!(c.error.unwrap().code.as_deref(), Some("nope"));
/// assert!(Completion::parse(b"{}").is_err());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
#[non_exhaustive]
pub struct Completion {
    /// The event's id (`context.causal.id`).
    pub event_id: String,
    /// Its correlation id.
    pub correlation_id: String,
    /// Its type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The node whose flow finished.
    pub node: String,
    /// The process (replica) that ran it (`Happen-Replica`).
    pub replica: String,
    /// `tell` or `broadcast`.
    pub kind: String,
    /// When the process admitted the event into the node, in µs since the Unix epoch.
    pub started_us: u64,
    /// When its flow finished (a streaming handler's: its final value), in µs since the epoch.
    pub ended_us: u64,
    /// `ok` or `error`.
    pub outcome: String,
    /// The error, when `outcome` is `error`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<CompletionError>,
}

/// The error a flow ended with, as its error reply would have carried it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
#[non_exhaustive]
pub struct CompletionError {
    /// The error kind (`handler`, `timeout`, … as in `Happen-Error-Kind`).
    pub kind: String,
    /// Its message.
    pub message: String,
    /// Its application code, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

impl Completion {
    /// Reads a record; an error says what is wrong (never a panic).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidEvent`](happen::ErrorKind::InvalidEvent) when `body` is not JSON
    /// of a record, or lacks `eventId` or `node`.
    pub fn parse(body: &[u8]) -> happen::Result<Completion> {
        let bad = |why: String| {
            happen::Error::new(
                happen::ErrorKind::InvalidEvent,
                format!("not a completion record: {why}"),
            )
        };
        let c: Completion = serde_json::from_slice(body).map_err(|e| bad(e.to_string()))?;
        if c.event_id.is_empty() || c.node.is_empty() {
            return Err(bad("`eventId` and `node` are required".to_owned()));
        }
        Ok(c)
    }
}
