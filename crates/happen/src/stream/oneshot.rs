//! The one-shot reply slot between a flow and its sender.
//!
//! Like a oneshot channel, plus a *nudge*: the answering side tells a waiting receiver that
//! the answer will not be immediate (the event was queued, or its flow is waiting on
//! something). A [`Reply`](crate::Reply) for a local target arms its timeout timer only then,
//! so a flow that completes on its first poll — the common case — costs no timer at all
//! (registering and clearing a tokio timer was a fifth of a request/reply round trip, most of
//! it on the timer's shared lock).

use std::cell::RefCell;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use parking_lot::Mutex;
use serde_json::Value;

use super::channel::ItemStream;
use crate::error::{Error, ErrorKind, Result};

use crate::id::NodeId;

struct State {
    value: Option<Response>,
    waker: Option<Waker>,
    /// Set by a nudge: the node that will answer (named in a timeout error).
    nudged: Option<NodeId>,
    sender_gone: bool,
    receiver_gone: bool,
}

impl State {
    const FRESH: State = State {
        value: None,
        waker: None,
        nudged: None,
        sender_gone: false,
        receiver_gone: false,
    };
}

type Shared = Arc<Mutex<State>>;

/// Slots kept per thread for reuse: a request's slot is usually made and dropped last on its
/// sender's thread, and reusing it saves an allocation and a free per request (~140
/// instructions of a ~4,100-instruction round trip).
const SPARE_SLOTS: usize = 32;

thread_local! {
    static SPARE: RefCell<Vec<Shared>> = const { RefCell::new(Vec::new()) };
}

/// A fresh slot.
pub(crate) fn slot() -> (SlotSender, SlotReceiver) {
    let shared = SPARE
        .try_with(|s| s.try_borrow_mut().ok()?.pop())
        .ok()
        .flatten()
        .unwrap_or_else(|| Arc::new(Mutex::new(State::FRESH)));
    (SlotSender(Some(shared.clone())), SlotReceiver(Some(shared)))
}

/// The answering half (`None` once it has answered).
pub(crate) struct SlotSender(Option<Shared>);

impl SlotSender {
    /// Answers; the response comes back if the receiver is gone.
    pub(crate) fn send(mut self, response: Response) -> Result<(), Response> {
        // Taken out so that `Drop` has nothing left to do (one lock per answer, not two).
        let Some(shared) = self.0.take() else {
            return Err(response);
        };
        let waker = {
            let mut st = shared.lock();
            if st.receiver_gone {
                return Err(response);
            }
            st.value = Some(response);
            st.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }

    /// Is the receiver gone?
    pub(crate) fn is_closed(&self) -> bool {
        self.0.as_ref().is_none_or(|s| s.lock().receiver_gone)
    }

    /// Tells the receiver the answer may take a while (it arms its timeout now).
    pub(crate) fn nudge(&self, node: &NodeId) {
        let Some(shared) = &self.0 else { return };
        let waker = {
            let mut st = shared.lock();
            if st.nudged.is_some() {
                return;
            }
            st.nudged = Some(node.clone());
            st.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl Drop for SlotSender {
    fn drop(&mut self) {
        let Some(shared) = self.0.take() else { return };
        let waker = {
            let mut st = shared.lock();
            st.sender_gone = true;
            st.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// What a receiver finds.
pub(crate) enum Received {
    Value(Response),
    /// The sender went away without answering.
    Gone,
    /// Nothing yet; `nudged` if the answer may take a while.
    Waiting {
        nudged: bool,
    },
}

/// The receiving half (`None` only while it is dropped).
pub(crate) struct SlotReceiver(Option<Shared>);

impl SlotReceiver {
    /// Takes the answer, or registers `cx`'s waker.
    pub(crate) fn poll_recv(&mut self, cx: &mut Context<'_>) -> Received {
        let Some(shared) = &self.0 else {
            return Received::Gone;
        };
        let mut st = shared.lock();
        if let Some(v) = st.value.take() {
            return Received::Value(v);
        }
        if st.sender_gone {
            return Received::Gone;
        }
        match &mut st.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            w => *w = Some(cx.waker().clone()),
        }
        Received::Waiting {
            nudged: st.nudged.is_some(),
        }
    }

    /// The node that nudged this slot (the one that will answer), if any.
    pub(crate) fn nudged_by(&self) -> Option<NodeId> {
        self.0.as_ref()?.lock().nudged.clone()
    }

    /// [`poll_recv`](SlotReceiver::poll_recv) as a plain future poll (nudges ignored).
    pub(crate) fn poll_value(&mut self, cx: &mut Context<'_>) -> Poll<Option<Response>> {
        match self.poll_recv(cx) {
            Received::Value(v) => Poll::Ready(Some(v)),
            Received::Gone => Poll::Ready(None),
            Received::Waiting { .. } => Poll::Pending,
        }
    }
}

impl Drop for SlotReceiver {
    fn drop(&mut self) {
        let Some(mut shared) = self.0.take() else {
            return;
        };
        // The sender is gone (the usual case once the answer was read): nobody to tell, no
        // lock, and the slot is kept for this thread's next request.
        if let Some(st) = Arc::get_mut(&mut shared) {
            let old = std::mem::replace(st.get_mut(), State::FRESH);
            let _ = SPARE.try_with(|s| {
                if let Ok(mut s) = s.try_borrow_mut()
                    && s.len() < SPARE_SLOTS
                {
                    s.push(shared);
                }
            });
            drop(old); // an unread answer, after the slot is back (it may hold a `Reply`)
            return;
        }
        let mut st = shared.lock();
        st.receiver_gone = true;
        st.waker = None;
        // Drop an undelivered answer here, not under the sender's lock later.
        let value = st.value.take();
        drop(st);
        drop(value);
    }
}

/// What a flow answers to its sender: a final outcome, or a stream of items that ends with one.
///
/// Transports pass this between a node's flow and a (possibly remote) sender: a transport
/// serving a remote send delivers the event with a [`reply_channel`] of its own, awaits the
/// receiver, and forwards what arrives.
///
/// ```
/// # use std::sync::{Arc, Mutex};
/// # use futures::future::BoxFuture;
/// # use happen::transport::{Inbox, LocalTransport, ReplySender, Transport};
/// # use happen::NodeId;
/// # #[derive(Default, Clone)]
/// # struct Capture { local: Arc<LocalTransport>, inboxes: Arc<Mutex<Vec<Inbox>>> }
/// # impl Capture {
/// #     fn inbox(&self, id: &str) -> Inbox {
/// #         self.inboxes.lock().unwrap().iter().find(|i| i.id() == id).unwrap().clone()
/// #     }
/// # }
/// # impl Transport for Capture {
/// #     fn attach(&self, inbox: Inbox) -> BoxFuture<'_, happen::Result<()>> {
/// #         self.inboxes.lock().unwrap().push(inbox.clone());
/// #         self.local.attach(inbox)
/// #     }
/// #     fn detach(&self, node: &NodeId) -> BoxFuture<'_, ()> { self.local.detach(node) }
/// #     fn send(&self, t: &NodeId, e: happen::Event, r: Option<ReplySender>) -> happen::Result<()> {
/// #         self.local.send(t, e, r)
/// #     }
/// #     fn broadcast(&self, e: happen::Event) -> happen::Result<()> { self.local.broadcast(e) }
/// # }
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
/// # let transport = Capture::default();
/// # let happen = happen::Happen::builder().transport(transport.clone()).build()?;
/// use futures::StreamExt;
/// use happen::transport::{reply_channel, Response};
/// use happen::{Context, Emitter, Event};
///
/// let node = happen.node("lines").await?;
/// node.on("read", |_e: Event, _c: Context, out: Emitter| async move {
///     out.emit("first line").await?;
///     Ok::<_, happen::Error>("eof")
/// })?;
///
/// let inbox = transport.inbox("lines"); // as `attach` received it
/// let (tx, rx) = reply_channel();
/// inbox.deliver(Event::new("read", ()), Some(tx))?;
/// match rx.await {
///     Response::Done(outcome) => panic!("a streaming flow streams: {outcome:?}"),
///     Response::Stream(mut items) => {
///         // Forward each item to the remote sender, then the end.
///         assert_eq!(items.next().await.unwrap()?, "first line");
///         assert!(items.next().await.is_none());
///         assert_eq!(items.final_value().unwrap(), "eof");
///     }
/// }
/// # Ok(()) }
/// ```
pub enum Response {
    /// The flow finished without streaming.
    Done(Result<Value>),
    /// The flow streams items; the stream ends with the final outcome.
    Stream(ItemStream),
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Response::Done(r) => f.debug_tuple("Done").field(r).finish(),
            Response::Stream(_) => f.write_str("Stream(..)"),
        }
    }
}

/// The sending half of a reply path: the engine (or a transport) answers through it once.
/// Dropping it unanswered answers [`ErrorKind::ShutDown`] (see [`ReplyReceiver`]).
pub struct ReplySender(pub(crate) SlotSender);

/// The receiving half of a reply path: a future that resolves to the [`Response`], or to
/// `Response::Done(Err(_))` of kind [`ErrorKind::ShutDown`] if the answering side went away
/// without answering. It has no timeout of its own: wrap it in `tokio::time::timeout`.
///
/// # Cancel safety
/// Dropping it tells the answering side nobody listens: [`ReplySender::is_closed`] turns
/// true, [`ReplySender::send`] hands the response back, and a local flow that streams
/// discards its items (a plain flow still runs to its end).
pub struct ReplyReceiver(pub(crate) SlotReceiver);

impl fmt::Debug for ReplySender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplySender").finish_non_exhaustive()
    }
}

impl fmt::Debug for ReplyReceiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplyReceiver").finish_non_exhaustive()
    }
}

/// A fresh reply path. Transports use it to receive the outcome of a local flow (to forward it
/// over the wire; see [`Response`]) or to hand a remote outcome to a local sender.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use happen::transport::{reply_channel, Response};
/// let (tx, rx) = reply_channel();
/// tx.send(Response::Done(Ok(serde_json::json!(1))));
/// assert!(matches!(rx.await, Response::Done(Ok(v)) if v == 1));
/// # }
/// ```
pub fn reply_channel() -> (ReplySender, ReplyReceiver) {
    let (tx, rx) = slot();
    (ReplySender(tx), ReplyReceiver(rx))
}

impl ReplySender {
    /// Answers. Returns the response back if the receiver is gone.
    ///
    /// # Errors
    /// `Err(response)` when the receiver was dropped: nobody will read it.
    pub fn send(self, response: Response) -> std::result::Result<(), Response> {
        self.0.send(response)
    }

    /// Is the receiving side gone? A transport forwarding a remote answer may stop early.
    ///
    /// ```
    /// use happen::transport::{reply_channel, Response};
    ///
    /// let (tx, rx) = reply_channel();
    /// assert!(!tx.is_closed());
    /// drop(rx);
    /// assert!(tx.is_closed());
    /// let back = tx.send(Response::Done(Ok(serde_json::json!(1)))).unwrap_err();
    /// assert!(matches!(back, Response::Done(Ok(_))));
    /// ```
    pub fn is_closed(&self) -> bool {
        self.0.is_closed()
    }
}

impl Future for ReplyReceiver {
    type Output = Response;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Response> {
        self.0.poll_value(cx).map(|r| {
            r.unwrap_or_else(|| {
                Response::Done(Err(Error::new(
                    ErrorKind::ShutDown,
                    "the answering side went away without answering (node or transport shut down)",
                )))
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_reused_slot_carries_nothing_of_its_last_request() {
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        for i in 0..(SPARE_SLOTS * 3) {
            let (tx, rx) = slot();
            tx.nudge(&NodeId::from("answering"));
            assert!(tx.send(Response::Done(Ok(json!(i)))).is_ok());
            drop(rx); // the answer unread: the slot goes back to this thread's spares

            let (tx, mut rx) = slot();
            assert!(
                matches!(rx.poll_recv(&mut cx), Received::Waiting { nudged: false }),
                "a fresh slot holds no answer and no nudge"
            );
            assert_eq!(rx.nudged_by(), None);
            assert!(!tx.is_closed());
            drop(tx);
            assert!(matches!(rx.poll_recv(&mut cx), Received::Gone));
        }
    }

    #[test]
    fn a_slot_still_held_by_its_sender_is_not_reused() {
        let (tx, rx) = slot();
        drop(rx); // the sender still holds it: it learns the receiver is gone
        assert!(tx.is_closed());
        let (tx2, _rx2) = slot();
        assert!(
            !tx2.is_closed(),
            "the new slot is not the one the old sender holds"
        );
        assert!(tx.send(Response::Done(Ok(json!(1)))).is_err());
    }
}
