//! The fixed 20-byte header in front of a bundle's manifest.

use super::BundleError;
use crate::keys::SIGNATURE_LEN;

pub const MAGIC: &[u8; 8] = b"BASALTUB";
pub const FORMAT: u32 = 1;
pub const HEADER_LEN: usize = 20;
/// A manifest longer than this is refused before anything is allocated for
/// it. 5 000 chunk digests of 67 bytes each fit with room to spare.
pub const MAX_MANIFEST_BYTES: usize = 1 << 20;

/// What the header says follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub manifest_len: usize,
    pub signature_len: usize,
}

impl Header {
    /// Where the manifest JSON starts.
    pub const fn manifest_offset(&self) -> u64 {
        HEADER_LEN as u64
    }

    pub const fn signature_offset(&self) -> u64 {
        (HEADER_LEN + self.manifest_len) as u64
    }

    /// Where the first part (the UKI) starts.
    pub const fn parts_offset(&self) -> u64 {
        (HEADER_LEN + self.manifest_len + self.signature_len) as u64
    }
}

pub fn encode_header(manifest_len: usize) -> Result<[u8; HEADER_LEN], BundleError> {
    if manifest_len == 0 || manifest_len > MAX_MANIFEST_BYTES {
        return Err(BundleError::ManifestLength(
            u32::try_from(manifest_len).unwrap_or(u32::MAX),
        ));
    }
    let mut h = [0u8; HEADER_LEN];
    h[0..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&FORMAT.to_le_bytes());
    h[12..16].copy_from_slice(&(manifest_len as u32).to_le_bytes());
    h[16..20].copy_from_slice(&(SIGNATURE_LEN as u32).to_le_bytes());
    Ok(h)
}

/// Reads the header from the first bytes of a bundle (at least 20). The
/// lengths are checked against their limits here, so a caller may allocate
/// `manifest_len` bytes once this returns.
pub fn read_header(bytes: &[u8]) -> Result<Header, BundleError> {
    if bytes.len() < HEADER_LEN {
        return Err(BundleError::Truncated {
            what: "header",
            need: HEADER_LEN as u64,
            have: bytes.len() as u64,
        });
    }
    if &bytes[0..8] != MAGIC {
        return Err(BundleError::BadMagic);
    }
    let u32_at = |o: usize| u32::from_le_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]);
    let format = u32_at(8);
    if format != FORMAT {
        return Err(BundleError::Format(format));
    }
    let (manifest_len, signature_len) = (u32_at(12), u32_at(16));
    if manifest_len == 0 || manifest_len as usize > MAX_MANIFEST_BYTES {
        return Err(BundleError::ManifestLength(manifest_len));
    }
    if signature_len as usize != SIGNATURE_LEN {
        return Err(BundleError::SignatureLength(signature_len));
    }
    Ok(Header {
        manifest_len: manifest_len as usize,
        signature_len: SIGNATURE_LEN,
    })
}
