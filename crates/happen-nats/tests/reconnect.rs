//! A server restart mid-run: sends while disconnected fail with a clear error (with
//! `disconnected_buffer = 0`), the client reconnects and resubscribes, and later sends succeed.

mod common;

use std::time::Duration;

use common::{instance_with, within};
use happen::{Context, ErrorKind, Event};
use happen_nats::{NatsConfig, NatsTransport};
use serde_json::json;
use test_support::NatsServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_succeed_after_a_server_restart() {
    let mut server = NatsServer::start();
    let mut config = NatsConfig::with_server(server.url());
    config.reconnect.delay = Duration::from_millis(10);
    config.reconnect.max_delay = Duration::from_millis(100);
    // fail fast while disconnected (buffering is tested in disconnected.rs)
    config.disconnected_buffer = Some(0);
    let (a, ta) = instance_with(config.clone()).await;
    let (b, _tb) = instance_with(config).await;
    let svc = b.node("svc").await.unwrap();
    svc.on("echo", |event: Event, _c: Context| async move {
        event.payload().clone()
    })
    .unwrap();
    let client = a.node("client").await.unwrap();
    assert_eq!(
        within(10, "before", client.send("svc", Event::new("echo", 1)))
            .await
            .unwrap(),
        json!(1)
    );

    server.stop();
    // wait for the client to notice (a signal, not a sleep: the connection state)
    let c = ta.client().clone();
    within(10, "disconnect noticed", async {
        while c.connection_state() == async_nats::connection::State::Connected {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    let err = client.tell("svc", Event::new("echo", 2)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transport);
    assert!(err.message().contains("not connected"), "{err}");
    let err = within(
        10,
        "send while down",
        client.send("svc", Event::new("echo", 2)),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transport);

    server.restart();
    // retry until both connections are back and svc is resubscribed; each attempt is bounded
    let v = within(20, "after restart", async {
        loop {
            match client
                .send("svc", Event::new("echo", 3))
                .timeout(Duration::from_secs(2))
                .await
            {
                Ok(v) => break v,
                Err(e) => {
                    assert!(
                        matches!(
                            e.kind(),
                            ErrorKind::Transport | ErrorKind::UnknownNode | ErrorKind::Timeout
                        ),
                        "{e}"
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    })
    .await;
    assert_eq!(v, json!(3));
    // steady again
    for i in 0..100 {
        let v = within(10, "steady", client.send("svc", Event::new("echo", i)))
            .await
            .unwrap();
        assert_eq!(v, json!(i));
    }
    assert!(ta.stats().disconnects >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_on_initial_connect_waits_for_the_server_and_gives_up_when_told() {
    let mut server = NatsServer::start();
    server.stop(); // the port stays reserved for the restart
    let mut config = NatsConfig::with_server(server.url());
    config.retry_on_initial_connect = true;
    config.reconnect.delay = Duration::from_millis(10);
    config.reconnect.max_delay = Duration::from_millis(50);

    // bounded by max_attempts: fails with the connect error
    let mut bounded = config.clone();
    bounded.reconnect.max_attempts = Some(2);
    let err = within(10, "a bounded connect", NatsTransport::connect(bounded))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transport);
    assert!(err.message().contains("cannot connect"), "{err}");

    // unbounded: waits until the server is there
    let connecting = tokio::spawn(NatsTransport::connect(config));
    server.restart();
    let transport = within(10, "connect after the server started", connecting)
        .await
        .unwrap()
        .unwrap();
    assert!(format!("{transport:?}").contains(&server.port().to_string()));
}
