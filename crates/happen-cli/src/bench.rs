//! `happen bench`: a quick load generator with a progress bar and a latency summary, for
//! trying limits and pressure on a live system.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use happen::transport::Transport;
use happen::{Error, ErrorKind, Event, NodeId, Pressure, Result};
use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::watch;

use crate::conn::{ConnArgs, payload};
use crate::{BenchBroadcastArgs, BenchSendArgs};

fn bar(count: u64) -> ProgressBar {
    let bar = ProgressBar::new(count);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} {per_sec} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

/// `orders: queued 37/100 HIGH` from the node's pressure view.
fn pressure_label(node: &str, p: &Pressure) -> String {
    if p.queue_limit == 0 {
        return format!("{node}: no report yet");
    }
    format!(
        "{node}: queued {}/{}{}",
        p.queued,
        p.queue_limit,
        if p.under_pressure {
            " UNDER PRESSURE"
        } else {
            ""
        }
    )
}

/// Refreshes the bar's message every 200 ms until aborted.
fn ticker(
    bar: ProgressBar,
    node: Option<String>,
    pressure: Option<watch::Receiver<Pressure>>,
    errors: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let mut msg = format!("errors {}", errors.load(Ordering::Relaxed));
            if let (Some(node), Some(p)) = (&node, &pressure) {
                msg.push_str(" · ");
                msg.push_str(&pressure_label(node, &p.borrow()));
            }
            bar.set_message(msg);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}

/// Latency percentiles of `us` (sorted in place).
fn latency_summary(us: &mut [u64]) -> String {
    if us.is_empty() {
        return "latency: nothing measured".to_owned();
    }
    us.sort_unstable();
    let at = |q: f64| us[((us.len() as f64 * q).ceil() as usize).clamp(1, us.len()) - 1];
    let ms = |v: u64| format!("{:.2}ms", v as f64 / 1000.0);
    let mean = us.iter().sum::<u64>() as f64 / us.len() as f64;
    format!(
        "latency: min {} p50 {} p90 {} p99 {} p99.9 {} max {} mean {:.2}ms",
        ms(us[0]),
        ms(at(0.5)),
        ms(at(0.9)),
        ms(at(0.99)),
        ms(at(0.999)),
        ms(us[us.len() - 1]),
        mean / 1000.0
    )
}

/// Errors by kind, with one message of each.
#[derive(Default)]
struct Errors {
    by_kind: BTreeMap<&'static str, (u64, Error)>,
}

impl Errors {
    fn add(&mut self, e: Error) {
        self.by_kind.entry(e.kind().as_str()).or_insert((0, e)).0 += 1;
    }
}

pub(crate) async fn send(conn: &ConnArgs, a: BenchSendArgs) -> Result<()> {
    if a.count == 0 || a.concurrency == 0 {
        return Err(Error::new(
            ErrorKind::InvalidConfig,
            "--count and --concurrency must be at least 1",
        ));
    }
    let value = payload(a.json.as_deref())?;
    let sender = conn.sender(&a.sender).await?;
    let target = NodeId::from(a.node.as_str());
    // the pacing view of the target: its reports and our requests in flight
    let pressure = sender.transport.pressure(&target);
    let bar = bar(a.count);
    let error_count = Arc::new(AtomicU64::new(0));
    let tick = ticker(
        bar.clone(),
        Some(a.node.clone()),
        pressure,
        error_count.clone(),
    );
    let next = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(Mutex::new(Errors::default()));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..a.concurrency.min(a.count as usize) {
        let (node, target, next, errors, error_count, bar, value, event_type) = (
            sender.node.clone(),
            target.clone(),
            next.clone(),
            errors.clone(),
            error_count.clone(),
            bar.clone(),
            value.clone(),
            a.event_type.clone(),
        );
        let (count, paced, timeout) = (a.count, a.paced, a.timeout);
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < count {
                let event = Event::new(event_type.as_str(), value.clone());
                let t0 = Instant::now();
                let result = if paced {
                    match node.ready(&target).timeout(timeout).await {
                        Ok(()) => node.send(&target, event).timeout(timeout).await,
                        Err(e) => Err(e),
                    }
                } else {
                    node.send(&target, event).timeout(timeout).await
                };
                match result {
                    Ok(_) => latencies.push(t0.elapsed().as_micros() as u64),
                    Err(e) => {
                        error_count.fetch_add(1, Ordering::Relaxed);
                        errors.lock().unwrap_or_else(|p| p.into_inner()).add(e);
                    }
                }
                bar.inc(1);
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for w in workers {
        latencies.extend(w.await.unwrap_or_default());
    }
    let elapsed = started.elapsed();
    tick.abort();
    bar.finish_and_clear();
    sender.close().await;

    let ok = latencies.len() as u64;
    println!(
        "sent {} requests to `{}` in {:.2}s ({} at a time{}): {} ok, {} failed, {:.0} replies/s",
        a.count,
        a.node,
        elapsed.as_secs_f64(),
        a.concurrency,
        if a.paced { ", paced" } else { "" },
        ok,
        a.count - ok,
        ok as f64 / elapsed.as_secs_f64()
    );
    println!("{}", latency_summary(&mut latencies));
    let errors = std::mem::take(&mut *errors.lock().unwrap_or_else(|p| p.into_inner()));
    let mut first = None;
    for (kind, (n, e)) in errors.by_kind {
        println!("  {n} × {kind}: {}", crate::exit::one_line(&e));
        first.get_or_insert(e);
    }
    match first {
        // nothing got through: the error says why, and the exit code which kind
        Some(e) if ok == 0 => Err(e),
        _ => Ok(()),
    }
}

pub(crate) async fn broadcast(conn: &ConnArgs, a: BenchBroadcastArgs) -> Result<()> {
    if a.count == 0 {
        return Err(Error::new(
            ErrorKind::InvalidConfig,
            "--count must be at least 1",
        ));
    }
    let value = payload(a.json.as_deref())?;
    let sender = conn.sender(&a.sender).await?;
    let me = sender.node.id().to_string();
    // our own broadcasts come back through the server: the latency a subscriber sees
    let mut echo = sender.transport.tap_broadcasts().await?;
    let sent_at: Arc<Mutex<VecDeque<Instant>>> = Arc::default();
    let count = a.count;
    let queue = sent_at.clone();
    let receiver = tokio::spawn(async move {
        let mut latencies = Vec::new();
        while latencies.len() < count as usize {
            let Some(tapped) = echo.next().await else {
                break;
            };
            let ours = tapped.is_ok_and(|t| t.event.sender().as_str() == me);
            if !ours {
                continue;
            }
            let sent = queue.lock().unwrap_or_else(|p| p.into_inner()).pop_front();
            if let Some(t0) = sent {
                latencies.push(t0.elapsed().as_micros() as u64);
            }
        }
        latencies
    });
    let pressure = a
        .watch
        .as_deref()
        .and_then(|n| sender.transport.pressure(&NodeId::from(n)));
    let bar = bar(a.count);
    let error_count = Arc::new(AtomicU64::new(0));
    let tick = ticker(bar.clone(), a.watch.clone(), pressure, error_count);
    let started = Instant::now();
    for _ in 0..a.count {
        let event = Event::new(a.event_type.as_str(), value.clone());
        loop {
            sent_at
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push_back(Instant::now());
            match sender.node.broadcast(event.clone()) {
                Ok(()) => break,
                Err(e) => {
                    sent_at.lock().unwrap_or_else(|p| p.into_inner()).pop_back();
                    if e.kind() == ErrorKind::Transport && sender.transport.is_backlogged() {
                        sender.transport.ready().await?;
                    } else {
                        tick.abort();
                        bar.abandon();
                        return Err(e);
                    }
                }
            }
        }
        bar.inc(1);
    }
    let published = started.elapsed();
    let mut latencies = match tokio::time::timeout(Duration::from_secs(10), receiver).await {
        Ok(Ok(l)) => l,
        _ => Vec::new(),
    };
    let elapsed = started.elapsed();
    tick.abort();
    bar.finish_and_clear();
    sender.close().await;
    println!(
        "published {} broadcasts in {:.2}s ({:.0}/s); {} came back through the server within {:.2}s",
        a.count,
        published.as_secs_f64(),
        a.count as f64 / published.as_secs_f64(),
        latencies.len(),
        elapsed.as_secs_f64()
    );
    println!("{}", latency_summary(&mut latencies));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let mut us: Vec<u64> = (1..=1000).map(|i| i * 1000).collect();
        let s = latency_summary(&mut us);
        assert!(s.contains("min 1.00ms"), "{s}");
        assert!(s.contains("p50 500.00ms"), "{s}");
        assert!(s.contains("p99 990.00ms"), "{s}");
        assert!(s.contains("max 1000.00ms"), "{s}");
        assert_eq!(latency_summary(&mut []), "latency: nothing measured");
    }
}
