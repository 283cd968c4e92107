//! The one exponential back-off of the transport: reconnects, durable redeliveries and the
//! retries of durable publishes, records and dead letters.

use std::time::Duration;

/// A delay that doubles per failure, from `first` up to `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Backoff {
    first: Duration,
    max: Duration,
}

impl Backoff {
    /// Doubling from `first`, at most `max`.
    pub(crate) const fn new(first: Duration, max: Duration) -> Backoff {
        Backoff { first, max }
    }

    /// `first` doubled `doublings` times (at most 20), at most `max`.
    pub(crate) fn delay(&self, doublings: usize) -> Duration {
        let shift = doublings.min(20) as u32;
        self.first.saturating_mul(1u32 << shift).min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let ms = |n| b.delay(n).as_millis();
        assert_eq!((ms(0), ms(1), ms(2), ms(60)), (100, 200, 350, 350));
        // no overflow however large the start
        let huge = Duration::from_millis(u64::MAX);
        assert_eq!(Backoff::new(huge, huge).delay(20), huge);
        assert_eq!(Backoff::new(Duration::MAX, huge).delay(20), huge);
    }
}
