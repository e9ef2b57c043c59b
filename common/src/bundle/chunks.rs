//! Chunk digests: made on the host as the parts stream past, checked on the
//! node one chunk at a time against the verified manifest.

use super::header::{encode_header, read_header, HEADER_LEN};
use super::manifest::{encode_manifest, verify_manifest, BundleManifest, PartDigest};
use super::{BundleError, Part, CHUNK_SIZE};
use crate::keys::{PublicKey, SigningKey};
use ring::digest::{Context, SHA256};
use std::ops::Range;

/// How many chunks a part of `size` bytes has.
pub const fn chunk_count(size: u64) -> u64 {
    size.div_ceil(CHUNK_SIZE)
}

/// Which bytes of its part chunk `index` covers.
pub fn chunk_range(m: &BundleManifest, part: Part, index: u64) -> Result<Range<u64>, BundleError> {
    let size = m.part(part).size;
    let count = chunk_count(size);
    if index >= count {
        return Err(BundleError::ChunkIndex { part, index, count });
    }
    let start = index * CHUNK_SIZE;
    Ok(start..(start + CHUNK_SIZE).min(size))
}

/// Checks chunk `index` of `part` against the manifest: its exact length
/// and its SHA-256. Needs nothing but the manifest and these bytes.
pub fn check_chunk(m: &BundleManifest, part: Part, index: u64, bytes: &[u8]) -> Result<(), BundleError> {
    check_chunk_pieces(m, part, index, &[bytes])
}

/// [`check_chunk`] for a chunk held in consecutive pieces, as it arrived.
pub fn check_chunk_pieces(m: &BundleManifest, part: Part, index: u64, pieces: &[&[u8]]) -> Result<(), BundleError> {
    let range = chunk_range(m, part, index)?;
    let want = range.end - range.start;
    let got: u64 = pieces.iter().map(|p| p.len() as u64).sum();
    if got != want {
        return Err(BundleError::ChunkLength { part, index, want, got });
    }
    let mut ctx = Context::new(&SHA256);
    pieces.iter().for_each(|p| ctx.update(p));
    if ctx.finish().as_ref() != m.part(part).chunks[index as usize] {
        return Err(BundleError::ChunkDigest { part, index });
    }
    Ok(())
}

/// How many bytes from `offset` (a stream offset) to the end of its
/// chunk: a client that cuts its pieces there spares the node a copy.
pub fn to_chunk_end(m: &BundleManifest, offset: u64) -> u64 {
    let uki = m.uki.size;
    let (start, at) = if offset < uki { (0, offset) } else { (uki, offset - uki) };
    let end = start + (at / CHUNK_SIZE + 1) * CHUNK_SIZE;
    let part_end = if offset < uki { uki } else { m.parts_len() };
    end.min(part_end) - offset
}

/// Computes a part's digests from its bytes fed in any pieces.
pub struct PartHasher {
    whole: Context,
    chunk: Context,
    in_chunk: u64,
    size: u64,
    chunks: Vec<[u8; 32]>,
}

impl Default for PartHasher {
    fn default() -> Self {
        Self::new()
    }
}

impl PartHasher {
    pub fn new() -> Self {
        PartHasher {
            whole: Context::new(&SHA256),
            chunk: Context::new(&SHA256),
            in_chunk: 0,
            size: 0,
            chunks: Vec::new(),
        }
    }

    pub fn update(&mut self, mut bytes: &[u8]) {
        self.whole.update(bytes);
        self.size += bytes.len() as u64;
        while !bytes.is_empty() {
            let take = ((CHUNK_SIZE - self.in_chunk) as usize).min(bytes.len());
            self.chunk.update(&bytes[..take]);
            self.in_chunk += take as u64;
            bytes = &bytes[take..];
            if self.in_chunk == CHUNK_SIZE {
                self.close_chunk();
            }
        }
    }

    fn close_chunk(&mut self) {
        let done = std::mem::replace(&mut self.chunk, Context::new(&SHA256)).finish();
        self.chunks.push(to_array(done.as_ref()));
        self.in_chunk = 0;
    }

    pub fn finish(mut self) -> PartDigest {
        if self.in_chunk > 0 {
            self.close_chunk();
        }
        PartDigest {
            size: self.size,
            sha256: to_array(self.whole.finish().as_ref()),
            chunks: self.chunks,
        }
    }
}

fn to_array(d: &[u8]) -> [u8; 32] {
    let mut a = [0u8; 32];
    a.copy_from_slice(d);
    a
}

/// The digests of a part held in memory.
pub fn digest_part(bytes: &[u8]) -> PartDigest {
    let mut h = PartHasher::new();
    h.update(bytes);
    h.finish()
}

/// The bundle's prefix: header, manifest JSON, signature. The parts follow
/// it in the file, UKI first. Returns the signed JSON too.
pub fn bundle_prefix(m: &BundleManifest, key: &SigningKey) -> Result<Vec<u8>, BundleError> {
    let json = encode_manifest(m);
    let signature = key.sign(&json);
    let mut out = encode_header(json.len())?.to_vec();
    out.extend_from_slice(&json);
    out.extend_from_slice(&signature);
    Ok(out)
}

/// A whole bundle in memory. `m`'s part digests must describe `uki` and
/// `slot` (as [`digest_part`] makes them); this is for tests and seeds,
/// basalt-mkimage streams the parts after [`bundle_prefix`].
pub fn build_bundle(m: &BundleManifest, key: &SigningKey, uki: &[u8], slot: &[u8]) -> Result<Vec<u8>, BundleError> {
    let mut out = bundle_prefix(m, key)?;
    out.extend_from_slice(uki);
    out.extend_from_slice(slot);
    Ok(out)
}

/// Checks a whole bundle in memory as the node would in a stream: header,
/// signature, manifest, then every chunk of each part in order, each part's
/// whole SHA-256, and no bytes after the slot part.
pub fn verify_bundle(bytes: &[u8], key: &PublicKey) -> Result<BundleManifest, BundleError> {
    let header = read_header(bytes)?;
    let parts_at = header.parts_offset();
    if (bytes.len() as u64) < parts_at {
        return Err(BundleError::Truncated {
            what: "manifest and signature",
            need: parts_at,
            have: bytes.len() as u64,
        });
    }
    let json = &bytes[HEADER_LEN..header.signature_offset() as usize];
    let sig = &bytes[header.signature_offset() as usize..parts_at as usize];
    let m = verify_manifest(json, sig, key)?;
    let end = parts_at + m.parts_len();
    if (bytes.len() as u64) > end {
        return Err(BundleError::TrailingBytes { at: end });
    }
    for part in Part::ALL {
        let start = parts_at + m.part_offset(part);
        let mut whole = Context::new(&SHA256);
        for index in 0..chunk_count(m.part(part).size) {
            let r = chunk_range(&m, part, index)?;
            let (a, b) = (start + r.start, start + r.end);
            if (bytes.len() as u64) < b {
                return Err(BundleError::Truncated {
                    what: part.name(),
                    need: b,
                    have: bytes.len() as u64,
                });
            }
            let chunk = &bytes[a as usize..b as usize];
            check_chunk(&m, part, index, chunk)?;
            whole.update(chunk);
        }
        if whole.finish().as_ref() != m.part(part).sha256 {
            return Err(BundleError::PartDigest { part });
        }
    }
    Ok(m)
}
