//! The node's own payout address when `-a` is not given: bitcoind's wallet if it has one,
//! otherwise a key generated once and kept in the data directory.

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use log::{info, warn};
use secp256k1::{PublicKey, SecretKey};
use serde_json::json;

use crate::bitcoin::address;
use crate::bitcoin::chain::ChainParams;
use crate::bitcoin::hash::hash160;
use crate::bitcoin::script;
use crate::bitcoind::rpc::Client;

const LOG: &str = "node";
/// The key file's name in the data directory.
pub const KEY_FILE: &str = "payout_key.wif";

/// Where the payout address came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `-a`.
    Flag,
    /// bitcoind's wallet (`getnewaddress`).
    Wallet,
    /// A key in this file (created now when `created`).
    KeyFile { path: PathBuf, created: bool },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payout {
    pub address: String,
    pub script: Vec<u8>,
    pub source: Source,
}

#[derive(Debug)]
pub enum PayoutError {
    Io { path: PathBuf, error: io::Error },
    BadKeyFile { path: PathBuf, reason: String },
}

impl fmt::Display for PayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PayoutError::Io { path, error } => {
                write!(f, "payout key file {}: {error}", path.display())
            }
            PayoutError::BadKeyFile { path, reason } => write!(
                f,
                "payout key file {} is unusable ({reason}); move it away or give -a ADDRESS",
                path.display()
            ),
        }
    }
}

impl std::error::Error for PayoutError {}

/// The payout address: bitcoind's wallet first, else the key in `datadir` (made if absent).
pub fn resolve(rpc: &Client, chain: &ChainParams, datadir: &Path) -> Result<Payout, PayoutError> {
    match rpc.call_as::<String>("getnewaddress", json!(["p2pool", "bech32"])) {
        Ok(a) => match address::to_script(&a, chain) {
            Ok(script) => {
                info!(target: LOG, "paying to {a}, a new address from bitcoind's wallet");
                return Ok(Payout {
                    address: a,
                    script,
                    source: Source::Wallet,
                });
            }
            Err(e) => warn!(target: LOG, "bitcoind's wallet gave an unusable address {a:?}: {e}"),
        },
        Err(e) => info!(target: LOG, "no address from bitcoind's wallet ({e}); using a local key"),
    }
    from_key_file(&datadir.join(KEY_FILE), chain)
}

/// The P2WPKH payout of the key in `path`, generating and saving one (mode 0600) if the
/// file does not exist.
pub fn from_key_file(path: &Path, chain: &ChainParams) -> Result<Payout, PayoutError> {
    let io_err = |error| PayoutError::Io {
        path: path.to_path_buf(),
        error,
    };
    let (secret, created) = match fs::read_to_string(path) {
        Ok(text) => (parse_wif(text.trim(), chain, path)?, false),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let secret = loop {
                if let Ok(k) = SecretKey::from_secret_bytes(rand::random::<[u8; 32]>()) {
                    break k;
                }
            };
            write_private(path, &format!("{}\n", wif(&secret, chain))).map_err(io_err)?;
            (secret, true)
        }
        Err(e) => return Err(io_err(e)),
    };
    let public = PublicKey::from_secret_key(&secret);
    let script = script::witness_program(0, &hash160(&public.serialize()));
    let address = address::from_script(&script, chain).map_err(|e| PayoutError::BadKeyFile {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    Ok(Payout {
        address,
        script,
        source: Source::KeyFile {
            path: path.to_path_buf(),
            created,
        },
    })
}

fn wif_prefix(chain: &ChainParams) -> u8 {
    if chain.name == "main" { 0x80 } else { 0xef }
}

/// Wallet import format, compressed.
fn wif(secret: &SecretKey, chain: &ChainParams) -> String {
    let mut payload = vec![wif_prefix(chain)];
    payload.extend_from_slice(&secret.to_secret_bytes());
    payload.push(0x01);
    address::base58check_encode(&payload)
}

fn parse_wif(text: &str, chain: &ChainParams, path: &Path) -> Result<SecretKey, PayoutError> {
    let bad = |reason: &str| PayoutError::BadKeyFile {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    let payload = address::base58check_decode(text).ok_or_else(|| bad("not base58check"))?;
    if payload.len() != 34 || payload[33] != 0x01 {
        return Err(bad("not a compressed WIF key"));
    }
    if payload[0] != wif_prefix(chain) {
        return Err(bad("a key for another chain"));
    }
    let mut bytes = [0u8; 32];
    bytes.copy_from_slice(&payload[1..33]);
    SecretKey::from_secret_bytes(bytes).map_err(|_| bad("not a valid secp256k1 key"))
}

/// Writes a new file readable only by its owner, atomically (temp file then rename).
fn write_private(path: &Path, contents: &str) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&tmp)?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()?;
    fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_is_private_and_reloads_to_the_same_address() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE);
        let chain = ChainParams::regtest();
        let first = from_key_file(&path, &chain).unwrap();
        assert!(first.address.starts_with("bcrt1q"), "{}", first.address);
        assert!(matches!(
            first.source,
            Source::KeyFile { created: true, .. }
        ));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let again = from_key_file(&path, &chain).unwrap();
        assert_eq!(again.address, first.address);
        assert!(matches!(
            again.source,
            Source::KeyFile { created: false, .. }
        ));
    }

    #[test]
    fn a_key_for_another_chain_or_garbage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE);
        from_key_file(&path, &ChainParams::regtest()).unwrap();
        let e = from_key_file(&path, &ChainParams::main()).unwrap_err();
        assert!(e.to_string().contains("another chain"), "{e}");
        fs::write(&path, "garbage").unwrap();
        assert!(from_key_file(&path, &ChainParams::regtest()).is_err());
    }
}
