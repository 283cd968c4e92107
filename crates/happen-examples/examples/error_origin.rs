//! Where did it fail? A three-node chain — web → orders → payments — and the errors the first
//! sender sees: its own timeout, a timeout one hop deeper, and an application error code set
//! two hops away. Then one node is closed while the rest of the instance keeps serving.
//!
//! Run from the workspace root: `cargo run --release --example error_origin`

use std::time::Duration;

use happen::prelude::*;
use serde_json::json;

fn describe(label: &str, err: &Error) {
    let origin = err.origin();
    println!("{label}");
    println!(
        "  kind   = {}   (at node {:?})",
        err.kind(),
        err.node().map(|n| n.as_str())
    );
    if err.kind() == ErrorKind::Downstream {
        println!(
            "  origin = {} at node {:?}, code {:?}: {}",
            origin.kind(),
            origin.node().map(|n| n.as_str()),
            origin.code(),
            origin.message()
        );
    }
}

#[tokio::main]
async fn main() -> happen::Result<()> {
    let happen = Happen::new();

    let payments = happen.node("payments").await?;
    payments.on("charge", |_e: Event, _c: Context| async {
        // A payment provider that never answers.
        std::future::pending::<()>().await;
    })?;
    payments.on("refund", |_e: Event, _c: Context| async {
        Err::<(), _>(
            Error::new(ErrorKind::Handler, "refund window closed").with_code("refund_closed"),
        )
    })?;

    let orders = happen.node("orders").await?;
    orders.on("order", |_e: Event, ctx: Context| async move {
        // orders waits 200 ms for payments and passes any failure on with `?`.
        let receipt = ctx
            .send("payments", Event::new("charge", ()))
            .timeout(Duration::from_millis(200))
            .await?;
        Ok::<_, Error>(json!({"ok": true, "receipt": receipt}))
    })?;
    orders.on("cancel", |_e: Event, ctx: Context| async move {
        ctx.send("payments", Event::new("refund", ())).await
    })?;

    let web = happen.node("web").await?;

    // 1. The caller's own timeout: a plain `Timeout`.
    let err = web
        .send(&payments, Event::new("charge", ()))
        .timeout(Duration::from_millis(100))
        .await
        .unwrap_err();
    describe("web → payments, web's own 100 ms timeout:", &err);

    // 2. A timeout one hop deeper: `Downstream` at orders, with the timeout as its origin.
    let err = web
        .send(&orders, Event::new("order", ()))
        .await
        .unwrap_err();
    describe("web → orders → payments, orders' 200 ms timeout:", &err);

    // 3. An application code set at payments, read by web through the chain.
    let err = web
        .send(&orders, Event::new("cancel", ()))
        .await
        .unwrap_err();
    describe("web → orders → payments, refund refused:", &err);
    assert_eq!(err.origin().code(), Some("refund_closed"));

    // 4. Close one node: its id leaves the instance, the others keep serving.
    payments.close(Duration::from_secs(1)).await;
    let err = web
        .send("payments", Event::new("refund", ()))
        .await
        .unwrap_err();
    println!(
        "after payments.close(): sending to `payments` → {}",
        err.kind()
    );
    let err = web
        .send(&orders, Event::new("cancel", ()))
        .await
        .unwrap_err();
    describe("and through orders:", &err);

    happen.shutdown(Duration::from_secs(5)).await;
    Ok(())
}
