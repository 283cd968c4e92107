//! `stream`: one request streaming items (stream buffer 1,024), and peak memory per size.
//!
//! happen: a streaming handler emits `0..n` through its `Emitter`; the client reads
//! `reply.into_stream()` to the end. Floor: a bounded `mpsc::channel(1024)` of `u64` from a
//! producer task to the consumer. With `--features peers`: kameo, ractor and actix rows too;
//! they do not stream natively, so their handler pushes the items through a bounded tokio mpsc
//! of the same capacity (see [`super::peers`]). The `stream-rss` rows are happen and the floor
//! only.
//!
//! Throughput: interleaved rounds in this process. Memory (`stream-rss` rows): one fresh child
//! process per (size, system) — see [`crate::rss`] — at 10^4, 10^5 and 10^6 items.

use std::hint::black_box;
use std::time::{Duration, Instant};

use futures::StreamExt;
use happen::{Context, Emitter, Event, Happen, NodeOptions};
use tokio::sync::mpsc;

use super::err;
use super::peers::{self, Workload};
use crate::measure::{Bench, RunResult, Sample, apply_ratios, summarize, system};
use crate::report::Row;
use crate::rss::run_child;

/// The stream buffer of every system (the peers' handlers push through a channel this size).
pub(crate) const BUFFER: usize = 1_024;

pub(crate) fn run(bench: &Bench) -> Vec<Row> {
    let n = if bench.quick { 10_000 } else { 1_000_000 };
    let mut systems = vec![
        system("happen", happen_stream),
        system("floor", floor_stream),
    ];
    systems.extend(peers::systems(Workload::Stream));
    let mut rows = bench.compare("stream", n, &systems, "floor");

    let sizes: &[u64] = if bench.quick {
        &[100, 1_000, 10_000]
    } else {
        &[10_000, 100_000, 1_000_000]
    };
    eprint!("stream-rss: child processes");
    for &size in sizes {
        eprint!(", {size}");
        let mut pair: Vec<Row> = ["happen", "floor"]
            .iter()
            .map(|sys| match run_child("stream", sys, size) {
                Ok(s) => summarize("stream-rss", sys, size, &[s], None),
                Err(e) => summarize("stream-rss", sys, size, &[], Some(e)),
            })
            .collect();
        apply_ratios(&mut pair, "floor");
        for r in &mut pair {
            r.note = if r.note.is_empty() {
                "one fresh child process".to_owned()
            } else {
                format!("one fresh child process; {}", r.note)
            };
        }
        rows.extend(pair);
    }
    eprintln!();
    rows
}

/// One run of `system` (`happen` or `floor`) streaming `n` items, for a child process.
pub(crate) async fn child(system: &str, n: u64) -> RunResult {
    match system {
        "happen" => happen_stream(n).await,
        "floor" => floor_stream(n).await,
        other => Err(format!("unknown stream system `{other}`")),
    }
}

async fn happen_stream(n: u64) -> RunResult {
    let happen = Happen::new();
    let src = happen
        .node_with("src", NodeOptions::new().stream_buffer(BUFFER))
        .await
        .map_err(err)?;
    let client = happen.node("client").await.map_err(err)?;
    src.on(
        "items",
        |event: Event, _ctx: Context, emit: Emitter| async move {
            let n = event.payload().as_u64().unwrap_or(0);
            for i in 0..n {
                emit.emit(i).await?;
            }
            Ok::<_, happen::Error>(n)
        },
    )
    .map_err(err)?;

    let start = Instant::now();
    let mut items = client.send(&src, Event::new("items", n)).into_stream();
    let mut got = 0u64;
    while let Some(item) = items.next().await {
        black_box(item.map_err(err)?);
        got += 1;
    }
    let elapsed = start.elapsed();

    happen.shutdown(Duration::from_secs(5)).await;
    if got != n {
        return Err(format!("received {got} of {n} items"));
    }
    Ok(Sample::new(got, elapsed))
}

async fn floor_stream(n: u64) -> RunResult {
    let (tx, mut rx) = mpsc::channel::<u64>(BUFFER);
    let start = Instant::now();
    let producer = tokio::spawn(async move {
        for i in 0..n {
            if tx.send(i).await.is_err() {
                break;
            }
        }
    });
    let mut got = 0u64;
    while let Some(v) = rx.recv().await {
        black_box(v);
        got += 1;
    }
    let elapsed = start.elapsed();
    producer.await.map_err(err)?;
    if got != n {
        return Err(format!("received {got} of {n} items"));
    }
    Ok(Sample::new(got, elapsed))
}
