//! The record file of `happen tap --record`: JSON lines, one record each. An event is a
//! [`Seen`] object as `happen tap --json` prints it (the only kind of line of version 1
//! files, which stay readable). Version 2 adds lines with a `"record"` field, version 3 the
//! `completed` line (files of versions 1 and 2 stay readable):
//!
//! | `record` | line |
//! |---|---|
//! | `header` | `{"record": "header", "format": "happen-record", "version": 3, "startedUs": …}`, written when a recording starts (an appended file has one per run) |
//! | `reply` | a request's first answer: `{"record": "reply", "eventId", "correlationId", "receivedUs", "status": "ok"/"error"/"stream", "error"?}` |
//! | `nodes` | a discovery snapshot: `{"record": "nodes", "atUs": …, "processes": [ProcessInfo…]}` (`WIRE.md`, "Discovery") |
//! | `completed` | a tell's or broadcast's end at one node, from its completion record (`WIRE.md`, "Completion records"): `{"record": "completed", "eventId", "correlationId", "node", "replica", "startedUs", "endedUs", "outcome": "ok"/"error", "error"?}` |
//!
//! Read by `happen trace --from` (events only) and `happen web --replay` (everything).

use std::io::BufRead;
use std::path::Path;

use happen::{Error, ErrorKind, Result};
use happen_nats::discover::ProcessInfo;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::observed::{Completed, ErrorInfo, Reply, Seen};

/// The version this build writes; files of a later one are refused with a clear error.
pub(crate) const VERSION: u64 = 3;

/// The first line of a recording.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Header {
    pub(crate) format: String,
    pub(crate) version: u64,
    #[serde(default)]
    pub(crate) started_us: u64,
}

/// A request's reply, paired with its event.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ReplyLine {
    pub(crate) event_id: String,
    pub(crate) correlation_id: String,
    pub(crate) received_us: u64,
    pub(crate) status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<ErrorInfo>,
}

impl ReplyLine {
    pub(crate) fn of(req: &Seen, reply: &Reply) -> ReplyLine {
        ReplyLine {
            event_id: req.id.clone(),
            correlation_id: req.correlation_id.clone(),
            received_us: reply.received_us,
            status: reply.status.to_owned(),
            error: reply.error.clone(),
        }
    }

    /// The reply as `happen web` keeps it (an unknown status reads as `ok`).
    pub(crate) fn reply(&self) -> Reply {
        Reply {
            received_us: self.received_us,
            status: match self.status.as_str() {
                "error" => "error",
                "stream" => "stream",
                _ => "ok",
            },
            error: self.error.clone(),
        }
    }
}

/// A discovery snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct NodesLine {
    pub(crate) at_us: u64,
    #[serde(default)]
    pub(crate) processes: Vec<ProcessInfo>,
}

/// One line of a record file.
#[derive(Debug)]
pub(crate) enum Line {
    Header(Header),
    Event(Box<Seen>),
    Reply(ReplyLine),
    Nodes(NodesLine),
    Completed(Completed),
}

impl Line {
    /// The line as JSON (no newline).
    pub(crate) fn to_json(&self) -> String {
        fn tagged<T: Serialize>(tag: &str, x: &T) -> String {
            let mut v = serde_json::to_value(x).unwrap_or(Value::Null);
            if let Value::Object(m) = &mut v {
                m.insert("record".to_owned(), Value::from(tag));
            }
            v.to_string()
        }
        match self {
            // events stay plain `Seen` lines: version 1 readers and `jq` filters keep working
            Line::Event(s) => serde_json::to_string(s.as_ref()).unwrap_or_default(),
            Line::Header(h) => tagged("header", h),
            Line::Reply(r) => tagged("reply", r),
            Line::Nodes(n) => tagged("nodes", n),
            Line::Completed(c) => tagged("completed", c),
        }
    }

    /// Reads one line (`None`: a blank line); `Err` says why it is not a record.
    fn parse(text: &str) -> std::result::Result<Option<Line>, String> {
        if text.trim().is_empty() {
            return Ok(None);
        }
        let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        let kind = match v.get("record") {
            None => None,
            Some(Value::String(k)) => Some(k.clone()),
            Some(other) => return Err(format!("`record` is {other}, not a string")),
        };
        let of = |what: &str, e: serde_json::Error| format!("not {what} record: {e}");
        Ok(Some(match kind.as_deref() {
            None | Some("event") => Line::Event(Box::new(
                serde_json::from_value(v).map_err(|e| of("an event", e))?,
            )),
            Some("header") => {
                let h: Header = serde_json::from_value(v).map_err(|e| of("a header", e))?;
                if h.format != "happen-record" {
                    return Err(format!(
                        "a header of format `{}`, not `happen-record`",
                        h.format
                    ));
                }
                if h.version > VERSION {
                    return Err(format!(
                        "written by a newer happen (record version {}; this one reads up to {VERSION}): use that happen's CLI",
                        h.version
                    ));
                }
                Line::Header(h)
            }
            Some("reply") => Line::Reply(serde_json::from_value(v).map_err(|e| of("a reply", e))?),
            Some("nodes") => Line::Nodes(serde_json::from_value(v).map_err(|e| of("a nodes", e))?),
            Some("completed") => {
                Line::Completed(serde_json::from_value(v).map_err(|e| of("a completed", e))?)
            }
            Some(other) => {
                return Err(format!(
                    "an unknown record `{other}` (written by a newer happen? use its CLI)"
                ));
            }
        }))
    }
}

/// Reads every line of the record file at `path`, calling `each` with it. A line that is
/// not a record is an error naming the file and the line.
pub(crate) fn read(path: &Path, mut each: impl FnMut(Line)) -> Result<()> {
    let bad = |what: String| Error::new(ErrorKind::InvalidConfig, what);
    let file = std::fs::File::open(path)
        .map_err(|e| bad(format!("cannot open `{}`: {e}", path.display())))?;
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| bad(format!("cannot read `{}`: {e}", path.display())))?;
        match Line::parse(&line) {
            Ok(Some(l)) => each(l),
            Ok(None) => {}
            Err(why) => {
                return Err(bad(format!(
                    "`{}` line {}: not a `happen tap --record` line: {why}",
                    path.display(),
                    n + 1
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_and_version_1_events_read() {
        let v1 = r#"{"time":"t","receivedUs":5,"kind":"send","target":"a","type":"x","id":"e1","sender":"s","correlationId":"c","timestamp":1}"#;
        let Ok(Some(Line::Event(e))) = Line::parse(v1) else {
            panic!("an event")
        };
        assert_eq!(e.id, "e1");
        let again = Line::Event(e).to_json();
        assert!(!again.contains("record"), "{again}");
        let header = Line::Header(Header {
            format: "happen-record".into(),
            version: VERSION,
            started_us: 1,
        })
        .to_json();
        assert!(matches!(Line::parse(&header), Ok(Some(Line::Header(_)))));
        let nodes = Line::Nodes(NodesLine {
            at_us: 9,
            processes: vec![],
        })
        .to_json();
        assert!(nodes.contains(r#""record":"nodes""#), "{nodes}");
        let Ok(Some(Line::Nodes(n))) = Line::parse(&nodes) else {
            panic!("nodes")
        };
        assert_eq!(n.at_us, 9);
        assert!(matches!(Line::parse("  "), Ok(None)));
        let done = Line::Completed(Completed {
            event_id: "e".into(),
            correlation_id: "c".into(),
            node: "n".into(),
            replica: "r".into(),
            started_us: 1,
            ended_us: 5,
            outcome: "ok".into(),
            error: None,
        })
        .to_json();
        assert!(done.contains(r#""record":"completed""#), "{done}");
        let Ok(Some(Line::Completed(c))) = Line::parse(&done) else {
            panic!("completed")
        };
        assert_eq!((c.node.as_str(), c.took_us()), ("n", 4));
    }

    #[test]
    fn version_2_files_still_read() {
        for line in [
            r#"{"record":"header","format":"happen-record","version":2,"startedUs":1}"#,
            r#"{"record":"header","format":"happen-record","version":1}"#,
            r#"{"record":"reply","eventId":"e","correlationId":"c","receivedUs":3,"status":"ok"}"#,
            r#"{"record":"nodes","atUs":4,"processes":[{"replica":"r","name":"p","nodes":[{"id":"n"}]}]}"#,
        ] {
            assert!(matches!(Line::parse(line), Ok(Some(_))), "{line}");
        }
        let Ok(Some(Line::Nodes(n))) = Line::parse(
            r#"{"record":"nodes","atUs":4,"processes":[{"replica":"r","name":"p","nodes":[{"id":"n"}]}]}"#,
        ) else {
            panic!("nodes")
        };
        // a snapshot of processes without transport counters
        assert!(n.processes[0].transport.is_empty());
    }

    #[test]
    fn bad_lines_say_why() {
        for (line, says) in [
            ("{not json", "not JSON"),
            (r#"{"record": 3}"#, "not a string"),
            (r#"{"record": "later"}"#, "unknown record `later`"),
            (r#"{"record": "nodes"}"#, "not a nodes record"),
            (
                r#"{"record": "completed", "node": "n"}"#,
                "not a completed record",
            ),
            (
                r#"{"record": "header", "format": "happen-record", "version": 99}"#,
                "newer happen",
            ),
            (
                r#"{"record": "header", "format": "x", "version": 1}"#,
                "format `x`",
            ),
            (r#"{"id": "no type"}"#, "not an event record"),
        ] {
            let e = Line::parse(line).unwrap_err();
            assert!(e.contains(says), "{line}: {e}");
        }
    }
}
