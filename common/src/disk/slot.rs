//! A root slot (ROOT-A, ROOT-B): the SquashFS image zero-padded to 4096
//! bytes, its dm-verity tree right after, and in the last 64 KiB of the
//! partition the signed manifest area:
//!
//! ```text
//! 0   b"BASALTRM"
//! 8   u32 LE  format (1)
//! 12  u32 LE  length of the manifest JSON
//! 16  u32 LE  length of the signature (64)
//! 20  the manifest JSON, then the Ed25519 signature over exactly those bytes
//!     then zeros to the end of the area
//! ```
//!
//! An area of all zeros is an empty slot.

use super::verity;
use crate::keys::SIGNATURE_LEN;
use std::fmt;

pub const AREA_SIZE: u64 = 64 * 1024;
pub const MAGIC: &[u8; 8] = b"BASALTRM";
pub const AREA_FORMAT: u32 = 1;
pub const AREA_HEADER_LEN: usize = 20;
/// The longest manifest an area holds.
pub const MAX_JSON: usize = AREA_SIZE as usize - AREA_HEADER_LEN - SIGNATURE_LEN;

/// What a manifest area holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Area<'a> {
    /// All zeros: nothing was ever written to this slot.
    Empty,
    Signed {
        json: &'a [u8],
        signature: &'a [u8; SIGNATURE_LEN],
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotError {
    AreaSize(usize),
    BadMagic,
    Format(u32),
    SignatureLength(u32),
    JsonLength(u32),
    /// Bytes after the signature that are not zero.
    TrailingBytes {
        offset: usize,
    },
    /// Data and tree do not fit before the manifest area.
    TooSmall {
        slot_size: u64,
        need: u64,
    },
    SlotSize(u64),
}

impl fmt::Display for SlotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SlotError::AreaSize(n) => write!(f, "manifest area: {n} bytes, expected {AREA_SIZE}"),
            SlotError::BadMagic => write!(f, "manifest area: no BASALTRM magic and not all zeros"),
            SlotError::Format(n) => {
                write!(f, "manifest area: format {n} is not supported (this build reads {AREA_FORMAT})")
            }
            SlotError::SignatureLength(n) => {
                write!(f, "manifest area: signature length {n}, expected {SIGNATURE_LEN}")
            }
            SlotError::JsonLength(n) => {
                write!(f, "manifest area: manifest length {n}, expected 1..={MAX_JSON}")
            }
            SlotError::TrailingBytes { offset } => {
                write!(f, "manifest area: non-zero byte at offset {offset}, after the signature")
            }
            SlotError::TooSmall { slot_size, need } => write!(
                f,
                "laying out the root slot: image and verity tree need {need} bytes plus the {AREA_SIZE}-byte manifest area, the slot has {slot_size}"
            ),
            SlotError::SlotSize(n) => {
                write!(f, "laying out the root slot: size {n} is not a multiple of 4096")
            }
        }
    }
}

impl std::error::Error for SlotError {}

/// Writes a manifest area: 64 KiB.
pub fn encode_area(json: &[u8], signature: &[u8; SIGNATURE_LEN]) -> Result<Vec<u8>, SlotError> {
    if json.is_empty() || json.len() > MAX_JSON {
        return Err(SlotError::JsonLength(u32::try_from(json.len()).unwrap_or(u32::MAX)));
    }
    let mut area = vec![0u8; AREA_SIZE as usize];
    area[0..8].copy_from_slice(MAGIC);
    area[8..12].copy_from_slice(&AREA_FORMAT.to_le_bytes());
    area[12..16].copy_from_slice(&(json.len() as u32).to_le_bytes());
    area[16..20].copy_from_slice(&(SIGNATURE_LEN as u32).to_le_bytes());
    let sig_at = AREA_HEADER_LEN + json.len();
    area[AREA_HEADER_LEN..sig_at].copy_from_slice(json);
    area[sig_at..sig_at + SIGNATURE_LEN].copy_from_slice(signature);
    Ok(area)
}

/// Reads a manifest area (exactly 64 KiB). Checks framing only: the
/// signature is the caller's to verify.
pub fn decode_area(area: &[u8]) -> Result<Area<'_>, SlotError> {
    if area.len() != AREA_SIZE as usize {
        return Err(SlotError::AreaSize(area.len()));
    }
    if area.iter().all(|&b| b == 0) {
        return Ok(Area::Empty);
    }
    if &area[0..8] != MAGIC {
        return Err(SlotError::BadMagic);
    }
    let u32_at = |o: usize| u32::from_le_bytes([area[o], area[o + 1], area[o + 2], area[o + 3]]);
    let format = u32_at(8);
    if format != AREA_FORMAT {
        return Err(SlotError::Format(format));
    }
    let (json_len, sig_len) = (u32_at(12), u32_at(16));
    if sig_len as usize != SIGNATURE_LEN {
        return Err(SlotError::SignatureLength(sig_len));
    }
    if json_len == 0 || json_len as usize > MAX_JSON {
        return Err(SlotError::JsonLength(json_len));
    }
    let sig_at = AREA_HEADER_LEN + json_len as usize;
    let end = sig_at + SIGNATURE_LEN;
    if let Some(i) = area[end..].iter().position(|&b| b != 0) {
        return Err(SlotError::TrailingBytes { offset: end + i });
    }
    let signature: &[u8; SIGNATURE_LEN] = area[sig_at..end]
        .try_into()
        .map_err(|_| SlotError::SignatureLength(sig_len))?;
    Ok(Area::Signed {
        json: &area[AREA_HEADER_LEN..sig_at],
        signature,
    })
}

/// Where the manifest area of a partition of `slot_size` bytes starts.
pub fn area_offset(slot_size: u64) -> Option<u64> {
    slot_size.checked_sub(AREA_SIZE)
}

/// Where each part of a slot goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotLayout {
    pub data_blocks: u64,
    /// Where the tree starts: the padded image's end.
    pub hash_offset: u64,
    pub hash_blocks: u64,
    pub area_offset: u64,
}

/// Lays out an image of `image_size` bytes in a slot of `slot_size` bytes,
/// refusing when the image and its tree do not fit before the manifest area.
pub fn layout(slot_size: u64, image_size: u64) -> Result<SlotLayout, SlotError> {
    if !slot_size.is_multiple_of(verity::BLOCK_SIZE as u64) {
        return Err(SlotError::SlotSize(slot_size));
    }
    let data_blocks = verity::data_blocks(image_size);
    let hash_blocks = verity::hash_blocks(data_blocks);
    let block = verity::BLOCK_SIZE as u64;
    // An image size near u64::MAX has a tree whose bytes do not fit in 64 bits.
    let need = data_blocks
        .checked_add(hash_blocks)
        .and_then(|b| b.checked_mul(block))
        .unwrap_or(u64::MAX);
    match area_offset(slot_size) {
        Some(area_offset) if need <= area_offset => Ok(SlotLayout {
            data_blocks,
            hash_offset: data_blocks * block,
            hash_blocks,
            area_offset,
        }),
        _ => Err(SlotError::TooSmall { slot_size, need }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn area_bytes() {
        let area = encode_area(b"{}\n", &[9; 64]).unwrap();
        assert_eq!(area.len(), 65536);
        assert_eq!(&area[..20], b"BASALTRM\x01\0\0\0\x03\0\0\0\x40\0\0\0");
        assert_eq!(&area[20..23], b"{}\n");
        assert_eq!(&area[23..87], &[9; 64]);
        assert!(area[87..].iter().all(|&b| b == 0));
        assert_eq!(
            decode_area(&area).unwrap(),
            Area::Signed {
                json: b"{}\n",
                signature: &[9; 64]
            }
        );
        assert_eq!(decode_area(&vec![0; 65536]).unwrap(), Area::Empty);
        let big = vec![b' '; MAX_JSON];
        let full = encode_area(&big, &[1; 64]).unwrap();
        assert!(matches!(decode_area(&full).unwrap(), Area::Signed { json, .. } if json.len() == MAX_JSON));
    }

    #[test]
    fn area_refuses_table() {
        let good = encode_area(b"{\"a\":1}", &[9; 64]).unwrap();
        let with = |at: usize, bytes: &[u8]| {
            let mut a = good.clone();
            a[at..at + bytes.len()].copy_from_slice(bytes);
            a
        };
        let cases: Vec<(Vec<u8>, SlotError)> = vec![
            (good[..65535].to_vec(), SlotError::AreaSize(65535)),
            (with(0, b"BASALTRX"), SlotError::BadMagic),
            (with(8, &2u32.to_le_bytes()), SlotError::Format(2)),
            (with(16, &63u32.to_le_bytes()), SlotError::SignatureLength(63)),
            (with(12, &0u32.to_le_bytes()), SlotError::JsonLength(0)),
            (with(12, &65500u32.to_le_bytes()), SlotError::JsonLength(65500)),
            (with(1000, &[1]), SlotError::TrailingBytes { offset: 1000 }),
            (with(65535, &[1]), SlotError::TrailingBytes { offset: 65535 }),
        ];
        for (area, want) in cases {
            assert_eq!(decode_area(&area), Err(want));
        }
        // A single stray byte in an otherwise empty area is not "empty".
        let mut stray = vec![0u8; 65536];
        stray[4000] = 1;
        assert_eq!(decode_area(&stray), Err(SlotError::BadMagic));
        assert_eq!(encode_area(b"", &[0; 64]), Err(SlotError::JsonLength(0)));
        assert_eq!(
            encode_area(&vec![b' '; MAX_JSON + 1], &[0; 64]),
            Err(SlotError::JsonLength(MAX_JSON as u32 + 1))
        );
    }

    #[test]
    fn layout_table() {
        const MIB: u64 = 1 << 20;
        let l = layout(256 * MIB, 68 * MIB + 5).unwrap();
        let data_blocks = 68 * 256 + 1;
        assert_eq!(l.data_blocks, data_blocks);
        assert_eq!(l.hash_offset, data_blocks * 4096);
        assert_eq!(l.hash_blocks, 137 + 2 + 1);
        assert_eq!(l.area_offset, 256 * MIB - 65536);
        // Exactly full: 237 data blocks and their 3 tree blocks end where the area begins.
        let exact = layout(MIB, 237 * 4096).unwrap();
        assert_eq!((exact.data_blocks, exact.hash_blocks), (237, 3));
        assert_eq!(exact.hash_offset + exact.hash_blocks * 4096, exact.area_offset);
        assert_eq!(
            layout(MIB, 237 * 4096 + 1),
            Err(SlotError::TooSmall {
                slot_size: MIB,
                need: (238 + 3) * 4096
            })
        );
        assert_eq!(
            layout(MIB, 237 * 4096 + 1).unwrap_err().to_string(),
            "laying out the root slot: image and verity tree need 987136 bytes plus the 65536-byte manifest area, the slot has 1048576"
        );
        assert!(matches!(layout(1000, 1), Err(SlotError::SlotSize(1000))));
        // Found by the disk fuzz target: the tree's size overflowed.
        assert_eq!(
            layout(MIB, u64::MAX),
            Err(SlotError::TooSmall {
                slot_size: MIB,
                need: u64::MAX
            })
        );
        assert!(matches!(layout(4096, 1), Err(SlotError::TooSmall { .. })));
        assert_eq!(area_offset(65536), Some(0));
        assert_eq!(area_offset(100), None);
    }
}
