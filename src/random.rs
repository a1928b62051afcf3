//! The one pseudo-random generator of the program (xorshift64*): cheap, seedable, and good enough to
//! spread load (`random`, `power_of_two`) and to jitter health probes. Not for anything secret.

use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed` (any value; it is mixed first, and zero is avoided).
    pub fn with_seed(seed: u64) -> Rng {
        Rng(mix64(seed) | 1)
    }

    /// A generator seeded from the clock, for a different sequence in every process and thread.
    pub fn from_time() -> Rng {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0x9E37_79B9, |d| d.as_nanos() as u64);
        // The address of a local differs between threads started in the same nanosecond.
        let local = 0u8;
        Rng::with_seed(nanos ^ (&local as *const u8 as u64).rotate_left(32))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A value in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// splitmix64's finaliser: spreads every input bit over the output.
pub fn mix64(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// FNV-1a: a stable hash of bytes (for identities that must not change between runs).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_sequences_repeat_and_spread() {
        let mut a = Rng::with_seed(42);
        let mut b = Rng::with_seed(42);
        let xs: Vec<u64> = (0..8).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..8).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(Rng::with_seed(0).next_u64(), 0);
        let mut r = Rng::with_seed(7);
        let mut seen = [0u32; 4];
        for _ in 0..4000 {
            seen[r.below(4) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| (900..1100).contains(&n)), "{seen:?}");
        assert_eq!(Rng::with_seed(1).below(0), 0);
    }
}
