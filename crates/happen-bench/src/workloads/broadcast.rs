//! `broadcast`: broadcasts to 4 subscribing nodes, timed until every delivery is handled.
//!
//! happen: `Node::broadcast` from a node without a handler for the type; 4 nodes count. The
//! producer checks the receivers' backpressure every 256 broadcasts and waits while any is
//! high; deliveries rejected anyway are subtracted from the target and noted.
//! Floor: `tokio::sync::broadcast` (capacity 4,096) with 4 receiver tasks; the producer yields
//! while more than half the capacity is queued, so no receiver lags (lagged values are noted).
//! Throughput counts deliveries (broadcasts × 4).
//! With `--features peers`: kameo, ractor and actix rows too, telling each of 4 actors (see
//! [`super::peers`]).

use std::hint::black_box;
use std::time::{Duration, Instant};

use happen::{Context, Event, Happen};
use tokio::sync::broadcast;

use super::peers::{self, Workload};
use super::{PACE_EVERY, err, pace};
use crate::measure::{Bench, Countdown, RunResult, Sample, system};
use crate::report::Row;

/// Subscribing nodes / receivers.
pub(crate) const RECEIVERS: u64 = 4;
/// Capacity of the floor's broadcast channel.
const FLOOR_CAPACITY: usize = 4_096;

pub(crate) fn run(bench: &Bench) -> Vec<Row> {
    let n = if bench.quick { 2_000 } else { 100_000 };
    let mut systems = vec![
        system("happen", happen_broadcast),
        system("floor", floor_broadcast),
    ];
    systems.extend(peers::systems(Workload::Broadcast));
    let mut rows = bench.compare("broadcast", n, &systems, "floor");
    for r in &mut rows {
        r.note = join(&format!("deliveries/s, {RECEIVERS} receivers"), &r.note);
    }
    rows
}

fn join(a: &str, b: &str) -> String {
    if b.is_empty() {
        a.to_owned()
    } else {
        format!("{a}; {b}")
    }
}

/// One run of `system` alone (child mode).
pub(crate) async fn child(system: &str, n: u64) -> RunResult {
    match system {
        "happen" => happen_broadcast(n).await,
        "floor" => floor_broadcast(n).await,
        other => Err(format!("unknown broadcast system `{other}`")),
    }
}

async fn happen_broadcast(n: u64) -> RunResult {
    let happen = Happen::new();
    let done = Countdown::leaked(n * RECEIVERS);
    let mut receivers = Vec::new();
    for i in 0..RECEIVERS {
        let node = happen.node(format!("sub-{i}")).await.map_err(err)?;
        node.on("tick", move |e: Event, _ctx: Context| async move {
            black_box(&e);
            done.hit();
        })
        .map_err(err)?;
        receivers.push(node);
    }
    let src = happen.node("src").await.map_err(err)?;
    let mut pressure: Vec<_> = receivers.iter().map(|r| r.watch_pressure()).collect();

    let start = Instant::now();
    for i in 0..n {
        if i % PACE_EVERY == 0 {
            for p in &mut pressure {
                pace(p).await;
            }
        }
        src.broadcast(Event::new("tick", i)).map_err(err)?;
    }
    let rejected: u64 = receivers.iter().map(|r| r.stats().rejected).sum();
    done.lower_target(rejected);
    done.wait().await;
    let elapsed = start.elapsed();

    happen.shutdown(Duration::from_secs(5)).await;
    let sample = Sample::new(done.count(), elapsed);
    Ok(if rejected > 0 {
        sample.with_note(format!("{rejected} deliveries rejected (QueueFull)"))
    } else {
        sample
    })
}

async fn floor_broadcast(n: u64) -> RunResult {
    let (tx, _) = broadcast::channel::<u64>(FLOOR_CAPACITY);
    let done = Countdown::leaked(n * RECEIVERS);
    let tasks: Vec<_> = (0..RECEIVERS)
        .map(|_| {
            let mut rx = tx.subscribe();
            tokio::spawn(async move {
                let mut lagged = 0;
                loop {
                    match rx.recv().await {
                        Ok(v) => {
                            black_box(v);
                            done.hit();
                        }
                        Err(broadcast::error::RecvError::Lagged(k)) => {
                            lagged += k;
                            done.lower_target(k);
                        }
                        Err(broadcast::error::RecvError::Closed) => return lagged,
                    }
                }
            })
        })
        .collect();

    let start = Instant::now();
    for i in 0..n {
        if i % PACE_EVERY == 0 {
            while tx.len() > FLOOR_CAPACITY / 2 {
                tokio::task::yield_now().await;
            }
        }
        tx.send(i).map_err(err)?;
    }
    done.wait().await;
    let elapsed = start.elapsed();

    drop(tx);
    let mut lagged = 0;
    for t in tasks {
        lagged += t.await.map_err(err)?;
    }
    let sample = Sample::new(done.count(), elapsed);
    Ok(if lagged > 0 {
        sample.with_note(format!("{lagged} deliveries lost (lagged)"))
    } else {
        sample
    })
}
