//! Durable delivery on JetStream (`[transport.nats.durable]`): events to the node ids it names
//! are stored in a JetStream stream before delivery and consumed by a durable pull consumer
//! per node id. See `WIRE.md`, "Durable delivery", for the subjects, headers and guarantees.
//!
//! ```
//! use happen_nats::durable::{DeliveryMode, DurableNode};
//! use happen_nats::NatsConfig;
//!
//! let config = happen::Config::from_toml_str(r#"
//! [transport.nats.durable]
//! dedup_window_ms = 120000
//! [transport.nats.durable.nodes."billing-*"]
//! mode = "exactly-once"
//! max_deliveries = 3
//! "#)?;
//! let nats = NatsConfig::from_happen(&config)?;
//! assert_eq!(nats.durable.node("billing-eu").unwrap().mode, DeliveryMode::ExactlyOnce);
//! assert!(nats.durable.node("orders").is_none());
//!
//! // the same with the builder
//! let nats = NatsConfig::default()
//!     .with_durable("billing-*", DurableNode::new(DeliveryMode::ExactlyOnce).with_max_deliveries(3));
//! assert!(nats.durable.node("billing-us").is_some());
//! # Ok::<(), happen::Error>(())
//! ```
//!
//! # How it works
//! - **Sending.** `send` and `tell` to a durable node id publish the event to
//!   `<prefix>.durable.<node-id>` with `Nats-Msg-Id` = the event id, from a background task
//!   that keeps many publishes in flight and retries each (same id: the server drops a
//!   duplicate within the dedup window) until the server acknowledges it or the request
//!   timeout passes. A request's reply subject travels in the `Happen-Reply-To` header.
//!   Broadcasts are not durable (they go over core NATS to every node id, as before).
//! - **Consuming.** Each process hosting a durable node pulls from the node id's durable
//!   consumer (replicas share it) only as many messages as the node has room for
//!   (`max_concurrent + queue_limit` minus what it holds), so the backlog stays in JetStream.
//! - **Settling.** A message is acknowledged after its flow finished; a failed flow is
//!   redelivered after a back-off until `max_deliveries`, then published to
//!   `<prefix>.dlq.<node-id>` (stored in the dead-letter stream) with its error, and terminated.
//! - **Exactly-once effects** (`mode = "exactly-once"`): completed event ids are recorded in a
//!   record stream (`<stream>_DONE`) for the dedup window; a redelivered event already completed is
//!   acknowledged (and its requester answered with the recorded value) without running again.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer, stream};
use async_nats::{HeaderMap, Message, Subject};
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use happen::stream::{ReplySender, Response, reply_channel};
use happen::transport::Inbox;
use happen::{Error, ErrorKind, Event, NodeId, Result};
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::{Backoff, NatsConfig};
use crate::transport::{Headers, Outgoing, Pending, Shared};
use crate::wire::{self, header};

pub use crate::config::{DeliveryMode, DurableConfig, DurableNode};

/// A snapshot of the durable-delivery counters (see
/// [`NatsTransport::durable_stats`](crate::NatsTransport::durable_stats)).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DurableStats {
    /// Durable events the server acknowledged storing.
    pub published: u64,
    /// Durable events given up after retrying until the request timeout (the requester got
    /// an error; a `tell` was logged).
    pub publish_failed: u64,
    /// Publish attempts retried (timeouts, no stream yet, disconnected).
    pub publish_retries: u64,
    /// Messages pulled from the consumers of this process's durable nodes.
    pub pulled: u64,
    /// Flows finished and acknowledged.
    pub acked: u64,
    /// Failed flows handed back for redelivery.
    pub retried: u64,
    /// Events published to the dead-letter subject.
    pub dead_lettered: u64,
    /// Redelivered events acknowledged without running (exactly-once record found).
    pub duplicates_skipped: u64,
    /// Most durable events one node of this process held at once (pulled, not settled).
    pub max_held: u64,
}

#[derive(Default)]
struct Counters {
    published: AtomicU64,
    publish_failed: AtomicU64,
    publish_retries: AtomicU64,
    pulled: AtomicU64,
    acked: AtomicU64,
    retried: AtomicU64,
    dead_lettered: AtomicU64,
    duplicates_skipped: AtomicU64,
    max_held: AtomicU64,
}

fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// A durable message waiting for the publisher task.
pub(crate) struct Publish {
    subject: Subject,
    headers: HeaderMap,
    payload: Bytes,
    /// The request's token (to fail it if publishing fails for good).
    token: Option<u64>,
    node: NodeId,
}

struct Consumer {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

/// The durable-delivery state of a transport.
pub(crate) struct Durable {
    config: DurableConfig,
    js: jetstream::Context,
    stream: String,
    dlq_stream: String,
    /// `<prefix>.durable.`
    subject_prefix: String,
    /// `<prefix>.dlq.`
    dlq_prefix: String,
    done: Option<Records>,
    tx: mpsc::Sender<Publish>,
    rx: Mutex<Option<mpsc::Receiver<Publish>>>,
    consumers: Mutex<HashMap<NodeId, Consumer>>,
    counters: Counters,
}

/// How long a pull request waits at the server for messages.
const PULL_EXPIRES: Duration = Duration::from_secs(2);
/// Largest pull.
const MAX_PULL: usize = 2048;
/// Most pulls outstanding at once per node.
const MAX_PULLS: usize = 4;
/// Most durable events one node holds at once, whatever its limits.
const MAX_HELD: usize = 16_384;
/// The JetStream API and publish-ack timeout.
const JS_TIMEOUT: Duration = Duration::from_secs(5);
/// Pauses between attempts to store a durable event.
const PUBLISH_RETRY: Backoff = Backoff::new(50, 800);
/// Pauses between attempts to store an exactly-once record.
const RECORD_RETRY: Backoff = Backoff::new(20, 640);
/// Pauses between attempts to store a dead letter.
const DEAD_LETTER_RETRY: Backoff = Backoff::new(100, 1600);

fn js_error(what: &str, e: impl fmt::Display) -> Error {
    Error::new(
        ErrorKind::Transport,
        format!(
            "durable delivery: {what}: {e}; durable nodes need a nats-server with JetStream enabled (`nats-server -js`)"
        ),
    )
}

impl Durable {
    /// Creates (or finds) the streams. `None` when no node is durable.
    pub(crate) async fn start(
        client: &async_nats::Client,
        config: &NatsConfig,
    ) -> Result<Option<Durable>> {
        let d = &config.durable;
        if !d.is_enabled() {
            return Ok(None);
        }
        let js = jetstream::ContextBuilder::new()
            .timeout(JS_TIMEOUT)
            .max_ack_inflight(d.publish_window.max(1) * 2)
            .build(client.clone());
        let stream = d.stream_name(&config.prefix);
        let dlq_stream = format!("{stream}_DLQ");
        let subject_prefix = format!("{}.durable.", config.prefix);
        let dlq_prefix = format!("{}.dlq.", config.prefix);
        js.get_or_create_stream(stream::Config {
            name: stream.clone(),
            subjects: vec![format!("{subject_prefix}>")],
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            duplicate_window: d.dedup_window(),
            num_replicas: d.replicas,
            ..Default::default()
        })
        .await
        .map_err(|e| js_error(&format!("cannot create stream `{stream}`"), e))?;
        js.get_or_create_stream(stream::Config {
            name: dlq_stream.clone(),
            subjects: vec![format!("{dlq_prefix}>")],
            retention: stream::RetentionPolicy::Limits,
            storage: stream::StorageType::File,
            duplicate_window: d.dedup_window(),
            num_replicas: d.replicas,
            ..Default::default()
        })
        .await
        .map_err(|e| js_error(&format!("cannot create stream `{dlq_stream}`"), e))?;
        let done = if d
            .nodes
            .values()
            .any(|n| n.mode == DeliveryMode::ExactlyOnce)
        {
            // a key-value bucket by hand (one subject per record, its last message kept for
            // the window): async-nats' bucket API needs a newer server than 2.9
            let name = format!("{stream}_DONE");
            let records = js
                .get_or_create_stream(stream::Config {
                    name: name.clone(),
                    subjects: vec![format!("{}.done.>", config.prefix)],
                    retention: stream::RetentionPolicy::Limits,
                    storage: stream::StorageType::File,
                    max_age: d.dedup_window(),
                    max_messages_per_subject: 1,
                    allow_direct: true,
                    duplicate_window: d.dedup_window().min(Duration::from_secs(120)),
                    num_replicas: d.replicas,
                    ..Default::default()
                })
                .await
                .map_err(|e| js_error(&format!("cannot create stream `{name}`"), e))?;
            Some(Records {
                stream: records,
                prefix: format!("{}.done.", config.prefix),
            })
        } else {
            None
        };
        let (tx, rx) = mpsc::channel(config.outbound_buffer);
        Ok(Some(Durable {
            config: d.clone(),
            js,
            stream,
            dlq_stream,
            subject_prefix,
            dlq_prefix,
            done,
            tx,
            rx: Mutex::new(Some(rx)),
            consumers: Mutex::new(HashMap::new()),
            counters: Counters::default(),
        }))
    }

    /// Starts the publisher task.
    pub(crate) fn spawn_publisher(shared: &Arc<Shared>) -> Option<JoinHandle<()>> {
        let d = shared.durable.as_ref()?;
        let rx = d.rx.lock().take()?;
        Some(tokio::spawn(publisher(shared.clone(), rx)))
    }

    /// Is `target` durable?
    pub(crate) fn is_durable(&self, target: &str) -> bool {
        self.config.node(target).is_some()
    }

    /// Queues a durable send (see the module docs); never waits.
    pub(crate) fn send(
        &self,
        shared: &Shared,
        target: &NodeId,
        event: &Event,
        payload: Bytes,
        reply: Option<(Subject, u64)>,
    ) -> Result<()> {
        let mut headers = HeaderMap::new();
        headers.insert(header::MSG_ID, event.id().to_string().as_str());
        let token = reply.map(|(subject, token)| {
            headers.insert(header::REPLY_TO, subject.as_str());
            token
        });
        let p = Publish {
            subject: Subject::from(format!("{}{target}", self.subject_prefix)),
            headers,
            payload,
            token,
            node: target.clone(),
        };
        self.tx.try_send(p).map_err(|e| {
            let err = match e {
                mpsc::error::TrySendError::Full(_) => Error::new(
                    ErrorKind::Transport,
                    format!(
                        "the durable outgoing buffer is full ({} events wait for the server's acknowledgement); slow down or raise transport.nats.outbound_buffer",
                        shared.config.outbound_buffer
                    ),
                ),
                mpsc::error::TrySendError::Closed(_) => Error::new(
                    ErrorKind::ShutDown,
                    "the nats transport is shut down; nothing was sent",
                ),
            };
            if let Some(t) = token {
                shared.forget(t, || err.clone());
            }
            err
        })
    }

    /// Starts consuming for a durable node.
    pub(crate) async fn attach(&self, shared: &Arc<Shared>, inbox: &Inbox) -> Result<()> {
        let id = inbox.id().clone();
        let Some(settings) = self.config.node(&id).cloned() else {
            return Ok(());
        };
        let consumer = self.consumer(&id, &settings).await?;
        let (stop, stop_rx) = oneshot::channel();
        let task = tokio::spawn(consume(
            shared.clone(),
            inbox.clone(),
            settings,
            consumer,
            stop_rx,
        ));
        if let Some(old) = self.consumers.lock().insert(id, Consumer { stop, task }) {
            old.task.abort();
        }
        Ok(())
    }

    /// The durable consumer's name for node `id`: the id with characters a consumer name
    /// cannot hold escaped.
    fn consumer_name(id: &str) -> String {
        let mut out = String::from("happen_");
        escape_token(id, &mut out);
        out
    }

    async fn consumer(
        &self,
        id: &NodeId,
        settings: &DurableNode,
    ) -> Result<consumer::Consumer<consumer::pull::Config>> {
        let stream = self
            .js
            .get_stream(&self.stream)
            .await
            .map_err(|e| js_error(&format!("cannot find stream `{}`", self.stream), e))?;
        let name = Durable::consumer_name(id);
        let mut consumer = stream
            .get_or_create_consumer(
                &name,
                consumer::pull::Config {
                    durable_name: Some(name.clone()),
                    filter_subject: format!("{}{id}", self.subject_prefix),
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait: settings.ack_wait(),
                    // retries are counted and bounded here, never dropped by the server
                    max_deliver: -1,
                    max_ack_pending: -1,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| {
                js_error(
                    &format!("cannot create consumer `{name}` of node `{id}`"),
                    e,
                )
            })?;
        // an existing consumer keeps the settings it was created with
        if let Ok(info) = consumer.info().await
            && info.config.ack_wait != settings.ack_wait()
        {
            tracing::warn!(target: "happen_nats", node = %id, consumer = %name, configured = ?settings.ack_wait(), in_use = ?info.config.ack_wait, "the durable consumer exists with another ack_wait; delete the consumer (it is recreated with the new setting) to change it");
        }
        Ok(consumer)
    }

    /// Stops consuming for `node` and waits until what it holds is settled.
    pub(crate) fn detach(&self, node: &NodeId) -> Option<JoinHandle<()>> {
        let c = self.consumers.lock().remove(node)?;
        let _ = c.stop.send(());
        Some(c.task)
    }

    /// Stops every consumer (as [`detach`](Durable::detach)).
    pub(crate) fn detach_all(&self) -> Vec<JoinHandle<()>> {
        self.consumers
            .lock()
            .drain()
            .map(|(_, c)| {
                let _ = c.stop.send(());
                c.task
            })
            .collect()
    }

    pub(crate) fn stats(&self) -> DurableStats {
        let c = &self.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        DurableStats {
            published: l(&c.published),
            publish_failed: l(&c.publish_failed),
            publish_retries: l(&c.publish_retries),
            pulled: l(&c.pulled),
            acked: l(&c.acked),
            retried: l(&c.retried),
            dead_lettered: l(&c.dead_lettered),
            duplicates_skipped: l(&c.duplicates_skipped),
            max_held: l(&c.max_held),
        }
    }

    /// The stream of durable events.
    pub(crate) fn stream(&self) -> &str {
        &self.stream
    }

    /// The dead-letter stream.
    pub(crate) fn dlq_stream(&self) -> &str {
        &self.dlq_stream
    }
}

/// Appends `s` to `out` with every character but ASCII letters, digits, `-` and `_` written as
/// `=XX` (hex of each UTF-8 byte): valid in consumer names and key-value keys.
fn escape_token(s: &str, out: &mut String) {
    use std::fmt::Write as _;
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            out.push(b as char);
        } else {
            let _ = write!(out, "={b:02X}");
        }
    }
}

/// The exactly-once records: the outcome of each completed event, for the dedup window.
struct Records {
    stream: stream::Stream,
    /// `<prefix>.done.`
    prefix: String,
}

impl Records {
    async fn get(&self, key: &str) -> std::result::Result<Option<Bytes>, String> {
        match self
            .stream
            .direct_get_last_for_subject(format!("{}{key}", self.prefix))
            .await
        {
            Ok(m) => Ok(Some(m.payload)),
            Err(e) if e.kind() == stream::DirectGetErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }

    async fn put(
        &self,
        js: &jetstream::Context,
        key: &str,
        value: Bytes,
    ) -> std::result::Result<(), String> {
        js.publish(format!("{}{key}", self.prefix), value)
            .await
            .map_err(|e| e.to_string())?
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// The exactly-once record key of `event` at `node` (the last two tokens of its subject).
fn record_key(node: &str, event: &str) -> String {
    let mut k = String::with_capacity(node.len() + event.len() + 1);
    escape_token(node, &mut k);
    k.push('.');
    escape_token(event, &mut k);
    if event.is_empty() {
        k.push('_');
    }
    k
}

/// Publishes durable messages, many awaiting their acknowledgement at once, each retried until
/// acknowledged or the request timeout passes.
async fn publisher(shared: Arc<Shared>, mut rx: mpsc::Receiver<Publish>) {
    let Some(d) = shared.durable.as_ref() else {
        return;
    };
    let window = d.config.publish_window;
    let give_up_after = shared.config.request_timeout();
    let mut flying = FuturesUnordered::new();
    loop {
        tokio::select! {
            biased;
            Some(()) = flying.next(), if !flying.is_empty() => {}
            p = rx.recv(), if flying.len() < window => match p {
                Some(p) => flying.push(publish_one(shared.clone(), p, Instant::now() + give_up_after)),
                None => break,
            },
            else => break,
        }
    }
    while flying.next().await.is_some() {}
}

async fn publish_one(shared: Arc<Shared>, p: Publish, deadline: Instant) {
    let d = shared.durable.as_ref().expect("durable publisher");
    let mut attempt = 0u32;
    let result = loop {
        let msg = jetstream::message::PublishMessage::build()
            .payload(p.payload.clone())
            .headers(p.headers.clone());
        let r = match d.js.send_publish(p.subject.clone(), msg).await {
            Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match r {
            Ok(()) => break Ok(()),
            Err(e) => {
                let pause = PUBLISH_RETRY.delay(attempt as usize);
                if Instant::now() + pause >= deadline || shared.is_closed() {
                    break Err(e);
                }
                attempt += 1;
                inc(&d.counters.publish_retries);
                tracing::debug!(target: "happen_nats", node = %p.node, error = %e, attempt, "durable publish not acknowledged; retrying");
                tokio::time::sleep(pause).await;
            }
        }
    };
    match result {
        Ok(()) => inc(&d.counters.published),
        Err(e) => {
            inc(&d.counters.publish_failed);
            let err = Error::from_parts(
                ErrorKind::Transport,
                format!(
                    "the durable event could not be stored in JetStream (stream `{}`) within the request timeout: {e}; is JetStream up?",
                    d.stream
                ),
                Some(p.node.clone()),
                None,
                None,
            );
            match p.token {
                Some(t) => shared.forget(t, || err),
                None => {
                    tracing::error!(target: "happen_nats", node = %p.node, error = %err, "a durable tell was lost before it was stored")
                }
            }
        }
    }
}

/// The consumer side of one durable node.
struct Node {
    shared: Arc<Shared>,
    inbox: Inbox,
    settings: DurableNode,
    /// Stream sequences being processed here (a redelivery of one is ignored).
    working: Mutex<HashSet<u64>>,
    /// The node is being detached: a flow ending in `ShutDown` was cut short by it.
    stopping: AtomicBool,
}

/// One pull request in flight.
struct Pull {
    remaining: usize,
    expires: Instant,
}

async fn consume(
    shared: Arc<Shared>,
    inbox: Inbox,
    settings: DurableNode,
    consumer: consumer::Consumer<consumer::pull::Config>,
    mut stop: oneshot::Receiver<()>,
) {
    let d = shared.durable.as_ref().expect("durable consumer");
    let limits = inbox.limits();
    let cap = limits
        .max_concurrent
        .saturating_add(limits.queue_limit)
        .clamp(1, MAX_HELD);
    let node = Arc::new(Node {
        shared: shared.clone(),
        inbox,
        settings,
        working: Mutex::new(HashSet::new()),
        stopping: AtomicBool::new(false),
    });
    let pull_inbox = shared.client.new_inbox();
    let mut sub = match shared.client.subscribe(format!("{pull_inbox}.*")).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(target: "happen_nats", node = %node.inbox.id(), error = %e, "cannot subscribe for durable deliveries; the node receives no durable events");
            return;
        }
    };
    let mut pulls: HashMap<u64, Pull> = HashMap::new();
    let mut next_pull = 0u64;
    let mut jobs: FuturesUnordered<BoxFuture<'static, ()>> = FuturesUnordered::new();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stopping = false;
    let mut last_pull_error: Option<Instant> = None;
    loop {
        // pull what there is room for
        let requested: usize = pulls.values().map(|p| p.remaining).sum();
        let room = cap.saturating_sub(jobs.len() + requested);
        let worth = room >= (cap / 4).clamp(1, MAX_PULL) || (pulls.is_empty() && room > 0);
        let backing_off = last_pull_error.is_some_and(|t| t.elapsed() < Duration::from_millis(250));
        if !stopping && worth && pulls.len() < MAX_PULLS && !backing_off {
            let n = room.min(MAX_PULL);
            next_pull += 1;
            let request = consumer::pull::BatchConfig {
                batch: n,
                expires: Some(PULL_EXPIRES),
                ..Default::default()
            };
            match consumer
                .request_batch(request, Subject::from(format!("{pull_inbox}.{next_pull}")))
                .await
            {
                Ok(()) => {
                    pulls.insert(
                        next_pull,
                        Pull {
                            remaining: n,
                            expires: Instant::now() + PULL_EXPIRES + Duration::from_secs(1),
                        },
                    );
                    continue;
                }
                Err(e) => {
                    last_pull_error = Some(Instant::now());
                    tracing::debug!(target: "happen_nats", node = %node.inbox.id(), error = %e, "durable pull failed; retrying");
                }
            }
        }
        if stopping && pulls.is_empty() && jobs.is_empty() {
            break;
        }
        tokio::select! {
            biased;
            _ = &mut stop, if !stopping => {
                stopping = true;
                node.stopping.store(true, Ordering::Release);
            }
            Some(()) = jobs.next(), if !jobs.is_empty() => {}
            msg = sub.next() => {
                let Some(msg) = msg else { break };
                // status messages (408 expired, 409, 404) come on the pull's own subject
                let pull = msg
                    .subject
                    .as_str()
                    .rsplit('.')
                    .next()
                    .and_then(|t| t.parse::<u64>().ok());
                match msg.status {
                    None | Some(async_nats::StatusCode::OK) => {
                        // a delivery keeps its own subject: it is counted against the oldest
                        // pull (the server serves pull requests in order)
                        if let Some((&id, p)) = pulls.iter_mut().min_by_key(|(id, _)| **id) {
                            p.remaining = p.remaining.saturating_sub(1);
                            if p.remaining == 0 {
                                pulls.remove(&id);
                            }
                        }
                        inc(&d.counters.pulled);
                        if stopping {
                            // not started: handed back at once for another replica
                            nak(&shared, &msg, None).await;
                        } else {
                            jobs.push(Box::pin(run_job(node.clone(), msg)));
                            d.counters.max_held.fetch_max(jobs.len() as u64, Ordering::Relaxed);
                        }
                    }
                    Some(async_nats::StatusCode::IDLE_HEARTBEAT) => {}
                    Some(status) => {
                        // 408: the pull expired; anything else (409: too many pulls waiting,
                        // leadership change, consumer deleted; 503) ends it too, and the next
                        // pull waits a little so a persistent refusal is not a hot loop
                        if let Some(id) = pull {
                            pulls.remove(&id);
                        }
                        if status != async_nats::StatusCode::TIMEOUT {
                            last_pull_error = Some(Instant::now());
                            tracing::debug!(target: "happen_nats", node = %node.inbox.id(), %status, description = ?msg.description, "durable pull refused");
                        }
                    }
                }
            }
            _ = tick.tick() => {
                let now = Instant::now();
                pulls.retain(|_, p| p.expires > now);
            }
        }
    }
    let _ = sub.unsubscribe().await;
    // delivered after the unsubscribe: redelivered after the ack wait
    while let Some(Some(msg)) = sub.next().now_or_never() {
        if msg.status.is_none() {
            nak(&shared, &msg, None).await;
        }
    }
    while jobs.next().await.is_some() {}
    let _ = shared.client.flush().await;
}

async fn nak(shared: &Shared, msg: &Message, delay: Option<Duration>) {
    settle(shared, msg, AckKind::Nak(delay)).await;
}

async fn settle(shared: &Shared, msg: &Message, kind: AckKind) {
    if let Some(reply) = &msg.reply
        && let Err(e) = shared.client.publish(reply.clone(), kind.into()).await
    {
        tracing::warn!(target: "happen_nats", error = %e, "cannot acknowledge a durable event; it will be redelivered");
    }
}

/// (delivery count, stream sequence) from a message's ack subject:
/// `$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>`, or with a domain and
/// account hash after `$JS.ACK` (11 tokens or more).
fn delivery_info(msg: &Message) -> Option<(u32, u64)> {
    let reply = msg.reply.as_ref()?.as_str();
    let rest = reply.strip_prefix("$JS.ACK.")?;
    let tokens: Vec<&str> = rest.split('.').collect();
    let at = match tokens.len() {
        7 => 2,
        n if n >= 9 => 4,
        _ => return None,
    };
    let delivered = tokens[at].parse::<u64>().ok()?.max(1);
    let seq = tokens[at + 1].parse().ok()?;
    Some((u32::try_from(delivered).unwrap_or(u32::MAX), seq))
}

/// Processes one durable message: runs its flow (unless already done), answers the requester
/// and settles the message.
async fn run_job(node: Arc<Node>, msg: Message) {
    let shared = &node.shared;
    let d = shared.durable.as_ref().expect("durable job");
    let Some((delivered, seq)) = delivery_info(&msg) else {
        shared.counters.bad_input("protocol");
        tracing::warn!(target: "happen_nats", node = %node.inbox.id(), "a durable message without JetStream delivery info; ignored");
        return;
    };
    if !node.working.lock().insert(seq) {
        // redelivered while still running here (the ack wait passed): the running one settles
        return;
    }
    let reply_to = msg
        .headers
        .as_ref()
        .and_then(|h| h.get(header::REPLY_TO))
        .map(|v| Subject::from(v.as_str()));
    let event = match wire::decode_event(&msg.payload, shared.max_bytes) {
        Ok(e) => e,
        Err(err) => {
            shared.counters.bad_input("malformed");
            if dead_letter(&node, &msg, delivered, &err).await
                && let Some(r) = reply_to
            {
                answer(shared, r, Err(err));
            }
            node.working.lock().remove(&seq);
            return;
        }
    };
    let key = (node.settings.mode == DeliveryMode::ExactlyOnce)
        .then(|| record_key(node.inbox.id(), &event.id().to_string()));
    if let (Some(key), Some(done)) = (&key, &d.done) {
        match done.get(key).await {
            Ok(Some(record)) => {
                inc(&d.counters.duplicates_skipped);
                if let Some(r) = reply_to {
                    answer(shared, r, decode_record(&record));
                }
                settle(shared, &msg, AckKind::Ack).await;
                node.working.lock().remove(&seq);
                return;
            }
            Ok(None) => {}
            Err(e) => {
                // cannot tell whether it ran: try again later rather than risk a second run
                tracing::warn!(target: "happen_nats", node = %node.inbox.id(), error = %e, "cannot read the exactly-once record; redelivering");
                inc(&d.counters.retried);
                nak(shared, &msg, Some(node.settings.backoff(1))).await;
                node.working.lock().remove(&seq);
                return;
            }
        }
    }
    let Some(outcome) = run_flow(&node, &msg, event).await else {
        // not admitted: the node is closing; another replica (or a restart) takes it
        nak(shared, &msg, None).await;
        node.working.lock().remove(&seq);
        return;
    };
    match outcome {
        Ok(value) => {
            if let (Some(key), Some(done)) = (&key, &d.done) {
                record(&node, &msg, done, key, encode_record(&value)).await;
            }
            if let Some(r) = reply_to {
                answer(shared, r, Ok(value));
            }
            settle(shared, &msg, AckKind::Ack).await;
            inc(&d.counters.acked);
        }
        Err(err) if err.kind() == ErrorKind::ShutDown && node.stopping.load(Ordering::Acquire) => {
            // the node stopped before the flow finished: another replica (or a restart) takes it
            nak(shared, &msg, None).await;
        }
        Err(err) if delivered < node.settings.max_deliveries => {
            tracing::debug!(target: "happen_nats", node = %node.inbox.id(), delivered, error = %err, "durable flow failed; redelivering");
            inc(&d.counters.retried);
            nak(shared, &msg, Some(node.settings.backoff(delivered))).await;
        }
        Err(err) => {
            tracing::warn!(target: "happen_nats", node = %node.inbox.id(), delivered, error = %err, "durable flow failed on its last delivery; dead-lettered");
            // not stored: handed back for redelivery instead (and no record, no answer yet)
            if dead_letter(&node, &msg, delivered, &err).await {
                if let (Some(key), Some(done)) = (&key, &d.done) {
                    record(&node, &msg, done, key, encode_failure(&err)).await;
                }
                if let Some(r) = reply_to {
                    answer(shared, r, Err(err));
                }
            }
        }
    }
    node.working.lock().remove(&seq);
}

/// Stores the exactly-once record of a finished event, retrying (the server may be restarting)
/// until stored or the request timeout passes; the message is acknowledged only afterwards, so
/// a redelivery meanwhile finds the record (or is ignored while this runs).
async fn record(node: &Node, msg: &Message, done: &Records, key: &str, value: Bytes) {
    let shared = &node.shared;
    let d = shared.durable.as_ref().expect("durable");
    let deadline = Instant::now() + shared.config.request_timeout();
    let mut attempt = 0u32;
    let mut progress = Instant::now();
    loop {
        match done.put(&d.js, key, value.clone()).await {
            Ok(()) => return,
            Err(e) if Instant::now() >= deadline || shared.is_closed() => {
                tracing::warn!(target: "happen_nats", node = %node.inbox.id(), error = %e, "cannot record a completed exactly-once event; a redelivery would run it again");
                return;
            }
            Err(_) => {
                attempt += 1;
                if progress.elapsed() >= node.settings.ack_wait() / 3 {
                    settle(shared, msg, AckKind::Progress).await;
                    progress = Instant::now();
                }
                tokio::time::sleep(RECORD_RETRY.delay(attempt as usize)).await;
            }
        }
    }
}

/// Admits `event` into the node (waiting while its queue is full) and waits for its flow,
/// telling the server meanwhile that the message is being worked on. `None` when the node is
/// closed and admits nothing.
async fn run_flow(node: &Node, msg: &Message, event: Event) -> Option<Result<serde_json::Value>> {
    let progress_every = node.settings.ack_wait() / 3;
    let rx = loop {
        let (tx, rx): (ReplySender, _) = reply_channel();
        match node.inbox.deliver(event.clone(), Some(tx)) {
            Ok(()) => break rx,
            Err(e) if e.kind() == ErrorKind::QueueFull => {
                // room taken by non-durable events: wait a little, the message stays ours
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) if e.kind() == ErrorKind::ShutDown => return None,
            Err(e) => return Some(Err(e)),
        }
    };
    let mut rx = std::pin::pin!(rx);
    let response = loop {
        tokio::select! {
            r = &mut rx => break r,
            () = tokio::time::sleep(progress_every) => settle(&node.shared, msg, AckKind::Progress).await,
        }
    };
    Some(match response {
        Response::Done(r) => r,
        Response::Stream(items) => {
            let finish = items.finish();
            let mut finish = std::pin::pin!(finish);
            loop {
                tokio::select! {
                    r = &mut finish => break r,
                    () = tokio::time::sleep(progress_every) => settle(&node.shared, msg, AckKind::Progress).await,
                }
            }
        }
    })
}

/// Publishes `msg`'s event to the dead-letter subject with `err` (stored in the dead-letter
/// stream; retried until stored), then terminates the message. When it cannot be stored the
/// message is handed back for redelivery instead, and `false` returned.
async fn dead_letter(node: &Node, msg: &Message, delivered: u32, err: &Error) -> bool {
    let shared = &node.shared;
    let d = shared.durable.as_ref().expect("durable");
    let mut h = HeaderMap::new();
    wire::error_headers(err, &mut h);
    h.insert(header::DEAD_NODE, node.inbox.id().as_str());
    h.insert(header::DELIVERIES, delivered.to_string().as_str());
    if let Some(id) = msg.headers.as_ref().and_then(|m| m.get(header::MSG_ID)) {
        h.insert(header::MSG_ID, id.as_str());
    }
    let subject = format!("{}{}", d.dlq_prefix, node.inbox.id());
    let mut attempt = 0u32;
    loop {
        let m = jetstream::message::PublishMessage::build()
            .payload(msg.payload.clone())
            .headers(h.clone());
        let r = match d.js.send_publish(subject.clone(), m).await {
            Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match r {
            Ok(()) => break,
            Err(e) if shared.is_closed() || attempt >= 20 => {
                // not stored: leave the message to be redelivered rather than lose it
                tracing::error!(target: "happen_nats", node = %node.inbox.id(), error = %e, "cannot store a dead letter; the event stays in the stream for redelivery");
                nak(shared, msg, Some(node.settings.backoff(delivered))).await;
                return false;
            }
            Err(_) => {
                attempt += 1;
                tokio::time::sleep(DEAD_LETTER_RETRY.delay(attempt as usize)).await;
            }
        }
    }
    inc(&d.counters.dead_lettered);
    settle(shared, msg, AckKind::Term).await;
    true
}

fn encode_record(value: &serde_json::Value) -> Bytes {
    Bytes::from(serde_json::to_vec(&serde_json::json!({ "ok": value })).unwrap_or_default())
}

fn encode_failure(err: &Error) -> Bytes {
    Bytes::from(
        serde_json::to_vec(&serde_json::json!({
            "error": { "kind": format!("{:?}", err.kind()), "message": err.message() }
        }))
        .unwrap_or_default(),
    )
}

fn decode_record(bytes: &[u8]) -> Result<serde_json::Value> {
    let v: serde_json::Value = serde_json::from_slice(bytes).unwrap_or_default();
    if let Some(ok) = v.get("ok") {
        return Ok(ok.clone());
    }
    let message = v
        .pointer("/error/message")
        .and_then(|m| m.as_str())
        .unwrap_or("the event failed earlier")
        .to_owned();
    Err(Error::new(
        ErrorKind::Handler,
        format!("already processed (exactly-once record): {message}"),
    ))
}

/// Sends the flow's outcome to the requester's reply subject (ignored if it gave up).
fn answer(shared: &Shared, reply: Subject, outcome: Result<serde_json::Value>) {
    let (headers, payload) = match outcome {
        Ok(v) => (Headers::None, wire::value_body(&v)),
        Err(e) => {
            let mut h = HeaderMap::new();
            h.insert(header::STATUS, "error");
            let body = wire::encode_error(&e, &mut h, shared.client.max_payload(), 256);
            (Headers::Custom(h), body)
        }
    };
    shared.publish_answer(Outgoing {
        subject: reply,
        reply: None,
        headers,
        payload,
    });
}

impl crate::NatsTransport {
    /// The durable-delivery counters (all zero when no node is durable).
    pub fn durable_stats(&self) -> DurableStats {
        self.shared
            .durable
            .as_ref()
            .map(|d| d.stats())
            .unwrap_or_default()
    }

    /// The JetStream stream holding durable events and the dead-letter stream, when durable
    /// delivery is configured (see [`DurableConfig::stream`]).
    pub fn durable_streams(&self) -> Option<(&str, &str)> {
        self.shared
            .durable
            .as_ref()
            .map(|d| (d.stream(), d.dlq_stream()))
    }
}

impl Shared {
    /// Has the transport shut down?
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// A `send` or `tell` to a durable node: queued for the durable publisher (also while
    /// disconnected: it is published after the reconnect, within the request timeout).
    pub(crate) fn send_durable(
        &self,
        d: &Durable,
        target: &NodeId,
        event: Event,
        reply: Option<ReplySender>,
    ) -> Result<()> {
        if self.is_closed() {
            return Err(Error::new(
                ErrorKind::ShutDown,
                "the nats transport is shut down; nothing was sent",
            ));
        }
        let payload = self.encode_checked(&event)?;
        let reply = reply.map(|tx| {
            let token = self.next_token.fetch_add(1, Ordering::Relaxed);
            self.pending.lock().insert(
                token,
                Pending::Reply {
                    tx,
                    target: target.clone(),
                    in_flight: None,
                    durable: true,
                },
            );
            (Subject::from(format!("{}.{token}", self.inbox)), token)
        });
        d.send(self, target, &event, payload, reply)?;
        crate::stats::inc(&self.counters.sent);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_keys_are_escaped() {
        assert_eq!(Durable::consumer_name("orders"), "happen_orders");
        assert_eq!(Durable::consumer_name("a.b c"), "happen_a=2Eb=20c");
        assert_eq!(record_key("n.1", "evt-1"), "n=2E1.evt-1");
    }

    #[test]
    fn ack_subjects_tell_the_delivery() {
        let msg = |reply: &str| Message {
            subject: Subject::from("happen.durable.x"),
            reply: Some(Subject::from(reply)),
            payload: Bytes::new(),
            headers: None,
            status: None,
            description: None,
            length: 0,
        };
        assert_eq!(
            delivery_info(&msg("$JS.ACK.S.happen_x.3.17.4.1700000000000000000.9")),
            Some((3, 17))
        );
        assert_eq!(
            delivery_info(&msg(
                "$JS.ACK.dom.ACCHASH.S.happen_x.2.5.4.1700000000000000000.0.tok"
            )),
            Some((2, 5))
        );
        assert_eq!(delivery_info(&msg("_INBOX.abc")), None);
        assert_eq!(delivery_info(&msg("$JS.ACK.S.c.x.y.1.2.3")), None);
    }

    #[test]
    fn records_round_trip() {
        let v = serde_json::json!({"n": 1});
        assert_eq!(decode_record(&encode_record(&v)).unwrap(), v);
        let e = Error::new(ErrorKind::Handler, "boom");
        let back = decode_record(&encode_failure(&e)).unwrap_err();
        assert!(back.message().contains("boom"), "{back}");
    }
}
