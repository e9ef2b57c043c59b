//! DHCPv4: the message codec and the client state machine, both pure. The
//! agent's socket and timer loop drive [`client::Client`] (wired in with the
//! rest of the network section, docs/network.md).

pub mod client;
pub mod message;
