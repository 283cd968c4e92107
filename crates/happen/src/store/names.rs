//! Bucket names and keys: `node-<id>` (escaped reversibly), key `state`, the global bucket.

use crate::error::{Error, ErrorKind, Result};

/// The key a node's state is stored under in its bucket (what the reference uses).
///
/// ```
/// assert_eq!(happen::transport::STATE_KEY, "state");
/// ```
pub const STATE_KEY: &str = "state";

/// The bucket of global state (the reference's name).
///
/// ```
/// assert_eq!(happen::transport::GLOBAL_BUCKET, "happen-global-state");
/// ```
pub const GLOBAL_BUCKET: &str = "happen-global-state";

/// The bucket of node `id`'s state: `node-<id>`.
///
/// Bucket names may hold only `A-Z a-z 0-9 _ -`. An id made only of those characters and not
/// starting with `_` is used as it is — the bucket the reference (and a TypeScript node with
/// the same id) uses. Any other id is written as `_` followed by the id with `_` doubled and
/// every other byte outside the set as `_` and two uppercase hex digits, so different ids never
/// share a bucket and [`node_of_bucket`] gives the id back.
///
/// ```
/// use happen::transport::{node_bucket, node_of_bucket};
///
/// assert_eq!(node_bucket("inventory"), "node-inventory");
/// assert_eq!(node_bucket("shop.orders"), "node-_shop_2Eorders");
/// assert_eq!(node_bucket("_x"), "node-___x");
/// assert_eq!(node_of_bucket("node-_shop_2Eorders").as_deref(), Some("shop.orders"));
/// assert_eq!(node_of_bucket("node-inventory").as_deref(), Some("inventory"));
/// ```
pub fn node_bucket(id: &str) -> String {
    let plain = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'-';
    let mut out = String::with_capacity(id.len() + 8);
    out.push_str("node-");
    if !id.starts_with('_') && id.bytes().all(plain) {
        out.push_str(id);
        return out;
    }
    out.push('_');
    for b in id.bytes() {
        if b == b'_' {
            out.push_str("__");
        } else if plain(b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("_{b:02X}"));
        }
    }
    out
}

/// The node id whose state `bucket` holds (the inverse of [`node_bucket`]); `None` for a
/// name [`node_bucket`] does not make.
///
/// ```
/// assert_eq!(happen::transport::node_of_bucket("KV_other"), None);
/// ```
pub fn node_of_bucket(bucket: &str) -> Option<String> {
    let rest = bucket.strip_prefix("node-")?;
    let Some(escaped) = rest.strip_prefix('_') else {
        return (!rest.is_empty()).then(|| rest.to_owned());
    };
    let bytes = escaped.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'_' {
            out.push(bytes[i]);
            i += 1;
        } else if bytes.get(i + 1) == Some(&b'_') {
            out.push(b'_');
            i += 2;
        } else {
            let hex = escaped.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        }
    }
    String::from_utf8(out).ok()
}

/// Checks a global-state key: NATS key-value keys are letters, digits and `-/_=.`, not
/// empty, not starting or ending with `.`.
///
/// # Errors
/// [`ErrorKind::InvalidKey`] naming the key and what is wrong.
///
/// ```
/// use happen::transport::validate_key;
///
/// assert!(validate_key("config.prices").is_ok());
/// let err = validate_key("has space").unwrap_err();
/// assert_eq!(err.kind(), happen::ErrorKind::InvalidKey);
/// assert!(err.message().contains("' '"), "{err}");
/// ```
pub fn validate_key(key: &str) -> Result<()> {
    let bad = |why: String| {
        Err(Error::new(
            ErrorKind::InvalidKey,
            format!(
                "invalid state key `{key}`: {why}; keys are letters, digits and `-/_=.`, \
                 not starting or ending with `.`"
            ),
        ))
    };
    if key.is_empty() {
        return bad("it is empty".into());
    }
    if key.starts_with('.') || key.ends_with('.') {
        return bad("it starts or ends with `.`".into());
    }
    if key.contains("..") {
        return bad("it has an empty part between two `.`".into());
    }
    if let Some(c) = key
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '/' | '_' | '=' | '.')))
    {
        return bad(format!("character {c:?} is not allowed"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_round_trip() {
        for id in [
            "a", "a-b_c", "_", "__", "_2E", "a.b", "ü", "x_2Ey", "a/b:c", "node", "-",
        ] {
            let b = node_bucket(id);
            assert!(
                b.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-'),
                "{b}"
            );
            assert_eq!(node_of_bucket(&b).as_deref(), Some(id), "{b}");
        }
        // no two ids share a bucket
        assert_ne!(node_bucket("_2E"), node_bucket("."));
        assert_ne!(node_bucket("x_2Ey"), node_bucket("x.y"));
    }

    #[test]
    fn keys() {
        assert!(validate_key("a/b=c_d-e.f").is_ok());
        for k in ["", ".a", "a.", "a..b", "a b", "a*", "a>"] {
            assert_eq!(validate_key(k).unwrap_err().kind(), ErrorKind::InvalidKey);
        }
    }
}
