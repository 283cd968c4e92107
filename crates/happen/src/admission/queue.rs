//! What waits at a node: admitted events, the queue strategies and the sequential lanes.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Instant;

use crate::config::QueueStrategy;
use crate::event::Event;
use crate::id::SharedStr;
use crate::stream::{BroadcastRole, SlotSender};

/// The key of a sequential lane.
pub(crate) type LaneKey = SharedStr;

/// An admitted event that has not started yet.
pub(crate) struct Admitted {
    pub(crate) event: Event,
    pub(crate) reply: Option<SlotSender>,
    /// Set when the event had to wait (sampled; see `Engine::admit`).
    pub(crate) enqueued: Option<Instant>,
    /// The event's part in a broadcast stream, if it carries one.
    pub(crate) broadcast: Option<BroadcastRole>,
    /// The event's sequential lane, when the node has lanes.
    pub(crate) lane: Option<LaneKey>,
    /// Queue places and counts it takes: 1, or a batch's events (`BatchAdmission::Events`).
    pub(crate) weight: u32,
}

/// The events waiting for a slot, in the node's queue strategy.
pub(crate) enum Queue {
    Fifo(VecDeque<Admitted>),
    /// Keyed by (priority descending, arrival ascending).
    Priority(BTreeMap<(Reverse<i32>, u64), Admitted>),
}

impl Queue {
    pub(crate) fn new(strategy: QueueStrategy) -> Queue {
        match strategy {
            QueueStrategy::Fifo => Queue::Fifo(VecDeque::new()),
            QueueStrategy::Priority => Queue::Priority(BTreeMap::new()),
        }
    }

    pub(crate) fn push(&mut self, seq: u64, p: Admitted) {
        match self {
            Queue::Fifo(q) => q.push_back(p),
            Queue::Priority(q) => {
                q.insert((Reverse(p.event.priority()), seq), p);
            }
        }
    }

    pub(crate) fn pop(&mut self) -> Option<Admitted> {
        match self {
            Queue::Fifo(q) => q.pop_front(),
            Queue::Priority(q) => q.pop_first().map(|(_, p)| p),
        }
    }

    /// For a full priority queue: removes and returns the newest event of the lowest queued
    /// priority if `priority` is higher than it (the displaced event's sender is told).
    pub(crate) fn displace_for(&mut self, priority: i32) -> Option<Admitted> {
        match self {
            Queue::Fifo(_) => None,
            Queue::Priority(q) => {
                let entry = q.last_entry()?;
                (priority > entry.key().0.0).then(|| entry.remove())
            }
        }
    }
}

/// Sequential lanes: keys whose flow is running, with the events parked behind it.
#[derive(Default)]
pub(crate) struct Lanes {
    busy: HashMap<LaneKey, VecDeque<Admitted>>,
    /// Events parked behind a busy key.
    pub(crate) parked: usize,
}

impl Lanes {
    /// Is `key`'s lane running an event?
    pub(crate) fn is_busy(&self, key: Option<&LaneKey>) -> bool {
        key.is_some_and(|k| self.busy.contains_key(k))
    }

    /// Claims `p`'s lane: `Ok(p)` when the lane was free (it is now busy), `Err(())` when `p`
    /// was parked behind the running event of its lane.
    pub(crate) fn claim(&mut self, p: Admitted) -> Result<Admitted, ()> {
        let Some(key) = &p.lane else { return Ok(p) };
        match self.busy.get_mut(key) {
            Some(waiting) => {
                waiting.push_back(p);
                self.parked += 1;
                Err(())
            }
            None => {
                self.busy.insert(key.clone(), VecDeque::new());
                Ok(p)
            }
        }
    }

    /// The flow of lane `key` finished: the next parked event of that lane, if any (the lane
    /// stays busy with it); otherwise the lane is freed.
    pub(crate) fn next(&mut self, key: &LaneKey) -> Option<Admitted> {
        let next = self.busy.get_mut(key).and_then(VecDeque::pop_front);
        match next {
            Some(p) => {
                self.parked -= 1;
                Some(p)
            }
            None => {
                self.busy.remove(key);
                None
            }
        }
    }

    /// Every parked event (for cancellation).
    pub(crate) fn drain(&mut self) -> Vec<Admitted> {
        self.parked = 0;
        self.busy.drain().flat_map(|(_, q)| q).collect()
    }
}
