//! A node's handlers, and what a node id may be.

use std::sync::Arc;

use super::batch::{BATCH_EVENT, BatchEntry, batch_step};
use super::flow::ErasedStep;
use super::liner::Liner;
use crate::error::{Error, ErrorKind, Result};
use crate::event::pattern::Pattern;

pub(super) struct Entry {
    pub(super) pattern: Pattern,
    pub(super) step: Arc<dyn ErasedStep>,
}

/// Hashes an event type for the registry's exact map: a multiply-rotate over eight bytes at a
/// time (the FxHash scheme) instead of SipHash, which cost ~90 instructions for a short type,
/// paid by every broadcast at every node and by every driver's cache miss. Not keyed, so
/// not resistant to chosen collisions — which needs chosen *keys*: the keys here are the
/// types the node's own code registered; a type read from the wire is only looked up.
#[derive(Default, Clone, Copy)]
pub(super) struct TypeHasher(u64);

impl TypeHasher {
    fn mix(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

impl std::hash::Hasher for TypeHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            self.mix(u64::from_le_bytes([
                w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7],
            ]));
        }
        let rest = words.remainder();
        if !rest.is_empty() {
            // at most seven bytes: the eighth says how many, so trailing NULs still count
            let mut last = [0u8; 8];
            last[..rest.len()].copy_from_slice(rest);
            last[7] = rest.len() as u8;
            self.mix(u64::from_le_bytes(last));
        }
    }

    fn write_u8(&mut self, b: u8) {
        // `str`'s terminator: mixed in like a word
        self.mix(u64::from(b));
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Handlers of a node: exact types by hash, the rest ordered by specificity.
#[derive(Default)]
pub(super) struct Registry {
    pub(super) exact: std::collections::HashMap<
        Box<str>,
        Arc<dyn ErasedStep>,
        std::hash::BuildHasherDefault<TypeHasher>,
    >,
    pub(super) ordered: Vec<Entry>,
    /// The node's liners (`Node::line`), the first innermost. The steps above are already
    /// wrapped in them; a handler registered later is wrapped when it is registered.
    pub(super) liners: Vec<Liner>,
    /// Batch handlers (`Node::on_batch`), ordered by specificity.
    pub(super) batch: Vec<BatchEntry>,
    /// A streaming handler was registered (handlers are never removed): until then no event
    /// type streams here, which routing asks of every broadcast.
    pub(super) streaming: bool,
}

impl Registry {
    pub(super) fn lookup(&self, event_type: &str) -> Option<Arc<dyn ErasedStep>> {
        if event_type == BATCH_EVENT {
            // Every node takes batches (see `batch`): the type is reserved, so no handler of
            // the node's (exact or pattern) ever gets a carrier.
            return Some(batch_step());
        }
        if let Some(s) = self.exact.get(event_type) {
            return Some(s.clone());
        }
        self.ordered
            .iter()
            .find(|e| e.pattern.matches(event_type))
            .map(|e| e.step.clone())
    }

    /// Does the handler for `event_type` stream?
    pub(super) fn streams(&self, event_type: &str) -> bool {
        if !self.streaming && event_type != BATCH_EVENT {
            return false;
        }
        self.lookup(event_type).is_some_and(|s| s.is_streaming())
    }

    pub(super) fn matches(&self, event_type: &str) -> bool {
        self.exact.contains_key(event_type)
            || self.ordered.iter().any(|e| e.pattern.matches(event_type))
    }
}

/// Inserts `item` after every entry whose pattern is at least as specific as its own, so
/// entries are ordered by specificity and, among equals, by registration.
pub(super) fn insert_ranked<T>(entries: &mut Vec<T>, item: T, pattern: impl Fn(&T) -> &Pattern) {
    let spec = pattern(&item).specificity();
    let at = entries
        .iter()
        .position(|e| pattern(e).specificity() < spec)
        .unwrap_or(entries.len());
    entries.insert(at, item);
}

pub(crate) fn validate_node_id(id: &str) -> Result<()> {
    let bad = |why: &str| {
        Err(Error::new(
            ErrorKind::InvalidConfig,
            format!("invalid node id `{id}`: {why}"),
        ))
    };
    if id.is_empty() {
        return bad("it is empty");
    }
    if let Some(c) = id
        .chars()
        .find(|c| c.is_whitespace() || matches!(c, '*' | '>'))
    {
        return bad(&format!("character {c:?} is not allowed in a node id"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::hash::{BuildHasher, BuildHasherDefault};

    use super::TypeHasher;

    #[test]
    fn types_that_differ_hash_apart() {
        let h = |s: &str| BuildHasherDefault::<TypeHasher>::default().hash_one(s);
        let types = [
            "",
            "a",
            "b",
            "ab",
            "ba",
            "tick",
            "tock",
            "order.created",
            "order.createe",
            "12345678",
            "123456789",
            "1234567\0",
            "a\0",
            "a\0\0",
        ];
        let hashes: std::collections::HashSet<u64> = types.iter().map(|t| h(t)).collect();
        assert_eq!(hashes.len(), types.len());
        assert_eq!(h("order.created"), h(&String::from("order.created")));
    }
}
