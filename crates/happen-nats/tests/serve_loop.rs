//! The serve loop never waits in line for something slow: answers that find the outgoing
//! buffer full go to the overflow queue instead of holding up the node. (That a stalled
//! broadcast-stream set-up does not hold up direct requests is a unit test in `src/serve.rs`:
//! it needs a hook that stalls round trips through the server.)

mod common;

use std::time::Duration;

use common::{instance_with, within};
use happen::{Context, Event};
use happen_nats::NatsConfig;
use serde_json::json;
use test_support::NatsServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_that_find_the_outgoing_buffer_full_are_not_lost() {
    let server = NatsServer::start();
    let (a, _ta) = instance_with(NatsConfig::with_server(server.url())).await;
    // the answering process's outgoing buffer holds one message: most answers overflow
    let mut small = NatsConfig::with_server(server.url());
    small.outbound_buffer = 1;
    let (b, tb) = instance_with(small).await;
    let echo = b.node("echo").await.unwrap();
    echo.on("ping", |e: Event, _c: Context| async move {
        e.payload().clone()
    })
    .unwrap();
    let client = a.node("client").await.unwrap();
    let replies = (0..500).map(|i| {
        let client = client.clone();
        async move { client.send("echo", Event::new("ping", i)).await }
    });
    let replies = within(20, "500 replies", futures::future::join_all(replies)).await;
    for (i, r) in replies.into_iter().enumerate() {
        assert_eq!(r.unwrap(), json!(i));
    }
    let stats = tb.stats();
    assert_eq!(stats.replies, 500);
    assert!(stats.answers_overflowed > 0, "{stats:?}");
    within(10, "shutdown", a.shutdown(Duration::from_secs(5))).await;
    within(10, "shutdown", b.shutdown(Duration::from_secs(5))).await;
}
