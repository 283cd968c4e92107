//! The nodes snapshot the page shows: per node its replicas, limits, load, pressure, totals
//! and rates since the previous snapshot, the sender → target edges with their rates, and the
//! warnings. Pure: fed discovery answers and tapped events with their times, so the live
//! watch and a replay compute it the same way.

use std::collections::{BTreeMap, HashMap};

use happen_nats::discover::ProcessInfo;
use serde_json::{Value, json};

use super::warnings::{NodeView, Warnings};
use crate::nodes;
use crate::observed::Seen;

/// Counters of the previous snapshot, and per sender → target the events since then and in
/// all (while watched).
#[derive(Default)]
pub(crate) struct Rates {
    at: Option<u64>,
    counters: HashMap<String, [u64; 5]>,
    edges: HashMap<(String, String), (u64, u64)>,
    /// Per node the cumulative queue-wait and handler-time buckets of the previous snapshot.
    buckets: HashMap<String, [Vec<u64>; 2]>,
    /// Per process (replica) its transport counters in the previous snapshot.
    transports: HashMap<String, BTreeMap<String, u64>>,
    pub(crate) warnings: Warnings,
}

/// Adds `b` into `sum` bucket by bucket.
fn add(sum: &mut Vec<u64>, b: &[u64]) {
    if sum.len() < b.len() {
        sum.resize(b.len(), 0);
    }
    for (s, n) in sum.iter_mut().zip(b) {
        *s += n;
    }
}

/// The upper bound (µs) of the bucket holding the `q` quantile of `buckets` (log2 µs, as in
/// `NodeStats::queue_wait_buckets`); 0 when empty.
pub(crate) fn quantile(buckets: &[u64], q: f64) -> u64 {
    let count: u64 = buckets.iter().sum();
    if count == 0 {
        return 0;
    }
    let target = ((count as f64) * q).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (i, n) in buckets.iter().enumerate() {
        seen += n;
        if seen >= target {
            return if i == 0 { 0 } else { 1u64 << i.min(63) };
        }
    }
    u64::MAX
}

/// What a histogram did between two snapshots: the buckets of the interval (cumulative now
/// minus before; a restarted replica counts from zero), their count and percentiles. `null`
/// when the node never reported it (an older process, or handler times not switched on).
fn interval(now: &[u64], before: Option<&Vec<u64>>) -> Value {
    if now.is_empty() {
        return Value::Null;
    }
    let diff: Vec<u64> = now
        .iter()
        .enumerate()
        .map(|(i, n)| n.saturating_sub(before.and_then(|b| b.get(i)).copied().unwrap_or(0)))
        .collect();
    json!({
        "buckets": diff, "count": diff.iter().sum::<u64>(),
        "p50Us": quantile(&diff, 0.5), "p99Us": quantile(&diff, 0.99),
        "total": now.iter().sum::<u64>(),
    })
}

impl Rates {
    /// Counts an event on its sender → target edge.
    pub(crate) fn event(&mut self, seen: &Seen) {
        if let Some(t) = &seen.target {
            let edge = self
                .edges
                .entry((seen.sender.clone(), t.clone()))
                .or_default();
            edge.0 += 1;
            edge.1 += 1;
        }
    }

    /// The snapshot of the discovery answers `processes` received at `now` (µs since the
    /// epoch): `{"atUs", "processes", "nodes", "edges", "warnings"}`.
    pub(crate) fn snapshot(&mut self, now: u64, processes: &[ProcessInfo]) -> Value {
        let secs = self
            .at
            .map_or(1.0, |at| (now.saturating_sub(at) as f64 / 1e6).max(0.001));
        let mut counters = HashMap::new();
        let mut buckets = HashMap::new();
        let grouped = nodes::by_node(processes);
        let views: Vec<NodeView<'_>> = grouped
            .iter()
            .map(|n| NodeView {
                id: n.id,
                replicas: n
                    .replicas
                    .iter()
                    .map(|r| {
                        let i = r.info;
                        (
                            r.replica,
                            i.active + i.queued,
                            i.under_pressure,
                            i.rejected,
                            i.engine_faults,
                        )
                    })
                    .collect(),
            })
            .collect();
        let warnings = self.warnings.update(now, &views);
        drop(views);
        let nodes: Vec<Value> = grouped
            .into_iter()
            .map(|n| {
                let sum = |f: fn(&happen_nats::discover::NodeInfo) -> u64| {
                    n.replicas.iter().map(|r| f(r.info)).sum::<u64>()
                };
                let total = [
                    sum(|i| i.accepted),
                    sum(|i| i.rejected),
                    sum(|i| i.completed),
                    sum(|i| i.failed),
                    sum(|i| i.displaced),
                ];
                let rate: Vec<f64> = match self.counters.get(n.id) {
                    Some(before) => total
                        .iter()
                        .zip(before.iter())
                        .map(|(now, then)| now.saturating_sub(*then) as f64 / secs)
                        .collect(),
                    None => vec![0.0; 5],
                };
                counters.insert(n.id.to_owned(), total);
                let mut sums = [Vec::new(), Vec::new()];
                for r in &n.replicas {
                    add(&mut sums[0], &r.info.queue_wait_buckets);
                    add(&mut sums[1], &r.info.handler_time_buckets);
                }
                let before = self.buckets.get(n.id);
                let queue_wait = interval(&sums[0], before.map(|b| &b[0]));
                let handler_time = interval(&sums[1], before.map(|b| &b[1]));
                buckets.insert(n.id.to_owned(), sums);
                let high = n.replicas.iter().map(|r| r.info.high_water).max().unwrap_or(0);
                let queued = sum(|i| i.queued as u64);
                let under = n.replicas.iter().filter(|r| r.info.under_pressure).count();
                json!({
                    "id": n.id,
                    "replicas": n.replicas,
                    "active": sum(|i| i.active as u64),
                    "queued": queued,
                    "maxConcurrent": n.replicas[0].info.max_concurrent,
                    "queueLimit": n.replicas[0].info.queue_limit,
                    "highWater": high,
                    "underPressure": under,
                    "pressure": if high == 0 { 0.0 } else { queued as f64 / (high as f64 * n.replicas.len() as f64) },
                    "accepted": total[0], "rejected": total[1], "completed": total[2], "failed": total[3],
                    "displaced": total[4],
                    "cancelled": sum(|i| i.cancelled), "engineFaults": sum(|i| i.engine_faults),
                    "unobservedFailures": sum(|i| i.unobserved_failures),
                    "rates": {"accepted": rate[0], "rejected": rate[1], "completed": rate[2], "failed": rate[3], "displaced": rate[4]},
                    "queueWaitP99Us": n.replicas.iter().map(|r| r.info.queue_wait_p99_us).max().unwrap_or(0),
                    "queueWait": queue_wait,
                    "handlerTime": handler_time,
                })
            })
            .collect();
        let edges: Vec<Value> = self
            .edges
            .iter_mut()
            .map(|((from, to), (since, total))| {
                let rate = *since as f64 / secs;
                *since = 0;
                json!({"from": from, "to": to, "rate": rate, "total": *total})
            })
            .collect();
        let transports = self.transports(processes, secs);
        self.counters = counters;
        self.buckets = buckets;
        self.at = Some(now);
        json!({
            "atUs": now, "processes": processes.len(), "nodes": nodes, "edges": edges,
            "warnings": warnings, "transports": transports,
        })
    }

    /// Per process its transport counters (`WIRE.md`, "Discovery": `transport`) and their
    /// rates per second since the previous snapshot (none for a process that predates them).
    fn transports(&mut self, processes: &[ProcessInfo], secs: f64) -> Value {
        let mut out = serde_json::Map::new();
        let mut now = HashMap::new();
        for p in processes.iter().filter(|p| !p.transport.is_empty()) {
            let before = self.transports.get(&p.replica);
            let rates: BTreeMap<&str, f64> = p
                .transport
                .iter()
                .map(|(k, v)| {
                    let then = before.and_then(|b| b.get(k)).copied();
                    // a restarted process counts from zero: no negative rate
                    let rate = then.map_or(0.0, |t| v.saturating_sub(t) as f64 / secs);
                    (k.as_str(), rate)
                })
                .collect();
            out.insert(
                p.replica.clone(),
                json!({"name": p.name, "counters": p.transport, "rates": rates}),
            );
            now.insert(p.replica.clone(), p.transport.clone());
        }
        self.transports = now;
        Value::Object(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_become_intervals_with_percentiles() {
        assert_eq!(quantile(&[], 0.5), 0);
        assert_eq!(quantile(&[0, 1, 2, 0, 0, 0, 0, 1], 0.5), 4);
        assert_eq!(quantile(&[0, 1, 2, 0, 0, 0, 0, 1], 0.99), 128);
        assert_eq!(interval(&[], None), Value::Null);
        let v = interval(&[1, 5, 9], Some(&vec![1, 2]));
        assert_eq!(v["buckets"], json!([0, 3, 9]));
        assert_eq!(v["count"], 12);
        assert_eq!(v["p50Us"], 4);
        assert_eq!(v["total"], 15);
        // a replica restarted: its counts fell, the interval never goes negative
        assert_eq!(interval(&[1], Some(&vec![7]))["buckets"], json!([0]));
    }

    #[test]
    fn transport_counters_become_rates_per_process() {
        let process = |sent: u64| -> ProcessInfo {
            serde_json::from_value(json!({"replica": "r1", "name": "shop",
                "nodes": [{"id": "n"}], "transport": {"sent": sent, "disconnects": 1}}))
            .unwrap()
        };
        let older: ProcessInfo =
            serde_json::from_value(json!({"replica": "r0", "nodes": [{"id": "n"}]})).unwrap();
        let mut rates = Rates::default();
        let first = rates.snapshot(1_000_000, &[process(10), older.clone()]);
        assert_eq!(first["transports"]["r1"]["counters"]["sent"], 10);
        assert_eq!(first["transports"]["r1"]["rates"]["sent"], 0.0);
        assert!(
            first["transports"].get("r0").is_none(),
            "an older process has none"
        );
        let second = rates.snapshot(3_000_000, &[process(30), older]);
        assert_eq!(second["transports"]["r1"]["rates"]["sent"], 10.0);
        assert_eq!(second["transports"]["r1"]["rates"]["disconnects"], 0.0);
        assert_eq!(second["transports"]["r1"]["name"], "shop");
    }
}
