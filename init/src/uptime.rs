//! CLOCK_MONOTONIC, the clock every boot timing is measured on. It counts
//! from boot, so init's first reading is also the kernel's share of the boot.

use nix::time::{clock_gettime, ClockId};
use std::time::Duration;

/// Time since boot on CLOCK_MONOTONIC.
pub fn now() -> Duration {
    clock_gettime(ClockId::CLOCK_MONOTONIC)
        .map(|ts| Duration::new(ts.tv_sec() as u64, ts.tv_nsec() as u32))
        .unwrap_or_default()
}
