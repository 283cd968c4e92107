//! Exit codes: one per error kind, so scripts can tell "no such node" from "timeout".

use happen::{Error, ErrorKind};

/// Any failure without a code of its own.
pub(crate) const OTHER: u8 = 1;

/// The codes that are not an error kind's.
const GENERAL: [(u8, &str); 3] = [
    (0, "success"),
    (OTHER, "any other failure"),
    (2, "bad usage (unknown flag, missing argument)"),
];

/// The exit code of an error kind. The numbers are stable: scripts test them. A kind the
/// library adds gets the next free number here (the test below fails until it has one).
pub(crate) fn code_of(kind: ErrorKind) -> u8 {
    match kind {
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
        ErrorKind::DuplicateNode => 24,
        ErrorKind::DuplicateHandler => 25,
        ErrorKind::NoRuntime => 26,
        ErrorKind::Unauthenticated => 27,
        ErrorKind::Forbidden => 28,
        ErrorKind::Conflict => 29,
        ErrorKind::InvalidKey => 33,
        ErrorKind::Transport => 30,
        ErrorKind::Auth => 31,
        ErrorKind::Tls => 32,
        _ => OTHER,
    }
}

/// The exit code of an error.
pub(crate) fn code(e: &Error) -> u8 {
    code_of(e.kind())
}

/// The exit codes, as `happen --help` shows them after the options: one line per code, the kinds' names and meanings from [`ErrorKind::ALL`].
pub(crate) fn help() -> String {
    let width = ErrorKind::ALL
        .iter()
        .map(|k| k.as_str().len())
        .max()
        .unwrap_or(0);
    let mut kinds: Vec<ErrorKind> = ErrorKind::ALL.to_vec();
    kinds.sort_by_key(|&k| code_of(k));
    let mut text = String::from("Exit codes:\n");
    for (c, meaning) in GENERAL {
        text.push_str(&format!("{c:>4}  {meaning}\n"));
    }
    for k in kinds {
        text.push_str(&format!(
            "{:>4}  {:<width$}  {}\n",
            code_of(k),
            k.as_str(),
            k.description()
        ));
    }
    text.pop(); // the last line's break
    text
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
    fn every_kind_of_the_library_has_its_own_code_and_help_line() {
        let help = help();
        let mut seen = std::collections::HashSet::new();
        for &kind in ErrorKind::ALL {
            let c = code(&Error::new(kind, "x"));
            assert!(
                c >= 10,
                "{kind:?} has no exit code of its own; give it the next free one"
            );
            assert!(seen.insert(c), "{kind:?}: code {c} used twice");
            let line = format!("{c:>4}  {}", kind.as_str());
            assert!(help.contains(&line), "help lacks `{line}`:\n{help}");
            assert!(
                help.contains(kind.description()),
                "help lacks {kind:?}'s meaning"
            );
        }
        for (c, _) in GENERAL {
            assert!(seen.insert(c), "code {c} is both general and a kind's");
        }
    }

    #[test]
    fn the_numbering_is_stable() {
        // scripts test these numbers: never renumber, only add
        let fixed = [
            ("unknown_node", 10),
            ("no_handler", 11),
            ("handler", 12),
            ("panic", 13),
            ("timeout", 14),
            ("queue_full", 15),
            ("shut_down", 16),
            ("cancelled", 17),
            ("chain_too_deep", 18),
            ("invalid_event", 19),
            ("invalid_payload", 20),
            ("downstream", 21),
            ("invalid_pattern", 22),
            ("invalid_config", 23),
            ("duplicate_node", 24),
            ("duplicate_handler", 25),
            ("no_runtime", 26),
            ("unauthenticated", 27),
            ("forbidden", 28),
            ("conflict", 29),
            ("invalid_key", 33),
            ("transport", 30),
            ("auth", 31),
            ("tls", 32),
        ];
        for (name, c) in fixed {
            let kind = ErrorKind::parse(name).expect("a kind of the library");
            assert_eq!(code_of(kind), c, "{name}");
        }
    }

    #[test]
    fn help_lists_the_codes_in_order() {
        let help = help();
        let codes: Vec<u8> = help
            .lines()
            .skip(1)
            .map_while(|l| l.split_whitespace().next()?.parse().ok())
            .collect();
        assert!(codes.is_sorted(), "{help}");
        assert_eq!(codes.len(), GENERAL.len() + ErrorKind::ALL.len(), "{help}");
        assert!(help.contains("  14  timeout  "), "{help}");
        assert!(help.contains("  32  tls  "), "{help}");
        let last = ErrorKind::ALL.iter().max_by_key(|&&k| code_of(k)).unwrap();
        assert!(help.ends_with(last.description()), "{help}");
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
