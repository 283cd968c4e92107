//! TLS and authentication against a real nats-server configured for them: certificates and
//! nkeys are made at test time (test-support). A good setting connects and carries a
//! send/return between two instances; a wrong one fails at once with an error that names the
//! problem and what to check, and the client does not keep retrying.

mod common;

use std::time::{Duration, Instant};

use common::{instance_with, within};
use happen::{Context, Error, ErrorKind, Event, Happen};
use happen_nats::{NatsConfig, NatsTransport};
use serde_json::json;
use test_support::{NatsServer, NatsServerOptions, NkeyUser, TestCa};

/// How long a failing connect may take: one attempt, no retry loop (the connect timeout is
/// 5 s, a refused handshake answers in milliseconds).
const FAIL_WITHIN: Duration = Duration::from_secs(3);

/// A `greeter` in one instance answers a `client` in another.
async fn round_trip(a: &Happen, b: &Happen) {
    let greeter = b.node("greeter").await.unwrap();
    greeter
        .on("greet", |event: Event, _ctx: Context| async move {
            json!({"hello": event.payload().as_str().unwrap_or("?")})
        })
        .unwrap();
    let client = a.node("client").await.unwrap();
    let v = within(
        10,
        "reply",
        client.send("greeter", Event::new("greet", "ada")),
    )
    .await;
    assert_eq!(v.unwrap(), json!({"hello": "ada"}));
}

/// Connects with `config`, expecting a failure within [`FAIL_WITHIN`].
async fn connect_fails(config: NatsConfig) -> Error {
    let started = Instant::now();
    let result = within(10, "failing connect", NatsTransport::connect(config)).await;
    let err = result.expect_err("the connection must be refused");
    eprintln!("refused as expected: {err}");
    assert!(
        started.elapsed() < FAIL_WITHIN,
        "failing took {:?}: the client retried",
        started.elapsed()
    );
    err
}

fn tls_config(server: &NatsServer, ca: std::path::PathBuf) -> NatsConfig {
    let mut config = NatsConfig::with_server(server.url());
    config.tls.required = true;
    config.tls.ca_file = Some(ca);
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_the_test_ca_carries_send_and_return() {
    let server = NatsServer::start_with(NatsServerOptions::new().with_tls());
    let ca = server.ca_file().unwrap();
    let (a, _ta) = instance_with(tls_config(&server, ca.clone())).await;
    let (b, _tb) = instance_with(tls_config(&server, ca)).await;
    round_trip(&a, &b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_another_ca_fails_clearly() {
    let server = NatsServer::start_with(NatsServerOptions::new().with_tls());
    let other = TestCa::new("not the server's CA");
    let mut retrying = tls_config(&server, other.ca_file());
    retrying.retry_on_initial_connect = true; // a TLS failure is final too
    let err = connect_fails(retrying).await;
    assert_eq!(err.kind(), ErrorKind::Tls, "{err}");
    let msg = err.message();
    assert!(msg.contains("TLS"), "{msg}");
    assert!(msg.contains("certificate"), "{msg}");
    assert!(msg.contains("transport.nats.tls.ca_file"), "{msg}");
    assert!(msg.contains(&server.url()), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_and_password() {
    let server =
        NatsServer::start_with(NatsServerOptions::new().with_user_password("app", "s3cr3t"));
    let config = |password: &str| {
        let mut c = NatsConfig::with_server(server.url());
        c.auth.user = Some("app".into());
        c.auth.password = Some(password.into());
        c
    };
    let (a, _ta) = instance_with(config("s3cr3t")).await;
    // credentials in the URL work too, and do not show in `Debug`
    let url = format!("nats://app:s3cr3t@127.0.0.1:{}", server.port());
    let (b, tb) = instance_with(NatsConfig::with_server(url)).await;
    assert!(!format!("{tb:?}").contains("s3cr3t"), "{tb:?}");
    round_trip(&a, &b).await;

    let err = connect_fails(config("wrong")).await;
    assert_authentication_failed(&err);
    assert!(
        !err.message().contains("wrong"),
        "the password leaks: {err}"
    );

    // also when told to keep retrying an unreachable server: a refused login is final
    let mut retrying = config("wrong");
    retrying.retry_on_initial_connect = true;
    assert_authentication_failed(&connect_fails(retrying).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nkey() {
    let user = NkeyUser::generate();
    let server = NatsServer::start_with(NatsServerOptions::new().with_nkey_user(user.public_key()));
    let config = |seed: &str| {
        let mut c = NatsConfig::with_server(server.url());
        c.auth.nkey = Some(seed.into());
        c
    };
    let (a, _ta) = instance_with(config(user.seed())).await;
    let (b, _tb) = instance_with(config(user.seed())).await;
    round_trip(&a, &b).await;

    let stranger = NkeyUser::generate();
    let err = connect_fails(config(stranger.seed())).await;
    assert_authentication_failed(&err);
    assert!(
        !err.message().contains(stranger.seed()),
        "the seed leaks: {err}"
    );
}

/// A refused login is `ErrorKind::Auth`, and the message names the setting to check.
fn assert_authentication_failed(err: &Error) {
    assert_eq!(err.kind(), ErrorKind::Auth, "{err}");
    let msg = err.message();
    assert!(msg.contains("authentication failed"), "{msg}");
    assert!(msg.contains("transport.nats.auth"), "{msg}");
}

#[test]
fn debug_hides_secrets() {
    let user = NkeyUser::generate();
    let mut config = NatsConfig::with_server("nats://app:urlpass@127.0.0.1:4333");
    config.auth.user = Some("app".into());
    config.auth.password = Some("hunter2".into());
    config.auth.token = Some("t0k3n".into());
    config.auth.nkey = Some(user.seed().to_owned());
    config.auth.credentials_file = Some("/etc/nats/app.creds".into());
    let shown = format!("{config:?} {config:#?} {:?}", config.auth);
    for secret in ["hunter2", "t0k3n", user.seed(), "urlpass"] {
        assert!(!shown.contains(secret), "Debug shows `{secret}`: {shown}");
    }
    assert!(shown.contains("\"***\""), "{shown}");
    // what is not secret stays visible, to debug a setup
    assert!(shown.contains("app"), "{shown}");
    assert!(shown.contains("127.0.0.1:4333"), "{shown}");
    assert!(shown.contains("app.creds"), "{shown}");
}
