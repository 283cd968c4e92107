//! `happen web --replay FILE`: a recording of `happen tap --record` (see `record.rs`) shown
//! as of any time between its first and last line. The node snapshots are computed once, in
//! time order, exactly as the live watch computes them (rates, edges, warnings, histogram
//! intervals: the heatmaps); the tail, the transactions and the errors as of a time are
//! rebuilt from the events, replies and completion records up to it.

use std::collections::HashMap;
use std::path::Path;

use happen::pattern::Pattern;
use happen::{Error, ErrorKind, Result};
use serde_json::{Value, json};

use super::hub::event_json;
use super::view::Rates;
use crate::observed::{Completed, Seen, Store};
use crate::record::{self, Line, ReplyLine};

/// Node snapshots per node kept for the sparklines (as the page keeps live).
const HISTORY: usize = 60;
/// Tail lines answered at most.
pub(crate) const TAIL: usize = 500;

/// A loaded recording.
pub(crate) struct Replay {
    file: String,
    /// In the order received.
    events: Vec<Seen>,
    /// In the order received.
    replies: Vec<ReplyLine>,
    /// Completion records of tells and broadcasts, in the order they ended.
    completed: Vec<Completed>,
    /// The snapshots as the page shows them, with their times, in time order.
    snapshots: Vec<(u64, Value)>,
    start_us: u64,
    end_us: u64,
}

impl Replay {
    /// Reads the recording at `path`; a file that is not one, or holds nothing to show, is an
    /// error that says so.
    pub(crate) fn load(path: &Path) -> Result<Replay> {
        let mut events = Vec::new();
        let mut replies = Vec::new();
        let mut nodes = Vec::new();
        let mut completed = Vec::new();
        record::read(path, |line| match line {
            Line::Event(e) => events.push(*e),
            Line::Reply(r) => replies.push(r),
            Line::Nodes(n) => nodes.push(n),
            Line::Completed(c) => completed.push(c),
            Line::Header(_) => {}
        })?;
        if events.is_empty() && nodes.is_empty() {
            return Err(Error::new(
                ErrorKind::InvalidConfig,
                format!(
                    "`{}` holds no events and no node snapshots: record one with `happen tap --record {}` while the system works",
                    path.display(),
                    path.display()
                ),
            ));
        }
        events.sort_by_key(|e| e.received_us);
        replies.sort_by_key(|r| r.received_us);
        completed.sort_by_key(|c: &Completed| c.ended_us);
        nodes.sort_by_key(|n| n.at_us);
        let mut rates = Rates::default();
        let mut next = 0;
        let mut snapshots = Vec::with_capacity(nodes.len());
        for n in &nodes {
            while let Some(e) = events.get(next).filter(|e| e.received_us <= n.at_us) {
                rates.event(e);
                next += 1;
            }
            snapshots.push((n.at_us, rates.snapshot(n.at_us, &n.processes)));
        }
        let times = events
            .iter()
            .map(|e| e.received_us)
            .chain(replies.iter().map(|r| r.received_us))
            .chain(completed.iter().map(|c| c.ended_us))
            .chain(nodes.iter().map(|n| n.at_us));
        let (start_us, end_us) = times.fold((u64::MAX, 0), |(lo, hi), t| (lo.min(t), hi.max(t)));
        Ok(Replay {
            file: path.display().to_string(),
            events,
            replies,
            completed,
            snapshots,
            start_us,
            end_us,
        })
    }

    /// What the recording spans: `{"file", "startUs", "endUs", "events", "replies", "snapshots"}`.
    pub(crate) fn summary(&self) -> Value {
        json!({
            "file": self.file, "startUs": self.start_us, "endUs": self.end_us,
            "events": self.events.len(), "replies": self.replies.len(),
            "completions": self.completed.len(),
            "snapshots": self.snapshots.len(),
        })
    }

    /// `at`, or the end of the recording.
    pub(crate) fn time(&self, at: Option<u64>) -> u64 {
        at.unwrap_or(self.end_us)
    }

    fn events_until(&self, t: u64) -> &[Seen] {
        &self.events[..self.events.partition_point(|e| e.received_us <= t)]
    }

    fn replies_until(&self, t: u64) -> &[ReplyLine] {
        &self.replies[..self.replies.partition_point(|r| r.received_us <= t)]
    }

    fn completed_until(&self, t: u64) -> &[Completed] {
        &self.completed[..self.completed.partition_point(|c| c.ended_us <= t)]
    }

    /// The transactions and errors as they were at `t`.
    fn store(&self, t: u64) -> Store {
        let mut store = Store::default();
        for e in self.events_until(t) {
            store.event(e, None);
        }
        for r in self.replies_until(t) {
            store.pair(&r.correlation_id, &r.event_id, r.reply());
        }
        for c in self.completed_until(t) {
            store.completed(c.clone());
        }
        store
    }

    /// The node snapshot the page showed at `t` (the latest taken by then), if any.
    pub(crate) fn nodes(&self, t: u64) -> Option<&Value> {
        let i = self.snapshots.partition_point(|(at, _)| *at <= t);
        i.checked_sub(1).map(|i| &self.snapshots[i].1)
    }

    /// The system as of `t`: the last [`TAIL`] events by then whose type matches `pattern`
    /// (oldest first) with their replies seen by then, the node snapshot with the sparklines'
    /// history, the errors.
    pub(crate) fn at(&self, t: u64, pattern: Option<&Pattern>, limit: usize) -> Value {
        let events = self.events_until(t);
        let mut tail: Vec<&Seen> = events
            .iter()
            .rev()
            .filter(|e| pattern.is_none_or(|p| p.matches(&e.event_type)))
            .take(limit.min(TAIL))
            .collect();
        tail.reverse();
        let by_id: HashMap<&str, &ReplyLine> = self
            .replies_until(t)
            .iter()
            .map(|r| (r.event_id.as_str(), r))
            .collect();
        let replies: Vec<Value> = tail
            .iter()
            .filter_map(|e| {
                let r = by_id.get(e.id.as_str())?;
                Some(json!({
                    "eventId": e.id, "correlationId": e.correlation_id, "type": e.event_type,
                    "target": e.target, "sender": e.sender,
                    "durationMs": r.received_us.saturating_sub(e.received_us) as f64 / 1000.0,
                    "reply": r.reply(),
                }))
            })
            .collect();
        let mut done: HashMap<&str, (u64, bool)> = HashMap::new();
        for c in self.completed_until(t) {
            let d = done.entry(c.event_id.as_str()).or_default();
            d.0 = d.0.max(c.took_us());
            d.1 |= c.outcome == "error";
        }
        let completions: Vec<Value> = tail
            .iter()
            .filter_map(|e| {
                let (took, failed) = done.get(e.id.as_str())?;
                Some(json!({
                    "eventId": e.id, "correlationId": e.correlation_id,
                    "durationMs": *took as f64 / 1000.0,
                    "outcome": if *failed { "error" } else { "ok" },
                }))
            })
            .collect();
        let shown = self.snapshots.partition_point(|(at, _)| *at <= t);
        let mut history: HashMap<&str, Vec<u64>> = HashMap::new();
        // per node the queue-wait and handler-time buckets of each snapshot's interval, as
        // the live page collects them (`[]` for a snapshot without the histogram)
        let mut heat: HashMap<&str, [Vec<Value>; 2]> = HashMap::new();
        for (_, snap) in &self.snapshots[shown.saturating_sub(HISTORY)..shown] {
            for n in snap["nodes"].as_array().into_iter().flatten() {
                if let Some(id) = n["id"].as_str() {
                    let load =
                        n["active"].as_u64().unwrap_or(0) + n["queued"].as_u64().unwrap_or(0);
                    history.entry(id).or_default().push(load);
                    let columns = heat.entry(id).or_default();
                    for (column, key) in columns.iter_mut().zip(["queueWait", "handlerTime"]) {
                        column.push(n[key].get("buckets").cloned().unwrap_or(json!([])));
                    }
                }
            }
        }
        let heat: serde_json::Map<String, Value> = heat
            .into_iter()
            .map(|(id, [queue_wait, handler_time])| {
                (
                    id.to_owned(),
                    json!({"queueWait": queue_wait, "handlerTime": handler_time}),
                )
            })
            .collect();
        json!({
            "atUs": t,
            "startUs": self.start_us,
            "endUs": self.end_us,
            "eventsSoFar": events.len(),
            "events": tail.iter().map(|e| event_json(e)).collect::<Vec<_>>(),
            "replies": replies,
            "completions": completions,
            "nodes": self.nodes(t),
            "history": history,
            "heat": heat,
            "errors": self.store(t).errors(),
        })
    }

    /// The waterfall of transaction `corr` as of `t` (`None`: no event of it by then).
    pub(crate) fn transaction(&self, corr: &str, t: u64) -> Option<Value> {
        self.store(t).transaction(corr)
    }

    /// The errors as of `t`.
    pub(crate) fn errors(&self, t: u64) -> Value {
        self.store(t).errors()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(lines: &[&str]) -> tempfile_path::TempFile {
        tempfile_path::TempFile::with(&lines.join("\n"))
    }

    /// A file in the temporary directory, removed on drop.
    mod tempfile_path {
        pub(super) struct TempFile(pub(super) std::path::PathBuf);

        impl TempFile {
            pub(super) fn with(text: &str) -> TempFile {
                static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
                let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let path = std::env::temp_dir()
                    .join(format!("happen-replay-{}-{n}.jsonl", std::process::id()));
                std::fs::write(&path, text).expect("write a temporary file");
                TempFile(path)
            }
        }

        impl Drop for TempFile {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
    }

    fn event(id: &str, cause: Option<&str>, at: u64) -> String {
        let cause = cause.map_or(String::new(), |c| format!(r#","causationId":"{c}""#));
        format!(
            r#"{{"time":"","receivedUs":{at},"kind":"send","target":"n","type":"t.{id}","id":"{id}","sender":"s","correlationId":"txn"{cause},"timestamp":0}}"#
        )
    }

    #[test]
    fn the_state_as_of_a_time() {
        let nodes = |at: u64, accepted: u64| {
            format!(
                r#"{{"record":"nodes","atUs":{at},"processes":[{{"replica":"r1","name":"p","nodes":[{{"id":"n","accepted":{accepted},"maxConcurrent":1,"highWater":4}}]}}]}}"#
            )
        };
        let f = file(&[
            r#"{"record":"header","format":"happen-record","version":2,"startedUs":1}"#,
            &event("a", None, 100),
            &nodes(150, 1),
            &event("b", Some("a"), 200),
            r#"{"record":"reply","eventId":"b","correlationId":"txn","receivedUs":250,"status":"error","error":{"kind":"handler","message":"no","node":"n","code":"c"}}"#,
            r#"{"record":"reply","eventId":"a","correlationId":"txn","receivedUs":300,"status":"ok"}"#,
            &nodes(350, 2),
        ]);
        let r = Replay::load(&f.0).unwrap();
        assert_eq!(r.summary()["startUs"], 100);
        assert_eq!(r.summary()["endUs"], 350);

        let early = r.at(160, None, TAIL);
        assert_eq!(early["events"].as_array().unwrap().len(), 1);
        assert_eq!(early["nodes"]["nodes"][0]["accepted"], 1);
        assert_eq!(early["errors"]["groups"].as_array().unwrap().len(), 0);
        let t = r.transaction("txn", 160).unwrap();
        assert_eq!(t["events"], 1);
        assert!(t["roots"][0].get("reply").is_none(), "{t}");

        let late = r.at(400, None, TAIL);
        assert_eq!(late["events"].as_array().unwrap().len(), 2);
        assert_eq!(late["nodes"]["nodes"][0]["accepted"], 2);
        assert_eq!(late["history"]["n"], json!([0, 0]));
        assert_eq!(late["replies"].as_array().unwrap().len(), 2);
        assert_eq!(late["errors"]["groups"][0]["code"], "c");
        let t = r.transaction("txn", 400).unwrap();
        assert_eq!(t["roots"][0]["reply"]["status"], "ok");
        assert_eq!(t["roots"][0]["children"][0]["reply"]["status"], "error");
        assert_eq!(t["roots"][0]["durationMs"], 0.2);

        // before anything: nothing
        let before = r.at(50, None, TAIL);
        assert!(before["nodes"].is_null());
        assert!(r.transaction("txn", 50).is_none());
        // a pattern and a limit
        let only_b = r.at(400, Some(&Pattern::parse("t.b").unwrap()), TAIL);
        assert_eq!(only_b["events"][0]["id"], "b");
        assert_eq!(r.at(400, None, 1)["events"][0]["id"], "b");
    }

    #[test]
    fn heatmaps_and_completions_as_of_a_time() {
        let nodes = |at: u64, waits: &str, times: &str| {
            format!(
                r#"{{"record":"nodes","atUs":{at},"processes":[{{"replica":"r1","name":"p","nodes":[{{"id":"n","queueWaitBuckets":{waits},"handlerTimeBuckets":{times}}}],"transport":{{"sent":3}}}}]}}"#
            )
        };
        let tell = event("a", None, 100).replace(r#""kind":"send""#, r#""kind":"tell""#);
        let f = file(&[
            // a version 2 header: the file predates completion records, still read
            r#"{"record":"header","format":"happen-record","version":2,"startedUs":1}"#,
            &tell,
            &nodes(150, "[0,2]", "[]"),
            r#"{"record":"completed","eventId":"a","correlationId":"txn","node":"n","replica":"r1","startedUs":110,"endedUs":2110,"outcome":"error","error":{"kind":"handler","message":"m","node":"n","code":"x"}}"#,
            &nodes(350, "[0,3,4]", "[1]"),
        ]);
        let r = Replay::load(&f.0).unwrap();
        assert_eq!(r.summary()["completions"], 1);
        let early = r.at(200, None, TAIL);
        assert_eq!(early["heat"]["n"]["queueWait"], json!([[0, 2]]));
        assert_eq!(early["heat"]["n"]["handlerTime"], json!([[]]));
        assert_eq!(early["completions"], json!([]));
        let t = r.transaction("txn", 200).unwrap();
        assert!(t["roots"][0].get("outcome").is_none(), "{t}");

        let late = r.at(3000, None, TAIL);
        assert_eq!(
            late["heat"]["n"]["queueWait"],
            json!([[0, 2], [0, 1, 4]]),
            "the intervals, as live"
        );
        assert_eq!(late["heat"]["n"]["handlerTime"], json!([[], [1]]));
        assert_eq!(late["completions"][0]["durationMs"], 2.0);
        assert_eq!(late["errors"]["groups"][0]["code"], "x");
        let t = r.transaction("txn", 3000).unwrap();
        let step = &t["roots"][0];
        assert_eq!(
            (step["outcome"].as_str(), step["durationMs"].as_f64()),
            (Some("error"), Some(2.0))
        );
        assert_eq!(step["endUs"], 2100);
        assert_eq!(step["completions"][0]["node"], "n");
    }

    #[test]
    fn a_bad_or_empty_file_is_a_clear_error() {
        let empty = file(&[""]);
        let e = Replay::load(&empty.0).err().unwrap();
        assert!(e.message().contains("holds no events"), "{e}");
        let bad = file(&[&event("a", None, 1), "garbage"]);
        let e = Replay::load(&bad.0).err().unwrap();
        assert!(e.message().contains("line 2"), "{e}");
        let e = Replay::load(Path::new("/nonexistent/happen.jsonl"))
            .err()
            .unwrap();
        assert!(e.message().contains("cannot open"), "{e}");
    }
}
