//! Shared by the robustness suites (tests/tests/{tamper,abuse,storms}.rs):
//! the size profile, the seeded generator (basalt_common::splitmix), and the
//! one-line figures each test reports.
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

pub use basalt_common::splitmix::SplitMix64;

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
