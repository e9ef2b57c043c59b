//! Challenge nonces for signed commands.
//!
//! Every `status` response carries a fresh nonce. A signed reboot or
//! poweroff must carry one that is still outstanding; accepting the command
//! consumes it, so a replayed command finds its nonce gone.
//!
//! Nonces are issued per connection, and no client can push out another's:
//! each open connection (the serial line is one) holds at most
//! [`PER_CONNECTION`] of its own, and a new one replaces only that
//! connection's oldest. A nonce stays good wherever it is used from, so a
//! client may fetch it on one connection and send the command on another;
//! once its connection closes it joins a small shared pool
//! ([`MAX_ORPHANED`]), where newer orphans can replace it. Open connections
//! are bounded by the server, so the book is too. Nonces expire after
//! [`TTL_NS`].

use std::collections::{HashMap, VecDeque};

/// A connection as the server numbers them (the serial line is 0).
pub type ConnId = u64;

/// Outstanding nonces one open connection holds at most.
pub const PER_CONNECTION: usize = 4;
/// Nonces kept after their connection closed.
pub const MAX_ORPHANED: usize = 32;
/// A nonce is good for this long after it was issued.
pub const TTL_NS: u64 = 5 * 60 * 1_000_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceError {
    /// Never issued, already used, or replaced by newer ones.
    Unknown,
    Expired,
}

impl std::fmt::Display for NonceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NonceError::Unknown => write!(
                f,
                "nonce is not outstanding (never issued, already used, or replaced by newer ones \
                 from the same connection); fetch a fresh one with status"
            ),
            NonceError::Expired => write!(f, "nonce expired; fetch a fresh one with status"),
        }
    }
}

type Issued = VecDeque<(String, u64)>;

#[derive(Debug, Default)]
pub struct NonceBook {
    open: HashMap<ConnId, Issued>,
    orphaned: Issued,
}

impl NonceBook {
    /// Records a nonce issued to connection `conn` at `now_ns`.
    pub fn issue(&mut self, conn: ConnId, nonce: String, now_ns: u64) {
        let mine = self.open.entry(conn).or_default();
        if mine.len() == PER_CONNECTION {
            mine.pop_front();
        }
        mine.push_back((nonce, now_ns));
    }

    /// Connection `conn` closed: its nonces stay good, in the shared pool.
    pub fn closed(&mut self, conn: ConnId) {
        for n in self.open.remove(&conn).unwrap_or_default() {
            if self.orphaned.len() == MAX_ORPHANED {
                self.orphaned.pop_front();
            }
            self.orphaned.push_back(n);
        }
    }

    /// Takes a nonce out of the book if it is outstanding and fresh, from
    /// whichever connection it was issued on.
    pub fn consume(&mut self, nonce: &str, now_ns: u64) -> Result<(), NonceError> {
        let lists = self.open.values_mut().chain(std::iter::once(&mut self.orphaned));
        for list in lists {
            if let Some(at) = list.iter().position(|(n, _)| n == nonce) {
                let (_, issued) = list.remove(at).ok_or(NonceError::Unknown)?;
                if now_ns.saturating_sub(issued) > TTL_NS {
                    return Err(NonceError::Expired);
                }
                return Ok(());
            }
        }
        Err(NonceError::Unknown)
    }

    /// Nonces held in all.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.open.values().map(VecDeque::len).sum::<usize>() + self.orphaned.len()
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
        book.issue(1, "a".into(), 0);
        book.issue(2, "b".into(), 0);
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
    fn another_connection_cannot_evict() {
        let mut book = NonceBook::default();
        book.issue(1, "mine".into(), 0);
        for i in 0..64 {
            book.issue(2, format!("flood{i}"), 0);
        }
        assert_eq!(book.len(), 1 + PER_CONNECTION, "the flooder holds only its own few");
        assert_eq!(
            book.consume("flood0", 0),
            Err(NonceError::Unknown),
            "its own oldest went"
        );
        assert_eq!(book.consume("flood63", 0), Ok(()));
        assert_eq!(book.consume("mine", 0), Ok(()), "client 1's nonce survived 64 others");
    }

    #[test]
    fn own_connection_replaces_its_oldest() {
        let mut book = NonceBook::default();
        for i in 0..PER_CONNECTION + 2 {
            book.issue(7, format!("n{i}"), 0);
        }
        assert_eq!(book.consume("n0", 0), Err(NonceError::Unknown));
        assert_eq!(book.consume("n1", 0), Err(NonceError::Unknown));
        assert_eq!(book.consume(&format!("n{}", PER_CONNECTION + 1), 0), Ok(()));
    }

    #[test]
    fn closed_connections_nonces_stay_good_in_a_bounded_pool() {
        let mut book = NonceBook::default();
        book.issue(1, "kept".into(), 0);
        book.closed(1);
        assert_eq!(book.consume("kept", 0), Ok(()), "usable from another connection");
        for c in 0..MAX_ORPHANED as u64 + 5 {
            book.issue(100 + c, format!("o{c}"), 0);
            book.closed(100 + c);
        }
        assert_eq!(book.len(), MAX_ORPHANED);
        assert_eq!(
            book.consume("o0", 0),
            Err(NonceError::Unknown),
            "the oldest orphans went"
        );
        assert_eq!(book.consume(&format!("o{}", MAX_ORPHANED + 4), 0), Ok(()));
        book.issue(1, "open".into(), 0);
        for c in 0..100 {
            book.issue(500 + c, format!("p{c}"), 0);
            book.closed(500 + c);
        }
        assert_eq!(
            book.consume("open", 0),
            Ok(()),
            "orphans never push out an open connection's"
        );
    }

    #[test]
    fn fresh_nonces_differ() {
        let rng = ring::rand::SystemRandom::new();
        let a = fresh(&rng).unwrap();
        assert_eq!(a.len(), 32);
        assert_ne!(a, fresh(&rng).unwrap());
    }
}
