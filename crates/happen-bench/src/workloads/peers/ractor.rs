//! ractor: one actor per run (four in `broadcast`), spawned as a Tokio task (ractor's mailbox
//! is unbounded).

use std::hint::black_box;
use std::time::Instant;

use ractor::concurrency::JoinHandle;
use ractor::rpc::CallResult;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::mpsc;

use super::Workload;
use crate::measure::{Countdown, RunResult, Sample, System, system};
use crate::workloads::ask::{PARALLEL, fstep};
use crate::workloads::broadcast::RECEIVERS;
use crate::workloads::stream::BUFFER;
use crate::workloads::{err, split_clients};

pub(super) fn for_workload(workload: Workload) -> System {
    match workload {
        Workload::Tell => system("ractor", tell),
        Workload::AskSeq => system("ractor", |n| ask(n, 1, false)),
        Workload::AskPar => system("ractor", |n| ask(n, PARALLEL, false)),
        Workload::Flow => system("ractor", |n| ask(n, 1, true)),
        Workload::Broadcast => system("ractor", broadcast),
        Workload::Stream => system("ractor", stream),
    }
}

struct Peer {
    /// Counts `Tick`s, where the workload counts.
    done: Option<&'static Countdown>,
}

enum Msg {
    /// Fire-and-forget.
    Tick(u64),
    /// Answered with its value.
    Ask(u64, RpcReplyPort<u64>),
    /// Answered with its value after three awaited `async fn`s.
    Steps(u64, RpcReplyPort<u64>),
    /// Produce this many items into the sender.
    Items(u64, mpsc::Sender<u64>),
}

impl Actor for Peer {
    type Msg = Msg;
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _myself: ActorRef<Msg>, _args: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Msg>,
        msg: Msg,
        _state: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            Msg::Tick(v) => {
                black_box(v);
                if let Some(done) = self.done {
                    done.hit();
                }
            }
            Msg::Ask(v, reply) => {
                let _ = reply.send(v);
            }
            Msg::Steps(v, reply) => {
                let _ = reply.send(fstep(fstep(fstep(v).await).await).await);
            }
            Msg::Items(n, tx) => {
                for i in 0..n {
                    if tx.send(i).await.is_err() {
                        break;
                    }
                }
            }
        }
        Ok(())
    }
}

async fn spawn(
    done: Option<&'static Countdown>,
) -> Result<(ActorRef<Msg>, JoinHandle<()>), String> {
    Actor::spawn(None, Peer { done }, ()).await.map_err(err)
}

async fn stop((actor, handle): (ActorRef<Msg>, JoinHandle<()>)) -> Result<(), String> {
    actor.stop(None);
    handle.await.map_err(err)
}

async fn tell(n: u64) -> RunResult {
    let done = Countdown::leaked(n);
    let peer = spawn(Some(done)).await?;

    let start = Instant::now();
    for i in 0..n {
        peer.0.send_message(Msg::Tick(i)).map_err(err)?;
    }
    done.wait().await;
    let elapsed = start.elapsed();

    stop(peer).await?;
    Ok(Sample::new(n, elapsed))
}

async fn ask(n: u64, tasks: u64, steps: bool) -> RunResult {
    let peer = spawn(None).await?;

    let start = Instant::now();
    let (ops, latencies) = split_clients(n, tasks, |count, record| {
        client(peer.0.clone(), count, record, steps)
    })
    .await?;
    let elapsed = start.elapsed();

    stop(peer).await?;
    Ok(Sample::new(ops, elapsed).with_latencies(latencies))
}

async fn client(
    actor: ActorRef<Msg>,
    n: u64,
    record: bool,
    steps: bool,
) -> Result<(u64, Vec<u64>), String> {
    let mut latencies = Vec::with_capacity(if record { n as usize } else { 0 });
    for i in 0..n {
        let t = Instant::now();
        let result = if steps {
            actor.call(|reply| Msg::Steps(i, reply), None).await
        } else {
            actor.call(|reply| Msg::Ask(i, reply), None).await
        };
        let v = match result.map_err(err)? {
            CallResult::Success(v) => v,
            CallResult::Timeout => return Err("ractor call timed out".to_owned()),
            CallResult::SenderError => return Err("ractor dropped the reply port".to_owned()),
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
    let mut peers = Vec::new();
    for _ in 0..RECEIVERS {
        peers.push(spawn(Some(done)).await?);
    }

    let start = Instant::now();
    for i in 0..n {
        for (actor, _) in &peers {
            actor.send_message(Msg::Tick(i)).map_err(err)?;
        }
    }
    done.wait().await;
    let elapsed = start.elapsed();

    for peer in peers {
        stop(peer).await?;
    }
    Ok(Sample::new(done.count(), elapsed))
}

async fn stream(n: u64) -> RunResult {
    let peer = spawn(None).await?;
    let (tx, mut rx) = mpsc::channel::<u64>(BUFFER);

    let start = Instant::now();
    peer.0.send_message(Msg::Items(n, tx)).map_err(err)?;
    let mut got = 0u64;
    while let Some(v) = rx.recv().await {
        black_box(v);
        got += 1;
    }
    let elapsed = start.elapsed();

    stop(peer).await?;
    if got != n {
        return Err(format!("received {got} of {n} items"));
    }
    Ok(Sample::new(got, elapsed))
}
