//! The per-node engine: admission control (limits, queue strategies, lanes, pressure) and the
//! execution of admitted events.
//!
//! - [`admission`](Engine::admit): one atomic word holds the node's running and queued counts.
//!   While a slot is free and nothing waits, a sender takes a slot with one compare-and-swap
//!   and no lock. Otherwise it takes the node's short admission lock to queue the event (or
//!   park it behind its sequential lane, or reject it with `QueueFull`).
//! - Events holding a slot wait in the [`ready`] queue for the node's drivers (`node::run`).
//! - A FIFO node without sequential lanes or weighed batches (the default) has one *line*
//!   instead of the queue and the ready queue: a sender counts its event in with one
//!   compare-and-swap and pushes it; a driver takes a slot for the oldest one with another and
//!   pops it. Events that could start at once are then reported as active, as ready ones are.
//!   Limits and pressure are decided on the word alone; the line's lock only guards the push
//!   and the pop.
//! - [`queue`], [`pressure`], [`stats`]: what waits, the backpressure hysteresis, the counters.
//!
//! The engine knows nothing of nodes, flows or transports: calls that change what runs return
//! [`Effects`] (start a driver, wake drivers, announce a pressure change) for the node to apply.

mod pressure;
mod queue;
mod ready;
mod stats;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use crossbeam_utils::{Backoff, CachePadded};
use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::{Notify, watch};

use crate::config::{BatchAdmission, Limits};
use crate::error::{Error, Result};
use crate::id::NodeId;
use crate::stream::{Response, SlotSender};

pub use pressure::{PRESSURE_EVENT, Pressure};
pub(crate) use queue::{Admitted, LaneKey};
pub use stats::NodeStats;
pub(crate) use stats::Unobserved;

use pressure::Levels;
use queue::{Lanes, Queue};
use ready::Ready;
use stats::{AtomicHistogram, Metrics, WaitHistogram};

// The admission word: running flows in the low 32 bits, queued events in bits 32..63, and
// the closed flag in bit 63.
const RUN: u64 = 1;
const QUEUED: u64 = 1 << 32;
const CLOSED: u64 = 1 << 63;
/// Limits are capped at this (far beyond what memory allows anyway).
const MAX_COUNT: u64 = (1 << 31) - 1;

fn running(w: u64) -> u64 {
    w & 0xFFFF_FFFF
}

fn queued(w: u64) -> u64 {
    (w >> 32) & 0x7FFF_FFFF
}

/// What senders write: the admission word and the admission counters, on one cache line.
struct Hot {
    word: AtomicU64,
    accepted: AtomicU64,
    rejected: AtomicU64,
    displaced: AtomicU64,
}

/// What finishing flows write, on a cache line of its own (senders never touch it).
struct Done {
    completed: AtomicU64,
    failed: AtomicU64,
    cancelled: AtomicU64,
    faults: AtomicU64,
}

/// State behind the admission lock.
struct Slow {
    queue: Queue,
    lanes: Lanes,
    /// Arrival counter (orders equal priorities).
    seq: u64,
    under_pressure: bool,
    /// Counts pressure transitions (orders the `node.pressure` events).
    pressure_seq: u64,
    /// Transitions not yet announced (taken by the node after an `Effects::announce`).
    announce: Vec<(u64, Pressure)>,
    waits: WaitHistogram,
    /// Set by a cancelling close: nothing starts any more.
    aborted: bool,
}

/// What a change of the admission state asks of the node (see [`Engine`]): a few bits, so the
/// hot admission path returns it in a register.
#[must_use = "the node applies these: a started event needs a driver"]
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Effects(u8);

impl Effects {
    const START: u8 = 1;
    const WAKE_ALL: u8 = 2;
    const ANNOUNCE: u8 = 4;

    fn new(start: bool, wake_all: bool, announce: bool) -> Effects {
        Effects(
            (u8::from(start) * Effects::START)
                | (u8::from(wake_all) * Effects::WAKE_ALL)
                | (u8::from(announce) * Effects::ANNOUNCE),
        )
    }

    /// An event now holds a slot in the ready queue: make sure a driver will take it.
    #[inline]
    pub(crate) fn start(self) -> bool {
        self.0 & Effects::START != 0
    }

    /// The node closed (and may have drained): wake parked drivers so they notice.
    #[inline]
    pub(crate) fn wake_all(self) -> bool {
        self.0 & Effects::WAKE_ALL != 0
    }

    /// The pressure state changed: announce it ([`Engine::take_announcements`]).
    #[inline]
    pub(crate) fn announce(self) -> bool {
        self.0 & Effects::ANNOUNCE != 0
    }

    fn merge(&mut self, other: Effects) {
        self.0 |= other.0;
    }
}

/// Admission state of one node, and its ready queue.
pub(crate) struct Engine {
    hot: CachePadded<Hot>,
    done: CachePadded<Done>,
    slow: Mutex<Slow>,
    /// Events holding a slot, waiting for a driver (not used with a `line`).
    ready: Ready,
    /// The direct FIFO line (see the module docs): every admitted event that has not
    /// started, in order; `None` for a node with lanes, a priority queue or weighed batches.
    line: Option<Line>,
    /// The pressure state as last published (read without the lock to see whether a change
    /// may be due; decided under it).
    under_pressure: AtomicBool,
    /// The most events that ever waited at once.
    peak_queued: AtomicUsize,
    /// Queue waits recorded so far (read without the lock to decide whether to sample).
    waits_recorded: AtomicU64,
    /// Set by a cancelling close: events still found in `ready` are answered `ShutDown`
    /// instead of started, and waiting flows are not moved to a task any more.
    cancelled: AtomicBool,
    id: NodeId,
    unobserved: Arc<Unobserved>,
    limits: Limits,
    max_running: u64,
    queue_limit: u64,
    /// The node has sequential lanes: every admission takes the lock.
    lanes: bool,
    /// A batch weighs its events (`BatchAdmission::Events`).
    weighs_batches: bool,
    levels: Levels,
    pressure: watch::Sender<Pressure>,
    metrics: Metrics,
    /// Handler times (`Limits::handler_timing`; `None`: off, nothing is timed).
    handler_times: Option<Box<AtomicHistogram>>,
    /// Signalled when a closed node has nothing left running or waiting.
    drained: Notify,
}

impl Engine {
    pub(crate) fn new(node: &NodeId, limits: Limits, lanes: bool) -> Engine {
        let max_running = (limits.max_concurrent as u64).min(MAX_COUNT);
        let weighs_batches = limits.batch_admission == BatchAdmission::Events;
        let direct = !lanes
            && !weighs_batches
            && limits.queue_strategy == crate::config::QueueStrategy::Fifo;
        Engine {
            hot: CachePadded::new(Hot {
                word: AtomicU64::new(0),
                accepted: AtomicU64::new(0),
                rejected: AtomicU64::new(0),
                displaced: AtomicU64::new(0),
            }),
            done: CachePadded::new(Done {
                completed: AtomicU64::new(0),
                failed: AtomicU64::new(0),
                cancelled: AtomicU64::new(0),
                faults: AtomicU64::new(0),
            }),
            slow: Mutex::new(Slow {
                queue: Queue::new(limits.queue_strategy),
                lanes: Lanes::default(),
                seq: 0,
                under_pressure: false,
                pressure_seq: 0,
                announce: Vec::new(),
                waits: WaitHistogram::default(),
                aborted: false,
            }),
            ready: Ready::new(if direct { 1 } else { max_running }),
            line: direct.then(Line::default),
            under_pressure: AtomicBool::new(false),
            peak_queued: AtomicUsize::new(0),
            waits_recorded: AtomicU64::new(0),
            cancelled: AtomicBool::new(false),
            id: node.clone(),
            unobserved: Arc::new(Unobserved::new(node.clone())),
            max_running,
            queue_limit: (limits.queue_limit as u64).min(MAX_COUNT),
            lanes,
            weighs_batches,
            levels: Levels::new(limits.backpressure_threshold, limits.queue_limit),
            pressure: watch::Sender::new(Pressure::new(false, 0, limits.queue_limit)),
            metrics: Metrics::new(node),
            handler_times: limits
                .handler_timing
                .then(|| Box::new(AtomicHistogram::default())),
            limits,
            drained: Notify::new(),
        }
    }

    /// The node's counter of failures nobody observed (shared with failed replies).
    pub(crate) fn unobserved(&self) -> &Arc<Unobserved> {
        &self.unobserved
    }

    pub(crate) fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Does a batch weigh its events here (see `Admitted::weight`)?
    #[inline]
    pub(crate) fn weighs_batches(&self) -> bool {
        self.weighs_batches
    }

    // ---- admission -----------------------------------------------------------------------

    /// Admits an event: starts it, queues it, or rejects it with `QueueFull` (a displaced
    /// event's sender is answered here). The event's lane (for a node with sequential lanes)
    /// is computed by the caller.
    ///
    /// # Errors
    /// `QueueFull` or `ShutDown`.
    #[inline]
    pub(crate) fn admit(&self, p: Admitted) -> Result<Effects> {
        if let Some(line) = &self.line {
            return self.admit_direct(line, p);
        }
        if !self.lanes {
            // The fast path: a free slot and nobody waiting — one CAS, no lock.
            let word = &self.hot.word;
            let mut w = word.load(Ordering::Acquire);
            while w & CLOSED == 0 && queued(w) == 0 && running(w) < self.max_running {
                match word.compare_exchange_weak(w, w + RUN, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => {
                        let weight = u64::from(p.weight);
                        self.hot.accepted.fetch_add(weight, Ordering::Relaxed);
                        self.metrics.accepted.increment(weight);
                        self.metrics.active.set((running(w) + 1) as f64);
                        self.ready.push(p);
                        return Ok(Effects(Effects::START));
                    }
                    Err(now) => w = now,
                }
            }
        }
        self.admit_slow(p)
    }

    /// `admit` for a node with a direct line: one compare-and-swap counts the event in (or
    /// refuses it), then it is pushed. Nothing between the two can fail, and the push waits
    /// only for the line's short lock: a driver (or a cancelling close) that took the event
    /// by its count waits for it at most that long (see `pop_counted`).
    #[inline]
    fn admit_direct(&self, line: &Line, mut p: Admitted) -> Result<Effects> {
        debug_assert!(p.weight == 1 && p.lane.is_none());
        let word = &self.hot.word;
        let mut w = word.load(Ordering::Acquire);
        if let Some(tx) = &p.reply
            && queued(w) >= self.max_running.saturating_sub(running(w))
        {
            tx.nudge(&self.id); // it will wait: the answer will not be immediate
        }
        let free = loop {
            if w & CLOSED != 0 {
                return Err(Error::shut_down(&self.id));
            }
            let free = self.max_running.saturating_sub(running(w));
            if queued(w) >= self.queue_limit + free {
                self.hot.rejected.fetch_add(1, Ordering::Relaxed);
                self.metrics.rejected.increment(1);
                return Err(Error::queue_full(
                    &self.id,
                    self.limits.queue_limit,
                    p.event.id(),
                ));
            }
            match word.compare_exchange_weak(w, w + QUEUED, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => break free,
                Err(now) => w = now,
            }
        };
        let waits = queued(w) >= free;
        let n = self.hot.accepted.fetch_add(1, Ordering::Relaxed);
        // Queue waits are sampled as in `admit_slow`.
        if waits
            && (n.is_multiple_of(WAIT_SAMPLE_EVERY)
                || self.waits_recorded.load(Ordering::Relaxed) < WAITS_ALL_FIRST)
        {
            p.enqueued = Some(Instant::now());
        }
        line.push(p);
        self.metrics.accepted.increment(1);
        let depth = (queued(w) + 1).saturating_sub(free) as usize;
        self.metrics.queued.set(depth as f64);
        if depth > self.peak_queued.load(Ordering::Relaxed) {
            self.peak_queued.fetch_max(depth, Ordering::Relaxed);
        }
        let announce = self.pressure_may_change(depth) && self.recheck_pressure();
        Ok(Effects::new(!waits, false, announce))
    }

    /// With a direct line: takes a slot for the oldest waiting event and returns it, or `None`
    /// when nothing waits or every slot is taken (a finishing flow then asks for a driver).
    fn start_next(&self, line: &Line) -> Option<Admitted> {
        let word = &self.hot.word;
        let mut w = word.load(Ordering::Acquire);
        loop {
            if queued(w) == 0 || running(w) >= self.max_running {
                return None;
            }
            // A slot for a waiting event: how many wait beyond the free slots (the pressure
            // depth) does not change.
            match word.compare_exchange_weak(
                w,
                w - QUEUED + RUN,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(now) => w = now,
            }
        }
        self.metrics.active.set((running(w) + 1) as f64);
        Some(self.pop_started(line))
    }

    /// Pops the event a slot was just taken (or handed over) for.
    #[inline]
    fn pop_started(&self, line: &Line) -> Admitted {
        let p = pop_counted(line);
        if p.enqueued.is_some() {
            let mut slow = self.slow.lock();
            self.record_wait(&mut slow, &p);
        }
        p
    }

    /// With a direct line: a flow finishing in a driver gives its slot straight to the oldest
    /// waiting event, if one waits — one compare-and-swap (the waiting count drops, the
    /// running count stays) instead of a release and a start. `None` if nothing waits (the
    /// flow then releases its slot as usual); otherwise the driver must take that event next
    /// with [`take_handed_over`](Self::take_handed_over).
    #[inline]
    pub(crate) fn hand_over(&self) -> Option<Effects> {
        self.line.as_ref()?;
        let word = &self.hot.word;
        let mut w = word.load(Ordering::Acquire);
        loop {
            if queued(w) == 0 {
                return None;
            }
            match word.compare_exchange_weak(w, w - QUEUED, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => break,
                Err(now) => w = now,
            }
        }
        // One fewer waits beyond the free slots: the pressure may drop.
        let free = self.max_running.saturating_sub(running(w));
        let depth = (queued(w) - 1).saturating_sub(free) as usize;
        self.metrics.queued.set(depth as f64);
        let announce = self.pressure_may_change(depth) && self.recheck_pressure();
        Some(Effects::new(false, false, announce))
    }

    /// The event a slot was handed over to (see [`hand_over`](Self::hand_over)).
    pub(crate) fn take_handed_over(&self) -> Option<Admitted> {
        self.line.as_ref().map(|line| self.pop_started(line))
    }

    /// Could `depth` waiting events change the pressure state? (Read without the lock;
    /// [`recheck_pressure`](Self::recheck_pressure) decides.)
    #[inline(always)]
    fn pressure_may_change(&self, depth: usize) -> bool {
        let under = self.under_pressure.load(Ordering::Relaxed);
        self.levels.next(under, depth) != under
    }

    /// Recomputes the pressure state under the lock; `true` if it changed.
    #[cold]
    fn recheck_pressure(&self) -> bool {
        let mut slow = self.slow.lock();
        self.check_pressure(&mut slow)
    }

    /// Counts an event refused before admission (its lane key function panicked).
    pub(crate) fn count_rejected(&self) {
        self.hot.rejected.fetch_add(1, Ordering::Relaxed);
        self.metrics.rejected.increment(1);
    }

    fn admit_slow(&self, p: Admitted) -> Result<Effects> {
        enum Outcome {
            Started,
            Parked,
            Queued(Admitted),
        }
        let word = &self.hot.word;
        let weight = u64::from(p.weight);
        let mut displaced = None;
        let (admitted, change) = {
            let mut slow = self.slow.lock();
            let mut w = word.load(Ordering::Acquire);
            let admitted = loop {
                if w & CLOSED != 0 || slow.aborted {
                    drop(slow);
                    return Err(Error::shut_down(&self.id));
                }
                let free = self.max_running.saturating_sub(running(w));
                let waiting = queued(w) + slow.lanes.parked as u64;
                if queued(w) == 0 && free > 0 {
                    if self.lanes {
                        // Word changes of a node with lanes all happen under this lock.
                        if !slow.lanes.is_busy(p.lane.as_ref()) {
                            if let Ok(started) = slow.lanes.claim(p) {
                                word.fetch_add(RUN, Ordering::AcqRel);
                                self.ready.push(started);
                            }
                            break Outcome::Started;
                        }
                        if waiting + weight <= self.queue_limit + free {
                            if let Some(tx) = &p.reply {
                                tx.nudge(&self.id); // parked: the answer will not be immediate
                            }
                            let _parked = slow.lanes.claim(p);
                            break Outcome::Parked;
                        }
                    } else {
                        match word.compare_exchange_weak(
                            w,
                            w + RUN,
                            Ordering::AcqRel,
                            Ordering::Acquire,
                        ) {
                            Ok(_) => {
                                self.ready.push(p);
                                break Outcome::Started;
                            }
                            Err(now) => {
                                w = now;
                                continue;
                            }
                        }
                    }
                } else if waiting + weight <= self.queue_limit + free {
                    match word.compare_exchange_weak(
                        w,
                        w + QUEUED * weight,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    ) {
                        Ok(_) => break Outcome::Queued(p),
                        Err(now) => {
                            w = now;
                            continue;
                        }
                    }
                }
                // Full. A priority queue may displace its newest lowest-priority event (not
                // for a batch weighing more than one place).
                let victim = if weight == 1 {
                    slow.queue.displace_for(p.event.priority())
                } else {
                    None
                };
                match victim {
                    Some(d) => {
                        let freed = u64::from(d.weight);
                        if freed > 1 {
                            // the newcomer takes one of the victim's places
                            word.fetch_sub(QUEUED * (freed - 1), Ordering::AcqRel);
                        }
                        self.hot.displaced.fetch_add(freed, Ordering::Relaxed);
                        displaced = Some(d);
                        break Outcome::Queued(p); // takes the displaced event's place
                    }
                    None => {
                        self.hot.rejected.fetch_add(weight, Ordering::Relaxed);
                        self.metrics.rejected.increment(weight);
                        drop(slow);
                        return Err(Error::queue_full(
                            &self.id,
                            self.limits.queue_limit,
                            p.event.id(),
                        ));
                    }
                }
            };
            let admitted = match admitted {
                Outcome::Queued(mut p) => {
                    if let Some(tx) = &p.reply {
                        tx.nudge(&self.id); // queued: the answer will not be immediate
                    }
                    slow.seq += 1;
                    let seq = slow.seq;
                    // Queue waits are sampled once the histogram has a base.
                    if slow.waits.count < WAITS_ALL_FIRST || seq.is_multiple_of(WAIT_SAMPLE_EVERY) {
                        p.enqueued = Some(Instant::now());
                    }
                    slow.queue.push(seq, p);
                    None
                }
                Outcome::Started => Some(()),
                Outcome::Parked => None,
            };
            (admitted, self.check_pressure(&mut slow))
        };
        self.hot.accepted.fetch_add(weight, Ordering::Relaxed);
        self.metrics.accepted.increment(weight);
        if let Some(d) = displaced {
            let err = Error::displaced(&self.id, self.limits.queue_limit, d.event.id());
            self.answer(d.reply, Err(err));
        }
        Ok(Effects::new(admitted.is_some(), false, change))
    }
}

impl Engine {
    // ---- finishing -----------------------------------------------------------------------

    /// Are this node's flows timed (`Limits::handler_timing`)?
    #[inline]
    pub(crate) fn times_handlers(&self) -> bool {
        self.handler_times.is_some()
    }

    /// Counts a flow's handler time (when its node times them).
    pub(crate) fn record_handler_time(&self, d: std::time::Duration) {
        if let Some(h) = &self.handler_times {
            h.record(d);
        }
    }

    /// Counts a flow its stream's consumer cancelled (`weight`: see `Admitted::weight`).
    pub(crate) fn count_cancelled(&self, weight: u32) {
        self.done
            .cancelled
            .fetch_add(u64::from(weight), Ordering::Relaxed);
    }

    /// Counts a finished flow (before it answers, so a sender that got its reply sees it).
    pub(crate) fn count_finished(&self, failed: bool, weight: u32) {
        let weight = u64::from(weight);
        if failed {
            self.done.failed.fetch_add(weight, Ordering::Relaxed);
            self.metrics.failed.increment(weight);
        } else {
            self.done.completed.fetch_add(weight, Ordering::Relaxed);
            self.metrics.completed.increment(weight);
        }
    }

    /// A flow gave its slot back: the next waiting event takes the slot over, or the slot is
    /// freed.
    pub(crate) fn release(&self, lane: Option<LaneKey>) -> Effects {
        if self.lanes {
            return self.release_lane(lane);
        }
        let word = &self.hot.word;
        if self.line.is_some() {
            let w = word.fetch_sub(RUN, Ordering::AcqRel) - RUN;
            self.metrics.active.set(running(w) as f64);
            let drained = w == CLOSED;
            if drained {
                self.drained.notify_waiters();
            }
            // One more waiting event can start now, if one waited beyond the free slots.
            let free = self.max_running.saturating_sub(running(w));
            let start = queued(w) >= free;
            let announce = start && {
                let depth = (queued(w) - free) as usize;
                self.metrics.queued.set(depth as f64);
                self.pressure_may_change(depth) && self.recheck_pressure()
            };
            return Effects::new(start, drained, announce);
        }
        let mut w = word.load(Ordering::Acquire);
        loop {
            if queued(w) > 0 {
                let mut slow = self.slow.lock();
                if !slow.aborted
                    && let Some(p) = slow.queue.pop()
                {
                    self.record_wait(&mut slow, &p);
                    // Pushed before the queued count drops, under the lock: a sender that
                    // finds the queue empty and takes the fast path is then behind it (FIFO).
                    let places = QUEUED * u64::from(p.weight);
                    self.ready.push(p);
                    word.fetch_sub(places, Ordering::AcqRel);
                    let change = self.check_pressure(&mut slow);
                    drop(slow);
                    return Effects::new(true, false, change);
                }
                drop(slow);
                w = word.load(Ordering::Acquire);
                if queued(w) > 0 {
                    // Only a cancelling close leaves a queued count without a queue: it
                    // clears both under the lock, so wait for it.
                    std::hint::spin_loop();
                    continue;
                }
            }
            match word.compare_exchange_weak(w, w - RUN, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    self.metrics.active.set((running(w) - 1) as f64);
                    let drained = w & CLOSED != 0 && running(w) == 1 && queued(w) == 0;
                    if drained {
                        self.drained.notify_waiters();
                    }
                    return Effects::new(false, drained, false);
                }
                Err(now) => w = now,
            }
        }
    }

    /// `release` for a node with sequential lanes (everything under the lock).
    fn release_lane(&self, lane: Option<LaneKey>) -> Effects {
        let word = &self.hot.word;
        let mut slow = self.slow.lock();
        let mut next = None;
        if !slow.aborted {
            if let Some(key) = &lane {
                next = slow.lanes.next(key);
            }
            while next.is_none() {
                let Some(p) = slow.queue.pop() else { break };
                word.fetch_sub(QUEUED * u64::from(p.weight), Ordering::AcqRel);
                self.record_wait(&mut slow, &p);
                next = slow.lanes.claim(p).ok();
            }
        }
        let w = match next {
            Some(p) => {
                self.ready.push(p);
                word.load(Ordering::Acquire)
            }
            None => word.fetch_sub(RUN, Ordering::AcqRel) - RUN,
        };
        let change = self.check_pressure(&mut slow);
        drop(slow);
        let drained = w == CLOSED;
        if drained {
            self.drained.notify_waiters();
        }
        Effects::new(!drained, drained, change)
    }

    fn record_wait(&self, slow: &mut Slow, p: &Admitted) {
        if let Some(start) = p.enqueued {
            let w = start.elapsed();
            slow.waits.record(w);
            self.waits_recorded
                .store(slow.waits.count, Ordering::Relaxed);
            self.metrics.wait.record(w.as_secs_f64());
        }
    }

    /// Something in the engine itself (not user code) panicked while running a flow: the
    /// flow fails, the fault is logged and counted, the node keeps running.
    pub(crate) fn fault(&self, message: &str) {
        self.metrics.faults.increment(1);
        self.done.faults.fetch_add(1, Ordering::Relaxed);
        tracing::error!(
            node = %self.id,
            message,
            "internal fault in happen's engine; the flow was failed and the node keeps running (please report this)"
        );
    }

    // ---- pressure ------------------------------------------------------------------------

    fn depth(&self, slow: &Slow) -> usize {
        self.split(self.hot.word.load(Ordering::Acquire)).1 as usize + slow.lanes.parked
    }

    /// The admission word's (active, waiting) counts as reported: with a direct line, events
    /// that could take a free slot at once are active (as ready ones are without it).
    fn split(&self, w: u64) -> (u64, u64) {
        if self.line.is_some() {
            let ready = queued(w).min(self.max_running.saturating_sub(running(w)));
            (running(w) + ready, queued(w) - ready)
        } else {
            (running(w), queued(w))
        }
    }

    /// Recomputes the pressure state; `true` if it changed (the transition is queued for
    /// announcement).
    #[inline(always)]
    fn check_pressure(&self, slow: &mut Slow) -> bool {
        let depth = self.depth(slow);
        self.metrics.queued.set(depth as f64);
        self.metrics
            .active
            .set(running(self.hot.word.load(Ordering::Relaxed)) as f64);
        self.peak_queued.fetch_max(depth, Ordering::Relaxed);
        let next = self.levels.next(slow.under_pressure, depth);
        if next == slow.under_pressure {
            return false;
        }
        slow.under_pressure = next;
        self.under_pressure.store(next, Ordering::Relaxed);
        slow.pressure_seq += 1;
        let p = Pressure::new(next, depth, self.limits.queue_limit);
        // Published under the lock: transitions computed by different threads (senders and
        // finishing flows) must reach watchers in the order they happened, or a stale "under
        // pressure" could be left standing.
        self.pressure.send_replace(p);
        let seq = slow.pressure_seq;
        slow.announce.push((seq, p));
        true
    }

    /// The pressure transitions not yet announced, oldest first.
    pub(crate) fn take_announcements(&self) -> Vec<(u64, Pressure)> {
        std::mem::take(&mut self.slow.lock().announce)
    }

    pub(crate) fn pressure_now(&self) -> Pressure {
        let slow = self.slow.lock();
        Pressure::new(
            slow.under_pressure,
            self.depth(&slow),
            self.limits.queue_limit,
        )
    }

    pub(crate) fn watch_pressure(&self) -> watch::Receiver<Pressure> {
        self.pressure.subscribe()
    }

    // ---- closing -------------------------------------------------------------------------

    /// Closes admission. With `cancel`, also cancels everything waiting for a slot or a
    /// driver: their senders get `ShutDown` (flows already running are the node's to cancel).
    pub(crate) fn close(&self, cancel: bool) -> Effects {
        let mut dropped = Vec::new();
        {
            let mut slow = self.slow.lock();
            self.hot.word.fetch_or(CLOSED, Ordering::AcqRel);
            if cancel && !slow.aborted {
                slow.aborted = true;
                while let Some(p) = slow.queue.pop() {
                    dropped.push(p);
                }
                dropped.extend(slow.lanes.drain());
                let before = self
                    .hot
                    .word
                    .fetch_and(!(0x7FFF_FFFF * QUEUED), Ordering::AcqRel);
                if let Some(line) = &self.line {
                    // Every event counted in is pushed (drivers pop those they took slots for)
                    for _ in 0..queued(before) {
                        dropped.push(pop_counted(line));
                    }
                }
            }
        }
        for p in dropped {
            self.count_finished(true, p.weight);
            self.answer(p.reply, Err(Error::shut_down(&self.id)));
        }
        let mut effects = Effects::default();
        if cancel {
            // Events that hold a slot but never started. Not under the drivers' start lock:
            // the closing thread may be inside a handler's synchronous part, which runs under
            // it. A driver that took an event just before is fine: once `cancelled` is set,
            // its flow is cancelled if it waits, and answers normally if it does not.
            self.cancelled.store(true, Ordering::Release);
            while let Some(p) = self.ready.pop() {
                self.count_finished(true, p.weight);
                self.answer(p.reply, Err(Error::shut_down(&self.id)));
                effects.merge(self.release(None));
            }
        }
        if self.is_drained() {
            self.drained.notify_waiters();
        }
        effects.merge(Effects(Effects::WAKE_ALL));
        effects
    }

    /// Has a cancelling close happened?
    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }

    /// The next event to start, in admission order, holding a slot.
    #[inline]
    pub(crate) fn start_next_event(&self) -> Option<Admitted> {
        match &self.line {
            Some(line) => self.start_next(line),
            None => self.ready.pop(),
        }
    }

    /// Is nothing waiting that a driver could start now?
    #[inline]
    pub(crate) fn nothing_to_start(&self) -> bool {
        match &self.line {
            Some(_) => {
                let w = self.hot.word.load(Ordering::Acquire);
                queued(w) == 0 || running(w) >= self.max_running
            }
            None => self.ready.is_empty(),
        }
    }

    /// Closed to new events (some may still run or wait).
    pub(crate) fn is_closed(&self) -> bool {
        self.hot.word.load(Ordering::Acquire) & CLOSED != 0
    }

    /// Closed, with nothing running or waiting.
    pub(crate) fn is_drained(&self) -> bool {
        self.hot.word.load(Ordering::Acquire) == CLOSED
    }

    /// Waits until the node is closed and drained.
    pub(crate) async fn wait_drained(&self) {
        loop {
            let notified = self.drained.notified();
            if self.is_drained() {
                return;
            }
            notified.await;
        }
    }

    // ---- reading -------------------------------------------------------------------------

    pub(crate) fn stats(&self) -> NodeStats {
        let slow = self.slow.lock();
        let (active, waiting) = self.split(self.hot.word.load(Ordering::Acquire));
        NodeStats {
            active: active as usize,
            queued: waiting as usize + slow.lanes.parked,
            peak_queued: self.peak_queued.load(Ordering::Relaxed),
            accepted: self.hot.accepted.load(Ordering::Relaxed),
            rejected: self.hot.rejected.load(Ordering::Relaxed),
            displaced: self.hot.displaced.load(Ordering::Relaxed),
            completed: self.done.completed.load(Ordering::Relaxed),
            failed: self.done.failed.load(Ordering::Relaxed),
            cancelled: self.done.cancelled.load(Ordering::Relaxed),
            unobserved_failures: self.unobserved.count(),
            engine_faults: self.done.faults.load(Ordering::Relaxed),
            queue_wait_p50: slow.waits.quantile(0.5),
            queue_wait_p99: slow.waits.quantile(0.99),
            queue_wait_buckets: slow.waits.buckets(),
            handler_time_buckets: self
                .handler_times
                .as_ref()
                .map(|h| h.buckets())
                .unwrap_or_default(),
            denied: 0, // the node's security gate counts these
        }
    }
}

impl Engine {
    /// Sends an outcome to a reply path; logs and counts failures nobody will see.
    fn answer(&self, reply: Option<SlotSender>, outcome: Result<Value>) {
        let unobserved = match reply {
            Some(tx) => match tx.send(Response::Done(outcome)) {
                Ok(()) => None,
                Err(Response::Done(o)) => Some(o),
                Err(Response::Stream(_)) => None,
            },
            None => Some(outcome),
        };
        if let Some(Err(e)) = unobserved {
            self.unobserved.record(&e);
        }
    }
}

/// Every queue wait is measured until this many are, so that a quiet node's histogram has a
/// base; then 1 in [`WAIT_SAMPLE_EVERY`] queued events is. Measuring one costs two clock
/// reads and the histogram's lock (~500 instructions): sampling 1 in 8 was ~65 of a `tell`'s
/// instructions per event, 1 in 64 is ~10, and a busy node still records thousands a second.
const WAITS_ALL_FIRST: u64 = 1024;
const WAIT_SAMPLE_EVERY: u64 = 64;

/// A direct line: the events counted in and not started yet, oldest first, in two plain
/// deques under short locks (the lock-free segmented queue measured ~200 instructions per
/// event more: a zeroed ~3 KB block allocated per 31 events). Senders push to `back`;
/// starters (and a cancelling close) pop from `front` and, when it runs dry, swap the whole
/// of `back` in. So a sender and a starter on other threads meet on a lock once per refill,
/// not once per event: with one deque, `tell` spent a fifth of its time in that lock's
/// contention and the line's cache-line transfers (perf, 2 workers).
#[derive(Default)]
struct Line {
    /// Older than everything in `back`. Locked before `back` when both are.
    front: Mutex<std::collections::VecDeque<Admitted>>,
    back: Mutex<std::collections::VecDeque<Admitted>>,
}

impl Line {
    #[inline]
    fn push(&self, p: Admitted) {
        self.back.lock().push_back(p);
    }

    #[inline]
    fn pop(&self) -> Option<Admitted> {
        let mut front = self.front.lock();
        if let Some(p) = front.pop_front() {
            return Some(p);
        }
        std::mem::swap(&mut *front, &mut *self.back.lock());
        front.pop_front()
    }
}

/// Pops an event counted into a direct line. Its sender pushes it right after counting it
/// in, with nothing in between that can fail (the push waits only for the line's short lock),
/// so this waits at most that long.
fn pop_counted(line: &Line) -> Admitted {
    let backoff = Backoff::new();
    loop {
        if let Some(p) = line.pop() {
            return p;
        }
        backoff.snooze();
    }
}
