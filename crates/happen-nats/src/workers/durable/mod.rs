//! The durable-delivery worker (`[transport.nats.durable]`, see
//! [`DurableConfig`](crate::DurableConfig)): events to the node ids it names are stored in a
//! JetStream stream before delivery and consumed by a durable pull consumer per node id. See
//! `WIRE.md`, "Durable delivery", for the subjects, headers and guarantees.
//!
//! How it works, for a user, is on [`DurableConfig`](crate::DurableConfig).
//!
//! Files: this one sets up the streams and hands sends and nodes to the [`publish`] and
//! [`consume`] tasks; [`records`] keeps the exactly-once records, [`claim`] the claims that
//! let one copy of an event id run at a time, [`answers`] the answers kept and asked for
//! again after a requester's outage.

mod answers;
mod claim;
mod consume;
mod publish;
mod records;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use async_nats::{HeaderMap, Subject};
use bytes::Bytes;
use happen::transport::Inbox;
use happen::transport::ReplySender;
use happen::{Error, ErrorKind, Event, NodeId, Result};
use parking_lot::Mutex;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::config::{DeliveryMode, DurableConfig, DurableNode};
use crate::core::Endpoint;
use crate::core::link::Link;
use crate::core::outbox::{Outbox, refused, until_room};
use crate::core::requests::{DurableSend, Pending, Requests};
use crate::core::shut_down;
use crate::core::stats::{Counters, inc};
use crate::wire::{self, header};

use records::Records;

/// A durable message waiting for the publisher task.
struct Publish {
    subject: Subject,
    headers: HeaderMap,
    payload: Bytes,
    /// The request's token (to fail it if publishing fails for good).
    token: Option<u64>,
    node: NodeId,
}

/// A durable node's consumer task.
struct Consumer {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

/// The durable-delivery worker of a transport: its settings, its streams, the parts it
/// uses, and the consumers of this process's durable nodes.
pub(crate) struct Durable {
    ep: Arc<Endpoint>,
    /// Durable requests wait here for their replies.
    requests: Arc<Requests>,
    /// Answers to durable requests are published through it.
    outbox: Arc<Outbox>,
    /// Whether the transport is shut down.
    link: Arc<Link>,
    counters: Arc<Counters>,
    settings: DurableConfig,
    js: jetstream::Context,
    stream: String,
    dlq_stream: String,
    /// `<prefix>.durable.`
    subject_prefix: String,
    /// `<prefix>.dlq.`
    dlq_prefix: String,
    /// The exactly-once records, when a node is exactly-once.
    done: Option<Records>,
    /// To the publisher task.
    tx: mpsc::Sender<Publish>,
    /// Signalled when the publisher task took the buffer down to half (see
    /// [`Durable::ready`]).
    room: Notify,
    /// The answers this process's durable nodes published lately, for requesters that lost
    /// their connection meanwhile (see [`answers`]).
    kept: answers::Kept,
    consumers: Mutex<HashMap<NodeId, Consumer>>,
}

/// The JetStream API and publish-ack timeout.
const JS_TIMEOUT: Duration = Duration::from_secs(5);

fn js_error(what: &str, e: impl fmt::Display) -> Error {
    Error::new(
        ErrorKind::Transport,
        format!(
            "durable delivery: {what}: {e}; durable nodes need a nats-server with JetStream enabled (`nats-server -js`)"
        ),
    )
}

impl Durable {
    /// Creates (or finds) the streams and starts the publisher task. `None` when no node is
    /// durable.
    pub(crate) async fn start(
        ep: Arc<Endpoint>,
        requests: Arc<Requests>,
        outbox: Arc<Outbox>,
        link: Arc<Link>,
        counters: Arc<Counters>,
    ) -> Result<Option<(Arc<Durable>, JoinHandle<()>)>> {
        let config = &ep.config;
        let client = &ep.client;
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
        let subject_prefix = ep.subjects.durable_prefix();
        let dlq_prefix = ep.subjects.dead_letter_prefix();
        js.get_or_create_stream(stream::Config {
            name: stream.clone(),
            subjects: vec![format!("{subject_prefix}>")],
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            duplicate_window: d.dedup_window,
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
            duplicate_window: d.dedup_window,
            num_replicas: d.replicas,
            ..Default::default()
        })
        .await
        .map_err(|e| js_error(&format!("cannot create stream `{dlq_stream}`"), e))?;
        let done = if d
            .nodes
            .iter()
            .any(|(_, n)| n.mode == DeliveryMode::ExactlyOnce)
        {
            // a key-value bucket by hand (one subject per record, its last message kept for
            // the window): async-nats' bucket API needs a newer server than 2.9
            let name = format!("{stream}_DONE");
            let records = js
                .get_or_create_stream(stream::Config {
                    name: name.clone(),
                    subjects: vec![format!("{}>", ep.subjects.records_prefix())],
                    retention: stream::RetentionPolicy::Limits,
                    storage: stream::StorageType::File,
                    max_age: d.dedup_window,
                    max_messages_per_subject: 1,
                    allow_direct: true,
                    duplicate_window: d.dedup_window.min(Duration::from_secs(120)),
                    num_replicas: d.replicas,
                    ..Default::default()
                })
                .await
                .map_err(|e| js_error(&format!("cannot create stream `{name}`"), e))?;
            Some(Records::new(records, ep.subjects.records_prefix()))
        } else {
            None
        };
        let (tx, rx) = mpsc::channel(config.outbound_buffer);
        let settings = d.clone();
        let kept = answers::Kept::new(ep.config.effective_request_timeout());
        let durable = Arc::new(Durable {
            ep,
            requests,
            outbox,
            link,
            counters,
            settings,
            js,
            stream,
            dlq_stream,
            subject_prefix,
            dlq_prefix,
            done,
            tx,
            room: Notify::new(),
            kept,
            consumers: Mutex::new(HashMap::new()),
        });
        let publisher = tokio::spawn(publish::run(durable.clone(), rx));
        Ok(Some((durable, publisher)))
    }

    /// Is `target` durable?
    pub(crate) fn is_durable(&self, target: &str) -> bool {
        self.settings.node(target).is_some()
    }

    /// The publisher task took an event from the buffer: wakes the producers waiting for
    /// room when the buffer just fell to half.
    fn took(&self) {
        if self.waiting() == self.room_mark() {
            self.room.notify_waiters();
        }
    }

    /// Events waiting in the durable outgoing buffer for the publisher task.
    fn waiting(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// `ready` resolves once at most this many events wait in the buffer.
    fn room_mark(&self) -> usize {
        self.tx.max_capacity() / 2
    }

    /// Is the durable outgoing buffer more than half full?
    pub(crate) fn is_backlogged(&self) -> bool {
        self.waiting() > self.room_mark()
    }

    /// Waits until at most half of the durable outgoing buffer is taken (see
    /// `NatsTransport::ready`).
    ///
    /// # Errors
    /// [`ErrorKind::ShutDown`] once the transport is shut down.
    pub(crate) async fn ready(&self) -> Result<()> {
        until_room(&self.room, &self.link, || self.is_backlogged()).await
    }

    /// Wakes every [`ready`](Durable::ready) (the transport shuts down).
    pub(crate) fn wake_all(&self) {
        self.room.notify_waiters();
    }

    /// A `send` or `tell` to a durable node: queued for the publisher task (also while
    /// disconnected: it is published after the reconnect, within the request timeout); never
    /// waits.
    ///
    /// # Errors
    /// [`ErrorKind::ShutDown`] after shutdown; [`ErrorKind::InvalidEvent`] for an event too
    /// large; [`ErrorKind::Transport`] when the durable outgoing buffer is full.
    pub(crate) fn send(
        &self,
        target: &NodeId,
        event: Event,
        reply: Option<ReplySender>,
    ) -> Result<()> {
        if self.link.is_closed() {
            return Err(shut_down());
        }
        let payload = wire::encode_checked(&event, self.ep.max_bytes)?;
        let mut headers = HeaderMap::new();
        let id = event.id().to_string();
        headers.insert(header::MSG_ID, id.as_str());
        let token = reply.map(|tx| {
            let token = self.requests.token();
            self.requests.insert(
                token,
                Pending::Reply {
                    tx,
                    target: target.clone(),
                    in_flight: None,
                    durable: Some(Box::new(DurableSend {
                        event: id.into_boxed_str(),
                        seq: 0,
                    })),
                    sent: None,
                    replica: None,
                },
            );
            headers.insert(
                header::REPLY_TO,
                self.requests.reply_subject(token).as_str(),
            );
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
            let err = refused(&e, || format!(
                "the durable outgoing buffer is full ({} events wait for the server's acknowledgement); wait for room (`NatsTransport::ready`) or raise transport.nats.outbound_buffer",
                self.ep.config.outbound_buffer
            ));
            if let Some(t) = token {
                self.requests.forget(t, || err.clone());
            }
            err
        })?;
        inc(&self.counters.sent);
        Ok(())
    }

    /// The connection is back after a loss: asks the durable nodes again for the answers of
    /// this process's durable sends still waiting (an answer published meanwhile was dropped
    /// by the server), and looks up in JetStream those no replica answers (see [`answers`]).
    pub(crate) fn reconnected(self: &Arc<Self>) {
        tokio::spawn(answers::ask_again(self.clone()));
    }

    /// Starts consuming for a durable node.
    ///
    /// # Errors
    /// [`ErrorKind::Transport`] when the node's consumer cannot be found or created.
    pub(crate) async fn attach(self: &Arc<Self>, inbox: &Inbox) -> Result<()> {
        let id = inbox.id().clone();
        let Some(settings) = self.settings.node(&id).cloned() else {
            return Ok(());
        };
        let consumer = self.consumer(&id, &settings).await?;
        let (stop, stop_rx) = oneshot::channel();
        let task = tokio::spawn(consume::run(
            self.clone(),
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
                    ack_wait: settings.ack_wait,
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
            && info.config.ack_wait != settings.ack_wait
        {
            tracing::warn!(target: "happen_nats", node = %id, consumer = %name, configured = ?settings.ack_wait, in_use = ?info.config.ack_wait, "the durable consumer exists with another ack_wait; delete the consumer (it is recreated with the new setting) to change it");
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
pub(super) fn escape_token(s: &str, out: &mut String) {
    use std::fmt::Write as _;
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            out.push(b as char);
        } else {
            let _ = write!(out, "={b:02X}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumer_names_are_escaped() {
        assert_eq!(Durable::consumer_name("orders"), "happen_orders");
        assert_eq!(Durable::consumer_name("a.b c"), "happen_a=2Eb=20c");
    }
}
