//! The hub of `happen web`: numbered frames for the pages' event streams (kept in a ring so a
//! reconnecting page resumes with `Last-Event-ID`), and the watch that produces them. The
//! watch (a tap of every event, the reply subjects, the completion records of tells and
//! broadcasts with a watch beat each second, discovery once a second, the durable streams
//! every two seconds (each poll bounded to two seconds), the connection state) runs only while
//! at least one page is connected, and so do the warnings it alone feeds: dead letters growing
//! (from the durable polls) and streams stalled (from the frames on `_INBOX.>`):
//! with no page open the nodes pay nothing (nodes with `completion_records = "watched"`
//! stop publishing records 5 s after the last beat). The exception, opted into: with flow
//! events (`happen web --flow-events`) discovery runs all the time, and each snapshot's
//! warnings that start a flow-balance condition are broadcast once by this process, however
//! many pages are open (`flow.rs`).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::StreamExt;
use happen_nats::NatsTransport;
use happen_nats::discover::ProcessInfo;
use serde_json::{Value, json};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use super::durable;
use super::flow::{Flow, FlowConfig};
use super::view::Rates;
use super::warnings::{DeadLetters, Streams, Thresholds, Warning};
use crate::conn::{self, Connection};
use crate::observed::{Completed, Reply, Seen, Store, reply_of};
use crate::tap;
use crate::time;

/// Frames kept for resuming pages.
const RING: usize = 4_096;
/// Frames a page may be behind before its stream is ended (it reconnects and resumes from
/// the ring, or learns of the gap).
const LIVE: usize = 16_384;
/// How often the nodes are discovered while a page is open.
pub(crate) const DISCOVER_EVERY: Duration = Duration::from_secs(1);
/// How often the durable streams are read while a page is open.
pub(crate) const DURABLE_EVERY: Duration = Duration::from_secs(2);
/// Payloads longer than this (as JSON) are cut in the event frames.
const PAYLOAD_BYTES: usize = 2_048;

/// One message of the pages' event stream.
#[derive(Debug)]
pub(crate) struct Frame {
    /// Its `id:` (increasing from 1).
    pub(crate) id: u64,
    /// Its `event:` name: `event`, `reply`, `completion`, `nodes`, `durable`, `status`.
    pub(crate) name: &'static str,
    /// The event type, for `event` frames (the pages' pattern filter).
    pub(crate) event_type: Option<String>,
    /// Its `data:` (JSON).
    pub(crate) data: String,
}

struct Frames {
    next: u64,
    ring: VecDeque<Arc<Frame>>,
    watchers: usize,
    watch: Option<JoinHandle<()>>,
    discovery: Option<JoinHandle<()>>,
}

/// How the hub watches: the warnings' thresholds, and whether it publishes flow-balance events.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct HubOptions {
    pub(crate) thresholds: Thresholds,
    /// Publish the flow-balance events (and so discover with no page open).
    pub(crate) flow: Option<FlowConfig>,
}

/// What the pages share.
pub(crate) struct Hub {
    transport: NatsTransport,
    frames: Mutex<Frames>,
    tx: broadcast::Sender<Arc<Frame>>,
    store: Mutex<Store>,
    nodes: Mutex<Option<Value>>,
    durable: Mutex<Option<Value>>,
    status: Mutex<Value>,
    rates: Mutex<Rates>,
    flow: Option<Mutex<Flow>>,
    thresholds: Thresholds,
    /// The dead letters per node across the durable polls, and the warnings of the last one.
    dead_letters: Mutex<(DeadLetters, Vec<Warning>)>,
    /// The streams answering requests, while the watch sees their frames.
    streams: Mutex<Streams>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A connected page: the watch runs while one exists.
pub(crate) struct Watcher {
    hub: Arc<Hub>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let mut f = lock(&self.hub.frames);
        f.watchers -= 1;
        if f.watchers == 0 {
            // dropping the tap and the reply subscription unsubscribes
            if let Some(watch) = f.watch.take() {
                watch.abort();
            }
            if self.hub.flow.is_none()
                && let Some(discovery) = f.discovery.take()
            {
                discovery.abort();
            }
            drop(f);
            // no longer watched: what they knew goes stale
            self.hub.forget_watched();
        }
    }
}

/// What a new page starts from: the frames after its `Last-Event-ID`, and the live ones.
pub(crate) struct Joined {
    pub(crate) watcher: Watcher,
    pub(crate) replay: Vec<Arc<Frame>>,
    /// The page's `Last-Event-ID` is older than the ring: frames were lost.
    pub(crate) gap: bool,
    pub(crate) live: broadcast::Receiver<Arc<Frame>>,
}

impl Hub {
    /// The hub; with flow events, its discovery starts at once and never stops.
    pub(crate) fn new(transport: NatsTransport, options: HubOptions) -> Arc<Hub> {
        let (tx, _) = broadcast::channel(LIVE);
        let mut rates = Rates::default();
        rates.warnings.thresholds = options.thresholds;
        let hub = Arc::new(Hub {
            transport,
            frames: Mutex::new(Frames {
                next: 1,
                ring: VecDeque::new(),
                watchers: 0,
                watch: None,
                discovery: None,
            }),
            tx,
            store: Mutex::new(Store::default()),
            nodes: Mutex::new(None),
            durable: Mutex::new(None),
            status: Mutex::new(json!({"nats": "connected"})),
            rates: Mutex::new(rates),
            flow: options.flow.map(|c| Mutex::new(Flow::new(c))),
            thresholds: options.thresholds,
            dead_letters: Mutex::new((DeadLetters::default(), Vec::new())),
            streams: Mutex::new(Streams::default()),
        });
        if hub.flow.is_some() {
            lock(&hub.frames).discovery = Some(tokio::spawn(discovery(hub.clone())));
        }
        hub
    }

    pub(crate) fn transport(&self) -> &NatsTransport {
        &self.transport
    }

    /// How many pages are connected.
    pub(crate) fn watchers(&self) -> usize {
        lock(&self.frames).watchers
    }

    /// Numbers a frame, keeps it, and hands it to the connected pages (under one lock, so a
    /// joining page sees every frame exactly once: in its replay or live).
    fn publish(&self, name: &'static str, event_type: Option<String>, data: String) {
        let mut f = lock(&self.frames);
        let frame = Arc::new(Frame {
            id: f.next,
            name,
            event_type,
            data,
        });
        f.next += 1;
        if f.ring.len() >= RING {
            f.ring.pop_front();
        }
        f.ring.push_back(frame.clone());
        let _no_page = self.tx.send(frame);
    }

    /// A page connects (after `last`, its `Last-Event-ID`): starts the watch if it is the first.
    pub(crate) fn join(self: &Arc<Hub>, last: Option<u64>) -> Joined {
        let mut f = lock(&self.frames);
        f.watchers += 1;
        if f.watch.is_none() {
            f.watch = Some(tokio::spawn(watch(self.clone())));
        }
        if f.discovery.is_none() {
            f.discovery = Some(tokio::spawn(discovery(self.clone())));
        }
        let live = self.tx.subscribe();
        let first = f.ring.front().map_or(f.next, |fr| fr.id);
        let after = last.unwrap_or(0);
        let replay = f.ring.iter().filter(|fr| fr.id > after).cloned().collect();
        Joined {
            watcher: Watcher { hub: self.clone() },
            replay,
            gap: last.is_some_and(|l| l + 1 < first),
            live,
        }
    }

    /// The latest nodes snapshot (made by the watch), if a page is open.
    pub(crate) fn nodes(&self) -> Option<Value> {
        lock(&self.nodes).clone()
    }

    /// The latest durable snapshot (made by the watch), if a page is open.
    pub(crate) fn durable(&self) -> Option<Value> {
        lock(&self.durable).clone()
    }

    /// Forgets the streams and dead letters seen (the watch starts or stops: frames and
    /// polls in between are not seen).
    fn forget_watched(&self) {
        lock(&self.streams).clear();
        *lock(&self.dead_letters) = (DeadLetters::default(), Vec::new());
    }

    /// A poll of the durable streams: `None` when there are none (or no JetStream).
    fn on_durable(&self, snapshot: Option<Value>) {
        let mut dead = lock(&self.dead_letters);
        let Some(snapshot) = snapshot else {
            dead.1.clear();
            return;
        };
        let counts: std::collections::BTreeMap<String, u64> = snapshot["deadLetters"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(node, n)| Some((node.clone(), n.as_u64()?)))
            .collect();
        dead.1 = dead.0.update(time::now_us(), &counts, &self.thresholds);
        drop(dead);
        let mut last = lock(&self.durable);
        if last.as_ref() != Some(&snapshot) {
            *last = Some(snapshot.clone());
            drop(last);
            self.publish("durable", None, snapshot.to_string());
        }
    }

    pub(crate) fn status(&self) -> Value {
        lock(&self.status).clone()
    }

    pub(crate) fn transaction(&self, corr: &str) -> Option<Value> {
        lock(&self.store).transaction(corr)
    }

    pub(crate) fn errors(&self) -> Value {
        lock(&self.store).errors()
    }

    fn on_event(&self, seen: Seen, reply: Option<String>) {
        let early = lock(&self.store).event(&seen, reply.as_deref());
        lock(&self.rates).event(&seen);
        let v = event_json(&seen);
        self.publish("event", Some(seen.event_type), v.to_string());
        if let Some((req, answer)) = early {
            if answer.status == "stream"
                && let Some(subject) = &reply
            {
                lock(&self.streams).paired(subject, req.target.as_deref(), &req.correlation_id);
            }
            self.publish_reply(&req, &answer);
        }
    }

    fn publish_reply(&self, req: &Seen, reply: &Reply) {
        let data = json!({
            "eventId": req.id, "correlationId": req.correlation_id, "type": req.event_type,
            "target": req.target, "sender": req.sender,
            "durationMs": reply.received_us.saturating_sub(req.received_us) as f64 / 1000.0,
            "reply": reply,
        });
        self.publish("reply", None, data.to_string());
    }

    /// A message on `_INBOX.>`: a request's first answer (paired with the request), or a
    /// stream's frame (`item`, `end`, `error` on its reply subject; `credit`, `cancel` on its
    /// control subject), which only the stalled-stream warning looks at.
    fn on_reply(&self, msg: async_nats::Message) {
        let subject = msg.subject.as_str();
        let header = |name: &str| {
            msg.headers
                .as_ref()
                .and_then(|h| h.get(name))
                .map(|v| v.as_str().to_owned())
        };
        if let Some(frame) = header("Happen-Frame") {
            lock(&self.streams).frame(time::now_us(), subject, &frame);
        }
        let Some(reply) = reply_of(&msg) else {
            return;
        };
        if reply.status == "stream" {
            let control = header("Happen-Control");
            lock(&self.streams).started(reply.received_us, subject, control.as_deref());
        }
        let paired = lock(&self.store).reply(subject, reply);
        if let Some((req, reply)) = paired {
            if reply.status == "stream" {
                lock(&self.streams).paired(subject, req.target.as_deref(), &req.correlation_id);
            }
            self.publish_reply(&req, &reply);
        }
    }

    fn on_completed(&self, msg: async_nats::Message) {
        let Some(c) = Completed::parse(&msg.payload) else {
            return;
        };
        let data = json!({
            "eventId": c.event_id, "correlationId": c.correlation_id, "node": c.node,
            "durationMs": c.took_us() as f64 / 1000.0, "outcome": c.outcome, "error": c.error,
        });
        lock(&self.store).completed(c);
        self.publish("completion", None, data.to_string());
    }

    /// A discovery snapshot: kept, sent to the pages; returns the flow-balance events it
    /// starts (when they are on).
    fn on_nodes(&self, processes: &[ProcessInfo]) -> Vec<(&'static str, Value)> {
        let now = time::now_us();
        let mut snapshot = lock(&self.rates).snapshot(now, processes);
        // the warnings of the watch: none while no page is open
        let mut watched = lock(&self.dead_letters).1.clone();
        watched.extend(lock(&self.streams).stalled(now, self.thresholds.stream_stall_us));
        if let Some(list) = snapshot["warnings"].as_array_mut() {
            list.extend(watched.iter().filter_map(|w| serde_json::to_value(w).ok()));
        }
        let flow = self
            .flow
            .as_ref()
            .map(|f| lock(f).update(&snapshot))
            .unwrap_or_default();
        *lock(&self.nodes) = Some(snapshot.clone());
        self.publish("nodes", None, snapshot.to_string());
        flow
    }

    fn on_connection(&self, c: &Connection) {
        let v = json!({"nats": c.as_str(), "atUs": time::now_us()});
        *lock(&self.status) = v.clone();
        self.publish("status", None, v.to_string());
    }
}

/// An event as the pages get it: [`Seen`] with a payload longer than [`PAYLOAD_BYTES`] cut.
pub(crate) fn event_json(seen: &Seen) -> Value {
    let mut v = serde_json::to_value(seen).unwrap_or(Value::Null);
    if let Some(p) = &seen.payload {
        let text = p.to_string();
        if text.len() > PAYLOAD_BYTES {
            let cut = (0..=PAYLOAD_BYTES)
                .rev()
                .find(|&i| text.is_char_boundary(i))
                .unwrap_or(0);
            v["payload"] = json!(format!("{}… ({} bytes)", &text[..cut], text.len()));
            v["payloadCut"] = json!(true);
        }
    }
    v
}

/// The watch: while it runs, every event, reply and node snapshot becomes a frame.
async fn watch(hub: Arc<Hub>) {
    let transport = hub.transport.clone();
    hub.forget_watched();
    let events = match tap::listen_with_replies(&transport).await {
        Ok(s) => s,
        Err(e) => {
            hub.publish(
                "status",
                None,
                json!({"nats": "error", "error": e.to_string()}).to_string(),
            );
            return;
        }
    };
    let replies = match transport.client().subscribe("_INBOX.>").await {
        Ok(s) => s,
        Err(e) => {
            hub.publish(
                "status",
                None,
                json!({"nats": "error", "error": format!("cannot subscribe to the replies: {e}")})
                    .to_string(),
            );
            return;
        }
    };
    // completion records of tells and broadcasts, from nodes that publish them (always, or
    // while watched: the beats below)
    let prefix = transport.config().prefix.clone();
    let completed = match transport
        .client()
        .subscribe(happen_nats::completion::records_subject(&prefix))
        .await
    {
        Ok(s) => s,
        Err(e) => {
            hub.publish(
                "status",
                None,
                json!({"nats": "error", "error": format!("cannot subscribe to the completion records: {e}")})
                    .to_string(),
            );
            return;
        }
    };
    let completed = completed.for_each(|msg| {
        hub.on_completed(msg);
        std::future::ready(())
    });
    let beats = crate::conn::watch_beats(&transport);
    let taps = events.for_each(|(seen, reply)| {
        hub.on_event(seen, reply);
        std::future::ready(())
    });
    let replies = replies.for_each(|msg| {
        hub.on_reply(msg);
        std::future::ready(())
    });
    let durable = async {
        let mut every = tokio::time::interval(DURABLE_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let prefix = transport.config().prefix.clone();
        loop {
            every.tick().await;
            // bounded: without JetStream its API requests may wait out their timeouts (a
            // poll that takes longer changes nothing)
            if let Ok(d) = tokio::time::timeout(
                DURABLE_EVERY,
                durable::snapshot(transport.client(), &prefix),
            )
            .await
            {
                hub.on_durable(d);
            }
        }
    };
    let connection = conn::watch_connection(&transport, |c| hub.on_connection(&c));
    tokio::join!(taps, replies, completed, beats, durable, connection);
}

/// Discovery once a second: while a page is open, or always with flow events.
async fn discovery(hub: Arc<Hub>) {
    let transport = hub.transport.clone();
    let subject = format!("{}.broadcast", transport.config().prefix);
    let mut every = tokio::time::interval(DISCOVER_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        // a failed discovery (disconnected) is shown by the connection state
        let Ok(p) = transport
            .discover(Duration::from_millis(500), Duration::from_millis(100))
            .await
        else {
            continue;
        };
        for (event_type, payload) in hub.on_nodes(&p) {
            let body = flow_event(event_type, payload);
            if let Err(e) = transport
                .client()
                .publish(subject.clone(), body.into())
                .await
            {
                eprintln!("warning: cannot publish {event_type}: {e}");
            }
        }
    }
}

/// A flow-balance event as a happen event on the wire (`WIRE.md`, "Events"), sent by
/// `happen-web`: the reference's listeners read `type` and `payload`; happen nodes get a
/// causal context.
fn flow_event(event_type: &str, payload: Value) -> String {
    let event = happen::Event::new(event_type, Value::Null);
    let context = json!({"causal": {
        "id": event.id().to_string(),
        "sender": "happen-web",
        "correlationId": event.correlation_id().to_string(),
        "path": ["happen-web"],
        "timestamp": time::now_us() / 1000,
    }});
    // `type` first, as our encoder writes it: nodes without a handler skip it undecoded
    format!(
        r#"{{"type":{},"payload":{payload},"context":{context}}}"#,
        Value::from(event_type)
    )
}
