//! Warnings drawn from successive discovery snapshots: pressure held too long, rejections
//! rising, a replica gone from discovery, replicas unevenly loaded, engine faults; from the
//! durable streams read every two seconds: dead letters growing ([`DeadLetters`]); and from the
//! frames on the reply subjects: streams stalled ([`Streams`]). Pure: fed one snapshot (or
//! poll, or frame) at a time with its time, so they are tested without a system.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use serde::Serialize;

/// Pressure held this long is a warning (default of [`Thresholds::pressure_held_us`]).
pub(crate) const PRESSURE_HELD_US: u64 = 10_000_000;
/// Rejections counted in this many snapshots in a row are a warning (default of
/// [`Thresholds::rejecting_snapshots`]).
pub(crate) const REJECTING_SNAPSHOTS: u32 = 3;
/// A replica gone from discovery stays a warning this long.
pub(crate) const GONE_KEPT_US: u64 = 60_000_000;
/// Replicas of one node are skewed when the busiest holds this many times the least busy's
/// active + queued events, and at least [`SKEW_MIN`] more.
pub(crate) const SKEW_FACTOR: usize = 4;
pub(crate) const SKEW_MIN: usize = 10;
/// Dead letters grown in this many polls of the durable streams in a row are a warning
/// (default of [`Thresholds::dead_letter_polls`]).
pub(crate) const DEAD_LETTER_POLLS: u32 = 3;
/// Dead letters grown by this many since the previous poll are a warning at once (default of
/// [`Thresholds::dead_letter_jump`]).
pub(crate) const DEAD_LETTER_JUMP: u64 = 10;
/// A stream with no frame for this long is stalled (default of [`Thresholds::stream_stall_us`]).
pub(crate) const STREAM_STALL_US: u64 = 10_000_000;
/// Streams tracked at once; beyond, the oldest started is forgotten.
pub(crate) const STREAMS: usize = 10_000;

/// What the warnings look at in one node (all its replicas).
pub(crate) struct NodeView<'a> {
    pub(crate) id: &'a str,
    /// replica id, its active + queued, under pressure, rejected so far, engine faults so far
    pub(crate) replicas: Vec<(&'a str, usize, bool, u64, u64)>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Warning {
    /// `pressure-held`, `rejections-rising`, `replica-gone`, `replica-skew`, `engine-faults`,
    /// `dead-letters-growing`, `stream-stalled`.
    pub(crate) kind: &'static str,
    pub(crate) node: String,
    /// `warning` or `critical` (a node with no replica left).
    pub(crate) level: &'static str,
    pub(crate) message: String,
    /// Since when, in microseconds since the Unix epoch.
    pub(crate) since_us: u64,
    /// The transaction it concerns (`stream-stalled`: the request's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) correlation_id: Option<String>,
}

/// The thresholds that are configurable (`happen web --pressure-held`, `--rejecting-for`,
/// `--dead-letters-for`, `--dead-letters-jump`, `--stream-stall`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Thresholds {
    pub(crate) pressure_held_us: u64,
    pub(crate) rejecting_snapshots: u32,
    pub(crate) dead_letter_polls: u32,
    pub(crate) dead_letter_jump: u64,
    pub(crate) stream_stall_us: u64,
}

impl Default for Thresholds {
    fn default() -> Thresholds {
        Thresholds {
            pressure_held_us: PRESSURE_HELD_US,
            rejecting_snapshots: REJECTING_SNAPSHOTS,
            dead_letter_polls: DEAD_LETTER_POLLS,
            dead_letter_jump: DEAD_LETTER_JUMP,
            stream_stall_us: STREAM_STALL_US,
        }
    }
}

#[derive(Default)]
pub(crate) struct Warnings {
    pub(crate) thresholds: Thresholds,
    pressure_since: HashMap<String, u64>,
    rejected: HashMap<String, (u64, u32, u64)>,
    replicas: BTreeMap<String, BTreeSet<String>>,
    gone: BTreeMap<(String, String), (u64, bool)>,
}

impl Warnings {
    /// The warnings after the snapshot `nodes` taken at `now` (µs since the epoch).
    pub(crate) fn update(&mut self, now: u64, nodes: &[NodeView<'_>]) -> Vec<Warning> {
        let mut out = Vec::new();
        let mut seen: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for n in nodes {
            let replicas: BTreeSet<String> = n.replicas.iter().map(|r| r.0.to_owned()).collect();
            let under = n.replicas.iter().filter(|r| r.2).count();
            if under > 0 {
                let since = *self.pressure_since.entry(n.id.to_owned()).or_insert(now);
                if now.saturating_sub(since) >= self.thresholds.pressure_held_us {
                    out.push(Warning {
                        kind: "pressure-held",
                        node: n.id.to_owned(),
                        level: "warning",
                        message: format!(
                            "under pressure for {:.0}s ({under} of {} replicas)",
                            now.saturating_sub(since) as f64 / 1e6,
                            n.replicas.len()
                        ),
                        since_us: since,
                        correlation_id: None,
                    });
                }
            } else {
                self.pressure_since.remove(n.id);
            }
            let rejected: u64 = n.replicas.iter().map(|r| r.3).sum();
            let entry = self
                .rejected
                .entry(n.id.to_owned())
                .or_insert((rejected, 0, now));
            if rejected > entry.0 {
                if entry.1 == 0 {
                    entry.2 = now;
                }
                entry.1 += 1;
            } else {
                entry.1 = 0;
            }
            let rising = rejected.saturating_sub(entry.0);
            entry.0 = rejected;
            if entry.1 >= self.thresholds.rejecting_snapshots {
                out.push(Warning {
                    kind: "rejections-rising",
                    node: n.id.to_owned(),
                    level: "warning",
                    message: format!(
                        "rejecting events in {} snapshots in a row ({rising} since the last; {rejected} in all)",
                        entry.1
                    ),
                    since_us: entry.2,
                    correlation_id: None,
                });
            }
            if n.replicas.len() >= 2 {
                let loads = n.replicas.iter().map(|r| r.1);
                let (lo, hi) = (loads.clone().min().unwrap_or(0), loads.max().unwrap_or(0));
                if hi >= lo * SKEW_FACTOR && hi >= lo + SKEW_MIN {
                    out.push(Warning {
                        kind: "replica-skew",
                        node: n.id.to_owned(),
                        level: "warning",
                        message: format!(
                            "replicas unevenly loaded: {hi} vs {lo} events active or queued"
                        ),
                        since_us: now,
                        correlation_id: None,
                    });
                }
            }
            let faults: u64 = n.replicas.iter().map(|r| r.4).sum();
            if faults > 0 {
                out.push(Warning {
                    kind: "engine-faults",
                    node: n.id.to_owned(),
                    level: "warning",
                    message: format!("{faults} engine fault(s): see the node's error log"),
                    since_us: now,
                    correlation_id: None,
                });
            }
            seen.insert(n.id.to_owned(), replicas);
        }
        for (node, before) in &self.replicas {
            let now_set = seen.get(node);
            for r in before {
                if now_set.is_none_or(|s| !s.contains(r)) {
                    self.gone
                        .entry((node.clone(), r.clone()))
                        .or_insert((now, now_set.is_none()));
                }
            }
        }
        // a replica back in discovery is no longer gone
        self.gone.retain(|(node, r), (since, _)| {
            now.saturating_sub(*since) < GONE_KEPT_US
                && seen.get(node).is_none_or(|s| !s.contains(r))
        });
        for ((node, r), (since, last)) in &self.gone {
            out.push(Warning {
                kind: "replica-gone",
                node: node.clone(),
                level: if *last { "critical" } else { "warning" },
                message: if *last {
                    format!("replica {r} left discovery, and no replica of the node is left")
                } else {
                    format!("replica {r} left discovery")
                },
                since_us: *since,
                correlation_id: None,
            });
        }
        // replicas remembered: those seen now, plus the ones of nodes still warned about
        for (node, set) in seen {
            self.replicas.insert(node, set);
        }
        let gone = &self.gone;
        self.replicas.retain(|node, set| {
            set.retain(|r| !gone.contains_key(&(node.clone(), r.clone())));
            !set.is_empty()
        });
        out
    }
}

/// Per durable node its dead letters across the polls of the durable streams.
#[derive(Default)]
pub(crate) struct DeadLetters {
    /// A poll was seen: from now on a node new in the dead letters grew from none.
    polled: bool,
    /// node → (dead letters at the last poll, polls in a row they grew in, since when)
    nodes: HashMap<String, (u64, u32, u64)>,
}

impl DeadLetters {
    /// The warnings after a poll at `now` that found `counts` dead letters per node: a node
    /// whose dead letters grew in `dead_letter_polls` polls in a row, or by `dead_letter_jump`
    /// since the previous poll. The first poll only sets where they stand; a poll in which
    /// they did not grow clears the node's warning.
    pub(crate) fn update(
        &mut self,
        now: u64,
        counts: &BTreeMap<String, u64>,
        thresholds: &Thresholds,
    ) -> Vec<Warning> {
        let first = !self.polled;
        self.polled = true;
        // a node gone from the dead letters (purged) has none: anything later grew from 0
        self.nodes.retain(|node, _| counts.contains_key(node));
        let mut out = Vec::new();
        for (node, &count) in counts {
            let entry =
                self.nodes
                    .entry(node.clone())
                    .or_insert((if first { count } else { 0 }, 0, now));
            let grown = count.saturating_sub(entry.0);
            if grown > 0 {
                if entry.1 == 0 {
                    entry.2 = now;
                }
                entry.1 = entry.1.saturating_add(1);
            } else {
                entry.1 = 0;
            }
            entry.0 = count;
            if grown > 0
                && (entry.1 >= thresholds.dead_letter_polls || grown >= thresholds.dead_letter_jump)
            {
                out.push(Warning {
                    kind: "dead-letters-growing",
                    node: node.clone(),
                    level: "warning",
                    message: format!(
                        "dead letters growing: {grown} more since the last check ({} checks in a row); {count} in all",
                        entry.1
                    ),
                    since_us: entry.2,
                    correlation_id: None,
                });
            }
        }
        out
    }
}

/// A stream being answered: started, not ended.
struct Stream {
    /// The node producing it (the request's target) and the request's transaction, once the
    /// request is paired with the stream's start.
    node: Option<String>,
    correlation_id: Option<String>,
    /// Its credit and cancel frames go here (`Happen-Control`).
    control: Option<String>,
    /// When its last frame (or its start) was seen.
    last_us: u64,
}

/// The streams answering requests, by reply subject, and when each had its last frame: a
/// stream with no frame (item, credit, end) for [`Thresholds::stream_stall_us`] is stalled.
#[derive(Default)]
pub(crate) struct Streams {
    streams: HashMap<String, Stream>,
    /// control subject → reply subject
    controls: HashMap<String, String>,
    /// reply subjects in the order their streams started (with some already ended)
    order: VecDeque<String>,
}

impl Streams {
    /// Forgets every stream (the watch stopped: their frames are no longer seen).
    pub(crate) fn clear(&mut self) {
        *self = Streams::default();
    }

    /// How many streams are tracked.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.streams.len()
    }

    /// A stream started at `now` on the reply subject `reply` (`Happen-Status: stream`), its
    /// credit going to `control`.
    pub(crate) fn started(&mut self, now: u64, reply: &str, control: Option<&str>) {
        if self.streams.contains_key(reply) {
            return;
        }
        while self.streams.len() >= STREAMS {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            self.forget(&old);
        }
        if self.order.len() >= 2 * STREAMS {
            let streams = &self.streams;
            self.order.retain(|r| streams.contains_key(r));
        }
        if let Some(c) = control {
            self.controls.insert(c.to_owned(), reply.to_owned());
        }
        self.streams.insert(
            reply.to_owned(),
            Stream {
                node: None,
                correlation_id: None,
                control: control.map(str::to_owned),
                last_us: now,
            },
        );
        self.order.push_back(reply.to_owned());
    }

    /// The request answered on `reply` was sent to `node` in transaction `correlation_id`.
    pub(crate) fn paired(&mut self, reply: &str, node: Option<&str>, correlation_id: &str) {
        if let Some(s) = self.streams.get_mut(reply) {
            s.node = node.map(str::to_owned);
            s.correlation_id = Some(correlation_id.to_owned());
        }
    }

    /// A frame (`Happen-Frame`) seen at `now` on `subject`: a stream's reply subject (`item`,
    /// `end`, `error`) or its control subject (`credit`, `cancel`). `end`, `error` and
    /// `cancel` end the stream; anything else shows it moving.
    pub(crate) fn frame(&mut self, now: u64, subject: &str, frame: &str) {
        let reply = match self.controls.get(subject) {
            Some(r) => r.clone(),
            None => subject.to_owned(),
        };
        match frame {
            "end" | "error" | "cancel" => self.forget(&reply),
            _ => {
                if let Some(s) = self.streams.get_mut(&reply) {
                    s.last_us = s.last_us.max(now);
                }
            }
        }
    }

    fn forget(&mut self, reply: &str) {
        if let Some(s) = self.streams.remove(reply)
            && let Some(c) = s.control
        {
            self.controls.remove(&c);
        }
    }

    /// The streams stalled at `now` for at least `stall_us`: those whose request is known (a
    /// stream whose request the tap did not see names no node and is not warned about).
    pub(crate) fn stalled(&self, now: u64, stall_us: u64) -> Vec<Warning> {
        let mut out: Vec<Warning> = self
            .streams
            .values()
            .filter(|s| now.saturating_sub(s.last_us) >= stall_us)
            .filter_map(|s| {
                let node = s.node.clone()?;
                let corr = s.correlation_id.clone()?;
                Some(Warning {
                    kind: "stream-stalled",
                    message: format!(
                        "a stream it produces (transaction {corr}) has had no frame for {:.0}s",
                        now.saturating_sub(s.last_us) as f64 / 1e6
                    ),
                    node,
                    level: "warning",
                    since_us: s.last_us,
                    correlation_id: Some(corr),
                })
            })
            .collect();
        out.sort_by(|a, b| (a.since_us, &a.correlation_id).cmp(&(b.since_us, &b.correlation_id)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node<'a>(id: &'a str, replicas: &[(&'a str, usize, bool, u64)]) -> NodeView<'a> {
        NodeView {
            id,
            replicas: replicas.iter().map(|r| (r.0, r.1, r.2, r.3, 0)).collect(),
        }
    }

    fn kinds(w: &[Warning]) -> Vec<(&str, &str, &str)> {
        w.iter()
            .map(|w| (w.kind, w.node.as_str(), w.level))
            .collect()
    }

    #[test]
    fn pressure_held_too_long() {
        let mut w = Warnings::default();
        assert!(w.update(0, &[node("a", &[("r1", 50, true, 0)])]).is_empty());
        assert!(
            w.update(5_000_000, &[node("a", &[("r1", 50, true, 0)])])
                .is_empty()
        );
        let out = w.update(10_000_000, &[node("a", &[("r1", 50, true, 0)])]);
        assert_eq!(kinds(&out), [("pressure-held", "a", "warning")]);
        assert!(
            w.update(11_000_000, &[node("a", &[("r1", 0, false, 0)])])
                .is_empty()
        );
        // held again: counted from the new start
        assert!(
            w.update(12_000_000, &[node("a", &[("r1", 50, true, 0)])])
                .is_empty()
        );
    }

    #[test]
    fn rejections_rising_in_a_row() {
        let mut w = Warnings::default();
        for (i, rejected) in [0, 1, 2].into_iter().enumerate() {
            assert!(
                w.update(i as u64, &[node("a", &[("r1", 0, false, rejected)])])
                    .is_empty()
            );
        }
        let out = w.update(3, &[node("a", &[("r1", 0, false, 9)])]);
        assert_eq!(kinds(&out), [("rejections-rising", "a", "warning")]);
        assert!(out[0].message.contains("7 since the last"), "{out:?}");
        assert!(w.update(4, &[node("a", &[("r1", 0, false, 9)])]).is_empty());
    }

    #[test]
    fn a_replica_gone_then_the_last_one() {
        let mut w = Warnings::default();
        let two = [node("a", &[("r1", 0, false, 0), ("r2", 0, false, 0)])];
        assert!(w.update(0, &two).is_empty());
        let out = w.update(1, &[node("a", &[("r1", 0, false, 0)])]);
        assert_eq!(kinds(&out), [("replica-gone", "a", "warning")]);
        assert!(out[0].message.contains("r2"));
        let out = w.update(2, &[]);
        let mut k = kinds(&out);
        k.sort();
        assert_eq!(
            k,
            [
                ("replica-gone", "a", "critical"),
                ("replica-gone", "a", "warning")
            ]
        );
        // back: no longer gone
        assert!(w.update(3, &two).is_empty());
        // forgotten after a while
        let out = w.update(4, &[]);
        assert_eq!(out.len(), 2);
        assert!(w.update(4 + GONE_KEPT_US, &[]).is_empty());
    }

    #[test]
    fn replica_skew() {
        let mut w = Warnings::default();
        let out = w.update(
            0,
            &[node("a", &[("r1", 40, false, 0), ("r2", 2, false, 0)])],
        );
        assert_eq!(kinds(&out), [("replica-skew", "a", "warning")]);
        let out = w.update(1, &[node("a", &[("r1", 9, false, 0), ("r2", 0, false, 0)])]);
        assert!(out.is_empty(), "{out:?}");
    }

    fn counts(c: &[(&str, u64)]) -> BTreeMap<String, u64> {
        c.iter().map(|(n, c)| ((*n).to_owned(), *c)).collect()
    }

    #[test]
    fn dead_letters_growing_in_polls_in_a_row() {
        let t = Thresholds::default();
        let mut d = DeadLetters::default();
        // the first poll only says where they stand, however many there are
        assert!(d.update(0, &counts(&[("w", 50)]), &t).is_empty());
        assert!(d.update(1, &counts(&[("w", 51)]), &t).is_empty());
        assert!(d.update(2, &counts(&[("w", 52)]), &t).is_empty());
        let out = d.update(3, &counts(&[("w", 53)]), &t);
        assert_eq!(kinds(&out), [("dead-letters-growing", "w", "warning")]);
        assert_eq!(out[0].since_us, 1, "since the first poll they grew in");
        assert!(out[0].message.contains("1 more"), "{out:?}");
        assert!(out[0].message.contains("53 in all"), "{out:?}");
        // still growing: still warned
        assert_eq!(d.update(4, &counts(&[("w", 60)]), &t).len(), 1);
        // a poll without growth clears it, and the count starts again
        assert!(d.update(5, &counts(&[("w", 60)]), &t).is_empty());
        assert!(d.update(6, &counts(&[("w", 61)]), &t).is_empty());
        assert!(d.update(7, &counts(&[("w", 62)]), &t).is_empty());
        assert_eq!(d.update(8, &counts(&[("w", 63)]), &t).len(), 1);
    }

    #[test]
    fn dead_letters_jumping_at_once() {
        let t = Thresholds {
            dead_letter_jump: 5,
            ..Thresholds::default()
        };
        let mut d = DeadLetters::default();
        assert!(d.update(0, &counts(&[]), &t).is_empty());
        // a node new in the dead letters after the first poll grew from none
        let out = d.update(1, &counts(&[("w", 5), ("v", 4)]), &t);
        assert_eq!(kinds(&out), [("dead-letters-growing", "w", "warning")]);
        assert!(d.update(2, &counts(&[("w", 9), ("v", 4)]), &t).is_empty());
        // purged, then dead again: grew from none
        assert!(d.update(3, &counts(&[("v", 4)]), &t).is_empty());
        let out = d.update(4, &counts(&[("w", 7), ("v", 4)]), &t);
        assert_eq!(kinds(&out), [("dead-letters-growing", "w", "warning")]);
        // fewer than before (a limit on the dead-letter stream dropped some): no growth
        assert!(d.update(5, &counts(&[("w", 2), ("v", 4)]), &t).is_empty());
        // one poll is enough when so configured
        let one = Thresholds {
            dead_letter_polls: 1,
            ..Thresholds::default()
        };
        assert_eq!(d.update(6, &counts(&[("w", 3), ("v", 4)]), &one).len(), 1);
    }

    #[test]
    fn a_stream_stalls_without_frames_and_clears_with_one() {
        let mut s = Streams::default();
        s.started(0, "_INBOX.a.1", Some("_INBOX.b.c7"));
        // its request not seen (yet): nobody to name
        assert!(s.stalled(20, 10).is_empty());
        s.paired("_INBOX.a.1", Some("producer"), "corr-1");
        let out = s.stalled(10, 10);
        assert_eq!(kinds(&out), [("stream-stalled", "producer", "warning")]);
        assert_eq!(out[0].correlation_id.as_deref(), Some("corr-1"));
        assert_eq!(out[0].since_us, 0);
        // an item moves it
        s.frame(12, "_INBOX.a.1", "item");
        assert!(s.stalled(21, 10).is_empty());
        assert_eq!(s.stalled(22, 10).len(), 1);
        // credit on its control subject moves it too
        s.frame(30, "_INBOX.b.c7", "credit");
        assert!(s.stalled(39, 10).is_empty());
        // its end ends it
        s.frame(40, "_INBOX.a.1", "end");
        assert!(s.stalled(1_000, 10).is_empty());
        assert_eq!(s.len(), 0);
        // a cancel (on the control subject) or an error ends one too
        s.started(0, "_INBOX.a.2", Some("_INBOX.b.c8"));
        s.started(0, "_INBOX.a.3", None);
        s.frame(1, "_INBOX.b.c8", "cancel");
        s.frame(1, "_INBOX.a.3", "error");
        assert_eq!(s.len(), 0);
        // frames of streams not tracked change nothing
        s.frame(1, "_INBOX.x.9", "item");
        assert_eq!(s.len(), 0);
    }

    #[test]
    fn streams_tracked_are_bounded_oldest_forgotten_first() {
        let mut s = Streams::default();
        for i in 0..STREAMS + 5 {
            let reply = format!("_INBOX.a.{i}");
            s.started(i as u64, &reply, Some(&format!("_INBOX.a.c{i}")));
            s.paired(&reply, Some("p"), &format!("corr-{i}"));
        }
        assert_eq!(s.len(), STREAMS);
        assert_eq!(s.controls.len(), STREAMS);
        let out = s.stalled(u64::MAX, 1);
        assert_eq!(out[0].correlation_id.as_deref(), Some("corr-5"));
        // many short streams: the start order stays bounded too
        for i in 0..3 * STREAMS {
            let reply = format!("_INBOX.b.{i}");
            s.started(0, &reply, None);
            s.frame(0, &reply, "end");
        }
        assert!(s.order.len() <= 2 * STREAMS + 1, "{}", s.order.len());
        s.clear();
        assert_eq!(s.len(), 0);
    }
}
