//! One flow: the Event Continuum runner. Runs a flow's steps until one returns a final value
//! or fails, answers the sender, and gives the flow's slot back to the node's admission.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use futures::future::BoxFuture;
use serde_json::Value;

use crate::admission::{Admitted, LaneKey};
use crate::error::{Error, ErrorKind, Result, panic_message};
use crate::id::SharedStr;
use crate::node::Node;
use crate::node::context::Context;
use crate::node::emitter::{Delivered, FlowStream};
use crate::node::flow::{ErasedStep, Flow};
use crate::stream::BroadcastRole;

/// Runs `f` inside `span`. A span no subscriber wants (the usual case in production) is not
/// entered at all: entering even a disabled span costs a few dozen instructions per call,
/// twice per event.
fn in_span<R>(span: &tracing::Span, f: impl FnOnce() -> R) -> R {
    if span.is_disabled() {
        f()
    } else {
        span.in_scope(f)
    }
}

/// A driver's memory of the last handler lookup: consecutive events of one type (the common
/// case) skip the registry's lock and hash. Invalidated by any new registration.
#[derive(Default)]
pub(crate) struct StepCache {
    last: Option<(SharedStr, u64, Arc<dyn ErasedStep>)>,
}

impl StepCache {
    /// The step for `event_type`; `Err` if a pattern predicate panicked.
    fn lookup(
        &mut self,
        node: &Node,
        event_type: &SharedStr,
    ) -> std::result::Result<Option<Arc<dyn ErasedStep>>, String> {
        let version = node.registry_version();
        if let Some((ty, v, step)) = &self.last
            && *v == version
            && ty.same(event_type)
        {
            return Ok(Some(step.clone()));
        }
        // Pattern predicates are user code: a panic fails this event only.
        let step = node.try_lookup(event_type)?;
        if let Some(step) = &step {
            self.last = Some((event_type.clone(), version, step.clone()));
        }
        Ok(step)
    }
}

/// One flow. Holds one of its node's `max_concurrent` slots from creation until it finishes
/// or is dropped; either way the slot goes back to the node (see `Engine::release`).
pub(crate) struct FlowTask {
    ctx: Context,
    step: Option<BoxFuture<'static, Result<Flow>>>,
    depth: usize,
    lane: Option<LaneKey>,
    /// What the flow counts for in the node's counters (see `Admitted::weight`).
    weight: u32,
    span: tracing::Span,
    finished: bool,
    /// When the flow started, if its node times its handlers (`Limits::handler_timing`).
    started: Option<std::time::Instant>,
    /// Polled by a driver (its first poll), not in a task of its own: a slot it gives back
    /// may go straight to the next waiting event, which that driver then starts.
    in_driver: bool,
    /// The slot went to the next waiting event (see `Engine::hand_over`).
    handed_over: bool,
}

impl FlowTask {
    /// Creates the flow for an admitted event and calls its first step (a closure handler's
    /// synchronous part runs here, inside the panic boundary).
    pub(crate) fn start(
        node: &Node,
        p: Admitted,
        cache: &mut StepCache,
        spare: &mut Option<Context>,
    ) -> FlowTask {
        let event = p.event;
        let (source, items) = match p.broadcast {
            Some(BroadcastRole::Producer(source)) => (Some(source), None),
            Some(BroadcastRole::Subscriber(items)) => (None, Some(items)),
            None => (None, None),
        };
        let span = tracing::debug_span!(
            "happen.flow",
            node = %node.id(),
            event_type = event.event_type(),
            event_id = %event.id(),
            correlation_id = %event.correlation_id(),
        );
        let step = cache.lookup(node, event.event_type_shared());
        let stream = FlowStream::new(p.reply, node.stream_buffer(), source);
        let ctx = Context::new_reusing(spare, node, event, stream, items);
        let mut task = FlowTask {
            ctx,
            step: None,
            depth: 0,
            lane: p.lane,
            weight: p.weight,
            span,
            finished: false,
            started: if node.engine().times_handlers() {
                Some(std::time::Instant::now())
            } else {
                None
            },
            in_driver: true,
            handed_over: false,
        };
        match step {
            Ok(Some(step)) => task.call(&*step),
            Ok(None) => {
                let e = Error::no_handler(node.id(), task.ctx.event().event_type());
                task.step = Some(Box::pin(futures::future::ready(Err(e))));
            }
            Err(msg) => {
                let e = Error::panic(node.id(), &format!("in a pattern predicate: {msg}"));
                task.step = Some(Box::pin(futures::future::ready(Err(e))));
            }
        }
        task
    }

    /// The flow's context (a clone).
    pub(crate) fn context(&self) -> Context {
        self.ctx.clone()
    }

    /// The flow waits and moves to a task of its own: tells the sender the answer will not
    /// be immediate (its timeout is armed now).
    pub(crate) fn leave_driver(&mut self) {
        self.in_driver = false;
        self.ctx.inner.stream.nudge(self.ctx.node_id());
    }

    /// The flow gives its slot back when it finishes, never to the next waiting event.
    pub(crate) fn without_hand_over(&mut self) {
        self.in_driver = false;
    }

    /// Did the finished flow hand its slot to the next waiting event? The driver that polled
    /// it must then start that event (`Engine::take_handed_over`).
    pub(crate) fn handed_over(&self) -> bool {
        self.handed_over
    }

    fn call(&mut self, step: &dyn ErasedStep) {
        let event = self.ctx.event().clone();
        let ctx = self.ctx.clone();
        let fut = in_span(&self.span, || {
            catch_unwind(AssertUnwindSafe(|| step.call(event, ctx)))
        });
        self.step = Some(match fut {
            Ok(f) => f,
            Err(panic) => {
                let msg = panic_message(&*panic);
                let e = Error::panic(self.ctx.node_id(), &msg);
                Box::pin(futures::future::ready(Err(e)))
            }
        });
    }

    /// Gives the slot back, counts the flow and answers the sender — in that order, so a
    /// sender that got its answer sees the flow counted and no longer active.
    fn finish(&mut self, outcome: Result<Value>) {
        self.step = None; // drop the step first: its cleanup runs before the sender hears back
        self.finished = true;
        let lane = self.lane.take();
        let node = self.ctx.node();
        if let Some(started) = self.started {
            node.engine().record_handler_time(started.elapsed());
        }
        if self.in_driver
            && lane.is_none()
            && let Some(effects) = node.engine().hand_over()
        {
            self.handed_over = true;
            node.apply(effects);
        } else {
            node.release(lane);
        }
        // A stream stopped because its consumer went away is what the consumer asked for.
        let consumer_gone = outcome.is_err()
            && self
                .ctx
                .inner
                .stream
                .active()
                .is_some_and(|s| s.is_cancelled());
        if consumer_gone {
            node.engine().count_cancelled(self.weight);
        } else {
            node.engine().count_finished(outcome.is_err(), self.weight);
        }
        let outcome = outcome.map_err(|e| e.at_flow(node.id(), self.ctx.event().id()));
        if let Err(e) = &outcome {
            let _g = self.span.enter();
            tracing::debug!(error = %e, kind = %e.kind(), "flow failed");
        }
        // Without the stream's lock when the flow alone holds its context (the usual case:
        // the step, dropped above, took the other handle).
        let delivered = match Arc::get_mut(&mut self.ctx.inner) {
            Some(st) => st.stream.finish_alone(outcome),
            None => self.ctx.inner.stream.finish(outcome),
        };
        match delivered {
            // A stream cancelled because its consumer went away is what the consumer asked
            // for, not a failure nobody saw.
            Delivered::Unobserved(Err(e)) if e.kind() != ErrorKind::Cancelled => {
                self.ctx
                    .node()
                    .flow_failure_unobserved(self.ctx.event(), &e);
            }
            Delivered::Unobserved(Ok(v)) => crate::json::drop_value(v),
            Delivered::Unobserved(Err(_)) | Delivered::Yes => {}
        }
    }
}

impl Future for FlowTask {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<()> {
        let this = &mut *self;
        if this.finished {
            return Poll::Ready(());
        }
        loop {
            if let Some(s) = this.ctx.inner.stream.active() {
                s.register(cx);
                if s.is_cancelled() {
                    this.finish(Err(Error::cancelled()));
                    return Poll::Ready(());
                }
            }
            let Some(fut) = this.step.as_mut() else {
                this.finish(Err(Error::cancelled()));
                return Poll::Ready(());
            };
            let span = &this.span;
            let polled = in_span(span, || {
                catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(cx)))
            });
            match polled {
                Err(panic) => {
                    let msg = panic_message(&*panic);
                    let e = Error::panic(this.ctx.node_id(), &msg);
                    tracing::warn!(parent: &this.span, error = %e, "handler panicked");
                    this.finish(Err(e));
                    return Poll::Ready(());
                }
                Ok(Poll::Pending) => return Poll::Pending,
                Ok(Poll::Ready(Ok(Flow::Next(step)))) => {
                    this.depth += 1;
                    let max = this.ctx.node().max_chain_depth();
                    if this.depth >= max {
                        let e = Error::too_many_steps(this.ctx.node_id(), max);
                        this.finish(Err(e));
                        return Poll::Ready(());
                    }
                    this.call(&*step.0);
                }
                Ok(Poll::Ready(Ok(Flow::Done(v)))) => {
                    this.finish(Ok(v));
                    return Poll::Ready(());
                }
                Ok(Poll::Ready(Err(e))) => {
                    this.finish(Err(e));
                    return Poll::Ready(());
                }
            }
        }
    }
}

impl Drop for FlowTask {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        // Dropped before finishing: cancelled by shutdown (or its task was torn down).
        self.step = None;
        self.finished = true;
        let node = self.ctx.node().clone();
        node.release(self.lane.take());
        node.engine().count_finished(true, self.weight);
        let e = Error::shut_down(self.ctx.node_id());
        if let Delivered::Unobserved(Err(e)) = self.ctx.inner.stream.finish(Err(e)) {
            node.flow_failure_unobserved(self.ctx.event(), &e);
        }
    }
}
