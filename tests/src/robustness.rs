//! Shared by the robustness suites (tests/tests/{tamper,abuse,storms}.rs):
//! the size profile, a seeded generator, and the one-line figures each test
//! reports.
//!
//! `BASALT_ROBUSTNESS=long` (what `make robustness` sets) runs the full
//! figures of docs/robustness.md; unset or `short` runs the bounded versions
//! `make test` includes. Any other value is a mistake and fails the test.

use crate::Build;
use std::io::Write;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    Short,
    Long,
}

impl Profile {
    pub fn from_env() -> Profile {
        match std::env::var("BASALT_ROBUSTNESS").as_deref() {
            Err(_) | Ok("") | Ok("short") => Profile::Short,
            Ok("long") => Profile::Long,
            Ok(other) => panic!("BASALT_ROBUSTNESS={other:?}: expected short or long"),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Profile::Short => "short",
            Profile::Long => "long",
        }
    }

    /// The short or the long figure.
    pub fn pick<T>(self, short: T, long: T) -> T {
        match self {
            Profile::Short => short,
            Profile::Long => long,
        }
    }
}

/// SplitMix64 (Steele, Lea, Flood 2014): a seeded, reproducible stream of
/// 64-bit values. Not for secrets; for choosing offsets and garbage that a
/// failing run can regenerate from its seed.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A value in `0..n` (n > 0). The modulo bias is below 2^-40 for the
    /// sizes used here, far under anything a test could notice.
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0);
        self.next_u64() % n
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// A seed from `var` if set (decimal or 0x-hex), else `default`, so a
/// failure can be replayed with the seed it printed.
pub fn seed_from_env(var: &str, default: u64) -> u64 {
    match std::env::var(var) {
        Err(_) => default,
        Ok(v) => {
            let parsed = match v.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => v.parse(),
            };
            parsed.unwrap_or_else(|e| panic!("{var}={v:?}: {e}"))
        }
    }
}

/// Prints one machine-readable line, `ROBUSTNESS <what> k=v ...`, and
/// appends it to `test-logs/robustness.txt` in the build directory (the
/// figures docs/robustness.md quotes). `cargo test` hides stdout of passing
/// tests; `make robustness` runs with `--nocapture`.
pub fn report(build: &Build, what: &str, fields: &[(&str, String)]) {
    let mut line = format!("ROBUSTNESS {what} profile={}", Profile::from_env().name());
    for (k, v) in fields {
        line.push_str(&format!(" {k}={v}"));
    }
    println!("{line}");
    let path = build.log_dir().join("robustness.txt");
    if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(&path) {
        let _ = writeln!(f, "{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_matches_the_reference_values() {
        // The first outputs for seed 1234567, from the reference C code.
        let mut r = SplitMix64::new(1234567);
        let want = [
            6457827717110365317u64,
            3203168211198807973,
            9817491932198370423,
            4593380528125082431,
            16408922859458223821,
        ];
        for w in want {
            assert_eq!(r.next_u64(), w);
        }
    }

    #[test]
    fn below_stays_in_range_and_fill_is_reproducible() {
        let mut r = SplitMix64::new(7);
        for n in [1u64, 2, 3, 1000, u64::MAX] {
            for _ in 0..100 {
                assert!(r.below(n) < n);
            }
        }
        let (mut a, mut b) = (vec![0u8; 13], vec![0u8; 13]);
        SplitMix64::new(9).fill(&mut a);
        SplitMix64::new(9).fill(&mut b);
        assert_eq!(a, b);
        assert_ne!(a, vec![0u8; 13]);
    }
}
