//! `fan-out`: one request to 8 nodes at once, awaited until all 8 answered.
//!
//! happen(send_all): `Node::send_all` to the 8 nodes. happen(joined): the same as 8
//! `Node::send`s joined by hand (`futures::future::join_all`), the way a user writes it
//! without `send_all`; the ratio is against it. 16 client tasks share the fan-outs; each node
//! answers with its payload. Throughput counts fan-outs (× 8 requests each).

use std::time::Instant;

use futures::future::join_all;
use happen::{Context, Event, Happen, Node};

use super::err;
use crate::measure::{Bench, RunResult, Sample, system};
use crate::report::Row;

/// Nodes per fan-out.
const TARGETS: usize = 8;
/// Client tasks sharing the fan-outs.
const CLIENTS: u64 = 16;

pub(crate) fn run(bench: &Bench) -> Vec<Row> {
    let n = if bench.quick { 2_000 } else { 100_000 };
    let systems = vec![
        system("happen(send_all)", |n| fan_out(n, true)),
        system("happen(joined)", |n| fan_out(n, false)),
    ];
    let mut rows = bench.compare("fan-out", n, &systems, "happen(joined)");
    for r in &mut rows {
        r.note = if r.note.is_empty() {
            format!("fan-outs/s to {TARGETS} nodes")
        } else {
            format!("fan-outs/s to {TARGETS} nodes; {}", r.note)
        };
    }
    rows
}

/// One run of `system` alone (child mode).
pub(crate) async fn child(system: &str, n: u64) -> RunResult {
    match system {
        "happen(send_all)" => fan_out(n, true).await,
        "happen(joined)" => fan_out(n, false).await,
        other => Err(format!("unknown fan-out system `{other}`")),
    }
}

async fn fan_out(n: u64, send_all: bool) -> RunResult {
    let happen = Happen::new();
    let mut targets = Vec::with_capacity(TARGETS);
    for i in 0..TARGETS {
        targets.push(happen.node(format!("t{i}")).await.map_err(err)?);
    }
    Node::on_all(&targets, "q", |e: Event, _c: Context| async move {
        e.payload().clone()
    })
    .map_err(err)?;
    let client = happen.node("client").await.map_err(err)?;

    let start = Instant::now();
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|t| {
            let count = n / CLIENTS + u64::from(t < n % CLIENTS);
            let (client, targets) = (client.clone(), targets.clone());
            tokio::spawn(async move {
                for i in 0..count {
                    if send_all {
                        let all = client.send_all(&targets, Event::new("q", i)).await?;
                        all.all_ok()?;
                    } else {
                        let replies = targets.iter().map(|t| client.send(t, Event::new("q", i)));
                        for r in join_all(replies).await {
                            r?;
                        }
                    }
                }
                Ok::<_, happen::Error>(count)
            })
        })
        .collect();
    let mut done = 0;
    for t in tasks {
        done += t.await.map_err(err)?.map_err(err)?;
    }
    let elapsed = start.elapsed();
    happen.shutdown(std::time::Duration::from_secs(5)).await;
    Ok(Sample::new(done, elapsed))
}
