//! A root on a disk partition (a root slot), checked by dm-verity block by
//! block as it is read, so the boot does not hash the whole image.
//!
//! In boot order: `partition` finds the slot by its label, `slot` checks its
//! size and its signed manifest area against the initramfs's manifest, and
//! `root` sets up verity (over a RAM copy or the partition) and mounts the
//! SquashFS from the mapped device. `dm` speaks the device-mapper ioctls and
//! `table` writes the verity target's line.

pub mod corruption;
pub mod dm;
pub mod partition;
pub mod root;
pub mod slot;
pub mod table;
pub mod watch;

pub use partition::Partition;
pub use root::{mount_root, VerityRoot};
pub use slot::{check_slot, CheckedSlot};

use std::path::Path;
use std::time::Duration;

/// Waits for the partition labelled `label` under the real /sys and /dev.
pub fn find_slot(label: &str, wait: Duration) -> Result<Partition, partition::PartitionError> {
    partition::wait_for(Path::new("/sys/class/block"), Path::new("/dev"), label, wait)
}
