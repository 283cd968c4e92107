//! Node identity, signed events, and the gates an event passes before admission.
//!
//! - **Identity.** A node may have a [`SigningKey`] (an nkey; it may be the node's NATS user
//!   key too). Every event it sends then carries `context.causal.hash` (hex SHA-256 of the
//!   RFC 8785 [canonical JSON](canonical_json) of the event without `causal.hash` and
//!   `integrity`) and `context.integrity` (`signature`: base64url Ed25519 over the hash's
//!   ASCII bytes; `publicKey`: the signer's nkey, a hint). A [`TrustRing`] binds node ids to
//!   public keys, in code or in the config's `[security.trust]`.
//! - **Gates**, in order, before an event takes a concurrency slot or a queue place:
//!   1. *authentication* (events from other processes, per [`SecurityMode`]): the hash must
//!      match the canonical form of the **bytes received**, the signature must verify with
//!      the key the ring binds to the claimed sender, the timestamp must lie within
//!      `max_age` / `max_future`, and the event id must not have been seen within `max_age`
//!      (a durable (JetStream) delivery is exempt: JetStream's own deduplication and
//!      redelivery rule there). Fails with [`ErrorKind::Unauthenticated`];
//!   2. *acceptance* (`accept_from`): node-id globs over the authenticated sender,
//!      `type:glob` entries over the origin (`user:admin` matches `origin.sourceType ==
//!      "user"` and a `sourceId` matching `admin`). Fails with [`ErrorKind::Forbidden`];
//!   3. *policies* per event-type pattern: allowed payload [`schema_hash`]es
//!      ([`ErrorKind::InvalidEvent`]), allowed roles over `origin.sourceId` and a custom
//!      check ([`ErrorKind::Forbidden`]).
//!
//!   A rejected request is answered at once with the error; a rejected tell or broadcast is
//!   dropped, counted in [`NodeStats::denied`](crate::NodeStats::denied) and logged
//!   (at most once a second per node).
//!
//! Events between nodes of one process are authenticated by construction (the sender is a
//! node handle of the process) and pass the acceptance and policy gates like any other.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
//! use happen::security::{Policy, Security};
//! use happen::{Context, ErrorKind, Event, Happen, NodeOptions};
//! use serde_json::json;
//!
//! let happen = Happen::new();
//! let web = happen.node("web").await?;
//! let admin = happen.node("admin-ui").await?;
//! let shape = happen::schema_hash(&json!({"amount": 1}));
//! let security = Security::new()
//!     .accept_from(["web", "admin-*"])
//!     .policy("refund", Policy::new().schemas([shape]).roles(["admin"]))?;
//! let billing = happen.node_with("billing", NodeOptions::new().security(security)).await?;
//! billing.on("refund", |_e: Event, _c: Context| async { "refunded" })?;
//!
//! let refund = || Event::new("refund", json!({"amount": 5}));
//! let ok = web.send(&billing, refund().with_source_id("admin")).await?;
//! assert_eq!(ok, "refunded");
//! let err = web.send(&billing, refund().with_source_id("bob")).await.unwrap_err();
//! assert_eq!(err.kind(), ErrorKind::Forbidden); // not an allowed role
//! let bad = Event::new("refund", json!({"amount": "5"})).with_source_id("admin");
//! assert_eq!(web.send(&billing, bad).await.unwrap_err().kind(), ErrorKind::InvalidEvent);
//! let stranger = happen.node("stranger").await?;
//! let err = stranger.send(&billing, refund().with_source_id("admin")).await.unwrap_err();
//! assert_eq!(err.kind(), ErrorKind::Forbidden); // not in accept_from
//! assert_eq!(billing.stats().denied, 3);
//! assert_eq!(billing.stats().accepted, 1);
//! # Ok(()) }
//! ```

mod canonical;
mod gate;
mod keys;
mod options;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::{Error, ErrorKind, Result};
use crate::event::{Arrival, Event, Integrity};

pub use crate::config::SecurityMode;
pub use canonical::canonical_json;
pub(crate) use gate::Gate;
pub use keys::{SigningKey, TrustRing};
pub use options::{Policy, PolicyCheck, Security};

/// The shape hash of a JSON value: hex SHA-256 of the canonical JSON of its shape, where an
/// object's shape is its keys with their values' shapes, an array's shape is the sorted set
/// of its items' shapes, and a scalar's shape is its type (`"null"`, `"boolean"`,
/// `"number"`, `"string"`). Values differ, shapes agree: what a [`Policy`]'s `schemas`
/// compare.
///
/// ```
/// use happen::schema_hash;
/// use serde_json::json;
///
/// let a = schema_hash(&json!({"id": 1, "tags": ["x", "y"]}));
/// assert_eq!(a, schema_hash(&json!({"tags": ["z"], "id": 7}))); // other values, one shape…
/// assert_ne!(a, schema_hash(&json!({"id": "1", "tags": ["x"]}))); // …another type
/// assert_eq!(a.len(), 64);
/// ```
pub fn schema_hash(value: &Value) -> String {
    hex_sha256(canonical_json(&shape(value)).as_bytes())
}

fn shape(value: &Value) -> Value {
    match value {
        Value::Null => Value::from("null"),
        Value::Bool(_) => Value::from("boolean"),
        Value::Number(_) => Value::from("number"),
        Value::String(_) => Value::from("string"),
        Value::Array(items) => {
            let mut shapes: Vec<String> = items.iter().map(|i| canonical_json(&shape(i))).collect();
            shapes.sort();
            shapes.dedup();
            Value::Array(
                shapes
                    .iter()
                    .filter_map(|s| serde_json::from_str(s).ok())
                    .collect(),
            )
        }
        Value::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (k.clone(), shape(v))).collect())
        }
    }
}

/// The `causal.hash` an event has or would have: hex SHA-256 of the canonical JSON of its
/// wire form without `causal.hash` and `integrity`.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
/// use happen::security::{Security, SigningKey, event_hash};
/// use happen::{Context, Event, Happen, NodeOptions};
///
/// let happen = Happen::new();
/// let key = SigningKey::generate();
/// let signer = happen.node_with("signer", NodeOptions::new().security(Security::new().signing_key(key))).await?;
/// signer.on("look", |e: Event, _c: Context| async move {
///     (e.hash().unwrap() == event_hash(&e)) && e.integrity().is_some()
/// })?;
/// assert_eq!(signer.send(&signer, Event::new("look", 1)).await?, true);
/// # Ok(()) }
/// ```
pub fn event_hash(event: &Event) -> String {
    let value = serde_json::to_value(event.unsigned_form()).unwrap_or(Value::Null);
    hex_sha256(canonical_json(&value).as_bytes())
}

/// The `causal.hash` of a received body: hex SHA-256 of the canonical JSON of the body's
/// JSON without `context.causal.hash` and `context.integrity` (what a receiver compares with
/// the body's `causal.hash`).
///
/// # Errors
/// [`ErrorKind::InvalidEvent`] when `body` is not JSON.
///
/// ```
/// use happen::security::body_hash;
/// let signed = br#"{"type":"t","context":{"causal":{"hash":"abc"},"integrity":{"signature":"x"}}}"#;
/// let plain = br#"{ "context": {"causal": {}}, "type": "t" }"#;
/// assert_eq!(body_hash(signed)?, body_hash(plain)?);
/// # Ok::<(), happen::Error>(())
/// ```
pub fn body_hash(body: &[u8]) -> Result<String> {
    digest_of_body(body).map(|d| hex(&d))
}

pub(crate) fn digest_of_body(body: &[u8]) -> Result<[u8; 32]> {
    let mut value: Value = serde_json::from_slice(body).map_err(|e| {
        Error::new(
            ErrorKind::InvalidEvent,
            format!("the event body is not JSON: {e}"),
        )
    })?;
    if let Some(context) = value.get_mut("context").and_then(Value::as_object_mut) {
        context.remove("integrity");
        if let Some(causal) = context.get_mut("causal").and_then(Value::as_object_mut) {
            causal.remove("hash");
        }
    }
    Ok(Sha256::digest(canonical_json(&value).as_bytes()).into())
}

/// Signs a stamped event with `key`: sets `causal.hash` and `integrity`.
pub(crate) fn sign(mut event: Event, key: &SigningKey) -> Event {
    let hash = event_hash(&event);
    let signature = data_encoding::BASE64URL_NOPAD.encode(&key.sign(hash.as_bytes()));
    let ext = event.ext_mut();
    ext.hash = Some(hash);
    ext.integrity = Some(Integrity::new(signature, Some(key.public_key().to_owned())));
    event
}

/// Records, for a signed event decoded from `body`, the digest of the body's canonical form,
/// so the receiving node's gate verifies the signature against the bytes received. For
/// transports (see [`happen::transport::received`](crate::transport::received)).
pub(crate) fn note_received(event: &mut Event, body: &[u8], durable: bool) {
    event.set_arrival(if durable {
        Arrival::Durable
    } else {
        Arrival::Wire
    });
    if event.integrity().is_some() {
        let digest = digest_of_body(body).ok();
        event.ext_mut().received_digest = digest;
    }
}

fn hex_sha256(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

fn hex(bytes: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(bytes)
}

/// Signs a raw event body with `key`, for producers that build the JSON themselves (the
/// `happen send --sign-key` of a hand-written body, a test, a bridge): sets
/// `context.causal.hash` over the body's canonical form and `context.integrity`, replacing
/// any there. The body's `causal.sender` must be a node the receivers' rings bind to `key`.
///
/// # Errors
/// [`ErrorKind::InvalidEvent`] when `body` is not a JSON object.
///
/// ```
/// use happen::security::{SigningKey, body_hash, sign_body};
///
/// let key = SigningKey::generate();
/// let body = br#"{"type":"ping","payload":1,"context":{"causal":{"sender":"cli"}}}"#;
/// let signed = sign_body(body, &key)?;
/// let v: serde_json::Value = serde_json::from_slice(&signed).unwrap();
/// assert_eq!(v["context"]["causal"]["hash"], body_hash(body)?);
/// assert_eq!(v["context"]["integrity"]["publicKey"], key.public_key());
/// # Ok::<(), happen::Error>(())
/// ```
pub fn sign_body(body: &[u8], key: &SigningKey) -> Result<Vec<u8>> {
    let hash = body_hash(body)?;
    let mut value: Value = serde_json::from_slice(body).map_err(|e| {
        Error::new(
            ErrorKind::InvalidEvent,
            format!("the event body is not JSON: {e}"),
        )
    })?;
    let Some(event) = value.as_object_mut() else {
        return Err(Error::new(
            ErrorKind::InvalidEvent,
            "the event body is not a JSON object",
        ));
    };
    let context = event
        .entry("context")
        .or_insert_with(|| Value::Object(Default::default()));
    if !context.is_object() {
        *context = Value::Object(Default::default());
    }
    let signature = data_encoding::BASE64URL_NOPAD.encode(&key.sign(hash.as_bytes()));
    if let Some(context) = context.as_object_mut() {
        let causal = context
            .entry("causal")
            .or_insert_with(|| Value::Object(Default::default()));
        if let Some(causal) = causal.as_object_mut() {
            causal.insert("hash".into(), Value::from(hash));
        }
        context.insert(
            "integrity".into(),
            serde_json::json!({"signature": signature, "publicKey": key.public_key()}),
        );
    }
    serde_json::to_vec(&value).map_err(|e| {
        Error::new(
            ErrorKind::InvalidEvent,
            format!("cannot write the body: {e}"),
        )
    })
}
