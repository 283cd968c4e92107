//! `[transport.nats.auth]` and `[transport.nats.tls]`, and keeping secrets out of `Debug` and
//! error messages.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::NatsConfig;

/// `[transport.nats.auth]`: user and password, a token, an nkey seed, or a credentials file.
///
/// ```
/// let mut nats = happen_nats::NatsConfig::with_server("tls://nats.example.com:4222");
/// nats.auth.user = Some("orders".to_owned());
/// nats.auth.password = Some("s3cret".to_owned());
/// nats.validate()?;
/// assert!(format!("{:?}", nats.auth).contains(r#"password: Some("***")"#));
/// # Ok::<(), happen::Error>(())
/// ```
///
/// `Debug` prints the password, the token and the seed as `"***"` (the user name and the
/// credentials file's path are shown: they are not secret).
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct AuthConfig {
    /// User name (needs `password`).
    pub user: Option<String>,
    /// Password (needs `user`).
    pub password: Option<String>,
    /// Token.
    pub token: Option<String>,
    /// NKey seed (`SU...`).
    pub nkey: Option<String>,
    /// A `.creds` file (JWT + nkey seed).
    pub credentials_file: Option<PathBuf>,
}

/// Shown instead of a secret by `Debug`.
const HIDDEN: &str = "***";

impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hide = |s: &Option<String>| s.as_ref().map(|_| HIDDEN);
        f.debug_struct("AuthConfig")
            .field("user", &self.user)
            .field("password", &hide(&self.password))
            .field("token", &hide(&self.token))
            .field("nkey", &hide(&self.nkey))
            .field("credentials_file", &self.credentials_file)
            .finish()
    }
}

/// `url` with the password of its user info (`scheme://user:password@host`) replaced by
/// `***`; a user info without a password (a token, `scheme://token@host`) is hidden whole.
pub(crate) fn redact_url(url: &str) -> String {
    // async-nats reads a URL without a scheme as `nats://<url>`
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (&url[..scheme.len() + 3], rest),
        None => ("", url),
    };
    // the user info ends at the last `@` before the path
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    let (userinfo, host) = (&rest[..at], &rest[at..]);
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}{user}:{HIDDEN}{host}"),
        None => format!("{scheme}{HIDDEN}{host}"),
    }
}

/// The server URLs with their passwords hidden (see [`redact_url`]).
pub(crate) fn redacted_servers(servers: &[String]) -> Vec<String> {
    servers.iter().map(|s| redact_url(s)).collect()
}

/// `[transport.nats.tls]`: TLS to the server (required, or as the URL's `tls://` scheme
/// asks), the CA to trust, a client certificate.
///
/// ```
/// let config = happen::Config::from_toml_str(r#"
/// [transport.nats]
/// servers = ["tls://nats.example.com:4222"]
/// [transport.nats.tls]
/// required = true
/// ca_file = "/etc/nats/ca.pem"
/// "#)?;
/// let nats = happen_nats::NatsConfig::from_happen(&config)?;
/// assert!(nats.tls.required);
/// # Ok::<(), happen::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct TlsConfig {
    /// Require TLS.
    pub required: bool,
    /// Extra root certificates (PEM).
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM; needs `key_file`).
    pub cert_file: Option<PathBuf>,
    /// Client key (PEM; needs `cert_file`).
    pub key_file: Option<PathBuf>,
    /// TLS handshake before the NATS protocol (server `handshake_first`).
    pub handshake_first: bool,
}

impl NatsConfig {
    /// The credentials of the first server URL that has some: `(user, Some(password))` or
    /// `(token, None)`, percent-decoded.
    pub(crate) fn url_credentials(&self) -> Option<(String, Option<String>)> {
        self.servers.iter().find_map(|s| {
            let addr = s.parse::<async_nats::ServerAddr>().ok()?;
            let user = percent_decode(addr.username()?);
            Some((user, addr.password().map(percent_decode)))
        })
    }
}

/// Decodes `%XX` escapes (as URLs carry reserved characters of user names and passwords).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_passwords() {
        assert_eq!(
            redact_url("nats://app:pw@127.0.0.1:4222"),
            "nats://app:***@127.0.0.1:4222"
        );
        assert_eq!(redact_url("tls://tok@host:1/x@y"), "tls://***@host:1/x@y");
        assert_eq!(redact_url("nats://a:b:c@h"), "nats://a:***@h");
        assert_eq!(redact_url("nats://a:p@ss@h"), "nats://a:***@h");
        assert_eq!(redact_url("nats://host:4222"), "nats://host:4222");
        assert_eq!(redact_url("host:4222"), "host:4222");
        assert_eq!(redact_url("user:pw@host:4222"), "user:***@host:4222");
    }

    #[test]
    fn credentials_come_from_the_url() {
        let c = NatsConfig::with_server("nats://app:p%40ss@127.0.0.1:4222");
        assert_eq!(
            c.url_credentials(),
            Some(("app".to_owned(), Some("p@ss".to_owned())))
        );
        let c = NatsConfig::with_server("nats://t0k3n@127.0.0.1:4222");
        assert_eq!(c.url_credentials(), Some(("t0k3n".to_owned(), None)));
        assert_eq!(NatsConfig::default().url_credentials(), None);
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%zz%41"), "%zzA");
    }
}
