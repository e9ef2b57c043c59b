//! The bundle's parts as they arrive: one byte stream (the UKI, then the
//! slot part) cut back into the manifest's 1 MiB chunks. A chunk leaves
//! here only once its SHA-256 matched the signed manifest, so nothing
//! unverified is ever handed on to be written. Pure: no files.
//!
//! A chunk is kept as the pieces it arrived in, not copied into one buffer:
//! on an emulated node each copy of the stream costs about a tenth of the
//! transfer. basaltctl cuts its pieces at chunk boundaries, so a piece is
//! only split (and its tail copied) for a client that does not.

use basalt_common::bundle::{check_chunk_pieces, chunk_range, BundleError, BundleManifest, Part, CHUNK_SIZE};

/// A checked chunk, ready to be written: its bytes are its pieces, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub part: Part,
    /// Where the chunk starts within its part.
    pub offset: u64,
    pub pieces: Vec<Vec<u8>>,
}

impl Chunk {
    /// Each piece with where it starts within the part.
    pub fn placed(&self) -> impl Iterator<Item = (u64, &[u8])> {
        let mut at = self.offset;
        self.pieces.iter().map(move |p| {
            let here = at;
            at += p.len() as u64;
            (here, p.as_slice())
        })
    }
}

/// Why a piece of the stream was refused. The transfer stays where it was:
/// the client may send the right bytes at the right offset again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedError {
    /// Bytes not at the next offset the transfer expects.
    Offset { expected: u64, got: u64 },
    /// More bytes than the parts hold.
    PastEnd { total: u64 },
    /// A chunk failed its check: the bytes of that chunk were dropped.
    Chunk(BundleError),
}

impl std::fmt::Display for FeedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FeedError::Offset { expected, got } => {
                write!(f, "bundle bytes at offset {got}, the upgrade expects offset {expected}")
            }
            FeedError::PastEnd { total } => write!(f, "more bundle bytes than its parts hold ({total} bytes)"),
            FeedError::Chunk(e) => write!(f, "{e}; nothing of that chunk was written"),
        }
    }
}

pub struct Transfer {
    manifest: BundleManifest,
    /// Bytes of the stream checked and handed on.
    done: u64,
    /// The chunk being filled, as the pieces it came in.
    pending: Vec<Vec<u8>>,
    pending_len: u64,
}

impl Transfer {
    pub fn new(manifest: BundleManifest) -> Self {
        Transfer {
            manifest,
            done: 0,
            pending: Vec::new(),
            pending_len: 0,
        }
    }

    pub fn manifest(&self) -> &BundleManifest {
        &self.manifest
    }

    pub fn total(&self) -> u64 {
        self.manifest.parts_len()
    }

    /// The offset of the first byte not yet checked: where a client resumes.
    /// Bytes of a chunk still being filled are dropped on resume, so this is
    /// always a chunk boundary.
    pub fn resume_at(&mut self) -> u64 {
        self.drop_pending();
        self.done
    }

    fn drop_pending(&mut self) {
        self.pending.clear();
        self.pending_len = 0;
    }

    /// The next offset this transfer takes bytes at.
    pub fn next_offset(&self) -> u64 {
        self.done + self.pending_len
    }

    pub fn complete(&self) -> bool {
        self.done == self.total()
    }

    /// Takes `data` at stream offset `offset`; returns the chunks it
    /// completed, each checked.
    pub fn feed(&mut self, offset: u64, mut data: Vec<u8>) -> Result<Vec<Chunk>, FeedError> {
        let expected = self.next_offset();
        if offset != expected {
            return Err(FeedError::Offset { expected, got: offset });
        }
        if expected + data.len() as u64 > self.total() {
            return Err(FeedError::PastEnd { total: self.total() });
        }
        let mut out = Vec::new();
        while !data.is_empty() {
            let (part, range) = self.current_chunk().map_err(FeedError::Chunk)?;
            let want = range.end - range.start;
            let room = (want - self.pending_len) as usize;
            let piece = if data.len() <= room {
                std::mem::take(&mut data)
            } else {
                let rest = data.split_off(room);
                std::mem::replace(&mut data, rest)
            };
            self.pending_len += piece.len() as u64;
            self.pending.push(piece);
            if self.pending_len == want {
                let index = range.start / CHUNK_SIZE;
                let pieces: Vec<&[u8]> = self.pending.iter().map(Vec::as_slice).collect();
                if let Err(e) = check_chunk_pieces(&self.manifest, part, index, &pieces) {
                    self.drop_pending();
                    return Err(FeedError::Chunk(e));
                }
                self.done += want;
                self.pending_len = 0;
                out.push(Chunk {
                    part,
                    offset: range.start,
                    pieces: std::mem::take(&mut self.pending),
                });
            }
        }
        Ok(out)
    }

    /// The part and in-part range of the chunk the next byte belongs to.
    fn current_chunk(&self) -> Result<(Part, std::ops::Range<u64>), BundleError> {
        let uki = self.manifest.uki.size;
        let (part, at) = if self.done < uki {
            (Part::Uki, self.done)
        } else {
            (Part::Slot, self.done - uki)
        };
        Ok((part, chunk_range(&self.manifest, part, at / CHUNK_SIZE)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use basalt_common::bundle::{digest_part, SlotPart};
    use basalt_common::bundle::{Arch, BundleManifest};

    fn manifest(uki: &[u8], slot: &[u8]) -> BundleManifest {
        BundleManifest {
            version: "t".into(),
            version_seq: 1,
            arch: Arch::X86_64,
            target: "ROOT-B".into(),
            uki: digest_part(uki),
            slot: SlotPart {
                digest: digest_part(slot),
                tree_end: slot.len() as u64 - 65536,
                root_hash: [0; 32],
            },
        }
    }

    fn parts() -> (Vec<u8>, Vec<u8>) {
        let uki: Vec<u8> = (0..(CHUNK_SIZE as usize + 1000)).map(|i| (i % 251) as u8).collect();
        let slot: Vec<u8> = (0..(2 * CHUNK_SIZE as usize + 65536))
            .map(|i| (i % 241) as u8)
            .collect();
        (uki, slot)
    }

    #[test]
    fn any_piece_sizes_give_the_same_checked_chunks() {
        let (uki, slot) = parts();
        let stream: Vec<u8> = [uki.clone(), slot.clone()].concat();
        for piece in [1000usize, 4096, 300_000, 512 * 1024, stream.len()] {
            let mut t = Transfer::new(manifest(&uki, &slot));
            let mut chunks = Vec::new();
            for (i, p) in stream.chunks(piece).enumerate() {
                chunks.extend(t.feed((i * piece) as u64, p.to_vec()).unwrap());
            }
            assert!(t.complete());
            let layout: Vec<(Part, u64, usize)> = chunks
                .iter()
                .map(|c| (c.part, c.offset, c.pieces.concat().len()))
                .collect();
            assert_eq!(
                layout,
                [
                    (Part::Uki, 0, CHUNK_SIZE as usize),
                    (Part::Uki, CHUNK_SIZE, 1000),
                    (Part::Slot, 0, CHUNK_SIZE as usize),
                    (Part::Slot, CHUNK_SIZE, CHUNK_SIZE as usize),
                    (Part::Slot, 2 * CHUNK_SIZE, 65536),
                ],
                "pieces of {piece}"
            );
            assert_eq!(
                chunks[3].pieces.concat(),
                slot[CHUNK_SIZE as usize..2 * CHUNK_SIZE as usize]
            );
            for c in &chunks {
                let part = if c.part == Part::Uki { &uki } else { &slot };
                for (at, bytes) in c.placed() {
                    assert_eq!(
                        bytes,
                        &part[at as usize..at as usize + bytes.len()],
                        "pieces of {piece}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_flipped_byte_is_refused_and_the_chunk_can_be_sent_again() {
        let (uki, slot) = parts();
        let mut t = Transfer::new(manifest(&uki, &slot));
        let mut bad = uki[..CHUNK_SIZE as usize].to_vec();
        bad[77] ^= 1;
        let err = t.feed(0, bad).unwrap_err();
        assert_eq!(
            err.to_string(),
            "bundle: uki chunk 0 does not match its SHA-256 in the signed manifest; nothing of that chunk was written"
        );
        assert_eq!(t.next_offset(), 0);
        assert_eq!(t.feed(0, uki[..CHUNK_SIZE as usize].to_vec()).unwrap().len(), 1);
    }

    #[test]
    fn wrong_offsets_and_excess_are_refused() {
        let (uki, slot) = parts();
        let mut t = Transfer::new(manifest(&uki, &slot));
        assert_eq!(
            t.feed(5, uki[..10].to_vec()),
            Err(FeedError::Offset { expected: 0, got: 5 })
        );
        t.feed(0, uki[..10].to_vec()).unwrap();
        assert_eq!(t.next_offset(), 10);
        // A resume starts again from the last checked chunk boundary.
        assert_eq!(t.resume_at(), 0);
        let total = t.total();
        let too_much = vec![0u8; total as usize + 1];
        assert_eq!(t.feed(0, too_much), Err(FeedError::PastEnd { total }));
    }

    #[test]
    fn pieces_cut_at_chunk_ends_are_never_split() {
        let (uki, slot) = parts();
        let m = manifest(&uki, &slot);
        let stream: Vec<u8> = [uki.clone(), slot.clone()].concat();
        let mut t = Transfer::new(m.clone());
        let mut at = 0u64;
        let (mut cuts, mut pieces) = (Vec::new(), 0);
        while at < m.parts_len() {
            let len = basalt_common::bundle::to_chunk_end(&m, at).min(512 * 1024);
            cuts.push(len);
            for c in t.feed(at, stream[at as usize..(at + len) as usize].to_vec()).unwrap() {
                pieces += c.pieces.len();
            }
            at += len;
        }
        assert!(t.complete());
        // No piece was split: each chunk is made of pieces as they were sent.
        assert_eq!(pieces, cuts.len());
        let k = 512 * 1024;
        assert_eq!(cuts, [k, k, 1000, k, k, k, k, 65536]);
    }
}
