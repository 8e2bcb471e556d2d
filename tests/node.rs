//! End to end: `p2pool` processes against a real regtest bcoin, with the test miner on
//! getwork and on Stratum. Blocks the pool finds are accepted by bcoin and pay every miner
//! in the window; the API answers with the same figures on both nodes; SIGTERM stops each
//! node within 5 s with its store intact.

mod support {
    pub mod bcoin;
    pub mod procs;
}

use std::collections::BTreeMap;
use std::time::Duration;

use p2pool::bitcoin::address;
use p2pool::bitcoin::block::Block;
use p2pool::bitcoin::encode::Decode;
use p2pool::network::Network;
use p2pool::sharechain::chain::ShareChain;
use p2pool::store::Store;
use serde_json::Value;

use support::bcoin::Bcoin;
use support::procs::{MinerProc, NodeProc, bcoin_args, wait_until};

const ADDR_GETWORK: &str = "bcrt1qwhewjks36k3hv2easehe2t7tkzsn09tvnh0nt8";
const ADDR_STRATUM: &str = "bcrt1qznsphatcaskf5p6utw6xpem987un8wkefvlryz";

fn args(bcoin: &Bcoin, extra: &[&str]) -> Vec<String> {
    let mut a = vec!["--net".to_string(), "regtest".to_string()];
    a.extend(bcoin_args(bcoin));
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

fn stats(node: &NodeProc) -> Option<Value> {
    node.json("/api/stats")
}

fn peers_of(node: &NodeProc) -> u64 {
    stats(node)
        .and_then(|s| s["peers"]["total"].as_u64())
        .unwrap_or(0)
}

/// The coinbase outputs of the block at `height`, by address.
fn coinbase_payouts(bcoin: &Bcoin, height: u64) -> BTreeMap<String, u64> {
    let raw = bcoin.block_at(height);
    let block = Block::from_bytes(&raw).expect("bcoin's block decodes");
    let chain = Network::built_in("regtest").unwrap().bitcoin;
    let mut out = BTreeMap::new();
    for o in &block.txs[0].outputs {
        if let Ok(a) = address::from_script(&o.script_pubkey, &chain) {
            *out.entry(a).or_insert(0) += o.value;
        }
    }
    out
}

#[test]
fn two_nodes_with_getwork_and_stratum_miners_find_blocks_that_pay_both_miners() {
    let (bcoin, _guard) = Bcoin::exclusive();
    let dir = tempfile::tempdir().unwrap();
    let a = NodeProc::start("a", &dir.path().join("a"), &args(bcoin, &[]));
    assert!(a.wait_http(Duration::from_secs(20)), "{}", a.dump());
    let b = NodeProc::start(
        "b",
        &dir.path().join("b"),
        &args(bcoin, &["-n", &format!("127.0.0.1:{}", a.p2p)]),
    );
    assert!(b.wait_http(Duration::from_secs(20)), "{}", b.dump());
    assert!(
        wait_until(Duration::from_secs(15), || peers_of(&a) >= 1
            && peers_of(&b) >= 1),
        "the nodes never connected\n{}\n{}",
        a.dump(),
        b.dump()
    );

    let start_height = bcoin.height();
    // On regtest nearly every share is a block: a slow miner keeps the pace readable.
    let getwork = MinerProc::start(&[
        "--url".into(),
        format!("http://127.0.0.1:{}/", a.worker),
        "--user".into(),
        ADDR_GETWORK.into(),
        "--protocol".into(),
        "getwork".into(),
        "--hashrate".into(),
        "300".into(),
    ]);
    let stratum = MinerProc::start(&[
        "--url".into(),
        format!("stratum+tcp://127.0.0.1:{}", b.stratum),
        "--user".into(),
        ADDR_STRATUM.into(),
        "--protocol".into(),
        "stratum".into(),
        "--hashrate".into(),
        "300".into(),
    ]);

    // Blocks land in bcoin, and one of them pays both miners.
    let mut paid_both = None;
    let found = wait_until(Duration::from_secs(90), || {
        let h = bcoin.height();
        for height in (start_height + 1..=h).rev().take(5) {
            let p = coinbase_payouts(bcoin, height);
            if p.contains_key(ADDR_GETWORK) && p.contains_key(ADDR_STRATUM) {
                paid_both = Some((height, p));
                return true;
            }
        }
        false
    });
    assert!(
        found,
        "no block paying both miners; bcoin at {} from {start_height}\n{}\n{}\nminers:\n{}\n{}",
        bcoin.height(),
        a.dump(),
        b.dump(),
        getwork.log().join("\n"),
        stratum.log().join("\n")
    );
    let (height, payouts) = paid_both.unwrap();
    assert!(
        payouts[ADDR_GETWORK] > 0 && payouts[ADDR_STRATUM] > 0,
        "{payouts:?}"
    );
    // Two miners on two nodes leave competing heads of equal work, which each node may
    // rank its own way (R too). One miner alone then extends one chain that both follow.
    drop(stratum);
    std::thread::sleep(Duration::from_secs(4));
    drop(getwork);

    // Both nodes follow one chain. On regtest every share is a block, so bitcoind's tip
    // is always some share's block; R's stale rule (§6.4) makes a node pass over a peer's
    // head built on an older block for its parent, so the two best shares may differ by
    // the last share or two, never more.
    let same_chain = |a: &NodeProc, b: &NodeProc| -> bool {
        let (Some(sa), Some(chain_b)) = (stats(a), b.json("/api/shares")) else {
            return false;
        };
        let best_a = sa["best_share"].as_str().unwrap_or_default().to_string();
        best_a.len() == 64
            && chain_b
                .as_array()
                .is_some_and(|l| l.iter().take(3).any(|s| s["hash"] == best_a.as_str()))
    };
    let converged = wait_until(Duration::from_secs(20), || {
        same_chain(&a, &b) || same_chain(&b, &a)
    });
    assert!(
        converged,
        "the nodes follow different chains: {:?} / {:?}\n{}\n{}",
        stats(&a).map(|s| (s["best_share"].clone(), s["shares"].clone())),
        stats(&b).map(|s| (s["best_share"].clone(), s["shares"].clone())),
        a.dump(),
        b.dump()
    );
    let sa = stats(&a).unwrap();
    assert_eq!(sa["ready"], true, "{sa}");
    assert!(sa["shares"]["total"].as_u64().unwrap() > 0, "{sa}");

    // The block bcoin holds at `height` is in a node's found-block list, landed.
    let hash: String = bcoin
        .rpc()
        .call_as("getblockhash", serde_json::json!([height]))
        .unwrap();
    let listed = wait_until(Duration::from_secs(10), || {
        [&a, &b].iter().any(|n| {
            n.json("/api/blocks").is_some_and(|blocks| {
                blocks.as_array().is_some_and(|l| {
                    l.iter()
                        // The P2P link may deliver it first: then submitblock says duplicate.
                        .any(|blk| {
                            blk["hash"] == hash.as_str()
                                && (blk["status"] == "accepted" || blk["status"] == "duplicate")
                        })
                })
            })
        })
    });
    assert!(
        listed,
        "block {hash} not listed as landed: {:?} {:?}\n{}",
        a.json("/api/blocks")
            .map(|v| v.to_string().chars().take(600).collect::<String>()),
        b.json("/api/blocks")
            .map(|v| v.to_string().chars().take(600).collect::<String>()),
        a.dump()
    );

    // The miners appear on their nodes' miner lists.
    let miners_a = a.json("/api/miners").unwrap();
    assert!(miners_a.to_string().contains(ADDR_GETWORK), "{miners_a}");
    let miners_b = b.json("/api/miners").unwrap();
    assert!(miners_b.to_string().contains(ADDR_STRATUM), "{miners_b}");
    let payments = a.json("/api/payments").unwrap();
    assert!(
        payments["current"]
            .as_array()
            .is_some_and(|c| !c.is_empty()),
        "{payments}"
    );

    // SIGTERM stops each node within 5 s, with its store intact.
    for node in [a, b] {
        let datadir = node.datadir.clone();
        let (status, took, log) = node.terminate();
        assert!(status.success(), "exit {status:?}\n{}", log.join("\n"));
        assert!(took < Duration::from_secs(5), "took {took:?}");
        let store = Store::open(&datadir.join("store"), "regtest").expect("store reopens");
        let chain = ShareChain::load(Network::built_in("regtest").unwrap(), &store, false)
            .expect("chain reloads");
        assert!(!chain.tracker().is_empty(), "no shares in the store");
    }
}

#[test]
fn wrong_rpc_password_stops_the_node_with_the_flag_to_fix() {
    let bcoin = Bcoin::shared();
    let dir = tempfile::tempdir().unwrap();
    let mut a = vec!["--net".to_string(), "regtest".to_string()];
    a.extend(bcoin_args(bcoin));
    a.extend(["user".to_string(), "wrong-password".to_string()]);
    let node = NodeProc::start("a", dir.path(), &a);
    let mut node = node;
    assert!(
        wait_until(Duration::from_secs(15), || !node.is_running()),
        "the node kept running\n{}",
        node.dump()
    );
    let log = node.log().join("\n");
    assert!(log.contains("BITCOIND_RPC_PASSWORD"), "{log}");
    assert!(
        !log.contains("wrong-password"),
        "the password was logged:\n{log}"
    );
}

#[test]
fn a_node_without_bitcoind_keeps_running_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let dead = support::procs::free_port().to_string();
    let args: Vec<String> = [
        "--net",
        "regtest",
        "--bitcoind-rpc-port",
        &dead,
        "--bitcoind-p2p-port",
        "0",
        "u",
        "p",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut node = NodeProc::start("a", dir.path(), &args);
    assert!(node.wait_http(Duration::from_secs(20)), "{}", node.dump());
    assert!(
        wait_until(Duration::from_secs(10), || node
            .logged("connection refused")),
        "{}",
        node.dump()
    );
    let health = node.get("/health").unwrap();
    assert_eq!(health.0, 503, "{health:?}");
    assert!(node.is_running());
    // getwork says why miners cannot mine.
    let (status, took, _) = node.terminate();
    assert!(status.success());
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

/// A regtest-backed network that persists, as mainnet does.
fn persisting_net_file(dir: &std::path::Path) -> String {
    let path = dir.join("persist.json");
    std::fs::write(
        &path,
        r#"{"NAME": "persisting", "BITCOIN": "regtest", "PERSIST": true,
            "SHARE_PERIOD": 5, "CHAIN_LENGTH": 100, "TARGET_LOOKBEHIND": 20, "SPREAD": 3,
            "MAX_TARGET": "00ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
            "IDENTIFIER": "7065727369737431", "PREFIX": "7065727369737432"}"#,
    )
    .unwrap();
    path.display().to_string()
}

#[test]
fn on_a_persisting_network_a_lone_node_waits_unless_told_to_start_a_new_chain() {
    let bcoin = Bcoin::shared();
    let dir = tempfile::tempdir().unwrap();
    let net = persisting_net_file(dir.path());
    let mut base = vec!["--net-file".to_string(), net];
    base.extend(bcoin_args(bcoin));

    let waiting = NodeProc::start("waiting", &dir.path().join("w"), &base);
    assert!(
        waiting.wait_http(Duration::from_secs(20)),
        "{}",
        waiting.dump()
    );
    assert!(
        wait_until(Duration::from_secs(15), || waiting
            .logged("--start-new-chain")),
        "no reason given\n{}",
        waiting.dump()
    );
    let health = waiting.get("/health").unwrap();
    assert_eq!(health.0, 503, "{health:?}");
    assert!(
        health.1.contains("not connected to any peers"),
        "{health:?}"
    );
    drop(waiting);

    let mut args = base.clone();
    args.push("--start-new-chain".into());
    let starting = NodeProc::start("starting", &dir.path().join("s"), &args);
    assert!(
        starting.wait_http(Duration::from_secs(20)),
        "{}",
        starting.dump()
    );
    assert!(
        wait_until(Duration::from_secs(15), || starting
            .get("/health")
            .is_some_and(|(status, _)| status == 200)),
        "not ready with --start-new-chain: {:?}\n{}",
        starting.get("/health"),
        starting.dump()
    );
}
