//! Restart delays: exponential, capped, and forgiven once a service has run long enough.

use std::time::Duration;

/// A service that ran at least this long before exiting starts again from the first delay.
pub const RESET_AFTER: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    /// Consecutive quick exits so far.
    failures: u32,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max: max.max(initial),
            failures: 0,
        }
    }

    /// The delay before the next start of a service that exited after running `ran_for`:
    /// initial, 2×, 4×, … up to max; a run of at least [`RESET_AFTER`] resets it.
    pub fn next_delay(&mut self, ran_for: Duration) -> Duration {
        if ran_for >= RESET_AFTER {
            self.failures = 0;
        }
        let factor = 1u32.checked_shl(self.failures.min(31)).unwrap_or(u32::MAX);
        let delay = self
            .initial
            .checked_mul(factor)
            .map_or(self.max, |d| d.min(self.max));
        self.failures = self.failures.saturating_add(1);
        delay
    }

    #[cfg(test)]
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn doubles_up_to_the_cap() {
        let mut b = Backoff::new(ms(200), ms(1500));
        let got: Vec<_> = (0..6).map(|_| b.next_delay(ms(5))).collect();
        assert_eq!(
            got,
            [ms(200), ms(400), ms(800), ms(1500), ms(1500), ms(1500)]
        );
        assert_eq!(b.failures(), 6);
    }

    #[test]
    fn a_long_run_resets_it() {
        let mut b = Backoff::new(ms(100), ms(10_000));
        b.next_delay(ms(1));
        b.next_delay(ms(1));
        assert_eq!(b.next_delay(ms(1)), ms(400));
        assert_eq!(b.next_delay(RESET_AFTER), ms(100));
        assert_eq!(b.next_delay(ms(1)), ms(200));
    }

    #[test]
    fn never_overflows() {
        let mut b = Backoff::new(ms(1), Duration::from_secs(60));
        for _ in 0..100 {
            assert!(b.next_delay(ms(0)) <= Duration::from_secs(60));
        }
        let mut b = Backoff::new(Duration::from_secs(u64::MAX / 4), Duration::MAX);
        for _ in 0..100 {
            b.next_delay(ms(0));
        }
        assert_eq!(b.failures(), 100);
    }
}
