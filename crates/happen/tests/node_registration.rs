//! Registering handlers: the same pattern twice at one node is an error and the first
//! registration stays in effect; overlapping but different patterns are fine.

use std::time::Duration;

use happen::pattern::{self, Pattern};
use happen::{Context, ErrorKind, Event, Happen, Node};
use tokio::time::timeout;

const T: Duration = Duration::from_secs(10);

async fn answer(node: &Node, ty: &str) -> String {
    let v = timeout(T, node.send(node, Event::new(ty, ())))
        .await
        .unwrap()
        .unwrap();
    v.as_str().unwrap().to_owned()
}

/// Registers a handler answering `name`.
fn register(
    node: &Node,
    pattern: impl pattern::IntoPattern,
    name: &'static str,
) -> happen::Result<()> {
    node.on(pattern, move |_e: Event, _c: Context| async move { name })
}

#[tokio::test]
async fn the_same_pattern_twice_is_an_error() {
    let happen = Happen::new();
    let node = happen.node("n").await.unwrap();
    let pred = Pattern::predicate(|t| t.starts_with("sys"));
    register(&node, "order.created", "exact").unwrap();
    register(&node, "order.*", "wildcard").unwrap();
    register(&node, "{a,b}.x", "alternatives").unwrap();
    register(&node, pattern::domain("audit"), "domain").unwrap();
    register(&node, pred.clone(), "predicate").unwrap();

    let duplicates: Vec<(Pattern, &str)> = vec![
        (Pattern::parse("order.created").unwrap(), "order.created"),
        (pattern::exact("order.created"), "order.created"),
        (Pattern::parse("order.*").unwrap(), "order.*"),
        (Pattern::parse("{b,a}.x").unwrap(), "{b,a}.x"),
        (pattern::one_of(["a.x", "b.x"]), "one_of(a.x,b.x)"),
        (pattern::domain("audit"), "audit.**"),
        (pred.clone(), "<predicate>"),
    ];
    for (p, shown) in duplicates {
        let err = register(&node, p, "second").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::DuplicateHandler, "{shown}");
        assert_eq!(err.node().unwrap(), "n");
        assert!(err.message().contains(shown), "{err}");
    }

    // The first registrations stay in effect.
    assert_eq!(answer(&node, "order.created").await, "exact");
    assert_eq!(answer(&node, "order.paid").await, "wildcard");
    assert_eq!(answer(&node, "b.x").await, "alternatives");
    assert_eq!(answer(&node, "audit.log.write").await, "domain");
    assert_eq!(answer(&node, "system").await, "predicate");
}

#[tokio::test]
async fn overlapping_patterns_and_other_nodes_are_fine() {
    let happen = Happen::new();
    let a = happen.node("a").await.unwrap();
    register(&a, "order.*", "wildcard").unwrap();
    register(&a, "*.created", "other wildcard").unwrap();
    register(&a, "{order,user}.created", "alternatives").unwrap();
    // Two predicates that happen to accept the same types cannot be told apart: both register.
    register(&a, Pattern::predicate(|t| t == "p"), "first predicate").unwrap();
    register(&a, Pattern::predicate(|t| t == "p"), "second predicate").unwrap();
    assert_eq!(answer(&a, "order.created").await, "alternatives");
    assert_eq!(answer(&a, "p").await, "first predicate");

    // The same pattern at another node is a different registration.
    let b = happen.node("b").await.unwrap();
    register(&b, "order.*", "b").unwrap();
    assert_eq!(answer(&b, "order.paid").await, "b");
}
