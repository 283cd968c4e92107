//! The per-flow [`Context`]: data shared by the steps of one flow, and causal sends.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use parking_lot::Mutex;

use super::emitter::FlowStream;
use super::{Node, Target};
use crate::event::Event;
use crate::id::NodeId;
use crate::reply::Reply;
use crate::stream::{BroadcastItems, Frame};
use tokio::sync::broadcast;

type DataMap = HashMap<TypeId, Box<dyn Any + Send + Sync>>;

/// The context of one flow: shared by all its steps, separate from every other flow.
///
/// Steps store and read typed data here (one value per type; use a newtype to keep two values
/// of the same type apart), and send events that continue the flow's causal chain.
/// Cloning is cheap and clones share the same data.
///
/// ```
/// use happen::{Context, Event, Flow, Happen};
///
/// #[derive(Clone)]
/// struct Validated(bool);
///
/// async fn first(_e: Event, ctx: Context) -> Flow {
///     ctx.insert(Validated(true));
///     Flow::next(second)
/// }
/// async fn second(_e: Event, ctx: Context) -> bool {
///     ctx.get::<Validated>().map(|v| v.0).unwrap_or(false)
/// }
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
/// let happen = Happen::new();
/// let node = happen.node("n").await?;
/// node.on("go", first)?;
/// assert_eq!(node.send(&node, Event::new("go", ())).await?, true);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Context {
    pub(crate) inner: Arc<FlowState>,
}

pub(crate) struct FlowState {
    pub(crate) node: Node,
    pub(crate) event: Event,
    data: Mutex<Option<DataMap>>,
    pub(crate) stream: FlowStream,
    items: Mutex<Option<broadcast::Receiver<Frame>>>,
}

impl Context {
    pub(crate) fn new(
        node: Node,
        event: Event,
        stream: FlowStream,
        items: Option<broadcast::Receiver<Frame>>,
    ) -> Context {
        Context {
            inner: Arc::new(FlowState {
                node,
                event,
                data: Mutex::new(None),
                stream,
                items: Mutex::new(items),
            }),
        }
    }

    /// [`Context::new`], reusing the allocation of `spare` (a finished flow's context of the
    /// same node that nothing else holds; see [`Context::into_spare`]) when there is one.
    #[inline]
    pub(crate) fn new_reusing(
        spare: &mut Option<Context>,
        node: &Node,
        event: Event,
        stream: FlowStream,
        items: Option<broadcast::Receiver<Frame>>,
    ) -> Context {
        if let Some(mut ctx) = spare.take()
            && let Some(st) = Arc::get_mut(&mut ctx.inner)
            && Arc::ptr_eq(&st.node.shared, &node.shared)
        {
            st.event = event;
            st.stream.replace(stream);
            *st.items.get_mut() = items;
            return ctx;
        }
        Context::new(node.clone(), event, stream, items)
    }

    /// A finished flow's context, kept for [`Context::new_reusing`] if nothing else holds it
    /// (a handler may keep a clone). Its data and broadcast items are dropped now, as they
    /// would have been; only the event stays until the context is reused or dropped (a
    /// driver that parks drops its payload first, see [`Context::drop_payload`]). Not kept
    /// when the event carries a broadcast stream, whose end its subscribers would otherwise
    /// see late.
    #[inline]
    pub(crate) fn into_spare(mut self) -> Option<Context> {
        let st = Arc::get_mut(&mut self.inner)?;
        if st.stream.has_broadcast() {
            return None;
        }
        *st.data.get_mut() = None;
        *st.items.get_mut() = None;
        Some(self)
    }

    /// Drops the payload of a spare context's event (see [`Context::into_spare`]), so a
    /// parked driver keeps no payload; nothing happens if the event is shared.
    pub(crate) fn drop_payload(&mut self) {
        if let Some(st) = Arc::get_mut(&mut self.inner) {
            st.event.drop_payload();
        }
    }

    /// The items of the broadcast stream this flow's event carries, if any (taken once).
    ///
    /// A broadcast carries a stream when it reaches a node whose matching handler streams
    /// (takes an [`Emitter`](crate::Emitter)): that handler produces, every other receiving
    /// node's flow reads the items here, each at its own pace (see
    /// [`BroadcastItems`](crate::stream::BroadcastItems) for the lag policy).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// use futures::StreamExt;
    /// use happen::stream::StreamItem;
    /// use happen::{Context, Emitter, Event, Happen};
    ///
    /// let happen = Happen::new();
    /// let monitor = happen.node("monitor").await?;
    /// monitor.on("metrics", |_e: Event, _c: Context, emit: Emitter| async move {
    ///     for cpu in [10, 20, 30] {
    ///         emit.emit(cpu).await?;
    ///     }
    ///     Ok::<_, happen::Error>("done")
    /// })?;
    /// let dashboard = happen.node("dashboard").await?;
    /// let (tx, rx) = tokio::sync::oneshot::channel();
    /// let tx = std::sync::Mutex::new(Some(tx));
    /// dashboard.on("metrics", move |_e: Event, ctx: Context| {
    ///     let tx = tx.lock().unwrap().take();
    ///     async move {
    ///         let mut items = ctx.items().expect("a broadcast stream");
    ///         let mut seen = Vec::new();
    ///         while let Some(item) = items.next().await {
    ///             if let StreamItem::Item(v) = item? {
    ///                 seen.push(v);
    ///             }
    ///         }
    ///         if let Some(tx) = tx { let _ = tx.send(seen); }
    ///         Ok::<_, happen::Error>(())
    ///     }
    /// })?;
    /// monitor.broadcast(Event::new("metrics", ()))?;
    /// assert_eq!(rx.await.unwrap(), [10, 20, 30]);
    /// # Ok(()) }
    /// ```
    pub fn items(&self) -> Option<BroadcastItems> {
        self.inner.items.lock().take().map(BroadcastItems::new)
    }

    /// Stores `value`, returning the previous value of the same type. One value per type:
    /// wrap values in newtypes to keep two of one type apart.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// use happen::{Context, Event, Flow, Happen};
    ///
    /// #[derive(Clone)]
    /// struct UserId(u64);
    ///
    /// async fn authenticate(_e: Event, ctx: Context) -> Flow {
    ///     ctx.insert(UserId(42));
    ///     Flow::next(greet)
    /// }
    /// async fn greet(_e: Event, ctx: Context) -> String {
    ///     format!("hello, user {}", ctx.get::<UserId>().map_or(0, |u| u.0))
    /// }
    ///
    /// let happen = Happen::new();
    /// let web = happen.node("web").await?;
    /// web.on("visit", authenticate)?;
    /// assert_eq!(web.send(&web, Event::new("visit", ())).await?, "hello, user 42");
    /// # Ok(()) }
    /// ```
    pub fn insert<T: Send + Sync + 'static>(&self, value: T) -> Option<T> {
        let mut data = self.inner.data.lock();
        data.get_or_insert_with(HashMap::new)
            .insert(TypeId::of::<T>(), Box::new(value))
            .and_then(|old| old.downcast::<T>().ok().map(|b| *b))
    }

    /// A clone of the stored value of type `T` (see [`insert`](Context::insert)); `None` if
    /// this flow stored none. For a value that is not `Clone`, or to avoid the clone, use
    /// [`with`](Context::with) or [`remove`](Context::remove).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// use happen::{Context, Event, Flow, Happen};
    ///
    /// #[derive(Clone)]
    /// struct Cart(Vec<&'static str>);
    ///
    /// async fn fill(_e: Event, ctx: Context) -> Flow {
    ///     ctx.insert(Cart(vec!["tea", "milk"]));
    ///     Flow::next(count)
    /// }
    /// async fn count(_e: Event, ctx: Context) -> usize {
    ///     assert!(ctx.get::<String>().is_none()); // nothing of that type
    ///     ctx.get::<Cart>().map_or(0, |cart| cart.0.len())
    /// }
    ///
    /// let happen = Happen::new();
    /// let shop = happen.node("shop").await?;
    /// shop.on("checkout", fill)?;
    /// assert_eq!(shop.send(&shop, Event::new("checkout", ())).await?, 2);
    /// # Ok(()) }
    /// ```
    pub fn get<T: Clone + Send + Sync + 'static>(&self) -> Option<T> {
        let data = self.inner.data.lock();
        data.as_ref()?
            .get(&TypeId::of::<T>())?
            .downcast_ref::<T>()
            .cloned()
    }

    /// Runs `f` on the stored value of type `T` in place (no clone); `None` if there is none.
    ///
    /// While `f` runs, the value is out of the context: `f` may call the other data methods
    /// (they see no value of type `T`), and a value of type `T` that `f` inserts is replaced by
    /// the one `f` worked on when it returns.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// use happen::{Context, Event, Flow, Happen};
    ///
    /// struct Attempts(u32);
    ///
    /// async fn start(_e: Event, ctx: Context) -> Flow {
    ///     ctx.insert(Attempts(1));
    ///     Flow::next(retry)
    /// }
    /// async fn retry(_e: Event, ctx: Context) -> Flow {
    ///     ctx.with(|a: &mut Attempts| a.0 += 2); // in place, no clone
    ///     Flow::next(report)
    /// }
    /// async fn report(_e: Event, ctx: Context) -> u32 {
    ///     ctx.with(|a: &mut Attempts| a.0).unwrap_or(0)
    /// }
    ///
    /// let happen = Happen::new();
    /// let retry = happen.node("retry").await?;
    /// retry.on("go", start)?;
    /// assert_eq!(retry.send(&retry, Event::new("go", ())).await?, 3);
    /// # Ok(()) }
    /// ```
    pub fn with<T: Send + Sync + 'static, R>(&self, f: impl FnOnce(&mut T) -> R) -> Option<R> {
        // Taken out for the call, so `f` may use the context (no lock is held while it runs).
        let mut value = self.remove::<T>()?;
        let out = f(&mut value);
        self.insert(value);
        Some(out)
    }

    /// Takes the stored value of type `T` out of the context; later steps no longer see it.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// use happen::{Context, Event, Flow, Happen};
    ///
    /// struct Token(String); // not Clone: moved out at the end
    ///
    /// async fn login(_e: Event, ctx: Context) -> Flow {
    ///     ctx.insert(Token("secret".into()));
    ///     Flow::next(finish)
    /// }
    /// async fn finish(_e: Event, ctx: Context) -> String {
    ///     let token = ctx.remove::<Token>().expect("login stored it");
    ///     assert!(ctx.remove::<Token>().is_none()); // gone now
    ///     token.0
    /// }
    ///
    /// let happen = Happen::new();
    /// let auth = happen.node("auth").await?;
    /// auth.on("login", login)?;
    /// assert_eq!(auth.send(&auth, Event::new("login", ())).await?, "secret");
    /// # Ok(()) }
    /// ```
    pub fn remove<T: Send + Sync + 'static>(&self) -> Option<T> {
        let mut data = self.inner.data.lock();
        data.as_mut()?
            .remove(&TypeId::of::<T>())
            .and_then(|old| old.downcast::<T>().ok().map(|b| *b))
    }

    /// The node-level state of type `T`, shared by every flow of this node (given with
    /// [`NodeOptions::state`](crate::NodeOptions::state)); `None` if the node has none of that
    /// type. Unlike [`get`](Context::get), which reads this flow's own data, the value is the
    /// same for every flow and lives as long as the node.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// use std::sync::atomic::{AtomicU64, Ordering};
    /// use happen::{Context, Event, Flow, Happen, NodeOptions};
    ///
    /// struct Hits(AtomicU64);
    ///
    /// async fn count(_e: Event, ctx: Context) -> Flow {
    ///     ctx.state::<Hits>().unwrap().0.fetch_add(1, Ordering::Relaxed);
    ///     Flow::next(report) // every step of the flow sees the same state
    /// }
    /// async fn report(_e: Event, ctx: Context) -> u64 {
    ///     ctx.state::<Hits>().unwrap().0.load(Ordering::Relaxed)
    /// }
    ///
    /// let happen = Happen::new();
    /// let options = NodeOptions::new().state(Hits(AtomicU64::new(0)));
    /// let counter = happen.node_with("counter", options).await?;
    /// counter.on("hit", count)?;
    /// counter.send(&counter, Event::new("hit", ())).await?;
    /// assert_eq!(counter.send(&counter, Event::new("hit", ())).await?, 2);
    /// assert!(counter.state::<String>().is_none());
    /// # Ok(()) }
    /// ```
    pub fn state<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.inner.node.state::<T>()
    }

    /// The node running this flow (a handle: clone it to keep it).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// use happen::{Context, Event, Happen};
    ///
    /// let happen = Happen::new();
    /// let node = happen.node("worker").await?;
    /// node.on("load", |_e: Event, ctx: Context| async move {
    ///     ctx.node().stats().active // the flows of this node running now: this one
    /// })?;
    /// assert_eq!(node.send(&node, Event::new("load", ())).await?, 1);
    /// # Ok(()) }
    /// ```
    pub fn node(&self) -> &Node {
        &self.inner.node
    }

    /// The id of the node running this flow (shorthand for `ctx.node().id()`).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// use happen::{Context, Event, Happen};
    ///
    /// let happen = Happen::new();
    /// let node = happen.node("worker-7").await?;
    /// node.on("whoami", |_e: Event, ctx: Context| async move { ctx.node_id().to_string() })?;
    /// assert_eq!(node.send(&node, Event::new("whoami", ())).await?, "worker-7");
    /// # Ok(()) }
    /// ```
    pub fn node_id(&self) -> &NodeId {
        self.inner.node.id()
    }

    /// The event that started this flow. Every step gets it as its first argument too; a
    /// step that took a [`Json<T>`](crate::Json) reads the rest of the event here.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// use happen::{Context, Event, Happen, Json};
    ///
    /// let happen = Happen::new();
    /// let node = happen.node("n").await?;
    /// node.on("order", |Json(qty): Json<u32>, ctx: Context| async move {
    ///     format!("{qty} from {}", ctx.event().sender())
    /// })?;
    /// let web = happen.node("web").await?;
    /// assert_eq!(web.send(&node, Event::new("order", 3)).await?, "3 from web");
    /// # Ok(()) }
    /// ```
    pub fn event(&self) -> &Event {
        &self.inner.event
    }

    /// This node's stored state of type `S` (see [`Node::stored`]); changes made through it
    /// carry this flow's event as their [`Change`](crate::stored::Change) (id, causation,
    /// correlation, type, sender, time), which [`history`](crate::stored::Stored::history)
    /// and [`when`](crate::stored::Stored::when) read back.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// use happen::{Context, Event, Happen};
    ///
    /// let happen = Happen::new();
    /// let node = happen.node("counter").await?;
    /// node.on("bump", |e: Event, ctx: Context| async move {
    ///     ctx.stored::<u32>().update(|n| *n += 1).await?;
    ///     Ok::<_, happen::Error>(e.id().to_string())
    /// })?;
    /// let id = node.send(&node, Event::new("bump", ())).await?;
    /// let last = node.stored::<u32>().history().await?.pop().expect("one revision");
    /// assert_eq!(last.change.expect("made in a flow").event_id.to_string(), id);
    /// # Ok(()) }
    /// ```
    pub fn stored<S>(&self) -> crate::stored::Stored<S> {
        let node = &self.inner.node;
        crate::stored::Stored::new(
            node.shared.scope.store.clone(),
            node.id().clone(),
            Some(self.inner.event.clone()),
        )
    }

    /// A view into another node's stored state (see [`Happen::view`](crate::Happen::view)).
    ///
    /// # Errors
    /// As [`Happen::view`](crate::Happen::view).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// use happen::{Context, Event, Happen};
    ///
    /// let happen = Happen::new();
    /// happen.node("inventory").await?.stored::<u32>().update(|n| *n = 3).await?;
    /// let orders = happen.node("orders").await?;
    /// orders.on("can-order", |_e: Event, ctx: Context| async move {
    ///     let stock = ctx.view::<u32>("inventory").await?.map_or(0, |v| v.value);
    ///     Ok::<_, happen::Error>(stock > 0)
    /// })?;
    /// assert_eq!(orders.send(&orders, Event::new("can-order", ())).await?, true);
    /// # Ok(()) }
    /// ```
    pub async fn view<S: serde::de::DeserializeOwned + Default>(
        &self,
        id: &str,
    ) -> crate::Result<Option<crate::stored::Versioned<S>>> {
        crate::store::stored::view(&self.inner.node.shared.scope.store, id).await
    }

    /// [`view`](Context::view) of several nodes (see [`Happen::collect`](crate::Happen::collect)).
    ///
    /// # Errors
    /// As [`Happen::view`](crate::Happen::view).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// use happen::{Context, Event, Happen};
    ///
    /// let happen = Happen::new();
    /// happen.node("a").await?.stored::<u32>().update(|n| *n = 2).await?;
    /// happen.node("b").await?.stored::<u32>().update(|n| *n = 5).await?;
    /// let sum = happen.node("sum").await?;
    /// sum.on("total", |_e: Event, ctx: Context| async move {
    ///     let all = ctx.collect::<u32>(&["a", "b"]).await?;
    ///     Ok::<_, happen::Error>(all.iter().map(|(_, v)| v.value).sum::<u32>())
    /// })?;
    /// assert_eq!(sum.send(&sum, Event::new("total", ())).await?, 7);
    /// # Ok(()) }
    /// ```
    pub async fn collect<S: serde::de::DeserializeOwned + Default>(
        &self,
        ids: &[&str],
    ) -> crate::Result<Vec<(NodeId, crate::stored::Versioned<S>)>> {
        crate::store::stored::collect(&self.inner.node.shared.scope.store, ids).await
    }

    /// Global state (see [`Happen::global`](crate::Happen::global)); changes carry this
    /// flow's event as their causal context.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// use happen::{Context, Event, Happen};
    ///
    /// let happen = Happen::new();
    /// let n = happen.node("n").await?;
    /// n.on("remember", |e: Event, ctx: Context| async move {
    ///     ctx.global().set("last", e.payload()).await.map(|_| ())
    /// })?;
    /// n.send(&n, Event::new("remember", "tea")).await?;
    /// assert_eq!(happen.global().get::<String>("last").await?.as_deref(), Some("tea"));
    /// # Ok(()) }
    /// ```
    pub fn global(&self) -> crate::stored::Global {
        crate::stored::Global::new(
            self.inner.node.shared.scope.store.clone(),
            Some(self.inner.event.clone()),
        )
    }

    /// Sends `event` to `target` as a consequence of this flow's event: causation is this
    /// flow's event, the correlation id is inherited and the path extended with this node.
    /// Otherwise identical to [`Node::send`]: await the [`Reply`], stream it, or drop it.
    ///
    /// A chain longer than `flow.max_chain_depth` nodes fails with
    /// [`ErrorKind::ChainTooDeep`](crate::ErrorKind::ChainTooDeep) (an event loop between
    /// nodes). An error the reply returns and the step passes on (with `?`) ends this flow
    /// with [`ErrorKind::Downstream`](crate::ErrorKind::Downstream).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// use happen::{Context, Event, Happen};
    /// use serde_json::json;
    ///
    /// let happen = Happen::new();
    /// let inventory = happen.node("inventory").await?;
    /// inventory.on("reserve", |event: Event, _c: Context| async move {
    ///     json!({"reserved": event.payload()["qty"], "txn": event.correlation_id()})
    /// })?;
    /// let orders = happen.node("orders").await?;
    /// orders.on("order", |event: Event, ctx: Context| async move {
    ///     let qty = event.payload()["qty"].clone();
    ///     let reserved = ctx.send("inventory", Event::new("reserve", json!({"qty": qty}))).await?;
    ///     Ok::<_, happen::Error>(json!({"reservation": reserved, "txn": event.correlation_id()}))
    /// })?;
    /// let out = orders.send(&orders, Event::new("order", json!({"qty": 2}))).await?;
    /// assert_eq!(out["reservation"]["reserved"], 2);
    /// assert_eq!(out["reservation"]["txn"], out["txn"]); // one transaction
    /// # Ok(()) }
    /// ```
    pub fn send<'t>(&self, target: impl Into<Target<'t>>, event: Event) -> Reply {
        self.inner
            .node
            .send_inner(target.into(), event, Some(&self.inner.event))
    }

    /// [`Node::send_batch`](crate::Node::send_batch) from inside the flow: every event of the
    /// batch is caused by the flow's event and joins its transaction.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// use happen::{Batch, Context, Event, Happen};
    ///
    /// let happen = Happen::new();
    /// let store = happen.node("store").await?;
    /// store.on_batch("row", |batch: Batch, _c: Context| async move { batch.len() })?;
    /// let import = happen.node("import").await?;
    /// import.on("file", |_e: Event, ctx: Context| async move {
    ///     let rows = (0..3).map(|i| Event::new("row", i));
    ///     ctx.send_batch("store", rows).await
    /// })?;
    /// assert_eq!(import.send(&import, Event::new("file", ())).await?, 3);
    /// # Ok(()) }
    /// ```
    pub fn send_batch<'t>(
        &self,
        target: impl Into<Target<'t>>,
        events: impl IntoIterator<Item = Event>,
    ) -> Reply {
        self.inner
            .node
            .send_batch_inner(target.into(), events, Some(&self.inner.event))
    }

    /// [`Node::send_all`] from inside the flow: every target gets its own copy of `event`,
    /// caused by the flow's event and in its transaction (shared causation and correlation
    /// ids, each copy its own event id).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// use happen::{Context, Event, Happen, Node};
    ///
    /// let happen = Happen::new();
    /// let a = happen.node("a").await?;
    /// let b = happen.node("b").await?;
    /// Node::on_all([&a, &b], "price", |_e: Event, _c: Context| async { 10 })?;
    /// let shop = happen.node("shop").await?;
    /// shop.on("order", |_e: Event, ctx: Context| async move {
    ///     let all = ctx.send_all(["a", "b"], Event::new("price", ())).await?;
    ///     let total: u64 = all.all_ok()?.iter().filter_map(|v| v.as_u64()).sum();
    ///     Ok::<_, happen::Error>(total)
    /// })?;
    /// assert_eq!(shop.send(&shop, Event::new("order", ())).await?, 20);
    /// # Ok(()) }
    /// ```
    pub fn send_all<'t, I>(&self, targets: I, event: Event) -> crate::node::SendAll
    where
        I: IntoIterator,
        I::Item: Into<Target<'t>>,
    {
        self.inner.node.send_all_inner(
            targets.into_iter().map(Into::into).collect(),
            event,
            Some(&self.inner.event),
        )
    }

    /// Broadcasts `event` as a consequence of this flow's event (see [`Context::send`] for
    /// the causal context, [`Node::broadcast`] for the delivery).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// use happen::{Context, Event, Happen};
    ///
    /// let happen = Happen::new();
    /// let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    /// let mailer = happen.node("mailer").await?;
    /// mailer.on("order.shipped", move |event: Event, _c: Context| {
    ///     let tx = tx.clone();
    ///     async move { tx.send(event.causation_id().cloned()).ok(); }
    /// })?;
    /// let warehouse = happen.node("warehouse").await?;
    /// warehouse.on("ship", |event: Event, ctx: Context| async move {
    ///     ctx.broadcast(Event::new("order.shipped", ()))?;
    ///     Ok::<_, happen::Error>(event.id().to_string())
    /// })?;
    /// let ship_id = warehouse.send(&warehouse, Event::new("ship", ())).await?;
    /// let caused_by = rx.recv().await.unwrap().expect("a caused event");
    /// assert_eq!(caused_by.to_string(), ship_id); // the shipping event caused it
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`Node::broadcast`].
    pub fn broadcast(&self, event: Event) -> crate::Result<()> {
        self.inner
            .node
            .broadcast_inner(event, Some(&self.inner.event))
    }
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("node", self.inner.node.id())
            .field("event", self.inner.event.id())
            .finish_non_exhaustive()
    }
}
