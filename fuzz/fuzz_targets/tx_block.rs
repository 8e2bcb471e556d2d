//! Transactions (bitcoin/tx.rs) with and without the witness form, blocks and headers
//! (bitcoin/block.rs). Byte 0 picks the decoder; the rest is the encoding.
//!
//! Asserts: decode → encode → decode gives the same value; sizes, weight and hashes agree
//! with the encodings.
#![no_main]

use libfuzzer_sys::fuzz_target;
use p2pool::bitcoin::block::{Block, BlockHeader, HEADER_SIZE};
use p2pool::bitcoin::encode::{Decode, Encode, Reader};
use p2pool::bitcoin::hash::sha256d;
use p2pool::bitcoin::tx::Transaction;

fn tx_with(bytes: &[u8], allow_witness: bool) -> Option<Transaction> {
    let mut r = Reader::new(bytes);
    let tx = Transaction::decode_with(&mut r, allow_witness).ok()?;
    r.finish("transaction").ok()?;
    Some(tx)
}

fn check_tx(tx: &Transaction, allow_witness: bool) {
    let bytes = tx.to_bytes();
    let stripped = tx.to_stripped_bytes();
    assert_eq!(
        tx_with(&bytes, allow_witness).as_ref(),
        Some(tx),
        "round trip"
    );
    assert_eq!(tx.total_size(), bytes.len());
    assert_eq!(tx.stripped_size(), stripped.len());
    assert_eq!(tx.weight(), stripped.len() * 3 + bytes.len());
    assert_eq!(tx.txid(), sha256d(&stripped));
    assert_eq!(tx.wtxid(), sha256d(&bytes));
    assert_eq!(tx.has_witness(), bytes != stripped);
    if !allow_witness {
        assert!(!tx.has_witness());
    }
}

fuzz_target!(|data: &[u8]| {
    let [selector, bytes @ ..] = data else {
        return;
    };
    match selector % 4 {
        0 | 1 => {
            let allow_witness = selector % 4 == 0;
            if let Some(tx) = tx_with(bytes, allow_witness) {
                check_tx(&tx, allow_witness);
                assert_eq!(tx.to_bytes(), bytes, "transaction encoding not canonical");
            }
        }
        2 => {
            if let Ok(block) = Block::from_bytes(bytes) {
                let encoded = block.to_bytes();
                assert_eq!(Block::from_bytes(&encoded).as_ref(), Ok(&block));
                assert_eq!(encoded, bytes, "block encoding not canonical");
                assert_eq!(block.stripped_size(), block.to_stripped_bytes().len());
                let weight: usize = block.stripped_size() * 3 + encoded.len();
                assert_eq!(block.weight(), weight);
                for tx in &block.txs {
                    check_tx(tx, true);
                }
            }
        }
        _ => {
            if let Ok(header) = BlockHeader::from_bytes(bytes) {
                assert_eq!(bytes.len(), HEADER_SIZE);
                assert_eq!(header.to_bytes(), bytes);
                assert_eq!(header.to_array().as_slice(), bytes);
                assert_eq!(header.hash(), sha256d(bytes));
            }
        }
    }
});
