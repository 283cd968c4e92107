//! [`Target`]: where a send goes.

use super::Node;
use crate::id::NodeId;

/// Where a send goes: a [`Node`] handle or a node id (`&str`, `String`, [`NodeId`]).
/// Sending takes `impl Into<Target>`, so this type is rarely named.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
/// use happen::{Event, Happen, Target};
///
/// let happen = Happen::new();
/// let a = happen.node("a").await?;
/// assert_eq!(Target::from(&a).id(), "a");
/// assert_eq!(Target::from("b").id(), "b");
/// a.tell("a", Event::new("ping", ())).ok(); // by id
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Target<'a>(To<'a>);

#[derive(Clone, Debug)]
enum To<'a> {
    /// A node handle.
    Node(&'a Node),
    /// A node id, resolved by the transport.
    Id(NodeId),
}

impl<'a> Target<'a> {
    /// The target's node id.
    pub fn id(&self) -> &NodeId {
        match &self.0 {
            To::Node(n) => n.id(),
            To::Id(id) => id,
        }
    }

    /// The node handle, if the target is one.
    pub(super) fn node(&self) -> Option<&'a Node> {
        match &self.0 {
            To::Node(n) => Some(*n),
            To::Id(_) => None,
        }
    }
}

impl<'a> From<&'a Node> for Target<'a> {
    fn from(n: &'a Node) -> Self {
        Target(To::Node(n))
    }
}
impl From<&str> for Target<'_> {
    fn from(s: &str) -> Self {
        Target(To::Id(NodeId::from(s)))
    }
}
impl From<String> for Target<'_> {
    fn from(s: String) -> Self {
        Target(To::Id(NodeId::from(s)))
    }
}
impl From<NodeId> for Target<'_> {
    fn from(id: NodeId) -> Self {
        Target(To::Id(id))
    }
}
impl From<&NodeId> for Target<'_> {
    fn from(id: &NodeId) -> Self {
        Target(To::Id(id.clone()))
    }
}
