//! Stratum v1 on its own port: a reading thread per connection (`stratum`), one thread
//! (`stratum_notify`) that sends every authorized miner a job when the work changes
//! (clean_jobs set: work on an old parent is dead; not set for work built again on the
//! same block and best share, whose old jobs stay good) and again when a miner has heard
//! nothing for a while, so that an idle miner is not dropped at 120 s.
//!
//! A job's coinbase is coinb1 ‖ extranonce1 (4 bytes, a counter per connection) ‖
//! extranonce2 (4 bytes, the miner's) ‖ coinb2; the extranonces sit inside the share
//! nonce at the end of the coinbase script.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{self, ErrorKind, Read};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Sender, bounded, select, tick};
use log::{debug, info, warn};
use ruint::aliases::U256;
use serde_json::{Value, json};

use super::getwork::swap4;
use super::miners::{Username, Vardiff, difficulty_to_target};
use super::submit::{self, Solution, Verdict};
use super::work::{self, Coinbase, EXTRANONCE1_SIZE, EXTRANONCE2_SIZE, Work};
use super::{Shared, WorkerError};
use crate::thread::{StackTrim, Waker, lock};

const LOG: &str = "stratum";
/// BIP310: the version bits a miner may roll.
pub const VERSION_MASK: u32 = 0x1fff_e000;
/// Jobs remembered per connection.
const JOBS_KEPT: usize = 16;
/// Bad lines (malformed, unknown method) before a connection is closed.
const MAX_BAD_LINES: u32 = 20;
/// Messages (each one send: a reply, or a set_difficulty and its job) waiting in one
/// connection's outbound queue, beyond what its socket took. A miner's socket refuses more
/// only when the miner has read nothing for many messages; past this it is dropped.
pub const OUTBOX_MESSAGES: usize = 64;
/// Bytes waiting in one connection's outbound queue; past this it is dropped.
pub const OUTBOX_BYTES: usize = 256 * 1024;
/// The kernel's send buffer of a Stratum connection (Linux doubles it): far more than a
/// miner that reads ever has waiting, and a bound on what a stalled one holds in the
/// kernel (autotuned, loopback grows it to megabytes; 10,000 of those would be gigabytes).
const SEND_BUFFER: usize = 64 * 1024;
/// Stack of each connection thread.
const STACK: usize = 256 * 1024;
/// Bytes read from a connection at a time, into a buffer on the connection thread's
/// stack: it lies in the stack page the read loop holds anyway (a 4 KiB one was one more
/// page resident per connection; a buffer on the heap was 1 KiB more per idle
/// connection), and only a partial line goes to the heap (doc/performance.md, "Stratum at
/// scale").
const READ_CHUNK: usize = 1024;
/// Connections notified per helper thread.
const PER_THREAD: usize = 256;

struct Job {
    work: Arc<Work>,
    coinbase: Arc<Coinbase>,
    pseudo_target: U256,
    share_floor: Option<U256>,
}

struct State {
    extranonce1: [u8; EXTRANONCE1_SIZE],
    subscribed: bool,
    /// Shared, so that a submit takes it without copying its strings.
    user: Option<(Arc<Username>, Vec<u8>)>,
    authorized: HashSet<String>,
    vardiff: Vardiff,
    sent_difficulty: Option<f64>,
    jobs: VecDeque<(String, Job)>,
    version_mask: u32,
    last_send: Instant,
}

/// What one connection's socket has not taken yet, oldest first.
#[derive(Default)]
struct Outbox {
    queue: VecDeque<Vec<u8>>,
    /// Bytes of the oldest message already sent.
    sent: usize,
    /// Bytes not yet sent, in all.
    bytes: usize,
    closed: bool,
}

/// What the notifier's 1 s tick has to look at, so that a tick with nothing to do costs
/// two loads, not a pass over every connection (10,000 of them took 0.5 % of a core).
#[derive(Default)]
struct Timers {
    /// No connection is due before this (`nanos`); it may be earlier than the earliest,
    /// never later.
    next_due: AtomicU64,
    /// Some connection has output its socket did not take.
    backlog: AtomicBool,
}

/// `at` in nanoseconds after the first call (a time before it is 0).
fn nanos(at: Instant) -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    let base = *BASE.get_or_init(Instant::now);
    u64::try_from(at.saturating_duration_since(base).as_nanos()).unwrap_or(u64::MAX)
}

struct Conn {
    id: u64,
    peer: SocketAddr,
    /// The one socket: read by the connection's thread, written without blocking by any.
    stream: TcpStream,
    outbox: Mutex<Outbox>,
    state: Mutex<State>,
    /// When the notifier next has to look at this connection (`nanos`): its keep-alive
    /// job or its idle vardiff retarget; `u64::MAX` until it is authorized.
    due: AtomicU64,
    /// Its outbound queue holds what its socket did not take.
    waiting: AtomicBool,
    timers: Arc<Timers>,
}

impl Conn {
    /// Queues lines as one message and sends what the socket takes without blocking: a
    /// broadcast never waits on one miner. The rest goes out as the socket takes it (at the
    /// connection's next message or the notifier's next tick). A miner whose queue is full
    /// (it reads nothing) is dropped. False when the connection is closed.
    fn send(&self, lines: &[String]) -> bool {
        let mut out = Vec::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
        for l in lines {
            out.extend_from_slice(l.as_bytes());
            out.push(b'\n');
        }
        let mut outbox = lock(&self.outbox);
        if outbox.closed {
            return false;
        }
        if outbox.queue.len() >= OUTBOX_MESSAGES || outbox.bytes + out.len() > OUTBOX_BYTES {
            info!(
                target: LOG,
                "{}: not reading ({} messages, {} bytes waiting): closed",
                self.peer,
                outbox.queue.len(),
                outbox.bytes
            );
            self.close(&mut outbox);
            return false;
        }
        outbox.bytes += out.len();
        outbox.queue.push_back(out);
        self.flush_locked(&mut outbox)
    }

    /// Sends what waits in the queue, as far as the socket takes it without blocking.
    fn flush(&self) -> bool {
        let mut outbox = lock(&self.outbox);
        !outbox.closed && self.flush_locked(&mut outbox)
    }

    fn flush_locked(&self, outbox: &mut Outbox) -> bool {
        let sent = self.send_queued(outbox);
        let waiting = !outbox.queue.is_empty();
        self.waiting.store(waiting, Ordering::SeqCst);
        if waiting {
            self.timers.backlog.store(true, Ordering::SeqCst);
        }
        sent
    }

    fn send_queued(&self, outbox: &mut Outbox) -> bool {
        while let Some(front) = outbox.queue.front() {
            match send_now(&self.stream, &front[outbox.sent..]) {
                Ok(0) => {
                    self.close(outbox);
                    return false;
                }
                Ok(n) => {
                    outbox.sent += n;
                    outbox.bytes -= n;
                    if outbox.sent == front.len() {
                        outbox.queue.pop_front();
                        outbox.sent = 0;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    debug!(target: LOG, "{}: write failed: {e}", self.peer);
                    self.close(outbox);
                    return false;
                }
            }
        }
        true
    }

    /// Drops what waits and shuts the socket down (its reader then ends).
    fn close(&self, outbox: &mut Outbox) {
        *outbox = Outbox {
            closed: true,
            ..Outbox::default()
        };
        let _ = self.stream.shutdown(Shutdown::Both);
    }

    /// Records when the notifier next has to look at this connection: its keep-alive, or
    /// its idle vardiff retarget, whichever comes first (nothing before it authorizes).
    fn schedule(&self, state: &State, keepalive: Duration) {
        if state.user.is_none() {
            return;
        }
        let mut due = state.last_send + keepalive;
        if let Some(idle) = state.vardiff.next_idle() {
            due = due.min(idle);
        }
        let due = nanos(due);
        self.due.store(due, Ordering::SeqCst);
        self.timers.next_due.fetch_min(due, Ordering::SeqCst);
    }
}

/// Sends what the socket takes now, never blocking (the socket itself stays blocking for
/// its reader).
#[cfg(unix)]
fn send_now(stream: &TcpStream, buf: &[u8]) -> io::Result<usize> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    const FLAGS: libc::c_int = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    const FLAGS: libc::c_int = libc::MSG_DONTWAIT;
    socket2::SockRef::from(stream).send_with_flags(buf, FLAGS)
}

/// Elsewhere a write that may block for the socket's write timeout (`WRITE_TIMEOUT`).
#[cfg(not(unix))]
fn send_now(mut stream: &TcpStream, buf: &[u8]) -> io::Result<usize> {
    use std::io::Write;
    stream.write(buf)
}

#[cfg(not(unix))]
const WRITE_TIMEOUT: Duration = Duration::from_millis(100);

#[derive(Default)]
struct Registry {
    conns: HashMap<u64, Arc<Conn>>,
    extranonces: HashSet<[u8; EXTRANONCE1_SIZE]>,
    last_broadcast: Option<Broadcast>,
}

/// The last new work sent to every Stratum miner.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Broadcast {
    /// The work's id.
    pub work: u64,
    /// Miners written to.
    pub miners: usize,
    /// From `Workers::publish` until the last miner's write returned.
    pub took: Duration,
}

pub(crate) struct StratumServer {
    shared: Arc<Shared>,
    registry: Arc<Mutex<Registry>>,
    _timers: Arc<Timers>,
    notify: Sender<Instant>,
    threads: Vec<JoinHandle<()>>,
    /// Ends the blocking accept at the workers' shutdown.
    _wake: Waker,
}

impl StratumServer {
    pub fn start(shared: Arc<Shared>, listener: TcpListener) -> Result<StratumServer, WorkerError> {
        let registry = Arc::new(Mutex::new(Registry::default()));
        let timers = Arc::new(Timers {
            next_due: AtomicU64::new(u64::MAX),
            backlog: AtomicBool::new(false),
        });
        let (notify_tx, notify_rx) = bounded::<Instant>(1);
        let wake = shared
            .shutdown
            .wake_accept_on_stop(&listener)
            .map_err(WorkerError::Spawn)?;
        let accept = {
            let shared = shared.clone();
            let registry = registry.clone();
            let timers = timers.clone();
            crate::thread::spawn("stratum_accept", move || {
                accept_loop(&shared, &registry, &timers, &listener)
            })
            .map_err(WorkerError::Spawn)?
        };
        let notifier = {
            let shared = shared.clone();
            let registry = registry.clone();
            let timers = timers.clone();
            crate::thread::spawn("stratum_notify", move || {
                let ticker = tick(Duration::from_secs(1));
                let stop = shared.shutdown.signal().clone();
                loop {
                    select! {
                        recv(notify_rx) -> published => {
                            let published = published.unwrap_or_else(|_| Instant::now());
                            notify_all(&shared, &registry, published);
                        }
                        recv(ticker) -> _ => keepalive(&shared, &registry, &timers),
                        recv(stop) -> _ => break,
                    }
                }
            })
            .map_err(WorkerError::Spawn)?
        };
        Ok(StratumServer {
            shared,
            registry,
            _timers: timers,
            notify: notify_tx,
            threads: vec![accept, notifier],
            _wake: wake,
        })
    }

    /// New work: every authorized miner gets a job, with clean_jobs unless it builds on
    /// the same block and best share as the miner's last job.
    pub fn notify_all(&self) {
        // A broadcast already queued will send the newest work.
        let _ = self.notify.try_send(Instant::now());
    }

    /// The last new work sent to every miner, and how long that took.
    pub fn last_broadcast(&self) -> Option<Broadcast> {
        lock(&self.registry).last_broadcast
    }

    pub fn connections(&self) -> usize {
        lock(&self.registry).conns.len()
    }

    /// Joins the listener and the notifier, which end at the workers' shutdown (which
    /// also closes every connection).
    pub fn stop(mut self) {
        self.shared.shutdown.stop();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn accept_loop(
    shared: &Arc<Shared>,
    registry: &Arc<Mutex<Registry>>,
    timers: &Arc<Timers>,
    listener: &TcpListener,
) {
    static NEXT_ID: AtomicU64 = AtomicU64::new(1);
    for stream in listener.incoming() {
        if shared.stopping() {
            break;
        }
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                debug!(target: LOG, "accept: {e}");
                thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let cap = shared.config.max_stratum_connections;
        if lock(registry).conns.len() >= cap {
            warn!(target: LOG, "too many stratum connections: one refused");
            // A fresh socket takes one line without blocking; then the close.
            let line = format!(
                "{}\n",
                error_reply(
                    &Value::Null,
                    20,
                    &format!("too many connections: this node holds {cap}, try later")
                )
            );
            let _ = send_now(&stream, line.as_bytes());
            let _ = stream.shutdown(Shutdown::Write);
            continue;
        }
        let Ok(peer) = stream.peer_addr() else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let _ = socket2::SockRef::from(&stream).set_send_buffer_size(SEND_BUFFER);
        #[cfg(not(unix))]
        let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
        let conn = Arc::new(Conn {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            peer,
            stream,
            outbox: Mutex::default(),
            state: Mutex::new(State {
                extranonce1: [0; EXTRANONCE1_SIZE],
                subscribed: false,
                user: None,
                authorized: HashSet::new(),
                vardiff: Vardiff::new(shared.config.vardiff(), Instant::now()),
                sent_difficulty: None,
                jobs: VecDeque::new(),
                version_mask: 0,
                last_send: Instant::now(),
            }),
            due: AtomicU64::new(u64::MAX),
            waiting: AtomicBool::new(false),
            timers: timers.clone(),
        });
        {
            let mut reg = lock(registry);
            let mut en1 = shared.extranonce1();
            while reg.extranonces.contains(&en1) {
                en1 = shared.extranonce1();
            }
            reg.extranonces.insert(en1);
            lock(&conn.state).extranonce1 = en1;
            reg.conns.insert(conn.id, conn.clone());
        }
        let shared = shared.clone();
        let registry = registry.clone();
        let spawned = crate::thread::spawn_with_stack("stratum", STACK, move || {
            // A read blocked on the socket ends when shutdown closes it.
            let _wake = {
                let conn = conn.clone();
                shared.shutdown.on_stop(move || {
                    let _ = conn.stream.shutdown(Shutdown::Both);
                })
            };
            let mut session = Session {
                shared: &shared,
                registry: &registry,
                conn: &conn,
                bad_lines: 0,
            };
            session.run();
            forget(&registry, &conn);
        });
        if let Err(e) = spawned {
            warn!(target: LOG, "cannot start a stratum thread: {e}");
        }
    }
}

/// Takes a closed connection out of the registry.
fn forget(registry: &Mutex<Registry>, conn: &Conn) {
    let en1 = lock(&conn.state).extranonce1;
    let mut reg = lock(registry);
    reg.conns.remove(&conn.id);
    reg.extranonces.remove(&en1);
    debug!(target: LOG, "{}: closed", conn.peer);
}

fn hex_u32(v: u32) -> String {
    format!("{v:08x}")
}

/// The `mining.notify` params of `job` after the job id, up to clean_jobs: the same for
/// every miner paid by the job's coinbase, so rendered once per coinbase.
fn notify_params(job: &Job) -> &str {
    job.coinbase.notify_params.get_or_init(|| {
        let work = &job.work;
        let mut prev = work.previous_block().0;
        swap4(&mut prev);
        let branch: Vec<String> = work.branch.iter().map(|s| hex::encode(s.hash.0)).collect();
        let params = json!([
            hex::encode(prev),
            hex::encode(&job.coinbase.coinb1),
            hex::encode(&job.coinbase.coinb2),
            branch,
            hex_u32(work.template.version),
            hex_u32(work.template.bits.0),
            hex_u32(work.timestamp),
        ])
        .to_string();
        // Without the array's brackets.
        params[1..params.len() - 1].to_string()
    })
}

/// The `mining.notify` line of `job` (id `job_id`, hex digits only).
fn notify_line(job_id: &str, job: &Job, clean: bool) -> String {
    format!(
        r#"{{"id":null,"method":"mining.notify","params":["{job_id}",{},{clean}]}}"#,
        notify_params(job)
    )
}

fn difficulty_line(d: f64) -> String {
    json!({"id": null, "method": "mining.set_difficulty", "params": [d]}).to_string()
}

/// A new job for `conn` on `work`: set_difficulty first when it changed, then notify.
fn job_lines(
    shared: &Shared,
    conn: &Conn,
    state: &mut State,
    work: &Arc<Work>,
    clean: bool,
) -> Vec<String> {
    job_lines_at(shared, conn, state, work, clean, Instant::now())
}

/// [`job_lines`] sent at `now` (a broadcast reads the clock once, not once a miner).
fn job_lines_at(
    shared: &Shared,
    conn: &Conn,
    state: &mut State,
    work: &Arc<Work>,
    clean: bool,
    now: Instant,
) -> Vec<String> {
    static NEXT_JOB: AtomicU64 = AtomicU64::new(1);
    let Some((user, script)) = &state.user else {
        return Vec::new();
    };
    let config = &shared.config;
    let payout = if config.fee_percent > 0.0
        && (work::random_u64() % 1_000_000) as f64 / 10_000.0 < config.fee_percent
    {
        &config.node_payout
    } else {
        script
    };
    let coinbase = match work.coinbase(payout) {
        Ok(c) => c,
        Err(e) => {
            warn!(target: LOG, "no job: {e}");
            return Vec::new();
        }
    };
    let mut lines = Vec::with_capacity(2);
    let difficulty = state.vardiff.difficulty();
    let pseudo_target = submit::pseudo_target(work, difficulty);
    // What the miner is told matches the target it is held to.
    let effective = super::miners::target_difficulty(pseudo_target);
    if state.sent_difficulty != Some(effective) {
        lines.push(difficulty_line(effective));
        state.sent_difficulty = Some(effective);
        shared.registry.set_difficulty(user, "stratum", effective);
    }
    let job = Job {
        work: work.clone(),
        coinbase,
        pseudo_target,
        share_floor: user.share_difficulty.map(difficulty_to_target),
    };
    let id = format!("{:x}", NEXT_JOB.fetch_add(1, Ordering::Relaxed));
    lines.push(notify_line(&id, &job, clean));
    if clean {
        state.jobs.clear();
    }
    // Room made before the push: the queue never holds more than `JOBS_KEPT`, nor grows
    // its allocation past that.
    while state.jobs.len() >= JOBS_KEPT {
        state.jobs.pop_front();
    }
    state.jobs.push_back((id, job));
    state.last_send = now;
    conn.schedule(state, config.stratum_keepalive);
    lines
}

fn send_job(shared: &Shared, conn: &Conn, work: &Arc<Work>, clean: bool) {
    let lines = job_lines(shared, conn, &mut lock(&conn.state), work, clean);
    if !lines.is_empty() {
        conn.send(&lines);
    }
}

fn authorized_conns(registry: &Mutex<Registry>) -> Vec<Arc<Conn>> {
    lock(registry)
        .conns
        .values()
        .filter(|c| lock(&c.state).user.is_some())
        .cloned()
        .collect()
}

/// New work to every authorized miner, with clean_jobs (work on an old parent is dead)
/// unless the miner's last job builds on the same block and best share.
fn notify_all(shared: &Shared, registry: &Mutex<Registry>, published: Instant) {
    let Some(work) = shared.current() else {
        return;
    };
    if shared.readiness().message().is_some() {
        return;
    }
    let conns = authorized_conns(registry);
    // Every line is rendered before any is written, so that the writes (each waking a
    // miner's reader on this host) go out back to back.
    let send = |chunk: &[Arc<Conn>]| {
        let now = Instant::now();
        let lines: Vec<Vec<String>> = chunk
            .iter()
            .map(|c| {
                let mut state = lock(&c.state);
                // Work built again on the same tip (stamped anew): the miner's jobs stay
                // good, so they are not cleared.
                let clean = state
                    .jobs
                    .back()
                    .is_none_or(|(_, j)| !j.work.same_tip(&work));
                job_lines_at(shared, c, &mut state, &work, clean, now)
            })
            .collect();
        for (c, lines) in chunk.iter().zip(&lines) {
            if !lines.is_empty() {
                c.send(lines);
            }
        }
    };
    if conns.len() <= PER_THREAD {
        send(&conns);
    } else {
        thread::scope(|s| {
            let helpers = 2 * thread::available_parallelism()
                .map_or(2, |n| n.get())
                .clamp(1, 8);
            for chunk in conns.chunks(conns.len().div_ceil(helpers).max(PER_THREAD)) {
                let send = &send;
                let spawned =
                    crate::thread::spawn_scoped(s, "stratum_notify_help", move || send(chunk));
                if spawned.is_err() {
                    send(chunk);
                }
            }
        });
    }
    let broadcast = Broadcast {
        work: work.id,
        miners: conns.len(),
        took: published.elapsed(),
    };
    debug!(
        target: LOG,
        "work {} sent to {} miners {:?} after it was published",
        work.id,
        broadcast.miners,
        broadcast.took
    );
    lock(registry).last_broadcast = Some(broadcast);
}

/// Once a second: what sockets did not take at once, sent as far as they take it now; a
/// fresh job (clean_jobs false) to miners that heard nothing for a while, and to those
/// whose vardiff fell while they found nothing. A tick when no connection has output
/// waiting and none is due (`Timers`) looks at none of them.
fn keepalive(shared: &Shared, registry: &Mutex<Registry>, timers: &Timers) {
    let now = Instant::now();
    let backlog = timers.backlog.swap(false, Ordering::SeqCst);
    let due = timers.next_due.load(Ordering::SeqCst) <= nanos(now) && shared.current().is_some();
    if !backlog && !due {
        return;
    }
    if due {
        // Lowered again below by every connection not due now, and by any scheduled
        // meanwhile.
        timers.next_due.store(u64::MAX, Ordering::SeqCst);
    }
    let (waiting, due_now, next) = {
        let reg = lock(registry);
        let (mut waiting, mut due_now, mut next) = (Vec::new(), Vec::new(), u64::MAX);
        let now = nanos(now);
        for c in reg.conns.values() {
            if backlog && c.waiting.load(Ordering::SeqCst) {
                waiting.push(c.clone());
            }
            if due {
                let at = c.due.load(Ordering::SeqCst);
                if at <= now {
                    due_now.push(c.clone());
                } else {
                    next = next.min(at);
                }
            }
        }
        (waiting, due_now, next)
    };
    for conn in waiting {
        conn.flush();
    }
    if !due {
        return;
    }
    timers.next_due.fetch_min(next, Ordering::SeqCst);
    let Some(work) = shared.current() else {
        return;
    };
    for conn in due_now {
        let send = {
            let mut state = lock(&conn.state);
            let idle = now.duration_since(state.last_send) >= shared.config.stratum_keepalive;
            let send = state.vardiff.on_idle(now).is_some() || idle;
            if !send {
                conn.schedule(&state, shared.config.stratum_keepalive);
            }
            send
        };
        if send {
            send_job(shared, &conn, &work, false);
        }
    }
}

struct Session<'a> {
    shared: &'a Arc<Shared>,
    registry: &'a Arc<Mutex<Registry>>,
    conn: &'a Arc<Conn>,
    bad_lines: u32,
}

// Replies are written straight into their line (a `json!` object would build a map on the
// connection thread for every reply, and glibc keeps each thread's freed blocks).
fn error_reply(id: &Value, code: i64, message: &str) -> String {
    let message = serde_json::to_string(message).unwrap_or_else(|_| "null".into());
    format!(r#"{{"id":{id},"result":null,"error":[{code},{message},null]}}"#)
}

fn result_reply(id: &Value, result: Value) -> String {
    format!(r#"{{"id":{id},"result":{result},"error":null}}"#)
}

/// The fields of a request line that are read; any others are skipped. Parsed into this
/// rather than a `Value` object, a line builds no map and no key strings.
#[derive(serde::Deserialize)]
struct Request {
    #[serde(default)]
    id: Value,
    #[serde(default)]
    method: Value,
    #[serde(default)]
    params: Value,
}

enum Flow {
    Continue,
    Close,
}

impl Session<'_> {
    fn run(&mut self) {
        let mut stream = &self.conn.stream;
        let config = &self.shared.config;
        let connected = Instant::now();
        let mut last_read = Instant::now();
        let mut chunk = [0u8; READ_CHUNK];
        // A line not yet ended.
        let mut buf: Vec<u8> = Vec::new();
        let mut lines_seen = 0u64;
        let trim = StackTrim::new();
        loop {
            if self.shared.stopping() {
                return;
            }
            // Reads wait until the connection's deadline (login, then idle); nothing
            // else wakes them but data, a close or the shutdown (which closes the socket).
            let authorized = lock(&self.conn.state).user.is_some();
            let limit = if authorized {
                last_read + config.stratum_idle
            } else {
                connected + config.stratum_login
            };
            let left = limit.saturating_duration_since(Instant::now());
            if left.is_zero() {
                debug!(target: LOG, "{}: idle, closed", self.conn.peer);
                return;
            }
            if stream.set_read_timeout(Some(left)).is_err() {
                return;
            }
            let n = match stream.read(&mut chunk) {
                Ok(0) => return,
                Ok(n) => {
                    last_read = Instant::now();
                    n
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    continue;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return,
            };
            // Whole lines are answered straight from the read; only a partial line is
            // copied to the heap, until its end arrives.
            // What was held holds no line end (each was answered): the search for one
            // starts at the new bytes, so a line trickled in byte by byte is not
            // scanned again at every read.
            let held = buf.len();
            let pending = held > 0;
            if pending {
                buf.extend_from_slice(&chunk[..n]);
            }
            let data: &[u8] = if pending { &buf } else { &chunk[..n] };
            // A first line that is not JSON (a TLS ClientHello) closes at once.
            if lines_seen == 0
                && let Some(&first) = data.iter().find(|b| !b.is_ascii_whitespace())
                && first != b'{'
            {
                info!(target: LOG, "{}: not stratum (first byte {first:#04x}), closed", self.conn.peer);
                return;
            }
            let mut handled = false;
            let mut start = 0;
            let mut from = held;
            while let Some(pos) = data[from..].iter().position(|&b| b == b'\n') {
                let line = String::from_utf8_lossy(&data[start..from + pos]);
                start = from + pos + 1;
                from = start;
                let line = line.trim();
                if line.is_empty() {
                    continue;
                }
                lines_seen += 1;
                handled = true;
                if let Flow::Close = self.handle_line(line) {
                    return;
                }
            }
            if pending {
                buf.drain(..start);
            } else {
                buf.extend_from_slice(&chunk[start..n]);
            }
            // The parse and the replies reached pages below this loop's frame: given back
            // before the thread waits again, an idle connection keeps two stack pages
            // (glibc's thread descriptor, and this loop), not three.
            if handled && let Some(trim) = &trim {
                trim.release();
            }
            if buf.len() > config.max_line {
                warn!(target: LOG, "{}: line over {} bytes, closed", self.conn.peer, config.max_line);
                return;
            }
            if buf.is_empty() && buf.capacity() > 0 {
                buf = Vec::new();
            }
        }
    }

    fn bad(&mut self, id: &Value, code: i64, message: &str) -> Flow {
        self.bad_lines += 1;
        self.conn.send(&[error_reply(id, code, message)]);
        if self.bad_lines > MAX_BAD_LINES {
            info!(target: LOG, "{}: too many bad requests, closed", self.conn.peer);
            Flow::Close
        } else {
            Flow::Continue
        }
    }

    /// Answers one line. Not inlined: its frames (the JSON parse, the replies) lie below
    /// the read loop's, in pages [`StackTrim::release`] gives back.
    #[inline(never)]
    fn handle_line(&mut self, line: &str) -> Flow {
        // An object only (serde would also take an array for the struct).
        let parsed = line
            .starts_with('{')
            .then(|| serde_json::from_str::<Request>(line).ok())
            .flatten();
        let Some(Request { id, method, params }) = parsed else {
            return self.bad(&Value::Null, 20, "parse error: not a JSON object");
        };
        let Some(method) = method.as_str() else {
            // A reply to something we sent (none expected): ignore.
            return Flow::Continue;
        };
        let params = params.as_array().map_or(&[][..], Vec::as_slice);
        match method {
            "mining.subscribe" => self.subscribe(&id, params),
            "mining.authorize" => self.authorize(&id, params),
            "mining.submit" => self.submit(&id, params),
            "mining.configure" => self.configure(&id, params),
            "mining.extranonce.subscribe" => {
                self.conn.send(&[result_reply(&id, json!(true))]);
                Flow::Continue
            }
            "mining.suggest_difficulty" => self.suggest_difficulty(&id, params),
            "mining.ping" => {
                self.conn.send(&[result_reply(&id, json!("pong"))]);
                Flow::Continue
            }
            _ => self.bad(&id, 20, "unknown method"),
        }
    }

    fn subscribe(&mut self, id: &Value, params: &[Value]) -> Flow {
        // Resuming: the session id we gave is the extranonce1; reuse it when it is free.
        if let Some(session) = params.get(1).and_then(Value::as_str)
            && let Ok(bytes) = hex::decode(session)
            && let Ok(en1) = <[u8; EXTRANONCE1_SIZE]>::try_from(bytes.as_slice())
            && u32::from_be_bytes(en1) < self.shared.next_extranonce.load(Ordering::Relaxed)
        {
            let mut reg = lock(self.registry);
            let mut state = lock(&self.conn.state);
            if !reg.extranonces.contains(&en1) {
                reg.extranonces.remove(&state.extranonce1);
                reg.extranonces.insert(en1);
                state.extranonce1 = en1;
            }
        }
        let en1 = {
            let mut state = lock(&self.conn.state);
            state.subscribed = true;
            hex::encode(state.extranonce1)
        };
        let result = json!([
            [["mining.set_difficulty", en1], ["mining.notify", en1]],
            en1,
            EXTRANONCE2_SIZE
        ]);
        self.conn.send(&[result_reply(id, result)]);
        Flow::Continue
    }

    fn authorize(&mut self, id: &Value, params: &[Value]) -> Flow {
        let Some(name) = params.first().and_then(Value::as_str) else {
            return self.bad(id, 20, "authorize needs a user name");
        };
        if let Some(message) = self.shared.readiness().message() {
            self.conn.send(&[
                json!({"id": id, "result": false, "error": [-12345, message, null]}).to_string(),
            ]);
            return Flow::Continue;
        }
        let parsed = Username::parse(name).and_then(|u| {
            let script = u.payout_script(&self.shared.config.net.bitcoin)?;
            Ok((u, script))
        });
        let (user, script) = match parsed {
            Ok(x) => x,
            Err(e) => {
                info!(target: LOG, "{}: authorize refused: {e}", self.conn.peer);
                self.conn.send(&[
                    json!({"id": id, "result": false, "error": [24, e.to_string(), null]})
                        .to_string(),
                ]);
                return Flow::Continue;
            }
        };
        let mut lines = vec![result_reply(id, json!(true))];
        {
            let mut state = lock(&self.conn.state);
            if let Some(d) = user.pseudo_difficulty {
                state.vardiff.fix(d, Instant::now());
            }
            state.authorized.insert(name.to_string());
            let difficulty = state.sent_difficulty.unwrap_or(state.vardiff.difficulty());
            self.shared.registry.seen(&user, "stratum", difficulty);
            state.user = Some((Arc::new(user), script));
            self.conn
                .schedule(&state, self.shared.config.stratum_keepalive);
            if state.subscribed
                && let Some(work) = self.shared.current()
            {
                lines.extend(job_lines(self.shared, self.conn, &mut state, &work, true));
            }
        }
        self.conn.send(&lines);
        Flow::Continue
    }

    fn configure(&mut self, id: &Value, params: &[Value]) -> Flow {
        let names: Vec<&str> = params
            .first()
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let options = params.get(1).cloned().unwrap_or(Value::Null);
        let mut result = serde_json::Map::new();
        for name in names {
            if name == "version-rolling" {
                let asked = options
                    .get("version-rolling.mask")
                    .and_then(Value::as_str)
                    .and_then(|m| u32::from_str_radix(m, 16).ok())
                    .unwrap_or(u32::MAX);
                let mask = asked & VERSION_MASK;
                lock(&self.conn.state).version_mask = mask;
                result.insert("version-rolling".into(), json!(true));
                result.insert("version-rolling.mask".into(), json!(hex_u32(mask)));
            } else {
                result.insert(name.to_string(), json!(false));
            }
        }
        self.conn.send(&[result_reply(id, Value::Object(result))]);
        Flow::Continue
    }

    fn suggest_difficulty(&mut self, id: &Value, params: &[Value]) -> Flow {
        let Some(d) = params.first().and_then(Value::as_f64).filter(|d| *d > 0.0) else {
            return self.bad(id, 20, "suggest_difficulty needs a positive number");
        };
        let mut lines = vec![result_reply(id, json!(true))];
        {
            let mut state = lock(&self.conn.state);
            state.vardiff.fix(d, Instant::now());
            if state.user.is_some()
                && let Some(work) = self.shared.current()
            {
                lines.extend(job_lines(self.shared, self.conn, &mut state, &work, false));
            }
        }
        self.conn.send(&lines);
        Flow::Continue
    }

    fn submit(&mut self, id: &Value, params: &[Value]) -> Flow {
        let field = |i: usize| params.get(i).and_then(Value::as_str);
        let (Some(name), Some(job_id), Some(en2), Some(ntime), Some(nonce)) =
            (field(0), field(1), field(2), field(3), field(4))
        else {
            return self.bad(
                id,
                20,
                "submit needs user, job id, extranonce2, ntime, nonce",
            );
        };
        let hex32 = |s: &str| {
            (s.len() == 8)
                .then(|| u32::from_str_radix(s, 16).ok())
                .flatten()
        };
        let state = lock(&self.conn.state);
        if !state.authorized.contains(name) {
            drop(state);
            return self.bad(id, 24, "unauthorized worker");
        }
        let Some((user, _)) = state.user.clone() else {
            drop(state);
            return self.bad(id, 24, "unauthorized worker");
        };
        let Some(job_index) = state.jobs.iter().position(|(j, _)| j == job_id) else {
            drop(state);
            shared_record_rejected(self.shared, &user);
            self.conn.send(&[error_reply(id, 21, "job not found")]);
            return Flow::Continue;
        };
        let mut extranonce2 = [0u8; EXTRANONCE2_SIZE];
        match hex::decode_to_slice(en2, &mut extranonce2) {
            Ok(()) => {}
            Err(_) => {
                drop(state);
                shared_record_rejected(self.shared, &user);
                return self.bad(id, 20, "extranonce2 must be 4 bytes of hex");
            }
        };
        let (Some(ntime), Some(nonce)) = (hex32(ntime), hex32(nonce)) else {
            drop(state);
            shared_record_rejected(self.shared, &user);
            return self.bad(id, 20, "ntime and nonce must be 8 hex digits");
        };
        let job = &state.jobs[job_index].1;
        let mut version = job.work.template.version;
        if let Some(bits) = params.get(5).and_then(Value::as_str) {
            let Some(bits) = hex32(bits) else {
                drop(state);
                return self.bad(id, 20, "version bits must be 8 hex digits");
            };
            if bits & !state.version_mask != 0 {
                drop(state);
                shared_record_rejected(self.shared, &user);
                self.conn.send(&[error_reply(
                    id,
                    20,
                    "version bits outside the negotiated mask",
                )]);
                return Flow::Continue;
            }
            version = (version & !state.version_mask) | bits;
        }
        let work = job.work.clone();
        let coinbase = job.coinbase.clone();
        let (pseudo_target, share_floor) = (job.pseudo_target, job.share_floor);
        let extranonce1 = state.extranonce1;
        drop(state);
        let mut header = work.header(work.merkle_root(coinbase.txid(&extranonce1, &extranonce2)));
        header.version = version;
        header.timestamp = ntime;
        header.nonce = nonce;
        let verdict = submit::check(
            self.shared,
            Solution {
                work: &work,
                coinbase: &coinbase,
                extranonce1: &extranonce1,
                extranonce2: &extranonce2,
                header,
                pseudo_target,
                share_floor,
                user: &user,
                protocol: "stratum",
            },
        );
        let reply = match &verdict {
            Verdict::Accepted { .. } => result_reply(id, json!(true)),
            Verdict::Stale { .. } => error_reply(id, 21, "stale: the job is no longer current"),
            Verdict::Duplicate => error_reply(id, 22, "duplicate share"),
            Verdict::LowDifficulty => error_reply(id, 23, "low difficulty share"),
            Verdict::BadTime => error_reply(id, 20, "ntime out of range"),
            Verdict::Invalid(e) => error_reply(id, 20, e),
        };
        let mut lines = vec![reply];
        if matches!(verdict, Verdict::Accepted { .. } | Verdict::Stale { .. }) {
            let mut state = lock(&self.conn.state);
            if state.vardiff.on_share(Instant::now()).is_some()
                && let Some(current) = self.shared.current()
            {
                lines.extend(job_lines(
                    self.shared,
                    self.conn,
                    &mut state,
                    &current,
                    false,
                ));
            }
        }
        self.conn.send(&lines);
        Flow::Continue
    }
}

fn shared_record_rejected(shared: &Shared, user: &Username) {
    shared.registry.record(
        user,
        "stratum",
        super::miners::Outcome::Rejected,
        None,
        false,
    );
}
