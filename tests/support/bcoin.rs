//! A real regtest Bitcoin node for integration tests: bcoin 1.0.2, installed from npm and
//! started by `scripts/bcoin.sh` on free loopback ports with a fresh data dir.
//!
//! `Bcoin::shared()` is one node per test binary, mined past segwit activation once; tests
//! that need their own chain (a fixed height, a still tip) call `Bcoin::start()`, stopped on
//! drop. Every node is also stopped by the script's watchdog when the test binary exits, and
//! its data dir removed, so no node outlives a test run even after a panic or a kill.
//!
//! bcoin caches its block template until the next block; a transaction arriving later
//! refreshes it (and wakes long polls) only if the cached one is over 10 s old. To get a
//! template with a transaction, send it after a block and before the next getblocktemplate.
//! Coinbases mined here pay P2WSH(`OP_TRUE`): spend one after 100 blocks with the witness
//! `[51]` (the script itself) and an empty scriptSig, no key needed.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use p2pool::bitcoin::address;
use p2pool::bitcoin::chain::ChainParams;
use p2pool::bitcoin::hash::sha256;
use p2pool::bitcoind::rpc::{Auth, Client};
use serde_json::json;

/// The first block bcoin's regtest checks under segwit rules (BIP9 over 144-block periods:
/// started at 144, locked in at 288, active at 432). Templates for lower heights have no
/// `segwit` rule, yet bcoin still sends a `default_witness_commitment` in them.
pub const SEGWIT_HEIGHT: u64 = 432;

/// How long a node may take to answer RPC after the script says its ports are open.
const READY_WAIT: Duration = Duration::from_secs(30);

/// bcoin's regtest parameters where they differ from Bitcoin Core's (HRP `rb`, prefixes
/// 0x3c and 0x26); bcoin's RPCs only take these addresses.
pub fn chain() -> ChainParams {
    ChainParams {
        hrp: "rb".into(),
        p2pkh_prefix: 0x3c,
        p2sh_prefix: 0x26,
        ..ChainParams::regtest()
    }
}

/// The witness script `OP_TRUE`: an output paying to its P2WSH needs no key to spend.
pub const ANYONE_CAN_SPEND: [u8; 1] = [0x51];

/// P2WSH of `OP_TRUE`: where the harness mines, so that tests can spend the coinbases.
pub fn miner_script() -> Vec<u8> {
    let mut script = vec![0x00, 0x20];
    script.extend_from_slice(&sha256(&ANYONE_CAN_SPEND));
    script
}

/// `miner_script()` as a bcoin regtest address.
pub fn miner_address() -> String {
    address::from_script(&miner_script(), &chain())
        .unwrap_or_else(|e| panic!("no address for the miner script: {e}"))
}

/// A running bcoin regtest node.
#[derive(Debug)]
pub struct Bcoin {
    pub pid: u32,
    pub rpc_port: u16,
    pub p2p_port: u16,
    /// Bitcoin-style data dir: the cookie is at `<datadir>/regtest/.cookie`.
    pub datadir: PathBuf,
    pub cookie: PathBuf,
    pub log: PathBuf,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/bcoin.sh")
}

impl Bcoin {
    /// Installs bcoin if needed and starts a node at height 0. Panics if it cannot.
    pub fn start() -> Bcoin {
        // A free port can be taken between the script's choice and bcoin's bind: retry.
        let mut failures = Vec::new();
        for _ in 0..3 {
            match Bcoin::try_start() {
                Ok(node) => return node,
                Err(e) => failures.push(e),
            }
        }
        panic!("cannot start bcoin:\n{}", failures.join("\n"));
    }

    /// The node shared by the tests of this binary, at height `SEGWIT_HEIGHT` or above.
    pub fn shared() -> &'static Bcoin {
        static NODE: OnceLock<Bcoin> = OnceLock::new();
        NODE.get_or_init(|| {
            let node = Bcoin::start();
            node.mine_to_height(SEGWIT_HEIGHT);
            node
        })
    }

    /// The shared node, with a guard held by every test that mines on it or needs its tip
    /// to stay still; tests that only read take `shared()` alone.
    pub fn exclusive() -> (&'static Bcoin, MutexGuard<'static, ()>) {
        static LOCK: Mutex<()> = Mutex::new(());
        let node = Bcoin::shared();
        (node, LOCK.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn try_start() -> Result<Bcoin, String> {
        let output = Command::new("bash")
            .arg(script())
            .args(["start", "--watch-pid", &std::process::id().to_string()])
            .output()
            .map_err(|e| format!("cannot run {}: {e}", script().display()))?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        if !output.status.success() {
            return Err(format!(
                "bcoin.sh start failed ({}): {stderr}",
                output.status
            ));
        }
        let stdout = String::from_utf8_lossy(&output.stdout);
        let field = |key: &str| {
            stdout
                .lines()
                .find_map(|line| line.strip_prefix(key)?.strip_prefix('='))
                .map(str::to_string)
                .ok_or_else(|| format!("bcoin.sh start printed no {key}: {stdout}{stderr}"))
        };
        let number = |key: &str| -> Result<u32, String> {
            let value = field(key)?;
            value
                .parse()
                .map_err(|_| format!("bcoin.sh start printed {key}={value}"))
        };
        let port = |key: &str| -> Result<u16, String> {
            u16::try_from(number(key)?).map_err(|_| format!("bad {key}"))
        };
        let node = Bcoin {
            pid: number("pid")?,
            rpc_port: port("rpc_port")?,
            p2p_port: port("p2p_port")?,
            datadir: field("datadir")?.into(),
            cookie: field("cookie")?.into(),
            log: field("log")?.into(),
        };
        // On failure `node` is dropped here, which stops it.
        node.wait_ready()?;
        Ok(node)
    }

    fn wait_ready(&self) -> Result<(), String> {
        let rpc = self.rpc().with_timeout(Duration::from_secs(5));
        let start = Instant::now();
        loop {
            match rpc.get_blockchain_info() {
                Ok(_) => return Ok(()),
                Err(e) if start.elapsed() > READY_WAIT => {
                    return Err(format!(
                        "bcoin at {} not ready after {READY_WAIT:?}: {e} (log: {})",
                        rpc.addr(),
                        self.log.display()
                    ));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// A client that authenticates with the node's cookie file.
    pub fn rpc(&self) -> Client {
        Client::new(
            "127.0.0.1",
            self.rpc_port,
            Auth::Cookie(self.cookie.clone()),
        )
    }

    /// The RPC password (bcoin's API key); any user name goes with it.
    pub fn password(&self) -> String {
        let cookie = std::fs::read_to_string(&self.cookie)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", self.cookie.display()));
        match cookie.split_once(':') {
            Some((_, password)) => password.trim_end().to_string(),
            None => panic!("cookie {} is not user:password", self.cookie.display()),
        }
    }

    pub fn height(&self) -> u64 {
        self.rpc()
            .get_block_count()
            .unwrap_or_else(|e| panic!("getblockcount: {e}"))
    }

    /// Mines `n` blocks to `miner_address()`; returns their hashes in display hex.
    pub fn mine(&self, n: u64) -> Vec<String> {
        self.rpc()
            .call_as("generatetoaddress", json!([n, miner_address()]))
            .unwrap_or_else(|e| panic!("generatetoaddress {n}: {e}"))
    }

    /// Mines until the chain is at least `height` blocks high.
    pub fn mine_to_height(&self, height: u64) {
        let now = self.height();
        if now < height {
            self.mine(height - now);
        }
    }

    /// The raw block at `height` of the best chain.
    pub fn block_at(&self, height: u64) -> Vec<u8> {
        let rpc = self.rpc();
        let hash: String = rpc
            .call_as("getblockhash", json!([height]))
            .unwrap_or_else(|e| panic!("getblockhash {height}: {e}"));
        let hex: String = rpc
            .call_as("getblock", json!([hash, false]))
            .unwrap_or_else(|e| panic!("getblock {hash}: {e}"));
        hex::decode(hex).unwrap_or_else(|e| panic!("getblock {hash} is not hex: {e}"))
    }

    /// Sends a raw transaction to the mempool; returns its txid in display hex.
    pub fn send_raw(&self, tx: &[u8]) -> String {
        self.rpc()
            .call_as("sendrawtransaction", json!([hex::encode(tx)]))
            .unwrap_or_else(|e| panic!("sendrawtransaction: {e}"))
    }

    /// Stops the node (a no-op once it is stopped).
    pub fn stop(&self) {
        let status = Command::new("bash")
            .arg(script())
            .args(["stop", &self.pid.to_string()])
            .status();
        if !matches!(status, Ok(s) if s.success()) {
            eprintln!("bcoin.sh stop {} failed: {status:?}", self.pid);
        }
    }
}

impl Drop for Bcoin {
    fn drop(&mut self) {
        self.stop();
    }
}
