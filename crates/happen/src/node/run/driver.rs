//! Running flows: the ready queue, the node's drivers and the flows that wait in their own task.
//!
//! An admitted event that holds a slot goes into the node's *ready queue* (lock-free). Drivers
//! — at most one per runtime worker, started on demand and parked when idle — take events from
//! it in order, start each flow and poll it once. A flow that finishes on that first poll (the
//! common case: a handler that computes and returns) costs no task of its own. A flow that
//! waits moves to its own Tokio task, so waiting flows are spread over every worker by Tokio's
//! work stealing and one flow that blocks its thread holds up only that worker.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Weak;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::Poll;

use futures::task::AtomicWaker;
use parking_lot::Mutex;
use tokio::task::AbortHandle;

use super::flow_task::{FlowTask, StepCache};
use crate::admission::Engine;
use crate::error::panic_message;
use crate::node::context::Context;
use crate::node::{Node, NodeShared};

/// Flows a driver starts per poll before it yields to other tasks.
const BUDGET: usize = 128;

/// The running side of one node.
pub(crate) struct Runner {
    /// Held while taking an event from `ready` and calling its first step, so flows start in
    /// the order they were admitted even when several drivers run.
    start: Mutex<()>,
    /// Bit `i` set: driver `i` is parked and may be woken.
    idle: AtomicU64,
    /// Drivers started so far (they live as long as the node).
    drivers: AtomicUsize,
    max_drivers: usize,
    wakers: Box<[AtomicWaker]>,
    /// Abort handles of flows waiting in their own task (for cancellation at shutdown).
    waiting: Mutex<Waiting>,
    runtime: tokio::runtime::Handle,
    /// `runtime`'s id: a requester on another runtime leaves the flows to the drivers.
    runtime_id: tokio::runtime::Id,
}

#[derive(Default)]
struct Waiting {
    handles: Vec<AbortHandle>,
    /// Sweep finished handles when `handles` grows past this.
    sweep_at: usize,
}

impl Runner {
    pub(crate) fn new() -> crate::Result<Runner> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            crate::Error::new(
                crate::ErrorKind::NoRuntime,
                "a happen node must be created inside a Tokio runtime (its flows run on it): call `node` from `#[tokio::main]`, a `#[tokio::test]` or `Runtime::block_on`",
            )
        })?;
        let max_drivers = runtime.metrics().num_workers().clamp(1, 64);
        Ok(Runner {
            start: Mutex::new(()),
            idle: AtomicU64::new(0),
            drivers: AtomicUsize::new(0),
            max_drivers,
            wakers: (0..max_drivers).map(|_| AtomicWaker::new()).collect(),
            waiting: Mutex::new(Waiting {
                handles: Vec::new(),
                sweep_at: 64,
            }),
            runtime_id: runtime.id(),
            runtime,
        })
    }

    /// Makes sure a driver will see the ready queue: wakes a parked one, or starts one more
    /// while fewer than one per worker run. If every driver is busy, one of them takes the
    /// event next (a driver parks only after seeing the queue empty).
    pub(crate) fn notify(&self, node: &Node) {
        let idle = self.idle.load(Ordering::Acquire);
        if idle != 0 {
            let bit = idle & idle.wrapping_neg();
            if self.idle.fetch_and(!bit, Ordering::AcqRel) & bit != 0 {
                self.wakers[bit.trailing_zeros() as usize].wake();
            }
            return;
        }
        let mut n = self.drivers.load(Ordering::Acquire);
        while n < self.max_drivers {
            match self
                .drivers
                .compare_exchange_weak(n, n + 1, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    self.runtime
                        .spawn(drive(std::sync::Arc::downgrade(&node.shared), n));
                    return;
                }
                Err(now) => n = now,
            }
        }
    }

    /// Wakes every parked driver (to notice that the node closed or went away).
    pub(crate) fn wake_all(&self) {
        self.idle.store(0, Ordering::Release);
        for w in self.wakers.iter() {
            w.wake();
        }
    }

    /// Moves a flow that is waiting into its own task.
    fn spawn(&self, task: FlowTask, engine: &Engine) {
        let handle = self.runtime.spawn(task).abort_handle();
        let mut w = self.waiting.lock();
        // A cancelling close sets `cancelled` before it takes the handles under this lock:
        // a flow moved to its task after that is cancelled here instead of being missed.
        if engine.is_cancelled() {
            handle.abort();
            return;
        }
        if w.handles.len() >= w.sweep_at {
            w.handles.retain(|h| !h.is_finished());
            w.sweep_at = (w.handles.len() * 2).max(64);
        }
        w.handles.push(handle);
    }

    /// Cancels every flow waiting in its own task (each answers its sender `ShutDown` when
    /// dropped).
    pub(crate) fn abort_waiting(&self) {
        let handles = std::mem::take(&mut self.waiting.lock().handles);
        for h in handles {
            h.abort();
        }
    }
}

/// One driver of a node: takes ready events, starts their flows and polls each once. Holds a
/// weak reference to the node, plus the spare context of the last flow it ran (which holds
/// the node): a node lives while its drivers keep a spare, and its drivers end when it is
/// closed and drained (a closed instance closes its nodes) or when it is freed.
///
/// Supervised: user code runs inside each flow's own panic boundary, and a panic in the
/// engine itself is caught here too, logged and counted, and the driver carries on — a
/// driver never ends while its node lives, so nothing waits on a dead one.
fn drive(node: Weak<NodeShared>, index: usize) -> impl Future<Output = ()> + Send {
    // Made before the first poll: a driver dropped unpolled (its runtime shut down before
    // it ever ran) must be noticed too.
    let mut guard = DriverGuard {
        node: node.clone(),
        handed_over: false,
    };
    async move {
        let guard = &mut guard;
        let mut cache = StepCache::default();
        // The context of the last flow that finished on its first poll, for the next flow
        // to reuse (saves an allocation and a free per event). Kept while the driver is
        // parked (without its event's payload): it holds the node, so a node's drivers
        // keep it alive until it is closed and drained, which ends them.
        let mut spare: Option<Context> = None;
        futures::future::poll_fn(|cx| {
            let Some(shared) = node.upgrade() else {
                return Poll::Ready(());
            };
            let node = Node { shared };
            match catch_unwind(AssertUnwindSafe(|| {
                drive_once(
                    &node,
                    index,
                    &mut cache,
                    &mut spare,
                    &mut guard.handed_over,
                    cx,
                )
            })) {
                Ok(poll) => poll,
                Err(panic) => {
                    node.engine().fault(&panic_message(&*panic));
                    cache = StepCache::default();
                    spare = None;
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
            }
        })
        .await;
    }
}

/// Notices a driver that ends while its node still lives and is not drained — its task was
/// dropped, which happens when the Tokio runtime shuts down under a live node. The node is
/// then closed with cancellation (everything queued or running answers `ShutDown`), and the
/// fault is logged and counted, so no sender waits on a node nobody drives.
struct DriverGuard {
    node: Weak<NodeShared>,
    /// A finished flow handed its slot to the next waiting event, which this driver has not
    /// started yet.
    handed_over: bool,
}

impl Drop for DriverGuard {
    fn drop(&mut self) {
        let Some(shared) = self.node.upgrade() else {
            return;
        };
        let node = Node { shared };
        let engine = node.engine();
        give_back_handed_over(&node, &mut self.handed_over);
        if engine.is_drained() {
            return;
        }
        engine.fault("a driver of this node ended (its runtime shut down?)");
        node.close_now(true);
    }
}

/// A slot handed over to an event that will not be started after all (its driver ended, or
/// [`run_here`] panicked): the event is dropped unstarted — its sender hears `ShutDown` —
/// and the slot goes back.
fn give_back_handed_over(node: &Node, handed_over: &mut bool) {
    if std::mem::take(handed_over) {
        drop(node.engine().take_handed_over());
        node.release(None);
    }
}

/// One poll of a driver: starts ready flows until the queue is empty (then parks) or the
/// budget is spent (then yields).
fn drive_once(
    node: &Node,
    index: usize,
    cache: &mut StepCache,
    kept: &mut Option<Context>,
    handed_over: &mut bool,
    cx: &mut std::task::Context<'_>,
) -> Poll<()> {
    let engine = node.engine();
    let run = node.runner();
    let bit = 1u64 << index;
    let mut started = 0;
    // In a local while this poll runs (cheaper than through `kept`), back in `kept` when
    // it returns.
    let mut spare = kept.take();
    loop {
        let task = {
            let _g = run.start.lock();
            let next = if std::mem::take(handed_over) {
                engine.take_handed_over()
            } else {
                engine.start_next_event()
            };
            next.map(|p| FlowTask::start(node, p, cache, &mut spare))
        };
        let Some(mut task) = task else {
            if engine.is_drained() {
                return Poll::Ready(());
            }
            if let Some(ctx) = &mut spare {
                ctx.drop_payload(); // a parked driver keeps no payload
            }
            run.wakers[index].register(cx.waker());
            run.idle.fetch_or(bit, Ordering::AcqRel);
            if engine.nothing_to_start() && !engine.is_drained() {
                *kept = spare;
                return Poll::Pending;
            }
            // Work arrived (or the node drained) while parking: take the bit back. If a
            // sender took it first, it also woke us, which costs one spurious poll.
            run.idle.fetch_and(!bit, Ordering::AcqRel);
            continue;
        };
        match Pin::new(&mut task).poll(cx) {
            Poll::Ready(()) => {
                *handed_over = task.handed_over();
                let ctx = task.context();
                drop(task);
                spare = ctx.into_spare();
            }
            Poll::Pending if !engine.is_cancelled() => {
                task.leave_driver(); // the flow waits: its sender arms its timeout now
                run.spawn(task, engine);
            }
            Poll::Pending => drop(task), // cancelled: answers `ShutDown`
        }
        started += 1;
        if started >= BUDGET {
            *kept = spare;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
    }
}

/// How [`run_here`] takes the start lock.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum StartLock {
    /// Waits for it (a transport's receive task).
    Wait,
    /// Starts nothing while another starter holds it: a requester's poll may come from a
    /// handler's synchronous part, which runs under its own node's start lock.
    IfFree,
}

/// How long [`run_here`] runs flows before it leaves the rest to the drivers.
const HERE_SLICE: std::time::Duration = std::time::Duration::from_micros(250);

/// After a run that took longer than [`HERE_SLICE`], how many calls of [`run_here`] leave
/// everything to the drivers.
const HERE_BACKOFF: u32 = 64;

/// A call of [`run_here`] that starts one flow reads the clock once in this many calls (and
/// on the first call after a back-off): two clock reads were ~8 % of a local request's round
/// trip on a 2-core VM (child `ask-seq`, 1M requests: 0.70–0.71 s → 0.61–0.67 s without
/// them). A handler that turns slow is noticed within this many calls; one that is slow
/// from the start, at once.
const HERE_TIME_EVERY: u32 = 8;

/// A driver's memory for a task that runs flows itself (see
/// [`Inbox::run_here`](crate::transport::Inbox::run_here)).
#[derive(Default)]
pub(crate) struct Here {
    /// The node the rest is about: a call for another node starts afresh. (A weak
    /// reference, so its address is not reused while kept.)
    node: Weak<NodeShared>,
    cache: StepCache,
    /// The context of the last flow that finished at once, for the next one.
    spare: Option<Context>,
    /// The last flow handed its slot to the next waiting event, which must start next.
    handed_over: bool,
    /// Calls left that start nothing, after a slow run.
    rest: u32,
    /// Calls of one flow left before one is timed (see [`HERE_TIME_EVERY`]).
    untimed: u32,
}

/// Starts up to `budget` flows that can start now in the calling task, as a driver would: in
/// admission order (under the start lock), each polled once, a flow that waits moved to its
/// own task. Stops early once it ran for [`HERE_SLICE`], and then starts nothing for the next
/// [`HERE_BACKOFF`] calls: a handler that blocks its thread holds up the calling task once,
/// after which its node's drivers run it (a call of one flow is timed one in
/// [`HERE_TIME_EVERY`]). Returns how many flows it started.
///
/// Its loop is [`drive_once`]'s without the parking; the two are kept apart because taking
/// the start and the poll out into helpers both call cost a driver's `tell` 20 instructions
/// per event (measured with `cargo xtask instructions`: 1,719 → 1,739).
fn run_here(node: &Node, here: &mut Here, budget: usize, lock: StartLock) -> usize {
    if !std::ptr::eq(here.node.as_ptr(), std::sync::Arc::as_ptr(&node.shared)) {
        // the handler lookup is keyed by type and registry version, which another node may
        // share: nothing learnt about one node is used for another
        *here = Here {
            node: std::sync::Arc::downgrade(&node.shared),
            ..Here::default()
        };
    }
    if here.rest > 0 {
        here.rest -= 1;
        return 0;
    }
    let engine = node.engine();
    let run = node.runner();
    let timed = budget > 1 || here.untimed == 0;
    here.untimed = if timed {
        HERE_TIME_EVERY - 1
    } else {
        here.untimed - 1
    };
    // `None` once the slice is used up (or when this call is not timed)
    let mut began = timed.then(std::time::Instant::now);
    let mut started = 0;
    let mut stop = false;
    // A flow that waits registers this waker on its first poll and is polled again at once
    // by its own task, which registers that task's waker.
    let mut cx = std::task::Context::from_waker(futures::task::noop_waker_ref());
    loop {
        if stop && !here.handed_over {
            break;
        }
        let task = {
            let _g = match lock {
                StartLock::Wait => run.start.lock(),
                StartLock::IfFree => match run.start.try_lock() {
                    Some(g) => g,
                    None if !here.handed_over => break,
                    None => run.start.lock(), // owed a start (never with a budget of one)
                },
            };
            let next = if std::mem::take(&mut here.handed_over) {
                engine.take_handed_over()
            } else {
                engine.start_next_event()
            };
            next.map(|p| FlowTask::start(node, p, &mut here.cache, &mut here.spare))
        };
        let Some(mut task) = task else {
            break;
        };
        started += 1;
        if stop || started >= budget {
            // the last one: its slot goes back, not to an event this call would then owe a start
            task.without_hand_over();
            stop = true;
        }
        match Pin::new(&mut task).poll(&mut cx) {
            Poll::Ready(()) => {
                here.handed_over = task.handed_over();
                let ctx = task.context();
                drop(task);
                here.spare = ctx.into_spare();
            }
            Poll::Pending if !engine.is_cancelled() => {
                task.leave_driver(); // the flow waits: its sender arms its timeout now
                run.spawn(task, engine);
            }
            Poll::Pending => drop(task), // cancelled: answers `ShutDown`
        }
        // (also after the last flow of the budget: a call with a budget of one backs off too)
        if began.is_some_and(|b| b.elapsed() > HERE_SLICE) {
            here.rest = HERE_BACKOFF;
            here.untimed = 0; // the first call after the rest is timed
            began = None;
            stop = true;
        }
    }
    if let Some(ctx) = &mut here.spare {
        ctx.drop_payload(); // kept between calls without its event's payload
    }
    started
}

thread_local! {
    /// Set while a requester's task runs a target's flow ([`start_for_requester`]): a
    /// request that flow makes and awaits is left to the drivers, so requests do not nest
    /// on one stack.
    static STARTING_HERE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// A requester's task, at the first poll of its reply from `node`, starts the next flow
/// that can start there as a driver would ([`run_here`] with a budget of one, under the
/// node's own [`Here`]): usually the request's own flow, which then answers before the
/// reply reads its slot — no driver wake, no thread hop, no wake of the requester. Does
/// nothing when nothing can start, when the caller is not on the node's runtime, when
/// another task is doing the same for this node or starting one of its flows, or inside a
/// flow started this way. `true` if a flow started.
///
/// The memory is the node's, so a handler that blocks its thread holds up one requester,
/// after which the next [`HERE_BACKOFF`] requests leave that node's flows to its drivers.
/// Its spare context holds the node: it is dropped once the node is closed (here, or by
/// the close itself), so a closed node is not kept alive by its own memory.
pub(crate) fn start_for_requester(node: &Node, here: &Mutex<Here>) -> bool {
    if node.engine().nothing_to_start() || STARTING_HERE.get() {
        return false;
    }
    // A flow's first poll binds what it creates (timers, sockets, spawned tasks) to the
    // runtime it runs on: only the node's own.
    if !tokio::runtime::Handle::try_current().is_ok_and(|h| h.id() == node.runner().runtime_id) {
        return false;
    }
    let Some(mut here) = here.try_lock() else {
        return false;
    };
    STARTING_HERE.set(true);
    let started = run_here_caught(node, &mut here, 1, StartLock::IfFree);
    STARTING_HERE.set(false);
    if node.engine().is_closed() {
        here.spare = None;
    }
    started > 0
}

impl Here {
    /// Lets go of the spare context (which holds the node).
    pub(crate) fn forget_spare(&mut self) {
        self.spare = None;
    }
}

/// [`run_here`] inside a panic boundary of the engine's own (each flow has its own too): a
/// panic is logged and counted, a slot handed over to an event not started yet goes back,
/// the memory is reset, and nothing counts as started.
pub(crate) fn run_here_caught(
    node: &Node,
    here: &mut Here,
    budget: usize,
    lock: StartLock,
) -> usize {
    match catch_unwind(AssertUnwindSafe(|| run_here(node, here, budget, lock))) {
        Ok(n) => n,
        Err(panic) => {
            node.engine().fault(&panic_message(&*panic));
            give_back_handed_over(node, &mut here.handed_over);
            *here = Here::default();
            0
        }
    }
}
