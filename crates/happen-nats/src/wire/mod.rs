//! The wire format: subjects, header names, and the encoders and decoders of every message this
//! transport publishes or accepts. `WIRE.md` (included below) is the normative description.
//!
//! Everything here is pure (no I/O) and total: decoders return errors for any input, they never
//! panic, which a property test checks. One file per kind of message: [`header`] (names and
//! value escaping), subjects, events, errors, replies and stream frames, pressure and limits.
#![doc = include_str!("../../WIRE.md")]

pub mod header;

pub(crate) mod discover;

mod error;
mod event;
mod frame;
mod pressure;
mod subjects;

pub use error::{MAX_ERROR_DEPTH, decode_error, encode_error, error_from_headers, error_headers};
pub use event::{decode_event, encode_checked, encode_event, peek_type, value_body};
pub use frame::{Frame, ReplyFrame, decode_frame, decode_reply, error_frame, frame_headers};
pub use header::{escape, unescape};
pub use pressure::{
    PressureEvent, PressureReport, RemoteLimits, limits_header, parse_limits, parse_pressure,
    parse_pressure_report, pressure_header, pressure_report_header,
};
pub use subjects::Subjects;
