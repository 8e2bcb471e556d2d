//! Ban scores per IP address: misbehaviour adds to an address's score, the score decays
//! with time, and an address whose score reaches the threshold is banned for a while.
//!
//! Scores are kept per [`key`]: per IPv4 address, and per /64 for IPv6 (anyone with one
//! IPv6 address has the 2^64 addresses of its /64 for free, so a per-address ban would cost
//! an attacker nothing). Not per /16 and not per connection, so that one bad peer on a
//! shared host or on loopback (tests bind 127.0.0.2 and up) bans only itself; each loopback
//! address stays its own key.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, Instant};

/// Most addresses with a score remembered; the lowest scores are forgotten first.
const MAX_SCORED: usize = 10_000;

/// When scores become bans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BanPolicy {
    /// A score at or above this bans the address.
    pub threshold: u32,
    /// How long a ban lasts.
    pub duration: Duration,
    /// A score halves after this long without new misbehaviour.
    pub half_life: Duration,
}

impl Default for BanPolicy {
    fn default() -> Self {
        BanPolicy {
            threshold: 100,
            duration: Duration::from_secs(3600),
            half_life: Duration::from_secs(600),
        }
    }
}

/// What a score and a ban apply to: an IPv4 address (IPv4-mapped IPv6 addresses are
/// IPv4), IPv6 loopback as itself, any other IPv6 address's /64 (the address with its
/// last 64 bits zeroed).
pub fn key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None if v6.is_loopback() => ip,
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

#[derive(Debug, Clone, Copy)]
struct Score {
    points: u32,
    at: Instant,
}

/// Scores and bans. Owned behind a lock by the p2p shared state.
#[derive(Debug)]
pub struct Bans {
    policy: BanPolicy,
    scores: HashMap<IpAddr, Score>,
    banned: HashMap<IpAddr, Instant>,
}

impl Bans {
    pub fn new(policy: BanPolicy) -> Bans {
        Bans {
            policy,
            scores: HashMap::new(),
            banned: HashMap::new(),
        }
    }

    /// Adds `points` to the score of `ip`'s [`key`]; true when this bans it.
    pub fn add(&mut self, ip: IpAddr, points: u32, now: Instant) -> bool {
        if points == 0 {
            return false;
        }
        let ip = key(ip);
        let half_life = self.policy.half_life;
        let entry = self
            .scores
            .entry(ip)
            .or_insert(Score { points: 0, at: now });
        entry.points = decayed(
            entry.points,
            now.saturating_duration_since(entry.at),
            half_life,
        )
        .saturating_add(points);
        entry.at = now;
        if entry.points >= self.policy.threshold {
            self.scores.remove(&ip);
            self.banned.insert(ip, now + self.policy.duration);
            return true;
        }
        if self.scores.len() > MAX_SCORED {
            self.forget_lowest();
        }
        false
    }

    /// Bans `ip`'s [`key`] at once (an operator's ban, or a test's).
    pub fn ban(&mut self, ip: IpAddr, now: Instant) {
        let ip = key(ip);
        self.scores.remove(&ip);
        self.banned.insert(ip, now + self.policy.duration);
    }

    /// Whether `ip`'s [`key`] is banned now.
    pub fn is_banned(&self, ip: &IpAddr, now: Instant) -> bool {
        self.banned.get(&key(*ip)).is_some_and(|until| *until > now)
    }

    /// The current score of an address's [`key`] (0 when banned or never scored).
    pub fn score(&self, ip: &IpAddr, now: Instant) -> u32 {
        self.scores.get(&key(*ip)).map_or(0, |s| {
            decayed(
                s.points,
                now.saturating_duration_since(s.at),
                self.policy.half_life,
            )
        })
    }

    /// Keys banned now (an IPv6 /64 appears as its first address).
    pub fn banned(&self, now: Instant) -> Vec<IpAddr> {
        let mut out: Vec<IpAddr> = self
            .banned
            .iter()
            .filter(|(_, until)| **until > now)
            .map(|(ip, _)| *ip)
            .collect();
        out.sort();
        out
    }

    /// Drops expired bans and scores that decayed to nothing.
    pub fn expire(&mut self, now: Instant) {
        self.banned.retain(|_, until| *until > now);
        let half_life = self.policy.half_life;
        self.scores
            .retain(|_, s| decayed(s.points, now.saturating_duration_since(s.at), half_life) > 0);
    }

    fn forget_lowest(&mut self) {
        if let Some(ip) = self
            .scores
            .iter()
            .min_by_key(|(_, s)| s.points)
            .map(|(ip, _)| *ip)
        {
            self.scores.remove(&ip);
        }
    }
}

fn decayed(points: u32, elapsed: Duration, half_life: Duration) -> u32 {
    if half_life.is_zero() {
        return points;
    }
    let halvings = elapsed.as_secs_f64() / half_life.as_secs_f64();
    if halvings >= 32.0 {
        return 0;
    }
    (f64::from(points) / 2f64.powf(halvings)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn scores_add_up_to_a_ban_of_that_address_only() {
        let mut bans = Bans::new(BanPolicy::default());
        let now = Instant::now();
        assert!(!bans.add(ip("127.0.0.2"), 60, now));
        assert!(!bans.is_banned(&ip("127.0.0.2"), now));
        assert!(bans.add(ip("127.0.0.2"), 60, now));
        assert!(bans.is_banned(&ip("127.0.0.2"), now));
        assert!(!bans.is_banned(&ip("127.0.0.1"), now));
        assert_eq!(bans.banned(now), vec![ip("127.0.0.2")]);
    }

    #[test]
    fn bans_expire_and_scores_decay() {
        let policy = BanPolicy {
            threshold: 100,
            duration: Duration::from_secs(10),
            half_life: Duration::from_secs(5),
        };
        let mut bans = Bans::new(policy);
        let t0 = Instant::now();
        bans.add(ip("10.0.0.1"), 80, t0);
        assert_eq!(bans.score(&ip("10.0.0.1"), t0 + Duration::from_secs(5)), 40);
        // 80 halved to 40, plus 50: still below 100.
        assert!(!bans.add(ip("10.0.0.1"), 50, t0 + Duration::from_secs(5)));
        bans.ban(ip("10.0.0.3"), t0);
        assert!(bans.is_banned(&ip("10.0.0.3"), t0 + Duration::from_secs(9)));
        assert!(!bans.is_banned(&ip("10.0.0.3"), t0 + Duration::from_secs(10)));
        bans.expire(t0 + Duration::from_secs(1000));
        assert!(bans.banned(t0).is_empty());
        assert_eq!(bans.score(&ip("10.0.0.1"), t0), 0);
    }

    #[test]
    fn ipv6_bans_cover_the_whole_64_and_ipv4_and_loopback_stay_per_address() {
        let mut bans = Bans::new(BanPolicy::default());
        let now = Instant::now();
        // Two addresses of one /64 share a score: 60 + 60 bans the /64.
        assert!(!bans.add(ip("2001:db8:1:2::1"), 60, now));
        assert!(bans.add(ip("2001:db8:1:2:ffff:1:2:3"), 60, now));
        assert!(bans.is_banned(&ip("2001:db8:1:2:abcd::9"), now));
        assert!(!bans.is_banned(&ip("2001:db8:1:3::1"), now));
        assert_eq!(bans.banned(now), vec![ip("2001:db8:1:2::")]);
        // IPv4, its mapped form, and loopback: per address.
        bans.ban(ip("::ffff:192.0.2.7"), now);
        assert!(bans.is_banned(&ip("192.0.2.7"), now));
        assert!(!bans.is_banned(&ip("192.0.2.8"), now));
        bans.ban(ip("127.0.0.2"), now);
        assert!(!bans.is_banned(&ip("127.0.0.3"), now));
        bans.ban(ip("::1"), now);
        assert!(bans.is_banned(&ip("::1"), now));
        assert!(!bans.is_banned(&ip("::2"), now));
        assert_eq!(key(ip("::1")), ip("::1"));
    }
}
