//! A fan-out quote request: three pricing nodes quote, one is down, the cheapest answer wins.
//!
//! Run with `cargo run -p happen --example quote_fanout`.

use std::time::Duration;

use happen::{Context, Event, Happen, Json, Node};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Debug)]
struct Quote {
    vendor: String,
    price: f64,
}

#[tokio::main]
async fn main() -> happen::Result<()> {
    let happen = Happen::new();
    let mut vendors = Vec::new();
    for id in ["acme", "globex", "initech"] {
        vendors.push(happen.node(id).await?);
    }
    // One handler on the three nodes; the context says which one runs.
    Node::on_all(
        &vendors,
        "quote.request",
        |Json(qty): Json<u32>, ctx: Context| async move {
            let unit = match ctx.node_id().as_str() {
                "acme" => 9.5,
                "globex" => 8.75,
                _ => {
                    tokio::time::sleep(Duration::from_secs(10)).await; // initech is slow today
                    7.0
                }
            };
            Json(Quote {
                vendor: ctx.node_id().to_string(),
                price: unit * f64::from(qty),
            })
        },
    )?;

    let shop = happen.node("shop").await?;
    let all = shop
        .send_all(
            ["acme", "globex", "initech", "hooli"],
            Event::new("quote.request", 10),
        )
        .timeout(Duration::from_millis(500)) // one deadline for all four
        .await?;

    let mut best: Option<Quote> = None;
    for (vendor, result) in all {
        let quote = result.and_then(|value| {
            serde_json::from_value::<Quote>(value)
                .map_err(|e| happen::Error::new(happen::ErrorKind::InvalidPayload, e.to_string()))
        });
        match quote {
            Ok(q) => {
                println!("{:<8} quoted {:>6.2}", vendor.as_str(), q.price);
                if best.as_ref().is_none_or(|b| q.price < b.price) {
                    best = Some(q);
                }
            }
            Err(e) => println!(
                "{:<8} no quote ({}: {})",
                vendor.as_str(),
                e.kind(),
                e.message()
            ),
        }
    }
    let best = best.expect("acme and globex always quote");
    println!("best: {} at {:.2}", best.vendor, best.price);
    assert_eq!(best.vendor, "globex");
    happen.shutdown(Duration::from_millis(100)).await;
    Ok(())
}
