//! Standard base64 (RFC 4648, `+/`, `=` padding), strict on decode.
//!
//! Strict means: padding is required, no whitespace, and the unused low bits
//! of the last symbol must be zero, so every byte string has exactly one
//! encoding. Signed envelopes rely on that: the payload bytes that were signed
//! are exactly the bytes that decode.

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Why a base64 text did not decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum B64Error {
    /// Length is not a multiple of four.
    Length(usize),
    /// A byte outside the alphabet, at this offset.
    Symbol(usize),
    /// Padding in the wrong place, or non-zero trailing bits.
    Padding,
}

impl std::fmt::Display for B64Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            B64Error::Length(n) => write!(f, "base64 length {n} is not a multiple of 4"),
            B64Error::Symbol(at) => write!(f, "invalid base64 symbol at offset {at}"),
            B64Error::Padding => write!(f, "invalid base64 padding"),
        }
    }
}

pub fn encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        let symbols = [n >> 18, n >> 12, n >> 6, n].map(|i| ALPHABET[(i & 63) as usize] as char);
        let keep = chunk.len() + 1;
        for (i, s) in symbols.iter().enumerate() {
            out.push(if i < keep { *s } else { '=' });
        }
    }
    out
}

/// Each byte's 6-bit value, or [`INVALID`] outside the alphabet.
const VALUES: [u8; 256] = {
    let mut t = [INVALID; 256];
    let mut i = 0;
    while i < 64 {
        t[ALPHABET[i] as usize] = i as u8;
        i += 1;
    }
    t
};
const INVALID: u8 = 0xff;

pub fn decode(text: &str) -> Result<Vec<u8>, B64Error> {
    let input = text.as_bytes();
    if !input.len().is_multiple_of(4) {
        return Err(B64Error::Length(input.len()));
    }
    let mut out = Vec::with_capacity(input.len() / 4 * 3);
    let quads = input.len() / 4;
    // Every quad but the last has no padding: a table lookup each, and the
    // slow path only to say what is wrong with a bad one. (Bundles arrive
    // as base64, 512 KiB a request, on a node that may be emulated.)
    let body = quads.saturating_sub(1) * 4;
    for (q, quad) in input[..body].chunks_exact(4).enumerate() {
        let v = [quad[0], quad[1], quad[2], quad[3]].map(|c| VALUES[c as usize]);
        if v.contains(&INVALID) {
            decode_quad(quad, q, false, &mut out)?;
            continue;
        }
        let n = u32::from(v[0]) << 18 | u32::from(v[1]) << 12 | u32::from(v[2]) << 6 | u32::from(v[3]);
        out.extend_from_slice(&[(n >> 16) as u8, (n >> 8) as u8, n as u8]);
    }
    if quads > 0 {
        decode_quad(&input[body..], quads - 1, true, &mut out)?;
    }
    Ok(out)
}

/// One quad, padding and canonical trailing bits checked; `q` is its index.
fn decode_quad(quad: &[u8], q: usize, last: bool, out: &mut Vec<u8>) -> Result<(), B64Error> {
    let pad = quad.iter().rev().take_while(|&&c| c == b'=').count();
    if pad > 2 || (pad > 0 && !last) {
        return Err(B64Error::Padding);
    }
    let mut n = 0u32;
    for (i, &c) in quad[..4 - pad].iter().enumerate() {
        let v = value(c).ok_or(B64Error::Symbol(q * 4 + i))?;
        n |= u32::from(v) << (18 - 6 * i);
    }
    let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
    // Bits below the last real byte must be zero for the encoding to be canonical.
    let unused = match pad {
        0 => 0,
        1 => n & 0xff,
        _ => n & 0xffff,
    };
    if unused != 0 {
        return Err(B64Error::Padding);
    }
    out.extend_from_slice(&bytes[..3 - pad]);
    Ok(())
}

fn value(c: u8) -> Option<u8> {
    match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in cases {
            assert_eq!(encode(plain.as_bytes()), encoded);
            assert_eq!(decode(encoded).unwrap(), plain.as_bytes());
        }
    }

    #[test]
    fn all_bytes_round_trip() {
        let bytes: Vec<u8> = (0..=255u8).collect();
        for len in 0..bytes.len() {
            assert_eq!(decode(&encode(&bytes[..len])).unwrap(), &bytes[..len]);
        }
    }

    #[test]
    fn rejects_non_canonical() {
        let cases = [
            ("Zg=", B64Error::Length(3)),
            ("Zg==Zg==", B64Error::Padding),
            ("Z===", B64Error::Padding),
            ("Zh==", B64Error::Padding),
            ("Zm9=", B64Error::Padding),
            ("Zm 9", B64Error::Symbol(2)),
            ("Zm9v\n", B64Error::Length(5)),
            ("Zm-v", B64Error::Symbol(2)),
            // The same faults in a quad before the last (the fast path).
            ("Zm-vZm9v", B64Error::Symbol(2)),
            ("Zm9v.m9vZm9v", B64Error::Symbol(4)),
            ("Zm9vA=BCZm9v", B64Error::Symbol(5)),
            ("Zm9vZm9vZm9vZm9=Zm9v", B64Error::Padding),
        ];
        for (text, err) in cases {
            assert_eq!(decode(text), Err(err), "{text:?}");
        }
    }
}
