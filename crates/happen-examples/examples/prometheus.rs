//! Prometheus: export every node's metrics (events accepted and rejected, flows active and
//! completed, queue depth, queue wait) for Prometheus to scrape.
//!
//! happen records its metrics through the `metrics` facade (`happen_events_accepted_total`,
//! `happen_events_rejected_total`, `happen_flows_completed_total`, `happen_flows_failed_total`,
//! `happen_flows_active`, `happen_events_queued`, `happen_queue_wait_seconds`, ... each with a
//! `node` label). Install any `metrics` recorder *before* creating nodes and they are exported
//! by it; here `metrics-exporter-prometheus` renders them and axum serves them on
//! `/metrics` at a free local port, which the example prints.
//!
//! A node `orders` (2 flows at once, 20 queued) gets bursts of orders from `shop`, more than it
//! can take, so the scrape shows queueing and rejections.
//!
//! Run from the workspace root:
//! `cargo run --release --example prometheus [-- SECONDS]`
//! It runs for SECONDS (default 60) or until Ctrl-C, then scrapes itself once and prints the
//! `happen_` lines.

use std::future::IntoFuture;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use happen::prelude::*;
use metrics_exporter_prometheus::PrometheusBuilder;
use serde_json::json;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let seconds: u64 = match std::env::args().nth(1) {
        Some(s) => s
            .parse()
            .map_err(|_| format!("`{s}` is not a number of seconds"))?,
        None => 60,
    };

    // 1. The recorder first: nodes register their metrics when they are created.
    let prometheus = PrometheusBuilder::new().install_recorder()?;
    let upkeep = prometheus.clone();
    tokio::spawn(async move {
        // drains histogram samples into the rendered summaries now and then
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            upkeep.run_upkeep();
        }
    });

    // 2. Serve the rendered metrics on a free local port.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/metrics", listener.local_addr()?);
    let render = prometheus.clone();
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let render = render.clone();
            async move { render.render() }
        }),
    );
    tokio::spawn(axum::serve(listener, app).into_future());
    println!("scrape URL: {url}");
    println!("(running for {seconds}s or until Ctrl-C; try `curl -s {url} | grep happen_`)");

    // 3. A node under load.
    let happen = Happen::new();
    let orders = happen
        .node_with(
            "orders",
            NodeOptions::new().max_concurrent(2).queue_limit(20),
        )
        .await?;
    orders.on("order.place", |event: Event, _ctx: Context| async move {
        tokio::time::sleep(Duration::from_millis(5)).await;
        json!({"accepted": event.payload()["id"]})
    })?;
    let shop = happen.node("shop").await?;
    let load = async {
        let mut id = 0u64;
        loop {
            // a burst of 30 every 100 ms: 22 fit at once (2 running, 20 queued), so most
            // wait in the queue and the rest are rejected with `QueueFull`
            let replies: Vec<_> = (0..30)
                .map(|_| {
                    id += 1;
                    shop.send("orders", Event::new("order.place", json!({"id": id})))
                })
                .collect();
            for r in replies {
                let _ = r.await; // a `QueueFull` here is counted as rejected at `orders`
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::select! {
        () = load => {}
        _ = tokio::time::sleep(Duration::from_secs(seconds)) => {}
        _ = tokio::signal::ctrl_c() => println!("stopping"),
    }

    // 4. What a scrape sees.
    prometheus.run_upkeep();
    let body = reqwest::get(&url).await?.text().await?;
    println!("a scrape of {url}:");
    for line in body.lines().filter(|l| l.starts_with("happen_")) {
        println!("  {line}");
    }
    let stats = orders.stats();
    println!(
        "orders: {} accepted, {} rejected, {} completed",
        stats.accepted, stats.rejected, stats.completed
    );
    happen.shutdown(Duration::from_secs(2)).await;
    Ok(())
}
