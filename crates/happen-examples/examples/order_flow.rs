//! The seed's order chain: `process-order` → `processPayment` → `createShipment`, with a
//! branch to `handlePaymentFailure` when the payment is declined.
//!
//! Every step is an `async fn(Event, Context)`. A step returns `Flow::next(step)` to continue
//! with another function (the seed's `return processPayment;`) or a value to finish the flow;
//! the value becomes the sender's reply. Steps share data through the flow's `Context`, which
//! is separate for every event, so the three orders below run concurrently without mixing.
//!
//! Run from the workspace root: `cargo run --release --example order_flow`

use std::time::Duration;

use happen::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The order payload.
#[derive(Debug, Clone, Deserialize)]
struct Order {
    id: String,
    items: Vec<Item>,
    payment: Payment,
}

#[derive(Debug, Clone, Deserialize)]
struct Item {
    sku: String,
    qty: u32,
    price_cents: u64,
}

#[derive(Debug, Clone, Deserialize)]
struct Payment {
    card: String,
}

/// `context.validation` in the seed.
#[derive(Debug, Clone, Serialize)]
struct Validation {
    valid: bool,
    total_cents: u64,
    errors: Vec<String>,
}

/// `context.payment` in the seed.
#[derive(Debug, Clone, Serialize)]
struct PaymentResult {
    success: bool,
    transaction_id: Option<String>,
    error: Option<String>,
}

/// Simulates an asynchronous validation service.
async fn validate_order_data(order: &Order) -> Validation {
    tokio::time::sleep(Duration::from_millis(5)).await;
    let mut errors = Vec::new();
    if order.items.is_empty() {
        errors.push("order has no items".to_owned());
    }
    for item in &order.items {
        if item.qty == 0 {
            errors.push(format!("item {} has quantity 0", item.sku));
        }
    }
    let total_cents = order
        .items
        .iter()
        .map(|i| u64::from(i.qty) * i.price_cents)
        .sum();
    Validation {
        valid: errors.is_empty(),
        total_cents,
        errors,
    }
}

/// Simulates an asynchronous payment provider: cards ending in "0000" are declined.
async fn process_transaction(payment: &Payment, amount_cents: u64) -> PaymentResult {
    tokio::time::sleep(Duration::from_millis(10)).await;
    if payment.card.ends_with("0000") {
        PaymentResult {
            success: false,
            transaction_id: None,
            error: Some("card declined".to_owned()),
        }
    } else {
        PaymentResult {
            success: true,
            transaction_id: Some(format!(
                "txn-{amount_cents}-{}",
                &payment.card[payment.card.len() - 4..]
            )),
            error: None,
        }
    }
}

/// The handler registered for `process-order` (the seed's first function).
async fn process_order(event: Event, ctx: Context) -> happen::Result<Flow> {
    // A payload that does not fit `Order` ends the flow with `InvalidPayload` (via `?`).
    let order: Order = event.decode()?;
    println!("[{}] validating", order.id);
    let validation = validate_order_data(&order).await;
    ctx.insert(validation.clone()); // context.validation = validationResult
    if !validation.valid {
        println!("[{}] validation failed: {:?}", order.id, validation.errors);
        return Ok(Flow::done(json!({
            "success": false,
            "reason": "validation-failed",
            "errors": validation.errors,
        })));
    }
    ctx.insert(order);
    Ok(Flow::next(process_payment)) // return processPayment;
}

/// Second step: charge the card; branch on the outcome.
async fn process_payment(_event: Event, ctx: Context) -> Flow {
    let order: Order = ctx.get().expect("process_order stored the order");
    let validation: Validation = ctx.get().expect("process_order stored the validation");
    println!("[{}] charging {} cents", order.id, validation.total_cents);
    let payment = process_transaction(&order.payment, validation.total_cents).await;
    ctx.insert(payment.clone()); // context.payment = paymentResult
    if !payment.success {
        return Flow::next(handle_payment_failure);
    }
    Flow::next(create_shipment)
}

/// Third step on the happy path: everything the earlier steps learned is in the context.
async fn create_shipment(_event: Event, ctx: Context) -> Value {
    let order: Order = ctx.get().expect("stored by process_order");
    let payment: PaymentResult = ctx.get().expect("stored by process_payment");
    tokio::time::sleep(Duration::from_millis(5)).await; // book the courier
    let tracking = format!("TRK-{}", order.id.to_uppercase());
    println!("[{}] shipment created: {tracking}", order.id);
    json!({
        "success": true,
        "order": order.id,
        "transaction": payment.transaction_id,
        "tracking": tracking,
    })
}

/// The failure branch.
async fn handle_payment_failure(_event: Event, ctx: Context) -> Value {
    let order: Order = ctx.get().expect("stored by process_order");
    let payment: PaymentResult = ctx.get().expect("stored by process_payment");
    println!(
        "[{}] payment failed: {:?}; order put on hold",
        order.id, payment.error
    );
    json!({
        "success": false,
        "order": order.id,
        "reason": "payment-failed",
        "payment": payment,
    })
}

#[tokio::main]
async fn main() -> happen::Result<()> {
    let happen = Happen::new();
    let order_node = happen.node("order-service").await?;
    order_node.on("process-order", process_order)?;
    let shop = happen.node("shop").await?;

    let orders = [
        json!({"id": "order-1", "items": [{"sku": "book", "qty": 2, "price_cents": 1250}],
               "payment": {"card": "4111111111111111"}}),
        json!({"id": "order-2", "items": [{"sku": "lamp", "qty": 1, "price_cents": 4999}],
               "payment": {"card": "4000000000000000"}}),
        json!({"id": "order-3", "items": [{"sku": "mug", "qty": 0, "price_cents": 899}],
               "payment": {"card": "4111111111111111"}}),
    ];

    // Send all three at once: their flows run concurrently, each with its own context.
    let replies: Vec<_> = orders
        .into_iter()
        .map(|o| shop.send(&order_node, Event::new("process-order", o)))
        .collect();
    let mut results = Vec::new();
    for reply in replies {
        results.push(reply.await?);
    }

    println!("\nresults:");
    for r in &results {
        println!("  {r}");
    }

    // A payload that does not match `Order` fails with `InvalidPayload`, naming the field.
    let err = shop
        .send(
            &order_node,
            Event::new("process-order", json!({"id": "order-4"})),
        )
        .await
        .expect_err("the payload has no items");
    println!("\nmalformed order: kind = {}: {err}", err.kind());

    happen.shutdown(Duration::from_secs(1)).await;
    Ok(())
}
