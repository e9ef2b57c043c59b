//! SplitMix64 (Steele, Lea, Flood 2014): a seeded, reproducible stream of
//! 64-bit values, and bytes zstd cannot shrink. Not for secrets: for test
//! garbage, tamper offsets and benchmark padding that a later run (or a
//! failing one, from the seed it printed) regenerates exactly.

#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A value in `0..n` (n > 0). The modulo bias is below 2^-40 for the
    /// sizes used here, far under anything a test could notice.
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0);
        self.next_u64() % n
    }

    /// Fills `buf` with the next values, little-endian, to its last byte.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_reference_values() {
        // The first outputs for seed 1234567, from the reference C code.
        let mut r = SplitMix64::new(1234567);
        let want = [
            6457827717110365317u64,
            3203168211198807973,
            9817491932198370423,
            4593380528125082431,
            16408922859458223821,
        ];
        for w in want {
            assert_eq!(r.next_u64(), w);
        }
        assert_eq!(SplitMix64::new(0).next_u64(), 0xe220_a839_7b1d_cdaf);
    }

    #[test]
    fn seeded_below_stays_in_range_and_fill_reaches_the_last_byte() {
        let (mut a, mut b, mut c) = (SplitMix64::new(1), SplitMix64::new(1), SplitMix64::new(2));
        let (x, y, z) = (a.next_u64(), b.next_u64(), c.next_u64());
        assert_eq!(x, y);
        assert_ne!(x, z);
        let mut r = SplitMix64::new(7);
        for n in [1u64, 2, 3, 1000, u64::MAX] {
            for _ in 0..100 {
                assert!(r.below(n) < n);
            }
        }
        let (mut a, mut b) = (vec![0u8; 13], vec![0u8; 13]);
        SplitMix64::new(9).fill(&mut a);
        SplitMix64::new(9).fill(&mut b);
        assert_eq!(a, b);
        assert_ne!(a, vec![0u8; 13]);
        let mut odd = [0u8; 13];
        SplitMix64::new(3).fill(&mut odd);
        assert_ne!(odd[12], 0, "an odd length is filled to the last byte");
    }
}
