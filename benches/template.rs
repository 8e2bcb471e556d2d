//! Template figures for doc/performance.md: a 4 MB `getblocktemplate` answer with 3,000
//! transactions parsed into a `Template` with the coinbase merkle branch (issue target:
//! under 30 ms), and the work derived from a parsed template: fit, coinbase branch and
//! witness commitment (target: under 5 ms). Run with `cargo bench --bench template`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use p2pool::bitcoin::encode::Encode;
use p2pool::bitcoin::fit::CoinbaseCost;
use p2pool::bitcoin::hash::{Hash256, sha256d};
use p2pool::bitcoin::merkle;
use p2pool::bitcoin::template::{Template, TemplateAnswer};
use p2pool::bitcoin::tx::{OutPoint, Transaction, TxIn, TxOut};
use serde::Deserialize;
use serde_json::{Value, json};

const TXS: usize = 3_000;

/// A transaction of 561 bytes and weight 1,224: two P2WSH inputs (signature, key, script),
/// three P2WSH outputs. 3,000 of them fill 3.67 M of the 4 M weight units.
fn tx(n: usize) -> Transaction {
    let inputs = (0..2u32)
        .map(|i| TxIn {
            previous_output: OutPoint {
                txid: sha256d(&[n.to_le_bytes().as_slice(), &i.to_le_bytes()].concat()),
                vout: i,
            },
            script_sig: Vec::new(),
            sequence: 0xffff_fffd,
            witness: vec![vec![0x30; 72], vec![0x02; 33], vec![0x51; 60]],
        })
        .collect();
    let outputs = (0..3u8)
        .map(|i| TxOut {
            value: 10_000 + u64::from(i),
            script_pubkey: [&[0x00, 0x20][..], &[i; 32]].concat(),
        })
        .collect();
    Transaction {
        version: 2,
        inputs,
        outputs,
        lock_time: 0,
    }
}

/// The whole HTTP body of bitcoind's answer, as the RPC client receives it.
fn answer() -> Vec<u8> {
    let transactions: Vec<Value> = (0..TXS)
        .map(|n| {
            let t = tx(n);
            // Every tenth transaction spends the one before it.
            let depends: Vec<usize> = if n % 10 == 9 { vec![n] } else { vec![] };
            json!({
                "data": hex::encode(t.to_bytes()),
                "txid": t.txid().to_hex(),
                "hash": t.wtxid().to_hex(),
                "depends": depends,
                "fee": 2_000 + n as u64 % 977,
                "sigops": 0,
                "weight": t.weight(),
            })
        })
        .collect();
    let result = json!({
        "capabilities": ["proposal"],
        "version": 536870912,
        "rules": ["csv", "!segwit", "taproot"],
        "vbavailable": {},
        "vbrequired": 0,
        "previousblockhash": sha256d(b"tip").to_hex(),
        "height": 900_000,
        "bits": "17034219",
        "target": "0000000000000000000342190000000000000000000000000000000000000000",
        "curtime": 1_750_000_000,
        "mintime": 1_749_999_000,
        "mutable": ["time", "transactions", "prevblock"],
        "noncerange": "00000000ffffffff",
        "coinbaseaux": {},
        "coinbasevalue": 312_500_000 + 6_000_000,
        "sigoplimit": 80000,
        "sizelimit": 4000000,
        "weightlimit": 4000000,
        "longpollid": format!("{}{}", sha256d(b"tip").to_hex(), "00000001"),
        "default_witness_commitment": format!("6a24aa21a9ed{}", "11".repeat(32)),
        "transactions": transactions,
    });
    serde_json::to_vec(&json!({"result": result, "error": null, "id": 1})).unwrap()
}

/// What the RPC client does with the body: one pass, strings borrowed from it.
#[derive(Deserialize)]
struct Envelope {
    result: TemplateAnswer,
}

fn parse(body: &[u8]) -> Template {
    let envelope: Envelope = serde_json::from_slice(body).unwrap();
    envelope.result.0.unwrap()
}

fn coinbase_cost() -> CoinbaseCost {
    // About what a coinbase with 200 payout outputs takes.
    CoinbaseCost {
        weight: 4 * 7_000,
        size: 7_000,
        sigops: 4 * 200,
    }
}

fn bench(c: &mut Criterion) {
    let body = answer();
    let template = parse(&body);
    let weight: u64 = template.transactions.iter().map(|t| t.weight).sum();
    eprintln!(
        "template: {} transactions, weight {weight}, answer {} bytes",
        template.transactions.len(),
        body.len()
    );

    c.bench_function(
        "getblocktemplate 4 MB, 3000 txs: parse + coinbase branch",
        |b| {
            b.iter(|| {
                let t = parse(black_box(&body));
                let mut ids = vec![Hash256::ZERO];
                ids.extend(t.transactions.iter().map(|e| e.txid));
                black_box(merkle::branch(&ids, 0))
            })
        },
    );

    c.bench_function(
        "getblocktemplate 4 MB, 3000 txs: via serde_json::Value",
        |b| {
            b.iter(|| {
                let v: Value = serde_json::from_slice(black_box(&body)).unwrap();
                black_box(Template::from_value(&v["result"]).unwrap())
            })
        },
    );

    c.bench_function("template to work: fit + branch + commitment (fits)", |b| {
        b.iter(|| {
            let fitted = template.fit(black_box(coinbase_cost())).unwrap();
            black_box((
                fitted.coinbase_branch(&template),
                fitted.witness_commitment(&template),
                fitted.coinbase_value,
            ))
        })
    });

    // A generation transaction so large that some transactions must go: the commitment is
    // then computed over the kept ones.
    let tight = CoinbaseCost {
        weight: 4 * 100_000,
        ..coinbase_cost()
    };
    let dropped = template.fit(tight).unwrap().dropped(&template);
    eprintln!("the large coinbase drops {dropped} transactions");
    c.bench_function("template to work: fit + branch + commitment (drops)", |b| {
        b.iter(|| {
            let fitted = template.fit(black_box(tight)).unwrap();
            black_box((
                fitted.coinbase_branch(&template),
                fitted.witness_commitment(&template),
                fitted.coinbase_value,
            ))
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
