//! Time, as the agent records it.
//!
//! Timestamps are CLOCK_MONOTONIC nanoseconds. That clock is shared by every
//! process on the node and survives an agent restart, so a restarted agent
//! can still compare against what it recorded, and the kubelet stand-in's
//! own start time is on the same scale.

use nix::time::{clock_gettime, ClockId};

pub const NS_PER_MS: u64 = 1_000_000;

/// Nanoseconds since boot on CLOCK_MONOTONIC.
pub fn now_ns() -> u64 {
    // CLOCK_MONOTONIC cannot fail on Linux; 0 would only make ages look large.
    clock_gettime(ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

/// Seconds since the Unix epoch (wall clock, for humans only).
pub fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub fn ms(ns: u64) -> u64 {
    ns / NS_PER_MS
}

/// Milliseconds with microsecond precision, for measured intervals.
pub fn ms_f64(ns: u64) -> f64 {
    (ns / 1_000) as f64 / 1_000.0
}
