//! [`Security`]: a node's security settings in code; [`Policy`]: the gate per event type.

use std::fmt;
use std::sync::Arc;

use crate::config::SecurityMode;
use crate::error::Result;
use crate::event::Event;
use crate::event::pattern::{IntoPattern, Pattern};

use super::keys::{SigningKey, TrustRing};

/// A node's security settings, given with
/// [`NodeOptions::security`](crate::NodeOptions::security); they override the config's
/// `[security.nodes]` entry for the node and add to its trust ring. See the
/// [module docs](super) for what the gates do.
///
/// ```
/// use happen::security::{Security, SecurityMode, SigningKey, TrustRing};
///
/// let orders = SigningKey::generate();
/// let security = Security::new()
///     .signing_key(SigningKey::generate())
///     .trust(TrustRing::new().trust("orders", orders.public_key())?)
///     .mode(SecurityMode::Enforce)
///     .accept_from(["orders", "user:admin"]);
/// # let _ = security;
/// # Ok::<(), happen::Error>(())
/// ```
#[derive(Clone, Default)]
pub struct Security {
    pub(crate) mode: Option<SecurityMode>,
    pub(crate) key: Option<SigningKey>,
    pub(crate) ring: TrustRing,
    pub(crate) accept_from: Option<Vec<String>>,
    pub(crate) policies: Vec<(Pattern, Policy)>,
}

impl Security {
    /// No settings (the config's apply).
    pub fn new() -> Security {
        Security::default()
    }

    /// The node signs every event it sends with `key`.
    pub fn signing_key(mut self, key: SigningKey) -> Security {
        self.key = Some(key);
        self
    }

    /// How the node treats signatures of events from other processes.
    pub fn mode(mut self, mode: SecurityMode) -> Security {
        self.mode = Some(mode);
        self
    }

    /// Trust entries added to the config's `[security.trust]` (later entries win for the
    /// same pattern).
    pub fn trust(mut self, ring: TrustRing) -> Security {
        self.ring = self.ring.merged(&ring);
        self
    }

    /// Whom the node accepts (replacing the config's list): node-id globs over the
    /// authenticated sender (`orders`, `checkout-*`) and `type:glob` entries over the origin
    /// (`user:admin`, `tenant:42:*`). An event passes when any entry matches.
    pub fn accept_from<S: Into<String>>(
        mut self,
        entries: impl IntoIterator<Item = S>,
    ) -> Security {
        self.accept_from = Some(entries.into_iter().map(Into::into).collect());
        self
    }

    /// A policy for the event types matching `pattern` (every matching policy applies).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidPattern`](crate::ErrorKind::InvalidPattern) for a bad pattern.
    pub fn policy(mut self, pattern: impl IntoPattern, policy: Policy) -> Result<Security> {
        self.policies.push((pattern.into_pattern()?, policy));
        Ok(self)
    }
}

impl fmt::Debug for Security {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Security")
            .field("mode", &self.mode)
            .field("key", &self.key)
            .field("ring", &self.ring)
            .field("accept_from", &self.accept_from)
            .field("policies", &self.policies.len())
            .finish()
    }
}

/// A check a custom policy runs: `Err(reason)` rejects the event as
/// [`Forbidden`](crate::ErrorKind::Forbidden).
pub type PolicyCheck = Arc<dyn Fn(&Event) -> std::result::Result<(), String> + Send + Sync>;

/// The interface and authorization gate for some event types (Happen's "Safe Node"
/// `policies`): allowed payload shapes, allowed roles, a custom check. Empty lists allow
/// everything.
///
/// ```
/// use happen::security::Policy;
/// use serde_json::json;
///
/// let policy = Policy::new()
///     .schemas([happen::schema_hash(&json!({"amount": 0}))])
///     .roles(["admin", "billing"])
///     .check(|e| if e.payload()["amount"].as_f64() < Some(1e6) { Ok(()) } else { Err("too much".into()) });
/// # let _ = policy;
/// ```
#[derive(Clone, Default)]
pub struct Policy {
    pub(crate) schemas: Vec<String>,
    pub(crate) roles: Vec<String>,
    pub(crate) check: Option<PolicyCheck>,
}

impl Policy {
    /// A policy that allows everything (add to it).
    pub fn new() -> Policy {
        Policy::default()
    }

    /// The allowed [`schema_hash`](crate::schema_hash)es of the payload; any other shape is
    /// rejected as [`InvalidEvent`](crate::ErrorKind::InvalidEvent).
    pub fn schemas<S: Into<String>>(mut self, hashes: impl IntoIterator<Item = S>) -> Policy {
        self.schemas.extend(hashes.into_iter().map(Into::into));
        self
    }

    /// The allowed roles: `origin.sourceId` must be one of them, else
    /// [`Forbidden`](crate::ErrorKind::Forbidden).
    pub fn roles<S: Into<String>>(mut self, roles: impl IntoIterator<Item = S>) -> Policy {
        self.roles.extend(roles.into_iter().map(Into::into));
        self
    }

    /// A custom check (it runs last; a panic in it rejects the event).
    pub fn check(
        mut self,
        f: impl Fn(&Event) -> std::result::Result<(), String> + Send + Sync + 'static,
    ) -> Policy {
        self.check = Some(Arc::new(f));
        self
    }
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policy")
            .field("schemas", &self.schemas)
            .field("roles", &self.roles)
            .field("check", &self.check.as_ref().map(|_| ".."))
            .finish()
    }
}
