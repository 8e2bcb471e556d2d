//! The getwork service behind the HTTP server and the long-poll thread: work units with a
//! unique extranonce each, remembered by merkle root for 300 s as R did, solutions taken
//! back, the per-client state of §7.5 (the "memory" workaround for the miners R lists),
//! and each user's pseudo-share difficulty.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ruint::aliases::U256;
use serde_json::Value;

use crate::bitcoin::hash::Hash256;

use super::getwork::{self, WorkUnit};
use super::miners::{Username, Vardiff};
use super::submit::{self, Solution, Verdict};
use super::work::{self, Coinbase, EXTRANONCE2_SIZE, Work};
use super::{Readiness, Shared};
use crate::thread::lock;

/// How long a work unit is remembered (R: 300 s).
const JOB_TTL: Duration = Duration::from_secs(300);
/// Most work units remembered at once.
const MAX_JOBS: usize = 200_000;
/// Most getwork clients and users with state.
const MAX_CLIENTS: usize = 10_000;
/// R's hold after a fake-block work unit.
const HOLD: Duration = Duration::from_millis(10);

/// A JSON-RPC error; `code: None` for the code-less error that makes CPU miners fall
/// back from getblocktemplate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcError {
    pub code: Option<i64>,
    pub message: String,
}

impl RpcError {
    pub fn new(code: i64, message: impl Into<String>) -> RpcError {
        RpcError {
            code: Some(code),
            message: message.into(),
        }
    }
}

/// Who asks: the client's address and Authorization header (R's key), its user name and
/// how many previous blocks it remembers (§7.5).
#[derive(Debug, Clone)]
pub struct ClientInfo {
    pub ip: IpAddr,
    pub authorization: String,
    pub username: String,
    pub memory: usize,
}

/// §7.5: how many previous blocks a miner remembers, by its headers.
pub fn memory_of(user_agent: &str, work_identifier: bool) -> usize {
    if work_identifier {
        return 0;
    }
    let ua = user_agent.to_ascii_lowercase();
    let has = |s: &str| ua.contains(s);
    if has("java")
        || has("diablominer")
        || has("cpuminer")
        || has("tenebrix miner")
        || has("ufasoft")
    {
        0
    } else if has("cgminer") || has("poclbm") {
        1
    } else if has("phoenix") {
        2
    } else {
        0
    }
}

struct Job {
    work: Arc<Work>,
    coinbase: Arc<Coinbase>,
    extranonce1: [u8; 4],
    pseudo_target: U256,
    share_floor: Option<U256>,
    user: Username,
}

#[derive(Default)]
struct Jobs {
    by_root: HashMap<Hash256, Job>,
    order: VecDeque<(Instant, Hash256)>,
}

#[derive(Default, Clone)]
struct ClientState {
    /// The last two (work id, previous block) given, newest last.
    given: Vec<(u64, Hash256)>,
    hold_until: Option<Instant>,
}

pub(crate) struct Service {
    pub shared: Arc<Shared>,
    jobs: Mutex<Jobs>,
    clients: Mutex<HashMap<(IpAddr, String), ClientState>>,
    vardiff: Mutex<HashMap<String, Vardiff>>,
}

fn bounded_insert<K: std::hash::Hash + Eq + Clone, V>(map: &mut HashMap<K, V>, key: K, v: V) {
    if map.len() >= MAX_CLIENTS
        && !map.contains_key(&key)
        && let Some(k) = map.keys().next().cloned()
    {
        map.remove(&k);
    }
    map.insert(key, v);
}

impl Service {
    pub fn new(shared: Arc<Shared>) -> Service {
        Service {
            shared,
            jobs: Mutex::new(Jobs::default()),
            clients: Mutex::new(HashMap::new()),
            vardiff: Mutex::new(HashMap::new()),
        }
    }

    /// The work to give, or R's not-ready error.
    fn ready_work(&self) -> Result<Arc<Work>, RpcError> {
        if let Some(message) = self.shared.readiness().message() {
            return Err(RpcError::new(-12345, message));
        }
        self.shared.current().ok_or_else(|| {
            RpcError::new(-12345, Readiness::NoTemplate.message().unwrap_or_default())
        })
    }

    fn user(&self, client: &ClientInfo) -> Result<(Username, Vec<u8>), RpcError> {
        let user =
            Username::parse(&client.username).map_err(|e| RpcError::new(-32602, e.to_string()))?;
        let script = user
            .payout_script(&self.shared.config.net.bitcoin)
            .map_err(|e| RpcError::new(-32602, e.to_string()))?;
        Ok((user, script))
    }

    /// Whether a long poll from `client` should wait: it already has the current work, or
    /// there is none to give.
    pub fn should_park(&self, client: &ClientInfo) -> bool {
        let Ok(work) = self.ready_work() else {
            return true;
        };
        let key = (client.ip, client.authorization.clone());
        lock(&self.clients)
            .get(&key)
            .and_then(|c| c.given.last())
            .is_some_and(|&(id, _)| id == work.id)
    }

    /// A work unit for `client` (getwork without parameters, or a long-poll answer).
    pub fn get_work(&self, client: &ClientInfo) -> Result<Value, RpcError> {
        let (user, script) = self.user(client)?;
        let key = (client.ip, client.authorization.clone());
        let hold = lock(&self.clients).get(&key).and_then(|c| c.hold_until);
        if let Some(until) = hold {
            let now = Instant::now();
            if until > now {
                std::thread::sleep((until - now).min(HOLD));
            }
        }
        let work = self.ready_work()?;
        let config = &self.shared.config;
        let payout = if config.fee_percent > 0.0
            && (work::random_u64() % 1_000_000) as f64 / 10_000.0 < config.fee_percent
        {
            config.node_payout.clone()
        } else {
            script
        };
        let coinbase = work
            .coinbase(&payout)
            .map_err(|e| RpcError::new(-32099, e.to_string()))?;
        let extranonce1 = self.shared.extranonce1();
        let txid = coinbase.txid(&extranonce1, &[0; EXTRANONCE2_SIZE]);
        let mut header = work.header(work.merkle_root(txid));

        // §7.5: a miner that remembers previous blocks gets a unit on a fake block first.
        let mut state = lock(&self.clients).get(&key).cloned().unwrap_or_default();
        let remembered = state
            .given
            .iter()
            .rev()
            .take(client.memory)
            .any(|&(_, prev)| prev == work.previous_block());
        let changed = state.given.last().is_some_and(|&(id, _)| id != work.id);
        let fake = client.memory > 0 && changed && remembered;
        if fake {
            let mut bytes = [0u8; 32];
            for chunk in bytes.chunks_exact_mut(8) {
                chunk.copy_from_slice(&work::random_u64().to_le_bytes());
            }
            header.previous_block = Hash256(bytes);
            state.hold_until = Some(Instant::now() + HOLD);
        } else {
            state.hold_until = None;
        }
        state.given.push((work.id, header.previous_block));
        if state.given.len() > 2 {
            state.given.remove(0);
        }
        bounded_insert(&mut lock(&self.clients), key, state);

        let difficulty = self.difficulty(&user);
        let pseudo_target = submit::pseudo_target(&work, difficulty);
        // What the miner is held to: vardiff's wish bounded by MAX_TARGET and the share
        // target (as Stratum records what set_difficulty told).
        let effective = super::miners::target_difficulty(pseudo_target);
        self.shared.registry.seen(&user, "getwork", effective);
        let unit = WorkUnit::new(&header, pseudo_target, work.best);
        if !fake {
            self.remember(
                header.merkle_root,
                Job {
                    share_floor: user
                        .share_difficulty
                        .map(super::miners::difficulty_to_target),
                    work,
                    coinbase,
                    extranonce1,
                    pseudo_target,
                    user,
                },
            );
        }
        Ok(unit.to_json())
    }

    fn difficulty(&self, user: &Username) -> f64 {
        let mut vardiff = lock(&self.vardiff);
        let key = format!("{}.{}", user.address, user.worker);
        if !vardiff.contains_key(&key) {
            let mut v = Vardiff::new(self.shared.config.vardiff(), Instant::now());
            if let Some(d) = user.pseudo_difficulty {
                v.fix(d, Instant::now());
            }
            bounded_insert(&mut vardiff, key.clone(), v);
        }
        match vardiff.get_mut(&key) {
            Some(v) => {
                v.on_idle(Instant::now());
                v.difficulty()
            }
            None => self.shared.config.vardiff().initial_difficulty,
        }
    }

    fn remember(&self, root: Hash256, job: Job) {
        let now = Instant::now();
        let mut jobs = lock(&self.jobs);
        while let Some(&(at, old)) = jobs.order.front() {
            if now.duration_since(at) < JOB_TTL && jobs.order.len() < MAX_JOBS {
                break;
            }
            jobs.order.pop_front();
            jobs.by_root.remove(&old);
        }
        jobs.order.push_back((now, root));
        jobs.by_root.insert(root, job);
    }

    /// getwork with one parameter: `Ok(None)` when accepted, `Ok(Some(reason))` when
    /// answered false (R answers false for unknown work too), `Err` for unreadable data.
    pub fn submit(&self, data: &str) -> Result<Option<&'static str>, RpcError> {
        let header =
            getwork::decode_data(data).map_err(|e| RpcError::new(-32602, e.to_string()))?;
        let job = {
            let jobs = lock(&self.jobs);
            let Some(job) = jobs.by_root.get(&header.merkle_root) else {
                return Ok(Some("unknown-work"));
            };
            (
                job.work.clone(),
                job.coinbase.clone(),
                job.extranonce1,
                job.pseudo_target,
                job.share_floor,
                job.user.clone(),
            )
        };
        let (work, coinbase, extranonce1, pseudo_target, share_floor, user) = job;
        // Only the nonce, the time and the version come from the miner.
        let mut expected = work.header(header.merkle_root);
        expected.nonce = header.nonce;
        expected.timestamp = header.timestamp;
        expected.version = header.version;
        let verdict = submit::check(
            &self.shared,
            Solution {
                work: &work,
                coinbase: &coinbase,
                extranonce1: &extranonce1,
                extranonce2: &[0; EXTRANONCE2_SIZE],
                header: expected,
                pseudo_target,
                share_floor,
                user: &user,
                protocol: "getwork",
            },
        );
        if matches!(verdict, Verdict::Accepted { .. } | Verdict::Stale { .. }) {
            let key = format!("{}.{}", user.address, user.worker);
            if let Some(v) = lock(&self.vardiff).get_mut(&key) {
                v.on_share(Instant::now());
            }
        }
        Ok((!verdict.accepted()).then(|| verdict.reason()))
    }
}
