//! How the flow of a tell or a broadcast ended at one node: its completion record
//! (`WIRE.md`, "Completion records"), as the CLI keeps, records and shows it.

use happen_nats::completion::Completion;
use serde::{Deserialize, Serialize};

use super::reply::ErrorInfo;

/// One node's completion of a tell or broadcast (a line of a record file, too).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Completed {
    pub(crate) event_id: String,
    #[serde(default)]
    pub(crate) correlation_id: String,
    pub(crate) node: String,
    #[serde(default)]
    pub(crate) replica: String,
    #[serde(default)]
    pub(crate) started_us: u64,
    #[serde(default)]
    pub(crate) ended_us: u64,
    /// `ok` or `error`.
    pub(crate) outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<ErrorInfo>,
}

impl Completed {
    /// The record as received; `None` when it is not one (reported by the caller's choice).
    pub(crate) fn parse(body: &[u8]) -> Option<Completed> {
        let c = Completion::parse(body).ok()?;
        let error = c.error.map(|e| ErrorInfo {
            kind: e.kind,
            message: e.message,
            node: Some(c.node.clone()),
            code: e.code,
            chain: Vec::new(),
        });
        Some(Completed {
            outcome: if c.outcome == "error" || error.is_some() {
                "error"
            } else {
                "ok"
            }
            .to_owned(),
            event_id: c.event_id,
            correlation_id: c.correlation_id,
            node: c.node,
            replica: c.replica,
            started_us: c.started_us,
            ended_us: c.ended_us,
            error,
        })
    }

    /// The node's time for it (admission to the flow's end), in µs.
    pub(crate) fn took_us(&self) -> u64 {
        self.ended_us.saturating_sub(self.started_us)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_parse_and_bad_ones_are_none() {
        let c = Completed::parse(
            br#"{"eventId":"e","correlationId":"c","node":"n","replica":"r","kind":"tell",
                "startedUs":10,"endedUs":40,"outcome":"error",
                "error":{"kind":"handler","message":"m","code":"x"}}"#,
        )
        .unwrap();
        assert_eq!((c.took_us(), c.outcome.as_str()), (30, "error"));
        let e = c.error.unwrap();
        assert_eq!(
            (e.node.as_deref(), e.code.as_deref()),
            (Some("n"), Some("x"))
        );
        for bad in [&b"not json"[..], b"{}", br#"{"eventId": 3}"#, b"[1]"] {
            assert!(Completed::parse(bad).is_none());
        }
        // an ended before its start (clocks) is no negative time
        let c = Completed::parse(br#"{"eventId":"e","node":"n","startedUs":9,"endedUs":2}"#);
        assert_eq!(c.unwrap().took_us(), 0);
    }
}
