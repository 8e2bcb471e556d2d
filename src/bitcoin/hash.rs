//! Hash functions and the 256-bit hash type.
//!
//! `Hash256` holds 32 bytes in internal (wire) order, the little-endian form of the
//! 256-bit number. `Display`/`FromStr` use Bitcoin's display order, the reverse.

use std::fmt;
use std::str::FromStr;

use ripemd::Ripemd160;
use ruint::aliases::U256;
use sha2::{Digest, Sha256};

use super::encode::{self, Decode, Encode, Reader};

/// A 256-bit hash in internal byte order. `Ord` compares the bytes in that order, which
/// is not numeric order: compare `to_u256()` values against targets.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Hash256(pub [u8; 32]);

impl Hash256 {
    pub const ZERO: Hash256 = Hash256([0; 32]);

    pub fn is_zero(&self) -> bool {
        self.0 == [0; 32]
    }

    /// The hash read as a little-endian 256-bit number, as every target comparison does.
    pub fn to_u256(&self) -> U256 {
        U256::from_le_bytes(self.0)
    }

    pub fn from_u256(v: U256) -> Hash256 {
        Hash256(v.to_le_bytes())
    }

    /// 64 hex digits in display order (reversed bytes).
    pub fn to_hex(&self) -> String {
        let mut rev = self.0;
        rev.reverse();
        hex::encode(rev)
    }

    /// Parses 64 hex digits in display order.
    pub fn from_hex(s: &str) -> Result<Hash256, HexError> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(s, &mut bytes).map_err(|_| HexError { len: s.len() })?;
        bytes.reverse();
        Ok(Hash256(bytes))
    }

    /// `None` for the all-zero hash, as R's `PossiblyNone(0, H256)`.
    pub fn non_zero(self) -> Option<Hash256> {
        (!self.is_zero()).then_some(self)
    }
}

/// A hash string that is not 64 hex digits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HexError {
    pub len: usize,
}

impl fmt::Display for HexError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid hash hex: expected 64 hex digits, got {} characters",
            self.len
        )
    }
}

impl std::error::Error for HexError {}

impl fmt::Display for Hash256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Hash256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash256({})", self.to_hex())
    }
}

impl FromStr for Hash256 {
    type Err = HexError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Hash256::from_hex(s)
    }
}

impl Encode for Hash256 {
    fn encode_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.0);
    }
}

impl Decode for Hash256 {
    const NAME: &'static str = "hash";
    fn decode_from(r: &mut Reader<'_>) -> encode::Result<Self> {
        Ok(Hash256(r.array("hash")?))
    }
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// SHA-256 applied twice.
pub fn sha256d(data: &[u8]) -> Hash256 {
    Hash256(Sha256::digest(Sha256::digest(data)).into())
}

/// [`sha256d`] of the parts one after another, without joining them first.
pub fn sha256d_parts(parts: &[&[u8]]) -> Hash256 {
    let mut first = Sha256::new();
    for part in parts {
        first.update(part);
    }
    Hash256(Sha256::digest(first.finalize()).into())
}

/// RIPEMD-160 of SHA-256.
pub fn hash160(data: &[u8]) -> [u8; 20] {
    Ripemd160::digest(Sha256::digest(data)).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256d_of_parts_is_sha256d_of_the_parts_joined() {
        let joined = b"coinbase one, extranonces, coinbase two";
        assert_eq!(
            sha256d_parts(&[&joined[..9], &joined[9..21], &[], &joined[21..]]),
            sha256d(joined)
        );
        assert_eq!(sha256d_parts(&[]), sha256d(&[]));
    }

    #[test]
    fn display_order_is_the_reverse_of_internal_order() {
        // The genesis block hash, as every explorer shows it.
        let shown = "000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f";
        let h: Hash256 = shown.parse().unwrap();
        assert_eq!(h.0[0], 0x6f);
        assert_eq!(h.0[31], 0x00);
        assert_eq!(h.to_string(), shown);
    }

    #[test]
    fn sha256d_of_empty_input_matches_the_known_value() {
        assert_eq!(
            hex::encode(sha256d(b"").0),
            "5df6e0e2761359d30a8275058e299fcc0381534545f55cf43e41983f5d4c9456"
        );
    }

    #[test]
    fn hash160_of_a_known_pubkey() {
        // Uncompressed generator point G; hash160 is the famous 1EHNa6Q4... address payload.
        let g = hex::decode("0479be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798483ada7726a3c4655da4fbfc0e1108a8fd17b448a68554199c47d08ffb10d4b8").unwrap();
        assert_eq!(
            hex::encode(hash160(&g)),
            "91b24bf9f5288532960ac687abb035127b1d28a5"
        );
    }

    #[test]
    fn malformed_hash_hex_is_refused() {
        assert!(Hash256::from_hex("00").is_err());
        assert!(Hash256::from_hex(&"zz".repeat(32)).is_err());
    }

    #[test]
    fn u256_view_is_little_endian() {
        let mut b = [0u8; 32];
        b[0] = 1;
        assert_eq!(Hash256(b).to_u256(), U256::from(1u64));
        assert_eq!(Hash256::from_u256(U256::from(1u64)), Hash256(b));
    }
}
