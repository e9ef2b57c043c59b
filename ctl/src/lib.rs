//! basaltctl: the operator's side of basalt. Generates keys, signs configs
//! and commands, and talks to basalt-agent over serial, vsock or a unix
//! socket. The binary is a thin wrapper around [`cli::run`], so tests can
//! drive the whole command line in-process.

pub mod cli;
pub mod client;
pub mod endpoint;
pub mod render;
pub mod upgrade;
