//! The causal tree of one transaction's events.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use super::seen::Seen;

/// An event of the tree with the events it caused (the `--json` output).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Branch {
    #[serde(flatten)]
    pub(crate) event: Seen,
    /// Milliseconds after the first event of the transaction was seen.
    pub(crate) offset_ms: f64,
    /// The event named as its cause was not seen (the tap started late, or it was filtered).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub(crate) cause_unseen: bool,
    pub(crate) children: Vec<Branch>,
}

/// Builds the causal forest of `events` (one transaction): each event under the event that
/// caused it; siblings in the order they were seen. An event seen twice (a relay) counts once.
pub(crate) fn build(events: Vec<Seen>) -> Vec<Branch> {
    let mut ids = HashSet::new();
    let mut events: Vec<Seen> = events
        .into_iter()
        .filter(|e| ids.insert(e.id.clone()))
        .collect();
    events.sort_by_key(|e| (e.received_us, e.timestamp));
    let start = events.first().map_or(0, |e| e.received_us);
    let mut children: HashMap<String, Vec<Seen>> = HashMap::new();
    let mut roots = Vec::new();
    for e in events {
        match e.causation_id.clone() {
            Some(c) if ids.contains(&c) => children.entry(c).or_default().push(e),
            Some(_) => roots.push((e, true)),
            None => roots.push((e, false)),
        }
    }
    fn grow(
        e: Seen,
        unseen: bool,
        start: u64,
        children: &mut HashMap<String, Vec<Seen>>,
    ) -> Branch {
        let kids = children.remove(&e.id).unwrap_or_default();
        Branch {
            offset_ms: e.received_us.saturating_sub(start) as f64 / 1000.0,
            cause_unseen: unseen,
            children: kids
                .into_iter()
                .map(|k| grow(k, false, start, children))
                .collect(),
            event: e,
        }
    }
    roots
        .into_iter()
        .map(|(e, unseen)| grow(e, unseen, start, &mut children))
        .collect()
}
