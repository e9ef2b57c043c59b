//! The PEM armour openssl writes around DER keys (RFC 7468, strict form).

use crate::b64;

/// Why a PEM text did not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PemError {
    /// No `-----BEGIN ...-----` line.
    NoBegin,
    /// A BEGIN line without the matching END line.
    NoEnd(String),
    /// The base64 body is invalid.
    Body(b64::B64Error),
    /// Text outside the armour that is not whitespace.
    Trailing,
}

impl std::fmt::Display for PemError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PemError::NoBegin => write!(f, "no PEM BEGIN line"),
            PemError::NoEnd(label) => write!(f, "PEM block {label:?} has no END line"),
            PemError::Body(e) => write!(f, "PEM body: {e}"),
            PemError::Trailing => write!(f, "unexpected text after the PEM block"),
        }
    }
}

/// One decoded PEM block: its label (e.g. `PUBLIC KEY`) and DER body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PemBlock {
    pub label: String,
    pub der: Vec<u8>,
}

/// Parses exactly one PEM block; whitespace may surround it.
pub fn parse(text: &str) -> Result<PemBlock, PemError> {
    let mut lines = text.lines().map(str::trim_end);
    let label = loop {
        match lines.next() {
            None => return Err(PemError::NoBegin),
            Some("") => continue,
            Some(line) => match line.strip_prefix("-----BEGIN ").and_then(|l| l.strip_suffix("-----")) {
                Some(label) => break label.to_string(),
                None => return Err(PemError::NoBegin),
            },
        }
    };
    let end = format!("-----END {label}-----");
    let mut body = String::new();
    loop {
        match lines.next() {
            None => return Err(PemError::NoEnd(label)),
            Some(line) if line == end => break,
            Some(line) => body.push_str(line.trim_start()),
        }
    }
    if lines.any(|l| !l.trim().is_empty()) {
        return Err(PemError::Trailing);
    }
    let der = b64::decode(&body).map_err(PemError::Body)?;
    Ok(PemBlock { label, der })
}

/// Writes a PEM block with 64-column lines, as openssl does.
pub fn encode(label: &str, der: &[u8]) -> String {
    let body = b64::encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in body.as_bytes().chunks(64) {
        // The alphabet is ASCII, so every chunk is valid UTF-8.
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let der: Vec<u8> = (0..100u8).collect();
        let text = encode("PUBLIC KEY", &der);
        assert!(text.lines().all(|l| l.len() <= 64 || l.starts_with("-----")));
        let block = parse(&text).unwrap();
        assert_eq!(block.label, "PUBLIC KEY");
        assert_eq!(block.der, der);
    }

    #[test]
    fn table() {
        let ok = "\n-----BEGIN X-----\r\nAAEC\r\n-----END X-----\r\n\n";
        assert_eq!(parse(ok).unwrap().der, vec![0, 1, 2]);
        let cases = [
            ("", PemError::NoBegin),
            ("AAEC\n", PemError::NoBegin),
            ("-----BEGIN X-----\nAAEC\n", PemError::NoEnd("X".into())),
            (
                "-----BEGIN X-----\nAAEC\n-----END Y-----\n",
                PemError::NoEnd("X".into()),
            ),
            (
                "-----BEGIN X-----\nAA!C\n-----END X-----\n",
                PemError::Body(b64::B64Error::Symbol(2)),
            ),
            ("-----BEGIN X-----\nAAEC\n-----END X-----\nmore\n", PemError::Trailing),
        ];
        for (text, err) in cases {
            assert_eq!(parse(text), Err(err), "{text:?}");
        }
    }
}
