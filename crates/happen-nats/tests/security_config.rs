//! `[security]` from a config file: a node's seed, the trust ring by node-id pattern, the mode
//! and `accept_from`, over NATS between two processes.

use std::time::Duration;

use happen::security::SigningKey;
use happen::{Config, Context, ErrorKind, Event, Happen};
use happen_nats::NatsTransport;
use serde_json::json;
use test_support::NatsServer;

async fn process(toml: &str) -> Happen {
    let config = Config::from_toml_str(toml).unwrap();
    let transport = NatsTransport::from_config(&config).await.unwrap();
    Happen::builder()
        .config(config)
        .transport(transport)
        .build()
        .unwrap()
}

async fn within<T>(f: impl std::future::IntoFuture<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), f)
        .await
        .expect("in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_from_the_config_file() {
    let server = NatsServer::start();
    let checkout = SigningKey::generate();
    let seed_file = std::env::temp_dir().join(format!("happen-sec-{}.nk", std::process::id()));
    std::fs::write(&seed_file, checkout.seed()).unwrap();
    let senders = process(&format!(
        r#"
        [transport.nats]
        servers = ["{url}"]
        [security.nodes."checkout-*"]
        seed_file = {file:?}
        "#,
        url = server.url(),
        file = seed_file.display().to_string(),
    ))
    .await;
    let receivers = process(&format!(
        r#"
        [transport.nats]
        servers = ["{url}"]
        [security]
        max_age_ms = 60000
        [security.trust]
        "checkout-*" = "{key}"
        [security.nodes."billing"]
        mode = "enforce"
        accept_from = ["checkout-*"]
        "#,
        url = server.url(),
        key = checkout.public_key(),
    ))
    .await;
    let billing = receivers.node("billing").await.unwrap();
    billing
        .on("pay", |e: Event, _c: Context| async move {
            e.sender().to_string()
        })
        .unwrap();

    // a checkout node signs with the seed from its file; the ring trusts the pattern
    let eu = senders.node("checkout-eu").await.unwrap();
    assert_eq!(
        within(eu.send("billing", Event::new("pay", json!(1))))
            .await
            .unwrap(),
        "checkout-eu"
    );
    // another node of that process has no key: unsigned, refused under enforce
    let web = senders.node("web").await.unwrap();
    let err = within(web.send("billing", Event::new("pay", json!(1))))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthenticated, "{err}");
    assert_eq!(billing.stats().denied, 1);
    let _ = std::fs::remove_file(seed_file);

    // a bad seed is a config error naming the key
    let err = Happen::with_config(
        Config::from_toml_str("[security.nodes.\"x\"]\nseed = \"SUnope\"").unwrap(),
    )
    .unwrap()
    .node("x")
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidConfig);
    assert!(err.message().contains("security.nodes"), "{err}");
}
