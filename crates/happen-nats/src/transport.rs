//! [`NatsTransport`]: the [`happen::transport::Transport`] over NATS. Builds the parts (the outgoing
//! buffer, the requests, the link, the local nodes, the counters) and the workers, and hands
//! each worker the parts it needs.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_nats::{Client, HeaderMap, Subject};
use bytes::Bytes;
use futures::future::BoxFuture;
use happen::transport::Inbox;
use happen::transport::{ReplySender, Response};
use happen::transport::{StateStore, Transport};
use happen::{Error, ErrorKind, Event, NodeId, PRESSURE_EVENT, Pressure, Result};
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::{NatsConfig, redacted_servers};
use crate::core::link::Link;
use crate::core::nodes::{LocalNodes, NodeHandle};
use crate::core::outbox::{self, Headers, Outbox, Outgoing};
use crate::core::requests::{Pending, Requests};
use crate::core::stats::{Counters, NatsStats, inc};
use crate::core::{Endpoint, connect, transport_error};
use crate::pacing::{Remote, Remotes};
use crate::wire::discover::ProcessInfo;
use crate::wire::{self, PressureEvent, Subjects, header};
use crate::workers;
use crate::workers::batches::{self, Batches};
use crate::workers::completions::Completions;
use crate::workers::connection::Connection;
use crate::workers::discover::Discover;
use crate::workers::durable::Durable;
use crate::workers::liveness::Liveness;
use crate::workers::replies::Replies;
use crate::workers::serve::Serve;
use crate::workers::state::KvStore;
use crate::workers::streams::Streams;
use crate::workers::streams::broadcast::broadcast_headers;
use crate::workers::tap::Tap;

/// The NATS transport. Cheap to clone (a handle); build a [`happen::Happen`] with it
/// ([`from_config`](NatsTransport::from_config) connects with `[transport.nats]` of a happen
/// configuration):
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
/// # let server = test_support::NatsServer::start();
/// # let url = server.url();
/// use happen::{Context, Event, Happen};
/// use happen_nats::{NatsConfig, NatsTransport};
///
/// let transport = NatsTransport::connect(NatsConfig::with_server(url)).await?;
/// let happen = Happen::builder().transport(transport.clone()).build()?;
/// let orders = happen.node("orders").await?; // reachable from every connected process
/// orders.on("order.placed", |e: Event, _ctx: Context| async move { e.payload().clone() })?;
/// let client = happen.node("client").await?;
/// let reply = client.send("orders", Event::new("order.placed", 42)).await?;
/// assert_eq!(reply, 42);
/// assert_eq!(transport.stats().sent, 1);
/// # happen.shutdown(std::time::Duration::from_secs(1)).await;
/// # Ok(()) }
/// ```
///
/// Every send goes through the server, also between nodes of one process, so replicas of a
/// node id in other processes share the load. See the crate docs for delivery semantics.
#[derive(Clone)]
pub struct NatsTransport {
    inner: Arc<Inner>,
}

/// The parts and workers of one transport.
struct Inner {
    ep: Arc<Endpoint>,
    counters: Arc<Counters>,
    requests: Arc<Requests>,
    outbox: Arc<Outbox>,
    link: Arc<Link>,
    nodes: Arc<LocalNodes>,
    remotes: Arc<Remotes>,
    /// Broadcasts are marked as streams by it.
    streams: Arc<Streams>,
    /// Handed to each attached node's serve task.
    serve: Arc<Serve>,
    /// Durable delivery, when `transport.nats.durable` names any node.
    durable: Option<Arc<Durable>>,
    /// Heartbeats (`transport.nats.liveness`), when on.
    liveness: Option<Arc<Liveness>>,
    /// Stored state (JetStream key-value buckets), set up on first use.
    state: Arc<KvStore>,
    /// Which targets take a batch whole (the others get its events one at a time).
    batches: Batches,
    broadcast_subject: Subject,
    /// The transport-wide tasks, aborted at shutdown.
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// Answers `reply` with `err`, or logs it when nobody waits for an answer (a told batch).
fn answer_or_log(reply: Option<ReplySender>, err: Error) {
    match reply {
        Some(reply) => {
            let _ = reply.send(Response::Done(Err(err)));
        }
        None => {
            tracing::warn!(target: "happen_nats", error = %err, "a told batch was not delivered");
        }
    }
}

/// How long a limits query may take before the target counts as not telling its limits.
const LIMITS_QUERY_TIMEOUT: Duration = Duration::from_secs(2);

/// How long `shutdown` waits for the nodes' serve tasks and for the outgoing buffer to drain.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

/// How long `attach` waits for the server to confirm a node's subscriptions.
const ATTACH_CONFIRM_WITHIN: Duration = Duration::from_secs(10);

impl NatsTransport {
    /// Connects with `config`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// # let server = test_support::NatsServer::start();
    /// # let url = server.url();
    /// use happen_nats::{NatsConfig, NatsTransport};
    ///
    /// let mut config = NatsConfig::with_server(url);
    /// config.name = "orders-service".to_owned();
    /// let transport = NatsTransport::connect(config).await?;
    /// assert_eq!(transport.config().name, "orders-service");
    ///
    /// // nobody listens on this port: an error saying which setting to check
    /// let err = NatsTransport::connect(NatsConfig::with_server("nats://127.0.0.1:1"))
    ///     .await
    ///     .unwrap_err();
    /// assert_eq!(err.kind(), happen::ErrorKind::Transport);
    /// assert!(err.message().contains("transport.nats.servers"), "{err}");
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`ErrorKind::InvalidConfig`] for invalid settings; [`ErrorKind::Auth`] when the server
    /// refuses the credentials (the message starts with "authentication failed" and names
    /// `transport.nats.auth`); [`ErrorKind::Tls`] when TLS fails (the message names the
    /// certificate problem and `transport.nats.tls.ca_file`); [`ErrorKind::Transport`] when no
    /// server can be reached (unless `retry_on_initial_connect`). A refused login or a TLS
    /// failure is not retried, also not with `retry_on_initial_connect`.
    ///
    /// # Panics
    /// When not polled inside a Tokio runtime (the transport spawns its tasks on it).
    ///
    /// # Cancel safety
    /// Dropping the future abandons the connection attempt; nothing is left running.
    pub async fn connect(config: NatsConfig) -> Result<NatsTransport> {
        config.validate()?;
        let (client, events) = connect::connect(&config).await?;
        NatsTransport::with_client(client, config, events).await
    }

    /// Connects with the `[transport.nats]` section of a happen configuration (see
    /// [`NatsConfig::from_happen`]); then build the instance from the same configuration.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// # let server = test_support::NatsServer::start();
    /// # let url = server.url();
    /// use happen::{Config, Happen};
    /// use happen_nats::NatsTransport;
    ///
    /// let config = Config::from_toml_str(&format!(r#"
    /// [flow]
    /// request_timeout_ms = 5000
    /// [transport.nats]
    /// servers = ["{url}"]
    /// name = "orders-service"
    /// "#))?;
    /// let transport = NatsTransport::from_config(&config).await?;
    /// // the instance's request timeout is the transport's default
    /// assert_eq!(transport.config().request_timeout, Some(std::time::Duration::from_secs(5)));
    /// let happen = Happen::builder().config(config).transport(transport).build()?;
    /// let orders = happen.node("orders").await?;
    /// # let _ = orders;
    /// # happen.shutdown(std::time::Duration::from_secs(1)).await;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`connect`](NatsTransport::connect); unknown keys are errors naming the key.
    ///
    /// # Panics
    /// As [`connect`](NatsTransport::connect).
    ///
    /// # Cancel safety
    /// As [`connect`](NatsTransport::connect).
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
        let replies_sub = client
            .subscribe(format!("{inbox}.*"))
            .await
            .map_err(|e| transport_error("cannot subscribe to the reply inbox", e))?;
        let subjects = Subjects::new(&config.prefix);
        let node_subjects = subjects.node("");
        let pressure_sub = client
            .subscribe(subjects.pressure_all())
            .await
            .map_err(|e| transport_error("cannot subscribe to pressure reports", e))?;
        let discover_sub = workers::discover::subscribe(&client, &subjects).await?;
        let beat_sub = if config.liveness.enabled {
            Some(
                client
                    .subscribe(subjects.beat_all())
                    .await
                    .map_err(|e| transport_error("cannot subscribe to heartbeats", e))?,
            )
        } else {
            None
        };
        client
            .flush()
            .await
            .map_err(|e| transport_error("cannot reach the nats server", e))?;
        let max_bytes = config
            .max_message_bytes
            .unwrap_or_else(|| client.server_info().max_payload.max(1));
        let broadcast_subject = Subject::from(subjects.broadcast());
        let counters = Arc::new(Counters::default());
        let requests = Arc::new(Requests::new(
            client.clone(),
            inbox,
            config.effective_request_timeout(),
            counters.clone(),
        ));
        let (outbox, drain) = Outbox::new(
            client.clone(),
            config.outbound_buffer,
            config.stream_window,
            config.liveness.enabled,
            if config.liveness.enabled {
                config.liveness.replay_window
            } else {
                Duration::ZERO
            },
            requests.clone(),
            counters.clone(),
        );
        let outbox = Arc::new(outbox);
        let link = Arc::new(Link::new(
            client.clone(),
            config.disconnected_bound(),
            counters.clone(),
        ));
        let nodes = Arc::new(LocalNodes::default());
        let remotes = Arc::new(Remotes::default());
        let ep = Arc::new(Endpoint {
            client,
            config,
            subjects,
            replica,
            max_bytes,
        });
        let durable = Durable::start(
            ep.clone(),
            requests.clone(),
            outbox.clone(),
            link.clone(),
            counters.clone(),
        )
        .await?;
        let streams = Arc::new(Streams {
            ep: ep.clone(),
            requests: requests.clone(),
            nodes: nodes.clone(),
            counters: counters.clone(),
        });
        let completions = Arc::new(Completions::new(
            ep.clone(),
            outbox.clone(),
            counters.clone(),
        ));
        let watch_sub = workers::completions::subscribe(&ep).await?;
        let serve = Arc::new(Serve {
            ep: ep.clone(),
            requests: requests.clone(),
            outbox: outbox.clone(),
            nodes: nodes.clone(),
            counters: counters.clone(),
            streams: streams.clone(),
            completions: completions.clone(),
        });
        let replies = Arc::new(Replies {
            ep: ep.clone(),
            requests: requests.clone(),
            outbox: outbox.clone(),
            remotes: remotes.clone(),
            counters: counters.clone(),
            streams: streams.clone(),
        });
        let connection = Arc::new(Connection {
            node_subjects: node_subjects.clone(),
            link: link.clone(),
            requests: requests.clone(),
            outbox: outbox.clone(),
            nodes: nodes.clone(),
            counters: counters.clone(),
            durable: durable.as_ref().map(|(d, _)| d.clone()),
        });
        let discover = Arc::new(Discover {
            ep: ep.clone(),
            nodes: nodes.clone(),
            outbox: outbox.clone(),
            counters: counters.clone(),
        });
        let mut tasks = vec![
            tokio::spawn(workers::replies::run(replies, replies_sub)),
            tokio::spawn(outbox::run(outbox.clone(), drain)),
            tokio::spawn(workers::connection::run(connection, events)),
            tokio::spawn(workers::pressure::run(
                ep.clone(),
                remotes.clone(),
                counters.clone(),
                pressure_sub,
            )),
            tokio::spawn(workers::discover::serve(discover, discover_sub)),
        ];
        if let Some(sub) = watch_sub {
            tasks.push(tokio::spawn(workers::completions::watch(completions, sub)));
        }
        let liveness = beat_sub.map(|sub| {
            let liveness = Arc::new(Liveness {
                ep: ep.clone(),
                nodes: nodes.clone(),
                requests: requests.clone(),
                outbox: outbox.clone(),
                counters: counters.clone(),
            });
            tasks.push(tokio::spawn(workers::liveness::run(liveness.clone(), sub)));
            liveness
        });
        let state = Arc::new(KvStore::new(ep.client.clone(), ep.config.durable.replicas));
        let durable = durable.map(|(durable, publisher)| {
            tasks.push(publisher);
            durable
        });
        Ok(NatsTransport {
            inner: Arc::new(Inner {
                ep: ep.clone(),
                counters,
                requests,
                outbox,
                link,
                nodes,
                remotes,
                streams,
                serve,
                durable,
                liveness,
                state,
                batches: Batches::new(ep.clone()),
                broadcast_subject,
                tasks: Mutex::new(tasks),
            }),
        })
    }

    /// A snapshot of the transport's counters: what was sent, what was dropped or rejected
    /// and why, durable delivery (see [`NatsStats`]).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// # let server = test_support::NatsServer::start();
    /// # let url = server.url();
    /// use happen::{Event, Happen};
    ///
    /// let transport = happen_nats::NatsTransport::connect(happen_nats::NatsConfig::with_server(url)).await?;
    /// let happen = Happen::builder().transport(transport.clone()).build()?;
    /// happen.node("ticker").await?.broadcast(Event::new("tick", 1))?;
    /// assert_eq!(transport.stats().broadcasts, 1);
    /// # happen.shutdown(std::time::Duration::from_secs(1)).await;
    /// # Ok(()) }
    /// ```
    pub fn stats(&self) -> NatsStats {
        self.inner.counters.snapshot()
    }

    /// The underlying async-nats client, for what happen does not do (publishing raw
    /// messages, JetStream administration).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// # let server = test_support::NatsServer::start();
    /// # let url = server.url();
    /// let transport = happen_nats::NatsTransport::connect(happen_nats::NatsConfig::with_server(url)).await?;
    /// let client = transport.client();
    /// client.publish("audit.raw", "hello".into()).await.expect("published");
    /// assert!(client.server_info().max_payload > 0);
    /// # Ok(()) }
    /// ```
    pub fn client(&self) -> &Client {
        &self.inner.ep.client
    }

    /// Waits until the outgoing buffers have room again: at most half of `outbound_buffer`
    /// messages wait in the outgoing buffer, and as many events for durable nodes wait to be
    /// stored in JetStream (the durable outgoing buffer, when durable nodes are configured).
    /// `send`, `tell` and `broadcast` never block; when a buffer is full they fail at once
    /// with [`ErrorKind::Transport`]. A producer publishing faster than the
    /// connection drains (a burst of a million broadcasts) can pace itself with this instead
    /// of failing or spinning:
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// # let server = test_support::NatsServer::start();
    /// # let url = server.url();
    /// use happen::{ErrorKind, Event, Happen};
    /// use happen_nats::{NatsConfig, NatsTransport};
    ///
    /// let mut config = NatsConfig::with_server(url);
    /// config.outbound_buffer = 64; // small, to need the pacing
    /// let transport = NatsTransport::connect(config).await?;
    /// let happen = Happen::builder().transport(transport.clone()).build()?;
    /// let node = happen.node("ticker").await?;
    /// for i in 0..10_000 {
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
    /// assert_eq!(transport.stats().broadcasts, 10_000);
    /// # happen.shutdown(std::time::Duration::from_secs(1)).await;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`ErrorKind::ShutDown`] once the transport is shut down.
    ///
    /// # Cancel safety
    /// Cancel safe: it reserves nothing.
    pub async fn ready(&self) -> Result<()> {
        loop {
            self.inner.outbox.ready(&self.inner.link).await?;
            if let Some(d) = &self.inner.durable {
                d.ready().await?;
            }
            // the outgoing buffer may have filled again while the durable one drained
            if !self.is_backlogged() {
                return Ok(());
            }
        }
    }

    /// Waits until the client is connected (at once when it is). A producer that got
    /// [`ErrorKind::Transport`] because the connection is down and
    /// `transport.nats.disconnected_buffer` messages already wait for it can wait here before
    /// retrying.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// # let server = test_support::NatsServer::start();
    /// # let url = server.url();
    /// use std::time::Duration;
    ///
    /// let transport = happen_nats::NatsTransport::connect(happen_nats::NatsConfig::with_server(url)).await?;
    /// // connected: at once; while a reconnect takes long, bound the wait
    /// tokio::time::timeout(Duration::from_secs(5), transport.wait_connected())
    ///     .await
    ///     .expect("connected within 5 s")?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`ErrorKind::Transport`] when the client gave up reconnecting
    /// (`transport.nats.reconnect.max_attempts`).
    ///
    /// # Cancel safety
    /// Cancel safe: it only watches the connection state.
    pub async fn wait_connected(&self) -> Result<()> {
        self.inner.link.wait_up().await
    }

    /// Is the outgoing buffer, or the durable outgoing buffer, more than half full? (Then a
    /// send that failed with
    /// [`ErrorKind::Transport`] most likely found it full; see [`ready`](NatsTransport::ready),
    /// whose example uses both.)
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// # let server = test_support::NatsServer::start();
    /// # let url = server.url();
    /// let transport = happen_nats::NatsTransport::connect(happen_nats::NatsConfig::with_server(url)).await?;
    /// assert!(!transport.is_backlogged()); // nothing sent yet
    /// # Ok(()) }
    /// ```
    pub fn is_backlogged(&self) -> bool {
        self.inner.outbox.is_backlogged()
            || self
                .inner
                .durable
                .as_ref()
                .is_some_and(|d| d.is_backlogged())
    }

    /// The settings in use.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// # let server = test_support::NatsServer::start();
    /// # let url = server.url();
    /// let transport = happen_nats::NatsTransport::connect(happen_nats::NatsConfig::with_server(url)).await?;
    /// assert_eq!(transport.config().prefix, "happen");
    /// # Ok(()) }
    /// ```
    pub fn config(&self) -> &NatsConfig {
        &self.inner.ep.config
    }

    /// Starts watching every event sent, told or broadcast under this transport's prefix
    /// (`<prefix>.node.*` and `<prefix>.broadcast`), decoded; see [`Tap`]. Only listens: the
    /// nodes still get every event. Resolves once the server confirmed the subscription, so
    /// every event published after it is seen.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// # let server = test_support::NatsServer::start();
    /// # let url = server.url();
    /// use futures::StreamExt;
    /// use happen::{Event, Happen};
    /// use happen_nats::tap::TapKind;
    ///
    /// let transport = happen_nats::NatsTransport::connect(happen_nats::NatsConfig::with_server(url)).await?;
    /// let mut tap = transport.tap().await?;
    /// let happen = Happen::builder().transport(transport.clone()).build()?;
    /// happen.node("billing").await?.tell("mailer", Event::new("invoice.sent", 7))?;
    ///
    /// let seen = tap.next().await.expect("the tap is open").expect("an event");
    /// assert_eq!(seen.kind, TapKind::Tell);
    /// assert_eq!(seen.target.as_ref().map(|n| n.as_str()), Some("mailer"));
    /// assert_eq!((seen.event.event_type(), seen.event.sender().as_str()), ("invoice.sent", "billing"));
    /// # happen.shutdown(std::time::Duration::from_secs(1)).await;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`ErrorKind::Transport`] when the subscription cannot be made or the server does not
    /// confirm it within 10 s.
    ///
    /// # Cancel safety
    /// Dropping the future before it resolves unsubscribes; nothing else is left behind.
    pub async fn tap(&self) -> Result<Tap> {
        let ep = &self.inner.ep;
        Tap::start(&ep.client, &ep.subjects, &self.inner.requests, false).await
    }

    /// As [`tap`](NatsTransport::tap), for broadcasts only (`<prefix>.broadcast`).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// # let server = test_support::NatsServer::start();
    /// # let url = server.url();
    /// use futures::StreamExt;
    /// use happen::{Event, Happen};
    ///
    /// let transport = happen_nats::NatsTransport::connect(happen_nats::NatsConfig::with_server(url)).await?;
    /// let mut broadcasts = transport.tap_broadcasts().await?;
    /// let happen = Happen::builder().transport(transport.clone()).build()?;
    /// let node = happen.node("sensor").await?;
    /// node.tell("store", Event::new("reading", 1))?; // direct: not seen
    /// node.broadcast(Event::new("alarm", 2))?;
    /// let seen = broadcasts.next().await.expect("the tap is open").expect("an event");
    /// assert_eq!(seen.event.event_type(), "alarm");
    /// assert!(seen.target.is_none());
    /// # happen.shutdown(std::time::Duration::from_secs(1)).await;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`tap`](NatsTransport::tap).
    ///
    /// # Cancel safety
    /// As [`tap`](NatsTransport::tap).
    pub async fn tap_broadcasts(&self) -> Result<Tap> {
        let ep = &self.inner.ep;
        Tap::start(&ep.client, &ep.subjects, &self.inner.requests, true).await
    }

    /// Asks every process connected to the server which nodes it serves (see the
    /// [`discover`](crate::discover) module). Waits at most `wait` for the first answer, and
    /// after each answer `quiet` for more ([`QUIET`](crate::discover::QUIET) is a good
    /// default), never longer than `wait` in all. Answers of one process are merged;
    /// processes are sorted by replica id, their nodes by id. Processes that do not implement
    /// discovery (the TypeScript reference, a happen before it) do not answer, and neither do
    /// processes without nodes (this one included).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// # let server = test_support::NatsServer::start();
    /// # let url = server.url();
    /// use std::time::Duration;
    /// use happen::Happen;
    /// use happen_nats::{NatsConfig, NatsTransport, discover::QUIET};
    ///
    /// let transport = NatsTransport::connect(NatsConfig::with_server(url)).await?;
    /// let happen = Happen::builder().transport(transport.clone()).build()?;
    /// let _orders = happen.node("orders").await?;
    ///
    /// let processes = transport.discover(Duration::from_secs(2), QUIET).await?;
    /// assert_eq!(processes.len(), 1);
    /// assert_eq!(processes[0].nodes[0].id, "orders");
    /// # happen.shutdown(Duration::from_secs(1)).await;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`ErrorKind::Transport`] when the request cannot be published.
    ///
    /// # Cancel safety
    /// Dropping the future ends the request (its answers are dropped by the server).
    pub async fn discover(&self, wait: Duration, quiet: Duration) -> Result<Vec<ProcessInfo>> {
        workers::discover::request(&self.inner.ep.client, &self.inner.ep.subjects, wait, quiet)
            .await
    }

    /// The JetStream stream holding durable events and the dead-letter stream, when durable
    /// delivery is configured (see [`DurableConfig::stream`](crate::DurableConfig::stream)).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// # let server = test_support::NatsServer::start_with(
    /// #     test_support::NatsServerOptions::new().with_jetstream(),
    /// # );
    /// # let url = server.url();
    /// use happen_nats::{DeliveryMode, DurableNode, NatsConfig, NatsTransport};
    ///
    /// let plain = NatsTransport::connect(NatsConfig::with_server(url.clone())).await?;
    /// assert_eq!(plain.durable_streams(), None);
    ///
    /// let config = NatsConfig::with_server(url)
    ///     .with_durable("billing", DurableNode::new(DeliveryMode::AtLeastOnce));
    /// let durable = NatsTransport::connect(config).await?;
    /// assert_eq!(durable.durable_streams(), Some(("HAPPEN_DURABLE", "HAPPEN_DURABLE_DLQ")));
    /// # Ok(()) }
    /// ```
    pub fn durable_streams(&self) -> Option<(&str, &str)> {
        self.inner
            .durable
            .as_ref()
            .map(|d| (d.stream(), d.dlq_stream()))
    }
}

#[cfg(test)]
impl NatsTransport {
    /// The test hook that stalls round trips through the server.
    pub(crate) fn round_trip_hold(&self) -> &crate::core::requests::RoundTripHold {
        &self.inner.requests.hold
    }
}

impl fmt::Debug for NatsTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsTransport")
            .field("servers", &redacted_servers(&self.inner.ep.config.servers))
            .field("prefix", &self.inner.ep.config.prefix)
            .field("nodes", &self.inner.nodes.len())
            .finish_non_exhaustive()
    }
}

impl Inner {
    /// Publishes `event` to `target` (core NATS), registering the reply path first.
    fn send_now(&self, target: &NodeId, event: Event, reply: Option<ReplySender>) -> Result<()> {
        let s = self;
        s.link.admit()?;
        let payload = wire::encode_checked(&event, s.ep.max_bytes)?;
        let subject = Subject::from(s.ep.subjects.node(target));
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
                let token = s.requests.token();
                let now = Instant::now();
                // counted before it is published, so a paced sender never sees it missing
                let in_flight = s
                    .remotes
                    .get(target)
                    .map(|r| r.in_flight(now + s.ep.config.effective_request_timeout()));
                // the reply path exists before the event is published
                s.requests.insert(
                    token,
                    Pending::Reply {
                        tx,
                        target: target.clone(),
                        in_flight,
                        durable: None,
                        sent: Some(now),
                        replica: None,
                    },
                );
                (
                    Outgoing {
                        subject,
                        reply: Some(s.requests.reply_subject(token)),
                        headers: Headers::Stream,
                        payload,
                    },
                    Some(token),
                )
            }
        };
        s.outbox.enqueue(out, token)?;
        inc(&s.counters.sent);
        Ok(())
    }

    /// A batch for a node not known to take batches whole: discovery says whether a happen
    /// process serves it (the carrier goes as it is) or not (a node of the TypeScript
    /// reference, say: its events go one at a time, in order). Answered through `reply`.
    fn send_batch_to_unknown(
        self: &Arc<Self>,
        target: &NodeId,
        carrier: Event,
        reply: Option<ReplySender>,
    ) -> Result<()> {
        self.link.admit()?;
        let inner = self.clone();
        let target = target.clone();
        self.batches.spawn(async move {
            let whole = match inner.batches.ask_takes_whole(&target).await {
                Ok(whole) => whole,
                Err(e) => {
                    answer_or_log(reply, e);
                    return;
                }
            };
            if whole {
                let Some(reply) = reply else {
                    if let Err(e) = inner.send_now(&target, carrier, None) {
                        answer_or_log(None, e);
                    }
                    return;
                };
                // through a reply path of its own, so a failed send answers with its error
                let (tx, rx) = happen::transport::reply_channel();
                match inner.send_now(&target, carrier, Some(tx)) {
                    Ok(()) => {
                        let _ = reply.send(rx.await);
                    }
                    Err(e) => answer_or_log(Some(reply), e),
                }
                return;
            }
            let events = match batches::unpack(&carrier) {
                Ok(events) => events,
                Err(e) => {
                    answer_or_log(reply, e);
                    return;
                }
            };
            let timeout = inner.ep.config.effective_request_timeout();
            batches::one_at_a_time(events, reply, timeout, |event, r| {
                inner.send_now(&target, event, r)
            })
            .await;
        });
        Ok(())
    }

    /// Sends a `Happen-Query: limits` request to `target` for its pacing view.
    fn query_limits(&self, target: &NodeId, remote: Arc<Remote>) {
        if self.link.check_connected().is_err() {
            remote.query_failed();
            return;
        }
        let token = self.requests.token();
        self.requests.insert(
            token,
            Pending::Limits {
                remote,
                expires: Instant::now()
                    + LIMITS_QUERY_TIMEOUT.min(self.ep.config.effective_request_timeout()),
            },
        );
        let mut headers = HeaderMap::new();
        headers.insert(header::QUERY, "limits");
        let out = Outgoing {
            subject: Subject::from(self.ep.subjects.node(target)),
            reply: Some(self.requests.reply_subject(token)),
            headers: Headers::Custom(headers),
            payload: Bytes::new(),
        };
        // on failure `enqueue` fails the query, and the next paced send asks again
        let _ = self.outbox.enqueue(out, Some(token));
    }

    /// Remembers the last `node.pressure` report of a local node (for reply headers).
    fn record_local_report(&self, event: &Event) {
        let report = PressureEvent::parse(event.payload());
        if let Some(seq) = report.seq {
            self.nodes
                .record_report(event.sender(), seq, report.pressure);
        }
    }
}

impl Transport for NatsTransport {
    fn attach(&self, inbox: Inbox) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let s = &self.inner;
            let id = inbox.id().clone();
            let group = id.to_string();
            // read before subscribing: if it changes, the client has subscribed again since
            let disconnects = s
                .counters
                .disconnects
                .load(std::sync::atomic::Ordering::Acquire);
            let direct = s
                .ep
                .client
                .queue_subscribe(s.ep.subjects.node(&id), group.clone())
                .await
                .map_err(|e| {
                    transport_error(
                        &format!("cannot subscribe node `{id}` (is the id a valid subject token?)"),
                        e,
                    )
                })?;
            // a node that takes no broadcasts is not subscribed to them: neither the server
            // nor this process carries it a copy of each only to skip it
            let broadcast = if inbox.receives_broadcasts() {
                Some(
                    s.ep.client
                        .queue_subscribe(s.ep.subjects.broadcast().to_owned(), group)
                        .await
                        .map_err(|e| {
                            transport_error(&format!("cannot subscribe node `{id}`"), e)
                        })?,
                )
            } else {
                None
            };
            // The server must know the subscriptions before `attach` resolves, or a send from
            // another connection right after could find no responder. `flush` only empties our
            // socket buffer; a message to ourselves through the server proves it processed
            // every command before it (the server handles one connection's commands in order).
            s.requests
                .round_trip(ATTACH_CONFIRM_WITHIN)
                .await
                .map_err(|e| {
                    Error::new(
                        ErrorKind::Transport,
                        format!(
                            "the nats server did not confirm the subscriptions of node `{id}`: {}",
                            e.message()
                        ),
                    )
                })?;
            let (stop, stop_rx) = oneshot::channel();
            let task = tokio::spawn(workers::serve::run(
                s.serve.clone(),
                inbox.clone(),
                direct,
                broadcast,
                disconnects,
                stop_rx,
            ));
            s.nodes.insert(
                id.clone(),
                NodeHandle {
                    stop,
                    task,
                    inbox: inbox.clone(),
                },
            );
            if let Some(d) = &s.durable
                && let Err(e) = d.attach(&inbox).await
            {
                if let Some(h) = s.nodes.remove(&id) {
                    drop(h.stop()); // the serve task ends by itself
                }
                return Err(e);
            }
            Ok(())
        })
    }

    fn detach(&self, node: &NodeId) -> BoxFuture<'_, ()> {
        // stopped at once, so dropping the future only skips the waiting
        let task = self.inner.nodes.remove(node).map(NodeHandle::stop);
        let durable = self.inner.durable.as_ref().and_then(|d| d.detach(node));
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
        let s = &self.inner;
        if let Some(d) = &s.durable
            && d.is_durable(target)
        {
            return d.send(target, event, reply);
        }
        if Batches::is_carrier(&event) && !s.batches.takes_whole(target) {
            return s.send_batch_to_unknown(target, event, reply);
        }
        s.send_now(target, event, reply)
    }

    fn broadcast(&self, event: Event) -> Result<()> {
        let s = &self.inner;
        s.link.admit()?;
        let payload = wire::encode_checked(&event, s.ep.max_bytes)?;
        let payload_copy = payload.clone(); // `Bytes`: shares the buffer
        s.outbox.enqueue(
            Outgoing {
                subject: s.broadcast_subject.clone(),
                reply: None,
                headers: broadcast_headers(&s.streams, event.event_type()),
                payload,
            },
            None,
        )?;
        if event.event_type() == PRESSURE_EVENT {
            // also on a dedicated subject, which every process watches (pressure is rare),
            // with this process's id: reports of one replica are ordered by their `seq`
            s.record_local_report(&event);
            let mut headers = HeaderMap::new();
            headers.insert(header::REPLICA, s.ep.replica.as_str());
            s.outbox.enqueue(
                Outgoing {
                    subject: Subject::from(s.ep.subjects.pressure(event.sender())),
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
        let s = &self.inner;
        if let Some(inbox) = s.nodes.inbox(target) {
            return Some(inbox.watch_pressure());
        }
        let remote = s.remotes.view(target);
        // subscribed first: a query answered at once must not be missed
        let rx = remote.subscribe();
        if remote.start_query() {
            s.query_limits(target, remote);
        }
        Some(rx)
    }

    fn state_store(&self) -> Option<Arc<dyn StateStore>> {
        Some(self.inner.state.clone())
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let s = &self.inner;
            // Requests still waiting fail with `ShutDown` when this ends — also when the
            // instance gives up on it at its deadline (the server gone or not answering) and
            // drops it halfway: their senders are told, none waits out its timeout.
            let mut fail_waiting = FailWaiting(Some(s));
            s.link.close();
            s.outbox.wake_all();
            if let Some(d) = &s.durable {
                d.wake_all();
            }
            // nodes not detached yet stop now (as `detach`: their answers go out first)
            let nodes = s.nodes.drain();
            let durable = s
                .durable
                .as_ref()
                .map(|d| d.detach_all())
                .unwrap_or_default();
            let serving = nodes.into_iter().map(NodeHandle::stop).chain(durable);
            if tokio::time::timeout(SHUTDOWN_WAIT, futures::future::join_all(serving))
                .await
                .is_err()
            {
                tracing::warn!(target: "happen_nats", "nodes still busy after {SHUTDOWN_WAIT:?}; shutting the transport down anyway");
            }
            // the nodes are stopped: what still waits is failed, and those answers go out too
            fail_waiting.now();
            // requesters elsewhere stop waiting for this replica (after its last answers)
            if let Some(l) = &s.liveness {
                l.publish_closed();
            }
            // every answer queued so far reaches the server before the tasks stop
            if tokio::time::timeout(SHUTDOWN_WAIT, s.outbox.flush())
                .await
                .is_err()
            {
                tracing::warn!(target: "happen_nats", "the outgoing buffer did not drain within {SHUTDOWN_WAIT:?}");
            }
            for t in s.tasks.lock().drain(..) {
                t.abort();
            }
        })
    }
}

/// Fails every request still waiting when dropped (see `shutdown`), and answers `ShutDown`
/// to the requesters of requests relayed for a stopped node whose answer has not come back:
/// they learn at once instead of waiting out their timeout.
struct FailWaiting<'a>(Option<&'a Inner>);

impl FailWaiting<'_> {
    /// Fails them now (once).
    fn now(&mut self) {
        let Some(s) = self.0.take() else { return };
        for (to, node) in s.requests.fail_all() {
            let err = wire::error_from_parts(
                ErrorKind::ShutDown,
                format!(
                    "the process relaying a request for stopped node `{node}` shut down before it was answered; send it again"
                ),
                Some(node),
                None,
                None,
            );
            let mut h = HeaderMap::new();
            h.insert(header::STATUS, "error");
            let body = wire::encode_error(&err, &mut h, s.ep.client.max_payload(), 0);
            s.outbox.publish_answer(Outgoing {
                subject: to,
                reply: None,
                headers: Headers::Custom(h),
                payload: body,
            });
        }
    }
}

impl Drop for FailWaiting<'_> {
    fn drop(&mut self) {
        self.now();
    }
}
