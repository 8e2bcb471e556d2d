//! `/metrics`: the status in Prometheus' text exposition format (version 0.0.4).
//!
//! Gauges only, each with `# HELP` and `# TYPE` lines; label values are escaped
//! (backslash, double quote, newline) since addresses and worker names come from miners.

use std::fmt::Write;

use super::api::View;

/// Appends one metric family.
struct Family<'a> {
    out: &'a mut String,
}

impl<'a> Family<'a> {
    fn new(out: &'a mut String, name: &str, help: &str) -> Family<'a> {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} gauge");
        Family { out }
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) -> &mut Self {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (key, val)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{key}=\"{}\"", escape(val));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {}", number(value));
        self
    }
}

/// A label value with `\`, `"` and newlines escaped.
pub fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// A sample value as Prometheus writes it (`NaN`, `+Inf`, `-Inf` for the odd ones).
fn number(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value.is_infinite() {
        if value > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else {
        // `+ 0.0` turns -0 into 0.
        format!("{}", value + 0.0)
    }
}

fn gauge(out: &mut String, name: &str, help: &str, value: f64) {
    Family::new(out, name, help).sample(name, &[], value);
}

/// The whole exposition.
pub fn render(view: &View) -> String {
    let s = view.status;
    let mut out = String::new();
    let version = env!("CARGO_PKG_VERSION");
    Family::new(&mut out, "p2pool_info", "This node's version and network.").sample(
        "p2pool_info",
        &[("version", version), ("network", &s.network)],
        1.0,
    );
    gauge(
        &mut out,
        "p2pool_uptime_seconds",
        "Seconds since the node started.",
        view.uptime() as f64,
    );
    gauge(
        &mut out,
        "p2pool_ready",
        "1 when the node serves miners (synced, peers, bitcoind up).",
        f64::from(u8::from(s.ready)),
    );
    gauge(
        &mut out,
        "p2pool_pool_hashrate",
        "The pool's hash rate (hashes per second, stale shares included).",
        s.pool_hashrate,
    );
    gauge(
        &mut out,
        "p2pool_pool_nonstale_hashrate",
        "The pool's hash rate in the best chain (hashes per second).",
        s.pool_nonstale_hashrate,
    );
    gauge(
        &mut out,
        "p2pool_pool_stale_ratio",
        "The fraction of the pool's shares that were stale.",
        s.pool_stale_prop,
    );
    gauge(
        &mut out,
        "p2pool_local_hashrate",
        "This node's miners' hash rate (hashes per second).",
        view.local_hashrate(),
    );
    gauge(
        &mut out,
        "p2pool_share_difficulty",
        "The difficulty of new shares.",
        s.share_difficulty,
    );
    gauge(
        &mut out,
        "p2pool_block_difficulty",
        "The Bitcoin block difficulty of the current work.",
        s.block_difficulty,
    );
    gauge(
        &mut out,
        "p2pool_block_value_satoshis",
        "Subsidy plus fees of the current work.",
        s.block_value as f64,
    );
    gauge(
        &mut out,
        "p2pool_best_share_height",
        "The best share's height in the share chain.",
        s.best_height as f64,
    );
    Family::new(
        &mut out,
        "p2pool_shares",
        "Shares held by the node, by state.",
    )
    .sample(
        "p2pool_shares",
        &[("state", "total")],
        s.shares_total as f64,
    )
    .sample(
        "p2pool_shares",
        &[("state", "verified")],
        s.shares_verified as f64,
    )
    .sample(
        "p2pool_shares",
        &[("state", "in_chain")],
        s.shares_in_chain as f64,
    );
    let local = &s.local_shares;
    Family::new(
        &mut out,
        "p2pool_local_shares",
        "This node's own shares, by outcome.",
    )
    .sample(
        "p2pool_local_shares",
        &[("kind", "total")],
        local.total as f64,
    )
    .sample(
        "p2pool_local_shares",
        &[("kind", "orphan")],
        local.orphan as f64,
    )
    .sample(
        "p2pool_local_shares",
        &[("kind", "dead")],
        local.dead as f64,
    );
    Family::new(
        &mut out,
        "p2pool_sync_shares",
        "Sync progress: verified shares behind the best share and the length wanted.",
    )
    .sample(
        "p2pool_sync_shares",
        &[("kind", "have")],
        s.sync_have as f64,
    )
    .sample(
        "p2pool_sync_shares",
        &[("kind", "want")],
        s.sync_want as f64,
    );
    Family::new(
        &mut out,
        "p2pool_peers",
        "P2Pool peers: handshaken inbound and outbound, and connections still in their handshake.",
    )
    .sample(
        "p2pool_peers",
        &[("direction", "inbound")],
        view.incoming_peers() as f64,
    )
    .sample(
        "p2pool_peers",
        &[("direction", "outbound")],
        view.outgoing_peers() as f64,
    )
    .sample(
        "p2pool_peers",
        &[("direction", "connecting")],
        view.connecting_peers() as f64,
    );
    gauge(
        &mut out,
        "p2pool_miners",
        "Miners seen by this node.",
        view.miners.len() as f64,
    );
    if !view.miners.is_empty() {
        let mut family = Family::new(
            &mut out,
            "p2pool_miner_hashrate",
            "Each miner's hash rate (hashes per second).",
        );
        for m in view.miners {
            family.sample(
                "p2pool_miner_hashrate",
                &[("address", &m.address), ("worker", &m.worker)],
                m.hashrate,
            );
        }
    }
    let b = &s.blocks;
    gauge(
        &mut out,
        "p2pool_blocks_found",
        "Blocks found by the pool since this node's store began.",
        b.found as f64,
    );
    {
        let mut family = Family::new(
            &mut out,
            "p2pool_blocks",
            "Blocks found by the pool, by what became of them.",
        );
        for (fate, n) in [
            ("accepted", b.accepted),
            ("stale", b.stale),
            ("rejected", b.rejected),
            ("pending", b.pending),
        ] {
            family.sample("p2pool_blocks", &[("fate", fate)], n as f64);
        }
    }
    gauge(
        &mut out,
        "p2pool_blocks_paid",
        "Blocks that paid the pool's miners (accepted by bitcoind).",
        b.accepted as f64,
    );
    gauge(
        &mut out,
        "p2pool_blocks_paid_node",
        "Accepted blocks that paid this node's payout address.",
        b.paid_node as f64,
    );
    if !s.payouts.is_empty() {
        let mut family = Family::new(
            &mut out,
            "p2pool_payout_satoshis",
            "What each address would get if a block were found now.",
        );
        for p in &s.payouts {
            family.sample(
                "p2pool_payout_satoshis",
                &[("address", &p.address)],
                p.amount as f64,
            );
        }
    }
    gauge(
        &mut out,
        "p2pool_bitcoind_reachable",
        "1 when the last call to bitcoind succeeded.",
        f64::from(u8::from(s.bitcoind.reachable)),
    );
    gauge(
        &mut out,
        "p2pool_bitcoind_height",
        "bitcoind's chain height.",
        s.bitcoind.height as f64,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn odd_numbers_use_prometheus_spelling() {
        assert_eq!(number(f64::NAN), "NaN");
        assert_eq!(number(f64::INFINITY), "+Inf");
        assert_eq!(number(1.5), "1.5");
        assert_eq!(number(3.0), "3");
    }
}
