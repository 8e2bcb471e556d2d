//! Block headers and blocks, and the assembly of a full block for submission.
//!
//! A block carries the coinbase witness (one 32-byte zero item, BIP141's reserved value)
//! exactly when its coinbase has a witness commitment output; every other transaction is
//! written in the BIP144 form only when it has a witness.

use super::encode::{self, Decode, Encode, Reader, WriteExt};
use super::hash::{Hash256, sha256d};
use super::merkle;
use super::script;
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
    /// A block of `coinbase` (given the witness it needs, see `coinbase_for_block`) and
    /// `txs`, under `header`.
    pub fn assemble(header: BlockHeader, coinbase: &Transaction, txs: Vec<Transaction>) -> Block {
        let mut all = Vec::with_capacity(txs.len() + 1);
        all.push(coinbase_for_block(coinbase));
        all.extend(txs);
        Block { header, txs: all }
    }

    /// The block hash.
    pub fn hash(&self) -> Hash256 {
        self.header.hash()
    }

    /// The block without witnesses, as sent to a peer that does not ask for them.
    pub fn to_stripped_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_with(&mut out, false);
        out
    }

    pub fn stripped_size(&self) -> usize {
        HEADER_SIZE
            + encode::compact_size_len(self.txs.len() as u64)
            + self
                .txs
                .iter()
                .map(Transaction::stripped_size)
                .sum::<usize>()
    }

    pub fn weight(&self) -> usize {
        HEADER_SIZE * 4
            + encode::compact_size_len(self.txs.len() as u64) * 4
            + self.txs.iter().map(Transaction::weight).sum::<usize>()
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

/// The reserved value of BIP141 this crate always uses: 32 zero bytes.
pub const WITNESS_RESERVED_VALUE: [u8; 32] = [0; 32];

/// Whether a transaction has a witness commitment output.
pub fn has_witness_commitment(tx: &Transaction) -> bool {
    tx.outputs
        .iter()
        .any(|o| script::is_witness_commitment(&o.script_pubkey))
}

/// `coinbase` as it goes into a block: its first input's witness is the reserved value
/// when it has a witness commitment output, and every witness is empty otherwise.
pub fn coinbase_for_block(coinbase: &Transaction) -> Transaction {
    let mut tx = coinbase.clone();
    let commitment = has_witness_commitment(&tx);
    for (i, input) in tx.inputs.iter_mut().enumerate() {
        input.witness = if commitment && i == 0 {
            vec![WITNESS_RESERVED_VALUE.to_vec()]
        } else {
            Vec::new()
        };
    }
    tx
}

/// The witness merkle root of a block whose transactions after the coinbase have these
/// wtxids (the coinbase counts as zero).
pub fn witness_root(other_wtxids: &[Hash256]) -> Hash256 {
    let mut leaves = Vec::with_capacity(other_wtxids.len() + 1);
    leaves.push(Hash256::ZERO);
    leaves.extend_from_slice(other_wtxids);
    merkle::root(&leaves)
}

/// The BIP141 commitment for those transactions with the zero reserved value: the 32 bytes
/// that follow `6a24aa21a9ed` in the coinbase's commitment output.
pub fn witness_commitment_for(other_wtxids: &[Hash256]) -> Hash256 {
    script::witness_commitment(&witness_root(other_wtxids), &WITNESS_RESERVED_VALUE)
}

/// The bytes of the block `header ‖ count ‖ coinbase ‖ txs`, the coinbase given the witness
/// it needs (`coinbase_for_block`), without copying the other transactions.
pub fn block_bytes<'a, I>(header: &BlockHeader, coinbase: &Transaction, txs: I) -> Vec<u8>
where
    I: IntoIterator<Item = &'a Transaction>,
    I::IntoIter: ExactSizeIterator,
{
    let txs = txs.into_iter();
    let mut out = Vec::new();
    header.encode_to(&mut out);
    out.put_compact_size(txs.len() as u64 + 1);
    coinbase_for_block(coinbase).encode_to(&mut out);
    for tx in txs {
        tx.encode_to(&mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bitcoin::tx::{OutPoint, TxIn, TxOut};

    fn coinbase(commitment: bool) -> Transaction {
        let mut outputs = vec![TxOut {
            value: 50,
            script_pubkey: vec![0x51],
        }];
        if commitment {
            outputs.push(TxOut {
                value: 0,
                script_pubkey: script::witness_commitment_script(&[7; 32]),
            });
        }
        Transaction {
            version: 1,
            inputs: vec![TxIn {
                previous_output: OutPoint::NULL,
                script_sig: vec![0x01, 0x11],
                sequence: 0xffff_ffff,
                witness: vec![vec![1, 2, 3]],
            }],
            outputs,
            lock_time: 0,
        }
    }

    fn spend(witness: bool) -> Transaction {
        Transaction {
            version: 2,
            inputs: vec![TxIn {
                previous_output: OutPoint {
                    txid: sha256d(b"coin"),
                    vout: 0,
                },
                script_sig: vec![],
                sequence: 0xffff_ffff,
                witness: if witness { vec![vec![0x51]] } else { vec![] },
            }],
            outputs: vec![TxOut {
                value: 40,
                script_pubkey: vec![0x00, 0x20, 1, 2],
            }],
            lock_time: 0,
        }
    }

    fn header() -> BlockHeader {
        BlockHeader {
            version: 0x2000_0000,
            previous_block: sha256d(b"parent"),
            merkle_root: Hash256::ZERO,
            timestamp: 1_700_000_000,
            bits: Bits(0x207fffff),
            nonce: 0,
        }
    }

    #[test]
    fn coinbase_witness_only_with_a_commitment() {
        let with = coinbase_for_block(&coinbase(true));
        assert_eq!(with.inputs[0].witness, vec![vec![0u8; 32]]);
        let without = coinbase_for_block(&coinbase(false));
        assert!(!without.has_witness());
        assert_eq!(without.to_bytes(), without.to_stripped_bytes());
    }

    #[test]
    fn block_bytes_match_the_assembled_block_and_decode_back() {
        let txs = vec![spend(true), spend(false)];
        for commitment in [true, false] {
            let cb = coinbase(commitment);
            let bytes = block_bytes(&header(), &cb, &txs);
            let block = Block::assemble(header(), &cb, txs.clone());
            assert_eq!(bytes, block.to_bytes());
            let back = Block::from_bytes(&bytes).unwrap();
            assert_eq!(back, block);
            assert_eq!(back.txs[0].has_witness(), commitment);
            assert!(back.txs[1].has_witness() && !back.txs[2].has_witness());
            // The plain transaction is written in the plain form, inside the block too.
            let plain = spend(false).to_bytes();
            assert!(bytes.ends_with(&plain));
            // Sizes and weight from the parts equal those of the encodings.
            let stripped = block.to_stripped_bytes();
            assert_eq!(block.stripped_size(), stripped.len());
            assert_eq!(block.weight(), stripped.len() * 3 + bytes.len());
            assert!(
                Block::from_bytes(&stripped)
                    .unwrap()
                    .txs
                    .iter()
                    .all(|t| !t.has_witness())
            );
        }
    }

    #[test]
    fn witness_commitment_counts_the_coinbase_as_zero() {
        let wtxids = [sha256d(b"a"), sha256d(b"b")];
        let root = merkle::root(&[Hash256::ZERO, wtxids[0], wtxids[1]]);
        assert_eq!(witness_root(&wtxids), root);
        let mut buf = root.0.to_vec();
        buf.extend_from_slice(&[0; 32]);
        assert_eq!(witness_commitment_for(&wtxids), sha256d(&buf));
        // A block of the coinbase alone commits to sha256d(zero ‖ zero).
        assert_eq!(witness_commitment_for(&[]), sha256d(&[0; 64]));
    }

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
