//! [`Gate`]: a node's security settings, resolved, and the checks before admission.

use std::collections::{HashMap, HashSet, VecDeque};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

use crate::config::{SecurityConfig, SecurityMode, glob_matches};
use crate::error::{Error, ErrorKind, Result, panic_message};
use crate::event::pattern::Pattern;
use crate::event::{Arrival, Event, now_ms};
use crate::id::NodeId;

use super::keys::{SigningKey, TrustRing};
use super::options::{Policy, Security};
use super::{hex, schema_hash};

/// The resolved security of one node.
pub(crate) struct Gate {
    node: NodeId,
    mode: SecurityMode,
    key: Option<SigningKey>,
    ring: TrustRing,
    accept_from: Vec<Accept>,
    policies: Vec<(Pattern, Policy)>,
    max_age_ms: u64,
    max_future_ms: u64,
    seen: Mutex<Seen>,
    max_seen: usize,
    /// The ring's public keys, decoded once (decoding an nkey and its curve point costs
    /// more than half a verification).
    verifiers: Mutex<HashMap<String, Arc<nkeys::KeyPair>>>,
    denied: AtomicU64,
    /// When the last rejection was logged (ms), and how many were not logged since.
    last_log: AtomicU64,
    unlogged: AtomicU64,
}

enum Accept {
    /// A node-id glob over the authenticated sender.
    Node(String),
    /// `type:glob` over the origin's source.
    Source { source_type: String, id: String },
}

#[derive(Default)]
struct Seen {
    ids: HashSet<String>,
    order: VecDeque<(u64, String)>,
}

impl Gate {
    /// The gate of node `id` from the config and the node's options; `None` when it would
    /// check nothing and sign nothing (no cost then).
    pub(crate) fn build(
        id: &NodeId,
        config: &SecurityConfig,
        options: Option<Security>,
    ) -> Result<Option<Gate>> {
        let entry = config.node(id);
        let options = options.unwrap_or_default();
        let key = match (&options.key, entry) {
            (Some(k), _) => Some(k.clone()),
            (None, Some(e)) => match (&e.seed, &e.seed_file) {
                (Some(seed), _) => Some(SigningKey::from_seed(seed).map_err(|e| {
                    Error::config(
                        &format!("security.nodes (node `{id}`).seed"),
                        e.message().to_owned(),
                    )
                })?),
                (None, Some(path)) => {
                    let text = std::fs::read_to_string(path).map_err(|e| {
                        Error::config(
                            &format!("security.nodes (node `{id}`).seed_file"),
                            format!("cannot read `{}`: {e}", path.display()),
                        )
                    })?;
                    let seed = text
                        .lines()
                        .map(str::trim)
                        .find(|l| l.starts_with('S'))
                        .unwrap_or("");
                    Some(SigningKey::from_seed(seed).map_err(|e| {
                        Error::config(
                            &format!("security.nodes (node `{id}`).seed_file"),
                            e.message().to_owned(),
                        )
                    })?)
                }
                (None, None) => None,
            },
            (None, None) => None,
        };
        let ring = TrustRing::from_patterns(config.trust.clone()).merged(&options.ring);
        let mode = options.mode.or(entry.and_then(|e| e.mode)).unwrap_or(
            if key.is_some() || !ring.is_empty() {
                SecurityMode::Permissive
            } else {
                SecurityMode::Off
            },
        );
        let accept_from = options
            .accept_from
            .or_else(|| entry.map(|e| e.accept_from.clone()))
            .unwrap_or_default();
        if mode == SecurityMode::Off
            && key.is_none()
            && accept_from.is_empty()
            && options.policies.is_empty()
        {
            return Ok(None);
        }
        let accept_from = accept_from
            .into_iter()
            .map(|entry| match entry.split_once(':') {
                Some((t, glob)) => Accept::Source {
                    source_type: t.to_owned(),
                    id: glob.to_owned(),
                },
                None => Accept::Node(entry),
            })
            .collect();
        Ok(Some(Gate {
            node: id.clone(),
            mode,
            key,
            ring,
            accept_from,
            policies: options.policies,
            max_age_ms: millis(config.max_age),
            max_future_ms: millis(config.max_future),
            seen: Mutex::new(Seen::default()),
            verifiers: Mutex::new(HashMap::new()),
            max_seen: config.max_seen_ids,
            denied: AtomicU64::new(0),
            last_log: AtomicU64::new(0),
            unlogged: AtomicU64::new(0),
        }))
    }

    /// The key the node signs with.
    pub(crate) fn signer(&self) -> Option<&SigningKey> {
        self.key.as_ref()
    }

    /// How many events the gates turned away.
    pub(crate) fn denied(&self) -> u64 {
        self.denied.load(Ordering::Relaxed)
    }

    /// Runs the gates; the error says which one failed and why.
    pub(crate) fn check(&self, event: &Event) -> Result<()> {
        let result = self.gates(event);
        if let Err(e) = &result {
            self.denied.fetch_add(1, Ordering::Relaxed);
            let now = now_ms();
            let last = self.last_log.load(Ordering::Relaxed);
            if now.saturating_sub(last) >= 1000
                && self
                    .last_log
                    .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                let also = self.unlogged.swap(0, Ordering::Relaxed);
                tracing::warn!(node = %self.node, event_type = event.event_type(), sender = %event.sender(),
                    kind = e.kind().as_str(), unlogged_since = also, "event rejected before admission: {}", e.message());
            } else {
                self.unlogged.fetch_add(1, Ordering::Relaxed);
            }
        }
        result
    }

    fn gates(&self, event: &Event) -> Result<()> {
        let arrival = event.arrival();
        if arrival != Arrival::Local && self.mode != SecurityMode::Off {
            self.authenticate(event, arrival)?;
        }
        if !self.accept_from.is_empty() {
            self.accept(event)?;
        }
        for (pattern, policy) in &self.policies {
            if pattern.matches(event.event_type()) {
                self.apply(policy, event)?;
            }
        }
        Ok(())
    }

    fn unauthenticated(&self, event: &Event, why: impl std::fmt::Display) -> Error {
        Error::new(
            ErrorKind::Unauthenticated,
            format!(
                "node `{}` refused event `{}` from `{}`: {why}",
                self.node,
                event.event_type(),
                event.sender()
            ),
        )
        .with_node(&self.node)
    }

    fn authenticate(&self, event: &Event, arrival: Arrival) -> Result<()> {
        let Some(integrity) = event.integrity() else {
            return match self.mode {
                SecurityMode::Enforce => Err(self.unauthenticated(
                    event,
                    "the event is not signed and the node enforces signatures (give the sender a signing key and bind it in the receiver's trust ring)",
                )),
                _ => Ok(()),
            };
        };
        let ext = event.ext();
        let Some(hash) = event.hash() else {
            return Err(self.unauthenticated(event, "signed, but `context.causal.hash` is missing"));
        };
        let Some(digest) = ext.and_then(|e| e.received_digest) else {
            return Err(self.unauthenticated(
                event,
                "signed, but the transport kept no digest of the received body (a transport must decode with `happen::transport::received`)",
            ));
        };
        if hex(&digest) != hash {
            return Err(self.unauthenticated(
                event,
                "`causal.hash` does not match the event's content (altered after signing?)",
            ));
        }
        let Some(bound) = self.ring.key_for(event.sender()) else {
            return Err(self.unauthenticated(
                event,
                format_args!(
                    "the sender has no key in the trust ring (add `{}` to `[security.trust]`)",
                    event.sender()
                ),
            ));
        };
        if integrity.public_key().is_some_and(|k| k != bound) {
            return Err(self.unauthenticated(
                event,
                "signed with a key the trust ring does not bind to the sender",
            ));
        }
        let verified = data_encoding::BASE64URL_NOPAD
            .decode(integrity.signature().as_bytes())
            .ok()
            .zip(self.verifier(bound))
            .is_some_and(|(sig, pair)| pair.verify(hash.as_bytes(), &sig).is_ok());
        if !verified {
            return Err(self.unauthenticated(
                event,
                "the signature does not verify with the sender's key from the trust ring",
            ));
        }
        if arrival == Arrival::Durable {
            return Ok(()); // JetStream deduplicates and redelivers; the stream bounds the age
        }
        let now = now_ms();
        let ts = event.causal().timestamp();
        if ts.saturating_add(self.max_age_ms) < now {
            return Err(self.unauthenticated(
                event,
                format_args!(
                    "stamped {} ms ago, older than security.max_age_ms ({})",
                    now - ts,
                    self.max_age_ms
                ),
            ));
        }
        if ts > now.saturating_add(self.max_future_ms) {
            return Err(self.unauthenticated(
                event,
                format_args!("stamped {} ms in the future, beyond security.max_future_ms ({}); check the clocks", ts - now, self.max_future_ms),
            ));
        }
        let mut seen = self.seen.lock();
        let horizon = now.saturating_sub(self.max_age_ms);
        while let Some((t, _)) = seen.order.front() {
            if *t >= horizon && seen.order.len() < self.max_seen {
                break;
            }
            if let Some((_, id)) = seen.order.pop_front() {
                seen.ids.remove(&id);
            }
        }
        let id = event.id().to_string();
        if !seen.ids.insert(id.clone()) {
            drop(seen);
            return Err(self.unauthenticated(event, "a replay: this event id was already received"));
        }
        seen.order.push_back((now, id));
        Ok(())
    }

    /// The decoded key of a ring entry (`None` for a key that is not an nkey).
    fn verifier(&self, public_key: &str) -> Option<Arc<nkeys::KeyPair>> {
        if let Some(k) = self.verifiers.lock().get(public_key) {
            return Some(k.clone());
        }
        let pair = Arc::new(nkeys::KeyPair::from_public_key(public_key).ok()?);
        self.verifiers
            .lock()
            .insert(public_key.to_owned(), pair.clone());
        Some(pair)
    }

    /// The sender's id as far as it is authenticated: in process always; from elsewhere when
    /// signed and verified, or as claimed unless the node enforces signatures (then every
    /// event that got here was verified).
    fn accept(&self, event: &Event) -> Result<()> {
        let origin = event.origin();
        let ok = self.accept_from.iter().any(|a| match a {
            Accept::Node(glob) => glob_matches(glob, event.sender()),
            Accept::Source { source_type, id } => {
                origin.source_type() == Some(source_type.as_str())
                    && origin.source_id().is_some_and(|s| glob_matches(id, s))
            }
        });
        if ok {
            return Ok(());
        }
        let source = match (origin.source_type(), origin.source_id()) {
            (Some(t), Some(i)) => format!(" (origin {t}:{i})"),
            (None, Some(i)) => format!(" (origin {i})"),
            _ => String::new(),
        };
        let list: Vec<String> = self
            .accept_from
            .iter()
            .map(|a| match a {
                Accept::Node(g) => g.clone(),
                Accept::Source { source_type, id } => format!("{source_type}:{id}"),
            })
            .collect();
        Err(Error::new(
            ErrorKind::Forbidden,
            format!(
                "node `{}` accepts events only from {list:?}; `{}`{source} is not among them (add it to the node's accept_from)",
                self.node,
                event.sender()
            ),
        )
        .with_node(&self.node))
    }

    fn apply(&self, policy: &Policy, event: &Event) -> Result<()> {
        if !policy.schemas.is_empty() {
            let shape = schema_hash(event.payload());
            if !policy.schemas.contains(&shape) {
                return Err(Error::new(
                    ErrorKind::InvalidEvent,
                    format!(
                        "the payload of `{}` has shape {shape}, not one node `{}` allows (compare with happen::schema_hash of an allowed payload)",
                        event.event_type(),
                        self.node
                    ),
                )
                .with_node(&self.node));
            }
        }
        let forbidden = |why: String| {
            Error::new(
                ErrorKind::Forbidden,
                format!(
                    "node `{}` refused `{}` from `{}`: {why}",
                    self.node,
                    event.event_type(),
                    event.sender()
                ),
            )
            .with_node(&self.node)
        };
        if !policy.roles.is_empty() {
            let role = event.origin().source_id();
            if !role.is_some_and(|r| policy.roles.iter().any(|a| a == r)) {
                return Err(forbidden(format!(
                    "origin.sourceId {role:?} is not one of the allowed roles {:?}",
                    policy.roles
                )));
            }
        }
        if let Some(check) = &policy.check {
            match catch_unwind(AssertUnwindSafe(|| check(event))) {
                Ok(Ok(())) => {}
                Ok(Err(why)) => return Err(forbidden(why)),
                Err(panic) => {
                    return Err(forbidden(format!(
                        "the policy check panicked: {}",
                        panic_message(&*panic)
                    )));
                }
            }
        }
        Ok(())
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
