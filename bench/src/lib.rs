//! basalt-bench: `make bench`. See bench/README.md for what is measured and
//! how; `suite.rs` runs the parts in order.
//!
//! `line` is shared with the in-guest fixture `bench-handoff` and builds
//! without the `host` feature; everything else is the host side.
#![deny(unsafe_code)]

pub mod line;

#[cfg(feature = "host")]
pub mod agent;
#[cfg(feature = "host")]
pub mod boots;
#[cfg(feature = "host")]
pub mod cli;
#[cfg(feature = "host")]
pub mod error;
#[cfg(feature = "host")]
pub mod hashing;
#[cfg(feature = "host")]
pub mod images;
#[cfg(feature = "host")]
pub mod load;
#[cfg(feature = "host")]
pub mod report;
#[cfg(feature = "host")]
pub mod results;
#[cfg(feature = "host")]
pub mod sizes;
#[cfg(feature = "host")]
pub mod stats;
#[cfg(feature = "host")]
pub mod suite;
#[cfg(feature = "host")]
pub mod svg;
