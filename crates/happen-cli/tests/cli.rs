//! The `happen` binary against a real nats-server, with the serving nodes in this test process.

use std::future::IntoFuture;
use std::process::{Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use happen::{Context, Emitter, Error, ErrorKind, Event, Happen, NodeOptions};
use happen_nats::{NatsConfig, NatsTransport};
use serde_json::{Value, json};
use test_support::{NatsServer, NatsServerOptions};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::Semaphore;

const BIN: &str = env!("CARGO_BIN_EXE_happen");

async fn instance(url: &str) -> Happen {
    let transport = NatsTransport::connect(NatsConfig::with_server(url))
        .await
        .expect("connect to nats");
    Happen::builder().transport(transport).build().unwrap()
}

async fn within<T>(secs: u64, what: &str, f: impl IntoFuture<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .unwrap_or_else(|_| panic!("timed out after {secs}s: {what}"))
}

fn happen(url: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_remove("HAPPEN_NATS_URL")
        .arg("--nats")
        .arg(url)
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

async fn run(url: &str, args: &[&str]) -> Output {
    within(60, "happen to finish", happen(url, args).output())
        .await
        .expect("run happen")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts the exit code and the one-line error of a failed run.
fn assert_fails(o: &Output, code: i32, kind: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(code), "stderr: {err}");
    assert!(
        err.starts_with(&format!("error: {kind}: ")),
        "expected a `{kind}` error, got: {err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
}

/// A running `happen` that listens (tap, trace): spawned, and awaited until it says so.
struct Listening {
    child: Child,
}

impl Listening {
    async fn start(url: &str, args: &[&str]) -> Listening {
        let mut child = happen(url, args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn happen");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let first = within(30, "the listening line", lines.next_line())
            .await
            .unwrap()
            .unwrap_or_default();
        assert!(first.starts_with("listening"), "{first}");
        // the rest of stderr is drained so the child never blocks on it
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Listening { child }
    }

    /// Waits for the child to end on its own and returns its stdout.
    async fn finish(mut self) -> String {
        let mut out = String::new();
        let mut stdout = self.child.stdout.take().unwrap();
        within(30, "happen to end", stdout.read_to_string(&mut out))
            .await
            .unwrap();
        let status = within(30, "happen to exit", self.child.wait())
            .await
            .unwrap();
        assert!(status.success(), "{status}; stdout: {out}");
        out
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_prints_the_reply_and_streams() {
    let server = NatsServer::start();
    let h = instance(&server.url()).await;
    let greeter = h.node("greeter").await.unwrap();
    greeter
        .on("greet", |e: Event, _c: Context| async move {
            json!({"hello": e.payload()})
        })
        .unwrap();
    greeter
        .on(
            "count",
            |_e: Event, _c: Context, emit: Emitter| async move {
                for i in 0..3 {
                    emit.emit(i).await?;
                }
                Ok::<_, Error>("counted")
            },
        )
        .unwrap();

    let o = run(&server.url(), &["send", "greeter", "greet", r#""ada""#]).await;
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "{\"hello\":\"ada\"}\n");

    let o = run(&server.url(), &["send", "greeter", "count", "--stream"]).await;
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "0\n1\n2\n\"counted\"\n");

    // the URL from the environment
    let o = within(
        60,
        "send with HAPPEN_NATS_URL",
        Command::new(BIN)
            .env("HAPPEN_NATS_URL", server.url())
            .args(["send", "greeter", "greet", "7"])
            .output(),
    )
    .await
    .unwrap();
    assert_eq!(stdout(&o), "{\"hello\":7}\n", "{}", stderr(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_error_kind_has_its_exit_code() {
    let server = NatsServer::start();
    let h = instance(&server.url()).await;
    let n = h.node("svc").await.unwrap();
    n.on("fail", |_e: Event, _c: Context| async move {
        Err::<(), _>(Error::new(ErrorKind::Handler, "card declined").with_code("declined"))
    })
    .unwrap();
    n.on("hang", |_e: Event, _c: Context| async move {
        std::future::pending::<()>().await
    })
    .unwrap();
    let url = server.url();

    let o = run(&url, &["send", "nobody", "x"]).await;
    assert_fails(&o, 10, "unknown_node");
    assert!(stderr(&o).contains("nobody"), "{}", stderr(&o));

    let o = run(&url, &["send", "svc", "nothing.here"]).await;
    assert_fails(&o, 11, "no_handler");

    let o = run(&url, &["send", "svc", "fail"]).await;
    assert_fails(&o, 12, "handler");
    assert!(stderr(&o).contains("card declined (code declined)"));

    let o = run(&url, &["send", "svc", "hang", "--timeout", "300ms"]).await;
    assert_fails(&o, 14, "timeout");
    assert!(stderr(&o).contains("svc"), "names the node: {}", stderr(&o));
    assert!(
        stderr(&o).contains("--timeout"),
        "names the flag: {}",
        stderr(&o)
    );

    let o = run(&url, &["send", "svc", "fail", "not json"]).await;
    assert_fails(&o, 20, "invalid_payload");

    let o = run(&url, &["tap", "order..x"]).await;
    assert_fails(&o, 22, "invalid_pattern");

    // a server that is not there
    let mut gone = NatsServer::start();
    let gone_url = gone.url();
    gone.stop();
    let o = run(&gone_url, &["send", "svc", "fail"]).await;
    assert_fails(&o, 30, "transport");
    assert!(
        stderr(&o).contains("is nats-server running?"),
        "{}",
        stderr(&o)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_exit_with_the_auth_code() {
    let server =
        NatsServer::start_with(NatsServerOptions::new().with_user_password("ada", "s3cret"));
    let o = run(
        &server.url(),
        &["--user", "ada", "--password", "wrong", "nodes"],
    )
    .await;
    assert_fails(&o, 31, "auth");
    assert!(!stderr(&o).contains("wrong"), "no secret in the message");
    let o = within(
        60,
        "nodes with env credentials",
        happen(&server.url(), &["nodes"])
            .env("HAPPEN_NATS_USER", "ada")
            .env("HAPPEN_NATS_PASSWORD", "s3cret")
            .output(),
    )
    .await
    .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_needs_the_servers_ca() {
    let server = NatsServer::start_with(NatsServerOptions::new().with_tls());
    let ca = server.ca_file().unwrap();
    let o = run(
        &server.url(),
        &["--tls-ca", ca.to_str().unwrap(), "nodes", "--json"],
    )
    .await;
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "[]", "no process serves nodes");

    let other = test_support::TestCa::new("not the server's CA");
    let o = run(
        &server.url(),
        &["--tls-ca", other.ca_file().to_str().unwrap(), "nodes"],
    )
    .await;
    assert_fails(&o, 32, "tls");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tap_sees_events_of_other_instances_and_filters_by_pattern() {
    let server = NatsServer::start();
    let url = server.url();
    let h = instance(&url).await;
    let shop = h.node("shop").await.unwrap();
    let orders = h.node("orders").await.unwrap();
    orders
        .on("{order,payment}.*", |_e: Event, _c: Context| async move {})
        .unwrap();

    let tap = Listening::start(&url, &["tap", "order.*", "--json", "--payload", "-n", "3"]).await;
    let text = Listening::start(&url, &["tap", "payment.done", "-n", "1"]).await;
    shop.send("orders", Event::new("order.created", json!({"id": 1})))
        .await
        .unwrap();
    shop.send("orders", Event::new("payment.done", json!({"id": 1})))
        .await
        .unwrap();
    shop.tell("orders", Event::new("order.shipped", json!({"id": 1})))
        .unwrap();
    shop.broadcast(Event::new("order.closed", json!({"id": 1})))
        .unwrap();

    let out = tap.finish().await;
    let seen: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let types: Vec<_> = seen.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["order.created", "order.shipped", "order.closed"]);
    let kinds: Vec<_> = seen.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["send", "tell", "broadcast"]);
    assert_eq!(seen[0]["sender"], "shop");
    assert_eq!(seen[0]["target"], "orders");
    assert_eq!(seen[2]["target"], Value::Null);
    assert_eq!(seen[0]["payload"], json!({"id": 1}));
    for e in &seen {
        assert!(e["id"].as_str().unwrap().starts_with("evt-"));
        assert!(e["correlationId"].as_str().unwrap().starts_with("txn-"));
        assert!(e["receivedUs"].as_u64().unwrap() > 0);
    }

    let line = text.finish().await;
    assert!(
        line.contains(" payment.done shop → orders id=evt-") && line.contains(" corr=txn-"),
        "{line}"
    );
    assert!(!line.contains("payload="), "no payload without --payload");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_signs_with_a_key_and_tap_shows_who_signed() {
    use happen::security::{Security, SecurityMode, SigningKey, TrustRing};
    let server = NatsServer::start();
    let url = server.url();
    let h = instance(&url).await;
    let key = SigningKey::generate();
    let ring = TrustRing::new().trust("ops-cli", key.public_key()).unwrap();
    let security = Security::new().trust(ring).mode(SecurityMode::Enforce);
    let vault = h
        .node_with("vault", NodeOptions::new().security(security))
        .await
        .unwrap();
    vault
        .on("open", |e: Event, _c: Context| async move {
            e.integrity()
                .and_then(|i| i.public_key())
                .map(str::to_owned)
        })
        .unwrap();
    let seed_file = std::env::temp_dir().join(format!("happen-cli-{}.nk", std::process::id()));
    std::fs::write(&seed_file, format!("{}\n", key.seed())).unwrap();
    let seed_arg = seed_file.to_str().unwrap();

    let tap = Listening::start(&url, &["tap", "open", "-n", "2"]).await;
    // unsigned: refused by the enforcing node, with the unauthenticated exit code
    let o = run(&url, &["send", "vault", "open", "--as", "ops-cli"]).await;
    assert_fails(&o, 27, "unauthenticated");
    // signed with the key from a file: handled
    let o = run(
        &url,
        &[
            "send",
            "vault",
            "open",
            "--as",
            "ops-cli",
            "--sign-key",
            seed_arg,
        ],
    )
    .await;
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), format!("\"{}\"", key.public_key()));
    let lines = tap.finish().await;
    let lines: Vec<&str> = lines.lines().collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(!lines[0].contains("signed-by="), "{}", lines[0]);
    assert!(
        lines[1].contains(&format!("signed-by={}", key.public_key())),
        "{}",
        lines[1]
    );
    assert!(!lines[1].contains("mismatch"), "{}", lines[1]);
    // a bad key is a usage error before anything is sent
    let o = run(
        &url,
        &["send", "vault", "open", "--sign-key", "SUnot-a-seed"],
    )
    .await;
    assert_fails(&o, 23, "invalid_config");
    let _ = std::fs::remove_file(seed_file);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_lists_a_node_with_its_limits_and_live_queue() {
    let server = NatsServer::start();
    let url = server.url();
    let h = instance(&url).await;
    let gate = Arc::new(Semaphore::new(0));
    let billing = h
        .node_with(
            "billing",
            NodeOptions::new().max_concurrent(2).queue_limit(10),
        )
        .await
        .unwrap();
    let g = gate.clone();
    billing
        .on("charge", move |_e: Event, _c: Context| {
            let g = g.clone();
            async move { g.acquire().await.unwrap().forget() }
        })
        .unwrap();
    let other = instance(&url).await;
    let client = other.node("client").await.unwrap();
    let replies: Vec<_> = (0..9)
        .map(|_| client.send("billing", Event::new("charge", ())))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    while billing.stats().queued < 7 {
        assert!(Instant::now() < deadline, "billing never queued 7");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let o = run(&url, &["nodes", "--json", "--wait", "10s", "--quiet", "2s"]).await;
    assert!(o.status.success(), "{}", stderr(&o));
    let nodes: Value = serde_json::from_str(&stdout(&o)).expect("JSON");
    let b = nodes
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == "billing")
        .expect("billing listed");
    let r = &b["replicas"][0];
    assert_eq!(b["replicas"].as_array().unwrap().len(), 1);
    assert_eq!(
        (r["maxConcurrent"].as_u64(), r["queueLimit"].as_u64()),
        (Some(2), Some(10))
    );
    assert_eq!(
        (r["active"].as_u64(), r["queued"].as_u64()),
        (Some(2), Some(7))
    );
    assert_eq!(r["highWater"], 8);
    assert_eq!(r["underPressure"], false, "7 queued is below 8");
    assert!(
        nodes
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["id"] == "client")
    );

    let o = run(&url, &["nodes", "--wait", "10s", "--quiet", "2s"]).await;
    assert!(o.status.success(), "{}", stderr(&o));
    let table = stdout(&o);
    let row = table
        .lines()
        .find(|l| l.starts_with("billing "))
        .unwrap_or_else(|| panic!("no billing row in\n{table}"));
    let cells: Vec<_> = row.split_whitespace().collect();
    // NODE REPLICAS CONCURRENT QUEUE (high N) ACTIVE QUEUED PRESSURE ...
    assert_eq!(
        &cells[..8],
        ["billing", "1", "2", "10", "(high", "8)", "2", "7"],
        "{table}"
    );
    assert!(table.starts_with("NODE"), "{table}");

    gate.add_permits(9);
    for r in replies {
        within(20, "reply", r).await.unwrap();
    }
}

/// client → a (`start`) → b (`step`) → c (`finish`): three events of one transaction.
async fn three_hops(h: &Happen) -> happen::Node {
    let a = h.node("a").await.unwrap();
    let b = h.node("b").await.unwrap();
    let c = h.node("c").await.unwrap();
    a.on("start", |_e: Event, ctx: Context| async move {
        ctx.send("b", Event::new("step", 1)).await
    })
    .unwrap();
    b.on("step", |_e: Event, ctx: Context| async move {
        ctx.send("c", Event::new("finish", 2)).await
    })
    .unwrap();
    c.on("finish", |_e: Event, _c: Context| async move { "done" })
        .unwrap();
    h.node("client").await.unwrap()
}

fn check_chain(tree: &Value, correlation: &str) {
    assert_eq!(tree["correlationId"], correlation);
    assert_eq!(tree["events"], 3);
    let roots = tree["roots"].as_array().unwrap();
    assert_eq!(roots.len(), 1, "{tree}");
    let start = &roots[0];
    assert_eq!(
        (start["type"].as_str(), start["target"].as_str()),
        (Some("start"), Some("a"))
    );
    assert_eq!(start["sender"], "client");
    let step = &start["children"][0];
    assert_eq!(
        (step["type"].as_str(), step["target"].as_str()),
        (Some("step"), Some("b"))
    );
    assert_eq!(step["causationId"], start["id"]);
    let finish = &step["children"][0];
    assert_eq!(
        (finish["type"].as_str(), finish["target"].as_str()),
        (Some("finish"), Some("c"))
    );
    assert_eq!(finish["sender"], "b");
    assert_eq!(finish["children"].as_array().unwrap().len(), 0);
    let offsets: Vec<f64> = [start, step, finish]
        .iter()
        .map(|e| e["offsetMs"].as_f64().unwrap())
        .collect();
    assert!(
        offsets[0] == 0.0 && offsets[0] <= offsets[1] && offsets[1] <= offsets[2],
        "{offsets:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_rebuilds_a_three_hop_chain_from_a_record() {
    let server = NatsServer::start();
    let url = server.url();
    let h = instance(&url).await;
    let client = three_hops(&h).await;
    let dir = std::env::temp_dir().join(format!("happen-cli-trace-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("record.jsonl");
    let _ = std::fs::remove_file(&file);
    let file_arg = file.to_str().unwrap();

    let tap = Listening::start(&url, &["tap", "--record", file_arg, "-n", "4"]).await;
    // another transaction first, recorded too but not part of the trace
    client.send("c", Event::new("finish", 0)).await.unwrap();
    let correlation = happen::CorrelationId::new();
    let done = client
        .send(
            "a",
            Event::new("start", 0).with_correlation_id(correlation.clone()),
        )
        .await
        .unwrap();
    assert_eq!(done, "done");
    tap.finish().await;
    let corr = correlation.to_string();

    let o = run(&url, &["trace", &corr, "--from", file_arg, "--json"]).await;
    assert!(o.status.success(), "{}", stderr(&o));
    check_chain(&serde_json::from_str(&stdout(&o)).unwrap(), &corr);

    let o = run(&url, &["trace", &corr, "--from", file_arg]).await;
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    let lines: Vec<_> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert_eq!(lines[0], format!("transaction {corr} (3 events)"));
    assert!(
        lines[1].starts_with("start  client → a  +0.0ms  evt-"),
        "{text}"
    );
    assert!(lines[2].starts_with("└─ step  a → b  +"), "{text}");
    assert!(lines[3].starts_with("   └─ finish  b → c  +"), "{text}");

    let o = run(&url, &["trace", "txn-nope", "--from", file_arg]).await;
    assert_fails(&o, 23, "invalid_config");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_while_listening() {
    let server = NatsServer::start();
    let url = server.url();
    let h = instance(&url).await;
    let client = three_hops(&h).await;
    let correlation = happen::CorrelationId::new();
    let corr = correlation.to_string();
    let trace = Listening::start(
        &url,
        &["trace", &corr, "--idle", "5s", "--for", "60s", "--json"],
    )
    .await;
    client
        .send("a", Event::new("start", 0).with_correlation_id(correlation))
        .await
        .unwrap();
    let out = trace.finish().await;
    check_chain(&serde_json::from_str(&out).unwrap(), &corr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_and_bench() {
    let server = NatsServer::start();
    let url = server.url();
    let h = instance(&url).await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let echo = h.node("echo").await.unwrap();
    echo.on("ping", |e: Event, _c: Context| async move {
        e.payload().clone()
    })
    .unwrap();
    let sink = h.node("sink").await.unwrap();
    sink.on("order.created", move |e: Event, _c: Context| {
        let tx = tx.clone();
        async move {
            let _ = tx.send(e);
        }
    })
    .unwrap();

    let o = run(
        &url,
        &["broadcast", "order.created", r#"{"id": 9}"#, "--as", "shop"],
    )
    .await;
    assert!(o.status.success(), "{}", stderr(&o));
    let e = within(20, "the broadcast", rx.recv()).await.unwrap();
    assert_eq!(e.payload(), &json!({"id": 9}));
    assert_eq!(e.sender().as_str(), "shop");
    assert_eq!(stdout(&o).trim(), e.correlation_id().to_string());

    let o = run(
        &url,
        &["bench", "send", "echo", "ping", "1", "-n", "500", "-c", "8"],
    )
    .await;
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains(": 500 ok, 0 failed"), "{out}");
    assert!(out.contains("latency: min "), "{out}");
    assert_eq!(echo.stats().completed, 500);

    let o = run(
        &url,
        &[
            "bench",
            "broadcast",
            "order.created",
            "-n",
            "300",
            "--watch",
            "echo",
        ],
    )
    .await;
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("published 300 broadcasts"), "{out}");
    assert!(out.contains("300 came back"), "{out}");
    let mut got = 1; // the one above
    while got < 301 {
        within(20, "the benched broadcasts", rx.recv())
            .await
            .unwrap();
        got += 1;
    }

    let o = run(&url, &["bench", "send", "nobody", "ping", "-n", "5"]).await;
    assert_fails_last_line(&o, 10, "unknown_node");
}

/// As [`assert_fails`] for a command that prints a summary first.
fn assert_fails_last_line(o: &Output, code: i32, kind: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(code), "stderr: {err}");
    let last = err.trim_end().lines().last().unwrap_or_default();
    assert!(last.starts_with(&format!("error: {kind}: ")), "{err}");
}
