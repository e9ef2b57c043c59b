//! A root slot's partition: what is on it (its signed manifest area), and
//! writing a bundle's slot part into it. A slot part is the data and tree
//! (at the partition's start) then the 64 KiB manifest area (at its end);
//! docs/upgrades.md. The partition is a path, so tests use a plain file.

use basalt_common::disk::slot::{self, Area, AREA_SIZE};
use basalt_common::disk::verity::{TreeBuilder, BLOCK_SIZE};
use basalt_common::hex;
use basalt_common::keys::PublicKey;
use basalt_common::manifest::{self, Manifest, Verity};
use nix::fcntl::{posix_fadvise, PosixFadviseAdvice};
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// What a slot holds, from its signed manifest area.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotContents {
    /// An all-zero area: never written, or cleared for a write.
    Empty,
    /// A manifest area that verifies with the image key.
    Image { version: String, verity: Verity },
    /// Something that is not a verified image manifest.
    Invalid(String),
}

impl SlotContents {
    pub fn version(&self) -> Option<&str> {
        match self {
            SlotContents::Image { version, .. } => Some(version),
            _ => None,
        }
    }

    pub fn root_hash(&self) -> Option<String> {
        match self {
            SlotContents::Image { verity, .. } => Some(hex::encode(&verity.root_hash)),
            _ => None,
        }
    }
}

pub struct SlotDevice {
    pub path: PathBuf,
    file: File,
    size: u64,
}

impl SlotDevice {
    pub fn open(path: &Path, write: bool) -> Result<SlotDevice, String> {
        let file = OpenOptions::new()
            .read(true)
            .write(write)
            .open(path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        // A block device's metadata says 0 bytes; its end says its size.
        let size = (&file)
            .seek(SeekFrom::End(0))
            .map_err(|e| format!("cannot size {}: {e}", path.display()))?;
        Ok(SlotDevice {
            path: path.to_path_buf(),
            file,
            size,
        })
    }

    fn area_offset(&self) -> Result<u64, String> {
        slot::area_offset(self.size).ok_or_else(|| {
            format!(
                "{} is {} bytes, too small for a root slot",
                self.path.display(),
                self.size
            )
        })
    }

    fn read_at(&self, offset: u64, len: usize) -> Result<Vec<u8>, String> {
        let mut buf = vec![0u8; len];
        self.file
            .read_exact_at(&mut buf, offset)
            .map_err(|e| format!("cannot read {} at {offset}: {e}", self.path.display()))?;
        Ok(buf)
    }

    fn write_at(&self, offset: u64, bytes: &[u8]) -> Result<(), String> {
        self.file
            .write_all_at(bytes, offset)
            .map_err(|e| format!("cannot write {} at {offset}: {e}", self.path.display()))
    }

    /// Reads and verifies the manifest area.
    pub fn contents(&self, key: &PublicKey) -> SlotContents {
        match self.read_manifest(key) {
            Ok(Some(m)) => match m.verity {
                Some(verity) => SlotContents::Image {
                    version: m.version,
                    verity,
                },
                None => SlotContents::Invalid("its manifest has no verity parameters".into()),
            },
            Ok(None) => SlotContents::Empty,
            Err(why) => SlotContents::Invalid(why),
        }
    }

    fn read_manifest(&self, key: &PublicKey) -> Result<Option<Manifest>, String> {
        let area = self.read_at(self.area_offset()?, AREA_SIZE as usize)?;
        match slot::decode_area(&area).map_err(|e| e.to_string())? {
            Area::Empty => Ok(None),
            Area::Signed { json, signature } => manifest::verify_manifest(json, signature, key)
                .map(Some)
                .map_err(|e| e.to_string()),
        }
    }

    /// Makes the slot empty (its manifest area zeros) and flushes that, so
    /// a half-written slot is never one that init would boot.
    pub fn clear(&self) -> Result<(), String> {
        self.write_at(self.area_offset()?, &[0u8; AREA_SIZE as usize])?;
        self.flush()
    }

    /// Whether a slot part of `size` bytes, `tree_end` of them data and
    /// tree, fits this partition.
    pub fn fits(&self, tree_end: u64) -> Result<(), String> {
        let area = self.area_offset()?;
        if tree_end > area {
            return Err(format!(
                "the bundle's image and tree need {tree_end} bytes plus the {AREA_SIZE}-byte manifest area; {} has {} bytes",
                self.path.display(),
                self.size
            ));
        }
        Ok(())
    }

    /// Writes slot-part bytes that start at `offset` of the slot part.
    pub fn write_part(&self, tree_end: u64, offset: u64, bytes: &[u8]) -> Result<(), String> {
        let area = self.area_offset()?;
        for (at, piece) in destinations(tree_end, area, offset, bytes) {
            self.write_at(at, piece)?;
        }
        Ok(())
    }

    pub fn flush(&self) -> Result<(), String> {
        self.file
            .sync_data()
            .map_err(|e| format!("cannot flush {}: {e}", self.path.display()))
    }

    /// Reads the data back from the device (not from the page cache) and
    /// rebuilds its dm-verity tree: the root hash must be the manifest's,
    /// and the tree on the device the one rebuilt. This is what dm-verity
    /// would check block by block at boot, done before the slot can boot.
    pub fn verify(&self, key: &PublicKey) -> Result<Verity, String> {
        let verity = match self.contents(key) {
            SlotContents::Image { verity, .. } => verity,
            SlotContents::Empty => return Err(format!("{} holds no image", self.path.display())),
            SlotContents::Invalid(why) => return Err(format!("{}: {why}", self.path.display())),
        };
        self.flush()?;
        // So the read below comes from the disk, not from what was written.
        let _ = posix_fadvise(self.file.as_raw_fd(), 0, 0, PosixFadviseAdvice::POSIX_FADV_DONTNEED);
        let mut tree = TreeBuilder::new(&verity.salt).map_err(|e| e.to_string())?;
        let data_bytes = verity.data_blocks * BLOCK_SIZE as u64;
        let step = 1 << 20;
        let mut at = 0u64;
        while at < data_bytes {
            let len = step.min(data_bytes - at) as usize;
            tree.update(&self.read_at(at, len)?);
            at += len as u64;
        }
        let built = tree.finish().map_err(|e| e.to_string())?;
        if built.root_hash != verity.root_hash {
            return Err(format!(
                "{}: the data read back gives root hash {}, its manifest names {}",
                self.path.display(),
                hex::encode(&built.root_hash),
                hex::encode(&verity.root_hash)
            ));
        }
        if self.read_at(verity.hash_offset, built.tree.len())? != built.tree {
            return Err(format!(
                "{}: the hash tree read back differs from the one its data gives",
                self.path.display()
            ));
        }
        Ok(verity)
    }
}

/// Where slot-part bytes at `offset` go on a partition whose manifest area
/// starts at `area`: before `tree_end` to the same offset, from `tree_end`
/// on into the area.
fn destinations(tree_end: u64, area: u64, offset: u64, bytes: &[u8]) -> Vec<(u64, &[u8])> {
    let end = offset + bytes.len() as u64;
    let mut out = Vec::new();
    if offset < tree_end {
        let n = (tree_end.min(end) - offset) as usize;
        out.push((offset, &bytes[..n]));
    }
    if end > tree_end {
        let from = tree_end.max(offset);
        out.push((area + (from - tree_end), &bytes[(from - offset) as usize..]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_part_bytes_land_before_the_gap_or_in_the_area() {
        let bytes: Vec<u8> = (0..100).collect();
        type Pieces = Vec<(u64, std::ops::Range<usize>)>;
        let cases: &[(u64, Pieces)] = &[
            // All before tree_end.
            (0, vec![(0, 0..100)]),
            // Straddles tree_end = 150.
            (100, vec![(100, 0..50), (1000, 50..100)]),
            // All in the area.
            (200, vec![(1050, 0..100)]),
        ];
        for (offset, want) in cases {
            let got: Vec<(u64, &[u8])> = destinations(150, 1000, *offset, &bytes);
            let want: Vec<(u64, &[u8])> = want.iter().map(|(at, r)| (*at, &bytes[r.clone()])).collect();
            assert_eq!(got, want, "offset {offset}");
        }
    }
}
