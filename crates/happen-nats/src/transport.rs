//! [`NatsTransport`]: the [`happen::Transport`] over NATS. Owns the connection, the shared reply
//! inbox and the per-node subscriptions.

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use async_nats::connection::State;
use async_nats::message::OutboundMessage;
use async_nats::{Client, HeaderMap, Subject};
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{SinkExt, StreamExt};
use happen::stream::ReplySender;
use happen::transport::Inbox;
use happen::{Error, ErrorKind, Event, NodeId, PRESSURE_EVENT, Pressure, Result, Transport};
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::NatsConfig;
use crate::pacing::{InFlight, Remote};
use crate::stats::{Counters, NatsStats, inc};
use crate::wire::{self, Frame, Subjects, header};

/// The NATS transport. Cheap to clone (a handle); build a [`happen::Happen`] with it:
///
/// ```no_run
/// # async fn demo() -> happen::Result<()> {
/// use happen::{Config, Happen};
/// use happen_nats::{NatsConfig, NatsTransport};
///
/// let transport = NatsTransport::connect(NatsConfig::with_server("nats://127.0.0.1:4222")).await?;
/// let happen = Happen::builder().transport(transport.clone()).build()?;
/// let node = happen.node("orders").await?; // reachable from every connected process
/// # let _ = node; Ok(()) }
/// ```
///
/// Every send goes through the server, also between nodes of one process, so replicas of a
/// node id in other processes share the load. See the crate docs for delivery semantics.
#[derive(Clone)]
pub struct NatsTransport {
    pub(crate) shared: Arc<Shared>,
}

/// Where a reply on the shared inbox goes.
pub(crate) enum Pending {
    /// Waiting for the first reply message. `in_flight` counts the request for pacing when
    /// a producer of this process paces sends to `target` (see [`crate::pacing`]).
    Reply {
        tx: ReplySender,
        target: NodeId,
        in_flight: Option<InFlight>,
        /// A durable send: its reply still comes after a reconnect (see [`crate::durable`]).
        durable: bool,
    },
    /// A remote stream being consumed: frames go to its consumer task. The request counts
    /// as in flight until the stream ends (its flow holds a slot at the target).
    Stream {
        frames: mpsc::Sender<async_nats::Message>,
        /// Held for its `Drop`.
        _in_flight: Option<InFlight>,
    },
    /// A `Happen-Query: limits` request for the pacing view of a target.
    Limits {
        remote: Arc<Remote>,
        expires: Instant,
    },
    /// A round trip through the server ([`Shared::round_trip`]): signalled when its probe
    /// comes back.
    Probe(oneshot::Sender<()>),
    /// A request that reached a stopped node of this process and was relayed to another
    /// replica: its answer (and stream frames) go back to `to`, the original reply subject.
    Relay {
        to: Subject,
        node: NodeId,
        /// Signalled when the first answer was passed back.
        first: Option<oneshot::Sender<()>>,
        /// Forgotten after the request timeout.
        expires: Instant,
    },
}

/// How long a limits query may take before the target counts as not telling its limits.
const LIMITS_QUERY_TIMEOUT: Duration = Duration::from_secs(2);

/// How long `shutdown` waits for the nodes' serve tasks and for the outgoing buffer to drain.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

/// An entry of the outgoing buffer.
pub(crate) enum Queued {
    /// A message, and the token of the request it is (to fail it if publishing fails).
    Message(Outgoing, Option<u64>),
    /// Hand everything queued before to the client, flush the client, then signal.
    Flush(oneshot::Sender<()>),
}

struct NodeHandle {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
    inbox: Inbox,
}

pub(crate) struct Shared {
    pub(crate) client: Client,
    pub(crate) config: NatsConfig,
    pub(crate) subjects: Subjects,
    /// `_INBOX.<nuid>`: replies arrive on `<inbox>.<token>`, stream control on `<inbox>.c<token>`.
    pub(crate) inbox: String,
    pub(crate) next_token: AtomicU64,
    pub(crate) pending: Mutex<HashMap<u64, Pending>>,
    pub(crate) controls: Mutex<HashMap<u64, mpsc::Sender<Frame>>>,
    /// Outgoing messages, handed to the client in order by the `publisher` task.
    outbound: mpsc::Sender<Queued>,
    /// Messages in `outbound` or being handed to the client by `publisher`.
    queued: AtomicUsize,
    /// Answers (replies, errors) of this process's nodes that found `outbound` full: handed to
    /// the client by `publisher` before anything else, so a serve task never waits for room
    /// (see [`Shared::publish_answer`]).
    overflow: mpsc::UnboundedSender<Outgoing>,
    /// A test hook: round trips wait while it is held (see [`NatsTransport::hold_round_trips`]).
    hold: RoundTripHold,
    /// Signalled when `queued` falls to half of `outbound_buffer` (for [`NatsTransport::ready`]).
    room: tokio::sync::Notify,
    nodes: Mutex<HashMap<NodeId, NodeHandle>>,
    /// The pacing views of remote targets (created by [`Transport::pressure`]).
    remotes: Mutex<HashMap<NodeId, Arc<Remote>>>,
    /// Set once any view exists: until then `send` skips the in-flight bookkeeping.
    pub(crate) watching_pressure: AtomicBool,
    /// This process's id in pressure reports (`Happen-Replica`): the reply inbox's unique part.
    pub(crate) replica: String,
    /// The last `node.pressure` report (seq, state) of each local node, for the
    /// `Happen-Pressure` header of its replies.
    pub(crate) local_reports: Mutex<HashMap<NodeId, (u64, Pressure)>>,
    pub(crate) max_bytes: usize,
    pub(crate) counters: Counters,
    pub(crate) stream_header: HeaderMap,
    /// Connection state, status events and the buffer of sends while disconnected.
    pub(crate) link: crate::connection::Link,
    broadcast_subject: Subject,
    pub(crate) closed: AtomicBool,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// Durable delivery, when `transport.nats.durable` names any node.
    pub(crate) durable: Option<crate::durable::Durable>,
}

pub(crate) fn transport_error(what: &str, e: impl fmt::Display) -> Error {
    Error::new(ErrorKind::Transport, format!("{what}: {e}"))
}

/// Explains a failed connection: what went wrong and which setting to check, as
/// [`ErrorKind::Auth`] (credentials refused), [`ErrorKind::Tls`] (TLS set-up failed) or
/// [`ErrorKind::Transport`] (anything else, such as an unreachable server).
fn connect_error(config: &NatsConfig, e: async_nats::ConnectError) -> Error {
    use async_nats::ConnectErrorKind as Kind;
    let servers = crate::config::redacted_servers(&config.servers);
    let a = &config.auth;
    let method = if a.user.is_some() {
        "user and password"
    } else if a.token.is_some() {
        "token"
    } else if a.nkey.is_some() {
        "nkey"
    } else if a.credentials_file.is_some() {
        "credentials file"
    } else if config.url_credentials().is_some() {
        "credentials in the server URL"
    } else {
        "none configured"
    };
    let (kind, message) = match e.kind() {
        _ if is_tls_failure(&e) => (
            ErrorKind::Tls,
            format!(
                "TLS connection to nats at {servers:?} failed: {e}; if the server's certificate is not trusted, set transport.nats.tls.ca_file to the CA that signed it (and check that the certificate names the host in transport.nats.servers); check transport.nats.tls.cert_file/key_file if the server requires a client certificate"
            ),
        ),
        Kind::AuthorizationViolation | Kind::Authentication => (
            ErrorKind::Auth,
            format!(
                "authentication failed: the nats server at {servers:?} rejected this client's credentials (method: {method}); check transport.nats.auth (user/password, token, nkey seed or credentials_file) against the server's authorization settings: {e}"
            ),
        ),
        _ => (
            ErrorKind::Transport,
            format!(
                "cannot connect to nats at {servers:?}; is nats-server running? check transport.nats.servers: {e}"
            ),
        ),
    };
    Error::new(kind, message).with_source(e)
}

/// Is `e` a TLS failure? async-nats reports a certificate the client does not trust as an IO
/// error (rustls' error inside), not as `Tls`.
fn is_tls_failure(e: &async_nats::ConnectError) -> bool {
    use async_nats::ConnectErrorKind as Kind;
    e.kind() == Kind::Tls || (e.kind() == Kind::Io && mentions_tls(e))
}

/// Is `e` worth another attempt? A refused login or a TLS failure will not change by itself.
fn is_retryable(e: &async_nats::ConnectError) -> bool {
    use async_nats::ConnectErrorKind as Kind;
    !matches!(
        e.kind(),
        Kind::AuthorizationViolation | Kind::Authentication | Kind::ServerParse
    ) && !is_tls_failure(e)
}

/// Does `e` or an error it wraps talk about certificates or TLS?
fn mentions_tls(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(e) = next {
        let text = e.to_string().to_ascii_lowercase();
        if ["certificate", "tls", "handshake"]
            .iter()
            .any(|w| text.contains(w))
        {
            return true;
        }
        next = e.source();
    }
    false
}

impl NatsTransport {
    /// Connects with `config`.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidConfig`] for invalid settings; [`ErrorKind::Transport`] when no
    /// server can be reached (unless `retry_on_initial_connect`), when the server refuses the
    /// credentials (the message starts with "authentication failed"), or when TLS fails (the
    /// message names TLS, the certificate problem and `transport.nats.tls.ca_file`). A refused
    /// login or a TLS failure is not retried, also not with `retry_on_initial_connect`.
    ///
    /// # Cancel safety
    /// Dropping the future abandons the connection attempt.
    pub async fn connect(config: NatsConfig) -> Result<NatsTransport> {
        config.validate()?;
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        // `retry_on_initial_connect` is ours, not async-nats' (whose background loop retries
        // a refused login forever, also after the caller gave up): one pass over the servers
        // per attempt, paced like reconnects and bounded by `reconnect.max_attempts`; a
        // refused login or a TLS failure ends it at once.
        let mut attempts = 0;
        let client = loop {
            let ev_tx = ev_tx.clone();
            let options = config
                .connect_options()
                .await?
                .event_callback(move |event| {
                    let ev_tx = ev_tx.clone();
                    async move {
                        let _ = ev_tx.send(event);
                    }
                });
            match options.connect(config.servers.clone()).await {
                Ok(client) => break client,
                Err(e)
                    if config.retry_on_initial_connect
                        && is_retryable(&e)
                        && config
                            .reconnect
                            .max_attempts
                            .is_none_or(|max| attempts < max) =>
                {
                    attempts += 1;
                    tracing::info!(target: "happen_nats", attempts, error = %e, "cannot reach nats yet; retrying (retry_on_initial_connect)");
                    tokio::time::sleep(config.reconnect.delay(attempts)).await;
                }
                Err(e) => return Err(connect_error(&config, e)),
            }
        };
        NatsTransport::with_client(client, config, ev_rx).await
    }

    /// Connects with the `[transport.nats]` section of a happen configuration.
    ///
    /// # Errors
    /// As [`connect`](NatsTransport::connect); unknown keys are errors naming the key.
    pub async fn from_config(config: &happen::Config) -> Result<NatsTransport> {
        NatsTransport::connect(NatsConfig::from_happen(config)?).await
    }

    async fn with_client(
        client: Client,
        config: NatsConfig,
        events: mpsc::UnboundedReceiver<async_nats::Event>,
    ) -> Result<NatsTransport> {
        let inbox = client.new_inbox();
        let replica = inbox.rsplit('.').next().unwrap_or(&inbox).to_owned();
        let replies = client
            .subscribe(format!("{inbox}.*"))
            .await
            .map_err(|e| transport_error("cannot subscribe to the reply inbox", e))?;
        let pressure_sub = client
            .subscribe(format!("{}.pressure.>", config.prefix))
            .await
            .map_err(|e| transport_error("cannot subscribe to pressure reports", e))?;
        let discover_sub = crate::discover::subscribe(&client, &config.prefix).await?;
        client
            .flush()
            .await
            .map_err(|e| transport_error("cannot reach the nats server", e))?;
        let (out_tx, out_rx) = mpsc::channel(config.outbound_buffer);
        let (overflow_tx, overflow_rx) = mpsc::unbounded_channel();
        let max_bytes = config
            .max_message_bytes
            .unwrap_or_else(|| client.server_info().max_payload.max(1));
        let mut stream_header = HeaderMap::new();
        stream_header.insert(header::STREAM, config.stream_window.to_string().as_str());
        let subjects = Subjects::new(&config.prefix);
        let link = crate::connection::Link::new(&client.server_info());
        let durable = crate::durable::Durable::start(&client, &config).await?;
        let shared = Arc::new(Shared {
            broadcast_subject: Subject::from(subjects.broadcast()),
            subjects,
            client,
            config,
            inbox,
            next_token: AtomicU64::new(1),
            pending: Mutex::new(HashMap::new()),
            controls: Mutex::new(HashMap::new()),
            outbound: out_tx,
            queued: AtomicUsize::new(0),
            overflow: overflow_tx,
            hold: RoundTripHold::default(),
            room: tokio::sync::Notify::new(),
            nodes: Mutex::new(HashMap::new()),
            remotes: Mutex::new(HashMap::new()),
            watching_pressure: AtomicBool::new(false),
            replica,
            local_reports: Mutex::new(HashMap::new()),
            max_bytes,
            counters: Counters::default(),
            stream_header,
            link,
            closed: AtomicBool::new(false),
            tasks: Mutex::new(Vec::new()),
            durable,
        });
        let mut tasks = vec![
            tokio::spawn(crate::replies::run(shared.clone(), replies)),
            tokio::spawn(publisher(shared.clone(), out_rx, overflow_rx)),
            tokio::spawn(connection_events(Arc::downgrade(&shared), events)),
            tokio::spawn(pressure_reports(Arc::downgrade(&shared), pressure_sub)),
            tokio::spawn(crate::discover::serve(
                Arc::downgrade(&shared),
                discover_sub,
            )),
        ];
        tasks.extend(crate::durable::Durable::spawn_publisher(&shared));
        shared.tasks.lock().extend(tasks);
        Ok(NatsTransport { shared })
    }

    /// The transport's counters.
    pub fn stats(&self) -> NatsStats {
        self.shared.counters.snapshot()
    }

    /// The underlying async-nats client (for example to publish raw messages).
    pub fn client(&self) -> &Client {
        &self.shared.client
    }

    /// Waits until the outgoing buffer has room again: at most half of `outbound_buffer`
    /// messages wait in it. `send`, `tell` and `broadcast` never block; when the buffer is full
    /// they fail at once with [`ErrorKind::Transport`]. A producer publishing faster than the
    /// connection drains (a burst of a million broadcasts) can pace itself with this instead
    /// of failing or spinning:
    ///
    /// ```no_run
    /// # async fn demo(node: happen::Node, transport: happen_nats::NatsTransport) -> happen::Result<()> {
    /// use happen::{ErrorKind, Event};
    /// for i in 0..1_000_000 {
    ///     let event = Event::new("tick", i);
    ///     loop {
    ///         match node.broadcast(event.clone()) {
    ///             Ok(()) => break,
    ///             Err(e) if e.kind() == ErrorKind::Transport && transport.is_backlogged() => {
    ///                 transport.ready().await?
    ///             }
    ///             Err(e) => return Err(e),
    ///         }
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`ErrorKind::ShutDown`] once the transport is shut down.
    ///
    /// # Cancel safety
    /// Cancel safe: it reserves nothing.
    pub async fn ready(&self) -> Result<()> {
        let s = &self.shared;
        loop {
            let notified = s.room.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if s.closed.load(Ordering::Acquire) {
                return Err(Error::new(
                    ErrorKind::ShutDown,
                    "the nats transport is shut down",
                ));
            }
            if s.queued.load(Ordering::Acquire) <= s.room_mark() {
                return Ok(());
            }
            notified.await;
        }
    }

    /// Waits until the client is connected (at once when it is). A producer that got
    /// [`ErrorKind::Transport`] because the connection is down and
    /// `transport.nats.disconnected_buffer` messages already wait for it can wait here before
    /// retrying.
    ///
    /// # Errors
    /// [`ErrorKind::Transport`] when the client gave up reconnecting
    /// (`transport.nats.reconnect.max_attempts`).
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn wait_connected(&self) -> Result<()> {
        self.shared.link.wait_up(&self.shared.client).await
    }

    /// Is the outgoing buffer more than half full? (Then a send that failed with
    /// [`ErrorKind::Transport`] most likely found it full; see [`ready`](NatsTransport::ready).)
    pub fn is_backlogged(&self) -> bool {
        self.shared.queued.load(Ordering::Acquire) > self.shared.room_mark()
    }

    /// Not part of the API (a test hook, hidden from the docs): while `hold` is true, every
    /// round trip through the server that confirms subscriptions (a broadcast stream's set-up,
    /// attaching or stopping a node) waits after its probe came back, as if the server were
    /// slow, until `hold_round_trips(false)`.
    #[doc(hidden)]
    pub fn hold_round_trips(&self, hold: bool) {
        self.shared.hold.hold.send_replace(hold);
    }

    /// Not part of the API (a test hook, hidden from the docs): waits until at least `n`
    /// round trips wait in a hold (see [`hold_round_trips`](NatsTransport::hold_round_trips)).
    #[doc(hidden)]
    pub async fn round_trips_held(&self, n: usize) {
        let mut waiting = self.shared.hold.waiting.subscribe();
        let _ = waiting.wait_for(|w| *w >= n).await;
    }

    /// The settings in use.
    pub fn config(&self) -> &NatsConfig {
        &self.shared.config
    }

    /// The subjects in use (`<prefix>.node.<id>`, `<prefix>.broadcast`).
    pub fn subjects(&self) -> &Subjects {
        &self.shared.subjects
    }
}

impl fmt::Debug for NatsTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsTransport")
            .field(
                "servers",
                &crate::config::redacted_servers(&self.shared.config.servers),
            )
            .field("prefix", &self.shared.config.prefix)
            .field("nodes", &self.shared.nodes.lock().len())
            .finish_non_exhaustive()
    }
}

/// An outgoing message (the `Happen-Stream` header is built from the shared template by the
/// `publisher` task, off the caller's path).
pub(crate) struct Outgoing {
    pub(crate) subject: Subject,
    pub(crate) reply: Option<Subject>,
    pub(crate) headers: Headers,
    pub(crate) payload: Bytes,
}

/// The headers of an [`Outgoing`] message.
pub(crate) enum Headers {
    None,
    /// `Happen-Stream` (requests), from the shared template.
    Stream,
    Custom(HeaderMap),
}

/// Publishes queued outgoing messages in order (`send` and `broadcast` must not block);
/// answers that found the buffer full first.
async fn publisher(
    shared: Arc<Shared>,
    mut rx: mpsc::Receiver<Queued>,
    mut overflow: mpsc::UnboundedReceiver<Outgoing>,
) {
    let mut sink = shared.client.clone();
    loop {
        let queued = tokio::select! {
            biased;
            Some(out) = overflow.recv() => {
                if let Err(e) = sink.feed(shared.outbound_message(out)).await {
                    tracing::warn!(target: "happen_nats", error = %e, "cannot publish an answer");
                }
                continue;
            }
            queued = rx.recv() => match queued {
                Some(queued) => queued,
                None => return,
            },
        };
        let (out, token) = match queued {
            Queued::Message(out, token) => (out, token),
            Queued::Flush(done) => {
                // everything before was fed to the client; its flush writes it to the socket
                let _ = shared.client.flush().await;
                shared.dequeued();
                let _ = done.send(());
                continue;
            }
        };
        let r = sink.feed(shared.outbound_message(out)).await;
        shared.dequeued();
        if let Err(e) = r {
            tracing::warn!(target: "happen_nats", error = %e, "publishing failed");
            if let Some(token) = token {
                shared.forget(token, || {
                    transport_error("the event could not be published to nats", &e)
                });
            }
        }
    }
}

/// Counts slow consumers; on disconnect fails the requests whose replies can no longer arrive.
async fn connection_events(
    shared: std::sync::Weak<Shared>,
    mut events: mpsc::UnboundedReceiver<async_nats::Event>,
) {
    while let Some(event) = events.recv().await {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        match event {
            async_nats::Event::SlowConsumer(sid) => {
                inc(&shared.counters.slow_consumer);
                metrics::counter!("happen_nats_slow_consumer_total").increment(1);
                tracing::warn!(target: "happen_nats", sid, "a subscription overflowed and dropped messages; raise transport.nats.subscription_capacity");
            }
            async_nats::Event::Disconnected => {
                inc(&shared.counters.disconnects);
                tracing::warn!(target: "happen_nats", "disconnected from nats; reconnecting");
                shared.fail_pending(
                    "the connection to nats was lost before the reply arrived; the event may or may not have been handled",
                );
                crate::connection::disconnected(&shared);
            }
            async_nats::Event::Connected => {
                tracing::info!(target: "happen_nats", "connected to nats");
                crate::connection::connected(&shared);
            }
            async_nats::Event::ClientError(async_nats::ClientError::MaxReconnects) => {
                tracing::error!(target: "happen_nats", "the nats client gave up reconnecting");
                crate::connection::closed(&shared, "reached transport.nats.reconnect.max_attempts");
            }
            other => tracing::info!(target: "happen_nats", event = %other, "nats connection event"),
        }
    }
}

/// Mirrors the pressure of remote nodes from their `node.pressure` reports.
async fn pressure_reports(shared: std::sync::Weak<Shared>, mut sub: async_nats::Subscriber) {
    while let Some(msg) = sub.next().await {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        match wire::decode_event(&msg.payload, shared.max_bytes) {
            Ok(event) if event.event_type() == PRESSURE_EVENT => {
                let replica = msg
                    .headers
                    .as_ref()
                    .and_then(|h| h.get(header::REPLICA))
                    .map_or("", |v| v.as_str());
                shared.observe_pressure_event(&event, replica);
            }
            _ => shared.counters.bad_input("malformed"),
        }
    }
}

impl Shared {
    pub(crate) fn fail_pending(&self, why: &str) {
        let drained: Vec<(u64, Pending)> = self.pending.lock().drain().collect();
        for (token, p) in drained {
            match p {
                Pending::Reply {
                    tx,
                    target,
                    in_flight,
                    durable: true,
                } => {
                    // stored in JetStream: the reply comes after the reconnect
                    self.pending.lock().insert(
                        token,
                        Pending::Reply {
                            tx,
                            target,
                            in_flight,
                            durable: true,
                        },
                    );
                }
                Pending::Reply { tx, target, .. } => {
                    inc(&self.counters.failed_on_disconnect);
                    let err =
                        Error::from_parts(ErrorKind::Transport, why, Some(target), None, None);
                    let _ = tx.send(happen::stream::Response::Done(Err(err)));
                }
                Pending::Limits { remote, .. } => remote.query_failed(),
                // a stream consumer sees its frame channel close and ends with a transport
                // error; a relayed request's sender sees its own connection's state; a round
                // trip fails when its probe is dropped
                Pending::Stream { .. } | Pending::Relay { .. } | Pending::Probe(_) => {}
            }
        }
    }

    /// Removes the request `token` that could not be published, failing its sender with
    /// `err()`.
    pub(crate) fn forget(&self, token: u64, err: impl FnOnce() -> Error) {
        let removed = self.pending.lock().remove(&token);
        match removed {
            Some(Pending::Reply { tx, .. }) => {
                let _ = tx.send(happen::stream::Response::Done(Err(err())));
            }
            Some(Pending::Limits { remote, .. }) => remote.query_failed(),
            _ => {}
        }
    }

    /// Registers a relay of a request to `node` whose answer goes back to `to`; returns the
    /// token of this process's reply subject to publish it with.
    pub(crate) fn relay(&self, to: Subject, node: NodeId, first: oneshot::Sender<()>) -> u64 {
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        self.pending.lock().insert(
            token,
            Pending::Relay {
                to,
                node,
                first: Some(first),
                expires: Instant::now() + self.config.request_timeout(),
            },
        );
        token
    }

    /// Builds the client's message (the `Happen-Stream` header from the shared template).
    pub(crate) fn outbound_message(&self, out: Outgoing) -> OutboundMessage {
        OutboundMessage {
            subject: out.subject,
            reply: out.reply,
            headers: match out.headers {
                Headers::None => None,
                Headers::Stream => Some(self.stream_header.clone()),
                Headers::Custom(h) => Some(h),
            },
            payload: out.payload,
        }
    }

    /// One entry left the outgoing buffer.
    fn dequeued(&self) {
        if self.queued.fetch_sub(1, Ordering::AcqRel) - 1 == self.room_mark() {
            self.room.notify_waiters();
        }
    }

    /// Publishes an answer of a local node (a reply, an error) without waiting: through the
    /// outgoing buffer, or, when that is full, through the unbounded overflow queue that the
    /// publisher task empties first. The overflow holds at most one answer per request the
    /// node has taken from its subscription, and is only used while the connection drains
    /// slower than the node answers.
    pub(crate) fn publish_answer(&self, out: Outgoing) {
        if let Some(out) = self.try_enqueue(out) {
            inc(&self.counters.answers_overflowed);
            if self.overflow.send(out).is_err() {
                tracing::warn!(target: "happen_nats", "the nats transport is shut down; an answer was not published");
            }
        }
    }

    /// Publishes `out` straight into the client (waiting for room there), bypassing the
    /// outgoing buffer (used when that is full).
    pub(crate) async fn publish_now(&self, out: Outgoing) -> Result<()> {
        let msg = self.outbound_message(out);
        self.client
            .clone()
            .send(msg)
            .await
            .map_err(|e| transport_error("cannot publish", e))
    }

    /// Waits until everything queued for publishing so far has been handed to the client and
    /// the client has written it to the server.
    pub(crate) async fn flush_outbound(&self) {
        let (done, flushed) = oneshot::channel();
        self.queued.fetch_add(1, Ordering::AcqRel);
        if self.outbound.send(Queued::Flush(done)).await.is_err() {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            return;
        }
        let _ = flushed.await;
    }

    /// Waits (at most `within`) for a message to this process's reply inbox to come back
    /// through the server: the server handles one connection's commands in order, so every
    /// subscribe and unsubscribe sent before has then taken effect, and every message the
    /// server routed to this connection before has arrived. One round trip through the
    /// shared inbox; no subscription of its own. The one helper for every such confirmation
    /// (attach, broadcast-stream set-up, stopping a node).
    ///
    /// # Errors
    /// [`ErrorKind::Transport`] when the probe cannot be published, the connection is lost
    /// meanwhile, or it does not come back within `within`.
    ///
    /// # Cancel safety
    /// Cancel safe; a dropped probe's entry is swept by the reply inbox task.
    pub(crate) async fn round_trip(&self, within: Duration) -> Result<()> {
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        let (done, back) = oneshot::channel();
        self.pending.lock().insert(token, Pending::Probe(done));
        let probe = format!("{}.{token}", self.inbox);
        let result = match self.client.publish(probe, Bytes::new()).await {
            Err(e) => Err(transport_error("cannot reach the nats server", e)),
            Ok(()) => match tokio::time::timeout(within, back).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(_)) => Err(Error::new(
                    ErrorKind::Transport,
                    "the connection to the nats server was lost during a round trip through it",
                )),
                Err(_) => Err(Error::new(
                    ErrorKind::Transport,
                    format!(
                        "the nats server did not answer a round trip within {within:?}; check the connection"
                    ),
                )),
            },
        };
        self.pending.lock().remove(&token);
        if result.is_ok() {
            self.hold.pass().await;
        }
        result
    }

    /// The inboxes of this process's nodes (for connection status and discovery).
    pub(crate) fn local_inboxes(&self) -> Vec<Inbox> {
        self.nodes
            .lock()
            .values()
            .map(|h| h.inbox.clone())
            .collect()
    }

    /// Does a node of this process stream broadcasts of `event_type` (see [`crate::bstream`])?
    pub(crate) fn local_streams(&self, event_type: &str) -> bool {
        self.nodes
            .lock()
            .values()
            .any(|h| h.inbox.streams(event_type))
    }

    /// Remembers the last `node.pressure` report of a local node (for reply headers).
    fn record_local_report(&self, event: &Event) {
        let p = event.payload();
        let Some(seq) = p.get("seq").and_then(|v| v.as_u64()) else {
            return;
        };
        let pressure = Pressure::new(
            p.get("underPressure")
                .and_then(|v| v.as_bool())
                .unwrap_or(false),
            p.get("queued").and_then(|v| v.as_u64()).unwrap_or(0) as usize,
            p.get("queueLimit").and_then(|v| v.as_u64()).unwrap_or(0) as usize,
        );
        let mut reports = self.local_reports.lock();
        let entry = reports
            .entry(event.sender().clone())
            .or_insert((seq, pressure));
        if seq >= entry.0 {
            *entry = (seq, pressure);
        }
    }

    /// `ready` resolves once at most this many messages wait in the outgoing buffer.
    fn room_mark(&self) -> usize {
        self.config.outbound_buffer / 2
    }

    pub(crate) fn check_connected(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::new(
                ErrorKind::ShutDown,
                "the nats transport is shut down; nothing was sent",
            ));
        }
        match self.client.connection_state() {
            State::Connected => Ok(()),
            state => Err(Error::new(
                ErrorKind::Transport,
                format!(
                    "not connected to nats (state: {state:?}); the client reconnects on its own, retry the send later"
                ),
            )),
        }
    }

    pub(crate) fn encode_checked(&self, event: &Event) -> Result<bytes::Bytes> {
        wire::encode_checked(event, self.max_bytes)
    }

    /// Queues a message for the publisher task; hands it back when the buffer is full or
    /// closed.
    pub(crate) fn try_enqueue(&self, out: Outgoing) -> Option<Outgoing> {
        self.queued.fetch_add(1, Ordering::AcqRel);
        let e = self.outbound.try_send(Queued::Message(out, None)).err()?;
        self.queued.fetch_sub(1, Ordering::AcqRel);
        match e.into_inner() {
            Queued::Message(out, _) => Some(out),
            Queued::Flush(_) => unreachable!("a message was queued"),
        }
    }

    fn enqueue(&self, out: Outgoing, token: Option<u64>) -> Result<()> {
        let forget = |token: Option<u64>| {
            if let Some(t) = token {
                self.forget(t, || Error::new(ErrorKind::Transport, "not published"));
            }
        };
        // Always through the `publisher` task, never straight into the client from here:
        // measured with 64 requests in flight, publishing from every caller task gave 13% fewer
        // requests per second than letting one task hand them over (most likely: the client's
        // connection task then runs and writes once per message instead of in batches);
        // sequential latency did not measurably change either way.
        self.queued.fetch_add(1, Ordering::AcqRel);
        self.outbound.try_send(Queued::Message(out, token)).map_err(|e| {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            forget(token);
            match e {
                mpsc::error::TrySendError::Full(_) => Error::new(
                    ErrorKind::Transport,
                    format!(
                        "the outgoing buffer of the nats transport is full ({} messages); slow down (`NatsTransport::ready` waits for room) or raise transport.nats.outbound_buffer",
                        self.config.outbound_buffer
                    ),
                ),
                mpsc::error::TrySendError::Closed(_) => Error::new(
                    ErrorKind::ShutDown,
                    "the nats transport is shut down; nothing was sent",
                ),
            }
        })
    }

    fn remote(&self, target: &str) -> Option<Arc<Remote>> {
        if !self.watching_pressure.load(Ordering::Relaxed) {
            return None;
        }
        self.remotes.lock().get(target).cloned()
    }

    /// Updates the pacing view of `target` from a reply's `Happen-Pressure` header. A reply
    /// without the header says nothing (it may have been answered before a later report).
    pub(crate) fn observe_pressure(&self, target: &NodeId, value: Option<&str>) {
        let Some(value) = value else { return };
        if let Some(remote) = self.remote(target) {
            let r = wire::parse_pressure_report(value);
            remote.report(r.replica.as_deref().unwrap_or(""), r.seq, r.pressure);
        }
    }

    /// A `node.pressure` report from `<prefix>.pressure.<id>`, sent by `replica`.
    fn observe_pressure_event(&self, event: &Event, replica: &str) {
        let p = event.payload();
        let Some(id) = p.get("nodeId").and_then(|v| v.as_str()) else {
            return;
        };
        let Some(remote) = self.remote(id) else {
            return;
        };
        if p.get("closed").and_then(|v| v.as_bool()) == Some(true) {
            remote.replica_closed(replica);
            return;
        }
        let under = p
            .get("underPressure")
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        let queued = p.get("queued").and_then(|v| v.as_u64()).unwrap_or(0) as usize;
        let limit = p.get("queueLimit").and_then(|v| v.as_u64()).unwrap_or(0) as usize;
        let seq = p.get("seq").and_then(|v| v.as_u64());
        remote.report(replica, seq, Pressure::new(under, queued, limit));
    }

    /// Sends a `Happen-Query: limits` request to `target` for its pacing view.
    fn query_limits(&self, target: &NodeId, remote: Arc<Remote>) {
        if self.check_connected().is_err() {
            remote.query_failed();
            return;
        }
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        self.pending.lock().insert(
            token,
            Pending::Limits {
                remote,
                expires: Instant::now() + LIMITS_QUERY_TIMEOUT.min(self.config.request_timeout()),
            },
        );
        let mut headers = HeaderMap::new();
        headers.insert(header::QUERY, "limits");
        let out = Outgoing {
            subject: Subject::from(self.subjects.node(target)),
            reply: Some(Subject::from(format!("{}.{token}", self.inbox))),
            headers: Headers::Custom(headers),
            payload: Bytes::new(),
        };
        // on failure `enqueue` fails the query, and the next paced send asks again
        let _ = self.enqueue(out, Some(token));
    }
}

/// How long `attach` waits for the server to confirm a node's subscriptions.
const ATTACH_CONFIRM_WITHIN: Duration = Duration::from_secs(10);

/// A test hook (see [`NatsTransport::hold_round_trips`]).
#[derive(Default)]
struct RoundTripHold {
    /// Round trips wait while this is `true`.
    hold: watch::Sender<bool>,
    /// How many round trips wait.
    waiting: watch::Sender<usize>,
}

impl RoundTripHold {
    /// Waits while the hold is on.
    async fn pass(&self) {
        let mut hold = self.hold.subscribe();
        if !*hold.borrow_and_update() {
            return;
        }
        struct Waiting<'a>(&'a watch::Sender<usize>);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.send_modify(|n| *n -= 1);
            }
        }
        self.waiting.send_modify(|n| *n += 1);
        let _waiting = Waiting(&self.waiting);
        let _ = hold.wait_for(|held| !held).await;
    }
}

impl Transport for NatsTransport {
    fn attach(&self, inbox: Inbox) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let s = &self.shared;
            let id = inbox.id().clone();
            let group = id.to_string();
            // read before subscribing: if it changes, the client has subscribed again since
            let disconnects = s.counters.disconnects.load(Ordering::Acquire);
            let direct = s
                .client
                .queue_subscribe(s.subjects.node(&id), group.clone())
                .await
                .map_err(|e| {
                    transport_error(
                        &format!("cannot subscribe node `{id}` (is the id a valid subject token?)"),
                        e,
                    )
                })?;
            let broadcast = s
                .client
                .queue_subscribe(s.subjects.broadcast().to_owned(), group)
                .await
                .map_err(|e| transport_error(&format!("cannot subscribe node `{id}`"), e))?;
            // The server must know the subscriptions before `attach` resolves, or a send from
            // another connection right after could find no responder. `flush` only empties our
            // socket buffer; a message to ourselves through the server proves it processed
            // every command before it (the server handles one connection's commands in order).
            s.round_trip(ATTACH_CONFIRM_WITHIN).await.map_err(|e| {
                Error::new(
                    ErrorKind::Transport,
                    format!(
                        "the nats server did not confirm the subscriptions of node `{id}`: {}",
                        e.message()
                    ),
                )
            })?;
            let (stop, stop_rx) = oneshot::channel();
            let task = tokio::spawn(crate::serve::run(
                s.clone(),
                inbox.clone(),
                direct,
                broadcast,
                disconnects,
                stop_rx,
            ));
            s.nodes.lock().insert(
                id.clone(),
                NodeHandle {
                    stop,
                    task,
                    inbox: inbox.clone(),
                },
            );
            if let Some(d) = &s.durable
                && let Err(e) = d.attach(s, &inbox).await
            {
                if let Some(h) = s.nodes.lock().remove(&id) {
                    let _ = h.stop.send(());
                }
                return Err(e);
            }
            Ok(())
        })
    }

    fn detach(&self, node: &NodeId) -> BoxFuture<'_, ()> {
        // stopped at once, so dropping the future only skips the waiting
        let task = self.shared.nodes.lock().remove(node).map(|h| {
            let _ = h.stop.send(());
            h.task
        });
        let durable = self.shared.durable.as_ref().and_then(|d| d.detach(node));
        let node = node.clone();
        Box::pin(async move {
            if let Some(task) = durable
                && let Err(e) = task.await
                && e.is_panic()
            {
                tracing::error!(target: "happen_nats", node = %node, "the node's durable consumer task panicked");
            }
            if let Some(task) = task
                && let Err(e) = task.await
                && e.is_panic()
            {
                tracing::error!(target: "happen_nats", node = %node, "the node's serve task panicked");
            }
        })
    }

    fn send(&self, target: &NodeId, event: Event, reply: Option<ReplySender>) -> Result<()> {
        let s = &self.shared;
        if let Some(d) = &s.durable
            && d.is_durable(target)
        {
            return s.send_durable(d, target, event, reply);
        }
        s.admit_outbound()?;
        let payload = s.encode_checked(&event)?;
        let subject = Subject::from(s.subjects.node(target));
        let (out, token) = match reply {
            None => (
                Outgoing {
                    subject,
                    reply: None,
                    headers: Headers::None,
                    payload,
                },
                None,
            ),
            Some(tx) => {
                let token = s.next_token.fetch_add(1, Ordering::Relaxed);
                // counted before it is published, so a paced sender never sees it missing
                let in_flight = s
                    .remote(target)
                    .map(|r| r.in_flight(Instant::now() + s.config.request_timeout()));
                // the reply path exists before the event is published
                s.pending.lock().insert(
                    token,
                    Pending::Reply {
                        tx,
                        target: target.clone(),
                        in_flight,
                        durable: false,
                    },
                );
                let mut reply = String::with_capacity(s.inbox.len() + 21);
                reply.push_str(&s.inbox);
                reply.push('.');
                let _ = write!(reply, "{token}");
                (
                    Outgoing {
                        subject,
                        reply: Some(Subject::from(reply)),
                        headers: Headers::Stream,
                        payload,
                    },
                    Some(token),
                )
            }
        };
        s.enqueue(out, token)?;
        inc(&s.counters.sent);
        Ok(())
    }

    fn broadcast(&self, event: Event) -> Result<()> {
        let s = &self.shared;
        s.admit_outbound()?;
        let payload = s.encode_checked(&event)?;
        let payload_copy = payload.clone(); // `Bytes`: shares the buffer
        s.enqueue(
            Outgoing {
                subject: s.broadcast_subject.clone(),
                reply: None,
                headers: crate::bstream::broadcast_headers(s, event.event_type()),
                payload,
            },
            None,
        )?;
        if event.event_type() == PRESSURE_EVENT {
            // also on a dedicated subject, which every process watches (pressure is rare),
            // with this process's id: reports of one replica are ordered by their `seq`
            s.record_local_report(&event);
            let mut headers = HeaderMap::new();
            headers.insert(header::REPLICA, s.replica.as_str());
            s.enqueue(
                Outgoing {
                    subject: Subject::from(s.subjects.pressure(event.sender())),
                    reply: None,
                    headers: Headers::Custom(headers),
                    payload: payload_copy,
                },
                None,
            )?;
        }
        inc(&s.counters.broadcasts);
        Ok(())
    }

    fn pressure(&self, target: &NodeId) -> Option<watch::Receiver<Pressure>> {
        let s = &self.shared;
        if let Some(h) = s.nodes.lock().get(target) {
            return Some(h.inbox.watch_pressure());
        }
        s.watching_pressure.store(true, Ordering::Relaxed);
        let remote = s
            .remotes
            .lock()
            .entry(target.clone())
            .or_insert_with(Remote::new)
            .clone();
        // subscribed first: a query answered at once must not be missed
        let rx = remote.subscribe();
        if remote.start_query() {
            s.query_limits(target, remote);
        }
        Some(rx)
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let s = &self.shared;
            s.closed.store(true, Ordering::Release);
            s.room.notify_waiters();
            // nodes not detached yet stop now (as `detach`: their answers go out first)
            let nodes: Vec<NodeHandle> = s.nodes.lock().drain().map(|(_, h)| h).collect();
            let durable = s
                .durable
                .as_ref()
                .map(|d| d.detach_all())
                .unwrap_or_default();
            let serving = nodes
                .into_iter()
                .map(|h| {
                    let _ = h.stop.send(());
                    h.task
                })
                .chain(durable);
            if tokio::time::timeout(SHUTDOWN_WAIT, futures::future::join_all(serving))
                .await
                .is_err()
            {
                tracing::warn!(target: "happen_nats", "nodes still busy after {SHUTDOWN_WAIT:?}; shutting the transport down anyway");
            }
            // every answer queued so far reaches the server before the tasks stop
            if tokio::time::timeout(SHUTDOWN_WAIT, s.flush_outbound())
                .await
                .is_err()
            {
                tracing::warn!(target: "happen_nats", "the outgoing buffer did not drain within {SHUTDOWN_WAIT:?}");
            }
            for t in s.tasks.lock().drain(..) {
                t.abort();
            }
            let drained: Vec<Pending> = s.pending.lock().drain().map(|(_, p)| p).collect();
            for p in drained {
                if let Pending::Reply { tx, .. } = p {
                    let _ = tx.send(happen::stream::Response::Done(Err(Error::new(
                        ErrorKind::ShutDown,
                        "the nats transport shut down before the reply arrived",
                    ))));
                }
            }
        })
    }
}
