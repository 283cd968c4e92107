//! The per-node engine: admission control (limits, queue strategies, pressure), the driver
//! task that starts and polls flows, and the flow state machine (the Event Continuum runner).
//!
//! Each node has one driver task. Senders admit events synchronously under a short lock
//! (start now, queue, or reject with `QueueFull`); the driver starts admitted events while
//! fewer than `max_concurrent` flows run and polls all running flows concurrently, each as its
//! own future with its own panic boundary. A flow that completes on its first poll costs no
//! task and no queue slot beyond its admission.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;

use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use futures::task::AtomicWaker;
use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::{broadcast, oneshot, watch};

use crate::config::{Limits, QueueStrategy};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::event::Event;
use crate::flow::{ErasedStep, Flow};
use crate::id::SharedStr;
use crate::node::{Node, SequentialKey};
use crate::stream::{Delivered, FlowStream, Frame, Response};

/// The type of the event a node broadcasts when its pressure state changes. Its payload:
/// `{"nodeId", "level": "high"|"normal", "underPressure", "queued", "queueLimit", "seq"}`, where
/// `seq` numbers the node's transitions (events may arrive out of order; the highest `seq` is the
/// current state; [`Node::watch_pressure`](crate::Node::watch_pressure) is always in order).
pub const PRESSURE_EVENT: &str = "node.pressure";

/// The backpressure state of a node.
///
/// A node is under pressure from the moment its queue holds `threshold × queue_limit` events
/// until it drains to three quarters of that (hysteresis, so the state does not flap).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Pressure {
    /// Is the node under pressure?
    pub under_pressure: bool,
    /// Events waiting when the state last changed (or when read).
    pub queued: usize,
    /// The node's queue limit.
    pub queue_limit: usize,
}

impl Pressure {
    /// A pressure state built from its parts. Transports use this to mirror the state of a
    /// remote node (for [`Transport::pressure`](crate::Transport::pressure)).
    ///
    /// ```
    /// let p = happen::Pressure::new(true, 80, 100);
    /// assert!(p.under_pressure);
    /// assert_eq!((p.queued, p.queue_limit), (80, 100));
    /// ```
    pub fn new(under_pressure: bool, queued: usize, queue_limit: usize) -> Pressure {
        Pressure {
            under_pressure,
            queued,
            queue_limit,
        }
    }
}

/// A snapshot of a node's counters (see [`Node::stats`](crate::Node::stats)).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct NodeStats {
    /// Flows executing now (updated by the node's driver, so a flow that just answered may
    /// still be counted for a moment; `completed`/`failed` are counted before the answer).
    pub active: usize,
    /// Events waiting to start now.
    pub queued: usize,
    /// The most events that ever waited at once.
    pub peak_queued: usize,
    /// Events admitted (started at once or queued).
    pub accepted: u64,
    /// Events rejected or displaced with `QueueFull`.
    pub rejected: u64,
    /// Flows that finished with a value.
    pub completed: u64,
    /// Flows that finished with an error (handler error, panic, no handler, cancelled...).
    pub failed: u64,
    /// Failures nobody awaited (logged and counted): fire-and-forget sends from this node
    /// whose flow failed, plus failures this node noticed for senders outside this instance
    /// and broadcasts it rejected.
    pub unobserved_failures: u64,
    /// Median time an event waited in the queue before starting (an upper bound from a log2
    /// histogram; after the first 1,024 waits, 1 in 8 queued events is sampled).
    pub queue_wait_p50: Duration,
    /// 99th percentile of the queue wait.
    pub queue_wait_p99: Duration,
}

/// Log2 histogram of queue waits in microseconds (bucket i holds waits < 2^i µs).
#[derive(Clone)]
struct WaitHistogram {
    buckets: [u64; 40],
    count: u64,
}

impl Default for WaitHistogram {
    fn default() -> Self {
        WaitHistogram {
            buckets: [0; 40],
            count: 0,
        }
    }
}

impl WaitHistogram {
    fn record(&mut self, d: Duration) {
        let us = d.as_micros().min(u64::MAX as u128) as u64;
        let i = (64 - us.leading_zeros()) as usize;
        self.buckets[i.min(39)] += 1;
        self.count += 1;
    }

    fn quantile(&self, q: f64) -> Duration {
        if self.count == 0 {
            return Duration::ZERO;
        }
        let target = ((self.count as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= target {
                return if i == 0 {
                    Duration::ZERO
                } else {
                    Duration::from_micros(1u64 << i.min(63))
                };
            }
        }
        Duration::MAX
    }
}

/// An admitted event waiting to start.
pub(crate) struct Pending {
    event: Event,
    reply: Option<oneshot::Sender<Response>>,
    /// Set when the event had to wait (the node was saturated on arrival).
    enqueued: Option<Instant>,
    /// The subscription to a broadcast stream the event carries.
    items: Option<broadcast::Receiver<Frame>>,
}

enum Queue {
    Fifo(VecDeque<Pending>),
    /// Keyed by (priority descending, arrival ascending).
    Priority(BTreeMap<(Reverse<i32>, u64), Pending>),
}

impl Queue {
    fn len(&self) -> usize {
        match self {
            Queue::Fifo(q) => q.len(),
            Queue::Priority(q) => q.len(),
        }
    }

    fn pop(&mut self) -> Option<Pending> {
        match self {
            Queue::Fifo(q) => q.pop_front(),
            Queue::Priority(q) => q.pop_first().map(|(_, p)| p),
        }
    }
}

struct State {
    queue: Queue,
    seq: u64,
    running: usize,
    /// Popped from the queue but waiting for their sequential lane.
    parked: usize,
    closed: bool,
    abort: bool,
    driver_idle: bool,
    under_pressure: bool,
    /// Counts pressure transitions (orders the `node.pressure` events).
    pressure_seq: u64,
    accepted: u64,
    rejected: u64,
    peak_queued: usize,
    waits: WaitHistogram,
}

/// Metric handles of one node (no-ops unless a `metrics` recorder is installed).
struct Metrics {
    accepted: metrics::Counter,
    rejected: metrics::Counter,
    completed: metrics::Counter,
    failed: metrics::Counter,
    active: metrics::Gauge,
    queued: metrics::Gauge,
    wait: metrics::Histogram,
}

impl Metrics {
    fn new(node: &str) -> Metrics {
        let label = [("node", node.to_owned())];
        Metrics {
            accepted: metrics::counter!("happen_events_accepted_total", &label),
            rejected: metrics::counter!("happen_events_rejected_total", &label),
            completed: metrics::counter!("happen_flows_completed_total", &label),
            failed: metrics::counter!("happen_flows_failed_total", &label),
            active: metrics::gauge!("happen_flows_active", &label),
            queued: metrics::gauge!("happen_events_queued", &label),
            wait: metrics::histogram!("happen_queue_wait_seconds", &label),
        }
    }
}

/// Admission state shared between senders and the node's driver.
pub(crate) struct Engine {
    state: Mutex<State>,
    driver: AtomicWaker,
    limits: Limits,
    high_water: usize,
    low_water: usize,
    pressure: watch::Sender<Pressure>,
    metrics: Metrics,
    /// Finished flows, counted before the flow answers its sender (so a sender that got its
    /// reply sees its flow in the stats).
    completed: std::sync::atomic::AtomicU64,
    failed: std::sync::atomic::AtomicU64,
    /// Signalled when the driver has exited.
    drained: tokio::sync::Notify,
    exited: std::sync::atomic::AtomicBool,
}

/// A change of pressure to announce after the lock is released.
/// A pressure transition (its sequence number and the new state) to announce as an event
/// after the lock is released.
pub(crate) type PressureChange = Option<(u64, Pressure)>;

impl Engine {
    pub(crate) fn new(node: &str, limits: Limits) -> Engine {
        let high_water = ((limits.backpressure_threshold * limits.queue_limit as f64).ceil()
            as usize)
            .clamp(1, limits.queue_limit);
        let low_water = high_water * 3 / 4;
        let queue = match limits.queue_strategy {
            QueueStrategy::Fifo => Queue::Fifo(VecDeque::new()),
            QueueStrategy::Priority => Queue::Priority(BTreeMap::new()),
        };
        Engine {
            state: Mutex::new(State {
                queue,
                seq: 0,
                running: 0,
                parked: 0,
                closed: false,
                abort: false,
                driver_idle: true,
                under_pressure: false,
                pressure_seq: 0,
                accepted: 0,
                rejected: 0,
                peak_queued: 0,
                waits: WaitHistogram::default(),
            }),
            driver: AtomicWaker::new(),
            limits,
            high_water,
            low_water,
            pressure: watch::Sender::new(Pressure {
                under_pressure: false,
                queued: 0,
                queue_limit: limits.queue_limit,
            }),
            metrics: Metrics::new(node),
            completed: std::sync::atomic::AtomicU64::new(0),
            failed: std::sync::atomic::AtomicU64::new(0),
            drained: tokio::sync::Notify::new(),
            exited: std::sync::atomic::AtomicBool::new(false),
        }
    }

    pub(crate) fn limits(&self) -> &Limits {
        &self.limits
    }

    fn depth(&self, st: &State) -> usize {
        let free = self.limits.max_concurrent.saturating_sub(st.running);
        (st.queue.len() + st.parked).saturating_sub(free)
    }

    fn check_pressure(&self, st: &mut State) -> PressureChange {
        let depth = self.depth(st);
        if depth > st.peak_queued {
            st.peak_queued = depth;
        }
        let next = if st.under_pressure {
            depth > self.low_water
        } else {
            depth >= self.high_water
        };
        if next != st.under_pressure {
            st.under_pressure = next;
            st.pressure_seq += 1;
            let p = Pressure {
                under_pressure: next,
                queued: depth,
                queue_limit: self.limits.queue_limit,
            };
            // Published under the lock: transitions computed by different threads (senders
            // and the driver) must reach watchers in the order they happened, or a stale
            // "under pressure" could be left standing.
            self.pressure.send_replace(p);
            Some((st.pressure_seq, p))
        } else {
            None
        }
    }

    /// Admits an event: starts it, queues it, or rejects it. On rejection the sender gets the
    /// error; a displaced event's sender is answered here.
    pub(crate) fn admit(
        &self,
        node: &Node,
        event: Event,
        reply: Option<oneshot::Sender<Response>>,
        items: Option<broadcast::Receiver<Frame>>,
    ) -> Result<(), Error> {
        let mut displaced = None;
        let (wake, change) = {
            let mut st = self.state.lock();
            if st.closed {
                drop(st);
                return Err(Error::shut_down(node.id()));
            }
            let free = self.limits.max_concurrent.saturating_sub(st.running);
            let waiting = st.queue.len() + st.parked;
            let saturated = waiting >= free;
            if waiting >= self.limits.queue_limit.saturating_add(free) {
                // Full. A priority queue may displace its newest lowest-priority event.
                let mut admitted = false;
                if let Queue::Priority(q) = &mut st.queue
                    && let Some(entry) = q.last_entry()
                    && event.priority() > entry.key().0.0
                {
                    displaced = Some(entry.remove());
                    admitted = true;
                }
                if !admitted {
                    st.rejected += 1;
                    drop(st);
                    self.metrics.rejected.increment(1);
                    return Err(Error::queue_full(
                        node.id(),
                        self.limits.queue_limit,
                        event.id(),
                    ));
                }
                st.rejected += 1;
                self.metrics.rejected.increment(1);
            }
            let pending = Pending {
                event,
                reply,
                // Queue waits are sampled once the histogram has a base (1 in 8 queued events
                // after the first 1,024): reading the clock for every event is a measurable
                // share of the per-event cost.
                enqueued: (saturated && (st.waits.count < 1024 || st.seq.is_multiple_of(8)))
                    .then(Instant::now),
                items,
            };
            st.seq += 1;
            let seq = st.seq;
            match &mut st.queue {
                Queue::Fifo(q) => q.push_back(pending),
                Queue::Priority(q) => {
                    let key = (Reverse(pending.event.priority()), seq);
                    q.insert(key, pending);
                }
            }
            st.accepted += 1;
            let change = if saturated {
                self.check_pressure(&mut st)
            } else {
                None
            };
            let wake = std::mem::replace(&mut st.driver_idle, false);
            (wake, change)
        };
        self.metrics.accepted.increment(1);
        if wake {
            self.driver.wake();
        }
        if let Some(p) = displaced {
            let err = Error::displaced(node.id(), self.limits.queue_limit, p.event.id());
            answer(node, p.reply, Err(err));
        }
        if change.is_some() {
            node.announce_pressure(change);
        }
        Ok(())
    }

    /// Closes admission; `abort` also makes the driver drop running flows.
    pub(crate) fn close(&self, abort: bool) {
        {
            let mut st = self.state.lock();
            st.closed = true;
            st.abort |= abort;
        }
        self.driver.wake();
    }

    /// Waits until the driver has exited.
    pub(crate) async fn wait_drained(&self) {
        loop {
            let notified = self.drained.notified();
            if self.exited.load(std::sync::atomic::Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }

    pub(crate) fn pressure_now(&self) -> Pressure {
        let st = self.state.lock();
        Pressure {
            under_pressure: st.under_pressure,
            queued: self.depth(&st),
            queue_limit: self.limits.queue_limit,
        }
    }

    pub(crate) fn watch_pressure(&self) -> watch::Receiver<Pressure> {
        self.pressure.subscribe()
    }

    pub(crate) fn stats(&self, unobserved_failures: u64) -> NodeStats {
        let st = self.state.lock();
        NodeStats {
            active: st.running,
            queued: self.depth(&st),
            peak_queued: st.peak_queued,
            accepted: st.accepted,
            rejected: st.rejected,
            completed: self.completed.load(std::sync::atomic::Ordering::Relaxed),
            failed: self.failed.load(std::sync::atomic::Ordering::Relaxed),
            unobserved_failures,
            queue_wait_p50: st.waits.quantile(0.5),
            queue_wait_p99: st.waits.quantile(0.99),
        }
    }
}

/// Sends an outcome to a reply path; logs and counts failures nobody will see.
fn answer(node: &Node, reply: Option<oneshot::Sender<Response>>, outcome: Result<Value>) {
    let unobserved = match reply {
        Some(tx) => match tx.send(Response::Done(outcome)) {
            Ok(()) => None,
            Err(Response::Done(o)) => Some(o),
            Err(Response::Stream(_)) => None,
        },
        None => Some(outcome),
    };
    if let Some(Err(e)) = unobserved {
        node.unobserved_failure(&e);
    }
}

// ---- sequential lanes ------------------------------------------------------------------------

type LaneKey = SharedStr;

#[derive(Default)]
struct Lanes {
    /// Busy keys, with the events waiting for them.
    busy: HashMap<LaneKey, VecDeque<Pending>>,
}

/// What the driver learned from finished flows since it last took the lock.
#[derive(Default)]
struct Finished {
    completed: u64,
    failed: u64,
    lanes: Vec<LaneKey>,
}

impl Finished {
    fn add(&mut self, out: FlowOutcome) {
        if out.failed {
            self.failed += 1;
        } else {
            self.completed += 1;
        }
        if let Some(k) = out.lane {
            self.lanes.push(k);
        }
    }
}

fn lane_key(key: &SequentialKey, event: &Event) -> LaneKey {
    match key {
        SequentialKey::EventType => SharedStr::from(event.event_type().to_owned()),
        SequentialKey::CorrelationId => SharedStr::from(event.correlation_id().to_string()),
        SequentialKey::Custom(f) => SharedStr::from(f(event)),
    }
}

enum Take {
    Work,
    Idle,
    Exit,
}

impl Engine {
    /// Applies finished flows and takes the events that may start now.
    fn take(
        &self,
        node: &Node,
        finished: &mut Finished,
        lanes: &mut Lanes,
        out: &mut Vec<(Pending, Option<LaneKey>)>,
        flows_empty: bool,
    ) -> (Take, PressureChange, Vec<Pending>) {
        let sequential = node.sequential_key();
        let mut st = self.state.lock();
        let done = finished.completed + finished.failed;
        st.running -= done as usize;
        if done > 0 {
            self.metrics.completed.increment(finished.completed);
            self.metrics.failed.increment(finished.failed);
        }
        finished.completed = 0;
        finished.failed = 0;
        if st.abort {
            // Drop everything waiting; running flows are dropped by the driver.
            let mut dropped = Vec::new();
            while let Some(p) = st.queue.pop() {
                dropped.push(p);
            }
            for (_, q) in lanes.busy.drain() {
                dropped.extend(q);
            }
            st.parked = 0;
            self.failed
                .fetch_add(dropped.len() as u64, std::sync::atomic::Ordering::Relaxed);
            return (Take::Exit, None, dropped);
        }
        // Lanes freed by finished flows start their next event in the freed slot.
        for key in finished.lanes.drain(..) {
            let next = lanes.busy.get_mut(&key).and_then(VecDeque::pop_front);
            match next {
                Some(p) => {
                    st.parked -= 1;
                    st.running += 1;
                    out.push((p, Some(key)));
                }
                None => {
                    lanes.busy.remove(&key);
                }
            }
        }
        let now = Instant::now();
        while st.running < self.limits.max_concurrent {
            let Some(p) = st.queue.pop() else { break };
            if let Some(start) = p.enqueued {
                let w = now.saturating_duration_since(start);
                st.waits.record(w);
                self.metrics.wait.record(w.as_secs_f64());
            }
            let key = sequential.map(|k| lane_key(k, &p.event));
            if let Some(k) = &key {
                if let Some(waiting) = lanes.busy.get_mut(k) {
                    waiting.push_back(p);
                    st.parked += 1;
                    continue;
                }
                lanes.busy.insert(k.clone(), VecDeque::new());
            }
            st.running += 1;
            out.push((p, key));
        }
        let change = self.check_pressure(&mut st);
        self.metrics.active.set(st.running as f64);
        self.metrics.queued.set(self.depth(&st) as f64);
        let status = if !out.is_empty() {
            Take::Work
        } else if st.closed
            && st.queue.len() == 0
            && st.parked == 0
            && flows_empty
            && st.running == 0
        {
            Take::Exit
        } else {
            st.driver_idle = true;
            Take::Idle
        };
        (status, change, Vec::new())
    }
}

/// How many flows the driver starts per poll before yielding to other tasks.
const START_BUDGET: usize = 512;

/// The node's driver task: runs until the node is closed and drained (or aborted).
pub(crate) async fn drive(node: Node) {
    let engine = node.engine();
    let mut flows: FuturesUnordered<FlowTask> = FuturesUnordered::new();
    let mut finished = Finished::default();
    let mut lanes = Lanes::default();
    let mut batch: Vec<(Pending, Option<LaneKey>)> = Vec::new();
    let mut cache = StepCache::default();
    futures::future::poll_fn(|cx| {
        let mut started = 0;
        loop {
            while let Poll::Ready(Some(out)) = flows.poll_next_unpin(cx) {
                finished.add(out);
            }
            engine.driver.register(cx.waker());
            let (status, change, dropped) = engine.take(
                &node,
                &mut finished,
                &mut lanes,
                &mut batch,
                flows.is_empty(),
            );
            if change.is_some() {
                node.announce_pressure(change);
            }
            match status {
                Take::Exit => {
                    for p in dropped {
                        answer(&node, p.reply, Err(Error::shut_down(node.id())));
                    }
                    flows.clear(); // each dropped flow answers its sender with ShutDown
                    return Poll::Ready(());
                }
                Take::Idle => return Poll::Pending,
                Take::Work => {}
            }
            for (p, lane) in batch.drain(..) {
                started += 1;
                let mut task = FlowTask::start(&node, p, lane, &mut cache);
                match Pin::new(&mut task).poll(cx) {
                    Poll::Ready(out) => finished.add(out),
                    Poll::Pending => flows.push(task),
                }
            }
            if started >= START_BUDGET {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
        }
    })
    .await;
    engine
        .exited
        .store(true, std::sync::atomic::Ordering::Release);
    engine.drained.notify_waiters();
}

// ---- one flow --------------------------------------------------------------------------------

/// The driver's memory of the last handler lookup: consecutive events of one type (the common
/// case) skip the registry's lock and hash. Invalidated by any new registration.
#[derive(Default)]
struct StepCache {
    last: Option<(String, u64, Arc<dyn ErasedStep>)>,
}

impl StepCache {
    fn lookup(&mut self, node: &Node, event_type: &str) -> Option<Arc<dyn ErasedStep>> {
        let version = node.registry_version();
        if let Some((ty, v, step)) = &self.last
            && *v == version
            && ty == event_type
        {
            return Some(step.clone());
        }
        let step = node.lookup(event_type)?;
        self.last = Some((event_type.to_owned(), version, step.clone()));
        Some(step)
    }
}

pub(crate) struct FlowOutcome {
    failed: bool,
    lane: Option<LaneKey>,
}

/// One flow: runs steps until one returns a final value or fails.
struct FlowTask {
    ctx: Context,
    step: Option<BoxFuture<'static, Result<Flow>>>,
    depth: usize,
    lane: Option<LaneKey>,
    span: tracing::Span,
    finished: bool,
}

pub(crate) fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

impl FlowTask {
    fn start(node: &Node, p: Pending, lane: Option<LaneKey>, cache: &mut StepCache) -> FlowTask {
        let event = p.event;
        let source = event.broadcast_source().cloned();
        let span = tracing::debug_span!(
            "happen.flow",
            node = %node.id(),
            event_type = event.event_type(),
            event_id = %event.id(),
            correlation_id = %event.correlation_id(),
        );
        let step = cache.lookup(node, event.event_type());
        let ctx = Context::new(
            node.clone(),
            event,
            FlowStream::new(p.reply, node.stream_buffer(), source),
            p.items,
        );
        let mut task = FlowTask {
            ctx,
            step: None,
            depth: 0,
            lane,
            span,
            finished: false,
        };
        match step {
            Some(step) => task.call(&*step),
            None => {
                let e = Error::no_handler(node.id(), task.ctx.event().event_type());
                task.step = Some(Box::pin(futures::future::ready(Err(e))));
            }
        }
        task
    }

    fn call(&mut self, step: &dyn ErasedStep) {
        let event = self.ctx.event().clone();
        let ctx = self.ctx.clone();
        let fut = self
            .span
            .in_scope(|| catch_unwind(AssertUnwindSafe(|| step.call(event, ctx))));
        self.step = Some(match fut {
            Ok(f) => f,
            Err(panic) => {
                let msg = panic_message(&*panic);
                let e = Error::panic(self.ctx.node_id(), &msg);
                Box::pin(futures::future::ready(Err(e)))
            }
        });
    }

    fn finish(&mut self, outcome: Result<Value>) -> FlowOutcome {
        self.step = None; // drop the step first: its cleanup runs before the sender hears back
        self.finished = true;
        let failed = outcome.is_err();
        let counter = if failed {
            &self.ctx.node().engine().failed
        } else {
            &self.ctx.node().engine().completed
        };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Err(e) = &outcome {
            let _g = self.span.enter();
            tracing::debug!(error = %e, kind = %e.kind(), "flow failed");
        }
        if let Delivered::Unobserved(Err(e)) = self.ctx.inner.stream.finish(outcome) {
            // A stream cancelled because its consumer went away is what the consumer asked
            // for, not a failure nobody saw.
            if e.kind() != crate::ErrorKind::Cancelled {
                self.ctx
                    .node()
                    .flow_failure_unobserved(self.ctx.event(), &e);
            }
        }
        FlowOutcome {
            failed,
            lane: self.lane.take(),
        }
    }
}

impl Future for FlowTask {
    type Output = FlowOutcome;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<FlowOutcome> {
        let this = &mut *self;
        loop {
            if let Some(s) = this.ctx.inner.stream.active() {
                s.register(cx);
                if s.is_cancelled() {
                    return Poll::Ready(this.finish(Err(Error::cancelled())));
                }
            }
            let Some(fut) = this.step.as_mut() else {
                return Poll::Ready(this.finish(Err(Error::cancelled())));
            };
            let span = &this.span;
            let polled = span.in_scope(|| catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(cx))));
            match polled {
                Err(panic) => {
                    let msg = panic_message(&*panic);
                    let e = Error::panic(this.ctx.node_id(), &msg);
                    tracing::warn!(parent: &this.span, error = %e, "handler panicked");
                    return Poll::Ready(this.finish(Err(e)));
                }
                Ok(Poll::Pending) => return Poll::Pending,
                Ok(Poll::Ready(Ok(Flow::Next(step)))) => {
                    this.depth += 1;
                    let max = this.ctx.node().max_chain_depth();
                    if this.depth >= max {
                        let e = Error::new(
                            crate::ErrorKind::ChainTooDeep,
                            format!("flow at node `{}` ran more than {max} steps; a step probably loops forever (raise flow.max_chain_depth if it does not)", this.ctx.node_id()),
                        )
                        .with_limit(max);
                        return Poll::Ready(this.finish(Err(e)));
                    }
                    this.call(&*step.0);
                }
                Ok(Poll::Ready(Ok(Flow::Done(v)))) => return Poll::Ready(this.finish(Ok(v))),
                Ok(Poll::Ready(Err(e))) => return Poll::Ready(this.finish(Err(e))),
            }
        }
    }
}

impl Drop for FlowTask {
    fn drop(&mut self) {
        if !self.finished {
            self.step = None;
            self.ctx
                .node()
                .engine()
                .failed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let e = Error::shut_down(self.ctx.node_id());
            if let Delivered::Unobserved(Err(e)) = self.ctx.inner.stream.finish(Err(e)) {
                self.ctx
                    .node()
                    .flow_failure_unobserved(self.ctx.event(), &e);
            }
        }
    }
}
