//! Miners as the worker side sees them: user names (payout address, worker name and the
//! `+DIFF` / `/DIFF` overrides), difficulty and targets, per-connection vardiff, and the
//! per-miner statistics the web side shows.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ruint::aliases::U256;

use crate::bitcoin::address::{self, AddressError};
use crate::bitcoin::chain::ChainParams;
use crate::bitcoin::target::target_to_difficulty;
use crate::thread::lock;

/// Longest user name read; longer ones are refused.
pub const MAX_USERNAME_LEN: usize = 256;
/// How far back the hashrate of a miner looks.
pub const HASHRATE_WINDOW: Duration = Duration::from_secs(600);
/// Most miners (address and worker name) whose statistics are kept.
const MAX_MINERS: usize = 10_000;

/// The difficulty-1 target of Stratum and getwork miners: 0xffff × 2^208.
pub fn diff1_target() -> U256 {
    U256::from(0xffffu64) << 208
}

/// The target of a difficulty (0 or less, or not a number: the easiest target).
pub fn difficulty_to_target(difficulty: f64) -> U256 {
    if difficulty.is_nan() || difficulty <= 0.0 {
        return U256::MAX;
    }
    f64_to_u256(65535.0 * 2f64.powi(208) / difficulty)
}

/// The difficulty of a target (its inverse up to rounding).
pub fn target_difficulty(target: U256) -> f64 {
    target_to_difficulty(target)
}

/// A non-negative float as a 256-bit integer, saturating.
fn f64_to_u256(x: f64) -> U256 {
    if x.is_nan() || x < 1.0 {
        return U256::ZERO;
    }
    if x >= 2f64.powi(256) {
        return U256::MAX;
    }
    let bits = x.to_bits();
    let exponent = ((bits >> 52) & 0x7ff) as i32 - 1075;
    let mantissa = (bits & ((1u64 << 52) - 1)) | (1u64 << 52);
    if exponent >= 0 {
        U256::from(mantissa) << (exponent as usize)
    } else {
        U256::from(mantissa >> ((-exponent) as u32).min(63))
    }
}

/// A miner's user name, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Username {
    /// The payout address as given.
    pub address: String,
    /// What follows the first `.` or `_` of the name, if anything.
    pub worker: String,
    /// `+DIFF`: a fixed pseudo-share difficulty (no vardiff).
    pub pseudo_difficulty: Option<f64>,
    /// `/DIFF`: the least difficulty of the shares this miner sends to the share chain.
    pub share_difficulty: Option<f64>,
}

/// Why a user name cannot be mined with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UsernameError {
    TooLong(usize),
    Empty,
    BadDifficulty(String),
    Address(AddressError),
}

impl fmt::Display for UsernameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UsernameError::TooLong(n) => {
                write!(f, "user name is {n} bytes (at most {MAX_USERNAME_LEN})")
            }
            UsernameError::Empty => write!(f, "user name is empty: it must be a payout address"),
            UsernameError::BadDifficulty(d) => {
                write!(f, "user name has a bad difficulty override {d:?}")
            }
            UsernameError::Address(e) => write!(f, "user name is not a payout address: {e}"),
        }
    }
}

impl std::error::Error for UsernameError {}

fn parse_difficulty(s: &str) -> Result<f64, UsernameError> {
    match s.parse::<f64>() {
        Ok(d) if d.is_finite() && d > 0.0 => Ok(d),
        _ => Err(UsernameError::BadDifficulty(s.to_string())),
    }
}

impl Username {
    /// Reads `ADDRESS[.WORKER|_WORKER][+DIFF][/DIFF]` (the overrides in either order).
    pub fn parse(name: &str) -> Result<Username, UsernameError> {
        if name.len() > MAX_USERNAME_LEN {
            return Err(UsernameError::TooLong(name.len()));
        }
        let name = name.trim();
        let base_end = name.find(['+', '/']).unwrap_or(name.len());
        let (base, mut rest) = name.split_at(base_end);
        let mut pseudo_difficulty = None;
        let mut share_difficulty = None;
        while let Some(kind) = rest.chars().next() {
            let body = &rest[1..];
            let end = body.find(['+', '/']).unwrap_or(body.len());
            let value = parse_difficulty(&body[..end])?;
            if kind == '+' {
                pseudo_difficulty = Some(value);
            } else {
                share_difficulty = Some(value);
            }
            rest = &body[end..];
        }
        let (address, worker) = match base.find(['.', '_']) {
            Some(i) => (&base[..i], &base[i + 1..]),
            None => (base, ""),
        };
        if address.is_empty() {
            return Err(UsernameError::Empty);
        }
        Ok(Username {
            address: address.to_string(),
            worker: worker.to_string(),
            pseudo_difficulty,
            share_difficulty,
        })
    }

    /// The payout script of the address, checked against `chain`.
    pub fn payout_script(&self, chain: &ChainParams) -> Result<Vec<u8>, UsernameError> {
        address::to_script(&self.address, chain).map_err(UsernameError::Address)
    }
}

/// Vardiff settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VardiffConfig {
    /// Seconds wanted between pseudo-shares.
    pub target_interval: f64,
    /// The easiest difficulty handed out (never lower).
    pub min_difficulty: f64,
    pub initial_difficulty: f64,
}

/// One connection's (or getwork user's) pseudo-share difficulty, adjusted to the target rate.
#[derive(Debug, Clone)]
pub struct Vardiff {
    config: VardiffConfig,
    difficulty: f64,
    /// A fixed difficulty (`+DIFF`, `mining.suggest_difficulty`) turns adjustment off.
    fixed: bool,
    since: Instant,
    count: u32,
    /// Seconds without enough pseudo-shares before the difficulty is lowered: four
    /// intervals, and at first four more times this connection's phase (0 to 1), so that
    /// idle miners that connected together are retargeted at times spread over an interval
    /// (and stay spread), not all in the same second.
    idle_after: f64,
}

/// Pseudo-shares counted before a retarget; fewer are enough after 4 intervals.
const VARDIFF_SHARES: u32 = 12;

/// Seconds after which fewer than `VARDIFF_SHARES` pseudo-shares are enough to retarget.
fn idle_period(config: &VardiffConfig) -> f64 {
    4.0 * config.target_interval
}

impl Vardiff {
    /// A new miner's vardiff, its phase drawn at random.
    pub fn new(config: VardiffConfig, now: Instant) -> Vardiff {
        // 53 random bits as a fraction in [0, 1).
        let phase = (super::work::random_u64() >> 11) as f64 / (1u64 << 53) as f64;
        Vardiff::with_phase(config, now, phase)
    }

    /// A new miner's vardiff whose first idle retarget comes `phase` (0 to 1, clamped) of
    /// an idle period after the usual one.
    pub fn with_phase(config: VardiffConfig, now: Instant, phase: f64) -> Vardiff {
        let phase = if phase.is_finite() {
            phase.clamp(0.0, 1.0)
        } else {
            0.0
        };
        Vardiff {
            config,
            difficulty: config.initial_difficulty.max(config.min_difficulty),
            fixed: false,
            since: now,
            count: 0,
            idle_after: idle_period(&config) * (1.0 + phase),
        }
    }

    pub fn difficulty(&self) -> f64 {
        self.difficulty
    }

    /// Fixes the difficulty (clamped to the minimum).
    pub fn fix(&mut self, difficulty: f64, now: Instant) {
        self.difficulty = difficulty.max(self.config.min_difficulty);
        self.fixed = true;
        self.since = now;
        self.count = 0;
    }

    /// When an idle retarget (`on_idle`) may next change the difficulty; `None` when it
    /// is fixed.
    pub fn next_idle(&self) -> Option<Instant> {
        (!self.fixed).then(|| self.since + Duration::from_secs_f64(self.idle_after.max(0.0)))
    }

    /// Counts a pseudo-share; returns the new difficulty when it changed.
    pub fn on_share(&mut self, now: Instant) -> Option<f64> {
        self.count += 1;
        self.retarget(now)
    }

    /// Lowers the difficulty of a miner that found too few pseudo-shares for a long time;
    /// returns the new difficulty when it changed.
    pub fn on_idle(&mut self, now: Instant) -> Option<f64> {
        self.retarget(now)
    }

    fn retarget(&mut self, now: Instant) -> Option<f64> {
        if self.fixed {
            return None;
        }
        let elapsed = now.duration_since(self.since).as_secs_f64();
        let long = elapsed >= self.idle_after;
        if self.count < VARDIFF_SHARES && !long {
            return None;
        }
        if elapsed <= 0.0 {
            return None;
        }
        // A rate of 0 still counts as half a share, so an idle miner's difficulty falls.
        let rate = f64::from(self.count).max(0.5) / elapsed;
        let ideal = self.difficulty * rate * self.config.target_interval;
        let new = ideal
            .clamp(self.difficulty / 4.0, self.difficulty * 4.0)
            .max(self.config.min_difficulty);
        self.since = now;
        self.count = 0;
        self.idle_after = idle_period(&self.config);
        if (new - self.difficulty).abs() <= self.difficulty * 0.1 {
            return None;
        }
        self.difficulty = new;
        Some(new)
    }
}

/// What the web side shows of one miner (an address and worker name).
#[derive(Debug, Clone, PartialEq)]
pub struct MinerStats {
    pub address: String,
    pub worker: String,
    /// Hashes per second over the last `HASHRATE_WINDOW`, from pseudo-shares.
    pub hashrate: f64,
    /// Pseudo-shares and shares accepted on current work.
    pub accepted: u64,
    /// Submissions on work that was no longer current.
    pub stale: u64,
    /// Submissions refused (unknown job, duplicate, low difficulty, bad fields).
    pub rejected: u64,
    /// Shares (meeting the share target) sent to the share chain.
    pub shares: u64,
    /// The current pseudo-share difficulty.
    pub difficulty: f64,
    /// Unix seconds of the last submission or work request.
    pub last_seen: u64,
    pub protocol: &'static str,
}

/// How a submission ended, for the statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Accepted,
    Stale,
    Rejected,
}

#[derive(Debug)]
struct Record {
    stats: MinerStats,
    first_seen: Instant,
    work: VecDeque<(Instant, f64)>,
}

/// Every miner's statistics, shared by the worker threads.
#[derive(Debug, Default)]
pub struct Registry {
    miners: Mutex<HashMap<(String, String), Record>>,
}

pub use crate::unix_now;

impl Registry {
    fn with<R>(
        &self,
        user: &Username,
        protocol: &'static str,
        f: impl FnOnce(&mut Record) -> R,
    ) -> R {
        let mut miners = lock(&self.miners);
        let key = (user.address.clone(), user.worker.clone());
        if miners.len() >= MAX_MINERS && !miners.contains_key(&key) {
            // Forget the miner seen longest ago.
            if let Some(oldest) = miners
                .iter()
                .min_by_key(|(_, r)| r.stats.last_seen)
                .map(|(k, _)| k.clone())
            {
                miners.remove(&oldest);
            }
        }
        let record = miners.entry(key).or_insert_with(|| Record {
            stats: MinerStats {
                address: user.address.clone(),
                worker: user.worker.clone(),
                hashrate: 0.0,
                accepted: 0,
                stale: 0,
                rejected: 0,
                shares: 0,
                difficulty: 0.0,
                last_seen: 0,
                protocol,
            },
            first_seen: Instant::now(),
            work: VecDeque::new(),
        });
        record.stats.last_seen = unix_now();
        record.stats.protocol = protocol;
        f(record)
    }

    /// Notes that the miner asked for work.
    pub fn seen(&self, user: &Username, protocol: &'static str, difficulty: f64) {
        self.with(user, protocol, |r| r.stats.difficulty = difficulty);
    }

    /// Notes the miner's new difficulty (the node's doing: a new miner is seen now, a
    /// known one keeps its last-seen time).
    pub fn set_difficulty(&self, user: &Username, protocol: &'static str, difficulty: f64) {
        {
            let mut miners = lock(&self.miners);
            let key = (user.address.clone(), user.worker.clone());
            if let Some(r) = miners.get_mut(&key) {
                r.stats.difficulty = difficulty;
                return;
            }
        }
        self.seen(user, protocol, difficulty);
    }

    /// Records a submission; `attempts` is the work it proves (the pseudo-share
    /// target's expected hashes) when it met that target.
    pub fn record(
        &self,
        user: &Username,
        protocol: &'static str,
        outcome: Outcome,
        attempts: Option<f64>,
        share: bool,
    ) {
        self.with(user, protocol, |r| {
            match outcome {
                Outcome::Accepted => r.stats.accepted += 1,
                Outcome::Stale => r.stats.stale += 1,
                Outcome::Rejected => r.stats.rejected += 1,
            }
            if share {
                r.stats.shares += 1;
            }
            if let Some(a) = attempts
                && outcome != Outcome::Rejected
            {
                r.work.push_back((Instant::now(), a));
            }
        });
    }

    /// Every miner's statistics, hashrates computed now.
    pub fn stats(&self) -> Vec<MinerStats> {
        let now = Instant::now();
        let mut miners = lock(&self.miners);
        let mut out: Vec<MinerStats> = miners
            .values_mut()
            .map(|r| {
                while r
                    .work
                    .front()
                    .is_some_and(|(t, _)| now.duration_since(*t) > HASHRATE_WINDOW)
                {
                    r.work.pop_front();
                }
                let span = now
                    .duration_since(r.first_seen)
                    .min(HASHRATE_WINDOW)
                    .as_secs_f64()
                    .max(1.0);
                let mut s = r.stats.clone();
                s.hashrate = r.work.iter().map(|(_, a)| a).sum::<f64>() / span;
                s
            })
            .collect();
        out.sort_by(|a, b| (&a.address, &a.worker).cmp(&(&b.address, &b.worker)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_give_address_worker_and_overrides_in_either_order() {
        let u = Username::parse("addr.rig1+0.5/1000").unwrap();
        assert_eq!(u.address, "addr");
        assert_eq!(u.worker, "rig1");
        assert_eq!(u.pseudo_difficulty, Some(0.5));
        assert_eq!(u.share_difficulty, Some(1000.0));
        let u = Username::parse("addr_w/2+3").unwrap();
        assert_eq!((u.address.as_str(), u.worker.as_str()), ("addr", "w"));
        assert_eq!(u.pseudo_difficulty, Some(3.0));
        assert_eq!(u.share_difficulty, Some(2.0));
        assert_eq!(Username::parse("addr").unwrap().worker, "");
        assert!(Username::parse("addr+x").is_err());
        assert!(Username::parse("addr+-1").is_err());
        assert!(Username::parse("+5").is_err());
        assert!(Username::parse(&"a".repeat(300)).is_err());
    }

    #[test]
    fn difficulty_and_target_are_inverse() {
        assert_eq!(difficulty_to_target(1.0), diff1_target());
        assert_eq!(difficulty_to_target(0.0), U256::MAX);
        let t = difficulty_to_target(1e-6);
        assert!((target_difficulty(t) - 1e-6).abs() < 1e-12);
        assert_eq!(difficulty_to_target(1e-80), U256::MAX);
        assert!(difficulty_to_target(1e80) < U256::from(1u64 << 20));
    }

    #[test]
    fn vardiff_follows_the_rate_within_clamps_and_never_below_the_minimum() {
        let config = VardiffConfig {
            target_interval: 10.0,
            min_difficulty: 1.0,
            initial_difficulty: 16.0,
        };
        let t0 = Instant::now();
        let mut v = Vardiff::new(config, t0);
        // 12 shares in 1 s: far too fast, so ×4 at most.
        let mut changed = None;
        for i in 1..=12 {
            changed = v.on_share(t0 + Duration::from_millis(i * 80));
        }
        assert_eq!(changed, Some(64.0));
        // Nothing for 400 s: down, at most ÷4 per step, never below 1.
        let mut now = t0 + Duration::from_secs(1);
        for _ in 0..10 {
            now += Duration::from_secs(400);
            v.on_idle(now);
        }
        assert_eq!(v.difficulty(), 1.0);
        v.fix(0.01, now);
        assert_eq!(v.difficulty(), 1.0);
        assert_eq!(v.on_share(now + Duration::from_secs(1000)), None);
    }

    /// The seconds after `t0` at which an idle `v` is retargeted, ticked once a second as
    /// the Stratum notifier does, over `seconds`.
    fn idle_retargets(v: &mut Vardiff, t0: Instant, seconds: u64) -> Vec<u64> {
        (1..=seconds)
            .filter(|s| v.on_idle(t0 + Duration::from_secs(*s)).is_some())
            .collect()
    }

    #[test]
    fn idle_miners_connected_together_are_retargeted_at_times_spread_over_the_interval() {
        use rand::{RngExt, SeedableRng};
        let config = VardiffConfig {
            target_interval: 5.0,
            min_difficulty: 1e-9,
            initial_difficulty: 1e6,
        };
        let t0 = Instant::now();
        let mut rng = rand::rngs::StdRng::seed_from_u64(15);
        let mut firsts = Vec::new();
        let mut seconds = std::collections::HashMap::<u64, usize>::new();
        for _ in 0..1000 {
            let mut v = Vardiff::with_phase(config, t0, rng.random::<f64>());
            let times = idle_retargets(&mut v, t0, 100);
            // First within one to two idle periods (20 to 40 s), then every period.
            assert!((20..=40).contains(&times[0]), "{times:?}");
            assert!(times.windows(2).all(|w| w[1] - w[0] == 20), "{times:?}");
            firsts.push(times[0]);
            for t in times {
                *seconds.entry(t).or_default() += 1;
            }
        }
        let spread = firsts.iter().max().unwrap() - firsts.iter().min().unwrap();
        assert!(spread >= 18, "first retargets over {spread} s only");
        // No second carries more than a few times its fair share (1000 / 20 = 50).
        let busiest = seconds.values().max().unwrap();
        assert!(*busiest <= 120, "{busiest} retargets in one second");
    }

    #[test]
    fn each_new_vardiff_draws_its_own_phase() {
        let config = VardiffConfig {
            target_interval: 5.0,
            min_difficulty: 1e-9,
            initial_difficulty: 1e6,
        };
        let t0 = Instant::now();
        let firsts: std::collections::HashSet<u64> = (0..50)
            .map(|_| idle_retargets(&mut Vardiff::new(config, t0), t0, 45)[0])
            .collect();
        assert!(firsts.len() >= 8, "50 miners retargeted in {firsts:?} only");
    }

    #[test]
    fn registry_counts_outcomes_and_hashrate() {
        let reg = Registry::default();
        let u = Username::parse("addr.w").unwrap();
        reg.record(&u, "stratum", Outcome::Accepted, Some(600.0), true);
        reg.record(&u, "stratum", Outcome::Stale, Some(600.0), false);
        reg.record(&u, "stratum", Outcome::Rejected, Some(600.0), false);
        let s = &reg.stats()[0];
        assert_eq!((s.accepted, s.stale, s.rejected, s.shares), (1, 1, 1, 1));
        assert!(s.hashrate > 0.0);
        assert!(s.last_seen > 0);
    }

    #[test]
    fn a_difficulty_change_by_the_node_does_not_count_as_the_miner_being_seen() {
        let reg = Registry::default();
        let u = Username::parse("addr.w").unwrap();
        // A miner first known by its difficulty is seen now.
        reg.set_difficulty(&u, "stratum", 8.0);
        assert!(reg.stats()[0].last_seen > 0);
        reg.miners
            .lock()
            .unwrap()
            .values_mut()
            .for_each(|r| r.stats.last_seen = 5);
        reg.set_difficulty(&u, "stratum", 2.0);
        let s = &reg.stats()[0];
        assert_eq!((s.difficulty, s.last_seen), (2.0, 5));
        reg.seen(&u, "stratum", 2.0);
        assert!(reg.stats()[0].last_seen > 5);
    }
}
