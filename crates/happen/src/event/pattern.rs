//! Event-type patterns: exact types, `*` segment wildcards, `{a,b}` alternatives, predicates.
//!
//! | form | example | matches |
//! |---|---|---|
//! | exact | `order.created` | only `order.created` |
//! | wildcard | `order.*` | `order.created`, not `order.item.added` (`*` is exactly one non-empty segment) |
//! | alternatives | `{order,payment}.created` | `order.created`, `payment.created` |
//! | predicate | `Pattern::predicate(\|t\| t.len() < 8)` | whatever the closure accepts |
//!
//! `*` means one thing here and another in node-id globs: in an event-type pattern it is
//! exactly one dot-separated segment (`order.*` does not match `order.item.added`); in the
//! concurrency config's node-id patterns (`api-*`) it is any run of characters (see
//! [`config`](crate::config)).
//!
//! When several patterns at one node match an event, exactly one handler runs: the most
//! specific. Exact beats alternatives beats wildcards (and [`domain`]); within a class more
//! literal characters win; predicates (including [`not`]) are least specific; ties go to the
//! earliest registration.
//!
//! [`Node::on`](crate::Node::on) takes a pattern string or a [`Pattern`] built here (see
//! [`IntoPattern`]).
//!
//! ```
//! use happen::pattern::{self, Pattern};
//!
//! let p = Pattern::parse("{order,payment}.*")?;
//! assert!(p.matches("payment.failed"));
//! assert!(!p.matches("payment.card.failed"));
//! assert!(pattern::domain("user").matches("user.profile.updated"));
//! assert!(pattern::not(pattern::exact("ping")).matches("pong"));
//! assert!(Pattern::parse("order..created").is_err());
//! # Ok::<(), happen::Error>(())
//! ```

use std::fmt;
use std::sync::Arc;

use crate::error::{Error, ErrorKind, Result};

/// Most alternatives one pattern may expand to.
const MAX_EXPANSIONS: usize = 256;

/// A compiled event-type pattern. Build one with [`Pattern::parse`], the helpers in this module,
/// or pass a `&str` wherever an [`IntoPattern`] is expected. Cheap to clone; `Display` shows
/// its source.
///
/// ```
/// use happen::pattern::{self, Pattern};
///
/// let patterns = [Pattern::parse("order.*")?, pattern::domain("billing"), pattern::exact("ping")];
/// let matching: Vec<String> = patterns
///     .iter()
///     .filter(|p| p.matches("billing.invoice.sent"))
///     .map(|p| p.to_string())
///     .collect();
/// assert_eq!(matching, ["billing.**"]);
/// # Ok::<(), happen::Error>(())
/// ```
#[derive(Clone)]
pub struct Pattern {
    kind: Kind,
    source: Arc<str>,
}

#[derive(Clone)]
enum Kind {
    Exact(Arc<str>),
    /// One or more globs (alternatives expanded), each a list of segments.
    Globs(Arc<[Vec<Segment>]>),
    Prefix(Arc<str>),
    Predicate(Arc<dyn Fn(&str) -> bool + Send + Sync>),
}

#[derive(Clone, Debug, PartialEq)]
enum Segment {
    Literal(String),
    Any,
}

/// Specificity class, highest first (used to pick one handler among several matches).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Class {
    Predicate = 0,
    Wildcard = 1,
    Alternatives = 2,
    Exact = 3,
}

impl Pattern {
    /// Parses a pattern string.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidPattern`] for an empty pattern, an empty segment (`a..b`, `.a`),
    /// unbalanced or nested braces, an empty alternative, `*` inside a segment (`ord*`), or
    /// whitespace.
    ///
    /// ```
    /// use happen::ErrorKind;
    /// use happen::pattern::Pattern;
    ///
    /// let p = Pattern::parse("order.*")?;
    /// assert!(p.matches("order.created"));
    /// assert!(!p.matches("order.item.added")); // `*` is exactly one segment
    ///
    /// let err = Pattern::parse("order.cre*").unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::InvalidPattern);
    /// assert!(err.message().contains("order.cre*"), "{err}");
    /// # Ok::<(), happen::Error>(())
    /// ```
    pub fn parse(pattern: &str) -> Result<Pattern> {
        let bad = |why: &str| {
            Error::new(
                ErrorKind::InvalidPattern,
                format!("invalid pattern `{pattern}`: {why}"),
            )
        };
        if pattern.is_empty() {
            return Err(bad("it is empty"));
        }
        if pattern.chars().any(char::is_whitespace) {
            return Err(bad("it contains whitespace"));
        }
        let expansions = expand(pattern).map_err(|w| bad(&w))?;
        let has_alternatives = pattern.contains('{');
        let mut globs = Vec::with_capacity(expansions.len());
        for exp in &expansions {
            let mut segs = Vec::new();
            for seg in exp.split('.') {
                if seg.is_empty() {
                    return Err(bad(
                        "it has an empty segment (check for `..` or a leading/trailing dot)",
                    ));
                }
                if seg == "*" {
                    segs.push(Segment::Any);
                } else if seg.contains('*') {
                    return Err(bad(
                        "`*` must be a whole segment (`order.*`), not part of one",
                    ));
                } else {
                    segs.push(Segment::Literal(seg.to_owned()));
                }
            }
            globs.push(segs);
        }
        let all_literal = globs
            .iter()
            .all(|g| g.iter().all(|s| matches!(s, Segment::Literal(_))));
        let kind = if !has_alternatives && all_literal {
            Kind::Exact(Arc::from(pattern))
        } else {
            Kind::Globs(globs.into())
        };
        Ok(Pattern {
            kind,
            source: Arc::from(pattern),
        })
    }

    /// A pattern defined by a closure over the event type (least specific: any other matching
    /// pattern at the node wins over it). The closure runs on every routing decision, so keep
    /// it cheap. If it panics, a send to the node fails with [`ErrorKind::Panic`] and a
    /// broadcast treats the node as not matching; the node keeps serving.
    ///
    /// # Deadlocks
    /// The closure runs while the node's handler table is read: registering a handler on the
    /// same node from inside it ([`Node::on`](crate::Node::on)) never returns.
    ///
    /// ```
    /// use happen::pattern::Pattern;
    ///
    /// let audit = Pattern::predicate(|t| t.ends_with(".deleted"));
    /// assert!(audit.matches("user.deleted"));
    /// assert!(!audit.matches("user.created"));
    /// ```
    pub fn predicate(f: impl Fn(&str) -> bool + Send + Sync + 'static) -> Pattern {
        Pattern {
            kind: Kind::Predicate(Arc::new(f)),
            source: Arc::from("<predicate>"),
        }
    }

    /// Does `event_type` match?
    ///
    /// ```
    /// let p = happen::pattern::Pattern::parse("{order,payment}.failed")?;
    /// assert!(p.matches("payment.failed"));
    /// assert!(!p.matches("user.failed"));
    /// # Ok::<(), happen::Error>(())
    /// ```
    pub fn matches(&self, event_type: &str) -> bool {
        match &self.kind {
            Kind::Exact(s) => **s == *event_type,
            Kind::Globs(globs) => globs.iter().any(|g| glob_matches(g, event_type)),
            Kind::Prefix(p) => {
                event_type.len() > p.len() + 1
                    && event_type.starts_with(&**p)
                    && event_type.as_bytes()[p.len()] == b'.'
            }
            Kind::Predicate(f) => f(event_type),
        }
    }

    /// The exact type this pattern matches, if it is an exact pattern.
    pub(crate) fn as_exact(&self) -> Option<&str> {
        match &self.kind {
            Kind::Exact(s) => Some(s),
            _ => None,
        }
    }

    /// Does `other` match exactly what this pattern matches, by construction (the same exact
    /// type, the same globs in any order, the same domain, or a clone of the same predicate)?
    /// Registering such a pattern after this one at a node would never run.
    pub(crate) fn same_as(&self, other: &Pattern) -> bool {
        match (&self.kind, &other.kind) {
            (Kind::Exact(a), Kind::Exact(b)) => a == b,
            (Kind::Globs(a), Kind::Globs(b)) => {
                a.iter().all(|g| b.contains(g)) && b.iter().all(|g| a.contains(g))
            }
            (Kind::Prefix(a), Kind::Prefix(b)) => a == b,
            (Kind::Predicate(a), Kind::Predicate(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }

    /// (class, literal characters): larger is more specific.
    pub(crate) fn specificity(&self) -> (Class, usize) {
        match &self.kind {
            Kind::Exact(s) => (Class::Exact, s.len()),
            Kind::Globs(globs) => {
                let literal = globs
                    .iter()
                    .map(|g| {
                        let lits: usize = g
                            .iter()
                            .map(|s| match s {
                                Segment::Literal(l) => l.len(),
                                Segment::Any => 0,
                            })
                            .sum();
                        lits + g.len().saturating_sub(1) // the dots
                    })
                    .min()
                    .unwrap_or(0);
                let any_star = globs.iter().flatten().any(|s| *s == Segment::Any);
                let class = if any_star {
                    Class::Wildcard
                } else {
                    Class::Alternatives
                };
                (class, literal)
            }
            Kind::Prefix(p) => (Class::Wildcard, p.len() + 1),
            Kind::Predicate(_) => (Class::Predicate, 0),
        }
    }
}

fn glob_matches(glob: &[Segment], event_type: &str) -> bool {
    let mut parts = event_type.split('.');
    for seg in glob {
        match (seg, parts.next()) {
            (_, None) => return false,
            (Segment::Any, Some(p)) => {
                if p.is_empty() {
                    return false;
                }
            }
            (Segment::Literal(l), Some(p)) => {
                if l != p {
                    return false;
                }
            }
        }
    }
    parts.next().is_none()
}

/// Expands `{a,b}` groups into all combinations.
fn expand(pattern: &str) -> std::result::Result<Vec<String>, String> {
    let mut out = vec![String::new()];
    let mut rest = pattern;
    while !rest.is_empty() {
        match rest.find(['{', '}']) {
            None => {
                out.iter_mut().for_each(|o| o.push_str(rest));
                rest = "";
            }
            Some(i) if rest.as_bytes()[i] == b'}' => {
                return Err("`}` without a matching `{`".into());
            }
            Some(i) => {
                let lit = &rest[..i];
                out.iter_mut().for_each(|o| o.push_str(lit));
                let after = &rest[i + 1..];
                let close = after
                    .find(['{', '}'])
                    .filter(|&j| after.as_bytes()[j] == b'}')
                    .ok_or_else(|| "`{` without a matching `}` (braces cannot nest)".to_string())?;
                let alts: Vec<&str> = after[..close].split(',').collect();
                if alts.iter().any(|a| a.is_empty()) {
                    return Err("an alternative in `{...}` is empty".into());
                }
                if out.len() * alts.len() > MAX_EXPANSIONS {
                    return Err(format!(
                        "it expands to more than {MAX_EXPANSIONS} alternatives"
                    ));
                }
                out = out
                    .iter()
                    .flat_map(|o| alts.iter().map(move |a| format!("{o}{a}")))
                    .collect();
                rest = &after[close + 1..];
            }
        }
    }
    Ok(out)
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pattern({})", self.source)
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// Anything usable as a pattern in [`Node::on`](crate::Node::on): `&str`, `String`, [`Pattern`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
/// use happen::{Context, Event, Happen, pattern};
///
/// let happen = Happen::new();
/// let audit = happen.node("audit").await?;
/// audit.on("user.deleted", |_e: Event, _c: Context| async { "exact" })?; // a &str
/// audit.on(String::from("user.*"), |_e: Event, _c: Context| async { "glob" })?; // a String
/// audit.on(pattern::domain("billing"), |_e: Event, _c: Context| async { "domain" })?; // a Pattern
/// assert_eq!(audit.send(&audit, Event::new("user.deleted", ())).await?, "exact");
/// assert_eq!(audit.send(&audit, Event::new("user.created", ())).await?, "glob");
/// assert_eq!(audit.send(&audit, Event::new("billing.invoice.sent", ())).await?, "domain");
/// # Ok(()) }
/// ```
pub trait IntoPattern {
    /// Converts into a compiled pattern.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidPattern`] for an invalid pattern string.
    fn into_pattern(self) -> Result<Pattern>;
}

impl IntoPattern for Pattern {
    fn into_pattern(self) -> Result<Pattern> {
        Ok(self)
    }
}
impl IntoPattern for &str {
    fn into_pattern(self) -> Result<Pattern> {
        Pattern::parse(self)
    }
}
impl IntoPattern for String {
    fn into_pattern(self) -> Result<Pattern> {
        Pattern::parse(&self)
    }
}
impl IntoPattern for &String {
    fn into_pattern(self) -> Result<Pattern> {
        Pattern::parse(self)
    }
}

/// Matches exactly `event_type` (no wildcard or brace interpretation).
///
/// ```
/// assert!(happen::pattern::exact("a.*").matches("a.*"));
/// ```
pub fn exact(event_type: impl Into<String>) -> Pattern {
    let s: Arc<str> = Arc::from(event_type.into());
    Pattern {
        kind: Kind::Exact(s.clone()),
        source: s,
    }
}

/// Matches every type under `domain` at any depth: `domain("order")` matches `order.created`
/// and `order.item.added` but not `order` or `orders.x`.
///
/// ```
/// let p = happen::pattern::domain("order");
/// assert!(p.matches("order.item.added"));
/// assert!(!p.matches("orders.created"));
/// ```
pub fn domain(domain: impl Into<String>) -> Pattern {
    let d: String = domain.into();
    Pattern {
        source: Arc::from(format!("{d}.**")),
        kind: Kind::Prefix(Arc::from(d)),
    }
}

/// Matches any of the given exact types.
///
/// ```
/// let p = happen::pattern::one_of(["a", "b"]);
/// assert!(p.matches("b") && !p.matches("c"));
/// ```
pub fn one_of<I, S>(types: I) -> Pattern
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let types: Vec<String> = types.into_iter().map(Into::into).collect();
    let source = format!("one_of({})", types.join(","));
    let globs: Vec<Vec<Segment>> = types
        .into_iter()
        .map(|t| {
            t.split('.')
                .map(|s| Segment::Literal(s.to_owned()))
                .collect()
        })
        .collect();
    Pattern {
        kind: Kind::Globs(globs.into()),
        source: Arc::from(source),
    }
}

/// Matches whatever `pattern` does not (a predicate: least specific).
///
/// ```
/// let p = happen::pattern::not(happen::pattern::domain("internal"));
/// assert!(p.matches("order.created") && !p.matches("internal.tick"));
/// ```
pub fn not(pattern: Pattern) -> Pattern {
    let source = format!("not({})", pattern.source);
    Pattern {
        kind: Kind::Predicate(Arc::new(move |t| !pattern.matches(t))),
        source: Arc::from(source),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Pattern {
        Pattern::parse(s).unwrap()
    }

    #[test]
    fn exact_patterns() {
        assert!(p("order.created").matches("order.created"));
        assert!(!p("order.created").matches("order.created.x"));
        assert!(!p("order.created").matches("order"));
        assert!(p("ping").matches("ping"));
        assert_eq!(p("a.b").specificity().0, Class::Exact);
    }

    #[test]
    fn star_is_exactly_one_segment() {
        let w = p("order.*");
        assert!(w.matches("order.created"));
        assert!(!w.matches("order.item.added"));
        assert!(!w.matches("order"));
        assert!(!w.matches("order."));
        assert!(!w.matches("orders.created"));
        assert!(p("*.created").matches("payment.created"));
        assert!(p("a.*.c").matches("a.b.c"));
        assert!(!p("a.*.c").matches("a.b.d"));
        assert!(p("*").matches("ping"));
        assert!(!p("*").matches("a.b"));
    }

    #[test]
    fn alternatives() {
        let a = p("{order,payment}.created");
        assert!(a.matches("order.created"));
        assert!(a.matches("payment.created"));
        assert!(!a.matches("user.created"));
        assert_eq!(a.specificity().0, Class::Alternatives);
        let b = p("x.{a,b}.{c,d}");
        for t in ["x.a.c", "x.a.d", "x.b.c", "x.b.d"] {
            assert!(b.matches(t), "{t}");
        }
        assert!(p("{a.b,c}").matches("a.b"));
        assert!(p("{a.b,c}").matches("c"));
        assert_eq!(p("{order,payment}.*").specificity().0, Class::Wildcard);
    }

    #[test]
    fn invalid_patterns_are_errors() {
        for bad in [
            "", "a..b", ".a", "a.", "ord*", "a.**", "{a,b", "a,b}", "{a,}", "{}", "{a,{b}}", "a b",
            "{a,b}}",
        ] {
            let err = Pattern::parse(bad)
                .err()
                .unwrap_or_else(|| panic!("`{bad}` parsed"));
            assert_eq!(err.kind(), ErrorKind::InvalidPattern, "{bad}");
            assert!(err.message().contains(bad), "{err}");
        }
        let huge = "{a,b,c,d}.{a,b,c,d}.{a,b,c,d}.{a,b,c,d}.{a,b,c,d}";
        assert!(Pattern::parse(huge).is_err());
    }

    #[test]
    fn helpers() {
        assert!(exact("a.b").matches("a.b"));
        assert!(!exact("a.*").matches("a.b"));
        assert!(domain("a").matches("a.b.c"));
        assert!(!domain("a").matches("a"));
        assert!(!domain("a").matches("ab.c"));
        assert!(one_of(["x", "y.z"]).matches("y.z"));
        assert!(!one_of(["x", "y.z"]).matches("y"));
        assert!(not(exact("a")).matches("b"));
        assert!(!not(exact("a")).matches("a"));
        assert!(Pattern::predicate(|t| t.starts_with("sys")).matches("system"));
    }

    #[test]
    fn same_patterns() {
        assert!(p("a.b").same_as(&p("a.b")));
        assert!(!p("a.b").same_as(&p("a.c")));
        assert!(p("{a,b}.*").same_as(&p("{b,a}.*")));
        assert!(p("{a,b}.x").same_as(&one_of(["b.x", "a.x"])));
        assert!(!p("{a,b}.x").same_as(&p("{a,c}.x")));
        assert!(!p("a.*").same_as(&p("*.b")));
        assert!(domain("a").same_as(&domain("a")));
        assert!(!domain("a").same_as(&p("a.*")));
        let pred = Pattern::predicate(|t| t.is_empty());
        assert!(pred.same_as(&pred.clone()));
        assert!(!pred.same_as(&Pattern::predicate(|t| t.is_empty())));
    }

    #[test]
    fn specificity_order() {
        let exact = p("order.created").specificity();
        let alts = p("{order,payment}.created").specificity();
        let wild_long = p("order.*").specificity();
        let wild_short = p("*.*").specificity();
        let pred = Pattern::predicate(|_| true).specificity();
        assert!(exact > alts && alts > wild_long && wild_long > wild_short && wild_short > pred);
    }
}
