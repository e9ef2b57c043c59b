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

pub fn decode(text: &str) -> Result<Vec<u8>, B64Error> {
    let input = text.as_bytes();
    if !input.len().is_multiple_of(4) {
        return Err(B64Error::Length(input.len()));
    }
    let mut out = Vec::with_capacity(input.len() / 4 * 3);
    let quads = input.len() / 4;
    for (q, quad) in input.chunks_exact(4).enumerate() {
        let last = q + 1 == quads;
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
    }
    Ok(out)
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
        ];
        for (text, err) in cases {
            assert_eq!(decode(text), Err(err), "{text:?}");
        }
    }
}
