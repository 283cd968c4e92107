//! Events on the wire: the reference JSON form, and JSON values as message bodies.

use bytes::Bytes;
use happen::{Error, ErrorKind, Event};

/// Serializes an event in the reference JSON form.
pub(crate) fn encode_event(event: &Event) -> Bytes {
    // an event's context alone is ~250 bytes: start there instead of growing from empty
    let mut buf = Vec::with_capacity(512);
    happen::transport::write_event(event, &mut buf);
    Bytes::from(buf)
}

/// Reads JSON from a message body: the whole body checked as UTF-8 once (word at a time),
/// then parsed as a `str`, which spares serde_json checking each string as it reads it
/// (measured: about 1,200 instructions of a 340-byte event's 7,000).
pub(crate) fn from_json<'a, T: serde::Deserialize<'a>>(body: &'a [u8]) -> serde_json::Result<T> {
    match std::str::from_utf8(body) {
        Ok(s) => serde_json::from_str(s),
        // serde_json says where the bad byte is
        Err(_) => serde_json::from_slice(body),
    }
}

/// The event type at the very start of a body, without decoding it: the body must begin
/// with `{"type":"` and the type must have no escapes (as [`encode_event`] writes it). `None`
/// otherwise (then only decoding tells). Used to skip broadcasts a node has no handler for
/// (see `WIRE.md`, "Broadcasts").
pub(crate) fn peek_type(body: &[u8]) -> Option<&str> {
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
pub(crate) fn decode_event(payload: &[u8], max_bytes: usize) -> happen::Result<Event> {
    decode_from(payload, max_bytes, false)
}

/// [`decode_event`] for a durable (JetStream) delivery: its redeliveries are not replays.
pub(crate) fn decode_durable_event(payload: &[u8], max_bytes: usize) -> happen::Result<Event> {
    decode_from(payload, max_bytes, true)
}

/// Decodes and marks the event as received from `payload`, so a receiving node's security
/// gate verifies a signature against these bytes (`happen::transport::received`).
fn decode_from(payload: &[u8], max_bytes: usize, durable: bool) -> happen::Result<Event> {
    if payload.len() > max_bytes {
        return Err(Error::new(
            ErrorKind::InvalidEvent,
            format!(
                "message of {} bytes exceeds the limit of {max_bytes} bytes (transport.nats.max_message_bytes)",
                payload.len()
            ),
        ));
    }
    let mut event = from_json::<Event>(payload).map_err(|e| {
        Error::new(
            ErrorKind::InvalidEvent,
            format!(
                "malformed happen event (expected {{\"type\", \"payload\", \"context\"}} JSON): {e}"
            ),
        )
    })?;
    happen::transport::received(&mut event, payload, durable);
    Ok(event)
}

/// Serializes an event as [`encode_event`] and checks it against `max_bytes` (the server's
/// `max_payload` or `transport.nats.max_message_bytes`).
///
/// # Errors
/// [`ErrorKind::InvalidEvent`] when the event is larger than `max_bytes` on the wire.
pub(crate) fn encode_checked(event: &Event, max_bytes: usize) -> happen::Result<Bytes> {
    let body = encode_event(event);
    if body.len() > max_bytes {
        return Err(Error::new(
            ErrorKind::InvalidEvent,
            format!(
                "event `{}` is {} bytes on the wire, over the limit of {} bytes (server max_payload / transport.nats.max_message_bytes); send less data per event",
                event.event_type(),
                body.len(),
                max_bytes
            ),
        ));
    }
    Ok(body)
}

/// A JSON value as a message body (a reply's final value, a stream item).
pub(crate) fn value_body(v: &serde_json::Value) -> Bytes {
    let mut buf = Vec::new();
    happen::transport::write_value(v, &mut buf);
    Bytes::from(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_type_is_read_from_the_start_of_our_bodies() {
        let body = encode_event(&Event::new(
            "order.created",
            serde_json::json!({"type": "x"}),
        ));
        assert_eq!(peek_type(&body), Some("order.created"));
        assert_eq!(peek_type(br#"{"type":"a\"b","payload":1}"#), None);
        assert_eq!(peek_type(br#"{"type":"unterminated"#), None);
        assert_eq!(peek_type(br#" {"type":"a"}"#), None);
        assert_eq!(peek_type(br#"{"type": "a"}"#), None);
        assert_eq!(peek_type(br#"{"type":"","payload":1}"#), Some(""));
        assert_eq!(peek_type("{\"type\":\"ünï\"}".as_bytes()), Some("ünï"));
    }

    #[test]
    fn events_decode_or_say_why_not() {
        let e = decode_event(br#"{"type":"ping","payload":1}"#, 1024).unwrap();
        assert_eq!(e.event_type(), "ping");
        assert_eq!(
            decode_event(b"{", 1024).unwrap_err().kind(),
            ErrorKind::InvalidEvent
        );
        let big = decode_event(br#"{"type":"ping","payload":1}"#, 8).unwrap_err();
        assert!(big.message().contains("max_message_bytes"), "{big}");
        assert_eq!(peek_type(br#"{"type":"tick","payload":1}"#), Some("tick"));
        assert_eq!(peek_type(br#"{"payload":1,"type":"tick"}"#), None);
    }

    #[test]
    fn an_event_over_the_limit_is_not_encoded() {
        let e = Event::new("big", "x".repeat(1000));
        assert!(encode_checked(&e, 1 << 20).is_ok());
        let err = encode_checked(&e, 100).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidEvent);
        assert!(
            err.message().contains("over the limit of 100 bytes"),
            "{err}"
        );
    }
}
