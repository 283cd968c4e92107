//! The async-nats connect options of a [`NatsConfig`].

use happen::Result;

use super::{NatsConfig, invalid};

impl NatsConfig {
    /// Builds the async-nats connect options (everything but the server list).
    pub(crate) async fn connect_options(&self) -> Result<async_nats::ConnectOptions> {
        let mut o = async_nats::ConnectOptions::new()
            .name(&self.name)
            .subscription_capacity(self.subscription_capacity)
            .client_capacity(self.client_capacity)
            .connection_timeout(self.connect_timeout)
            .request_timeout(Some(self.effective_request_timeout()))
            .max_reconnects(self.reconnect.max_attempts);
        let backoff = self.reconnect.backoff();
        o = o.reconnect_delay_callback(move |attempts| backoff.delay(attempts));
        // `retry_on_initial_connect` is handled by `NatsTransport::connect`
        let a = &self.auth;
        if let (Some(u), Some(p)) = (&a.user, &a.password) {
            o = o.user_and_password(u.clone(), p.clone());
        }
        let configured = a.user.is_some()
            || a.token.is_some()
            || a.nkey.is_some()
            || a.credentials_file.is_some();
        if !configured {
            match self.url_credentials() {
                Some((user, Some(password))) => o = o.user_and_password(user, password),
                Some((token, None)) => o = o.token(token),
                None => {}
            }
        }
        if let Some(t) = &a.token {
            o = o.token(t.clone());
        }
        if let Some(seed) = &a.nkey {
            o = o.nkey(seed.clone());
        }
        if let Some(path) = &a.credentials_file {
            o = o.credentials_file(path).await.map_err(|e| {
                invalid(
                    "auth.credentials_file",
                    format!("cannot read `{}`: {e}", path.display()),
                )
            })?;
        }
        let t = &self.tls;
        if t.required {
            o = o.require_tls(true);
        }
        if let Some(ca) = &t.ca_file {
            o = o.add_root_certificates(ca.clone());
        }
        if let (Some(c), Some(k)) = (&t.cert_file, &t.key_file) {
            o = o.add_client_certificate(c.clone(), k.clone());
        }
        if t.handshake_first {
            o = o.tls_first();
        }
        Ok(o)
    }
}
