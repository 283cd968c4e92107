//! Exit codes: one per error kind, so scripts can tell "no such node" from "timeout".

use happen::{Error, ErrorKind};

/// Any failure without a code of its own.
pub(crate) const OTHER: u8 = 1;

/// The exit codes, as `happen --help` shows them.
pub(crate) const HELP: &str = "\
Exit codes:
   0  success
   1  any other failure
   2  bad usage (unknown flag, missing argument)
  10  unknown_node     no process serves the node
  11  no_handler       the node has no handler for the event type
  12  handler          the handler returned an error
  13  panic            the handler panicked
  14  timeout          no reply within --timeout
  15  queue_full       the node's queue is full
  16  shut_down        the node or its process is shutting down
  17  cancelled        the flow was cancelled
  18  chain_too_deep   the flow went deeper than flow.max_chain_depth
  19  invalid_event    the event was refused as invalid
  20  invalid_payload  a payload is not valid JSON or not what the handler takes
  21  downstream       a call the flow made failed (the message names where)
  22  invalid_pattern  the tap pattern cannot be parsed
  23  invalid_config   a flag or file is not usable
  30  transport        the nats server is unreachable or the connection was lost
  31  auth             the nats server refused the credentials
  32  tls              the TLS connection could not be set up

Environment: HAPPEN_NATS_URL, HAPPEN_NATS_PREFIX, HAPPEN_NATS_USER, HAPPEN_NATS_PASSWORD,
HAPPEN_NATS_TOKEN, HAPPEN_NATS_NKEY, HAPPEN_NATS_CREDS, HAPPEN_NATS_CA, HAPPEN_NATS_CERT,
HAPPEN_NATS_KEY stand for the flags of the same name.";

/// The exit code of an error's kind.
pub(crate) fn code(e: &Error) -> u8 {
    match e.kind() {
        ErrorKind::UnknownNode => 10,
        ErrorKind::NoHandler => 11,
        ErrorKind::Handler => 12,
        ErrorKind::Panic => 13,
        ErrorKind::Timeout => 14,
        ErrorKind::QueueFull => 15,
        ErrorKind::ShutDown => 16,
        ErrorKind::Cancelled => 17,
        ErrorKind::ChainTooDeep => 18,
        ErrorKind::InvalidEvent => 19,
        ErrorKind::InvalidPayload => 20,
        ErrorKind::Downstream => 21,
        ErrorKind::InvalidPattern => 22,
        ErrorKind::InvalidConfig => 23,
        ErrorKind::Transport => 30,
        ErrorKind::Auth => 31,
        ErrorKind::Tls => 32,
        _ => OTHER,
    }
}

/// `error: <kind>: <message>` on one line (line breaks in the message become spaces); a
/// downstream error names where it started.
pub(crate) fn one_line(e: &Error) -> String {
    let mut line = format!("error: {}: {}", e.kind().as_str(), e.message());
    // a downstream error's code is its origin's
    if let Some(code) = e.code().or(e.origin().code()) {
        line.push_str(&format!(" (code {code})"));
    }
    if e.kind() == ErrorKind::Downstream {
        let origin = e.origin();
        if !std::ptr::eq(origin, e) && !e.message().contains(origin.message()) {
            line.push_str(&format!(
                "; origin: {} at {}: {}",
                origin.kind().as_str(),
                origin.node().map_or("?", |n| n.as_str()),
                origin.message()
            ));
        }
    }
    // the library's advice names its API; here the flag is the way
    line.replace(['\r', '\n'], " ").replace(
        "raise the timeout with `.timeout(..)`",
        "raise it with --timeout",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_code_is_distinct_and_matches_its_kind() {
        let kinds = [
            ErrorKind::UnknownNode,
            ErrorKind::NoHandler,
            ErrorKind::Handler,
            ErrorKind::Panic,
            ErrorKind::Timeout,
            ErrorKind::QueueFull,
            ErrorKind::ShutDown,
            ErrorKind::Cancelled,
            ErrorKind::ChainTooDeep,
            ErrorKind::InvalidEvent,
            ErrorKind::InvalidPayload,
            ErrorKind::Downstream,
            ErrorKind::InvalidPattern,
            ErrorKind::InvalidConfig,
            ErrorKind::Transport,
            ErrorKind::Auth,
            ErrorKind::Tls,
        ];
        let mut seen = std::collections::HashSet::new();
        for kind in kinds {
            let c = code(&Error::new(kind, "x"));
            assert!(c >= 10, "{kind:?} has a code of its own");
            assert!(seen.insert(c), "{kind:?}: code {c} used twice");
            let line = format!("{c:>4}  {}", kind.as_str());
            assert!(HELP.contains(&line), "help lacks `{line}`");
        }
    }

    #[test]
    fn a_timeout_names_the_flag() {
        let e = Error::new(
            ErrorKind::Timeout,
            "no reply within 5ms; raise the timeout with `.timeout(..)` or check the target node",
        );
        assert_eq!(
            one_line(&e),
            "error: timeout: no reply within 5ms; raise it with --timeout or check the target node"
        );
    }

    #[test]
    fn one_line_flattens_the_message() {
        let e = Error::new(ErrorKind::Handler, "bad\ninput").with_code("E1");
        assert_eq!(one_line(&e), "error: handler: bad input (code E1)");
    }
}
