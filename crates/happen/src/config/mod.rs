//! Configuration: concurrency defaults and node-id pattern overrides, flows, streams,
//! transport and security sections. Loads from code, TOML or JSON.
//!
//! Keys are `snake_case`; the seed's `camelCase` spellings (`maxConcurrent`, `queueLimit`,
//! `queueStrategy`, `backpressureThreshold`) are accepted too. Unknown keys are errors.
//!
//! | section | type | holds |
//! |---|---|---|
//! | `[concurrency]` | [`ConcurrencyConfig`] | `default` [`Limits`], `patterns` ([`NodePatterns`] of [`PartialLimits`]) |
//! | `[flow]` | [`FlowConfig`] | `max_chain_depth`, `request_timeout_ms` |
//! | `[streams]` | [`StreamConfig`] | `buffer`, `broadcast_buffer` |
//! | `[cpu]` | [`CpuConfig`] | `threads` |
//! | `[transport.<name>]` | [`TransportConfig`] | one table per transport, read by its crate |
//! | `[security]` | [`SecurityConfig`] | `trust`, `nodes` (mode, seed, `accept_from`), `max_age_ms`, `max_future_ms` |
//! | `[state]` | [`StateConfig`] | stored state's `history`, `max_age_ms`, `patterns` |
//!
//! Durations are `Duration`s in Rust and whole milliseconds in a file (`request_timeout_ms =
//! 5000`; see [`millis`]). A [`Config`] reaches an instance through
//! [`Happen::with_config`](crate::Happen::with_config) or
//! [`HappenBuilder::config`](crate::HappenBuilder::config), which validate it; per node,
//! [`NodeOptions`](crate::NodeOptions) override it.
//!
//! # Choosing a node's limits
//! A node's limits are `concurrency.default` with at most one entry of `concurrency.patterns`
//! merged over it (only the keys the entry sets). The entry is chosen by:
//! 1. an entry without `*` that equals the node id exactly beats every glob;
//! 2. among matching globs, the one with the most literal (non-`*`) characters wins;
//! 3. ties go to the entry declared first.
//!
//! A glob's `*` matches any run of characters (including none) — unlike `*` in an event-type
//! pattern, which is exactly one dot-separated segment (see [`pattern`](crate::pattern)).
//!
//! ```
//! use happen::config::{Config, QueueStrategy};
//!
//! let config = Config::from_toml_str(r#"
//!     [concurrency.default]
//!     max_concurrent = 100
//!     queue_limit = 10000
//!     queue_strategy = "fifo"
//!     backpressure_threshold = 0.8
//!
//!     [concurrency.patterns."api-*"]
//!     max_concurrent = 200
//!     queue_limit = 20000
//!
//!     [concurrency.patterns."worker-*"]
//!     max_concurrent = 50
//!     queue_strategy = "priority"
//! "#)?;
//! let api = config.concurrency.limits_for("api-gateway");
//! assert_eq!((api.max_concurrent, api.queue_limit), (200, 20000));
//! assert_eq!(api.backpressure_threshold, 0.8); // inherited from the default
//! assert_eq!(config.concurrency.limits_for("worker-1").queue_strategy, QueueStrategy::Priority);
//! # Ok::<(), happen::Error>(())
//! ```

mod limits;
mod patterns;
mod security;
mod state;

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};

pub use limits::{BatchAdmission, Limits, PartialLimits, QueueStrategy};
pub use patterns::NodePatterns;
pub(crate) use patterns::glob_matches;
pub use security::{NodeSecurityConfig, SecurityConfig, SecurityMode};
pub use state::{MAX_HISTORY, PartialStateSettings, StateConfig, StateSettings};

/// The whole configuration of a [`Happen`](crate::Happen) instance.
///
/// Built in code from [`Config::default`] (the struct is `#[non_exhaustive]`: set its public
/// fields), or read with [`from_toml_str`](Config::from_toml_str),
/// [`from_json_str`](Config::from_json_str) or [`from_file`](Config::from_file).
///
/// ```
/// use std::time::Duration;
/// use happen::config::{Config, PartialLimits};
///
/// let mut config = Config::default();
/// config.concurrency.default.max_concurrent = 32;
/// config.concurrency = config
///     .concurrency
///     .with_pattern("worker-*", PartialLimits::default().with_max_concurrent(4));
/// config.flow.request_timeout = Duration::from_secs(5);
/// config.streams.buffer = 16;
/// config.cpu.threads = Some(2);
/// config.validate()?;
/// assert_eq!(config.concurrency.limits_for("worker-1").max_concurrent, 4);
/// assert_eq!(config.concurrency.limits_for("api").max_concurrent, 32);
/// # Ok::<(), happen::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct Config {
    /// Per-node admission control: defaults and node-id pattern overrides.
    pub concurrency: ConcurrencyConfig,
    /// Flow settings: chain depth, default request timeout.
    pub flow: FlowConfig,
    /// Streaming settings.
    pub streams: StreamConfig,
    /// CPU-bound work settings.
    pub cpu: CpuConfig,
    /// Transport settings: one table per transport (`[transport.nats]`), read by the crate
    /// of that transport. The in-process transport needs none.
    pub transport: TransportConfig,
    /// Node identity and the gates before admission: trust ring, keys, modes,
    /// `accept_from`, replay bounds (see [`security`](crate::security)).
    pub security: SecurityConfig,
    /// Stored state: history depth and age per node-id pattern.
    pub state: StateConfig,
}

/// `concurrency`: the default limits and node-id pattern overrides (the
/// [module docs](self) say which entry applies to a node).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct ConcurrencyConfig {
    /// Limits for every node no pattern overrides.
    pub default: Limits,
    /// Node-id patterns (`api-*`) with partial overrides, in declaration order.
    pub patterns: NodePatterns<PartialLimits>,
}

impl ConcurrencyConfig {
    /// The effective limits of the node `node_id`: the default with the best-matching pattern
    /// entry merged over it.
    ///
    /// ```
    /// use happen::Config;
    ///
    /// let config = Config::from_toml_str(r#"
    ///     [concurrency.default]
    ///     max_concurrent = 10
    ///     [concurrency.patterns."db-*"]
    ///     max_concurrent = 2
    ///     [concurrency.patterns."db-primary"]
    ///     queue_limit = 50
    /// "#)?;
    /// assert_eq!(config.concurrency.limits_for("db-replica").max_concurrent, 2);
    /// let primary = config.concurrency.limits_for("db-primary"); // the exact entry only
    /// assert_eq!((primary.max_concurrent, primary.queue_limit), (10, 50));
    /// assert_eq!(config.concurrency.limits_for("web").max_concurrent, 10);
    /// # Ok::<(), happen::Error>(())
    /// ```
    pub fn limits_for(&self, node_id: &str) -> Limits {
        match self.patterns.select(node_id) {
            Some((_, p)) => self.default.merged(p),
            None => self.default,
        }
    }

    /// Adds a node-id pattern override (builder style); a second override for the same
    /// pattern replaces the first.
    ///
    /// ```
    /// use happen::config::{ConcurrencyConfig, PartialLimits, QueueStrategy};
    ///
    /// let concurrency = ConcurrencyConfig::default()
    ///     .with_pattern("jobs-*", PartialLimits::default().with_queue_strategy(QueueStrategy::Priority));
    /// assert_eq!(concurrency.limits_for("jobs-1").queue_strategy, QueueStrategy::Priority);
    /// assert_eq!(concurrency.limits_for("web").queue_strategy, QueueStrategy::Fifo);
    /// ```
    pub fn with_pattern(mut self, pattern: impl Into<String>, limits: PartialLimits) -> Self {
        self.patterns.insert(pattern, limits);
        self
    }
}

/// `flow`: Event Continuum settings.
///
/// ```
/// use std::time::Duration;
/// use happen::Config;
///
/// let config = Config::from_toml_str("[flow]\nmax_chain_depth = 20\nrequest_timeout_ms = 2500")?;
/// assert_eq!(config.flow.max_chain_depth, 20);
/// assert_eq!(config.flow.request_timeout, Duration::from_millis(2500));
/// # Ok::<(), happen::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct FlowConfig {
    /// Most steps one flow may run, and most hops one causal chain may take (default 1000).
    #[serde(alias = "maxChainDepth")]
    pub max_chain_depth: usize,
    /// Default time a sender waits for a reply (default 30 s). In a file:
    /// `request_timeout_ms`, in milliseconds.
    #[serde(
        rename = "request_timeout_ms",
        alias = "requestTimeoutMs",
        with = "millis"
    )]
    pub request_timeout: Duration,
}

impl Default for FlowConfig {
    fn default() -> Self {
        FlowConfig {
            max_chain_depth: 1000,
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// A `Duration` written in a configuration file as whole milliseconds (`request_timeout_ms =
/// 5000`), the file format the reference uses. For fields of other crates' sections too:
/// `#[serde(with = "happen::config::millis")]`.
///
/// ```
/// use std::time::Duration;
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Retry {
///     #[serde(rename = "backoff_ms", with = "happen::config::millis")]
///     backoff: Duration,
/// }
///
/// let retry: Retry = serde_json::from_str(r#"{"backoff_ms": 250}"#).unwrap();
/// assert_eq!(retry.backoff, Duration::from_millis(250));
/// assert_eq!(serde_json::to_string(&retry).unwrap(), r#"{"backoff_ms":250}"#);
/// assert!(serde_json::from_str::<Retry>(r#"{"backoff_ms": -1}"#).is_err());
/// ```
pub mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `d` as whole milliseconds (rounded down).
    ///
    /// # Errors
    /// The serializer's.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    /// Reads whole milliseconds.
    ///
    /// # Errors
    /// The deserializer's, for anything but a non-negative integer.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

/// `streams`: streaming settings. A node may set its own buffer with
/// [`NodeOptions::stream_buffer`](crate::NodeOptions::stream_buffer).
///
/// ```
/// use happen::Config;
///
/// let config = Config::from_toml_str("[streams]\nbuffer = 8")?;
/// assert_eq!(config.streams.buffer, 8);
/// assert_eq!(config.streams.broadcast_buffer, 256); // the default
/// # Ok::<(), happen::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct StreamConfig {
    /// Items buffered between a streaming producer and its consumer (default 64).
    pub buffer: usize,
    /// Items buffered per subscriber of a broadcast stream before it lags (default 256;
    /// rounded up to a power of two, and the end-of-stream marker takes one slot).
    pub broadcast_buffer: usize,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            buffer: 64,
            broadcast_buffer: 256,
        }
    }
}

/// `cpu`: the pool for CPU-bound work (see [`cpu`](crate::cpu)). The pool starts on the
/// first CPU job, not with the instance.
///
/// ```
/// use happen::Config;
///
/// assert_eq!(Config::default().cpu.threads, None); // one per core
/// let config = Config::from_json_str(r#"{"cpu": {"threads": 2}}"#)?;
/// assert_eq!(config.cpu.threads, Some(2));
/// # Ok::<(), happen::Error>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct CpuConfig {
    /// Threads for CPU-bound work (default: the number of cores).
    pub threads: Option<usize>,
}

/// `transport`: settings of the transport in use, one table per transport
/// (`[transport.nats]`). The core keeps each table as it was read and hands it to the crate of
/// that transport, which validates it (`happen_nats::NatsConfig::from_happen` reads `nats`).
///
/// `{:?}` shows the table names only: transport tables hold credentials.
///
/// ```
/// use happen::Config;
///
/// let config = Config::from_toml_str(r#"
///     [transport.nats]
///     servers = ["nats://127.0.0.1:4222"]
///     auth = { user = "app", password = "s3cret" }
/// "#)?;
/// let nats = config.transport.section("nats").expect("the table is there");
/// assert_eq!(nats["servers"][0], "nats://127.0.0.1:4222");
/// assert!(!format!("{config:?}").contains("s3cret"));
/// # Ok::<(), happen::Error>(())
/// ```
#[derive(Clone, Default, PartialEq)]
pub struct TransportConfig {
    sections: BTreeMap<String, serde_json::Value>,
}

impl TransportConfig {
    /// The table `[transport.<name>]`, if the configuration has one.
    pub fn section(&self, name: &str) -> Option<&serde_json::Value> {
        self.sections.get(name)
    }

    /// Sets the table `[transport.<name>]` (for configurations built in code), replacing one
    /// of the same name.
    ///
    /// ```
    /// use happen::Config;
    /// use serde_json::json;
    ///
    /// let mut config = Config::default();
    /// config.transport.set_section("nats", json!({"servers": ["nats://10.0.0.1:4222"]}));
    /// assert_eq!(config.transport.names().collect::<Vec<_>>(), ["nats"]);
    /// assert_eq!(config.transport.section("nats").unwrap()["servers"][0], "nats://10.0.0.1:4222");
    /// ```
    pub fn set_section(&mut self, name: impl Into<String>, table: serde_json::Value) {
        self.sections.insert(name.into(), table);
    }

    /// The names of the tables present.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.sections.keys().map(String::as_str)
    }
}

impl fmt::Debug for TransportConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The tables may hold passwords, tokens and key seeds: names only.
        f.debug_map()
            .entries(self.sections.keys().map(|k| (k, "..")))
            .finish()
    }
}

impl Serialize for TransportConfig {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.sections.serialize(s)
    }
}

impl<'de> Deserialize<'de> for TransportConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        BTreeMap::deserialize(d).map(|sections| TransportConfig { sections })
    }
}

impl Config {
    /// Parses TOML and validates. Keys left out keep their defaults.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidConfig`](crate::ErrorKind::InvalidConfig) naming the offending key
    /// (a syntax error, an unknown key, a value of the wrong type or out of range).
    ///
    /// ```
    /// use happen::{Config, ErrorKind};
    ///
    /// let config = Config::from_toml_str("[concurrency.default]\nmax_concurrent = 8")?;
    /// assert_eq!(config.concurrency.default.max_concurrent, 8);
    /// assert_eq!(config.concurrency.default.queue_limit, 10_000); // the default
    ///
    /// let err = Config::from_toml_str("[concurrency.default]\nmax_concurent = 8").unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::InvalidConfig);
    /// assert!(err.message().contains("max_concurent"), "{err}");
    /// # Ok::<(), happen::Error>(())
    /// ```
    pub fn from_toml_str(s: &str) -> Result<Config> {
        let de = toml::Deserializer::new(s);
        let config: Config = serde_path_to_error::deserialize(de).map_err(path_error)?;
        config.validate()?;
        Ok(config)
    }

    /// Parses JSON and validates (the same keys as TOML).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidConfig`](crate::ErrorKind::InvalidConfig) naming the offending key.
    ///
    /// ```
    /// use happen::{Config, ErrorKind, QueueStrategy};
    ///
    /// let config = Config::from_json_str(r#"{
    ///     "concurrency": {"default": {"maxConcurrent": 4, "queueStrategy": "priority"}}
    /// }"#)?;
    /// assert_eq!(config.concurrency.default.max_concurrent, 4);
    /// assert_eq!(config.concurrency.default.queue_strategy, QueueStrategy::Priority);
    ///
    /// let err = Config::from_json_str(r#"{"flow": {"max_chain_depth": 0}}"#).unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::InvalidConfig);
    /// assert!(err.message().contains("flow.max_chain_depth"), "{err}");
    /// # Ok::<(), happen::Error>(())
    /// ```
    pub fn from_json_str(s: &str) -> Result<Config> {
        let mut de = serde_json::Deserializer::from_str(s);
        let config: Config = serde_path_to_error::deserialize(&mut de).map_err(path_error)?;
        config.validate()?;
        Ok(config)
    }

    /// Reads a `.toml` or `.json` file (chosen by the extension) and validates.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidConfig`](crate::ErrorKind::InvalidConfig) for an unreadable file, an
    /// unknown extension, or an invalid value (naming the key).
    ///
    /// ```
    /// use happen::{Config, ErrorKind};
    ///
    /// let path = std::env::temp_dir().join(format!("happen-doc-{}.toml", std::process::id()));
    /// std::fs::write(&path, "[streams]\nbuffer = 4\n").unwrap();
    /// let config = Config::from_file(&path)?;
    /// assert_eq!(config.streams.buffer, 4);
    /// # std::fs::remove_file(&path).ok();
    ///
    /// let err = Config::from_file("/no/such/happen.toml").unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::InvalidConfig);
    /// # Ok::<(), happen::Error>(())
    /// ```
    pub fn from_file(path: impl AsRef<Path>) -> Result<Config> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::config(
                &path.display().to_string(),
                format!("cannot read the file: {e}"),
            )
        })?;
        match path.extension().and_then(|e| e.to_str()) {
            Some("toml") => Config::from_toml_str(&text),
            Some("json") => Config::from_json_str(&text),
            _ => Err(Error::config(
                &path.display().to_string(),
                "unknown file type; use a .toml or .json file",
            )),
        }
    }

    /// Checks every value. The parsers call it, and so do
    /// [`Happen::with_config`](crate::Happen::with_config) and
    /// [`HappenBuilder::build`](crate::HappenBuilder::build); call it yourself to check a
    /// configuration built in code early.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidConfig`](crate::ErrorKind::InvalidConfig) naming the offending key.
    ///
    /// ```
    /// use happen::{Config, ErrorKind};
    ///
    /// let mut config = Config::default();
    /// assert!(config.validate().is_ok());
    /// config.concurrency.default.backpressure_threshold = 1.5;
    /// let err = config.validate().unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::InvalidConfig);
    /// assert!(err.message().contains("concurrency.default.backpressure_threshold"), "{err}");
    /// ```
    pub fn validate(&self) -> Result<()> {
        self.concurrency.default.validate("concurrency.default")?;
        self.concurrency.patterns.validate("concurrency.patterns")?;
        for (glob, p) in self.concurrency.patterns.iter() {
            p.validate(&format!("concurrency.patterns.\"{glob}\""))?;
        }
        if self.flow.max_chain_depth == 0 {
            return Err(Error::config("flow.max_chain_depth", "must be at least 1"));
        }
        if self.flow.request_timeout.is_zero() {
            return Err(Error::config(
                "flow.request_timeout_ms",
                "must be at least 1",
            ));
        }
        validate_buffer("streams.buffer", self.streams.buffer)?;
        validate_buffer("streams.broadcast_buffer", self.streams.broadcast_buffer)?;
        if self.cpu.threads == Some(0) {
            return Err(Error::config("cpu.threads", "must be at least 1"));
        }
        self.security.validate()?;
        self.state.validate()?;
        Ok(())
    }
}

/// The most items a stream buffer may hold: a broadcast stream's buffer is allocated whole,
/// per stream, and a bigger one is a memory bound in name only.
pub(crate) const MAX_BUFFER: usize = 1 << 20;

/// Checks a stream buffer size (`key` names it in the error).
pub(crate) fn validate_buffer(key: &str, items: usize) -> Result<()> {
    if items == 0 {
        return Err(Error::config(key, "must be at least 1"));
    }
    if items > MAX_BUFFER {
        return Err(Error::config(
            key,
            format!("{items} items is more than the {MAX_BUFFER} a buffer may hold"),
        ));
    }
    Ok(())
}

fn path_error<E: fmt::Display>(e: serde_path_to_error::Error<E>) -> Error {
    let path = e.path().to_string();
    let inner = e.into_inner().to_string();
    let inner = inner.trim_end().replace('\n', " ");
    Error::config(&path, inner)
}
