//! Completion records (see `WIRE.md`, "Completion records"): when records are on, the serve
//! task admits a tell or a plain broadcast with a reply channel of its own instead of none,
//! and publishes `<prefix>.completed.<node>` when the flow answers it. Off, a tell or a
//! broadcast pays one atomic load and a branch ([`Completions::on`]) and nothing else.
//!
//! `completion_records = "watched"` turns them on only while a watcher beats on
//! `<prefix>.watch` ([`watch`]): for [`WATCH_TTL`] after the last beat.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use async_nats::{Subject, Subscriber};
use bytes::Bytes;
use futures::StreamExt;
use happen::transport::{Inbox, ReplyReceiver, ReplySender, Response, reply_channel};
use happen::{Error, ErrorKind, Event};

use crate::config::CompletionRecords;
use crate::core::Endpoint;
use crate::core::outbox::{Headers, Outbox, Outgoing};
use crate::core::stats::{Counters, inc};
use crate::wire::completion::{Completion, CompletionError, WATCH_TTL};

/// Whether records are on, and what publishing them uses.
pub(crate) struct Completions {
    pub(crate) ep: Arc<Endpoint>,
    pub(crate) outbox: Arc<Outbox>,
    pub(crate) counters: Arc<Counters>,
    on: AtomicBool,
}

/// What a record says about the event, taken when it is admitted.
pub(crate) struct Started {
    event_id: String,
    correlation_id: String,
    event_type: String,
    kind: &'static str,
    started_us: u64,
}

/// A tell or broadcast whose flow's end is awaited (polled by the serve task).
pub(crate) struct Completing {
    started: Option<Started>,
    rx: ReplyReceiver,
}

impl Future for Completing {
    type Output = (Started, Response);
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        match Pin::new(&mut this.rx).poll(cx) {
            Poll::Ready(r) => match this.started.take() {
                Some(s) => Poll::Ready((s, r)),
                None => Poll::Pending,
            },
            Poll::Pending => Poll::Pending,
        }
    }
}

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros().min(u64::MAX as u128) as u64)
}

impl Completions {
    pub(crate) fn new(ep: Arc<Endpoint>, outbox: Arc<Outbox>, counters: Arc<Counters>) -> Self {
        let always = ep.config.completion_records == CompletionRecords::Always;
        Completions {
            ep,
            outbox,
            counters,
            on: AtomicBool::new(always),
        }
    }

    /// Are records on now? (The only cost of a tell or broadcast while they are off.)
    #[inline]
    pub(crate) fn on(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    /// A reply channel to admit `event` with, and the record's beginning.
    pub(crate) fn track(event: &Event, kind: &'static str) -> (ReplySender, Completing) {
        let (tx, rx) = reply_channel();
        let started = Started {
            event_id: event.id().to_string(),
            correlation_id: event.correlation_id().to_string(),
            event_type: event.event_type().to_owned(),
            kind,
            started_us: now_us(),
        };
        (
            tx,
            Completing {
                started: Some(started),
                rx,
            },
        )
    }

    /// Publishes the record of a flow that answered `response`. A failure is also counted at
    /// the node as unobserved, as it is when nobody tracks the flow.
    pub(crate) fn finish(self: &Arc<Self>, inbox: &Inbox, started: Started, response: Response) {
        match response {
            Response::Done(outcome) => self.outcome(inbox, started, outcome.err()),
            Response::Stream(items) => {
                // a streaming handler told or broadcast: its items go nowhere, as without a
                // record; the record is written at its final value
                let (this, inbox) = (self.clone(), inbox.clone());
                tokio::spawn(async move {
                    let outcome = items.skip_to_final().await;
                    this.outcome(&inbox, started, outcome.err());
                });
            }
        }
    }

    fn outcome(&self, inbox: &Inbox, started: Started, error: Option<Error>) {
        if let Some(e) = &error
            && e.kind() != ErrorKind::Cancelled
        {
            inbox.report_unobserved(e);
        }
        let record = Completion {
            event_id: started.event_id,
            correlation_id: started.correlation_id,
            event_type: started.event_type,
            node: inbox.id().to_string(),
            replica: self.ep.replica.clone(),
            kind: started.kind.to_owned(),
            started_us: started.started_us,
            ended_us: now_us(),
            outcome: if error.is_some() { "error" } else { "ok" }.to_owned(),
            error: error.map(|e| CompletionError {
                kind: e.kind().to_string(),
                message: e.message().to_owned(),
                code: e.code().map(str::to_owned),
            }),
        };
        let Ok(body) = serde_json::to_vec(&record) else {
            return;
        };
        let out = Outgoing {
            subject: Subject::from(self.ep.subjects.completed(inbox.id())),
            reply: None,
            headers: Headers::from(None),
            payload: Bytes::from(body),
        };
        // best effort: a watcher never holds up a node
        if self.outbox.try_enqueue(out).is_none() {
            inc(&self.counters.completions_published);
        } else {
            inc(&self.counters.completions_dropped);
        }
    }
}

/// Subscribes to watchers' beats (`completion_records = "watched"`; done once at connect).
pub(crate) async fn subscribe(ep: &Endpoint) -> happen::Result<Option<Subscriber>> {
    if ep.config.completion_records != CompletionRecords::Watched {
        return Ok(None);
    }
    ep.client
        .subscribe(ep.subjects.watch())
        .await
        .map(Some)
        .map_err(|e| crate::core::transport_error("cannot subscribe to watchers' beats", e))
}

/// Turns records on at each beat and off [`WATCH_TTL`] after the last, until the transport
/// is gone.
pub(crate) async fn watch(c: Arc<Completions>, mut beats: Subscriber) {
    let mut until: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            beat = beats.next() => match beat {
                Some(_) => {
                    until = Some(tokio::time::Instant::now() + WATCH_TTL);
                    c.on.store(true, Ordering::Relaxed);
                }
                None => return,
            },
            () = async {
                match until {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            } => {
                until = None;
                c.on.store(false, Ordering::Relaxed);
            }
        }
    }
}
