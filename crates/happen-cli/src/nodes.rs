//! `happen nodes`: the live nodes, from the discovery answers of every process (`WIRE.md`,
//! "Discovery").

use std::collections::BTreeMap;

use happen::Result;
use happen_nats::discover::{NodeInfo, ProcessInfo};
use serde::Serialize;

use crate::NodesArgs;
use crate::conn::ConnArgs;

/// One node id and the processes serving it (the `--json` output).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Node<'a> {
    pub(crate) id: &'a str,
    pub(crate) replicas: Vec<Replica<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Replica<'a> {
    pub(crate) replica: &'a str,
    process: &'a str,
    #[serde(flatten)]
    pub(crate) info: &'a NodeInfo,
}

pub(crate) fn by_node(processes: &[ProcessInfo]) -> Vec<Node<'_>> {
    let mut nodes: BTreeMap<&str, Vec<Replica<'_>>> = BTreeMap::new();
    for p in processes {
        for n in &p.nodes {
            nodes.entry(n.id.as_str()).or_default().push(Replica {
                replica: &p.replica,
                process: &p.name,
                info: n,
            });
        }
    }
    nodes
        .into_iter()
        .map(|(id, replicas)| Node { id, replicas })
        .collect()
}

/// `1.2ms`, `850µs`, `-` for nothing measured.
fn micros(us: u64) -> String {
    match us {
        0 => "-".to_owned(),
        us if us < 1000 => format!("{us}µs"),
        us if us < 1_000_000 => format!("{:.1}ms", us as f64 / 1000.0),
        us => format!("{:.2}s", us as f64 / 1e6),
    }
}

fn table(nodes: &[Node<'_>]) -> String {
    let header = [
        "NODE",
        "REPLICAS",
        "CONCURRENT",
        "QUEUE",
        "ACTIVE",
        "QUEUED",
        "PRESSURE",
        "ACCEPTED",
        "REJECTED",
        "FAILED",
        "WAIT p50/p99",
    ];
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
    for n in nodes {
        let first = n.replicas[0].info;
        let sum = |f: fn(&NodeInfo) -> u64| n.replicas.iter().map(|r| f(r.info)).sum::<u64>();
        let high = n.replicas.iter().filter(|r| r.info.under_pressure).count();
        let pressure = match (high, n.replicas.len()) {
            (0, _) => "normal".to_owned(),
            (1, 1) => "high".to_owned(),
            (h, r) => format!("high ({h}/{r})"),
        };
        let p99 = n.replicas.iter().map(|r| r.info.queue_wait_p99_us).max();
        rows.push(vec![
            n.id.to_owned(),
            n.replicas.len().to_string(),
            first.max_concurrent.to_string(),
            format!("{} (high {})", first.queue_limit, first.high_water),
            sum(|i| i.active as u64).to_string(),
            sum(|i| i.queued as u64).to_string(),
            pressure,
            sum(|i| i.accepted).to_string(),
            sum(|i| i.rejected).to_string(),
            sum(|i| i.failed).to_string(),
            format!(
                "{}/{}",
                micros(first.queue_wait_p50_us),
                micros(p99.unwrap_or(0))
            ),
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

pub(crate) async fn nodes(conn: &ConnArgs, a: crate::NodesArgs) -> Result<()> {
    let NodesArgs { wait, quiet, json } = a;
    let transport = conn.connect().await?;
    let processes = transport.discover(wait, quiet).await?;
    let nodes = by_node(&processes);
    if json {
        println!("{}", serde_json::to_string(&nodes).unwrap_or_default());
    } else if nodes.is_empty() {
        eprintln!(
            "no node answered within {wait:?} (happen processes answer discovery; a TypeScript reference node does not)"
        );
    } else {
        print!("{}", table(&nodes));
        eprintln!("{} node(s) in {} process(es)", nodes.len(), processes.len());
    }
    Ok(())
}
