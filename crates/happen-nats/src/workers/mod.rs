//! The workers: the tasks and handlers that move messages between NATS and this process's
//! nodes. Each gets a context holding the [`core`](crate::core) parts it uses; none imports
//! the transport.
//! - [`serve`]: one task per attached node, reading its subscriptions and answering;
//! - [`replies`]: the reply inbox task, multiplexing every reply and stream frame;
//! - [`streams`]: streams to a remote requester (produce, consume) and broadcast streams;
//! - [`completions`]: completion records of tells and broadcasts (opt-in);
//! - [`discover`]: answering and asking discovery requests;
//! - [`connection`]: following the client's connection events;
//! - [`pressure`]: mirroring remote nodes' pressure reports;
//! - [`liveness`]: heartbeats, and failing the requests of a replica that went away;
//! - [`durable`]: durable delivery on JetStream (publish, consume, records);
//! - [`tap`]: watching every event under the prefix (public as [`crate::tap`]);
//! - [`state`]: stored state in JetStream key-value buckets (the transport's state store);
//! - [`batches`]: batches to nodes that do not take them whole (one event at a time).

pub(crate) mod batches;
pub(crate) mod completions;
pub(crate) mod connection;
pub(crate) mod discover;
pub(crate) mod durable;
pub(crate) mod liveness;
pub(crate) mod pressure;
pub(crate) mod replies;
pub(crate) mod serve;
pub(crate) mod state;
pub(crate) mod streams;
pub(crate) mod tap;
