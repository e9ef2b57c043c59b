//! The dm-verity hash tree, format version 1, as the kernel's dm-verity
//! target and `veritysetup --no-superblock` lay it out: SHA-256, 4096-byte
//! data and hash blocks, each hash `sha256(salt || block)`.
//!
//! Level 0 holds the hashes of the data blocks, 128 to a hash block, the
//! last block zero-padded; each level above hashes the blocks of the one
//! below, until a level is one block. The root hash is the hash of that top
//! block. On disk the top level comes first and level 0 last (the kernel's
//! `hash_level_block`). One data block needs no tree: the root hash is that
//! block's hash.

use ring::digest::{Context, SHA256};
use std::fmt;

/// Data and hash block size.
pub const BLOCK_SIZE: usize = 4096;
pub const DIGEST_SIZE: usize = 32;
/// Hashes in one hash block.
pub const HASHES_PER_BLOCK: u64 = (BLOCK_SIZE / DIGEST_SIZE) as u64;
/// The one hash algorithm and format version basalt writes and reads.
pub const ALGORITHM: &str = "sha256";
pub const VERSION: u64 = 1;
/// The kernel and veritysetup take at most 256 bytes of salt.
pub const MAX_SALT: usize = 256;
/// What the default salt is derived with, beside the image's SHA-256.
const SALT_LABEL: &[u8] = b"basalt dm-verity salt v1\0";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerityError {
    NoData,
    Salt(usize),
}

impl fmt::Display for VerityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VerityError::NoData => write!(f, "building the verity tree: no data blocks to hash"),
            VerityError::Salt(n) => {
                write!(
                    f,
                    "building the verity tree: salt of {n} bytes, expected 1..={MAX_SALT}"
                )
            }
        }
    }
}

impl std::error::Error for VerityError {}

/// Blocks in each level of the tree over `data_blocks` blocks, level 0 first.
pub fn level_blocks(data_blocks: u64) -> Vec<u64> {
    let mut levels = Vec::new();
    let mut below = data_blocks;
    while below > 1 {
        below = below.div_ceil(HASHES_PER_BLOCK);
        levels.push(below);
    }
    levels
}

/// Hash blocks in the whole tree over `data_blocks` blocks.
pub fn hash_blocks(data_blocks: u64) -> u64 {
    level_blocks(data_blocks).iter().sum()
}

/// Data blocks that hold `bytes` bytes (the last one zero-padded).
pub fn data_blocks(bytes: u64) -> u64 {
    bytes.div_ceil(BLOCK_SIZE as u64)
}

/// The salt a build uses unless told another: it depends only on the image.
pub fn default_salt(image_sha256: &[u8; 32]) -> [u8; 32] {
    let mut ctx = Context::new(&SHA256);
    ctx.update(SALT_LABEL);
    ctx.update(image_sha256);
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// A finished tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerityTree {
    pub data_blocks: u64,
    /// The hash area, top level first, `hash_blocks() * 4096` bytes.
    pub tree: Vec<u8>,
    pub root_hash: [u8; DIGEST_SIZE],
    pub salt: Vec<u8>,
}

impl VerityTree {
    pub fn hash_blocks(&self) -> u64 {
        (self.tree.len() / BLOCK_SIZE) as u64
    }

    /// What the manifest says about this tree when it sits right after the data.
    pub fn params(&self) -> crate::manifest::Verity {
        crate::manifest::Verity {
            data_blocks: self.data_blocks,
            hash_offset: self.data_blocks * BLOCK_SIZE as u64,
            hash_blocks: self.hash_blocks(),
            salt: self.salt.clone(),
            root_hash: self.root_hash,
        }
    }
}

/// Builds a tree from data fed in pieces of any size; a partial last block
/// is hashed as if zero-padded (the slot holds it zero-padded).
pub struct TreeBuilder {
    salt: Vec<u8>,
    /// Level 0: one digest per data block so far.
    leaves: Vec<u8>,
    data_blocks: u64,
    partial: Vec<u8>,
}

impl TreeBuilder {
    pub fn new(salt: &[u8]) -> Result<Self, VerityError> {
        if salt.is_empty() || salt.len() > MAX_SALT {
            return Err(VerityError::Salt(salt.len()));
        }
        Ok(TreeBuilder {
            salt: salt.to_vec(),
            leaves: Vec::new(),
            data_blocks: 0,
            partial: Vec::with_capacity(BLOCK_SIZE),
        })
    }

    pub fn update(&mut self, mut data: &[u8]) {
        if !self.partial.is_empty() {
            let take = (BLOCK_SIZE - self.partial.len()).min(data.len());
            self.partial.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.partial.len() == BLOCK_SIZE {
                let block = std::mem::take(&mut self.partial);
                self.push_block(&block);
                self.partial = block;
                self.partial.clear();
            }
        }
        let mut blocks = data.chunks_exact(BLOCK_SIZE);
        for block in &mut blocks {
            self.push_block(block);
        }
        self.partial.extend_from_slice(blocks.remainder());
    }

    fn push_block(&mut self, block: &[u8]) {
        let digest = salted_hash(&self.salt, block);
        self.leaves.extend_from_slice(&digest);
        self.data_blocks += 1;
    }

    pub fn finish(mut self) -> Result<VerityTree, VerityError> {
        if !self.partial.is_empty() {
            let mut block = std::mem::take(&mut self.partial);
            block.resize(BLOCK_SIZE, 0);
            self.push_block(&block);
        }
        if self.data_blocks == 0 {
            return Err(VerityError::NoData);
        }
        if self.data_blocks == 1 {
            let mut root_hash = [0u8; DIGEST_SIZE];
            root_hash.copy_from_slice(&self.leaves);
            return Ok(VerityTree {
                data_blocks: 1,
                tree: Vec::new(),
                root_hash,
                salt: self.salt,
            });
        }
        // Each level: the digests below, packed into zero-padded blocks.
        let mut levels: Vec<Vec<u8>> = Vec::new();
        let mut digests = self.leaves;
        loop {
            let mut level = digests;
            level.resize(level.len().div_ceil(BLOCK_SIZE) * BLOCK_SIZE, 0);
            let blocks = level.len() / BLOCK_SIZE;
            digests = level
                .chunks_exact(BLOCK_SIZE)
                .flat_map(|b| salted_hash(&self.salt, b))
                .collect();
            levels.push(level);
            if blocks == 1 {
                break;
            }
        }
        let mut root_hash = [0u8; DIGEST_SIZE];
        root_hash.copy_from_slice(&digests);
        let tree = levels.into_iter().rev().flatten().collect();
        Ok(VerityTree {
            data_blocks: self.data_blocks,
            tree,
            root_hash,
            salt: self.salt,
        })
    }
}

/// The tree over `data` with `salt`.
pub fn build_tree(data: &[u8], salt: &[u8]) -> Result<VerityTree, VerityError> {
    let mut b = TreeBuilder::new(salt)?;
    b.update(data);
    b.finish()
}

fn salted_hash(salt: &[u8], block: &[u8]) -> [u8; DIGEST_SIZE] {
    let mut ctx = Context::new(&SHA256);
    ctx.update(salt);
    ctx.update(block);
    let mut out = [0u8; DIGEST_SIZE];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hex;

    /// Data that differs in every block: block i is filled with byte i*7+1
    /// after an 8-byte little-endian block number.
    fn data(blocks: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(blocks as usize * BLOCK_SIZE);
        for i in 0..blocks {
            let mut block = vec![(i as u8).wrapping_mul(7).wrapping_add(1); BLOCK_SIZE];
            block[..8].copy_from_slice(&i.to_le_bytes());
            out.extend_from_slice(&block);
        }
        out
    }

    #[test]
    fn level_sizes() {
        let cases: [(u64, &[u64]); 7] = [
            (1, &[]),
            (2, &[1]),
            (128, &[1]),
            (129, &[2, 1]),
            (16384, &[128, 1]),
            (16385, &[129, 2, 1]),
            // 1 GiB of 4 KiB blocks.
            (262_144, &[2048, 16, 1]),
        ];
        for (blocks, want) in cases {
            assert_eq!(level_blocks(blocks), want, "{blocks}");
            assert_eq!(hash_blocks(blocks), want.iter().sum::<u64>());
        }
        assert_eq!(
            [data_blocks(0), data_blocks(1), data_blocks(4096), data_blocks(4097)],
            [0, 1, 1, 2]
        );
    }

    /// Root hashes from `veritysetup format --no-superblock --salt=HEX
    /// --data-block-size=4096 --hash-block-size=4096` (cryptsetup 2.6.1) on
    /// the same data.
    #[test]
    fn root_hashes_match_veritysetup() {
        let salt = [0x5a; 32];
        let cases: [(u64, &str); 5] = [
            (1, ROOT_1),
            (2, ROOT_2),
            (128, ROOT_128),
            (129, ROOT_129),
            (300, ROOT_300),
        ];
        for (blocks, want) in cases {
            let tree = build_tree(&data(blocks), &salt).unwrap();
            assert_eq!(hex::encode(&tree.root_hash), want, "{blocks} blocks");
            assert_eq!(tree.hash_blocks(), hash_blocks(blocks));
            assert_eq!(tree.data_blocks, blocks);
        }
    }

    const ROOT_1: &str = "bddfdb61c0a1310c66eb9858c6c2c6c1db96e847ab9994edba5b2244eab45514";
    const ROOT_2: &str = "6f58daa3e69d968a7af394213892a37d8fcaae2fa07bdd9e6481abe97ce16e58";
    const ROOT_128: &str = "14eda3651909479cc627256d8467cd7b2a144c76b92a734ede9350bb37c109c4";
    const ROOT_129: &str = "3519eb653b12ee944f7eda2c14145d661b173208eec20459a5e92975798cb2d5";
    const ROOT_300: &str = "72fc2669a2bc9464189b1918155e0742dfc0d16915225a9ffff1d744858f4931";

    #[test]
    fn tree_layout_by_hand() {
        // Three blocks: one level, one block: [h0 h1 h2 0...], root = H(salt || it).
        let salt = b"s";
        let d = data(3);
        let tree = build_tree(&d, salt).unwrap();
        let h = |b: &[u8]| salted_hash(salt, b);
        let mut level0 = Vec::new();
        for block in d.chunks(BLOCK_SIZE) {
            level0.extend_from_slice(&h(block));
        }
        level0.resize(BLOCK_SIZE, 0);
        assert_eq!(tree.tree, level0);
        assert_eq!(tree.root_hash, h(&level0));

        // 129 blocks: level 0 is two blocks, after level 1 (one block) on disk.
        let d = data(129);
        let tree = build_tree(&d, salt).unwrap();
        assert_eq!(tree.tree.len(), 3 * BLOCK_SIZE);
        let (top, leaves) = tree.tree.split_at(BLOCK_SIZE);
        assert_eq!(&leaves[..32], &h(&d[..BLOCK_SIZE]));
        assert_eq!(&leaves[BLOCK_SIZE..BLOCK_SIZE + 32], &h(&d[128 * BLOCK_SIZE..]));
        assert!(leaves[BLOCK_SIZE + 32..].iter().all(|&b| b == 0));
        assert_eq!(&top[..32], &h(&leaves[..BLOCK_SIZE]));
        assert_eq!(&top[32..64], &h(&leaves[BLOCK_SIZE..]));
        assert_eq!(tree.root_hash, h(top));
    }

    #[test]
    fn pieces_and_padding_do_not_change_the_tree() {
        let salt = [1u8; 32];
        let d = data(130);
        let whole = build_tree(&d, &salt).unwrap();
        let mut b = TreeBuilder::new(&salt).unwrap();
        for piece in d.chunks(1000) {
            b.update(piece);
        }
        assert_eq!(b.finish().unwrap(), whole);
        // A short last block is hashed zero-padded.
        let mut short = data(2);
        short.truncate(BLOCK_SIZE + 10);
        let mut padded = short.clone();
        padded.resize(2 * BLOCK_SIZE, 0);
        assert_eq!(build_tree(&short, &salt).unwrap(), build_tree(&padded, &salt).unwrap());
        // The salt matters.
        assert_ne!(build_tree(&d, &[2u8; 32]).unwrap().root_hash, whole.root_hash);
        let p = whole.params();
        assert_eq!((p.data_blocks, p.hash_offset, p.hash_blocks), (130, 130 * 4096, 3));
    }

    #[test]
    fn refuses() {
        assert_eq!(build_tree(&[], b"s").unwrap_err(), VerityError::NoData);
        assert_eq!(TreeBuilder::new(&[]).err(), Some(VerityError::Salt(0)));
        assert_eq!(TreeBuilder::new(&[0; 257]).err(), Some(VerityError::Salt(257)));
        assert!(TreeBuilder::new(&[0; 256]).is_ok());
        assert_eq!(
            VerityError::Salt(0).to_string(),
            "building the verity tree: salt of 0 bytes, expected 1..=256"
        );
    }

    #[test]
    fn default_salt_depends_on_the_image() {
        assert_eq!(default_salt(&[1; 32]), default_salt(&[1; 32]));
        assert_ne!(default_salt(&[1; 32]), default_salt(&[2; 32]));
    }

    /// The reference tool on this machine, when it is installed: the same
    /// root hash and the same tree bytes, and `verify` accepts ours.
    #[test]
    fn cross_check_with_veritysetup_when_present() {
        let Some(tool) = ["/usr/sbin/veritysetup", "/sbin/veritysetup", "/usr/bin/veritysetup"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
        else {
            eprintln!("veritysetup not installed (cryptsetup-bin): cross-check left to the host test");
            return;
        };
        let dir = std::env::temp_dir().join(format!("basalt-verity-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let salt = [0xa5; 32];
        for blocks in [1u64, 129, 16385] {
            let d = data(blocks);
            let ours = build_tree(&d, &salt).unwrap();
            let (data_path, hash_path) = (dir.join("data"), dir.join("hash"));
            std::fs::write(&data_path, &d).unwrap();
            let _ = std::fs::remove_file(&hash_path);
            let out = std::process::Command::new(tool)
                .args([
                    "format",
                    "--no-superblock",
                    "--data-block-size=4096",
                    "--hash-block-size=4096",
                ])
                .arg(format!("--salt={}", hex::encode(&salt)))
                .arg(&data_path)
                .arg(&hash_path)
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let text = String::from_utf8_lossy(&out.stdout);
            let root = text
                .lines()
                .find_map(|l| l.strip_prefix("Root hash:"))
                .map(str::trim)
                .unwrap_or_default();
            assert_eq!(root, hex::encode(&ours.root_hash), "{blocks} blocks");
            let theirs = std::fs::read(&hash_path).unwrap();
            assert!(theirs == ours.tree, "{blocks} blocks: tree bytes differ");

            // Ours, right after the data in one file, as a slot holds it.
            let mut slot = d.clone();
            slot.extend_from_slice(&ours.tree);
            std::fs::write(&data_path, &slot).unwrap();
            let out = std::process::Command::new(tool)
                .args([
                    "verify",
                    "--no-superblock",
                    "--data-block-size=4096",
                    "--hash-block-size=4096",
                ])
                .arg(format!("--data-blocks={blocks}"))
                .arg(format!("--hash-offset={}", blocks * BLOCK_SIZE as u64))
                .arg(format!("--salt={}", hex::encode(&salt)))
                .arg(&data_path)
                .arg(&data_path)
                .arg(hex::encode(&ours.root_hash))
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{blocks} blocks: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
