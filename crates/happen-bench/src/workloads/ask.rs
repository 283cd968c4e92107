//! Request/reply: `ask-seq`, `ask-par` and `flow`.
//!
//! - `ask-seq`: sequential `send → return` round trips, latency per round trip.
//!   Floor: an unbounded mpsc of `(u64, oneshot::Sender<u64>)` to a server task.
//! - `ask-par`: the same with 64 tasks, one request in flight each.
//! - `flow`: sequential sends through a 3-step Event Continuum (`Flow::next` twice), awaited.
//!   Floor: the server task awaits three `async fn`s before answering over the same raw
//!   channel round trip.
//!
//! With `--features peers`: kameo, ractor and actix rows too (see [`super::peers`]).

use std::hint::black_box;
use std::time::{Duration, Instant};

use happen::{Context, Event, Flow, Happen, Node};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use super::peers::{self, Workload};
use super::{err, split_clients};
use crate::measure::{Bench, RunResult, Sample, system};
use crate::report::Row;

/// Requests in flight in `ask-par`.
pub(crate) const PARALLEL: u64 = 64;

pub(crate) fn run_seq(bench: &Bench) -> Vec<Row> {
    let n = if bench.quick { 2_000 } else { 100_000 };
    let mut systems = vec![
        system("happen", |n| happen_ask(n, 1, Shape::Direct)),
        system("floor", |n| floor_ask(n, 1, Shape::Direct)),
    ];
    systems.extend(peers::systems(Workload::AskSeq));
    bench.compare("ask-seq", n, &systems, "floor")
}

pub(crate) fn run_par(bench: &Bench) -> Vec<Row> {
    let n = if bench.quick { 10_000 } else { 1_000_000 };
    let mut systems = vec![
        system("happen", |n| happen_ask(n, PARALLEL, Shape::Direct)),
        system("floor", |n| floor_ask(n, PARALLEL, Shape::Direct)),
    ];
    systems.extend(peers::systems(Workload::AskPar));
    bench.compare("ask-par", n, &systems, "floor")
}

pub(crate) fn run_flow(bench: &Bench) -> Vec<Row> {
    let n = if bench.quick { 2_000 } else { 100_000 };
    let mut systems = vec![
        system("happen", |n| happen_ask(n, 1, Shape::ThreeSteps)),
        system("floor", |n| floor_ask(n, 1, Shape::ThreeSteps)),
    ];
    systems.extend(peers::systems(Workload::Flow));
    bench.compare("flow", n, &systems, "floor")
}

/// One run of `system` on `workload` alone (child mode).
pub(crate) async fn child(workload: &str, system: &str, n: u64) -> RunResult {
    let (tasks, shape) = match workload {
        "ask-seq" => (1, Shape::Direct),
        "ask-par" => (PARALLEL, Shape::Direct),
        _ => (1, Shape::ThreeSteps),
    };
    match system {
        "happen" => happen_ask(n, tasks, shape).await,
        "floor" => floor_ask(n, tasks, shape).await,
        other => Err(format!("unknown {workload} system `{other}`")),
    }
}

#[derive(Clone, Copy)]
enum Shape {
    /// The handler returns at once.
    Direct,
    /// Three steps chained through the continuum.
    ThreeSteps,
}

async fn step1(event: Event, _ctx: Context) -> Flow {
    black_box(&event);
    Flow::next(step2)
}

async fn step2(event: Event, _ctx: Context) -> Flow {
    black_box(&event);
    Flow::next(step3)
}

async fn step3(event: Event, _ctx: Context) -> Value {
    event.payload().clone()
}

/// `tasks` tasks share `n` requests; with one task the per-request latency is recorded.
async fn happen_ask(n: u64, tasks: u64, shape: Shape) -> RunResult {
    let happen = Happen::new();
    let server = happen.node("server").await.map_err(err)?;
    let client = happen.node("client").await.map_err(err)?;
    match shape {
        Shape::Direct => server.on("ask", |event: Event, _ctx: Context| async move {
            event.payload().clone()
        }),
        Shape::ThreeSteps => server.on("ask", step1),
    }
    .map_err(err)?;

    let start = Instant::now();
    let (ops, latencies) = split_clients(n, tasks, |count, record| {
        happen_client(client.clone(), server.clone(), count, record)
    })
    .await?;
    let elapsed = start.elapsed();

    happen.shutdown(Duration::from_secs(5)).await;
    Ok(Sample::new(ops, elapsed).with_latencies(latencies))
}

async fn happen_client(
    client: Node,
    server: Node,
    n: u64,
    record: bool,
) -> Result<(u64, Vec<u64>), String> {
    let mut latencies = Vec::with_capacity(if record { n as usize } else { 0 });
    for i in 0..n {
        let t = Instant::now();
        let v = client
            .send(&server, Event::new("ask", i))
            .await
            .map_err(err)?;
        if record {
            latencies.push(t.elapsed().as_nanos() as u64);
        }
        black_box(v);
    }
    Ok((n, latencies))
}

type Request = (u64, oneshot::Sender<u64>);

/// One step of the floor's (and the peers') three-step `flow`.
pub(crate) async fn fstep(v: u64) -> u64 {
    black_box(v)
}

async fn floor_ask(n: u64, tasks: u64, shape: Shape) -> RunResult {
    let (tx, mut rx) = mpsc::unbounded_channel::<Request>();
    let server = tokio::spawn(async move {
        while let Some((v, reply)) = rx.recv().await {
            let v = match shape {
                Shape::Direct => v,
                Shape::ThreeSteps => fstep(fstep(fstep(v).await).await).await,
            };
            let _ = reply.send(v);
        }
    });

    let start = Instant::now();
    let (ops, latencies) = split_clients(n, tasks, |count, record| {
        floor_client(tx.clone(), count, record)
    })
    .await?;
    let elapsed = start.elapsed();

    drop(tx);
    server.await.map_err(err)?;
    Ok(Sample::new(ops, elapsed).with_latencies(latencies))
}

async fn floor_client(
    tx: mpsc::UnboundedSender<Request>,
    n: u64,
    record: bool,
) -> Result<(u64, Vec<u64>), String> {
    let mut latencies = Vec::with_capacity(if record { n as usize } else { 0 });
    for i in 0..n {
        let t = Instant::now();
        let (reply, rx) = oneshot::channel();
        tx.send((i, reply)).map_err(err)?;
        let v = rx.await.map_err(err)?;
        if record {
            latencies.push(t.elapsed().as_nanos() as u64);
        }
        black_box(v);
    }
    Ok((n, latencies))
}
