//! Worker-side figures for doc/performance.md, measured on loopback against the real
//! `Workers` with a `Work` built from a `Template` (parsed from JSON, no bcoin) on an empty
//! sharechain:
//! - getwork requests per second (issue target: above 5,000/s), over keep-alive
//!   connections and with a new connection per request;
//! - a 1,000-connection Stratum connect storm (subscribe, authorize, first notify; target:
//!   within 10 s, no error);
//! - from `Workers::publish` until all 1,000 Stratum connections have their notify
//!   (target: under 20 ms);
//! - from bitcoind's acceptance of our block reaching the node's core until all 1,000
//!   Stratum connections have work on that block (the core makes the template itself);
//! - from `Workers::publish` until 500 parked long polls are answered (target: under
//!   50 ms).
//!
//! A plain binary (harness = false): `cargo bench --bench worker`.

mod common;
#[path = "common/regtest.rs"]
mod regtest;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use p2pool::bitcoin::address;
use p2pool::bitcoin::hash::{Hash256, sha256d};
use p2pool::bitcoin::script;
use p2pool::bitcoind::submit::{Outcome, SubmitResult};
use p2pool::node::core::{Core, Effect, Event, Settings};
use p2pool::node::history::History;
use p2pool::sharechain::chain::ShareChain;
use p2pool::worker::http::base64_encode;
use p2pool::worker::{Work, WorkerConfig, Workers};
use ruint::aliases::U256;
use serde_json::{Value, json};

const STRATUM_CONNECTIONS: usize = 1_000;
const LONG_POLLS: usize = 500;
const ROUNDS: usize = 5;
/// How long readers sleep before reading in the rounds that time the server alone.
const IDLE_READERS: Duration = Duration::from_millis(300);

use regtest::now;

struct Bench {
    workers: Workers,
    chain: ShareChain,
    user: String,
    round: u8,
    /// The node's core, fed a template, for the accepted-block rounds.
    core: Core,
    /// The block the core's work builds on, and its height + 1.
    tip: (Hash256, u32),
}

impl Bench {
    fn new_work(&mut self) -> Arc<Work> {
        self.round = self.round.wrapping_add(1);
        let best: Option<Hash256> = None;
        Arc::new(
            Work::build(&self.chain, &regtest::template(self.round), best, now()).expect("work"),
        )
    }

    /// bitcoind accepted our block on the current tip: the core's answer, with when the
    /// result reached it.
    fn accepted_block_work(&mut self) -> (Instant, Arc<Work>) {
        let (previous, height) = self.tip;
        let block = sha256d(&height.to_le_bytes());
        let result = SubmitResult {
            hash: block,
            previous,
            height: u64::from(height),
            timestamp: now() as u32,
            outcome: Outcome::Accepted,
            attempts: 1,
            elapsed: Duration::ZERO,
        };
        let started = Instant::now();
        let effects = self.core.on(Event::Submitted(result), now());
        let work = effects
            .into_iter()
            .find_map(|e| match e {
                Effect::Work(w) => Some(w),
                _ => None,
            })
            .expect("work on the accepted block");
        assert_eq!(work.template.previous_block, block);
        self.tip = (block, height + 1);
        (started, work)
    }
}

fn request(user: &str, path: &str, keep_alive: bool) -> Vec<u8> {
    let body = if path == "/" {
        r#"{"method":"getwork","params":[],"id":1}"#
    } else {
        ""
    };
    format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic {}\r\n\
         User-Agent: bench\r\nContent-Length: {}\r\nConnection: {}\r\n\r\n{body}",
        base64_encode(format!("{user}:x").as_bytes()),
        body.len(),
        if keep_alive { "keep-alive" } else { "close" },
    )
    .into_bytes()
}

/// Reads one answer; its status and body.
fn read_answer(reader: &mut BufReader<TcpStream>) -> Option<(u16, Vec<u8>)> {
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let status = line.split_whitespace().nth(1)?.parse().ok()?;
    let mut len = 0;
    loop {
        line.clear();
        reader.read_line(&mut line).ok()?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((n, v)) = l.split_once(':')
            && n.eq_ignore_ascii_case("content-length")
        {
            len = v.trim().parse().ok()?;
        }
    }
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    Some((status, body))
}

fn getwork_rate(addr: SocketAddr, user: &str, clients: usize, keep_alive: bool) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let run = Duration::from_secs(3);
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let (done, errors, stop) = (done.clone(), errors.clone(), stop.clone());
            let req = request(user, "/", keep_alive);
            thread::spawn(move || {
                let connect = || {
                    let s = TcpStream::connect(addr).expect("connects");
                    s.set_nodelay(true).ok();
                    s
                };
                let mut stream = connect();
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                while !stop.load(Ordering::Relaxed) {
                    if !keep_alive {
                        stream = connect();
                        reader = BufReader::new(stream.try_clone().expect("clone"));
                    }
                    let ok = stream.write_all(&req).is_ok()
                        && read_answer(&mut reader).is_some_and(|(s, b)| s == 200 && b.len() > 400);
                    if ok {
                        done.fetch_add(1, Ordering::Relaxed);
                    } else {
                        errors.fetch_add(1, Ordering::Relaxed);
                        stream = connect();
                        reader = BufReader::new(stream.try_clone().expect("clone"));
                    }
                }
            })
        })
        .collect();
    let start = Instant::now();
    thread::sleep(run);
    stop.store(true, Ordering::Relaxed);
    let n = done.load(Ordering::Relaxed);
    let secs = start.elapsed().as_secs_f64();
    for t in threads {
        let _ = t.join();
    }
    let e = errors.load(Ordering::Relaxed);
    assert_eq!(e, 0, "getwork errors");
    n as f64 / secs
}

/// A logged-in Stratum connection: its reader waits for notifies.
fn stratum_login(addr: SocketAddr, user: &str) -> Result<BufReader<TcpStream>, String> {
    let mut s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok();
    let msg = format!(
        "{}\n{}\n",
        json!({"id": 1, "method": "mining.subscribe", "params": ["bench/1"]}),
        json!({"id": 2, "method": "mining.authorize", "params": [user, "x"]})
    );
    s.write_all(msg.as_bytes()).map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(s);
    wait_notify(&mut reader)?;
    Ok(reader)
}

fn wait_notify(reader: &mut BufReader<TcpStream>) -> Result<(), String> {
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) => return Err("closed".into()),
            Ok(_) => {}
            Err(e) => return Err(e.to_string()),
        }
        // The miners stand in for remote machines, whose parsing costs this host nothing:
        // a notify is only recognised here (the tests parse them whole).
        if line.starts_with(r#"{"id":null,"method":"mining.notify","#) {
            return Ok(());
        }
        let v: Value = serde_json::from_str(&line).map_err(|e| e.to_string())?;
        if v.get("error").is_some_and(|e| !e.is_null()) || v["result"] == json!(false) {
            return Err(format!("refused: {v}"));
        }
        if v["method"] == "mining.notify" {
            return Ok(());
        }
    }
}

/// When each client thread got its answer this round: a slot per thread, so recording
/// takes no lock the other clients or the polling main thread would contend on.
struct Arrivals {
    base: Instant,
    /// Nanoseconds after `base`, plus one; 0 while none.
    slots: Vec<AtomicU64>,
    count: AtomicUsize,
}

impl Arrivals {
    fn new(n: usize) -> Arc<Arrivals> {
        Arc::new(Arrivals {
            base: Instant::now(),
            slots: (0..n).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicUsize::new(0),
        })
    }

    fn record(&self, slot: usize) {
        let nanos = self.base.elapsed().as_nanos() as u64 + 1;
        self.slots[slot].store(nanos, Ordering::Release);
        self.count.fetch_add(1, Ordering::AcqRel);
    }

    fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Waits (up to 10 s) until every slot is filled, then returns the latest and clears.
    fn last_and_reset(&self) -> Option<Instant> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.count() < self.slots.len() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(1));
        }
        let last = self.slots.iter().map(|s| s.swap(0, Ordering::AcqRel)).max();
        let complete = self.count.swap(0, Ordering::AcqRel) == self.slots.len();
        match last {
            Some(nanos) if complete => Some(self.base + Duration::from_nanos(nanos - 1)),
            _ => None,
        }
    }
}

fn percentile(mut v: Vec<Duration>, p: f64) -> Duration {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

fn stratum(bench: &mut Bench) {
    let addr = bench.workers.stratum_addr();
    // The storm: 1,000 connections at once from 50 threads.
    let readers = Arc::new(Mutex::new(Vec::new()));
    let errors = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let threads: Vec<_> = (0..50)
        .map(|_| {
            let (readers, errors, user) = (readers.clone(), errors.clone(), bench.user.clone());
            thread::spawn(move || {
                for _ in 0..STRATUM_CONNECTIONS / 50 {
                    match stratum_login(addr, &user) {
                        Ok(r) => readers.lock().unwrap().push(r),
                        Err(e) => {
                            eprintln!("storm: {e}");
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    let storm = start.elapsed();
    let readers = std::mem::take(&mut *readers.lock().unwrap());
    println!(
        "stratum connect storm: {} connections subscribed, authorized and notified in {:.2} s, {} errors",
        readers.len(),
        storm.as_secs_f64(),
        errors.load(Ordering::Relaxed)
    );

    // New work to all of them, ROUNDS times: one thread per connection waits for its
    // notify. Then ROUNDS more in which the readers wait until the writes are done, which
    // gives the server's own part without the readers taking the cores.
    let n = readers.len();
    let barrier = Arc::new(Barrier::new(n + 1));
    let arrivals = Arrivals::new(n);
    let threads: Vec<_> = readers
        .into_iter()
        .enumerate()
        .map(|(slot, mut r)| {
            let (barrier, arrivals) = (barrier.clone(), arrivals.clone());
            thread::Builder::new()
                .stack_size(64 * 1024)
                .spawn(move || {
                    for round in 0..3 * ROUNDS {
                        barrier.wait();
                        if (ROUNDS..2 * ROUNDS).contains(&round) {
                            thread::sleep(IDLE_READERS);
                        }
                        if wait_notify(&mut r).is_ok() {
                            arrivals.record(slot);
                        }
                    }
                    // Exiting threads would compete with the last round's writes.
                    barrier.wait();
                })
                .expect("reader thread")
        })
        .collect();
    let (mut read, mut written, mut alone) = (Vec::new(), Vec::new(), Vec::new());
    let mut accepted = Vec::new();
    for round in 0..3 * ROUNDS {
        barrier.wait();
        thread::sleep(Duration::from_millis(200));
        let (published, work) = if round < 2 * ROUNDS {
            (Instant::now(), bench.new_work())
        } else {
            bench.accepted_block_work()
        };
        let work_id = work.id;
        bench.workers.publish(work);
        let last = arrivals
            .last_and_reset()
            .expect("every connection notified");
        // The record is stored just after the last write returned.
        let deadline = Instant::now() + Duration::from_secs(5);
        let broadcast = loop {
            match bench.workers.last_stratum_broadcast() {
                Some(b) if b.work == work_id => break b,
                _ if Instant::now() > deadline => panic!("no broadcast of work {work_id}"),
                _ => thread::sleep(Duration::from_millis(1)),
            }
        };
        assert_eq!(broadcast.miners, n, "every connection written to");
        if round < ROUNDS {
            read.push(last.duration_since(published));
            written.push(broadcast.took);
        } else if round < 2 * ROUNDS {
            assert!(
                broadcast.took < IDLE_READERS,
                "the writes ended before the reads"
            );
            alone.push(broadcast.took);
        } else {
            accepted.push(last.duration_since(published));
        }
    }
    barrier.wait();
    for t in threads {
        let _ = t.join();
    }
    let ms = |v: &[Duration], p: f64| percentile(v.to_vec(), p).as_secs_f64() * 1e3;
    println!(
        "new work to {n} stratum connections, until the last notify is read: median {:.1} ms, worst {:.1} ms ({ROUNDS} rounds)",
        ms(&read, 0.5),
        ms(&read, 1.0),
    );
    println!(
        "  the server's part, until its last write returned: median {:.1} ms, worst {:.1} ms",
        ms(&written, 0.5),
        ms(&written, 1.0),
    );
    println!(
        "  the server alone (readers wait until the writes are done): median {:.1} ms, worst {:.1} ms",
        ms(&alone, 0.5),
        ms(&alone, 1.0),
    );
    println!(
        "our block accepted by bitcoind -> work on it read by all {n} stratum connections: median {:.1} ms, worst {:.1} ms ({ROUNDS} rounds)",
        ms(&accepted, 0.5),
        ms(&accepted, 1.0),
    );
}

fn long_polls(bench: &mut Bench) {
    let addr = bench.workers.worker_addr();
    let mut times = Vec::new();
    for _ in 0..ROUNDS {
        // One getwork marks the client (address and Authorization) as having the work, so
        // its long polls park.
        let mut s = TcpStream::connect(addr).expect("connects");
        s.write_all(&request(&bench.user, "/", false))
            .expect("sent");
        let mut r = BufReader::new(s);
        assert_eq!(read_answer(&mut r).map(|a| a.0), Some(200));
        let barrier = Arc::new(Barrier::new(LONG_POLLS + 1));
        let done = Arc::new(Barrier::new(LONG_POLLS + 1));
        let arrivals = Arrivals::new(LONG_POLLS);
        let threads: Vec<_> = (0..LONG_POLLS)
            .map(|slot| {
                let (barrier, done, arrivals, user) = (
                    barrier.clone(),
                    done.clone(),
                    arrivals.clone(),
                    bench.user.clone(),
                );
                thread::Builder::new()
                    .stack_size(64 * 1024)
                    .spawn(move || {
                        let mut s = TcpStream::connect(addr).expect("connects");
                        s.write_all(&request(&user, "/long-polling", false))
                            .expect("sent");
                        let mut r = BufReader::new(s);
                        barrier.wait();
                        if read_answer(&mut r).is_some_and(|(st, b)| st == 200 && b.len() > 400) {
                            arrivals.record(slot);
                        }
                        // Exiting threads would compete with the answers still going out.
                        done.wait();
                    })
                    .expect("long-poll thread")
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        while bench.workers.parked_long_polls() < LONG_POLLS {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "long polls not parked: {} of {LONG_POLLS}",
                bench.workers.parked_long_polls()
            );
            thread::sleep(Duration::from_millis(5));
        }
        let work = bench.new_work();
        let published = Instant::now();
        bench.workers.publish(work);
        let last = arrivals.last_and_reset();
        done.wait();
        for t in threads {
            let _ = t.join();
        }
        let last = last.expect("every long poll answered with work");
        times.push(last.duration_since(published));
    }
    println!(
        "new work to {LONG_POLLS} parked long polls, until the last answer is read: median {:.1} ms, worst {:.1} ms ({ROUNDS} rounds)",
        percentile(times.clone(), 0.5).as_secs_f64() * 1e3,
        percentile(times, 1.0).as_secs_f64() * 1e3,
    );
}

fn main() {
    if !common::measuring() {
        return;
    }
    let net = regtest::net(U256::MAX >> 18);
    let node_payout = script::p2pkh(&[0xee; 20]);
    let mut config = WorkerConfig::new(net.clone(), node_payout);
    config.worker_addr = "127.0.0.1:0".parse().expect("addr");
    config.stratum_addr = "127.0.0.1:0".parse().expect("addr");
    let (workers, _events) = Workers::start(config, None).expect("workers start");
    let user = address::from_script(&script::p2pkh(&[7; 20]), &net.bitcoin).expect("address");
    let mut core = Core::new(
        ShareChain::new(net.clone()),
        History::default(),
        Settings {
            fee_percent: 0.0,
            start_new_chain: true,
            payout_address: String::new(),
            our_mode: p2pool::p2p::MODE_NORMAL,
            started_at: now(),
        },
    );
    let first = regtest::template(0);
    let tip = (first.previous_block, first.height);
    core.on(Event::Template(first), now());
    let mut bench = Bench {
        workers,
        chain: ShareChain::new(net),
        user,
        round: 0,
        core,
        tip,
    };
    let work = bench.new_work();
    bench.workers.publish(work);
    let addr = bench.workers.worker_addr();
    for (clients, keep_alive) in [(8, true), (8, false)] {
        let rate = getwork_rate(addr, &bench.user, clients, keep_alive);
        println!(
            "getwork: {rate:.0} requests/s ({clients} clients, {})",
            if keep_alive {
                "keep-alive"
            } else {
                "a connection per request"
            }
        );
    }
    long_polls(&mut bench);
    stratum(&mut bench);
    bench.workers.stop();
}
