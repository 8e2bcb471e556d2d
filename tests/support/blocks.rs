//! Building real blocks in tests: a simple coinbase (BIP34 height push, one output to the
//! harness's anyone-can-spend script, the witness commitment when the template is segwit),
//! spends of the harness's coinbases, and a header ground to regtest's target.
#![allow(dead_code)]

use p2pool::bitcoin::block::{self, BlockHeader};
use p2pool::bitcoin::encode::{Decode, Encode};
use p2pool::bitcoin::fit::{CoinbaseCost, Fitted};
use p2pool::bitcoin::hash::{Hash256, sha256d};
use p2pool::bitcoin::merkle;
use p2pool::bitcoin::script;
use p2pool::bitcoin::template::Template;
use p2pool::bitcoin::tx::{OutPoint, Transaction, TxIn, TxOut};
use p2pool::bitcoind::submit::BlockSubmission;

use super::bcoin::{ANYONE_CAN_SPEND, Bcoin, miner_script};

/// A coinbase for `height` paying `value` to the miner script, with `tag` after the height
/// push (so that two tests never build the same block) and the commitment output when given.
pub fn coinbase(height: u32, value: u64, commitment: Option<[u8; 32]>, tag: &[u8]) -> Transaction {
    let mut script_sig = script::height_push(height);
    script_sig.extend_from_slice(tag);
    let mut outputs = vec![TxOut {
        value,
        script_pubkey: miner_script(),
    }];
    if let Some(c) = commitment {
        outputs.push(TxOut {
            value: 0,
            script_pubkey: script::witness_commitment_script(&c),
        });
    }
    Transaction {
        version: 1,
        inputs: vec![TxIn {
            previous_output: OutPoint::NULL,
            script_sig,
            sequence: 0xffff_ffff,
            witness: Vec::new(),
        }],
        outputs,
        lock_time: 0,
    }
}

/// A transaction spending the coinbase of the block at `height` (mined by the harness to
/// P2WSH(OP_TRUE)) back to the same script, leaving `fee`.
pub fn spend_coinbase(node: &Bcoin, height: u64, fee: u64) -> Transaction {
    let block = block::Block::from_bytes(&node.block_at(height))
        .unwrap_or_else(|e| panic!("block {height} does not decode: {e}"));
    let cb = &block.txs[0];
    let vout = cb
        .outputs
        .iter()
        .position(|o| o.script_pubkey == miner_script())
        .unwrap_or_else(|| panic!("block {height} does not pay the miner script"));
    Transaction {
        version: 2,
        inputs: vec![TxIn {
            previous_output: OutPoint {
                txid: cb.txid(),
                vout: vout as u32,
            },
            script_sig: Vec::new(),
            sequence: 0xffff_ffff,
            witness: vec![ANYONE_CAN_SPEND.to_vec()],
        }],
        outputs: vec![TxOut {
            value: cb.outputs[vout].value - fee,
            script_pubkey: miner_script(),
        }],
        lock_time: 0,
    }
}

/// Tries nonces until the header meets its own target (about two tries on regtest).
pub fn grind(mut header: BlockHeader) -> BlockHeader {
    let target = header.bits.to_target();
    while header.hash().to_u256() > target {
        header.nonce = header
            .nonce
            .checked_add(1)
            .expect("a nonce below the target");
    }
    header
}

/// A block built from `template` with the transactions `fitted` keeps.
pub struct Built {
    pub header: BlockHeader,
    pub coinbase: Transaction,
    pub bytes: Vec<u8>,
    pub height: u32,
}

impl Built {
    pub fn hash(&self) -> Hash256 {
        self.header.hash()
    }

    pub fn submission(&self) -> BlockSubmission {
        BlockSubmission::new(&self.header, u64::from(self.height), self.bytes.clone())
    }
}

/// The block of `template` with `fitted`'s transactions and coinbase value; the merkle root
/// is checked against the coinbase branch a share would carry.
pub fn build(template: &Template, fitted: &Fitted, tag: &[u8]) -> Built {
    let commitment = fitted.witness_commitment(template);
    let cb = coinbase(template.height, fitted.coinbase_value, commitment, tag);
    let mut txids = vec![cb.txid()];
    txids.extend(fitted.txids(template));
    let merkle_root = merkle::root(&txids);
    assert_eq!(
        merkle::apply_branch(cb.txid(), &fitted.coinbase_branch(template)),
        merkle_root
    );
    let header = grind(BlockHeader {
        version: template.version,
        previous_block: template.previous_block,
        merkle_root,
        timestamp: template.cur_time.max(template.min_time),
        bits: template.bits,
        nonce: 0,
    });
    let bytes = block::block_bytes(&header, &cb, fitted.transactions(template).map(|t| &t.tx));
    Built {
        header,
        coinbase: cb,
        bytes,
        height: template.height,
    }
}

/// The block of `template` with every transaction it offers.
pub fn build_all(template: &Template, tag: &[u8]) -> Built {
    let probe = coinbase(template.height, template.coinbase_value, Some([0; 32]), tag);
    let fitted = template
        .fit(CoinbaseCost::of(&probe, template))
        .expect("a small coinbase fits");
    assert_eq!(fitted.keep.len(), template.transactions.len());
    build(template, &fitted, tag)
}

/// A header whose hash misses the target: what `high-hash` is about.
pub fn spoil_pow(built: &Built) -> Vec<u8> {
    let target = built.header.bits.to_target();
    let mut header = built.header;
    loop {
        header.nonce = header.nonce.wrapping_add(1);
        if header.hash().to_u256() > target {
            break;
        }
    }
    let mut bytes = header.to_bytes();
    bytes.extend_from_slice(&built.bytes[80..]);
    bytes
}

/// A tag unique in this process, for coinbase scripts.
pub fn tag(name: &str) -> Vec<u8> {
    let mut t = b"/p2pool-test/".to_vec();
    t.extend_from_slice(&sha256d(name.as_bytes()).0[..4]);
    t
}
