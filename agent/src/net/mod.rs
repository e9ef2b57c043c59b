//! Networking (issue 14): the pure codecs the agent will configure links
//! with. Nothing here touches a socket yet; docs/network.md says what is
//! wired and what is not.

pub mod dhcp;
pub mod netlink;
