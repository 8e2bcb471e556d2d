//! Maps and sets keyed by share hashes, with a fast keyed hash.
//!
//! The share chain looks hashes up several times per share per think; SipHash (std's
//! default) made that half of a think with thousands of unconnected shares held. Keys
//! here are share hashes and the hashes shares name as their parents, and a peer chooses
//! the latter freely, so the hash must still be keyed: each process draws two secret
//! 64-bit keys, so nobody can compute offline which keys land in one bucket.

use std::hash::{BuildHasher, Hasher};
use std::sync::OnceLock;

use crate::bitcoin::hash::Hash256;

/// A map from share hashes.
pub type ShareMap<V> = std::collections::HashMap<Hash256, V, Keys>;
/// A set of share hashes.
pub type ShareSet = std::collections::HashSet<Hash256, Keys>;

/// This process's secret keys.
#[derive(Debug, Clone, Copy)]
pub struct Keys {
    k0: u64,
    k1: u64,
}

impl Default for Keys {
    fn default() -> Keys {
        static KEYS: OnceLock<(u64, u64)> = OnceLock::new();
        let (k0, k1) = *KEYS.get_or_init(|| (rand::random(), rand::random::<u64>() | 1));
        Keys { k0, k1 }
    }
}

impl BuildHasher for Keys {
    type Hasher = KeyedHasher;

    fn build_hasher(&self) -> KeyedHasher {
        KeyedHasher {
            h: self.k0,
            k: self.k1,
        }
    }
}

/// Eight bytes at a time: xor into the state, then a folded multiply by the secret (the
/// 128-bit product's halves xored, as wyhash and foldhash do: every input bit reaches
/// every output bit through key-dependent carries, so no difference cancels for all
/// keys); finished with MurmurHash3's 64-bit mix.
#[derive(Debug, Clone)]
pub struct KeyedHasher {
    h: u64,
    k: u64,
}

impl KeyedHasher {
    fn word(&mut self, w: u64) {
        let m = u128::from(self.h ^ w) * u128::from(self.k);
        self.h = (m as u64) ^ ((m >> 64) as u64);
    }
}

impl Hasher for KeyedHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.word(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.word(u64::from_le_bytes(w) ^ ((rest.len() as u64) << 56));
        }
    }

    fn write_usize(&mut self, n: usize) {
        self.word(n as u64);
    }

    fn finish(&self) -> u64 {
        let mut h = self.h;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bitcoin::hash::sha256d;

    #[test]
    fn equal_hashes_hash_equal_and_near_ones_spread_over_buckets() {
        let keys = Keys::default();
        let a = sha256d(b"a");
        assert_eq!(keys.hash_one(a), keys.hash_one(a));
        // Hashes differing in one bit each land in many different low-bit buckets.
        let mut buckets = std::collections::HashSet::new();
        for bit in 0..256 {
            let mut h = Hash256::ZERO;
            h.0[bit / 8] ^= 1 << (bit % 8);
            buckets.insert(keys.hash_one(h) & 0xfff);
        }
        assert!(buckets.len() > 200, "{} buckets of 4096", buckets.len());
        let mut set = ShareSet::default();
        assert!(set.insert(a) && !set.insert(a));
    }

    #[test]
    fn a_difference_across_two_words_does_not_cancel() {
        // Bit 63 of one word and bit 30 of the next cancelled for every key in a
        // multiply-rotate design; with a folded multiply they must not.
        let keys = Keys::default();
        let mut a = Hash256::ZERO;
        let mut b = Hash256::ZERO;
        b.0[7] ^= 0x80;
        b.0[8 + 3] ^= 0x40;
        assert_ne!(keys.hash_one(a), keys.hash_one(b));
        a.0[0] = 1;
        b.0[0] = 1;
        assert_ne!(keys.hash_one(a), keys.hash_one(b));
    }
}
