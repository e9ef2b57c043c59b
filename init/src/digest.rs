//! The one hashing routine basalt-init uses, for the image and for modules.
//! The benchmark (bench/) calls the same function.

use ring::digest::{Context, SHA256};
use std::io::{self, Read, Write};

/// Read size. Large enough that syscall overhead vanishes next to SHA-256,
/// small enough to stay in L2 between the read and the hash.
pub const CHUNK: usize = 256 * 1024;

/// What reading `len` bytes produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hashed {
    pub sha256: [u8; 32],
    /// Bytes actually read: less than asked means the source ended early.
    pub len: u64,
}

/// Hashes up to `len` bytes of `src`, writing the same bytes to `copy` if
/// given, in a single pass: what is copied is exactly what was hashed.
pub fn hash_stream<R: Read, W: Write>(src: &mut R, len: u64, mut copy: Option<&mut W>) -> io::Result<Hashed> {
    let mut ctx = Context::new(&SHA256);
    let mut buf = vec![0u8; CHUNK];
    let mut done: u64 = 0;
    while done < len {
        let want = (len - done).min(CHUNK as u64) as usize;
        let n = match src.read(&mut buf[..want]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        ctx.update(&buf[..n]);
        if let Some(dst) = copy.as_mut() {
            dst.write_all(&buf[..n])?;
        }
        done += n as u64;
    }
    let mut sha256 = [0u8; 32];
    sha256.copy_from_slice(ctx.finish().as_ref());
    Ok(Hashed { sha256, len: done })
}

/// SHA-256 of a byte slice.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&SHA256, bytes).as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use basalt_common::hex;

    #[test]
    fn known_digests() {
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(hex::encode(&sha256(b"abc")), abc);
        let h = hash_stream(&mut &b"abcdef"[..], 3, None::<&mut Vec<u8>>).unwrap();
        assert_eq!((hex::encode(&h.sha256).as_str(), h.len), (abc, 3));
    }

    #[test]
    fn copy_matches_what_was_hashed_across_chunks() {
        let data: Vec<u8> = (0..CHUNK * 2 + 17).map(|i| (i * 7 % 251) as u8).collect();
        let mut copy = Vec::new();
        let h = hash_stream(&mut &data[..], data.len() as u64, Some(&mut copy)).unwrap();
        assert_eq!(copy, data);
        assert_eq!(h.sha256, sha256(&data));
        assert_eq!(h.len, data.len() as u64);
    }

    #[test]
    fn short_source_reports_how_much_it_read() {
        let h = hash_stream(&mut &b"abc"[..], 10, None::<&mut Vec<u8>>).unwrap();
        assert_eq!(h.len, 3);
    }
}
