//! The crate's one error type, [`Error`], and the [`ErrorKind`] callers match on.

use std::fmt;
use std::sync::Arc;

use crate::id::{EventId, NodeId};

/// A boxed error, the type handler code may return (anything convertible into it works).
///
/// A handler's `Err` does not have to be a happen [`Error`]: any error that converts into a
/// `BoxError` (a `std::io::Error`, a `String`, your own error type) ends the flow with
/// [`ErrorKind::Handler`], its `Display` text as the message and itself as the
/// [`source`](std::error::Error::source). A happen [`Error`] keeps its own kind.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
/// use happen::{Context, ErrorKind, Event, Happen};
///
/// let happen = Happen::new();
/// let files = happen.node("files").await?;
/// files.on("read", |_e: Event, _c: Context| async {
///     let text = std::fs::read_to_string("/no/such/file")?; // a std::io::Error
///     Ok::<_, happen::BoxError>(text)
/// })?;
/// let err = files.send(&files, Event::new("read", ())).await.unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::Handler);
/// assert!(std::error::Error::source(&err).is_some());
/// # Ok(()) }
/// ```
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A `Result` whose error is [`happen::Error`](Error). The second parameter lets a handler
/// written against it still return another error type: `happen::Result<T, MyError>`.
///
/// ```
/// fn parse_qty(text: &str) -> happen::Result<u32> {
///     text.parse()
///         .map_err(|e| happen::Error::handler(format!("`{text}` is not a quantity: {e}")))
/// }
/// assert_eq!(parse_qty("3")?, 3);
/// assert!(parse_qty("three").is_err());
/// # Ok::<(), happen::Error>(())
/// ```
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, for matching. New kinds may be added in minor releases.
///
/// ```
/// use happen::{Error, ErrorKind};
///
/// fn retryable(err: &Error) -> bool {
///     matches!(err.kind(), ErrorKind::QueueFull | ErrorKind::Timeout)
/// }
/// # let _ = retryable;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// No node with the target id exists (in-process), or no process answers for it (NATS).
    UnknownNode,
    /// The target node has no handler whose pattern matches the event type.
    NoHandler,
    /// A handler or step returned an error; the message is kept.
    Handler,
    /// A handler or step panicked; the panic message is kept and the node keeps serving.
    Panic,
    /// The reply did not arrive within the timeout.
    Timeout,
    /// The target node's queue was full (or the event was displaced by a higher-priority one).
    QueueFull,
    /// The node or the whole instance is shutting down or shut down.
    ShutDown,
    /// The flow was cancelled before it finished (for example its stream consumer went away).
    Cancelled,
    /// A flow went deeper than the configured maximum chain depth.
    ChainTooDeep,
    /// A pattern string could not be parsed.
    InvalidPattern,
    /// The configuration is invalid; the message names the key.
    InvalidConfig,
    /// The event itself is invalid (for example an empty event type).
    InvalidEvent,
    /// A payload or final value did not (de)serialize into the requested type; the message names the field.
    InvalidPayload,
    /// A node with this id already exists in this instance, or a fan-out
    /// ([`Node::send_all`](crate::Node::send_all)) names a node twice.
    DuplicateNode,
    /// The node already has a handler registered for the same pattern (the second one would
    /// never run).
    DuplicateHandler,
    /// The transport failed (connection lost, protocol error, malformed message).
    Transport,
    /// The transport's server refused this client's credentials (wrong password, token, nkey
    /// or credentials file). Retrying will not help; the message says which setting to check.
    Auth,
    /// A TLS connection could not be set up (an untrusted or mismatched certificate, a
    /// missing client certificate). The message says which setting to check.
    Tls,
    /// The flow failed because a call it made to another node failed, and it passed that
    /// error on (for example with `?`). [`Error::node`] is the node whose flow failed;
    /// [`Error::downstream`] is the error its call got, and [`Error::origin`] the first
    /// error of the chain — so a caller can tell its own timeout from one deeper down.
    Downstream,
    /// A node was created outside a Tokio runtime (its flows run on one): create it from
    /// inside `#[tokio::main]`, a `#[tokio::test]` or `Runtime::block_on`.
    NoRuntime,
    /// The target node's security gate could not authenticate the event: unsigned where
    /// signatures are enforced, a hash or signature that does not verify with the key the
    /// trust ring binds to the sender, a replay, or a timestamp out of bounds. Check the
    /// sender's signing key and the receiver's `[security.trust]`; the message says which.
    Unauthenticated,
    /// The target node's security gate refused the event: its sender or origin is not in the
    /// node's `accept_from`, its `origin.sourceId` is not an allowed role, or a custom policy
    /// check said no. The message names the rule.
    Forbidden,
    /// A stored state changed under a compare-and-set: another writer (usually another
    /// process) updated it first — after the retries of
    /// [`Stored::update`](crate::stored::Stored::update), or at once for
    /// [`set_if_revision`](crate::stored::Stored::set_if_revision). Read it again and retry,
    /// or let one node own the state and send it the changes.
    Conflict,
    /// A stored-state key is not valid (global state keys: letters, digits and `-/_=.`, not
    /// starting or ending with `.`); the message names the key and the character.
    InvalidKey,
}

impl ErrorKind {
    /// A short, stable, lowercase name for the kind (used on the wire and in metrics).
    ///
    /// ```
    /// assert_eq!(happen::ErrorKind::QueueFull.as_str(), "queue_full");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::UnknownNode => "unknown_node",
            ErrorKind::NoHandler => "no_handler",
            ErrorKind::Handler => "handler",
            ErrorKind::Panic => "panic",
            ErrorKind::Timeout => "timeout",
            ErrorKind::QueueFull => "queue_full",
            ErrorKind::ShutDown => "shut_down",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::ChainTooDeep => "chain_too_deep",
            ErrorKind::InvalidPattern => "invalid_pattern",
            ErrorKind::InvalidConfig => "invalid_config",
            ErrorKind::InvalidEvent => "invalid_event",
            ErrorKind::InvalidPayload => "invalid_payload",
            ErrorKind::DuplicateNode => "duplicate_node",
            ErrorKind::DuplicateHandler => "duplicate_handler",
            ErrorKind::Transport => "transport",
            ErrorKind::Auth => "auth",
            ErrorKind::Tls => "tls",
            ErrorKind::Downstream => "downstream",
            ErrorKind::NoRuntime => "no_runtime",
            ErrorKind::Unauthenticated => "unauthenticated",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::Conflict => "conflict",
            ErrorKind::InvalidKey => "invalid_key",
        }
    }

    /// The inverse of [`as_str`](Self::as_str); `None` for an unknown name.
    ///
    /// ```
    /// use happen::ErrorKind;
    /// assert_eq!(ErrorKind::parse("timeout"), Some(ErrorKind::Timeout));
    /// assert_eq!(ErrorKind::parse("nope"), None);
    /// ```
    pub fn parse(name: &str) -> Option<ErrorKind> {
        ALL_KINDS.iter().copied().find(|k| k.as_str() == name)
    }

    /// Every kind, in declaration order, for tools that list or map them all (a CLI's exit
    /// codes, a metrics exporter's labels). A kind added in a minor release is added here, so
    /// a table built from this list and tested against it notices the new kind.
    ///
    /// ```
    /// use happen::ErrorKind;
    ///
    /// assert!(ErrorKind::ALL.contains(&ErrorKind::Timeout));
    /// for kind in ErrorKind::ALL {
    ///     assert_eq!(ErrorKind::parse(kind.as_str()), Some(*kind));
    ///     println!("{:<18} {}", kind.as_str(), kind.description());
    /// }
    /// ```
    pub const ALL: &'static [ErrorKind] = &ALL_KINDS;

    /// What the kind means, in one lowercase line without a trailing period (for help texts
    /// and tables; [`Error::message`] says what happened in a given case).
    ///
    /// ```
    /// use happen::ErrorKind;
    ///
    /// assert_eq!(
    ///     ErrorKind::QueueFull.description(),
    ///     "the target node's queue was full"
    /// );
    /// ```
    pub fn description(self) -> &'static str {
        match self {
            ErrorKind::UnknownNode => "no node has the target id, or no process serves it",
            ErrorKind::NoHandler => "the target node has no handler for the event type",
            ErrorKind::Handler => "a handler or step returned an error",
            ErrorKind::Panic => "a handler or step panicked",
            ErrorKind::Timeout => "the reply did not arrive within the timeout",
            ErrorKind::QueueFull => "the target node's queue was full",
            ErrorKind::ShutDown => "the node or the whole instance is shutting down",
            ErrorKind::Cancelled => "the flow was cancelled before it finished",
            ErrorKind::ChainTooDeep => "the flow went deeper than the maximum chain depth",
            ErrorKind::InvalidPattern => "a pattern could not be parsed",
            ErrorKind::InvalidConfig => "the configuration is invalid",
            ErrorKind::InvalidEvent => "the event itself is invalid",
            ErrorKind::InvalidPayload => "a payload or final value does not fit the requested type",
            ErrorKind::DuplicateNode => "a node with this id already exists",
            ErrorKind::DuplicateHandler => "the node already has a handler for this pattern",
            ErrorKind::Transport => "the transport failed (connection lost, protocol error)",
            ErrorKind::Auth => "the server refused the credentials",
            ErrorKind::Tls => "the TLS connection could not be set up",
            ErrorKind::Downstream => "a call the flow made failed and it passed the error on",
            ErrorKind::NoRuntime => "a node was created outside a Tokio runtime",
            ErrorKind::Unauthenticated => "the target node could not authenticate the event",
            ErrorKind::Forbidden => "the target node's accept_from or policies refused the event",
            ErrorKind::Conflict => "another writer changed the stored state first",
            ErrorKind::InvalidKey => "a stored-state key is not valid",
        }
    }
}

const ALL_KINDS: [ErrorKind; 24] = [
    ErrorKind::UnknownNode,
    ErrorKind::NoHandler,
    ErrorKind::Handler,
    ErrorKind::Panic,
    ErrorKind::Timeout,
    ErrorKind::QueueFull,
    ErrorKind::ShutDown,
    ErrorKind::Cancelled,
    ErrorKind::ChainTooDeep,
    ErrorKind::InvalidPattern,
    ErrorKind::InvalidConfig,
    ErrorKind::InvalidEvent,
    ErrorKind::InvalidPayload,
    ErrorKind::DuplicateNode,
    ErrorKind::DuplicateHandler,
    ErrorKind::Transport,
    ErrorKind::Auth,
    ErrorKind::Tls,
    ErrorKind::Downstream,
    ErrorKind::NoRuntime,
    ErrorKind::Unauthenticated,
    ErrorKind::Forbidden,
    ErrorKind::Conflict,
    ErrorKind::InvalidKey,
];

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of every fallible happen operation. Cheap to clone.
///
/// Match on [`kind`](Error::kind); the [`Display`](fmt::Display) message is meant for humans and
/// says what to do where that is known.
///
/// ```
/// use happen::{Error, ErrorKind};
///
/// let err = Error::new(ErrorKind::Handler, "card declined");
/// assert_eq!(err.kind(), ErrorKind::Handler);
/// assert_eq!(err.message(), "card declined");
/// ```
#[derive(Clone)]
pub struct Error {
    inner: Arc<Inner>,
}

struct Inner {
    kind: ErrorKind,
    message: String,
    node: Option<NodeId>,
    event_id: Option<EventId>,
    limit: Option<usize>,
    source: Option<Arc<dyn std::error::Error + Send + Sync + 'static>>,
    /// An application error code (crosses transports).
    code: Option<Arc<str>>,
    /// For [`ErrorKind::Downstream`]: the error the failed call got.
    downstream: Option<Error>,
    /// Set when a sender received this error as the answer to a send, so a flow that passes
    /// it on is recognised as failing because of a downstream call.
    received: bool,
}

impl Error {
    /// An error of `kind` with a human-readable `message` (lowercase, no trailing period, by
    /// the crate's convention). For a handler's own failures, [`Error::handler`] is shorter.
    ///
    /// ```
    /// use happen::{Error, ErrorKind};
    ///
    /// let err = Error::new(ErrorKind::InvalidEvent, "the order has no id");
    /// assert_eq!(err.kind(), ErrorKind::InvalidEvent);
    /// assert_eq!(err.to_string(), "the order has no id");
    /// assert!(err.node().is_none()); // set by happen where a node is known
    /// ```
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            inner: Arc::new(Inner {
                kind,
                message: message.into(),
                node: None,
                event_id: None,
                limit: None,
                source: None,
                code: None,
                downstream: None,
                received: false,
            }),
        }
    }

    /// What went wrong, for matching.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// use happen::{ErrorKind, Event, Happen};
    ///
    /// let happen = Happen::new();
    /// let client = happen.node("client").await?;
    /// match client.send("nobody", Event::new("ping", ())).await {
    ///     Err(e) if e.kind() == ErrorKind::UnknownNode => {} // no node `nobody`
    ///     other => panic!("unexpected: {other:?}"),
    /// }
    /// # Ok(()) }
    /// ```
    pub fn kind(&self) -> ErrorKind {
        self.inner.kind
    }

    /// The human-readable message (for handler errors: the handler's own message). The same
    /// text as the error's `Display`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// use happen::{Context, Error, Event, Happen};
    ///
    /// let happen = Happen::new();
    /// let bank = happen.node("bank").await?;
    /// bank.on("withdraw", |_e: Event, _c: Context| async {
    ///     Err::<(), _>(Error::handler("insufficient funds"))
    /// })?;
    /// let err = bank.send(&bank, Event::new("withdraw", 10)).await.unwrap_err();
    /// assert_eq!(err.message(), "insufficient funds");
    /// assert_eq!(err.to_string(), err.message());
    /// # Ok(()) }
    /// ```
    pub fn message(&self) -> &str {
        &self.inner.message
    }

    /// The node the error concerns, where one is known (the target of a send, the full node,
    /// the node whose handler failed).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// use happen::{Context, Error, Event, Happen};
    ///
    /// let happen = Happen::new();
    /// let client = happen.node("client").await?;
    /// let err = client.send("billing", Event::new("charge", ())).await.unwrap_err();
    /// assert_eq!(err.node().map(|n| n.as_str()), Some("billing")); // no such node
    ///
    /// let billing = happen.node("billing").await?;
    /// billing.on("charge", |_e: Event, _c: Context| async { Err::<(), _>(Error::handler("down")) })?;
    /// let err = client.send(&billing, Event::new("charge", ())).await.unwrap_err();
    /// assert_eq!(err.node().unwrap(), "billing"); // the node whose handler failed
    /// # Ok(()) }
    /// ```
    pub fn node(&self) -> Option<&NodeId> {
        self.inner.node.as_ref()
    }

    /// The event the error concerns, where one is known (for example the rejected event, or
    /// the event whose flow failed).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// use happen::{Context, Error, Event, Happen};
    ///
    /// let happen = Happen::new();
    /// let node = happen.node("n").await?;
    /// node.on("check", |event: Event, _c: Context| async move {
    ///     Err::<(), _>(Error::handler(format!("rejected {}", event.id())))
    /// })?;
    /// let err = node.send(&node, Event::new("check", ())).await.unwrap_err();
    /// let id = err.event_id().expect("the failed flow's event");
    /// assert_eq!(err.message(), format!("rejected {id}"));
    /// # Ok(()) }
    /// ```
    pub fn event_id(&self) -> Option<&EventId> {
        self.inner.event_id.as_ref()
    }

    /// The limit that was hit, for [`ErrorKind::QueueFull`] (the queue limit) and
    /// [`ErrorKind::ChainTooDeep`] (the maximum depth).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// use happen::{Context, ErrorKind, Event, Happen, NodeOptions};
    ///
    /// let happen = Happen::new();
    /// let options = NodeOptions::new().max_concurrent(1).queue_limit(1);
    /// let slow = happen.node_with("slow", options).await?;
    /// slow.on("job", |_e: Event, _c: Context| async {})?;
    /// let client = happen.node("client").await?;
    /// client.tell(&slow, Event::new("job", 1))?; // runs
    /// client.tell(&slow, Event::new("job", 2))?; // waits in the queue
    /// let err = client.tell(&slow, Event::new("job", 3)).unwrap_err(); // no room
    /// assert_eq!(err.kind(), ErrorKind::QueueFull);
    /// assert!(err.is_queue_full());
    /// assert_eq!(err.limit(), Some(1));
    /// assert_eq!(err.node().unwrap(), "slow");
    /// assert!(err.event_id().is_some()); // the rejected event
    /// # Ok(()) }
    /// ```
    pub fn limit(&self) -> Option<usize> {
        self.inner.limit
    }

    /// The application's error code, if the handler set one with
    /// [`with_code`](Error::with_code). Codes cross transports unchanged.
    ///
    /// ```
    /// use happen::Error;
    ///
    /// let err = Error::handler("the card was declined").with_code("card_declined");
    /// assert_eq!(err.code(), Some("card_declined"));
    /// assert_eq!(Error::handler("no code").code(), None);
    /// ```
    pub fn code(&self) -> Option<&str> {
        self.inner.code.as_deref()
    }

    /// For [`ErrorKind::Downstream`]: the error the failed downstream call got (which may be
    /// `Downstream` itself, one hop further). [`origin`](Error::origin) follows the chain to
    /// its first error. It is also the error's [`source`](std::error::Error::source).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// use happen::{Context, Error, ErrorKind, Event, Happen};
    ///
    /// let happen = Happen::new();
    /// let stock = happen.node("stock").await?;
    /// stock.on("reserve", |_e: Event, _c: Context| async {
    ///     Err::<(), _>(Error::handler("out of stock"))
    /// })?;
    /// let orders = happen.node("orders").await?;
    /// orders.on("order", |_e: Event, ctx: Context| async move {
    ///     ctx.send("stock", Event::new("reserve", ())).await?; // passes the failure on
    ///     Ok::<_, happen::Error>("reserved")
    /// })?;
    /// let err = orders.send(&orders, Event::new("order", ())).await.unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::Downstream);
    /// let inner = err.downstream().unwrap();
    /// assert_eq!((inner.kind(), inner.message()), (ErrorKind::Handler, "out of stock"));
    /// assert!(Error::handler("x").downstream().is_none());
    /// # Ok(()) }
    /// ```
    pub fn downstream(&self) -> Option<&Error> {
        self.inner.downstream.as_ref()
    }

    /// The first error of a chain of [`ErrorKind::Downstream`] errors: where things went
    /// wrong (its [`node`](Error::node), [`kind`](Error::kind) and [`code`](Error::code)).
    /// For any other error, the error itself.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// use happen::{Context, Error, ErrorKind, Event, Happen};
    ///
    /// let happen = Happen::new();
    /// let payments = happen.node("payments").await?;
    /// payments.on("charge", |_e: Event, _c: Context| async {
    ///     Err::<(), _>(Error::new(ErrorKind::Handler, "card declined").with_code("card_declined"))
    /// })?;
    /// let orders = happen.node("orders").await?;
    /// orders.on("order", |_e: Event, ctx: Context| async move {
    ///     ctx.send("payments", Event::new("charge", ())).await // `?` or returned: passed on
    /// })?;
    /// let web = happen.node("web").await?;
    /// let err = web.send(&orders, Event::new("order", ())).await.unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::Downstream);
    /// assert_eq!(err.node().unwrap(), "orders");
    /// assert_eq!(err.origin().kind(), ErrorKind::Handler);
    /// assert_eq!(err.origin().node().unwrap(), "payments");
    /// assert_eq!(err.origin().code(), Some("card_declined"));
    /// # Ok(()) }
    /// ```
    pub fn origin(&self) -> &Error {
        let mut e = self;
        while let Some(inner) = e.downstream() {
            e = inner;
        }
        e
    }

    /// Sets an application error code: a short stable string (such as `card_declined`) that
    /// callers can match on, on this process or across a transport. The kind and message are
    /// kept. See [`Error::handler`] for a handler that sets one.
    ///
    /// ```
    /// use happen::{Error, ErrorKind};
    ///
    /// let err = Error::new(ErrorKind::InvalidEvent, "no sku").with_code("missing_sku");
    /// assert_eq!(err.code(), Some("missing_sku"));
    /// assert_eq!(err.kind(), ErrorKind::InvalidEvent);
    /// ```
    pub fn with_code(mut self, code: impl Into<String>) -> Error {
        self.inner_mut().code = Some(Arc::from(code.into()));
        self
    }

    /// `true` for [`ErrorKind::Timeout`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> happen::Result<()> {
    /// use std::time::Duration;
    /// use happen::{Context, Event, Happen};
    ///
    /// let happen = Happen::new();
    /// let stuck = happen.node("stuck").await?;
    /// stuck.on("ask", |_e: Event, _c: Context| std::future::pending::<()>())?;
    /// let err = stuck
    ///     .send(&stuck, Event::new("ask", ()))
    ///     .timeout(Duration::from_millis(100))
    ///     .await
    ///     .unwrap_err();
    /// assert!(err.is_timeout());
    /// assert!(!err.is_queue_full() && !err.is_shut_down());
    /// # Ok(()) }
    /// ```
    pub fn is_timeout(&self) -> bool {
        self.kind() == ErrorKind::Timeout
    }

    /// `true` for [`ErrorKind::QueueFull`] (see [`limit`](Error::limit) for an example).
    pub fn is_queue_full(&self) -> bool {
        self.kind() == ErrorKind::QueueFull
    }

    /// `true` for [`ErrorKind::ShutDown`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// use std::time::Duration;
    /// use happen::{Event, Happen};
    ///
    /// let happen = Happen::new();
    /// let node = happen.node("n").await?;
    /// happen.shutdown(Duration::from_secs(1)).await;
    /// assert!(node.tell("n", Event::new("ping", ())).unwrap_err().is_shut_down());
    /// # Ok(()) }
    /// ```
    pub fn is_shut_down(&self) -> bool {
        self.kind() == ErrorKind::ShutDown
    }

    pub(crate) fn with_node(mut self, node: &NodeId) -> Error {
        self.inner_mut().node = Some(node.clone());
        self
    }

    pub(crate) fn with_event(mut self, id: &EventId) -> Error {
        self.inner_mut().event_id = Some(id.clone());
        self
    }

    pub(crate) fn with_limit(mut self, limit: usize) -> Error {
        self.inner_mut().limit = Some(limit);
        self
    }

    /// Attaches an underlying cause, reported by [`source`](std::error::Error::source). The
    /// source stays in this process: a transport carries the kind, message, code and the
    /// other [`ErrorParts`], not the source.
    ///
    /// ```
    /// use std::error::Error as _;
    /// use happen::Error;
    ///
    /// let io = std::io::Error::new(std::io::ErrorKind::NotFound, "prices.csv");
    /// let err = Error::handler("cannot load the price list").with_source(io);
    /// assert_eq!(err.source().unwrap().to_string(), "prices.csv");
    /// ```
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Error {
        self.inner_mut().source = Some(Arc::new(source));
        self
    }

    /// An error of kind [`ErrorKind::Handler`]: what a handler returns when it fails for a
    /// reason of its own. Add a stable code for callers to match with
    /// [`with_code`](Error::with_code).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// use happen::{Context, Error, ErrorKind, Event, Happen};
    ///
    /// let happen = Happen::new();
    /// let payments = happen.node("payments").await?;
    /// payments.on("charge", |event: Event, _ctx: Context| async move {
    ///     if event.payload()["amount"].as_u64() > Some(100) {
    ///         return Err(Error::handler("the card was declined").with_code("card_declined"));
    ///     }
    ///     Ok("charged")
    /// })?;
    /// let err = payments
    ///     .send(&payments, Event::new("charge", serde_json::json!({"amount": 500})))
    ///     .await
    ///     .unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::Handler);
    /// assert_eq!(err.code(), Some("card_declined"));
    /// # Ok(()) }
    /// ```
    pub fn handler(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Handler, message)
    }

    fn inner_mut(&mut self) -> &mut Inner {
        if Arc::get_mut(&mut self.inner).is_none() {
            let i = &self.inner;
            self.inner = Arc::new(Inner {
                kind: i.kind,
                message: i.message.clone(),
                node: i.node.clone(),
                event_id: i.event_id.clone(),
                limit: i.limit,
                source: i.source.clone(),
                code: i.code.clone(),
                downstream: i.downstream.clone(),
                received: i.received,
            });
        }
        Arc::get_mut(&mut self.inner).expect("just made unique")
    }

    // ---- constructors used across the crate -------------------------------------------------

    pub(crate) fn unknown_node(node: &NodeId) -> Error {
        Error::new(
            ErrorKind::UnknownNode,
            format!(
                "no node `{node}` exists; create it with `happen.node(\"{node}\")` or check the id"
            ),
        )
        .with_node(node)
    }

    pub(crate) fn duplicate_handler(node: &NodeId, pattern: &dyn fmt::Display) -> Error {
        Error::new(
            ErrorKind::DuplicateHandler,
            format!("node `{node}` already has a handler for pattern `{pattern}`; register each pattern once per node (the second handler would never run)"),
        )
        .with_node(node)
    }

    pub(crate) fn no_handler(node: &NodeId, event_type: &str) -> Error {
        Error::new(
            ErrorKind::NoHandler,
            format!("node `{node}` has no handler matching event type `{event_type}`; register one with `node.on(...)`"),
        )
        .with_node(node)
    }

    /// The error of a handler that returned `Err(e)`: a happen `Error` passes through, any
    /// other error becomes [`ErrorKind::Handler`] with its message (and itself as the source).
    pub(crate) fn from_handler(err: BoxError) -> Error {
        let message = err.to_string();
        match err.downcast::<Error>() {
            Ok(inner) => *inner,
            Err(other) => Error {
                inner: Arc::new(Inner {
                    kind: ErrorKind::Handler,
                    message,
                    node: None,
                    event_id: None,
                    limit: None,
                    source: Some(Arc::from(other)),
                    code: None,
                    downstream: None,
                    received: false,
                }),
            },
        }
    }

    /// Names the node a timed-out reply was waiting for.
    pub(crate) fn unanswered_by(self, node: &NodeId) -> Error {
        let message = format!("node `{node}` did not answer: {}", self.inner.message);
        let mut e = self.with_node(node);
        e.inner_mut().message = message;
        e
    }

    /// Marks an error a sender received as the answer to a send.
    pub(crate) fn received(mut self) -> Error {
        if !self.inner.received {
            self.inner_mut().received = true;
        }
        self
    }

    /// The error a flow at `node` (handling `event`) ends with: an error it received from a
    /// downstream call and passed on is wrapped as [`ErrorKind::Downstream`]; any other error
    /// is stamped with the node and event where it happened, if it does not name them yet.
    pub(crate) fn at_flow(self, node: &NodeId, event: &EventId) -> Error {
        if self.inner.received {
            let origin = self.origin();
            let at = origin
                .node()
                .map(|n| format!(" at node `{n}`"))
                .unwrap_or_default();
            let message = format!(
                "the flow at node `{node}` failed because a call it made failed; the first error ({}{at}): {}",
                origin.kind(),
                origin.message()
            );
            let mut inner = self;
            inner.inner_mut().received = false;
            let mut e = Error::new(ErrorKind::Downstream, message)
                .with_node(node)
                .with_event(event);
            e.inner_mut().downstream = Some(inner);
            return e;
        }
        let mut e = self;
        if e.inner.node.is_none() || e.inner.event_id.is_none() {
            let i = e.inner_mut();
            i.node.get_or_insert_with(|| node.clone());
            i.event_id.get_or_insert_with(|| event.clone());
        }
        e
    }

    pub(crate) fn panic(node: &NodeId, message: &str) -> Error {
        Error::new(
            ErrorKind::Panic,
            format!("a handler at node `{node}` panicked: {message}"),
        )
        .with_node(node)
    }

    pub(crate) fn timeout(after: std::time::Duration) -> Error {
        Error::new(
            ErrorKind::Timeout,
            format!(
                "no reply within {after:?}; raise the timeout with `.timeout(..)` or check the target node"
            ),
        )
    }

    pub(crate) fn shut_down(node: &NodeId) -> Error {
        Error::new(
            ErrorKind::ShutDown,
            format!("node `{node}` is shut down and accepts no events"),
        )
        .with_node(node)
    }

    pub(crate) fn queue_full(node: &NodeId, limit: usize, event: &EventId) -> Error {
        Error::new(
            ErrorKind::QueueFull,
            format!("queue of node `{node}` is full (queue_limit = {limit}); event {event} was rejected: slow down (await `node.ready(target)` before each send), or raise the limit"),
        )
        .with_node(node)
        .with_event(event)
        .with_limit(limit)
    }

    pub(crate) fn displaced(node: &NodeId, limit: usize, event: &EventId) -> Error {
        Error::new(
            ErrorKind::QueueFull,
            format!("queue of node `{node}` is full (queue_limit = {limit}); queued event {event} was displaced by a higher-priority event"),
        )
        .with_node(node)
        .with_event(event)
        .with_limit(limit)
    }

    pub(crate) fn config(key: &str, problem: impl fmt::Display) -> Error {
        Error::new(
            ErrorKind::InvalidConfig,
            format!("invalid config `{key}`: {problem}"),
        )
    }

    pub(crate) fn invalid_event(problem: impl fmt::Display) -> Error {
        Error::new(ErrorKind::InvalidEvent, format!("invalid event: {problem}"))
    }

    /// A flow ran `max` steps (a step probably returns itself forever).
    pub(crate) fn too_many_steps(node: &NodeId, max: usize) -> Error {
        Error::new(
            ErrorKind::ChainTooDeep,
            format!("flow at node `{node}` ran more than {max} steps; a step probably loops forever (raise flow.max_chain_depth if it does not)"),
        )
        .with_limit(max)
    }

    pub(crate) fn cancelled() -> Error {
        Error::new(
            ErrorKind::Cancelled,
            "the flow was cancelled before it finished",
        )
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.inner.kind)
            .field("message", &self.inner.message);
        if let Some(n) = &self.inner.node {
            d.field("node", n);
        }
        if let Some(e) = &self.inner.event_id {
            d.field("event_id", e);
        }
        if let Some(l) = &self.inner.limit {
            d.field("limit", l);
        }
        if let Some(c) = &self.inner.code {
            d.field("code", c);
        }
        if let Some(inner) = &self.inner.downstream {
            d.field("downstream", inner);
        }
        d.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.inner.message)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        if let Some(inner) = &self.inner.downstream {
            return Some(inner);
        }
        self.inner
            .source
            .as_deref()
            .map(|s| s as &(dyn std::error::Error + 'static))
    }
}

/// The parts of an [`Error`] that cross a process boundary, for transports that carry errors
/// over the wire and rebuild them on the other side (re-exported as
/// [`happen::transport::ErrorParts`](crate::transport::ErrorParts)).
///
/// ```
/// use happen::transport::ErrorParts;
/// use happen::{ErrorKind, NodeId};
///
/// let mut parts = ErrorParts::new(ErrorKind::QueueFull, "queue of `orders` is full");
/// parts.node = Some(NodeId::from("orders"));
/// parts.limit = Some(100);
/// let err = parts.into_error();
/// assert_eq!(err.kind(), ErrorKind::QueueFull);
/// assert_eq!(err.limit(), Some(100));
/// assert_eq!(ErrorParts::of(&err).node.as_deref(), Some("orders"));
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ErrorParts {
    /// The error's kind.
    pub kind: ErrorKind,
    /// Its message.
    pub message: String,
    /// The node it names.
    pub node: Option<NodeId>,
    /// The event it names.
    pub event_id: Option<EventId>,
    /// The limit it names (a queue limit, a chain depth).
    pub limit: Option<usize>,
    /// The application's error code.
    pub code: Option<String>,
    /// For [`ErrorKind::Downstream`]: the error the failed call got.
    pub downstream: Option<Error>,
}

impl ErrorParts {
    /// Parts with a kind and a message, nothing else.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> ErrorParts {
        ErrorParts {
            kind,
            message: message.into(),
            node: None,
            event_id: None,
            limit: None,
            code: None,
            downstream: None,
        }
    }

    /// The parts of `err` (its source, which does not cross a process, is left out).
    pub fn of(err: &Error) -> ErrorParts {
        ErrorParts {
            kind: err.kind(),
            message: err.message().to_owned(),
            node: err.node().cloned(),
            event_id: err.event_id().cloned(),
            limit: err.limit(),
            code: err.code().map(str::to_owned),
            downstream: err.downstream().cloned(),
        }
    }

    /// The error made of these parts.
    pub fn into_error(self) -> Error {
        let mut e = Error::new(self.kind, self.message);
        let inner = e.inner_mut();
        inner.node = self.node;
        inner.event_id = self.event_id;
        inner.limit = self.limit;
        inner.code = self.code.map(Arc::from);
        inner.downstream = self.downstream;
        e
    }
}

/// The text of a panic payload.
pub(crate) fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_through_names() {
        for k in ALL_KINDS {
            assert_eq!(ErrorKind::parse(k.as_str()), Some(k));
        }
    }

    #[test]
    fn handler_errors_keep_message_and_unwrap_happen_errors() {
        let e = Error::from_handler("card declined".into());
        assert_eq!(e.kind(), ErrorKind::Handler);
        assert_eq!(e.message(), "card declined");
        assert!(std::error::Error::source(&e).is_some());
        let inner = Error::new(ErrorKind::Timeout, "t");
        let e = Error::from_handler(Box::new(inner));
        assert_eq!(e.kind(), ErrorKind::Timeout);
    }

    #[test]
    fn errors_are_send_sync() {
        fn assert<T: Send + Sync + Clone + 'static>() {}
        assert::<Error>();
    }
}
