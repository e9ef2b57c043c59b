//! How fast the scrub reads: a byte rate, and the chunk size and schedule
//! that keep each read short and the average at or below the rate. Pure:
//! time is a parameter (CLOCK_MONOTONIC nanoseconds).

/// The scrub reads whole verity blocks.
pub const BLOCK: u64 = 4096;
/// The largest single read: one read per tick stays well under a millisecond.
pub const MAX_CHUNK: u64 = 256 * 1024;
/// Reads per second the chunk size aims for at low rates, so that a slow
/// scrub wakes the agent rarely but still reads in small, even steps.
const READS_PER_SECOND: u64 = 32;
const NS_PER_S: u128 = 1_000_000_000;

/// The read schedule: the next read is due at `due`; each read of `n`
/// bytes moves it on by the time `n` bytes take at the rate. A late tick
/// may catch up by at most one chunk, so a stalled agent never bursts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pace {
    /// Bytes per second.
    rate: u64,
    chunk: u64,
    due: u64,
}

impl Pace {
    /// `rate` in bytes per second (at least 1), starting at `now`.
    pub fn new(rate: u64, now: u64) -> Pace {
        let rate = rate.max(1);
        Pace {
            rate,
            chunk: chunk_for(rate),
            due: now,
        }
    }

    /// Bytes per read.
    pub fn chunk(&self) -> u64 {
        self.chunk
    }

    /// When the next read may happen.
    pub fn due(&self) -> u64 {
        self.due
    }

    pub fn ready(&self, now: u64) -> bool {
        now >= self.due
    }

    /// How long `bytes` take at the rate, in nanoseconds (rounded up).
    pub fn time_for(&self, bytes: u64) -> u64 {
        let ns = (bytes as u128 * NS_PER_S).div_ceil(self.rate as u128);
        ns.min(u64::MAX as u128) as u64
    }

    /// A read of `bytes` happened at `now`.
    pub fn read(&mut self, bytes: u64, now: u64) {
        let floor = now.saturating_sub(self.time_for(self.chunk));
        self.due = self.due.max(floor).saturating_add(self.time_for(bytes));
    }
}

/// A thirty-second of a second's worth of bytes, in whole blocks, between
/// one block and [`MAX_CHUNK`].
pub fn chunk_for(rate: u64) -> u64 {
    let want = rate / READS_PER_SECOND / BLOCK * BLOCK;
    want.clamp(BLOCK, MAX_CHUNK)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    const MS: u64 = 1_000_000;
    const S: u64 = 1_000 * MS;

    #[test]
    fn chunk_table() {
        let cases = [
            (1, BLOCK),
            (64 * 1024, BLOCK),
            (MIB, 32 * 1024),
            (MIB + 1, 32 * 1024),
            (3 * MIB, 96 * 1024),
            (8 * MIB, MAX_CHUNK),
            (4096 * MIB, MAX_CHUNK),
        ];
        for (rate, want) in cases {
            assert_eq!(chunk_for(rate), want, "rate {rate}");
            assert_eq!(chunk_for(rate) % BLOCK, 0);
        }
    }

    /// Reads as often as a fast poll loop would let it (a tick every
    /// `tick` ns) for `span` ns, and returns the bytes read.
    fn drive(pace: &mut Pace, start: u64, span: u64, tick: u64) -> u64 {
        let mut bytes = 0;
        let mut now = start;
        while now < start + span {
            if pace.ready(now) {
                pace.read(pace.chunk(), now);
                bytes += pace.chunk();
            }
            now += tick;
        }
        bytes
    }

    #[test]
    fn reads_stay_at_the_rate_over_any_window() {
        for rate in [MIB / 2, MIB, 8 * MIB, 100 * MIB] {
            for tick in [MS / 10, MS, 7 * MS] {
                let mut pace = Pace::new(rate, 5 * S);
                let bytes = drive(&mut pace, 5 * S, 10 * S, tick);
                let limit = rate * 10 + pace.chunk();
                assert!(bytes <= limit, "rate {rate} tick {tick}: {bytes} > {limit}");
                // Ticks no coarser than a chunk's time keep the rate within 10 %,
                // or one chunk of lateness per read below it.
                let chunk_ns = pace.time_for(pace.chunk());
                if tick * 10 <= chunk_ns {
                    assert!(bytes * 10 >= rate * 10 * 9, "rate {rate} tick {tick}: only {bytes}");
                }
            }
        }
    }

    #[test]
    fn a_stalled_agent_catches_up_by_one_chunk_at_most() {
        let mut pace = Pace::new(8 * MIB, 0);
        assert!(pace.ready(0));
        pace.read(pace.chunk(), 0);
        let step = pace.time_for(pace.chunk());
        assert_eq!(step, 31_250_000, "256 KiB at 8 MiB/s is 31.25 ms");
        assert_eq!(pace.due(), step);
        assert!(!pace.ready(step - 1));
        // The agent was busy for ten seconds: two reads at once, no more.
        let late = 10 * S;
        let mut burst = 0;
        while pace.ready(late) {
            pace.read(pace.chunk(), late);
            burst += 1;
        }
        assert_eq!(burst, 2);
        assert_eq!(pace.due(), late + step);
    }

    #[test]
    fn a_short_read_moves_the_schedule_by_what_it_read() {
        let mut pace = Pace::new(MIB, 0);
        pace.read(BLOCK, 0);
        assert_eq!(pace.due(), (BLOCK as u128 * 1_000_000_000).div_ceil(MIB as u128) as u64);
    }
}
