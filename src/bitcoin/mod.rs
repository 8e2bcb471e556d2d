//! Bitcoin: encodings, hashes, transactions, blocks, scripts, addresses, targets and
//! message framing. Knows nothing of P2Pool.

pub mod address;
pub mod block;
pub mod chain;
pub mod encode;
pub mod fit;
pub mod frame;
pub mod hash;
pub mod merkle;
pub mod script;
pub mod target;
pub mod template;
pub mod tx;

/// A seeded xorshift64 generator, for the tests that compare a fast path with a plain
/// one on many random inputs.
#[cfg(test)]
pub(crate) fn xorshift(seed: u64) -> impl FnMut() -> u64 {
    let mut rng = seed;
    move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    }
}
