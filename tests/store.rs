//! The LMDB store against real files in a temporary directory: reopening, refusals, corrupt
//! records, and a writer killed with SIGKILL again and again.
//!
//! The crash test re-executes this test binary with `P2POOL_STORE_CRASH_CHILD=<dir>` to run
//! `crash_writer_child`, which writes batches until it is killed; without that variable the
//! child test returns at once. Realistic share bytes come from the vector file named by
//! `P2POOL_VECTORS`, by default `../shared/vectors/p2pool-legacy-f3d1422.json`.

mod common;

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lmdb::{Environment, Transaction, WriteFlags};
use p2pool::bitcoin::hash::{Hash256, sha256d};
use p2pool::network::RuleSet;
use p2pool::sharechain::share::Share1a;
use p2pool::store::{
    AddrEntry, Batch, FORMAT_VERSION, PendingWrites, Store, StoreError, StoredKind, StoredShare,
};
use serde_json::Value;

const NETWORK: &str = "vecnet";
const CHILD_ENV: &str = "P2POOL_STORE_CRASH_CHILD";
const CRASH_ROUNDS: usize = 10;
/// Shares per batch after the first (which holds the vector chain under its real hashes).
const SHARES_PER_BATCH: usize = 50;
const BATCHES_KEY: &str = "crash.batches";

fn share(seed: u8, verified: bool) -> StoredShare {
    StoredShare {
        hash: sha256d(&[seed]),
        kind: if seed % 2 == 0 {
            StoredKind::Share1a
        } else {
            StoredKind::Share1b
        },
        bytes: vec![seed; 40 + seed as usize],
        verified,
        time_seen: 1_700_000_000 + u64::from(seed),
    }
}

fn addr(text: &str) -> SocketAddr {
    text.parse().expect("test address parses")
}

fn entry(n: u64) -> AddrEntry {
    AddrEntry {
        services: n,
        first_seen: 1_600_000_000 + n,
        last_seen: 1_700_000_000 + n,
    }
}

fn sorted_shares(store: &Store) -> Vec<StoredShare> {
    let mut shares = store.load_shares().expect("shares load");
    shares.sort_by_key(|s| s.hash);
    shares
}

/// The store's directory opened with the lmdb crate directly, for writing what the store
/// never would.
fn raw_env(dir: &Path) -> Environment {
    Environment::new()
        .set_max_dbs(8)
        .open(dir)
        .expect("raw lmdb environment opens")
}

fn raw_put(dir: &Path, db_name: &str, key: &[u8], value: &[u8]) {
    let env = raw_env(dir);
    let db = env
        .create_db(Some(db_name), lmdb::DatabaseFlags::empty())
        .expect("raw database opens");
    let mut txn = env.begin_rw_txn().expect("raw write begins");
    txn.put(db, &key, &value, WriteFlags::empty())
        .expect("raw put");
    txn.commit().expect("raw commit");
}

fn raw_get(dir: &Path, db_name: &str, key: &[u8]) -> Option<Vec<u8>> {
    let env = raw_env(dir);
    let db = env.open_db(Some(db_name)).ok()?;
    let txn = env.begin_ro_txn().expect("raw read begins");
    txn.get(db, &key).ok().map(<[u8]>::to_vec)
}

#[test]
fn shares_flags_removals_addresses_and_meta_survive_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("nested/store");
    let (a, b, c) = (share(1, false), share(2, true), share(3, false));
    {
        let mut store = Store::open(&path, NETWORK).expect("new store opens");
        assert_eq!(store.share_count().expect("count"), 0);
        store
            .apply(&Batch {
                put_shares: vec![a.clone(), b.clone(), c.clone()],
                put_addrs: vec![
                    (addr("1.2.3.4:9333"), entry(1)),
                    (addr("[2001:db8::7]:19333"), entry(2)),
                    (addr("5.6.7.8:9333"), entry(3)),
                ],
                put_meta: vec![("best".to_string(), vec![1, 2, 3])],
                ..Batch::default()
            })
            .expect("first batch applies");
        store
            .apply(&Batch {
                set_verified: vec![a.hash, sha256d(b"not stored")],
                remove_shares: vec![c.hash, sha256d(b"not stored either")],
                remove_addrs: vec![addr("5.6.7.8:9333"), addr("9.9.9.9:1")],
                put_meta: vec![("best".to_string(), vec![4])],
                ..Batch::default()
            })
            .expect("second batch applies");
    }
    let store = Store::open(&path, NETWORK).expect("store reopens");
    let verified_a = StoredShare {
        verified: true,
        ..a.clone()
    };
    let mut expected = vec![verified_a, b];
    expected.sort_by_key(|s| s.hash);
    assert_eq!(sorted_shares(&store), expected);
    assert_eq!(store.share_count().expect("count"), 2);
    let mut addrs = store.load_addrs().expect("addresses load");
    addrs.sort_by_key(|(a, _)| *a);
    assert_eq!(
        addrs,
        vec![
            (addr("1.2.3.4:9333"), entry(1)),
            (addr("[2001:db8::7]:19333"), entry(2)),
        ]
    );
    assert_eq!(store.meta("best").expect("meta reads"), Some(vec![4]));
    assert_eq!(store.meta("absent").expect("meta reads"), None);
    assert_eq!(
        store.meta("format_version").expect("meta reads"),
        Some(FORMAT_VERSION.to_le_bytes().to_vec())
    );
    assert_eq!(
        store.meta("network").expect("meta reads"),
        Some(NETWORK.as_bytes().to_vec())
    );
}

#[test]
fn shares_load_in_key_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = Store::open(dir.path(), NETWORK).expect("store opens");
    let shares: Vec<StoredShare> = (0..20).map(|i| share(i, i % 3 == 0)).collect();
    store
        .apply(&Batch {
            put_shares: shares,
            ..Batch::default()
        })
        .expect("batch applies");
    let loaded = store.load_shares().expect("shares load");
    assert_eq!(loaded.len(), 20);
    assert!(loaded.windows(2).all(|w| w[0].hash.0 < w[1].hash.0));
}

#[test]
fn a_share_put_and_removed_in_one_batch_ends_removed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = Store::open(dir.path(), NETWORK).expect("store opens");
    let a = share(9, false);
    store
        .apply(&Batch {
            put_shares: vec![a.clone()],
            set_verified: vec![a.hash],
            remove_shares: vec![a.hash],
            ..Batch::default()
        })
        .expect("batch applies");
    assert_eq!(store.share_count().expect("count"), 0);
}

#[test]
fn batch_is_empty_only_when_every_list_is() {
    assert!(Batch::default().is_empty());
    let one_meta = Batch {
        put_meta: vec![("k".to_string(), vec![])],
        ..Batch::default()
    };
    assert!(!one_meta.is_empty());
    let one_removal = Batch {
        remove_addrs: vec![addr("1.2.3.4:1")],
        ..Batch::default()
    };
    assert!(!one_removal.is_empty());
}

#[test]
fn store_of_another_format_version_is_refused_naming_both_versions() {
    let dir = tempfile::tempdir().expect("tempdir");
    drop(Store::open(dir.path(), NETWORK).expect("store opens"));
    raw_put(dir.path(), "meta", b"format_version", &3u32.to_le_bytes());
    let err = Store::open(dir.path(), NETWORK).expect_err("other version refused");
    assert!(
        matches!(err, StoreError::FormatVersion { found: 3, supported, .. } if supported == FORMAT_VERSION),
        "{err:?}"
    );
    let message = err.to_string();
    let canonical = dir.path().canonicalize().expect("tempdir resolves");
    assert_eq!(
        message,
        format!(
            "store at {}: format version 3, this build reads {FORMAT_VERSION}",
            canonical.display()
        )
    );
    // Refusing writes nothing: the version is as it was.
    assert_eq!(
        raw_get(dir.path(), "meta", b"format_version"),
        Some(3u32.to_le_bytes().to_vec())
    );
}

#[test]
fn store_of_another_network_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    drop(Store::open(dir.path(), "bitcoin").expect("store opens"));
    let err = Store::open(dir.path(), NETWORK).expect_err("other network refused");
    assert!(matches!(err, StoreError::Network { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.ends_with("made for network \"bitcoin\", this node runs \"vecnet\""),
        "{message}"
    );
    assert!(Store::open(dir.path(), "bitcoin").is_ok());
}

#[test]
fn environment_with_data_but_no_format_version_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    raw_put(dir.path(), "shares", &[0; 32], &[0; 10]);
    let err = Store::open(dir.path(), NETWORK).expect_err("unversioned data refused");
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    assert!(err.to_string().contains("no format version"), "{err}");
}

#[test]
fn second_open_in_one_process_is_refused_until_the_first_closes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = Store::open(dir.path(), NETWORK).expect("store opens");
    let err = Store::open(dir.path(), NETWORK).expect_err("second open refused");
    assert!(matches!(err, StoreError::AlreadyOpen { .. }), "{err:?}");
    assert!(err.to_string().ends_with("already open in this process"));
    drop(first);
    assert!(Store::open(dir.path(), NETWORK).is_ok());
}

#[test]
fn reserved_or_empty_meta_keys_are_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = Store::open(dir.path(), NETWORK).expect("store opens");
    for key in ["format_version", "network", ""] {
        let err = store
            .apply(&Batch {
                put_shares: vec![share(1, false)],
                put_meta: vec![(key.to_string(), vec![9])],
                ..Batch::default()
            })
            .expect_err("bad meta key refused");
        assert!(matches!(err, StoreError::BadBatch { .. }), "{err:?}");
    }
    assert_eq!(store.share_count().expect("count"), 0);
    assert_eq!(
        store.meta("network").expect("meta reads"),
        Some(NETWORK.as_bytes().to_vec())
    );
}

/// Writes `value` under a share key behind the store's back, then expects `load_shares` to
/// report a corrupt record mentioning `needle`.
fn assert_corrupt_share(value: &[u8], needle: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    drop(Store::open(dir.path(), NETWORK).expect("store opens"));
    let key = sha256d(b"corrupt");
    raw_put(dir.path(), "shares", &key.0, value);
    let mut store = Store::open(dir.path(), NETWORK).expect("store opens over a bad record");
    let err = store.load_shares().expect_err("corrupt record refused");
    match &err {
        StoreError::Corrupt { key: k, .. } => assert_eq!(k, &key.to_hex()),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert!(err.to_string().contains(needle), "{err}");
    let err = store
        .apply(&Batch {
            set_verified: vec![key],
            ..Batch::default()
        })
        .expect_err("marking a corrupt record refused");
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
}

#[test]
fn share_record_shorter_than_its_header_is_corrupt() {
    assert_corrupt_share(&[0, 0, 1], "3 bytes, shorter than its 10-byte header");
    assert_corrupt_share(&[], "0 bytes");
}

#[test]
fn share_record_of_unknown_kind_is_corrupt() {
    assert_corrupt_share(&[7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], "unknown kind 7");
}

#[test]
fn share_record_with_bad_verified_byte_is_corrupt() {
    assert_corrupt_share(&[0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 1], "verified byte 2");
}

#[test]
fn share_key_of_wrong_length_is_corrupt() {
    let dir = tempfile::tempdir().expect("tempdir");
    drop(Store::open(dir.path(), NETWORK).expect("store opens"));
    raw_put(dir.path(), "shares", &[1, 2, 3], &[0; 12]);
    let store = Store::open(dir.path(), NETWORK).expect("store opens");
    let err = store.load_shares().expect_err("bad key refused");
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    assert!(err.to_string().contains("(key 010203)"), "{err}");
}

#[test]
fn address_record_of_wrong_length_is_corrupt() {
    let dir = tempfile::tempdir().expect("tempdir");
    drop(Store::open(dir.path(), NETWORK).expect("store opens"));
    raw_put(dir.path(), "addrs", &[0; 18], &[0; 23]);
    let store = Store::open(dir.path(), NETWORK).expect("store opens");
    let err = store
        .load_addrs()
        .expect_err("short address record refused");
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    assert!(err.to_string().contains("23 bytes, not 24"), "{err}");
}

#[test]
fn corrupt_format_version_is_corrupt_not_a_panic() {
    let dir = tempfile::tempdir().expect("tempdir");
    drop(Store::open(dir.path(), NETWORK).expect("store opens"));
    raw_put(dir.path(), "meta", b"format_version", &[1, 0]);
    let err = Store::open(dir.path(), NETWORK).expect_err("short version refused");
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
}

// ---- crash test -------------------------------------------------------------------------

fn vector_share_bytes() -> Vec<Vec<u8>> {
    let text = common::vectors_text();
    let json: Value = serde_json::from_str(&text).expect("vector file is valid JSON");
    let shares = json["vecnet"]["shares"]
        .as_array()
        .expect("vecnet.shares is an array");
    shares
        .iter()
        .map(|s| hex::decode(s["share1a"].as_str().expect("share1a hex")).expect("valid hex"))
        .collect()
}

/// The synthetic key of share `j` of batch `b` (b ≥ 1).
fn synthetic_key(b: u64, j: usize) -> Hash256 {
    let mut seed = b.to_le_bytes().to_vec();
    seed.extend_from_slice(&(j as u64).to_le_bytes());
    sha256d(&seed)
}

/// Batch `b` of the crash writer. Batch 0 stores the vector chain under its real hashes;
/// each later one stores `SHARES_PER_BATCH` vector shares under synthetic keys, marks the
/// previous batch verified, adds one address and records the batch count in meta, so that
/// the count in meta says exactly what the store must hold.
fn crash_batch(b: u64, vectors: &[Vec<u8>]) -> Batch {
    let put_shares = if b == 0 {
        vectors
            .iter()
            .map(|bytes| StoredShare {
                hash: Share1a::from_bytes(bytes, RuleSet::Legacy2011)
                    .expect("vector share decodes")
                    .hash(),
                kind: StoredKind::Share1a,
                bytes: bytes.clone(),
                verified: false,
                time_seen: 0,
            })
            .collect()
    } else {
        (0..SHARES_PER_BATCH)
            .map(|j| StoredShare {
                hash: synthetic_key(b, j),
                kind: StoredKind::Share1a,
                bytes: vectors[j % vectors.len()].clone(),
                verified: false,
                time_seen: b,
            })
            .collect()
    };
    let set_verified = match b {
        0 => Vec::new(),
        1 => crash_batch(0, vectors)
            .put_shares
            .iter()
            .map(|s| s.hash)
            .collect(),
        _ => (0..SHARES_PER_BATCH)
            .map(|j| synthetic_key(b - 1, j))
            .collect(),
    };
    let port = u16::try_from(b % 65_536).expect("port fits");
    Batch {
        put_shares,
        set_verified,
        put_addrs: vec![(SocketAddr::from(([127, 0, 0, 1], port)), entry(b))],
        put_meta: vec![(BATCHES_KEY.to_string(), (b + 1).to_le_bytes().to_vec())],
        ..Batch::default()
    }
}

fn batches_committed(store: &Store) -> u64 {
    match store.meta(BATCHES_KEY).expect("meta reads") {
        None => 0,
        Some(bytes) => u64::from_le_bytes(bytes.try_into().expect("8-byte counter")),
    }
}

/// Shares (total, verified) after `n` committed batches.
fn expected_counts(n: u64, vector_count: usize) -> (usize, usize) {
    match n {
        0 => (0, 0),
        _ => {
            let total = vector_count + (n as usize - 1) * SHARES_PER_BATCH;
            let last = if n == 1 {
                vector_count
            } else {
                SHARES_PER_BATCH
            };
            (total, total - last)
        }
    }
}

/// The writer half of the crash test: runs only in the child process.
#[test]
fn crash_writer_child() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let vectors = vector_share_bytes();
    let mut store = Store::open(Path::new(&dir), NETWORK).expect("child opens the store");
    let mut out = std::io::stdout();
    for b in batches_committed(&store).. {
        store
            .apply(&crash_batch(b, &vectors))
            .expect("child batch applies");
        writeln!(out, "committed {}", b + 1).expect("child reports");
        out.flush().expect("child flushes");
    }
}

/// A short pseudo-random delay in 10..=150 ms, from a xorshift state.
fn next_delay(state: &mut u64) -> Duration {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    Duration::from_millis(10 + *state % 141)
}

/// Runs the writer child for `delay`, kills it with SIGKILL and returns the highest batch
/// count it reported committed.
fn run_and_kill_writer(dir: &Path, delay: Duration) -> u64 {
    let exe = std::env::current_exe().expect("test binary path");
    let mut child = Command::new(exe)
        .args([
            "crash_writer_child",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("writer child spawns");
    let mut stdout = child.stdout.take().expect("child stdout is piped");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    std::thread::sleep(delay);
    if let Some(status) = child.try_wait().expect("child status") {
        let mut stderr = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut stderr);
        }
        panic!("writer child exited by itself ({status}): {stderr}");
    }
    child.kill().expect("SIGKILL the writer");
    child.wait().expect("reap the writer");
    let text = reader.join().expect("stdout reader");
    text.lines()
        .filter_map(|line| line.strip_prefix("committed "))
        .filter_map(|n| n.trim().parse::<u64>().ok())
        .max()
        .unwrap_or(0)
}

/// Opens the store after a kill and checks everything a committed batch promised.
fn check_after_crash(dir: &Path, vectors: &[Vec<u8>], round: usize) -> u64 {
    let store = Store::open(dir, NETWORK)
        .unwrap_or_else(|e| panic!("round {round}: store does not open after a kill: {e}"));
    let n = batches_committed(&store);
    let shares = store.load_shares().expect("shares load after a kill");
    let (total, verified) = expected_counts(n, vectors.len());
    assert_eq!(
        shares.len(),
        total,
        "round {round}: shares after {n} batches"
    );
    assert_eq!(store.share_count().expect("count"), total);
    assert_eq!(
        shares.iter().filter(|s| s.verified).count(),
        verified,
        "round {round}: verified shares after {n} batches"
    );
    assert_eq!(
        store.load_addrs().expect("addresses load").len() as u64,
        n,
        "round {round}: one address per batch"
    );
    let mut parents = HashMap::new();
    let mut decoded_ok: HashSet<&[u8]> = HashSet::new();
    let mut synthetic = HashSet::new();
    for s in &shares {
        if s.time_seen == 0 {
            let decoded = Share1a::from_bytes(&s.bytes, RuleSet::Legacy2011)
                .unwrap_or_else(|e| panic!("round {round}: share {} decodes: {e}", s.hash));
            assert_eq!(
                decoded.hash(),
                s.hash,
                "round {round}: real share keyed by hash"
            );
            parents.insert(s.hash, decoded.info.share_data.previous_share_hash);
        } else {
            synthetic.insert(s.hash);
            // Copies of the same vector bytes: decode each distinct encoding once.
            if decoded_ok.insert(&s.bytes) {
                Share1a::from_bytes(&s.bytes, RuleSet::Legacy2011)
                    .unwrap_or_else(|e| panic!("round {round}: share {} decodes: {e}", s.hash));
            }
        }
    }
    let expected_synthetic: HashSet<Hash256> = (1..n)
        .flat_map(|b| (0..SHARES_PER_BATCH).map(move |j| synthetic_key(b, j)))
        .collect();
    assert!(
        synthetic == expected_synthetic,
        "round {round}: synthetic shares are exactly those of batches 1..{n}"
    );
    check_chain_links(&parents, n, vectors.len());
    n
}

/// The vector shares form one chain: all but the oldest have their parent in the store.
fn check_chain_links(parents: &HashMap<Hash256, Option<Hash256>>, n: u64, vector_count: usize) {
    if n == 0 {
        assert!(parents.is_empty());
        return;
    }
    assert_eq!(parents.len(), vector_count);
    let orphans = parents
        .values()
        .filter(|p| !p.is_some_and(|p| parents.contains_key(&p)))
        .count();
    assert_eq!(
        orphans, 1,
        "exactly one share (the oldest) has no stored parent"
    );
    let referenced: HashSet<Hash256> = parents.values().flatten().copied().collect();
    let tips: Vec<&Hash256> = parents.keys().filter(|h| !referenced.contains(h)).collect();
    assert_eq!(tips.len(), 1, "the chain has one tip");
    let mut walked = 0;
    let mut cursor = Some(*tips[0]);
    while let Some(h) = cursor.filter(|h| parents.contains_key(h)) {
        walked += 1;
        cursor = parents[&h];
    }
    assert_eq!(walked, vector_count, "the tip reaches every share");
}

#[test]
fn writer_killed_repeatedly_leaves_a_store_that_opens_with_every_committed_batch() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let vectors = vector_share_bytes();
    let dir = tempfile::tempdir().expect("tempdir");
    let started = Instant::now();
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
        | 1;
    let mut state = seed;
    let mut previous = 0;
    for round in 0..CRASH_ROUNDS {
        let delay = next_delay(&mut state);
        let reported = run_and_kill_writer(dir.path(), delay);
        let n = check_after_crash(dir.path(), &vectors, round);
        assert!(
            n >= reported,
            "seed {seed} round {round}: child reported {reported} batches committed, store has {n}"
        );
        assert!(
            n >= previous,
            "seed {seed} round {round}: batches fell from {previous} to {n}"
        );
        previous = n;
    }
    assert!(
        previous > 1,
        "seed {seed}: the writer never committed past its first batch"
    );
    eprintln!(
        "crash test: {CRASH_ROUNDS} kills, {previous} batches committed, {:?}",
        started.elapsed()
    );
}

// ---- Map growth, full disks and pending writes ----

/// A share of `len` bytes, distinct for each `n`.
fn sized_share(n: u32, len: usize) -> StoredShare {
    let hash = sha256d(&n.to_le_bytes());
    let bytes = (0..len).map(|i| hash.0[i % 32] ^ (i as u8)).collect();
    StoredShare {
        hash,
        kind: StoredKind::Share1a,
        bytes,
        verified: n % 2 == 0,
        time_seen: 1_700_000_000 + u64::from(n),
    }
}

/// `count` shares of `len` bytes numbered from `first`.
fn share_batch(first: u32, count: u32, len: usize) -> Batch {
    Batch {
        put_shares: (first..first + count)
            .map(|n| sized_share(n, len))
            .collect(),
        ..Batch::default()
    }
}

fn assert_holds_exactly(store: &Store, expected: &[StoredShare]) {
    let mut expected = expected.to_vec();
    expected.sort_by_key(|s| s.hash);
    let loaded = sorted_shares(store);
    assert_eq!(loaded.len(), expected.len(), "share count");
    assert!(
        loaded == expected,
        "stored shares differ from those written"
    );
}

const TINY_MAP: usize = 64 << 10;

#[test]
fn a_store_whose_map_starts_tiny_grows_and_keeps_every_share() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store");
    let mut written = Vec::new();
    {
        let mut store =
            Store::open_with_map_size(&path, NETWORK, TINY_MAP).expect("tiny store opens");
        assert_eq!(store.map_size(), TINY_MAP);
        // 40 batches of 25 shares of 4,000 bytes: 4 MB, sixty times the first map.
        for b in 0..40 {
            let batch = share_batch(b * 25, 25, 4_000);
            written.extend(batch.put_shares.iter().cloned());
            store.apply(&batch).expect("batch applies, growing the map");
        }
        assert!(
            store.map_size() >= 4_000_000,
            "map grew to {}",
            store.map_size()
        );
        assert_holds_exactly(&store, &written);
    }
    let data_len = std::fs::metadata(path.join("data.mdb"))
        .expect("data file")
        .len();
    assert!(
        data_len > TINY_MAP as u64 * 16,
        "data file of {data_len} bytes"
    );

    // Reopened with the tiny initial size, it opens at the size growth reached, and writes.
    let mut store =
        Store::open_with_map_size(&path, NETWORK, TINY_MAP).expect("grown store reopens");
    assert!(store.map_size() as u64 >= data_len, "{store:?}");
    assert_holds_exactly(&store, &written);
    let more = share_batch(10_000, 25, 4_000);
    written.extend(more.put_shares.iter().cloned());
    store.apply(&more).expect("a write after reopening");
    drop(store);

    // And with the default initial size.
    let store = Store::open(&path, NETWORK).expect("grown store opens with the default map");
    assert_holds_exactly(&store, &written);
}

#[test]
fn one_batch_larger_than_the_whole_map_is_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store =
        Store::open_with_map_size(dir.path(), NETWORK, TINY_MAP).expect("tiny store opens");
    // 2 MB in one transaction, thirty times the map.
    let batch = share_batch(0, 100, 20_000);
    store.apply(&batch).expect("the batch applies");
    assert_holds_exactly(&store, &batch.put_shares);
}

/// Applies `earlier` then `later` to one store and their merge to another, from the same
/// start, and checks both stores end the same.
fn assert_merge_matches_sequence(start: &Batch, earlier: &Batch, later: &Batch) {
    let (a, b) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let mut sequential = Store::open(a.path(), NETWORK).expect("store opens");
    let mut merged_store = Store::open(b.path(), NETWORK).expect("store opens");
    for store in [&mut sequential, &mut merged_store] {
        store.apply(start).expect("start applies");
    }
    sequential.apply(earlier).expect("earlier applies");
    sequential.apply(later).expect("later applies");
    let mut merged = earlier.clone();
    merged.merge(later.clone());
    merged_store.apply(&merged).expect("merged applies");
    assert_eq!(sorted_shares(&merged_store), sorted_shares(&sequential));
    assert_eq!(
        merged_store.load_addrs().expect("addrs"),
        sequential.load_addrs().expect("addrs")
    );
    for key in ["k", "j"] {
        assert_eq!(
            merged_store.meta(key).expect("meta"),
            sequential.meta(key).expect("meta")
        );
    }
}

#[test]
fn a_merged_batch_writes_what_the_two_write_in_order() {
    let (a, b, c) = (share(1, false), share(2, false), share(3, false));
    let mut b2 = b.clone();
    b2.bytes = vec![0xee; 9];
    let start = Batch {
        put_shares: vec![a.clone(), b.clone(), c.clone()],
        put_addrs: vec![(addr("1.1.1.1:1"), entry(1)), (addr("2.2.2.2:2"), entry(2))],
        put_meta: vec![("k".to_string(), vec![0])],
        ..Batch::default()
    };
    // A put then a remove ends removed; a remove then a put ends put.
    assert_merge_matches_sequence(
        &start,
        &Batch {
            put_shares: vec![b2.clone()],
            remove_shares: vec![a.hash],
            remove_addrs: vec![addr("1.1.1.1:1")],
            ..Batch::default()
        },
        &Batch {
            put_shares: vec![a.clone()],
            remove_shares: vec![b2.hash],
            put_addrs: vec![(addr("1.1.1.1:1"), entry(7))],
            remove_addrs: vec![addr("2.2.2.2:2")],
            ..Batch::default()
        },
    );
    // A mark then an unverified put ends unverified; a put then a mark ends verified; a
    // remove then a mark ends removed; meta keeps its last value.
    assert_merge_matches_sequence(
        &start,
        &Batch {
            set_verified: vec![a.hash],
            put_shares: vec![b2.clone()],
            remove_shares: vec![c.hash],
            put_meta: vec![("k".to_string(), vec![1]), ("j".to_string(), vec![1])],
            ..Batch::default()
        },
        &Batch {
            put_shares: vec![a.clone()],
            set_verified: vec![b2.hash, c.hash],
            put_meta: vec![("k".to_string(), vec![2])],
            ..Batch::default()
        },
    );
}

#[test]
fn pending_writes_write_at_once_and_drop_only_what_the_store_refuses() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = Store::open(dir.path(), NETWORK).expect("store opens");
    let mut pending = PendingWrites::default();
    let notes = pending.write(&mut store, share_batch(0, 3, 100), 1_700_000_000);
    assert!(notes.is_empty(), "{notes:?}");
    assert!(pending.pending().is_empty());
    assert_eq!(pending.pending_batches(), 0);
    assert!(pending.write(&mut store, Batch::default(), 0).is_empty());

    let mut bad = share_batch(3, 2, 100);
    bad.put_meta = vec![
        ("network".to_string(), b"other".to_vec()),
        ("fine".to_string(), vec![1]),
    ];
    let notes = pending.write(&mut store, bad, 1_700_000_001);
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(
        notes[0].message.contains("batch refused")
            && notes[0].message.contains("1 invalid entries dropped"),
        "{}",
        notes[0].message
    );
    assert_eq!(store.share_count().expect("count"), 5);
    assert_eq!(store.meta("fine").expect("meta"), Some(vec![1]));
    assert_eq!(pending.pending_batches(), 0);
}

/// A tmpfs mounted on a fresh temporary directory, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// `None`, saying so, where this process may not mount one (not root, or no
    /// CAP_SYS_ADMIN in a container).
    fn mount(test: &str, size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().expect("tempdir");
        let result = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .output();
        match result {
            Ok(out) if out.status.success() => Some(Tmpfs { dir }),
            Ok(out) => {
                eprintln!(
                    "SKIPPED {test}: cannot mount a {size} tmpfs to fill (mount: {})",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("SKIPPED {test}: cannot run mount: {e}");
                None
            }
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(self.dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.dir.path())
                .status();
        }
    }
}

/// Writes `len` bytes to `path`.
fn fill(path: &Path, len: usize) {
    std::fs::write(path, vec![0x55u8; len]).expect("filler written");
}

fn assert_disk_full(e: &StoreError, store_path: &Path) {
    let text = e.to_string();
    let prefix = format!("disk full at {}: ", store_path.display());
    assert!(
        matches!(e, StoreError::DiskFull { .. }),
        "not DiskFull: {e:?}"
    );
    let free = text
        .strip_prefix(&prefix)
        .and_then(|rest| rest.strip_suffix(" bytes free"))
        .unwrap_or_else(|| panic!("message {text:?} is not {prefix:?}<n> bytes free"));
    free.parse::<u64>()
        .unwrap_or_else(|_| panic!("free bytes {free:?} in {text:?}"));
}

#[test]
fn a_full_disk_is_reported_and_pending_writes_are_kept_until_space_returns() {
    let test = "a_full_disk_is_reported_and_pending_writes_are_kept_until_space_returns";
    let Some(disk) = Tmpfs::mount(test, "8m") else {
        return;
    };
    let filler = disk.path().join("filler");
    fill(&filler, 3 << 20);
    let store_dir = disk.path().join("store");
    let mut store = Store::open(&store_dir, NETWORK).expect("store opens on the tmpfs");
    let store_path = store.path().to_path_buf();
    let mut pending = PendingWrites::default();
    let mut written = Vec::new();
    let now = 1_700_000_000;

    // Write until the disk is full: the failure is logged once, naming the disk.
    let mut batch_no = 0;
    let mut errors = Vec::new();
    while errors.is_empty() {
        assert!(batch_no < 500, "8 MiB disk never filled");
        let batch = share_batch(batch_no * 20, 20, 4_000);
        written.extend(batch.put_shares.iter().cloned());
        let notes = pending.write(&mut store, batch, now + u64::from(batch_no));
        errors.extend(notes.into_iter().filter(|n| n.level == log::Level::Error));
        batch_no += 1;
    }
    let message = &errors[0].message;
    assert!(
        message.starts_with(&format!(
            "store write failed: disk full at {}: ",
            store_path.display()
        )) && message.contains("kept in memory and retried every tick"),
        "{message}"
    );
    let failed_at = now + u64::from(batch_no - 1);
    assert!(
        message.contains(&p2pool::store::utc_text(failed_at)),
        "{message}"
    );
    // The store's own error for the pending batch.
    let e = store
        .apply(&pending.pending().clone())
        .expect_err("still no room");
    assert_disk_full(&e, &store_path);

    // More ticks on the full disk: nothing new is logged, everything stays pending.
    for _ in 0..5 {
        let batch = share_batch(batch_no * 20, 20, 4_000);
        written.extend(batch.put_shares.iter().cloned());
        let notes = pending.write(&mut store, batch, now + u64::from(batch_no));
        assert!(
            notes.is_empty(),
            "a repeated failure is not logged again: {notes:?}"
        );
        batch_no += 1;
    }
    assert!(pending.pending_batches() >= 6);

    // Room again: the next tick writes everything pending and says so.
    std::fs::remove_file(&filler).expect("filler removed");
    let notes = pending.write(&mut store, Batch::default(), now + 1_000);
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert_eq!(notes[0].level, log::Level::Info);
    assert!(
        notes[0].message.starts_with("store writes recovered: ")
            && notes[0].message.contains(" pending writes ("),
        "{}",
        notes[0].message
    );
    assert_eq!(pending.pending_batches(), 0);
    drop(store);
    let store = Store::open(&store_dir, NETWORK).expect("store reopens");
    assert_holds_exactly(&store, &written);
}

#[test]
fn a_map_that_cannot_grow_for_lack_of_disk_is_a_full_disk() {
    let test = "a_map_that_cannot_grow_for_lack_of_disk_is_a_full_disk";
    let Some(disk) = Tmpfs::mount(test, "8m") else {
        return;
    };
    let store_dir = disk.path().join("store");
    let mut store = Store::open_with_map_size(&store_dir, NETWORK, TINY_MAP)
        .expect("tiny store opens on the tmpfs");
    let mut written = Vec::new();
    let mut n = 0;
    let e = loop {
        assert!(n < 500, "8 MiB disk never filled");
        let batch = share_batch(n * 20, 20, 4_000);
        match store.apply(&batch) {
            Ok(()) => written.extend(batch.put_shares),
            Err(e) => break e,
        }
        n += 1;
    };
    assert_disk_full(&e, store.path());
    assert!(store.map_size() > TINY_MAP, "the map grew first");
    assert!(
        store.map_size() <= 8 << 20,
        "the map never outgrew the disk: {}",
        store.map_size()
    );
    assert!(written.len() > 1_000, "{} shares written", written.len());
    drop(store);
    let store = Store::open_with_map_size(&store_dir, NETWORK, TINY_MAP).expect("reopens");
    assert_holds_exactly(&store, &written);
}

#[test]
fn pending_shares_past_the_cap_are_left_out_and_said_so() {
    let test = "pending_shares_past_the_cap_are_left_out_and_said_so";
    let Some(disk) = Tmpfs::mount(test, "8m") else {
        return;
    };
    let filler = disk.path().join("filler");
    fill(&filler, 3 << 20);
    let store_dir = disk.path().join("store");
    let mut store = Store::open(&store_dir, NETWORK).expect("store opens on the tmpfs");
    const CAP: usize = 1 << 20;
    let mut pending = PendingWrites::with_cap(CAP);
    let mut n = 0;
    while pending.pending_batches() == 0 || n == 0 {
        assert!(n < 500, "8 MiB disk never filled");
        pending.write(&mut store, share_batch(n * 20, 20, 4_000), 1);
        n += 1;
    }
    let mut warned = Vec::new();
    for _ in 0..40 {
        let notes = pending.write(&mut store, share_batch(n * 20, 20, 4_000), 2);
        warned.extend(notes.into_iter().filter(|n| n.level == log::Level::Warn));
        n += 1;
    }
    assert_eq!(warned.len(), 1, "warned once: {warned:?}");
    assert!(
        warned[0].message.contains("kept only in memory"),
        "{warned:?}"
    );
    assert!(pending.pending().share_bytes() <= CAP.max(20 * 4_000 * 2));
    std::fs::remove_file(&filler).expect("filler removed");
    let notes = pending.write(&mut store, Batch::default(), 3);
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(
        notes[0].message.contains("beyond the cap were not stored"),
        "{}",
        notes[0].message
    );
}
