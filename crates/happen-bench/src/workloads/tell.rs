//! `tell`: fire-and-forget events to one node with a counting handler.
//!
//! happen: `Node::tell` (default limits: 100 concurrent, queue 10,000). The producer checks the
//! sink's backpressure every 256 events and waits while it is high (so it never overruns the
//! queue; a `QueueFull` would be retried and noted). `happen(send-drop)`: `Node::send` with the
//! `Reply` dropped at once, paced the same way.
//! `happen(liners: [])`: `Node::tell` to a handler registered as `line(handler, [])` (an empty
//! liner chain: must cost what no chain costs); `happen(1 liner)`: the same handler inside one
//! liner that only calls the rest of the chain, for the price of a liner.
//! Floor: an unbounded `tokio::sync::mpsc` of `u64` to one consumer task.
//! With `--features peers`: kameo, ractor and actix rows too (see [`super::peers`]).

use std::hint::black_box;
use std::time::{Duration, Instant};

use happen::liner::{Liner, Next, line};
use happen::{Context, ErrorKind, Event, Happen};
use tokio::sync::mpsc;

use super::peers::{self, Workload};
use super::{PACE_EVERY, err, pace};
use crate::measure::{Bench, Countdown, RunResult, Sample, system};
use crate::report::Row;

#[derive(Clone, Copy)]
enum Mode {
    Tell,
    SendDrop,
    /// `tell` to `line(handler, [])`.
    EmptyLiners,
    /// `tell` to `line(handler, [a liner that calls the rest])`.
    OneLiner,
}

pub(crate) fn run(bench: &Bench) -> Vec<Row> {
    let n = if bench.quick { 10_000 } else { 1_000_000 };
    let mut systems = vec![
        system("happen", |n| happen_tell(n, Mode::Tell)),
        system("floor", floor_tell),
        system("happen(send-drop)", |n| happen_tell(n, Mode::SendDrop)),
        system("happen(liners: [])", |n| happen_tell(n, Mode::EmptyLiners)),
        system("happen(1 liner)", |n| happen_tell(n, Mode::OneLiner)),
    ];
    systems.extend(peers::systems(Workload::Tell));
    bench.compare("tell", n, &systems, "floor")
}

/// One run of `system` alone (child mode).
pub(crate) async fn child(system: &str, n: u64) -> RunResult {
    match system {
        "happen" => happen_tell(n, Mode::Tell).await,
        "happen(send-drop)" => happen_tell(n, Mode::SendDrop).await,
        "happen(liners: [])" => happen_tell(n, Mode::EmptyLiners).await,
        "happen(1 liner)" => happen_tell(n, Mode::OneLiner).await,
        "floor" => floor_tell(n).await,
        other => Err(format!("unknown tell system `{other}`")),
    }
}

async fn happen_tell(n: u64, mode: Mode) -> RunResult {
    let happen = Happen::new();
    let sink = happen.node("sink").await.map_err(err)?;
    let src = happen.node("src").await.map_err(err)?;
    let done = Countdown::leaked(n);
    let handler = move |e: Event, _ctx: Context| async move {
        black_box(&e);
        done.hit();
    };
    match mode {
        Mode::Tell | Mode::SendDrop => sink.on("tick", handler),
        Mode::EmptyLiners => sink.on("tick", line(handler, [])),
        Mode::OneLiner => {
            let pass = Liner::new(|e: Event, ctx: Context, next: Next| next.run(e, ctx));
            sink.on("tick", line(handler, [pass]))
        }
    }
    .map_err(err)?;
    let mut pressure = sink.watch_pressure();
    let mut retries = 0u64;

    let start = Instant::now();
    for i in 0..n {
        if i % PACE_EVERY == 0 {
            pace(&mut pressure).await;
        }
        match mode {
            Mode::Tell | Mode::EmptyLiners | Mode::OneLiner => loop {
                match src.tell(&sink, Event::new("tick", i)) {
                    Ok(()) => break,
                    Err(e) if e.kind() == ErrorKind::QueueFull => {
                        retries += 1;
                        tokio::task::yield_now().await;
                    }
                    Err(e) => return Err(err(e)),
                }
            },
            Mode::SendDrop => drop(src.send(&sink, Event::new("tick", i))),
        }
    }
    let stats = sink.stats();
    done.lower_target(stats.rejected);
    done.wait().await;
    let elapsed = start.elapsed();

    happen.shutdown(Duration::from_secs(5)).await;
    let mut sample = Sample::new(done.count(), elapsed);
    if retries > 0 || stats.rejected > 0 {
        sample = sample.with_note(format!(
            "QueueFull: {} rejected, {retries} retried",
            stats.rejected
        ));
    }
    Ok(sample)
}

async fn floor_tell(n: u64) -> RunResult {
    let (tx, mut rx) = mpsc::unbounded_channel::<u64>();
    let done = Countdown::leaked(n);
    let consumer = tokio::spawn(async move {
        while let Some(v) = rx.recv().await {
            black_box(v);
            done.hit();
        }
    });
    let start = Instant::now();
    for i in 0..n {
        tx.send(i).map_err(err)?;
    }
    done.wait().await;
    let elapsed = start.elapsed();
    drop(tx);
    consumer.await.map_err(err)?;
    Ok(Sample::new(n, elapsed))
}
