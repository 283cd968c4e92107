//! Quickstart: the main ideas of happen in one program.
//!
//! 1. A multi-step order flow (validate → charge → ship) whose steps share a per-flow context.
//! 2. Request/response with a timeout, and how an error's kind tells you what went wrong.
//! 3. A broadcast reaching several nodes.
//! 4. Admission control: a node allowing 2 concurrent flows and 5 queued events rejects the
//!    rest of a burst with `QueueFull`.
//!
//! Run from the workspace root: `cargo run --release --example quickstart`

use std::future::IntoFuture;
use std::time::{Duration, Instant};

use happen::NodeStats;
use happen::prelude::*;
use serde_json::{Value, json};
use tokio::sync::mpsc;

// ---- 1. the order flow -------------------------------------------------------------------------

/// What `validate` learned, stored in the flow's context for the later steps.
#[derive(Clone, Debug)]
struct ValidOrder {
    id: String,
    total_cents: u64,
}

/// What `charge` produced.
#[derive(Clone, Debug)]
struct Charge {
    transaction: String,
}

/// Step 1: check the order; on success continue with `charge`, otherwise finish with a reason.
async fn validate(event: Event, ctx: Context) -> Flow {
    let order = event.payload();
    let id = order["id"].as_str().unwrap_or("?").to_owned();
    let items = order["items"].as_array().cloned().unwrap_or_default();
    if items.is_empty() {
        println!("  validate  {id}: no items -> stop");
        return Flow::done(json!({"order": id, "success": false, "reason": "validation-failed"}));
    }
    let total_cents = items
        .iter()
        .map(|i| i["price_cents"].as_u64().unwrap_or(0) * i["qty"].as_u64().unwrap_or(1))
        .sum();
    println!(
        "  validate  {id}: {} item(s), total {total_cents} cents",
        items.len()
    );
    ctx.insert(ValidOrder { id, total_cents });
    Flow::next(charge)
}

/// Step 2: charge the card (simulated), remember the transaction, then continue with `ship`.
async fn charge(_event: Event, ctx: Context) -> happen::Result<Flow> {
    let order: ValidOrder = ctx.get().expect("validate stored the order");
    tokio::time::sleep(Duration::from_millis(5)).await; // talk to the "payment provider"
    let transaction = format!("txn-{}", order.total_cents * 7 % 10_000);
    println!(
        "  charge    {}: charged {} cents ({transaction})",
        order.id, order.total_cents
    );
    ctx.insert(Charge { transaction });
    Ok(Flow::next(ship))
}

/// Step 3: ship, and finish the flow with a value built from everything in the context.
async fn ship(event: Event, ctx: Context) -> Value {
    let order: ValidOrder = ctx.get().expect("validate stored the order");
    let charge: Charge = ctx.get().expect("charge stored the transaction");
    let address = event.payload()["address"].as_str().unwrap_or("?");
    println!("  ship      {}: shipping to {address}", order.id);
    json!({
        "order": order.id,
        "success": true,
        "charged_cents": order.total_cents,
        "transaction": charge.transaction,
        "tracking": format!("TRK-{}", order.id.to_uppercase()),
    })
}

fn heading(title: &str) {
    println!(
        "\n=== {title} {}",
        "=".repeat(60usize.saturating_sub(title.len()))
    );
}

#[tokio::main]
async fn main() -> happen::Result<()> {
    let happen = Happen::new();
    let client = happen.node("client").await?;

    // ---------------------------------------------------------------------------------------
    heading("1. Order flow: validate -> charge -> ship");
    let orders = happen.node("order-service").await?;
    orders.on("process-order", validate)?;

    let order = json!({
        "id": "order-42",
        "items": [{"sku": "book", "price_cents": 1250, "qty": 2}, {"sku": "pen", "price_cents": 199}],
        "address": "1 Main St",
    });
    let result = client
        .send(&orders, Event::new("process-order", order))
        .await?;
    println!("final value: {result}");

    let rejected = client
        .send(
            &orders,
            Event::new("process-order", json!({"id": "order-43", "items": []})),
        )
        .await?;
    println!("final value: {rejected}");

    // ---------------------------------------------------------------------------------------
    heading("2. Request/response with a timeout");
    let pricing = happen.node("pricing").await?;
    pricing.on("quote", |event: Event, _ctx: Context| async move {
        let qty = event.payload()["qty"].as_u64().unwrap_or(1);
        json!({"qty": qty, "price_cents": qty * 450})
    })?;
    pricing.on("quote.slow", |_event: Event, _ctx: Context| async move {
        tokio::time::sleep(Duration::from_millis(300)).await; // slower than the caller waits
        json!("too late")
    })?;

    let quote = client
        .send(&pricing, Event::new("quote", json!({"qty": 3})))
        .timeout(Duration::from_millis(200))
        .await?;
    println!("quote within 200ms: {quote}");

    let started = Instant::now();
    match client
        .send(&pricing, Event::new("quote.slow", json!({})))
        .timeout(Duration::from_millis(50))
        .await
    {
        Ok(v) => println!("unexpected reply: {v}"),
        Err(err) => {
            // Match on the kind; the message is for humans.
            let what = match err.kind() {
                ErrorKind::Timeout => "the target did not answer in time",
                ErrorKind::UnknownNode => "no such node",
                ErrorKind::Handler => "the handler returned an error",
                _ => "something else",
            };
            println!(
                "slow quote after {:?}: kind = {} ({what})\n  message: {err}",
                started.elapsed(),
                err.kind()
            );
        }
    }

    // ---------------------------------------------------------------------------------------
    heading("3. Broadcast to several nodes");
    // Each receiver reports to this channel so the demo can wait for all of them.
    let (heard_tx, mut heard_rx) = mpsc::unbounded_channel::<String>();
    for (id, pattern) in [
        ("inventory", "order.created"),
        ("email", "order.*"),
        ("analytics", "{order,payment}.created"),
    ] {
        let node = happen.node(id).await?;
        let heard_tx = heard_tx.clone();
        node.on(pattern, move |event: Event, ctx: Context| {
            let line = format!(
                "{:<10} (pattern {pattern:<24}) got {} from `{}`",
                ctx.node_id().as_str(),
                event.event_type(),
                event.sender()
            );
            let _ = heard_tx.send(line);
            async {}
        })?;
    }
    client.broadcast(Event::new("order.created", json!({"id": "order-42"})))?;
    let mut lines = Vec::new();
    for _ in 0..3 {
        let line = tokio::time::timeout(Duration::from_secs(2), heard_rx.recv())
            .await
            .expect("every receiver reports within 2s")
            .expect("channel open");
        lines.push(line);
    }
    lines.sort(); // receivers run concurrently; sort for a stable printout
    for line in lines {
        println!("  {line}");
    }

    // ---------------------------------------------------------------------------------------
    heading("4. Admission control: max_concurrent 2, queue_limit 5");
    let worker = happen
        .node_with(
            "worker",
            NodeOptions::new().max_concurrent(2).queue_limit(5),
        )
        .await?;
    worker.on("job", |event: Event, _ctx: Context| async move {
        tokio::time::sleep(Duration::from_millis(40)).await;
        json!(format!("job {} done", event.payload()))
    })?;

    // Send a burst of 10 jobs at once. Admission is decided at send time: 2 start, 5 wait,
    // and the other 3 are rejected immediately with `QueueFull`.
    // (`Reply` is `IntoFuture`; `into_future()` makes it a `Future` for `join_all`.)
    let burst: Vec<_> = (1..=10)
        .map(|n| client.send(&worker, Event::new("job", n)).into_future())
        .collect();
    let outcomes = futures::future::join_all(burst).await;
    for (n, outcome) in (1..=10).zip(&outcomes) {
        match outcome {
            Ok(v) => println!("  job {n:>2}: ok       {v}"),
            Err(e) if e.kind() == ErrorKind::QueueFull => println!(
                "  job {n:>2}: REJECTED kind = {} (queue_limit = {})",
                e.kind(),
                e.limit().unwrap_or_default()
            ),
            Err(e) => println!("  job {n:>2}: failed   kind = {}: {e}", e.kind()),
        }
    }
    print_stats(&settled_stats(&worker).await);

    happen.shutdown(Duration::from_secs(2)).await;
    println!("\ndone.");
    Ok(())
}

/// The node's stats once every admitted flow is accounted for. The node's driver updates the
/// counters just after a flow answers, so a snapshot taken the instant the last reply arrives
/// can lag by one; poll briefly until it has caught up.
async fn settled_stats(node: &Node) -> NodeStats {
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let s = node.stats();
        if s.completed + s.failed == s.accepted || Instant::now() > deadline {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn print_stats(s: &NodeStats) {
    println!(
        "  stats: accepted {} | rejected {} | completed {} | failed {} | peak queued {}\n  queue wait (log2 histogram bucket bounds): p50 <= {:?}, p99 <= {:?}",
        s.accepted,
        s.rejected,
        s.completed,
        s.failed,
        s.peak_queued,
        s.queue_wait_p50,
        s.queue_wait_p99
    );
}
