//! The network and templates the worker benches publish work from (no bcoin): a modern
//! regtest network with no weight cap, and templates parsed from JSON with no transactions.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use p2pool::bitcoin::chain::ChainParams;
use p2pool::bitcoin::hash::sha256d;
use p2pool::bitcoin::template::Template;
use p2pool::network::{Network, RuleSet, WeightCap};
use ruint::aliases::U256;
use serde_json::json;

/// Seconds since the epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Modern regtest with `max_target` as its easiest share target, nothing stored.
pub fn net(max_target: U256) -> Network {
    let mut net = Network::built_in("regtest").expect("regtest is built in");
    net.rules = RuleSet::Modern;
    net.max_target = max_target;
    net.weight_cap = WeightCap::None;
    net.persist = false;
    net.bitcoin = ChainParams::regtest();
    net
}

/// A template without transactions on a made-up previous block (`n` picks it).
pub fn template(n: u8) -> Arc<Template> {
    let value = json!({
        "version": 0x2000_0000,
        "previousblockhash": sha256d(&[n]).to_hex(),
        "height": 1000 + u32::from(n),
        "bits": "1d00ffff",
        "curtime": now(),
        "mintime": now() - 600,
        "coinbasevalue": 5_000_000_000u64,
        "transactions": [],
        "rules": ["csv", "!segwit"],
        "default_witness_commitment": "6a24aa21a9ede2f61c3f71d1defd3fa999dfa36953755c690689799962b48bebd836974e8cf9",
        "sigoplimit": 80000,
        "sizelimit": 4000000,
        "weightlimit": 4000000,
    });
    Arc::new(Template::from_value(&value).expect("template"))
}
