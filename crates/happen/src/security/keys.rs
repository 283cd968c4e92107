//! [`SigningKey`] (a node's nkey) and [`TrustRing`] (node ids to public keys).

use std::fmt;
use std::sync::Arc;

use crate::config::NodePatterns;
use crate::error::{Error, ErrorKind, Result};

/// A node's signing key: an Ed25519 key pair in NATS nkey form (seed `S…`, public key
/// `U…` for a user key, `N…` for a server key). The same nkey may be the node's NATS user
/// (`transport.nats` `nkey`), so one key proves the process to the server and the node to
/// its receivers. Cheap to clone; `Debug` shows the public key only.
///
/// ```
/// use happen::security::SigningKey;
///
/// let key = SigningKey::generate();
/// assert!(key.public_key().starts_with('U'));
/// let again = SigningKey::from_seed(&key.seed())?;
/// assert_eq!(again.public_key(), key.public_key());
/// assert!(!format!("{key:?}").contains(&key.seed()));
/// # Ok::<(), happen::Error>(())
/// ```
#[derive(Clone)]
pub struct SigningKey {
    pair: Arc<nkeys::KeyPair>,
    public: Arc<str>,
}

impl SigningKey {
    /// A new random key (a user nkey).
    pub fn generate() -> SigningKey {
        SigningKey::from_pair(nkeys::KeyPair::new_user())
    }

    /// The key of an nkey seed (`SU…`, `SN…`, ...).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidConfig`] when `seed` is not an nkey seed (the message does not
    /// repeat the seed).
    pub fn from_seed(seed: &str) -> Result<SigningKey> {
        nkeys::KeyPair::from_seed(seed.trim())
            .map(SigningKey::from_pair)
            .map_err(|e| {
                Error::new(
                    ErrorKind::InvalidConfig,
                    format!(
                        "not an nkey seed ({e}); give the `S…` seed that `nk -gen user` prints"
                    ),
                )
            })
    }

    fn from_pair(pair: nkeys::KeyPair) -> SigningKey {
        SigningKey {
            public: pair.public_key().into(),
            pair: Arc::new(pair),
        }
    }

    /// The public key (the form a trust ring and `context.integrity.publicKey` hold).
    pub fn public_key(&self) -> &str {
        &self.public
    }

    /// The seed, to store the key (keep it secret).
    pub fn seed(&self) -> String {
        self.pair.seed().unwrap_or_default()
    }

    /// Signs `data`: the 64-byte Ed25519 signature.
    pub(crate) fn sign(&self, data: &[u8]) -> Vec<u8> {
        self.pair.sign(data).unwrap_or_default()
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("public_key", &self.public_key())
            .finish()
    }
}

/// Which public key each node signs with: node-id patterns (`orders`, `checkout-*`, as in
/// the config's other sections; an exact id beats globs, the longest glob wins) to nkey
/// public keys. An event's sender is authenticated when its signature verifies with the key
/// the ring gives for the sender; the key an event carries is only a hint.
///
/// ```
/// use happen::security::{SigningKey, TrustRing};
///
/// let orders = SigningKey::generate();
/// let ring = TrustRing::new().trust("orders", orders.public_key())?.trust("web-*", "UBAD")?;
/// assert_eq!(ring.key_for("orders"), Some(orders.public_key()));
/// assert_eq!(ring.key_for("billing"), None);
/// # Ok::<(), happen::Error>(())
/// ```
#[derive(Clone, Default, PartialEq)]
pub struct TrustRing {
    keys: NodePatterns<String>,
}

impl TrustRing {
    /// An empty ring.
    pub fn new() -> TrustRing {
        TrustRing::default()
    }

    /// Binds the nodes matching `pattern` to `public_key`. A key that is not an nkey public
    /// key is accepted here and never verifies anything.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidConfig`] for an empty pattern.
    pub fn trust(
        mut self,
        pattern: impl Into<String>,
        public_key: impl Into<String>,
    ) -> Result<TrustRing> {
        let pattern = pattern.into();
        if pattern.is_empty() {
            return Err(Error::config(
                "security.trust",
                "a node-id pattern is empty",
            ));
        }
        self.keys.insert(pattern, public_key.into());
        Ok(self)
    }

    /// The public key bound to `node_id`, if any.
    pub fn key_for(&self, node_id: &str) -> Option<&str> {
        self.keys.select(node_id).map(|(_, k)| k.as_str())
    }

    /// Is the ring empty?
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub(crate) fn from_patterns(keys: NodePatterns<String>) -> TrustRing {
        TrustRing { keys }
    }

    /// `other`'s entries added after this ring's.
    pub(crate) fn merged(&self, other: &TrustRing) -> TrustRing {
        let mut keys = self.keys.clone();
        for (p, k) in other.keys.iter() {
            keys.insert(p, k.clone());
        }
        TrustRing { keys }
    }
}

impl fmt::Debug for TrustRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.keys.fmt(f)
    }
}
