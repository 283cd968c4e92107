//! Fan-out: one event to several nodes at once ([`Node::send_all`]), a result per target.

use std::collections::HashSet;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use serde_json::Value;

use super::{Node, Target};
use crate::error::{Error, ErrorKind, Result};
use crate::event::Event;
use crate::id::NodeId;
use crate::reply::Reply;

/// The future [`Node::send_all`] (and [`Context::send_all`](crate::Context::send_all))
/// returns: resolves to [`AllReplies`] once every target has answered, failed or timed out.
///
/// As with [`Reply`], the events are on their way when you get it; dropping it abandons the
/// answers (the flows still run).
///
/// # Cancel safety
/// Awaiting `&mut send_all` is cancel-safe: answers already in are kept, and polling again
/// continues. Dropping it drops every [`Reply`] it holds.
#[must_use = "the events were sent; await the SendAll to get each target's result"]
pub struct SendAll {
    state: State,
}

enum State {
    /// The call itself failed (bad input): no event was sent.
    Failed(Option<Error>),
    Waiting(Vec<Pending>),
    Done,
}

struct Pending {
    id: NodeId,
    reply: Reply,
    result: Option<Result<Value>>,
}

impl SendAll {
    fn failed(err: Error) -> SendAll {
        SendAll {
            state: State::Failed(Some(err)),
        }
    }

    /// Sets how long to wait for the answers: one deadline for all targets, counted from
    /// when the `SendAll` is first awaited (each target still answered in time is `Ok`, each
    /// late one fails with [`ErrorKind::Timeout`]). The default is the sending node's request
    /// timeout. Set it before the first poll.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> happen::Result<()> {
    /// use std::time::Duration;
    /// use happen::{Context, Event, Happen, Node};
    ///
    /// let happen = Happen::new();
    /// let fast = happen.node("fast").await?;
    /// let slow = happen.node("slow").await?;
    /// Node::on_all([&fast, &slow], "ping", |_e: Event, ctx: Context| async move {
    ///     if ctx.node_id() == "slow" {
    ///         tokio::time::sleep(Duration::from_secs(60)).await;
    ///     }
    ///     "pong"
    /// })?;
    /// let all = fast.send_all([&fast, &slow], Event::new("ping", ()))
    ///     .timeout(Duration::from_secs(1))
    ///     .await?;
    /// assert_eq!(all.get("fast").unwrap().as_ref().unwrap(), "pong");
    /// assert!(all.get("slow").unwrap().as_ref().unwrap_err().is_timeout());
    /// # Ok(()) }
    /// ```
    pub fn timeout(mut self, timeout: Duration) -> SendAll {
        if let State::Waiting(pending) = &mut self.state {
            *pending = std::mem::take(pending)
                .into_iter()
                .map(|p| Pending {
                    reply: p.reply.timeout(timeout),
                    ..p
                })
                .collect();
        }
        self
    }

    /// Each target's [`Reply`], in the order the targets were given, instead of the joined
    /// answers: to consume a streaming handler's items from every target
    /// ([`Reply::into_stream`]), or to handle each answer as it comes. A reply's timeout is
    /// the one set with [`timeout`](SendAll::timeout), else the sending node's; answers
    /// already in (a `SendAll` polled before) come back as replies that resolve at once.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// use futures::StreamExt;
    /// use happen::{Context, Emitter, Event, Happen, Node};
    ///
    /// let happen = Happen::new();
    /// let eu = happen.node("eu").await?;
    /// let us = happen.node("us").await?;
    /// Node::on_all([&eu, &us], "prices", |_e: Event, ctx: Context, out: Emitter| async move {
    ///     for i in 0..3 {
    ///         out.emit(format!("{}-{i}", ctx.node_id())).await?;
    ///     }
    ///     Ok::<_, happen::Error>("done")
    /// })?;
    /// for (id, reply) in eu.send_all([&eu, &us], Event::new("prices", ())).into_replies()? {
    ///     let mut items = reply.into_stream();
    ///     let mut seen = Vec::new();
    ///     while let Some(item) = items.next().await {
    ///         seen.push(item?);
    ///     }
    ///     assert_eq!(seen.len(), 3, "{id} streamed its three items");
    ///     assert_eq!(items.final_value().unwrap(), "done");
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// What awaiting the `SendAll` would fail with: bad input (no event was sent), or
    /// [`ErrorKind::Cancelled`] if it had already resolved.
    pub fn into_replies(self) -> Result<Vec<(NodeId, Reply)>> {
        match self.state {
            State::Failed(err) => Err(err.unwrap_or_else(polled_after_done)),
            State::Done => Err(polled_after_done()),
            State::Waiting(pending) => Ok(pending
                .into_iter()
                .map(|p| {
                    let reply = match p.result {
                        Some(r) => Reply::resolved(r, p.reply.stream.timeout),
                        None => p.reply,
                    };
                    (p.id, reply)
                })
                .collect()),
        }
    }
}

impl Future for SendAll {
    type Output = Result<AllReplies>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Result<AllReplies>> {
        let this = self.get_mut();
        match &mut this.state {
            State::Failed(err) => {
                let err = err.take().unwrap_or_else(polled_after_done);
                this.state = State::Done;
                Poll::Ready(Err(err))
            }
            State::Waiting(pending) => {
                let mut all_in = true;
                for p in pending.iter_mut().filter(|p| p.result.is_none()) {
                    match Pin::new(&mut p.reply).poll(cx) {
                        Poll::Ready(r) => p.result = Some(r),
                        Poll::Pending => all_in = false,
                    }
                }
                if !all_in {
                    return Poll::Pending;
                }
                let replies = std::mem::take(pending)
                    .into_iter()
                    .map(|p| {
                        let result = p.result.unwrap_or_else(|| Err(polled_after_done()));
                        (p.id, result)
                    })
                    .collect();
                this.state = State::Done;
                Poll::Ready(Ok(AllReplies { replies }))
            }
            State::Done => Poll::Ready(Err(polled_after_done())),
        }
    }
}

fn polled_after_done() -> Error {
    Error::new(
        ErrorKind::Cancelled,
        "this SendAll already resolved; await each SendAll once",
    )
}

impl fmt::Debug for SendAll {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let targets = match &self.state {
            State::Waiting(p) => p.len(),
            _ => 0,
        };
        f.debug_struct("SendAll")
            .field("targets", &targets)
            .finish_non_exhaustive()
    }
}

/// The result of a fan-out: one `Result` per target, in the order the targets were given,
/// also readable by node id. Each is what awaiting a [`Reply`] from that target alone gives
/// (its final value, or `UnknownNode`, `NoHandler`, `Handler`, `Timeout`, ...).
#[derive(Debug, Clone)]
pub struct AllReplies {
    replies: Vec<(NodeId, Result<Value>)>,
}

impl AllReplies {
    /// The number of targets.
    pub fn len(&self) -> usize {
        self.replies.len()
    }

    /// Whether the fan-out had no targets.
    pub fn is_empty(&self) -> bool {
        self.replies.is_empty()
    }

    /// The result of target `id`; `None` if it was not a target.
    pub fn get(&self, id: &str) -> Option<&Result<Value>> {
        self.replies
            .iter()
            .find(|(n, _)| n.as_str() == id)
            .map(|(_, r)| r)
    }

    /// Each target's id and result, in the order the targets were given.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&NodeId, &Result<Value>)> {
        self.replies.iter().map(|(n, r)| (n, r))
    }

    /// The results alone, in the order the targets were given.
    pub fn into_results(self) -> Vec<Result<Value>> {
        self.replies.into_iter().map(|(_, r)| r).collect()
    }

    /// The values if every target succeeded, in target order; else the first error in
    /// target order.
    ///
    /// # Errors
    /// The first target's error, in target order.
    pub fn all_ok(self) -> Result<Vec<Value>> {
        self.replies.into_iter().map(|(_, r)| r).collect()
    }
}

impl IntoIterator for AllReplies {
    type Item = (NodeId, Result<Value>);
    type IntoIter = std::vec::IntoIter<(NodeId, Result<Value>)>;

    fn into_iter(self) -> Self::IntoIter {
        self.replies.into_iter()
    }
}

/// The first id named twice in `targets`, if any: compared pairwise for a short list (no
/// allocation), hashed for a long one.
fn named_twice<'a>(targets: &'a [Target<'_>]) -> Option<&'a NodeId> {
    const SHORT: usize = 16;
    if targets.len() <= SHORT {
        return targets
            .iter()
            .enumerate()
            .find(|(i, t)| targets[..*i].iter().any(|e| e.id() == t.id()))
            .map(|(_, t)| t.id());
    }
    let mut seen = HashSet::with_capacity(targets.len());
    targets
        .iter()
        .find(|t| !seen.insert(t.id().as_str()))
        .map(|t| t.id())
}

impl Node {
    /// Sends `event` to every node of `targets` at once (Happen's fan-out, "a container means a
    /// collection") and returns a [`SendAll`] that resolves to one result per target, in the
    /// order given ([`AllReplies`]; also readable by node id).
    ///
    /// Each target runs its own flow, concurrently with the others, and gets its own copy of
    /// the event with its own event id; the copies share one correlation id (a new
    /// transaction, as [`send`](Node::send) starts; inside a flow use
    /// [`Context::send_all`](crate::Context::send_all), which continues the flow's) and
    /// name this node as their sender. All answers are awaited under one timeout (the node's
    /// request timeout, or [`SendAll::timeout`]).
    ///
    /// A target's failure is that target's result (an unknown node, no handler, a handler
    /// error, a timeout, a full queue...): the others are not affected. The call as a whole
    /// fails only on bad input, before anything is sent. No targets at all is not an error:
    /// it resolves to an empty [`AllReplies`].
    ///
    /// Streams and pacing compose with it: [`SendAll::into_replies`] gives each target's
    /// [`Reply`] to read as a stream, and a paced fan-out awaits [`Node::ready`] for every
    /// target before sending (`futures::future::join_all(targets.iter().map(|t| node.ready(t)))`).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
    /// use happen::{Context, ErrorKind, Event, Happen, Node};
    ///
    /// let happen = Happen::new();
    /// let a = happen.node("a").await?;
    /// let b = happen.node("b").await?;
    /// Node::on_all([&a, &b], "who", |_e: Event, ctx: Context| async move {
    ///     ctx.node_id().to_string()
    /// })?;
    /// let client = happen.node("client").await?;
    ///
    /// let all = client.send_all(["a", "b", "nobody"], Event::new("who", ())).await?;
    /// let mut results = all.iter();
    /// assert_eq!(results.next().unwrap().1.as_ref().unwrap(), "a");
    /// assert_eq!(results.next().unwrap().1.as_ref().unwrap(), "b");
    /// assert_eq!(all.get("nobody").unwrap().as_ref().unwrap_err().kind(), ErrorKind::UnknownNode);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// The returned future fails, and no event is sent, with
    /// - [`ErrorKind::DuplicateNode`] if a node id appears twice in `targets` (its result
    ///   could not be told apart by id; send twice on purpose with two calls);
    /// - [`ErrorKind::InvalidEvent`] for an invalid event (an empty type), and
    ///   [`ErrorKind::ChainTooDeep`], as [`tell`](Node::tell) would.
    pub fn send_all<'t, I>(&self, targets: I, event: Event) -> SendAll
    where
        I: IntoIterator,
        I::Item: Into<Target<'t>>,
    {
        self.send_all_inner(targets.into_iter().map(Into::into).collect(), event, None)
    }

    pub(crate) fn send_all_inner(
        &self,
        targets: Vec<Target<'_>>,
        event: Event,
        parent: Option<&Event>,
    ) -> SendAll {
        if let Some(twice) = named_twice(&targets) {
            return SendAll::failed(Error::new(
                ErrorKind::DuplicateNode,
                format!(
                    "node `{}` is named twice in the targets of send_all; name each target once",
                    twice
                ),
            ));
        }
        // Stamped once to check the event and fix the transaction all copies share.
        let first = match self.prepare(event.unsent_copy(), parent) {
            Ok(e) => e,
            Err(e) => return SendAll::failed(e),
        };
        let shared = match parent {
            None => event.with_correlation_id(first.correlation_id().clone()),
            Some(_) => event,
        };
        let mut first = Some(first);
        let pending = targets
            .into_iter()
            .map(|target| {
                let id = target.id().clone();
                // Each target its own event id; the same correlation, causation and sender.
                let reply = match first.take() {
                    Some(e) => self.send_prepared(target, e),
                    None => match self.prepare(shared.unsent_copy(), parent) {
                        Ok(e) => self.send_prepared(target, e),
                        Err(e) => self.failed_reply(e),
                    },
                };
                Pending {
                    id,
                    reply,
                    result: None,
                }
            })
            .collect();
        SendAll {
            state: State::Waiting(pending),
        }
    }
}
