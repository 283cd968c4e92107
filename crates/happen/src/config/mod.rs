//! Configuration: concurrency defaults and node-id pattern overrides, flows, streams,
//! transport and security sections. Loads from code, TOML or JSON.
//!
//! Keys are `snake_case`; the seed's `camelCase` spellings (`maxConcurrent`, `queueLimit`,
//! `queueStrategy`, `backpressureThreshold`) are accepted too. Unknown keys are errors.
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

use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::error::{Error, Result};

/// The whole configuration of a [`Happen`](crate::Happen) instance.
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
    /// Transport settings. The in-process transport needs none; `nats` is read by `happen-nats`.
    pub transport: TransportConfig,
    /// Reserved for security settings; no keys are defined yet, so any key is an error.
    pub security: SecurityConfig,
}

/// `concurrency`: the default limits and node-id pattern overrides.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct ConcurrencyConfig {
    /// Limits for every node no pattern overrides.
    pub default: Limits,
    /// Node-id patterns (`api-*`) with partial overrides, in declaration order.
    pub patterns: PatternOverrides,
}

/// Admission limits of one node.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct Limits {
    /// Flows executing at once (default 100).
    #[serde(alias = "maxConcurrent")]
    pub max_concurrent: usize,
    /// Events waiting beyond `max_concurrent` (default 10,000); more are rejected with
    /// [`ErrorKind::QueueFull`](crate::ErrorKind::QueueFull).
    #[serde(alias = "queueLimit")]
    pub queue_limit: usize,
    /// Which waiting event starts next (default FIFO).
    #[serde(alias = "queueStrategy")]
    pub queue_strategy: QueueStrategy,
    /// Fraction of `queue_limit` (0 < t ≤ 1, default 0.8) at which the node is under pressure.
    #[serde(alias = "backpressureThreshold")]
    pub backpressure_threshold: f64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_concurrent: 100,
            queue_limit: 10_000,
            queue_strategy: QueueStrategy::Fifo,
            backpressure_threshold: 0.8,
        }
    }
}

impl Limits {
    /// Sets `max_concurrent`.
    pub fn with_max_concurrent(mut self, n: usize) -> Self {
        self.max_concurrent = n;
        self
    }
    /// Sets `queue_limit`.
    pub fn with_queue_limit(mut self, n: usize) -> Self {
        self.queue_limit = n;
        self
    }
    /// Sets `queue_strategy`.
    pub fn with_queue_strategy(mut self, s: QueueStrategy) -> Self {
        self.queue_strategy = s;
        self
    }
    /// Sets `backpressure_threshold`.
    pub fn with_backpressure_threshold(mut self, t: f64) -> Self {
        self.backpressure_threshold = t;
        self
    }

    /// Limits so high they never apply (for comparison runs).
    pub fn unlimited() -> Self {
        Limits {
            max_concurrent: usize::MAX / 4,
            queue_limit: usize::MAX / 4,
            ..Limits::default()
        }
    }

    pub(crate) fn merged(mut self, p: &PartialLimits) -> Limits {
        if let Some(v) = p.max_concurrent {
            self.max_concurrent = v;
        }
        if let Some(v) = p.queue_limit {
            self.queue_limit = v;
        }
        if let Some(v) = p.queue_strategy {
            self.queue_strategy = v;
        }
        if let Some(v) = p.backpressure_threshold {
            self.backpressure_threshold = v;
        }
        self
    }

    pub(crate) fn validate(&self, key: &str) -> Result<()> {
        if self.max_concurrent == 0 {
            return Err(Error::config(
                &format!("{key}.max_concurrent"),
                "must be at least 1",
            ));
        }
        if self.queue_limit == 0 {
            return Err(Error::config(
                &format!("{key}.queue_limit"),
                "must be at least 1",
            ));
        }
        validate_threshold(
            &format!("{key}.backpressure_threshold"),
            self.backpressure_threshold,
        )
    }
}

fn validate_threshold(key: &str, t: f64) -> Result<()> {
    if !(t > 0.0 && t <= 1.0) {
        return Err(Error::config(
            key,
            format!("{t} is outside (0, 1]; it is a fraction of queue_limit such as 0.8"),
        ));
    }
    Ok(())
}

/// A partial [`Limits`]: only the keys that are set override the default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct PartialLimits {
    /// Overrides `max_concurrent`.
    #[serde(alias = "maxConcurrent", skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<usize>,
    /// Overrides `queue_limit`.
    #[serde(alias = "queueLimit", skip_serializing_if = "Option::is_none")]
    pub queue_limit: Option<usize>,
    /// Overrides `queue_strategy`.
    #[serde(alias = "queueStrategy", skip_serializing_if = "Option::is_none")]
    pub queue_strategy: Option<QueueStrategy>,
    /// Overrides `backpressure_threshold`.
    #[serde(
        alias = "backpressureThreshold",
        skip_serializing_if = "Option::is_none"
    )]
    pub backpressure_threshold: Option<f64>,
}

impl PartialLimits {
    /// Sets `max_concurrent`.
    pub fn with_max_concurrent(mut self, n: usize) -> Self {
        self.max_concurrent = Some(n);
        self
    }
    /// Sets `queue_limit`.
    pub fn with_queue_limit(mut self, n: usize) -> Self {
        self.queue_limit = Some(n);
        self
    }
    /// Sets `queue_strategy`.
    pub fn with_queue_strategy(mut self, s: QueueStrategy) -> Self {
        self.queue_strategy = Some(s);
        self
    }
    /// Sets `backpressure_threshold`.
    pub fn with_backpressure_threshold(mut self, t: f64) -> Self {
        self.backpressure_threshold = Some(t);
        self
    }
}

/// Which waiting event starts next.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueStrategy {
    /// Arrival order (`"fifo"`).
    #[default]
    Fifo,
    /// Highest [`Event::priority`](crate::Event::priority) first, arrival order within a
    /// priority (`"priority"`). A full queue admits a higher-priority event by displacing the
    /// newest event of the lowest queued priority.
    Priority,
}

/// Node-id patterns with partial overrides, in declaration order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PatternOverrides(Vec<(String, PartialLimits)>);

impl PatternOverrides {
    /// Adds (or replaces) the override for `pattern`, keeping declaration order.
    pub fn insert(&mut self, pattern: impl Into<String>, limits: PartialLimits) {
        let pattern = pattern.into();
        match self.0.iter_mut().find(|(p, _)| *p == pattern) {
            Some(entry) => entry.1 = limits,
            None => self.0.push((pattern, limits)),
        }
    }

    /// The entries in declaration order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &PartialLimits)> {
        self.0.iter().map(|(p, l)| (p.as_str(), l))
    }

    /// The entry that applies to `node_id` (see the [module docs](self) for precedence).
    pub fn select(&self, node_id: &str) -> Option<(&str, &PartialLimits)> {
        let mut best: Option<(&(String, PartialLimits), usize)> = None;
        for entry in &self.0 {
            if let Some(rank) = pattern_rank(&entry.0, node_id)
                && best.is_none_or(|(_, b)| rank > b)
            {
                best = Some((entry, rank));
            }
        }
        best.map(|((p, l), _)| (p.as_str(), l))
    }
}

impl Serialize for PatternOverrides {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

impl<'de> Deserialize<'de> for PatternOverrides {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = PatternOverrides;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map from node-id patterns to partial limits")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Self::Value, A::Error> {
                let mut out = PatternOverrides::default();
                while let Some((k, v)) = map.next_entry::<String, PartialLimits>()? {
                    if out.0.iter().any(|(p, _)| *p == k) {
                        return Err(serde::de::Error::custom(format!(
                            "pattern `{k}` appears twice"
                        )));
                    }
                    out.0.push((k, v));
                }
                Ok(out)
            }
        }
        d.deserialize_map(V)
    }
}

/// How well the node-id pattern `pattern` fits `node_id`, for choosing among patterns as the
/// concurrency overrides do (and other per-node settings may): `None` if it does not match;
/// the highest rank for an exact id (a pattern without `*`); otherwise the number of literal
/// characters, so `api-gw-*` outranks `api-*`. `*` matches any run of characters.
///
/// ```
/// use happen::config::pattern_rank;
/// assert_eq!(pattern_rank("api-gw", "api-gw"), Some(usize::MAX));
/// assert!(pattern_rank("api-gw-*", "api-gw-1") > pattern_rank("api-*", "api-gw-1"));
/// assert_eq!(pattern_rank("api-*", "web-1"), None);
/// ```
pub fn pattern_rank(pattern: &str, node_id: &str) -> Option<usize> {
    if !pattern.contains('*') {
        return (pattern == node_id).then_some(usize::MAX);
    }
    glob_matches(pattern, node_id).then(|| pattern.chars().filter(|c| *c != '*').count())
}

/// `*` matches any run of characters (including none).
pub(crate) fn glob_matches(glob: &str, s: &str) -> bool {
    let parts: Vec<&str> = glob.split('*').collect();
    if parts.len() == 1 {
        return glob == s;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !s.starts_with(first) || s.len() < first.len() + last.len() || !s.ends_with(last) {
        return false;
    }
    let mut rest = &s[first.len()..s.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

fn validate_glob(key: &str, glob: &str) -> Result<()> {
    let problem = if glob.is_empty() {
        Some("a node-id pattern must not be empty".to_string())
    } else if glob.contains("**") {
        Some("`**` is not supported; one `*` already matches any run of characters".to_string())
    } else {
        glob.chars()
            .find(|c| c.is_whitespace() || matches!(c, '?' | '[' | ']' | '{' | '}' | ','))
            .map(|c| format!("character `{c}` is not allowed; only `*` is a wildcard"))
    };
    match problem {
        Some(p) => Err(Error::config(&format!("{key}.\"{glob}\""), p)),
        None => Ok(()),
    }
}

impl ConcurrencyConfig {
    /// The effective limits of the node `node_id`.
    pub fn limits_for(&self, node_id: &str) -> Limits {
        match self.patterns.select(node_id) {
            Some((_, p)) => self.default.merged(p),
            None => self.default,
        }
    }

    /// Adds a node-id pattern override (builder style).
    pub fn with_pattern(mut self, pattern: impl Into<String>, limits: PartialLimits) -> Self {
        self.patterns.insert(pattern, limits);
        self
    }
}

/// `flow`: Event Continuum settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct FlowConfig {
    /// Most steps one flow may run, and most hops one causal chain may take (default 1000).
    #[serde(alias = "maxChainDepth")]
    pub max_chain_depth: usize,
    /// Default time a sender waits for a reply, in milliseconds (default 30,000).
    #[serde(alias = "requestTimeoutMs")]
    pub request_timeout_ms: u64,
}

impl Default for FlowConfig {
    fn default() -> Self {
        FlowConfig {
            max_chain_depth: 1000,
            request_timeout_ms: 30_000,
        }
    }
}

impl FlowConfig {
    /// The default request timeout as a `Duration`.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
}

/// `streams`: streaming settings.
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

/// `cpu`: the pool for CPU-bound work.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct CpuConfig {
    /// Threads for CPU-bound work (default: the number of cores).
    pub threads: Option<usize>,
}

/// `transport`: settings of the transport in use.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct TransportConfig {
    /// Settings for the NATS transport (`happen-nats` validates them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nats: Option<serde_json::Value>,
}

/// `security`: reserved; no keys are defined yet.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct SecurityConfig {}

impl Config {
    /// Parses TOML and validates.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidConfig`](crate::ErrorKind::InvalidConfig) naming the offending key.
    pub fn from_toml_str(s: &str) -> Result<Config> {
        let de = toml::Deserializer::new(s);
        let config: Config = serde_path_to_error::deserialize(de).map_err(path_error)?;
        config.validate()?;
        Ok(config)
    }

    /// Parses JSON and validates.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidConfig`](crate::ErrorKind::InvalidConfig) naming the offending key.
    pub fn from_json_str(s: &str) -> Result<Config> {
        let mut de = serde_json::Deserializer::from_str(s);
        let config: Config = serde_path_to_error::deserialize(&mut de).map_err(path_error)?;
        config.validate()?;
        Ok(config)
    }

    /// Reads a `.toml` or `.json` file and validates.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidConfig`](crate::ErrorKind::InvalidConfig) for an unreadable file, an
    /// unknown extension, or an invalid value (naming the key).
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

    /// Checks every value; [`Happen::init`](crate::Happen::init) calls this.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidConfig`](crate::ErrorKind::InvalidConfig) naming the offending key.
    pub fn validate(&self) -> Result<()> {
        self.concurrency.default.validate("concurrency.default")?;
        for (glob, p) in self.concurrency.patterns.iter() {
            validate_glob("concurrency.patterns", glob)?;
            let key = format!("concurrency.patterns.\"{glob}\"");
            if p.max_concurrent == Some(0) {
                return Err(Error::config(
                    &format!("{key}.max_concurrent"),
                    "must be at least 1",
                ));
            }
            if p.queue_limit == Some(0) {
                return Err(Error::config(
                    &format!("{key}.queue_limit"),
                    "must be at least 1",
                ));
            }
            if let Some(t) = p.backpressure_threshold {
                validate_threshold(&format!("{key}.backpressure_threshold"), t)?;
            }
        }
        if self.flow.max_chain_depth == 0 {
            return Err(Error::config("flow.max_chain_depth", "must be at least 1"));
        }
        if self.flow.request_timeout_ms == 0 {
            return Err(Error::config(
                "flow.request_timeout_ms",
                "must be at least 1",
            ));
        }
        if self.streams.buffer == 0 {
            return Err(Error::config("streams.buffer", "must be at least 1"));
        }
        if self.streams.broadcast_buffer == 0 {
            return Err(Error::config(
                "streams.broadcast_buffer",
                "must be at least 1",
            ));
        }
        if self.cpu.threads == Some(0) {
            return Err(Error::config("cpu.threads", "must be at least 1"));
        }
        Ok(())
    }
}

fn path_error<E: fmt::Display>(e: serde_path_to_error::Error<E>) -> Error {
    let path = e.path().to_string();
    let inner = e.into_inner().to_string();
    let inner = inner.trim_end().replace('\n', " ");
    Error::config(&path, inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_globs() {
        assert!(glob_matches("api-*", "api-gateway"));
        assert!(glob_matches("api-*", "api-"));
        assert!(!glob_matches("api-*", "xapi-1"));
        assert!(glob_matches("*-db", "orders-db"));
        assert!(glob_matches("a*b*c", "aXXbYYc"));
        assert!(!glob_matches("a*b*c", "aXXcYYb"));
        assert!(glob_matches("*", ""));
        assert!(glob_matches("exact", "exact"));
        assert!(!glob_matches("ab*ba", "aba"));
    }
}
