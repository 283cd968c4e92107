//! Replies and stream frames: what comes back on a request's reply subject, and the frames
//! of a stream in either direction.

use async_nats::HeaderMap;
use bytes::Bytes;
use happen::{Error, ErrorKind};
use serde_json::Value;

use super::error::{decode_error, encode_error, error_headers};
use super::header::{self, get};

/// A decoded reply message (the first message on a request's reply subject).
#[derive(Debug)]
pub(crate) enum ReplyFrame {
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
    super::event::from_json(payload).map_err(|e| {
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
pub(crate) fn decode_reply(
    headers: Option<&HeaderMap>,
    payload: &[u8],
) -> happen::Result<ReplyFrame> {
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
pub(crate) enum Frame {
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
    pub(crate) fn name(&self) -> &'static str {
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
pub(crate) fn decode_frame(headers: Option<&HeaderMap>, payload: &[u8]) -> happen::Result<Frame> {
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
pub(crate) fn error_frame(err: &Error, max_bytes: usize, room: usize) -> (HeaderMap, Bytes) {
    let mut h = HeaderMap::new();
    h.insert(header::FRAME, "error");
    let body = encode_error(err, &mut h, max_bytes, room);
    (h, body)
}

/// Headers of a frame (the body is the JSON value for `item` and `end`, the JSON error body
/// for `error` (see [`error_frame`], which also makes that body), empty otherwise).
pub(crate) fn frame_headers(frame: &Frame) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(header::FRAME, frame.name());
    match frame {
        Frame::Error(e) => error_headers(e, &mut h),
        Frame::Credit(n) => h.insert(header::CREDIT, n.to_string().as_str()),
        _ => {}
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
