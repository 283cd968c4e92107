//! The liners happen ships: `logging` and `shadow_mode`.

use std::time::Instant;

use serde_json::json;

use super::{Liner, Next};
use crate::error::Result;
use crate::event::Event;
use crate::event::pattern::{IntoPattern, Pattern};
use crate::node::context::Context;

/// The `status` of a reply [`shadow_mode`] gives instead of running a destructive handler.
pub const PAUSED_STATUS: &str = "paused";

/// Marks a flow as approved for destructive event types: [`shadow_mode`] lets a flow whose
/// [`Context`] holds `Approved` through to its handler. An outer liner (or an earlier one of
/// the node's) inserts it after checking whatever approval means to the application: a
/// signed payload field, the sender's id, a human's decision recorded elsewhere.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
/// use happen::liner::{Approved, Liner, Next, line, shadow_mode};
/// use happen::{Context, Event, Happen};
///
/// // Flows sent by `admin` are approved; shadow mode (inside) lets them through.
/// let approve_admin = Liner::new(|event: Event, ctx: Context, next: Next| async move {
///     if event.sender() == "admin" {
///         ctx.insert(Approved);
///     }
///     next.run(event, ctx).await
/// });
///
/// let happen = Happen::new();
/// let files = happen.node("files").await?;
/// let delete = |_e: Event, _c: Context| async { "deleted" };
/// files.on("file.delete", line(delete, [shadow_mode(), approve_admin]))?;
///
/// let admin = happen.node("admin").await?;
/// let guest = happen.node("guest").await?;
/// assert_eq!(admin.send(&files, Event::new("file.delete", "a.txt")).await?, "deleted");
/// let paused = guest.send(&files, Event::new("file.delete", "a.txt")).await?;
/// assert_eq!(paused["status"], "paused");
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Approved;

/// A liner that logs each flow at the `happen::liner` [`tracing`] target: one `info` line
/// when it starts (node, event type, event id, correlation id, sender) and one when it ends
/// (`info` with the time it took, or `warn` with the error's kind and message). The flow's
/// value or error passes through unchanged.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
/// use happen::{Context, Event, Happen};
///
/// let happen = Happen::new();
/// let node = happen.node("n").await?;
/// node.line(happen::liner::logging()); // every handler of the node, also those added later
/// node.on("ping", |_e: Event, _c: Context| async { "pong" })?;
/// assert_eq!(node.send(&node, Event::new("ping", ())).await?, "pong");
/// # Ok(()) }
/// ```
pub fn logging() -> Liner {
    Liner::new(|event: Event, ctx: Context, next: Next| async move {
        let started = Instant::now();
        let event_type = event.event_type_shared().clone();
        let event_id = event.id().clone();
        tracing::info!(
            target: "happen::liner",
            node = %ctx.node_id(),
            event_type = event_type.as_str(),
            event_id = %event_id,
            correlation_id = %event.correlation_id(),
            sender = %event.sender(),
            "flow started"
        );
        let node = ctx.node_id().clone();
        let outcome = next.run(event, ctx).await;
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        match &outcome {
            Ok(_) => tracing::info!(
                target: "happen::liner",
                node = %node,
                event_type = event_type.as_str(),
                event_id = %event_id,
                micros,
                "flow finished"
            ),
            Err(e) => tracing::warn!(
                target: "happen::liner",
                node = %node,
                event_type = event_type.as_str(),
                event_id = %event_id,
                micros,
                kind = %e.kind(),
                error = %e,
                "flow failed"
            ),
        }
        outcome
    })
}

/// A liner that keeps destructive events from running until they are approved, as the
/// reference's `withShadowMode`: an event type containing `delete` or `overwrite` is
/// answered, without calling the handler, with
///
/// ```json
/// {"status": "paused", "reason": "...", "eventType": "file.delete", "eventId": "evt-..."}
/// ```
///
/// unless the flow's [`Context`] holds [`Approved`] (inserted by an outer liner). Other types
/// run as usual. [`shadow_mode_for`] takes the destructive types as a pattern instead.
///
/// The reference documents the reply only as `{status: 'paused', …}`; happen's shape above
/// adds the reason, the event type and id (camelCase, as the reference's wire names).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
/// use happen::{Context, Event, Happen};
///
/// let happen = Happen::new();
/// let files = happen.node("files").await?;
/// files.line(happen::liner::shadow_mode());
/// files.on("file.*", |_e: Event, _c: Context| async { "done" })?;
///
/// assert_eq!(files.send(&files, Event::new("file.read", ())).await?, "done");
/// let paused = files.send(&files, Event::new("file.delete", ())).await?;
/// assert_eq!(paused["status"], happen::liner::PAUSED_STATUS);
/// assert_eq!(paused["eventType"], "file.delete");
/// # Ok(()) }
/// ```
pub fn shadow_mode() -> Liner {
    shadow(|event_type: &str| event_type.contains("delete") || event_type.contains("overwrite"))
}

/// [`shadow_mode`] for the event types matching `destructive` (any pattern [`Node::on`]
/// takes) instead of those containing `delete` or `overwrite`.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
/// use happen::{Context, Event, Happen};
///
/// let happen = Happen::new();
/// let db = happen.node("db").await?;
/// db.line(happen::liner::shadow_mode_for("{table.drop,table.truncate}")?);
/// db.on("table.*", |_e: Event, _c: Context| async { "done" })?;
/// assert_eq!(db.send(&db, Event::new("table.truncate", ())).await?["status"], "paused");
/// assert_eq!(db.send(&db, Event::new("table.delete_row", ())).await?, "done");
/// # Ok(()) }
/// ```
///
/// # Errors
/// [`ErrorKind::InvalidPattern`](crate::ErrorKind::InvalidPattern) for an invalid pattern.
///
/// [`Node::on`]: crate::Node::on
pub fn shadow_mode_for(destructive: impl IntoPattern) -> Result<Liner> {
    let pattern: Pattern = destructive.into_pattern()?;
    Ok(shadow(move |event_type: &str| pattern.matches(event_type)))
}

fn shadow(destructive: impl Fn(&str) -> bool + Send + Sync + 'static) -> Liner {
    Liner::new(move |event: Event, ctx: Context, next: Next| {
        let paused = destructive(event.event_type()) && ctx.get::<Approved>().is_none();
        async move {
            if paused {
                return Ok(json!({
                    "status": PAUSED_STATUS,
                    "reason": format!(
                        "shadow mode: `{}` is destructive and was not approved; an outer liner approves a flow with `ctx.insert(happen::liner::Approved)`",
                        event.event_type()
                    ),
                    "eventType": event.event_type(),
                    "eventId": event.id().to_string(),
                }));
            }
            next.run(event, ctx).await
        }
    })
}
