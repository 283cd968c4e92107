//! kameo: one actor per run (four in `broadcast`), spawned as a Tokio task with an unbounded
//! mailbox.

use std::hint::black_box;
use std::time::Instant;

use kameo::Actor;
use kameo::actor::{ActorRef, Spawn};
use kameo::error::Infallible;
use kameo::mailbox;
use kameo::message::{Context, Message};
use tokio::sync::mpsc;

use super::Workload;
use crate::measure::{Countdown, RunResult, Sample, System, system};
use crate::workloads::ask::{PARALLEL, fstep};
use crate::workloads::broadcast::RECEIVERS;
use crate::workloads::stream::BUFFER;
use crate::workloads::{err, split_clients};

pub(super) fn for_workload(workload: Workload) -> System {
    match workload {
        Workload::Tell => system("kameo", tell),
        Workload::AskSeq => system("kameo", |n| ask(n, 1, false)),
        Workload::AskPar => system("kameo", |n| ask(n, PARALLEL, false)),
        Workload::Flow => system("kameo", |n| ask(n, 1, true)),
        Workload::Broadcast => system("kameo", broadcast),
        Workload::Stream => system("kameo", stream),
    }
}

struct Peer {
    /// Counts `Tick`s, where the workload counts.
    done: Option<&'static Countdown>,
}

impl Actor for Peer {
    type Args = Self;
    type Error = Infallible;

    async fn on_start(args: Self, _actor: ActorRef<Self>) -> Result<Self, Infallible> {
        Ok(args)
    }
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

impl Message<Tick> for Peer {
    type Reply = ();

    async fn handle(&mut self, msg: Tick, _ctx: &mut Context<Self, ()>) {
        black_box(msg.0);
        if let Some(done) = self.done {
            done.hit();
        }
    }
}

impl Message<Ask> for Peer {
    type Reply = u64;

    async fn handle(&mut self, msg: Ask, _ctx: &mut Context<Self, u64>) -> u64 {
        msg.0
    }
}

impl Message<Steps> for Peer {
    type Reply = u64;

    async fn handle(&mut self, msg: Steps, _ctx: &mut Context<Self, u64>) -> u64 {
        fstep(fstep(fstep(msg.0).await).await).await
    }
}

impl Message<Items> for Peer {
    type Reply = ();

    async fn handle(&mut self, msg: Items, _ctx: &mut Context<Self, ()>) {
        for i in 0..msg.n {
            if msg.tx.send(i).await.is_err() {
                break;
            }
        }
    }
}

async fn spawn(done: Option<&'static Countdown>) -> ActorRef<Peer> {
    let actor = Peer::spawn_with_mailbox(Peer { done }, mailbox::unbounded());
    actor.wait_for_startup().await;
    actor
}

async fn stop(actor: &ActorRef<Peer>) -> Result<(), String> {
    actor.stop_gracefully().await.map_err(err)?;
    actor.wait_for_shutdown().await;
    Ok(())
}

async fn tell(n: u64) -> RunResult {
    let done = Countdown::leaked(n);
    let actor = spawn(Some(done)).await;

    let start = Instant::now();
    for i in 0..n {
        actor.tell(Tick(i)).try_send().map_err(err)?;
    }
    done.wait().await;
    let elapsed = start.elapsed();

    stop(&actor).await?;
    Ok(Sample::new(n, elapsed))
}

async fn ask(n: u64, tasks: u64, steps: bool) -> RunResult {
    let actor = spawn(None).await;

    let start = Instant::now();
    let (ops, latencies) = split_clients(n, tasks, |count, record| {
        client(actor.clone(), count, record, steps)
    })
    .await?;
    let elapsed = start.elapsed();

    stop(&actor).await?;
    Ok(Sample::new(ops, elapsed).with_latencies(latencies))
}

async fn client(
    actor: ActorRef<Peer>,
    n: u64,
    record: bool,
    steps: bool,
) -> Result<(u64, Vec<u64>), String> {
    let mut latencies = Vec::with_capacity(if record { n as usize } else { 0 });
    for i in 0..n {
        let t = Instant::now();
        let v = if steps {
            actor.ask(Steps(i)).send().await.map_err(err)?
        } else {
            actor.ask(Ask(i)).send().await.map_err(err)?
        };
        if record {
            latencies.push(t.elapsed().as_nanos() as u64);
        }
        black_box(v);
    }
    Ok((n, latencies))
}

async fn broadcast(n: u64) -> RunResult {
    let done = Countdown::leaked(n * RECEIVERS);
    let mut actors = Vec::new();
    for _ in 0..RECEIVERS {
        actors.push(spawn(Some(done)).await);
    }

    let start = Instant::now();
    for i in 0..n {
        for actor in &actors {
            actor.tell(Tick(i)).try_send().map_err(err)?;
        }
    }
    done.wait().await;
    let elapsed = start.elapsed();

    for actor in &actors {
        stop(actor).await?;
    }
    Ok(Sample::new(done.count(), elapsed))
}

async fn stream(n: u64) -> RunResult {
    let actor = spawn(None).await;
    let (tx, mut rx) = mpsc::channel::<u64>(BUFFER);

    let start = Instant::now();
    actor.tell(Items { n, tx }).try_send().map_err(err)?;
    let mut got = 0u64;
    while let Some(v) = rx.recv().await {
        black_box(v);
        got += 1;
    }
    let elapsed = start.elapsed();

    stop(&actor).await?;
    if got != n {
        return Err(format!("received {got} of {n} items"));
    }
    Ok(Sample::new(got, elapsed))
}
