//! Events: a type, a JSON payload and the causal context ([`Event`], [`Causal`],
//! [`EventType`]), and event-type [`pattern`]s. The types are also at the crate root.

use std::fmt;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, ErrorKind, Result};
use crate::id::{CorrelationId, EventId, NodeId, SharedStr};

mod clock;
mod ext;
pub mod pattern;
mod storage;

pub(crate) use clock::now_ms;
pub(crate) use ext::{Ext, is_known_context_field};
pub use ext::{Integrity, Origin};

/// An event: a type (`order.created`), a payload, a priority and its causal context.
///
/// Events are immutable once sent and cheap to clone (the contents are shared), so the same
/// event reaches every broadcast receiver and every step of a flow without copying.
/// The causal context (id, sender, causation, correlation, path, timestamp) is filled in when the
/// event is sent: from a [`Node`](crate::Node) it starts a new transaction, from a flow's
/// [`Context`](crate::Context) it continues the transaction of the event being handled.
///
/// ```
/// use happen::Event;
/// use serde_json::json;
///
/// let event = Event::new("order.created", json!({"id": 42})).with_priority(5);
/// assert_eq!(event.event_type(), "order.created");
/// assert_eq!(event.payload()["id"], 42);
/// assert_eq!(event.priority(), 5);
/// ```
///
/// # Wire form
/// `Event` implements `Serialize` and `Deserialize` in Happen's reference JSON shape, which
/// transports put on the wire:
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
/// use happen::{Context, Event, Happen};
/// use serde_json::json;
///
/// let happen = Happen::new();
/// let node = happen.node("svc").await?;
/// node.on("order.created", |event: Event, _c: Context| async move {
///     serde_json::to_value(&event).unwrap() // the event as it arrived, stamped
/// })?;
/// let wire = node.send(&node, Event::new("order.created", json!({"id": 1}))).await?;
/// assert_eq!(wire["type"], "order.created");
/// assert_eq!(wire["payload"], json!({"id": 1}));
/// assert_eq!(wire["context"]["causal"]["sender"], "svc");
/// assert!(wire["context"]["causal"]["correlationId"].as_str().unwrap().starts_with("txn-"));
///
/// // Reading it back; missing causal fields of a foreign producer are filled in.
/// let back: Event = serde_json::from_value(json!({"type": "ping"})).unwrap();
/// assert_eq!(back.event_type(), "ping");
/// assert!(back.id().to_string().starts_with("evt-"));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Event {
    inner: Arc<EventInner>,
}

/// Drops the handle; the last one gives its storage back for reuse (see `storage`).
impl Drop for Event {
    fn drop(&mut self) {
        storage::recycle(&mut self.inner);
    }
}

#[derive(Clone)]
struct EventInner {
    event_type: SharedStr,
    payload: Value,
    priority: i32,
    causal: Causal,
    /// A correlation id the user asked for on a root event.
    explicit_correlation: Option<CorrelationId>,
    /// Origin source, hash, signature, unknown context fields: `None` for most events, so
    /// they allocate nothing for it.
    ext: Option<Box<Ext>>,
    /// Where this event's contents come from (not serialized).
    arrival: Arrival,
}

/// Where an event's contents come from, for the security gates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub(crate) enum Arrival {
    /// Made or stamped in this process: its sender is a node of this process.
    #[default]
    Local,
    /// Decoded from the wire: its sender is what the body claims.
    Wire,
    /// Decoded from a durable (JetStream) delivery: a redelivery is not a replay.
    Durable,
}

/// The causal context of an event (Happen's `context.causal`), read with
/// [`Event::causal`] (or the shorthands [`Event::id`], [`Event::sender`], ...).
///
/// It is filled in when the event is sent: a root event (sent from a [`Node`](crate::Node))
/// has no causation and a new correlation id; an event sent from a flow's
/// [`Context`](crate::Context) names the event that caused it and keeps its correlation id
/// (see [`Event::causal`] for a chain).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
/// use happen::{Context, Event, Happen};
/// let happen = Happen::new();
/// let a = happen.node("a").await?;
/// let b = happen.node("b").await?;
/// b.on("ping", |event: Event, _ctx: Context| async move {
///     let causal = event.causal();
///     assert_eq!(causal.sender(), "a");
///     assert_eq!(causal.path(), ["a"]);
///     assert!(causal.causation_id().is_none()); // a root event
/// })?;
/// a.send(&b, Event::new("ping", ())).await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Causal {
    #[serde(default = "EventId::new")]
    id: EventId,
    #[serde(default = "empty_node")]
    sender: NodeId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    causation_id: Option<EventId>,
    #[serde(default = "CorrelationId::new")]
    correlation_id: CorrelationId,
    #[serde(default)]
    path: Path,
    #[serde(default = "now_ms")]
    timestamp: u64,
}

/// The path of an event: a root event's path is just its sender, stored without allocating.
#[derive(Clone)]
enum Path {
    One(NodeId),
    Many(Vec<NodeId>),
}

impl Default for Path {
    fn default() -> Self {
        Path::Many(Vec::new())
    }
}

impl Path {
    fn as_slice(&self) -> &[NodeId] {
        match self {
            Path::One(n) => std::slice::from_ref(n),
            Path::Many(v) => v,
        }
    }
}

impl PartialEq for Path {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl fmt::Debug for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

impl Serialize for Path {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.as_slice().serialize(s)
    }
}

impl<'de> Deserialize<'de> for Path {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Path;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a path (an array of node ids)")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<Path, A::Error> {
                // a root event's path has one node: no vector for it
                let Some(first) = seq.next_element::<NodeId>()? else {
                    return Ok(Path::Many(Vec::new()));
                };
                let Some(second) = seq.next_element::<NodeId>()? else {
                    return Ok(Path::One(first));
                };
                let mut path = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64) + 2);
                path.extend([first, second]);
                while let Some(n) = seq.next_element()? {
                    path.push(n);
                }
                Ok(Path::Many(path))
            }
        }
        d.deserialize_seq(V)
    }
}

impl EventInner {
    /// A new event's contents: no causal context until it is sent.
    fn unstamped(event_type: SharedStr, payload: Value) -> EventInner {
        EventInner {
            event_type,
            payload,
            priority: 0,
            causal: Causal::unassigned(),
            explicit_correlation: None,
            ext: None,
            arrival: Arrival::Local,
        }
    }

    /// Contents that allocate nothing (what a dropped handle points to, see `storage`).
    fn hole() -> EventInner {
        EventInner::unstamped(SharedStr::Static(""), Value::Null)
    }
}

fn empty_node() -> NodeId {
    NodeId::from_static("")
}

impl Causal {
    /// The causal context of an event not sent yet (allocates nothing).
    fn unassigned() -> Causal {
        Causal {
            id: EventId::unassigned(),
            sender: empty_node(),
            causation_id: None,
            correlation_id: CorrelationId::unassigned(),
            path: Path::default(),
            timestamp: 0,
        }
    }

    /// Back to [`Causal::unassigned`] (for recycled storage).
    fn reset(&mut self) {
        *self = Causal::unassigned();
    }

    /// This event's id (`evt-<uuid>`).
    pub fn id(&self) -> &EventId {
        &self.id
    }
    /// The node that sent the event (the empty id for an event not sent yet).
    pub fn sender(&self) -> &NodeId {
        &self.sender
    }
    /// The event whose handling caused this one; `None` for a root event.
    pub fn causation_id(&self) -> Option<&EventId> {
        self.causation_id.as_ref()
    }
    /// The transaction this event belongs to (`txn-<uuid>`), inherited along the chain.
    pub fn correlation_id(&self) -> &CorrelationId {
        &self.correlation_id
    }
    /// The node ids the chain has passed through, oldest first; the sender is last.
    pub fn path(&self) -> &[NodeId] {
        self.path.as_slice()
    }
    /// When the event was sent, in milliseconds since the Unix epoch (from a coarse clock:
    /// resolution of a few milliseconds).
    pub fn timestamp(&self) -> u64 {
        self.timestamp
    }
}

impl Event {
    /// A new event of `event_type` with a JSON payload (anything convertible into
    /// [`serde_json::Value`]: `json!(..)`, strings, numbers, `()` for none).
    /// For a typed payload use [`Event::json`].
    ///
    /// The type may be any `&str`, `String` or [`EventType`]; a `&str` is copied (one small
    /// allocation), an [`EventType::from_static`] is not. The type is checked when the event
    /// is sent (an empty type fails with [`ErrorKind::InvalidEvent`]); the causal context is
    /// filled in then too.
    ///
    /// ```
    /// use happen::Event;
    /// use serde_json::json;
    ///
    /// let order = Event::new("order.created", json!({"id": 42, "total": 9.5}));
    /// assert_eq!(order.payload()["total"], 9.5);
    ///
    /// let tick = Event::new("clock.tick", ()); // no payload: null
    /// assert!(tick.payload().is_null());
    /// assert_eq!(Event::new("greet", "ada").payload(), "ada");
    /// assert!(tick.id().to_string().is_empty()); // not sent yet: no id
    /// ```
    pub fn new(event_type: impl Into<EventType>, payload: impl Into<Value>) -> Event {
        Event {
            inner: storage::store_unstamped(event_type.into().0, payload.into()),
        }
    }

    /// A new event whose payload is `payload` serialized with serde.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidPayload`] if the value cannot be represented as JSON (for example a
    /// map with non-string keys).
    ///
    /// ```
    /// #[derive(serde::Serialize)]
    /// struct Order { id: u32 }
    /// let event = happen::Event::json("order.created", &Order { id: 7 })?;
    /// assert_eq!(event.payload()["id"], 7);
    /// # Ok::<(), happen::Error>(())
    /// ```
    pub fn json<T: Serialize + ?Sized>(
        event_type: impl Into<EventType>,
        payload: &T,
    ) -> Result<Event> {
        let value = serde_json::to_value(payload).map_err(|e| {
            Error::new(
                ErrorKind::InvalidPayload,
                format!("payload cannot be serialized to JSON: {e}"),
            )
            .with_source(e)
        })?;
        Ok(Event::new(event_type, value))
    }

    /// Sets the priority (default 0; negative values are lower). Nodes with the
    /// [`priority`](crate::QueueStrategy::Priority) queue strategy start higher priorities
    /// first; FIFO nodes ignore it.
    ///
    /// ```
    /// use happen::Event;
    ///
    /// let urgent = Event::new("alert", "disk full").with_priority(10);
    /// assert_eq!(urgent.priority(), 10);
    /// assert_eq!(Event::new("alert", ()).priority(), 0);
    /// ```
    pub fn with_priority(mut self, priority: i32) -> Event {
        Arc::make_mut(&mut self.inner).priority = priority;
        self
    }

    /// Makes a root event join an existing transaction instead of starting a new one.
    /// Ignored for events sent from inside a flow, which always inherit the flow's correlation id.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// use happen::{Context, CorrelationId, Event, Happen};
    ///
    /// let happen = Happen::new();
    /// let node = happen.node("n").await?;
    /// node.on("step", |event: Event, _c: Context| async move {
    ///     event.correlation_id().to_string()
    /// })?;
    /// let txn = CorrelationId::parse("txn-from-the-http-request");
    /// let event = Event::new("step", ()).with_correlation_id(txn.clone());
    /// assert_eq!(node.send(&node, event).await?, txn.to_string());
    /// # Ok(()) }
    /// ```
    pub fn with_correlation_id(mut self, id: CorrelationId) -> Event {
        Arc::make_mut(&mut self.inner).explicit_correlation = Some(id);
        self
    }

    /// The event type, e.g. `order.created`.
    ///
    /// ```
    /// assert_eq!(happen::Event::new("order.created", ()).event_type(), "order.created");
    /// ```
    pub fn event_type(&self) -> &str {
        &self.inner.event_type
    }

    /// The event type as a shared string (cheap to clone and compare).
    pub(crate) fn event_type_shared(&self) -> &SharedStr {
        &self.inner.event_type
    }

    /// The payload as JSON. To read it as a Rust type, use [`decode`](Event::decode), or take
    /// a [`Json<T>`](crate::Json) handler argument.
    ///
    /// ```
    /// use happen::Event;
    /// use serde_json::json;
    ///
    /// let event = Event::new("order", json!({"items": [{"sku": "a-1", "qty": 2}]}));
    /// assert_eq!(event.payload()["items"][0]["qty"], 2);
    /// assert!(event.payload()["missing"].is_null());
    /// ```
    pub fn payload(&self) -> &Value {
        &self.inner.payload
    }

    /// The same event (type, priority and causal context: the same id, sender, correlation)
    /// with another payload. A [liner](crate::liner) uses it to change what the handler sees.
    ///
    /// ```
    /// use happen::Event;
    ///
    /// let event = Event::new("order", 1);
    /// let changed = event.clone().with_payload(2);
    /// assert_eq!(changed.payload(), 2);
    /// assert_eq!((changed.event_type(), changed.id()), (event.event_type(), event.id()));
    /// ```
    pub fn with_payload(mut self, payload: impl Into<Value>) -> Event {
        Arc::make_mut(&mut self.inner).payload = payload.into();
        self
    }

    /// Deserializes the payload into `T`.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidPayload`], naming the offending field, when the payload does not fit `T`.
    ///
    /// ```
    /// use happen::{ErrorKind, Event};
    /// use serde_json::json;
    ///
    /// #[derive(Debug, serde::Deserialize)]
    /// struct Order { qty: u32 }
    /// let order: Order = Event::new("order", json!({"qty": 3})).decode()?;
    /// assert_eq!(order.qty, 3);
    ///
    /// let event = Event::new("order", json!({"qty": "three"}));
    /// let err = event.decode::<Order>().unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::InvalidPayload);
    /// assert!(err.message().contains("qty"), "{err}");
    /// # Ok::<(), happen::Error>(())
    /// ```
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T> {
        decode_value(self.event_type(), &self.inner.payload)
    }

    /// The priority (default 0); see [`with_priority`](Event::with_priority).
    pub fn priority(&self) -> i32 {
        self.inner.priority
    }

    /// The causal context: who sent the event, which event caused it, the transaction it
    /// belongs to and the path of nodes so far. Filled in when the event is sent.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// use happen::{Context, Event, Happen};
    /// use serde_json::json;
    ///
    /// let happen = Happen::new();
    /// let web = happen.node("web").await?;
    /// let orders = happen.node("orders").await?;
    /// let billing = happen.node("billing").await?;
    /// orders.on("order.placed", |event: Event, ctx: Context| async move {
    ///     let invoice = ctx.send("billing", Event::new("invoice", ())).await?; // continues the chain
    ///     Ok::<_, happen::Error>(json!({"order": event.causal(), "invoice": invoice}))
    /// })?;
    /// billing.on("invoice", |event: Event, _ctx: Context| async move {
    ///     serde_json::to_value(event.causal()).unwrap()
    /// })?;
    /// let seen = web.send(&orders, Event::new("order.placed", ())).await?;
    /// let (order, invoice) = (&seen["order"], &seen["invoice"]);
    /// assert_eq!(invoice["sender"], "orders");
    /// assert_eq!(invoice["path"], json!(["web", "orders"]));
    /// assert_eq!(invoice["causationId"], order["id"]); // caused by the order event
    /// assert_eq!(invoice["correlationId"], order["correlationId"]); // one transaction
    /// # Ok(()) }
    /// ```
    pub fn causal(&self) -> &Causal {
        &self.inner.causal
    }

    /// Shorthand for `causal().id()`. The shorthands below read the other parts of the
    /// [`Causal`] context the same way.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// use happen::{Context, Event, Happen};
    ///
    /// let happen = Happen::new();
    /// let node = happen.node("n").await?;
    /// node.on("look", |event: Event, _c: Context| async move {
    ///     let c = event.causal();
    ///     assert_eq!(event.id(), c.id());
    ///     assert_eq!(event.sender(), c.sender());
    ///     assert_eq!(event.correlation_id(), c.correlation_id());
    ///     assert_eq!(event.causation_id(), c.causation_id());
    ///     assert_eq!(event.path(), c.path());
    ///     event.id().to_string()
    /// })?;
    /// let id = node.send(&node, Event::new("look", ())).await?;
    /// assert!(id.as_str().unwrap().starts_with("evt-"));
    /// # Ok(()) }
    /// ```
    pub fn id(&self) -> &EventId {
        &self.inner.causal.id
    }

    /// Shorthand for `causal().sender()`.
    pub fn sender(&self) -> &NodeId {
        &self.inner.causal.sender
    }

    /// Shorthand for `causal().correlation_id()`.
    pub fn correlation_id(&self) -> &CorrelationId {
        &self.inner.causal.correlation_id
    }

    /// Shorthand for `causal().causation_id()`.
    pub fn causation_id(&self) -> Option<&EventId> {
        self.inner.causal.causation_id.as_ref()
    }

    /// Shorthand for `causal().path()`.
    pub fn path(&self) -> &[NodeId] {
        self.inner.causal.path.as_slice()
    }

    /// Where the event comes from beyond its sender (Happen's `context.origin`): the sender
    /// as `node_id`, and who the event acts for (`source_id`, `source_type`), set with
    /// [`with_source_id`](Event::with_source_id) / [`with_source_type`](Event::with_source_type)
    /// and inherited by every event a flow sends while handling this one.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// use happen::{Context, Event, Happen};
    ///
    /// let happen = Happen::new();
    /// let web = happen.node("web").await?;
    /// let orders = happen.node("orders").await?;
    /// let billing = happen.node("billing").await?;
    /// orders.on("order", |_e: Event, ctx: Context| async move {
    ///     ctx.send("billing", Event::new("invoice", ())).await // a derived send
    /// })?;
    /// billing.on("invoice", |e: Event, _c: Context| async move {
    ///     let o = e.origin();
    ///     format!("{} for {}:{}", o.node_id(), o.source_type().unwrap(), o.source_id().unwrap())
    /// })?;
    /// let order = Event::new("order", ()).with_source_type("user").with_source_id("ada");
    /// assert_eq!(web.send(&orders, order).await?, "orders for user:ada");
    /// # Ok(()) }
    /// ```
    pub fn origin(&self) -> Origin<'_> {
        let ext = self.inner.ext.as_deref();
        Origin {
            node_id: &self.inner.causal.sender,
            source_id: ext.and_then(|e| e.source_id.as_deref()),
            source_type: ext.and_then(|e| e.source_type.as_deref()),
        }
    }

    /// Sets `context.origin.sourceId`: who the event acts for (a user id, a tenant, an
    /// upstream system's id). Events sent while handling this one inherit it. See
    /// [`origin`](Event::origin).
    pub fn with_source_id(mut self, source_id: impl Into<String>) -> Event {
        self.ext_mut().source_id = Some(source_id.into());
        self
    }

    /// Sets `context.origin.sourceType`: what kind of source `sourceId` is (`user`,
    /// `tenant`, ...). Inherited like the source id. See [`origin`](Event::origin).
    pub fn with_source_type(mut self, source_type: impl Into<String>) -> Event {
        self.ext_mut().source_type = Some(source_type.into());
        self
    }

    /// A field of the event's `context` that happen does not interpret itself (anything but
    /// `causal`, `priority`, `origin` and `integrity`), as received or as set with
    /// [`with_context_field`](Event::with_context_field). Such fields travel with the event:
    /// they are kept when it is decoded, handled, forwarded and encoded again.
    ///
    /// ```
    /// use happen::Event;
    /// use serde_json::json;
    ///
    /// let wire = json!({"type": "t", "context": {"tenant": {"id": 42}, "causal": {"trace": "x"}}});
    /// let event: Event = serde_json::from_value(wire).unwrap();
    /// assert_eq!(event.context_field("tenant"), Some(&json!({"id": 42})));
    /// let back = serde_json::to_value(&event).unwrap();
    /// assert_eq!(back["context"]["tenant"]["id"], 42);
    /// assert_eq!(back["context"]["causal"]["trace"], "x"); // unknown causal fields too
    /// ```
    pub fn context_field(&self, name: &str) -> Option<&Value> {
        self.inner.ext.as_ref()?.context_extra.get(name)
    }

    /// Sets a `context` field happen does not interpret (see
    /// [`context_field`](Event::context_field)). A name happen reads itself (`causal`,
    /// `priority`, `origin`, `integrity`) is ignored: use the methods for those.
    ///
    /// ```
    /// use happen::Event;
    /// use serde_json::json;
    ///
    /// let e = Event::new("t", ()).with_context_field("tenant", json!("t-1"));
    /// assert_eq!(e.context_field("tenant"), Some(&json!("t-1")));
    /// assert_eq!(serde_json::to_value(&e).unwrap()["context"]["tenant"], "t-1");
    /// assert!(Event::new("t", ()).with_context_field("origin", 1).context_field("origin").is_none());
    /// ```
    pub fn with_context_field(mut self, name: impl Into<String>, value: impl Into<Value>) -> Event {
        let name = name.into();
        if !is_known_context_field(&name) {
            self.ext_mut().context_extra.insert(name, value.into());
        }
        self
    }

    /// `context.causal.hash`: the hex SHA-256 of the event's canonical JSON without the hash
    /// and the integrity, set when a node with a signing key sends the event (or as received).
    /// See the `security` module.
    pub fn hash(&self) -> Option<&str> {
        self.inner.ext.as_ref()?.hash.as_deref()
    }

    /// `context.integrity`: the sender's signature over [`hash`](Event::hash), when it signed.
    /// See the `security` module.
    pub fn integrity(&self) -> Option<&Integrity> {
        self.inner.ext.as_ref()?.integrity.as_ref()
    }

    pub(crate) fn ext(&self) -> Option<&Ext> {
        self.inner.ext.as_deref()
    }

    pub(crate) fn ext_mut(&mut self) -> &mut Ext {
        Arc::make_mut(&mut self.inner).ext.get_or_insert_default()
    }

    pub(crate) fn arrival(&self) -> Arrival {
        self.inner.arrival
    }

    pub(crate) fn set_arrival(&mut self, arrival: Arrival) {
        if self.inner.arrival != arrival {
            Arc::make_mut(&mut self.inner).arrival = arrival;
        }
    }

    /// The event in its wire form without `causal.hash` and `integrity` (what is hashed).
    pub(crate) fn unsigned_form(&self) -> impl Serialize + '_ {
        Wire {
            event: self,
            unsigned: true,
        }
    }

    /// A new, unsent event with this one's type, payload, priority, requested correlation id
    /// and extension (without hash and signature): cheaper to stamp than a clone (nothing of
    /// the old causal context is copied only to be overwritten).
    pub(crate) fn unsent_copy(&self) -> Event {
        let inner = &self.inner;
        let mut copy = EventInner::unstamped(inner.event_type.clone(), inner.payload.clone());
        copy.priority = inner.priority;
        copy.explicit_correlation = inner.explicit_correlation.clone();
        copy.ext = inner.ext.clone();
        Event {
            inner: storage::store(copy),
        }
    }

    /// Replaces the payload with null if this is the event's only handle (for an event kept
    /// only as a spare context's, see `Context::drop_payload`).
    pub(crate) fn drop_payload(&mut self) {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            crate::json::drop_value(std::mem::take(&mut inner.payload));
        }
    }

    /// Fills in the causal context for sending from `sender`, continuing `parent`'s chain if given.
    pub(crate) fn stamp(mut self, sender: &NodeId, parent: Option<&Event>) -> Result<Event> {
        if self.inner.event_type.is_empty() {
            return Err(Error::invalid_event(
                "the event type is empty; give every event a type such as `order.created`",
            ));
        }
        let inner = Arc::make_mut(&mut self.inner);
        inner.arrival = Arrival::Local;
        if let Some(ext) = &mut inner.ext {
            // hash and signature were for the old contents and sender; a node with a key
            // signs again after stamping
            ext.hash = None;
            ext.integrity = None;
            ext.received_digest = None;
        }
        if let Some(parent_ext) = parent.and_then(|p| p.inner.ext.as_deref())
            && parent_ext.has_source()
        {
            let ext = inner.ext.get_or_insert_default();
            if !ext.has_source() {
                ext.source_id = parent_ext.source_id.clone();
                ext.source_type = parent_ext.source_type.clone();
            }
        }
        if inner.ext.as_deref().is_some_and(Ext::is_empty) {
            inner.ext = None;
        }
        let c = &mut inner.causal;
        c.id = EventId::new();
        c.sender = sender.clone();
        c.timestamp = now_ms();
        match parent {
            Some(p) => {
                let pc = &p.inner.causal;
                c.causation_id = Some(pc.id.clone());
                c.correlation_id = pc.correlation_id.clone();
                let parent = pc.path.as_slice();
                let mut path = Vec::with_capacity(parent.len() + 1);
                path.extend_from_slice(parent);
                path.push(sender.clone());
                c.path = Path::Many(path);
            }
            None => {
                c.causation_id = None;
                c.correlation_id = match &inner.explicit_correlation {
                    Some(id) => id.clone(),
                    None => CorrelationId::for_root(&c.id),
                };
                c.path = Path::One(sender.clone());
            }
        }
        Ok(self)
    }
}

pub(crate) fn decode_value<T: DeserializeOwned>(what: &str, value: &Value) -> Result<T> {
    serde_path_to_error::deserialize::<_, T>(value)
        .map_err(|e| decode_error::<T>(format_args!("payload of `{what}`"), e))
}

/// [`decode_value`] for an owned value (no copy); `what` names the value in the error.
pub(crate) fn decode_owned<T: DeserializeOwned>(
    what: fmt::Arguments<'_>,
    value: Value,
) -> Result<T> {
    serde_path_to_error::deserialize::<_, T>(value).map_err(|e| decode_error::<T>(what, e))
}

fn decode_error<T>(
    what: fmt::Arguments<'_>,
    e: serde_path_to_error::Error<serde_json::Error>,
) -> Error {
    let path = e.path().to_string();
    let inner = e.into_inner();
    let at = if path == "." {
        String::new()
    } else {
        format!(" at `{path}`")
    };
    Error::new(
        ErrorKind::InvalidPayload,
        format!(
            "{what} does not fit `{}`{at}: {inner}",
            std::any::type_name::<T>()
        ),
    )
    .with_source(inner)
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("type", &self.event_type())
            .field("payload", &self.inner.payload)
            .field("priority", &self.inner.priority)
            .field("causal", &self.inner.causal)
            .field("ext", &self.inner.ext)
            .finish()
    }
}

/// An event type string, what [`Event::new`] takes as its type.
///
/// Built from any string: a borrowed `&str` (of any lifetime) or a `&String` is copied once
/// into a shared buffer, a `String` is moved. [`from_static`](EventType::from_static) wraps a
/// `&'static str` without allocating, for types sent on a hot path.
///
/// ```
/// use happen::{Event, EventType};
///
/// let kind = String::from("created");
/// let ty = format!("order.{kind}");
/// let event = Event::new(ty.as_str(), ()); // a borrowed, non-'static &str
/// assert_eq!(event.event_type(), "order.created");
///
/// const TICK: EventType = EventType::from_static("clock.tick");
/// assert_eq!(Event::new(TICK, ()).event_type(), "clock.tick");
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct EventType(SharedStr);

impl EventType {
    /// An event type from a `&'static str`, without allocating (usable in `const`s).
    pub const fn from_static(event_type: &'static str) -> EventType {
        EventType(SharedStr::Static(event_type))
    }

    /// The type as a string slice.
    ///
    /// ```
    /// assert_eq!(happen::EventType::from("order.created").as_str(), "order.created");
    /// ```
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
impl From<&str> for EventType {
    fn from(s: &str) -> Self {
        EventType(SharedStr::copy_of(s))
    }
}
impl From<String> for EventType {
    fn from(s: String) -> Self {
        EventType(s.into())
    }
}
impl From<&String> for EventType {
    fn from(s: &String) -> Self {
        EventType::from(s.as_str())
    }
}
impl fmt::Debug for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

// ---- wire form (Happen's reference JSON) -----------------------------------------------------

#[derive(Serialize)]
struct WireOut<'a> {
    #[serde(rename = "type")]
    event_type: &'a str,
    payload: &'a Value,
    context: WireContextOut<'a>,
}

#[derive(Serialize)]
struct WireContextOut<'a> {
    causal: &'a Causal,
    #[serde(skip_serializing_if = "is_zero")]
    priority: i32,
}

fn is_zero(p: &i32) -> bool {
    *p == 0
}

#[derive(Deserialize)]
struct WireIn {
    #[serde(rename = "type")]
    event_type: TypeIn,
    #[serde(default)]
    payload: Value,
    #[serde(default)]
    context: Option<ext::ContextIn>,
}

/// An event type read from the wire: from the input's bytes, no `String` in between, and
/// shared with the recent types (`SharedStr::copy_of`), so a run of one type reuses one
/// buffer and the driver's handler cache matches it by pointer.
struct TypeIn(SharedStr);

impl<'de> Deserialize<'de> for TypeIn {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        crate::id::read_str(d, "an event type (a string)", |s| {
            TypeIn(SharedStr::copy_of(s))
        })
    }
}

/// An event in its wire form, with or without its hash and integrity.
struct Wire<'a> {
    event: &'a Event,
    unsigned: bool,
}

impl Serialize for Wire<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let inner = &self.event.inner;
        match inner.ext.as_deref() {
            None => WireOut {
                event_type: &inner.event_type,
                payload: &inner.payload,
                context: WireContextOut {
                    causal: &inner.causal,
                    priority: inner.priority,
                },
            }
            .serialize(s),
            Some(ext) => {
                use serde::ser::SerializeStruct;
                let mut st = s.serialize_struct("Event", 3)?;
                st.serialize_field("type", &*inner.event_type)?;
                st.serialize_field("payload", &inner.payload)?;
                st.serialize_field(
                    "context",
                    &ext::ContextOut {
                        causal: &inner.causal,
                        priority: inner.priority,
                        ext,
                        unsigned: self.unsigned,
                    },
                )?;
                st.end()
            }
        }
    }
}

impl Event {
    /// Appends the event in Happen's wire form, byte for byte what `serde_json::to_writer`
    /// writes for it, without serde_json's per-byte escape lookups for the strings that need
    /// none (see `crate::json`). An event with an extension (origin source, hash, signature,
    /// unknown context fields) goes through serde_json.
    pub(crate) fn write_wire_json(&self, out: &mut Vec<u8>) {
        use crate::json::{write_str, write_u64, write_value};
        let inner = &*self.inner;
        if inner.ext.is_some() {
            // strings, JSON values and ids into a `Vec`: nothing in it can fail
            let _ = serde_json::to_writer(&mut *out, self);
            return;
        }
        out.extend_from_slice(br#"{"type":"#);
        write_str(out, &inner.event_type);
        out.extend_from_slice(br#","payload":"#);
        write_value(out, &inner.payload);
        // the fields of `Causal` in its `Serialize` order
        let c = &inner.causal;
        out.extend_from_slice(br#","context":{"causal":{"id":"#);
        c.id.write_json(out);
        out.extend_from_slice(br#","sender":"#);
        write_str(out, c.sender.as_str());
        if let Some(id) = &c.causation_id {
            out.extend_from_slice(br#","causationId":"#);
            id.write_json(out);
        }
        out.extend_from_slice(br#","correlationId":"#);
        c.correlation_id.write_json(out);
        out.extend_from_slice(br#","path":["#);
        for (i, node) in c.path.as_slice().iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_str(out, node.as_str());
        }
        out.extend_from_slice(br#"],"timestamp":"#);
        write_u64(out, c.timestamp);
        out.push(b'}');
        if inner.priority != 0 {
            out.extend_from_slice(br#","priority":"#);
            out.extend_from_slice(itoa::Buffer::new().format(inner.priority).as_bytes());
        }
        out.extend_from_slice(b"}}");
    }
}

/// Serializes in Happen's wire form:
/// `{"type", "payload", "context": {"causal": {"id", "sender", "causationId", "correlationId", "path", "timestamp", "hash"}, "priority", "origin", "integrity", ...}}`
/// (the optional fields only when set; unknown context fields as received).
impl Serialize for Event {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        Wire {
            event: self,
            unsigned: false,
        }
        .serialize(s)
    }
}

/// Deserializes Happen's wire form. Missing causal fields are filled in (fresh ids, empty
/// sender, empty path, current time) so events from minimal foreign producers are accepted;
/// fields of the wrong type are errors. An empty event type is an error.
impl<'de> Deserialize<'de> for Event {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let w = WireIn::deserialize(d)?;
        if w.event_type.0.is_empty() {
            return Err(serde::de::Error::custom("event `type` must not be empty"));
        }
        let (causal, priority, ext) = match w.context {
            Some(c) => (c.causal, c.priority, c.ext),
            None => (None, 0, None),
        };
        let causal = causal.unwrap_or_else(|| Causal {
            id: EventId::new(),
            sender: empty_node(),
            causation_id: None,
            correlation_id: CorrelationId::new(),
            path: Path::default(),
            timestamp: now_ms(),
        });
        Ok(Event {
            inner: storage::store(EventInner {
                event_type: w.event_type.0,
                payload: w.payload,
                priority,
                causal,
                explicit_correlation: None,
                ext: ext.filter(|e| !e.is_empty()),
                arrival: Arrival::Wire,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stamping_a_root_and_a_child() {
        let a = NodeId::from("a");
        let b = NodeId::from("b");
        let root = Event::new("x", json!(1)).stamp(&a, None).unwrap();
        assert_eq!(root.path(), std::slice::from_ref(&a));
        assert!(root.causation_id().is_none());
        let child = Event::new("y", ()).stamp(&b, Some(&root)).unwrap();
        assert_eq!(child.causation_id(), Some(root.id()));
        assert_eq!(child.correlation_id(), root.correlation_id());
        assert_eq!(child.path(), [a, b]);
        assert_ne!(child.id(), root.id());
    }

    #[test]
    fn paths_of_any_length_read_back() {
        for path in [vec![], vec!["a"], vec!["a", "b"], vec!["a", "b", "c", "d"]] {
            let json = serde_json::to_string(&path).unwrap();
            let read: Path = serde_json::from_str(&json).unwrap();
            let want: Vec<NodeId> = path.iter().map(|s| NodeId::from(*s)).collect();
            assert_eq!(read.as_slice(), want.as_slice(), "{json}");
        }
        assert!(serde_json::from_str::<Path>(r#"["a", 1]"#).is_err());
    }

    #[test]
    fn drop_payload_empties_only_an_event_nobody_else_holds() {
        let mut alone = Event::new("x", json!({"big": "x".repeat(1000)}));
        alone.drop_payload();
        assert!(alone.payload().is_null());
        assert_eq!(alone.event_type(), "x");

        let mut shared = Event::new("y", json!([1, 2, 3]));
        let other = shared.clone();
        shared.drop_payload();
        assert_eq!(
            other.payload(),
            &json!([1, 2, 3]),
            "a clone's payload stays"
        );
        assert_eq!(shared.payload(), &json!([1, 2, 3]));
    }

    #[test]
    fn empty_type_is_rejected() {
        let err = Event::new(String::new(), ())
            .stamp(&NodeId::from("a"), None)
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidEvent);
    }

    #[test]
    fn wire_round_trip_matches_reference_shape() {
        let e = Event::new("order.created", json!({"id": 1}))
            .stamp(&NodeId::from("svc"), None)
            .unwrap();
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["type"], "order.created");
        assert_eq!(v["payload"]["id"], 1);
        let c = &v["context"]["causal"];
        assert!(c["id"].as_str().unwrap().starts_with("evt-"));
        assert!(c["correlationId"].as_str().unwrap().starts_with("txn-"));
        assert_eq!(c["sender"], "svc");
        assert_eq!(c["path"], json!(["svc"]));
        assert!(c.get("causationId").is_none());
        assert!(c["timestamp"].as_u64().unwrap() > 0);
        let back: Event = serde_json::from_value(v).unwrap();
        assert_eq!(back.causal(), e.causal());
    }

    #[test]
    fn an_extension_is_made_only_for_what_needs_one() {
        let plain: Event = serde_json::from_value(json!({
            "type": "x",
            "context": {"causal": {"id": "a"}, "origin": {"nodeId": "n"}, "priority": 2}
        }))
        .unwrap();
        assert!(plain.inner.ext.is_none());
        assert_eq!(plain.inner.priority, 2);
        for context in [
            json!({"causal": {"hash": "00"}}),
            json!({"causal": {"more": 1}}),
            json!({"origin": {"sourceId": "s"}}),
            json!({"origin": {"more": 1}}),
            json!({"integrity": {"signature": "s", "publicKey": "k"}}),
            json!({"more": 1}),
        ] {
            let e: Event =
                serde_json::from_value(json!({"type": "x", "context": context.clone()})).unwrap();
            assert!(e.inner.ext.is_some(), "{context}");
            let back = serde_json::to_value(&e).unwrap();
            for (k, v) in context.as_object().unwrap() {
                for (field, value) in v.as_object().map_or(vec![], |o| o.iter().collect()) {
                    assert_eq!(&back["context"][k][field], value, "{context} -> {back}");
                }
                if !v.is_object() {
                    assert_eq!(&back["context"][k], v, "{context} -> {back}");
                }
            }
        }
    }

    #[test]
    fn a_run_of_one_type_from_the_wire_shares_its_buffer() {
        let read = || serde_json::from_value::<Event>(json!({"type": "tick"})).unwrap();
        let (a, b) = (read(), read());
        assert_eq!(a.event_type(), "tick");
        assert_eq!(a.event_type().as_ptr(), b.event_type().as_ptr());
    }

    #[test]
    fn the_wire_json_is_what_serde_json_writes() {
        let a = NodeId::from("a");
        let b = NodeId::from("b\"quoted\"");
        let root = Event::new("order.created", json!({"id": 1, "note": "x\ny"}))
            .stamp(&a, None)
            .unwrap();
        let child = Event::new("order.paid", json!([1.5, null, "é"]))
            .with_priority(-7)
            .stamp(&b, Some(&root))
            .unwrap();
        let grandchild = Event::new("tab\ttype", "a".repeat(200))
            .with_priority(3)
            .stamp(&a, Some(&child))
            .unwrap();
        let foreign: Event = serde_json::from_value(json!({
            "type": "x",
            "context": {"causal": {"id": "not-a-uuid", "correlationId": "", "path": [], "timestamp": 0}}
        }))
        .unwrap();
        let with_ext: Event = serde_json::from_value(json!({
            "type": "x",
            "context": {"causal": {"id": "a", "hash": "00"}, "origin": {"sourceId": "s"}, "more": [1]}
        }))
        .unwrap();
        let unsent = Event::new("y", ());
        for e in [root, child, grandchild, foreign, with_ext, unsent] {
            let mut out = Vec::new();
            e.write_wire_json(&mut out);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                serde_json::to_string(&e).unwrap()
            );
        }
    }

    #[test]
    fn wrong_types_on_the_wire_are_errors() {
        let bad = json!({"type": "x", "context": {"causal": {"path": "nope"}}});
        assert!(serde_json::from_value::<Event>(bad).is_err());
        let bad = json!({"type": 5});
        assert!(serde_json::from_value::<Event>(bad).is_err());
        let minimal: Event = serde_json::from_value(json!({"type": "x"})).unwrap();
        assert_eq!(minimal.payload(), &Value::Null);
    }
}
