//! The workloads. Each module runs happen and its floor (raw tokio or raw async-nats) through
//! [`Bench::compare`](crate::measure::Bench::compare) and returns report rows.

use std::fmt::Display;
use std::future::Future;

use happen::Pressure;
use tokio::sync::watch::Receiver;

pub(crate) mod admission;
pub(crate) mod ask;
pub(crate) mod broadcast;
pub(crate) mod durable;
pub(crate) mod fanout;
pub(crate) mod nats;
pub(crate) mod node_scale;
pub(crate) mod peers;
pub(crate) mod signed;
pub(crate) mod state;
pub(crate) mod stream;
pub(crate) mod tell;

/// Workloads that need nothing but this process.
pub(crate) const LOCAL: &[&str] = &[
    "tell",
    "ask-seq",
    "ask-par",
    "flow",
    "broadcast",
    "stream",
    "admission",
    "node-scale",
    "fan-out",
    "signed",
    "state",
];

/// Workloads that need a `nats-server`.
pub(crate) const NATS: &[&str] = &[
    "nats-ask-seq",
    "nats-ask-par",
    "nats-broadcast",
    "nats-tell",
    "nats-durable",
    "nats-signed",
    "nats-state",
];

/// The server a JetStream workload runs against: `url` (`--nats-url`) if given, else a
/// `nats-server -js` of its own (kept alive by the returned handle). `Err` says why there is
/// none, for the workload's "unavailable" rows.
pub(crate) fn jetstream_server(
    url: Option<&str>,
) -> Result<(Option<test_support::NatsServer>, String), &'static str> {
    if let Some(u) = url {
        return Ok((None, u.to_owned()));
    }
    if !test_support::nats_server_available() {
        return Err("nats-server not found");
    }
    let start = || {
        test_support::NatsServer::start_with(
            test_support::NatsServerOptions::new().with_jetstream(),
        )
    };
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(start)) {
        Ok(s) => {
            let url = s.url();
            Ok((Some(s), url))
        }
        Err(_) => Err("nats-server -js did not start"),
    }
}

/// Formats an error for a failed run.
/// Runs `n` requests through `client(count, record)`: one client recording every latency when
/// `tasks == 1`, else `tasks` spawned clients sharing `n`. Returns (requests, latencies in ns).
pub(crate) async fn split_clients<Fut>(
    n: u64,
    tasks: u64,
    client: impl Fn(u64, bool) -> Fut,
) -> Result<(u64, Vec<u64>), String>
where
    Fut: Future<Output = Result<(u64, Vec<u64>), String>> + Send + 'static,
{
    if tasks == 1 {
        return client(n, true).await;
    }
    let handles: Vec<_> = (0..tasks)
        .map(|t| tokio::spawn(client(n / tasks + u64::from(t < n % tasks), false)))
        .collect();
    let mut ops = 0;
    for h in handles {
        ops += h.await.map_err(err)??.0;
    }
    Ok((ops, Vec::new()))
}

pub(crate) fn err(e: impl Display) -> String {
    e.to_string()
}

/// How often producers look at the target's backpressure state.
pub(crate) const PACE_EVERY: u64 = 256;

/// Waits while the watched node is under backpressure (what `Node::ready` does, checked
/// once every [`PACE_EVERY`] events instead of per event).
pub(crate) async fn pace(rx: &mut Receiver<Pressure>) {
    let under = rx.borrow().under_pressure;
    if under {
        let _ = rx.wait_for(|p| !p.under_pressure).await;
    }
}

/// Tells `n` events (`make(i)`) from `src` to `sink`, paced by the sink's backpressure; a
/// `QueueFull` is retried after a yield. Returns how many were retried.
pub(crate) async fn tell_paced(
    src: &happen::Node,
    sink: &happen::Node,
    n: u64,
    make: impl Fn(u64) -> happen::Event,
) -> Result<u64, String> {
    let mut pressure = sink.watch_pressure();
    let mut retries = 0u64;
    for i in 0..n {
        if i % PACE_EVERY == 0 {
            pace(&mut pressure).await;
        }
        loop {
            match src.tell(sink, make(i)) {
                Ok(()) => break,
                Err(e) if e.kind() == happen::ErrorKind::QueueFull => {
                    retries += 1;
                    tokio::task::yield_now().await;
                }
                Err(e) => return Err(err(e)),
            }
        }
    }
    Ok(retries)
}
