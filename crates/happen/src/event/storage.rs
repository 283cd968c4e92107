//! Recycled event storage.
//!
//! An event is usually made on the producer's thread and dropped on the thread that ran its
//! handler. With the system allocator that is a cross-thread free per event: the freeing
//! thread's cache fills up, the producer's stays empty, and both pay for the allocator's
//! shared lists (callgrind: ~350 of a `tell`'s ~2,300 instructions). Instead, the last
//! [`Event`](super::Event) handle to go puts its storage in a bounded, lock-free pool, and
//! [`store`] takes it from there for the next event. The pool holds at most [`CAPACITY`]
//! storages; beyond it storage is freed as before. A pooled storage keeps no payload: what
//! can be big is dropped when it is pooled.

use std::mem;
use std::sync::{Arc, OnceLock};

use crossbeam_queue::ArrayQueue;
use serde_json::Value;

use super::{Arrival, EventInner};
use crate::id::SharedStr;

/// Storages kept for reuse, each 272 bytes: the pool holds at most what was once in flight,
/// and never more than 8,192 (2.2 MB). A producer runs up to a queue (10,000 by default) ahead
/// of its handler; a smaller pool missed most of such a burst (1,024: 39 % hits in `tell`).
const CAPACITY: usize = 8192;

fn pool() -> &'static ArrayQueue<Arc<EventInner>> {
    static POOL: OnceLock<ArrayQueue<Arc<EventInner>>> = OnceLock::new();
    POOL.get_or_init(|| ArrayQueue::new(CAPACITY))
}

thread_local! {
    /// What a dropped event's handle points to while its storage goes to the pool (safe code
    /// cannot move out of a field in `Drop`). One per thread, so its count is never shared.
    static HOLE: Arc<EventInner> = Arc::new(EventInner::hole());
}

/// A new, unstamped event's storage: a pooled one (already reset to unstamped contents when
/// it was pooled, see [`recycle`]) gets only its type and payload written; building the whole
/// 272-byte contents and copying them over a pooled storage was ~150 instructions of a `tell`.
pub(super) fn store_unstamped(event_type: SharedStr, payload: Value) -> Arc<EventInner> {
    if let Some(mut pooled) = pool().pop()
        && let Some(slot) = Arc::get_mut(&mut pooled)
    {
        slot.event_type = event_type;
        slot.payload = payload;
        return pooled;
    }
    Arc::new(EventInner::unstamped(event_type, payload))
}

/// `inner` in shared storage, reusing a pooled one when there is one.
pub(super) fn store(inner: EventInner) -> Arc<EventInner> {
    match pool().pop() {
        Some(mut pooled) => match Arc::get_mut(&mut pooled) {
            Some(slot) => {
                *slot = inner;
                pooled
            }
            None => Arc::new(inner),
        },
        None => Arc::new(inner),
    }
}

/// Called when an event handle is dropped: if it is the last handle to its storage, the
/// storage goes to the pool (the handle is left pointing at this thread's hole).
pub(super) fn recycle(handle: &mut Arc<EventInner>) {
    let Some(inner) = Arc::get_mut(handle) else {
        return; // another handle remains: the usual decrement follows
    };
    // Back to unstamped contents (what `store_unstamped` expects), keeping the type: it is
    // replaced at reuse (usually by the same shared string).
    inner.payload = Value::Null;
    inner.ext = None;
    inner.priority = 0;
    inner.explicit_correlation = None;
    inner.arrival = Arrival::Local;
    inner.causal.reset();
    let Ok(hole) = HOLE.try_with(Arc::clone) else {
        return; // the thread is ending: freed as usual
    };
    let storage = mem::replace(handle, hole);
    // A full pool frees the storage here, as without a pool.
    let _ = pool().push(storage);
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
