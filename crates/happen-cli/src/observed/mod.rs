//! What the CLI observes on the wire, below every command that shows it: an event as a tap
//! saw it ([`Seen`]), a request's reply ([`Reply`], [`reply_of`]), a tell's or broadcast's
//! completion record ([`Completed`]), the causal tree of a transaction ([`build`]) and the
//! bounded memory that pairs replies with their requests and groups errors ([`Store`]). `tap`, `trace`, `record` and `web` build on it; it imports
//! none of them.

mod completed;
mod reply;
mod seen;
mod store;
mod tree;

pub(crate) use self::completed::Completed;
pub(crate) use self::reply::{ErrorInfo, Reply, percent_decode, reply_of};
pub(crate) use self::seen::Seen;
pub(crate) use self::store::Store;
pub(crate) use self::tree::{Branch, build};
