//! Stratum at scale (issue 15): the real `Workers` on loopback in this process, with a
//! `Work` built from a JSON `Template` on an empty sharechain (as `benches/worker.rs`), and
//! N miners (1,000 and 10,000 by default) in a second process: this bench run again with
//! `P2POOL_BENCH_STRATUM_CLIENT` set, which holds every connection on non-blocking sockets
//! with two epoll threads, so that the miners take no thread of the server's. The two
//! talk over the client's stdin and stdout, one line a command and one line an answer;
//! times cross the pipe as CLOCK_MONOTONIC nanoseconds, the same clock in both processes.
//!
//! Measured, each against the issue's target:
//! - the connect storm: from the first connect until every connection is subscribed,
//!   authorized and has its first `mining.notify` (at most `IN_FLIGHT` connections being
//!   set up at once, below the kernel's default accept-queue cap of 4,096); errors;
//! - the notify fan-out: from `Workers::publish` until the last connection has read its
//!   clean `mining.notify`, median over `ROUNDS` rounds (and the server's own part,
//!   `Workers::last_stratum_broadcast`);
//! - idle, N connected, for `IDLE`: the server process's CPU and context switches per
//!   second (getrusage), and its resident memory (VmRSS) before and with N connected;
//! - `SUBMITS_PER_SECOND` `mining.submit`s spread over the connections, each a real
//!   pseudo-share ground by the client against the network's easiest target (the miners'
//!   `/DIFF` share floor keeps them out of the share chain): answer latency p50/p99;
//! - the fan-out again with one stalled miner (authorized, never reading, a 4 KiB
//!   receive buffer): what it adds;
//! - shutdown: from `Workers::stop` until every client socket has seen the close, and
//!   until the server's connection threads have all ended.
//!
//! A plain binary (harness = false): `cargo bench --bench stratum_scale`;
//! `P2POOL_BENCH_CONNECTIONS=1000` (or `10000`, or `1000,10000`, the default) picks the
//! counts, each run in a fresh server process.

mod common;
#[path = "common/regtest.rs"]
mod regtest;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, unbounded};
use p2pool::bitcoin::address;
use p2pool::bitcoin::hash::sha256d;
use p2pool::bitcoin::script;
use p2pool::sharechain::chain::ShareChain;
use p2pool::worker::{Work, WorkerConfig, Workers};
use ruint::aliases::U256;
use serde_json::{Value, json};
use socket2::{Domain, Socket, Type};

/// Set in the client process's environment.
const CLIENT_ENV: &str = "P2POOL_BENCH_STRATUM_CLIENT";
/// The connection counts to run, comma-separated.
const CONNECTIONS_ENV: &str = "P2POOL_BENCH_CONNECTIONS";
const DEFAULT_COUNTS: [usize; 2] = [1_000, 10_000];
/// Client threads, each with its own epoll and its share of the connections.
const CLIENT_THREADS: usize = 2;
/// Connections being set up at once per client thread (connect sent, first notify not yet
/// read): the storm goes as fast as the server accepts, without overflowing an accept
/// queue the kernel caps at `net.core.somaxconn` (4,096 by default).
const IN_FLIGHT: usize = 1_024;
const ROUNDS: usize = 5;
const IDLE: Duration = Duration::from_secs(10);
const SUBMITS_PER_SECOND: u64 = 1_000;
const SUBMIT_FOR: Duration = Duration::from_secs(5);
/// How long the client waits for anything before giving up on it.
const CLIENT_WAIT: Duration = Duration::from_secs(20);

fn main() {
    if std::env::var_os(CLIENT_ENV).is_some() {
        client::run();
        return;
    }
    if !common::measuring() {
        return;
    }
    let counts: Vec<usize> = match std::env::var(CONNECTIONS_ENV) {
        Ok(s) => s
            .split(',')
            .map(|n| n.trim().parse().expect("P2POOL_BENCH_CONNECTIONS: counts"))
            .collect(),
        Err(_) => DEFAULT_COUNTS.to_vec(),
    };
    if counts.len() == 1 {
        server::run(counts[0]);
        return;
    }
    // Each count in a fresh process: its memory figures start from nothing.
    for n in counts {
        let status = Command::new(std::env::current_exe().expect("this bench's path"))
            .args(std::env::args_os().skip(1))
            .env(CONNECTIONS_ENV, n.to_string())
            .status()
            .expect("the bench runs again");
        assert!(status.success(), "the run with {n} connections failed");
    }
}

/// CLOCK_MONOTONIC in nanoseconds (what `Instant` reads on Linux), comparable between
/// the two processes.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a valid pointer to a local.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

mod server {
    use super::*;

    /// The easiest target of the bench's network: a pseudo-share takes 16 hashes.
    fn max_target() -> U256 {
        U256::MAX >> 4
    }

    /// The client process and its pipe.
    struct Client {
        child: Child,
        to: ChildStdin,
        from: BufReader<ChildStdout>,
    }

    impl Client {
        fn start() -> Client {
            let mut child = Command::new(std::env::current_exe().expect("this bench's path"))
                .env(CLIENT_ENV, "1")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("the client process starts");
            let to = child.stdin.take().expect("stdin");
            let from = BufReader::new(child.stdout.take().expect("stdout"));
            Client { child, to, from }
        }

        fn send(&mut self, command: &str) {
            writeln!(self.to, "{command}").expect("the client takes commands");
            self.to.flush().expect("flushed");
        }

        /// The next answer, split in words; its first word must be `what`.
        fn answer(&mut self, what: &str) -> Vec<u64> {
            let mut line = String::new();
            self.from.read_line(&mut line).expect("the client answers");
            let mut words = line.split_whitespace();
            assert_eq!(words.next(), Some(what), "client answered {line:?}");
            words
                .map(|w| w.parse().expect("numbers after the answer's name"))
                .collect()
        }
    }

    /// (VmRSS in KiB, threads) of this process.
    fn status() -> (u64, u64) {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        (field("VmRSS:"), field("Threads:"))
    }

    /// Resident KiB of this process by kind of mapping: (thread stacks, where the
    /// connection threads' 256 KiB stacks lie; the rest of the anonymous memory, the heap
    /// and malloc's arenas; everything else: the binary, libraries).
    fn rss_by_kind() -> (u64, u64, u64) {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap_or_default();
        let (mut stacks, mut anon, mut other) = (0, 0, 0);
        let mut kind = 2;
        for line in smaps.lines() {
            let mut words = line.split_whitespace();
            let first = words.next().unwrap_or("");
            if let Some((a, b)) = first.split_once('-')
                && let (Ok(a), Ok(b)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16))
            {
                let path = words.nth(4);
                kind = match path {
                    // A thread's stack mapping holds its guard page too.
                    None if (256..=264).contains(&((b - a) / 1024)) => 0,
                    None | Some("[heap]") => 1,
                    _ => 2,
                };
            } else if first == "Rss:" {
                let kib: u64 = words.next().and_then(|v| v.parse().ok()).unwrap_or(0);
                match kind {
                    0 => stacks += kib,
                    1 => anon += kib,
                    _ => other += kib,
                }
            }
        }
        (stacks, anon, other)
    }

    /// (CPU seconds, context switches) of this process so far.
    fn usage() -> (f64, u64) {
        // SAFETY: rusage is plain data; getrusage fills it through a valid pointer.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
        let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        (
            secs(ru.ru_utime) + secs(ru.ru_stime),
            (ru.ru_nvcsw + ru.ru_nivcsw) as u64,
        )
    }

    fn load() -> String {
        std::fs::read_to_string("/proc/loadavg")
            .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    }

    fn ms(ns: u64) -> f64 {
        ns as f64 / 1e6
    }

    fn median(mut v: Vec<u64>) -> u64 {
        v.sort_unstable();
        v[v.len() / 2]
    }

    struct Bench {
        workers: Workers,
        chain: ShareChain,
        round: u8,
        client: Client,
        n: usize,
    }

    impl Bench {
        fn new_work(&mut self) -> Arc<Work> {
            self.round = self.round.wrapping_add(1);
            Arc::new(
                Work::build(
                    &self.chain,
                    &regtest::template(self.round),
                    None,
                    regtest::now(),
                )
                .expect("work"),
            )
        }

        /// `ROUNDS` broadcasts: (until the last client read its notify, until the
        /// server's last write returned), in nanoseconds each.
        fn fan_out(&mut self) -> (Vec<u64>, Vec<u64>) {
            let (mut read, mut written) = (Vec::new(), Vec::new());
            for _ in 0..ROUNDS {
                thread::sleep(Duration::from_millis(300));
                let work = self.new_work();
                let id = work.id;
                self.client.send("watch");
                self.client.answer("watching");
                let published = monotonic_ns();
                self.workers.publish(work);
                let a = self.client.answer("notified");
                assert_eq!(a[0], self.n as u64, "every connection notified");
                read.push(a[1].saturating_sub(published));
                let broadcast = loop {
                    match self.workers.last_stratum_broadcast() {
                        Some(b) if b.work == id => break b,
                        _ => thread::sleep(Duration::from_millis(1)),
                    }
                };
                written.push(broadcast.took.as_nanos() as u64);
            }
            (read, written)
        }
    }

    /// One figure against its target.
    fn row(figure: &str, target: &str, measured: String, met: Option<bool>) {
        let verdict = match met {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "",
        };
        println!("  {figure:<58} target {target:<10} measured {measured} {verdict}");
    }

    pub fn run(n: usize) {
        // The allocator set as the node sets it at start.
        assert!(
            p2pool::limits::bound_allocator(),
            "the allocator's mmap threshold"
        );
        let files = p2pool::limits::raise_open_files().expect("open-files limit");
        let net = regtest::net(max_target());
        let mut config = WorkerConfig::new(net.clone(), script::p2pkh(&[0xee; 20]));
        config.worker_addr = "127.0.0.1:0".parse().expect("addr");
        config.stratum_addr = "127.0.0.1:0".parse().expect("addr");
        // Miners start at the easiest difficulty, where idle vardiff has nothing to lower.
        config.initial_difficulty = 0.0;
        let (workers, events) = Workers::start(config, None).expect("workers start");
        // No share is ever made (the miners' share floor); drained all the same.
        thread::spawn(move || for _ in events {});
        let user = format!(
            "{}/1000000000000",
            address::from_script(&script::p2pkh(&[7; 20]), &net.bitcoin).expect("address")
        );
        let mut bench = Bench {
            workers,
            chain: ShareChain::new(net),
            round: 0,
            client: Client::start(),
            n,
        };
        let work = bench.new_work();
        bench.workers.publish(work);
        let addr = bench.workers.stratum_addr();
        thread::sleep(Duration::from_millis(200));
        let (rss_before, threads_before) = status();
        println!(
            "stratum at scale: {n} connections (open files {}, load {})",
            files.now,
            load()
        );

        // The storm.
        bench.client.send(&format!("connect {addr} {n} {user}"));
        let a = bench.client.answer("connected");
        let (ok, errors, storm) = (a[0], a[1], a[2]);
        assert_eq!(
            ok as usize, n,
            "every connection logged in ({errors} errors)"
        );
        while bench.workers.stratum_connections() < n {
            thread::sleep(Duration::from_millis(10));
        }

        // Idle.
        thread::sleep(Duration::from_secs(1));
        let (rss_connected, threads_connected) = status();
        let kinds_connected = rss_by_kind();
        let (cpu0, cs0) = usage();
        let t0 = monotonic_ns();
        thread::sleep(IDLE);
        let (cpu1, cs1) = usage();
        let idle_secs = (monotonic_ns() - t0) as f64 / 1e9;
        let idle_cpu = (cpu1 - cpu0) / idle_secs * 100.0;
        let idle_cs = (cs1 - cs0) as f64 / idle_secs;
        let idle_load = load();

        // Fan-out.
        let (read, written) = bench.fan_out();

        // Submits.
        let target = max_target() - (max_target() >> 10);
        bench.client.send(&format!(
            "submit {SUBMITS_PER_SECOND} {} {target:x}",
            SUBMIT_FOR.as_millis()
        ));
        let s = bench.client.answer("submitted");
        let (sent, answered, accepted, rejected, p50, p99, worst) =
            (s[0], s[1], s[2], s[3], s[4], s[5], s[6]);
        let (rss_after, _) = status();
        let kinds_after = rss_by_kind();

        // One stalled miner.
        bench.client.send(&format!("stall {addr} {user}"));
        bench.client.answer("stalled");
        while bench.workers.stratum_connections() < n + 1 {
            thread::sleep(Duration::from_millis(10));
        }
        thread::sleep(Duration::from_millis(200));
        let (stalled_read, stalled_written) = bench.fan_out();

        // Shutdown.
        bench.client.send("eof");
        bench.client.answer("armed");
        let stop = monotonic_ns();
        bench.workers.stop();
        let returned = monotonic_ns() - stop;
        let ended = loop {
            let (_, threads) = status();
            if threads <= threads_before.saturating_sub(4) || monotonic_ns() - stop > 10_000_000_000
            {
                break monotonic_ns() - stop;
            }
            thread::sleep(Duration::from_millis(1));
        };
        let a = bench.client.answer("closed");
        let (closed, last_eof) = (a[0], a[1]);
        bench.client.send("quit");
        let _ = bench.client.child.wait();

        let big = n >= 10_000;
        println!("  (idle measured at load {idle_load})");
        row(
            "connect storm: subscribed, authorized, first notify",
            if big { "< 3 s" } else { "< 0.3 s" },
            format!("{:.3} s, {errors} errors", storm as f64 / 1e9),
            Some(storm < if big { 3_000_000_000 } else { 300_000_000 } && errors == 0),
        );
        let fan = median(read.clone());
        row(
            "notify fan-out, publish to the last notify read (median)",
            if big { "≤ 150 ms" } else { "≤ 15 ms" },
            format!(
                "{:.1} ms (worst {:.1} ms; the server's last write {:.1} ms)",
                ms(fan),
                ms(*read.iter().max().expect("rounds")),
                ms(median(written))
            ),
            Some(fan <= if big { 150_000_000 } else { 15_000_000 }),
        );
        row(
            "idle: server CPU",
            if big { "< 0.5 %" } else { "" },
            format!("{idle_cpu:.2} %"),
            big.then_some(idle_cpu < 0.5),
        );
        row(
            "idle: server context switches",
            if big { "< 500/s" } else { "" },
            format!("{idle_cs:.0}/s"),
            big.then_some(idle_cs < 500.0),
        );
        let rss_target = if big { 150 * 1024 } else { 20 * 1024 };
        row(
            "server RSS with N connected (idle; after the submits)",
            if big { "< 150 MB" } else { "< 20 MB" },
            format!(
                "{:.1} MB; {:.1} MB (before connecting {:.1} MB; {} threads, {} before)",
                rss_connected as f64 / 1024.0,
                rss_after as f64 / 1024.0,
                rss_before as f64 / 1024.0,
                threads_connected,
                threads_before
            ),
            Some(rss_connected.max(rss_after) < rss_target),
        );
        for (when, (stacks, anon, other)) in [
            ("idle", kinds_connected),
            ("after the submits", kinds_after),
        ] {
            println!(
                "    {when}: thread stacks {:.1} MB ({:.1} KiB a connection), heap and arenas {:.1} MB ({:.1} KiB a connection), the rest {:.1} MB",
                stacks as f64 / 1024.0,
                stacks as f64 / n as f64,
                anon as f64 / 1024.0,
                anon as f64 / n as f64,
                other as f64 / 1024.0
            );
        }
        row(
            "submit answer p99 (1,000/s over the connections)",
            "< 2 ms",
            format!(
                "{:.2} ms (p50 {:.2} ms, worst {:.2} ms; {sent} sent, {answered} answered, {accepted} accepted, {rejected} refused)",
                p99 as f64 / 1e3,
                p50 as f64 / 1e3,
                worst as f64 / 1e3
            ),
            Some(p99 < 2_000 && answered == sent && rejected == 0),
        );
        let with = median(stalled_read);
        row(
            "fan-out with one stalled miner (median)",
            "+ nothing",
            format!(
                "{:.1} ms vs {:.1} ms without (the server's last write {:.1} ms)",
                ms(with),
                ms(fan),
                ms(median(stalled_written))
            ),
            None,
        );
        row(
            "shutdown: Workers::stop to every client socket closed",
            "< 2 s",
            format!(
                "{:.0} ms for {closed} sockets (stop returned after {:.0} ms, connection threads ended after {:.0} ms)",
                ms(last_eof.saturating_sub(stop)),
                ms(returned),
                ms(ended)
            ),
            Some(last_eof.saturating_sub(stop) < 2_000_000_000 && closed == n as u64),
        );
    }
}

/// The miners' process: `CLIENT_THREADS` threads, each an epoll loop over its share of the
/// connections; the main thread reads commands on stdin, hands them to every thread and
/// writes the combined answer on stdout.
mod client {
    use super::*;

    /// What the main thread asks of a client thread.
    #[derive(Clone)]
    enum Command {
        Connect {
            addr: SocketAddr,
            count: usize,
            user: String,
        },
        Watch,
        Submit {
            per_second: u64,
            for_ns: u64,
            target: U256,
        },
        Stall {
            addr: SocketAddr,
            user: String,
        },
        Eof,
    }

    enum Answer {
        Connected {
            ok: usize,
            errors: usize,
            first: u64,
            last: u64,
        },
        Watching,
        Notified {
            count: usize,
            last: u64,
        },
        Submitted {
            sent: u64,
            latencies: Vec<u64>,
            accepted: u64,
            rejected: u64,
        },
        Stalled,
        Armed,
        Closed {
            count: usize,
            last: u64,
        },
    }

    struct Handle {
        commands: Sender<Command>,
        wake: i32,
    }

    impl Handle {
        fn send(&self, c: Command) {
            self.commands.send(c).expect("client thread alive");
            let one: u64 = 1;
            // SAFETY: writes 8 bytes from a local to the thread's eventfd.
            unsafe { libc::write(self.wake, (&one as *const u64).cast(), 8) };
        }
    }

    pub fn run() {
        let _ = p2pool::limits::raise_open_files();
        let (answers_tx, answers) = unbounded();
        let handles: Vec<Handle> = (0..CLIENT_THREADS)
            .map(|i| {
                let (tx, rx) = unbounded();
                // SAFETY: eventfd takes no pointer.
                let wake = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
                assert!(wake >= 0, "eventfd");
                let answers = answers_tx.clone();
                thread::Builder::new()
                    .name(format!("client_{i}"))
                    .spawn(move || Shard::new(i, wake, rx, answers).run())
                    .expect("client thread");
                Handle { commands: tx, wake }
            })
            .collect();
        let all = |c: Command| {
            for h in &handles {
                h.send(c.clone());
            }
        };
        let collect = |k: usize| -> Vec<Answer> {
            (0..k)
                .map(|_| answers.recv().expect("client threads answer"))
                .collect()
        };
        let stdin = std::io::stdin();
        let mut out = std::io::stdout();
        for line in stdin.lock().lines() {
            let Ok(line) = line else { break };
            let words: Vec<&str> = line.split_whitespace().collect();
            let reply = match words.as_slice() {
                ["connect", addr, n, user] => {
                    let n: usize = n.parse().expect("count");
                    let addr: SocketAddr = addr.parse().expect("address");
                    for (i, h) in handles.iter().enumerate() {
                        let count = n / CLIENT_THREADS + usize::from(i < n % CLIENT_THREADS);
                        h.send(Command::Connect {
                            addr,
                            count,
                            user: user.to_string(),
                        });
                    }
                    let (mut ok, mut errors, mut first, mut last) = (0, 0, u64::MAX, 0);
                    for a in collect(CLIENT_THREADS) {
                        if let Answer::Connected {
                            ok: o,
                            errors: e,
                            first: f,
                            last: l,
                        } = a
                        {
                            ok += o;
                            errors += e;
                            first = first.min(f);
                            last = last.max(l);
                        }
                    }
                    format!("connected {ok} {errors} {}", last.saturating_sub(first))
                }
                ["watch"] => {
                    all(Command::Watch);
                    collect(CLIENT_THREADS);
                    writeln!(out, "watching").expect("stdout");
                    out.flush().expect("stdout");
                    let (mut count, mut last) = (0, 0);
                    for a in collect(CLIENT_THREADS) {
                        if let Answer::Notified { count: c, last: l } = a {
                            count += c;
                            last = last.max(l);
                        }
                    }
                    format!("notified {count} {last}")
                }
                ["submit", rate, millis, target] => {
                    let rate: u64 = rate.parse().expect("rate");
                    let millis: u64 = millis.parse().expect("duration");
                    let target = U256::from_str_radix(target, 16).expect("target");
                    all(Command::Submit {
                        per_second: rate / CLIENT_THREADS as u64,
                        for_ns: millis * 1_000_000,
                        target,
                    });
                    let (mut sent, mut all_latencies, mut accepted, mut rejected) =
                        (0, Vec::new(), 0, 0);
                    for a in collect(CLIENT_THREADS) {
                        if let Answer::Submitted {
                            sent: s,
                            latencies,
                            accepted: ac,
                            rejected: r,
                        } = a
                        {
                            sent += s;
                            all_latencies.extend(latencies);
                            accepted += ac;
                            rejected += r;
                        }
                    }
                    all_latencies.sort_unstable();
                    let p = |q: f64| {
                        all_latencies
                            .get(((all_latencies.len() as f64 - 1.0) * q).round() as usize)
                            .map_or(0, |ns| ns / 1_000)
                    };
                    format!(
                        "submitted {sent} {} {accepted} {rejected} {} {} {}",
                        all_latencies.len(),
                        p(0.5),
                        p(0.99),
                        p(1.0)
                    )
                }
                ["stall", addr, user] => {
                    handles[0].send(Command::Stall {
                        addr: addr.parse().expect("address"),
                        user: user.to_string(),
                    });
                    collect(1);
                    "stalled".to_string()
                }
                ["eof"] => {
                    all(Command::Eof);
                    collect(CLIENT_THREADS);
                    writeln!(out, "armed").expect("stdout");
                    out.flush().expect("stdout");
                    let (mut count, mut last) = (0, 0);
                    for a in collect(CLIENT_THREADS) {
                        if let Answer::Closed { count: c, last: l } = a {
                            count += c;
                            last = last.max(l);
                        }
                    }
                    format!("closed {count} {last}")
                }
                ["quit"] => break,
                _ => panic!("unknown command {line:?}"),
            };
            writeln!(out, "{reply}").expect("stdout");
            out.flush().expect("stdout");
        }
    }

    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Phase {
        Connecting,
        LoggingIn,
        Ready,
        Closed,
    }

    struct Conn {
        socket: Socket,
        phase: Phase,
        /// A line not yet ended.
        partial: Vec<u8>,
        extranonce1: Vec<u8>,
        /// The latest `mining.notify` line.
        notify: String,
        /// A clean notify was read since the last `watch`.
        clean: bool,
        extranonce2: u32,
    }

    /// What the thread is waiting for, to answer the main thread.
    enum Waiting {
        Nothing,
        Connect {
            queued: Vec<usize>,
            first: u64,
        },
        Notify {
            since: u64,
        },
        Submits {
            start: u64,
            until: u64,
            interval: u64,
            next: u64,
            target: U256,
        },
        Eof {
            since: u64,
        },
    }

    /// The epoll token of the command eventfd.
    const WAKE: u64 = u64::MAX;

    struct Shard {
        index: usize,
        epoll: i32,
        wake: i32,
        commands: Receiver<Command>,
        answers: Sender<Answer>,
        conns: Vec<Conn>,
        waiting: Waiting,
        /// Connections set up and failed in this connect.
        in_flight: usize,
        errors: usize,
        last_ready: u64,
        notified: usize,
        last_notified: u64,
        closed: usize,
        last_closed: u64,
        /// Submits in flight: id → when sent.
        pending: HashMap<u64, u64>,
        next_id: u64,
        next_conn: usize,
        sent: u64,
        latencies: Vec<u64>,
        accepted: u64,
        rejected: u64,
        stalled: Vec<Socket>,
        /// Connections logged in (their first notify read).
        ready: usize,
        /// Connections open when the close was awaited.
        open_at_arm: usize,
        login_user: String,
        login_addr: Option<SocketAddr>,
    }

    fn login(user: &str) -> String {
        format!(
            "{}\n{}\n",
            json!({"id": 1, "method": "mining.subscribe", "params": ["bench/1"]}),
            json!({"id": 2, "method": "mining.authorize", "params": [user, "x"]})
        )
    }

    impl Shard {
        fn new(
            index: usize,
            wake: i32,
            commands: Receiver<Command>,
            answers: Sender<Answer>,
        ) -> Shard {
            // SAFETY: epoll_create1 takes no pointer.
            let epoll = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
            assert!(epoll >= 0, "epoll_create1");
            let shard = Shard {
                index,
                epoll,
                wake,
                commands,
                answers,
                conns: Vec::new(),
                waiting: Waiting::Nothing,
                in_flight: 0,
                errors: 0,
                last_ready: 0,
                notified: 0,
                last_notified: 0,
                closed: 0,
                last_closed: 0,
                pending: HashMap::new(),
                next_id: 100,
                next_conn: 0,
                sent: 0,
                latencies: Vec::new(),
                accepted: 0,
                rejected: 0,
                stalled: Vec::new(),
                ready: 0,
                open_at_arm: 0,
                login_user: String::new(),
                login_addr: None,
            };
            shard.ctl(libc::EPOLL_CTL_ADD, wake, libc::EPOLLIN as u32, WAKE);
            shard
        }

        fn ctl(&self, op: i32, fd: i32, events: u32, token: u64) {
            let mut ev = libc::epoll_event { events, u64: token };
            // SAFETY: epoll_ctl reads one epoll_event through a valid pointer to a local.
            let r = unsafe { libc::epoll_ctl(self.epoll, op, fd, &mut ev) };
            assert!(
                r == 0 || op == libc::EPOLL_CTL_DEL,
                "epoll_ctl: {}",
                std::io::Error::last_os_error()
            );
        }

        fn run(mut self) {
            let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
            loop {
                let timeout = match &self.waiting {
                    Waiting::Submits { next, until, .. } => {
                        let due = (*next).min(*until);
                        (due.saturating_sub(monotonic_ns()) / 1_000_000) as i32
                    }
                    Waiting::Nothing => -1,
                    _ => 100,
                };
                // SAFETY: epoll_wait writes at most `events.len()` events into the buffer.
                let n = unsafe {
                    libc::epoll_wait(
                        self.epoll,
                        events.as_mut_ptr(),
                        events.len() as i32,
                        timeout,
                    )
                };
                for ev in events.iter().take(n.max(0) as usize) {
                    let (token, flags) = (ev.u64, ev.events);
                    if token == WAKE {
                        let mut count = 0u64;
                        // SAFETY: reads 8 bytes into a local.
                        unsafe { libc::read(self.wake, (&mut count as *mut u64).cast(), 8) };
                        while let Ok(c) = self.commands.try_recv() {
                            self.command(c);
                        }
                    } else {
                        self.event(token as usize, flags);
                    }
                }
                self.progress();
            }
        }

        fn command(&mut self, c: Command) {
            match c {
                Command::Connect { addr, count, user } => {
                    let queued: Vec<usize> = (0..count)
                        .map(|_| {
                            let socket =
                                Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
                            socket.set_nonblocking(true).expect("non-blocking");
                            socket.set_tcp_nodelay(true).expect("nodelay");
                            self.conns.push(Conn {
                                socket,
                                phase: Phase::Connecting,
                                partial: Vec::new(),
                                extranonce1: Vec::new(),
                                notify: String::new(),
                                clean: false,
                                extranonce2: 0,
                            });
                            self.conns.len() - 1
                        })
                        .rev()
                        .collect();
                    self.waiting = Waiting::Connect {
                        queued,
                        first: monotonic_ns(),
                    };
                    self.in_flight = 0;
                    self.login_user = user;
                    self.login_addr = Some(addr);
                    self.dial_more();
                }
                Command::Watch => {
                    for c in &mut self.conns {
                        c.clean = false;
                    }
                    self.notified = 0;
                    self.waiting = Waiting::Notify {
                        since: monotonic_ns(),
                    };
                    self.answers.send(Answer::Watching).expect("main thread");
                }
                Command::Submit {
                    per_second,
                    for_ns,
                    target,
                } => {
                    let start = monotonic_ns();
                    self.sent = 0;
                    self.latencies.clear();
                    self.accepted = 0;
                    self.rejected = 0;
                    // The two threads' submits interleave.
                    let interval = 1_000_000_000 / per_second.max(1);
                    self.waiting = Waiting::Submits {
                        start,
                        until: start + for_ns,
                        interval,
                        next: start + interval * self.index as u64 / CLIENT_THREADS as u64,
                        target,
                    };
                }
                Command::Stall { addr, user } => {
                    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
                    socket.set_recv_buffer_size(4096).expect("receive buffer");
                    socket
                        .connect(&addr.into())
                        .expect("the stalled miner connects");
                    (&socket)
                        .write_all(login(&user).as_bytes())
                        .expect("login sent");
                    self.stalled.push(socket);
                    self.answers.send(Answer::Stalled).expect("main thread");
                }
                Command::Eof => {
                    self.open_at_arm = self
                        .conns
                        .iter()
                        .filter(|c| c.phase != Phase::Closed)
                        .count();
                    self.closed = 0;
                    self.last_closed = 0;
                    self.waiting = Waiting::Eof {
                        since: monotonic_ns(),
                    };
                    self.answers.send(Answer::Armed).expect("main thread");
                }
            }
        }
        /// Starts connects while fewer than `IN_FLIGHT` are being set up.
        fn dial_more(&mut self) {
            let Some(addr) = self.login_addr else { return };
            let Waiting::Connect { queued, .. } = &mut self.waiting else {
                return;
            };
            let mut started = Vec::new();
            while self.in_flight + started.len() < IN_FLIGHT {
                let Some(i) = queued.pop() else { break };
                started.push(i);
            }
            for i in started {
                let conn = &mut self.conns[i];
                match conn.socket.connect(&addr.into()) {
                    Ok(()) => {}
                    Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
                    Err(e) => {
                        eprintln!("client: connect: {e}");
                        conn.phase = Phase::Closed;
                        self.errors += 1;
                        continue;
                    }
                }
                self.in_flight += 1;
                let fd = self.conns[i].socket.as_raw_fd();
                self.ctl(
                    libc::EPOLL_CTL_ADD,
                    fd,
                    (libc::EPOLLIN | libc::EPOLLOUT) as u32,
                    i as u64,
                );
            }
        }

        fn event(&mut self, i: usize, flags: u32) {
            let now = monotonic_ns();
            if self.conns[i].phase == Phase::Connecting && flags & libc::EPOLLOUT as u32 != 0 {
                let conn = &mut self.conns[i];
                let failed = match conn.socket.take_error() {
                    Ok(None) => (&conn.socket)
                        .write_all(login(&self.login_user).as_bytes())
                        .err(),
                    Ok(Some(e)) | Err(e) => Some(e),
                };
                if let Some(e) = failed {
                    eprintln!("client: connect: {e}");
                    self.close(i, now);
                    return;
                }
                conn.phase = Phase::LoggingIn;
                let fd = conn.socket.as_raw_fd();
                self.ctl(libc::EPOLL_CTL_MOD, fd, libc::EPOLLIN as u32, i as u64);
            }
            if flags & (libc::EPOLLIN | libc::EPOLLHUP | libc::EPOLLERR) as u32 == 0 {
                return;
            }
            let mut chunk = [0u8; 16 * 1024];
            loop {
                match (&self.conns[i].socket).read(&mut chunk) {
                    Ok(0) => {
                        self.close(i, now);
                        return;
                    }
                    Ok(n) => self.conns[i].partial.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        self.close(i, now);
                        return;
                    }
                }
            }
            let mut partial = std::mem::take(&mut self.conns[i].partial);
            let mut start = 0;
            while let Some(end) = partial[start..].iter().position(|&b| b == b'\n') {
                let line = String::from_utf8_lossy(&partial[start..start + end]).into_owned();
                start += end + 1;
                if !self.line(i, &line, now) {
                    self.close(i, now);
                    return;
                }
            }
            partial.drain(..start);
            self.conns[i].partial = partial;
        }

        /// One line from connection `i`; false to close it.
        fn line(&mut self, i: usize, line: &str, now: u64) -> bool {
            const NOTIFY: &str = r#"{"id":null,"method":"mining.notify","#;
            if line.starts_with(NOTIFY) {
                let conn = &mut self.conns[i];
                conn.notify.clear();
                conn.notify.push_str(line);
                if conn.phase == Phase::LoggingIn {
                    conn.phase = Phase::Ready;
                    self.ready += 1;
                    self.in_flight -= 1;
                    self.last_ready = now;
                    self.dial_more();
                } else if line.ends_with("true]}")
                    && !conn.clean
                    && matches!(self.waiting, Waiting::Notify { .. })
                {
                    conn.clean = true;
                    self.notified += 1;
                    self.last_notified = now;
                }
                return true;
            }
            if line.starts_with(r#"{"id":null"#) {
                return true;
            }
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                eprintln!("client: not JSON: {line}");
                return false;
            };
            let ok = v["error"].is_null() && v["result"] != json!(false);
            match v["id"].as_u64() {
                Some(1) => {
                    self.conns[i].extranonce1 = v["result"][1]
                        .as_str()
                        .and_then(|h| hex::decode(h).ok())
                        .unwrap_or_default();
                    ok
                }
                Some(2) => {
                    if !ok {
                        eprintln!("client: authorize refused: {v}");
                    }
                    ok
                }
                Some(id) => {
                    if let Some(sent) = self.pending.remove(&id) {
                        self.latencies.push(now - sent);
                        if ok {
                            self.accepted += 1;
                        } else {
                            if self.rejected < 3 {
                                eprintln!("client: submit refused: {v}");
                            }
                            self.rejected += 1;
                        }
                    }
                    true
                }
                None => {
                    eprintln!("client: unexpected line: {line}");
                    true
                }
            }
        }

        fn close(&mut self, i: usize, now: u64) {
            let conn = &mut self.conns[i];
            let was = conn.phase;
            if was == Phase::Closed {
                return;
            }
            conn.phase = Phase::Closed;
            let _ = conn.socket.shutdown(std::net::Shutdown::Both);
            let fd = conn.socket.as_raw_fd();
            self.ctl(libc::EPOLL_CTL_DEL, fd, 0, 0);
            match was {
                Phase::Connecting | Phase::LoggingIn => {
                    self.errors += 1;
                    self.in_flight -= 1;
                    self.dial_more();
                }
                Phase::Ready => self.ready -= 1,
                Phase::Closed => {}
            }
            self.closed += 1;
            self.last_closed = now;
        }

        /// A real pseudo-share on connection `i`'s latest job, sent.
        fn submit(&mut self, i: usize, target: U256) {
            let conn = &mut self.conns[i];
            let notify: Value = serde_json::from_str(&conn.notify).expect("notify is JSON");
            let p = &notify["params"];
            let h = |k: usize| hex::decode(p[k].as_str().expect("hex")).expect("hex");
            conn.extranonce2 += 1;
            let en2 = conn.extranonce2.to_be_bytes();
            let mut coinbase = h(2);
            coinbase.extend_from_slice(&conn.extranonce1);
            coinbase.extend_from_slice(&en2);
            coinbase.extend_from_slice(&h(3));
            let mut root = sha256d(&coinbase).0;
            for step in p[4].as_array().expect("branch") {
                let mut pair = root.to_vec();
                pair.extend_from_slice(&hex::decode(step.as_str().expect("hex")).expect("hex"));
                root = sha256d(&pair).0;
            }
            let word =
                |k: usize| u32::from_str_radix(p[k].as_str().expect("hex"), 16).expect("hex");
            let mut prev = h(1);
            p2pool::worker::getwork::swap4(&mut prev);
            let mut header = [0u8; 80];
            header[0..4].copy_from_slice(&word(5).to_le_bytes());
            header[4..36].copy_from_slice(&prev);
            header[36..68].copy_from_slice(&root);
            header[68..72].copy_from_slice(&word(7).to_le_bytes());
            header[72..76].copy_from_slice(&word(6).to_le_bytes());
            let mut nonce = 0u32;
            loop {
                header[76..80].copy_from_slice(&nonce.to_le_bytes());
                if sha256d(&header).to_u256() <= target {
                    break;
                }
                nonce += 1;
            }
            let id = self.next_id;
            self.next_id += 1;
            let line = format!(
                "{}\n",
                json!({"id": id, "method": "mining.submit", "params": [
                    self.login_user, p[0], hex::encode(en2), p[7], format!("{nonce:08x}")
                ]})
            );
            let sent = monotonic_ns();
            if (&conn.socket).write_all(line.as_bytes()).is_ok() {
                self.pending.insert(id, sent);
                self.sent += 1;
            }
        }

        /// Sends what is due and answers the main thread when what it waits for is done.
        fn progress(&mut self) {
            let now = monotonic_ns();
            match &mut self.waiting {
                Waiting::Nothing => {}
                Waiting::Connect { queued, first } => {
                    if (queued.is_empty() && self.in_flight == 0)
                        || now - *first > CLIENT_WAIT.as_nanos() as u64
                    {
                        let first = *first;
                        self.answers
                            .send(Answer::Connected {
                                ok: self.ready,
                                errors: self.errors + self.in_flight,
                                first,
                                last: self.last_ready,
                            })
                            .expect("main thread");
                        self.waiting = Waiting::Nothing;
                    }
                }
                Waiting::Notify { since } => {
                    if self.notified >= self.ready || now - *since > CLIENT_WAIT.as_nanos() as u64 {
                        self.answers
                            .send(Answer::Notified {
                                count: self.notified,
                                last: self.last_notified,
                            })
                            .expect("main thread");
                        self.waiting = Waiting::Nothing;
                    }
                }
                Waiting::Submits {
                    start,
                    until,
                    interval,
                    next,
                    target,
                } => {
                    let (until, target) = (*until, *target);
                    let mut due = Vec::new();
                    while *next <= now && *next < until {
                        due.push(());
                        *next += *interval;
                    }
                    let _ = start;
                    for () in due {
                        if self.ready == 0 {
                            break;
                        }
                        loop {
                            self.next_conn = (self.next_conn + 1) % self.conns.len();
                            if self.conns[self.next_conn].phase == Phase::Ready {
                                break;
                            }
                        }
                        self.submit(self.next_conn, target);
                    }
                    if now >= until && (self.pending.is_empty() || now - until > 2_000_000_000) {
                        self.pending.clear();
                        self.answers
                            .send(Answer::Submitted {
                                sent: self.sent,
                                latencies: std::mem::take(&mut self.latencies),
                                accepted: self.accepted,
                                rejected: self.rejected,
                            })
                            .expect("main thread");
                        self.waiting = Waiting::Nothing;
                    }
                }
                Waiting::Eof { since } => {
                    if self.closed >= self.open_at_arm
                        || now - *since > CLIENT_WAIT.as_nanos() as u64
                    {
                        self.answers
                            .send(Answer::Closed {
                                count: self.closed,
                                last: self.last_closed,
                            })
                            .expect("main thread");
                        self.waiting = Waiting::Nothing;
                    }
                }
            }
        }
    }
}
