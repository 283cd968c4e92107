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

/// Handlers of a node: exact types by hash, the rest ordered by specificity.
#[derive(Default)]
pub(super) struct Registry {
    pub(super) exact: std::collections::HashMap<Box<str>, Arc<dyn ErasedStep>>,
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
