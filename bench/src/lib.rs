//! basalt-bench: `make bench`. See bench/README.md for what is measured and
//! how; `suite.rs` runs the parts in order.
//!
//! `line` is shared with the in-guest fixture `bench-handoff` and builds
//! without the `host` feature; everything else is the host side.

pub mod line;

// The host side's modules each start `#![cfg(feature = "host")]`.
pub mod agent;
pub mod boots;
pub mod cli;
pub mod error;
pub mod hashing;
pub mod images;
pub mod report;
pub mod results;
pub mod sizes;
pub mod stats;
pub mod suite;
pub mod svg;
pub mod table;
pub mod targets;
pub mod template;
pub mod upgrade;
