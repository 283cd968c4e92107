//! Discovery: which processes serve which nodes, with their limits and live counters (what
//! `happen nodes` shows). See `WIRE.md`, "Discovery".
//!
//! A requester publishes an empty message with a reply subject on `<prefix>.discover`. Every
//! happen process connected to the server that serves at least one node answers on that reply
//! subject with one [`ProcessInfo`] as JSON (more than one message when its nodes do not fit
//! in one). The requester gathers answers until they stop coming:
//! [`NatsTransport::discover`](crate::NatsTransport::discover) does that ([`request`]);
//! [`serve`] answers for this process.
//!

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::{HeaderMap, StatusCode, Subject, Subscriber};
use bytes::Bytes;
use futures::StreamExt;
use happen::Result;

use crate::core::nodes::LocalNodes;
use crate::core::outbox::{Headers, Outbox, Outgoing};
use crate::core::stats::Counters;
use crate::core::{Endpoint, transport_error};
use crate::wire::Subjects;
use crate::wire::discover::{NodeInfo, ProcessInfo};
use crate::wire::header;

/// What answering discovery requests uses.
pub(crate) struct Discover {
    pub(crate) ep: Arc<Endpoint>,
    /// The nodes to describe.
    pub(crate) nodes: Arc<LocalNodes>,
    /// Answers are published through it.
    pub(crate) outbox: Arc<Outbox>,
    /// The transport counters every answer carries.
    pub(crate) counters: Arc<Counters>,
}

/// A good quiet time for [`NatsTransport::discover`](crate::NatsTransport::discover): how long after the last answer to wait
/// for more (processes answer within milliseconds of each other on a healthy system).
pub const QUIET: Duration = Duration::from_millis(250);

/// Subscribes this process to discovery requests (done once at connect).
pub(crate) async fn subscribe(
    client: &async_nats::Client,
    subjects: &Subjects,
) -> Result<Subscriber> {
    client
        .subscribe(subjects.discover())
        .await
        .map_err(|e| transport_error("cannot subscribe to discovery requests", e))
}

/// Answers discovery requests with this process's nodes, until the transport is gone.
pub(crate) async fn serve(d: Arc<Discover>, mut sub: Subscriber) {
    while let Some(msg) = sub.next().await {
        if let Some(reply) = msg.reply {
            // a request this process sent itself is answered even without nodes (see `ask`)
            let own = msg
                .headers
                .as_ref()
                .and_then(|h| header::get(h, header::REPLICA))
                .is_some_and(|r| r == d.ep.replica);
            answer(&d, reply, own);
        }
    }
}

/// Room for the headers and the JSON around the nodes in one answer.
const ENVELOPE: usize = 1024;

/// Answers one request; `always` also when this process serves no node.
fn answer(d: &Discover, reply: Subject, always: bool) {
    let nodes: Vec<NodeInfo> = d.nodes.inboxes().iter().map(NodeInfo::of).collect();
    if nodes.is_empty() && !always {
        // a process without nodes has nothing to tell (and a requester needs no answer)
        return;
    }
    let transport = transport_counters(&d.counters);
    let max = d.ep.client.max_payload().saturating_sub(ENVELOPE).max(1024);
    let mut chunk: Vec<NodeInfo> = Vec::new();
    let mut size = 0;
    for node in nodes {
        let len = serde_json::to_vec(&node).map_or(0, |v| v.len()) + 1;
        if !chunk.is_empty() && size + len > max {
            publish(d, &reply, std::mem::take(&mut chunk), transport.clone());
            size = 0;
        }
        size += len;
        chunk.push(node);
    }
    publish(d, &reply, chunk, transport);
}

/// The counters as the answers carry them: [`NatsStats`](crate::NatsStats) by name.
fn transport_counters(counters: &Counters) -> BTreeMap<String, u64> {
    match serde_json::to_value(counters.snapshot()) {
        Ok(serde_json::Value::Object(m)) => m
            .into_iter()
            .filter_map(|(k, v)| Some((k, v.as_u64()?)))
            .collect(),
        _ => BTreeMap::new(),
    }
}

fn publish(d: &Discover, reply: &Subject, nodes: Vec<NodeInfo>, transport: BTreeMap<String, u64>) {
    let info = ProcessInfo {
        replica: d.ep.replica.clone(),
        name: d.ep.config.name.clone(),
        nodes,
        transport,
    };
    let Ok(body) = serde_json::to_vec(&info) else {
        return;
    };
    let mut h = HeaderMap::new();
    h.insert(header::REPLICA, d.ep.replica.as_str());
    d.outbox.publish_answer(Outgoing {
        subject: reply.clone(),
        reply: None,
        headers: Headers::Custom(h),
        payload: Bytes::from(body),
    });
}

/// Asks every process connected to the server which nodes it serves (see
/// [`NatsTransport::discover`](crate::NatsTransport::discover)).
///
/// # Errors
/// [`ErrorKind::Transport`](happen::ErrorKind::Transport) when the request cannot be
/// published.
pub(crate) async fn request(
    client: &async_nats::Client,
    subjects: &Subjects,
    wait: Duration,
    quiet: Duration,
) -> Result<Vec<ProcessInfo>> {
    let mut found = ask(client, subjects, None, wait, quiet, |_| false).await?;
    found.sort_by(|a, b| a.replica.cmp(&b.replica));
    for p in &mut found {
        p.nodes.sort_by(|a, b| a.id.cmp(&b.id));
    }
    Ok(found)
}

/// Whether any happen process serves `node`: a discovery request that stops at the first
/// answer naming it (else after the quiet time, or at once when no happen process is
/// connected). A node of the TypeScript reference is never found: it does not answer.
///
/// # Errors
/// As [`request`].
pub(crate) async fn serves(
    client: &async_nats::Client,
    subjects: &Subjects,
    node: &str,
    wait: Duration,
) -> Result<bool> {
    serves_except(client, subjects, node, None, wait, QUIET).await
}

/// [`serves`], not counting the process with replica id `except` (this one, when a replica
/// asks whether another serves its node), with `quiet` instead of [`QUIET`].
///
/// # Errors
/// As [`request`].
pub(crate) async fn serves_except(
    client: &async_nats::Client,
    subjects: &Subjects,
    node: &str,
    except: Option<&str>,
    wait: Duration,
    quiet: Duration,
) -> Result<bool> {
    let mut named = false;
    ask(client, subjects, except, wait, quiet, |info| {
        named = except != Some(info.replica.as_str()) && info.nodes.iter().any(|n| n.id == node);
        named
    })
    .await?;
    Ok(named)
}

/// Publishes one discovery request and gathers the answers (merged by replica) until `stop`
/// says enough, none came for `quiet`, or `wait` is over.
///
/// `own` is the asking process's replica id, when it answers for itself: the request then
/// names it (`Happen-Replica`), and its own process answers even when it serves no node (a
/// stopping node is off the process's list before it asks). Without that answer a process
/// alone on the server would wait all of `wait` for a first answer; with it, the quiet time
/// starts at once.
async fn ask(
    client: &async_nats::Client,
    subjects: &Subjects,
    own: Option<&str>,
    wait: Duration,
    quiet: Duration,
    mut stop: impl FnMut(&ProcessInfo) -> bool,
) -> Result<Vec<ProcessInfo>> {
    let inbox = client.new_inbox();
    let mut answers = client
        .subscribe(inbox.clone())
        .await
        .map_err(|e| transport_error("cannot subscribe for discovery answers", e))?;
    let published = match own {
        Some(replica) => {
            let mut h = HeaderMap::new();
            h.insert(header::REPLICA, replica);
            client
                .publish_with_reply_and_headers(subjects.discover(), inbox, h, Bytes::new())
                .await
        }
        None => {
            client
                .publish_with_reply(subjects.discover(), inbox, Bytes::new())
                .await
        }
    };
    published.map_err(|e| transport_error("cannot publish the discovery request", e))?;
    client
        .flush()
        .await
        .map_err(|e| transport_error("cannot reach the nats server", e))?;
    let end = tokio::time::Instant::now() + wait;
    let mut deadline = end;
    let mut found: Vec<ProcessInfo> = Vec::new();
    while let Ok(Some(msg)) = tokio::time::timeout_at(deadline, answers.next()).await {
        if msg.status == Some(StatusCode::NO_RESPONDERS) {
            break;
        }
        let info: ProcessInfo = match serde_json::from_slice(&msg.payload) {
            Ok(info) => info,
            Err(e) => {
                tracing::warn!(target: "happen_nats", error = %e, "ignored a malformed discovery answer");
                continue;
            }
        };
        let enough = stop(&info);
        match found.iter_mut().find(|p| p.replica == info.replica) {
            Some(p) => p.nodes.extend(info.nodes),
            None => found.push(info),
        }
        if enough {
            break;
        }
        deadline = end.min(tokio::time::Instant::now() + quiet);
    }
    let _ = answers.unsubscribe().await;
    Ok(found)
}
