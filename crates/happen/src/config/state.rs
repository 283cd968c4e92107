//! `[state]`: how much history a node's stored state keeps, per node-id pattern.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::millis;
use super::patterns::NodePatterns;
use crate::error::{Error, Result};

/// The most revisions a key keeps: NATS key-value buckets keep at most 64 (where the
/// reference's docs say `history: 100`, a NATS server refuses more than 64).
///
/// ```
/// assert_eq!(happen::config::MAX_HISTORY, 64);
/// assert_eq!(happen::Config::default().state.history, happen::config::MAX_HISTORY);
/// ```
pub const MAX_HISTORY: u32 = 64;

/// `state`: history depth and age of stored state ([`Node::stored`](crate::Node::stored)),
/// with node-id pattern overrides chosen like `concurrency.patterns` (see the
/// [config module docs](crate::config)). Read when a node's bucket is created; a bucket that already exists
/// keeps its settings.
///
/// ```
/// use std::time::Duration;
/// use happen::Config;
///
/// let config = Config::from_toml_str(r#"
///     [state]
///     history = 16
///
///     [state.patterns."sensor-*"]
///     history = 4
///     max_age_ms = 86400000
/// "#)?;
/// assert_eq!(config.state.settings_for("inventory").history, 16);
/// assert_eq!(config.state.settings_for("inventory").max_age, None); // kept forever
/// let sensor = config.state.settings_for("sensor-1");
/// assert_eq!((sensor.history, sensor.max_age), (4, Some(Duration::from_secs(86400))));
///
/// let err = Config::from_toml_str("[state]\nhistory = 100").unwrap_err();
/// assert!(err.message().contains("at most 64"), "{err}");
/// # Ok::<(), happen::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct StateConfig {
    /// Revisions kept per key (default and most: 64, what NATS key-value allows; the
    /// reference's docs say 100, which a NATS server refuses).
    pub history: u32,
    /// How long a revision is kept; zero (the default) keeps them until `history` newer ones
    /// replace them. In a file: `max_age_ms`.
    #[serde(rename = "max_age_ms", with = "millis")]
    pub max_age: Duration,
    /// Node-id patterns (`sensor-*`) with their own `history` / `max_age_ms`.
    pub patterns: NodePatterns<PartialStateSettings>,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            history: MAX_HISTORY,
            max_age: Duration::ZERO,
            patterns: NodePatterns::new(),
        }
    }
}

/// The settings of one node's stored state: what [`StateConfig::settings_for`] resolves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct StateSettings {
    /// Revisions kept (1 to 64).
    pub history: u32,
    /// How long a revision is kept; `None`: no age limit.
    pub max_age: Option<Duration>,
}

impl StateSettings {
    /// Settings keeping `history` revisions (clamped to 1..=64) without an age limit.
    ///
    /// ```
    /// let s = happen::config::StateSettings::new(100);
    /// assert_eq!(s.history, 64);
    /// ```
    pub fn new(history: u32) -> StateSettings {
        StateSettings {
            history: history.clamp(1, MAX_HISTORY),
            max_age: None,
        }
    }

    /// The same settings with revisions older than `age` dropped.
    ///
    /// ```
    /// use std::time::Duration;
    /// let s = happen::config::StateSettings::new(8).with_max_age(Duration::from_secs(60));
    /// assert_eq!(s.max_age, Some(Duration::from_secs(60)));
    /// ```
    pub fn with_max_age(mut self, age: Duration) -> StateSettings {
        self.max_age = (!age.is_zero()).then_some(age);
        self
    }
}

impl Default for StateSettings {
    fn default() -> Self {
        StateSettings::new(MAX_HISTORY)
    }
}

/// One `state.patterns` entry: the keys it sets override `[state]`.
///
/// ```
/// use happen::config::PartialStateSettings;
/// let p: PartialStateSettings = serde_json::from_str(r#"{"history": 3}"#).unwrap();
/// assert_eq!(p.history, Some(3));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct PartialStateSettings {
    /// Revisions kept per key.
    pub history: Option<u32>,
    /// Age limit in milliseconds (zero: none).
    #[serde(rename = "max_age_ms")]
    pub max_age_ms: Option<u64>,
}

impl StateConfig {
    /// The settings of node `node_id`'s state: `[state]` with the best-matching
    /// `state.patterns` entry merged over it.
    ///
    /// ```
    /// let config = happen::Config::default();
    /// assert_eq!(config.state.settings_for("any").history, 64);
    /// ```
    pub fn settings_for(&self, node_id: &str) -> StateSettings {
        let mut history = self.history;
        let mut max_age = self.max_age;
        if let Some((_, p)) = self.patterns.select(node_id) {
            history = p.history.unwrap_or(history);
            if let Some(ms) = p.max_age_ms {
                max_age = Duration::from_millis(ms);
            }
        }
        StateSettings::new(history).with_max_age(max_age)
    }

    pub(crate) fn validate(&self) -> Result<()> {
        check_history("state.history", self.history)?;
        self.patterns.validate("state.patterns")?;
        for (glob, p) in self.patterns.iter() {
            if let Some(h) = p.history {
                check_history(&format!("state.patterns.\"{glob}\".history"), h)?;
            }
        }
        Ok(())
    }
}

fn check_history(key: &str, history: u32) -> Result<()> {
    if history == 0 {
        return Err(Error::config(key, "must be at least 1"));
    }
    if history > MAX_HISTORY {
        return Err(Error::config(
            key,
            format!(
                "{history} revisions: a NATS key-value bucket keeps at most 64 per key \
                 (the reference's docs say 100; use 64 or less)"
            ),
        ));
    }
    Ok(())
}
