//! Codec figures for doc/performance.md: share decode + hash, and merkle branches.
//! Run with `cargo bench --bench codec`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use p2pool::bitcoin::block::BlockHeader;
use p2pool::bitcoin::encode::Encode;
use p2pool::bitcoin::hash::{Hash256, sha256d};
use p2pool::bitcoin::merkle;
use p2pool::bitcoin::target::Bits;
use p2pool::bitcoin::tx::{OutPoint, Transaction, TxIn, TxOut};
use p2pool::network::RuleSet;
use p2pool::sharechain::share::{ModernFields, Share1a, Share1b, ShareData, ShareInfo};

fn txids(n: usize) -> Vec<Hash256> {
    (0..n as u32).map(|i| sha256d(&i.to_le_bytes())).collect()
}

fn info() -> ShareInfo {
    ShareInfo {
        share_data: ShareData {
            previous_share_hash: Some(sha256d(b"parent")),
            target: Bits(0x1d00ffff),
            nonce: vec![7; 12],
        },
        new_script: {
            let mut s = vec![0x00, 0x14];
            s.extend_from_slice(&[9; 20]);
            s
        },
        subsidy: 312_500_000,
        modern: Some(ModernFields {
            block_height: 900_000,
            witness_commitment: [5; 32],
        }),
    }
}

fn header() -> BlockHeader {
    BlockHeader {
        version: 0x2000_0000,
        previous_block: sha256d(b"tip"),
        merkle_root: sha256d(b"root"),
        timestamp: 1_760_000_000,
        bits: Bits(0x1702_5105),
        nonce: 12345,
    }
}

fn witness_tx(i: u32) -> Transaction {
    Transaction {
        version: 2,
        inputs: vec![TxIn {
            previous_output: OutPoint {
                txid: sha256d(&i.to_le_bytes()),
                vout: 0,
            },
            script_sig: vec![],
            sequence: 0xffff_fffd,
            witness: vec![vec![0x30; 72], vec![0x02; 33]],
        }],
        outputs: vec![
            TxOut {
                value: 10_000,
                script_pubkey: vec![0x00; 22],
            },
            TxOut {
                value: 20_000,
                script_pubkey: vec![0x51; 34],
            },
        ],
        lock_time: 0,
    }
}

fn bench(c: &mut Criterion) {
    // A share1a as mined on a block of ~3000 transactions: 12 branch steps.
    let share = Share1a {
        header: header(),
        info: info(),
        merkle_branch: merkle::branch(&txids(3000), 0),
    };
    let bytes = share.to_bytes();
    c.bench_function("share1a decode + share hash + pow hash", |b| {
        b.iter(|| {
            let s = Share1a::from_bytes(black_box(&bytes), RuleSet::Modern).expect("decodes");
            (s.hash(), s.pow_hash())
        })
    });

    let block_share = Share1b {
        header: header(),
        info: info(),
        other_txs: (0..100).map(witness_tx).collect(),
    };
    let bytes_b = block_share.to_bytes();
    c.bench_function("share1b (100 witness txs) decode + share hash", |b| {
        b.iter(|| {
            Share1b::from_bytes(black_box(&bytes_b), RuleSet::Modern)
                .expect("decodes")
                .hash()
        })
    });

    let ids = txids(4000);
    c.bench_function("merkle branch build (4000 txids)", |b| {
        b.iter(|| merkle::branch(black_box(&ids), 0))
    });
    let branch = merkle::branch(&ids, 0);
    c.bench_function("merkle branch apply (12 steps)", |b| {
        b.iter(|| merkle::apply_branch(black_box(ids[0]), black_box(&branch)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
