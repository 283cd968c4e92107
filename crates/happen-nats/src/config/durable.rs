//! `[transport.nats.durable]`: which node ids get durable delivery on JetStream, and how.

use happen::config::NodePatterns;
use std::fmt;
use std::time::Duration;

use happen::{Error, Result};
use serde::{Deserialize, Serialize};

use super::Backoff;

/// `[transport.nats.durable]`: which node ids get durable delivery on JetStream, and how.
/// The same settings must be given to every process (senders decide from them whether a
/// target is durable), and the server needs JetStream (`nats-server -js`).
///
/// ```
/// use happen_nats::{DeliveryMode, DurableNode, NatsConfig};
///
/// let config = happen::Config::from_toml_str(r#"
/// [transport.nats.durable]
/// dedup_window_ms = 120000
/// [transport.nats.durable.nodes."billing-*"]
/// mode = "exactly-once"
/// max_deliveries = 3
/// "#)?;
/// let nats = NatsConfig::from_happen(&config)?;
/// assert_eq!(nats.durable.node("billing-eu").unwrap().mode, DeliveryMode::ExactlyOnce);
/// assert_eq!(nats.durable.dedup_window, std::time::Duration::from_secs(120));
/// assert!(nats.durable.node("orders").is_none());
///
/// // the same with the builder
/// let nats = NatsConfig::default()
///     .with_durable("billing-*", DurableNode::new(DeliveryMode::ExactlyOnce).with_max_deliveries(3));
/// assert!(nats.durable.node("billing-us").is_some());
/// # Ok::<(), happen::Error>(())
/// ```
///
/// # How it works
/// - **Sending.** `send` and `tell` to a durable node id publish the event to
///   `<prefix>.durable.<node-id>` with `Nats-Msg-Id` = the event id, from a background task
///   that keeps many publishes in flight and retries each (same id: the server drops a
///   duplicate within the dedup window) until the server acknowledges it or the request
///   timeout passes. A request's reply subject travels in the `Happen-Reply-To` header.
///   Broadcasts are not durable (they go over core NATS to every node id, as before).
/// - **Consuming.** Each process hosting a durable node pulls from the node id's durable
///   consumer (replicas share it) only as many messages as the node has room for
///   (`max_concurrent + queue_limit` minus what it holds), so the backlog stays in JetStream.
/// - **Settling.** A message is acknowledged after its flow finished; a failed flow is
///   redelivered after a back-off until `max_deliveries`, then published to
///   `<prefix>.dlq.<node-id>` (stored in the dead-letter stream) with its error, and
///   terminated.
/// - **Exactly-once effects** (`mode = "exactly-once"`): an event id is claimed in a record
///   stream (`<stream>_DONE`) before its flow starts, so one copy of it runs at a time
///   whatever the concurrency (replicas, `max_concurrent`); its outcome is recorded for the
///   dedup window, and every other copy (a redelivery, a second publish) is acknowledged and
///   its requester answered with the recorded value without running again. What remains
///   at-least-once (a process dying between the effect and the record) is in `WIRE.md`,
///   "Guarantees"; effects keyed by `ctx.event().id()` close it.
///
/// The counters are [`NatsStats`](crate::NatsStats)' `durable_*` fields; the streams'
/// names, [`NatsTransport::durable_streams`](crate::NatsTransport::durable_streams).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct DurableConfig {
    /// The JetStream stream holding durable events (default: the prefix in capitals, dots as
    /// `_`, plus `_DURABLE`: `HAPPEN_DURABLE`). The dead-letter stream is `<stream>_DLQ`, the
    /// exactly-once record stream `<stream>_DONE`.
    pub stream: Option<String>,
    /// The dedup window (default 5 min): the server drops a re-published event id within it;
    /// exactly-once nodes remember completed ids this long. In a file: `dedup_window_ms`, in
    /// milliseconds.
    #[serde(rename = "dedup_window_ms", with = "happen::config::millis")]
    pub dedup_window: Duration,
    /// Replicas of the streams in a JetStream cluster (default 1).
    pub replicas: usize,
    /// Durable publishes awaiting the server's acknowledgement at once (default 4096).
    pub publish_window: usize,
    /// Node-id patterns (`*` matches any run of characters, as in `concurrency.patterns`) and
    /// their settings. An exact id wins over patterns; among patterns the one with the most
    /// literal characters (ties: the one declared first); see [`NodePatterns`].
    pub nodes: NodePatterns<DurableNode>,
}

impl Default for DurableConfig {
    fn default() -> Self {
        DurableConfig {
            stream: None,
            dedup_window: Duration::from_secs(300),
            replicas: 1,
            publish_window: 4096,
            nodes: NodePatterns::new(),
        }
    }
}

impl fmt::Debug for DurableConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DurableConfig")
            .field("stream", &self.stream)
            .field("dedup_window", &self.dedup_window)
            .field("replicas", &self.replicas)
            .field("publish_window", &self.publish_window)
            .field("nodes", &self.nodes)
            .finish()
    }
}

/// The delivery mode of a durable node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum DeliveryMode {
    /// Acknowledged after the flow finished: every event is processed at least once; after a
    /// crash (or a lost acknowledgement) an event may be processed again.
    #[default]
    AtLeastOnce,
    /// At-least-once delivery plus idempotent processing: an event id is claimed before its
    /// flow runs (one copy at a time, across replicas), its outcome recorded (for the dedup
    /// window), and any other copy is acknowledged with that outcome without running its flow
    /// again. An event is processed twice only if the process dies (or loses the server)
    /// between the end of its flow and the record of its completion: its claim is taken over
    /// after the lease (`ack_wait`).
    ExactlyOnce,
}

/// The settings of one durable node-id pattern (`[transport.nats.durable.nodes."<pattern>"]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct DurableNode {
    /// `at-least-once` (default) or `exactly-once`.
    pub mode: DeliveryMode,
    /// Deliveries of an event whose flow fails before it goes to the dead-letter subject
    /// (default 5; 1 = no retry).
    pub max_deliveries: u32,
    /// The redelivery delay after the first failure (default 100 ms); doubled per further
    /// failure up to `max_backoff`. In a file: `backoff_ms`, in milliseconds.
    #[serde(rename = "backoff_ms", with = "happen::config::millis")]
    pub backoff: Duration,
    /// The longest redelivery delay (default 10 s). In a file: `max_backoff_ms`.
    #[serde(rename = "max_backoff_ms", with = "happen::config::millis")]
    pub max_backoff: Duration,
    /// How long the server waits for an acknowledgement before redelivering (default 30 s;
    /// at least 100 ms). A running flow keeps extending it; it only matters when the process
    /// holding the event died. In a file: `ack_wait_ms`.
    #[serde(rename = "ack_wait_ms", with = "happen::config::millis")]
    pub ack_wait: Duration,
}

impl Default for DurableNode {
    fn default() -> Self {
        DurableNode::new(DeliveryMode::AtLeastOnce)
    }
}

impl DurableNode {
    /// Default settings with `mode`: 5 deliveries, back-off from 100 ms to 10 s, an
    /// acknowledgement wait of 30 s.
    ///
    /// ```
    /// use happen_nats::{DeliveryMode, DurableNode};
    /// let node = DurableNode::new(DeliveryMode::ExactlyOnce);
    /// assert_eq!((node.mode, node.max_deliveries), (DeliveryMode::ExactlyOnce, 5));
    /// ```
    pub fn new(mode: DeliveryMode) -> DurableNode {
        DurableNode {
            mode,
            max_deliveries: 5,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            ack_wait: Duration::from_secs(30),
        }
    }

    /// Sets `max_deliveries`: after this many failed runs the event is dead-lettered.
    ///
    /// ```
    /// use happen_nats::DurableNode;
    /// let node = DurableNode::default().with_max_deliveries(1); // no retry
    /// assert_eq!(node.max_deliveries, 1);
    /// ```
    pub fn with_max_deliveries(mut self, n: u32) -> DurableNode {
        self.max_deliveries = n;
        self
    }

    /// Sets the back-off: `backoff` (the first delay) and `max_backoff` (the largest).
    ///
    /// ```
    /// use std::time::Duration;
    /// use happen_nats::DurableNode;
    /// let node = DurableNode::default()
    ///     .with_backoff(Duration::from_millis(250), Duration::from_secs(60));
    /// assert_eq!(node.backoff, Duration::from_millis(250));
    /// assert_eq!(node.max_backoff, Duration::from_secs(60));
    /// ```
    pub fn with_backoff(mut self, first: Duration, max: Duration) -> DurableNode {
        self.backoff = first;
        self.max_backoff = max;
        self
    }

    /// Sets `ack_wait`, the acknowledgement wait (at least 100 ms to validate).
    ///
    /// ```
    /// use std::time::Duration;
    /// use happen_nats::DurableNode;
    /// let node = DurableNode::default().with_ack_wait(Duration::from_secs(5));
    /// assert_eq!(node.ack_wait, Duration::from_secs(5));
    /// ```
    pub fn with_ack_wait(mut self, wait: Duration) -> DurableNode {
        self.ack_wait = wait;
        self
    }

    /// The delay before delivery `delivered + 1`, after `delivered` deliveries failed.
    pub(crate) fn redelivery_delay(&self, delivered: u32) -> Duration {
        Backoff::new(self.backoff, self.max_backoff).delay(delivered.saturating_sub(1) as usize)
    }
}

fn invalid(key: &str, problem: impl fmt::Display) -> Error {
    super::invalid(&format!("durable.{key}"), problem)
}

impl DurableConfig {
    /// The settings of `node_id` if it is durable: an exact id wins over patterns, among
    /// patterns the one with the most literal characters.
    ///
    /// ```
    /// use happen_nats::{DeliveryMode, DurableNode, NatsConfig};
    /// let nats = NatsConfig::default()
    ///     .with_durable("pay-*", DurableNode::new(DeliveryMode::AtLeastOnce))
    ///     .with_durable("pay-eu", DurableNode::new(DeliveryMode::ExactlyOnce));
    /// assert_eq!(nats.durable.node("pay-eu").unwrap().mode, DeliveryMode::ExactlyOnce);
    /// assert_eq!(nats.durable.node("pay-us").unwrap().mode, DeliveryMode::AtLeastOnce);
    /// assert!(nats.durable.node("orders").is_none());
    /// ```
    pub fn node(&self, node_id: &str) -> Option<&DurableNode> {
        self.nodes.select(node_id).map(|(_, n)| n)
    }

    /// Is any node durable?
    ///
    /// ```
    /// use happen_nats::{DurableNode, NatsConfig};
    /// assert!(!NatsConfig::default().durable.is_enabled());
    /// let nats = NatsConfig::default().with_durable("orders", DurableNode::default());
    /// assert!(nats.durable.is_enabled());
    /// ```
    pub fn is_enabled(&self) -> bool {
        !self.nodes.is_empty()
    }

    /// The stream's name for subject `prefix` (see [`stream`](DurableConfig::stream)).
    ///
    /// ```
    /// let mut durable = happen_nats::DurableConfig::default();
    /// assert_eq!(durable.stream_name("my.app"), "MY_APP_DURABLE");
    /// durable.stream = Some("ORDERS".to_owned());
    /// assert_eq!(durable.stream_name("my.app"), "ORDERS");
    /// ```
    pub fn stream_name(&self, prefix: &str) -> String {
        match &self.stream {
            Some(s) => s.clone(),
            None => format!("{}_DURABLE", prefix.replace('.', "_").to_ascii_uppercase()),
        }
    }

    /// Checks every value ([`NatsConfig::validate`](crate::NatsConfig::validate) does it too).
    ///
    /// ```
    /// use happen_nats::{DurableNode, NatsConfig};
    /// let nats = NatsConfig::default().with_durable("orders", DurableNode::default().with_max_deliveries(0));
    /// let err = nats.durable.validate().unwrap_err();
    /// assert!(err.message().contains("max_deliveries"), "{err}");
    /// ```
    ///
    /// # Errors
    /// [`ErrorKind::InvalidConfig`](happen::ErrorKind::InvalidConfig) naming the offending key.
    pub fn validate(&self) -> Result<()> {
        if let Some(s) = &self.stream
            && (s.is_empty()
                || s.len() > 200
                || !s
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'))
        {
            return Err(invalid(
                "stream",
                format!("`{s}` is not a valid stream name (letters, digits, `_` and `-`)"),
            ));
        }
        if self.dedup_window < Duration::from_millis(1) {
            return Err(invalid("dedup_window_ms", "must be at least 1 ms"));
        }
        if self.replicas == 0 || self.replicas > 5 {
            return Err(invalid("replicas", "must be between 1 and 5"));
        }
        if self.publish_window == 0 {
            return Err(invalid("publish_window", "must be at least 1"));
        }
        self.nodes.validate("transport.nats.durable.nodes")?;
        for (glob, n) in self.nodes.iter() {
            let key = format!("nodes.\"{glob}\"");
            if n.max_deliveries == 0 {
                return Err(invalid(
                    &format!("{key}.max_deliveries"),
                    "must be at least 1",
                ));
            }
            if n.backoff > n.max_backoff {
                return Err(invalid(
                    &format!("{key}.backoff_ms"),
                    "must not exceed `max_backoff_ms`",
                ));
            }
            if n.ack_wait < Duration::from_millis(100) {
                return Err(invalid(
                    &format!("{key}.ack_wait_ms"),
                    "must be at least 100 ms",
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::NatsConfig;

    #[test]
    fn patterns_select_the_most_specific() {
        let c = DurableConfig::default();
        assert!(c.node("x").is_none());
        let n = NatsConfig::default()
            .with_durable("api-*", DurableNode::new(DeliveryMode::AtLeastOnce))
            .with_durable("api-pay*", DurableNode::new(DeliveryMode::ExactlyOnce))
            .with_durable("api-x", DurableNode::default().with_max_deliveries(9));
        let d = &n.durable;
        assert_eq!(d.node("api-a").unwrap().mode, DeliveryMode::AtLeastOnce);
        assert_eq!(
            d.node("api-payments").unwrap().mode,
            DeliveryMode::ExactlyOnce
        );
        assert_eq!(d.node("api-x").unwrap().max_deliveries, 9);
        assert!(d.node("web").is_none());
        d.validate().unwrap();
    }

    #[test]
    fn bad_settings_are_named() {
        let err = NatsConfig::from_value(&serde_json::json!({
            "durable": {"nodes": {"a": {"mode": "twice"}}}
        }))
        .unwrap_err();
        assert!(err.message().contains("durable"), "{err}");
        let err = NatsConfig::from_value(&serde_json::json!({
            "durable": {"nodes": {"a": {"max_deliveries": 0}}}
        }))
        .unwrap_err();
        assert!(err.message().contains("max_deliveries"), "{err}");
        let err = NatsConfig::from_value(&serde_json::json!({
            "durable": {"dedup_windw_ms": 5}
        }))
        .unwrap_err();
        assert!(err.message().contains("dedup_windw_ms"), "{err}");
        let err = NatsConfig::from_value(&serde_json::json!({
            "durable": {"stream": "a.b"}
        }))
        .unwrap_err();
        assert!(err.message().contains("stream"), "{err}");
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let n = DurableNode::default()
            .with_backoff(Duration::from_millis(100), Duration::from_millis(350));
        assert_eq!(n.redelivery_delay(1), Duration::from_millis(100));
        assert_eq!(n.redelivery_delay(2), Duration::from_millis(200));
        assert_eq!(n.redelivery_delay(3), Duration::from_millis(350));
        assert_eq!(n.redelivery_delay(60), Duration::from_millis(350));
    }

    #[test]
    fn stream_names_follow_the_prefix() {
        let cfg = DurableConfig::default();
        assert_eq!(cfg.stream_name("happen"), "HAPPEN_DURABLE");
        assert_eq!(cfg.stream_name("my.app"), "MY_APP_DURABLE");
    }
}
