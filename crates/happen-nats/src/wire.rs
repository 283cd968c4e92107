//! The wire format: subjects, header names, and the encoders and decoders of every message this
//! transport publishes or accepts. `WIRE.md` (included below) is the normative description.
//!
//! Everything here is pure (no I/O) and total: decoders return errors for any input, they never
//! panic, which a property test checks.
#![doc = include_str!("../WIRE.md")]

use std::fmt::Write as _;

use async_nats::HeaderMap;
use async_nats::header::HeaderValue;
use bytes::Bytes;
use happen::{Error, ErrorKind, Event, NodeId, Pressure};
use serde_json::Value;

/// Names of the NATS headers this transport adds. Absent headers mean the reference behaviour
/// (a reply without `Happen-Status` is a successful final value).
pub mod header {
    /// On replies: `error` (details in the `Happen-Error-*` headers and the JSON error body,
    /// see [`encode_error`](super::encode_error)) or `stream` (a stream starts; see
    /// [`CONTROL`]). Absent: the body is the raw JSON final value.
    pub const STATUS: &str = "Happen-Status";
    /// The [`ErrorKind`](happen::ErrorKind) name, e.g. `queue_full`.
    pub const ERROR_KIND: &str = "Happen-Error-Kind";
    /// The error message (percent-escaped: `%`, CR and LF).
    pub const ERROR_MESSAGE: &str = "Happen-Error-Message";
    /// The node the error concerns.
    pub const ERROR_NODE: &str = "Happen-Error-Node";
    /// The event the error concerns.
    pub const ERROR_EVENT: &str = "Happen-Error-Event";
    /// The limit that was hit (`queue_full`, `chain_too_deep`).
    pub const ERROR_LIMIT: &str = "Happen-Error-Limit";
    /// The application's error code ([`happen::Error::code`]), percent-escaped.
    pub const ERROR_CODE: &str = "Happen-Error-Code";
    /// On requests: the requester understands streams and grants this initial credit.
    pub const STREAM: &str = "Happen-Stream";
    /// On a stream start: the subject to which the consumer sends `credit` and `cancel`.
    pub const CONTROL: &str = "Happen-Control";
    /// The kind of a stream frame: `item`, `end`, `error` (producer to consumer) or `credit`,
    /// `cancel` (consumer to producer).
    pub const FRAME: &str = "Happen-Frame";
    /// On `credit` frames: how many more items the producer may send.
    pub const CREDIT: &str = "Happen-Credit";
    /// On replies from a node under backpressure:
    /// `high;queued=<n>;limit=<n>[;seq=<n>;replica=<id>]`. Absent: says nothing (see
    /// `WIRE.md`, "Pacing").
    pub const PRESSURE: &str = "Happen-Pressure";
    /// On a request with an empty body: a question to the serving process instead of an event.
    /// `limits` asks for the node's admission limits, answered with [`LIMITS`].
    pub const QUERY: &str = "Happen-Query";
    /// The answer to `Happen-Query: limits`: `concurrent=<n>;queue=<n>;high=<n>`.
    pub const LIMITS: &str = "Happen-Limits";
    /// On the `node.pressure` reports published on `<prefix>.pressure.<id>`: which process
    /// (replica) sent it, so reports of one replica are ordered by their `seq`.
    pub const REPLICA: &str = "Happen-Replica";
    /// On broadcast stream frames: the frame's sequence number (items from 1; the `end` or
    /// `error` frame takes the next number). A jump is reported to subscribers as lag.
    pub const SEQ: &str = "Happen-Seq";
}

/// The subjects of one deployment (all share a prefix, default `happen`).
#[derive(Debug, Clone)]
pub struct Subjects {
    prefix: String,
    broadcast: String,
}

impl Subjects {
    /// Subjects under `prefix` (the reference uses `happen`).
    pub fn new(prefix: &str) -> Subjects {
        Subjects {
            prefix: prefix.to_owned(),
            broadcast: format!("{prefix}.broadcast"),
        }
    }

    /// `<prefix>.node.<id>`: a node's direct inbox.
    pub fn node(&self, id: &str) -> String {
        let mut s = String::with_capacity(self.prefix.len() + 6 + id.len());
        s.push_str(&self.prefix);
        s.push_str(".node.");
        s.push_str(id);
        s
    }

    /// `<prefix>.pressure.<id>`: a node's `node.pressure` reports (also broadcast).
    pub fn pressure(&self, id: &str) -> String {
        format!("{}.pressure.{id}", self.prefix)
    }

    /// `<prefix>.broadcast`.
    pub fn broadcast(&self) -> &str {
        &self.broadcast
    }
}

/// Serializes an event in the reference JSON form.
///
/// # Errors
/// [`ErrorKind::InvalidPayload`] if the payload cannot be serialized (it always can: it is JSON).
pub fn encode_event(event: &Event) -> happen::Result<Bytes> {
    // an event's context alone is ~250 bytes: start there instead of growing from empty
    let mut buf = Vec::with_capacity(512);
    serde_json::to_writer(&mut buf, event)
        .map(|()| Bytes::from(buf))
        .map_err(|e| {
            Error::new(
                ErrorKind::InvalidPayload,
                format!("event cannot be serialized: {e}"),
            )
        })
}

/// The event type at the very start of a body, without decoding it: the body must begin
/// with `{"type":"` and the type must have no escapes (as [`encode_event`] writes it). `None`
/// otherwise (then only decoding tells). Used to skip broadcasts a node has no handler for
/// (see `WIRE.md`, "Broadcasts").
///
/// ```
/// use happen_nats::wire::peek_type;
/// assert_eq!(peek_type(br#"{"type":"tick","payload":1}"#), Some("tick"));
/// assert_eq!(peek_type(br#"{"payload":1,"type":"tick"}"#), None);
/// ```
pub fn peek_type(body: &[u8]) -> Option<&str> {
    let rest = body.strip_prefix(br#"{"type":""#)?;
    let end = rest.iter().position(|&b| b == b'"' || b == b'\\')?;
    if rest[end] != b'"' {
        return None; // an escape: let the decoder read it
    }
    std::str::from_utf8(&rest[..end]).ok()
}

/// Decodes an event received on a node or broadcast subject.
///
/// # Errors
/// [`ErrorKind::InvalidEvent`] for a message larger than `max_bytes`, malformed JSON, missing
/// `type`, or fields of the wrong type (the message says which).
///
/// ```
/// let e = happen_nats::wire::decode_event(br#"{"type":"ping","payload":1}"#, 1024).unwrap();
/// assert_eq!(e.event_type(), "ping");
/// assert!(happen_nats::wire::decode_event(b"{", 1024).is_err());
/// ```
pub fn decode_event(payload: &[u8], max_bytes: usize) -> happen::Result<Event> {
    if payload.len() > max_bytes {
        return Err(Error::new(
            ErrorKind::InvalidEvent,
            format!(
                "message of {} bytes exceeds the limit of {max_bytes} bytes (transport.nats.max_message_bytes)",
                payload.len()
            ),
        ));
    }
    serde_json::from_slice::<Event>(payload).map_err(|e| {
        Error::new(
            ErrorKind::InvalidEvent,
            format!(
                "malformed happen event (expected {{\"type\", \"payload\", \"context\"}} JSON): {e}"
            ),
        )
    })
}

/// Escapes a header value: `%`, CR and LF become `%25`, `%0D`, `%0A`.
pub fn escape(s: &str) -> String {
    if !s.contains(['%', '\r', '\n']) {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '%' => out.push_str("%25"),
            '\r' => out.push_str("%0D"),
            '\n' => out.push_str("%0A"),
            c => out.push(c),
        }
    }
    out
}

/// Reverses [`escape`]; unknown escapes are kept as they are.
pub fn unescape(s: &str) -> String {
    if !s.contains('%') {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        let (rep, n) = if tail.starts_with("%25") {
            ("%", 3)
        } else if tail.starts_with("%0D") {
            ("\r", 3)
        } else if tail.starts_with("%0A") {
            ("\n", 3)
        } else {
            ("%", 1)
        };
        out.push_str(rep);
        rest = &tail[n..];
    }
    out.push_str(rest);
    out
}

fn value(s: &str) -> HeaderValue {
    // `escape` removes the only characters `HeaderValue` rejects
    HeaderValue::from(escape(s))
}

/// The headers of an error reply or error frame: the error itself, not its downstream chain
/// (that is in the body, see [`encode_error`]).
pub fn error_headers(err: &Error, headers: &mut HeaderMap) {
    WireError::one(err).headers(headers);
}

fn get<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).map(|v| v.as_str())
}

/// Rebuilds an error from the `Happen-Error-*` headers (without a downstream chain: that is
/// only in the body). An unknown or missing kind becomes [`ErrorKind::Transport`] (the message
/// says so).
pub fn error_from_headers(headers: &HeaderMap) -> Error {
    let kind = get(headers, header::ERROR_KIND).unwrap_or("");
    let message = get(headers, header::ERROR_MESSAGE)
        .map(unescape)
        .unwrap_or_default();
    let node = get(headers, header::ERROR_NODE).map(unescape);
    let event = get(headers, header::ERROR_EVENT).map(unescape);
    let limit = get(headers, header::ERROR_LIMIT).and_then(|l| l.trim().parse().ok());
    let code = get(headers, header::ERROR_CODE).map(unescape);
    rebuild(kind, message, node, event, limit, code)
}

fn rebuild(
    kind_name: &str,
    message: String,
    node: Option<String>,
    event: Option<String>,
    limit: Option<usize>,
    code: Option<String>,
) -> Error {
    let node = node.map(NodeId::from);
    let event = event.map(|e| happen::EventId::parse(&e));
    let e = match ErrorKind::parse(kind_name.trim()) {
        Some(kind) => crate::wire::error_from_parts(kind, message, node, event, limit),
        None => crate::wire::error_from_parts(
            ErrorKind::Transport,
            format!("remote error of unknown kind `{kind_name}`: {message}"),
            node,
            event,
            limit,
        ),
    };
    match code {
        Some(c) => e.with_code(c),
        None => e,
    }
}

/// The deepest chain an error reply carries: the error and at most 15 errors below it
/// ([`Error::downstream`]). A longer chain keeps its first 15 and its origin
/// ([`Error::origin`]); the errors between are left out, and the last kept one before the
/// gap says how many (`omitted`, and a note in its message when decoded).
pub const MAX_ERROR_DEPTH: usize = 16;

/// The longest message an error reply keeps per error when the whole error does not fit in
/// one NATS message.
const CUT_MESSAGE_AT: usize = 1024;

/// One error of the JSON error body (`{"error": WireError}`); see `WIRE.md`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireError {
    kind: String,
    message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    node: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    event_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    limit: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    code: Option<String>,
    /// How many errors of the chain were left out between this one and `downstream`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    omitted: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    downstream: Option<Box<WireError>>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ErrorBody {
    error: WireError,
}

impl WireError {
    fn one(err: &Error) -> WireError {
        WireError {
            kind: err.kind().as_str().to_owned(),
            message: err.message().to_owned(),
            node: err.node().map(|n| n.to_string()),
            event_id: err.event_id().map(|e| e.to_string()),
            limit: err.limit().map(|l| l as u64),
            code: err.code().map(str::to_owned),
            omitted: None,
            downstream: None,
        }
    }

    /// The error and its chain, at most [`MAX_ERROR_DEPTH`] deep.
    fn of(err: &Error) -> WireError {
        let mut chain = vec![err];
        while let Some(d) = chain.last().and_then(|e| e.downstream()) {
            chain.push(d);
        }
        let omitted = chain.len().saturating_sub(MAX_ERROR_DEPTH);
        if omitted > 0 {
            // keep the first ones and the origin: where it went wrong matters most
            chain.drain(MAX_ERROR_DEPTH - 1..chain.len() - 1);
        }
        let mut below: Option<Box<WireError>> = None;
        for (i, e) in chain.iter().enumerate().rev() {
            let mut w = WireError::one(e);
            if omitted > 0 && i == MAX_ERROR_DEPTH - 2 {
                w.omitted = Some(omitted as u64);
            }
            w.downstream = below.take();
            below = Some(Box::new(w));
        }
        *below.expect("the chain holds at least `err`")
    }

    /// Shortens every message to `at` bytes (at a character boundary), saying so.
    fn cut_messages(&mut self, at: usize) {
        let mut w = Some(self);
        while let Some(e) = w {
            if e.message.len() > at {
                let mut end = at;
                while !e.message.is_char_boundary(end) {
                    end -= 1;
                }
                let cut = e.message.len() - end;
                e.message.truncate(end);
                let _ = write!(
                    e.message,
                    "… ({cut} more bytes left out: the error did not fit in one NATS message)"
                );
            }
            w = e.downstream.as_deref_mut();
        }
    }

    /// The error this describes (an unknown kind becomes [`ErrorKind::Transport`]).
    fn into_error(self) -> Error {
        let below = self.downstream.map(|d| d.into_error());
        let mut message = self.message;
        if let Some(n) = self.omitted.filter(|n| *n > 0) {
            let _ = write!(
                message,
                " ({n} more errors of the downstream chain were left out on the wire; it carries at most {MAX_ERROR_DEPTH})"
            );
        }
        let limit = self.limit.and_then(|l| usize::try_from(l).ok());
        let e = rebuild(
            &self.kind,
            message,
            self.node,
            self.event_id,
            limit,
            self.code,
        );
        match below {
            Some(d) => with_downstream(e, d),
            None => e,
        }
    }

    /// Headers carry the outermost error only.
    fn headers(&self, headers: &mut HeaderMap) {
        headers.insert(header::ERROR_KIND, value(&self.kind));
        headers.insert(header::ERROR_MESSAGE, value(&self.message));
        if let Some(n) = &self.node {
            headers.insert(header::ERROR_NODE, value(n));
        }
        if let Some(e) = &self.event_id {
            headers.insert(header::ERROR_EVENT, value(e));
        }
        if let Some(l) = self.limit {
            headers.insert(header::ERROR_LIMIT, l.to_string().as_str());
        }
        if let Some(c) = &self.code {
            headers.insert(header::ERROR_CODE, value(c));
        }
    }

    fn body(self) -> Bytes {
        serde_json::to_vec(&ErrorBody { error: self })
            .map(Bytes::from)
            .unwrap_or_default()
    }
}

/// The size of `headers` on the wire (as NATS counts it against `max_payload`).
fn headers_len(headers: &HeaderMap) -> usize {
    let mut len = "NATS/1.0\r\n\r\n".len();
    for (name, values) in headers.iter() {
        for v in values {
            len += name.to_string().len() + v.as_str().len() + 4;
        }
    }
    len
}

/// What an error reply or error frame adds to the message: the `Happen-Error-*` headers of
/// the error (into `headers`, which may hold others already) and, returned, the JSON body
/// `{"error": {...}}` with the error and its downstream chain (see `WIRE.md`).
///
/// The message is kept within `max_bytes` (the server's `max_payload`) with `room` bytes to
/// spare for headers added later: if it would not fit, every message is cut to 1 KiB (saying
/// so); if it still does not fit, the body is left empty.
///
/// ```
/// use happen::{Error, ErrorKind};
/// use happen_nats::wire;
///
/// let err = Error::new(ErrorKind::Handler, "card declined").with_code("card_declined");
/// let mut headers = async_nats::HeaderMap::new();
/// let body = wire::encode_error(&err, &mut headers, 1 << 20, 0);
/// let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
/// assert_eq!(json["error"]["code"], "card_declined");
/// let back = wire::decode_error(&headers, &body);
/// assert_eq!((back.kind(), back.code()), (ErrorKind::Handler, Some("card_declined")));
/// ```
pub fn encode_error(err: &Error, headers: &mut HeaderMap, max_bytes: usize, room: usize) -> Bytes {
    let mut w = WireError::of(err);
    let base = headers.clone();
    w.headers(headers);
    let body = w.clone().body();
    if headers_len(headers) + body.len() + room <= max_bytes {
        return body;
    }
    w.cut_messages(CUT_MESSAGE_AT);
    *headers = base;
    w.headers(headers);
    let body = w.body();
    if headers_len(headers) + body.len() + room <= max_bytes {
        return body;
    }
    Bytes::new()
}

/// Rebuilds the error of an error reply or error frame: from its JSON body (the error with its
/// downstream chain) when it has one, else (an empty body, or one that is not an error body:
/// an older happen) from the `Happen-Error-*` headers. Whether the message is an error at all
/// is decided by its headers (`Happen-Status` / `Happen-Frame`), never by the body.
pub fn decode_error(headers: &HeaderMap, body: &[u8]) -> Error {
    if !body.is_empty()
        && let Ok(b) = serde_json::from_slice::<ErrorBody>(body)
    {
        return b.error.into_error();
    }
    error_from_headers(headers)
}

/// The `Happen-Pressure` header value for a state, or `None` when not under pressure.
pub fn pressure_header(p: &Pressure) -> Option<String> {
    p.under_pressure
        .then(|| format!("high;queued={};limit={}", p.queued, p.queue_limit))
}

/// The `Happen-Pressure` header value of a report with its sequence number and replica id
/// (see [`PressureReport`]), or `None` when not under pressure.
pub fn pressure_report_header(p: &Pressure, seq: u64, replica: &str) -> Option<String> {
    pressure_header(p).map(|h| format!("{h};seq={seq};replica={replica}"))
}

/// Parses a `Happen-Pressure` header (absent means normal).
pub fn parse_pressure(value: Option<&str>) -> Pressure {
    value.map_or(happen::transport::pressure(false, 0, 0), |v| {
        parse_pressure_report(v).pressure
    })
}

/// A pressure state as reported by a node: the `node.pressure` payload or a
/// `Happen-Pressure` header.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct PressureReport {
    /// The state.
    pub pressure: Pressure,
    /// The node's transition counter (`seq`); a lower one than already seen from the same
    /// replica is an older report.
    pub seq: Option<u64>,
    /// The process (replica) that reported, if it said.
    pub replica: Option<String>,
}

/// Parses a `Happen-Pressure` header value, with its optional `seq` and `replica` parts.
///
/// ```
/// let r = happen_nats::wire::parse_pressure_report("high;queued=80;limit=100;seq=3;replica=x");
/// assert!(r.pressure.under_pressure);
/// assert_eq!((r.pressure.queued, r.seq, r.replica.as_deref()), (80, Some(3), Some("x")));
/// ```
pub fn parse_pressure_report(value: &str) -> PressureReport {
    let mut parts = value.split(';');
    let high = parts.next().map(str::trim) == Some("high");
    let (mut queued, mut limit, mut seq, mut replica) = (0, 0, None, None);
    for part in parts {
        match part.trim().split_once('=') {
            Some(("queued", n)) => queued = n.parse().unwrap_or(0),
            Some(("limit", n)) => limit = n.parse().unwrap_or(0),
            Some(("seq", n)) => seq = n.parse().ok(),
            Some(("replica", r)) if !r.is_empty() => replica = Some(r.to_owned()),
            _ => {}
        }
    }
    PressureReport {
        pressure: happen::transport::pressure(high, queued, limit),
        seq,
        replica,
    }
}

/// A node's admission limits as it tells them to remote senders (`Happen-Limits`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RemoteLimits {
    /// Flows the node runs at once.
    pub max_concurrent: usize,
    /// Events that may wait beyond `max_concurrent`.
    pub queue_limit: usize,
    /// Waiting events at which the node turns "under pressure".
    pub high_water: usize,
}

impl RemoteLimits {
    /// Limits from their parts.
    pub fn new(max_concurrent: usize, queue_limit: usize, high_water: usize) -> RemoteLimits {
        RemoteLimits {
            max_concurrent,
            queue_limit,
            high_water,
        }
    }

    /// The limits of a node: its high-water mark is `backpressure_threshold × queue_limit`
    /// rounded up, at least 1 and at most `queue_limit` (as documented for
    /// [`happen::Pressure`]).
    pub fn of(limits: &happen::Limits) -> RemoteLimits {
        let q = limits.queue_limit;
        let high = (limits.backpressure_threshold * q as f64).ceil() as usize;
        RemoteLimits::new(limits.max_concurrent, q, high.min(q).max(1))
    }
}

/// The `Happen-Limits` header value.
pub fn limits_header(l: &RemoteLimits) -> String {
    format!(
        "concurrent={};queue={};high={}",
        l.max_concurrent, l.queue_limit, l.high_water
    )
}

/// Parses a `Happen-Limits` header value; `None` unless all three parts are present.
///
/// ```
/// use happen_nats::wire::{RemoteLimits, parse_limits};
/// assert_eq!(parse_limits("concurrent=4;queue=100;high=80"), Some(RemoteLimits::new(4, 100, 80)));
/// assert_eq!(parse_limits("concurrent=4"), None);
/// ```
pub fn parse_limits(value: &str) -> Option<RemoteLimits> {
    let (mut c, mut q, mut h) = (None, None, None);
    for part in value.split(';') {
        match part.trim().split_once('=') {
            Some(("concurrent", n)) => c = n.trim().parse().ok(),
            Some(("queue", n)) => q = n.trim().parse().ok(),
            Some(("high", n)) => h = n.trim().parse().ok(),
            _ => {}
        }
    }
    Some(RemoteLimits::new(c?, q?, h?))
}

/// A decoded reply message (the first message on a request's reply subject).
#[derive(Debug)]
pub enum ReplyFrame {
    /// The flow's final value.
    Value(Value),
    /// The flow (or the admission) failed.
    Error(Error),
    /// The flow streams; credit and cancel go to `control`.
    Stream {
        /// The producer's control subject.
        control: String,
    },
}

fn parse_json(payload: &[u8], what: &str) -> happen::Result<Value> {
    if payload.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_slice(payload).map_err(|e| {
        Error::new(
            ErrorKind::Transport,
            format!("malformed {what} from the remote node (not JSON): {e}"),
        )
    })
}

/// Decodes a reply message.
///
/// # Errors
/// [`ErrorKind::Transport`] for an unknown status, a stream start without a control subject, or
/// a body that is not JSON.
pub fn decode_reply(headers: Option<&HeaderMap>, payload: &[u8]) -> happen::Result<ReplyFrame> {
    let status = headers.and_then(|h| get(h, header::STATUS));
    match status.map(str::trim) {
        None | Some("ok") => parse_json(payload, "reply").map(ReplyFrame::Value),
        Some("error") => Ok(ReplyFrame::Error(decode_error(
            headers.expect("status came from headers"),
            payload,
        ))),
        Some("stream") => match headers.and_then(|h| get(h, header::CONTROL)) {
            Some(c) if !c.trim().is_empty() => Ok(ReplyFrame::Stream {
                control: c.trim().to_owned(),
            }),
            _ => Err(Error::new(
                ErrorKind::Transport,
                "stream start without a `Happen-Control` subject from the remote node",
            )),
        },
        Some(other) => Err(Error::new(
            ErrorKind::Transport,
            format!("unknown `Happen-Status` `{other}` in a reply"),
        )),
    }
}

/// A frame of a stream, in either direction.
#[derive(Debug)]
pub enum Frame {
    /// One item (producer to consumer).
    Item(Value),
    /// The end with the final value (producer to consumer).
    End(Value),
    /// The end with an error (producer to consumer).
    Error(Error),
    /// More credit (consumer to producer).
    Credit(u64),
    /// The consumer went away (consumer to producer).
    Cancel,
}

impl Frame {
    /// The `Happen-Frame` name.
    pub fn name(&self) -> &'static str {
        match self {
            Frame::Item(_) => "item",
            Frame::End(_) => "end",
            Frame::Error(_) => "error",
            Frame::Credit(_) => "credit",
            Frame::Cancel => "cancel",
        }
    }
}

/// Decodes a stream frame.
///
/// # Errors
/// [`ErrorKind::Transport`] for a missing or unknown frame kind, bad credit, or a body that is
/// not JSON.
pub fn decode_frame(headers: Option<&HeaderMap>, payload: &[u8]) -> happen::Result<Frame> {
    let kind = headers.and_then(|h| get(h, header::FRAME)).map(str::trim);
    match kind {
        Some("item") => parse_json(payload, "stream item").map(Frame::Item),
        Some("end") => parse_json(payload, "stream end").map(Frame::End),
        Some("error") => Ok(Frame::Error(decode_error(
            headers.expect("kind came from headers"),
            payload,
        ))),
        Some("credit") => headers
            .and_then(|h| get(h, header::CREDIT))
            .and_then(|c| c.trim().parse::<u64>().ok())
            .map(Frame::Credit)
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Transport,
                    "credit frame without a valid `Happen-Credit` count",
                )
            }),
        Some("cancel") => Ok(Frame::Cancel),
        Some(other) => Err(Error::new(
            ErrorKind::Transport,
            format!("unknown stream frame kind `{other}`"),
        )),
        None => Err(Error::new(
            ErrorKind::Transport,
            "stream message without a `Happen-Frame` header",
        )),
    }
}

/// The headers and body of an `error` frame (see [`encode_error`]), kept within `max_bytes`
/// with `room` bytes to spare for headers added later.
pub fn error_frame(err: &Error, max_bytes: usize, room: usize) -> (HeaderMap, Bytes) {
    let mut h = HeaderMap::new();
    h.insert(header::FRAME, "error");
    let body = encode_error(err, &mut h, max_bytes, room);
    (h, body)
}

/// Headers of a frame (the body is the JSON value for `item` and `end`, the JSON error body
/// for `error` (see [`error_frame`], which also makes that body), empty otherwise).
pub fn frame_headers(frame: &Frame) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(header::FRAME, frame.name());
    match frame {
        Frame::Error(e) => error_headers(e, &mut h),
        Frame::Credit(n) => h.insert(header::CREDIT, n.to_string().as_str()),
        _ => {}
    }
    h
}

/// An error rebuilt from the parts that crossed the wire.
pub(crate) fn error_from_parts(
    kind: ErrorKind,
    message: impl Into<String>,
    node: Option<NodeId>,
    event_id: Option<happen::EventId>,
    limit: Option<usize>,
) -> Error {
    let mut parts = happen::transport::ErrorParts::new(kind, message);
    parts.node = node;
    parts.event_id = event_id;
    parts.limit = limit;
    parts.into_error()
}

/// `outer` with `inner` as the downstream error it wraps.
pub(crate) fn with_downstream(outer: Error, inner: Error) -> Error {
    let mut parts = happen::transport::ErrorParts::of(&outer);
    parts.downstream = Some(inner);
    parts.into_error()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_type_is_read_from_the_start_of_our_bodies() {
        let body = encode_event(&Event::new(
            "order.created",
            serde_json::json!({"type": "x"}),
        ))
        .unwrap();
        assert_eq!(peek_type(&body), Some("order.created"));
        assert_eq!(peek_type(br#"{"type":"a\"b","payload":1}"#), None);
        assert_eq!(peek_type(br#"{"type":"unterminated"#), None);
        assert_eq!(peek_type(br#" {"type":"a"}"#), None);
        assert_eq!(peek_type(br#"{"type": "a"}"#), None);
        assert_eq!(peek_type(br#"{"type":"","payload":1}"#), Some(""));
        assert_eq!(peek_type("{\"type\":\"ünï\"}".as_bytes()), Some("ünï"));
    }

    #[test]
    fn escape_round_trips() {
        for s in ["", "plain", "a%b", "line\nbreak\r\n", "%0A literal", "100%"] {
            assert_eq!(unescape(&escape(s)), s);
            assert!(!escape(s).contains(['\r', '\n']));
        }
    }

    #[test]
    fn pressure_header_round_trips() {
        let p = happen::transport::pressure(true, 80, 100);
        let h = pressure_header(&p).unwrap();
        assert_eq!(parse_pressure(Some(&h)), p);
        assert!(!parse_pressure(None).under_pressure);
        assert!(pressure_header(&happen::transport::pressure(false, 1, 2)).is_none());
    }

    #[test]
    fn errors_round_trip_through_headers() {
        let e = crate::wire::error_from_parts(
            ErrorKind::QueueFull,
            "full\nreally",
            Some(NodeId::from("n")),
            None,
            Some(7),
        );
        let mut h = HeaderMap::new();
        error_headers(&e, &mut h);
        let back = error_from_headers(&h);
        assert_eq!(back.kind(), ErrorKind::QueueFull);
        assert_eq!(back.message(), "full\nreally");
        assert_eq!(back.node().map(|n| n.as_str()), Some("n"));
        assert_eq!(back.limit(), Some(7));
    }

    /// `(kind, message, node, event, limit, code)` of every error of a chain, outermost first.
    type Hop = (
        ErrorKind,
        String,
        Option<String>,
        Option<String>,
        Option<usize>,
        Option<String>,
    );

    fn hops(err: &Error) -> Vec<Hop> {
        let mut out = Vec::new();
        let mut e = Some(err);
        while let Some(err) = e {
            out.push((
                err.kind(),
                err.message().to_owned(),
                err.node().map(|n| n.to_string()),
                err.event_id().map(|e| e.to_string()),
                err.limit(),
                err.code().map(str::to_owned),
            ));
            e = err.downstream();
        }
        out
    }

    /// `depth` errors: each `Downstream` at node `n<i>`, the last a coded handler error.
    fn chain(depth: usize) -> Error {
        let mut e = crate::wire::error_from_parts(
            ErrorKind::Handler,
            "refund window closed\n100% sure",
            Some(NodeId::from("payments")),
            Some(happen::EventId::parse("evt-last")),
            None,
        )
        .with_code("refund_closed");
        for i in (0..depth - 1).rev() {
            e = with_downstream(
                crate::wire::error_from_parts(
                    ErrorKind::Downstream,
                    format!("hop {i} failed"),
                    Some(NodeId::from(format!("n{i}"))),
                    Some(happen::EventId::parse(&format!("evt-{i}"))),
                    None,
                ),
                e,
            );
        }
        e
    }

    fn round_trip(err: &Error, max_bytes: usize) -> (HeaderMap, Bytes, Error) {
        let mut h = HeaderMap::new();
        h.insert(header::STATUS, "error");
        let body = encode_error(err, &mut h, max_bytes, 0);
        let back = decode_error(&h, &body);
        (h, body, back)
    }

    #[test]
    fn error_chains_round_trip_through_the_body() {
        for depth in [1, 2, 3, MAX_ERROR_DEPTH] {
            let err = chain(depth);
            let (_, body, back) = round_trip(&err, 1 << 20);
            assert_eq!(hops(&back), hops(&err), "depth {depth}");
            assert_eq!(back.origin().code(), Some("refund_closed"));
            let json: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(json["error"]["kind"], err.kind().as_str());
        }
        let full = crate::wire::error_from_parts(
            ErrorKind::QueueFull,
            "full",
            Some(NodeId::from("busy")),
            None,
            Some(7),
        );
        let (_, _, back) = round_trip(&full, 1 << 20);
        assert_eq!(hops(&back), hops(&full));
    }

    #[test]
    fn a_long_chain_keeps_its_first_hops_and_its_origin() {
        let err = chain(MAX_ERROR_DEPTH + 4);
        let (_, body, back) = round_trip(&err, 1 << 20);
        let (sent, got) = (hops(&err), hops(&back));
        assert_eq!(got.len(), MAX_ERROR_DEPTH);
        assert_eq!(got[..MAX_ERROR_DEPTH - 2], sent[..MAX_ERROR_DEPTH - 2]);
        let gap = &got[MAX_ERROR_DEPTH - 2];
        assert_eq!(gap.2, sent[MAX_ERROR_DEPTH - 2].2);
        assert!(gap.1.starts_with("hop 14 failed ("), "{}", gap.1);
        assert!(gap.1.contains("4 more errors"), "{}", gap.1);
        assert_eq!(got.last(), sent.last());
        let json: Value = serde_json::from_slice(&body).unwrap();
        let mut e = &json["error"];
        for _ in 0..MAX_ERROR_DEPTH - 2 {
            e = &e["downstream"];
        }
        assert_eq!(e["omitted"], 4);
    }

    #[test]
    fn an_older_happens_reply_decodes_from_its_headers() {
        // what happen-nats wrote before error bodies: headers only, empty body
        let mut h = HeaderMap::new();
        h.insert(header::STATUS, "error");
        h.insert(header::ERROR_KIND, "queue_full");
        h.insert(header::ERROR_MESSAGE, "full%0Areally");
        h.insert(header::ERROR_NODE, "busy");
        h.insert(header::ERROR_LIMIT, "7");
        for body in [&b""[..], b"null", b"{\"error\": 1}", b"not json"] {
            let Ok(ReplyFrame::Error(e)) = decode_reply(Some(&h), body) else {
                panic!("not an error")
            };
            assert_eq!(e.kind(), ErrorKind::QueueFull);
            assert_eq!(e.message(), "full\nreally");
            assert_eq!(e.node().map(|n| n.as_str()), Some("busy"));
            assert_eq!(e.limit(), Some(7));
            assert!(e.downstream().is_none() && e.code().is_none());
        }
        // an unknown kind, in the body or the headers, is a transport error
        h.insert(header::ERROR_KIND, "from_the_future");
        assert_eq!(decode_error(&h, b"").kind(), ErrorKind::Transport);
        let body = br#"{"error": {"kind": "from_the_future", "message": "m"}}"#;
        let e = decode_error(&h, body);
        assert_eq!(e.kind(), ErrorKind::Transport);
        assert!(e.message().contains("from_the_future"), "{e}");
    }

    #[test]
    fn headers_carry_the_outermost_error_with_its_code() {
        let err = chain(3);
        let (h, _, _) = round_trip(&err, 1 << 20);
        let top = error_from_headers(&h);
        assert_eq!(hops(&top)[..], hops(&err)[..1]);
        let (h, _, _) = round_trip(&chain(1), 1 << 20);
        assert_eq!(error_from_headers(&h).code(), Some("refund_closed"));
    }

    #[test]
    fn only_headers_make_a_reply_an_error() {
        let body = br#"{"error": {"kind": "handler", "message": "not really"}}"#;
        assert!(matches!(
            decode_reply(None, body),
            Ok(ReplyFrame::Value(v)) if v["error"]["message"] == "not really"
        ));
        let mut h = HeaderMap::new();
        h.insert(header::FRAME, "end");
        assert!(matches!(decode_frame(Some(&h), body), Ok(Frame::End(_))));
    }

    #[test]
    fn an_error_too_big_for_one_message_is_cut_to_fit() {
        let huge = "x".repeat(100_000);
        let err = with_downstream(
            Error::new(ErrorKind::Handler, huge.clone()),
            Error::new(ErrorKind::Timeout, huge),
        );
        let max = 8 * 1024;
        let (h, body, back) = round_trip(&err, max);
        assert!(headers_len(&h) + body.len() <= max);
        assert!(!body.is_empty());
        for e in [&back, back.origin()] {
            assert!(
                e.message().len() < 2 * CUT_MESSAGE_AT,
                "{}",
                e.message().len()
            );
            assert!(e.message().contains("did not fit"), "{}", e.message());
        }
        assert_eq!(back.origin().kind(), ErrorKind::Timeout);
        // with no room for a body at all, the headers still say what it was
        let (h, body, back) = round_trip(&err, 1_500);
        assert!(body.is_empty());
        assert!(headers_len(&h) <= 1_500);
        assert_eq!(back.kind(), ErrorKind::Handler);
    }

    #[test]
    fn headers_len_is_what_nats_counts() {
        let mut h = HeaderMap::new();
        h.insert(header::STATUS, "error");
        h.insert(header::ERROR_KIND, "handler");
        // "NATS/1.0\r\n" + "Happen-Status: error\r\n" + "Happen-Error-Kind: handler\r\n" + "\r\n"
        assert_eq!(headers_len(&h), 10 + 22 + 28 + 2);
    }
}
