//! Separate OS processes: the `worker` example runs as a child process; this test process is
//! the client (and hosts `pricing`, which the worker's flow calls back).

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use common::{instance, within};
use futures::StreamExt;
use happen::{Context, ErrorKind, Event};
use serde_json::json;
use test_support::NatsServer;
use tokio::sync::mpsc;

/// The built `worker` example (cargo builds examples for `cargo test`).
fn worker_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap(); // target/<profile>
    let path = dir
        .join("examples")
        .join(format!("worker{}", std::env::consts::EXE_SUFFIX));
    if !path.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "happen-nats", "--example", "worker"])
            .status()
            .unwrap();
        assert!(status.success());
    }
    path
}

struct Worker(Child);
impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_worker(url: &str) -> Worker {
    let mut child = Command::new(worker_binary())
        .arg(url)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the worker example");
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready", "worker did not start");
    Worker(child)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_process_serves_a_client_process() {
    let server = NatsServer::start();
    let url = server.url();
    let _worker = tokio::task::spawn_blocking(move || spawn_worker(&url))
        .await
        .unwrap();
    let (h, _) = instance(&server.url()).await;
    let client = h.node("client").await.unwrap();
    let pricing = h.node("pricing").await.unwrap();
    pricing
        .on("price", |event: Event, _c: Context| async move {
            json!(event.payload()["qty"].as_u64().unwrap() * 10)
        })
        .unwrap();
    let (ack_tx, mut ack_rx) = mpsc::unbounded_channel();
    client
        .on("ack", move |event: Event, _c: Context| {
            let _ = ack_tx.send(event.payload().clone());
            async {}
        })
        .unwrap();

    // send / return
    let v = within(
        10,
        "greet",
        client.send("worker", Event::new("greet", "ada")),
    )
    .await
    .unwrap();
    assert_eq!(v["hello"], "ada");
    assert_ne!(v["from"], json!(std::process::id()));

    // a multi-step flow in the worker that sends onward to this process
    let v = within(
        10,
        "order",
        client.send("worker", Event::new("order", json!({"qty": 4}))),
    )
    .await
    .unwrap();
    assert_eq!(v["price"], 40);

    // broadcast reaches the worker, which answers with a direct send
    client.broadcast(Event::new("announce", "hi")).unwrap();
    assert_eq!(within(10, "ack", ack_rx.recv()).await.unwrap(), json!("hi"));

    // a stream of 100,000 items across processes, with credit
    let mut stream = client
        .send("worker", Event::new("count", 100_000))
        .into_stream();
    let mut n = 0u64;
    while let Some(item) = within(30, "item", stream.next()).await {
        assert_eq!(item.unwrap(), json!(n));
        n += 1;
    }
    assert_eq!(n, 100_000);
    assert_eq!(stream.final_value(), Some(&json!({"total": 100_000})));
    let stats = within(10, "stats", client.send("worker", Event::new("stats", ())))
        .await
        .unwrap();
    let in_flight = stats["max_stream_in_flight"].as_u64().unwrap();
    let window = happen_nats::NatsConfig::default().stream_window as u64;
    assert!(
        in_flight > 0 && in_flight <= window,
        "in flight {in_flight}, window {window}"
    );

    // errors cross the process boundary too
    let err = within(
        10,
        "no handler",
        client.send("worker", Event::new("nope", ())),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NoHandler);
}
