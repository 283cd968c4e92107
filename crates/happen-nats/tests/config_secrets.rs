//! `Debug` of every public happen-nats type that can hold credentials (`NatsConfig`,
//! `AuthConfig`, and `NatsTransport`, which holds a `NatsConfig`) prints no password, token or
//! nkey seed, also not the password or token inside a server URL.

mod common;

use common::{instance_with, within};
use happen_nats::{AuthConfig, NatsConfig, TlsConfig};
use test_support::{NatsServer, NatsServerOptions};

const PASSWORD: &str = "pa55-w0rd-secret";
const TOKEN: &str = "t0ken-secret";
const SEED: &str = "SUAGMJH5XLGZKQQWAWKRZJIGMOU4HPFUYLXJMXOO5NLFEO2OOQJ5LPRDPM";
const URL_PASSWORD: &str = "url-pa55-secret";
const URL_TOKEN: &str = "url-t0ken-secret";

/// Every secret above, none of which may appear in `text`.
fn assert_no_secret(what: &str, text: &str) {
    for secret in [PASSWORD, TOKEN, SEED, URL_PASSWORD, URL_TOKEN] {
        assert!(!text.contains(secret), "{what} shows a secret: {text}");
    }
}

/// An `AuthConfig` with every kind of secret set (`Debug` does not validate).
fn auth() -> AuthConfig {
    let mut auth = AuthConfig::default();
    auth.user = Some("app".to_owned());
    auth.password = Some(PASSWORD.to_owned());
    auth.token = Some(TOKEN.to_owned());
    auth.nkey = Some(SEED.to_owned());
    auth.credentials_file = Some("/etc/nats/app.creds".into());
    auth
}

#[test]
fn configs_print_no_secrets() {
    let auth = auth();
    for text in [format!("{auth:?}"), format!("{auth:#?}")] {
        assert_no_secret("AuthConfig", &text);
        // what is not secret stays visible, and a secret that is set says so
        assert!(text.contains("app") && text.contains("app.creds"), "{text}");
        assert!(text.contains("***"), "{text}");
    }

    let mut nats = NatsConfig::with_server(format!("nats://app:{URL_PASSWORD}@127.0.0.1:4222"));
    nats.servers
        .push(format!("nats://{URL_TOKEN}@127.0.0.1:4223"));
    nats.auth = auth;
    nats.tls = TlsConfig::default();
    for text in [format!("{nats:?}"), format!("{nats:#?}")] {
        assert_no_secret("NatsConfig", &text);
        assert!(text.contains("nats://app:***@127.0.0.1:4222"), "{text}");
        assert!(text.contains("nats://***@127.0.0.1:4223"), "{text}");
    }

    // read from a happen configuration file, as an application does
    let config = happen::Config::from_toml_str(&format!(
        r#"
[transport.nats]
servers = ["nats://app:{URL_PASSWORD}@127.0.0.1:4222"]
[transport.nats.auth]
user = "app"
password = "{PASSWORD}"
"#
    ))
    .unwrap();
    let nats = NatsConfig::from_happen(&config).unwrap();
    assert_no_secret("NatsConfig from a file", &format!("{nats:?}"));
    let config =
        happen::Config::from_toml_str(&format!("[transport.nats.auth]\nnkey = \"{SEED}\"\n"))
            .unwrap();
    let nats = NatsConfig::from_happen(&config).unwrap();
    assert_no_secret("NatsConfig with an nkey", &format!("{nats:?}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connected_transport_prints_no_secrets() {
    let server =
        NatsServer::start_with(NatsServerOptions::new().with_user_password("app", URL_PASSWORD));
    // the credentials in the URL: `Debug` of the transport shows its servers
    let url = server
        .url()
        .replacen("://", &format!("://app:{URL_PASSWORD}@"), 1);
    let (h, t) = instance_with(NatsConfig::with_server(url)).await;
    let text = format!("{t:?}");
    assert_no_secret("NatsTransport", &text);
    assert!(text.contains("app:***@"), "{text}");
    assert_no_secret("NatsTransport's config", &format!("{:?}", t.config()));
    within(
        10,
        "shutdown",
        h.shutdown(std::time::Duration::from_secs(5)),
    )
    .await;
}
