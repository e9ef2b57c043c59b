//! Challenge nonces for signed commands.
//!
//! Every `status` response carries a fresh nonce. A signed reboot or
//! poweroff must carry one that is still outstanding; accepting the command
//! consumes it, so a replayed command finds its nonce gone. The book is
//! bounded: the oldest nonce is forgotten when a new one would exceed the
//! limit, and nonces expire.

use std::collections::VecDeque;

/// Outstanding nonces kept at most.
pub const MAX_OUTSTANDING: usize = 32;
/// A nonce is good for this long after it was issued.
pub const TTL_NS: u64 = 5 * 60 * 1_000_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceError {
    /// Never issued, already used, or pushed out by newer ones.
    Unknown,
    Expired,
}

impl std::fmt::Display for NonceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NonceError::Unknown => write!(
                f,
                "nonce is not outstanding (never issued, already used, or replaced by newer ones); \
                 fetch a fresh one with status"
            ),
            NonceError::Expired => write!(f, "nonce expired; fetch a fresh one with status"),
        }
    }
}

#[derive(Debug, Default)]
pub struct NonceBook {
    outstanding: VecDeque<(String, u64)>,
}

impl NonceBook {
    /// Records a nonce issued at `now_ns`.
    pub fn issue(&mut self, nonce: String, now_ns: u64) {
        if self.outstanding.len() == MAX_OUTSTANDING {
            self.outstanding.pop_front();
        }
        self.outstanding.push_back((nonce, now_ns));
    }

    /// Takes a nonce out of the book if it is outstanding and fresh.
    pub fn consume(&mut self, nonce: &str, now_ns: u64) -> Result<(), NonceError> {
        let at = self
            .outstanding
            .iter()
            .position(|(n, _)| n == nonce)
            .ok_or(NonceError::Unknown)?;
        let (_, issued) = self.outstanding.remove(at).ok_or(NonceError::Unknown)?;
        if now_ns.saturating_sub(issued) > TTL_NS {
            return Err(NonceError::Expired);
        }
        Ok(())
    }
}

/// A new random nonce: 16 bytes from the OS, in hex.
pub fn fresh(rng: &dyn ring::rand::SecureRandom) -> Option<String> {
    let mut bytes = [0u8; 16];
    rng.fill(&mut bytes).ok()?;
    Some(basalt_common::hex::encode(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consume_once() {
        let mut book = NonceBook::default();
        book.issue("a".into(), 0);
        book.issue("b".into(), 0);
        let cases = [
            ("a", 10, Ok(())),
            ("a", 10, Err(NonceError::Unknown)),
            ("zzz", 10, Err(NonceError::Unknown)),
            ("b", TTL_NS + 1, Err(NonceError::Expired)),
            ("b", 0, Err(NonceError::Unknown)),
        ];
        for (nonce, now, want) in cases {
            assert_eq!(book.consume(nonce, now), want, "{nonce} at {now}");
        }
    }

    #[test]
    fn bounded() {
        let mut book = NonceBook::default();
        for i in 0..MAX_OUTSTANDING + 3 {
            book.issue(format!("n{i}"), 0);
        }
        assert_eq!(book.outstanding.len(), MAX_OUTSTANDING);
        for i in 0..3 {
            assert_eq!(book.consume(&format!("n{i}"), 0), Err(NonceError::Unknown));
        }
        assert_eq!(book.consume(&format!("n{}", MAX_OUTSTANDING + 2), 0), Ok(()));
    }

    #[test]
    fn fresh_nonces_differ() {
        let rng = ring::rand::SystemRandom::new();
        let a = fresh(&rng).unwrap();
        assert_eq!(a.len(), 32);
        assert_ne!(a, fresh(&rng).unwrap());
    }
}
