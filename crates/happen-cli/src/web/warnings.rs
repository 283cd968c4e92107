//! Warnings drawn from successive discovery snapshots: pressure held too long, rejections
//! rising, a replica gone from discovery, replicas unevenly loaded, engine faults. Pure: fed
//! one snapshot at a time with its time, so it is tested without a system.

use std::collections::{BTreeMap, BTreeSet, HashMap};

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

/// What the warnings look at in one node (all its replicas).
pub(crate) struct NodeView<'a> {
    pub(crate) id: &'a str,
    /// replica id, its active + queued, under pressure, rejected so far, engine faults so far
    pub(crate) replicas: Vec<(&'a str, usize, bool, u64, u64)>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Warning {
    /// `pressure-held`, `rejections-rising`, `replica-gone`, `replica-skew`, `engine-faults`.
    pub(crate) kind: &'static str,
    pub(crate) node: String,
    /// `warning` or `critical` (a node with no replica left).
    pub(crate) level: &'static str,
    pub(crate) message: String,
    /// Since when, in microseconds since the Unix epoch.
    pub(crate) since_us: u64,
}

/// The thresholds that are configurable (`happen web --pressure-held`, `--rejecting-for`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Thresholds {
    pub(crate) pressure_held_us: u64,
    pub(crate) rejecting_snapshots: u32,
}

impl Default for Thresholds {
    fn default() -> Thresholds {
        Thresholds {
            pressure_held_us: PRESSURE_HELD_US,
            rejecting_snapshots: REJECTING_SNAPSHOTS,
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
}
