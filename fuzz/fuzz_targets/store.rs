//! Store records (store.rs) as read back from disk. The record decoders
//! (`parse_share`, `decode_addr`, the identity check) are private, so the input is written
//! as raw records into an LMDB environment and read through the public functions that
//! decode them: `Store::open`, `load_shares`, `load_addrs`, `meta`, `History::load` (found
//! blocks, JSON in the metadata) and `ShareChain::load` (which decodes each stored share).
//!
//! Input: byte 0 (bit 0 the rule set, bit 1 distrust the verified flags), then records:
//! `tag u8 ‖ key_len u8 ‖ key ‖ value_len u16 LE ‖ value`. Tag bits 0–1 pick the database
//! (shares, addrs, meta); bit 2 on a share record replaces its key by the hash of the share
//! its value holds (so `ShareChain::load` gets past the hash check). The format version and
//! network name are written first; a meta record may overwrite them.
//!
//! Asserts: nothing panics; records that load are written back by `Store::apply` and load
//! again the same (decode → encode → decode).
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use lmdb::{DatabaseFlags, Environment, EnvironmentFlags, Transaction, WriteFlags};
use p2pool::bitcoin::encode::Encode;
use p2pool::node::history::History;
use p2pool::sharechain::chain::ShareChain;
use p2pool::sharechain::share::{Share1a, Share1b};
use p2pool::store::{self, Batch, Store};
use p2pool_fuzz::{RULE_SETS, net_of};

fn dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = if std::path::Path::new("/dev/shm").is_dir() {
            tempfile::tempdir_in("/dev/shm")
        } else {
            tempfile::tempdir()
        }
        .expect("a temporary directory");
        base.keep()
    })
}

struct Record<'a> {
    tag: u8,
    key: &'a [u8],
    value: &'a [u8],
}

fn records(mut data: &[u8]) -> Vec<Record<'_>> {
    let mut out = Vec::new();
    while let [tag, klen, rest @ ..] = data {
        let Some((key, rest)) = rest.split_at_checked(usize::from(*klen)) else {
            break;
        };
        let [l0, l1, rest @ ..] = rest else {
            break;
        };
        let vlen = usize::from(u16::from_le_bytes([*l0, *l1])).min(rest.len());
        let (value, rest) = rest.split_at(vlen);
        out.push(Record {
            tag: *tag,
            key,
            value,
        });
        data = rest;
    }
    out
}

/// The share ID of a share record's value, when its bytes decode.
fn share_hash(value: &[u8], rules: p2pool::network::RuleSet) -> Option<[u8; 32]> {
    let bytes = value.get(10..)?;
    let hash = match value[0] {
        0 => Share1a::from_bytes(bytes, rules).ok()?.hash(),
        1 => Share1b::from_bytes(bytes, rules).ok()?.hash(),
        _ => return None,
    };
    Some(hash.0)
}

fn write_raw(path: &std::path::Path, network: &str, data: &[u8], rules: p2pool::network::RuleSet) {
    let env = Environment::new()
        .set_max_dbs(8)
        .set_map_size(64 << 20)
        .set_flags(EnvironmentFlags::NO_SYNC | EnvironmentFlags::NO_META_SYNC)
        .open(path)
        .expect("lmdb opens");
    let dbs = ["shares", "addrs", "meta"].map(|name| {
        env.create_db(Some(name), DatabaseFlags::empty())
            .expect("db")
    });
    let mut txn = env.begin_rw_txn().expect("txn");
    txn.put(
        dbs[2],
        &store::META_FORMAT_VERSION,
        &store::FORMAT_VERSION.to_le_bytes(),
        WriteFlags::empty(),
    )
    .expect("put");
    txn.put(dbs[2], &store::META_NETWORK, &network, WriteFlags::empty())
        .expect("put");
    for r in records(data) {
        let db = dbs[usize::from(r.tag & 3) % 3];
        let hashed = (r.tag & 3 == 0 && r.tag & 4 != 0)
            .then(|| share_hash(r.value, rules))
            .flatten();
        let key = hashed.as_ref().map_or(r.key, |h| h.as_slice());
        // LMDB refuses empty keys; a refused record is left out.
        let _ = txn.put(db, &key, &r.value, WriteFlags::empty());
    }
    txn.commit().expect("commit");
}

fuzz_target!(|data: &[u8]| {
    let [flags, data @ ..] = data else {
        return;
    };
    let rules = RULE_SETS[usize::from(flags & 1)];
    let net = net_of(rules);
    let path = dir();
    for file in ["data.mdb", "lock.mdb"] {
        let _ = std::fs::remove_file(path.join(file));
    }
    write_raw(path, &net.name, data, rules);
    let Ok(mut store) = Store::open(path, &net.name) else {
        return;
    };
    let _ = History::load(&store);
    let _ = store.share_count();
    let _ = ShareChain::load(net.clone(), &store, flags & 2 != 0);
    let (Ok(shares), Ok(addrs)) = (store.load_shares(), store.load_addrs()) else {
        return;
    };
    for s in &shares {
        assert!(s.bytes.len() <= store::max_share_bytes());
        // What ShareChain::load does with each record's bytes, under both rule sets.
        for rules in RULE_SETS {
            let decoded = match s.kind {
                store::StoredKind::Share1a => {
                    Share1a::from_bytes(&s.bytes, rules).map(|a| a.to_bytes())
                }
                store::StoredKind::Share1b => {
                    Share1b::from_bytes(&s.bytes, rules).map(|b| b.to_bytes())
                }
            };
            if let Ok(bytes) = decoded {
                assert_eq!(bytes, s.bytes, "a stored share re-encodes differently");
            }
        }
    }
    let batch = Batch {
        put_shares: shares.clone(),
        put_addrs: addrs.clone(),
        ..Batch::default()
    };
    store
        .apply(&batch)
        .expect("records just read are written back");
    assert_eq!(store.load_shares().expect("shares load again"), shares);
    assert_eq!(store.load_addrs().expect("addresses load again"), addrs);
});
