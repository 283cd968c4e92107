//! `[transport.nats]`: connection settings, parsed strictly (unknown keys are errors naming
//! the key).
//!
//! Durations are `Duration`s in Rust and whole milliseconds in a file, under keys ending in
//! `_ms` (`request_timeout_ms = 5000` sets [`NatsConfig::request_timeout`]), as the core's
//! [`happen::config::millis`] does.
//!
//! ```
//! let config = happen::Config::from_toml_str(r#"
//! [transport.nats]
//! servers = ["nats://127.0.0.1:4333"]
//! name = "orders"
//! request_timeout_ms = 5000
//! [transport.nats.auth]
//! user = "app"
//! password = "secret"
//! [transport.nats.reconnect]
//! max_attempts = 10
//! "#)?;
//! let nats = happen_nats::NatsConfig::from_happen(&config)?;
//! assert_eq!(nats.name, "orders");
//! assert_eq!(nats.request_timeout, Some(std::time::Duration::from_secs(5)));
//!
//! let bad = happen::Config::from_toml_str("[transport.nats]\nserver = \"x\"\n")?;
//! let err = happen_nats::NatsConfig::from_happen(&bad).unwrap_err();
//! assert!(err.message().contains("server"), "{err}");
//! # Ok::<(), happen::Error>(())
//! ```

mod auth;
mod backoff;
mod completions;
mod durable;
mod liveness;
mod options;
mod reconnect;

use std::fmt;
use std::time::Duration;

use happen::{Error, ErrorKind, Result};
use serde::{Deserialize, Serialize};

pub(crate) use auth::redacted_servers;
pub use auth::{AuthConfig, TlsConfig};
pub(crate) use backoff::Backoff;
pub use completions::CompletionRecords;
pub use durable::{DeliveryMode, DurableConfig, DurableNode};
pub use liveness::LivenessConfig;
pub use reconnect::ReconnectConfig;

/// Settings of the NATS transport (`[transport.nats]`). Every key is optional: read them
/// from a happen configuration ([`from_happen`](NatsConfig::from_happen)), or start from
/// [`with_server`](NatsConfig::with_server) (or `default()`) and set fields.
///
/// ```
/// use happen_nats::NatsConfig;
///
/// let mut config = NatsConfig::with_server("nats://127.0.0.1:4222");
/// config.servers.push("nats://127.0.0.1:4223".to_owned()); // another member of a cluster
/// config.prefix = "shop".to_owned();
/// config.auth.token = Some("s3cret".to_owned());
/// config.reconnect.max_attempts = Some(10);
/// config.validate()?;
/// assert!(!format!("{config:?}").contains("s3cret"));
/// # Ok::<(), happen::Error>(())
/// ```
///
/// `Debug` does not show secrets: passwords, tokens and nkey seeds print as `"***"`, and so
/// does a password inside a server URL (`nats://user:***@host`).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct NatsConfig {
    /// Server URLs (default `["nats://127.0.0.1:4222"]`). A URL may carry credentials
    /// (`nats://user:password@host:port`, or `nats://token@host:port`): they are used when
    /// `auth` sets none (the first URL that has any; async-nats itself ignores them).
    pub servers: Vec<String>,
    /// Connection name shown by the server (default `happen`).
    pub name: String,
    /// Subject prefix (default `happen`, as the reference implementation).
    pub prefix: String,
    /// Authentication; at most one method.
    pub auth: AuthConfig,
    /// TLS.
    pub tls: TlsConfig,
    /// How long a stream producer waits for credit before giving up on a silent consumer
    /// (default 30 s; with [`from_happen`](NatsConfig::from_happen), the instance's
    /// `flow.request_timeout`; see
    /// [`effective_request_timeout`](NatsConfig::effective_request_timeout)). In a file:
    /// `request_timeout_ms`, in milliseconds.
    #[serde(rename = "request_timeout_ms", with = "opt_millis")]
    pub request_timeout: Option<Duration>,
    /// Timeout of one connection attempt (default 5 s). In a file: `connect_timeout_ms`.
    #[serde(rename = "connect_timeout_ms", with = "happen::config::millis")]
    pub connect_timeout: Duration,
    /// Reconnection policy.
    pub reconnect: ReconnectConfig,
    /// Keep retrying when the server is unreachable at start-up instead of failing (default
    /// `false`): `connect` waits, paced and bounded as reconnects (`reconnect`). A refused
    /// login or a TLS failure still fails at once.
    pub retry_on_initial_connect: bool,
    /// Messages each subscription buffers before the client drops (and counts) the overflow
    /// (default 1,048,576; async-nats' own default of 65,536 loses messages under bursts).
    pub subscription_capacity: usize,
    /// Commands the client buffers towards the server (default 4,096; what waits here and in
    /// `outbound_buffer` is the process's outgoing backlog, held in memory).
    pub client_capacity: usize,
    /// Outgoing events buffered by the transport before `send` and `broadcast` fail (default
    /// 8,192; see [`NatsTransport::ready`](crate::NatsTransport::ready) to pace a producer
    /// instead). Also the size of the durable outgoing buffer: durable sends and tells
    /// waiting to be stored in JetStream.
    pub outbound_buffer: usize,
    /// Sends, tells and broadcasts accepted while the client is disconnected, per outage
    /// (default 8,192, or `outbound_buffer` if that is smaller; see
    /// [`disconnected_bound`](NatsConfig::disconnected_bound)): they wait, in order, and are
    /// written to the server after the reconnect; beyond the bound they fail at once with
    /// [`ErrorKind::Transport`]. `0` fails every send while disconnected. At most
    /// `outbound_buffer`.
    pub disconnected_buffer: Option<usize>,
    /// Largest accepted incoming event in bytes (default: the server's `max_payload`).
    pub max_message_bytes: Option<usize>,
    /// Credit a consumer grants a remote stream producer: the most items in flight (default 256).
    pub stream_window: usize,
    /// Event types whose broadcasts carry a stream produced by a remote node (exact types).
    /// Broadcasts of these types, and of types a node of this process streams, are marked
    /// `Happen-Stream: broadcast`; only marked broadcasts are streamed to other processes (see
    /// `WIRE.md`, "Broadcast streams").
    pub stream_types: Vec<String>,
    /// Per-node buffer of a broadcast stream received from another process (default: the
    /// instance's `streams.broadcast_buffer` with [`from_happen`](NatsConfig::from_happen),
    /// else 256).
    pub broadcast_buffer: Option<usize>,
    /// Durable delivery on JetStream for some node ids (`[transport.nats.durable]`; see
    /// [`DurableConfig`]). Off by default.
    pub durable: DurableConfig,
    /// Heartbeats and fast failure of requests whose replica went away
    /// (`[transport.nats.liveness]`; see [`LivenessConfig`]). On by default.
    pub liveness: LivenessConfig,
    /// Completion records of tells and broadcasts for watchers such as `happen web`
    /// (`completion_records = "off" | "watched" | "always"`; see [`CompletionRecords`]).
    /// Off by default.
    pub completion_records: CompletionRecords,
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            servers: vec!["nats://127.0.0.1:4222".to_owned()],
            name: "happen".to_owned(),
            prefix: "happen".to_owned(),
            auth: AuthConfig::default(),
            tls: TlsConfig::default(),
            request_timeout: None,
            connect_timeout: Duration::from_secs(5),
            reconnect: ReconnectConfig::default(),
            retry_on_initial_connect: false,
            subscription_capacity: 1 << 20,
            client_capacity: 4_096,
            outbound_buffer: 8_192,
            disconnected_buffer: None,
            max_message_bytes: None,
            stream_window: 256,
            stream_types: Vec::new(),
            broadcast_buffer: None,
            durable: DurableConfig::default(),
            liveness: LivenessConfig::default(),
            completion_records: CompletionRecords::Off,
        }
    }
}

/// Default of `disconnected_buffer` (when `outbound_buffer` is not smaller).
const DEFAULT_DISCONNECTED_BUFFER: usize = 8192;

/// Default of `request_timeout` (without [`NatsConfig::from_happen`]).
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The shortest duration a file can hold (its keys are whole milliseconds).
const ONE_MS: Duration = Duration::from_millis(1);

/// An `Option<Duration>` as whole milliseconds in a file (absent: `None`), as
/// [`happen::config::millis`] does for a `Duration`.
mod opt_millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `Some(d)` as whole milliseconds (rounded down), `None` as nothing.
    pub(super) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            None => s.serialize_none(),
        }
    }

    /// Reads whole milliseconds (or `null`).
    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}

impl fmt::Debug for NatsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // every field, so a new one cannot be forgotten silently
        let NatsConfig {
            servers,
            name,
            prefix,
            auth,
            tls,
            request_timeout,
            connect_timeout,
            reconnect,
            retry_on_initial_connect,
            subscription_capacity,
            client_capacity,
            outbound_buffer,
            disconnected_buffer,
            max_message_bytes,
            stream_window,
            stream_types,
            broadcast_buffer,
            durable,
            liveness,
            completion_records,
        } = self;
        f.debug_struct("NatsConfig")
            .field("servers", &redacted_servers(servers))
            .field("name", name)
            .field("prefix", prefix)
            .field("auth", auth)
            .field("tls", tls)
            .field("request_timeout", request_timeout)
            .field("connect_timeout", connect_timeout)
            .field("reconnect", reconnect)
            .field("retry_on_initial_connect", retry_on_initial_connect)
            .field("subscription_capacity", subscription_capacity)
            .field("client_capacity", client_capacity)
            .field("outbound_buffer", outbound_buffer)
            .field("disconnected_buffer", disconnected_buffer)
            .field("max_message_bytes", max_message_bytes)
            .field("stream_window", stream_window)
            .field("stream_types", stream_types)
            .field("broadcast_buffer", broadcast_buffer)
            .field("durable", durable)
            .field("liveness", liveness)
            .field("completion_records", completion_records)
            .finish()
    }
}

fn invalid(key: &str, problem: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorKind::InvalidConfig,
        format!("invalid config `transport.nats.{key}`: {problem}"),
    )
}

impl NatsConfig {
    /// Settings for one server URL, everything else default.
    ///
    /// ```
    /// let config = happen_nats::NatsConfig::with_server("nats://127.0.0.1:4333");
    /// assert_eq!(config.servers, ["nats://127.0.0.1:4333"]);
    /// assert_eq!(config.prefix, "happen");
    /// ```
    pub fn with_server(url: impl Into<String>) -> NatsConfig {
        NatsConfig {
            servers: vec![url.into()],
            ..NatsConfig::default()
        }
    }

    /// Reads `[transport.nats]` of a happen configuration (defaults when absent); the request
    /// timeout defaults to the instance's `flow.request_timeout`, the broadcast-stream
    /// buffer to its `streams.broadcast_buffer`.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let config = happen::Config::from_toml_str(r#"
    /// [flow]
    /// request_timeout_ms = 2000
    /// [transport.nats]
    /// servers = ["nats://127.0.0.1:4333"]
    /// "#)?;
    /// let nats = happen_nats::NatsConfig::from_happen(&config)?;
    /// assert_eq!(nats.request_timeout, Some(Duration::from_secs(2)));
    ///
    /// // no `[transport.nats]`: the defaults
    /// let nats = happen_nats::NatsConfig::from_happen(&happen::Config::default())?;
    /// assert_eq!(nats.servers, ["nats://127.0.0.1:4222"]);
    /// # Ok::<(), happen::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`ErrorKind::InvalidConfig`] naming the offending key (`transport.nats.<key>`).
    pub fn from_happen(config: &happen::Config) -> Result<NatsConfig> {
        let mut nats = match config.transport.section("nats") {
            Some(v) => NatsConfig::from_value(v)?,
            None => NatsConfig::default(),
        };
        if nats.request_timeout.is_none() {
            nats.request_timeout = Some(config.flow.request_timeout);
        }
        if nats.broadcast_buffer.is_none() {
            nats.broadcast_buffer = Some(config.streams.broadcast_buffer);
        }
        Ok(nats)
    }

    /// Parses the JSON form of `[transport.nats]` and validates it.
    ///
    /// ```
    /// use serde_json::json;
    ///
    /// let nats = happen_nats::NatsConfig::from_value(&json!({"prefix": "shop"}))?;
    /// assert_eq!(nats.prefix, "shop");
    /// let err = happen_nats::NatsConfig::from_value(&json!({"prefx": "shop"})).unwrap_err();
    /// assert!(err.message().contains("prefx"), "{err}");
    /// # Ok::<(), happen::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`ErrorKind::InvalidConfig`] naming the offending key.
    pub fn from_value(value: &serde_json::Value) -> Result<NatsConfig> {
        let config: NatsConfig = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let key = if path == "." { String::new() } else { path };
            // serde names an unknown key in its message; the path names its parent table
            invalid(&key, inner).with_key_hint()
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every value ([`NatsTransport::connect`](crate::NatsTransport::connect) does it
    /// too).
    ///
    /// ```
    /// let mut nats = happen_nats::NatsConfig::default();
    /// nats.validate()?;
    /// nats.auth.user = Some("app".to_owned()); // without a password
    /// let err = nats.validate().unwrap_err();
    /// assert!(err.message().contains("transport.nats.auth"), "{err}");
    /// # Ok::<(), happen::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`ErrorKind::InvalidConfig`] naming the offending key.
    pub fn validate(&self) -> Result<()> {
        if self.servers.is_empty() {
            return Err(invalid("servers", "give at least one server URL"));
        }
        for s in &self.servers {
            s.parse::<async_nats::ServerAddr>()
                .map_err(|e| invalid("servers", format!("`{s}` is not a NATS URL: {e}")))?;
        }
        if self.prefix.is_empty()
            || self
                .prefix
                .split('.')
                .any(|t| t.is_empty() || t.contains(['*', '>', ' ', '\t']))
        {
            return Err(invalid(
                "prefix",
                format!(
                    "`{}` is not a valid subject prefix (dot-separated tokens without wildcards or spaces)",
                    self.prefix
                ),
            ));
        }
        let a = &self.auth;
        if a.user.is_some() != a.password.is_some() {
            return Err(invalid("auth", "`user` and `password` go together"));
        }
        let methods = [
            a.user.is_some(),
            a.token.is_some(),
            a.nkey.is_some(),
            a.credentials_file.is_some(),
        ]
        .into_iter()
        .filter(|b| *b)
        .count();
        if methods > 1 {
            return Err(invalid(
                "auth",
                "choose one of user/password, token, nkey, credentials_file",
            ));
        }
        if self.tls.cert_file.is_some() != self.tls.key_file.is_some() {
            return Err(invalid("tls", "`cert_file` and `key_file` go together"));
        }
        for (key, v) in [
            ("subscription_capacity", self.subscription_capacity),
            ("client_capacity", self.client_capacity),
            ("outbound_buffer", self.outbound_buffer),
            ("stream_window", self.stream_window),
        ] {
            if v == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        if let Some(n) = self.disconnected_buffer
            && n > self.outbound_buffer
        {
            return Err(invalid(
                "disconnected_buffer",
                format!(
                    "{n} is more than `outbound_buffer` ({}); lower it or raise `outbound_buffer`",
                    self.outbound_buffer
                ),
            ));
        }
        if self.max_message_bytes == Some(0) {
            return Err(invalid("max_message_bytes", "must be at least 1"));
        }
        if self.broadcast_buffer == Some(0) {
            return Err(invalid("broadcast_buffer", "must be at least 1"));
        }
        if self.request_timeout.is_some_and(|t| t < ONE_MS) {
            return Err(invalid("request_timeout_ms", "must be at least 1 ms"));
        }
        if self.connect_timeout < ONE_MS {
            return Err(invalid("connect_timeout_ms", "must be at least 1 ms"));
        }
        let l = &self.liveness;
        if l.enabled && l.heartbeat.is_zero() {
            return Err(invalid("liveness.heartbeat_ms", "must be at least 1"));
        }
        if l.enabled && l.detection < 2 * l.heartbeat {
            return Err(invalid(
                "liveness.detection_ms",
                format!(
                    "must span at least two heartbeats (`liveness.heartbeat_ms` = {})",
                    l.heartbeat.as_millis()
                ),
            ));
        }
        if self.reconnect.delay > self.reconnect.max_delay {
            return Err(invalid(
                "reconnect.delay_ms",
                "must not exceed `reconnect.max_delay_ms`",
            ));
        }
        self.durable.validate()?;
        Ok(())
    }

    /// How many sends are buffered per outage while disconnected: `disconnected_buffer`, by
    /// default 8,192 or `outbound_buffer` if that is smaller.
    ///
    /// ```
    /// let mut c = happen_nats::NatsConfig::default();
    /// assert_eq!(c.disconnected_bound(), 8192);
    /// c.outbound_buffer = 100;
    /// assert_eq!(c.disconnected_bound(), 100);
    /// c.disconnected_buffer = Some(0);
    /// assert_eq!(c.disconnected_bound(), 0);
    /// ```
    pub fn disconnected_bound(&self) -> usize {
        self.disconnected_buffer
            .unwrap_or(DEFAULT_DISCONNECTED_BUFFER.min(self.outbound_buffer))
    }

    /// The request timeout in effect: [`request_timeout`](NatsConfig::request_timeout), by
    /// default 30 s ([`from_happen`](NatsConfig::from_happen) sets the instance's
    /// `flow.request_timeout`).
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let mut nats = happen_nats::NatsConfig::default();
    /// assert_eq!(nats.effective_request_timeout(), Duration::from_secs(30));
    /// nats.request_timeout = Some(Duration::from_millis(500));
    /// assert_eq!(nats.effective_request_timeout(), Duration::from_millis(500));
    /// ```
    pub fn effective_request_timeout(&self) -> Duration {
        self.request_timeout.unwrap_or(DEFAULT_REQUEST_TIMEOUT)
    }

    /// Makes the node ids matching `pattern` durable with `node`'s settings (see
    /// [`DurableConfig`]; every process must be configured alike).
    ///
    /// ```
    /// use happen_nats::{DeliveryMode, DurableNode};
    /// let nats = happen_nats::NatsConfig::with_server("nats://127.0.0.1:4222")
    ///     .with_durable("orders", DurableNode::new(DeliveryMode::AtLeastOnce));
    /// assert!(nats.durable.node("orders").is_some());
    /// ```
    pub fn with_durable(mut self, pattern: impl Into<String>, node: DurableNode) -> NatsConfig {
        self.durable.nodes.insert(pattern.into(), node);
        self
    }
}

trait KeyHint {
    fn with_key_hint(self) -> Self;
}

impl KeyHint for Error {
    /// Adds "remove it or check the spelling" to unknown-key errors.
    fn with_key_hint(self) -> Self {
        if self.message().contains("unknown field") {
            Error::new(
                self.kind(),
                format!("{}; remove the key or check its spelling", self.message()),
            )
        } else {
            self
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_keys_are_named() {
        let err =
            NatsConfig::from_value(&json!({"servers": ["nats://x:1"], "bogus": 1})).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidConfig);
        assert!(err.message().contains("bogus"), "{err}");
        let err = NatsConfig::from_value(&json!({"auth": {"usr": "a"}})).unwrap_err();
        assert!(err.message().contains("usr"), "{err}");
        assert!(err.message().contains("transport.nats.auth"), "{err}");
    }

    #[test]
    fn wrong_types_and_bad_values_are_named() {
        let err = NatsConfig::from_value(&json!({"stream_window": "big"})).unwrap_err();
        assert!(err.message().contains("stream_window"), "{err}");
        let err = NatsConfig::from_value(&json!({"auth": {"user": "a"}})).unwrap_err();
        assert!(err.message().contains("password"), "{err}");
        let err = NatsConfig::from_value(&json!({"prefix": "a.*"})).unwrap_err();
        assert!(err.message().contains("prefix"), "{err}");
    }

    #[test]
    fn the_disconnected_buffer_is_bounded_by_the_outbound_buffer() {
        let c = NatsConfig::from_value(&json!({"disconnected_buffer": 0})).unwrap();
        assert_eq!(c.disconnected_bound(), 0);
        let c = NatsConfig::from_value(&json!({"outbound_buffer": 10, "disconnected_buffer": 10}))
            .unwrap();
        assert_eq!(c.disconnected_bound(), 10);
        // the default follows a smaller outgoing buffer instead of failing
        let c = NatsConfig::from_value(&json!({"outbound_buffer": 1})).unwrap();
        assert_eq!(c.disconnected_bound(), 1);
        let err =
            NatsConfig::from_value(&json!({"outbound_buffer": 10, "disconnected_buffer": 11}))
                .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidConfig);
        assert!(err.message().contains("disconnected_buffer"), "{err}");
        let err = NatsConfig::from_value(&json!({"disconnected_buffer": -1})).unwrap_err();
        assert!(err.message().contains("disconnected_buffer"), "{err}");
        let err = NatsConfig::from_value(&json!({"disconnected_bufer": 1})).unwrap_err();
        assert!(err.message().contains("disconnected_bufer"), "{err}");
    }

    /// The `Duration` fields keep their file keys (`*_ms`, whole milliseconds), both ways.
    #[test]
    fn durations_keep_their_file_keys() {
        let ms = Duration::from_millis;
        let file = json!({
            "request_timeout_ms": 1500,
            "connect_timeout_ms": 250,
            "reconnect": {"delay_ms": 20, "max_delay_ms": 400},
            "durable": {
                "dedup_window_ms": 60000,
                "nodes": {"orders": {"backoff_ms": 50, "max_backoff_ms": 500, "ack_wait_ms": 2000}}
            }
        });
        let c = NatsConfig::from_value(&file).unwrap();
        assert_eq!(c.request_timeout, Some(ms(1500)));
        assert_eq!(
            (c.connect_timeout, c.effective_request_timeout()),
            (ms(250), ms(1500))
        );
        assert_eq!(
            (c.reconnect.delay, c.reconnect.max_delay),
            (ms(20), ms(400))
        );
        assert_eq!(c.durable.dedup_window, ms(60_000));
        let n = c.durable.node("orders").unwrap();
        assert_eq!(
            (n.backoff, n.max_backoff, n.ack_wait),
            (ms(50), ms(500), ms(2000))
        );

        let written = serde_json::to_value(&c).unwrap();
        for (path, value) in [
            ("/request_timeout_ms", 1500),
            ("/connect_timeout_ms", 250),
            ("/reconnect/delay_ms", 20),
            ("/reconnect/max_delay_ms", 400),
            ("/durable/dedup_window_ms", 60_000),
            ("/durable/nodes/orders/backoff_ms", 50),
            ("/durable/nodes/orders/max_backoff_ms", 500),
            ("/durable/nodes/orders/ack_wait_ms", 2000),
        ] {
            assert_eq!(written.pointer(path), Some(&json!(value)), "{path}");
        }
        assert_eq!(NatsConfig::from_value(&written).unwrap(), c);

        // TOML too; an unset request timeout is left out (and read back as unset)
        let toml = toml::to_string(&NatsConfig::default()).unwrap();
        assert!(toml.contains("connect_timeout_ms = 5000"), "{toml}");
        assert!(toml.contains("dedup_window_ms = 300000"), "{toml}");
        assert!(!toml.contains("request_timeout"), "{toml}");
        let back: NatsConfig = toml::from_str(&toml).unwrap();
        assert_eq!(back, NatsConfig::default());
        let toml = toml::to_string(&c).unwrap();
        assert!(toml.contains("request_timeout_ms = 1500"), "{toml}");
        assert_eq!(toml::from_str::<NatsConfig>(&toml).unwrap(), c);

        // the Rust names are not file keys
        for key in ["request_timeout", "connect_timeout"] {
            let err = NatsConfig::from_value(&json!({ key: 5 })).unwrap_err();
            assert!(err.message().contains(key), "{err}");
        }
        let err = NatsConfig::from_value(&json!({"request_timeout_ms": -1})).unwrap_err();
        assert!(err.message().contains("request_timeout_ms"), "{err}");
    }

    /// Validation names the file keys, for values set in code too.
    #[test]
    fn duration_checks_name_the_file_keys() {
        let err = NatsConfig::from_value(&json!({"request_timeout_ms": 0})).unwrap_err();
        assert!(
            err.message().contains("transport.nats.request_timeout_ms"),
            "{err}"
        );
        let rejects = |change: &dyn Fn(&mut NatsConfig), key: &str| {
            let mut c = NatsConfig::default();
            change(&mut c);
            let err = c.validate().unwrap_err();
            assert!(err.message().contains(key), "{err}");
        };
        rejects(
            &|c| c.request_timeout = Some(Duration::from_micros(10)),
            "request_timeout_ms",
        );
        rejects(
            &|c| c.connect_timeout = Duration::ZERO,
            "connect_timeout_ms",
        );
        rejects(
            &|c| c.reconnect.delay = Duration::from_secs(5),
            "reconnect.delay_ms",
        );
        rejects(
            &|c| c.durable.dedup_window = Duration::ZERO,
            "durable.dedup_window_ms",
        );
        let c = NatsConfig::default().with_durable(
            "orders",
            DurableNode::default().with_ack_wait(Duration::from_millis(99)),
        );
        let err = c.validate().unwrap_err();
        assert!(err.message().contains("ack_wait_ms"), "{err}");
        let c = NatsConfig::default().with_durable(
            "orders",
            DurableNode::default().with_backoff(Duration::from_secs(2), Duration::from_secs(1)),
        );
        let err = c.validate().unwrap_err();
        assert!(err.message().contains("backoff_ms"), "{err}");
    }

    #[test]
    fn defaults_are_valid() {
        NatsConfig::default().validate().unwrap();
        let c = NatsConfig::from_value(&json!({})).unwrap();
        assert_eq!(c, NatsConfig::default());
    }
}
