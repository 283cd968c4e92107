//! `[transport.nats.reconnect]`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Backoff;

/// `[transport.nats.reconnect]`: exponential back-off between `delay_ms` and `max_delay_ms`,
/// for reconnects and (with `retry_on_initial_connect`) the first connection.
///
/// ```
/// let mut nats = happen_nats::NatsConfig::default();
/// nats.reconnect.max_attempts = Some(20); // then give up: `system.connection-status` "closed"
/// nats.reconnect.max_delay_ms = 5_000;
/// nats.validate()?;
/// # Ok::<(), happen::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct ReconnectConfig {
    /// Give up after this many failed attempts (default: never give up).
    pub max_attempts: Option<usize>,
    /// First delay in milliseconds (default 10).
    pub delay_ms: u64,
    /// Largest delay in milliseconds (default 2000).
    pub max_delay_ms: u64,
}

impl Default for ReconnectConfig {
    fn default() -> Self {
        ReconnectConfig {
            max_attempts: None,
            delay_ms: 10,
            max_delay_ms: 2000,
        }
    }
}

impl ReconnectConfig {
    /// The pause before attempt `attempts`: `delay_ms` doubled per attempt, at most
    /// `max_delay_ms`.
    pub(crate) fn delay(&self, attempts: usize) -> Duration {
        Backoff::new(self.delay_ms, self.max_delay_ms).delay(attempts)
    }
}
