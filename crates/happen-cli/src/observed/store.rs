//! What `happen web` remembers of what it watched: recent transactions (their events, the
//! replies paired to their requests and the completion records of their tells and
//! broadcasts) and the errors grouped by kind, node and code. Bounded: the oldest
//! transactions, pending requests, completions and examples go first.

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde::Serialize;
use serde_json::{Value, json};

use super::completed::Completed;
use super::reply::{ErrorInfo, Reply};
use super::seen::Seen;
use super::tree::{self, Branch};

/// Transactions kept (the oldest started is forgotten first).
const TRANSACTIONS: usize = 2_000;
/// Events kept per transaction.
const EVENTS_PER_TRANSACTION: usize = 500;
/// Requests waiting for their reply (the oldest is forgotten first).
const PENDING: usize = 20_000;
/// Replies seen before their request (the tap and the reply subscription are two streams,
/// read in no common order); the oldest is forgotten first.
const EARLY: usize = 20_000;
/// Events whose completion records are kept (the oldest is forgotten first); records may
/// come before their event is tapped (two subscriptions, no common order).
const COMPLETED: usize = 20_000;
/// Completion records kept per event (one per node that took a broadcast).
const COMPLETED_PER_EVENT: usize = 64;
/// Latest examples kept per error group.
const EXAMPLES: usize = 5;
/// Error groups kept (beyond, new groups are counted in `other`).
const GROUPS: usize = 500;

/// One error of a group, with where it happened.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct Example {
    received_us: u64,
    event_type: String,
    event_id: String,
    correlation_id: String,
    target: Option<String>,
    error: ErrorInfo,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
struct Group {
    count: u64,
    last_us: u64,
    latest: VecDeque<Example>,
}

/// Recent transactions and errors.
#[derive(Default)]
pub(crate) struct Store {
    transactions: HashMap<String, Vec<Seen>>,
    order: VecDeque<String>,
    replies: HashMap<String, Reply>,
    /// reply subject → (correlation id, event id)
    pending: HashMap<String, (String, String)>,
    pending_order: VecDeque<String>,
    early: HashMap<String, Reply>,
    early_order: VecDeque<String>,
    /// event id → its completion records
    completed: HashMap<String, Vec<Completed>>,
    completed_order: VecDeque<String>,
    errors: BTreeMap<(String, String, String), Group>,
    other_errors: u64,
}

impl Store {
    /// Remembers an event (without its payload beyond what the caller kept) and, for a
    /// request, its reply subject; returns the request with its reply when the reply was
    /// seen first.
    pub(crate) fn event(&mut self, seen: &Seen, reply: Option<&str>) -> Option<(Seen, Reply)> {
        let corr = &seen.correlation_id;
        if !self.transactions.contains_key(corr) {
            if self.order.len() >= TRANSACTIONS
                && let Some(old) = self.order.pop_front()
                && let Some(events) = self.transactions.remove(&old)
            {
                for e in events {
                    self.replies.remove(&e.id);
                }
            }
            self.order.push_back(corr.clone());
        }
        let events = self.transactions.entry(corr.clone()).or_default();
        if events.len() < EVENTS_PER_TRANSACTION {
            events.push(seen.clone());
        }
        let done: Vec<Completed> = self.completed.get(&seen.id).cloned().unwrap_or_default();
        for c in done {
            if let Some(error) = c.error {
                self.error(seen, c.ended_us, error);
            }
        }
        if let Some(subject) = reply {
            if let Some(early) = self.early.remove(subject) {
                return self.pair(&corr.clone(), &seen.id, early);
            }
            if self.pending.len() >= PENDING
                && let Some(old) = self.pending_order.pop_front()
            {
                self.pending.remove(&old);
            }
            self.pending
                .insert(subject.to_owned(), (corr.clone(), seen.id.clone()));
            self.pending_order.push_back(subject.to_owned());
        }
        None
    }

    /// Pairs a message on a reply subject with its request; returns the request's event and
    /// the reply when it was one we waited for (later messages on the subject, stream frames,
    /// are not).
    pub(crate) fn reply(&mut self, subject: &str, reply: Reply) -> Option<(Seen, Reply)> {
        let Some((corr, id)) = self.pending.remove(subject) else {
            if !self.early.contains_key(subject) {
                if self.early.len() >= EARLY
                    && let Some(old) = self.early_order.pop_front()
                {
                    self.early.remove(&old);
                }
                self.early.insert(subject.to_owned(), reply);
                self.early_order.push_back(subject.to_owned());
            }
            return None;
        };
        self.pair(&corr, &id, reply)
    }

    /// Pairs `reply` with the event `id` of transaction `corr` (a replay knows the event);
    /// returns the event and the reply when the event is kept.
    pub(crate) fn pair(&mut self, corr: &str, id: &str, reply: Reply) -> Option<(Seen, Reply)> {
        let seen = self
            .transactions
            .get(corr)?
            .iter()
            .find(|e| e.id == id)?
            .clone();
        if let Some(error) = &reply.error {
            self.error(&seen, reply.received_us, error.clone());
        }
        self.replies.insert(id.to_owned(), reply.clone());
        Some((seen, reply))
    }

    /// Keeps a completion record of a tell or broadcast (before or after its event was
    /// seen); returns the event when it is known (the page reloads its waterfall).
    pub(crate) fn completed(&mut self, c: Completed) -> Option<Seen> {
        let seen = self
            .transactions
            .get(&c.correlation_id)
            .and_then(|events| events.iter().find(|e| e.id == c.event_id))
            .cloned();
        if let (Some(seen), Some(error)) = (&seen, &c.error) {
            self.error(seen, c.ended_us, error.clone());
        }
        if !self.completed.contains_key(&c.event_id) {
            if self.completed.len() >= COMPLETED
                && let Some(old) = self.completed_order.pop_front()
            {
                self.completed.remove(&old);
            }
            self.completed_order.push_back(c.event_id.clone());
        }
        let list = self.completed.entry(c.event_id.clone()).or_default();
        if list.len() < COMPLETED_PER_EVENT
            && !list
                .iter()
                .any(|x| x.node == c.node && x.replica == c.replica)
        {
            list.push(c);
        }
        seen
    }

    fn error(&mut self, seen: &Seen, at: u64, error: ErrorInfo) {
        let key = (
            error.kind.clone(),
            error.node.clone().unwrap_or_default(),
            error.code.clone().unwrap_or_default(),
        );
        if !self.errors.contains_key(&key) && self.errors.len() >= GROUPS {
            self.other_errors += 1;
            return;
        }
        let group = self.errors.entry(key).or_default();
        group.count += 1;
        group.last_us = at;
        if group.latest.len() >= EXAMPLES {
            group.latest.pop_back();
        }
        group.latest.push_front(Example {
            received_us: at,
            event_type: seen.event_type.clone(),
            event_id: seen.id.clone(),
            correlation_id: seen.correlation_id.clone(),
            target: seen.target.clone(),
            error,
        });
    }

    /// The causal tree of a transaction with each request's reply (`None`: never seen).
    pub(crate) fn transaction(&self, corr: &str) -> Option<Value> {
        let events = self.transactions.get(corr)?.clone();
        let n = events.len();
        let forest = tree::build(events);
        let roots: Vec<Value> = forest.iter().map(|b| self.annotate(b)).collect();
        Some(json!({"correlationId": corr, "events": n, "roots": roots}))
    }

    fn annotate(&self, b: &Branch) -> Value {
        let mut v = json!({
            "id": b.event.id,
            "type": b.event.event_type,
            "kind": b.event.kind,
            "sender": b.event.sender,
            "target": b.event.target,
            "receivedUs": b.event.received_us,
            "offsetMs": b.offset_ms,
            "causeUnseen": b.cause_unseen,
            "children": b.children.iter().map(|c| self.annotate(c)).collect::<Vec<_>>(),
        });
        if let Some(r) = self.replies.get(&b.event.id) {
            let took = r.received_us.saturating_sub(b.event.received_us);
            v["reply"] = json!(r);
            v["durationMs"] = json!(took as f64 / 1000.0);
            v["endUs"] = json!(b.event.received_us + took);
            v["outcome"] = json!(r.status);
        } else if let Some(done) = self.completed.get(&b.event.id) {
            // a tell's or broadcast's end at each node that took it: the step lasts as long
            // as its slowest receiver took (each node's own clock: admission to end)
            let took = done.iter().map(Completed::took_us).max().unwrap_or(0);
            let failed = done.iter().any(|c| c.outcome == "error");
            v["durationMs"] = json!(took as f64 / 1000.0);
            v["endUs"] = json!(b.event.received_us + took);
            v["outcome"] = json!(if failed { "error" } else { "ok" });
            v["completions"] = done
                .iter()
                .map(|c| {
                    json!({"node": c.node, "replica": c.replica, "startedUs": c.started_us,
                           "endedUs": c.ended_us, "durationMs": c.took_us() as f64 / 1000.0,
                           "outcome": c.outcome, "error": c.error})
                })
                .collect();
        }
        v
    }

    /// The error groups, most recent first.
    pub(crate) fn errors(&self) -> Value {
        let mut groups: Vec<(&(String, String, String), &Group)> = self.errors.iter().collect();
        groups.sort_by_key(|(_, g)| std::cmp::Reverse(g.last_us));
        let groups: Vec<Value> = groups
            .into_iter()
            .map(|((kind, node, code), g)| {
                json!({"kind": kind, "node": node, "code": code, "count": g.count,
                       "lastUs": g.last_us, "latest": g.latest})
            })
            .collect();
        json!({"groups": groups, "ungrouped": self.other_errors})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(id: &str, cause: Option<&str>, at: u64) -> Seen {
        Seen::sample(id, cause, at, &format!("n-{id}"))
    }

    #[test]
    fn replies_pair_with_their_requests_and_errors_group() {
        let mut store = Store::default();
        store.event(&seen("a", None, 1000), Some("_INBOX.x.1"));
        store.event(&seen("b", Some("a"), 2000), Some("_INBOX.x.2"));
        let body = br#"{"error": {"kind": "handler", "message": "too much", "node": "n-b",
                       "code": "limit_exceeded"}}"#;
        let error = ErrorInfo::from_body(body).unwrap();
        let r = Reply {
            received_us: 5000,
            status: "error",
            error: Some(error),
        };
        let (req, _) = store.reply("_INBOX.x.2", r.clone()).unwrap();
        assert_eq!(req.id, "b");
        // a second message on the same subject (a stream frame) is not a reply
        assert!(store.reply("_INBOX.x.2", r).is_none());
        assert!(
            store
                .reply(
                    "_INBOX.unknown",
                    Reply {
                        received_us: 0,
                        status: "ok",
                        error: None
                    }
                )
                .is_none()
        );
        let t = store.transaction("txn").unwrap();
        let b = &t["roots"][0]["children"][0];
        assert_eq!(b["type"], "t.b");
        assert_eq!(b["durationMs"], 3.0);
        assert_eq!(b["reply"]["error"]["code"], "limit_exceeded");
        assert!(t["roots"][0].get("reply").is_none());
        let errors = store.errors();
        assert_eq!(errors["groups"][0]["node"], "n-b");
        assert_eq!(errors["groups"][0]["count"], 1);
        assert_eq!(errors["groups"][0]["latest"][0]["eventType"], "t.b");
    }

    #[test]
    fn a_reply_seen_before_its_request_still_pairs() {
        let mut store = Store::default();
        let ok = Reply {
            received_us: 900,
            status: "ok",
            error: None,
        };
        assert!(store.reply("_INBOX.x.9", ok).is_none());
        let (req, reply) = store
            .event(&seen("a", None, 1000), Some("_INBOX.x.9"))
            .unwrap();
        assert_eq!((req.id.as_str(), reply.status), ("a", "ok"));
        assert_eq!(
            store.transaction("txn").unwrap()["roots"][0]["reply"]["status"],
            "ok"
        );
        assert!(
            store
                .event(&seen("b", None, 1000), Some("_INBOX.x.10"))
                .is_none()
        );
    }

    #[test]
    fn an_error_body_keeps_its_downstream_chain() {
        let body = br#"{"error": {"kind": "downstream", "message": "m", "node": "orders",
            "downstream": {"kind": "handler", "message": "x", "node": "payments", "code": "c"}}}"#;
        let e = ErrorInfo::from_body(body).unwrap();
        assert_eq!(e.kind, "downstream");
        assert_eq!(e.chain.len(), 1);
        assert_eq!(e.chain[0].node.as_deref(), Some("payments"));
        assert!(ErrorInfo::from_body(b"not json").is_none());
        assert!(ErrorInfo::from_body(b"{\"error\": 3}").is_none());
    }
}
