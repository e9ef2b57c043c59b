//! The restart schedule for supervised services.
//!
//! A service that exits is restarted after a delay that starts at
//! `initial_ms` and doubles with each consecutive quick exit, up to `max_ms`.
//! A run that lasted at least `stable_after_ms` counts as healthy: the next
//! exit starts the schedule over. The schedule is a pure function of the
//! streak of quick exits, so it is tested here without clocks.

/// Restart delays for one service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Delay before the first restart after a healthy run.
    pub initial_ms: u64,
    /// The delay never grows beyond this.
    pub max_ms: u64,
    /// A run at least this long resets the schedule.
    pub stable_after_ms: u64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial_ms: 100,
            max_ms: 30_000,
            stable_after_ms: 60_000,
        }
    }
}

impl Backoff {
    /// The delay before restarting, given the streak of consecutive quick
    /// exits including the one that just happened (so the first exit is 1).
    pub fn delay_ms(&self, streak: u32) -> u64 {
        let doublings = streak.saturating_sub(1).min(63);
        let factor = 1u64 << doublings;
        self.initial_ms.saturating_mul(factor).min(self.max_ms)
    }

    /// The streak after a run of `ran_ms` ended, given the streak before it.
    pub fn next_streak(&self, streak: u32, ran_ms: u64) -> u32 {
        if ran_ms >= self.stable_after_ms {
            1
        } else {
            streak.saturating_add(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_schedule_doubles_to_thirty_seconds() {
        let b = Backoff::default();
        let want = [100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000];
        let got: Vec<u64> = (1..=want.len() as u32).map(|s| b.delay_ms(s)).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn schedule_table() {
        let cases: &[(Backoff, u32, u64)] = &[
            (
                Backoff {
                    initial_ms: 100,
                    max_ms: 30_000,
                    stable_after_ms: 60_000,
                },
                0,
                100,
            ),
            (
                Backoff {
                    initial_ms: 100,
                    max_ms: 30_000,
                    stable_after_ms: 60_000,
                },
                1,
                100,
            ),
            (
                Backoff {
                    initial_ms: 100,
                    max_ms: 30_000,
                    stable_after_ms: 60_000,
                },
                64,
                30_000,
            ),
            (
                Backoff {
                    initial_ms: 100,
                    max_ms: 30_000,
                    stable_after_ms: 60_000,
                },
                u32::MAX,
                30_000,
            ),
            (
                Backoff {
                    initial_ms: 250,
                    max_ms: 1_000,
                    stable_after_ms: 5_000,
                },
                3,
                1_000,
            ),
            (
                Backoff {
                    initial_ms: 5,
                    max_ms: 5,
                    stable_after_ms: 5_000,
                },
                10,
                5,
            ),
            (
                Backoff {
                    initial_ms: u64::MAX / 2,
                    max_ms: u64::MAX,
                    stable_after_ms: 1,
                },
                3,
                u64::MAX,
            ),
        ];
        for (b, streak, delay) in cases {
            assert_eq!(b.delay_ms(*streak), *delay, "{b:?} streak {streak}");
        }
    }

    #[test]
    fn streak_resets_after_a_stable_run() {
        let b = Backoff::default();
        let cases: &[(u32, u64, u32)] = &[
            (0, 10, 1),
            (1, 10, 2),
            (5, 59_999, 6),
            (5, 60_000, 1),
            (9, 3_600_000, 1),
            (u32::MAX, 0, u32::MAX),
        ];
        for (streak, ran, next) in cases {
            assert_eq!(b.next_streak(*streak, *ran), *next, "streak {streak} ran {ran}");
        }
    }

    #[test]
    fn crash_loop_then_recovery() {
        // Five quick crashes, one long run, then a crash: 100..1600, then 100 again.
        let b = Backoff::default();
        let mut streak = 0;
        let mut delays = Vec::new();
        for ran in [10, 10, 10, 10, 10, 120_000, 10] {
            streak = b.next_streak(streak, ran);
            delays.push(b.delay_ms(streak));
        }
        assert_eq!(delays, [100, 200, 400, 800, 1600, 100, 200]);
    }
}
