//! Durable delivery survives crashes: the worker process is killed (SIGKILL) at random points
//! and restarted, or the nats-server itself is stopped and restarted; every event is processed,
//! duplicates only as the delivery mode allows (counted by event).
//!
//! The worker is this test binary run again as a child process (the ignored test
//! `worker_process`, told what to do by environment variables); it appends the number of every
//! event it processes to a file, one `write` per event, so a kill loses nothing it recorded.

mod common;

use std::collections::HashMap;
use std::future::IntoFuture as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::instance_with;
use happen::{Context, ErrorKind, Event, NodeOptions};
use happen_nats::NatsConfig;
use happen_nats::{DeliveryMode, DurableNode};
use parking_lot::Mutex;
use serde_json::json;
use test_support::{NatsServer, NatsServerOptions};

const MAX_CONCURRENT: usize = 4;
const QUEUE_LIMIT: usize = 500;

fn config(url: &str, mode: DeliveryMode) -> NatsConfig {
    let mut c = NatsConfig::with_server(url).with_durable(
        "crash-*",
        DurableNode::new(mode)
            .with_backoff(Duration::from_millis(20), Duration::from_millis(200))
            .with_ack_wait(Duration::from_secs(2)),
    );
    // outages in these tests last seconds; publishes are retried that long
    c.request_timeout = Some(Duration::from_secs(60));
    c
}

fn mode_name(mode: DeliveryMode) -> &'static str {
    match mode {
        DeliveryMode::ExactlyOnce => "exactly-once",
        _ => "at-least-once",
    }
}

/// The worker: hosts `crash-worker` and records each event's number in `HAPPEN_CRASH_FILE`.
/// Runs until killed. Only does something when started by a test below.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a helper run as a child process by the tests of this file"]
async fn worker_process() {
    let (Ok(url), Ok(file), Ok(mode)) = (
        std::env::var("HAPPEN_CRASH_URL"),
        std::env::var("HAPPEN_CRASH_FILE"),
        std::env::var("HAPPEN_CRASH_MODE"),
    ) else {
        return;
    };
    let mode = if mode == "exactly-once" {
        DeliveryMode::ExactlyOnce
    } else {
        DeliveryMode::AtLeastOnce
    };
    let (h, _t) = instance_with(config(&url, mode)).await;
    let out = Arc::new(Mutex::new(
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&file)
            .unwrap(),
    ));
    let worker = h.node_with("crash-worker", limits()).await.unwrap();
    worker
        .on("job", move |e: Event, _c: Context| {
            let out = out.clone();
            async move {
                let n = e.payload()["n"].as_u64().unwrap();
                // one write per event: a kill never leaves half a line
                out.lock().write_all(format!("{n}\n").as_bytes()).unwrap();
            }
        })
        .unwrap();
    std::future::pending::<()>().await;
}

fn limits() -> NodeOptions {
    NodeOptions::new()
        .max_concurrent(MAX_CONCURRENT)
        .queue_limit(QUEUE_LIMIT)
}

/// A worker child process, killed when dropped.
struct Worker(Child);

impl Worker {
    fn start(url: &str, file: &Path, mode: DeliveryMode) -> Worker {
        let child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "worker_process", "--ignored", "--nocapture"])
            .env("HAPPEN_CRASH_URL", url)
            .env("HAPPEN_CRASH_FILE", file)
            .env("HAPPEN_CRASH_MODE", mode_name(mode))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the worker process");
        Worker(child)
    }

    /// SIGKILL, no goodbye.
    fn kill(mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// How many times each event number was recorded.
fn recorded(file: &Path) -> HashMap<u64, u32> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let mut counts = HashMap::new();
    for line in text.lines() {
        let n: u64 = line.parse().expect("whole lines only");
        *counts.entry(n).or_insert(0) += 1;
    }
    counts
}

fn lines(file: &Path) -> usize {
    std::fs::read(file)
        .map(|b| b.iter().filter(|c| **c == b'\n').count())
        .unwrap_or(0)
}

fn temp_file(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("happen-durable-{}-{}", std::process::id(), name));
    let _ = std::fs::remove_file(&dir);
    dir
}

/// Pseudo-random fractions (xorshift seeded by the clock, printed for reproduction).
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            | 1;
        println!("seed {seed}");
        Rng(seed)
    }

    fn fraction(&mut self, lo: f64, hi: f64) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        lo + (hi - lo) * ((self.0 % 10_000) as f64 / 10_000.0)
    }
}

/// Sends `events` tells to `crash-worker`, waiting when the outgoing buffer is full.
async fn produce(node: &happen::Node, events: u64) {
    let mut n = 0;
    while n < events {
        match node.tell("crash-worker", Event::new("job", json!({ "n": n }))) {
            Ok(()) => n += 1,
            Err(e) if e.kind() == ErrorKind::Transport => {
                tokio::time::sleep(Duration::from_millis(2)).await
            }
            Err(e) => panic!("tell {n}: {e}"),
        }
    }
}

async fn kill_the_worker(mode: DeliveryMode, events: u64, kills: usize) {
    let server = NatsServer::start_with(NatsServerOptions::new().with_jetstream());
    let url = server.url();
    let file = temp_file(mode_name(mode));
    let (h, t) = instance_with(config(&url, mode)).await;
    let producer = h.node("producer").await.unwrap();
    let mut rng = Rng::new();
    let started = std::time::Instant::now();
    let sending = {
        let producer = producer.clone();
        tokio::spawn(async move { produce(&producer, events).await })
    };
    let mut worker = Worker::start(&url, &file, mode);
    for k in 0..kills {
        // kill at a random point of the run
        let at = (events as f64 * rng.fraction(0.05, 0.85) / kills as f64
            + (k as f64 * events as f64 / kills as f64)) as usize;
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while lines(&file) < at {
            assert!(
                std::time::Instant::now() < deadline,
                "the worker did not get to {at} events (at {})",
                lines(&file)
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        worker.kill();
        println!("killed the worker after {} records", lines(&file));
        worker = Worker::start(&url, &file, mode);
    }
    sending.await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    loop {
        let counts = recorded(&file);
        if counts.len() as u64 == events {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "only {} of {events} events processed; {:?}",
            counts.len(),
            t.stats()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(worker);
    let counts = recorded(&file);
    assert!((0..events).all(|n| counts.contains_key(&n)));
    let duplicates: u32 = counts.values().map(|c| c - 1).sum();
    println!(
        "{} mode: {events} events, {kills} kills, {duplicates} duplicates, {:?}",
        mode_name(mode),
        started.elapsed()
    );
    // what a killed worker held (pulled, not acknowledged) comes again: at most its admission
    // room per kill. Exactly-once runs again only what had finished but was not recorded yet
    // when the process died: no better bound (see `server_restart` for where it is exact)
    let bound = (MAX_CONCURRENT + QUEUE_LIMIT) * kills;
    assert!(
        duplicates as usize <= bound,
        "{duplicates} duplicates > {bound}"
    );
    let _ = std::fs::remove_file(&file);
    assert_eq!(t.stats().durable_publish_failed, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_least_once_survives_worker_kills() {
    kill_the_worker(DeliveryMode::AtLeastOnce, 100_000, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_survives_worker_kills() {
    kill_the_worker(DeliveryMode::ExactlyOnce, 20_000, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_least_once_loses_nothing_when_the_server_restarts() {
    let duplicates = server_restart(DeliveryMode::AtLeastOnce, 100_000).await;
    println!("at-least-once: {duplicates} duplicates");
}

/// The worker process survives: the events whose acknowledgements were lost with the server
/// come again, and are recognised by their record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_runs_each_event_once_when_the_server_restarts() {
    let duplicates = server_restart(DeliveryMode::ExactlyOnce, 20_000).await;
    assert_eq!(duplicates, 0);
}

/// Stops the server (SIGTERM) and restarts it with its store while `events` tells flow to a
/// worker of this process; every event is processed; returns how many were processed twice.
///
/// Not SIGKILL: a single nats-server (2.9) acknowledges a publish before its store reaches the
/// file, and a SIGKILL lost ~2% of 100k acknowledged events in one CI run. That is the
/// server's guarantee, not ours (WIRE.md, "Durable delivery"); with 3 replicas a SIGKILLed
/// member loses nothing (`durable_cluster.rs`).
async fn server_restart(mode: DeliveryMode, events: u64) -> u32 {
    let mut server = NatsServer::start_with(NatsServerOptions::new().with_jetstream());
    let url = server.url();
    let (h, t) = instance_with(config(&url, mode)).await;
    let seen: Arc<Mutex<HashMap<u64, u32>>> = Arc::default();
    let processed = Arc::new(AtomicU64::new(0));
    let worker = h.node_with("crash-worker", limits()).await.unwrap();
    let (s, p) = (seen.clone(), processed.clone());
    worker
        .on("job", move |e: Event, _c: Context| {
            let (s, p) = (s.clone(), p.clone());
            async move {
                let n = e.payload()["n"].as_u64().unwrap();
                *s.lock().entry(n).or_insert(0) += 1;
                p.fetch_add(1, Ordering::Relaxed);
            }
        })
        .unwrap();
    let producer = h.node("producer").await.unwrap();
    let sending = {
        let producer = producer.clone();
        tokio::spawn(async move { produce(&producer, events).await })
    };
    let mut rng = Rng::new();
    let at = (events as f64 * rng.fraction(0.1, 0.6)) as u64;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while processed.load(Ordering::Relaxed) < at {
        assert!(
            std::time::Instant::now() < deadline,
            "stuck before the kill"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.terminate();
    println!(
        "server stopped after {} events",
        processed.load(Ordering::Relaxed)
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.restart();
    sending.await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    while (seen.lock().len() as u64) < events {
        assert!(
            std::time::Instant::now() < deadline,
            "only {} of {events} events processed after the restart; {:?}",
            seen.lock().len(),
            t.stats()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seen = seen.lock();
    assert!((0..events).all(|n| seen.contains_key(&n)));
    let duplicates: u32 = seen.values().map(|c| c - 1).sum();
    let s = t.stats();
    println!("{duplicates} duplicates; {s:?}");
    assert_eq!(s.durable_publish_failed, 0, "{s:?}");
    assert!(t.stats().disconnects >= 1);
    duplicates
}

/// A durable `send` waiting for its reply when the connection to the server is lost is not
/// failed (a core NATS request would be): the reply comes after the reconnect. A second send
/// made while the server is down is published once it is back, and answered too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_sends_survive_a_server_outage() {
    let mut server = NatsServer::start_with(NatsServerOptions::new().with_jetstream());
    let url = server.url();
    let (h, t) = instance_with(config(&url, DeliveryMode::AtLeastOnce)).await;
    let (release, released) = tokio::sync::watch::channel(false);
    let started = Arc::new(AtomicU64::new(0));
    let worker = h.node("crash-echo").await.unwrap();
    let s = started.clone();
    worker
        .on("echo", move |e: Event, _c: Context| {
            let (s, mut released) = (s.clone(), released.clone());
            async move {
                s.fetch_add(1, Ordering::Relaxed);
                let _ = released.wait_for(|r| *r).await;
                e.payload().clone()
            }
        })
        .unwrap();
    let client = h.node("client").await.unwrap();
    let first = tokio::spawn(
        client
            .send("crash-echo", Event::new("echo", 1))
            .timeout(Duration::from_secs(90))
            .into_future(),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while started.load(Ordering::Relaxed) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the flow did not start"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.stop();
    while t.stats().disconnects == 0 {
        assert!(std::time::Instant::now() < deadline, "no disconnect seen");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // made while disconnected: buffered and published after the reconnect
    let second = tokio::spawn(
        client
            .send("crash-echo", Event::new("echo", 2))
            .timeout(Duration::from_secs(90))
            .into_future(),
    );
    server.restart();
    release.send_replace(true);
    let v1 = common::within(60, "first answer", first)
        .await
        .unwrap()
        .unwrap();
    let v2 = common::within(60, "second answer", second)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((v1, v2), (json!(1), json!(2)));
    assert_eq!(t.stats().failed_on_disconnect, 0);
}
