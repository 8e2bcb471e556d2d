//! The bitcoind side against a real bcoin regtest node: templates before and after segwit,
//! blocks built from them (with a real transaction) submitted over RPC and over the P2P
//! link, the template feed's long poll, pokes and SIGUSR1, reconnection, and the
//! submitter's retries. A TCP relay in front of the node makes it unreachable and back; a
//! fake Core answers only what bcoin cannot (`inconclusive`, `bad-cb-height`, `!signet`).

mod support {
    pub mod bcoin;
    pub mod blocks;
    pub mod fake_core;
    pub mod logs;
    pub mod relay;
}

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, bounded};
use p2pool::bitcoin::block::{Block, witness_commitment_for};
use p2pool::bitcoin::chain::ChainParams;
use p2pool::bitcoin::encode::{Decode, Encode};
use p2pool::bitcoin::fit::CoinbaseCost;
use p2pool::bitcoin::hash::{Hash256, sha256d};
use p2pool::bitcoin::template::Template;
use p2pool::bitcoind::feed::{Feed, FeedConfig, FeedError, refresh_channel, refresh_on_sigusr1};
use p2pool::bitcoind::heights::Heights;
use p2pool::bitcoind::link::{Link, LinkConfig, LinkEvent};
use p2pool::bitcoind::rpc::{Auth, Client};
use p2pool::bitcoind::submit::{BlockSubmission, Outcome, SubmitConfig, SubmitResult, Submitter};
use serde_json::{Value, json};
use support::bcoin::{self, Bcoin, SEGWIT_HEIGHT};
use support::blocks::{self, build, build_all, coinbase, spend_coinbase, tag};
use support::relay::{Relay, closed_port};
use support::{fake_core, logs};

/// Liveness bound of every wait: generous, never a speed claim.
const WITHIN: Duration = Duration::from_secs(10);

/// Polls `check` until it gives a value, failing after `WITHIN`.
fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(start.elapsed() < WITHIN, "not within {WITHIN:?}: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn template(node: &Bcoin) -> Template {
    let value = node.rpc().get_block_template().expect("getblocktemplate");
    Template::from_value(&value).unwrap_or_else(|e| panic!("{e}: {value}"))
}

fn tip(node: &Bcoin) -> Hash256 {
    node.rpc().get_best_block_hash().expect("getbestblockhash")
}

fn submit_rpc(node: &Bcoin, bytes: &[u8]) -> Option<String> {
    node.rpc()
        .submit_block(&hex::encode(bytes))
        .expect("submitblock")
}

fn feed_config(refresh: Duration) -> FeedConfig {
    FeedConfig {
        refresh_every: refresh,
        retry_max: Duration::from_millis(500),
        ..FeedConfig::new(&ChainParams::regtest())
    }
}

fn next_result(results: &Receiver<SubmitResult>) -> SubmitResult {
    results
        .recv_timeout(WITHIN)
        .unwrap_or_else(|_| panic!("no submission result within {WITHIN:?}"))
}

fn quick_retries() -> SubmitConfig {
    SubmitConfig {
        retry_min: Duration::from_millis(100),
        retry_max: Duration::from_millis(500),
        ..SubmitConfig::default()
    }
}

#[test]
fn templates_before_segwit_have_no_commitment_and_blocks_on_both_sides_are_accepted() {
    logs::init();
    let node = Bcoin::start();
    node.mine_to_height(SEGWIT_HEIGHT - 2);

    let before = template(&node);
    assert_eq!(u64::from(before.height), SEGWIT_HEIGHT - 1);
    assert!(!before.segwit, "{:?}", before.rules);
    assert_eq!(before.default_witness_commitment, None);
    assert_eq!(before.sigop_scale(), 1);
    assert_eq!(before.limits.weight, None);
    assert_eq!(before.limits.size, Some(1_000_000));
    let block = build_all(&before, &tag("pre-segwit"));
    let decoded = Block::from_bytes(&block.bytes).unwrap();
    assert!(
        !decoded.txs[0].has_witness(),
        "no coinbase witness before segwit"
    );
    assert_eq!(submit_rpc(&node, &block.bytes), None);
    assert_eq!(tip(&node), block.hash());

    let after = template(&node);
    assert_eq!(u64::from(after.height), SEGWIT_HEIGHT);
    assert!(after.segwit, "{:?}", after.rules);
    assert_eq!(after.limits.weight, Some(4_000_000));
    assert_eq!(
        after.default_witness_commitment,
        Some(witness_commitment_for(&[]).0),
        "bcoin commits to a block of the coinbase alone as we do"
    );
    let block = build_all(&after, &tag("post-segwit"));
    assert_eq!(block.coinbase.outputs.len(), 2, "payout and commitment");
    let decoded = Block::from_bytes(&block.bytes).unwrap();
    assert_eq!(decoded.txs[0].inputs[0].witness, vec![vec![0u8; 32]]);
    assert_eq!(submit_rpc(&node, &block.bytes), None);
    assert_eq!(tip(&node), block.hash());
}

#[test]
fn block_with_a_real_transaction_is_accepted_moves_the_tip_and_is_then_a_duplicate() {
    logs::init();
    let (node, _still) = Bcoin::exclusive();
    node.mine(1);
    let spend = spend_coinbase(node, 1, 10_000);
    node.send_raw(&spend.to_bytes());

    let t = template(node);
    let entry = t
        .transactions
        .iter()
        .find(|e| e.txid == spend.txid())
        .expect("the spend is in the template");
    assert_eq!(entry.wtxid, spend.wtxid());
    assert_eq!(entry.fee, 10_000);
    assert_eq!(entry.weight, spend.weight() as u64);
    assert!(t.segwit);
    let wtxids: Vec<Hash256> = t.transactions.iter().map(|e| e.wtxid).collect();
    assert_eq!(
        t.default_witness_commitment,
        Some(witness_commitment_for(&wtxids).0),
        "our witness commitment is bcoin's"
    );

    let block = build_all(&t, &tag("real transaction"));
    let (results_tx, results) = bounded(8);
    let submitter =
        Submitter::start(Arc::new(node.rpc()), quick_retries(), Some(results_tx)).unwrap();
    submitter.submit(block.submission()).unwrap();
    let first = next_result(&results);
    assert_eq!(first.outcome, Outcome::Accepted, "{first:?}");
    assert_eq!(first.hash, block.hash());
    assert_eq!(tip(node), block.hash());

    submitter.submit(block.submission()).unwrap();
    assert_eq!(next_result(&results).outcome, Outcome::Duplicate);
    let history = submitter.history();
    assert_eq!(history.len(), 2);
    submitter.stop();
}

#[test]
fn stale_and_duplicate_blocks_are_told_apart_from_invalid_ones() {
    logs::init();
    let (node, _still) = Bcoin::exclusive();
    let ours = build_all(&template(node), &tag("stale sibling"));
    let (results_tx, results) = bounded(8);
    let submitter =
        Submitter::start(Arc::new(node.rpc()), quick_retries(), Some(results_tx)).unwrap();

    let spoiled = BlockSubmission {
        hash: sha256d(&blocks::spoil_pow(&ours)[..80]),
        previous: ours.submission().previous,
        height: u64::from(ours.height),
        bytes: blocks::spoil_pow(&ours).into(),
    };
    submitter.submit(spoiled).unwrap();
    let invalid = next_result(&results).outcome;
    assert_eq!(invalid, Outcome::Rejected("high-hash".into()));
    assert!(!invalid.landed());

    // Another block takes the height first: ours is a valid sibling, on a side chain.
    node.mine(1);
    submitter.submit(ours.submission()).unwrap();
    let stale = next_result(&results).outcome;
    assert_eq!(
        stale,
        Outcome::Inconclusive,
        "bcoin said null; the chain says stale"
    );
    assert!(stale.landed());
    assert_ne!(tip(node), ours.hash());

    submitter.submit(ours.submission()).unwrap();
    assert_eq!(next_result(&results).outcome, Outcome::Duplicate);
    submitter.stop();
}

#[test]
fn a_sibling_of_an_accepted_block_is_recorded_stale_without_a_submitblock() {
    logs::init();
    let (node, _still) = Bcoin::exclusive();
    let t = template(node);
    let first = build_all(&t, &tag("first sibling"));
    let second = build_all(&t, &tag("second sibling"));
    assert_eq!(first.submission().previous, second.submission().previous);
    let (results_tx, results) = bounded(8);
    let submitter =
        Submitter::start(Arc::new(node.rpc()), quick_retries(), Some(results_tx)).unwrap();
    submitter.submit(first.submission()).unwrap();
    assert_eq!(next_result(&results).outcome, Outcome::Accepted);
    submitter.submit(second.submission()).unwrap();
    let sibling = next_result(&results);
    assert_eq!(
        sibling.outcome,
        Outcome::Sibling {
            accepted: first.hash()
        }
    );
    assert_eq!(sibling.attempts, 0, "no submitblock for a sibling");
    assert!(!sibling.outcome.landed());
    // bcoin never saw it.
    let header = node
        .rpc()
        .call_as::<Value>("getblockheader", json!([second.hash().to_string()]));
    assert!(
        header.is_err() || header.as_ref().is_ok_and(Value::is_null),
        "{header:?}"
    );
    assert_eq!(tip(node), first.hash());
    submitter.stop();
}

#[test]
fn a_block_far_below_the_tip_the_node_saw_is_recorded_stale_without_a_submitblock() {
    logs::init();
    let rpc = Client::new("127.0.0.1", closed_port(), Auth::user_pass("u", "p"));
    let (results_tx, results) = bounded(4);
    let submitter = Submitter::start(Arc::new(rpc), quick_retries(), Some(results_tx)).unwrap();
    submitter.set_tip(500);
    submitter
        .submit(BlockSubmission {
            hash: sha256d(b"an old sibling"),
            previous: sha256d(b"below an old sibling"),
            height: 3,
            bytes: vec![0u8; 81].into(),
        })
        .unwrap();
    let result = next_result(&results);
    assert_eq!(result.outcome, Outcome::Stale { tip_height: 500 });
    assert_eq!(
        result.attempts, 0,
        "no submitblock (bitcoind is not even reachable)"
    );
    submitter.stop();
}

#[test]
fn template_whose_transactions_overflow_the_block_is_cut_and_its_block_accepted() {
    logs::init();
    let (node, _still) = Bcoin::exclusive();
    node.mine(1);
    let spend = spend_coinbase(node, 2, 20_000);
    node.send_raw(&spend.to_bytes());
    let t = template(node);
    assert_eq!(t.transactions.len(), 1, "the spend alone");

    // A generation transaction so large that, with it, the spend overflows the block.
    let real = coinbase(t.height, t.coinbase_value, Some([0; 32]), &tag("overflow"));
    let mut cost = CoinbaseCost::of(&real, &t);
    let header_and_count = 81 * 4;
    cost.weight = t.limits.weight.unwrap() - header_and_count - t.transactions[0].weight + 1;
    let fitted = t.fit(cost).unwrap();
    assert!(fitted.keep.is_empty());
    assert_eq!(fitted.dropped_fees, 20_000);
    assert_eq!(fitted.coinbase_value, t.coinbase_value - 20_000);

    let block = build(&t, &fitted, &tag("overflow"));
    assert_eq!(block.coinbase.outputs[0].value, t.coinbase_value - 20_000);
    assert_eq!(submit_rpc(node, &block.bytes), None);
    assert_eq!(tip(node), block.hash());
}

#[test]
fn long_poll_brings_a_new_tip_without_waiting_for_the_refresh() {
    logs::init();
    let (node, _still) = Bcoin::exclusive();
    let (feed, templates) =
        Feed::start(Arc::new(node.rpc()), feed_config(Duration::from_secs(3600))).unwrap();
    let first = templates.recv_timeout(WITHIN).expect("a first template");
    assert_eq!(first.previous_block, tip(node));

    let mined: Hash256 = node.mine(1)[0].parse().unwrap();
    wait_for("a template on the new tip", || {
        let t = templates.recv_timeout(Duration::from_millis(100)).ok()?;
        (t.previous_block == mined).then_some(())
    });
    assert_eq!(feed.heights().cached(&mined), Some(node.height()));
    let status = feed.status();
    assert!(status.reachable && !status.syncing, "{status:?}");
    assert_eq!(status.chain.map(|c| c.chain).as_deref(), Some("regtest"));
    feed.stop().unwrap();
}

#[test]
fn sigusr1_forces_an_immediate_template_refresh() {
    logs::init();
    let (node, _still) = Bcoin::exclusive();
    let (feed, templates) =
        Feed::start(Arc::new(node.rpc()), feed_config(Duration::from_secs(3600))).unwrap();
    templates.recv_timeout(WITHIN).expect("a first template");
    // The feed's first fetch and the long poll's.
    wait_for("both first fetches", || {
        (feed.status().fetched >= 2).then_some(())
    });
    let before = feed.status().fetched;

    let signals = refresh_on_sigusr1(feed.refresher()).unwrap();
    signal_hook::low_level::raise(signal_hook::consts::SIGUSR1).unwrap();
    wait_for("a fetch after SIGUSR1", || {
        (feed.status().fetched > before).then_some(())
    });
    assert!(logs::logged(&["SIGUSR1"]));
    signals.stop();
    feed.stop().unwrap();
}

#[test]
fn feed_waits_for_an_unreachable_bitcoind_and_reconnects_after_it_drops() {
    logs::init();
    // Its template calls would refresh bcoin's cached template under another test.
    let (node, _still) = Bcoin::exclusive();
    let port = closed_port();
    let rpc = Client::new("127.0.0.1", port, Auth::Cookie(node.cookie.clone()));
    let (feed, templates) =
        Feed::start(Arc::new(rpc), feed_config(Duration::from_secs(1))).unwrap();
    wait_for("the unreachable state", || {
        feed.status().last_error.is_some().then_some(())
    });
    assert!(!feed.status().reachable);
    let addr = format!("127.0.0.1:{port}");
    assert!(logs::logged(&["bitcoind unreachable", &addr]));

    let relay = Relay::start(port, node.rpc_port);
    templates
        .recv_timeout(WITHIN)
        .expect("a template once bitcoind answers");
    assert!(feed.status().reachable);

    relay.stop();
    wait_for("bitcoind seen down mid-run", || {
        (!feed.status().reachable).then_some(())
    });
    let fetched = feed.status().fetched;
    let _relay = Relay::start(port, node.rpc_port);
    wait_for("templates again after the outage", || {
        let status = feed.status();
        (status.reachable && status.fetched > fetched).then_some(())
    });
    assert!(logs::logged(&["answers again", &addr]));
    let password = node.password();
    assert!(logs::lines().iter().all(|l| !l.contains(&password)));
    feed.stop().unwrap();
}

#[test]
fn feed_stops_with_a_clear_error_on_a_bitcoind_of_another_chain() {
    logs::init();
    let node = Bcoin::shared();
    let config = FeedConfig::new(&ChainParams::main());
    let (feed, templates) = Feed::start(Arc::new(node.rpc()), config).unwrap();
    assert!(
        templates.recv_timeout(WITHIN).is_err(),
        "no template from the wrong chain"
    );
    let err = feed.stop().unwrap_err();
    assert!(matches!(err, FeedError::WrongChain { .. }), "{err}");
    let shown = err.to_string();
    assert!(
        shown.contains("'regtest'") && shown.contains("'main'"),
        "{shown}"
    );
}

#[test]
fn feed_refuses_templates_that_require_a_rule_it_does_not_know() {
    logs::init();
    // bcoin never sends a rule we do not know; Core on signet sends `!signet`.
    let port = fake_core::serve(|method, _| match method {
        "getblockchaininfo" => json!({
            "chain": "signet", "blocks": 10, "headers": 10,
            "bestblockhash": "00".repeat(32), "initialblockdownload": false,
            "verificationprogress": 1.0
        }),
        "getblocktemplate" => json!({
            "version": 536870912, "rules": ["csv", "!signet", "!segwit", "taproot"],
            "previousblockhash": "00".repeat(32), "height": 11, "bits": "1e0377ae",
            "curtime": 1_700_000_000, "coinbasevalue": 5_000_000_000u64, "transactions": []
        }),
        _ => Value::Null,
    });
    let rpc = Client::new("127.0.0.1", port, Auth::user_pass("u", "p"));
    let (feed, templates) =
        Feed::start(Arc::new(rpc), FeedConfig::new(&ChainParams::signet())).unwrap();
    assert!(templates.recv_timeout(WITHIN).is_err());
    let shown = feed.stop().unwrap_err().to_string();
    assert!(
        shown.contains("'signet'") && shown.contains("does not support"),
        "{shown}"
    );
}

#[test]
fn heights_come_from_getblockheader_and_an_unknown_block_is_none() {
    logs::init();
    let node = Bcoin::shared();
    let rpc = node.rpc();
    let best = tip(node);
    let height = rpc.get_block_header(&best).unwrap().height;
    let heights = Heights::new(Arc::new(rpc));
    assert_eq!(heights.cached(&best), None);
    assert_eq!(heights.get(&best).unwrap(), Some(height));
    assert_eq!(heights.cached(&best), Some(height));
    let unknown = sha256d(b"no such block");
    assert_eq!(heights.get(&unknown).unwrap(), None);
    assert_eq!(
        heights.cached(&unknown),
        None,
        "unknown blocks are not cached"
    );
}

#[test]
fn p2p_link_handshakes_and_reports_a_block_mined_over_rpc() {
    logs::init();
    let (node, _still) = Bcoin::exclusive();
    let (refresher, pokes) = refresh_channel();
    let config = LinkConfig::new("127.0.0.1", node.p2p_port, &bcoin::chain());
    let (link, events) = Link::start(config, Some(refresher)).unwrap();
    match events.recv_timeout(WITHIN) {
        Ok(LinkEvent::Connected { user_agent, .. }) => {
            assert!(user_agent.contains("bcoin"), "{user_agent}")
        }
        other => panic!("expected the handshake, got {other:?}"),
    }
    assert!(link.is_connected());

    let mined: Hash256 = node.mine(1)[0].parse().unwrap();
    wait_for("the new block announced over p2p", || {
        match events.recv_timeout(Duration::from_millis(100)).ok()? {
            LinkEvent::NewBlock(hash) => (hash == mined).then_some(()),
            _ => None,
        }
    });
    assert!(pokes.try_recv().is_ok(), "the announcement poked a refresh");
    link.stop();
}

#[test]
fn block_sent_over_the_p2p_link_becomes_the_tip() {
    logs::init();
    let (node, _still) = Bcoin::exclusive();
    let config = LinkConfig::new("127.0.0.1", node.p2p_port, &bcoin::chain());
    let (link, events) = Link::start(config, None).unwrap();
    let block = build_all(&template(node), &tag("over p2p"));
    // Queued before the handshake: it goes out once the link is up.
    assert!(link.block_sender().send_block(block.bytes.clone().into()));
    wait_for("the block sent", || {
        match events.recv_timeout(Duration::from_millis(100)).ok()? {
            LinkEvent::BlockSent(hash) => Some(hash),
            _ => None,
        }
    });
    wait_for("the block to become the tip", || {
        (tip(node) == block.hash()).then_some(())
    });
    link.stop();
}

#[test]
fn submitter_retries_while_rpc_is_unreachable_and_lands_the_block_when_it_returns() {
    logs::init();
    let (node, _still) = Bcoin::exclusive();
    let block = build_all(&template(node), &tag("retried"));
    let port = closed_port();
    let rpc = Client::new("127.0.0.1", port, Auth::Cookie(node.cookie.clone()));
    let (results_tx, results) = bounded(4);
    let submitter = Submitter::start(Arc::new(rpc), quick_retries(), Some(results_tx)).unwrap();
    submitter.submit(block.submission()).unwrap();
    wait_for("the first failed attempt logged", || {
        logs::logged(&["not submitted yet", &block.hash().to_string()]).then_some(())
    });
    std::thread::sleep(Duration::from_millis(500));
    assert!(results.try_recv().is_err(), "still retrying, not given up");

    let _relay = Relay::start(port, node.rpc_port);
    let result = next_result(&results);
    assert_eq!(result.outcome, Outcome::Accepted, "{result:?}");
    assert!(result.attempts >= 2, "{result:?}");
    assert_eq!(tip(node), block.hash());
    submitter.stop();
}

#[test]
fn submitter_gives_up_a_block_that_went_stale_while_rpc_was_down() {
    logs::init();
    let node = Bcoin::shared();
    let port = closed_port();
    let rpc = Client::new("127.0.0.1", port, Auth::Cookie(node.cookie.clone()));
    let (results_tx, results) = bounded(4);
    let submitter = Submitter::start(Arc::new(rpc), quick_retries(), Some(results_tx)).unwrap();
    let old = node.height() - 3;
    let block = BlockSubmission {
        hash: sha256d(b"an old block"),
        previous: sha256d(b"below an old block"),
        height: old,
        bytes: vec![0u8; 81].into(),
    };
    submitter.submit(block).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let _relay = Relay::start(port, node.rpc_port);
    match next_result(&results).outcome {
        Outcome::Stale { tip_height } => assert!(tip_height >= old + 3),
        other => panic!("expected stale, got {other:?}"),
    }
    submitter.stop();
}

#[test]
fn submitter_gives_up_after_the_maximum_age_while_rpc_stays_down() {
    logs::init();
    let rpc = Client::new("127.0.0.1", closed_port(), Auth::user_pass("u", "p"));
    let config = SubmitConfig {
        max_age: Duration::from_secs(1),
        ..quick_retries()
    };
    let (results_tx, results) = bounded(4);
    let submitter = Submitter::start(Arc::new(rpc), config, Some(results_tx)).unwrap();
    submitter
        .submit(BlockSubmission {
            hash: sha256d(b"never lands"),
            previous: sha256d(b"below never lands"),
            height: 1,
            bytes: vec![0u8; 81].into(),
        })
        .unwrap();
    match next_result(&results).outcome {
        Outcome::Expired(last) => assert!(last.contains("connection refused"), "{last}"),
        other => panic!("expected expiry, got {other:?}"),
    }
    submitter.stop();
}

#[test]
fn submitter_records_cores_inconclusive_and_bad_cb_height_answers() {
    logs::init();
    // bcoin answers neither; Core does (miners-and-nodes.md).
    let answers = std::sync::Mutex::new(vec![json!("bad-cb-height"), json!("inconclusive")]);
    let port = fake_core::serve(move |method, _| match method {
        "submitblock" => answers.lock().unwrap().pop().unwrap_or(Value::Null),
        _ => Value::Null,
    });
    let rpc = Client::new("127.0.0.1", port, Auth::user_pass("u", "p"));
    let (results_tx, results) = bounded(4);
    let submitter = Submitter::start(Arc::new(rpc), quick_retries(), Some(results_tx)).unwrap();
    for (i, expected) in [
        Outcome::Inconclusive,
        Outcome::Rejected("bad-cb-height".into()),
        Outcome::Accepted,
    ]
    .into_iter()
    .enumerate()
    {
        let block = BlockSubmission {
            hash: sha256d(&[i as u8]),
            previous: sha256d(&[i as u8, 1]),
            height: 100,
            bytes: vec![0u8; 81].into(),
        };
        submitter.submit(block).unwrap();
        assert_eq!(next_result(&results).outcome, expected);
    }
    assert_eq!(submitter.history().len(), 3);
    submitter.stop();
}

#[test]
fn submitter_with_a_link_lands_the_block_over_p2p_while_rpc_is_down() {
    logs::init();
    let (node, _still) = Bcoin::exclusive();
    let block = build_all(&template(node), &tag("p2p while rpc down"));
    let config = LinkConfig::new("127.0.0.1", node.p2p_port, &bcoin::chain());
    let (link, events) = Link::start(config, None).unwrap();
    let rpc = Client::new("127.0.0.1", closed_port(), Auth::user_pass("u", "p"));
    let mut submitter = Submitter::start(Arc::new(rpc), quick_retries(), None).unwrap();
    submitter.attach_link(link.block_sender());
    submitter.submit(block.submission()).unwrap();
    wait_for("the block sent over the link", || {
        match events.recv_timeout(Duration::from_millis(100)).ok()? {
            LinkEvent::BlockSent(hash) => (hash == block.hash()).then_some(()),
            _ => None,
        }
    });
    wait_for("the block to become the tip", || {
        (tip(node) == block.hash()).then_some(())
    });
    submitter.stop();
    link.stop();
}
