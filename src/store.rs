//! The LMDB store: shares (with their verified flag and the time they were first seen), the
//! address book and node metadata, in one environment under the data directory.
//!
//! The node thread owns the [`Store`] and hands it one [`Batch`] per tick; [`Store::apply`]
//! writes the batch in a single write transaction and commits it with LMDB's default durable
//! commit (the data is synced before the commit returns). A process killed at any moment leaves
//! a store that opens, holding every committed batch; only the batch being written is lost.
//! The map starts small and grows as the data does, never past the disk's free space; a full
//! disk is [`StoreError::DiskFull`], and [`PendingWrites`] keeps the node's failed batches in
//! memory and retries them.
//!
//! Every record read back is checked: a value of the wrong size, an unknown share kind or a
//! length beyond the largest possible share is [`StoreError::Corrupt`], never a panic. The
//! layouts are documented in doc/schema.md; [`FORMAT_VERSION`] changes with any of them.

use std::collections::HashSet;
use std::fmt;
use std::fs;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use lmdb::{Cursor, Database, DatabaseFlags, Environment, RwTransaction, Transaction, WriteFlags};
use log::{info, warn};

use crate::bitcoin::hash::Hash256;
use crate::network::RuleSet;

/// The on-disk format this build reads and writes. Bump it with any change to a layout in
/// doc/schema.md; a store of another version is refused at open.
pub const FORMAT_VERSION: u32 = 1;

/// The LMDB map a new store starts with. LMDB reserves the map as address space, not disk;
/// the data file grows only as records are written. A write that needs more grows the map
/// (see [`Store::apply`]), so this is only where growth starts.
pub const INITIAL_MAP_SIZE: usize = 64 << 20;

/// The largest map the store grows to: far beyond any sharechain on 64-bit targets.
#[cfg(target_pointer_width = "64")]
pub const MAX_MAP_SIZE: usize = 1 << 40;
/// The largest map the store grows to (smaller where address space is scarce).
#[cfg(not(target_pointer_width = "64"))]
pub const MAX_MAP_SIZE: usize = 1 << 30;

/// The smallest map the store opens with, whatever the caller asks for.
const MIN_MAP_SIZE: usize = 64 << 10;
/// Map sizes are rounded to this, a multiple of every page size LMDB may use (4 to 64 KiB).
const MAP_GRANULE: usize = 64 << 10;
/// Growths tried for one batch before giving up with `MapFull`. Each at least doubles the
/// map, so a batch that fits the disk fits long before this.
const MAX_GROWTHS: usize = 8;
/// A write that fails with EIO while less than this (or twice the batch's bytes) is free on
/// the store's filesystem is a full disk: a short write for lack of space is reported as EIO.
const DISK_FULL_SLACK: u64 = 16 << 20;
/// `errno` of a full disk (Linux and the BSDs agree).
const ENOSPC: i32 = 28;
/// `errno` of an I/O error, which LMDB reports for a short write.
const EIO: i32 = 5;

/// Meta key of the format version (u32 LE). Reserved: a batch cannot write it.
pub const META_FORMAT_VERSION: &str = "format_version";
/// Meta key of the network name (UTF-8). Reserved: a batch cannot write it.
pub const META_NETWORK: &str = "network";

/// Named databases; `MAX_DBS` leaves room for a later format to add one.
const DB_SHARES: &str = "shares";
const DB_ADDRS: &str = "addrs";
const DB_META: &str = "meta";
const MAX_DBS: u32 = 8;

/// Share value header: kind u8, verified u8, time_seen u64 LE.
const SHARE_HEADER_LEN: usize = 10;
/// Where the verified byte sits in a share value.
const VERIFIED_OFFSET: usize = 1;
/// Address key: IPv6 address (IPv4 mapped) then port u16 BE.
const ADDR_KEY_LEN: usize = 18;
/// Address value: services, first_seen, last_seen, each u64 LE.
const ADDR_VALUE_LEN: usize = 24;
/// LMDB's largest key with its default build options.
const MAX_META_KEY_LEN: usize = 511;
/// `load_shares` reserves room for at most this many records up front, whatever the
/// database's entry count says; past it the vector grows as records are read.
const PREALLOC_SHARES: usize = 100_000;

/// Directories with a `Store` open in this process: LMDB forbids opening one environment twice
/// in a process (closing either would drop the other's file locks).
static OPEN_DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Longest share encoding the store accepts: no share can exceed the largest frame payload of
/// any rule set.
pub fn max_share_bytes() -> usize {
    RuleSet::Legacy2011
        .max_payload()
        .max(RuleSet::Modern.max_payload())
}

/// Which encoding a stored share's bytes are in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum StoredKind {
    /// A share1a encoding (`Share1a::from_bytes`).
    Share1a = 0,
    /// A share1b encoding (`Share1b::from_bytes`).
    Share1b = 1,
}

impl StoredKind {
    /// The kind of a stored kind byte, `None` for an unknown one.
    pub fn from_byte(byte: u8) -> Option<StoredKind> {
        match byte {
            0 => Some(StoredKind::Share1a),
            1 => Some(StoredKind::Share1b),
            _ => None,
        }
    }
}

/// A share as stored: its encoding is opaque to the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredShare {
    /// The share's ID, the key of its record.
    pub hash: Hash256,
    pub kind: StoredKind,
    /// The share1a or share1b encoding, as `kind` says.
    pub bytes: Vec<u8>,
    /// Whether the share passed full verification.
    pub verified: bool,
    /// When this node first saw the share, in Unix seconds.
    pub time_seen: u64,
}

/// What the address book knows of one peer address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AddrEntry {
    pub services: u64,
    /// Unix seconds.
    pub first_seen: u64,
    /// Unix seconds.
    pub last_seen: u64,
}

/// One tick's writes, applied in a single write transaction.
///
/// Applied in field order: shares are put, then marked verified, then removed; addresses are
/// put, then removed; then meta is put. A share put and removed in one batch ends removed.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    /// Shares to insert or replace.
    pub put_shares: Vec<StoredShare>,
    /// Shares to mark verified; a hash not in the store is skipped.
    pub set_verified: Vec<Hash256>,
    /// Shares to delete; a hash not in the store is skipped.
    pub remove_shares: Vec<Hash256>,
    /// Addresses to insert or replace.
    pub put_addrs: Vec<(SocketAddr, AddrEntry)>,
    /// Addresses to delete; an address not in the store is skipped.
    pub remove_addrs: Vec<SocketAddr>,
    /// Metadata to insert or replace; the keys `format_version` and `network` are reserved.
    pub put_meta: Vec<(String, Vec<u8>)>,
}

impl Batch {
    /// True when applying the batch would change nothing.
    pub fn is_empty(&self) -> bool {
        self.put_shares.is_empty()
            && self.set_verified.is_empty()
            && self.remove_shares.is_empty()
            && self.put_addrs.is_empty()
            && self.remove_addrs.is_empty()
            && self.put_meta.is_empty()
    }

    /// Bytes of share encodings the batch puts.
    pub fn share_bytes(&self) -> usize {
        self.put_shares.iter().map(|s| s.bytes.len()).sum()
    }

    /// Folds `later`, a batch to be applied after this one, into this one: applying the result
    /// has the same effect on any store as applying this batch and then `later`.
    ///
    /// Per share hash the last word wins: a put then a remove ends removed, a remove then a
    /// put ends put (a put replaces whatever is stored, so the remove is dropped), a put then
    /// a verified mark ends put verified, a verified mark then a put ends put as the put says,
    /// and a remove then a mark ends removed. Addresses likewise (the last put or remove
    /// wins), and meta keys keep their last value. Both batches are first normalized, so the
    /// result holds each hash, address and meta key at most once.
    pub fn merge(&mut self, later: Batch) {
        self.normalize();
        // Destructured whole so that a new field cannot be forgotten here.
        let Batch {
            put_shares,
            set_verified,
            remove_shares,
            put_addrs,
            remove_addrs,
            put_meta,
        } = later.normalized();

        // After normalizing, each hash is in at most one of `later`'s share lists.
        let put: HashSet<Hash256> = put_shares.iter().map(|s| s.hash).collect();
        let removed: HashSet<Hash256> = remove_shares.iter().copied().collect();
        let verified: HashSet<Hash256> = set_verified.iter().copied().collect();
        let overridden = |h: &Hash256| put.contains(h) || removed.contains(h);
        self.put_shares.retain(|s| !overridden(&s.hash));
        self.set_verified.retain(|h| !overridden(h));
        self.remove_shares.retain(|h| !overridden(h));
        for share in &mut self.put_shares {
            if verified.contains(&share.hash) {
                share.verified = true;
            }
        }
        let mut settled: HashSet<Hash256> = self.put_shares.iter().map(|s| s.hash).collect();
        settled.extend(self.remove_shares.iter().copied());
        settled.extend(self.set_verified.iter().copied());
        self.set_verified
            .extend(set_verified.into_iter().filter(|h| !settled.contains(h)));
        self.put_shares.extend(put_shares);
        self.remove_shares.extend(remove_shares);

        let put: HashSet<SocketAddr> = put_addrs.iter().map(|(a, _)| *a).collect();
        let removed: HashSet<SocketAddr> = remove_addrs.iter().copied().collect();
        self.put_addrs
            .retain(|(a, _)| !put.contains(a) && !removed.contains(a));
        self.remove_addrs
            .retain(|a| !put.contains(a) && !removed.contains(a));
        self.put_addrs.extend(put_addrs);
        self.remove_addrs.extend(remove_addrs);

        let keys: HashSet<&str> = put_meta.iter().map(|(k, _)| k.as_str()).collect();
        self.put_meta.retain(|(k, _)| !keys.contains(k.as_str()));
        self.put_meta.extend(put_meta);
    }

    /// The batch with the same effect, each share hash, address and meta key named at most
    /// once: a removed share or address is not put, a put share marked verified is put
    /// verified, the last put of a hash, address or key wins.
    fn normalized(mut self) -> Batch {
        self.normalize();
        self
    }

    fn normalize(&mut self) {
        let removed = dedup(&mut self.remove_shares, |h| *h);
        keep_last(&mut self.put_shares, |s| s.hash);
        self.put_shares.retain(|s| !removed.contains(&s.hash));
        let verified = dedup(&mut self.set_verified, |h| *h);
        for share in &mut self.put_shares {
            if verified.contains(&share.hash) {
                share.verified = true;
            }
        }
        let put: HashSet<Hash256> = self.put_shares.iter().map(|s| s.hash).collect();
        self.set_verified
            .retain(|h| !removed.contains(h) && !put.contains(h));

        let removed = dedup(&mut self.remove_addrs, |a| *a);
        keep_last(&mut self.put_addrs, |(a, _)| *a);
        self.put_addrs.retain(|(a, _)| !removed.contains(a));

        keep_last(&mut self.put_meta, |(k, _)| k.clone());
    }

    /// Drops what [`Store::apply`] refuses a batch for (a share over [`max_share_bytes`], a
    /// reserved or badly sized meta key); returns how many entries went.
    fn strip_invalid(&mut self) -> usize {
        let before = self.put_shares.len() + self.put_meta.len();
        self.put_shares
            .retain(|s| s.bytes.len() <= max_share_bytes());
        self.put_meta
            .retain(|(key, _)| meta_key_fault(key).is_none());
        before - self.put_shares.len() - self.put_meta.len()
    }
}

/// Removes repeated items (by `key`), keeping each first occurrence in place; returns the keys.
fn dedup<T, K: Eq + std::hash::Hash>(items: &mut Vec<T>, key: impl Fn(&T) -> K) -> HashSet<K> {
    let mut seen = HashSet::with_capacity(items.len());
    items.retain(|item| seen.insert(key(item)));
    seen
}

/// Removes all but the last item of each `key`, keeping the order of those last ones.
fn keep_last<T, K: Eq + std::hash::Hash>(items: &mut Vec<T>, key: impl Fn(&T) -> K) {
    let mut seen = HashSet::with_capacity(items.len());
    items.reverse();
    items.retain(|item| seen.insert(key(item)));
    items.reverse();
}

/// Why a batch may not write the meta key `key`, if it may not.
fn meta_key_fault(key: &str) -> Option<String> {
    if key == META_FORMAT_VERSION || key == META_NETWORK {
        return Some(format!("meta key {key:?} is reserved"));
    }
    if key.is_empty() || key.len() > MAX_META_KEY_LEN {
        return Some(format!(
            "meta key of {} bytes, not 1 to {MAX_META_KEY_LEN}",
            key.len()
        ));
    }
    None
}

/// Why the store could not be opened, read or written.
#[derive(Debug)]
pub enum StoreError {
    /// The store's directory could not be created or resolved.
    Io { path: PathBuf, source: io::Error },
    /// LMDB failed during `op`.
    Lmdb {
        path: PathBuf,
        op: &'static str,
        source: lmdb::Error,
    },
    /// The store reached its largest map size ([`MAX_MAP_SIZE`]); nothing of the batch was
    /// written.
    MapFull { path: PathBuf, map_size: usize },
    /// The filesystem holding the store has no room for the write (ENOSPC, a short write
    /// while nearly nothing is free, or a map that cannot grow for lack of disk); nothing of
    /// the batch was written. `free_bytes` is what the filesystem had free for unprivileged
    /// use when the write failed (0 when it cannot be asked).
    DiskFull { path: PathBuf, free_bytes: u64 },
    /// The store was written in a format this build does not read.
    FormatVersion {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    /// The store belongs to another network.
    Network {
        path: PathBuf,
        found: String,
        expected: String,
    },
    /// The directory already has a `Store` open in this process.
    AlreadyOpen { path: PathBuf },
    /// A record read from disk is malformed. `key` is the record's key in hex (a share's in
    /// display order).
    Corrupt {
        path: PathBuf,
        what: String,
        key: String,
    },
    /// A batch was refused before anything was written: a reserved or badly sized meta key,
    /// or a share larger than any share can be.
    BadBatch { path: PathBuf, what: String },
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Io { path, source } => {
                write!(f, "store at {}: {source}", path.display())
            }
            StoreError::Lmdb { path, op, source } => {
                write!(f, "store at {}: lmdb {op}: {source}", path.display())
            }
            StoreError::MapFull { path, map_size } => write!(
                f,
                "store at {}: full at the largest map size ({map_size} bytes); nothing of the \
                 batch was written",
                path.display()
            ),
            StoreError::DiskFull { path, free_bytes } => write!(
                f,
                "disk full at {}: {free_bytes} bytes free",
                path.display()
            ),
            StoreError::FormatVersion {
                path,
                found,
                supported,
            } => write!(
                f,
                "store at {}: format version {found}, this build reads {supported}",
                path.display()
            ),
            StoreError::Network {
                path,
                found,
                expected,
            } => write!(
                f,
                "store at {}: made for network {found:?}, this node runs {expected:?}",
                path.display()
            ),
            StoreError::AlreadyOpen { path } => {
                write!(
                    f,
                    "store at {}: already open in this process",
                    path.display()
                )
            }
            StoreError::Corrupt { path, what, key } => {
                write!(f, "store at {}: corrupt {what} (key {key})", path.display())
            }
            StoreError::BadBatch { path, what } => {
                write!(f, "store at {}: batch refused: {what}", path.display())
            }
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StoreError::Io { source, .. } => Some(source),
            StoreError::Lmdb { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// The open store. Dropping it closes the environment.
pub struct Store {
    // Field order matters: the environment closes before the directory is released.
    /// `None` only after a reopen failed (see [`Store::reopen`]); the next write tries again.
    env: Option<Environment>,
    shares: Database,
    addrs: Database,
    meta: Database,
    path: PathBuf,
    /// The environment's current map size.
    map_size: usize,
    _registration: Registration,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .field("map_size", &self.map_size)
            .finish()
    }
}

impl Store {
    /// Opens or creates the store in `dir` (created if missing) for the network
    /// `network_name`; refuses a store of another network or format version with a clear
    /// error, before writing anything to it.
    pub fn open(dir: &Path, network_name: &str) -> Result<Store, StoreError> {
        Store::open_with_map_size(dir, network_name, INITIAL_MAP_SIZE)
    }

    /// [`Store::open`] with the map starting at `initial_map_size` (at least 64 KiB) instead
    /// of [`INITIAL_MAP_SIZE`]; for tests of map growth. A data file larger than the initial
    /// map (a store grown in an earlier run) is opened with the size growth would have
    /// reached: the initial size doubled until it holds the file.
    pub fn open_with_map_size(
        dir: &Path,
        network_name: &str,
        initial_map_size: usize,
    ) -> Result<Store, StoreError> {
        let path = prepare_dir(dir)?;
        let registration = Registration::claim(&path)?;
        let map_size = opening_map_size(initial_map_size, data_file_len(&path));
        let env = Environment::new()
            .set_max_dbs(MAX_DBS)
            .set_map_size(map_size)
            .open(&path)
            .map_err(|e| lmdb_error(&path, "open", e, map_size))?;
        // LMDB raises a map below the data already written to that size.
        let map_size = env.info().map_or(map_size, |info| info.map_size());
        let opener = Opener {
            env: &env,
            path: &path,
            map_size,
        };
        let meta = match opener.versioned_meta()? {
            Some((meta, version)) => {
                opener.check_identity(meta, &version, network_name)?;
                meta
            }
            None => opener.initialize(network_name)?,
        };
        let shares = opener.required_db(DB_SHARES)?;
        let addrs = opener.required_db(DB_ADDRS)?;
        Ok(Store {
            env: Some(env),
            shares,
            addrs,
            meta,
            path,
            map_size,
            _registration: registration,
        })
    }

    /// The environment's current map size in bytes.
    pub fn map_size(&self) -> usize {
        self.map_size
    }

    /// The store's directory, as resolved at open.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `batch` in one write transaction and commits it durably. On error nothing of the
    /// batch is written.
    ///
    /// A transaction that fills the map is aborted, the map grows ([`Store::grow`]) and the
    /// batch is written again, up to [`MAX_GROWTHS`] times. A write that fails for lack of
    /// disk, or a map that cannot grow for lack of disk, is [`StoreError::DiskFull`].
    pub fn apply(&mut self, batch: &Batch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        self.check_batch(batch)?;
        let bytes = batch.share_bytes();
        let mut growths = 0;
        if self.env.is_none() {
            self.reopen()?;
        }
        let mut reopened = false;
        loop {
            match self.write(batch) {
                Ok(()) => return Ok(()),
                Err(StoreError::MapFull { .. }) if growths < MAX_GROWTHS => {
                    self.grow(bytes)?;
                    growths += 1;
                }
                Err(StoreError::Lmdb {
                    source: lmdb::Error::Panic,
                    ..
                }) if !reopened => {
                    self.reopen()?;
                    reopened = true;
                }
                Err(e) => return Err(self.disk_full_or(e, bytes)),
            }
        }
    }

    /// Closes the environment and opens it again. LMDB refuses every transaction with
    /// `MDB_PANIC` once a write of its meta page has failed (which a full disk can cause on a
    /// copy-on-write filesystem); only a new environment clears that. The meta page on disk
    /// is the last committed one, so nothing committed is lost. The old environment is closed
    /// first, as LMDB forbids two in one process; if the new one cannot be opened, the store
    /// stays closed and the next write tries again.
    fn reopen(&mut self) -> Result<(), StoreError> {
        self.env = None;
        let env = Environment::new()
            .set_max_dbs(MAX_DBS)
            .set_map_size(self.map_size)
            .open(&self.path)
            .map_err(|e| self.lmdb("reopen", e))?;
        let opener = Opener {
            env: &env,
            path: &self.path,
            map_size: self.map_size,
        };
        self.shares = opener.required_db(DB_SHARES)?;
        self.addrs = opener.required_db(DB_ADDRS)?;
        self.meta = opener.required_db(DB_META)?;
        self.map_size = env.info().map_or(self.map_size, |info| info.map_size());
        self.env = Some(env);
        warn!(
            target: "store",
            "store at {}: environment reopened after LMDB's fatal error",
            self.path.display()
        );
        Ok(())
    }

    /// The open environment; an error if a reopen failed and none is open.
    fn env(&self) -> Result<&Environment, StoreError> {
        self.env.as_ref().ok_or_else(|| StoreError::Lmdb {
            path: self.path.clone(),
            op: "reopen after a fatal error",
            source: lmdb::Error::Panic,
        })
    }

    /// Grows the map after a transaction filled it: to twice its size, or by twice `bytes`
    /// (the batch's share bytes) if that is more, but never past [`MAX_MAP_SIZE`] nor past the
    /// data file's length plus the filesystem's free space, so that the map fills only when
    /// the disk would. `DiskFull` when the disk leaves no room to grow, `MapFull` at the
    /// largest size.
    fn grow(&mut self, bytes: usize) -> Result<(), StoreError> {
        let current = self.map_size;
        if current >= MAX_MAP_SIZE {
            return Err(StoreError::MapFull {
                path: self.path.clone(),
                map_size: current,
            });
        }
        let wanted = current
            .saturating_mul(2)
            .max(current.saturating_add(bytes.saturating_mul(2)));
        let mut new = round_map_size(wanted).min(MAX_MAP_SIZE);
        if let Some(free) = free_bytes(&self.path) {
            let room = data_file_len(&self.path).saturating_add(free);
            let room = usize::try_from(room).unwrap_or(usize::MAX) / MAP_GRANULE * MAP_GRANULE;
            if room <= current {
                return Err(StoreError::DiskFull {
                    path: self.path.clone(),
                    free_bytes: free,
                });
            }
            new = new.min(room);
        }
        // LMDB forbids a resize while this process has a transaction open in the environment.
        // None is: every transaction of the store lives and ends inside one of its methods
        // (none is handed out), and `&mut self` means no other method is running.
        self.env()?
            .set_map_size(new)
            .map_err(|e| self.lmdb("grow map", e))?;
        let grown = self.env()?.info().map_or(new, |info| info.map_size());
        info!(
            target: "store",
            "store at {}: map grown from {current} to {grown} bytes",
            self.path.display()
        );
        self.map_size = grown;
        Ok(())
    }

    /// `e`, or `DiskFull` when `e` is an I/O error (LMDB's report of a short write) and the
    /// filesystem has less than [`DISK_FULL_SLACK`], or twice the batch's `bytes`, free.
    fn disk_full_or(&self, e: StoreError, bytes: usize) -> StoreError {
        let io_error = match &e {
            StoreError::Lmdb {
                source: lmdb::Error::Other(code),
                ..
            } => *code == EIO,
            StoreError::Io { source, .. } => source.raw_os_error() == Some(EIO),
            _ => false,
        };
        if !io_error {
            return e;
        }
        let threshold = DISK_FULL_SLACK.max((bytes as u64).saturating_mul(2));
        match free_bytes(&self.path) {
            Some(free) if free < threshold => StoreError::DiskFull {
                path: self.path.clone(),
                free_bytes: free,
            },
            _ => e,
        }
    }

    /// One attempt at writing `batch`: one write transaction, aborted on any error.
    fn write(&self, batch: &Batch) -> Result<(), StoreError> {
        let mut txn = self
            .env()?
            .begin_rw_txn()
            .map_err(|e| self.lmdb("begin write", e))?;
        let mut value = Vec::new();
        for share in &batch.put_shares {
            encode_share_value(share, &mut value);
            txn.put(self.shares, &share.hash.0, &value, WriteFlags::empty())
                .map_err(|e| self.lmdb("put share", e))?;
        }
        for hash in &batch.set_verified {
            self.mark_verified(&mut txn, hash)?;
        }
        for hash in &batch.remove_shares {
            self.delete(&mut txn, self.shares, &hash.0, "remove share")?;
        }
        for (addr, entry) in &batch.put_addrs {
            txn.put(
                self.addrs,
                &addr_key(addr),
                &addr_value(entry),
                WriteFlags::empty(),
            )
            .map_err(|e| self.lmdb("put address", e))?;
        }
        for addr in &batch.remove_addrs {
            self.delete(&mut txn, self.addrs, &addr_key(addr), "remove address")?;
        }
        for (key, value) in &batch.put_meta {
            txn.put(self.meta, key, value, WriteFlags::empty())
                .map_err(|e| self.lmdb("put meta", e))?;
        }
        txn.commit().map_err(|e| self.lmdb("commit", e))
    }

    /// Every stored share, in ascending order of the hash's internal bytes (LMDB key order),
    /// which is neither chain order nor the order of the displayed hash.
    pub fn load_shares(&self) -> Result<Vec<StoredShare>, StoreError> {
        let txn = self
            .env()?
            .begin_ro_txn()
            .map_err(|e| self.lmdb("begin read", e))?;
        let entries = txn
            .stat(self.shares)
            .map_err(|e| self.lmdb("stat shares", e))?
            .entries();
        let mut shares = Vec::with_capacity(entries.min(PREALLOC_SHARES));
        let mut cursor = txn
            .open_ro_cursor(self.shares)
            .map_err(|e| self.lmdb("open share cursor", e))?;
        for item in cursor.iter_start() {
            let (key, value) = item.map_err(|e| self.lmdb("read share", e))?;
            shares.push(self.decode_share(key, value)?);
        }
        Ok(shares)
    }

    /// Every address in the book, in ascending key order (IPv6 form, then port).
    pub fn load_addrs(&self) -> Result<Vec<(SocketAddr, AddrEntry)>, StoreError> {
        let txn = self
            .env()?
            .begin_ro_txn()
            .map_err(|e| self.lmdb("begin read", e))?;
        let mut cursor = txn
            .open_ro_cursor(self.addrs)
            .map_err(|e| self.lmdb("open address cursor", e))?;
        let mut addrs = Vec::new();
        for item in cursor.iter_start() {
            let (key, value) = item.map_err(|e| self.lmdb("read address", e))?;
            addrs.push(self.decode_addr(key, value)?);
        }
        Ok(addrs)
    }

    /// The metadata value under `key`, if any.
    pub fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self
            .env()?
            .begin_ro_txn()
            .map_err(|e| self.lmdb("begin read", e))?;
        match txn.get(self.meta, &key) {
            Ok(value) => Ok(Some(value.to_vec())),
            Err(lmdb::Error::NotFound) => Ok(None),
            Err(e) => Err(self.lmdb("read meta", e)),
        }
    }

    /// How many shares the store holds.
    pub fn share_count(&self) -> Result<usize, StoreError> {
        let txn = self
            .env()?
            .begin_ro_txn()
            .map_err(|e| self.lmdb("begin read", e))?;
        let stat = txn
            .stat(self.shares)
            .map_err(|e| self.lmdb("stat shares", e))?;
        Ok(stat.entries())
    }

    /// Refuses a batch that could not be written whole, before any write.
    fn check_batch(&self, batch: &Batch) -> Result<(), StoreError> {
        let refuse = |what: String| StoreError::BadBatch {
            path: self.path.clone(),
            what,
        };
        for share in &batch.put_shares {
            if share.bytes.len() > max_share_bytes() {
                return Err(refuse(format!(
                    "share {} is {} bytes, over the limit of {}",
                    share.hash,
                    share.bytes.len(),
                    max_share_bytes()
                )));
            }
        }
        for (key, _) in &batch.put_meta {
            if let Some(fault) = meta_key_fault(key) {
                return Err(refuse(fault));
            }
        }
        Ok(())
    }

    /// Sets the verified byte of the share `hash`, if it is stored.
    fn mark_verified(&self, txn: &mut RwTransaction<'_>, hash: &Hash256) -> Result<(), StoreError> {
        let mut value = match txn.get(self.shares, &hash.0) {
            Ok(value) => value.to_vec(),
            Err(lmdb::Error::NotFound) => return Ok(()),
            Err(e) => return Err(self.lmdb("read share", e)),
        };
        if self.parse_share(&hash.0, &value)?.verified {
            return Ok(());
        }
        value[VERIFIED_OFFSET] = 1;
        txn.put(self.shares, &hash.0, &value, WriteFlags::empty())
            .map_err(|e| self.lmdb("put share", e))
    }

    /// Deletes `key` from `db`; an absent key is not an error.
    fn delete(
        &self,
        txn: &mut RwTransaction<'_>,
        db: Database,
        key: &[u8],
        op: &'static str,
    ) -> Result<(), StoreError> {
        match txn.del(db, &key, None) {
            Ok(()) | Err(lmdb::Error::NotFound) => Ok(()),
            Err(e) => Err(self.lmdb(op, e)),
        }
    }

    /// Decodes a share record into an owned share.
    fn decode_share(&self, key: &[u8], value: &[u8]) -> Result<StoredShare, StoreError> {
        let record = self.parse_share(key, value)?;
        Ok(StoredShare {
            hash: record.hash,
            kind: record.kind,
            bytes: record.bytes.to_vec(),
            verified: record.verified,
            time_seen: record.time_seen,
        })
    }

    /// Checks every field and length of a share record, borrowing its bytes.
    fn parse_share<'v>(&self, key: &[u8], value: &'v [u8]) -> Result<ShareRecord<'v>, StoreError> {
        let corrupt = |what: String| self.corrupt(what, share_key_text(key));
        let hash: [u8; 32] = key
            .try_into()
            .map_err(|_| corrupt(format!("share key of {} bytes, not 32", key.len())))?;
        let Some((header, bytes)) = value.split_first_chunk::<SHARE_HEADER_LEN>() else {
            return Err(corrupt(format!(
                "share record of {} bytes, shorter than its {SHARE_HEADER_LEN}-byte header",
                value.len()
            )));
        };
        let [kind, verified, time @ ..] = *header;
        let kind = StoredKind::from_byte(kind)
            .ok_or_else(|| corrupt(format!("share record of unknown kind {kind}")))?;
        let verified = match verified {
            0 => false,
            1 => true,
            other => return Err(corrupt(format!("share record with verified byte {other}"))),
        };
        if bytes.len() > max_share_bytes() {
            return Err(corrupt(format!(
                "share record of {} bytes, over the limit of {}",
                bytes.len(),
                max_share_bytes()
            )));
        }
        Ok(ShareRecord {
            hash: Hash256(hash),
            kind,
            verified,
            time_seen: u64::from_le_bytes(time),
            bytes,
        })
    }

    /// Decodes an address record, checking both lengths.
    fn decode_addr(&self, key: &[u8], value: &[u8]) -> Result<(SocketAddr, AddrEntry), StoreError> {
        let key_array: &[u8; ADDR_KEY_LEN] = key.try_into().map_err(|_| {
            self.corrupt(
                format!("address key of {} bytes, not {ADDR_KEY_LEN}", key.len()),
                hex::encode(key),
            )
        })?;
        let value: &[u8; ADDR_VALUE_LEN] = value.try_into().map_err(|_| {
            self.corrupt(
                format!(
                    "address record of {} bytes, not {ADDR_VALUE_LEN}",
                    value.len()
                ),
                hex::encode(key),
            )
        })?;
        let field = |i: usize| {
            let mut word = [0u8; 8];
            word.copy_from_slice(&value[i * 8..i * 8 + 8]);
            u64::from_le_bytes(word)
        };
        let entry = AddrEntry {
            services: field(0),
            first_seen: field(1),
            last_seen: field(2),
        };
        Ok((addr_from_key(key_array), entry))
    }

    fn corrupt(&self, what: String, key: String) -> StoreError {
        StoreError::Corrupt {
            path: self.path.clone(),
            what,
            key,
        }
    }

    fn lmdb(&self, op: &'static str, e: lmdb::Error) -> StoreError {
        lmdb_error(&self.path, op, e, self.map_size)
    }
}

/// A share record checked and borrowed from a transaction.
struct ShareRecord<'v> {
    hash: Hash256,
    kind: StoredKind,
    verified: bool,
    time_seen: u64,
    bytes: &'v [u8],
}

/// The steps of `Store::open` that run before the `Store` exists.
struct Opener<'a> {
    env: &'a Environment,
    path: &'a Path,
    map_size: usize,
}

impl Opener<'_> {
    /// The named database, or `None` if the environment has none of that name.
    fn existing_db(&self, name: &'static str) -> Result<Option<Database>, StoreError> {
        match self.env.open_db(Some(name)) {
            Ok(db) => Ok(Some(db)),
            Err(lmdb::Error::NotFound) => Ok(None),
            Err(e) => Err(lmdb_error(self.path, "open database", e, self.map_size)),
        }
    }

    /// A database every initialized store has.
    fn required_db(&self, name: &'static str) -> Result<Database, StoreError> {
        self.existing_db(name)?.ok_or_else(|| StoreError::Corrupt {
            path: self.path.to_path_buf(),
            what: format!("environment: database {name:?} is missing"),
            key: hex::encode(name),
        })
    }

    /// The `meta` database and its raw format version, if the store has been initialized.
    fn versioned_meta(&self) -> Result<Option<(Database, Vec<u8>)>, StoreError> {
        let Some(meta) = self.existing_db(DB_META)? else {
            return Ok(None);
        };
        Ok(self
            .read_meta(meta, META_FORMAT_VERSION)?
            .map(|version| (meta, version)))
    }

    /// Refuses a store of another format version or network.
    fn check_identity(
        &self,
        meta: Database,
        version: &[u8],
        network_name: &str,
    ) -> Result<(), StoreError> {
        let version: [u8; 4] = version.try_into().map_err(|_| StoreError::Corrupt {
            path: self.path.to_path_buf(),
            what: format!("meta: format version of {} bytes, not 4", version.len()),
            key: hex::encode(META_FORMAT_VERSION),
        })?;
        let found = u32::from_le_bytes(version);
        if found != FORMAT_VERSION {
            return Err(StoreError::FormatVersion {
                path: self.path.to_path_buf(),
                found,
                supported: FORMAT_VERSION,
            });
        }
        let network = self
            .read_meta(meta, META_NETWORK)?
            .ok_or_else(|| StoreError::Corrupt {
                path: self.path.to_path_buf(),
                what: "meta: no network name".to_string(),
                key: hex::encode(META_NETWORK),
            })?;
        if network != network_name.as_bytes() {
            return Err(StoreError::Network {
                path: self.path.to_path_buf(),
                found: String::from_utf8_lossy(&network).into_owned(),
                expected: network_name.to_string(),
            });
        }
        Ok(())
    }

    /// Makes a new store: creates the databases, then writes the format version and network
    /// in one transaction. A crash before that commit leaves empty databases and no version,
    /// which the next open initializes again. Refuses an environment that holds data but no
    /// format version.
    fn initialize(&self, network_name: &str) -> Result<Database, StoreError> {
        for name in [DB_META, DB_SHARES, DB_ADDRS] {
            if self.entries(name)? > 0 {
                return Err(StoreError::Corrupt {
                    path: self.path.to_path_buf(),
                    what: format!("meta: no format version, yet database {name:?} holds data"),
                    key: hex::encode(META_FORMAT_VERSION),
                });
            }
        }
        let meta = self.create_db(DB_META)?;
        self.create_db(DB_SHARES)?;
        self.create_db(DB_ADDRS)?;
        let mut txn = self
            .env
            .begin_rw_txn()
            .map_err(|e| lmdb_error(self.path, "begin write", e, self.map_size))?;
        let version = FORMAT_VERSION.to_le_bytes();
        txn.put(meta, &META_FORMAT_VERSION, &version, WriteFlags::empty())
            .map_err(|e| lmdb_error(self.path, "put meta", e, self.map_size))?;
        txn.put(meta, &META_NETWORK, &network_name, WriteFlags::empty())
            .map_err(|e| lmdb_error(self.path, "put meta", e, self.map_size))?;
        txn.commit()
            .map_err(|e| lmdb_error(self.path, "commit", e, self.map_size))?;
        Ok(meta)
    }

    /// Creates the named database, or opens it if it exists; commits at once.
    fn create_db(&self, name: &'static str) -> Result<Database, StoreError> {
        self.env
            .create_db(Some(name), DatabaseFlags::empty())
            .map_err(|e| lmdb_error(self.path, "create database", e, self.map_size))
    }

    /// Entries in the named database; 0 if it does not exist.
    fn entries(&self, name: &'static str) -> Result<usize, StoreError> {
        let Some(db) = self.existing_db(name)? else {
            return Ok(0);
        };
        let txn = self
            .env
            .begin_ro_txn()
            .map_err(|e| lmdb_error(self.path, "begin read", e, self.map_size))?;
        let stat = txn
            .stat(db)
            .map_err(|e| lmdb_error(self.path, "stat", e, self.map_size))?;
        Ok(stat.entries())
    }

    fn read_meta(&self, meta: Database, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self
            .env
            .begin_ro_txn()
            .map_err(|e| lmdb_error(self.path, "begin read", e, self.map_size))?;
        match txn.get(meta, &key) {
            Ok(value) => Ok(Some(value.to_vec())),
            Err(lmdb::Error::NotFound) => Ok(None),
            Err(e) => Err(lmdb_error(self.path, "read meta", e, self.map_size)),
        }
    }
}

/// Marks a directory as open in this process until dropped.
struct Registration {
    path: PathBuf,
}

impl Registration {
    fn claim(path: &Path) -> Result<Registration, StoreError> {
        let mut open = crate::thread::lock(&OPEN_DIRS);
        if open.iter().any(|p| p == path) {
            return Err(StoreError::AlreadyOpen {
                path: path.to_path_buf(),
            });
        }
        open.push(path.to_path_buf());
        Ok(Registration {
            path: path.to_path_buf(),
        })
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut open = crate::thread::lock(&OPEN_DIRS);
        open.retain(|p| p != &self.path);
    }
}

/// Creates `dir` if missing and resolves it, so that two spellings of one directory match.
fn prepare_dir(dir: &Path) -> Result<PathBuf, StoreError> {
    let io_error = |source: io::Error| match source.raw_os_error() {
        Some(ENOSPC) => StoreError::DiskFull {
            path: dir.to_path_buf(),
            free_bytes: free_bytes(dir).unwrap_or(0),
        },
        _ => StoreError::Io {
            path: dir.to_path_buf(),
            source,
        },
    };
    fs::create_dir_all(dir).map_err(io_error)?;
    fs::canonicalize(dir).map_err(io_error)
}

/// `e` as a store error: `MapFull` with the map's size, `DiskFull` for ENOSPC.
fn lmdb_error(path: &Path, op: &'static str, e: lmdb::Error, map_size: usize) -> StoreError {
    match e {
        lmdb::Error::MapFull => StoreError::MapFull {
            path: path.to_path_buf(),
            map_size,
        },
        lmdb::Error::Other(ENOSPC) => StoreError::DiskFull {
            path: path.to_path_buf(),
            free_bytes: free_bytes(path).unwrap_or(0),
        },
        source => StoreError::Lmdb {
            path: path.to_path_buf(),
            op,
            source,
        },
    }
}

/// The length of the environment's data file in `dir`; 0 if there is none yet.
fn data_file_len(dir: &Path) -> u64 {
    fs::metadata(dir.join("data.mdb")).map_or(0, |m| m.len())
}

/// `size` rounded up to a whole number of [`MAP_GRANULE`]s.
fn round_map_size(size: usize) -> usize {
    size.div_ceil(MAP_GRANULE).saturating_mul(MAP_GRANULE)
}

/// The map to open with: `initial` (at least [`MIN_MAP_SIZE`]), doubled until it holds a
/// data file of `file_len` bytes (the size growth reached in an earlier run), capped at
/// [`MAX_MAP_SIZE`] but never below the file.
fn opening_map_size(initial: usize, file_len: u64) -> usize {
    let file_len = usize::try_from(file_len).unwrap_or(usize::MAX);
    let mut size = round_map_size(initial.max(MIN_MAP_SIZE)).min(MAX_MAP_SIZE);
    while size < file_len && size < MAX_MAP_SIZE {
        size = size.saturating_mul(2).min(MAX_MAP_SIZE);
    }
    size.max(round_map_size(file_len))
}

/// Bytes free for unprivileged use on the filesystem holding `path` (`statvfs`'s `f_bavail`
/// blocks of `f_frsize` bytes); `None` if it cannot be asked.
#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
pub fn free_bytes(path: &Path) -> Option<u64> {
    use std::ffi::{CString, c_char, c_int, c_ulong};
    use std::os::unix::ffi::OsStrExt;

    /// `struct statvfs` as glibc and musl lay it out on 64-bit Linux, with room to spare at
    /// the end.
    #[repr(C)]
    struct StatVfs {
        _bsize: c_ulong,
        frsize: c_ulong,
        _blocks: u64,
        _bfree: u64,
        bavail: u64,
        _rest: [u64; 16],
    }

    unsafe extern "C" {
        fn statvfs(path: *const c_char, buf: *mut StatVfs) -> c_int;
    }

    let c_path = CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut buf = StatVfs {
        _bsize: 0,
        frsize: 0,
        _blocks: 0,
        _bfree: 0,
        bavail: 0,
        _rest: [0; 16],
    };
    // SAFETY: `statvfs` of the C library std already links reads the NUL-terminated path,
    // which outlives the call, and writes at most its 112-byte struct into `buf`, which is
    // larger (200 bytes) and laid out as that struct for every field read here.
    let rc = unsafe { statvfs(c_path.as_ptr(), &mut buf) };
    if rc != 0 {
        return None;
    }
    Some(buf.bavail.saturating_mul(buf.frsize))
}

/// Bytes free on the filesystem holding `path`: not asked on this platform.
#[cfg(not(all(target_os = "linux", target_pointer_width = "64")))]
pub fn free_bytes(_path: &Path) -> Option<u64> {
    None
}

/// kind u8 ‖ verified u8 ‖ time_seen u64 LE ‖ bytes, into `out` (cleared first).
fn encode_share_value(share: &StoredShare, out: &mut Vec<u8>) {
    out.clear();
    out.reserve(SHARE_HEADER_LEN + share.bytes.len());
    out.push(share.kind as u8);
    out.push(u8::from(share.verified));
    out.extend_from_slice(&share.time_seen.to_le_bytes());
    out.extend_from_slice(&share.bytes);
}

/// A share key for messages: the hash in display order when it is 32 bytes.
fn share_key_text(key: &[u8]) -> String {
    match <[u8; 32]>::try_from(key) {
        Ok(hash) => Hash256(hash).to_hex(),
        Err(_) => hex::encode(key),
    }
}

/// The 16-byte IPv6 form (IPv4 mapped) ‖ port u16 BE, as the original's addrs.dat.
fn addr_key(addr: &SocketAddr) -> [u8; ADDR_KEY_LEN] {
    let ip = match addr.ip() {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    };
    let mut key = [0u8; ADDR_KEY_LEN];
    key[..16].copy_from_slice(&ip.octets());
    key[16..].copy_from_slice(&addr.port().to_be_bytes());
    key
}

/// The address of a key; an IPv4-mapped address comes back as IPv4.
fn addr_from_key(key: &[u8; ADDR_KEY_LEN]) -> SocketAddr {
    let mut octets = [0u8; 16];
    octets.copy_from_slice(&key[..16]);
    let v6 = Ipv6Addr::from(octets);
    let ip = match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    };
    SocketAddr::new(ip, u16::from_be_bytes([key[16], key[17]]))
}

/// services ‖ first_seen ‖ last_seen, each u64 LE.
fn addr_value(entry: &AddrEntry) -> [u8; ADDR_VALUE_LEN] {
    let mut value = [0u8; ADDR_VALUE_LEN];
    value[..8].copy_from_slice(&entry.services.to_le_bytes());
    value[8..16].copy_from_slice(&entry.first_seen.to_le_bytes());
    value[16..].copy_from_slice(&entry.last_seen.to_le_bytes());
    value
}

/// Share bytes [`PendingWrites`] keeps queued while the store cannot be written: 64 MiB, some
/// 100,000 legacy shares or the chain's two payout windows of block-free shares several times
/// over. A failing store normally stays far below it: the chain keeps every share it has in
/// memory anyway, and a share pruned from the chain cancels its own pending put (see
/// [`Batch::merge`]).
pub const PENDING_SHARE_BYTES_CAP: usize = 64 << 20;

/// While the disk stays full, the pending writes are tried again at least this often (and at
/// every tick once the filesystem has more room than at the last attempt).
pub const FULL_DISK_RETRY_SECS: u64 = 60;

/// A line for the node's log about its store writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteNote {
    pub level: log::Level,
    pub message: String,
}

/// The node's store writes that have not been written yet.
///
/// Each tick's batch is merged into the pending one ([`Batch::merge`]) and the whole is
/// written in one transaction; a failed write keeps it for the next tick, so a full disk loses
/// nothing while the process runs (on a full disk the next attempt waits until the filesystem
/// has more room, or [`FULL_DISK_RETRY_SECS`]). A failure is logged once per distinct error (a full disk
/// counts as one error whatever its free bytes), with the time the failures started, and the
/// first successful write after them logs how many pending writes it recovered.
///
/// Past [`PENDING_SHARE_BYTES_CAP`] share bytes, new shares are not queued until a write
/// succeeds (the warning says so once): they stay only in the chain's memory and are not stored
/// in this run. The newest are the ones left out, not the oldest, so the store keeps an
/// unbroken older run of the chain and, after a restart, the node fetches the rest from peers
/// as it fetches any share it lacks. Addresses, marks, removals and meta are always queued:
/// each names a key at most once in the pending batch, so they are bounded by the address book
/// and the chain.
///
/// A batch the store refuses outright cannot succeed by retrying: its invalid entries are
/// dropped and the rest written at once; a corrupt record met while writing drops the pending
/// batch, as the error names the record to repair.
#[derive(Debug)]
pub struct PendingWrites {
    batch: Batch,
    /// Tick batches merged into `batch` since the last successful write.
    batches: usize,
    failing: Option<Failing>,
    /// Shares (and their bytes) left out since the cap was reached; until a write succeeds
    /// every new share is.
    held_back: Option<(usize, usize)>,
    cap: usize,
}

#[derive(Debug)]
struct Failing {
    /// Unix seconds of the first failure.
    since: u64,
    /// What the last logged failure was (see `failure_kind`).
    kind: String,
    /// Unix seconds of the last attempt.
    tried: u64,
    /// The free bytes a full disk had at the last attempt; `None` for other failures.
    disk_free: Option<u64>,
}

impl Default for PendingWrites {
    fn default() -> Self {
        PendingWrites::with_cap(PENDING_SHARE_BYTES_CAP)
    }
}

impl PendingWrites {
    /// Pending writes that queue at most `cap` share bytes while failing.
    pub fn with_cap(cap: usize) -> PendingWrites {
        PendingWrites {
            batch: Batch::default(),
            batches: 0,
            failing: None,
            held_back: None,
            cap,
        }
    }

    /// The writes not yet in the store, merged into one batch.
    pub fn pending(&self) -> &Batch {
        &self.batch
    }

    /// Tick batches waiting in [`PendingWrites::pending`].
    pub fn pending_batches(&self) -> usize {
        self.batches
    }

    /// Merges `batch` into the pending writes and writes them all to `store` in one
    /// transaction; `now` is Unix seconds. Returns what to log.
    pub fn write(&mut self, store: &mut Store, batch: Batch, now: u64) -> Vec<WriteNote> {
        let mut notes = Vec::new();
        if !batch.is_empty() {
            if self.batches == 0 {
                self.batch = batch;
            } else {
                self.admit(batch, &mut notes);
            }
            self.batches += 1;
        }
        if self.batches == 0 || self.nothing_changed(store, now) {
            return notes;
        }
        let mut result = store.apply(&self.batch);
        if let Err(e @ StoreError::BadBatch { .. }) = &result {
            let dropped = self.batch.strip_invalid();
            notes.push(note(
                log::Level::Error,
                format!("store write refused: {e}; {dropped} invalid entries dropped"),
            ));
            result = store.apply(&self.batch);
        }
        match result {
            Ok(()) => self.written(now, &mut notes),
            Err(e @ StoreError::Corrupt { .. }) => {
                notes.push(note(
                    log::Level::Error,
                    format!(
                        "store write failed: {e}; {} pending writes ({} shares) dropped, as \
                         retrying cannot help",
                        self.batches,
                        self.batch.put_shares.len()
                    ),
                ));
                self.reset();
            }
            Err(e) => self.failed(e, now, &mut notes),
        }
        notes
    }

    /// Merges `later` into the pending batch, leaving out new shares past the cap.
    fn admit(&mut self, mut later: Batch, notes: &mut Vec<WriteNote>) {
        let queued: HashSet<Hash256> = self.batch.put_shares.iter().map(|s| s.hash).collect();
        let mut bytes = self.batch.share_bytes();
        let mut admitted = Vec::with_capacity(later.put_shares.len());
        for share in later.put_shares {
            let len = share.bytes.len();
            if queued.contains(&share.hash)
                || (self.held_back.is_none() && bytes.saturating_add(len) <= self.cap)
            {
                bytes += len;
                admitted.push(share);
                continue;
            }
            let held = self.held_back.get_or_insert_with(|| {
                notes.push(note(
                    log::Level::Warn,
                    format!(
                        "store: pending writes reached the cap of {} share bytes; until the \
                         store can be written again, new shares are kept only in memory and \
                         will not be stored in this run (peers send them again after a restart)",
                        self.cap
                    ),
                ));
                (0, 0)
            });
            held.0 += 1;
            held.1 += len;
        }
        later.put_shares = admitted;
        self.batch.merge(later);
    }

    fn written(&mut self, now: u64, notes: &mut Vec<WriteNote>) {
        if let Some(failing) = &self.failing {
            let mut message = format!(
                "store writes recovered: {} pending writes ({} shares, {} share bytes) written \
                 after failing since {} ({} s)",
                self.batches,
                self.batch.put_shares.len(),
                self.batch.share_bytes(),
                utc_text(failing.since),
                now.saturating_sub(failing.since)
            );
            if let Some((shares, bytes)) = self.held_back {
                message.push_str(&format!(
                    "; {shares} shares ({bytes} bytes) beyond the cap were not stored in this run"
                ));
            }
            notes.push(note(log::Level::Info, message));
        }
        self.reset();
    }

    /// True when the last attempt found the disk full, it has no more room now and that
    /// attempt is less than [`FULL_DISK_RETRY_SECS`] old: the write would fail again, after
    /// building the whole pending transaction on the node thread.
    fn nothing_changed(&self, store: &Store, now: u64) -> bool {
        let Some(Failing {
            tried,
            disk_free: Some(free),
            ..
        }) = self.failing
        else {
            return false;
        };
        now < tried.saturating_add(FULL_DISK_RETRY_SECS)
            && free_bytes(store.path()).is_some_and(|now_free| now_free <= free)
    }

    fn failed(&mut self, e: StoreError, now: u64, notes: &mut Vec<WriteNote>) {
        let kind = failure_kind(&e);
        let failing = self.failing.get_or_insert_with(|| Failing {
            since: now,
            kind: String::new(),
            tried: now,
            disk_free: None,
        });
        failing.tried = now;
        failing.disk_free = match &e {
            StoreError::DiskFull { free_bytes, .. } => Some(*free_bytes),
            _ => None,
        };
        if failing.kind == kind {
            return;
        }
        failing.kind = kind;
        notes.push(note(
            log::Level::Error,
            format!(
                "store write failed: {e}; failing since {}; {} pending writes ({} shares, {} \
                 share bytes) kept in memory and retried every tick (on a full disk, as soon \
                 as it has more room)",
                utc_text(failing.since),
                self.batches,
                self.batch.put_shares.len(),
                self.batch.share_bytes()
            ),
        ));
    }

    fn reset(&mut self) {
        self.batch = Batch::default();
        self.batches = 0;
        self.failing = None;
        self.held_back = None;
    }
}

impl Drop for PendingWrites {
    /// Says what is lost when the node stops with writes still pending.
    fn drop(&mut self) {
        if self.batches > 0 {
            log::error!(
                target: "store",
                "store: {} pending writes ({} shares) were never stored and are lost at exit; \
                 peers send the shares again after a restart",
                self.batches,
                self.batch.put_shares.len()
            );
        }
    }
}

fn note(level: log::Level, message: String) -> WriteNote {
    WriteNote { level, message }
}

/// Failures of one kind are logged once: a full disk is one kind whatever its free bytes.
fn failure_kind(e: &StoreError) -> String {
    match e {
        StoreError::DiskFull { path, .. } => format!("disk full at {}", path.display()),
        other => other.to_string(),
    }
}

/// Unix seconds as `YYYY-MM-DD HH:MM:SS UTC` (proleptic Gregorian calendar).
pub fn utc_text(secs: u64) -> String {
    let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX / 2);
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3_600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addr_keys_round_trip_and_map_ipv4() {
        for text in ["1.2.3.4:9333", "[2001:db8::1]:19333", "[::1]:1"] {
            let addr: SocketAddr = text.parse().unwrap();
            assert_eq!(addr_from_key(&addr_key(&addr)), addr);
        }
        let key = addr_key(&"1.2.3.4:9333".parse().unwrap());
        assert_eq!(hex::encode(key), "00000000000000000000ffff010203042475");
    }

    #[test]
    fn share_value_layout() {
        let share = StoredShare {
            hash: Hash256([7; 32]),
            kind: StoredKind::Share1b,
            bytes: vec![0xaa, 0xbb],
            verified: true,
            time_seen: 0x0102,
        };
        let mut value = Vec::new();
        encode_share_value(&share, &mut value);
        assert_eq!(hex::encode(&value), "01010201000000000000aabb");
    }

    fn stored(seed: u8, version: u8) -> StoredShare {
        StoredShare {
            hash: Hash256([seed; 32]),
            kind: StoredKind::Share1a,
            bytes: vec![version; 3],
            verified: false,
            time_seen: 0,
        }
    }

    /// What `Store::apply` does, on maps: puts, marks, removals, addresses, meta, in order.
    #[derive(Debug, Default, PartialEq, Eq, Clone)]
    struct Model {
        shares: std::collections::BTreeMap<[u8; 32], (Vec<u8>, bool)>,
        addrs: std::collections::BTreeMap<SocketAddr, AddrEntry>,
        meta: std::collections::BTreeMap<String, Vec<u8>>,
    }

    impl Model {
        fn apply(&mut self, batch: &Batch) {
            for s in &batch.put_shares {
                self.shares.insert(s.hash.0, (s.bytes.clone(), s.verified));
            }
            for h in &batch.set_verified {
                if let Some(record) = self.shares.get_mut(&h.0) {
                    record.1 = true;
                }
            }
            for h in &batch.remove_shares {
                self.shares.remove(&h.0);
            }
            for (a, e) in &batch.put_addrs {
                self.addrs.insert(*a, *e);
            }
            for a in &batch.remove_addrs {
                self.addrs.remove(a);
            }
            for (k, v) in &batch.put_meta {
                self.meta.insert(k.clone(), v.clone());
            }
        }
    }

    /// A small deterministic generator (xorshift64).
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }

        fn batch(&mut self) -> Batch {
            let mut batch = Batch::default();
            let addr = |i: u64| SocketAddr::from(([10, 0, 0, i as u8], 9333));
            for _ in 0..self.below(5) {
                let (seed, version) = (self.below(4) as u8, self.below(3) as u8);
                let mut share = stored(seed, version);
                share.verified = self.below(2) == 0;
                batch.put_shares.push(share);
            }
            for _ in 0..self.below(4) {
                batch.set_verified.push(Hash256([self.below(4) as u8; 32]));
            }
            for _ in 0..self.below(4) {
                batch.remove_shares.push(Hash256([self.below(4) as u8; 32]));
            }
            for _ in 0..self.below(4) {
                let entry = AddrEntry {
                    services: self.below(9),
                    ..AddrEntry::default()
                };
                batch.put_addrs.push((addr(self.below(3)), entry));
            }
            for _ in 0..self.below(3) {
                batch.remove_addrs.push(addr(self.below(3)));
            }
            for _ in 0..self.below(3) {
                let key = format!("k{}", self.below(2));
                batch.put_meta.push((key, vec![self.below(9) as u8]));
            }
            batch
        }
    }

    /// Each share hash, address and meta key at most once in the whole batch.
    fn assert_normal(batch: &Batch) {
        let mut hashes = HashSet::new();
        for h in batch
            .put_shares
            .iter()
            .map(|s| s.hash)
            .chain(batch.set_verified.iter().copied())
            .chain(batch.remove_shares.iter().copied())
        {
            assert!(hashes.insert(h), "hash {h} named twice in {batch:?}");
        }
        let mut addrs = HashSet::new();
        for a in batch
            .put_addrs
            .iter()
            .map(|(a, _)| *a)
            .chain(batch.remove_addrs.iter().copied())
        {
            assert!(addrs.insert(a), "address {a} named twice in {batch:?}");
        }
        let mut keys = HashSet::new();
        for (k, _) in &batch.put_meta {
            assert!(keys.insert(k), "meta key {k} named twice in {batch:?}");
        }
    }

    #[test]
    fn merged_batches_have_the_effect_of_both_in_order() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for round in 0..20_000 {
            let mut start = Model::default();
            start.apply(&rng.batch());
            let (earlier, later) = (rng.batch(), rng.batch());
            let mut sequential = start.clone();
            sequential.apply(&earlier);
            sequential.apply(&later);
            let mut merged = earlier.clone();
            merged.merge(later.clone());
            assert_normal(&merged);
            let mut at_once = start.clone();
            at_once.apply(&merged);
            assert_eq!(
                at_once, sequential,
                "round {round}: {earlier:?} then {later:?} merged into {merged:?}"
            );
        }
    }

    #[test]
    fn merge_keeps_the_last_word_per_share() {
        let (a, b) = (stored(1, 1), stored(2, 1));
        // A put then a remove ends removed; a remove then a put ends put.
        let mut merged = Batch {
            put_shares: vec![a.clone()],
            remove_shares: vec![b.hash],
            ..Batch::default()
        };
        merged.merge(Batch {
            put_shares: vec![b.clone()],
            remove_shares: vec![a.hash],
            ..Batch::default()
        });
        assert_eq!(merged.put_shares, vec![b.clone()]);
        assert_eq!(merged.remove_shares, vec![a.hash]);
        assert!(merged.set_verified.is_empty());

        // A put then a mark ends put verified; a mark then a put ends as the put says.
        let mut merged = Batch {
            put_shares: vec![a.clone()],
            set_verified: vec![b.hash],
            ..Batch::default()
        };
        merged.merge(Batch {
            put_shares: vec![b.clone()],
            set_verified: vec![a.hash],
            ..Batch::default()
        });
        assert_eq!(merged.put_shares.len(), 2);
        assert!(merged.put_shares[0].verified, "a was put, then marked");
        assert!(
            !merged.put_shares[1].verified,
            "b was marked, then put unverified"
        );
        assert!(merged.set_verified.is_empty());

        // A remove then a mark ends removed, the mark dropped.
        let mut merged = Batch {
            remove_shares: vec![a.hash],
            ..Batch::default()
        };
        merged.merge(Batch {
            set_verified: vec![a.hash],
            ..Batch::default()
        });
        assert_eq!(merged.remove_shares, vec![a.hash]);
        assert!(merged.set_verified.is_empty());
    }

    #[test]
    fn merge_keeps_the_last_address_and_meta_value() {
        let one = SocketAddr::from(([1, 1, 1, 1], 1));
        let two = SocketAddr::from(([2, 2, 2, 2], 2));
        let entry = |services| AddrEntry {
            services,
            ..AddrEntry::default()
        };
        let mut merged = Batch {
            put_addrs: vec![(one, entry(1))],
            remove_addrs: vec![two],
            put_meta: vec![("k".into(), vec![1]), ("j".into(), vec![1])],
            ..Batch::default()
        };
        merged.merge(Batch {
            put_addrs: vec![(two, entry(2)), (one, entry(3))],
            put_meta: vec![("k".into(), vec![2])],
            ..Batch::default()
        });
        assert_eq!(merged.put_addrs, vec![(two, entry(2)), (one, entry(3))]);
        assert!(merged.remove_addrs.is_empty());
        assert_eq!(
            merged.put_meta,
            vec![("j".into(), vec![1]), ("k".into(), vec![2])]
        );
        merged.merge(Batch {
            remove_addrs: vec![one],
            ..Batch::default()
        });
        assert_eq!(merged.put_addrs, vec![(two, entry(2))]);
        assert_eq!(merged.remove_addrs, vec![one]);
    }

    #[test]
    fn strip_invalid_drops_only_what_apply_refuses() {
        let mut big = stored(1, 1);
        big.bytes = vec![0; max_share_bytes() + 1];
        let mut batch = Batch {
            put_shares: vec![big, stored(2, 1)],
            put_meta: vec![
                (META_NETWORK.into(), vec![]),
                (String::new(), vec![]),
                ("ok".into(), vec![]),
            ],
            ..Batch::default()
        };
        assert_eq!(batch.strip_invalid(), 3);
        assert_eq!(batch.put_shares, vec![stored(2, 1)]);
        assert_eq!(batch.put_meta, vec![("ok".into(), vec![])]);
    }

    #[test]
    fn opening_map_size_doubles_the_initial_size_until_it_holds_the_file() {
        assert_eq!(opening_map_size(INITIAL_MAP_SIZE, 0), INITIAL_MAP_SIZE);
        assert_eq!(opening_map_size(1, 0), MIN_MAP_SIZE);
        assert_eq!(opening_map_size(64 << 20, 100 << 20), 128 << 20);
        assert_eq!(opening_map_size(64 << 20, 128 << 20), 128 << 20);
        assert_eq!(opening_map_size(64 << 20, (128 << 20) + 1), 256 << 20);
        // Never below the file, even past the largest map.
        let huge = MAX_MAP_SIZE as u64 + 1;
        assert!(opening_map_size(64 << 20, huge) as u64 >= huge);
    }

    #[test]
    fn disk_full_names_the_path_and_the_free_bytes() {
        let e = StoreError::DiskFull {
            path: PathBuf::from("/data/store"),
            free_bytes: 4096,
        };
        assert_eq!(e.to_string(), "disk full at /data/store: 4096 bytes free");
        let e = lmdb_error(Path::new("/"), "commit", lmdb::Error::Other(ENOSPC), 1);
        assert!(
            matches!(e, StoreError::DiskFull { .. }),
            "ENOSPC is a full disk: {e}"
        );
        assert!(e.to_string().starts_with("disk full at /: "), "{e}");
        let e = lmdb_error(Path::new("/"), "commit", lmdb::Error::MapFull, 7);
        assert!(matches!(e, StoreError::MapFull { map_size: 7, .. }));
    }

    #[test]
    fn full_disks_are_one_kind_of_failure_whatever_is_free() {
        let full = |free_bytes| StoreError::DiskFull {
            path: PathBuf::from("/s"),
            free_bytes,
        };
        assert_eq!(failure_kind(&full(1)), failure_kind(&full(2)));
        let other = StoreError::AlreadyOpen {
            path: PathBuf::from("/s"),
        };
        assert_ne!(failure_kind(&full(1)), failure_kind(&other));
    }

    #[test]
    fn free_bytes_of_an_existing_directory_is_known_on_linux() {
        let free = free_bytes(Path::new("/"));
        if cfg!(all(target_os = "linux", target_pointer_width = "64")) {
            assert!(free.is_some());
        }
        assert_eq!(free_bytes(Path::new("/no/such/directory/here")), None);
    }

    #[test]
    fn utc_text_formats_unix_seconds() {
        assert_eq!(utc_text(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc_text(1_700_000_000), "2023-11-14 22:13:20 UTC");
        assert_eq!(utc_text(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc_text(4_107_542_399), "2100-02-28 23:59:59 UTC");
    }

    #[test]
    fn a_reopened_store_keeps_its_data_and_writes_again() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), "test").unwrap();
        let put = |seed| Batch {
            put_shares: vec![stored(seed, 1)],
            ..Batch::default()
        };
        store.apply(&put(1)).unwrap();
        store.reopen().unwrap();
        store.apply(&put(2)).unwrap();
        // A store left closed by a failed reopen opens again at the next write.
        store.env = None;
        assert!(store.share_count().is_err());
        store.apply(&put(3)).unwrap();
        assert_eq!(store.share_count().unwrap(), 3);
        drop(store);
        assert_eq!(
            Store::open(dir.path(), "test")
                .unwrap()
                .share_count()
                .unwrap(),
            3
        );
    }
}
