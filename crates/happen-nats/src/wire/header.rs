//! Names of the NATS headers this transport adds, and how their values are escaped. Absent
//! headers mean the reference behaviour (a reply without `Happen-Status` is a successful final
//! value).
//!
//! The names are `HeaderName`s made at compile time: a name given as `&str` is checked and
//! copied by async-nats on every `get` and `insert` (several hundred instructions per request).

use async_nats::HeaderMap;
use async_nats::header::{HeaderName, HeaderValue};

/// On replies: `error` (details in the `Happen-Error-*` headers and the JSON error body,
/// see [`encode_error`](super::encode_error)) or `stream` (a stream starts; see
/// [`CONTROL`]). Absent: the body is the raw JSON final value.
pub(crate) const STATUS: HeaderName = HeaderName::from_static("Happen-Status");
/// The [`ErrorKind`](happen::ErrorKind) name, e.g. `queue_full`.
pub(crate) const ERROR_KIND: HeaderName = HeaderName::from_static("Happen-Error-Kind");
/// The error message (percent-escaped: `%`, CR and LF).
pub(crate) const ERROR_MESSAGE: HeaderName = HeaderName::from_static("Happen-Error-Message");
/// The node the error concerns.
pub(crate) const ERROR_NODE: HeaderName = HeaderName::from_static("Happen-Error-Node");
/// The event the error concerns.
pub(crate) const ERROR_EVENT: HeaderName = HeaderName::from_static("Happen-Error-Event");
/// The limit that was hit (`queue_full`, `chain_too_deep`).
pub(crate) const ERROR_LIMIT: HeaderName = HeaderName::from_static("Happen-Error-Limit");
/// The application's error code ([`happen::Error::code`]), percent-escaped.
pub(crate) const ERROR_CODE: HeaderName = HeaderName::from_static("Happen-Error-Code");
/// On requests: the requester understands streams and grants this initial credit.
pub(crate) const STREAM: HeaderName = HeaderName::from_static("Happen-Stream");
/// On a stream start: the subject to which the consumer sends `credit` and `cancel`.
pub(crate) const CONTROL: HeaderName = HeaderName::from_static("Happen-Control");
/// The kind of a stream frame: `item`, `end`, `error` (producer to consumer) or `credit`,
/// `cancel` (consumer to producer); `accepted` (a replica names itself to a requester still
/// waiting, see [`TRACK`]).
pub(crate) const FRAME: HeaderName = HeaderName::from_static("Happen-Frame");
/// On `credit` frames: how many more items the producer may send.
pub(crate) const CREDIT: HeaderName = HeaderName::from_static("Happen-Credit");
/// On replies from a node under backpressure:
/// `high;queued=<n>;limit=<n>[;seq=<n>;replica=<id>]`. Absent: says nothing (see
/// `WIRE.md`, "Pacing").
pub(crate) const PRESSURE: HeaderName = HeaderName::from_static("Happen-Pressure");
/// On a request with an empty body: a question to the serving process instead of an event.
/// `limits` asks for the node's admission limits, answered with [`LIMITS`].
pub(crate) const QUERY: HeaderName = HeaderName::from_static("Happen-Query");
/// The answer to `Happen-Query: limits`: `concurrent=<n>;queue=<n>;high=<n>`.
pub(crate) const LIMITS: HeaderName = HeaderName::from_static("Happen-Limits");
/// On requests: the requester understands `accepted` frames (`Happen-Frame: accepted` with
/// [`REPLICA`], no body), which tie the request to the replica holding it (see `WIRE.md`,
/// "Liveness").
pub(crate) const TRACK: HeaderName = HeaderName::from_static("Happen-Track");
/// The `Happen-Frame` value that names the replica holding a request (see [`TRACK`]).
pub(crate) const ACCEPTED: &str = "accepted";
/// On the `node.pressure` reports published on `<prefix>.pressure.<id>`: which process
/// (replica) sent it, so reports of one replica are ordered by their `seq`.
pub(crate) const REPLICA: HeaderName = HeaderName::from_static("Happen-Replica");
/// On broadcast stream frames: the frame's sequence number (items from 1; the `end` or
/// `error` frame takes the next number). A jump is reported to subscribers as lag.
pub(crate) const SEQ: HeaderName = HeaderName::from_static("Happen-Seq");

/// The requester's reply subject of a durable `send` (absent for a `tell`).
pub(crate) const REPLY_TO: HeaderName = HeaderName::from_static("Happen-Reply-To");
/// On a dead letter: the node id that gave up on the event.
pub(crate) const DEAD_NODE: HeaderName = HeaderName::from_static("Happen-Dead-Node");
/// On a dead letter: how many times the event was delivered.
pub(crate) const DELIVERIES: HeaderName = HeaderName::from_static("Happen-Deliveries");
/// JetStream's message id header (the event id).
pub(crate) const MSG_ID: HeaderName = HeaderName::from_static("Nats-Msg-Id");

/// Escapes a header value: `%`, CR and LF become `%25`, `%0D`, `%0A`.
pub(crate) fn escape(s: &str) -> String {
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
pub(crate) fn unescape(s: &str) -> String {
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

pub(crate) fn value(s: &str) -> HeaderValue {
    // `escape` removes the only characters `HeaderValue` rejects
    HeaderValue::from(escape(s))
}

/// The value of header `name`, if present.
pub(crate) fn get(headers: &HeaderMap, name: HeaderName) -> Option<&str> {
    headers.get(name).map(|v| v.as_str())
}

/// The headers a message on a node subject may carry, read in one pass over its map: each
/// `HeaderMap::get` hashes the name with SipHash (~330 instructions), and a request was looked
/// up four times. Each field is the first value, as `HeaderMap::get` gives it.
#[derive(Default, Debug, PartialEq)]
pub(crate) struct NodeHeaders<'a> {
    /// [`QUERY`]
    pub(crate) query: Option<&'a str>,
    /// [`FRAME`]
    pub(crate) frame: Option<&'a str>,
    /// [`STREAM`]
    pub(crate) stream: Option<&'a str>,
    /// [`TRACK`] is present.
    pub(crate) track: bool,
}

impl NodeHeaders<'_> {
    /// Reads `headers` (none: every field empty).
    pub(crate) fn read(headers: Option<&HeaderMap>) -> NodeHeaders<'_> {
        let mut found = NodeHeaders::default();
        let Some(headers) = headers else {
            return found;
        };
        for (name, values) in headers.iter() {
            let Some(value) = values.first().map(HeaderValue::as_str) else {
                continue;
            };
            if *name == QUERY {
                found.query = Some(value);
            } else if *name == FRAME {
                found.frame = Some(value);
            } else if *name == STREAM {
                found.stream = Some(value);
            } else if *name == TRACK {
                found.track = true;
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One pass reads what a lookup per name would, first values included.
    #[test]
    fn node_headers_read_as_lookups_would() {
        fn lookups(h: &HeaderMap) -> NodeHeaders<'_> {
            NodeHeaders {
                query: get(h, QUERY),
                frame: get(h, FRAME),
                stream: get(h, STREAM),
                track: h.get(TRACK).is_some(),
            }
        }
        let mut request = HeaderMap::new();
        request.insert(STREAM, "256");
        request.insert(TRACK, "1");
        request.insert("X-Other", "x");
        let mut twice = HeaderMap::new();
        twice.append(QUERY, "limits");
        twice.append(QUERY, "drain");
        twice.insert(FRAME, "item");
        twice.insert("happen-stream", "lower case is another name");
        for h in [HeaderMap::new(), request, twice] {
            assert_eq!(NodeHeaders::read(Some(&h)), lookups(&h), "{h:?}");
        }
        assert_eq!(NodeHeaders::read(None), NodeHeaders::default());
        let mut q = HeaderMap::new();
        q.append(QUERY, "limits");
        q.append(QUERY, "drain");
        assert_eq!(NodeHeaders::read(Some(&q)).query, Some("limits"));
    }

    #[test]
    fn escape_round_trips() {
        for s in ["", "plain", "a%b", "line\nbreak\r\n", "%0A literal", "100%"] {
            assert_eq!(unescape(&escape(s)), s);
            assert!(!escape(s).contains(['\r', '\n']));
        }
    }
}
