//! The one exponential back-off of the transport: reconnects, durable redeliveries and the
//! retries of durable publishes, records and dead letters.

use std::time::Duration;

/// A delay that doubles per failure, from `first_ms` up to `max_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Backoff {
    first_ms: u64,
    max_ms: u64,
}

impl Backoff {
    /// Doubling from `first_ms`, at most `max_ms` milliseconds.
    pub(crate) const fn new(first_ms: u64, max_ms: u64) -> Backoff {
        Backoff { first_ms, max_ms }
    }

    /// `first_ms` doubled `doublings` times (at most 20), at most `max_ms`.
    pub(crate) fn delay(&self, doublings: usize) -> Duration {
        let shift = doublings.min(20) as u32;
        Duration::from_millis(self.first_ms.saturating_mul(1u64 << shift).min(self.max_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap() {
        let b = Backoff::new(100, 350);
        let ms = |n| b.delay(n).as_millis();
        assert_eq!((ms(0), ms(1), ms(2), ms(60)), (100, 200, 350, 350));
        // no overflow however large the start
        assert_eq!(
            Backoff::new(u64::MAX, u64::MAX).delay(20).as_millis(),
            u64::MAX as u128
        );
    }
}
