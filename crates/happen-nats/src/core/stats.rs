//! The transport's one counter set: what was sent, every message dropped or rejected, and
//! durable delivery. Workers count into [`Counters`]; [`NatsStats`] is the snapshot an
//! application reads ([`NatsTransport::stats`](crate::NatsTransport::stats)).

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// Declares every counter once: a field of [`NatsStats`] (with its docs), an atomic of
/// [`Counters`], and the line of the snapshot that copies one to the other.
macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident,)*) => {
        /// A snapshot of the transport's counters (see
        /// [`NatsTransport::stats`](crate::NatsTransport::stats)).
        ///
        /// ```
        /// # #[tokio::main(flavor = "current_thread")] async fn main() -> happen::Result<()> {
        /// # let server = test_support::NatsServer::start();
        /// let transport = happen_nats::NatsTransport::connect(
        ///     happen_nats::NatsConfig::with_server(server.url()),
        /// )
        /// .await?;
        /// let stats = transport.stats();
        /// assert_eq!((stats.sent, stats.malformed, stats.durable_acked), (0, 0, 0));
        /// # Ok(()) }
        /// ```
        ///
        /// Serialized with camelCase names (`sent`, `failedReplicaGone`, …), as discovery
        /// answers carry it (`WIRE.md`, "Discovery"); a counter missing on input is 0.
        #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(default, rename_all = "camelCase")]
        #[non_exhaustive]
        pub struct NatsStats {
            $($(#[$doc])* pub $name: u64,)*
        }

        /// The live counters behind [`NatsStats`].
        #[derive(Default)]
        pub(crate) struct Counters {
            $(pub(crate) $name: AtomicU64,)*
        }

        impl Counters {
            /// The counters now.
            pub(crate) fn snapshot(&self) -> NatsStats {
                NatsStats {
                    $($name: self.$name.load(Ordering::Relaxed),)*
                }
            }
        }
    };
}

counters! {
    /// Direct sends published.
    sent,
    /// Broadcasts published.
    broadcasts,
    /// Replies (final values and errors) published by this process's nodes.
    replies,
    /// Stream items published by this process's nodes.
    stream_items,
    /// Incoming messages that were not valid happen events (malformed JSON, missing or
    /// wrongly typed fields).
    malformed,
    /// Incoming messages larger than `max_message_bytes`.
    oversized,
    /// Messages with an unknown or unexpected `Happen-Frame`/`Happen-Status`, or stream
    /// protocol violations (items beyond the granted credit).
    protocol_errors,
    /// Replies or frames that arrived for a request nobody waits for any more.
    unmatched,
    /// `SlowConsumer` events from the client: a subscription buffer overflowed and messages
    /// were dropped (raise `subscription_capacity`).
    slow_consumer,
    /// Times the connection was lost.
    disconnects,
    /// Requests failed because the connection was lost before the reply arrived.
    failed_on_disconnect,
    /// Remote stream producers given up because the consumer stopped granting credit.
    stalled_streams,
    /// Most stream items a producer of this process had in flight (sent, not yet credited back).
    max_stream_in_flight,
    /// Direct messages that reached a node of this process after it stopped taking new ones
    /// (detach, shutdown) and were passed back to the server for another replica.
    forwarded,
    /// Answers of this process's nodes that found the outgoing buffer full and waited in the
    /// overflow queue instead of holding up their node's serve task.
    answers_overflowed,
    /// Broadcasts a node of this process decoded (one per node that took it).
    broadcasts_decoded,
    /// Broadcasts a node of this process skipped without decoding: their `Happen-Type` names
    /// a type the node has no handler for.
    broadcasts_skipped,
    /// Sends, tells and broadcasts accepted while disconnected (buffered for the reconnect;
    /// see `transport.nats.disconnected_buffer`).
    buffered_while_disconnected,
    /// Sends, tells and broadcasts refused while disconnected because the buffer was full.
    rejected_while_disconnected,
    /// Durable events the server acknowledged storing.
    durable_published,
    /// Durable events given up after retrying until the request timeout (the requester got
    /// an error; a `tell` was logged).
    durable_publish_failed,
    /// Durable publish attempts retried (timeouts, no stream yet, disconnected).
    durable_publish_retries,
    /// Messages pulled from the consumers of this process's durable nodes.
    durable_pulled,
    /// Durable flows finished and acknowledged.
    durable_acked,
    /// Failed durable flows handed back for redelivery.
    durable_retried,
    /// Durable events published to the dead-letter subject.
    durable_dead_lettered,
    /// Copies of an exactly-once event acknowledged without running: its record was found,
    /// or another copy was running and this one was answered with its outcome.
    durable_duplicates_skipped,
    /// Copies of an exactly-once event that found its id claimed by another replica and
    /// waited for its record.
    durable_claims_waited,
    /// Exactly-once claims taken over from an owner that stopped renewing them (it died or
    /// lost the server while holding the event).
    durable_claims_taken_over,
    /// Most durable events one node of this process held at once (pulled, not settled).
    durable_max_held,
    /// Requests failed before their timeout because the replica holding them stopped
    /// heartbeating, closed, or lost its server connection (see `transport.nats.liveness`).
    failed_replica_gone,
    /// `accepted` frames this process's nodes sent to requesters still waiting.
    accepted_sent,
    /// Answers published again after a reconnect (written just before the connection was
    /// lost; requesters drop a second copy).
    answers_replayed,
    /// Completion records of tells and broadcasts published (see
    /// `transport.nats.completion_records`).
    completions_published,
    /// Completion records dropped because the outgoing buffer was full (they are best
    /// effort: an observer never holds up a node).
    completions_dropped,
    /// Durable sends of this process whose answers it asked for again after a reconnect (an
    /// answer published while it was disconnected is dropped by the server).
    durable_answers_asked,
    /// Answers of this process's durable nodes published again because their requester asked
    /// for them after its reconnect.
    durable_answers_resent,
    /// Durable sends of this process answered after a reconnect from their exactly-once
    /// record (no replica held the answer any more).
    durable_answers_from_record,
    /// Durable sends of this process failed at once after a reconnect: their event ran and
    /// was answered while it was disconnected, and no replica held the answer any more.
    durable_answers_lost,
}

/// Adds one to `c`.
pub(crate) fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// What was wrong with an incoming message (see [`Counters::bad_input`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BadInput {
    /// Not a valid happen event (or reply, or frame body).
    Malformed,
    /// Larger than `max_message_bytes`.
    Oversized,
    /// An unknown or unexpected frame or status, or a stream protocol violation.
    Protocol,
}

impl Counters {
    /// Counts a bad incoming message (and reports it to `metrics`).
    pub(crate) fn bad_input(&self, kind: BadInput) {
        let (counter, label) = match kind {
            BadInput::Oversized => (&self.oversized, "oversized"),
            BadInput::Protocol => (&self.protocol_errors, "protocol"),
            BadInput::Malformed => (&self.malformed, "malformed"),
        };
        inc(counter);
        metrics::counter!("happen_nats_bad_messages_total", "kind" => label).increment(1);
    }
}
