//! The subjects of one deployment.

/// The subjects of one deployment (all share a prefix, default `happen`).
#[derive(Debug, Clone)]
pub(crate) struct Subjects {
    prefix: String,
    broadcast: String,
}

impl Subjects {
    /// Subjects under `prefix` (the reference uses `happen`).
    pub(crate) fn new(prefix: &str) -> Subjects {
        Subjects {
            prefix: prefix.to_owned(),
            broadcast: format!("{prefix}.broadcast"),
        }
    }

    /// The prefix.
    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `<prefix>.node.<id>`: a node's direct inbox.
    pub(crate) fn node(&self, id: &str) -> String {
        let mut s = String::with_capacity(self.prefix.len() + 6 + id.len());
        s.push_str(&self.prefix);
        s.push_str(".node.");
        s.push_str(id);
        s
    }

    /// `<prefix>.pressure.<id>`: a node's `node.pressure` reports (also broadcast).
    pub(crate) fn pressure(&self, id: &str) -> String {
        format!("{}.pressure.{id}", self.prefix)
    }

    /// `<prefix>.broadcast`.
    pub(crate) fn broadcast(&self) -> &str {
        &self.broadcast
    }
}
