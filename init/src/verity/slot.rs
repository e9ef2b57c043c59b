//! Trusting a root slot's tail: the partition must hold the image, its tree
//! and the 64 KiB manifest area, and that area must carry a manifest signed
//! by the compiled-in key that is byte for byte the initramfs's own (a UKI
//! never mounts a root from another build).

use super::partition::Partition;
use crate::image::SignedManifest;
use basalt_common::disk::slot::{self, Area, AREA_SIZE};
use basalt_common::keys::PublicKey;
use basalt_common::manifest::{self, ManifestError, Verity};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};

/// A slot whose manifest area checked out.
#[derive(Debug, Clone)]
pub struct CheckedSlot {
    pub partition: Partition,
    /// The partition's size in bytes.
    pub size: u64,
    pub verity: Verity,
}

impl CheckedSlot {
    /// Bytes of image and tree: what `basalt.root=ram` copies.
    pub fn tree_end(&self) -> u64 {
        tree_end(&self.verity)
    }
}

pub fn tree_end(v: &Verity) -> u64 {
    let block = basalt_common::disk::verity::BLOCK_SIZE as u64;
    v.hash_offset.saturating_add(v.hash_blocks.saturating_mul(block))
}

#[derive(Debug)]
pub enum SlotCause {
    NoKey,
    /// The initramfs manifest names no verity tree: it was not built for a slot.
    NoVerity,
    Open(io::Error),
    Size(io::Error),
    Truncated {
        size: u64,
        need: u64,
    },
    ReadArea(io::Error),
    Area(slot::SlotError),
    Empty,
    Signature(ManifestError),
    Mismatch,
}

/// Why a slot was refused, naming the partition.
#[derive(Debug)]
pub struct SlotError {
    pub label: String,
    pub node: String,
    pub cause: SlotCause,
}

impl std::fmt::Display for SlotError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "root slot {} ({}): ", self.label, self.node)?;
        match &self.cause {
            SlotCause::NoKey => write!(f, "no image key compiled into basalt-init"),
            SlotCause::NoVerity => write!(
                f,
                "the initramfs manifest has no verity object (this image was not built for a disk slot)"
            ),
            SlotCause::Open(e) => write!(f, "open: {e}"),
            SlotCause::Size(e) => write!(f, "size: {e}"),
            SlotCause::Truncated { size, need } => write!(
                f,
                "partition is truncated: {size} bytes, the image, its verity tree and the manifest area need {need}"
            ),
            SlotCause::ReadArea(e) => write!(f, "read the manifest area: {e}"),
            SlotCause::Area(e) => write!(f, "{e}"),
            SlotCause::Empty => write!(f, "empty slot: its manifest area is all zeros"),
            SlotCause::Signature(e) => write!(f, "bad slot manifest: {e}"),
            SlotCause::Mismatch => write!(
                f,
                "slot manifest is signed but differs from the initramfs manifest (another build's root)"
            ),
        }
    }
}

/// Opens a partition (or, in tests, a file) read-only and gives its size.
pub fn open_sized(node: &str) -> io::Result<(File, Result<u64, io::Error>)> {
    let file = OpenOptions::new().read(true).custom_flags(libc::O_CLOEXEC).open(node)?;
    let size = file.metadata().and_then(|m| {
        if m.file_type().is_block_device() {
            crate::sys::block_device_size(file.as_fd())
        } else {
            Ok(m.len())
        }
    });
    Ok((file, size))
}

/// Checks the partition's size and its manifest area against the
/// initramfs's verified manifest.
pub fn check_slot(
    partition: &Partition,
    initramfs: &SignedManifest,
    key: Option<PublicKey>,
) -> Result<CheckedSlot, SlotError> {
    let fail = |cause| SlotError {
        label: partition.label.clone(),
        node: partition.node.clone(),
        cause,
    };
    let key = key.ok_or_else(|| fail(SlotCause::NoKey))?;
    let verity = initramfs
        .manifest
        .verity
        .clone()
        .ok_or_else(|| fail(SlotCause::NoVerity))?;
    let (file, size) = open_sized(&partition.node).map_err(|e| fail(SlotCause::Open(e)))?;
    let size = size.map_err(|e| fail(SlotCause::Size(e)))?;
    // The initramfs's manifest says how much the slot must hold; a shorter
    // partition has lost its tail, and with it the real manifest area.
    let need = tree_end(&verity).saturating_add(AREA_SIZE);
    if size < need {
        return Err(fail(SlotCause::Truncated { size, need }));
    }
    let mut area = vec![0u8; AREA_SIZE as usize];
    file.read_exact_at(&mut area, size - AREA_SIZE)
        .map_err(|e| fail(SlotCause::ReadArea(e)))?;
    let (json, signature) = match slot::decode_area(&area).map_err(|e| fail(SlotCause::Area(e)))? {
        Area::Empty => return Err(fail(SlotCause::Empty)),
        Area::Signed { json, signature } => (json, signature),
    };
    // The signature first: a flipped byte anywhere in the manifest or its
    // signature is reported as what it is, not as a mismatch.
    manifest::verify_manifest(json, signature, &key).map_err(|e| fail(SlotCause::Signature(e)))?;
    if json != initramfs.json.as_slice() || signature.as_slice() != initramfs.signature.as_slice() {
        return Err(fail(SlotCause::Mismatch));
    }
    Ok(CheckedSlot {
        partition: partition.clone(),
        size,
        verity,
    })
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use basalt_common::disk::verity::build_tree;
    use basalt_common::keys::SigningKey;
    use basalt_common::manifest::{build_manifest, ImageDigest, Manifest};

    /// A slot as mkimage lays it out: image padded to 4096, tree, zeros,
    /// manifest area in the last 64 KiB. Returns the slot bytes and the
    /// initramfs's copy of the manifest.
    pub fn build_slot(image: &[u8], slot_size: usize, key: &SigningKey) -> (Vec<u8>, SignedManifest) {
        let salt = [7u8; 32];
        let mut padded = image.to_vec();
        padded.resize(image.len().div_ceil(4096) * 4096, 0);
        let tree = build_tree(&padded, &salt).unwrap();
        let m = Manifest {
            version: "t".into(),
            kernel: "k".into(),
            image: ImageDigest {
                size: image.len() as u64,
                sha256: crate::digest::sha256(image),
            },
            modules: vec![],
            handoff: "/sbin/basalt-agent".into(),
            verity: Some(tree.params()),
        };
        let json = build_manifest(&m);
        let signature = key.sign(&json);
        let mut bytes = padded;
        bytes.extend_from_slice(&tree.tree);
        assert!(
            bytes.len() + AREA_SIZE as usize <= slot_size,
            "slot too small for the test image"
        );
        bytes.resize(slot_size - AREA_SIZE as usize, 0);
        bytes.extend_from_slice(&slot::encode_area(&json, &signature).unwrap());
        let signed = SignedManifest {
            manifest: m,
            json,
            signature: signature.to_vec(),
        };
        (bytes, signed)
    }

    pub struct TempFile(pub std::path::PathBuf);
    impl TempFile {
        pub fn new(tag: &str, bytes: &[u8]) -> TempFile {
            let p = std::env::temp_dir().join(format!("basalt-slot-{tag}-{}", std::process::id()));
            std::fs::write(&p, bytes).unwrap();
            TempFile(p)
        }
        pub fn partition(&self) -> Partition {
            Partition {
                label: "ROOT-A".into(),
                name: "vda2".into(),
                node: self.0.display().to_string(),
            }
        }
    }
    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    pub fn image() -> Vec<u8> {
        (0..150_000u32).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[test]
    fn a_good_slot_checks_out() {
        let key = SigningKey::from_seed(&[5; 32]).unwrap();
        let (bytes, signed) = build_slot(&image(), 1 << 20, &key);
        let f = TempFile::new("good", &bytes);
        let slot = check_slot(&f.partition(), &signed, Some(key.public_key())).unwrap();
        assert_eq!(slot.size, 1 << 20);
        // 37 data blocks, one hash block.
        assert_eq!((slot.verity.data_blocks, slot.verity.hash_blocks), (37, 1));
        assert_eq!(slot.tree_end(), 38 * 4096);
    }

    #[test]
    fn refused_slots() {
        let key = SigningKey::from_seed(&[5; 32]).unwrap();
        let other = SigningKey::from_seed(&[6; 32]).unwrap();
        let (good, signed) = build_slot(&image(), 1 << 20, &key);
        let area_at = (1 << 20) - AREA_SIZE as usize;
        let flip = |at: usize| {
            let mut b = good.clone();
            b[at] ^= 0x01;
            b
        };
        let (foreign, _) = build_slot(&image()[..100_000], 1 << 20, &key);
        let mut empty = good.clone();
        empty[area_at..].fill(0);
        let mut no_verity = signed.clone();
        no_verity.manifest.verity = None;
        let prefix = "root slot ROOT-A (";
        // (case, slot bytes, initramfs manifest, key, expected end of the error)
        let cases: Vec<(&str, Vec<u8>, &SignedManifest, &SigningKey, String)> = vec![
            (
                "flip in the json",
                flip(area_at + 40),
                &signed,
                &key,
                format!(
                    "bad slot manifest: manifest signature does not verify with image key {}",
                    key.public_key().key_id()
                ),
            ),
            (
                "flip in the signature",
                flip(area_at + 20 + signed.json.len() + 3),
                &signed,
                &key,
                "bad slot manifest: manifest signature does not verify".into(),
            ),
            (
                "flip in the magic",
                flip(area_at),
                &signed,
                &key,
                "manifest area: no BASALTRM magic and not all zeros".into(),
            ),
            (
                "flip after the signature",
                flip(area_at + 30_000),
                &signed,
                &key,
                "manifest area: non-zero byte at offset 30000, after the signature".into(),
            ),
            (
                "wrong key",
                good.clone(),
                &signed,
                &other,
                format!(
                    "bad slot manifest: manifest signature does not verify with image key {}",
                    other.public_key().key_id()
                ),
            ),
            (
                "another build",
                foreign,
                &signed,
                &key,
                "slot manifest is signed but differs from the initramfs manifest (another build's root)".into(),
            ),
            (
                "empty",
                empty,
                &signed,
                &key,
                "empty slot: its manifest area is all zeros".into(),
            ),
            (
                "truncated",
                good[..38 * 4096 + 65535].to_vec(),
                &signed,
                &key,
                format!(
                    "partition is truncated: {} bytes, the image, its verity tree and the manifest area need {}",
                    38 * 4096 + 65535,
                    38 * 4096 + 65536
                ),
            ),
            (
                "no verity",
                good.clone(),
                &no_verity,
                &key,
                "the initramfs manifest has no verity object".into(),
            ),
        ];
        for (name, bytes, initramfs, k, want) in cases {
            let f = TempFile::new("refused", &bytes);
            let err = check_slot(&f.partition(), initramfs, Some(k.public_key()))
                .unwrap_err()
                .to_string();
            assert!(err.starts_with(prefix), "{name}: {err}");
            assert!(err.contains(&f.0.display().to_string()), "{name}: {err}");
            let tail = &err[err.find("): ").unwrap() + 3..];
            assert!(tail.starts_with(&want), "{name}: {err}");
        }
    }
}
