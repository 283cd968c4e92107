//! actix: the actors (one per run, four in `broadcast`) live on a single-thread actix `System`
//! started on a thread of its own for each run; the bench reaches them from the Tokio runtime
//! through their `Addr`s. Mailbox capacity 0 (unbounded), set when each actor is created, so
//! `send` never parks a client on the default capacity of 16.

use std::hint::black_box;
use std::io;
use std::time::Instant;

use actix::{Actor, Addr, Context, Handler, Message, ResponseFuture, System};
use tokio::sync::{mpsc, oneshot};

use super::Workload;
use crate::measure::{Countdown, RunResult, Sample, System as BenchSystem, system};
use crate::workloads::ask::{PARALLEL, fstep};
use crate::workloads::broadcast::RECEIVERS;
use crate::workloads::stream::BUFFER;
use crate::workloads::{err, split_clients};

pub(super) fn for_workload(workload: Workload) -> BenchSystem {
    match workload {
        Workload::Tell => system("actix", tell),
        Workload::AskSeq => system("actix", |n| ask(n, 1, false)),
        Workload::AskPar => system("actix", |n| ask(n, PARALLEL, false)),
        Workload::Flow => system("actix", |n| ask(n, 1, true)),
        Workload::Broadcast => system("actix", broadcast),
        Workload::Stream => system("actix", stream),
    }
}

/// Shown beside every actix row.
const NOTE: &str = "actors on a 1-thread System of their own";

struct Peer {
    /// Counts `Tick`s, where the workload counts.
    done: Option<&'static Countdown>,
}

impl Actor for Peer {
    type Context = Context<Self>;
}

/// Fire-and-forget.
struct Tick(u64);
/// Answered with its value.
struct Ask(u64);
/// Answered with its value after three awaited `async fn`s.
struct Steps(u64);
/// Produce `n` items into `tx`.
struct Items {
    n: u64,
    tx: mpsc::Sender<u64>,
}

impl Message for Tick {
    type Result = ();
}

impl Message for Ask {
    type Result = u64;
}

impl Message for Steps {
    type Result = u64;
}

impl Message for Items {
    type Result = ();
}

impl Handler<Tick> for Peer {
    type Result = ();

    fn handle(&mut self, msg: Tick, _ctx: &mut Context<Self>) {
        black_box(msg.0);
        if let Some(done) = self.done {
            done.hit();
        }
    }
}

impl Handler<Ask> for Peer {
    type Result = u64;

    fn handle(&mut self, msg: Ask, _ctx: &mut Context<Self>) -> u64 {
        msg.0
    }
}

impl Handler<Steps> for Peer {
    type Result = ResponseFuture<u64>;

    fn handle(&mut self, msg: Steps, _ctx: &mut Context<Self>) -> ResponseFuture<u64> {
        Box::pin(async move { fstep(fstep(fstep(msg.0).await).await).await })
    }
}

impl Handler<Items> for Peer {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, msg: Items, _ctx: &mut Context<Self>) -> ResponseFuture<()> {
        Box::pin(async move {
            for i in 0..msg.n {
                if msg.tx.send(i).await.is_err() {
                    break;
                }
            }
        })
    }
}

/// A running actix `System` on its own thread, and the addresses of its actors.
struct Running {
    system: System,
    addrs: Vec<Addr<Peer>>,
    exited: oneshot::Receiver<io::Result<()>>,
}

/// Starts a `System` on a new thread with `actors` actors.
async fn start(actors: u64, done: Option<&'static Countdown>) -> Result<Running, String> {
    let (ready_tx, ready) = oneshot::channel();
    let (exit_tx, exited) = oneshot::channel();
    std::thread::Builder::new()
        .name("actix".to_owned())
        .spawn(move || {
            let runner = System::new();
            let addrs = runner.block_on(async move {
                (0..actors)
                    .map(|_| {
                        Peer::create(|ctx| {
                            ctx.set_mailbox_capacity(0);
                            Peer { done }
                        })
                    })
                    .collect::<Vec<_>>()
            });
            let _ = ready_tx.send((System::current(), addrs));
            let _ = exit_tx.send(runner.run());
        })
        .map_err(err)?;
    let (system, addrs) = ready.await.map_err(err)?;
    Ok(Running {
        system,
        addrs,
        exited,
    })
}

/// Stops the `System` and waits for its thread to leave the event loop.
async fn stop(running: Running) -> Result<(), String> {
    running.system.stop();
    drop(running.addrs);
    running.exited.await.map_err(err)?.map_err(err)
}

async fn tell(n: u64) -> RunResult {
    let done = Countdown::leaked(n);
    let running = start(1, Some(done)).await?;
    let addr = &running.addrs[0];

    let start = Instant::now();
    for i in 0..n {
        addr.do_send(Tick(i));
    }
    done.wait().await;
    let elapsed = start.elapsed();

    stop(running).await?;
    Ok(Sample::new(n, elapsed).with_note(NOTE))
}

async fn ask(n: u64, tasks: u64, steps: bool) -> RunResult {
    let running = start(1, None).await?;
    let addr = running.addrs[0].clone();

    let start = Instant::now();
    let (ops, latencies) = split_clients(n, tasks, |count, record| {
        client(addr.clone(), count, record, steps)
    })
    .await?;
    let elapsed = start.elapsed();

    drop(addr);
    stop(running).await?;
    Ok(Sample::new(ops, elapsed)
        .with_latencies(latencies)
        .with_note(NOTE))
}

async fn client(
    addr: Addr<Peer>,
    n: u64,
    record: bool,
    steps: bool,
) -> Result<(u64, Vec<u64>), String> {
    let mut latencies = Vec::with_capacity(if record { n as usize } else { 0 });
    for i in 0..n {
        let t = Instant::now();
        let v = if steps {
            addr.send(Steps(i)).await
        } else {
            addr.send(Ask(i)).await
        }
        .map_err(err)?;
        if record {
            latencies.push(t.elapsed().as_nanos() as u64);
        }
        black_box(v);
    }
    Ok((n, latencies))
}

async fn broadcast(n: u64) -> RunResult {
    let done = Countdown::leaked(n * RECEIVERS);
    let running = start(RECEIVERS, Some(done)).await?;

    let start = Instant::now();
    for i in 0..n {
        for addr in &running.addrs {
            addr.do_send(Tick(i));
        }
    }
    done.wait().await;
    let elapsed = start.elapsed();

    stop(running).await?;
    Ok(Sample::new(done.count(), elapsed).with_note(NOTE))
}

async fn stream(n: u64) -> RunResult {
    let running = start(1, None).await?;
    let (tx, mut rx) = mpsc::channel::<u64>(BUFFER);

    let start = Instant::now();
    running.addrs[0].do_send(Items { n, tx });
    let mut got = 0u64;
    while let Some(v) = rx.recv().await {
        black_box(v);
        got += 1;
    }
    let elapsed = start.elapsed();

    stop(running).await?;
    if got != n {
        return Err(format!("received {got} of {n} items"));
    }
    Ok(Sample::new(got, elapsed).with_note(NOTE))
}
