//! Conformance against vectors produced by running the original P2Pool (R, f3d1422).
//!
//! Reads the file named by `P2POOL_VECTORS`, by default
//! `../shared/vectors/p2pool-legacy-f3d1422.json`. A missing file is a failure, never a
//! skip. One test per part of the file; any file in the same format passes unchanged.

use std::net::IpAddr;

use p2pool::bitcoin::block::BlockHeader;
use p2pool::bitcoin::encode::{Decode, Encode};
use p2pool::bitcoin::frame::Framing;
use p2pool::bitcoin::hash::Hash256;
use p2pool::bitcoin::merkle::{self, BranchStep};
use p2pool::bitcoin::target::{Bits, target_to_average_attempts, u256_from_be_hex};
use p2pool::bitcoin::tx::Transaction;
use p2pool::network::{Network, RuleSet};
use p2pool::p2p::message::{AddrRecord, Message, NetAddress};
use p2pool::sharechain::gentx::Generated;
use p2pool::sharechain::share::{Share, Share1a, Share1b};
use p2pool::sharechain::tracker::Tracker;
use p2pool::sharechain::verify;
use ruint::aliases::{U256, U512};
use serde_json::{Value, json};

mod common;

fn vectors() -> Value {
    serde_json::from_str(&common::vectors_text()).expect("vector file is valid JSON")
}

fn hex_bytes(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().expect("hex string")).expect("valid hex")
}

fn hash(v: &Value) -> Hash256 {
    Hash256::from_hex(v.as_str().expect("hash string")).expect("64 hex digits")
}

fn u256(v: &Value) -> U256 {
    u256_from_be_hex(v.as_str().expect("hex number")).expect("256-bit hex")
}

fn bits(v: &Value) -> Bits {
    Bits(u32::from_str_radix(v.as_str().expect("bits hex"), 16).expect("u32 hex"))
}

fn prefix_of(frame: &[u8]) -> [u8; 8] {
    frame[..8].try_into().expect("frame has an 8-byte prefix")
}

#[test]
fn compact_targets() {
    let v = vectors();
    let cases = v["compact_target_from_upper_bound"]
        .as_array()
        .expect("compact target list");
    assert!(!cases.is_empty());
    for case in cases {
        let input = u256(&case["input"]);
        let expected_bits = bits(&case["bits"]);
        assert_eq!(
            Bits::from_target_floor(input),
            expected_bits,
            "bits of {}",
            case["input"]
        );
        let value = expected_bits.to_target();
        assert_eq!(value, u256(&case["value"]), "value of {expected_bits}");
        let attempts: U512 = case["attempts"]
            .as_str()
            .expect("decimal")
            .parse()
            .expect("number");
        assert_eq!(
            target_to_average_attempts(value),
            attempts,
            "attempts of {expected_bits}"
        );
    }
}

fn address_json(a: &NetAddress) -> Value {
    let ip = match a.ip_addr() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => v6.to_string(),
    };
    json!({"services": a.services, "address": ip, "port": a.port})
}

fn hashes_json(hashes: &[Hash256]) -> Value {
    hashes.iter().map(|h| Value::from(h.to_hex())).collect()
}

/// The decoded message in the vector file's `fields_json` shape.
fn message_json(m: &Message) -> Value {
    match m {
        Message::Version(v) => json!({
            "version": v.version,
            "services": v.services,
            "addr_to": address_json(&v.addr_to),
            "addr_from": address_json(&v.addr_from),
            "nonce": v.nonce,
            "sub_version": v.sub_version,
            "mode": v.mode,
            "best_share_hash": v.best_share_hash.map(|h| h.to_hex()),
        }),
        Message::SetMode { mode } => json!({ "mode": mode }),
        Message::Ping => json!({}),
        Message::AddrMe { port } => json!({ "port": port }),
        Message::Addrs(addrs) => json!({
            "addrs": addrs.iter().map(|a: &AddrRecord| json!({
                "timestamp": a.timestamp,
                "address": address_json(&a.address),
            })).collect::<Vec<_>>()
        }),
        Message::GetAddrs { count } => json!({ "count": count }),
        Message::GetShares {
            hashes,
            parents,
            stops,
        } => json!({
            "hashes": hashes_json(hashes), "parents": parents, "stops": hashes_json(stops),
        }),
        Message::Share0s(hashes) => json!({ "hashes": hashes_json(hashes) }),
        other => panic!("no JSON form for {other:?} in messages_mainnet"),
    }
}

#[test]
fn message_frames() {
    let v = vectors();
    let messages = v["messages_mainnet"].as_array().expect("message list");
    assert!(!messages.is_empty());
    for m in messages {
        let command = m["command"].as_str().expect("command");
        let frame = hex_bytes(&m["frame"]);
        let framing = Framing::p2pool(prefix_of(&frame), RuleSet::Legacy2011.max_payload());
        let raw = framing.read(&mut &frame[..]).expect("frame reads");
        assert_eq!(raw.command, command);
        assert_eq!(raw.payload, hex_bytes(&m["payload"]), "{command} payload");
        let msg = Message::decode(command, &raw.payload, RuleSet::Legacy2011).expect("decodes");
        assert_eq!(message_json(&msg), m["fields_json"], "{command} fields");
        assert_eq!(
            msg.to_frame(&framing).expect("encodes"),
            frame,
            "{command} re-encoding"
        );
    }
}

/// The chain's parameters, loaded as a custom network file with their names as they are;
/// the vector chains run R's rule set.
fn chain_network(net: &Value) -> Network {
    let mut params = net["params"].clone();
    params["RULES"] = json!("legacy-2011");
    let network = Network::from_json(&params.to_string(), "vecnet").expect("params load");
    assert_eq!(network.rules, RuleSet::Legacy2011);
    network
}

fn branch(v: &Value) -> Vec<BranchStep> {
    v.as_array()
        .expect("branch list")
        .iter()
        .map(|s| BranchStep {
            side: s["side"].as_u64().expect("side") as u8,
            hash: hash(&s["hash"]),
        })
        .collect()
}

#[test]
fn share_encodings() {
    let v = vectors();
    let net = &v["vecnet"];
    let network = chain_network(net);
    let framing = network.framing();
    let shares = net["shares"].as_array().expect("share list");
    assert!(!shares.is_empty());
    let mut frames_checked = 0;
    for s in shares {
        let index = &s["index"];
        let share1a_bytes = hex_bytes(&s["share1a"]);
        let a = Share1a::from_bytes(&share1a_bytes, network.rules).expect("share1a decodes");
        assert_eq!(
            a.to_bytes(),
            share1a_bytes,
            "share {index}: share1a re-encoding"
        );
        let header_bytes = hex_bytes(&s["header"]);
        assert_eq!(
            a.header,
            BlockHeader::from_bytes(&header_bytes).expect("header decodes")
        );
        assert_eq!(
            a.hash(),
            hash(&s["share_hash"]),
            "share {index}: share hash"
        );
        assert_eq!(
            a.pow_hash(),
            hash(&s["pow_hash"]),
            "share {index}: pow hash"
        );
        let previous = s["previous_share_hash"]
            .as_str()
            .map(|_| hash(&s["previous_share_hash"]));
        assert_eq!(
            a.info.share_data.previous_share_hash, previous,
            "share {index}: parent"
        );
        assert_eq!(a.info.share_data.target, bits(&s["share_target_bits"]));
        assert_eq!(
            a.info.share_data.target.to_target(),
            u256(&s["share_target"])
        );
        assert_eq!(a.header.bits, bits(&s["block_bits"]));
        assert_eq!(
            a.merkle_branch,
            branch(&s["merkle_branch"]),
            "share {index}: branch"
        );

        // The regenerated generation transaction, its coinbase script and txid, and the
        // branch that links it to the header.
        let gentx = Transaction::from_bytes(&hex_bytes(&s["gentx"])).expect("gentx decodes");
        assert_eq!(
            gentx.txid(),
            hash(&s["gentx_txid"]),
            "share {index}: gentx txid"
        );
        assert_eq!(gentx.inputs[0].script_sig, hex_bytes(&s["coinbase_script"]));
        assert_eq!(
            merkle::apply_branch(gentx.txid(), &a.merkle_branch),
            a.header.merkle_root,
            "share {index}: branch applied to the gentx txid"
        );
        let is_block = a.pow_hash().to_u256() <= a.header.bits.to_target();
        assert_eq!(
            is_block,
            s["is_block"].as_bool().expect("is_block"),
            "share {index}"
        );

        if let Some(b_hex) = s.get("share1b").and_then(Value::as_str) {
            let b_bytes = hex::decode(b_hex).expect("share1b hex");
            let b = Share1b::from_bytes(&b_bytes, network.rules).expect("share1b decodes");
            assert_eq!(b.to_bytes(), b_bytes, "share {index}: share1b re-encoding");
            assert_eq!(b.to_share1a(), a, "share {index}: share1b's share1a form");
            assert_eq!(b.hash(), hash(&s["share_hash"]));
            assert_eq!(
                b.other_txs.len() as u64,
                s["n_other_txs"].as_u64().expect("count")
            );
            let mut txids = vec![gentx.txid()];
            txids.extend(b.other_txs.iter().map(Transaction::txid));
            assert_eq!(
                merkle::root(&txids),
                a.header.merkle_root,
                "share {index}: block root"
            );
        }

        if let Some(frame_hex) = s.get("share1as_frame").and_then(Value::as_str) {
            let frame = hex::decode(frame_hex).expect("frame hex");
            let raw = framing.read(&mut &frame[..]).expect("share1as frame reads");
            let msg = Message::decode(&raw.command, &raw.payload, network.rules)
                .expect("share1as decodes");
            assert_eq!(msg, Message::Share1as(vec![a.clone()]));
            assert_eq!(msg.to_frame(&framing).expect("encodes"), frame);
            frames_checked += 1;
        }
    }
    assert!(frames_checked > 0, "the file has a share1as frame");
}

fn big(v: &Value) -> U512 {
    match v {
        Value::Number(n) => n.to_string().parse().expect("integer weight"),
        Value::String(s) => s.parse().expect("integer weight"),
        other => panic!("weight is not an integer: {other}"),
    }
}

#[test]
fn share_chain() {
    let v = vectors();
    let net = &v["vecnet"];
    let network = chain_network(net);
    let shares = net["shares"].as_array().expect("share list");
    assert!(!shares.is_empty());
    // Raw bytes first: reading the file is not part of the timing.
    let raw: Vec<(Vec<u8>, bool)> = shares
        .iter()
        .map(|s| match s.get("share1b").and_then(Value::as_str) {
            Some(b) => (hex::decode(b).expect("share1b hex"), true),
            None => (hex_bytes(&s["share1a"]), false),
        })
        .collect();

    let started = std::time::Instant::now();
    let mut tracker = Tracker::new();
    let mut results: Vec<(Share, Generated)> = Vec::with_capacity(raw.len());
    for (i, (bytes, is_1b)) in raw.iter().enumerate() {
        let share = if *is_1b {
            Share::from_share1b(
                Share1b::from_bytes(bytes, network.rules).expect("decodes"),
                &network,
            )
        } else {
            Share::from_share1a(
                Share1a::from_bytes(bytes, network.rules).expect("decodes"),
                &network,
            )
        }
        .unwrap_or_else(|e| panic!("share {i}: {e}"));
        let now = i64::from(share.timestamp()) + 1;
        let generated = verify::check(&tracker, &network, &share, now)
            .unwrap_or_else(|e| panic!("share {i} does not verify: {e}"));
        tracker.add(share.clone(), now as u64, None);
        tracker.mark_verified(share.hash);
        results.push((share, generated));
    }
    let elapsed = started.elapsed();
    println!(
        "share_chain: verified {} shares in {:.3} ms",
        tracker.verified_count(),
        elapsed.as_secs_f64() * 1000.0
    );
    assert_eq!(tracker.verified_count(), shares.len());

    for (s, (share, generated)) in shares.iter().zip(&results) {
        let index = &s["index"];
        assert_eq!(share.hash, hash(&s["share_hash"]), "share {index}: hash");
        assert_eq!(
            generated.tx.to_bytes(),
            hex_bytes(&s["gentx"]),
            "share {index}: gentx"
        );
        assert_eq!(
            generated.tx.txid(),
            hash(&s["gentx_txid"]),
            "share {index}: gentx txid"
        );
        assert_eq!(
            generated.tx.inputs[0].script_sig,
            hex_bytes(&s["coinbase_script"]),
            "share {index}: coinbase script"
        );
        let outputs: Vec<(u64, Vec<u8>)> = s["gentx_outputs"]
            .as_array()
            .expect("outputs")
            .iter()
            .map(|o| (o["value"].as_u64().expect("value"), hex_bytes(&o["script"])))
            .collect();
        let got: Vec<(u64, Vec<u8>)> = generated
            .tx
            .outputs
            .iter()
            .map(|o| (o.value, o.script_pubkey.clone()))
            .collect();
        assert_eq!(got, outputs, "share {index}: outputs");
        assert_eq!(
            generated.share_data.target,
            bits(&s["share_target_bits"]),
            "share {index}"
        );
        let w = &s["weights"];
        assert_eq!(
            generated.weights.this_weight,
            big(&w["this_weight"]),
            "share {index}: this"
        );
        assert_eq!(
            generated.weights.max_weight,
            Some(big(&w["max_weight"])),
            "share {index}: max"
        );
        assert_eq!(
            generated.weights.other_total,
            big(&w["other_weights_total"]),
            "share {index}: other total"
        );
        let expected: Vec<(Vec<u8>, U512)> = w["other_weights"]
            .as_object()
            .expect("other weights")
            .iter()
            .map(|(script, weight)| (hex::decode(script).expect("script hex"), big(weight)))
            .collect();
        let mut expected = expected;
        expected.sort();
        let got: Vec<(Vec<u8>, U512)> = generated
            .weights
            .other_weights(&tracker, share.previous_hash())
            .into_iter()
            .collect();
        assert_eq!(got, expected, "share {index}: other weights");
    }
}

/// §7.3: the getwork example's result (data, midstate, hash1, target) from its inputs.
#[test]
fn getwork() {
    use p2pool::worker::getwork::WorkUnit;

    let v = vectors();
    let example = &v["getwork_example"];
    let inputs = &example["inputs"];
    let header = BlockHeader {
        version: inputs["version"].as_u64().expect("version") as u32,
        previous_block: hash(&inputs["previous_block"]),
        merkle_root: hash(&inputs["merkle_root"]),
        timestamp: inputs["timestamp"].as_u64().expect("timestamp") as u32,
        bits: bits(&inputs["bits"]),
        nonce: 0,
    };
    let target = u256(&inputs["share_target"]);
    let unit = WorkUnit::new(&header, target, None);
    let result = &example["result"];
    assert_eq!(unit.data, result["data"].as_str().unwrap());
    assert_eq!(unit.midstate, result["midstate"].as_str().unwrap());
    assert_eq!(unit.hash1, result["hash1"].as_str().unwrap());
    assert_eq!(unit.target, result["target"].as_str().unwrap());
    // The identifier is R's best share hash as a decimal integer.
    let identifier: U256 = result["identifier"].as_str().unwrap().parse().unwrap();
    let unit = WorkUnit::new(&header, target, Some(Hash256::from_u256(identifier)));
    assert_eq!(unit.identifier, result["identifier"].as_str().unwrap());
    // A submitted data field reads back as the header.
    let mut solved = header;
    solved.nonce = 0x1234_5678;
    let data = WorkUnit::new(&solved, target, None).data;
    let mut with_nonce = hex::decode(&data).unwrap();
    with_nonce[76..80].copy_from_slice(&0x1234_5678u32.to_be_bytes());
    let decoded = p2pool::worker::getwork::decode_data(&hex::encode(&with_nonce)).unwrap();
    assert_eq!(decoded, solved);
}
