//! Broadcast: every node with a handler matching the event type gets the event.
//!
//! Part 1 registers handlers with different pattern forms and broadcasts a few event types,
//! showing who received what. Part 2 shows the causal context: a handler that receives a
//! broadcast sends an event onward with `ctx.send`, which keeps the correlation id (the
//! "transaction") and extends the path of nodes the chain went through.
//!
//! Run from the workspace root: `cargo run --release --example broadcast`

use std::collections::BTreeMap;
use std::time::Duration;

use happen::pattern::Pattern;
use happen::prelude::*;
use serde_json::json;
use tokio::sync::mpsc;

#[tokio::main]
async fn main() -> happen::Result<()> {
    let happen = Happen::new();
    let publisher = happen.node("publisher").await?;

    // Receivers report (node, event type) here so we can wait for all deliveries.
    let (tx, mut rx) = mpsc::unbounded_channel::<(String, String)>();

    // Three receivers, three pattern forms.
    let subscriptions: Vec<(&str, Pattern)> = vec![
        // `*` is exactly one segment: order.created, order.shipped, not order.item.added.
        ("orders", Pattern::parse("order.*")?),
        // Alternatives: order.created and payment.created.
        ("analytics", Pattern::parse("{order,payment}.created")?),
        // Any closure over the event type (here: everything that failed).
        ("alerts", Pattern::predicate(|t| t.ends_with(".failed"))),
    ];
    for (id, pattern) in &subscriptions {
        let node = happen.node(*id).await?;
        let tx = tx.clone();
        node.on(pattern.clone(), move |event: Event, ctx: Context| {
            let _ = tx.send((ctx.node_id().to_string(), event.event_type().to_owned()));
            async {}
        })?;
    }

    println!("--- who receives what ---");
    let types = [
        "order.created",
        "order.shipped",
        "payment.created",
        "payment.failed",
        "order.item.added",
    ];
    for event_type in types {
        // We know the patterns, so we know how many deliveries to wait for.
        let expected = subscriptions
            .iter()
            .filter(|(_, p)| p.matches(event_type))
            .count();
        publisher.broadcast(Event::new(event_type, json!({})))?;
        let mut receivers = Vec::new();
        for _ in 0..expected {
            let (node, ty) = tokio::time::timeout(Duration::from_secs(2), rx.recv())
                .await
                .expect("delivered within 2s")
                .expect("channel open");
            assert_eq!(ty, event_type);
            receivers.push(node);
        }
        receivers.sort();
        let who = if receivers.is_empty() {
            "(nobody)".to_owned()
        } else {
            receivers.join(", ")
        };
        println!("{event_type:<18} -> {who}");
    }
    // Nothing else arrives: each broadcast was delivered exactly to the matching nodes.
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(rx.try_recv().is_err(), "no unexpected deliveries");

    println!("\n--- causal context of an event sent onward from a handler ---");
    // shipping hears `order.paid` and asks billing for an invoice with ctx.send; billing
    // asks the ledger to record it, again with ctx.send. The ledger replies with what it saw.
    let shipping = happen.node("shipping").await?;
    let billing = happen.node("billing").await?;
    let ledger = happen.node("ledger").await?;
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<BTreeMap<&'static str, String>>();

    shipping.on("order.paid", move |event: Event, ctx: Context| {
        let done_tx = done_tx.clone();
        async move {
            let mut seen = BTreeMap::new();
            seen.insert("1 broadcast", describe(&event));
            // ctx.send continues this flow's transaction (Node::send would start a new one).
            let reply = ctx
                .send(
                    "billing",
                    Event::new("invoice.create", event.payload().clone()),
                )
                .await;
            match reply {
                Ok(v) => {
                    seen.insert("2 invoice", v["invoice"].as_str().unwrap_or("?").to_owned());
                    seen.insert("3 ledger", v["ledger"].as_str().unwrap_or("?").to_owned());
                }
                Err(e) => {
                    seen.insert("error", format!("{}: {e}", e.kind()));
                }
            }
            let _ = done_tx.send(seen);
        }
    })?;
    billing.on("invoice.create", |event: Event, ctx: Context| async move {
        let ledger_view = ctx
            .send(
                "ledger",
                Event::new("ledger.record", event.payload().clone()),
            )
            .await?;
        Ok::<_, happen::Error>(json!({"invoice": describe(&event), "ledger": ledger_view}))
    })?;
    ledger.on("ledger.record", |event: Event, _ctx: Context| async move {
        json!(describe(&event))
    })?;
    let _ = &ledger; // the ledger is addressed by id above

    publisher.broadcast(Event::new("order.paid", json!({"order": "order-42"})))?;
    let seen = tokio::time::timeout(Duration::from_secs(2), done_rx.recv())
        .await
        .expect("the chain completes within 2s")
        .expect("channel open");
    for (step, what) in seen {
        println!("{step:<12} {what}");
    }
    println!("(same correlation id all along; each hop's causation id is the previous event)");

    happen.shutdown(Duration::from_secs(1)).await;
    Ok(())
}

/// One line about an event's causal context.
fn describe(event: &Event) -> String {
    let path: Vec<&str> = event.path().iter().map(|n| n.as_str()).collect();
    format!(
        "{:<15} id {} | correlation {} | causation {} | path [{}]",
        event.event_type(),
        short(&event.id().to_string()),
        short(&event.correlation_id().to_string()),
        event
            .causation_id()
            .map(|c| short(&c.to_string()))
            .unwrap_or_else(|| "(root)".to_owned()),
        path.join(" -> ")
    )
}

/// The last 8 characters of an id, enough to tell them apart in the output.
fn short(id: &str) -> String {
    let start = id.len().saturating_sub(8);
    format!("…{}", &id[start..])
}
