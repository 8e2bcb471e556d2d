//! Compact targets ("bits") and the consensus arithmetic on them.
//!
//! Targets are 256-bit numbers; anything that can exceed 2^256 (attempts, weights times
//! amounts) is computed in 512 bits so it never overflows.

use std::fmt;

use ruint::aliases::{U256, U512};

/// A compact target as it appears on the wire. The raw `u32` is kept as received and
/// re-encoded unchanged, so non-canonical encodings hash as sent.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Bits(pub u32);

impl fmt::Debug for Bits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Bits({:08x})", self.0)
    }
}

impl fmt::Display for Bits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}", self.0)
    }
}

impl Bits {
    /// The target as R computes it, `mantissa << 8*(exponent-3)` with no sign bit,
    /// saturated at 2^256 (so it fits in 512 bits for any exponent).
    pub fn to_target_wide(self) -> U512 {
        let exponent = (self.0 >> 24) as usize;
        let mantissa = U512::from(self.0 & 0x00ff_ffff);
        let value = if exponent >= 3 {
            // The mantissa has at most 24 bits; past a 256-bit shift the value is beyond
            // 2^256 whenever it is non-zero.
            let shift = 8 * (exponent - 3);
            if shift > 256 {
                if mantissa.is_zero() {
                    U512::ZERO
                } else {
                    two_pow_256()
                }
            } else {
                mantissa << shift
            }
        } else {
            mantissa >> (8 * (3 - exponent))
        };
        value.min(two_pow_256())
    }

    /// The target for comparisons with a hash: as `to_target_wide`, but 2^256 becomes
    /// 2^256 − 1 (every hash is at or below either).
    pub fn to_target(self) -> U256 {
        U256::saturating_from(self.to_target_wide())
    }

    /// Expected hashes to meet this target, `2^256 // (target + 1)`, with the saturated
    /// target (0 for a target of 2^256).
    pub fn average_attempts(self) -> U512 {
        two_pow_256() / (self.to_target_wide() + U512::from(1u64))
    }

    /// The largest compact encoding whose target does not exceed `target` (R's
    /// `from_target_upper_bound`): the mantissa is truncated, never rounded up.
    pub fn from_target_floor(target: U256) -> Bits {
        // The big-endian bytes with a zero byte before them (the sign byte a leading byte
        // of 0x80 or more takes) and three after (a short number's mantissa is padded).
        let mut buf = [0u8; 36];
        buf[1..33].copy_from_slice(&target.to_be_bytes::<32>());
        let first = buf[1..33]
            .iter()
            .position(|&b| b != 0)
            .map_or(33, |p| p + 1);
        let start = if buf[first] >= 0x80 { first - 1 } else { first };
        let len = (33 - start) as u32;
        Bits(
            (len << 24)
                | (u32::from(buf[start]) << 16)
                | (u32::from(buf[start + 1]) << 8)
                | u32::from(buf[start + 2]),
        )
    }
}

/// The 2^256 constant in 512 bits.
pub fn two_pow_256() -> U512 {
    U512::from(1u64) << 256
}

/// Expected hashes to find a hash at or below `target`: `2^256 // (target + 1)`.
pub fn target_to_average_attempts(target: U256) -> U512 {
    two_pow_256() / (U512::from(target) + U512::from(1u64))
}

/// Bitcoin difficulty relative to the difficulty-1 target, for display only.
pub fn target_to_difficulty(target: U256) -> f64 {
    let diff1 = Bits(0x1d00ffff).to_target();
    u256_to_f64(diff1) / u256_to_f64(target).max(1.0)
}

pub fn u256_to_f64(v: U256) -> f64 {
    v.as_limbs()
        .iter()
        .rev()
        .fold(0.0, |acc, &limb| acc * 18446744073709551616.0 + limb as f64)
}

/// Parses a 256-bit number from big-endian hex (up to 64 digits).
pub fn u256_from_be_hex(s: &str) -> Option<U256> {
    if s.is_empty() || s.len() > 64 {
        return None;
    }
    U256::from_str_radix(s, 16).ok()
}

/// A 256-bit number as 64 big-endian hex digits.
pub fn u256_to_be_hex(v: U256) -> String {
    hex::encode(v.to_be_bytes::<32>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(s: &str) -> U256 {
        u256_from_be_hex(s).unwrap()
    }

    #[test]
    fn mainnet_max_target_rounds_down_to_1d00ffff() {
        let max = U256::MAX >> 32;
        assert_eq!(Bits::from_target_floor(max), Bits(0x1d00ffff));
        assert_eq!(
            Bits(0x1d00ffff).to_target(),
            u("00000000ffff0000000000000000000000000000000000000000000000000000")
        );
        assert_eq!(
            target_to_average_attempts(Bits(0x1d00ffff).to_target()),
            U512::from(4295032833u64)
        );
    }

    #[test]
    fn spec_examples_round_down() {
        assert_eq!(
            Bits::from_target_floor(U256::from(0x800000u64)),
            Bits(0x04008000)
        );
        assert_eq!(Bits::from_target_floor(U256::from(1u64)), Bits(0x01010000));
        assert_eq!(Bits(0x01010000).to_target(), U256::from(1u64));
        assert_eq!(Bits::from_target_floor(U256::ZERO), Bits(0));
        assert_eq!(Bits(0).to_target(), U256::ZERO);
    }

    /// `from_target_floor` as first written, with a list of bytes.
    fn from_target_floor_plain(target: U256) -> Bits {
        let be = target.to_be_bytes::<32>();
        let first = be.iter().position(|&b| b != 0).unwrap_or(32);
        let mut n: Vec<u8> = be[first..].to_vec();
        if n.first().is_some_and(|&b| b >= 0x80) {
            n.insert(0, 0);
        }
        let len = n.len() as u32;
        n.extend_from_slice(&[0, 0, 0]);
        Bits((len << 24) | (u32::from(n[0]) << 16) | (u32::from(n[1]) << 8) | u32::from(n[2]))
    }

    #[test]
    fn floor_encoding_in_place_is_the_plain_one() {
        let mut next = crate::bitcoin::xorshift(0x2545_f491_4f6c_dd1du64);
        for case in 0..4000u32 {
            let limbs = [next(), next(), next(), next()];
            // Every length, and leading bytes at, above and below 0x80.
            let mut x = U256::from_limbs(limbs) >> (case % 257) as usize;
            if case % 3 == 0 {
                let top = 256usize.saturating_sub(case as usize % 257 + 1);
                x |= U256::from(1u64) << top;
            }
            assert_eq!(
                Bits::from_target_floor(x),
                from_target_floor_plain(x),
                "{x:#x}"
            );
        }
        for x in [
            U256::ZERO,
            U256::MAX,
            U256::from(0x80u64),
            U256::from(0x7fu64),
        ] {
            assert_eq!(Bits::from_target_floor(x), from_target_floor_plain(x));
        }
    }

    #[test]
    fn floor_encoding_never_exceeds_its_input() {
        let mut x = U256::from(0x1234_5678_9abc_def1u64);
        for _ in 0..60 {
            let bits = Bits::from_target_floor(x);
            assert!(bits.to_target() <= x);
            x = x.wrapping_mul(U256::from(7u64)) + U256::from(3u64);
        }
    }

    #[test]
    fn mantissa_sign_bit_is_not_a_sign() {
        assert_eq!(Bits(0x04800000).to_target(), U256::from(0x80000000u64));
    }

    #[test]
    fn huge_exponents_saturate_instead_of_overflowing() {
        assert_eq!(Bits(0xff7fffff).to_target(), U256::MAX);
        assert_eq!(Bits(0x2101ffff).to_target(), U256::MAX);
        assert_eq!(
            Bits(0x2100ffff).to_target(),
            u(&format!("ffff{}", "0".repeat(60)))
        );
        assert_eq!(
            Bits(0x20ffffff).to_target(),
            u(&format!("ffffff{}", "0".repeat(58)))
        );
        assert_eq!(Bits(0xff000000).to_target(), U256::ZERO);
        assert_eq!(Bits(0x2101ffff).to_target_wide(), two_pow_256());
        assert_eq!(Bits(0xff7fffff).to_target_wide(), two_pow_256());
    }

    #[test]
    fn a_saturated_target_means_zero_attempts_as_in_python() {
        assert_eq!(Bits(0x2101ffff).average_attempts(), U512::ZERO);
        assert_eq!(Bits(0x2100ffff).average_attempts(), U512::from(1u64));
        assert_eq!(
            Bits(0x1d00ffff).average_attempts(),
            U512::from(4295032833u64)
        );
    }

    #[test]
    fn attempts_at_max_target_is_one() {
        assert_eq!(target_to_average_attempts(U256::MAX), U512::from(1u64));
        assert_eq!(target_to_average_attempts(U256::ZERO), two_pow_256());
    }
}
