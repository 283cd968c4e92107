//! What the `happen web` tests share: the shop's nodes, a running `happen web`, an
//! event-stream reader.
#![allow(dead_code, unreachable_pub)]

use std::future::{Future, IntoFuture};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use happen::{Context, Error, ErrorKind, Event, Happen, Node, NodeOptions};
use happen_nats::{NatsConfig, NatsTransport};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub const BIN: &str = env!("CARGO_BIN_EXE_happen");

pub async fn within<T>(secs: u64, what: &str, f: impl IntoFuture<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .unwrap_or_else(|_| panic!("timed out after {secs}s: {what}"))
}

/// Polls `check` until it holds (every 50 ms, at most 10 s).
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The shop of `examples/shop.rs`: `orders` (2 at once, 50 queued; 20 ms of work) charges at
/// `payments` (over 1000 fails with `limit_exceeded`), which records at `ledger` (which times
/// its handlers). Returns the instance and a `client` node.
pub async fn shop(url: &str) -> (Happen, Node) {
    let transport = NatsTransport::connect(NatsConfig::with_server(url))
        .await
        .expect("connect to nats");
    let h = Happen::builder().transport(transport).build().unwrap();
    let orders = h
        .node_with(
            "orders",
            NodeOptions::new().max_concurrent(2).queue_limit(50),
        )
        .await
        .unwrap();
    orders
        .on("order.place", |event: Event, ctx: Context| async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let amount = event.payload()["amount"].clone();
            let charge = ctx
                .send(
                    "payments",
                    Event::new("payment.charge", json!({"amount": amount})),
                )
                .await?;
            Ok::<_, Error>(json!({"order": event.payload()["id"], "charge": charge}))
        })
        .unwrap();
    let payments = h.node("payments").await.unwrap();
    payments
        .on("payment.charge", |event: Event, ctx: Context| async move {
            let amount = event.payload()["amount"].as_u64().unwrap_or(0);
            if amount > 1000 {
                return Err(Error::new(
                    ErrorKind::Handler,
                    format!("amount {amount} is over the limit of 1000"),
                )
                .with_code("limit_exceeded"));
            }
            let entry = ctx
                .send(
                    "ledger",
                    Event::new("ledger.record", json!({"amount": amount})),
                )
                .await?;
            Ok(json!({"charged": amount, "entry": entry}))
        })
        .unwrap();
    let ledger = h
        .node_with("ledger", NodeOptions::new().handler_timing(true))
        .await
        .unwrap();
    ledger
        .on("ledger.record", |_e: Event, _c: Context| async move { 1 })
        .unwrap();
    let client = h.node("client").await.unwrap();
    (h, client)
}

pub fn command(url: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_remove("HAPPEN_NATS_URL")
        .env_remove("HAPPEN_WEB_TOKEN")
        .arg("--nats")
        .arg(url)
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

pub async fn run(url: &str, args: &[&str]) -> Output {
    within(60, "happen to finish", command(url, args).output())
        .await
        .expect("run happen")
}

/// A running `happen web` on a free loopback port (or the `--listen` given).
pub struct Web {
    _child: Child,
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Web {
    pub async fn start(url: &str, extra: &[&str]) -> Web {
        let mut args = vec!["web"];
        if !extra.contains(&"--listen") {
            args.extend(["--listen", "127.0.0.1:0"]);
        }
        args.extend(extra);
        let mut child = command(url, &args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn happen web");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let first = within(30, "happen web's address", lines.next_line())
            .await
            .unwrap()
            .unwrap_or_default();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("happen web: {line}");
            }
        });
        let address = first
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no address in {first:?}"));
        // a wildcard address is reached on loopback
        let address = address.replace("0.0.0.0", "127.0.0.1");
        let (base, token) = match address.split_once("/?token=") {
            Some((b, t)) => (b.to_owned(), Some(t.to_owned())),
            None => (address.trim_end_matches('/').to_owned(), None),
        };
        Web {
            _child: child,
            base,
            token,
            http: reqwest::Client::new(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The page's address with its token.
    pub fn page(&self, query: &str) -> String {
        let mut q = query.to_owned();
        if let Some(t) = &self.token {
            q = format!("{q}&token={t}");
        }
        format!("{}/?{q}", self.base)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = within(30, path, self.http.get(self.url(path)).send())
            .await
            .unwrap();
        let code = r.status().as_u16();
        let text = r.text().await.unwrap();
        (
            code,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn get_json(&self, path: &str) -> Value {
        let (code, body) = self.get(path).await;
        assert_eq!(code, 200, "GET {path}: {body}");
        body
    }

    pub async fn post(&self, path: &str, body: &str) -> (u16, Value) {
        let r = within(
            30,
            path,
            self.http
                .post(self.url(path))
                .header("content-type", "application/json")
                .body(body.to_owned())
                .send(),
        )
        .await
        .unwrap();
        let code = r.status().as_u16();
        let text = r.text().await.unwrap();
        (
            code,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }
}

/// One message of the event stream.
#[derive(Debug, Clone)]
pub struct Frame {
    pub id: Option<u64>,
    pub event: String,
    pub data: Value,
}

/// A page's event stream, read frame by frame.
pub struct SseClient {
    response: reqwest::Response,
    buf: String,
}

impl SseClient {
    pub async fn open(url: &str, last_event_id: Option<u64>) -> SseClient {
        let mut req = reqwest::Client::new().get(url);
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", id.to_string());
        }
        let response = within(30, "the event stream", req.send()).await.unwrap();
        assert_eq!(response.status(), 200, "{url}");
        let ct = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(ct.starts_with("text/event-stream"), "{ct}");
        SseClient {
            response,
            buf: String::new(),
        }
    }

    /// The next frame (comments, the keep-alives, are skipped); within 15 s.
    pub async fn next(&mut self) -> Frame {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut frame = Frame {
                    id: None,
                    event: "message".to_owned(),
                    data: Value::Null,
                };
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        frame.id = v.trim().parse().ok();
                    } else if let Some(v) = line.strip_prefix("event:") {
                        frame.event = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.strip_prefix(' ').unwrap_or(v));
                    }
                }
                if data.is_empty() && frame.id.is_none() {
                    continue; // a comment
                }
                frame.data = serde_json::from_str(&data).unwrap_or(Value::String(data));
                return frame;
            }
            let chunk = within(15, "the next frame", self.response.chunk())
                .await
                .expect("read the event stream")
                .expect("the event stream ended");
            self.buf.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// The frames up to and including the first for which `done` holds.
    pub async fn until(&mut self, mut done: impl FnMut(&Frame) -> bool) -> Vec<Frame> {
        let mut frames = Vec::new();
        loop {
            let f = self.next().await;
            let stop = done(&f);
            frames.push(f);
            if stop {
                return frames;
            }
        }
    }
}

/// A recording made by `happen tap --record` of two orders of the shop, one after the other.
pub struct Recording {
    pub path: std::path::PathBuf,
    /// The first order (ok): its three events and replies are in the file before `mid_us`.
    pub first: String,
    /// The second order (over the limit: an error), sent after `mid_us`.
    pub second: String,
    /// A time between the orders: the first node snapshot showing the first order accepted.
    pub mid_us: u64,
}

impl Drop for Recording {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The lines of a record file (none while it does not exist).
fn record_lines(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The time of the first node snapshot after `after_us` in which `node` has accepted at
/// least `accepted` events.
fn snapshot_with(lines: &[Value], node: &str, accepted: u64, after_us: u64) -> Option<u64> {
    lines.iter().find_map(|l| {
        let at = l["atUs"].as_u64()?;
        let seen: u64 = l["processes"]
            .as_array()?
            .iter()
            .flat_map(|p| p["nodes"].as_array().into_iter().flatten())
            .filter(|n| n["id"] == node)
            .filter_map(|n| n["accepted"].as_u64())
            .sum();
        (l["record"] == "nodes" && at > after_us && seen >= accepted).then_some(at)
    })
}

/// Replies recorded for `corr`, and the latest of their times.
fn replies_of(lines: &[Value], corr: &str) -> (usize, u64) {
    let times: Vec<u64> = lines
        .iter()
        .filter(|l| l["record"] == "reply" && l["correlationId"] == corr)
        .filter_map(|l| l["receivedUs"].as_u64())
        .collect();
    (times.len(), times.into_iter().max().unwrap_or(0))
}

/// Records the shop at `url` (its nodes must run) with `happen tap --record`: one order, a
/// node snapshot showing it, then an order over the limit, and a snapshot showing that.
pub async fn record_two_orders(url: &str, client: &Node, name: &str) -> Recording {
    let path = std::env::temp_dir().join(format!("happen-web-{name}-{}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let file = path.to_str().unwrap().to_owned();
    let mut tap = command(
        url,
        &["tap", "--record", &file, "--snapshot-every", "100ms"],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .expect("spawn happen tap");
    let mut err = BufReader::new(tap.stderr.take().unwrap()).lines();
    let first_line = within(30, "tap to listen", err.next_line())
        .await
        .unwrap()
        .unwrap_or_default();
    assert!(first_line.starts_with("listening"), "{first_line}");

    let first = happen::CorrelationId::new();
    within(
        10,
        "the first order",
        client.send(
            "orders",
            Event::new("order.place", json!({"id": 1, "amount": 10}))
                .with_correlation_id(first.clone()),
        ),
    )
    .await
    .unwrap();
    let first = first.to_string();
    let mut mid_us = 0;
    eventually(
        "the first order's replies and a snapshot after them",
        || {
            let lines = record_lines(&path);
            let (n, last) = replies_of(&lines, &first);
            if n == 3
                && let Some(at) = snapshot_with(&lines, "orders", 1, last)
            {
                mid_us = at;
            }
            std::future::ready(mid_us > 0)
        },
    )
    .await;

    let second = happen::CorrelationId::new();
    let failed = within(
        10,
        "the second order",
        client.send(
            "orders",
            Event::new("order.place", json!({"id": 2, "amount": 5000}))
                .with_correlation_id(second.clone()),
        ),
    )
    .await;
    assert!(failed.is_err(), "over the limit: {failed:?}");
    let second = second.to_string();
    eventually(
        "the second order's replies and a snapshot after them",
        || {
            let lines = record_lines(&path);
            let (n, last) = replies_of(&lines, &second);
            std::future::ready(n == 2 && snapshot_with(&lines, "orders", 2, last).is_some())
        },
    )
    .await;
    // every line is flushed as it is written: stopping the tap loses nothing
    tap.kill().await.expect("stop happen tap");
    Recording {
        path,
        first,
        second,
        mid_us,
    }
}

/// A process whose nodes publish completion records (`records`: `watched` or `always`):
/// `audit` (30 ms of work; fails with code `nope` for the payload `"bad"`) takes tells,
/// `mirror-a` and `mirror-b` take `sync` broadcasts. Returns the instance and a `client`
/// node of another process (records off) to send from.
pub async fn recording_workers(
    url: &str,
    records: happen_nats::CompletionRecords,
) -> (Happen, Happen, Node) {
    let mut config = NatsConfig::with_server(url);
    config.completion_records = records;
    let transport = NatsTransport::connect(config)
        .await
        .expect("connect to nats");
    let h = Happen::builder().transport(transport).build().unwrap();
    let audit = h.node("audit").await.unwrap();
    audit
        .on("audit", |e: Event, _c: Context| async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            if e.payload() == &json!("bad") {
                return Err(Error::new(ErrorKind::Handler, "refused").with_code("nope"));
            }
            Ok(json!(true))
        })
        .unwrap();
    for id in ["mirror-a", "mirror-b"] {
        let n = h.node(id).await.unwrap();
        n.on("sync", |_e: Event, _c: Context| async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
        })
        .unwrap();
    }
    let (senders, client) = senders(url).await;
    (h, senders, client)
}

/// Tells `audit` until `recorded()` says a completion record arrived (nodes publishing only
/// while watched start at a watcher's beat, which travels apart from the tells).
pub async fn until_records_flow<F, Fut>(client: &Node, mut recorded: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    within(20, "the first completion record", async {
        loop {
            client
                .tell("audit", Event::new("audit", "warm-up"))
                .unwrap();
            if recorded().await {
                return;
            }
        }
    })
    .await;
}

/// Waits until `page` shows completion records flowing (they start with the watch), then
/// sends [`tells_and_a_broadcast`] and waits for its four completion frames (two tells, the
/// broadcast at two nodes). Returns the transaction's correlation id and the page.
pub async fn completions_on_the_page(client: &Node, page: SseClient) -> (String, SseClient) {
    let page = std::sync::Arc::new(tokio::sync::Mutex::new(page));
    until_records_flow(client, || {
        let page = page.clone();
        async move {
            let mut page = page.lock().await;
            tokio::time::timeout(
                Duration::from_millis(300),
                page.until(|f| f.event == "completion"),
            )
            .await
            .is_ok()
        }
    })
    .await;
    let corr = tells_and_a_broadcast(client).await;
    let Ok(page) = std::sync::Arc::try_unwrap(page) else {
        panic!("the page is still shared after the warm-up")
    };
    let mut page = page.into_inner();
    let mut done = 0;
    page.until(|f| {
        done += usize::from(f.event == "completion" && f.data["correlationId"] == corr.as_str());
        done == 4
    })
    .await;
    (corr, page)
}

/// A tell that succeeds, one that fails and a broadcast to two nodes, in one transaction.
pub async fn tells_and_a_broadcast(client: &Node) -> String {
    let corr = happen::CorrelationId::new();
    for payload in ["fine", "bad"] {
        client
            .tell(
                "audit",
                Event::new("audit", payload).with_correlation_id(corr.clone()),
            )
            .unwrap();
    }
    client
        .broadcast(Event::new("sync", ()).with_correlation_id(corr.clone()))
        .unwrap();
    corr.to_string()
}

/// The lines of a record file (for tests).
pub fn lines_of(path: &std::path::Path) -> Vec<Value> {
    record_lines(path)
}

/// Starts a stream from [`stalling_producer`]'s `producer` in a transaction of its own and
/// takes its first item: the stream then stalls until the gate is opened. Returns the
/// correlation id and the stream.
pub async fn stalled_stream(client: &Node) -> (String, happen::ReplyStream) {
    use futures::StreamExt;
    let corr = happen::CorrelationId::new();
    let mut stream = client
        .send(
            "producer",
            Event::new("feed", ()).with_correlation_id(corr.clone()),
        )
        .into_stream();
    let first = within(10, "the first item", stream.next()).await;
    assert_eq!(first.unwrap().unwrap(), json!(1));
    (corr.to_string(), stream)
}

/// A process with a node `producer` whose `feed` handler streams one item (`1`), then waits
/// until the returned gate is notified, streams `2` and ends with `"fed"`; it also answers
/// `ping`. Returns the instance, another process's instance with a `client` node (so the
/// stream crosses NATS), the client and the gate.
pub async fn stalling_producer(
    url: &str,
) -> (Happen, Happen, Node, std::sync::Arc<tokio::sync::Notify>) {
    let transport = NatsTransport::connect(NatsConfig::with_server(url))
        .await
        .expect("connect to nats");
    let h = Happen::builder().transport(transport).build().unwrap();
    let producer = h.node("producer").await.unwrap();
    let gate = std::sync::Arc::new(tokio::sync::Notify::new());
    let held = gate.clone();
    producer
        .on(
            "feed",
            move |_e: Event, _c: Context, emit: happen::Emitter| {
                let held = held.clone();
                async move {
                    emit.emit(1).await?;
                    held.notified().await;
                    emit.emit(2).await?;
                    Ok::<_, Error>(json!("fed"))
                }
            },
        )
        .unwrap();
    producer
        .on("ping", |_e: Event, _c: Context| async move { "pong" })
        .unwrap();
    let (senders, client) = senders(url).await;
    (h, senders, client, gate)
}

/// Pings `producer` until the page gets a ping's reply: the watch sees the reply subjects
/// (it subscribes after the page connects).
pub async fn until_replies_seen(page: &mut SseClient, client: &Node) {
    within(30, "the watch to see replies", async {
        loop {
            let corr = happen::CorrelationId::new();
            client
                .send(
                    "producer",
                    Event::new("ping", ()).with_correlation_id(corr.clone()),
                )
                .await
                .unwrap();
            let corr = corr.to_string();
            let mut nodes = 0;
            let frames = page
                .until(|f| {
                    nodes += usize::from(f.event == "nodes");
                    (f.event == "reply" && f.data["correlationId"] == corr.as_str()) || nodes == 3
                })
                .await;
            if frames.last().is_some_and(|f| f.event == "reply") {
                return;
            }
        }
    })
    .await;
}

/// A process of its own with the node `client` that sends.
pub async fn senders(url: &str) -> (Happen, Node) {
    let transport = NatsTransport::connect(NatsConfig::with_server(url))
        .await
        .expect("connect to nats");
    let senders = Happen::builder().transport(transport).build().unwrap();
    let client = senders.node("client").await.unwrap();
    (senders, client)
}

/// A process with the at-least-once durable node `worker` (2 deliveries, then the dead
/// letters; short backoff), its handlers still to register.
pub async fn durable_worker(server: &test_support::NatsServer) -> (Happen, Node) {
    use happen_nats::{DeliveryMode, DurableNode};
    let config = NatsConfig::with_server(server.url()).with_durable(
        "worker",
        DurableNode::new(DeliveryMode::AtLeastOnce)
            .with_max_deliveries(2)
            .with_backoff(Duration::from_millis(10), Duration::from_millis(20)),
    );
    let transport = NatsTransport::connect(config).await.unwrap();
    let h = Happen::builder().transport(transport).build().unwrap();
    let worker = h.node("worker").await.unwrap();
    (h, worker)
}
