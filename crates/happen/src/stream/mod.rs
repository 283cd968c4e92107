//! Streaming results: a step emits items, then the flow's final value ends the stream.
//!
//! A streaming step takes an [`Emitter`](crate::Emitter) as its third argument. Items go
//! through a bounded channel (the node's `stream_buffer`, default 64): when the consumer is
//! slower than the producer, [`Emitter::emit`](crate::Emitter::emit) waits, so memory stays
//! constant however long the stream; [`Emitter::try_emit`](crate::Emitter::try_emit) does not
//! wait and drops the item instead (for progress updates).
//! The consumer reads items as JSON values, or as any `Deserialize` type with
//! [`ReplyStream::typed`](crate::ReplyStream::typed); the final value stays reachable after a
//! combinator consumed the stream through [`ReplyStream::outcome`](crate::ReplyStream::outcome).
//! When the consumer drops the stream before its end, the producing flow is cancelled: its
//! future is dropped at its current await point, so `Drop` guards (the seed's `finally`) run.
//! When nobody consumes (the sender dropped its [`Reply`](crate::Reply) without awaiting it,
//! i.e. fire-and-forget), items are discarded and the flow runs to its end.
//!
//! A broadcast whose receiving node streams carries its items to every other receiving node:
//! they read them with [`Context::items`](crate::Context::items) as [`BroadcastItems`], each
//! at its own pace (the producer never waits; see its lag policy).
//!
//! This module holds what an application reads ([`BroadcastItems`], [`StreamItem`]); the
//! pieces a transport uses to carry streams (item channels, broadcast feeds) are in
//! [`happen::transport`](crate::transport).
//!
//! ```
//! use futures::StreamExt;
//! use happen::{Context, Emitter, Event, Happen};
//!
//! async fn count(event: Event, _ctx: Context, emit: Emitter) -> happen::Result<&'static str> {
//!     let n = event.payload().as_u64().unwrap_or(0);
//!     for i in 0..n {
//!         emit.emit(i).await?;
//!     }
//!     Ok("done")
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
//! let happen = Happen::new();
//! let node = happen.node("counter").await?;
//! node.on("count", count)?;
//!
//! let mut stream = node.send(&node, Event::new("count", 3)).into_stream();
//! let mut items = Vec::new();
//! while let Some(item) = stream.next().await {
//!     items.push(item?);
//! }
//! assert_eq!(items, [0, 1, 2]);
//! assert_eq!(stream.final_value(), Some(&serde_json::json!("done")));
//!
//! // Awaiting the reply directly skips the items and yields the final value.
//! assert_eq!(node.send(&node, Event::new("count", 5)).await?, "done");
//! # Ok(()) }
//! ```

// The transport-side pieces (reply paths, item channels, broadcast feeds) are public through
// `happen::transport`; an application reads streams through `ReplyStream` and the two types
// below.
pub(crate) mod channel;
pub(crate) mod feed;
pub(crate) mod oneshot;

pub use feed::{BroadcastItems, StreamItem};

pub(crate) use channel::{ItemStream, StreamSender, StreamShared, channel};
pub(crate) use feed::{BroadcastRole, BroadcastSource, FeedSubscription, Frame};
pub(crate) use oneshot::{Received, ReplySender, Response, SlotReceiver, SlotSender, slot};
