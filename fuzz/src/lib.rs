//! Helpers shared by the fuzz targets: the networks of both rule sets, and what the
//! socket-driven targets need (SIGPIPE ignored, connections closed without TIME_WAIT).

use std::net::TcpStream;
use std::os::fd::AsRawFd;

use p2pool::network::{Network, RuleSet};

/// The built-in regtest network (modern rules).
pub fn modern_net() -> Network {
    let net = Network::built_in("regtest").expect("regtest is built in");
    assert_eq!(net.rules, RuleSet::Modern);
    net
}

/// A legacy network, as the tests build it (`sharechain::sample::legacy_net`).
pub fn legacy_net() -> Network {
    p2pool::sharechain::sample::legacy_net(false)
}

/// The network of a rule set.
pub fn net_of(rules: RuleSet) -> Network {
    match rules {
        RuleSet::Modern => modern_net(),
        RuleSet::Legacy2011 => legacy_net(),
    }
}

/// Both rule sets, in a fixed order.
pub const RULE_SETS: [RuleSet; 2] = [RuleSet::Legacy2011, RuleSet::Modern];

/// libFuzzer's `main` is not Rust's: SIGPIPE is not ignored unless we say so.
pub fn ignore_sigpipe() {
    // SAFETY: setting a signal disposition to SIG_IGN has no preconditions.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
}

/// Makes `close` send a reset, so that millions of short connections leave no TIME_WAIT
/// sockets behind to exhaust the ephemeral ports.
pub fn linger_zero(stream: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket descriptor and a correctly sized option value.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

/// A running worker side (getwork and Stratum) on loopback with current work, for the
/// targets that drive the real servers through their sockets.
pub struct LiveWorkers {
    pub workers: p2pool::worker::Workers,
    /// A payout address of the network, for user names.
    pub address: String,
    /// The network of the workers.
    pub net: Network,
}

/// Starts the workers once per process: an easy regtest network (a sixteenth of all hashes
/// are shares, a sixteenth of those blocks) so submitted solutions reach every verdict;
/// found shares are drained and dropped.
pub fn live_workers() -> &'static LiveWorkers {
    use std::sync::{Arc, OnceLock};

    use p2pool::bitcoin::hash::sha256d;
    use p2pool::bitcoin::template::Template;
    use p2pool::bitcoin::{address, script};
    use p2pool::network::WeightCap;
    use p2pool::sharechain::chain::ShareChain;
    use p2pool::worker::{Work, WorkerConfig, Workers};
    use ruint::aliases::U256;

    static LIVE: OnceLock<LiveWorkers> = OnceLock::new();
    LIVE.get_or_init(|| {
        ignore_sigpipe();
        let mut net = modern_net();
        net.max_target = U256::MAX >> 4;
        net.weight_cap = WeightCap::None;
        net.persist = false;
        let mut config = WorkerConfig::new(net.clone(), script::p2pkh(&[0xee; 20]));
        config.worker_addr = "127.0.0.1:0".parse().expect("addr");
        config.stratum_addr = "127.0.0.1:0".parse().expect("addr");
        config.http_threads = 1;
        let (workers, events) = Workers::start(config, None).expect("workers start");
        std::thread::spawn(move || for _ in events.iter() {});
        let now = p2pool::unix_now();
        let template = serde_json::json!({
            "version": 0x2000_0000,
            "previousblockhash": sha256d(b"fuzz").to_hex(),
            "height": 1000,
            "bits": "1f7fffff",
            "curtime": now,
            "mintime": now - 600,
            "coinbasevalue": 5_000_000_000u64,
            "transactions": [],
            "rules": ["csv", "!segwit"],
            "default_witness_commitment": "6a24aa21a9ede2f61c3f71d1defd3fa999dfa36953755c690689799962b48bebd836974e8cf9",
            "sigoplimit": 80000,
            "sizelimit": 4000000,
            "weightlimit": 4000000,
        });
        let template = Arc::new(Template::from_value(&template).expect("template"));
        let chain = ShareChain::new(net.clone());
        let work = Work::build(&chain, &template, None, now).expect("work");
        workers.publish(Arc::new(work));
        let address =
            address::from_script(&script::p2pkh(&[7; 20]), &net.bitcoin).expect("address");
        LiveWorkers {
            workers,
            address,
            net,
        }
    })
}

/// Replaces every `from` in `bytes` with `to`.
pub fn replace_all(bytes: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}
