//! Errors say where they happened: the node and event of a failed flow, and whether a failure
//! came from deeper in the chain (`ErrorKind::Downstream`, with the chain reachable).

use std::time::Duration;

use happen::{Context, Error, ErrorKind, Event, Happen};
use tokio::time::timeout;

const T: Duration = Duration::from_secs(30);

/// client → orders → payments, where payments never answers and orders waits 200 ms for it.
async fn chain(happen: &Happen) -> (happen::Node, happen::Node) {
    let payments = happen.node("payments").await.unwrap();
    payments
        .on("charge", |_e: Event, _c: Context| async {
            std::future::pending::<()>().await;
        })
        .unwrap();
    payments
        .on("refund", |_e: Event, _c: Context| async {
            Err::<(), _>(
                Error::new(ErrorKind::Handler, "refund window closed").with_code("refund_closed"),
            )
        })
        .unwrap();
    let orders = happen.node("orders").await.unwrap();
    orders
        .on("order", |_e: Event, ctx: Context| async move {
            let v = ctx
                .send("payments", Event::new("charge", ()))
                .timeout(Duration::from_millis(200))
                .await?;
            Ok::<_, Error>(v)
        })
        .unwrap();
    orders
        .on("cancel", |_e: Event, ctx: Context| async move {
            ctx.send("payments", Event::new("refund", ())).await
        })
        .unwrap();
    orders
        .on("invalid", |_e: Event, _c: Context| async {
            Err::<(), _>("no such order")
        })
        .unwrap();
    let client = happen.node("client").await.unwrap();
    (client, orders)
}

#[tokio::test(start_paused = true)]
async fn a_timeout_deeper_in_the_chain_is_told_apart_from_the_callers_own() {
    let happen = Happen::new();
    let (client, orders) = chain(&happen).await;

    let err = timeout(T, client.send(&orders, Event::new("order", ())))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Downstream, "{err:?}");
    assert_eq!(err.node().map(|n| n.as_str()), Some("orders"));
    assert!(err.event_id().is_some());
    let inner = err
        .downstream()
        .expect("the error the call at `orders` got");
    assert_eq!(inner.kind(), ErrorKind::Timeout);
    assert_eq!(err.origin().kind(), ErrorKind::Timeout);
    assert!(
        err.message().contains("orders") && err.message().contains("timeout"),
        "{err}"
    );
    // `source()` walks the same chain.
    let source = std::error::Error::source(&err).expect("a source");
    assert!(source.to_string().contains("no reply within"), "{source}");

    // The caller's own timeout stays a plain `Timeout`.
    let own = timeout(
        T,
        client
            .send("payments", Event::new("charge", ()))
            .timeout(Duration::from_millis(100)),
    )
    .await
    .unwrap()
    .unwrap_err();
    assert_eq!(own.kind(), ErrorKind::Timeout);
    assert!(own.downstream().is_none());
}

#[tokio::test(start_paused = true)]
async fn a_user_error_code_reaches_the_first_sender() {
    let happen = Happen::new();
    let (client, orders) = chain(&happen).await;
    let err = timeout(T, client.send(&orders, Event::new("cancel", ())))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Downstream);
    let origin = err.origin();
    assert_eq!(origin.kind(), ErrorKind::Handler);
    assert_eq!(origin.code(), Some("refund_closed"));
    assert_eq!(origin.node().map(|n| n.as_str()), Some("payments"));
    assert_eq!(origin.message(), "refund window closed");
}

#[tokio::test(start_paused = true)]
async fn a_flow_error_names_its_node_and_event() {
    let happen = Happen::new();
    let (client, orders) = chain(&happen).await;
    let event = Event::new("invalid", ());
    let err = timeout(T, client.send(&orders, event))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Handler);
    assert_eq!(err.message(), "no such order");
    assert_eq!(err.node().map(|n| n.as_str()), Some("orders"));
    assert!(err.event_id().is_some());
    assert!(err.downstream().is_none());
    assert_eq!(err.origin().kind(), ErrorKind::Handler);
}
