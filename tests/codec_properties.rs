//! Property tests for every codec type: encode then decode gives the value back and the
//! same bytes; random and truncated buffers never make a decoder panic.

use std::net::{IpAddr, Ipv6Addr};

use p2pool::bitcoin::address;
use p2pool::bitcoin::block::{Block, BlockHeader};
use p2pool::bitcoin::chain::ChainParams;
use p2pool::bitcoin::encode::{Decode, Encode, Reader, WriteExt};
use p2pool::bitcoin::frame::Framing;
use p2pool::bitcoin::hash::Hash256;
use p2pool::bitcoin::merkle::{self, BranchStep};
use p2pool::bitcoin::script;
use p2pool::bitcoin::target::Bits;
use p2pool::bitcoin::tx::{OutPoint, Transaction, TxIn, TxOut};
use p2pool::network::{Network, RuleSet};
use p2pool::p2p::message::{AddrRecord, Message, NetAddress, Version};
use p2pool::sharechain::share::{ModernFields, Share1a, Share1b, ShareData, ShareInfo};
use proptest::collection::vec;
use proptest::prelude::*;

const COMMANDS: [&str; 11] = [
    "version",
    "setmode",
    "ping",
    "addrme",
    "addrs",
    "getaddrs",
    "getshares",
    "share0s",
    "share1as",
    "share1bs",
    "unknown",
];
const RULES: [RuleSet; 2] = [RuleSet::Legacy2011, RuleSet::Modern];

fn hash256() -> impl Strategy<Value = Hash256> {
    any::<[u8; 32]>().prop_map(Hash256)
}

fn header() -> impl Strategy<Value = BlockHeader> {
    (
        any::<u32>(),
        hash256(),
        hash256(),
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
    )
        .prop_map(
            |(version, previous_block, merkle_root, timestamp, bits, nonce)| BlockHeader {
                version,
                previous_block,
                merkle_root,
                timestamp,
                bits: Bits(bits),
                nonce,
            },
        )
}

/// Transactions with at least one input; witnesses only when `witness`.
fn transaction(witness: bool) -> impl Strategy<Value = Transaction> {
    let input = (
        hash256(),
        any::<u32>(),
        vec(any::<u8>(), 0..40),
        any::<u32>(),
        {
            let items = vec(vec(any::<u8>(), 0..40), 0..3);
            if witness {
                items.boxed()
            } else {
                Just(vec![]).boxed()
            }
        },
    )
        .prop_map(|(txid, vout, script_sig, sequence, witness)| TxIn {
            previous_output: OutPoint { txid, vout },
            script_sig,
            sequence,
            witness,
        });
    let output = (any::<u64>(), vec(any::<u8>(), 0..40)).prop_map(|(value, script_pubkey)| TxOut {
        value,
        script_pubkey,
    });
    (
        any::<u32>(),
        vec(input, 1..4),
        vec(output, 0..4),
        any::<u32>(),
    )
        .prop_map(|(version, inputs, outputs, lock_time)| Transaction {
            version,
            inputs,
            outputs,
            lock_time,
        })
}

fn share_info(rules: RuleSet) -> impl Strategy<Value = ShareInfo> {
    (
        proptest::option::of(hash256().prop_filter("non-zero", |h| !h.is_zero())),
        any::<u32>(),
        vec(any::<u8>(), 0..=100),
        vec(any::<u8>(), 0..=100),
        any::<u64>(),
        any::<u32>(),
        any::<[u8; 32]>(),
    )
        .prop_map(
            move |(prev, target, nonce, new_script, subsidy, height, commitment)| ShareInfo {
                share_data: ShareData {
                    previous_share_hash: prev,
                    target: Bits(target),
                    nonce,
                },
                new_script,
                subsidy,
                modern: (rules == RuleSet::Modern).then_some(ModernFields {
                    block_height: height,
                    witness_commitment: commitment,
                }),
            },
        )
}

fn branch_step() -> impl Strategy<Value = BranchStep> {
    (0u8..=1, hash256()).prop_map(|(side, hash)| BranchStep { side, hash })
}

fn share1a(rules: RuleSet) -> impl Strategy<Value = Share1a> {
    (header(), share_info(rules), vec(branch_step(), 0..=16)).prop_map(
        |(header, info, merkle_branch)| Share1a {
            header,
            info,
            merkle_branch,
        },
    )
}

fn share1b(rules: RuleSet) -> impl Strategy<Value = Share1b> {
    (
        header(),
        share_info(rules),
        vec(transaction(rules == RuleSet::Modern), 0..4),
    )
        .prop_map(|(header, info, other_txs)| Share1b {
            header,
            info,
            other_txs,
        })
}

fn net_address(rules: RuleSet) -> impl Strategy<Value = NetAddress> {
    let ip = if rules == RuleSet::Modern {
        any::<[u8; 16]>()
            .prop_map(|b| IpAddr::V6(Ipv6Addr::from(b)))
            .boxed()
    } else {
        any::<[u8; 4]>().prop_map(IpAddr::from).boxed()
    };
    (any::<u64>(), ip, any::<u16>()).prop_map(|(s, ip, port)| NetAddress::new(s, ip, port))
}

fn message(rules: RuleSet) -> impl Strategy<Value = Message> {
    let max_sub = rules.max_sub_version();
    let version = (
        any::<u32>(),
        any::<u64>(),
        net_address(rules),
        net_address(rules),
        any::<u64>(),
        proptest::string::string_regex(&format!("[ -~]{{0,{}}}", max_sub.min(300)))
            .expect("regex")
            .prop_filter("within the limit", move |s| s.len() <= max_sub),
        any::<u32>(),
        proptest::option::of(hash256().prop_filter("non-zero", |h| !h.is_zero())),
    )
        .prop_map(
            |(version, services, addr_to, addr_from, nonce, sub_version, mode, best)| {
                Message::Version(Version {
                    version,
                    services,
                    addr_to,
                    addr_from,
                    nonce,
                    sub_version,
                    mode,
                    best_share_hash: best,
                })
            },
        );
    let record = (any::<u64>(), net_address(rules))
        .prop_map(|(timestamp, address)| AddrRecord { timestamp, address });
    prop_oneof![
        version,
        any::<u32>().prop_map(|mode| Message::SetMode { mode }),
        Just(Message::Ping),
        any::<u16>().prop_map(|port| Message::AddrMe { port }),
        vec(record, 0..5).prop_map(Message::Addrs),
        any::<u32>().prop_map(|count| Message::GetAddrs { count }),
        (vec(hash256(), 0..5), any::<u64>(), vec(hash256(), 0..5)).prop_map(
            |(hashes, parents, stops)| Message::GetShares {
                hashes,
                parents,
                stops
            }
        ),
        vec(hash256(), 0..5).prop_map(Message::Share0s),
        vec(share1a(rules), 0..3).prop_map(Message::Share1as),
        vec(share1b(rules), 0..3).prop_map(Message::Share1bs),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 200,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn compact_size_round_trips(v in any::<u64>()) {
        let mut bytes = Vec::new();
        bytes.put_compact_size(v);
        let mut r = Reader::new(&bytes);
        prop_assert_eq!(r.compact_size("n").unwrap(), v);
        prop_assert!(r.is_empty());
    }

    #[test]
    fn hash_hex_round_trips(h in hash256()) {
        prop_assert_eq!(Hash256::from_hex(&h.to_hex()).unwrap(), h);
        prop_assert_eq!(Hash256::from_bytes(&h.to_bytes()).unwrap(), h);
    }

    #[test]
    fn canonical_bits_round_trip_through_the_target(exp in 3u32..=32, mantissa in 0x8000u32..0x80_0000) {
        let bits = Bits((exp << 24) | mantissa);
        prop_assert_eq!(Bits::from_target_floor(bits.to_target()), bits);
    }

    #[test]
    fn header_round_trips(h in header()) {
        let bytes = h.to_bytes();
        prop_assert_eq!(bytes.len(), 80);
        prop_assert_eq!(BlockHeader::from_bytes(&bytes).unwrap(), h);
    }

    #[test]
    fn transaction_round_trips_in_both_forms(tx in transaction(true)) {
        let bytes = tx.to_bytes();
        let back = Transaction::from_bytes(&bytes).unwrap();
        prop_assert_eq!(back.to_bytes(), bytes);
        prop_assert_eq!(back.txid(), tx.txid());
        prop_assert_eq!(&back, &tx);
        let stripped = tx.to_stripped_bytes();
        let mut r = Reader::new(&stripped);
        let plain = Transaction::decode_with(&mut r, false).unwrap();
        prop_assert_eq!(plain.txid(), tx.txid());
    }

    #[test]
    fn block_round_trips(h in header(), txs in vec(transaction(true), 0..4)) {
        let block = Block { header: h, txs };
        let bytes = block.to_bytes();
        prop_assert_eq!(Block::from_bytes(&bytes).unwrap(), block);
    }

    #[test]
    fn branch_step_round_trips(s in branch_step()) {
        prop_assert_eq!(BranchStep::from_bytes(&s.to_bytes()).unwrap(), s);
    }

    #[test]
    fn merkle_branch_of_any_leaf_reaches_the_root(leaves in vec(hash256(), 1..40), pick in any::<usize>()) {
        let i = pick % leaves.len();
        prop_assert_eq!(merkle::apply_branch(leaves[i], &merkle::branch(&leaves, i)), merkle::root(&leaves));
    }

    #[test]
    fn share_data_round_trips(info in share_info(RuleSet::Legacy2011)) {
        let d = info.share_data;
        prop_assert_eq!(ShareData::from_bytes(&d.to_bytes()).unwrap(), d);
    }

    #[test]
    fn share1a_round_trips_under_both_rule_sets(
        legacy in share1a(RuleSet::Legacy2011),
        modern in share1a(RuleSet::Modern),
    ) {
        for (share, rules) in [(legacy, RuleSet::Legacy2011), (modern, RuleSet::Modern)] {
            let bytes = share.to_bytes();
            let back = Share1a::from_bytes(&bytes, rules).unwrap();
            prop_assert_eq!(back.to_bytes(), bytes);
            prop_assert_eq!(back.hash(), share.hash());
            prop_assert_eq!(back, share);
        }
    }

    #[test]
    fn share1b_round_trips_under_both_rule_sets(
        legacy in share1b(RuleSet::Legacy2011),
        modern in share1b(RuleSet::Modern),
    ) {
        for (share, rules) in [(legacy, RuleSet::Legacy2011), (modern, RuleSet::Modern)] {
            let bytes = share.to_bytes();
            let back = Share1b::from_bytes(&bytes, rules).unwrap();
            prop_assert_eq!(back.to_bytes(), bytes);
            prop_assert_eq!(back.hash(), share.hash());
            prop_assert_eq!(back, share);
        }
    }

    #[test]
    fn legacy_messages_round_trip_through_frames(m in message(RuleSet::Legacy2011)) {
        check_message(m, RuleSet::Legacy2011)?;
    }

    #[test]
    fn modern_messages_round_trip_through_frames(m in message(RuleSet::Modern)) {
        check_message(m, RuleSet::Modern)?;
    }

    #[test]
    fn random_payloads_never_panic_any_decoder(bytes in vec(any::<u8>(), 0..600)) {
        feed_every_decoder(&bytes);
    }

    #[test]
    fn truncated_valid_encodings_are_errors_not_panics(m in message(RuleSet::Modern), cut in any::<usize>()) {
        let payload = m.encode_payload();
        if !payload.is_empty() {
            let cut = cut % payload.len();
            prop_assert!(Message::decode(m.command(), &payload[..cut], RuleSet::Modern).is_err());
            feed_every_decoder(&payload[..cut]);
        }
    }

    #[test]
    fn random_strings_never_panic_address_parsing(s in "\\PC{0,120}") {
        for chain in ChainParams::all() {
            let _ = address::to_script(&s, &chain);
        }
        let _ = address::base58check_decode(&s);
        let _ = Hash256::from_hex(&s);
        let _ = Network::from_json(&s, "x");
    }
}

fn check_message(m: Message, rules: RuleSet) -> Result<(), TestCaseError> {
    let net_framing = Framing::p2pool([1, 2, 3, 4, 5, 6, 7, 8], rules.max_payload());
    let frame = m.to_frame(&net_framing).unwrap();
    let raw = net_framing.read(&mut &frame[..]).unwrap();
    let back = Message::decode(&raw.command, &raw.payload, rules).unwrap();
    prop_assert_eq!(back.to_frame(&net_framing).unwrap(), frame);
    prop_assert_eq!(back, m);
    Ok(())
}

/// Every decoder in the crate, on the same bytes; only errors may come out.
fn feed_every_decoder(bytes: &[u8]) {
    for rules in RULES {
        for cmd in COMMANDS {
            let _ = Message::decode(cmd, bytes, rules);
        }
        let _ = Share1a::from_bytes(bytes, rules);
        let _ = Share1b::from_bytes(bytes, rules);
        let mut r = Reader::new(bytes);
        let _ = ShareInfo::decode_from(&mut r, rules);
        let framing = Framing::p2pool(
            [0x24, 0x72, 0xef, 0x18, 0x1e, 0xfc, 0xd3, 0x7b],
            rules.max_payload(),
        );
        let _ = framing.read(&mut &bytes[..]);
        let _ = framing.decode(bytes);
    }
    let bitcoin = Framing::bitcoin([0xf9, 0xbe, 0xb4, 0xd9], 4_000_000);
    let _ = bitcoin.read(&mut &bytes[..]);
    let _ = bitcoin.decode(bytes);
    let _ = Transaction::from_bytes(bytes);
    let _ = Transaction::decode_with(&mut Reader::new(bytes), false);
    let _ = BlockHeader::from_bytes(bytes);
    let _ = Block::from_bytes(bytes);
    let _ = BranchStep::from_bytes(bytes);
    let _ = ShareData::from_bytes(bytes);
    let _ = script::legacy_sigop_count(bytes);
    let _ = script::Template::classify(bytes);
    let _ = script::parse_witness_program(bytes);
    if let Ok(word) = <[u8; 4]>::try_from(bytes.get(..4).unwrap_or(&[0; 4])) {
        let _ = Bits(u32::from_le_bytes(word)).to_target();
    }
    for chain in ChainParams::all() {
        let _ = address::from_script(bytes, &chain);
    }
}

#[test]
fn many_random_and_truncated_frames_never_panic_the_readers() {
    // A deterministic xorshift stream so the test is repeatable and cheap.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let framing = Framing::p2pool([0x24, 0x72, 0xef, 0x18, 0x1e, 0xfc, 0xd3, 0x7b], 1_000_000);
    let mut checked = 0;
    for _ in 0..5000 {
        let len = (next() % 300) as usize;
        let mut payload: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        let cmd = COMMANDS[(next() % COMMANDS.len() as u64) as usize];
        // Valid frames around random payloads reach the message decoders.
        let frame = framing.encode(cmd, &payload).unwrap();
        let raw = framing.read(&mut &frame[..]).unwrap();
        for rules in RULES {
            let _ = Message::decode(&raw.command, &raw.payload, rules);
        }
        let cut = (next() as usize) % (frame.len() + 1);
        assert!(framing.read(&mut &frame[..cut]).is_err() || cut == frame.len());
        payload.truncate(cut.min(payload.len()));
        feed_every_decoder(&payload);
        checked += 1;
    }
    assert_eq!(checked, 5000);
}
