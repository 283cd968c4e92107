//! The ready queue: admitted events that hold a slot and wait for one of the node's drivers.

use std::sync::atomic::{AtomicBool, Ordering};

use crossbeam_queue::{ArrayQueue, SegQueue};

use super::queue::Admitted;

/// Up to this `max_concurrent`, the ready queue is a preallocated ring (no allocation per
/// block of events); above it, an unbounded segmented queue.
const RING_UP_TO: usize = 4096;

/// Admitted events holding a slot, waiting for a driver. Only slot holders enter it, so it
/// never holds more than `max_concurrent` events: up to [`RING_UP_TO`] that is a preallocated
/// ring; above it (or, never expected, when the ring is full) the segmented queue.
pub(super) struct Ready {
    ring: Option<ArrayQueue<Admitted>>,
    segments: SegQueue<Admitted>,
    /// Set (for good) before the first event goes into `segments` while a ring exists, so
    /// the usual pop and emptiness check skip the segmented queue (a failed pop there costs
    /// more than the ring's).
    spilled: AtomicBool,
}

impl Ready {
    pub(super) fn new(max_running: u64) -> Ready {
        let ring = match usize::try_from(max_running) {
            Ok(n) if n <= RING_UP_TO => Some(ArrayQueue::new(n.max(1))),
            _ => None,
        };
        Ready {
            ring,
            segments: SegQueue::new(),
            spilled: AtomicBool::new(false),
        }
    }

    #[inline]
    pub(super) fn push(&self, p: Admitted) {
        let p = match &self.ring {
            Some(ring) => match ring.push(p) {
                Ok(()) => return,
                Err(p) => {
                    // Before the push: whoever sees the event in `segments` sees the flag.
                    self.spilled.store(true, Ordering::SeqCst);
                    p
                }
            },
            None => p,
        };
        self.segments.push(p);
    }

    /// Are there (or may there soon be) events in `segments`?
    fn segmented(&self) -> bool {
        self.ring.is_none() || self.spilled.load(Ordering::SeqCst)
    }

    #[inline]
    pub(super) fn pop(&self) -> Option<Admitted> {
        match &self.ring {
            Some(ring) => ring.pop().or_else(|| {
                if self.segmented() {
                    self.segments.pop()
                } else {
                    None
                }
            }),
            None => self.segments.pop(),
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.ring.as_ref().is_none_or(ArrayQueue::is_empty)
            && (!self.segmented() || self.segments.is_empty())
    }
}
