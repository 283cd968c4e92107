//! The wire format: subjects, header names, and the encoders and decoders of every message this
//! transport publishes or accepts. `WIRE.md` (public as [`crate::wire_format`]) is the
//! normative description.
//!
//! Everything here is pure (no I/O) and total: decoders return errors for any input, they never
//! panic, which property tests check. One file per kind of message: [`header`] (names and
//! value escaping), subjects, events, errors, replies and stream frames, pressure and limits,
//! and discovery answers ([`discover`]: its types are public, as `happen_nats::discover`).

pub(crate) mod completion;
pub(crate) mod discover;
pub(crate) mod header;

mod error;
mod event;
mod frame;
mod pressure;
mod subjects;

pub(crate) use error::{encode_error, error_from_parts, error_headers};
pub(crate) use event::{
    decode_durable_event, decode_event, encode_checked, encode_event, peek_type, value_body,
};
pub(crate) use frame::{Frame, ReplyFrame, decode_frame, decode_reply, error_frame, frame_headers};
pub(crate) use pressure::{
    PressureEvent, RemoteLimits, limits_header, parse_limits, parse_pressure_report,
    pressure_report_header,
};
pub(crate) use subjects::Subjects;

#[cfg(test)]
mod tests;
