//! Block headers and blocks.

use super::encode::{self, Decode, Encode, Reader, WriteExt};
use super::hash::{Hash256, sha256d};
use super::target::Bits;
use super::tx::Transaction;

pub const HEADER_SIZE: usize = 80;

/// The 80-byte block header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockHeader {
    pub version: u32,
    /// Zero for none.
    pub previous_block: Hash256,
    pub merkle_root: Hash256,
    pub timestamp: u32,
    pub bits: Bits,
    pub nonce: u32,
}

impl BlockHeader {
    pub fn to_array(&self) -> [u8; HEADER_SIZE] {
        let mut out = [0u8; HEADER_SIZE];
        out[0..4].copy_from_slice(&self.version.to_le_bytes());
        out[4..36].copy_from_slice(&self.previous_block.0);
        out[36..68].copy_from_slice(&self.merkle_root.0);
        out[68..72].copy_from_slice(&self.timestamp.to_le_bytes());
        out[72..76].copy_from_slice(&self.bits.0.to_le_bytes());
        out[76..80].copy_from_slice(&self.nonce.to_le_bytes());
        out
    }

    /// The block hash, which is also the proof-of-work hash of a share.
    pub fn hash(&self) -> Hash256 {
        sha256d(&self.to_array())
    }
}

impl Encode for BlockHeader {
    fn encode_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_array());
    }
}

impl Decode for BlockHeader {
    const NAME: &'static str = "block header";
    fn decode_from(r: &mut Reader<'_>) -> encode::Result<Self> {
        Ok(BlockHeader {
            version: r.u32_le("header version")?,
            previous_block: Hash256::decode_from(r)?,
            merkle_root: Hash256::decode_from(r)?,
            timestamp: r.u32_le("header timestamp")?,
            bits: Bits(r.u32_le("header bits")?),
            nonce: r.u32_le("header nonce")?,
        })
    }
}

/// A full block; each transaction is written in its own form (BIP144 only when it has
/// a witness).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub header: BlockHeader,
    pub txs: Vec<Transaction>,
}

/// The smallest transaction: version, two counts, lock time.
const MIN_TX_SIZE: usize = 10;

impl Block {
    pub fn stripped_size(&self) -> usize {
        let mut out = Vec::new();
        self.encode_with(&mut out, false);
        out.len()
    }

    pub fn weight(&self) -> usize {
        self.stripped_size() * 3 + self.to_bytes().len()
    }

    fn encode_with(&self, out: &mut Vec<u8>, witness: bool) {
        self.header.encode_to(out);
        out.put_compact_size(self.txs.len() as u64);
        for tx in &self.txs {
            if witness {
                tx.encode_to(out);
            } else {
                tx.encode_stripped_to(out);
            }
        }
    }
}

impl Encode for Block {
    fn encode_to(&self, out: &mut Vec<u8>) {
        self.encode_with(out, true);
    }
}

impl Decode for Block {
    const NAME: &'static str = "block";
    fn decode_from(r: &mut Reader<'_>) -> encode::Result<Self> {
        let header = BlockHeader::decode_from(r)?;
        let txs = r.list("block transactions", MIN_TX_SIZE, Transaction::decode_from)?;
        Ok(Block { header, txs })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn genesis_header_hashes_to_the_genesis_block_hash() {
        let header = hex::decode(concat!(
            "0100000000000000000000000000000000000000000000000000000000000000",
            "000000003ba3edfd7a7b12b27ac72c3e67768f617fc81bc3888a51323a9fb8aa",
            "4b1e5e4a29ab5f49ffff001d1dac2b7c"
        ))
        .unwrap();
        let h = BlockHeader::from_bytes(&header).unwrap();
        assert_eq!(h.bits, Bits(0x1d00ffff));
        assert_eq!(h.to_bytes(), header);
        assert_eq!(
            h.hash().to_string(),
            "000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f"
        );
    }

    #[test]
    fn short_header_is_refused() {
        assert!(BlockHeader::from_bytes(&[0u8; 79]).is_err());
        assert!(BlockHeader::from_bytes(&[0u8; 81]).is_err());
    }
}
