//! Peer actor crates on the same workloads as happen and the floor: kameo, ractor and actix.
//! Built only with `--features peers`; without it [`systems`] returns nothing.
//!
//! Each peer is one actor (four in `broadcast`) with an unbounded mailbox, as the floor's
//! channel is unbounded: kameo's `mailbox::unbounded()`, ractor's only mailbox, and actix with
//! its mailbox capacity set to 0 (unbounded) at creation. Messages and replies are `u64`s.
//!
//! - `tell`: the producer sends `n` fire-and-forget messages without waiting (kameo
//!   `tell(..).try_send()`, ractor `send_message`, actix `do_send`); the handler counts.
//! - `ask-seq` / `ask-par`: round trips (kameo `ask(..).send()`, ractor `call`, actix
//!   `send(..).await`), the handler answers with the request, split across the same client tasks
//!   as happen and the floor.
//! - `flow`: the handler awaits three `async fn`s before answering, as the floor's server task
//!   does (actix handlers are synchronous: it returns a `ResponseFuture`, one boxed future per
//!   request).
//! - `broadcast`: the producer tells each of 4 actors, which count (none of the three has a
//!   broadcast primitive in its core crate; deliveries/s as for happen and the floor).
//! - `stream`: none of the three streams natively, so the client tells the actor to produce
//!   `n` items, and the handler pushes them through a bounded `tokio::sync::mpsc` of the same
//!   capacity as happen's stream buffer (1,024) that the client reads to the end.
//!
//! kameo and ractor run their actors as tasks on the bench's 2-worker Tokio runtime. actix's
//! actors are not `Send`: its actors live on a single-thread actix `System` running on a thread
//! of its own, and the bench talks to them from the Tokio runtime through their `Addr`s and
//! awaits the response futures. So actix has a thread beside the 2 Tokio workers (on 2 cores),
//! and in `broadcast` its 4 actors share that one thread.

#[cfg(feature = "peers")]
mod actix;
#[cfg(feature = "peers")]
mod kameo;
#[cfg(feature = "peers")]
mod ractor;

use crate::measure::System;

/// A workload the peers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Workload {
    Tell,
    AskSeq,
    AskPar,
    Flow,
    Broadcast,
    Stream,
}

impl Workload {
    /// The workload of this name, if the peers run it.
    pub(crate) fn named(name: &str) -> Option<Workload> {
        Some(match name {
            "tell" => Workload::Tell,
            "ask-seq" => Workload::AskSeq,
            "ask-par" => Workload::AskPar,
            "flow" => Workload::Flow,
            "broadcast" => Workload::Broadcast,
            "stream" => Workload::Stream,
            _ => return None,
        })
    }
}

/// The peer systems for `workload` (none without the `peers` feature).
#[cfg(feature = "peers")]
pub(crate) fn systems(workload: Workload) -> Vec<System> {
    vec![
        kameo::for_workload(workload),
        ractor::for_workload(workload),
        actix::for_workload(workload),
    ]
}

/// The peer systems for `workload` (none without the `peers` feature).
#[cfg(not(feature = "peers"))]
pub(crate) fn systems(_workload: Workload) -> Vec<System> {
    Vec::new()
}
