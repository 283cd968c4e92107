//! The pressure-reports task: mirrors the pressure of remote nodes from their `node.pressure`
//! reports on `<prefix>.pressure.<id>` into their pacing views.

use std::sync::Arc;

use futures::StreamExt;
use happen::PRESSURE_EVENT;

use crate::core::Endpoint;
use crate::core::stats::{BadInput, Counters};
use crate::pacing::Remotes;
use crate::wire::{self, PressureEvent, header};

/// Mirrors the pressure of remote nodes from their `node.pressure` reports.
pub(crate) async fn run(
    ep: Arc<Endpoint>,
    remotes: Arc<Remotes>,
    counters: Arc<Counters>,
    mut sub: async_nats::Subscriber,
) {
    while let Some(msg) = sub.next().await {
        match wire::decode_event(&msg.payload, ep.max_bytes) {
            Ok(event) if event.event_type() == PRESSURE_EVENT => {
                let replica = msg
                    .headers
                    .as_ref()
                    .and_then(|h| h.get(header::REPLICA))
                    .map_or("", |v| v.as_str());
                remotes.observe_report(&PressureEvent::parse(event.payload()), replica);
            }
            _ => counters.bad_input(BadInput::Malformed),
        }
    }
}
