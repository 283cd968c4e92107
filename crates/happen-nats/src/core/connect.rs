//! Connecting: one async-nats connect per attempt, retried while the server is unreachable
//! when `retry_on_initial_connect` asks for it, and a failure explained in terms of the
//! settings to check.

use async_nats::Client;
use happen::{Error, ErrorKind, Result};
use tokio::sync::mpsc;

use crate::config::{NatsConfig, redacted_servers};

/// Connects with `config`; the client's connection events go to the returned receiver.
///
/// # Errors
/// As [`NatsTransport::connect`](crate::NatsTransport::connect).
pub(crate) async fn connect(
    config: &NatsConfig,
) -> Result<(Client, mpsc::UnboundedReceiver<async_nats::Event>)> {
    let (ev_tx, ev_rx) = mpsc::unbounded_channel();
    // `retry_on_initial_connect` is ours, not async-nats' (whose background loop retries
    // a refused login forever, also after the caller gave up): one pass over the servers
    // per attempt, paced like reconnects and bounded by `reconnect.max_attempts`; a
    // refused login or a TLS failure ends it at once.
    let mut attempts = 0;
    loop {
        let ev_tx = ev_tx.clone();
        let options = config
            .connect_options()
            .await?
            .event_callback(move |event| {
                let ev_tx = ev_tx.clone();
                async move {
                    let _ = ev_tx.send(event);
                }
            });
        match options.connect(config.servers.clone()).await {
            Ok(client) => return Ok((client, ev_rx)),
            Err(e)
                if config.retry_on_initial_connect
                    && is_retryable(&e)
                    && config
                        .reconnect
                        .max_attempts
                        .is_none_or(|max| attempts < max) =>
            {
                attempts += 1;
                tracing::info!(target: "happen_nats", attempts, error = %e, "cannot reach nats yet; retrying (retry_on_initial_connect)");
                tokio::time::sleep(config.reconnect.backoff().delay(attempts)).await;
            }
            Err(e) => return Err(connect_error(config, e)),
        }
    }
}

/// Explains a failed connection: what went wrong and which setting to check, as
/// [`ErrorKind::Auth`] (credentials refused), [`ErrorKind::Tls`] (TLS set-up failed) or
/// [`ErrorKind::Transport`] (anything else, such as an unreachable server).
fn connect_error(config: &NatsConfig, e: async_nats::ConnectError) -> Error {
    use async_nats::ConnectErrorKind as Kind;
    let servers = redacted_servers(&config.servers);
    let a = &config.auth;
    let method = if a.user.is_some() {
        "user and password"
    } else if a.token.is_some() {
        "token"
    } else if a.nkey.is_some() {
        "nkey"
    } else if a.credentials_file.is_some() {
        "credentials file"
    } else if config.url_credentials().is_some() {
        "credentials in the server URL"
    } else {
        "none configured"
    };
    let (kind, message) = match e.kind() {
        _ if is_tls_failure(&e) => (
            ErrorKind::Tls,
            format!(
                "TLS connection to nats at {servers:?} failed: {e}; if the server's certificate is not trusted, set transport.nats.tls.ca_file to the CA that signed it (and check that the certificate names the host in transport.nats.servers); check transport.nats.tls.cert_file/key_file if the server requires a client certificate"
            ),
        ),
        Kind::AuthorizationViolation | Kind::Authentication => (
            ErrorKind::Auth,
            format!(
                "authentication failed: the nats server at {servers:?} rejected this client's credentials (method: {method}); check transport.nats.auth (user/password, token, nkey seed or credentials_file) against the server's authorization settings: {e}"
            ),
        ),
        _ => (
            ErrorKind::Transport,
            format!(
                "cannot connect to nats at {servers:?}; is nats-server running? check transport.nats.servers: {e}"
            ),
        ),
    };
    Error::new(kind, message).with_source(e)
}

/// Is `e` a TLS failure? async-nats reports a certificate the client does not trust as an IO
/// error (rustls' error inside), not as `Tls`.
fn is_tls_failure(e: &async_nats::ConnectError) -> bool {
    use async_nats::ConnectErrorKind as Kind;
    e.kind() == Kind::Tls || (e.kind() == Kind::Io && mentions_tls(e))
}

/// Is `e` worth another attempt? A refused login or a TLS failure will not change by itself.
fn is_retryable(e: &async_nats::ConnectError) -> bool {
    use async_nats::ConnectErrorKind as Kind;
    !matches!(
        e.kind(),
        Kind::AuthorizationViolation | Kind::Authentication | Kind::ServerParse
    ) && !is_tls_failure(e)
}

/// Does `e` or an error it wraps talk about certificates or TLS?
fn mentions_tls(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(e) = next {
        let text = e.to_string().to_ascii_lowercase();
        if ["certificate", "tls", "handshake"]
            .iter()
            .any(|w| text.contains(w))
        {
            return true;
        }
        next = e.source();
    }
    false
}
