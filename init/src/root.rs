//! The mounted root, whichever way it came: an image file hashed whole
//! behind a loop device, or a root slot through dm-verity. What the boot
//! report says about it.

use crate::boot_report::VerityFacts;
use crate::image::VerifiedImage;
use crate::loopdev::LoopDevice;
use crate::verity::{CheckedSlot, VerityRoot};

/// Held until the handoff: dropping it closes init's own descriptors (the
/// kernel keeps what the mount needs).
#[derive(Debug)]
pub enum MountedRoot {
    Image { image: VerifiedImage, loopdev: LoopDevice },
    Slot { slot: CheckedSlot, root: VerityRoot },
}

impl MountedRoot {
    /// Where the image was read from: the initramfs path, the device or the partition.
    pub fn origin(&self) -> &str {
        match self {
            MountedRoot::Image { image, .. } => &image.origin,
            MountedRoot::Slot { slot, .. } => &slot.partition.node,
        }
    }

    pub fn copied_to_ram(&self) -> bool {
        match self {
            MountedRoot::Image { image, .. } => image.copied,
            MountedRoot::Slot { root, .. } => root.loop_device.is_some(),
        }
    }

    pub fn loop_device(&self) -> Option<&str> {
        match self {
            MountedRoot::Image { loopdev, .. } => Some(&loopdev.path),
            MountedRoot::Slot { root, .. } => root.loop_device.as_ref().map(|l| l.path.as_str()),
        }
    }

    /// The block device the SquashFS is mounted from.
    pub fn device(&self) -> &str {
        match self {
            MountedRoot::Image { loopdev, .. } => &loopdev.path,
            MountedRoot::Slot { root, .. } => &root.node,
        }
    }

    pub fn verity(&self) -> Option<VerityFacts<'_>> {
        match self {
            MountedRoot::Image { .. } => None,
            MountedRoot::Slot { slot, root } => Some(VerityFacts {
                partition: &slot.partition.label,
                mode: root.mode.as_str(),
                device: &root.node,
                root_hash: root.root_hash,
                data_blocks: slot.verity.data_blocks,
                copied_bytes: root.copied,
                hashed_up_front: root.hashed,
            }),
        }
    }
}
