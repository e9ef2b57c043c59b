//! The disk basalt boots from, as bytes: the GPT around it, the dm-verity
//! hash tree of a root slot, and the signed manifest area at a slot's end.
//!
//! basalt-mkimage builds these on the host; basalt-init and the agent parse
//! them on the node. See docs/disk-layout.md.

pub mod boot_entry;
pub mod crc32;
pub mod gpt;
pub mod slot;
pub mod verity;
