//! Formats shared by basalt's on-node programs and its host tools.
//!
//! Everything here is a pure function over bytes: no files, no clocks, no
//! syscalls. That keeps it testable without root and fuzzable.

pub mod b64;
pub mod backoff;
pub mod bundle;
pub mod cmdline;
pub mod command;
pub mod config;
pub mod disk;
pub mod envelope;
pub mod hex;
pub mod json;
pub mod keys;
pub mod lockdown;
pub mod manifest;
pub mod pem;
pub mod procfs;
pub mod proto;
pub mod splitmix;
pub mod state_record;
pub mod text;
