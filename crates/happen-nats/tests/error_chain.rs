//! Errors keep where they came from across processes: a failure deeper in a chain of remote
//! calls reaches the first sender as `Downstream`, with each hop's node, event, kind and
//! application code, exactly as the same chain reports it in one process.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{instance, within};
use happen::{Context, Error, ErrorKind, Event, EventId, Happen, Node};
use test_support::NatsServer;

/// What a caller can read of one error of a chain.
#[derive(Debug, Clone, PartialEq)]
struct Hop {
    kind: ErrorKind,
    message: String,
    node: Option<String>,
    event_id: Option<String>,
    limit: Option<usize>,
    code: Option<String>,
}

/// The error and every error below it (`downstream()`), outermost first.
fn chain(err: &Error) -> Vec<Hop> {
    let mut hops = Vec::new();
    let mut e = Some(err);
    while let Some(err) = e {
        hops.push(Hop {
            kind: err.kind(),
            message: err.message().to_owned(),
            node: err.node().map(|n| n.to_string()),
            event_id: err.event_id().map(|id| id.to_string()),
            limit: err.limit(),
            code: err.code().map(str::to_owned),
        });
        e = err.downstream();
    }
    hops
}

/// The ids of the events `orders` handled, in order.
type Seen = Arc<Mutex<Vec<EventId>>>;

/// client → orders → payments, each node on its own instance (or all on one): `payments`
/// never answers a `charge` and refuses a `refund` with a code; `orders` passes on what its
/// call to `payments` got (`charge` waits 200 ms).
async fn chain_of_three(a: &Happen, b: &Happen, c: &Happen) -> (Node, Seen) {
    let payments = c.node("payments").await.unwrap();
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
    let seen = Seen::default();
    let orders = b.node("orders").await.unwrap();
    let s = seen.clone();
    orders
        .on("order", move |e: Event, ctx: Context| {
            s.lock().unwrap().push(e.id().clone());
            async move {
                let charged = ctx
                    .send("payments", Event::new("charge", ()))
                    .timeout(Duration::from_millis(200))
                    .await?;
                Ok::<_, Error>(charged)
            }
        })
        .unwrap();
    let s = seen.clone();
    orders
        .on("return", move |e: Event, ctx: Context| {
            s.lock().unwrap().push(e.id().clone());
            async move {
                ctx.send("payments", Event::new("refund", ())).await?;
                Ok::<_, Error>("refunded")
            }
        })
        .unwrap();
    let client = a.node("client").await.unwrap();
    (client, seen)
}

/// The error `client` gets for an order whose payment times out downstream.
async fn order_error(client: &Node) -> Error {
    within(
        10,
        "order",
        client
            .send("orders", Event::new("order", ()))
            .timeout(Duration::from_secs(5)),
    )
    .await
    .unwrap_err()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_downstream_is_not_the_senders_own() {
    let server = NatsServer::start();
    let (a, _) = instance(&server.url()).await;
    let (b, _) = instance(&server.url()).await;
    let (c, _) = instance(&server.url()).await;
    let (client, seen) = chain_of_three(&a, &b, &c).await;

    let err = order_error(&client).await;
    assert_eq!(err.kind(), ErrorKind::Downstream, "{err:?}");
    assert_eq!(err.node().map(|n| n.as_str()), Some("orders"), "{err:?}");
    let order_id = seen.lock().unwrap()[0].clone();
    assert_eq!(err.event_id(), Some(&order_id), "{err:?}");
    let below = err.downstream().expect("the error orders' call got");
    assert_eq!(below.kind(), ErrorKind::Timeout, "{err:?}");
    assert_eq!(err.origin().kind(), ErrorKind::Timeout, "{err:?}");
    assert!(err.origin().message().contains("200ms"), "{err:?}");
    assert!(err.origin().downstream().is_none());

    // the sender's own timeout is a plain one
    let own = within(
        10,
        "direct charge",
        client
            .send("payments", Event::new("charge", ()))
            .timeout(Duration::from_millis(100)),
    )
    .await
    .unwrap_err();
    assert_eq!(own.kind(), ErrorKind::Timeout, "{own:?}");
    assert!(own.downstream().is_none(), "{own:?}");
    assert_eq!(own.origin().kind(), ErrorKind::Timeout);

    // and every hop reads as it does when the three nodes share one process
    let local = Happen::new();
    let (local_client, local_seen) = chain_of_three(&local, &local, &local).await;
    let in_process = order_error(&local_client).await;
    let mut expected = chain(&in_process);
    // event ids differ between the runs: each names the order event orders handled
    let local_id = local_seen.lock().unwrap()[0].to_string();
    assert_eq!(expected[0].event_id.as_deref(), Some(local_id.as_str()));
    expected[0].event_id = Some(order_id.to_string());
    assert_eq!(chain(&err), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_code_crosses_every_hop() {
    let server = NatsServer::start();
    let (a, _) = instance(&server.url()).await;
    let (b, _) = instance(&server.url()).await;
    let (c, _) = instance(&server.url()).await;
    let (client, seen) = chain_of_three(&a, &b, &c).await;

    // straight from the remote handler
    let err = within(
        10,
        "refund",
        client.send("payments", Event::new("refund", ())),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Handler, "{err:?}");
    assert_eq!(err.code(), Some("refund_closed"), "{err:?}");
    assert_eq!(err.origin().code(), Some("refund_closed"), "{err:?}");
    assert_eq!(err.node().map(|n| n.as_str()), Some("payments"), "{err:?}");
    assert!(err.event_id().is_some(), "{err:?}");
    assert_eq!(err.message(), "refund window closed");

    // passed on by another remote node
    let err = within(
        10,
        "return",
        client.send("orders", Event::new("return", ())),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Downstream, "{err:?}");
    assert_eq!(err.node().map(|n| n.as_str()), Some("orders"), "{err:?}");
    assert_eq!(err.event_id(), Some(&seen.lock().unwrap()[0]), "{err:?}");
    assert_eq!(err.code(), None, "{err:?}");
    let origin = err.origin();
    assert_eq!(origin.kind(), ErrorKind::Handler, "{err:?}");
    assert_eq!(origin.code(), Some("refund_closed"), "{err:?}");
    assert_eq!(
        origin.node().map(|n| n.as_str()),
        Some("payments"),
        "{err:?}"
    );
    assert_eq!(origin.message(), "refund window closed");

    // the same as in one process
    let local = Happen::new();
    let (local_client, local_seen) = chain_of_three(&local, &local, &local).await;
    let in_process = within(
        10,
        "local return",
        local_client.send("orders", Event::new("return", ())),
    )
    .await
    .unwrap_err();
    let strip = |mut hops: Vec<Hop>| {
        for h in &mut hops {
            h.event_id = h.event_id.as_ref().map(|_| "<id>".to_owned());
        }
        hops
    };
    assert_eq!(local_seen.lock().unwrap().len(), 1);
    assert_eq!(strip(chain(&err)), strip(chain(&in_process)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_error_keeps_its_code_and_node() {
    use futures::StreamExt;
    let server = NatsServer::start();
    let (a, _) = instance(&server.url()).await;
    let (b, _) = instance(&server.url()).await;
    let feed = b.node("feed").await.unwrap();
    feed.on(
        "tail",
        |_e: Event, _c: Context, emit: happen::Emitter| async move {
            emit.emit(1).await?;
            Err::<(), _>(Error::new(ErrorKind::Handler, "log rotated").with_code("log_rotated"))
        },
    )
    .unwrap();
    let client = a.node("client").await.unwrap();
    let mut stream = client.send("feed", Event::new("tail", ())).into_stream();
    assert_eq!(within(10, "item", stream.next()).await.unwrap().unwrap(), 1);
    let err = within(10, "error", stream.next())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Handler, "{err:?}");
    assert_eq!(err.code(), Some("log_rotated"), "{err:?}");
    assert_eq!(err.node().map(|n| n.as_str()), Some("feed"), "{err:?}");
    assert!(err.event_id().is_some(), "{err:?}");
}
