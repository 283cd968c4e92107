//! Property tests: the decoders accept or reject any input, never panic; valid events round-trip.
//! (Moved from `tests/wire_decoder.rs` when the codec became private.)

use super::error::{decode_error, encode_error, error_from_headers};
use super::event::{decode_event, encode_event};
use super::frame::{decode_frame, decode_reply};
use super::header::{self, escape, unescape};
use super::pressure::{
    RemoteLimits, limits_header, parse_limits, parse_pressure_report, pressure_report_header,
};
use async_nats::HeaderMap;
use happen::Event;
use proptest::prelude::*;
use serde_json::json;

fn headers(pairs: &[(u8, String)]) -> HeaderMap {
    let names = [
        header::STATUS,
        header::FRAME,
        header::CREDIT,
        header::CONTROL,
        header::ERROR_KIND,
        header::ERROR_MESSAGE,
        header::ERROR_LIMIT,
        header::ERROR_NODE,
        header::ERROR_EVENT,
        header::ERROR_CODE,
        header::PRESSURE,
    ];
    let mut h = HeaderMap::new();
    for (i, v) in pairs {
        h.insert(names[*i as usize % names.len()].clone(), escape(v).as_str());
    }
    h
}

proptest! {
    #[test]
    fn decode_event_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512), max in 0usize..1024) {
        let _ = decode_event(&bytes, max);
    }

    #[test]
    fn json_shaped_input_never_panics(
        ty in proptest::option::of(".{0,12}"),
        payload in proptest::option::of(any::<i64>()),
        path in proptest::option::of(proptest::collection::vec(".{0,5}", 0..3)),
        ts in proptest::option::of(any::<i64>()),
        junk in any::<bool>(),
    ) {
        let mut v = json!({});
        if let Some(t) = ty { v["type"] = json!(t); }
        if let Some(p) = payload { v["payload"] = json!(p); }
        let mut causal = json!({});
        if let Some(p) = path { causal["path"] = json!(p); }
        if let Some(t) = ts { causal["timestamp"] = json!(t); }
        if junk { causal["id"] = json!(42); }
        v["context"] = json!({"causal": causal});
        let bytes = serde_json::to_vec(&v).unwrap();
        let _ = decode_event(&bytes, 1 << 20);
    }

    #[test]
    fn reply_and_frame_decoders_never_panic(
        pairs in proptest::collection::vec((any::<u8>(), ".{0,16}"), 0..5),
        body in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let h = headers(&pairs);
        let _ = decode_reply(Some(&h), &body);
        let _ = decode_reply(None, &body);
        let _ = decode_frame(Some(&h), &body);
        let _ = decode_frame(None, &body);
        let _ = error_from_headers(&h);
        let _ = decode_error(&h, &body);
        let _ = h.get(header::PRESSURE).map(|v| parse_pressure_report(v.as_str()));
    }

    #[test]
    fn error_bodies_of_any_shape_never_panic(
        kind in proptest::option::of(".{0,12}"),
        limit in proptest::option::of(any::<i64>()),
        omitted in proptest::option::of(any::<i64>()),
        depth in 0usize..40,
        wrong in any::<bool>(),
    ) {
        let mut e = json!({"message": "m"});
        for _ in 0..depth {
            let mut outer = json!({"kind": "downstream", "message": "hop"});
            outer["downstream"] = e;
            e = outer;
        }
        if let Some(k) = kind { e["kind"] = json!(k); }
        if let Some(l) = limit { e["limit"] = json!(l); }
        if let Some(o) = omitted { e["omitted"] = json!(o); }
        if wrong { e["code"] = json!(7); }
        let body = serde_json::to_vec(&json!({"error": e})).unwrap();
        let _ = decode_error(&HeaderMap::new(), &body);
    }

    #[test]
    fn errors_round_trip(
        message in ".{0,40}",
        code in proptest::option::of(".{0,12}"),
        node in proptest::option::of("[a-z]{1,8}(\\.[a-z]{1,4})?"),
        depth in 1usize..24,
    ) {
        let mut parts = happen::transport::ErrorParts::new(happen::ErrorKind::Handler, message.clone());
        parts.node = node.clone().map(happen::NodeId::from);
        parts.code = code.clone();
        let mut err = parts.into_error();
        for i in 1..depth {
            let mut hop = happen::transport::ErrorParts::new(happen::ErrorKind::Downstream, format!("hop {i}"));
            hop.downstream = Some(err);
            err = hop.into_error();
        }
        let mut h = HeaderMap::new();
        let body = encode_error(&err, &mut h, 1 << 20, 0);
        let back = decode_error(&h, &body);
        prop_assert_eq!(back.kind(), err.kind());
        let origin = back.origin();
        prop_assert_eq!(origin.kind(), happen::ErrorKind::Handler);
        prop_assert_eq!(origin.message(), message.as_str());
        prop_assert_eq!(origin.code(), code.as_deref());
        prop_assert_eq!(origin.node().map(|n| n.to_string()), node);
        // from the headers alone (an older happen reads only those): the outermost error
        let top = error_from_headers(&h);
        prop_assert_eq!(top.kind(), err.kind());
        prop_assert_eq!(top.message(), err.message());
    }

    #[test]
    fn pressure_and_limits_parsers_never_panic(value in ".{0,64}") {
        let _ = parse_pressure_report(&value);
        let _ = parse_limits(&value);
    }

    #[test]
    fn limits_and_pressure_reports_round_trip(
        c in 1usize..10_000, q in 1usize..100_000, queued in 0usize..100_000, seq in any::<u64>(),
    ) {
        let l = RemoteLimits::new(c, q, q / 2 + 1);
        prop_assert_eq!(parse_limits(&limits_header(&l)), Some(l));
        let p = happen::transport::pressure(true, queued, q);
        let r = parse_pressure_report(&pressure_report_header(&p, seq, "r1").unwrap());
        prop_assert_eq!(r.pressure, p);
        prop_assert_eq!(r.seq, Some(seq));
        prop_assert_eq!(r.replica.as_deref(), Some("r1"));
    }

    #[test]
    fn events_round_trip(ty in "[a-z]{1,8}(\\.[a-z]{1,8}){0,2}", n in any::<i64>(), s in ".{0,20}") {
        let e = Event::new(ty.clone(), json!({"n": n, "s": s}));
        let bytes = encode_event(&e);
        let back = decode_event(&bytes, 1 << 20).unwrap();
        prop_assert_eq!(back.event_type(), ty.as_str());
        prop_assert_eq!(back.payload(), e.payload());
    }

    #[test]
    fn escape_round_trips(s in ".{0,40}") {
        let esc = escape(&s);
        prop_assert!(!esc.contains(['\r', '\n']));
        prop_assert_eq!(unescape(&esc), s);
    }
}
