//! The update bundle (`build/update.bundle`, docs/upgrades.md): one file an
//! operator hands to `basaltctl upgrade`, holding a new UKI and the new
//! contents of a root slot under a manifest signed with the image key.
//!
//! ```text
//! 0   b"BASALTUB"
//! 8   u32 LE  format (1)
//! 12  u32 LE  length of the manifest JSON
//! 16  u32 LE  length of the signature (64)
//! 20  the manifest JSON, then the Ed25519 signature over exactly those bytes
//!     then the UKI part, then the slot part (sizes in the manifest)
//! ```
//!
//! The manifest lists a SHA-256 for every 1 MiB chunk of each part, so a
//! receiver that holds only the verified manifest can check chunk `i` of a
//! part on its own, before writing it, in any order: resuming a transfer
//! never needs the bytes that came before.

mod chunks;
mod header;
mod manifest;

pub use chunks::{
    build_bundle, bundle_prefix, check_chunk, check_chunk_pieces, chunk_count, chunk_range, digest_part, to_chunk_end,
    verify_bundle, PartHasher,
};
pub use header::{encode_header, read_header, Header, FORMAT, HEADER_LEN, MAGIC, MAX_MANIFEST_BYTES};
pub use manifest::{
    encode_manifest, parse_manifest, verify_manifest, Arch, BundleManifest, PartDigest, SlotPart, TARGETS,
};

use crate::json::JsonError;
use std::fmt;

/// Every part is cut into chunks of this size (the last may be shorter).
pub const CHUNK_SIZE: u64 = 1 << 20;
/// The largest UKI a bundle may carry.
pub const MAX_UKI_BYTES: u64 = 512 << 20;
/// The largest slot part a bundle may carry. With the UKI's chunks this keeps
/// the manifest under the strict JSON parser's value budget.
pub const MAX_SLOT_BYTES: u64 = 4 << 30;

/// The two parts of a bundle, in file order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Part {
    Uki,
    Slot,
}

impl Part {
    pub const ALL: [Part; 2] = [Part::Uki, Part::Slot];

    pub fn name(self) -> &'static str {
        match self {
            Part::Uki => "uki",
            Part::Slot => "slot",
        }
    }
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a bundle, or a piece of one, was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BundleError {
    /// Fewer bytes than the header (or the header's lengths) need.
    Truncated {
        what: &'static str,
        need: u64,
        have: u64,
    },
    BadMagic,
    Format(u32),
    SignatureLength(u32),
    ManifestLength(u32),
    BadSignature {
        key_id: String,
    },
    Json(JsonError),
    ManifestFormat(u64),
    /// A part's size is zero or above its limit.
    PartSize {
        part: Part,
        size: u64,
        max: u64,
    },
    /// The manifest lists the wrong number of chunk digests for a part's size.
    ChunkList {
        part: Part,
        want: u64,
        got: u64,
    },
    /// The slot part is not data+tree followed by one manifest area.
    SlotShape {
        size: u64,
        tree_end: u64,
    },
    ChunkIndex {
        part: Part,
        index: u64,
        count: u64,
    },
    ChunkLength {
        part: Part,
        index: u64,
        want: u64,
        got: u64,
    },
    ChunkDigest {
        part: Part,
        index: u64,
    },
    PartDigest {
        part: Part,
    },
    /// Bytes after the slot part.
    TrailingBytes {
        at: u64,
    },
}

impl fmt::Display for BundleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BundleError::Truncated { what, need, have } => {
                write!(f, "bundle: truncated in the {what}: needs {need} bytes, has {have}")
            }
            BundleError::BadMagic => write!(f, "bundle header: no BASALTUB magic"),
            BundleError::Format(n) => {
                write!(f, "bundle header: format {n} is not supported (this build reads {FORMAT})")
            }
            BundleError::SignatureLength(n) => write!(
                f,
                "bundle header: signature length {n}, expected {}",
                crate::keys::SIGNATURE_LEN
            ),
            BundleError::ManifestLength(n) => {
                write!(f, "bundle header: manifest length {n}, expected 1..={MAX_MANIFEST_BYTES}")
            }
            BundleError::BadSignature { key_id } => {
                write!(f, "bundle manifest: signature does not verify with image key {key_id}")
            }
            BundleError::Json(e) => write!(f, "bundle manifest {e}"),
            BundleError::ManifestFormat(n) => write!(
                f,
                "bundle manifest: format {n} is not supported (this build reads {})",
                manifest::MANIFEST_FORMAT
            ),
            BundleError::PartSize { part, size, max } => {
                write!(f, "bundle manifest: {part} part is {size} bytes, expected 1..={max}")
            }
            BundleError::ChunkList { part, want, got } => write!(
                f,
                "bundle manifest: {part} part lists {got} chunk digests, its size needs {want}"
            ),
            BundleError::SlotShape { size, tree_end } => write!(
                f,
                "bundle manifest: slot part of {size} bytes is not data and tree ({tree_end} bytes, a multiple of 4096) plus the {}-byte manifest area",
                crate::disk::slot::AREA_SIZE
            ),
            BundleError::ChunkIndex { part, index, count } => {
                write!(f, "bundle: {part} chunk {index} is out of range (the part has {count})")
            }
            BundleError::ChunkLength { part, index, want, got } => {
                write!(f, "bundle: {part} chunk {index} is {got} bytes, expected {want}")
            }
            BundleError::ChunkDigest { part, index } => {
                write!(f, "bundle: {part} chunk {index} does not match its SHA-256 in the signed manifest")
            }
            BundleError::PartDigest { part } => {
                write!(f, "bundle: the {part} part does not match its SHA-256 in the signed manifest")
            }
            BundleError::TrailingBytes { at } => {
                write!(f, "bundle: unexpected bytes at offset {at}, after the slot part")
            }
        }
    }
}

impl std::error::Error for BundleError {}

impl From<JsonError> for BundleError {
    fn from(e: JsonError) -> Self {
        BundleError::Json(e)
    }
}

#[cfg(test)]
mod tests;
