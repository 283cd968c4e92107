//! While the server is down: sends are buffered up to `disconnected_buffer` and delivered
//! after the reconnect, beyond the bound they fail with a clear `Transport` error, requests
//! keep their own timeout, and nodes see `system.connection-status` events.

mod common;

use std::collections::HashSet;
use std::future::IntoFuture;
use std::sync::Arc;
use std::time::Duration;

use common::{instance_with, within};
use happen::{Context, ErrorKind, Event};
use happen_nats::{CONNECTION_STATUS_EVENT, NatsConfig};
use parking_lot::Mutex;
use serde_json::{Value, json};
use test_support::NatsServer;
use tokio::sync::mpsc;

const TELLS: u64 = 1_000;

/// Waits for the next connection-status event and returns its payload.
async fn next_status(rx: &mut mpsc::UnboundedReceiver<Value>, what: &str) -> Value {
    within(30, what, rx.recv())
        .await
        .expect("status channel open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_while_disconnected_are_buffered_up_to_the_bound_and_delivered_after_the_reconnect() {
    let mut server = NatsServer::start();
    let mut config = NatsConfig::with_server(server.url());
    config.reconnect.delay = Duration::from_millis(10);
    config.reconnect.max_delay = Duration::from_millis(100);
    // two requests and the tells; one more is refused
    config.disconnected_buffer = Some(TELLS as usize + 2);
    let (happen, transport) = instance_with(config).await;

    let seen = Arc::new(Mutex::new(Vec::<u64>::new()));
    let svc = happen.node("svc").await.unwrap();
    let s = seen.clone();
    svc.on("tick", move |event: Event, _c: Context| {
        let s = s.clone();
        async move {
            s.lock().push(event.payload().as_u64().unwrap());
        }
    })
    .unwrap();
    svc.on("echo", |event: Event, _c: Context| async move {
        event.payload().clone()
    })
    .unwrap();
    let (status_tx, mut status) = mpsc::unbounded_channel();
    let watcher = happen.node("watcher").await.unwrap();
    watcher
        .on(CONNECTION_STATUS_EVENT, move |event: Event, _c: Context| {
            let tx = status_tx.clone();
            async move {
                let _ = tx.send(event.payload().clone());
            }
        })
        .unwrap();
    let client = happen.node("client").await.unwrap();
    assert_eq!(
        within(10, "before", client.send("svc", Event::new("echo", 0)))
            .await
            .unwrap(),
        json!(0)
    );

    server.stop();
    let down = next_status(&mut status, "the disconnected event").await;
    assert_eq!(down["status"], "disconnected", "{down}");
    assert!(down["reason"].as_str().unwrap().contains("lost"), "{down}");
    assert!(
        down["server"]
            .as_str()
            .unwrap()
            .contains(&server.port().to_string()),
        "{down}"
    );

    // a request whose own timeout passes while the server is down times out by it
    let started = tokio::time::Instant::now();
    let err = within(
        10,
        "a short request while down",
        client
            .send("svc", Event::new("echo", 1))
            .timeout(Duration::from_millis(300)),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
    // a request with time to spare is answered after the reconnect
    let patient = client
        .send("svc", Event::new("echo", 2))
        .timeout(Duration::from_secs(60));
    let patient = tokio::spawn(patient.into_future());

    for i in 0..TELLS {
        client
            .tell("svc", Event::new("tick", i))
            .unwrap_or_else(|e| panic!("tell {i} while down was not buffered: {e}"));
    }
    // the bound: refused at once with a clear error, and nothing of it is sent later
    let err = client.tell("svc", Event::new("tick", TELLS)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transport, "{err}");
    assert!(err.message().contains("disconnected_buffer"), "{err}");
    let err = client.broadcast(Event::new("tick", TELLS)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transport, "{err}");
    let stats = transport.stats();
    assert_eq!(stats.buffered_while_disconnected, TELLS + 2);
    assert_eq!(stats.rejected_while_disconnected, 2);

    server.restart();
    let up = next_status(&mut status, "the reconnected event").await;
    assert_eq!(up["status"], "reconnected", "{up}");
    assert!(
        up["server"]
            .as_str()
            .unwrap()
            .contains(&server.port().to_string()),
        "{up}"
    );
    within(10, "wait_connected", transport.wait_connected())
        .await
        .unwrap();

    // every buffered tell is handled exactly once; the refused one never
    within(60, "every buffered tell handled", async {
        while seen.lock().len() < TELLS as usize {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(
        within(30, "the patient request", patient)
            .await
            .unwrap()
            .unwrap(),
        json!(2)
    );
    // a round trip through the server: anything else buffered would have arrived by now
    assert_eq!(
        within(10, "after", client.send("svc", Event::new("echo", 3)))
            .await
            .unwrap(),
        json!(3)
    );
    let seen = seen.lock().clone();
    assert_eq!(seen.len(), TELLS as usize, "duplicates or the refused tell");
    assert_eq!(
        seen.iter().copied().collect::<HashSet<_>>().len(),
        TELLS as usize
    );

    // the bound is per outage: sending works again and nothing more is counted
    for i in 0..10 {
        client.tell("svc", Event::new("echo", i)).unwrap();
    }
    assert_eq!(transport.stats().buffered_while_disconnected, TELLS + 2);
    assert!(status.try_recv().is_err(), "no further status events");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_bound_fails_every_send_while_disconnected() {
    let mut server = NatsServer::start();
    let mut config = NatsConfig::with_server(server.url());
    config.disconnected_buffer = Some(0);
    let (happen, transport) = instance_with(config).await;
    let client = happen.node("client").await.unwrap();
    server.stop();
    let c = transport.client().clone();
    within(10, "disconnect noticed", async {
        while c.connection_state() == async_nats::connection::State::Connected {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    let err = client.tell("svc", Event::new("tick", 1)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transport);
    assert!(err.message().contains("not connected"), "{err}");
    assert_eq!(transport.stats().buffered_while_disconnected, 0);
    assert_eq!(transport.stats().rejected_while_disconnected, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_gives_up_reconnecting_says_so() {
    let mut server = NatsServer::start();
    let mut config = NatsConfig::with_server(server.url());
    config.reconnect.delay = Duration::from_millis(10);
    config.reconnect.max_delay = Duration::from_millis(20);
    config.reconnect.max_attempts = Some(3);
    let (happen, transport) = instance_with(config).await;
    let (status_tx, mut status) = mpsc::unbounded_channel();
    let watcher = happen.node("watcher").await.unwrap();
    watcher
        .on(CONNECTION_STATUS_EVENT, move |event: Event, _c: Context| {
            let tx = status_tx.clone();
            async move {
                let _ = tx.send(event.payload().clone());
            }
        })
        .unwrap();
    let client = happen.node("client").await.unwrap();
    server.stop();
    assert_eq!(
        next_status(&mut status, "disconnected").await["status"],
        "disconnected"
    );
    // buffered, then lost with the client: counted in the `closed` reason
    client.tell("svc", Event::new("tick", 1)).unwrap();
    let closed = next_status(&mut status, "closed").await;
    assert_eq!(closed["status"], "closed", "{closed}");
    let reason = closed["reason"].as_str().unwrap();
    assert!(reason.contains("max_attempts"), "{closed}");
    assert!(
        reason.contains("1 buffered messages were not sent"),
        "{closed}"
    );
    let err = within(10, "wait_connected", transport.wait_connected())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transport);
    assert!(err.message().contains("gave up"), "{err}");
}
