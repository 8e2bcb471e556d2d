//! Hostile peers end to end (issue 13): a real regtest bcoin, the release `p2pool` binary on
//! loopback and an honest `p2pool-testminer` at a fixed hash rate; 60 s without attack, then
//! 60 s while a separate process (this binary re-run with `P2POOL_ATTACK_CHILD`) floods the
//! node's P2P port:
//!
//! 1. from 127.0.0.2, 400,000 zero-work shares (share target 2^256, bits 0xff7fffff) in
//!    `share1as` messages of 10,000, reconnecting when dropped;
//! 2. from 127.0.0.3, `share1bs` of one junk block share carrying one 7.9 MB witness item,
//!    for 60 s, reconnecting when dropped;
//! 3. from 127.0.0.4 to 127.0.0.7, cheap shares that pass every stateless check (share
//!    target = MAX_TARGET, ground to meet it: 256 hashes each on regtest) on random
//!    parents, as fast as one core grinds them, for 60 s.
//!
//! An attacker whose connection is refused (its address banned: no `version` from the node)
//! counts a refusal and, unless `P2POOL_ATTACK_ROTATE=0`, goes on from a fresh loopback
//! address of its own range (127.1.x.y, 127.2.x.y, 127.3.x.y), so that the whole flood
//! reaches the node and not just what passes before the first ban.
//!
//! Sampled every 250 ms: the node's VmRSS, the store's data.mdb (allocated bytes and
//! length); at the end VmHWM, and the node's log searched for failed store writes. Counted
//! per phase from the node's API: the miner's accepted pseudo-shares (fixed at the easiest
//! difficulty, 256 hashes each) and its shares that met the share target, and this node's
//! shares (`shares.local`). Environment: `P2POOL_ATTACK_SECS` (60), `P2POOL_ATTACK_WARMUP`
//! (120), `P2POOL_ATTACK_HASHRATE` (2560), `P2POOL_ATTACK_KEEP=1` keeps the data dir and log.

#[path = "../tests/support"]
mod support {
    pub mod bcoin;
    pub mod hostile;
    pub mod procs;
}

mod common;

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use p2pool::bitcoin::block::BlockHeader;
use p2pool::bitcoin::frame::Framing;
use p2pool::bitcoin::hash::{Hash256, sha256d};
use p2pool::bitcoin::target::Bits;
use p2pool::bitcoin::tx::{OutPoint, Transaction, TxIn, TxOut};
use p2pool::network::Network;
use p2pool::p2p::message::Message;
use p2pool::sharechain::sample::payout;
use p2pool::sharechain::share::{ModernFields, Share1a, Share1b, ShareData, ShareInfo};

use support::bcoin::{Bcoin, SEGWIT_HEIGHT};
use support::hostile::{connect_from, version};
use support::procs::{MinerProc, bcoin_args, free_port, http_get, wait_until};

const CHILD_ENV: &str = "P2POOL_ATTACK_CHILD";
const MINER_ADDR: &str = "bcrt1qwhewjks36k3hv2easehe2t7tkzsn09tvnh0nt8";
const ZERO_WORK_TOTAL: u64 = 400_000;
const ZERO_WORK_PER_MESSAGE: u64 = 10_000;
const JUNK_WITNESS: usize = 7_900_000;
const CHEAP_PER_MESSAGE: usize = 500;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        attack_child(&spec);
        return;
    }
    if !common::measuring() {
        return;
    }
    run();
}

// ---------------------------------------------------------------------------------------
// The node side: bcoin, the node, the miner, the sampler, the table.

struct Node {
    child: Child,
    worker: u16,
    p2p: u16,
    stratum: u16,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn status_kb(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn find_file(dir: &Path, name: &str) -> Option<PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if let Some(found) = find_file(&path, name) {
                return Some(found);
            }
        } else if path.file_name().is_some_and(|n| n == name) {
            return Some(path);
        }
    }
    None
}

/// data.mdb's allocated bytes (st_blocks × 512) and length.
fn store_bytes(datadir: &Path) -> (u64, u64) {
    find_file(datadir, "data.mdb")
        .and_then(|p| std::fs::metadata(p).ok())
        .map_or((0, 0), |m| (m.blocks() * 512, m.len()))
}

#[derive(Default, Clone, Copy)]
struct Sample {
    phase: usize,
    rss_kb: u64,
    store_alloc: u64,
    store_len: u64,
}

/// What the node says of the honest miner and its own shares at one moment.
#[derive(Default, Clone, Copy, Debug)]
struct Counts {
    accepted: u64,
    stale: u64,
    rejected: u64,
    miner_shares: u64,
    local_shares: u64,
    local_orphan: u64,
    local_dead: u64,
    miner_lines: u64,
}

fn json(port: u16, path: &str) -> Option<Value> {
    match http_get(port, path)? {
        (200, body) => serde_json::from_str(&body).ok(),
        _ => None,
    }
}

fn counts(node: &Node, miner: &MinerProc) -> Counts {
    let mut c = Counts::default();
    if let Some(Value::Array(miners)) = json(node.worker, "/api/miners") {
        for m in miners.iter().filter(|m| m["address"] == MINER_ADDR) {
            c.accepted += m["accepted"].as_u64().unwrap_or(0);
            c.stale += m["stale"].as_u64().unwrap_or(0);
            c.rejected += m["rejected"].as_u64().unwrap_or(0);
            c.miner_shares += m["shares"].as_u64().unwrap_or(0);
        }
    }
    if let Some(s) = json(node.worker, "/api/stats") {
        c.local_shares = s["shares"]["local"].as_u64().unwrap_or(0);
        c.local_orphan = s["shares"]["local_orphan"].as_u64().unwrap_or(0);
        c.local_dead = s["shares"]["local_dead"].as_u64().unwrap_or(0);
    }
    c.miner_lines = miner
        .log()
        .iter()
        .filter(|l| l.starts_with("accepted"))
        .count() as u64;
    c
}

fn diff(a: Counts, b: Counts) -> Counts {
    Counts {
        accepted: b.accepted - a.accepted,
        stale: b.stale - a.stale,
        rejected: b.rejected - a.rejected,
        miner_shares: b.miner_shares - a.miner_shares,
        local_shares: b.local_shares - a.local_shares,
        local_orphan: b.local_orphan - a.local_orphan,
        local_dead: b.local_dead - a.local_dead,
        miner_lines: b.miner_lines - a.miner_lines,
    }
}

/// Lines of the node's log that tell of a store write that failed (or was lost).
fn failed_batch_lines(log: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .filter(|l| {
            let l = l.to_lowercase();
            l.contains("store write failed")
                || l.contains("disk full")
                || l.contains("disk is full")
                || l.contains("pending writes")
                || l.contains("were never stored")
        })
        .map(str::to_string)
        .collect()
}

fn start_node(bcoin: &Bcoin, datadir: &Path, log: &Path) -> Node {
    let (worker, p2p, stratum) = (free_port(), free_port(), free_port());
    let log_file = File::create(log).expect("node log");
    let child = Command::new(env!("CARGO_BIN_EXE_p2pool"))
        .args(["--net", "regtest"])
        .args(bcoin_args(bcoin))
        .args(["-w", &worker.to_string()])
        .args(["--p2pool-port", &p2p.to_string()])
        .args(["--stratum-port", &stratum.to_string()])
        .arg("--datadir")
        .arg(datadir)
        .env(
            "RUST_LOG",
            std::env::var("P2POOL_ATTACK_NODE_LOG")
                .unwrap_or_else(|_| "info,ureq=warn,ureq_proto=warn,tiny_http=warn".into()),
        )
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file)
        .spawn()
        .expect("start p2pool");
    Node {
        child,
        worker,
        p2p,
        stratum,
    }
}

fn run() {
    let secs = env_u64("P2POOL_ATTACK_SECS", 60);
    let warmup = env_u64("P2POOL_ATTACK_WARMUP", 120);
    let hashrate = env_u64("P2POOL_ATTACK_HASHRATE", 2560);

    eprintln!("attack: starting bcoin (regtest) and mining to height {SEGWIT_HEIGHT}");
    let bcoin = Bcoin::start();
    bcoin.mine_to_height(SEGWIT_HEIGHT);
    let dir = tempfile::tempdir().expect("temp dir");
    let datadir = dir.path().join("node");
    let log = dir.path().join("node.log");
    let node = start_node(&bcoin, &datadir, &log);
    let pid = node.child.id();
    assert!(
        wait_until(Duration::from_secs(30), || http_get(node.worker, "/health")
            .is_some()),
        "the node never answered HTTP; log {}",
        log.display()
    );
    let miner = MinerProc::start(&[
        "--url".into(),
        format!("stratum+tcp://127.0.0.1:{}", node.stratum),
        "--user".into(),
        format!("{MINER_ADDR}+0.00000001"),
        "--protocol".into(),
        "stratum".into(),
        "--hashrate".into(),
        hashrate.to_string(),
    ]);
    eprintln!(
        "attack: node pid {pid}, p2p port {}, miner at {hashrate} H/s; warming up {warmup} s",
        node.p2p
    );
    thread::sleep(Duration::from_secs(warmup));

    // The sampler.
    let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
    let phase = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (samples, phase, stop, datadir) = (
            samples.clone(),
            phase.clone(),
            stop.clone(),
            datadir.clone(),
        );
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let (store_alloc, store_len) = store_bytes(&datadir);
                samples.lock().unwrap().push(Sample {
                    phase: phase.load(Ordering::Relaxed) as usize,
                    rss_kb: status_kb(pid, "VmRSS:"),
                    store_alloc,
                    store_len,
                });
                thread::sleep(Duration::from_millis(250));
            }
        })
    };

    // Phase 1: no attack.
    phase.store(1, Ordering::Relaxed);
    let c0 = counts(&node, &miner);
    let t0 = Instant::now();
    thread::sleep(Duration::from_secs(secs));
    let c1 = counts(&node, &miner);
    let d1 = t0.elapsed();

    // Phase 2: under attack, from another process.
    phase.store(2, Ordering::Relaxed);
    let exe = std::env::current_exe().expect("own path");
    let attacker = Command::new(exe)
        .env(CHILD_ENV, format!("{}:{secs}", node.p2p))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("attacker process starts");
    let attacker_pid = attacker.id();
    let t1 = Instant::now();
    let mut attacker_cpu = (0, 0);
    while t1.elapsed() < Duration::from_secs(secs) {
        thread::sleep(Duration::from_millis(500));
        if let Some(cpu) = proc_cpu(attacker_pid) {
            attacker_cpu = cpu;
        }
    }
    let c2 = counts(&node, &miner);
    let d2 = t1.elapsed();
    let smaps = top_mappings(pid);
    let node_cpu_after = proc_cpu(pid);
    let output = attacker.wait_with_output().expect("attacker ends");
    let report: Value = String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("ATTACK "))
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or(Value::Null);
    // A few seconds more so that the tail of the attack is sampled.
    phase.store(3, Ordering::Relaxed);
    thread::sleep(Duration::from_secs(5));
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let hwm = status_kb(pid, "VmHWM:");
    let stats = json(node.worker, "/api/stats").unwrap_or(Value::Null);
    let failed = failed_batch_lines(&log);

    // The table.
    let samples = samples.lock().unwrap().clone();
    let peak = |p: usize, f: fn(&Sample) -> u64| {
        samples
            .iter()
            .filter(|s| s.phase == p)
            .map(f)
            .max()
            .unwrap_or(0)
    };
    let mb = |b: u64| b as f64 / 1e6;
    let p1 = diff(c0, c1);
    let p2 = diff(c1, c2);
    let per_min = |n: u64, d: Duration| n as f64 * 60.0 / d.as_secs_f64();
    println!();
    println!(
        "| phase | miner accepted (/min) | stale, rejected | miner shares (/min) | node's own shares (/min), orphan, dead | peak RSS | max store (alloc / len) |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (name, p, d, ph) in [("1: no attack", p1, d1, 1), ("2: attack", p2, d2, 2)] {
        println!(
            "| {name} ({:.1} s) | {} ({:.1}) | {}, {} | {} ({:.1}) | {} ({:.1}), {}, {} | {:.1} MB | {:.2} / {:.2} MB |",
            d.as_secs_f64(),
            p.accepted,
            per_min(p.accepted, d),
            p.stale,
            p.rejected,
            p.miner_shares,
            per_min(p.miner_shares, d),
            p.local_shares,
            per_min(p.local_shares, d),
            p.local_orphan,
            p.local_dead,
            peak(ph, |s| s.rss_kb) as f64 / 1e3,
            mb(peak(ph, |s| s.store_alloc)),
            mb(peak(ph, |s| s.store_len)),
        );
    }
    println!();
    let ratio = |a: u64, b: u64, da: Duration, db: Duration| {
        per_min(b, db) / per_min(a, da).max(f64::MIN_POSITIVE)
    };
    println!(
        "ratio phase 2 / phase 1: miner accepted {:.3}, miner shares {:.3}, node's own shares {:.3} (miner's own log: {} / {} accepted lines)",
        ratio(p1.accepted, p2.accepted, d1, d2),
        ratio(p1.miner_shares, p2.miner_shares, d1, d2),
        ratio(p1.local_shares, p2.local_shares, d1, d2),
        p2.miner_lines,
        p1.miner_lines
    );
    println!(
        "node VmHWM {:.1} MB; after the attack: VmRSS {:.1} MB, store {:.2} MB allocated / {:.2} MB long",
        hwm as f64 / 1e3,
        peak(3, |s| s.rss_kb) as f64 / 1e3,
        mb(peak(3, |s| s.store_alloc)),
        mb(peak(3, |s| s.store_len)),
    );
    println!("failed store batches (log lines): {}", failed.len());
    for l in &failed {
        println!("  {l}");
    }
    if let (Some((nu, ns)), (au, as_)) = (node_cpu_after, attacker_cpu) {
        println!(
            "CPU (clock ticks, user/system): node at the end of phase 2 {nu}/{ns} (since start), attacker process {au}/{as_}"
        );
    }
    println!("attackers: {report}");
    let timeline: Vec<String> = samples
        .iter()
        .filter(|s| s.phase >= 2)
        .step_by(20)
        .map(|s| format!("{:.0}", s.rss_kb as f64 / 1e3))
        .collect();
    println!(
        "node VmRSS every 5 s from the attack's start (MB): {}",
        timeline.join(" ")
    );
    println!("node's largest mappings at the end of phase 2:\n{smaps}");
    println!(
        "node after: shares {} peers {}",
        stats["shares"], stats["peers"]
    );
    if std::env::var_os("P2POOL_ATTACK_KEEP").is_some() {
        let kept = dir.keep();
        println!("kept {}", kept.display());
    }
    drop(miner);
    drop(node);
}

/// The process's memory by kind (smaps_rollup) and its five largest mappings by Rss.
fn top_mappings(pid: u32) -> String {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let mut out: Vec<String> = rollup
        .lines()
        .filter(|l| {
            [
                "Rss:",
                "Anonymous:",
                "Private_Dirty:",
                "Shared_Clean:",
                "Private_Clean:",
            ]
            .iter()
            .any(|k| l.starts_with(k))
        })
        .map(|l| format!("  {}", l.split_whitespace().collect::<Vec<_>>().join(" ")))
        .collect();
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut maps: Vec<(u64, String)> = Vec::new();
    let mut current = String::new();
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if first.contains('-') && !first.ends_with(':') {
            current = line.to_string();
        } else if let Some(kb) = line.strip_prefix("Rss:") {
            let kb: u64 = kb
                .trim()
                .trim_end_matches(" kB")
                .trim()
                .parse()
                .unwrap_or(0);
            maps.push((kb, current.clone()));
        }
    }
    maps.sort_by_key(|m| std::cmp::Reverse(m.0));
    out.push(format!("  {} mappings; largest by Rss:", maps.len()));
    for (kb, m) in maps.iter().take(6) {
        out.push(format!("  {kb} kB  {m}"));
    }
    out.join("\n")
}

/// utime and stime of a process, in clock ticks.
fn proc_cpu(pid: u32) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    Some((fields.get(11)?.parse().ok()?, fields.get(12)?.parse().ok()?))
}

// ---------------------------------------------------------------------------------------
// The attacker process.

#[derive(Default)]
struct Counters {
    connects: AtomicU64,
    refused: AtomicU64,
    connect_errors: AtomicU64,
    drops: AtomicU64,
    sent: AtomicU64,
    messages: AtomicU64,
    addresses: AtomicU64,
    stalls: AtomicU64,
}

impl Counters {
    fn json(&self) -> Value {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        json!({
            "connections": g(&self.connects),
            "refused": g(&self.refused),
            "connect_errors": g(&self.connect_errors),
            "dropped": g(&self.drops),
            "shares_sent": g(&self.sent),
            "messages_sent": g(&self.messages),
            "addresses_used": g(&self.addresses),
            "write_stalls_5s": g(&self.stalls),
        })
    }
}

/// Source addresses of one attacker: its first address(es), then, when rotating, fresh
/// ones of 127.`range`.x.y.
struct Addresses {
    first: Vec<Ipv4Addr>,
    range: u8,
    next: u32,
    rotate: bool,
}

impl Addresses {
    fn new(first: Vec<Ipv4Addr>, range: u8) -> Addresses {
        Addresses {
            first,
            range,
            next: 0,
            rotate: std::env::var("P2POOL_ATTACK_ROTATE").as_deref() != Ok("0"),
        }
    }

    /// A fresh address after a refusal (or the same one when not rotating).
    fn fresh(&mut self, current: Ipv4Addr) -> Ipv4Addr {
        if !self.rotate {
            return current;
        }
        self.next += 1;
        // Hosts 1 to 254 of 127.range.x.0/24, x = 0, 1, ...
        let n = self.next - 1;
        Ipv4Addr::new(127, self.range, (n / 254) as u8, (n % 254) as u8 + 1)
    }
}

/// An attacker's connection: a socket bound to its source address, and what it has read.
struct Conn {
    stream: TcpStream,
    framing: Framing,
    buf: Vec<u8>,
}

impl Conn {
    fn send(&mut self, msg: &Message) -> std::io::Result<()> {
        let frame = msg.to_frame(&self.framing).expect("attack frame encodes");
        self.stream.write_all(&frame)
    }

    /// `send`, counting a write that timed out (the node stopped reading) as a stall.
    fn send_counted(&mut self, msg: &Message, c: &Counters) -> std::io::Result<()> {
        let r = self.send(msg);
        if let Err(e) = &r
            && matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            )
        {
            c.stalls.fetch_add(1, Ordering::Relaxed);
        }
        r
    }

    /// Whether the node's `version` arrives within `timeout` (false on close or timeout).
    fn version_within(&mut self, timeout: Duration) -> bool {
        let until = Instant::now() + timeout;
        loop {
            while let Ok(Some((frame, used))) = self.framing.decode(&self.buf) {
                self.buf.drain(..used);
                if frame.command == "version" {
                    return true;
                }
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() || self.stream.set_read_timeout(Some(left)).is_err() {
                return false;
            }
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return false,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }
}

/// A connection whose handshake the node answered; `None` when refused or unreachable.
fn open(from: Ipv4Addr, to: SocketAddr, framing: &Framing, c: &Counters) -> Option<Conn> {
    let Ok(stream) = connect_from(from, to) else {
        c.connect_errors.fetch_add(1, Ordering::Relaxed);
        thread::sleep(Duration::from_millis(20));
        return None;
    };
    c.connects.fetch_add(1, Ordering::Relaxed);
    // Writes that block this long (the node not reading) give up, so that the deadline holds.
    let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
    let mut conn = Conn {
        stream,
        framing: framing.clone(),
        buf: Vec::new(),
    };
    let hello = version(p2pool::p2p::random_u64(), "attack");
    if conn.send(&hello).is_err() || !conn.version_within(Duration::from_secs(2)) {
        c.refused.fetch_add(1, Ordering::Relaxed);
        return None;
    }
    // Nothing more is read: the node's frames pile up in the socket, as a careless peer's.
    Some(conn)
}

fn unix_now() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as u32
}

fn random_hash() -> Hash256 {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&p2pool::p2p::random_u64().to_le_bytes());
    bytes[8..].copy_from_slice(&p2pool::p2p::random_u64().to_le_bytes());
    sha256d(&bytes)
}

fn info(parent: Hash256, target: Bits, salt: u64) -> ShareInfo {
    ShareInfo {
        share_data: ShareData {
            previous_share_hash: Some(parent),
            target,
            nonce: salt.to_le_bytes().to_vec(),
        },
        new_script: payout(9),
        subsidy: 5_000_000_000,
        modern: Some(ModernFields {
            block_height: SEGWIT_HEIGHT as u32 + 1,
            witness_commitment: [0; 32],
        }),
    }
}

fn zero_work(salt: u64) -> Share1a {
    Share1a {
        header: BlockHeader {
            version: 0x2000_0000,
            previous_block: Hash256::ZERO,
            merkle_root: sha256d(&salt.to_le_bytes()),
            timestamp: unix_now(),
            bits: Bits(0xff7fffff),
            nonce: salt as u32,
        },
        info: info(random_hash(), Bits(0xff7fffff), salt),
        merkle_branch: vec![],
    }
}

fn junk_block(salt: u64) -> Share1b {
    let big = Transaction {
        version: 2,
        inputs: vec![TxIn {
            previous_output: OutPoint {
                txid: sha256d(&salt.to_le_bytes()),
                vout: 0,
            },
            script_sig: vec![],
            sequence: 0xffff_ffff,
            witness: vec![vec![0x42; JUNK_WITNESS]],
        }],
        outputs: vec![TxOut {
            value: 1000,
            script_pubkey: payout(7),
        }],
        lock_time: 0,
    };
    Share1b {
        header: BlockHeader {
            version: 0x2000_0000,
            previous_block: Hash256::ZERO,
            merkle_root: Hash256::ZERO,
            timestamp: unix_now(),
            bits: Bits(0xff7fffff),
            nonce: salt as u32,
        },
        info: info(random_hash(), Bits(0xff7fffff), salt),
        other_txs: vec![big],
    }
}

/// A share at MAX_TARGET on a random parent, ground until its header meets it.
fn cheap(net: &Network, salt: u64) -> Share1a {
    let target = Bits::from_target_floor(net.max_target);
    let max = target.to_target();
    let mut header = BlockHeader {
        version: 0x2000_0000,
        previous_block: Hash256::ZERO,
        merkle_root: sha256d(&salt.to_le_bytes()),
        timestamp: unix_now(),
        // A block target no header meets: the share is not a block.
        bits: Bits(0x1d00ffff),
        nonce: 0,
    };
    while header.hash().to_u256() > max {
        header.nonce += 1;
    }
    Share1a {
        header,
        info: info(random_hash(), target, salt),
        merkle_branch: vec![],
    }
}

fn attack_child(spec: &str) {
    let (port, secs) = spec.split_once(':').expect("port:secs");
    let to: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let until = Instant::now() + Duration::from_secs(secs.parse().unwrap());
    let net = Network::built_in("regtest").unwrap();
    let framing = net.framing();
    let zero = Arc::new(Counters::default());
    let junk = Arc::new(Counters::default());
    let cheap_c = Arc::new(Counters::default());
    let started = Instant::now();
    let zero_done = Arc::new(Mutex::new(None::<Duration>));
    // `P2POOL_ATTACK_ONLY=zero,junk,cheap` (any of them) runs only those attackers.
    let only = std::env::var("P2POOL_ATTACK_ONLY").unwrap_or_else(|_| "zero,junk,cheap".into());
    let on = |name: &str| only.split(',').any(|o| o == name);
    let (zero_on, junk_on, cheap_on) = (on("zero"), on("junk"), on("cheap"));

    let t1 = {
        let (c, framing, done) = (zero.clone(), framing.clone(), zero_done.clone());
        thread::spawn(move || {
            let mut addrs = Addresses::new(vec![Ipv4Addr::new(127, 0, 0, 2)], 1);
            let mut from = addrs.first[0];
            c.addresses.fetch_add(1, Ordering::Relaxed);
            let mut salt = 0u64;
            while zero_on
                && c.sent.load(Ordering::Relaxed) < ZERO_WORK_TOTAL
                && Instant::now() < until
            {
                let Some(mut h) = open(from, to, &framing, &c) else {
                    from = addrs.fresh(from);
                    c.addresses
                        .fetch_add(u64::from(addrs.rotate), Ordering::Relaxed);
                    continue;
                };
                while c.sent.load(Ordering::Relaxed) < ZERO_WORK_TOTAL && Instant::now() < until {
                    let shares: Vec<Share1a> = (0..ZERO_WORK_PER_MESSAGE)
                        .map(|_| {
                            salt += 1;
                            zero_work(salt)
                        })
                        .collect();
                    if h.send_counted(&Message::Share1as(shares), &c).is_err() {
                        c.drops.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    c.messages.fetch_add(1, Ordering::Relaxed);
                    c.sent.fetch_add(ZERO_WORK_PER_MESSAGE, Ordering::Relaxed);
                }
            }
            *done.lock().unwrap() = Some(started.elapsed());
        })
    };
    let t2 = {
        let (c, framing) = (junk.clone(), framing.clone());
        thread::spawn(move || {
            let mut addrs = Addresses::new(vec![Ipv4Addr::new(127, 0, 0, 3)], 2);
            let mut from = addrs.first[0];
            c.addresses.fetch_add(1, Ordering::Relaxed);
            let mut salt = 0u64;
            while junk_on && Instant::now() < until {
                let Some(mut h) = open(from, to, &framing, &c) else {
                    from = addrs.fresh(from);
                    c.addresses
                        .fetch_add(u64::from(addrs.rotate), Ordering::Relaxed);
                    continue;
                };
                while Instant::now() < until {
                    salt += 1;
                    if h.send_counted(&Message::Share1bs(vec![junk_block(salt)]), &c)
                        .is_err()
                    {
                        c.drops.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    c.messages.fetch_add(1, Ordering::Relaxed);
                    c.sent.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let t3 = {
        let (c, framing, net) = (cheap_c.clone(), framing.clone(), net.clone());
        thread::spawn(move || {
            let firsts: Vec<Ipv4Addr> = (4..8).map(|i| Ipv4Addr::new(127, 0, 0, i)).collect();
            let mut addrs = Addresses::new(firsts.clone(), 3);
            c.addresses
                .fetch_add(firsts.len() as u64, Ordering::Relaxed);
            let mut slots: Vec<(Ipv4Addr, Option<Conn>)> =
                firsts.into_iter().map(|a| (a, None)).collect();
            let mut salt = 0u64;
            let mut i = 0;
            while cheap_on && Instant::now() < until {
                let shares: Vec<Share1a> = (0..CHEAP_PER_MESSAGE)
                    .map(|_| {
                        salt += 1;
                        cheap(&net, salt)
                    })
                    .collect();
                let msg = Message::Share1as(shares);
                // The next slot with a live connection (opening one where needed).
                let mut tries = 0;
                loop {
                    if Instant::now() >= until || tries > 4 * slots.len() {
                        break;
                    }
                    tries += 1;
                    i = (i + 1) % slots.len();
                    let (from, conn) = &mut slots[i];
                    if conn.is_none() {
                        *conn = open(*from, to, &framing, &c);
                        if conn.is_none() {
                            *from = addrs.fresh(*from);
                            c.addresses
                                .fetch_add(u64::from(addrs.rotate), Ordering::Relaxed);
                            continue;
                        }
                    }
                    if conn.as_mut().unwrap().send_counted(&msg, &c).is_err() {
                        c.drops.fetch_add(1, Ordering::Relaxed);
                        *conn = None;
                        continue;
                    }
                    c.messages.fetch_add(1, Ordering::Relaxed);
                    c.sent
                        .fetch_add(CHEAP_PER_MESSAGE as u64, Ordering::Relaxed);
                    break;
                }
            }
        })
    };
    t1.join().unwrap();
    t2.join().unwrap();
    t3.join().unwrap();
    let report = json!({
        "zero_work": zero.json(),
        "zero_work_done_after_s": zero_done.lock().unwrap().map(|d| d.as_secs_f64()),
        "junk_blocks": junk.json(),
        "cheap": cheap_c.json(),
    });
    let mut out = std::io::stdout();
    let _ = writeln!(out, "ATTACK {report}");
    let _ = out.flush();
}
