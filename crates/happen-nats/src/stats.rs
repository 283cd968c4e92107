//! Counters of the transport: what was sent, and every message dropped or rejected.

use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of the transport's counters (see [`NatsTransport::stats`](crate::NatsTransport::stats)).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct NatsStats {
    /// Direct sends published.
    pub sent: u64,
    /// Broadcasts published.
    pub broadcasts: u64,
    /// Replies (final values and errors) published by this process's nodes.
    pub replies: u64,
    /// Stream items published by this process's nodes.
    pub stream_items: u64,
    /// Incoming messages that were not valid happen events (malformed JSON, missing or
    /// wrongly typed fields).
    pub malformed: u64,
    /// Incoming messages larger than `max_message_bytes`.
    pub oversized: u64,
    /// Messages with an unknown or unexpected `Happen-Frame`/`Happen-Status`, or stream
    /// protocol violations (items beyond the granted credit).
    pub protocol_errors: u64,
    /// Replies or frames that arrived for a request nobody waits for any more.
    pub unmatched: u64,
    /// `SlowConsumer` events from the client: a subscription buffer overflowed and messages
    /// were dropped (raise `subscription_capacity`).
    pub slow_consumer: u64,
    /// Times the connection was lost.
    pub disconnects: u64,
    /// Requests failed because the connection was lost before the reply arrived.
    pub failed_on_disconnect: u64,
    /// Remote stream producers given up because the consumer stopped granting credit.
    pub stalled_streams: u64,
    /// Most stream items a producer of this process had in flight (sent, not yet credited back).
    pub max_stream_in_flight: u64,
    /// Direct messages that reached a node of this process after it stopped taking new ones
    /// (detach, shutdown) and were passed back to the server for another replica.
    pub forwarded: u64,
    /// Answers of this process's nodes that found the outgoing buffer full and waited in the
    /// overflow queue instead of holding up their node's serve task.
    pub answers_overflowed: u64,
    /// Broadcasts a node of this process decoded (one per node that took it).
    pub broadcasts_decoded: u64,
    /// Broadcasts a node of this process skipped without decoding: their `Happen-Type` names
    /// a type the node has no handler for.
    pub broadcasts_skipped: u64,
    /// Sends, tells and broadcasts accepted while disconnected (buffered for the reconnect;
    /// see `transport.nats.disconnected_buffer`).
    pub buffered_while_disconnected: u64,
    /// Sends, tells and broadcasts refused while disconnected because the buffer was full.
    pub rejected_while_disconnected: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) sent: AtomicU64,
    pub(crate) broadcasts: AtomicU64,
    pub(crate) replies: AtomicU64,
    pub(crate) stream_items: AtomicU64,
    pub(crate) malformed: AtomicU64,
    pub(crate) oversized: AtomicU64,
    pub(crate) protocol_errors: AtomicU64,
    pub(crate) unmatched: AtomicU64,
    pub(crate) slow_consumer: AtomicU64,
    pub(crate) disconnects: AtomicU64,
    pub(crate) failed_on_disconnect: AtomicU64,
    pub(crate) stalled_streams: AtomicU64,
    pub(crate) max_stream_in_flight: AtomicU64,
    pub(crate) forwarded: AtomicU64,
    pub(crate) answers_overflowed: AtomicU64,
    pub(crate) broadcasts_decoded: AtomicU64,
    pub(crate) broadcasts_skipped: AtomicU64,
    pub(crate) buffered_while_disconnected: AtomicU64,
    pub(crate) rejected_while_disconnected: AtomicU64,
}

pub(crate) fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    pub(crate) fn snapshot(&self) -> NatsStats {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        NatsStats {
            sent: r(&self.sent),
            broadcasts: r(&self.broadcasts),
            replies: r(&self.replies),
            stream_items: r(&self.stream_items),
            malformed: r(&self.malformed),
            oversized: r(&self.oversized),
            protocol_errors: r(&self.protocol_errors),
            unmatched: r(&self.unmatched),
            slow_consumer: r(&self.slow_consumer),
            disconnects: r(&self.disconnects),
            failed_on_disconnect: r(&self.failed_on_disconnect),
            stalled_streams: r(&self.stalled_streams),
            max_stream_in_flight: r(&self.max_stream_in_flight),
            forwarded: r(&self.forwarded),
            answers_overflowed: r(&self.answers_overflowed),
            broadcasts_decoded: r(&self.broadcasts_decoded),
            broadcasts_skipped: r(&self.broadcasts_skipped),
            buffered_while_disconnected: r(&self.buffered_while_disconnected),
            rejected_while_disconnected: r(&self.rejected_while_disconnected),
        }
    }

    /// Counts a bad incoming message (and reports it to `metrics`).
    pub(crate) fn bad_input(&self, kind: &'static str) {
        match kind {
            "oversized" => inc(&self.oversized),
            "protocol" => inc(&self.protocol_errors),
            _ => inc(&self.malformed),
        }
        metrics::counter!("happen_nats_bad_messages_total", "kind" => kind).increment(1);
    }
}
