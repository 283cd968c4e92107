//! `{:?}` of a configuration (and of a builder holding one) never shows what a transport table
//! holds: passwords, tokens and key seeds stay out of logs.

use happen::{Config, Happen};

const SECRETS: [&str; 4] = [
    "pa55word",
    "t0ken-value",
    "SUAEXAMPLESEEDVALUE",
    "-----BEGIN",
];

fn config() -> Config {
    Config::from_toml_str(
        r#"
        [transport.nats]
        servers = ["nats://127.0.0.1:4222"]
        auth = { user = "app", password = "pa55word", token = "t0ken-value", nkey_seed = "SUAEXAMPLESEEDVALUE" }
        tls = { key_pem = "-----BEGIN PRIVATE KEY-----" }

        [transport.other]
        secret = "pa55word"
        "#,
    )
    .unwrap()
}

#[test]
fn debug_of_a_config_shows_table_names_only() {
    let config = config();
    let shown = format!("{config:?} {config:#?} {:?}", config.transport);
    for secret in SECRETS {
        assert!(!shown.contains(secret), "`{secret}` shown in {shown}");
    }
    assert!(shown.contains("nats") && shown.contains("other"), "{shown}");
    // The tables themselves are intact for the transport that reads them.
    let nats = config.transport.section("nats").unwrap();
    assert_eq!(nats["auth"]["password"], "pa55word");
}

#[test]
fn debug_of_a_builder_shows_no_credentials() {
    let builder = Happen::builder().config(config());
    let shown = format!("{builder:?} {builder:#?}");
    for secret in SECRETS {
        assert!(!shown.contains(secret), "`{secret}` shown in {shown}");
    }
}

#[tokio::test]
async fn debug_of_an_instance_shows_no_credentials() {
    let happen = Happen::builder().config(config()).build().unwrap();
    let shown = format!("{happen:?} {:?}", happen.config());
    for secret in SECRETS {
        assert!(!shown.contains(secret), "`{secret}` shown in {shown}");
    }
}
