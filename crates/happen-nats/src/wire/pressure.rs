//! Pressure and limits on the wire: the `Happen-Pressure` and `Happen-Limits` header values.

use happen::Pressure;

/// The `Happen-Pressure` header value for a state, or `None` when not under pressure.
pub(crate) fn pressure_header(p: &Pressure) -> Option<String> {
    p.under_pressure
        .then(|| format!("high;queued={};limit={}", p.queued, p.queue_limit))
}

/// The `Happen-Pressure` header value of a report with its sequence number and replica id
/// (see [`PressureReport`]), or `None` when not under pressure.
pub(crate) fn pressure_report_header(p: &Pressure, seq: u64, replica: &str) -> Option<String> {
    pressure_header(p).map(|h| format!("{h};seq={seq};replica={replica}"))
}

/// A pressure state as reported by a node: the `node.pressure` payload or a
/// `Happen-Pressure` header.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub(crate) struct PressureReport {
    /// The state.
    pub(crate) pressure: Pressure,
    /// The node's transition counter (`seq`); a lower one than already seen from the same
    /// replica is an older report.
    pub(crate) seq: Option<u64>,
    /// The process (replica) that reported, if it said.
    pub(crate) replica: Option<String>,
}

/// Parses a `Happen-Pressure` header value, with its optional `seq` and `replica` parts.
pub(crate) fn parse_pressure_report(value: &str) -> PressureReport {
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
pub(crate) struct RemoteLimits {
    /// Flows the node runs at once.
    pub(crate) max_concurrent: usize,
    /// Events that may wait beyond `max_concurrent`.
    pub(crate) queue_limit: usize,
    /// Waiting events at which the node turns "under pressure".
    pub(crate) high_water: usize,
}

impl RemoteLimits {
    /// Limits from their parts.
    pub(crate) fn new(
        max_concurrent: usize,
        queue_limit: usize,
        high_water: usize,
    ) -> RemoteLimits {
        RemoteLimits {
            max_concurrent,
            queue_limit,
            high_water,
        }
    }

    /// The limits of a node: its high-water mark is `backpressure_threshold × queue_limit`
    /// rounded up, at least 1 and at most `queue_limit` (as documented for
    /// [`happen::Pressure`]).
    pub(crate) fn of(limits: &happen::Limits) -> RemoteLimits {
        let q = limits.queue_limit;
        let high = (limits.backpressure_threshold * q as f64).ceil() as usize;
        RemoteLimits::new(limits.max_concurrent, q, high.min(q).max(1))
    }
}

/// The `Happen-Limits` header value.
pub(crate) fn limits_header(l: &RemoteLimits) -> String {
    format!(
        "concurrent={};queue={};high={}",
        l.max_concurrent, l.queue_limit, l.high_water
    )
}

/// Parses a `Happen-Limits` header value; `None` unless all three parts are present.
pub(crate) fn parse_limits(value: &str) -> Option<RemoteLimits> {
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

/// A `node.pressure` event's payload as the transport reads it (published on
/// `<prefix>.pressure.<id>` and broadcast; see `WIRE.md`, "Backpressure and pacing").
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PressureEvent {
    /// `nodeId`: the node that reports.
    pub(crate) node: Option<String>,
    /// `underPressure`, `queued` and `queueLimit`.
    pub(crate) pressure: Pressure,
    /// `seq`: the node's transition counter.
    pub(crate) seq: Option<u64>,
    /// `closed`: this replica no longer serves the node.
    pub(crate) closed: bool,
}

impl PressureEvent {
    /// Reads a `node.pressure` payload; missing or wrongly typed fields read as absent,
    /// `false` or 0.
    pub(crate) fn parse(p: &serde_json::Value) -> PressureEvent {
        let count = |key| p.get(key).and_then(|v| v.as_u64()).unwrap_or(0) as usize;
        let flag = |key| p.get(key).and_then(|v| v.as_bool()) == Some(true);
        PressureEvent {
            node: p.get("nodeId").and_then(|v| v.as_str()).map(str::to_owned),
            pressure: happen::transport::pressure(
                flag("underPressure"),
                count("queued"),
                count("queueLimit"),
            ),
            seq: p.get("seq").and_then(|v| v.as_u64()),
            closed: flag("closed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pressure_header_round_trips() {
        let p = happen::transport::pressure(true, 80, 100);
        let h = pressure_header(&p).unwrap();
        assert_eq!(parse_pressure_report(&h).pressure, p);
        assert!(pressure_header(&happen::transport::pressure(false, 1, 2)).is_none());
    }

    #[test]
    fn pressure_events_are_read_leniently() {
        let e = PressureEvent::parse(&serde_json::json!({
            "nodeId": "n", "underPressure": true, "queued": 80, "queueLimit": 100, "seq": 3
        }));
        assert_eq!(e.node.as_deref(), Some("n"));
        assert_eq!(e.pressure, happen::transport::pressure(true, 80, 100));
        assert_eq!((e.seq, e.closed), (Some(3), false));
        let e = PressureEvent::parse(&serde_json::json!({"queued": "x", "closed": true}));
        assert_eq!(
            (e.node, e.pressure, e.seq, e.closed),
            (None, happen::transport::pressure(false, 0, 0), None, true)
        );
    }

    #[test]
    fn reports_and_limits_parse() {
        let r = parse_pressure_report("high;queued=80;limit=100;seq=3;replica=x");
        assert!(r.pressure.under_pressure);
        assert_eq!(
            (r.pressure.queued, r.seq, r.replica.as_deref()),
            (80, Some(3), Some("x"))
        );
        assert_eq!(
            parse_limits("concurrent=4;queue=100;high=80"),
            Some(RemoteLimits::new(4, 100, 80))
        );
        assert_eq!(parse_limits("concurrent=4"), None);
    }
}
