//! One payout address's page: `/miner/ADDRESS` (HTML) and `/api/miner/ADDRESS` (JSON).
//!
//! What the node already keeps is filtered by the address (this node's miners mining to it,
//! the current PPLNS payouts, the newest shares, found and paid blocks); its history over
//! time comes from [`MinerHistory`], a bounded ring of one-minute samples per address that
//! the board fills on the node thread each time the node publishes its status (once a
//! second): the hash rate of this node's miners mining to the address, and the shares (and
//! their work) paying it.

use std::collections::{HashMap, VecDeque};

use serde::Serialize;
use serde_json::{Value, json};

use super::api::View;
use super::status::{HISTORY_SECS, HISTORY_STEP, MinerView};
use crate::bitcoin::address;
use crate::bitcoin::chain::ChainParams;

/// Addresses whose history is kept; beyond it the one idle longest is forgotten.
pub const MINER_ADDRESSES: usize = 128;
/// Samples kept per address: one a minute over [`HISTORY_SECS`] (24 h).
pub const MINER_SAMPLES: usize = (HISTORY_SECS / HISTORY_STEP) as usize;
/// Addresses (or script hex) longer than this are not tracked (no standard address is).
pub const MAX_ADDRESS_LEN: usize = 200;
/// Workers of one address listed by `/api/miner/ADDRESS`.
pub const WORKERS_LIMIT: usize = 100;

/// One minute of one address.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Sample {
    /// Minutes since the Unix epoch.
    minute: u32,
    /// This node's miners mining to the address were sampled in this minute.
    sampled: bool,
    /// Their hash rate (the last sample of the minute).
    hashrate: f32,
    /// The part of it lost to stale and refused submissions.
    dead_hashrate: f32,
    /// Shares of the best chain paying the address, with timestamps in this minute.
    shares: u32,
    /// Their work (expected hashes).
    work: f32,
}

/// Per-address one-minute samples over the last day: at most [`MINER_ADDRESSES`] addresses ×
/// [`MINER_SAMPLES`] samples of 24 bytes, plus each address (≤ [`MAX_ADDRESS_LEN`] bytes):
/// about 4.5 MiB at most.
#[derive(Debug, Default)]
pub struct MinerHistory {
    by_address: HashMap<String, VecDeque<Sample>>,
}

/// One step of an address's history, as `/api/miner/ADDRESS` gives it.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct MinerBucket {
    /// Start of the step (Unix seconds).
    pub start: u64,
    /// The mean hash rate of this node's miners mining to the address over the minutes of
    /// the step they were sampled in; null when none was.
    pub hashrate: Option<f64>,
    /// The part of it lost to stale and refused submissions; null as `hashrate`.
    pub dead_hashrate: Option<f64>,
    /// Shares of the best chain paying the address (found by any node's miners).
    pub shares: u64,
    /// Their work (expected hashes); `work / step` estimates the address's hash rate.
    pub work: f64,
}

impl MinerHistory {
    /// The sample of `address` for the minute holding `time`, made (and the address
    /// admitted, forgetting the one idle longest when full) when missing; `None` for an
    /// address too long to track.
    fn sample_mut(&mut self, address: &str, time: u64) -> Option<&mut Sample> {
        if address.is_empty() || address.len() > MAX_ADDRESS_LEN {
            return None;
        }
        let minute = u32::try_from(time / HISTORY_STEP).unwrap_or(u32::MAX);
        if !self.by_address.contains_key(address) && self.by_address.len() >= MINER_ADDRESSES {
            let idle = self
                .by_address
                .iter()
                .min_by_key(|(_, samples)| samples.back().map_or(0, |s| s.minute))
                .map(|(a, _)| a.clone());
            if let Some(idle) = idle {
                self.by_address.remove(&idle);
            }
        }
        let samples = self.by_address.entry(address.to_owned()).or_default();
        let index = match samples.binary_search_by_key(&minute, |s| s.minute) {
            Ok(i) => i,
            Err(i) => {
                samples.insert(
                    i,
                    Sample {
                        minute,
                        ..Sample::default()
                    },
                );
                if samples.len() > MINER_SAMPLES {
                    samples.pop_front();
                    // Older than every minute kept: not kept either.
                    return i.checked_sub(1).and_then(|i| samples.get_mut(i));
                }
                i
            }
        };
        samples.get_mut(index)
    }

    /// A share of the best chain paying `address` (each share once).
    pub fn share(&mut self, address: &str, time: u64, work: f64) {
        if let Some(s) = self.sample_mut(address, time) {
            s.shares = s.shares.saturating_add(1);
            s.work += work as f32;
        }
    }

    /// This node's miners at `now`: their hash rates summed per address, the
    /// [`MINER_ADDRESSES`] fastest addresses sampled (so that many addresses cannot make
    /// the history forget and readmit addresses at every sample).
    pub fn miners(&mut self, miners: &[MinerView], now: u64) {
        let mut sums: HashMap<&str, (f64, f64)> = HashMap::new();
        for m in miners {
            let sum = sums.entry(m.address.as_str()).or_default();
            sum.0 += m.hashrate;
            sum.1 += m.dead_hashrate();
        }
        let mut sums: Vec<(&str, (f64, f64))> = sums.into_iter().collect();
        sums.sort_by(|a, b| b.1.0.total_cmp(&a.1.0).then(a.0.cmp(b.0)));
        sums.truncate(MINER_ADDRESSES);
        for (address, (rate, dead)) in sums {
            if let Some(s) = self.sample_mut(address, now) {
                s.sampled = true;
                s.hashrate = rate as f32;
                s.dead_hashrate = dead as f32;
            }
        }
    }

    /// Forgets samples older than a day, and addresses left without any.
    pub fn prune(&mut self, now: u64) {
        let oldest = now.saturating_sub(HISTORY_SECS) / HISTORY_STEP;
        self.by_address.retain(|_, samples| {
            while samples
                .front()
                .is_some_and(|s| u64::from(s.minute) < oldest)
            {
                samples.pop_front();
            }
            !samples.is_empty()
        });
    }

    /// Something is kept for `address`.
    pub fn knows(&self, address: &str) -> bool {
        self.by_address.contains_key(address)
    }

    /// Addresses tracked.
    pub fn len(&self) -> usize {
        self.by_address.len()
    }

    /// No address tracked.
    pub fn is_empty(&self) -> bool {
        self.by_address.is_empty()
    }

    /// The last `range` seconds before `now` of `address` in steps of `step` seconds (as
    /// [`super::status::History::chart`]: whole minutes, at most a day), oldest first, empty
    /// steps included.
    pub fn chart(&self, address: &str, now: u64, range: u64, step: u64) -> Vec<MinerBucket> {
        let (first, end, step) = super::status::chart_span(now, range, step);
        let mut out: Vec<MinerBucket> = (first..end)
            .step_by(step as usize)
            .map(|start| MinerBucket {
                start,
                ..MinerBucket::default()
            })
            .collect();
        let mut counts = vec![0u32; out.len()];
        for s in self.by_address.get(address).into_iter().flatten() {
            let start = u64::from(s.minute) * HISTORY_STEP;
            if start < first || start >= end {
                continue;
            }
            let i = ((start - first) / step) as usize;
            let (Some(slot), Some(n)) = (out.get_mut(i), counts.get_mut(i)) else {
                continue;
            };
            slot.shares += u64::from(s.shares);
            slot.work += f64::from(s.work);
            if s.sampled {
                *slot.hashrate.get_or_insert(0.0) += f64::from(s.hashrate);
                *slot.dead_hashrate.get_or_insert(0.0) += f64::from(s.dead_hashrate);
                *n += 1;
            }
        }
        for (slot, n) in out.iter_mut().zip(counts) {
            if n > 0 {
                let n = f64::from(n);
                slot.hashrate = slot.hashrate.map(|r| r / n);
                slot.dead_hashrate = slot.dead_hashrate.map(|r| r / n);
            }
        }
        out
    }
}

/// Why `/miner/ADDRESS` cannot name a payout address, if it cannot: it must be an address
/// of `chain` (any form when the chain is not known), or the script hex the pages show for
/// an output without an address form.
pub fn check_address(text: &str, chain: Option<&ChainParams>) -> Result<(), String> {
    if text.is_empty() {
        return Err("no address given: the page is /miner/ADDRESS".into());
    }
    if text.len() > MAX_ADDRESS_LEN || !text.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err("not a payout address: letters and digits only, at most 200".into());
    }
    let is_hex = text.len() % 2 == 0 && text.bytes().all(|b| b.is_ascii_hexdigit());
    match chain {
        _ if is_hex => Ok(()),
        Some(chain) => address::to_script(text, chain)
            .map(|_| ())
            .map_err(|e| format!("not a payout address of this network: {e}")),
        None if (14..=90).contains(&text.len()) => Ok(()),
        None => Err("not a payout address".into()),
    }
}

/// The node knows something of `address`: a miner of this node, a current payout, a share
/// among the newest, a found or paid block, its payout address, or its kept history.
pub fn known(view: &View, address: &str, in_history: bool) -> bool {
    let s = view.status;
    in_history
        || s.payout_address == address
        || view.miners.iter().any(|m| m.address == address)
        || s.payouts.iter().any(|p| p.address == address)
        || s.recent_shares.iter().any(|r| r.address == address)
        || s.found_blocks.iter().any(|b| b.finder == address)
        || s.paid_blocks
            .iter()
            .any(|b| b.payouts.iter().any(|p| p.address == address))
}

/// `/api/miner/ADDRESS`: the address's figures now and its history (`history`, from
/// [`MinerHistory::chart`]).
pub fn miner(view: &View, address: &str, history: Vec<MinerBucket>) -> Value {
    let s = view.status;
    let workers: Vec<&MinerView> = view
        .miners
        .iter()
        .filter(|m| m.address == address)
        .collect();
    let hashrate = workers.iter().map(|m| m.hashrate).sum::<f64>() + 0.0;
    let dead_hashrate = workers.iter().map(|m| m.dead_hashrate()).sum::<f64>() + 0.0;
    let (accepted, stale, rejected) = workers.iter().fold((0, 0, 0), |(a, st, r), m| {
        (a + m.accepted, st + m.stale, r + m.rejected)
    });
    let submitted = accepted + stale + rejected;
    let total: u64 = s.payouts.iter().map(|p| p.amount).sum();
    let payout = s.payouts.iter().find(|p| p.address == address).map(|p| {
        json!({
            "amount": p.amount,
            "share": if total > 0 { json!(p.amount as f64 / total as f64) } else { Value::Null },
        })
    });
    let recent: Vec<_> = s
        .recent_shares
        .iter()
        .filter(|r| r.address == address)
        .collect();
    let blocks: Vec<_> = s
        .found_blocks
        .iter()
        .filter(|b| b.finder == address)
        .collect();
    let paid: Vec<Value> = s
        .paid_blocks
        .iter()
        .filter_map(|b| {
            let amount: u64 = b
                .payouts
                .iter()
                .filter(|p| p.address == address)
                .map(|p| p.amount)
                .sum();
            (amount > 0).then(
                || json!({"time": b.time, "height": b.height, "hash": b.hash, "amount": amount}),
            )
        })
        .collect();
    let paid_total: u64 = paid.iter().filter_map(|p| p["amount"].as_u64()).sum();
    let window_shares: u64 = history.iter().map(|b| b.shares).sum();
    json!({
        "address": address,
        "now": view.now,
        "uptime": view.uptime(),
        "node_payout_address": s.payout_address == address,
        "hashrate": hashrate,
        "dead_hashrate": dead_hashrate,
        "submissions": {"accepted": accepted, "stale": stale, "rejected": rejected},
        "dead_prop": if submitted > 0 {
            json!((stale + rejected) as f64 / submitted as f64)
        } else {
            Value::Null
        },
        "workers_total": workers.len(),
        "workers": workers.iter().take(WORKERS_LIMIT).collect::<Vec<_>>(),
        "payout": payout,
        "shares": {
            "recent": recent.len(),
            "recent_of": s.recent_shares.len(),
            "in_history": window_shares,
        },
        "recent_shares": recent,
        "blocks": blocks,
        "paid": paid,
        "paid_total": paid_total,
        "history": history,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: u64 = HISTORY_STEP;

    fn miner(address: &str, hashrate: f64, rejected: u64) -> MinerView {
        MinerView {
            address: address.into(),
            hashrate,
            accepted: 100 - rejected,
            rejected,
            ..MinerView::default()
        }
    }

    #[test]
    fn an_address_history_sums_workers_and_averages_minutes_into_steps() {
        // Four and a half minutes into a five-minute step.
        let now = 5_000_000 * MINUTE + 4 * MINUTE + 30;
        let mut h = MinerHistory::default();
        h.miners(
            &[miner("a", 10.0, 0), miner("a", 30.0, 50)],
            now - 2 * MINUTE,
        );
        h.miners(&[miner("a", 20.0, 0)], now - MINUTE);
        h.share("a", now - MINUTE, 600.0);
        h.share("a", now - 10, 60.0);
        let chart = h.chart("a", now, 5 * MINUTE, 5 * MINUTE);
        assert_eq!(chart.len(), 1);
        // Two sampled minutes: 40 H/s (15 dead), then 20 H/s.
        assert_eq!(chart[0].hashrate, Some(30.0));
        assert_eq!(chart[0].dead_hashrate, Some(7.5));
        assert_eq!((chart[0].shares, chart[0].work), (2, 660.0));
        let by_minute = h.chart("a", now, 3 * MINUTE, MINUTE);
        assert_eq!(by_minute.len(), 3);
        assert_eq!(
            by_minute[2].hashrate, None,
            "not sampled in the newest minute"
        );
        assert!(h.chart("b", now, 3600, 60).iter().all(|b| b.shares == 0));
    }

    #[test]
    fn the_history_keeps_at_most_its_addresses_and_a_day_of_minutes() {
        let now = 6_000_000 * MINUTE;
        let mut h = MinerHistory::default();
        for i in 0..MINER_ADDRESSES as u64 + 10 {
            h.share(&format!("addr{i}"), now - (200 - i) * MINUTE, 1.0);
        }
        assert_eq!(h.len(), MINER_ADDRESSES);
        assert!(!h.knows("addr0"), "the one idle longest is forgotten");
        assert!(h.knows(&format!("addr{}", MINER_ADDRESSES + 9)));
        for m in 0..MINER_SAMPLES as u64 + 100 {
            h.share("busy", now - m * MINUTE, 1.0);
        }
        assert!(h.by_address.get("busy").map_or(0, VecDeque::len) <= MINER_SAMPLES);
        h.share(&"x".repeat(MAX_ADDRESS_LEN + 1), now, 1.0);
        assert!(!h.knows(&"x".repeat(MAX_ADDRESS_LEN + 1)));
        h.prune(now + 2 * HISTORY_SECS);
        assert!(h.is_empty());
        // More miners' addresses than kept: the fastest are sampled.
        let many: Vec<MinerView> = (0..MINER_ADDRESSES as u64 + 50)
            .map(|i| miner(&format!("m{i}"), i as f64, 0))
            .collect();
        h.miners(&many, now);
        assert_eq!(h.len(), MINER_ADDRESSES);
        assert!(h.knows(&format!("m{}", MINER_ADDRESSES + 49)) && !h.knows("m0"));
    }

    #[test]
    fn malformed_addresses_are_refused_with_a_reason() {
        let chain = crate::network::Network::built_in("regtest").map(|n| n.bitcoin);
        let chain = chain.as_ref();
        let good = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080";
        assert_eq!(check_address(good, chain), Ok(()));
        assert_eq!(check_address("0014aabb", chain), Ok(()), "script hex");
        for bad in [
            "",
            "not an address",
            "<script>",
            "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080",
            "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt081",
        ] {
            assert!(check_address(bad, chain).is_err(), "{bad:?}");
        }
        assert!(check_address(&"a".repeat(201), None).is_err());
        assert_eq!(check_address(good, None), Ok(()));
    }
}
