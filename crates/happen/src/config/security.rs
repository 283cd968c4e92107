//! `[security]`: trust ring, per-node signing keys, modes and `accept_from`, replay bounds.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::millis;
use super::patterns::NodePatterns;
use crate::error::{Error, Result};

/// How a node treats the signatures of the events it receives from other processes.
///
/// Events from nodes of the same process are authenticated by construction (their sender is
/// a node handle of this process) and are never checked for signatures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum SecurityMode {
    /// Nothing is verified (the default for a node without keys and an empty trust ring).
    #[default]
    Off,
    /// Signed events are verified (a bad signature, an unknown signer, a replay or a
    /// timestamp out of bounds is rejected); unsigned ones pass, their sender as claimed.
    Permissive,
    /// Every event from another process must be signed by the key the trust ring binds to
    /// its sender.
    Enforce,
}

/// `[security]`: the trust ring, per-node settings by node-id pattern, replay bounds.
///
/// ```
/// use std::time::Duration;
/// use happen::config::{Config, SecurityMode};
///
/// let config = Config::from_toml_str(r#"
///     [security]
///     max_age_ms = 60000
///
///     [security.trust]
///     "orders" = "UDXU4RCSJNZOIQHZNWXHXORDPRTGNJAHAHFRGZNEEJCPQTT2M7NLCNF4"
///     "checkout-*" = "UCK3BQ2RQCGMWUVVYQKKL2TTH7ZU2IYDSKXRRWKRTKWQJEAJ4IZNZFMW"
///
///     [security.nodes."billing-*"]
///     mode = "enforce"
///     accept_from = ["orders", "checkout-*", "user:admin"]
/// "#)?;
/// let s = &config.security;
/// assert_eq!(s.max_age, Duration::from_secs(60));
/// assert_eq!(s.trust.select("checkout-eu").map(|(p, _)| p), Some("checkout-*"));
/// let billing = s.node("billing-1").unwrap();
/// assert_eq!(billing.mode, Some(SecurityMode::Enforce));
/// assert_eq!(billing.accept_from.len(), 3);
/// # Ok::<(), happen::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct SecurityConfig {
    /// The trust ring: node-id pattern → nkey public key.
    pub trust: NodePatterns<String>,
    /// Per-node settings by node-id pattern (the best match applies, as in `concurrency`).
    pub nodes: NodePatterns<NodeSecurityConfig>,
    /// Signed events older than this are rejected (`max_age_ms`, default 300,000: 5 min);
    /// it is also how long an event id is remembered against replays.
    #[serde(rename = "max_age_ms", with = "millis")]
    pub max_age: Duration,
    /// Signed events stamped further in the future than this are rejected (`max_future_ms`,
    /// default 30,000: clocks drift).
    #[serde(rename = "max_future_ms", with = "millis")]
    pub max_future: Duration,
    /// At most this many event ids are remembered per node against replays (default
    /// 100,000); when full, the oldest are forgotten first.
    pub max_seen_ids: usize,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        SecurityConfig {
            trust: NodePatterns::new(),
            nodes: NodePatterns::new(),
            max_age: Duration::from_secs(300),
            max_future: Duration::from_secs(30),
            max_seen_ids: 100_000,
        }
    }
}

impl SecurityConfig {
    /// The settings of the node `node_id`: the best-matching `nodes` entry.
    pub fn node(&self, node_id: &str) -> Option<&NodeSecurityConfig> {
        self.nodes.select(node_id).map(|(_, n)| n)
    }

    pub(crate) fn validate(&self) -> Result<()> {
        self.trust.validate("security.trust")?;
        self.nodes.validate("security.nodes")?;
        if self.max_seen_ids == 0 {
            return Err(Error::config("security.max_seen_ids", "must be at least 1"));
        }
        if self.max_age.is_zero() {
            return Err(Error::config("security.max_age_ms", "must be at least 1"));
        }
        Ok(())
    }
}

/// `[security.nodes."<pattern>"]`: one node's (or pattern's) security settings.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct NodeSecurityConfig {
    /// The mode; when unset, `permissive` if the node has a key or the ring has entries,
    /// else `off`.
    pub mode: Option<SecurityMode>,
    /// The node's signing key as an nkey seed (`SU…`). Prefer `seed_file`.
    pub seed: Option<String>,
    /// A file holding the node's nkey seed (for example the NATS user's `.nk` file).
    pub seed_file: Option<std::path::PathBuf>,
    /// Whom the node accepts: node-id globs over the authenticated sender (`orders`,
    /// `checkout-*`) and `type:glob` entries over the origin's source (`user:admin`,
    /// `tenant:42:*`). Empty: everyone.
    pub accept_from: Vec<String>,
}

impl fmt::Debug for NodeSecurityConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeSecurityConfig")
            .field("mode", &self.mode)
            .field("seed", &self.seed.as_ref().map(|_| ".."))
            .field("seed_file", &self.seed_file)
            .field("accept_from", &self.accept_from)
            .finish()
    }
}
