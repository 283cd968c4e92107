//! Discovery on the wire: the JSON answer of a process (see `WIRE.md`,
//! "Discovery").

use std::collections::BTreeMap;
use std::time::Duration;

use happen::transport::Inbox;
use serde::{Deserialize, Serialize};

use super::RemoteLimits;

/// One process's answer to a discovery request: the nodes it serves.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
#[non_exhaustive]
pub struct ProcessInfo {
    /// The process's replica id (as in `Happen-Replica` of its pressure reports).
    pub replica: String,
    /// Its connection name (`transport.nats.name`).
    pub name: String,
    /// The nodes it serves (a process with many nodes may answer in several messages, each
    /// with some of them; [`NatsTransport::discover`](crate::NatsTransport::discover) merges them).
    pub nodes: Vec<NodeInfo>,
    /// The process's transport counters at the time of the answer, cumulative since it
    /// connected: [`NatsStats`](crate::NatsStats) by their camelCase names (`sent`,
    /// `broadcasts`, `replies`, `disconnects`, `failedReplicaGone`, …; read them back with
    /// `serde_json::from_value`). Empty in answers of processes that predate the field.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub transport: BTreeMap<String, u64>,
}

/// A node as one process serves it: its limits and its counters at the time of the answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
#[non_exhaustive]
pub struct NodeInfo {
    /// The node id.
    pub id: String,
    /// Flows the node runs at once.
    pub max_concurrent: usize,
    /// Events that may wait beyond `max_concurrent`.
    pub queue_limit: usize,
    /// Waiting events at which the node turns "under pressure".
    pub high_water: usize,
    /// `fifo` or `priority`.
    pub queue_strategy: String,
    /// Flows holding a slot now.
    pub active: usize,
    /// Events waiting now.
    pub queued: usize,
    /// The most events that ever waited at once.
    pub peak_queued: usize,
    /// Is the node under backpressure now?
    pub under_pressure: bool,
    /// Events admitted so far.
    pub accepted: u64,
    /// Events refused at admission (`queue_full`).
    pub rejected: u64,
    /// Flows that finished with a value.
    pub completed: u64,
    /// Flows that finished with an error.
    pub failed: u64,
    /// Failures nobody awaited (logged and counted at the node).
    pub unobserved_failures: u64,
    /// Queued events pushed out of a full priority queue by a higher-priority one (their
    /// senders got `queue_full`). Zero in answers of processes that predate the field.
    pub displaced: u64,
    /// Streaming flows stopped because their consumer went away. Zero in older answers.
    pub cancelled: u64,
    /// Faults of happen's engine itself at the node (never user code). Zero in older answers.
    pub engine_faults: u64,
    /// Median queue wait, in microseconds.
    pub queue_wait_p50_us: u64,
    /// 99th percentile of the queue wait, in microseconds.
    pub queue_wait_p99_us: u64,
    /// The queue waits so far as a log2 histogram in microseconds (`[0]`: under 1 µs, `[i]`:
    /// from 2^(i-1) to under 2^i µs), cumulative, trailing empty buckets left out. Empty in
    /// answers of processes that predate the field.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub queue_wait_buckets: Vec<u64>,
    /// The handler times so far in the same buckets, for a node that times them
    /// (`handler_timing`); empty otherwise and in older answers.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub handler_time_buckets: Vec<u64>,
}

impl NodeInfo {
    /// The description of a local node.
    pub(crate) fn of(inbox: &Inbox) -> NodeInfo {
        let limits = inbox.limits();
        let stats = inbox.stats();
        let pressure = inbox.pressure();
        let micros = |d: Duration| d.as_micros().min(u64::MAX as u128) as u64;
        NodeInfo {
            id: inbox.id().to_string(),
            max_concurrent: limits.max_concurrent,
            queue_limit: limits.queue_limit,
            high_water: RemoteLimits::of(limits).high_water,
            queue_strategy: match limits.queue_strategy {
                happen::QueueStrategy::Fifo => "fifo",
                happen::QueueStrategy::Priority => "priority",
            }
            .to_owned(),
            active: stats.active,
            queued: stats.queued,
            peak_queued: stats.peak_queued,
            under_pressure: pressure.under_pressure,
            accepted: stats.accepted,
            rejected: stats.rejected,
            completed: stats.completed,
            failed: stats.failed,
            unobserved_failures: stats.unobserved_failures,
            displaced: stats.displaced,
            cancelled: stats.cancelled,
            engine_faults: stats.engine_faults,
            queue_wait_p50_us: micros(stats.queue_wait_p50),
            queue_wait_p99_us: micros(stats.queue_wait_p99),
            queue_wait_buckets: stats.queue_wait_buckets,
            handler_time_buckets: stats.handler_time_buckets,
        }
    }
}
