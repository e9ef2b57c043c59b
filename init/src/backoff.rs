//! Restart delays: exponential, capped, and forgiven after a stable run.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    /// A run at least this long resets the delay to `initial`.
    pub stable_after: Duration,
}

/// The handoff program is the only way into the node: bring it back fast.
pub const HANDOFF: Backoff = Backoff {
    initial: Duration::from_millis(100),
    max: Duration::from_secs(10),
    stable_after: Duration::from_secs(30),
};

impl Backoff {
    /// The delay before restart number `failures` (1 = first restart).
    pub fn delay(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(31);
        self.initial.saturating_mul(1 << doublings).min(self.max)
    }

    /// The failure count after a run of `ran` that followed `failures` failures.
    pub fn after_exit(&self, failures: u32, ran: Duration) -> u32 {
        if ran >= self.stable_after {
            1
        } else {
            failures.saturating_add(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule() {
        let b = HANDOFF;
        let ms = |n| Duration::from_millis(n);
        let cases = [
            (1, ms(100)),
            (2, ms(200)),
            (3, ms(400)),
            (7, ms(6400)),
            (8, ms(10_000)),
            (1000, ms(10_000)),
        ];
        for (failures, want) in cases {
            assert_eq!(b.delay(failures), want, "failure {failures}");
        }
        assert_eq!(b.delay(0), ms(100));
    }

    #[test]
    fn stable_run_resets() {
        let b = HANDOFF;
        assert_eq!(b.after_exit(0, Duration::from_secs(1)), 1);
        assert_eq!(b.after_exit(5, Duration::from_secs(29)), 6);
        assert_eq!(b.after_exit(5, Duration::from_secs(30)), 1);
        assert_eq!(b.after_exit(u32::MAX, Duration::ZERO), u32::MAX);
    }
}
