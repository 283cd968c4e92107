//! `happen trace`: the causal tree of one transaction, from a live tap or a `--record` file.

use futures::StreamExt;
use happen::{Error, ErrorKind, Result};

use crate::TraceArgs;
use crate::conn::ConnArgs;
use crate::observed::{Branch, Seen, build};
use crate::tap::{after, listen};

/// The tree as indented text, one event per line.
pub(crate) fn render(forest: &[Branch]) -> String {
    fn walk(b: &Branch, prefix: &str, last: bool, top: bool, out: &mut String) {
        let (branch, next) = match (top, last) {
            (true, _) => ("", String::new()),
            (false, true) => ("└─ ", format!("{prefix}   ")),
            (false, false) => ("├─ ", format!("{prefix}│  ")),
        };
        let e = &b.event;
        out.push_str(&format!(
            "{prefix}{branch}{}  {} → {}  +{:.1}ms  {}",
            e.event_type,
            e.sender,
            e.target_label(),
            b.offset_ms,
            e.id
        ));
        if b.cause_unseen {
            out.push_str(&format!(
                "  (caused by {}, not seen)",
                e.causation_id.as_deref().unwrap_or("?")
            ));
        }
        out.push('\n');
        for (i, c) in b.children.iter().enumerate() {
            walk(c, &next, i + 1 == b.children.len(), false, out);
        }
    }
    let mut out = String::new();
    for b in forest {
        walk(b, "", true, true, &mut out);
    }
    out
}

/// The events of transaction `correlation` in a `happen tap --record` file (its replies and
/// node snapshots are for `happen web --replay`).
fn read_file(path: &std::path::Path, correlation: &str) -> Result<Vec<Seen>> {
    let mut events = Vec::new();
    crate::record::read(path, |line| {
        if let crate::record::Line::Event(seen) = line
            && seen.correlation_id == correlation
        {
            events.push(*seen);
        }
    })?;
    Ok(events)
}

pub(crate) async fn trace(conn: &ConnArgs, a: TraceArgs) -> Result<()> {
    let events = match &a.from {
        Some(path) => read_file(path, &a.correlation_id)?,
        None => {
            let transport = conn.connect().await?;
            let stream = listen(&transport).await?;
            tokio::pin!(stream);
            eprintln!(
                "listening for transaction {} (stops {:?} after its last event, or Ctrl-C)",
                a.correlation_id, a.idle
            );
            let stop = after(a.duration);
            tokio::pin!(stop);
            let connection = crate::conn::report_connection(&transport, &conn.url);
            tokio::pin!(connection);
            let mut events = Vec::new();
            loop {
                let idle = after((!events.is_empty()).then_some(a.idle));
                let e = tokio::select! {
                    _ = &mut stop => break,
                    _ = idle => break,
                    _ = tokio::signal::ctrl_c() => break,
                    never = &mut connection => match never {},
                    e = stream.next() => match e {
                        Some(e) => e,
                        None => break,
                    },
                };
                if e.correlation_id == a.correlation_id {
                    eprintln!("  {}", e.line());
                    events.push(e);
                }
            }
            events
        }
    };
    if events.is_empty() {
        return Err(Error::new(
            ErrorKind::InvalidConfig,
            format!(
                "no event of transaction `{}` was seen; check the correlation id (`corr=` in `happen tap`)",
                a.correlation_id
            ),
        ));
    }
    let n = events.len();
    let forest = build(events);
    if a.json {
        let out =
            serde_json::json!({"correlationId": a.correlation_id, "events": n, "roots": forest});
        println!("{out}");
    } else {
        println!("transaction {} ({n} events)", a.correlation_id);
        print!("{}", render(&forest));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_nest_under_their_causes_whatever_the_order_seen() {
        let forest = build(vec![
            Seen::sample("c", Some("b"), 3000, "z"),
            Seen::sample("a", None, 1000, "x"),
            Seen::sample("b", Some("a"), 2000, "y"),
            Seen::sample("b2", Some("a"), 2500, "y"),
            Seen::sample("orphan", Some("gone"), 4000, "w"),
        ]);
        assert_eq!(forest.len(), 2);
        assert_eq!(forest[0].event.id, "a");
        let kids: Vec<_> = forest[0].children.iter().map(|b| &b.event.id).collect();
        assert_eq!(kids, ["b", "b2"]);
        assert_eq!(forest[0].children[0].children[0].event.id, "c");
        assert_eq!(forest[0].children[0].children[0].offset_ms, 2.0);
        assert!(forest[1].cause_unseen);
        let text = render(&forest);
        let lines: Vec<_> = text.lines().collect();
        assert!(lines[0].starts_with("t.a  s → x  +0.0ms  a"), "{text}");
        assert!(lines[1].starts_with("├─ t.b  s → y"), "{text}");
        assert!(lines[2].starts_with("│  └─ t.c  s → z  +2.0ms"), "{text}");
        assert!(lines[3].starts_with("└─ t.b2"), "{text}");
        assert!(lines[4].contains("(caused by gone, not seen)"), "{text}");
    }
}
