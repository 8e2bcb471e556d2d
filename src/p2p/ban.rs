//! Ban scores per IP address: misbehaviour adds to an address's score, the score decays
//! with time, and an address whose score reaches the threshold is banned for a while.
//!
//! Scores are kept per address, not per /16 and not per connection, so that one bad peer
//! on a shared host or on loopback (tests bind 127.0.0.2 and up) bans only itself.

use std::collections::HashMap;
use std::net::IpAddr;
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

    /// Adds `points` to `ip`'s score; true when this bans the address.
    pub fn add(&mut self, ip: IpAddr, points: u32, now: Instant) -> bool {
        if points == 0 {
            return false;
        }
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

    /// Bans `ip` at once (an operator's ban, or a test's).
    pub fn ban(&mut self, ip: IpAddr, now: Instant) {
        self.scores.remove(&ip);
        self.banned.insert(ip, now + self.policy.duration);
    }

    pub fn is_banned(&self, ip: &IpAddr, now: Instant) -> bool {
        self.banned.get(ip).is_some_and(|until| *until > now)
    }

    /// The current score of an address (0 when banned or never scored).
    pub fn score(&self, ip: &IpAddr, now: Instant) -> u32 {
        self.scores.get(ip).map_or(0, |s| {
            decayed(
                s.points,
                now.saturating_duration_since(s.at),
                self.policy.half_life,
            )
        })
    }

    /// Addresses banned now.
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
}
