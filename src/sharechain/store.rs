//! The LMDB store: shares (with their verified flag and the time they were first seen), the
//! address book and node metadata, in one environment under the data directory.
//!
//! The node thread owns the [`Store`] and hands it one [`Batch`] per tick; [`Store::apply`]
//! writes the batch in a single write transaction and commits it with LMDB's default durable
//! commit (the data is synced before the commit returns). A process killed at any moment leaves
//! a store that opens, holding every committed batch; only the batch being written is lost.
//!
//! Every record read back is checked: a value of the wrong size, an unknown share kind or a
//! length beyond the largest possible share is [`StoreError::Corrupt`], never a panic. The
//! layouts are documented in doc/schema.md; [`FORMAT_VERSION`] changes with any of them.

use std::fmt;
use std::fs;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use lmdb::{Cursor, Database, DatabaseFlags, Environment, RwTransaction, Transaction, WriteFlags};

use crate::bitcoin::hash::Hash256;
use crate::network::RuleSet;

/// The on-disk format this build reads and writes. Bump it with any change to a layout in
/// doc/schema.md; a store of another version is refused at open.
pub const FORMAT_VERSION: u32 = 1;

/// The LMDB map size: the most the store can ever hold. LMDB reserves this much address space,
/// not disk; the data file grows only as records are written.
#[cfg(target_pointer_width = "64")]
pub const MAP_SIZE: usize = 1 << 30;
/// The LMDB map size: the most the store can ever hold (smaller where address space is scarce).
#[cfg(not(target_pointer_width = "64"))]
pub const MAP_SIZE: usize = 256 << 20;

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
    /// The store reached its map size; nothing of the batch was written.
    MapFull { path: PathBuf, map_size: usize },
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
                "store at {}: full (map size {map_size} bytes); nothing of the batch was written",
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
    env: Environment,
    shares: Database,
    addrs: Database,
    meta: Database,
    path: PathBuf,
    _registration: Registration,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens or creates the store in `dir` (created if missing) for the network
    /// `network_name`; refuses a store of another network or format version with a clear
    /// error, before writing anything to it.
    pub fn open(dir: &Path, network_name: &str) -> Result<Store, StoreError> {
        let path = prepare_dir(dir)?;
        let registration = Registration::claim(&path)?;
        let env = Environment::new()
            .set_max_dbs(MAX_DBS)
            .set_map_size(MAP_SIZE)
            .open(&path)
            .map_err(|e| lmdb_error(&path, "open", e))?;
        let opener = Opener {
            env: &env,
            path: &path,
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
            env,
            shares,
            addrs,
            meta,
            path,
            _registration: registration,
        })
    }

    /// The store's directory, as resolved at open.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `batch` in one write transaction and commits it durably. On error nothing of the
    /// batch is written.
    pub fn apply(&mut self, batch: &Batch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        self.check_batch(batch)?;
        let mut txn = self
            .env
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
            .env
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
            .env
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
            .env
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
            .env
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
            if key == META_FORMAT_VERSION || key == META_NETWORK {
                return Err(refuse(format!("meta key {key:?} is reserved")));
            }
            if key.is_empty() || key.len() > MAX_META_KEY_LEN {
                return Err(refuse(format!(
                    "meta key of {} bytes, not 1 to {MAX_META_KEY_LEN}",
                    key.len()
                )));
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
        lmdb_error(&self.path, op, e)
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
}

impl Opener<'_> {
    /// The named database, or `None` if the environment has none of that name.
    fn existing_db(&self, name: &'static str) -> Result<Option<Database>, StoreError> {
        match self.env.open_db(Some(name)) {
            Ok(db) => Ok(Some(db)),
            Err(lmdb::Error::NotFound) => Ok(None),
            Err(e) => Err(lmdb_error(self.path, "open database", e)),
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
            .map_err(|e| lmdb_error(self.path, "begin write", e))?;
        let version = FORMAT_VERSION.to_le_bytes();
        txn.put(meta, &META_FORMAT_VERSION, &version, WriteFlags::empty())
            .map_err(|e| lmdb_error(self.path, "put meta", e))?;
        txn.put(meta, &META_NETWORK, &network_name, WriteFlags::empty())
            .map_err(|e| lmdb_error(self.path, "put meta", e))?;
        txn.commit()
            .map_err(|e| lmdb_error(self.path, "commit", e))?;
        Ok(meta)
    }

    /// Creates the named database, or opens it if it exists; commits at once.
    fn create_db(&self, name: &'static str) -> Result<Database, StoreError> {
        self.env
            .create_db(Some(name), DatabaseFlags::empty())
            .map_err(|e| lmdb_error(self.path, "create database", e))
    }

    /// Entries in the named database; 0 if it does not exist.
    fn entries(&self, name: &'static str) -> Result<usize, StoreError> {
        let Some(db) = self.existing_db(name)? else {
            return Ok(0);
        };
        let txn = self
            .env
            .begin_ro_txn()
            .map_err(|e| lmdb_error(self.path, "begin read", e))?;
        let stat = txn.stat(db).map_err(|e| lmdb_error(self.path, "stat", e))?;
        Ok(stat.entries())
    }

    fn read_meta(&self, meta: Database, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self
            .env
            .begin_ro_txn()
            .map_err(|e| lmdb_error(self.path, "begin read", e))?;
        match txn.get(meta, &key) {
            Ok(value) => Ok(Some(value.to_vec())),
            Err(lmdb::Error::NotFound) => Ok(None),
            Err(e) => Err(lmdb_error(self.path, "read meta", e)),
        }
    }
}

/// Marks a directory as open in this process until dropped.
struct Registration {
    path: PathBuf,
}

impl Registration {
    fn claim(path: &Path) -> Result<Registration, StoreError> {
        let mut open = OPEN_DIRS.lock().unwrap_or_else(|e| e.into_inner());
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
        let mut open = OPEN_DIRS.lock().unwrap_or_else(|e| e.into_inner());
        open.retain(|p| p != &self.path);
    }
}

/// Creates `dir` if missing and resolves it, so that two spellings of one directory match.
fn prepare_dir(dir: &Path) -> Result<PathBuf, StoreError> {
    let io_error = |source| StoreError::Io {
        path: dir.to_path_buf(),
        source,
    };
    fs::create_dir_all(dir).map_err(io_error)?;
    fs::canonicalize(dir).map_err(io_error)
}

fn lmdb_error(path: &Path, op: &'static str, e: lmdb::Error) -> StoreError {
    match e {
        lmdb::Error::MapFull => StoreError::MapFull {
            path: path.to_path_buf(),
            map_size: MAP_SIZE,
        },
        source => StoreError::Lmdb {
            path: path.to_path_buf(),
            op,
            source,
        },
    }
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
}
