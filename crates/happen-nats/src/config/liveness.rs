//! `[transport.nats.liveness]`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `[transport.nats.liveness]`: how a requester learns that the process (replica) holding its
/// request is gone, instead of waiting out the request timeout (see `WIRE.md`, "Liveness").
///
/// Every process that serves nodes publishes a heartbeat every `heartbeat`; a request is tied
/// to the replica that accepted it. When that replica is silent for `detection`, its pending
/// requests fail with [`ErrorKind::Transport`](happen::ErrorKind::Transport) naming it (or
/// [`ErrorKind::ShutDown`](happen::ErrorKind::ShutDown) when it said it closed). A replica
/// whose server connection dropped publishes again, once reconnected, the answers it wrote
/// in the `replay_window` before the loss.
///
/// ```
/// use std::time::Duration;
///
/// let config = happen::Config::from_toml_str(r#"
/// [transport.nats.liveness]
/// heartbeat_ms = 100
/// detection_ms = 500
/// "#)?;
/// let nats = happen_nats::NatsConfig::from_happen(&config)?;
/// assert_eq!(nats.liveness.detection, Duration::from_millis(500));
///
/// // detection must span at least two heartbeats
/// let mut nats = happen_nats::NatsConfig::default();
/// nats.liveness.detection = Duration::from_millis(300);
/// assert!(nats.validate().is_err());
/// # Ok::<(), happen::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct LivenessConfig {
    /// Heartbeats and fast failure on (default `true`). Off: no heartbeat is published and
    /// requests wait for their answer or their timeout, as a TypeScript reference requester
    /// does.
    pub enabled: bool,
    /// How often a process serving nodes says it is alive (default 250 ms). In a file:
    /// `heartbeat_ms`.
    #[serde(rename = "heartbeat_ms", with = "happen::config::millis")]
    pub heartbeat: Duration,
    /// How long a replica may be silent before the requests it holds fail (default 1 s; at
    /// least two heartbeats). In a file: `detection_ms`.
    #[serde(rename = "detection_ms", with = "happen::config::millis")]
    pub detection: Duration,
    /// Answers written this long before a lost server connection are published again after
    /// the reconnect (default 1 s; requesters drop a second copy). In a file:
    /// `replay_window_ms`.
    #[serde(rename = "replay_window_ms", with = "happen::config::millis")]
    pub replay_window: Duration,
}

impl Default for LivenessConfig {
    fn default() -> Self {
        LivenessConfig {
            enabled: true,
            heartbeat: Duration::from_millis(250),
            detection: Duration::from_secs(1),
            replay_window: Duration::from_secs(1),
        }
    }
}

impl LivenessConfig {
    /// How long a request at a live replica may go without being tied to it (the replica
    /// names itself to requests still waiting after one or two ticks of a fifth of the
    /// heartbeat): an untied request older than this, to a node whose replica went away,
    /// was most likely there.
    pub(crate) fn tie_within(&self) -> Duration {
        self.heartbeat
    }

    /// The serve loop's tick for naming the replica to waiting requests.
    pub(crate) fn accept_tick(&self) -> Duration {
        (self.heartbeat / 5).max(Duration::from_millis(1))
    }
}
