//! Liveness: heartbeats, and failing the requests of a replica that went away (see
//! `WIRE.md`, "Liveness").
//!
//! Every process that serves nodes publishes a heartbeat on `<prefix>.beat.<replica>` every
//! `liveness.heartbeat`: its replica id, its reconnect count (`epoch`) and the nodes it
//! serves. Every process follows the heartbeats and, for its own requests still waiting:
//! - a replica silent for `liveness.detection` is gone: the requests tied to it (an
//!   `accepted` frame named it) fail with `transport`, and so do requests not tied to any
//!   replica that went to a node it served and have waited longer than a live replica takes
//!   to name itself;
//! - a replica that says `closed` (its transport shut down), or stops naming a node (that
//!   node stopped there), fails the same requests with `shut_down`, one heartbeat later (its
//!   last answers may still be on their way);
//! - a replica whose `epoch` rose lost its server connection: requests it holds are named
//!   again at once and its answers are published again, but requests still in the server
//!   it lost are gone; untied requests to its nodes published before the new epoch was seen
//!   fail with `transport` one heartbeat later.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::{Subject, Subscriber};
use bytes::Bytes;
use futures::StreamExt;
use happen::{Error, ErrorKind, NodeId};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::core::Endpoint;
use crate::core::nodes::LocalNodes;
use crate::core::outbox::{Headers, Outbox, Outgoing};
use crate::core::requests::Requests;
use crate::core::stats::Counters;

/// A heartbeat names at most this many nodes; a process serving more says `"nodes": null`
/// (every node: its requesters' untied requests to any node count as possibly there).
const NODES_AT_MOST: usize = 1024;

/// A heartbeat's body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Beat {
    pub(crate) replica: String,
    /// The sender's reconnect count.
    #[serde(default)]
    pub(crate) epoch: u64,
    /// The nodes it serves; `None`: too many to name.
    #[serde(default)]
    pub(crate) nodes: Option<Vec<String>>,
    /// Its transport shut down: it serves nothing any more.
    #[serde(default)]
    pub(crate) closed: bool,
}

/// What the liveness task uses.
pub(crate) struct Liveness {
    pub(crate) ep: Arc<Endpoint>,
    pub(crate) nodes: Arc<LocalNodes>,
    pub(crate) requests: Arc<Requests>,
    pub(crate) outbox: Arc<Outbox>,
    pub(crate) counters: Arc<Counters>,
}

impl Liveness {
    /// This process's heartbeat now (`None` when it serves no node and is not closing).
    fn beat(&self, closed: bool) -> Option<Bytes> {
        let served = self.nodes.served();
        if served.is_empty() && !closed {
            return None;
        }
        let beat = Beat {
            replica: self.ep.replica.clone(),
            epoch: self.counters.disconnects.load(Ordering::Acquire),
            nodes: (served.len() <= NODES_AT_MOST)
                .then(|| served.iter().map(|n| n.as_str().to_owned()).collect()),
            closed,
        };
        serde_json::to_vec(&beat).ok().map(Bytes::from)
    }

    fn publish(&self, body: Bytes) {
        // best effort: a full buffer drops a beat, and the next one comes `heartbeat` later
        let _ = self.outbox.try_enqueue(Outgoing {
            subject: Subject::from(self.ep.subjects.beat(&self.ep.replica)),
            reply: None,
            headers: Headers::None,
            payload: body,
        });
    }

    /// Says that this process no longer serves anything (its transport shuts down; its
    /// nodes have stopped).
    pub(crate) fn publish_closed(&self) {
        if let Some(body) = self.beat(true) {
            self.publish(body);
        }
    }
}

/// What this process knows of another replica.
struct Peer {
    last_beat: Instant,
    epoch: u64,
    /// `None`: it serves too many to name (every node counts).
    nodes: Option<HashSet<String>>,
    /// Failures due one heartbeat after they were seen: (what, when seen).
    due: Vec<(Due, Instant)>,
}

/// A failure waiting for its grace (see the module docs).
enum Due {
    /// The replica closed.
    Closed,
    /// It stopped serving this node.
    Left(String),
    /// It reconnected: untied requests to its nodes published before this were lost.
    Reconnected,
}

/// Publishes this process's heartbeats and follows the others' (see the module docs).
pub(crate) async fn run(l: Arc<Liveness>, mut sub: Subscriber) {
    let cfg = l.ep.config.liveness.clone();
    let mut peers: HashMap<String, Peer> = HashMap::new();
    // checks four times per heartbeat: a gone replica is noticed within `detection`
    let mut tick = tokio::time::interval((cfg.heartbeat / 4).max(Duration::from_millis(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next_beat = Instant::now();
    loop {
        tokio::select! {
            // heartbeats that arrived first: a starved task must not see silence that is not
            biased;
            msg = sub.next() => match msg {
                Some(msg) => {
                    let Ok(beat) = serde_json::from_slice::<Beat>(&msg.payload) else {
                        l.counters.bad_input(crate::core::stats::BadInput::Malformed);
                        continue;
                    };
                    if beat.replica != l.ep.replica {
                        observe(&mut peers, beat);
                    }
                }
                None => return,
            },
            _ = tick.tick() => {
                let now = Instant::now();
                if now >= next_beat {
                    next_beat = now + cfg.heartbeat;
                    if let Some(body) = l.beat(false) {
                        l.publish(body);
                    }
                }
                check(&l, &mut peers, now, &cfg);
            }
        }
    }
}

/// Takes in a heartbeat of another replica.
fn observe(peers: &mut HashMap<String, Peer>, beat: Beat) {
    let now = Instant::now();
    let nodes = beat.nodes.map(|n| n.into_iter().collect::<HashSet<_>>());
    let Some(peer) = peers.get_mut(&beat.replica) else {
        if !beat.closed {
            peers.insert(
                beat.replica,
                Peer {
                    last_beat: now,
                    epoch: beat.epoch,
                    nodes,
                    due: Vec::new(),
                },
            );
        }
        return;
    };
    peer.last_beat = now;
    if beat.closed {
        peer.due.push((Due::Closed, now));
        return;
    }
    if beat.epoch > peer.epoch {
        peer.epoch = beat.epoch;
        peer.due.push((Due::Reconnected, now));
    }
    if let (Some(before), Some(after)) = (&peer.nodes, &nodes) {
        for left in before.difference(after) {
            peer.due.push((Due::Left(left.clone()), now));
        }
    }
    peer.nodes = nodes;
}

/// Fails what is due (see the module docs).
fn check(
    l: &Liveness,
    peers: &mut HashMap<String, Peer>,
    now: Instant,
    cfg: &crate::config::LivenessConfig,
) {
    let grace = cfg.heartbeat;
    let untied_for = cfg.tie_within();
    let mut gone = Vec::new();
    for (replica, peer) in peers.iter_mut() {
        let silent = now.saturating_duration_since(peer.last_beat);
        // declared gone a heartbeat before `detection`, so the requests fail within it
        if silent + cfg.heartbeat >= cfg.detection {
            let serves = |t: &str| peer.nodes.as_ref().is_none_or(|n| n.contains(t));
            let n = l.requests.fail_gone(replica, serves, true, now, untied_for, |node| {
                Error::new(
                    ErrorKind::Transport,
                    format!(
                        "replica `{replica}` serving node `{node}` stopped answering (no heartbeat for {}ms); the event may or may not have been handled",
                        silent.as_millis()
                    ),
                )
            });
            if n > 0 {
                tracing::warn!(target: "happen_nats", replica = %replica, failed = n, "a replica stopped heartbeating; its requests failed");
            }
            gone.push(replica.clone());
            continue;
        }
        let mut closed = false;
        peer.due.retain(|(due, seen)| {
            if now.saturating_duration_since(*seen) < grace {
                return true;
            }
            match due {
                Due::Closed => {
                    closed = true;
                    let serves = |t: &str| peer.nodes.as_ref().is_none_or(|n| n.contains(t));
                    l.requests.fail_gone(replica, serves, true, *seen, untied_for, |node| {
                        shut_down(replica, node)
                    });
                }
                Due::Left(left) => {
                    l.requests.fail_gone(
                        replica,
                        |t| t == left,
                        true,
                        *seen,
                        untied_for,
                        |node| shut_down(replica, node),
                    );
                }
                Due::Reconnected => {
                    let serves = |t: &str| peer.nodes.as_ref().is_none_or(|n| n.contains(t));
                    l.requests.fail_gone(replica, serves, false, *seen, untied_for, |node| {
                        Error::new(
                            ErrorKind::Transport,
                            format!(
                                "replica `{replica}` serving node `{node}` lost its server connection while the request may have been on its way there; the event may or may not have been handled"
                            ),
                        )
                    });
                }
            }
            false
        });
        if closed {
            gone.push(replica.clone());
        }
    }
    for replica in gone {
        peers.remove(&replica);
    }
}

fn shut_down(replica: &str, node: &NodeId) -> Error {
    Error::new(
        ErrorKind::ShutDown,
        format!(
            "node `{node}` stopped at replica `{replica}` before answering; send it again (another replica may serve it)"
        ),
    )
}
