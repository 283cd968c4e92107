//! `happen tap`: every event on the happen subjects, one line each, from a
//! [`happen_nats::tap::Tap`]. Only listens: a plain subscription to `<prefix>.>` beside the
//! nodes' queue groups, so the nodes still get every event. (One side effect: while a tap
//! runs, a request to a node nobody serves has a subscriber, the tap, so the server does not
//! answer "no responders" and the sender waits for its timeout instead of failing at once
//! with `unknown_node`.)

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use futures::{Stream, StreamExt};
use happen::pattern::Pattern;
use happen::{Error, ErrorKind, Result};
use happen_nats::NatsTransport;
use happen_nats::tap::{TapKind, Tapped};

use crate::TapArgs;
use crate::conn::ConnArgs;
use crate::observed::{self, Completed, Seen, Store};
use crate::record::{self, Header, Line, NodesLine, ReplyLine};
use crate::time;

/// The events on the happen subjects, decoded, as they arrive (with their payloads), from a
/// [`happen_nats::tap::Tap`] of the transport's prefix: events come in the order the server
/// delivers them; a message that is not an event is reported on stderr and skipped.
pub(crate) async fn listen(transport: &NatsTransport) -> Result<impl Stream<Item = Seen> + use<>> {
    Ok(listen_with_replies(transport)
        .await?
        .map(|(seen, _reply)| seen))
}

/// [`listen`], each event with its reply subject (`Some` for a request).
pub(crate) async fn listen_with_replies(
    transport: &NatsTransport,
) -> Result<impl Stream<Item = (Seen, Option<String>)> + use<>> {
    let tap = transport.tap().await?;
    Ok(tap.filter_map(|tapped| {
        std::future::ready(match tapped {
            Ok(mut t) => {
                let reply = t.reply.take();
                Some((seen(t), reply))
            }
            Err(undecodable) => {
                eprintln!("warning: {undecodable}");
                None
            }
        })
    }))
}

fn seen(t: Tapped) -> Seen {
    let received_us = time::now_us();
    let kind = match t.kind {
        TapKind::Send => "send",
        TapKind::Tell => "tell",
        _ => "broadcast",
    };
    let event = t.event;
    let signed_by = event
        .integrity()
        .map(|i| i.public_key().unwrap_or("?").to_owned());
    let hash_ok = signed_by
        .as_ref()
        .map(|_| event.hash() == Some(happen::security::event_hash(&event).as_str()));
    Seen {
        signed_by,
        hash_ok,
        time: time::rfc3339(received_us),
        received_us,
        kind: kind.to_owned(),
        target: t.target.map(|n| n.to_string()),
        event_type: event.event_type().to_owned(),
        id: event.id().to_string(),
        sender: event.sender().to_string(),
        causation_id: event.causation_id().map(|c| c.to_string()),
        correlation_id: event.correlation_id().to_string(),
        path: event.path().iter().map(|p| p.to_string()).collect(),
        timestamp: event.causal().timestamp(),
        payload: Some(event.payload().clone()),
    }
}

/// Opens `path` to append JSON lines to.
fn open_record(path: &Path) -> Result<std::io::BufWriter<std::fs::File>> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map(std::io::BufWriter::new)
        .map_err(|e| {
            Error::new(
                ErrorKind::InvalidConfig,
                format!("cannot open `{}` to record to: {e}", path.display()),
            )
        })
}

fn write_error(what: &str, e: std::io::Error) -> Error {
    Error::new(
        ErrorKind::InvalidConfig,
        format!("cannot write {what}: {e}"),
    )
}

/// Resolves after `d`, or never.
pub(crate) async fn after(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

/// What a `--record` file gets besides the events: the requests' replies (paired through a
/// subscription to `_INBOX.>`), the completion records of tells and broadcasts (with a
/// watch beat each second, for nodes that publish them only while watched) and a discovery
/// snapshot every `snapshot_every` (from a task, so a slow discovery never holds up the
/// events).
struct Recorder {
    file: std::io::BufWriter<std::fs::File>,
    store: Store,
    replies: Option<async_nats::Subscriber>,
    completed: Option<async_nats::Subscriber>,
    beats: Option<tokio::task::JoinHandle<()>>,
    snapshots: Option<tokio::sync::mpsc::Receiver<NodesLine>>,
    snapshot_task: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        if let Some(t) = self.snapshot_task.take() {
            t.abort();
        }
        if let Some(t) = self.beats.take() {
            t.abort();
        }
    }
}

impl Recorder {
    async fn start(
        path: &Path,
        transport: &NatsTransport,
        snapshot_every: Duration,
    ) -> Result<Recorder> {
        let mut file = open_record(path)?;
        let header = Line::Header(Header {
            format: "happen-record".to_owned(),
            version: record::VERSION,
            started_us: time::now_us(),
        });
        writeln!(file, "{}", header.to_json())
            .and_then(|()| file.flush())
            .map_err(|e| write_error("the record file", e))?;
        let replies = transport
            .client()
            .subscribe("_INBOX.>")
            .await
            .map_err(|e| {
                Error::new(
                    ErrorKind::Transport,
                    format!("cannot subscribe to the replies to record them: {e}"),
                )
            })?;
        let completed = transport
            .client()
            .subscribe(happen_nats::completion::records_subject(
                &transport.config().prefix,
            ))
            .await
            .map_err(|e| {
                Error::new(
                    ErrorKind::Transport,
                    format!("cannot subscribe to the completion records to record them: {e}"),
                )
            })?;
        let beating = transport.clone();
        let beats = tokio::spawn(async move { crate::conn::watch_beats(&beating).await });
        let (snapshots, snapshot_task) = if snapshot_every.is_zero() {
            (None, None)
        } else {
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            let transport = transport.clone();
            let task = tokio::spawn(async move {
                let mut every = tokio::time::interval(snapshot_every);
                every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    every.tick().await;
                    // a failed discovery (disconnected) is reported by the connection state
                    if let Ok(processes) = transport
                        .discover(Duration::from_millis(500), Duration::from_millis(100))
                        .await
                    {
                        let line = NodesLine {
                            at_us: time::now_us(),
                            processes,
                        };
                        if tx.send(line).await.is_err() {
                            return;
                        }
                    }
                }
            });
            (Some(rx), Some(task))
        };
        Ok(Recorder {
            file,
            store: Store::default(),
            replies: Some(replies),
            completed: Some(completed),
            beats: Some(beats),
            snapshots,
            snapshot_task,
        })
    }

    fn write(&mut self, line: &Line) -> Result<()> {
        writeln!(self.file, "{}", line.to_json())
            .and_then(|()| self.file.flush())
            .map_err(|e| write_error("the record file", e))
    }

    /// Records an event (and its reply when that came first).
    fn event(&mut self, seen: &Seen, reply: Option<&str>) -> Result<()> {
        self.write(&Line::Event(Box::new(seen.clone())))?;
        let mut kept = seen.clone();
        kept.payload = None;
        if let Some((req, r)) = self.store.event(&kept, reply) {
            self.write(&Line::Reply(ReplyLine::of(&req, &r)))?;
        }
        Ok(())
    }

    /// Records a reply to a recorded request.
    fn reply(&mut self, msg: &async_nats::Message) -> Result<()> {
        let Some(r) = observed::reply_of(msg) else {
            return Ok(());
        };
        match self.store.reply(msg.subject.as_str(), r) {
            Some((req, r)) => self.write(&Line::Reply(ReplyLine::of(&req, &r))),
            None => Ok(()),
        }
    }
}

/// The next reply message, or never (no subscription, or it ended).
async fn next_reply(replies: &mut Option<async_nats::Subscriber>) -> async_nats::Message {
    if let Some(r) = replies.as_mut()
        && let Some(m) = r.next().await
    {
        return m;
    }
    *replies = None;
    std::future::pending().await
}

/// The next completion record, or never.
async fn next_completed(completed: &mut Option<async_nats::Subscriber>) -> async_nats::Message {
    if let Some(c) = completed.as_mut()
        && let Some(m) = c.next().await
    {
        return m;
    }
    *completed = None;
    std::future::pending().await
}

/// The next node snapshot, or never.
async fn next_snapshot(
    snapshots: &mut Option<tokio::sync::mpsc::Receiver<NodesLine>>,
) -> NodesLine {
    if let Some(s) = snapshots.as_mut()
        && let Some(n) = s.recv().await
    {
        return n;
    }
    *snapshots = None;
    std::future::pending().await
}

/// The next reply or snapshot to record, or never without a recorder.
async fn recorded(record: &mut Option<Recorder>) -> Recorded {
    let Some(Recorder {
        replies,
        snapshots,
        completed,
        ..
    }) = record.as_mut()
    else {
        return std::future::pending().await;
    };
    tokio::select! {
        m = next_reply(replies) => Recorded::Reply(Box::new(m)),
        m = next_completed(completed) => Recorded::Completed(Box::new(m)),
        n = next_snapshot(snapshots) => Recorded::Nodes(n),
    }
}

enum Recorded {
    Reply(Box<async_nats::Message>),
    Completed(Box<async_nats::Message>),
    Nodes(NodesLine),
}

pub(crate) async fn tap(conn: &ConnArgs, a: TapArgs) -> Result<()> {
    let pattern = a.pattern.as_deref().map(Pattern::parse).transpose()?;
    let transport = conn.connect().await?;
    let mut record = match a.record.as_deref() {
        Some(path) => Some(Recorder::start(path, &transport, a.snapshot_every).await?),
        None => None,
    };
    let events = listen_with_replies(&transport).await?;
    tokio::pin!(events);
    eprintln!(
        "listening on {p}.node.* and {p}.broadcast{} (Ctrl-C to stop)",
        a.pattern
            .as_deref()
            .map_or(String::new(), |p| format!(" for `{p}`")),
        p = conn.prefix
    );
    let stop = after(a.duration);
    tokio::pin!(stop);
    let connection = crate::conn::report_connection(&transport, &conn.url);
    tokio::pin!(connection);
    let mut seen = 0u64;
    let stdout = std::io::stdout();
    loop {
        if a.count.is_some_and(|n| seen >= n) {
            break;
        }
        let (mut event, reply) = tokio::select! {
            _ = &mut stop => break,
            _ = tokio::signal::ctrl_c() => break,
            never = &mut connection => match never {},
            r = recorded(&mut record) => {
                if let Some(rec) = record.as_mut() {
                    match r {
                        Recorded::Reply(m) => rec.reply(&m)?,
                        Recorded::Completed(m) => {
                            if let Some(c) = Completed::parse(&m.payload) {
                                rec.write(&Line::Completed(c))?;
                            }
                        }
                        Recorded::Nodes(n) => rec.write(&Line::Nodes(n))?,
                    }
                }
                continue;
            }
            e = events.next() => match e {
                Some(e) => e,
                None => break,
            },
        };
        if pattern
            .as_ref()
            .is_some_and(|p| !p.matches(&event.event_type))
        {
            continue;
        }
        seen += 1;
        if let Some(r) = record.as_mut() {
            r.event(&event, reply.as_deref())?;
        }
        if !a.payload {
            event.payload = None;
        }
        let line = if a.json {
            serde_json::to_string(&event).unwrap_or_default()
        } else {
            event.line()
        };
        let mut out = stdout.lock();
        match writeln!(out, "{line}").and_then(|()| out.flush()) {
            Ok(()) => {}
            // the reader went away (`happen tap | head`): done
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => break,
            Err(e) => return Err(write_error("to stdout", e)),
        }
    }
    eprintln!("{seen} event(s)");
    Ok(())
}
