//! The subjects of one deployment: every subject this transport publishes or subscribes to
//! under the prefix (see `WIRE.md`, "Subjects").

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

    /// `<prefix>.>`: everything under the prefix (a tap).
    pub(crate) fn all(&self) -> String {
        format!("{}.>", self.prefix)
    }

    /// `<prefix>.pressure.>`: every node's `node.pressure` reports.
    pub(crate) fn pressure_all(&self) -> String {
        format!("{}.pressure.>", self.prefix)
    }

    /// `<prefix>.beat.<replica>`: the heartbeats of one process (see `WIRE.md`, "Liveness").
    pub(crate) fn beat(&self, replica: &str) -> String {
        format!("{}.beat.{replica}", self.prefix)
    }

    /// `<prefix>.beat.*`: every process's heartbeats.
    pub(crate) fn beat_all(&self) -> String {
        format!("{}.beat.*", self.prefix)
    }

    /// `<prefix>.completed.<id>`: completion records of node `id` (see `WIRE.md`,
    /// "Completion records").
    pub(crate) fn completed(&self, id: &str) -> String {
        format!("{}.completed.{id}", self.prefix)
    }

    /// `<prefix>.watch`: the beats of watchers that want completion records.
    pub(crate) fn watch(&self) -> String {
        super::completion::watch_subject(&self.prefix)
    }

    /// `<prefix>.discover`: discovery requests.
    pub(crate) fn discover(&self) -> String {
        format!("{}.discover", self.prefix)
    }

    /// `<prefix>.bstream.<event-id>`: the frames of a broadcast stream; characters that are
    /// not valid in a subject token become `_`.
    pub(crate) fn broadcast_stream(&self, event_id: &str) -> String {
        let token: String = event_id
            .chars()
            .map(|c| {
                if c.is_whitespace() || matches!(c, '.' | '*' | '>') || c.is_control() {
                    '_'
                } else {
                    c
                }
            })
            .collect();
        format!("{}.bstream.{token}", self.prefix)
    }

    /// `<prefix>.durable.`: durable events, `<prefix>.durable.<id>` for node `id`.
    pub(crate) fn durable_prefix(&self) -> String {
        format!("{}.durable.", self.prefix)
    }

    /// `<prefix>.dlq.`: dead letters, `<prefix>.dlq.<id>` for node `id`.
    pub(crate) fn dead_letter_prefix(&self) -> String {
        format!("{}.dlq.", self.prefix)
    }

    /// `<prefix>.answers.<id>`: requests for the answers of durable sends to node `id` again,
    /// after the requester's reconnect (see `WIRE.md`, "Guarantees").
    pub(crate) fn answers(&self, id: &str) -> String {
        format!("{}.answers.{id}", self.prefix)
    }

    /// `<prefix>.done.`: exactly-once records, `<prefix>.done.<node>.<event>`.
    pub(crate) fn records_prefix(&self) -> String {
        format!("{}.done.", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_subject_is_under_the_prefix() {
        let s = Subjects::new("shop");
        assert_eq!(s.node("orders"), "shop.node.orders");
        assert_eq!(s.broadcast(), "shop.broadcast");
        assert_eq!(s.pressure("orders"), "shop.pressure.orders");
        assert_eq!(s.pressure_all(), "shop.pressure.>");
        assert_eq!(s.discover(), "shop.discover");
        assert_eq!(
            (s.completed("a.b"), s.watch()),
            ("shop.completed.a.b".to_owned(), "shop.watch".to_owned())
        );
        assert_eq!(
            (s.beat("r1"), s.beat_all()),
            ("shop.beat.r1".to_owned(), "shop.beat.*".to_owned())
        );
        assert_eq!(s.all(), "shop.>");
        assert_eq!(
            s.broadcast_stream("evt-1.a b*>"),
            "shop.bstream.evt-1_a_b__"
        );
        assert_eq!(
            (
                s.durable_prefix(),
                s.dead_letter_prefix(),
                s.records_prefix()
            ),
            (
                "shop.durable.".to_owned(),
                "shop.dlq.".to_owned(),
                "shop.done.".to_owned()
            )
        );
    }
}
