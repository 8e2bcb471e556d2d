//! The getwork work unit (§7.3 of the legacy spec): the header as the 128-byte padded
//! first SHA-256 input, each 4-byte word byte-swapped, with its midstate, and the target
//! as 32 little-endian bytes; and the header read back from a submitted `data`.

use ruint::aliases::U256;
use serde_json::{Value, json};
use sha2::block_api::compress256;

use crate::bitcoin::block::{BlockHeader, HEADER_SIZE};
use crate::bitcoin::hash::Hash256;
use crate::bitcoin::target::Bits;

/// SHA-256 padding of an 80-byte message to two blocks: 0x80, zeros, the length 640 bits.
const PADDING: [u8; 48] = {
    let mut p = [0u8; 48];
    p[0] = 0x80;
    p[46] = 0x02;
    p[47] = 0x80;
    p
};

/// The constant `hash1` field: a 32-byte hash padded to one SHA-256 block, word-swapped.
pub const HASH1: &str = "00000000000000000000000000000000000000000000000000000000000000000000008000000000000000000000000000000000000000000000000000010000";

/// SHA-256's initial state.
const IV: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

/// Reverses each 4-byte group of `bytes` in place (a trailing partial group is left).
pub fn swap4(bytes: &mut [u8]) {
    for chunk in bytes.chunks_exact_mut(4) {
        chunk.reverse();
    }
}

/// The SHA-256 state after the first 64 bytes of the header, as 32 bytes: each state word
/// big-endian, then word-swapped as getwork sends it.
pub fn midstate(header: &[u8; HEADER_SIZE]) -> [u8; 32] {
    let mut state = IV;
    let mut block = [0u8; 64];
    block.copy_from_slice(&header[..64]);
    compress256(&mut state, &[block]);
    let mut out = [0u8; 32];
    for (chunk, word) in out.chunks_exact_mut(4).zip(state) {
        chunk.copy_from_slice(&word.to_le_bytes());
    }
    out
}

/// One getwork work unit, ready to serialise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkUnit {
    pub data: String,
    pub midstate: String,
    pub hash1: &'static str,
    pub target: String,
    pub identifier: String,
}

impl WorkUnit {
    /// The unit for `header` (its nonce is sent as 0) with the miner's `target`;
    /// `identifier` is the best share (R: the hash as a decimal integer, or `None`).
    pub fn new(header: &BlockHeader, target: U256, best: Option<Hash256>) -> WorkUnit {
        let mut bare = *header;
        bare.nonce = 0;
        let raw = bare.to_array();
        let mut data = [0u8; 128];
        data[..HEADER_SIZE].copy_from_slice(&raw);
        data[HEADER_SIZE..].copy_from_slice(&PADDING);
        swap4(&mut data);
        WorkUnit {
            data: hex::encode(data),
            midstate: hex::encode(midstate(&raw)),
            hash1: HASH1,
            target: hex::encode(target.to_le_bytes::<32>()),
            identifier: identifier(best),
        }
    }

    pub fn to_json(&self) -> Value {
        json!({
            "data": self.data,
            "midstate": self.midstate,
            "hash1": self.hash1,
            "target": self.target,
            "identifier": self.identifier,
        })
    }
}

/// R's `identifier`: the best share's hash as a decimal integer, or `None`.
pub fn identifier(best: Option<Hash256>) -> String {
    match best {
        Some(h) => h.to_u256().to_string(),
        None => "None".into(),
    }
}

/// Why a submitted `data` field cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataError {
    NotHex,
    /// Fewer than 80 bytes.
    TooShort(usize),
    /// More than 128 bytes.
    TooLong(usize),
}

impl std::fmt::Display for DataError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DataError::NotHex => write!(f, "getwork data is not hex"),
            DataError::TooShort(n) => write!(f, "getwork data is {n} bytes (at least 80)"),
            DataError::TooLong(n) => write!(f, "getwork data is {n} bytes (at most 128)"),
        }
    }
}

impl std::error::Error for DataError {}

/// Reads the header from a submitted `data`: `swap4(hex_decode(data))[0..80]`.
pub fn decode_data(data: &str) -> Result<BlockHeader, DataError> {
    if data.len() > 256 {
        return Err(DataError::TooLong(data.len() / 2));
    }
    let mut bytes = hex::decode(data).map_err(|_| DataError::NotHex)?;
    if bytes.len() < HEADER_SIZE {
        return Err(DataError::TooShort(bytes.len()));
    }
    swap4(&mut bytes);
    let b = &bytes[..HEADER_SIZE];
    let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let mut previous = [0u8; 32];
    previous.copy_from_slice(&b[4..36]);
    let mut merkle = [0u8; 32];
    merkle.copy_from_slice(&b[36..68]);
    Ok(BlockHeader {
        version: u32_at(0),
        previous_block: Hash256(previous),
        merkle_root: Hash256(merkle),
        timestamp: u32_at(68),
        bits: Bits(u32_at(72)),
        nonce: u32_at(76),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bitcoin::hash::sha256;

    #[test]
    fn midstate_matches_a_full_hash_of_one_block() {
        // For a 64-byte message the final hash is compress(midstate, padding block): check
        // the midstate by finishing it by hand.
        let header = [7u8; HEADER_SIZE];
        let mid = midstate(&header);
        let mut state = [0u32; 8];
        for (w, c) in state.iter_mut().zip(mid.chunks_exact(4)) {
            *w = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        }
        let mut pad = [0u8; 64];
        pad[0] = 0x80;
        pad[62] = 0x02; // 512 bits
        compress256(&mut state, &[pad]);
        let mut out = [0u8; 32];
        for (c, w) in out.chunks_exact_mut(4).zip(state) {
            c.copy_from_slice(&w.to_be_bytes());
        }
        assert_eq!(out, sha256(&header[..64]));
    }

    #[test]
    fn data_round_trips_through_decode() {
        let header = BlockHeader {
            version: 0x2000_0000,
            previous_block: Hash256([3; 32]),
            merkle_root: Hash256([9; 32]),
            timestamp: 1_700_000_000,
            bits: Bits(0x207fffff),
            nonce: 0,
        };
        let unit = WorkUnit::new(&header, U256::MAX >> 8, None);
        assert_eq!(unit.identifier, "None");
        assert_eq!(decode_data(&unit.data).unwrap(), header);
        assert_eq!(decode_data(&unit.data[..160]).unwrap(), header);
        assert_eq!(decode_data("zz"), Err(DataError::NotHex));
        assert_eq!(decode_data("00"), Err(DataError::TooShort(1)));
        assert!(decode_data(&"0".repeat(258)).is_err());
    }
}
