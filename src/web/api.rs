//! The JSON endpoints: this node's own (`/api/...`, `/health`) and the p2pool-compatible ones
//! (`/rate`, `/users`, `/fee`, `/local_stats`, `/global_stats`, `/current_payouts`,
//! `/recent_blocks`, …) in the shapes the Python p2pool's `web.py` gives them.
//!
//! Each function turns a [`View`] (one status snapshot plus the peers and miners read at the
//! same moment) into a `serde_json::Value`; doc/api.md describes every field.

use serde_json::{Map, Value, json};

use super::status::{MinerView, PeerView, PoolStatus};

/// 2^32: the expected hashes per difficulty-1 share.
const HASHES_PER_DIFFICULTY: f64 = 4_294_967_296.0;
/// Bitcoin's block period in seconds (for the network hash rate R reports).
const BLOCK_PERIOD: f64 = 600.0;

/// Everything one answer is built from, read once per request.
pub struct View<'a> {
    pub status: &'a PoolStatus,
    pub peers: &'a [PeerView],
    pub miners: &'a [MinerView],
    /// Unix seconds.
    pub now: u64,
}

impl View<'_> {
    /// The local hash rate: the sum over the connected miners (0, never -0, without any:
    /// an empty float sum is -0).
    pub fn local_hashrate(&self) -> f64 {
        self.miners.iter().map(|m| m.hashrate).sum::<f64>() + 0.0
    }

    /// The local dead hash rate (rejected pseudo-shares).
    pub fn local_dead_hashrate(&self) -> f64 {
        self.miners
            .iter()
            .map(MinerView::dead_hashrate)
            .sum::<f64>()
            + 0.0
    }

    pub fn uptime(&self) -> u64 {
        self.now.saturating_sub(self.status.started_at)
    }

    /// Handshaken inbound peers.
    pub fn incoming_peers(&self) -> usize {
        self.peers
            .iter()
            .filter(|p| p.inbound && p.version.is_some())
            .count()
    }

    /// Handshaken outbound peers.
    pub fn outgoing_peers(&self) -> usize {
        self.peers
            .iter()
            .filter(|p| !p.inbound && p.version.is_some())
            .count()
    }

    /// Connections still in their handshake.
    pub fn connecting_peers(&self) -> usize {
        self.peers.iter().filter(|p| p.version.is_none()).count()
    }

    /// The Bitcoin network's hash rate implied by the block difficulty.
    pub fn network_hashrate(&self) -> f64 {
        self.status.block_difficulty * HASHES_PER_DIFFICULTY / BLOCK_PERIOD
    }

    fn has_best(&self) -> bool {
        !self.status.best_share.is_empty()
    }
}

/// A ratio, or null when the denominator is zero.
fn ratio(num: f64, den: f64) -> Value {
    if den > 0.0 {
        json!(num / den)
    } else {
        Value::Null
    }
}

fn sats_to_btc(amount: u64) -> f64 {
    amount as f64 / 1e8
}

/// `/api/stats`: the dashboard's headline figures.
pub fn stats(view: &View) -> Value {
    let s = view.status;
    let local = &s.local_shares;
    let local_hashrate = view.local_hashrate();
    let progress = if s.sync_want == 0 {
        if s.ready { 1.0 } else { 0.0 }
    } else {
        (s.sync_have as f64 / s.sync_want as f64).min(1.0)
    };
    json!({
        "network": s.network,
        "version": env!("CARGO_PKG_VERSION"),
        "now": view.now,
        "started_at": s.started_at,
        "updated_at": s.updated_at,
        "uptime": view.uptime(),
        "ready": s.ready,
        "best_share": if view.has_best() { json!(s.best_share) } else { Value::Null },
        "best_height": s.best_height,
        "pool_hashrate": s.pool_hashrate,
        "pool_nonstale_hashrate": s.pool_nonstale_hashrate,
        "pool_stale_prop": s.pool_stale_prop,
        "local_hashrate": local_hashrate,
        "local_dead_hashrate": view.local_dead_hashrate(),
        "local_stale_prop": ratio((local.orphan + local.dead) as f64, local.total as f64),
        "share_difficulty": s.share_difficulty,
        "min_share_difficulty": s.min_share_difficulty,
        "block_difficulty": s.block_difficulty,
        "block_height": s.block_height,
        "block_value": s.block_value,
        "network_hashrate": view.network_hashrate(),
        "expected_time_to_block": ratio(s.block_difficulty * HASHES_PER_DIFFICULTY, s.pool_hashrate),
        "expected_time_to_share": ratio(s.share_difficulty * HASHES_PER_DIFFICULTY, local_hashrate),
        "shares": {
            "total": s.shares_total,
            "verified": s.shares_verified,
            "in_chain": s.shares_in_chain,
            "local": local.total,
            "local_orphan": local.orphan,
            "local_dead": local.dead,
        },
        "sync": {
            "ready": s.ready,
            "reason": if s.ready { Value::Null } else { json!(not_ready_reason(s)) },
            "cause": if s.ready || s.not_ready_cause.is_empty() {
                Value::Null
            } else {
                json!(s.not_ready_cause)
            },
            "have": s.sync_have,
            "want": s.sync_want,
            "progress": progress,
        },
        "peers": {
            "incoming": view.incoming_peers(),
            "outgoing": view.outgoing_peers(),
            "total": view.incoming_peers() + view.outgoing_peers(),
            "connecting": view.connecting_peers(),
        },
        "miners": view.miners.len(),
        "bitcoind": s.bitcoind,
        "blocks": s.blocks,
        "blocks_found": s.blocks.found,
        "blocks_paid": s.blocks.accepted,
        "fee": s.fee_percent,
        "payout_address": s.payout_address,
        "warnings": s.warnings,
    })
}

/// Why the node is not ready, never empty.
pub fn not_ready_reason(s: &PoolStatus) -> String {
    if !s.not_ready_reason.is_empty() {
        s.not_ready_reason.clone()
    } else if s.updated_at == 0 {
        "starting".to_owned()
    } else {
        "not ready".to_owned()
    }
}

/// `/health`: `(ready, body)`.
pub fn health(view: &View) -> (bool, Value) {
    let s = view.status;
    if s.ready {
        (true, json!({"status": "ok", "best_share": s.best_share}))
    } else {
        (
            false,
            json!({"status": "unavailable", "reason": not_ready_reason(s)}),
        )
    }
}

/// `/api/miners`.
pub fn miners(view: &View) -> Value {
    json!(view.miners)
}

/// `/api/peers`.
pub fn peers(view: &View) -> Value {
    json!(view.peers)
}

/// `/api/blocks`.
pub fn blocks(view: &View) -> Value {
    json!(view.status.found_blocks)
}

/// `/api/shares`: the newest shares of the best chain.
pub fn shares(view: &View, limit: usize) -> Value {
    json!(
        view.status
            .recent_shares
            .iter()
            .take(limit)
            .collect::<Vec<_>>()
    )
}

/// `/api/payments`: the current PPLNS payouts and the blocks that paid.
pub fn payments(view: &View) -> Value {
    let s = view.status;
    let total: u64 = s.payouts.iter().map(|p| p.amount).sum();
    let current: Vec<Value> = s
        .payouts
        .iter()
        .map(|p| {
            json!({
                "address": p.address,
                "amount": p.amount,
                "share": ratio(p.amount as f64, total as f64),
            })
        })
        .collect();
    json!({
        "current": current,
        "current_total": total,
        "paid": s.paid_blocks,
    })
}

/// `/rate`: the pool hash rate, null without a best share.
pub fn rate(view: &View) -> Value {
    if view.has_best() {
        json!(view.status.pool_hashrate)
    } else {
        Value::Null
    }
}

/// `/difficulty`: the minimum share difficulty.
pub fn difficulty(view: &View) -> Value {
    if view.has_best() {
        json!(view.status.min_share_difficulty)
    } else {
        Value::Null
    }
}

/// `/users`: each address's fraction of the current payouts.
pub fn users(view: &View) -> Value {
    let total: u64 = view.status.payouts.iter().map(|p| p.amount).sum();
    let mut map = Map::new();
    if total > 0 {
        for p in &view.status.payouts {
            map.insert(p.address.clone(), json!(p.amount as f64 / total as f64));
        }
    }
    Value::Object(map)
}

/// `/fee`: the worker fee in percent.
pub fn fee(view: &View) -> Value {
    json!(view.status.fee_percent)
}

/// `/current_payouts`: address → BTC if a block were found now.
pub fn current_payouts(view: &View) -> Value {
    let mut map = Map::new();
    for p in &view.status.payouts {
        map.insert(p.address.clone(), json!(sats_to_btc(p.amount)));
    }
    Value::Object(map)
}

/// `/recent_blocks`: `[{ts, hash, number, share}]`, newest first.
pub fn recent_blocks(view: &View) -> Value {
    let blocks: Vec<Value> = view
        .status
        .found_blocks
        .iter()
        .map(|b| json!({"ts": b.time, "hash": b.hash, "number": b.height, "share": b.share}))
        .collect();
    json!(blocks)
}

/// `/global_stats`: the pool as a whole; null without a best share.
pub fn global_stats(view: &View) -> Value {
    if !view.has_best() {
        return Value::Null;
    }
    let s = view.status;
    json!({
        "pool_nonstale_hash_rate": s.pool_nonstale_hashrate,
        "pool_hash_rate": s.pool_hashrate,
        "pool_stale_prop": s.pool_stale_prop,
        "min_difficulty": s.min_share_difficulty,
        "network_block_difficulty": s.block_difficulty,
        "network_hashrate": view.network_hashrate(),
    })
}

/// `/local_stats`: this node and its miners; null without a best share.
pub fn local_stats(view: &View) -> Value {
    if !view.has_best() {
        return Value::Null;
    }
    let s = view.status;
    let l = &s.local_shares;
    let total = l.total as f64;
    let stale = (l.orphan + l.dead) as f64;
    let mut rates = Map::new();
    let mut dead_rates = Map::new();
    let mut difficulties = Map::new();
    for m in view.miners {
        let name = m.name();
        let add = |map: &mut Map<String, Value>, v: f64| {
            let old = map.get(&name).and_then(Value::as_f64).unwrap_or(0.0);
            map.insert(name.clone(), json!(old + v));
        };
        add(&mut rates, m.hashrate);
        add(&mut dead_rates, m.dead_hashrate());
        difficulties.insert(name.clone(), json!(m.difficulty));
    }
    let local_rate = view.local_hashrate();
    let efficiency = if l.total > 0 && s.pool_stale_prop < 1.0 {
        json!((1.0 - stale / total) / (1.0 - s.pool_stale_prop))
    } else {
        Value::Null
    };
    let efficiency_if_perfect = if l.total > 0 && s.pool_stale_prop < 1.0 {
        json!((1.0 - l.orphan as f64 / total) / (1.0 - s.pool_stale_prop))
    } else {
        Value::Null
    };
    json!({
        "my_hash_rates_in_last_hour": {
            "note": "DEPRECATED",
            "nonstale": local_rate - view.local_dead_hashrate(),
            "rewarded": local_rate,
            "actual": local_rate,
        },
        "my_share_counts_in_last_hour": {
            "shares": l.total,
            "unstale_shares": l.total - (l.orphan + l.dead).min(l.total),
            "stale_shares": l.orphan + l.dead,
            "orphan_stale_shares": l.orphan,
            "doa_stale_shares": l.dead,
        },
        "my_stale_proportions_in_last_hour": {
            "stale": ratio(stale, total),
            "orphan_stale": ratio(l.orphan as f64, total),
            "dead_stale": ratio(l.dead as f64, total),
        },
        "miner_hash_rates": rates,
        "miner_dead_hash_rates": dead_rates,
        "miner_last_difficulties": difficulties,
        "efficiency_if_miner_perfect": efficiency_if_perfect,
        "efficiency": efficiency,
        "peers": {"incoming": view.incoming_peers(), "outgoing": view.outgoing_peers()},
        "shares": {"total": l.total, "orphan": l.orphan, "dead": l.dead},
        "uptime": view.uptime(),
        "attempts_to_share": s.share_difficulty * HASHES_PER_DIFFICULTY,
        "attempts_to_block": s.block_difficulty * HASHES_PER_DIFFICULTY,
        "block_value": sats_to_btc(s.block_value),
        "warnings": s.warnings,
        "donation_proportion": 0.0,
        "version": env!("CARGO_PKG_VERSION"),
        "protocol_version": crate::p2p::PROTOCOL_VERSION,
        "fee": s.fee_percent,
    })
}
