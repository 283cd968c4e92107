//! `[transport.nats.reconnect]`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Backoff;

/// `[transport.nats.reconnect]`: exponential back-off between `delay` and `max_delay`, for
/// reconnects and (with `retry_on_initial_connect`) the first connection.
///
/// ```
/// use std::time::Duration;
///
/// let mut nats = happen_nats::NatsConfig::default();
/// nats.reconnect.max_attempts = Some(20); // then give up: `system.connection-status` "closed"
/// nats.reconnect.max_delay = Duration::from_secs(5);
/// nats.validate()?;
///
/// // in a file, whole milliseconds
/// let config = happen::Config::from_toml_str(r#"
/// [transport.nats.reconnect]
/// delay_ms = 50
/// max_delay_ms = 5000
/// "#)?;
/// let nats = happen_nats::NatsConfig::from_happen(&config)?;
/// assert_eq!(nats.reconnect.delay, Duration::from_millis(50));
/// # Ok::<(), happen::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct ReconnectConfig {
    /// Give up after this many failed attempts (default: never give up).
    pub max_attempts: Option<usize>,
    /// First delay (default 10 ms). In a file: `delay_ms`.
    #[serde(rename = "delay_ms", with = "happen::config::millis")]
    pub delay: Duration,
    /// Largest delay (default 2 s). In a file: `max_delay_ms`.
    #[serde(rename = "max_delay_ms", with = "happen::config::millis")]
    pub max_delay: Duration,
}

impl Default for ReconnectConfig {
    fn default() -> Self {
        ReconnectConfig {
            max_attempts: None,
            delay: Duration::from_millis(10),
            max_delay: Duration::from_secs(2),
        }
    }
}

impl ReconnectConfig {
    /// The pauses between attempts: `delay` doubled per attempt, at most `max_delay`.
    pub(crate) fn backoff(&self) -> Backoff {
        Backoff::new(self.delay, self.max_delay)
    }
}
