//! Writes the seed corpora under fuzz/seeds/<target>/: a few valid inputs per target, built
//! from the crate's own encoders and the real sample shares. Run from the repository root:
//! `cargo run --manifest-path fuzz/Cargo.toml --example seeds`.

use std::fs;
use std::path::Path;

use p2pool::bitcoin::block::{Block, BlockHeader};
use p2pool::bitcoin::encode::{Encode, WriteExt};
use p2pool::bitcoin::hash::{Hash256, sha256d};
use p2pool::bitcoin::script;
use p2pool::bitcoin::target::Bits;
use p2pool::bitcoin::tx::{OutPoint, Transaction, TxIn, TxOut};
use p2pool::network::{Network, RuleSet};
use p2pool::p2p::message::{AddrRecord, Message, NetAddress, Version};
use p2pool::sharechain::sample::{self, Spec};
use p2pool::sharechain::share::{Share1a, Share1b};
use p2pool::sharechain::tracker::Tracker;
use p2pool_fuzz::modern_net;

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new("fuzz/seeds").join(target);
    fs::create_dir_all(&dir).expect("seed directory");
    fs::write(dir.join(name), bytes).expect("seed written");
}

fn with(selector: u8, bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![selector];
    out.extend_from_slice(bytes);
    out
}

fn tx(witness: bool) -> Transaction {
    Transaction {
        version: 2,
        inputs: vec![TxIn {
            previous_output: OutPoint {
                txid: sha256d(b"prev"),
                vout: 1,
            },
            script_sig: if witness { vec![] } else { vec![0x51] },
            sequence: 0xffff_fffe,
            witness: if witness {
                vec![vec![0x30; 71], vec![0x02; 33]]
            } else {
                vec![]
            },
        }],
        outputs: vec![TxOut {
            value: 12_345,
            script_pubkey: script::p2pkh(&[9; 20]),
        }],
        lock_time: 0,
    }
}

/// A share1a (a chain of two, the second) and a share1b (a block share) on `net`.
fn shares(net: &Network) -> (Share1a, Share1b) {
    let (tracker, hashes) = sample::chain(net, 2, 10, &[sample::payout(1)]);
    let a = tracker.get(&hashes[1]).expect("share").to_share1a();
    let mut spec = Spec::new(None, 1_600_000_100, sample::payout(2));
    spec.other_txs = Some(vec![tx(net.rules == RuleSet::Modern)]);
    let block = sample::mine(&Tracker::new(), net, &spec);
    let b = Share1b {
        header: block.header,
        info: block.info.clone(),
        other_txs: block.other_txs.clone().expect("a block share"),
    };
    (a, b)
}

fn main() {
    let modern = modern_net();
    let legacy = p2pool_fuzz::legacy_net();
    let sample_modern = sample::modern_net();
    let (la, lb) = shares(&legacy);
    let (ma, mb) = shares(&sample_modern);

    // tx_block
    write("tx_block", "tx-witness", &with(0, &tx(true).to_bytes()));
    write("tx_block", "tx-legacy", &with(1, &tx(false).to_bytes()));
    let header = BlockHeader {
        version: 0x2000_0000,
        previous_block: sha256d(b"parent"),
        merkle_root: sha256d(b"root"),
        timestamp: 1_700_000_000,
        bits: Bits(0x1d00ffff),
        nonce: 7,
    };
    let block = Block {
        header,
        txs: vec![tx(false), tx(true)],
    };
    write("tx_block", "block", &with(2, &block.to_bytes()));
    write("tx_block", "header", &with(3, &header.to_bytes()));

    // share: bit 0 the rule set (0 legacy, 1 modern), bit 1 share1b
    write("share", "legacy-1a", &with(0, &la.to_bytes()));
    write("share", "modern-1a", &with(1, &ma.to_bytes()));
    write("share", "legacy-1b", &with(2, &lb.to_bytes()));
    write("share", "modern-1b", &with(3, &mb.to_bytes()));

    // message: selector = command index + 11 × rule set (0 legacy, 1 modern)
    let addr = NetAddress::new(1, "192.0.2.1".parse().expect("ip"), 9333);
    let version = |best| {
        Message::Version(Version {
            version: 3501,
            services: 0,
            addr_to: addr,
            addr_from: addr,
            nonce: 42,
            sub_version: "p2pool-fuzz".into(),
            mode: 1,
            best_share_hash: best,
        })
    };
    let messages = [
        (0, version(Some(sha256d(b"best")))),
        (1, Message::SetMode { mode: 1 }),
        (2, Message::Ping),
        (3, Message::AddrMe { port: 9333 }),
        (
            4,
            Message::Addrs(vec![AddrRecord {
                timestamp: 1_700_000_000,
                address: addr,
            }]),
        ),
        (5, Message::GetAddrs { count: 8 }),
        (
            6,
            Message::GetShares {
                hashes: vec![sha256d(b"a")],
                parents: 10,
                stops: vec![Hash256::ZERO],
            },
        ),
        (7, Message::Share0s(vec![sha256d(b"s")])),
    ];
    for (i, m) in &messages {
        for r in [0u8, 1] {
            write(
                "message",
                &format!("{}-{r}", m.command()),
                &with(i + 11 * r, &m.encode_payload()),
            );
        }
    }
    let share_msgs = [
        (8, 0, Message::Share1as(vec![la.clone()])),
        (8, 1, Message::Share1as(vec![ma.clone()])),
        (9, 0, Message::Share1bs(vec![lb.clone()])),
        (9, 1, Message::Share1bs(vec![mb.clone()])),
    ];
    for (i, r, m) in &share_msgs {
        write(
            "message",
            &format!("{}-{r}", m.command()),
            &with(i + 11 * r, &m.encode_payload()),
        );
    }
    write("message", "unknown", &with(10, b"anything"));

    // frame: byte 0 framing (bit 0: Bitcoin magic; bits 1-2: payload limit), byte 1 chunk
    let p2pool = modern.framing();
    let mut stream = version(None).to_frame(&p2pool).expect("frame");
    stream.extend(
        Message::Share1as(vec![ma.clone()])
            .to_frame(&p2pool)
            .expect("frame"),
    );
    write("frame", "p2pool", &with(6, &with(3, &stream)));
    let bitcoin = p2pool::bitcoin::frame::Framing::bitcoin(modern.bitcoin.magic, 4096);
    let ping = bitcoin.encode("ping", &7u64.to_le_bytes()).expect("frame");
    write("frame", "bitcoin", &with(5, &with(0, &ping)));

    // template: a getblocktemplate result with one transaction
    let t = tx(true);
    let template = serde_json::json!({
        "version": 0x2000_0000,
        "previousblockhash": sha256d(b"tip").to_hex(),
        "height": 1000,
        "bits": "1d00ffff",
        "curtime": 1_700_000_000u64,
        "mintime": 1_699_999_000u64,
        "coinbasevalue": 5_000_010_000u64,
        "transactions": [{
            "data": hex::encode(t.to_bytes()),
            "txid": t.txid().to_hex(),
            "hash": t.wtxid().to_hex(),
            "depends": [],
            "fee": 10_000,
            "sigops": 4,
            "weight": t.weight(),
        }],
        "rules": ["csv", "!segwit", "taproot"],
        "default_witness_commitment": "6a24aa21a9ede2f61c3f71d1defd3fa999dfa36953755c690689799962b48bebd836974e8cf9",
        "sigoplimit": 80000,
        "sizelimit": 4000000,
        "weightlimit": 4000000,
        "longpollid": "abc1",
    });
    write("template", "one-tx", template.to_string().as_bytes());

    // stratum: `$A` a payout address, `$J` the last job id, `$T` its ntime
    write(
        "stratum",
        "session",
        concat!(
            r#"{"id":1,"method":"mining.configure","params":[["version-rolling"],{"version-rolling.mask":"ffffffff"}]}"#, "\n",
            r#"{"id":2,"method":"mining.subscribe","params":["cgminer/4.10"]}"#, "\n",
            r#"{"id":3,"method":"mining.authorize","params":["$A.rig1","x"]}"#, "\n",
            r#"{"id":4,"method":"mining.suggest_difficulty","params":[0.001]}"#, "\n",
            r#"{"id":5,"method":"mining.submit","params":["$A.rig1","$J","00000001","$T","12345678"]}"#, "\n",
            r#"{"id":6,"method":"mining.submit","params":["$A.rig1","$J","00000002","$T","12345678","00002000"]}"#, "\n",
            r#"{"id":7,"method":"mining.extranonce.subscribe","params":[]}"#,
        )
        .as_bytes(),
    );
    write(
        "stratum",
        "resume",
        concat!(
            r#"{"id":1,"method":"mining.subscribe","params":["x","00000001"]}"#, "\n",
            r#"{"id":2,"method":"mining.authorize","params":["$A+0.5","x"]}"#, "\n",
            r#"{"id":3,"method":"mining.submit","params":["$A+0.5","$J","ffffffff","$T","00000000"]}"#,
        )
        .as_bytes(),
    );

    // getwork: JSON-RPC bodies (`$D` a real unit's data) and a data string alone
    write(
        "getwork",
        "get",
        br#"{"method":"getwork","params":[],"id":1}"#,
    );
    write(
        "getwork",
        "submit",
        br#"{"method":"getwork","params":["$D"],"id":"x"}"#,
    );
    let unit =
        p2pool::worker::getwork::WorkUnit::new(&header, ruint::aliases::U256::MAX >> 32, None);
    write("getwork", "data", unit.data.as_bytes());

    // store: flags, then records `tag ‖ key_len ‖ key ‖ value_len u16 LE ‖ value`
    let mut records = vec![1u8]; // modern rules, trust the flags
    let mut record = |tag: u8, key: &[u8], value: &[u8]| {
        records.push(tag);
        records.push(key.len() as u8);
        records.extend_from_slice(key);
        records.put_u16_le(value.len() as u16);
        records.extend_from_slice(value);
    };
    let share_value = |kind: u8, bytes: &[u8]| {
        let mut v = vec![kind, 1];
        v.put_u64_le(1_700_000_000);
        v.extend_from_slice(bytes);
        v
    };
    record(4, &[0; 32], &share_value(0, &ma.to_bytes()));
    record(4, &[0; 32], &share_value(1, &mb.to_bytes()));
    let mut addr_key = [0u8; 18];
    addr_key[10] = 0xff;
    addr_key[11] = 0xff;
    addr_key[12..16].copy_from_slice(&[192, 0, 2, 1]);
    addr_key[16..].copy_from_slice(&9333u16.to_be_bytes());
    let mut addr_value = Vec::new();
    addr_value.put_u64_le(1);
    addr_value.put_u64_le(1_700_000_000);
    addr_value.put_u64_le(1_700_000_100);
    record(1, &addr_key, &addr_value);
    let found = serde_json::json!([{
        "hash": sha256d(b"block").to_hex(), "height": 1000, "time": 1_700_000_000u64,
        "share": sha256d(b"share").to_hex(), "finder": "addr", "outcome": "pending",
        "value": 5_000_000_000u64, "payouts": [["addr", 5_000_000_000u64]],
    }]);
    record(2, b"found_blocks", found.to_string().as_bytes());
    record(2, b"found_blocks_total", &3u64.to_le_bytes());
    write("store", "modern", &records);
    let mut legacy_records = vec![0u8];
    legacy_records.push(4);
    legacy_records.push(32);
    legacy_records.extend_from_slice(&[0; 32]);
    let v = share_value(0, &la.to_bytes());
    legacy_records.put_u16_le(v.len() as u16);
    legacy_records.extend_from_slice(&v);
    write("store", "legacy", &legacy_records);
    println!("seeds written under fuzz/seeds/");
}
