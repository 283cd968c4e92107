//! CPU-bound work on the CPU pool leaves the async workers responsive; the same work run
//! inline on them does not. Heavy and timing-based: `.config/nextest.toml` runs it alone.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

use happen::{Config, Context, Event, Happen, Node, Reply};
use serde_json::json;
use tokio::sync::mpsc;
use tokio::time::timeout;

const FLOWS: usize = 8;
const WORK: Duration = Duration::from_millis(200);
const PINGS: usize = 1_000;
const T: Duration = Duration::from_secs(60);

/// Real computation (an FNV-1a style hashing loop) until `d` of wall time has passed.
fn burn(d: Duration) -> u64 {
    let start = Instant::now();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i: u64 = 0;
    loop {
        for _ in 0..4096 {
            h ^= i & 0xff;
            h = h.wrapping_mul(0x0100_0000_01b3);
            i += 1;
        }
        if start.elapsed() >= d {
            return std::hint::black_box(h);
        }
    }
}

/// Total time of `PINGS` sequential request/replies to `pinger`.
async fn ping_total(client: &Node, pinger: &Node) -> Duration {
    let start = Instant::now();
    for _ in 0..PINGS {
        let v = timeout(T, client.send(pinger, Event::new("ping", ())))
            .await
            .expect("a ping answered in time")
            .unwrap();
        assert_eq!(v, "pong");
    }
    start.elapsed()
}

struct Load {
    replies: Vec<Reply>,
    started: mpsc::UnboundedReceiver<()>,
}

impl Load {
    fn start(
        client: &Node,
        workers: &[Node],
        event_type: &'static str,
        rx: mpsc::UnboundedReceiver<()>,
    ) -> Load {
        let replies = workers
            .iter()
            .map(|w| client.send(w, Event::new(event_type, ())))
            .collect();
        Load {
            replies,
            started: rx,
        }
    }

    /// Waits until the first CPU job runs, so the pings are measured under load.
    async fn running(&mut self) {
        timeout(T, self.started.recv()).await.unwrap().unwrap();
    }

    async fn finish(self) {
        for r in self.replies {
            assert!(timeout(T, r).await.unwrap().unwrap().is_u64());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_isolation_pool_keeps_pings_fast_while_inline_work_stalls_them() {
    let mut config = Config::default();
    config.cpu.threads = Some(1);
    let happen = Happen::with_config(config).unwrap();
    let client = happen.node("client").await.unwrap();
    let pinger = happen.node("pinger").await.unwrap();
    pinger
        .on("ping", |_e: Event, _c: Context| async { json!("pong") })
        .unwrap();

    let finished = Arc::new(AtomicUsize::new(0));
    let (pool_tx, pool_rx) = mpsc::unbounded_channel::<()>();
    let (inline_tx, inline_rx) = mpsc::unbounded_channel::<()>();
    let mut workers = Vec::new();
    for i in 0..FLOWS {
        let w = happen.node(format!("worker-{i}")).await.unwrap();
        let (tx, done) = (pool_tx.clone(), finished.clone());
        w.on("pool", move |_e: Event, ctx: Context| {
            let (tx, done) = (tx.clone(), done.clone());
            async move {
                ctx.cpu(move || {
                    let _ = tx.send(());
                    let h = burn(WORK);
                    done.fetch_add(1, SeqCst);
                    h
                })
                .await
            }
        })
        .unwrap();
        let tx = inline_tx.clone();
        w.on("inline", move |_e: Event, _c: Context| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(());
                burn(WORK) // blocks an async worker thread for the whole 200 ms
            }
        })
        .unwrap();
        workers.push(w);
    }

    // Warm up: start the pool thread, touch every code path once.
    timeout(T, client.send(&workers[0], Event::new("ping", ())))
        .await
        .unwrap()
        .unwrap_err();
    let _ = ping_total(&client, &pinger).await;

    let baseline = ping_total(&client, &pinger).await;

    // 8 × 200 ms of CPU work through the 1-thread pool (1.6 s of work in all), with pings.
    let mut load = Load::start(&client, &workers, "pool", pool_rx);
    load.running().await;
    let pool = ping_total(&client, &pinger).await;
    let finished_during_pings = finished.load(SeqCst);
    load.finish().await;
    assert!(
        finished_during_pings < FLOWS,
        "the CPU work ended before the pings did, so they were not measured under load"
    );

    // The same work inline, on the 2 async worker threads.
    let mut load = Load::start(&client, &workers, "inline", inline_rx);
    load.running().await;
    let inline = ping_total(&client, &pinger).await;
    load.finish().await;

    eprintln!(
        "{PINGS} pings: baseline {baseline:?}, CPU pool load {pool:?}, inline load {inline:?}"
    );
    // Bounds for a noisy 2-core machine. With the pool, one core runs the CPU job and every
    // ping still finds an idle async worker; what it pays is the OS scheduling the test and
    // worker threads next to a CPU hog. That cost is a small multiple of an unloaded ping, or a
    // fixed overhead on a fast baseline (a few hundred µs of scheduler delay spread over 1000
    // pings), hence max(5 × baseline, baseline + 300 ms).
    let pool_bound = (baseline * 5).max(baseline + Duration::from_millis(300));
    assert!(
        pool <= pool_bound,
        "pings under CPU pool load took {pool:?} (bound {pool_bound:?}, baseline {baseline:?})"
    );
    // Inline, both async workers are blocked by 200 ms jobs (8 jobs: about 800 ms of both
    // workers), so pings wait for whole jobs: at least one 200 ms job, typically several,
    // against well under 100 ms of pings with the pool. Twice the pool total is a wide margin
    // that still shows the test can fail when the work is not isolated.
    assert!(
        inline >= pool * 2,
        "inline CPU work should stall the pings: inline {inline:?} vs pool {pool:?}"
    );
}
