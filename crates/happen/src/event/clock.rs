//! The event timestamp clock.

/// Milliseconds since the Unix epoch, cheaply: the coarse monotonic clock (a few ms of
/// resolution, no hardware counter read) plus an offset to the real-time clock that is
/// re-read at most once a second. Reading the precise real-time clock for every event was
/// 8% of a request/reply round trip on the benchmark machines. A real-time clock set before
/// 1970 reads as 0 instead of panicking.
#[inline]
pub(crate) fn now_ms() -> u64 {
    use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
    static OFFSET_MS: AtomicI64 = AtomicI64::new(0);
    static SYNCED_AT_MS: AtomicU64 = AtomicU64::new(u64::MAX);

    // coarsetime ticks are seconds in fixed point with 32 fractional bits.
    let ticks = coarsetime::Instant::now_without_cache_update().as_ticks();
    let mono_ms = ((ticks as u128 * 1000) >> 32) as u64;
    let synced = SYNCED_AT_MS.load(Ordering::Relaxed);
    if synced == u64::MAX || mono_ms.saturating_sub(synced) >= 1000 {
        let wall_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        // Racing threads store offsets read a moment apart: either is right to the clock's
        // resolution.
        OFFSET_MS.store(wall_ms as i64 - mono_ms as i64, Ordering::Relaxed);
        SYNCED_AT_MS.store(mono_ms, Ordering::Relaxed);
        return wall_ms;
    }
    (mono_ms as i64 + OFFSET_MS.load(Ordering::Relaxed)).max(0) as u64
}

#[cfg(test)]
mod tests {
    #[test]
    fn now_ms_follows_the_real_time_clock() {
        for _ in 0..3 {
            let wall = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as i64;
            let ours = super::now_ms() as i64;
            // Coarse clock resolution (a few ms) plus scheduling slack.
            assert!((ours - wall).abs() < 50, "now_ms {ours} vs wall {wall}");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}
