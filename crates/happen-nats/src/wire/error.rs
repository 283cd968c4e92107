//! Errors on the wire: the `Happen-Error-*` headers and the JSON error body with the
//! downstream chain (see `WIRE.md`, "Error body").

use std::fmt::Write as _;

use async_nats::HeaderMap;
use bytes::Bytes;
use happen::{Error, ErrorKind, NodeId};

use super::header::{self, get, unescape, value};

/// The headers of an error reply or error frame: the error itself, not its downstream chain
/// (that is in the body, see [`encode_error`]).
pub(crate) fn error_headers(err: &Error, headers: &mut HeaderMap) {
    WireError::one(err).headers(headers);
}

/// Rebuilds an error from the `Happen-Error-*` headers (without a downstream chain: that is
/// only in the body). An unknown or missing kind becomes [`ErrorKind::Transport`] (the message
/// says so).
pub(crate) fn error_from_headers(headers: &HeaderMap) -> Error {
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
        Some(kind) => error_from_parts(kind, message, node, event, limit),
        None => error_from_parts(
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
pub(crate) const MAX_ERROR_DEPTH: usize = 16;

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
pub(crate) fn encode_error(
    err: &Error,
    headers: &mut HeaderMap,
    max_bytes: usize,
    room: usize,
) -> Bytes {
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
pub(crate) fn decode_error(headers: &HeaderMap, body: &[u8]) -> Error {
    if !body.is_empty()
        && let Ok(b) = serde_json::from_slice::<ErrorBody>(body)
    {
        return b.error.into_error();
    }
    error_from_headers(headers)
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
    use serde_json::Value;

    #[test]
    fn errors_round_trip_through_headers() {
        let e = error_from_parts(
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
        let mut e = error_from_parts(
            ErrorKind::Handler,
            "refund window closed\n100% sure",
            Some(NodeId::from("payments")),
            Some(happen::EventId::parse("evt-last")),
            None,
        )
        .with_code("refund_closed");
        for i in (0..depth - 1).rev() {
            e = with_downstream(
                error_from_parts(
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
        let full = error_from_parts(
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
    fn headers_carry_the_outermost_error_with_its_code() {
        let err = chain(3);
        let (h, _, _) = round_trip(&err, 1 << 20);
        let top = error_from_headers(&h);
        assert_eq!(hops(&top)[..], hops(&err)[..1]);
        let (h, _, _) = round_trip(&chain(1), 1 << 20);
        assert_eq!(error_from_headers(&h).code(), Some("refund_closed"));
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

    #[test]
    fn an_error_code_travels_in_the_body() {
        let err = Error::new(ErrorKind::Handler, "card declined").with_code("card_declined");
        let mut headers = HeaderMap::new();
        let body = encode_error(&err, &mut headers, 1 << 20, 0);
        let json: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["error"]["code"], "card_declined");
        let back = decode_error(&headers, &body);
        assert_eq!(
            (back.kind(), back.code()),
            (ErrorKind::Handler, Some("card_declined"))
        );
    }
}
