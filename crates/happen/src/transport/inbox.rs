//! [`Inbox`]: a node's entrance, as a transport sees it.

use std::fmt;

use tokio::sync::watch;

use crate::admission::{NodeStats, Pressure};
use crate::config::Limits;
use crate::error::{Error, Result};
use crate::event::Event;
use crate::id::NodeId;
use crate::node::Node;
use crate::stream::{
    BroadcastItems, BroadcastRole, BroadcastSource, FeedSubscription, ReplySender,
};

/// A node's entrance, handed to a [`Transport`](super::Transport) by
/// [`Transport::attach`](super::Transport::attach). Cheap to clone; it keeps the node alive,
/// so drop it when the node is detached.
///
/// A transport from scratch, routing by node id to the inboxes it was given:
///
/// ```
/// use std::collections::HashMap;
/// use std::sync::{Arc, Mutex};
///
/// use futures::future::BoxFuture;
/// use happen::transport::{ErrorParts, Inbox, ReplySender, Transport};
/// use happen::{Context, ErrorKind, Event, Happen, NodeId};
///
/// #[derive(Default, Clone)]
/// struct Routes(Arc<Mutex<HashMap<NodeId, Inbox>>>);
///
/// impl Transport for Routes {
///     fn attach(&self, inbox: Inbox) -> BoxFuture<'_, happen::Result<()>> {
///         self.0.lock().unwrap().insert(inbox.id().clone(), inbox);
///         Box::pin(async { Ok(()) })
///     }
///     fn detach(&self, node: &NodeId) -> BoxFuture<'_, ()> {
///         self.0.lock().unwrap().remove(node);
///         Box::pin(async {})
///     }
///     fn send(&self, target: &NodeId, event: Event, reply: Option<ReplySender>) -> happen::Result<()> {
///         let inbox = self.0.lock().unwrap().get(target).cloned();
///         match inbox {
///             Some(inbox) => inbox.deliver(event, reply),
///             None => {
///                 let mut parts = ErrorParts::new(ErrorKind::UnknownNode, format!("no node `{target}`"));
///                 parts.node = Some(target.clone());
///                 Err(parts.into_error())
///             }
///         }
///     }
///     fn broadcast(&self, event: Event) -> happen::Result<()> {
///         // (A complete transport also gives a streaming receiver's items to the others:
///         // see `streams`, `deliver_producer` and `deliver_with_items`.)
///         let inboxes: Vec<Inbox> = self.0.lock().unwrap().values().cloned().collect();
///         let takes = |i: &&Inbox| i.receives_broadcasts() && i.accepts(event.event_type());
///         for inbox in inboxes.iter().filter(takes) {
///             if let Err(e) = inbox.deliver(event.clone(), None) {
///                 inbox.report_unobserved(&e); // nobody awaits a broadcast
///             }
///         }
///         Ok(())
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
/// let routes = Routes::default();
/// let happen = Happen::builder().transport(routes.clone()).build()?;
/// let echo = happen.node("echo").await?;
/// echo.on("say", |event: Event, _c: Context| async move { event.payload().clone() })?;
/// assert_eq!(echo.send("echo", Event::new("say", "hi")).await?, "hi");
/// let err = echo.send("nobody", Event::new("say", "hi")).await.unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::UnknownNode);
///
/// let inbox = routes.0.lock().unwrap()["echo"].clone();
/// assert_eq!(inbox.id(), "echo");
/// assert!(inbox.accepts("say") && !inbox.streams("say"));
/// assert_eq!(inbox.limits().max_concurrent, 100);
/// assert_eq!(inbox.stats().completed, 1);
/// assert!(!inbox.pressure().under_pressure);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Inbox {
    pub(super) node: Node,
}

impl Inbox {
    pub(crate) fn new(node: Node) -> Inbox {
        Inbox { node }
    }

    /// The node's id.
    pub fn id(&self) -> &NodeId {
        self.node.id()
    }

    /// Admits `event` into the node (start now, queue, or reject), answering through `reply`
    /// (see the [type docs](Inbox) for an example, and [`Response`](super::Response) for what
    /// arrives through `reply`).
    ///
    /// The node's security gates (see [`security`](crate::security)) run first: decode
    /// events with [`received`](super::received) so a signature is verified against the
    /// bytes received.
    ///
    /// # Errors
    /// [`ErrorKind::QueueFull`](crate::ErrorKind::QueueFull) or
    /// [`ErrorKind::ShutDown`](crate::ErrorKind::ShutDown); refused by the node's gates:
    /// [`ErrorKind::Unauthenticated`](crate::ErrorKind::Unauthenticated),
    /// [`ErrorKind::Forbidden`](crate::ErrorKind::Forbidden) or
    /// [`ErrorKind::InvalidEvent`](crate::ErrorKind::InvalidEvent). The event is then not
    /// admitted and `reply` was dropped unanswered.
    pub fn deliver(&self, event: Event, reply: Option<ReplySender>) -> Result<()> {
        self.node.admit(event, reply.map(|r| r.0), None)
    }

    /// Holds back the wake-up of the node's drivers while this transport delivers several
    /// events in a row — what it read in one go — and wakes them once when the guard is
    /// dropped (if an event that can start arrived meanwhile). When a node's handlers are
    /// faster than the deliveries, each delivery would otherwise wake a parked driver (on
    /// another thread: a system call per event). Other senders' events are held back too
    /// while the guard lives, so keep it to a run of deliveries; the guard cannot be held
    /// across an `.await` in a task that may move between threads (it is not `Send`).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// # use happen::transport::{Inbox, LocalTransport, Transport};
    /// # use happen::{Context, Event, Happen};
    /// # use std::sync::{Arc, Mutex};
    /// # #[derive(Clone, Default)] struct Keep(Arc<LocalTransport>, Arc<Mutex<Option<Inbox>>>);
    /// # impl Transport for Keep {
    /// #     fn attach(&self, inbox: Inbox) -> futures::future::BoxFuture<'_, happen::Result<()>> {
    /// #         *self.1.lock().unwrap() = Some(inbox.clone());
    /// #         self.0.attach(inbox)
    /// #     }
    /// #     fn detach(&self, n: &happen::NodeId) -> futures::future::BoxFuture<'_, ()> { self.0.detach(n) }
    /// #     fn send(&self, t: &happen::NodeId, e: Event, r: Option<happen::transport::ReplySender>) -> happen::Result<()> { self.0.send(t, e, r) }
    /// #     fn broadcast(&self, e: Event) -> happen::Result<()> { self.0.broadcast(e) }
    /// # }
    /// # let keep = Keep::default();
    /// # let happen = Happen::builder().transport(keep.clone()).build()?;
    /// let node = happen.node("n").await?;
    /// node.on("tick", |_e: Event, _c: Context| async {})?;
    /// let inbox: Inbox = keep.1.lock().unwrap().clone().unwrap(); // as `attach` gave it
    /// {
    ///     let _held = inbox.hold_wakes();
    ///     for i in 0..100 {
    ///         inbox.deliver(Event::new("tick", i), None)?;
    ///     }
    /// } // one wake for the hundred
    /// while inbox.stats().completed < 100 {
    ///     tokio::task::yield_now().await;
    /// }
    /// # Ok(()) }
    /// ```
    pub fn hold_wakes(&self) -> HeldWakes<'_> {
        self.node.hold_wakes();
        HeldWakes {
            inbox: self,
            _not_send: std::marker::PhantomData,
        }
    }

    /// Starts up to `budget` of the node's flows that can start now in the calling task, as
    /// one of its drivers would — in admission order, each polled once, a flow that waits
    /// moved to a task of its own — and returns how many it started.
    ///
    /// For a transport's receive task, after a run of deliveries under
    /// [`hold_wakes`](Inbox::hold_wakes): the flows run on the thread that decoded their
    /// events, with no driver woken on another (a wake is a system call, and memory
    /// allocated on one thread and freed on another makes the allocator's threads contend).
    /// Over NATS this carries a broadcast in about three quarters of the time.
    ///
    /// A handler that blocks its thread must not stop the caller from reading its
    /// connection for long: a call stops once it has run flows for 250 µs, and the next 64
    /// calls then start nothing (the node's drivers run those flows, as without this call).
    /// With a `budget` of one, one call in 8 reads the clock (a handler slow from the first
    /// call is noticed at once, one that turns slow within 8 calls).
    /// `state` keeps what the call learns (the handler last looked up, a context to reuse,
    /// which holds the node until the next call or until `state` is dropped); keep one per
    /// calling task and node — used for another node, it starts afresh.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// # use happen::transport::{Inbox, LocalTransport, RunHere, Transport};
    /// # use happen::{Context, Event, Happen};
    /// # use std::sync::{Arc, Mutex};
    /// # #[derive(Clone, Default)] struct Keep(Arc<LocalTransport>, Arc<Mutex<Option<Inbox>>>);
    /// # impl Transport for Keep {
    /// #     fn attach(&self, inbox: Inbox) -> futures::future::BoxFuture<'_, happen::Result<()>> {
    /// #         *self.1.lock().unwrap() = Some(inbox.clone());
    /// #         self.0.attach(inbox)
    /// #     }
    /// #     fn detach(&self, n: &happen::NodeId) -> futures::future::BoxFuture<'_, ()> { self.0.detach(n) }
    /// #     fn send(&self, t: &happen::NodeId, e: Event, r: Option<happen::transport::ReplySender>) -> happen::Result<()> { self.0.send(t, e, r) }
    /// #     fn broadcast(&self, e: Event) -> happen::Result<()> { self.0.broadcast(e) }
    /// # }
    /// # let keep = Keep::default();
    /// # let happen = Happen::builder().transport(keep.clone()).build()?;
    /// let node = happen.node("n").await?;
    /// node.on("tick", |_e: Event, _c: Context| async {})?;
    /// let inbox: Inbox = keep.1.lock().unwrap().clone().unwrap(); // as `attach` gave it
    /// let mut here = RunHere::default(); // kept by the receive task
    /// let started = {
    ///     let _held = inbox.hold_wakes();
    ///     for i in 0..10 {
    ///         inbox.deliver(Event::new("tick", i), None)?;
    ///     }
    ///     inbox.run_here(&mut here, 64)
    /// }; // nothing left to start: no driver is woken
    /// assert_eq!(started, 10);
    /// assert_eq!(inbox.stats().completed, 10);
    /// # Ok(()) }
    /// ```
    pub fn run_here(&self, state: &mut RunHere, budget: usize) -> usize {
        self.node.run_here(&mut state.0, budget)
    }

    /// Does the node take broadcasts? `false` for a node made with
    /// [`NodeOptions::receive_broadcasts(false)`](crate::NodeOptions::receive_broadcasts): a
    /// transport delivers it none, and need not subscribe it to them.
    pub fn receives_broadcasts(&self) -> bool {
        self.node.receives_broadcasts()
    }

    /// Does the node have a handler for `event_type`?
    pub fn accepts(&self, event_type: &str) -> bool {
        self.node.accepts(event_type)
    }

    /// Does the node's handler for `event_type` stream (take an
    /// [`Emitter`](crate::Emitter))? For a broadcast, such a node produces the stream the other
    /// receivers read.
    pub fn streams(&self, event_type: &str) -> bool {
        self.node.streams(event_type)
    }

    /// Admits a broadcast `event` whose stream is produced elsewhere: the node's flow reads
    /// the items of `items` through [`Context::items`](crate::Context::items).
    ///
    /// ```
    /// # use std::sync::{Arc, Mutex};
    /// # use futures::future::BoxFuture;
    /// # use happen::transport::{Inbox, LocalTransport, ReplySender, Transport};
    /// # use happen::NodeId;
    /// # /// The in-process transport, keeping a copy of every inbox it is given.
    /// # #[derive(Default, Clone)]
    /// # struct Capture { local: Arc<LocalTransport>, inboxes: Arc<Mutex<Vec<Inbox>>> }
    /// # impl Capture {
    /// #     fn inbox(&self, id: &str) -> Inbox {
    /// #         self.inboxes.lock().unwrap().iter().find(|i| i.id() == id).unwrap().clone()
    /// #     }
    /// # }
    /// # impl Transport for Capture {
    /// #     fn attach(&self, inbox: Inbox) -> BoxFuture<'_, happen::Result<()>> {
    /// #         self.inboxes.lock().unwrap().push(inbox.clone());
    /// #         self.local.attach(inbox)
    /// #     }
    /// #     fn detach(&self, node: &NodeId) -> BoxFuture<'_, ()> { self.local.detach(node) }
    /// #     fn send(&self, t: &NodeId, e: happen::Event, r: Option<ReplySender>) -> happen::Result<()> {
    /// #         self.local.send(t, e, r)
    /// #     }
    /// #     fn broadcast(&self, e: happen::Event) -> happen::Result<()> { self.local.broadcast(e) }
    /// # }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// # let transport = Capture::default();
    /// # let happen = happen::Happen::builder().transport(transport.clone()).build()?;
    /// use futures::StreamExt;
    /// use happen::transport::BroadcastFeed;
    /// use happen::{Context, Event};
    ///
    /// let dashboard = happen.node("dashboard").await?;
    /// let (tx, rx) = tokio::sync::oneshot::channel();
    /// let tx = std::sync::Mutex::new(Some(tx));
    /// dashboard.on("metrics", move |_e: Event, ctx: Context| {
    ///     let tx = tx.lock().unwrap().take();
    ///     async move {
    ///         let items: Vec<_> = ctx.items().unwrap().collect().await;
    ///         tx.unwrap().send(items.len()).unwrap();
    ///     }
    /// })?;
    ///
    /// // A broadcast stream arrives from another process: feed it to the local subscriber.
    /// let inbox = transport.inbox("dashboard"); // as `attach` received it
    /// let feed = BroadcastFeed::new(64);
    /// let event: Event = serde_json::from_str(r#"{"type": "metrics"}"#).unwrap();
    /// inbox.deliver_with_items(event, feed.subscribe())?;
    /// feed.item(serde_json::json!(0.5));
    /// feed.item(serde_json::json!(0.7));
    /// feed.end(Ok(serde_json::Value::Null));
    /// assert_eq!(rx.await.unwrap(), 2);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`deliver`](Inbox::deliver).
    pub fn deliver_with_items(&self, event: Event, items: FeedSubscription) -> Result<()> {
        self.node
            .admit(event, None, Some(BroadcastRole::Subscriber(items.0)))
    }

    /// Admits a broadcast `event` that this node's streaming handler produces a stream for,
    /// and returns the items it produces (to forward to subscribers elsewhere). If the
    /// transport reads them slower than they are produced it sees
    /// [`StreamItem::Lagged`](crate::stream::StreamItem::Lagged), never blocks the producer.
    ///
    /// ```
    /// # use std::sync::{Arc, Mutex};
    /// # use futures::future::BoxFuture;
    /// # use happen::transport::{Inbox, LocalTransport, ReplySender, Transport};
    /// # use happen::NodeId;
    /// # /// The in-process transport, keeping a copy of every inbox it is given.
    /// # #[derive(Default, Clone)]
    /// # struct Capture { local: Arc<LocalTransport>, inboxes: Arc<Mutex<Vec<Inbox>>> }
    /// # impl Capture {
    /// #     fn inbox(&self, id: &str) -> Inbox {
    /// #         self.inboxes.lock().unwrap().iter().find(|i| i.id() == id).unwrap().clone()
    /// #     }
    /// # }
    /// # impl Transport for Capture {
    /// #     fn attach(&self, inbox: Inbox) -> BoxFuture<'_, happen::Result<()>> {
    /// #         self.inboxes.lock().unwrap().push(inbox.clone());
    /// #         self.local.attach(inbox)
    /// #     }
    /// #     fn detach(&self, node: &NodeId) -> BoxFuture<'_, ()> { self.local.detach(node) }
    /// #     fn send(&self, t: &NodeId, e: happen::Event, r: Option<ReplySender>) -> happen::Result<()> {
    /// #         self.local.send(t, e, r)
    /// #     }
    /// #     fn broadcast(&self, e: happen::Event) -> happen::Result<()> { self.local.broadcast(e) }
    /// # }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// # let transport = Capture::default();
    /// # let happen = happen::Happen::builder().transport(transport.clone()).build()?;
    /// use futures::StreamExt;
    /// use happen::transport::StreamItem;
    /// use happen::{Context, Emitter, Event};
    ///
    /// let ticker = happen.node("ticker").await?;
    /// ticker.on("prices", |_e: Event, _c: Context, out: Emitter| async move {
    ///     out.emit(101).await?;
    ///     Ok::<_, happen::Error>("closed")
    /// })?;
    ///
    /// // A broadcast from another process reaches the local streaming node: forward its items.
    /// let inbox = transport.inbox("ticker"); // as `attach` received it
    /// assert!(inbox.streams("prices"));
    /// let mut items = inbox.deliver_producer(Event::new("prices", ()))?;
    /// assert_eq!(items.next().await.unwrap()?, StreamItem::Item(101.into()));
    /// assert!(items.next().await.is_none());
    /// assert_eq!(items.final_value().unwrap(), "closed");
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`deliver`](Inbox::deliver).
    pub fn deliver_producer(&self, event: Event) -> Result<BroadcastItems> {
        let source = BroadcastSource::new(self.node.broadcast_buffer());
        let tap = source
            .subscribe()
            .expect("a fresh broadcast source is unclaimed");
        self.node
            .admit(event, None, Some(BroadcastRole::Producer(source)))?;
        Ok(BroadcastItems::new(tap))
    }

    /// The node's admission limits (a transport may tell remote senders, so they can pace
    /// themselves).
    pub fn limits(&self) -> &Limits {
        self.node.limits()
    }

    /// The node's counters now (for a transport that reports them to remote monitors, such
    /// as `happen nodes`).
    pub fn stats(&self) -> NodeStats {
        self.node.stats()
    }

    /// The node's current backpressure state.
    pub fn pressure(&self) -> Pressure {
        self.node.pressure()
    }

    /// The node's backpressure changes (see [`Node::watch_pressure`] for an example): what
    /// a transport returns from [`Transport::pressure`](super::Transport::pressure), or
    /// forwards to remote senders.
    pub fn watch_pressure(&self) -> watch::Receiver<Pressure> {
        self.node.watch_pressure()
    }

    /// Records a failure that nobody will observe (logged at warn level and counted in the
    /// node's [`NodeStats::unobserved_failures`]), such as a broadcast the node rejected.
    pub fn report_unobserved(&self, err: &Error) {
        // a refusal of the node's security gate was counted (`denied`) and logged, at most
        // once a second, by the gate: not once more per event here
        if !self.node.refused_by_gate(err) {
            self.node.unobserved_failure(err);
        }
    }
}

impl fmt::Debug for Inbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inbox").field("node", self.id()).finish()
    }
}

/// What [`Inbox::run_here`] keeps between calls (its handler lookup and a spare flow
/// context), one per calling task.
#[derive(Default)]
pub struct RunHere(crate::node::Here);

impl fmt::Debug for RunHere {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunHere").finish_non_exhaustive()
    }
}

/// Holds back the wake-up of a node's drivers; see [`Inbox::hold_wakes`].
#[must_use = "the wakes are held only while the guard lives"]
pub struct HeldWakes<'a> {
    inbox: &'a Inbox,
    /// Not `Send`: the guard stays with one run of deliveries on one thread.
    _not_send: std::marker::PhantomData<*const ()>,
}

impl Drop for HeldWakes<'_> {
    fn drop(&mut self) {
        self.inbox.node.release_wakes();
    }
}

impl fmt::Debug for HeldWakes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeldWakes")
            .field("node", self.inbox.id())
            .finish()
    }
}
