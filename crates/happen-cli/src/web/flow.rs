//! The warnings as the reference's flow-balance events (`node.down`, `system.down`; see
//! `WIRE.md`, "Flow-balance events"): a node under pressure for too long is a `bottleneck`, a
//! replica gone from discovery a `node-failure`; when more than a share of the nodes is down,
//! the system is (`warning` above [`FlowConfig::system_warning`], `critical` above
//! [`FlowConfig::system_critical`]), as a `partition` when most of them failed and an
//! `overload` when most are bottlenecks. Pure: fed one nodes snapshot at a time, it says what
//! to publish; a condition is published when it starts (again when it ends and comes back),
//! not on every snapshot. The other warnings are no flow condition: replica skew and engine
//! faults are not the reference's patterns, and dead letters growing and stalled streams are
//! seen only while a page is open (flow events are published with or without one).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

/// The shares of the nodes down at which the system is.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FlowConfig {
    pub(crate) system_warning: f64,
    pub(crate) system_critical: f64,
}

impl Default for FlowConfig {
    fn default() -> FlowConfig {
        // the reference's shares (more than 30 %: warning, more than 50 %: critical)
        FlowConfig {
            system_warning: 0.3,
            system_critical: 0.5,
        }
    }
}

/// What was down after the previous snapshot.
#[derive(Default)]
pub(crate) struct Flow {
    config: FlowConfig,
    down: BTreeSet<(String, &'static str)>,
    system: Option<(&'static str, &'static str)>,
}

/// The pattern of a warning kind, for those that are flow-balance conditions.
fn pattern(kind: &str) -> Option<&'static str> {
    match kind {
        "pressure-held" => Some("bottleneck"),
        "replica-gone" => Some("node-failure"),
        _ => None,
    }
}

impl Flow {
    pub(crate) fn new(config: FlowConfig) -> Flow {
        Flow {
            config,
            ..Flow::default()
        }
    }

    /// The events (type, payload) to publish after `snapshot` (a nodes snapshot with its
    /// `warnings`, as the page gets it).
    pub(crate) fn update(&mut self, snapshot: &Value) -> Vec<(&'static str, Value)> {
        let now_ms = snapshot["atUs"].as_u64().unwrap_or(0) / 1000;
        let nodes: BTreeMap<&str, &Value> = snapshot["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|n| Some((n["id"].as_str()?, n)))
            .collect();
        let metrics = |id: &str| {
            let n = nodes.get(id);
            let count = |k: &str| n.and_then(|n| n[k].as_u64()).unwrap_or(0);
            json!({
                "messagesWaiting": count("queued"), "pending": count("active"),
                "delivered": count("accepted"), "redelivered": 0, "timestamp": now_ms,
                "replicas": n.and_then(|n| n["replicas"].as_array()).map_or(0, Vec::len),
            })
        };
        let mut down: BTreeMap<(String, &'static str), &Value> = BTreeMap::new();
        for w in snapshot["warnings"].as_array().into_iter().flatten() {
            if let (Some(p), Some(node)) =
                (w["kind"].as_str().and_then(pattern), w["node"].as_str())
            {
                down.entry((node.to_owned(), p)).or_insert(w);
            }
        }
        let mut out = Vec::new();
        for ((node, p), w) in &down {
            if !self.down.contains(&(node.clone(), *p)) {
                out.push((
                    "node.down",
                    json!({
                        "nodeId": node, "pattern": p, "lagMetrics": metrics(node),
                        "affectedNodes": [node], "level": w["level"], "reason": w["message"],
                        "source": "happen-web",
                    }),
                ));
            }
        }
        self.down = down.keys().cloned().collect();

        let affected: BTreeSet<&str> = self.down.iter().map(|(n, _)| n.as_str()).collect();
        let all: BTreeSet<&str> = nodes
            .keys()
            .copied()
            .chain(affected.iter().copied())
            .collect();
        let share = if all.is_empty() {
            0.0
        } else {
            affected.len() as f64 / all.len() as f64
        };
        let level = if share > self.config.system_critical {
            Some("critical")
        } else if share > self.config.system_warning {
            Some("warning")
        } else {
            None
        };
        let failed = affected
            .iter()
            .filter(|n| self.down.contains(&((**n).to_owned(), "node-failure")))
            .count();
        let system = level.map(|l| {
            let p = if failed * 2 >= affected.len() {
                "partition"
            } else {
                "overload"
            };
            (l, p)
        });
        if system.is_some() && system != self.system {
            let (level, p) = system.unwrap_or(("warning", "overload"));
            let per_node: serde_json::Map<String, Value> = affected
                .iter()
                .map(|n| ((*n).to_owned(), metrics(n)))
                .collect();
            out.push((
                "system.down",
                json!({
                    "level": level, "pattern": p, "affectedNodes": affected,
                    "metrics": per_node, "share": share, "source": "happen-web",
                }),
            ));
        }
        self.system = system;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(nodes: &[&str], warnings: &[(&str, &str, &str)]) -> Value {
        json!({
            "atUs": 5_000_000,
            "nodes": nodes.iter().map(|n| json!({"id": n, "queued": 7, "active": 1, "accepted": 9, "replicas": [{}]})).collect::<Vec<_>>(),
            "warnings": warnings.iter().map(|(k, n, l)| json!({"kind": k, "node": n, "level": l, "message": "m"})).collect::<Vec<_>>(),
        })
    }

    #[test]
    fn a_condition_is_published_when_it_starts() {
        let mut f = Flow::new(FlowConfig::default());
        let nodes = ["a", "b", "c", "d"];
        assert!(f.update(&snap(&nodes, &[])).is_empty());
        let out = f.update(&snap(&nodes, &[("pressure-held", "a", "warning")]));
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].0, "node.down");
        assert_eq!(out[0].1["pattern"], "bottleneck");
        assert_eq!(out[0].1["nodeId"], "a");
        assert_eq!(out[0].1["lagMetrics"]["messagesWaiting"], 7);
        assert_eq!(out[0].1["lagMetrics"]["timestamp"], 5000);
        // held: not again
        assert!(
            f.update(&snap(&nodes, &[("pressure-held", "a", "warning")]))
                .is_empty()
        );
        // warnings that are no flow condition: nothing
        assert!(
            f.update(&snap(&nodes, &[("replica-skew", "a", "warning")]))
                .is_empty()
        );
        // back: published again
        assert_eq!(
            f.update(&snap(&nodes, &[("pressure-held", "a", "warning")]))
                .len(),
            1
        );
    }

    #[test]
    fn the_system_is_down_above_a_share_of_the_nodes() {
        let mut f = Flow::new(FlowConfig::default());
        let nodes = ["a", "b", "c", "d"];
        // 2 of 4 failed: over 30 %, a warning; most failed: a partition
        let out = f.update(&snap(
            &nodes,
            &[
                ("replica-gone", "a", "warning"),
                ("replica-gone", "b", "warning"),
            ],
        ));
        let types: Vec<&str> = out.iter().map(|o| o.0).collect();
        assert_eq!(types, ["node.down", "node.down", "system.down"]);
        assert_eq!(out[0].1["pattern"], "node-failure");
        let system = &out[2].1;
        assert_eq!(system["level"], "warning");
        assert_eq!(system["pattern"], "partition");
        assert_eq!(system["affectedNodes"], json!(["a", "b"]));
        assert_eq!(system["metrics"]["a"]["delivered"], 9);
        // three of four: critical (and one bottleneck among them)
        let out = f.update(&snap(
            &nodes,
            &[
                ("replica-gone", "a", "warning"),
                ("replica-gone", "b", "warning"),
                ("pressure-held", "c", "warning"),
            ],
        ));
        let types: Vec<&str> = out.iter().map(|o| o.0).collect();
        assert_eq!(types, ["node.down", "system.down"]);
        assert_eq!(out[1].1["level"], "critical");
        assert_eq!(out[1].1["pattern"], "partition");
        // a node gone from discovery still counts among all the nodes
        let mut f = Flow::new(FlowConfig::default());
        let out = f.update(&snap(&["a"], &[("replica-gone", "z", "critical")]));
        assert_eq!(out.last().unwrap().1["level"], "warning", "{out:?}");
        let out = f.update(&snap(&["a"], &[]));
        assert!(out.is_empty());
    }
}
