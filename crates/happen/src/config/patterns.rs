//! [`NodePatterns`]: settings per node-id pattern (`api-*`), chosen by specificity.

use std::fmt;

use serde::de::{DeserializeOwned, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::error::{Error, Result};

/// Settings per node-id pattern, in declaration order: the concurrency overrides
/// (`[concurrency.patterns."api-*"]`), and any other per-node section (a transport's durable
/// nodes, for example) choose with it.
///
/// A pattern is a node id, or a glob whose `*` matches any run of characters. For a node id,
/// [`select`](NodePatterns::select) picks one entry:
/// 1. an entry without `*` that equals the node id exactly beats every glob;
/// 2. among matching globs, the one with the most literal (non-`*`) characters wins;
/// 3. ties go to the entry declared first.
///
/// ```
/// use happen::config::NodePatterns;
///
/// let mut p = NodePatterns::new();
/// p.insert("api-*", "any api node");
/// p.insert("api-gw-*", "a gateway");
/// p.insert("api-gw-1", "that one gateway");
/// assert_eq!(p.select("api-orders"), Some(("api-*", &"any api node")));
/// assert_eq!(p.select("api-gw-2"), Some(("api-gw-*", &"a gateway")));
/// assert_eq!(p.select("api-gw-1"), Some(("api-gw-1", &"that one gateway")));
/// assert_eq!(p.select("web-1"), None);
/// ```
///
/// Patterns are checked when the configuration is validated (an empty pattern, `**`, or a
/// character other than `*` that looks like a wildcard, such as `?` or `[`, is an error).
#[derive(Clone, PartialEq)]
pub struct NodePatterns<T>(Vec<(String, T)>);

impl<T> Default for NodePatterns<T> {
    fn default() -> Self {
        NodePatterns(Vec::new())
    }
}

impl<T> NodePatterns<T> {
    /// No entries.
    pub fn new() -> Self {
        NodePatterns::default()
    }

    /// Adds (or replaces) the entry for `pattern`, keeping declaration order (a replaced
    /// entry keeps its place).
    ///
    /// ```
    /// use happen::config::NodePatterns;
    ///
    /// let mut p = NodePatterns::new();
    /// p.insert("a-*", 1);
    /// p.insert("b-*", 2);
    /// p.insert("a-*", 3);
    /// assert_eq!(p.iter().collect::<Vec<_>>(), [("a-*", &3), ("b-*", &2)]);
    /// assert_eq!(p.len(), 2);
    /// assert!(!p.is_empty());
    /// ```
    pub fn insert(&mut self, pattern: impl Into<String>, value: T) {
        let pattern = pattern.into();
        match self.0.iter_mut().find(|(p, _)| *p == pattern) {
            Some(entry) => entry.1 = value,
            None => self.0.push((pattern, value)),
        }
    }

    /// The entries in declaration order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &T)> {
        self.0.iter().map(|(p, v)| (p.as_str(), v))
    }

    /// How many entries there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Are there no entries?
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The entry that applies to `node_id`, with its pattern (see the [type docs](Self) for
    /// which one wins).
    pub fn select(&self, node_id: &str) -> Option<(&str, &T)> {
        let mut best: Option<(&(String, T), usize)> = None;
        for entry in &self.0 {
            if let Some(rank) = pattern_rank(&entry.0, node_id)
                && best.is_none_or(|(_, b)| rank > b)
            {
                best = Some((entry, rank));
            }
        }
        best.map(|((p, v), _)| (p.as_str(), v))
    }

    /// Checks every pattern (`key` names the section in errors). A transport crate calls it
    /// from its own validation for a per-node section of its own.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidConfig`](crate::ErrorKind::InvalidConfig) naming the first bad
    /// pattern.
    ///
    /// ```
    /// use happen::ErrorKind;
    /// use happen::config::NodePatterns;
    ///
    /// let mut p = NodePatterns::new();
    /// p.insert("api-*", 1);
    /// assert!(p.validate("my.section").is_ok());
    /// p.insert("api-?", 2);
    /// let err = p.validate("my.section").unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::InvalidConfig);
    /// assert!(err.message().contains(r#"my.section."api-?""#), "{err}");
    /// ```
    pub fn validate(&self, key: &str) -> Result<()> {
        self.0.iter().try_for_each(|(p, _)| validate_glob(key, p))
    }
}

impl<T: fmt::Debug> fmt::Debug for NodePatterns<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(k, v)| (k, v)))
            .finish()
    }
}

impl<T: Serialize> Serialize for NodePatterns<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for NodePatterns<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: DeserializeOwned> Visitor<'de> for V<T> {
            type Value = NodePatterns<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map from node-id patterns to settings")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Self::Value, A::Error> {
                let mut out = NodePatterns::new();
                while let Some((k, v)) = map.next_entry::<String, T>()? {
                    if out.0.iter().any(|(p, _)| *p == k) {
                        return Err(serde::de::Error::custom(format!(
                            "pattern `{k}` appears twice"
                        )));
                    }
                    out.0.push((k, v));
                }
                Ok(out)
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

/// How well the node-id pattern `pattern` fits `node_id`: `None` if it does not match; the
/// highest rank for an exact id (a pattern without `*`); otherwise the number of literal
/// characters, so `api-gw-*` outranks `api-*`.
fn pattern_rank(pattern: &str, node_id: &str) -> Option<usize> {
    if !pattern.contains('*') {
        return (pattern == node_id).then_some(usize::MAX);
    }
    glob_matches(pattern, node_id).then(|| pattern.chars().filter(|c| *c != '*').count())
}

/// `*` matches any run of characters (including none).
pub(crate) fn glob_matches(glob: &str, s: &str) -> bool {
    let parts: Vec<&str> = glob.split('*').collect();
    if parts.len() == 1 {
        return glob == s;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !s.starts_with(first) || s.len() < first.len() + last.len() || !s.ends_with(last) {
        return false;
    }
    let mut rest = &s[first.len()..s.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

fn validate_glob(key: &str, glob: &str) -> Result<()> {
    let problem = if glob.is_empty() {
        Some("a node-id pattern must not be empty".to_string())
    } else if glob.contains("**") {
        Some("`**` is not supported; one `*` already matches any run of characters".to_string())
    } else {
        glob.chars()
            .find(|c| c.is_whitespace() || matches!(c, '?' | '[' | ']' | '{' | '}' | ',' | '>'))
            .map(|c| format!("character `{c}` is not allowed; only `*` is a wildcard"))
    };
    match problem {
        Some(p) => Err(Error::config(&format!("{key}.\"{glob}\""), p)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_globs() {
        assert!(glob_matches("api-*", "api-gateway"));
        assert!(glob_matches("api-*", "api-"));
        assert!(!glob_matches("api-*", "xapi-1"));
        assert!(glob_matches("*-db", "orders-db"));
        assert!(glob_matches("a*b*c", "aXXbYYc"));
        assert!(!glob_matches("a*b*c", "aXXcYYb"));
        assert!(glob_matches("*", ""));
        assert!(glob_matches("exact", "exact"));
        assert!(!glob_matches("ab*ba", "aba"));
    }
}
