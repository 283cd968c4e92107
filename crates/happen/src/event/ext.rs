//! What an event carries beyond its type, payload, priority and causal context: the origin's
//! source, the hash and signature, and context fields happen does not know. Boxed and
//! optional in the event, so an event without any of it allocates nothing for it.
//!
//! Also the wire form's reading of `context` and `context.causal`, which keeps unknown fields
//! instead of dropping them.

use std::fmt;

use serde::de::{self, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use super::{Causal, Path, empty_node, now_ms};
use crate::id::{CorrelationId, EventId, NodeId};

/// The extension of an event (see the module docs).
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Ext {
    /// `context.origin.sourceId`.
    pub(crate) source_id: Option<String>,
    /// `context.origin.sourceType`.
    pub(crate) source_type: Option<String>,
    /// `context.causal.hash`: hex SHA-256 of the canonical event without it and `integrity`.
    pub(crate) hash: Option<String>,
    /// `context.integrity`.
    pub(crate) integrity: Option<Integrity>,
    /// Unknown fields of `context.causal`.
    pub(crate) causal_extra: Map<String, Value>,
    /// Unknown fields of `context` (beside `causal`, `priority`, `origin`, `integrity`).
    pub(crate) context_extra: Map<String, Value>,
    /// Unknown fields of `context.origin` (beside `nodeId`, `sourceId`, `sourceType`).
    pub(crate) origin_extra: Map<String, Value>,
    /// The SHA-256 of the canonical form of the body this event was decoded from (without
    /// the hash and the integrity), computed by the receiver from the received bytes when
    /// the event arrived signed. Never serialized.
    pub(crate) received_digest: Option<[u8; 32]>,
}

impl Ext {
    pub(crate) fn is_empty(&self) -> bool {
        // field by field: comparing with `Ext::default()` builds and drops three maps, on
        // every event read from the wire
        let Ext {
            source_id,
            source_type,
            hash,
            integrity,
            causal_extra,
            context_extra,
            origin_extra,
            received_digest,
        } = self;
        source_id.is_none()
            && source_type.is_none()
            && hash.is_none()
            && integrity.is_none()
            && causal_extra.is_empty()
            && context_extra.is_empty()
            && origin_extra.is_empty()
            && received_digest.is_none()
    }

    pub(crate) fn has_source(&self) -> bool {
        self.source_id.is_some() || self.source_type.is_some()
    }
}

/// An event's `context.integrity`: the Ed25519 signature over `context.causal.hash` and the
/// signer's public key as a hint (see [`Event::integrity`](crate::Event::integrity)).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Integrity {
    signature: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    public_key: Option<String>,
}

impl Integrity {
    pub(crate) fn new(signature: String, public_key: Option<String>) -> Integrity {
        Integrity {
            signature,
            public_key,
        }
    }

    /// The signature: base64url (no padding) of the 64-byte Ed25519 signature over the
    /// bytes of the hex `causal.hash` string.
    pub fn signature(&self) -> &str {
        &self.signature
    }

    /// The public key the sender says it signed with (an nkey, `N…` for a node key, `U…`
    /// for a NATS user key). A hint only: the receiver accepts it when its trust ring binds
    /// it to the sender.
    pub fn public_key(&self) -> Option<&str> {
        self.public_key.as_deref()
    }
}

/// Where an event comes from, beyond the node that sent it (Happen's `context.origin`), read
/// with [`Event::origin`](crate::Event::origin).
///
/// `node_id` is always the immediate sender; `source_id` and `source_type` name who the
/// event acts for (a user, a tenant, an upstream system) and are inherited by every event a
/// flow sends, so a chain keeps its original requester.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Origin<'a> {
    pub(crate) node_id: &'a NodeId,
    pub(crate) source_id: Option<&'a str>,
    pub(crate) source_type: Option<&'a str>,
}

impl<'a> Origin<'a> {
    /// The node that sent the event (the same as [`Event::sender`](crate::Event::sender)).
    pub fn node_id(&self) -> &'a NodeId {
        self.node_id
    }
    /// Who the event acts for (`origin.sourceId`), if the sender or an ancestor said.
    pub fn source_id(&self) -> Option<&'a str> {
        self.source_id
    }
    /// What kind of source that is (`origin.sourceType`: `user`, `tenant`, ...).
    pub fn source_type(&self) -> Option<&'a str> {
        self.source_type
    }
}

// ---- writing -----------------------------------------------------------------------------------

/// `context.causal` with the extension's hash and unknown fields.
pub(super) struct CausalOut<'a> {
    pub(super) causal: &'a Causal,
    pub(super) ext: &'a Ext,
}

impl Serialize for CausalOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let c = self.causal;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("id", &c.id)?;
        m.serialize_entry("sender", &c.sender)?;
        if let Some(cause) = &c.causation_id {
            m.serialize_entry("causationId", cause)?;
        }
        m.serialize_entry("correlationId", &c.correlation_id)?;
        m.serialize_entry("path", &c.path)?;
        m.serialize_entry("timestamp", &c.timestamp)?;
        if let Some(hash) = &self.ext.hash {
            m.serialize_entry("hash", hash)?;
        }
        for (k, v) in &self.ext.causal_extra {
            if !CAUSAL_KEYS.contains(&k.as_str()) {
                m.serialize_entry(k, v)?;
            }
        }
        m.end()
    }
}

/// `context` with the extension.
pub(super) struct ContextOut<'a> {
    pub(super) causal: &'a Causal,
    pub(super) priority: i32,
    pub(super) ext: &'a Ext,
    /// Leave out the hash and the integrity (the form that is hashed).
    pub(super) unsigned: bool,
}

struct OriginOut<'a> {
    node_id: &'a NodeId,
    ext: &'a Ext,
}

impl Serialize for OriginOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("nodeId", self.node_id)?;
        if let Some(id) = &self.ext.source_id {
            m.serialize_entry("sourceId", id)?;
        }
        if let Some(t) = &self.ext.source_type {
            m.serialize_entry("sourceType", t)?;
        }
        for (k, v) in &self.ext.origin_extra {
            if !ORIGIN_KEYS.contains(&k.as_str()) {
                m.serialize_entry(k, v)?;
            }
        }
        m.end()
    }
}

impl Serialize for ContextOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        if self.unsigned && self.ext.hash.is_some() {
            let plain = Ext {
                hash: None,
                ..Ext::clone(self.ext)
            };
            m.serialize_entry(
                "causal",
                &CausalOut {
                    causal: self.causal,
                    ext: &plain,
                },
            )?;
        } else {
            m.serialize_entry(
                "causal",
                &CausalOut {
                    causal: self.causal,
                    ext: self.ext,
                },
            )?;
        }
        if self.priority != 0 {
            m.serialize_entry("priority", &self.priority)?;
        }
        if self.ext.has_source() || !self.ext.origin_extra.is_empty() {
            m.serialize_entry(
                "origin",
                &OriginOut {
                    node_id: &self.causal.sender,
                    ext: self.ext,
                },
            )?;
        }
        if !self.unsigned
            && let Some(i) = &self.ext.integrity
        {
            m.serialize_entry("integrity", i)?;
        }
        for (k, v) in &self.ext.context_extra {
            if !CONTEXT_KEYS.contains(&k.as_str()) {
                m.serialize_entry(k, v)?;
            }
        }
        m.end()
    }
}

const CONTEXT_KEYS: [&str; 4] = ["causal", "priority", "origin", "integrity"];
const CAUSAL_KEYS: [&str; 7] = [
    "id",
    "sender",
    "causationId",
    "correlationId",
    "path",
    "timestamp",
    "hash",
];
const ORIGIN_KEYS: [&str; 3] = ["nodeId", "sourceId", "sourceType"];

/// Is `name` a `context` field happen reads itself (not kept as an unknown field)?
pub(crate) fn is_known_context_field(name: &str) -> bool {
    CONTEXT_KEYS.contains(&name)
}

// ---- reading -----------------------------------------------------------------------------------

/// `context` as read from the wire.
///
/// The extension is boxed and made only when a field of it arrives: most events have none,
/// and a `ContextIn` is moved several times on its way out of the deserializer (an `Ext`
/// inline made each move a copy of some 300 bytes).
#[derive(Default)]
pub(super) struct ContextIn {
    pub(super) causal: Option<Causal>,
    pub(super) priority: i32,
    pub(super) ext: Option<Box<Ext>>,
}

impl ContextIn {
    fn ext(&mut self) -> &mut Ext {
        self.ext.get_or_insert_with(Box::default)
    }
}

impl<'de> Deserialize<'de> for ContextIn {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(ContextVisitor)
    }
}

struct ContextVisitor;

impl<'de> Visitor<'de> for ContextVisitor {
    type Value = ContextIn;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an event context object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ContextIn, A::Error> {
        let mut out = ContextIn::default();
        while let Some(key) = map.next_key::<Key>()? {
            match key.0.as_ref() {
                "causal" => {
                    if let Some(c) = map.next_value::<Option<CausalIn>>()? {
                        if c.hash.is_some() || !c.extra.is_empty() {
                            let ext = out.ext();
                            ext.hash = c.hash;
                            ext.causal_extra = c.extra;
                        }
                        out.causal = Some(c.causal);
                    }
                }
                "priority" => {
                    out.priority = map.next_value::<Option<i32>>()?.unwrap_or(0);
                }
                "origin" => {
                    if let Some(o) = map.next_value::<Option<OriginIn>>()?
                        && (o.source_id.is_some() || o.source_type.is_some() || !o.extra.is_empty())
                    {
                        let ext = out.ext();
                        ext.source_id = o.source_id;
                        ext.source_type = o.source_type;
                        ext.origin_extra = o.extra;
                    }
                }
                "integrity" => {
                    if let Some(i) = map.next_value::<Option<Integrity>>()? {
                        out.ext().integrity = Some(i);
                    }
                }
                _ => {
                    let v = map.next_value::<Value>()?;
                    out.ext().context_extra.insert(key.0.into_owned(), v);
                }
            }
        }
        Ok(out)
    }
}

/// A map key, borrowed when the input allows.
struct Key<'a>(std::borrow::Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(v.into()))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(v.to_owned().into()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(v.into()))
            }
        }
        d.deserialize_str(V)
    }
}

/// `context.causal` as read from the wire: missing fields filled in, unknown ones kept.
struct CausalIn {
    causal: Causal,
    hash: Option<String>,
    extra: Map<String, Value>,
}

impl<'de> Deserialize<'de> for CausalIn {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = CausalIn;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a causal context object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<CausalIn, A::Error> {
                let (mut id, mut sender, mut causation, mut correlation) = (None, None, None, None);
                let (mut path, mut timestamp, mut hash) = (None, None, None);
                let mut extra = Map::new();
                while let Some(key) = map.next_key::<Key>()? {
                    match key.0.as_ref() {
                        "id" => id = Some(map.next_value::<EventId>()?),
                        "sender" => sender = Some(map.next_value::<NodeId>()?),
                        "causationId" => causation = map.next_value::<Option<EventId>>()?,
                        "correlationId" => correlation = Some(map.next_value::<CorrelationId>()?),
                        "path" => path = Some(map.next_value::<Path>()?),
                        "timestamp" => timestamp = Some(map.next_value::<u64>()?),
                        "hash" => hash = map.next_value::<Option<String>>()?,
                        _ => {
                            let v = map.next_value::<Value>()?;
                            extra.insert(key.0.into_owned(), v);
                        }
                    }
                }
                Ok(CausalIn {
                    causal: Causal {
                        id: id.unwrap_or_else(EventId::new),
                        sender: sender.unwrap_or_else(empty_node),
                        causation_id: causation,
                        correlation_id: correlation.unwrap_or_else(CorrelationId::new),
                        path: path.unwrap_or_default(),
                        timestamp: timestamp.unwrap_or_else(now_ms),
                    },
                    hash,
                    extra,
                })
            }
        }
        d.deserialize_map(V)
    }
}

/// `context.origin` as read from the wire (`nodeId` is not kept: the sender is the origin's
/// node).
struct OriginIn {
    source_id: Option<String>,
    source_type: Option<String>,
    extra: Map<String, Value>,
}

impl<'de> Deserialize<'de> for OriginIn {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OriginIn;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an origin object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OriginIn, A::Error> {
                let mut out = OriginIn {
                    source_id: None,
                    source_type: None,
                    extra: Map::new(),
                };
                while let Some(key) = map.next_key::<Key>()? {
                    match key.0.as_ref() {
                        "nodeId" => {
                            map.next_value::<de::IgnoredAny>()?;
                        }
                        "sourceId" => out.source_id = map.next_value()?,
                        "sourceType" => out.source_type = map.next_value()?,
                        _ => {
                            let v = map.next_value::<Value>()?;
                            out.extra.insert(key.0.into_owned(), v);
                        }
                    }
                }
                Ok(out)
            }
        }
        d.deserialize_map(V)
    }
}
