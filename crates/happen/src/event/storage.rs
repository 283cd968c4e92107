//! Recycled event storage.
//!
//! An event is usually made on the producer's thread and dropped on the thread that ran its
//! handler. With the system allocator that is a cross-thread free per event: the freeing
//! thread's cache fills up, the producer's stays empty, and both pay for the allocator's
//! shared lists (callgrind: ~350 of a `tell`'s ~2,300 instructions). Instead, the last
//! [`Event`](super::Event) handle to go gives its storage back, and [`store`] takes it from
//! there for the next event.
//!
//! Storages move between threads in batches of [`BATCH`]: each thread gives back into a
//! batch of its own and hands a full batch to a shared, lock-free queue of batches; a thread
//! that needs storage takes from its own batch and, when that is empty, takes a whole batch
//! from the queue. So an event costs a push and a pop on thread-local vectors, and the shared
//! queue's atomics are paid once per batch (a shared queue of single storages cost ~90 of a
//! `tell`'s instructions). The queue holds at most [`CAPACITY`] storages, and each thread at
//! most two batches; beyond that storage is freed as before. A pooled storage keeps no
//! payload: what can be big is dropped when it is pooled.

use std::cell::RefCell;
use std::mem;
use std::sync::{Arc, OnceLock};

use crossbeam_queue::ArrayQueue;
use serde_json::Value;

use super::{Arrival, EventInner};
use crate::id::SharedStr;

/// Storages kept for reuse in the shared queue, each 272 bytes: never more than 8,192
/// (2.2 MB). A producer runs up to a queue (10,000 by default) ahead of its handler; a
/// smaller pool missed most of such a burst (1,024: 39 % hits in `tell`).
const CAPACITY: usize = 8192;

/// Storages per batch handed between threads.
const BATCH: usize = 32;

type Batch = Vec<Arc<EventInner>>;

/// Full batches, ready for reuse.
fn full() -> &'static ArrayQueue<Batch> {
    static FULL: OnceLock<ArrayQueue<Batch>> = OnceLock::new();
    FULL.get_or_init(|| ArrayQueue::new(CAPACITY / BATCH))
}

/// Emptied batches (their vectors' allocations), for the threads that fill batches.
fn spare() -> &'static ArrayQueue<Batch> {
    static SPARE: OnceLock<ArrayQueue<Batch>> = OnceLock::new();
    SPARE.get_or_init(|| ArrayQueue::new(CAPACITY / BATCH))
}

/// One thread's storages: `take` to use next, `give` filling up with recycled ones.
#[derive(Default)]
struct Local {
    take: Batch,
    give: Batch,
}

impl Local {
    fn pop(&mut self) -> Option<Arc<EventInner>> {
        if let Some(s) = self.take.pop() {
            return Some(s);
        }
        self.refill();
        self.take.pop()
    }

    #[cold]
    fn refill(&mut self) {
        // Storages given back on this thread come first (no atomics); then a full batch
        // from another thread.
        if !self.give.is_empty() {
            mem::swap(&mut self.take, &mut self.give);
        } else if let Some(batch) = full().pop() {
            let emptied = mem::replace(&mut self.take, batch);
            if emptied.capacity() != 0 {
                let _ = spare().push(emptied);
            }
        }
    }

    fn push(&mut self, storage: Arc<EventInner>) {
        if self.give.len() >= BATCH {
            self.hand_in();
        }
        self.give.push(storage);
    }

    #[cold]
    fn hand_in(&mut self) {
        let fresh = spare().pop().unwrap_or_else(|| Vec::with_capacity(BATCH));
        let batch = mem::replace(&mut self.give, fresh);
        // A full queue frees the batch's storages here, as without a pool.
        let _ = full().push(batch);
    }
}

thread_local! {
    static LOCAL: RefCell<Local> = RefCell::new(Local::default());
    /// What a dropped event's handle points to while its storage goes to the pool (safe code
    /// cannot move out of a field in `Drop`). One per thread, so its count is never shared.
    static HOLE: Arc<EventInner> = Arc::new(EventInner::hole());
}

/// A storage from this thread's pool, if it has one (none while the thread ends).
fn pooled() -> Option<Arc<EventInner>> {
    LOCAL
        .try_with(|l| l.try_borrow_mut().ok()?.pop())
        .ok()
        .flatten()
}

/// A new, unstamped event's storage: a pooled one (already reset to unstamped contents when
/// it was pooled, see [`recycle`]) gets only its type and payload written; building the whole
/// 272-byte contents and copying them over a pooled storage was ~150 instructions of a `tell`.
pub(super) fn store_unstamped(event_type: SharedStr, payload: Value) -> Arc<EventInner> {
    if let Some(mut pooled) = pooled()
        && let Some(slot) = Arc::get_mut(&mut pooled)
    {
        slot.event_type = event_type;
        crate::json::drop_value(mem::replace(&mut slot.payload, payload));
        return pooled;
    }
    Arc::new(EventInner::unstamped(event_type, payload))
}

/// `inner` in shared storage, reusing a pooled one when there is one.
pub(super) fn store(inner: EventInner) -> Arc<EventInner> {
    if let Some(mut pooled) = pooled()
        && let Some(slot) = Arc::get_mut(&mut pooled)
    {
        *slot = inner;
        return pooled;
    }
    Arc::new(inner)
}

/// Called when an event handle is dropped: if it is the last handle to its storage, the
/// storage goes to the pool (the handle is left pointing at this thread's hole).
pub(super) fn recycle(handle: &mut Arc<EventInner>) {
    let Some(inner) = Arc::get_mut(handle) else {
        return; // another handle remains: the usual decrement follows
    };
    // Back to unstamped contents (what `store_unstamped` expects), keeping the type: it is
    // replaced at reuse (usually by the same shared string).
    crate::json::drop_value(mem::take(&mut inner.payload));
    // Dropped only when there is something to drop: most events have neither.
    if inner.ext.is_some() {
        inner.ext = None;
    }
    inner.priority = 0;
    if inner.explicit_correlation.is_some() {
        inner.explicit_correlation = None;
    }
    inner.arrival = Arrival::Local;
    inner.causal.reset();
    let Ok(hole) = HOLE.try_with(Arc::clone) else {
        return; // the thread is ending: freed as usual
    };
    let storage = mem::replace(handle, hole);
    // While the thread ends (or in a re-entrant drop) the storage is freed as usual.
    let _ = LOCAL.try_with(|l| {
        if let Ok(mut l) = l.try_borrow_mut() {
            l.push(storage);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Event;
    use serde_json::json;

    #[test]
    fn a_recycled_storage_carries_nothing_of_its_last_event() {
        for i in 0..(CAPACITY * 3) {
            let e = Event::new("a", json!({ "big": "x".repeat(100), "i": i }))
                .with_priority(3)
                .with_correlation_id(crate::id::CorrelationId::parse("txn-mine"))
                .with_source_id("user-1")
                .stamp(&crate::id::NodeId::from("n"), None)
                .unwrap();
            let id = e.id().clone();
            drop(e);
            let fresh = Event::new("b", json!(i));
            assert_eq!(fresh.event_type(), "b");
            assert_eq!(fresh.payload(), &json!(i));
            assert_ne!(fresh.id(), &id, "a new event starts unassigned");
            assert!(fresh.causation_id().is_none());
            assert!(fresh.path().is_empty());
            assert!(fresh.sender().is_empty());
            assert!(fresh.correlation_id().to_string().is_empty());
            assert_eq!(fresh.causal().timestamp(), 0);
            assert_eq!(fresh.priority(), 0);
            assert!(fresh.origin().source_id().is_none());
        }
    }

    #[test]
    fn a_shared_storage_is_not_recycled_while_a_clone_lives() {
        let e = Event::new("a", json!([1, 2, 3]));
        let kept = e.clone();
        drop(e);
        for _ in 0..CAPACITY {
            let _ = Event::new("b", json!(null));
        }
        assert_eq!(kept.payload(), &json!([1, 2, 3]));
        assert_eq!(kept.event_type(), "a");
    }
}
