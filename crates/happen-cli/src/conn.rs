//! The connection flags and what every command needs from them: a transport, a sending node,
//! a payload.

use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use happen::{Error, ErrorKind, Happen, Node, Result};
use happen_nats::{NatsConfig, NatsTransport};
use serde_json::Value;

/// How to reach the NATS server (the flags of `happen-nats`' `[transport.nats]`).
#[derive(Args, Debug, Clone)]
pub(crate) struct ConnArgs {
    /// NATS server URL(s), comma-separated.
    #[arg(
        long = "nats",
        global = true,
        env = "HAPPEN_NATS_URL",
        default_value = "nats://127.0.0.1:4222",
        value_name = "URL"
    )]
    pub(crate) url: String,
    /// The subject prefix of the happen system.
    #[arg(
        long,
        global = true,
        env = "HAPPEN_NATS_PREFIX",
        default_value = "happen"
    )]
    pub(crate) prefix: String,
    /// User name (with --password).
    #[arg(long, global = true, env = "HAPPEN_NATS_USER")]
    user: Option<String>,
    /// Password (with --user); prefer the environment variable.
    #[arg(
        long,
        global = true,
        env = "HAPPEN_NATS_PASSWORD",
        hide_env_values = true
    )]
    password: Option<String>,
    /// Token; prefer the environment variable.
    #[arg(long, global = true, env = "HAPPEN_NATS_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// NKey seed (`SU…`); prefer the environment variable.
    #[arg(
        long,
        global = true,
        env = "HAPPEN_NATS_NKEY",
        hide_env_values = true,
        value_name = "SEED"
    )]
    nkey: Option<String>,
    /// Credentials file (`.creds`: JWT and nkey seed).
    #[arg(long, global = true, env = "HAPPEN_NATS_CREDS", value_name = "FILE")]
    creds: Option<PathBuf>,
    /// CA certificate (PEM) to trust the server's TLS certificate with (requires TLS).
    #[arg(long, global = true, env = "HAPPEN_NATS_CA", value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// Client certificate (PEM), when the server requires one (with --tls-key).
    #[arg(long, global = true, env = "HAPPEN_NATS_CERT", value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// Client key (PEM), with --tls-cert.
    #[arg(long, global = true, env = "HAPPEN_NATS_KEY", value_name = "FILE")]
    tls_key: Option<PathBuf>,
}

impl ConnArgs {
    /// The transport settings these flags describe.
    pub(crate) fn config(&self) -> NatsConfig {
        let mut config = NatsConfig::default();
        config.servers = self
            .url
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        config.name = "happen-cli".to_owned();
        config.prefix = self.prefix.clone();
        config.auth.user = self.user.clone();
        config.auth.password = self.password.clone();
        config.auth.token = self.token.clone();
        config.auth.nkey = self.nkey.clone();
        config.auth.credentials_file = self.creds.clone();
        config.tls.ca_file = self.tls_ca.clone();
        config.tls.cert_file = self.tls_cert.clone();
        config.tls.key_file = self.tls_key.clone();
        // a CA or a client certificate means TLS is wanted
        config.tls.required = self.tls_ca.is_some() || self.tls_cert.is_some();
        config
    }

    /// Connects (errors name what to check: unreachable server, refused credentials, TLS).
    pub(crate) async fn connect(&self) -> Result<NatsTransport> {
        NatsTransport::connect(self.config()).await
    }

    /// Connects and creates the sending node `id` (default `happen-cli-<random>`).
    pub(crate) async fn sender(&self, args: &crate::SenderArgs) -> Result<Sender> {
        let key = args.sign_key.as_deref().map(signing_key).transpose()?;
        let transport = self.connect().await?;
        let happen = Happen::builder().transport(transport.clone()).build()?;
        let id = args.sender.clone().unwrap_or_else(random_id);
        let mut options = happen::NodeOptions::new();
        if let Some(key) = key {
            options = options.security(happen::security::Security::new().signing_key(key));
        }
        let node = happen.node_with(id, options).await?;
        Ok(Sender {
            happen,
            node,
            transport,
        })
    }
}

/// The key of `--sign-key`: a seed, or a file whose first line starting with `S` is one.
fn signing_key(arg: &str) -> Result<happen::security::SigningKey> {
    use happen::security::SigningKey;
    if arg.starts_with('S') && !std::path::Path::new(arg).exists() {
        return SigningKey::from_seed(arg);
    }
    let text = std::fs::read_to_string(arg).map_err(|e| {
        happen::Error::new(
            happen::ErrorKind::InvalidConfig,
            format!("--sign-key: cannot read `{arg}` ({e}); give an nkey seed (`SU…`) or a file holding one"),
        )
    })?;
    let seed = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with('S'))
        .unwrap_or("");
    SigningKey::from_seed(seed)
}

/// A happen instance on NATS with one node to send from.
pub(crate) struct Sender {
    pub(crate) happen: Happen,
    pub(crate) node: Node,
    pub(crate) transport: NatsTransport,
}

impl Sender {
    /// Stops the node (its answers and our events reach the server first).
    pub(crate) async fn close(self) {
        self.happen.shutdown(Duration::from_secs(2)).await;
    }
}

/// The state of a transport's connection to the NATS server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Connection {
    Connected,
    Disconnected,
}

impl Connection {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Connection::Connected => "connected",
            Connection::Disconnected => "disconnected",
        }
    }
}

/// How often [`watch_connection`] looks at the connection state.
const CONNECTION_POLL: Duration = Duration::from_millis(200);

/// Calls `changed` each time the connection of `transport` drops or comes back (looked at
/// every 200 ms, without a node: a listening command has none); never returns.
pub(crate) async fn watch_connection(
    transport: &NatsTransport,
    mut changed: impl FnMut(Connection),
) -> std::convert::Infallible {
    let mut last = Connection::Connected;
    let mut every = tokio::time::interval(CONNECTION_POLL);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let now = match transport.client().connection_state() {
            async_nats::connection::State::Connected => Connection::Connected,
            _ => Connection::Disconnected,
        };
        if now != last {
            last = now;
            changed(now);
        }
    }
}

/// [`watch_connection`] for the long-running commands (`tap`, `trace`, `web`): one line on
/// stderr when the connection to `url` drops and when it comes back (with how long it was
/// gone: events published meanwhile were not seen).
pub(crate) async fn report_connection(
    transport: &NatsTransport,
    url: &str,
) -> std::convert::Infallible {
    let mut lost = None;
    watch_connection(transport, |c| match c {
        Connection::Disconnected => {
            lost = Some(std::time::Instant::now());
            eprintln!("happen: lost the connection to the nats server {url}; reconnecting");
        }
        Connection::Connected => {
            let gone = lost.take().map(|at| at.elapsed()).unwrap_or_default();
            eprintln!(
                "happen: reconnected to the nats server {url} after {:.1}s (events published meanwhile were not seen)",
                gone.as_secs_f64()
            );
        }
    })
    .await
}

/// `happen-cli-<8 hex digits>`: unique enough among the CLIs of one system.
fn random_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mix = (u64::from(nanos) << 16) ^ u64::from(std::process::id());
    format!("happen-cli-{:08x}", mix as u32)
}

/// The payload argument: JSON, `-` for stdin, `null` when absent.
pub(crate) fn payload(arg: Option<&str>) -> Result<Value> {
    let text = match arg {
        None => return Ok(Value::Null),
        Some("-") => {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s).map_err(|e| {
                Error::new(
                    ErrorKind::InvalidPayload,
                    format!("cannot read the payload from stdin: {e}"),
                )
            })?;
            s
        }
        Some(s) => s.to_owned(),
    };
    serde_json::from_str(&text).map_err(|e| {
        Error::new(
            ErrorKind::InvalidPayload,
            format!(
                "the payload is not JSON ({e}); quote text as JSON, e.g. '\"ada\"', or pass an object like '{{\"id\": 42}}'"
            ),
        )
    })
}

/// Beats on `<prefix>.watch` once a second, for as long as it is polled: nodes with
/// `completion_records = "watched"` publish their completion records while beats come
/// (`WIRE.md`, "Completion records"). A beat that cannot be published (disconnected) is
/// skipped; the connection state says why.
pub(crate) async fn watch_beats(transport: &NatsTransport) {
    use happen_nats::completion::{WATCH_EVERY, watch_subject};
    let subject = watch_subject(&transport.config().prefix);
    let mut every = tokio::time::interval(WATCH_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let _ = transport
            .client()
            .publish(subject.clone(), bytes::Bytes::new())
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads() {
        assert_eq!(payload(None).unwrap(), Value::Null);
        assert_eq!(payload(Some("7")).unwrap(), serde_json::json!(7));
        assert_eq!(payload(Some(r#"{"a":1}"#)).unwrap()["a"], 1);
        let e = payload(Some("ada")).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidPayload);
        assert!(e.message().contains("quote text"), "{e}");
    }
}
