//! basalt-init, PID1 of a basalt node. `main.rs` is the boot script; each
//! step lives in the module named for it. Everything that can be is a pure
//! function with unit tests; the rest is exercised by the QEMU suite.
// A node program that panics takes the node down: failures are values.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod boot;
pub mod boot_params;
pub mod boot_report;
pub mod console;
pub mod digest;
pub mod harden;
pub mod image;
pub mod log;
pub mod loopdev;
pub mod modules;
pub mod mountinfo;
pub mod mounts;
pub mod reap;
pub mod root;
pub mod shutdown;
pub mod supervise;
pub mod switchroot;
mod sys;
pub mod uptime;
pub mod var;
pub mod verity;
