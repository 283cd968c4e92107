//! Stored state: the [`StateStore`] a transport provides (a key-value store with revisions,
//! history and watches), the in-memory [`MemoryStore`], bucket names, and the typed handles
//! applications use ([`stored`]).
//!
//! Layering: this module uses `error`, `id`, `event` and `config`; `node` and `happen` use it.

mod hub;
mod memory;
mod names;
pub mod stored;

use std::fmt;

use futures::future::BoxFuture;
use futures::stream::BoxStream;

use crate::config::StateSettings;
use crate::error::Result;
use crate::event::Event;
use crate::id::{CorrelationId, EventId, NodeId};

pub(crate) use hub::StoreHub;
pub use memory::MemoryStore;
pub use names::{GLOBAL_BUCKET, STATE_KEY, node_bucket, node_of_bucket, validate_key};

/// A key-value store with revisions: what stored state ([`Node::stored`](crate::Node::stored),
/// views, global state) is kept in. A transport provides one through
/// [`Transport::state_store`](crate::transport::Transport::state_store); without one, each
/// instance keeps its state in a [`MemoryStore`].
///
/// # Contract
/// - A **bucket** holds keys; each key has revisions. Revisions are numbers that grow within
///   a bucket (NATS: the stream sequence); 0 means "no revision".
/// - [`open`](StateStore::open) creates the bucket with `settings` if it does not exist (an
///   existing bucket keeps its settings). [`put`](StateStore::put) and
///   [`watch`](StateStore::watch) are only called on opened buckets; [`get`](StateStore::get)
///   and [`history`](StateStore::history) may name a bucket that does not exist (`None`,
///   empty).
/// - `put` with `expect: Some(r)` stores only if the key's last revision is `r` (0: the key
///   has none), else fails with [`ErrorKind::Conflict`](crate::ErrorKind::Conflict). `value:
///   None` stores a delete marker (a revision whose [`Entry::value`] is `None`).
/// - Each key keeps its last `settings.history` revisions (and none older than
///   `settings.max_age`); `history` returns them oldest first.
/// - `watch` yields every revision stored after the call returns, in order, each once.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
/// use happen::config::StateSettings;
/// use happen::transport::{MemoryStore, StateStore};
/// use happen::ErrorKind;
///
/// let store = MemoryStore::new();
/// store.open("b", StateSettings::new(2)).await?;
/// let r1 = store.put("b", "k", Some(b"1".to_vec()), Some(0), None).await?;
/// let err = store.put("b", "k", Some(b"2".to_vec()), Some(0), None).await.unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::Conflict);
/// store.put("b", "k", Some(b"2".to_vec()), Some(r1), None).await?;
/// store.put("b", "k", Some(b"3".to_vec()), None, None).await?;
/// let values: Vec<_> = store.history("b", "k").await?.into_iter().map(|e| e.value).collect();
/// assert_eq!(values, [Some(b"2".to_vec()), Some(b"3".to_vec())]); // history 2
/// assert!(store.get("nope", "k").await?.is_none());
/// # Ok(()) }
/// ```
pub trait StateStore: Send + Sync + 'static {
    /// Creates `bucket` with `settings` unless it exists.
    ///
    /// # Errors
    /// The store cannot be reached, or refuses the bucket.
    fn open<'a>(&'a self, bucket: &'a str, settings: StateSettings) -> BoxFuture<'a, Result<()>>;

    /// The last revision of `key`, `None` if the key or the bucket does not exist (a delete
    /// marker is returned as an entry without a value).
    ///
    /// # Errors
    /// The store cannot be reached.
    fn get<'a>(&'a self, bucket: &'a str, key: &'a str) -> BoxFuture<'a, Result<Option<Entry>>>;

    /// Stores `value` (`None`: a delete marker) as the next revision of `key`, with the causal
    /// context `change`; returns the new revision.
    ///
    /// # Errors
    /// [`ErrorKind::Conflict`](crate::ErrorKind::Conflict) when `expect` is given and is not
    /// the key's last revision; otherwise the store's errors.
    fn put<'a>(
        &'a self,
        bucket: &'a str,
        key: &'a str,
        value: Option<Vec<u8>>,
        expect: Option<u64>,
        change: Option<&'a Change>,
    ) -> BoxFuture<'a, Result<u64>>;

    /// Every kept revision of `key`, oldest first.
    ///
    /// # Errors
    /// The store cannot be reached.
    fn history<'a>(&'a self, bucket: &'a str, key: &'a str) -> BoxFuture<'a, Result<Vec<Entry>>>;

    /// The revisions of `key` stored from now on, in order.
    ///
    /// # Errors
    /// The store cannot be reached; errors while watching end the stream with an `Err` item.
    fn watch<'a>(
        &'a self,
        bucket: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<BoxStream<'static, Result<Entry>>>>;
}

/// One revision of a key: its number, its value (`None`: deleted) and the causal context of
/// the change, if it was made inside a flow.
///
/// ```
/// let e = happen::transport::Entry::new(3, Some(b"{}".to_vec()), None);
/// assert_eq!((e.revision, e.value.as_deref()), (3, Some(&b"{}"[..])));
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Entry {
    /// The revision (grows within a bucket).
    pub revision: u64,
    /// The stored bytes (JSON), or `None` for a delete marker.
    pub value: Option<Vec<u8>>,
    /// Who made the change.
    pub change: Option<Change>,
}

impl Entry {
    /// An entry from its parts (`value: None` for a delete marker).
    ///
    /// ```
    /// let deleted = happen::transport::Entry::new(9, None, None);
    /// assert!(deleted.value.is_none());
    /// ```
    pub fn new(revision: u64, value: Option<Vec<u8>>, change: Option<Change>) -> Entry {
        Entry {
            revision,
            value,
            change,
        }
    }
}

/// The causal context of a state change: the event whose flow made it. Stored beside the
/// value (over NATS: in the message headers listed in [`Change::HEADERS`]).
///
/// ```
/// use happen::Event;
/// use happen::stored::Change;
///
/// let event = Event::new("order.placed", 1);
/// let change = Change::of(&event);
/// assert_eq!(&change.event_id, event.id());
/// assert_eq!(change.event_type, "order.placed");
/// let headers = change.to_headers();
/// let back = Change::from_headers(|name| {
///     headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
/// });
/// assert_eq!(back, Some(change));
/// ```
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Change {
    /// The event whose flow made the change.
    pub event_id: EventId,
    /// The event that caused that event, if any.
    pub causation_id: Option<EventId>,
    /// The transaction the event belongs to.
    pub correlation_id: CorrelationId,
    /// The event's type.
    pub event_type: String,
    /// The node that sent the event.
    pub sender: NodeId,
    /// When the event was sent, in milliseconds since the Unix epoch.
    pub time: u64,
}

impl Change {
    /// The header names, in the order of [`to_headers`](Change::to_headers): event id,
    /// causation id, correlation id, event type, sender, time.
    ///
    /// ```
    /// assert_eq!(happen::stored::Change::HEADERS[0], "Happen-Event-Id");
    /// ```
    pub const HEADERS: [&'static str; 6] = [
        "Happen-Event-Id",
        "Happen-Causation-Id",
        "Happen-Correlation-Id",
        "Happen-Event-Type",
        "Happen-Sender",
        "Happen-Time",
    ];

    /// The causal context of `event`.
    ///
    /// ```
    /// let e = happen::Event::new("stock.counted", 3);
    /// let c = happen::stored::Change::of(&e);
    /// assert_eq!((c.event_type.as_str(), c.causation_id.is_none()), ("stock.counted", true));
    /// ```
    pub fn of(event: &Event) -> Change {
        let c = event.causal();
        Change {
            event_id: c.id().clone(),
            causation_id: c.causation_id().cloned(),
            correlation_id: c.correlation_id().clone(),
            event_type: event.event_type().to_owned(),
            sender: c.sender().clone(),
            time: c.timestamp(),
        }
    }

    /// The change as header name / value pairs (the causation id only when there is one).
    ///
    /// ```
    /// let c = happen::stored::Change::of(&happen::Event::new("t", ()));
    /// let names: Vec<&str> = c.to_headers().iter().map(|(n, _)| *n).collect();
    /// assert!(!names.contains(&"Happen-Causation-Id")); // a root event
    /// assert!(names.contains(&"Happen-Event-Type"));
    /// ```
    pub fn to_headers(&self) -> Vec<(&'static str, String)> {
        let h = Change::HEADERS;
        let mut out = vec![(h[0], self.event_id.to_string())];
        if let Some(c) = &self.causation_id {
            out.push((h[1], c.to_string()));
        }
        out.push((h[2], self.correlation_id.to_string()));
        out.push((h[3], self.event_type.clone()));
        out.push((h[4], self.sender.to_string()));
        out.push((h[5], self.time.to_string()));
        out
    }

    /// The change read back from headers (`header(name)` returns a header's value); `None`
    /// when there is no event id header.
    ///
    /// ```
    /// use happen::stored::Change;
    /// assert_eq!(Change::from_headers(|_| None), None);
    /// let c = Change::from_headers(|n| (n == "Happen-Event-Id").then_some("evt-1")).unwrap();
    /// assert_eq!(c.event_id.to_string(), "evt-1");
    /// ```
    pub fn from_headers<'h>(header: impl Fn(&str) -> Option<&'h str>) -> Option<Change> {
        let h = Change::HEADERS;
        let id = header(h[0])?;
        Some(Change {
            event_id: EventId::parse(id),
            causation_id: header(h[1]).map(EventId::parse),
            correlation_id: CorrelationId::parse(header(h[2]).unwrap_or_default()),
            event_type: header(h[3]).unwrap_or_default().to_owned(),
            sender: NodeId::from(header(h[4]).unwrap_or_default()),
            time: header(h[5]).and_then(|t| t.parse().ok()).unwrap_or(0),
        })
    }
}

impl fmt::Debug for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Change")
            .field("event_id", &self.event_id.to_string())
            .field(
                "causation_id",
                &self.causation_id.as_ref().map(|c| c.to_string()),
            )
            .field("correlation_id", &self.correlation_id.to_string())
            .field("event_type", &self.event_type)
            .field("sender", &self.sender.as_str())
            .field("time", &self.time)
            .finish()
    }
}
