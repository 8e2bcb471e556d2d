//! Published Bitcoin test vectors (BIP173, BIP350, Bitcoin Core key_io, real mainnet
//! headers and transactions) from `testdata/`, checked against the library.
//!
//! See `testdata/README.md` for provenance. A missing or malformed file is a failure,
//! and every test asserts that it checked a non-zero number of entries.

use std::path::PathBuf;

use p2pool::bitcoin::address::{AddressError, from_script, to_script};
use p2pool::bitcoin::block::BlockHeader;
use p2pool::bitcoin::chain::ChainParams;
use p2pool::bitcoin::encode::{Decode, Encode};
use p2pool::bitcoin::script::{self, Template};
use p2pool::bitcoin::target::Bits;
use p2pool::bitcoin::tx::{OutPoint, Transaction};
use serde_json::Value;

fn load(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

fn list<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v[key]
        .as_array()
        .unwrap_or_else(|| panic!("no array {key:?}"))
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("no string {key:?} in {v}"))
}

fn int(v: &Value, key: &str) -> i64 {
    v[key]
        .as_i64()
        .unwrap_or_else(|| panic!("no integer {key:?} in {v}"))
}

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap_or_else(|e| panic!("bad hex {s:?}: {e}"))
}

/// The lowercase human-readable part of a bech32-looking string (before the last '1').
fn hrp_of(s: &str) -> Option<String> {
    let i = s.rfind('1')?;
    (i > 0).then(|| s[..i].to_lowercase())
}

/// The built-in chain for a segwit HRP, or a mainnet clone that uses `hrp`.
fn chain_for_hrp(hrp: &str) -> ChainParams {
    match hrp {
        "bc" => ChainParams::main(),
        "tb" => ChainParams::testnet3(),
        "bcrt" => ChainParams::regtest(),
        other => ChainParams {
            name: format!("custom-hrp-{other}"),
            hrp: other.to_string(),
            ..ChainParams::main()
        },
    }
}

fn chain_named(name: &str) -> ChainParams {
    ChainParams::by_name(name).unwrap_or_else(|| panic!("unknown chain {name:?}"))
}

/// Whether the vector's stated reason is that the HRP belongs to no chain; such strings
/// are valid under a chain that uses their HRP, so they are only checked on real chains.
fn rejected_for_its_hrp(reason: &str) -> bool {
    let r = reason.to_lowercase();
    r.contains("human-readable part") || r.contains("belongs to no chain")
}

/// `address` is refused on every built-in chain, and (unless the refusal is about the
/// HRP itself) on a chain whose HRP is the string's own.
fn assert_refused_everywhere(address: &str, reason: &str) {
    let mut chains = ChainParams::all();
    if !rejected_for_its_hrp(reason)
        && let Some(hrp) = hrp_of(address)
    {
        chains.push(chain_for_hrp(&hrp));
    }
    for chain in &chains {
        let result = to_script(address, chain);
        assert!(
            result.is_err(),
            "{address:?} ({reason}) accepted on chain {} (hrp {}) as {}",
            chain.name,
            chain.hrp,
            hex::encode(result.unwrap())
        );
    }
}

/// Checks one file's valid segwit addresses; returns how many were checked.
fn check_valid_segwit_addresses(file: &Value) -> usize {
    let entries = list(file, "valid_addresses");
    for entry in entries {
        let address = text(entry, "address");
        let hrp = text(entry, "hrp");
        assert_eq!(hrp_of(address).as_deref(), Some(hrp), "{address}");
        let chain = chain_for_hrp(hrp);
        let expected = unhex(text(entry, "script_pubkey"));
        let script = to_script(address, &chain)
            .unwrap_or_else(|e| panic!("{address} refused on {}: {e}", chain.name));
        assert_eq!(hex::encode(&script), hex::encode(&expected), "{address}");
        let (version, _) = script::parse_witness_program(&script)
            .unwrap_or_else(|| panic!("{address}: not a witness program"));
        assert_eq!(
            i64::from(version),
            int(entry, "witness_version"),
            "{address}"
        );
        assert_eq!(
            from_script(&script, &chain).unwrap(),
            address.to_lowercase(),
            "{address} does not re-encode to its lowercase form"
        );
    }
    entries.len()
}

fn check_invalid_segwit_addresses(file: &Value) -> usize {
    let entries = list(file, "invalid_addresses");
    for entry in entries {
        assert_refused_everywhere(text(entry, "address"), text(entry, "reason"));
    }
    entries.len()
}

#[test]
fn bip173_valid_addresses_decode_to_their_script_pubkey_and_back() {
    let n = check_valid_segwit_addresses(&load("bip173.json"));
    assert!(n > 0);
}

#[test]
fn bip350_valid_addresses_decode_to_their_script_pubkey_and_back() {
    let n = check_valid_segwit_addresses(&load("bip350.json"));
    assert!(n > 0);
}

#[test]
fn bip173_invalid_addresses_are_refused_on_every_chain() {
    let n = check_invalid_segwit_addresses(&load("bip173.json"));
    assert!(n > 0);
}

#[test]
fn bip350_invalid_addresses_are_refused_on_every_chain() {
    let n = check_invalid_segwit_addresses(&load("bip350.json"));
    assert!(n > 0);
}

#[test]
fn superseded_bip173_v1_plus_addresses_are_refused_but_their_bip350_forms_decode() {
    let bip173 = load("bip173.json");
    let bip350 = load("bip350.json");
    let mut checked = 0;
    for entry in list(&bip173, "invalid_addresses") {
        if entry["bip173_original_status"].as_str() != Some("valid") {
            continue;
        }
        let old = text(entry, "address");
        let old_script = text(entry, "script_pubkey_if_decoded_with_bip173_rules");
        let replacement = text(entry, "bip350_replacement");
        let chain = chain_for_hrp(&hrp_of(old).unwrap());
        let err = to_script(old, &chain).expect_err(old);
        assert!(
            matches!(err, AddressError::Malformed { .. }),
            "{old}: {err}"
        );
        assert_refused_everywhere(old, text(entry, "reason"));

        let listed = list(&bip350, "valid_addresses")
            .iter()
            .find(|v| text(v, "address") == replacement)
            .unwrap_or_else(|| panic!("{replacement} not in bip350.json valid_addresses"));
        assert_eq!(text(listed, "script_pubkey"), old_script, "{replacement}");
        let script = to_script(replacement, &chain).unwrap();
        assert_eq!(hex::encode(&script), old_script, "{replacement}");
        assert_eq!(
            from_script(&script, &chain).unwrap(),
            replacement.to_lowercase()
        );
        checked += 1;
    }
    assert_eq!(
        checked, 3,
        "BIP173 lists three v1+ addresses superseded by BIP350"
    );
}

#[test]
fn bech32_checksum_vectors_that_are_not_segwit_addresses_are_refused() {
    let mut checked = 0;
    for name in ["bip173.json", "bip350.json"] {
        let file = load(name);
        // Invalid checksums: refused everywhere, including on a chain with their HRP.
        for entry in list(&file, "invalid_checksums") {
            assert_refused_everywhere(text(entry, "string"), text(entry, "reason"));
            checked += 1;
        }
        // Valid checksums whose data is empty, or whose first symbol is a witness
        // version above 16, or whose program has a length no witness version allows.
        for entry in list(&file, "valid_checksums") {
            assert_refused_everywhere(text(entry, "string"), "not a segwit address");
            checked += 1;
        }
    }
    assert!(checked > 0);
}

/// The prefixes of the chain named `name` in base58.json's `chains` table.
fn file_chain(file: &Value, name: &str) -> (u8, u8, String) {
    let c = &file["chains"][name];
    (
        u8::try_from(int(c, "p2pkh_version")).unwrap(),
        u8::try_from(int(c, "p2sh_version")).unwrap(),
        text(c, "bech32_hrp").to_string(),
    )
}

/// Whether `chain` reads `entry`'s address the same way as the entry's own chain.
fn same_prefixes(file: &Value, entry: &Value, chain: &ChainParams) -> bool {
    let (p2pkh, p2sh, hrp) = file_chain(file, text(entry, "chain"));
    if text(entry, "encoding") == "base58check" {
        chain.p2pkh_prefix == p2pkh && chain.p2sh_prefix == p2sh
    } else {
        chain.hrp == hrp
    }
}

#[test]
fn chain_params_have_bitcoin_cores_address_prefixes() {
    let file = load("base58.json");
    let chains = file["chains"].as_object().unwrap();
    for name in chains.keys() {
        let (p2pkh, p2sh, hrp) = file_chain(&file, name);
        let chain = chain_named(name);
        assert_eq!(
            (chain.p2pkh_prefix, chain.p2sh_prefix, chain.hrp.as_str()),
            (p2pkh, p2sh, hrp.as_str()),
            "{name}"
        );
    }
    // testnet3 shares testnet4's prefixes (README).
    let (p2pkh, p2sh, hrp) = file_chain(&file, "testnet4");
    let t3 = ChainParams::testnet3();
    assert_eq!(
        (t3.p2pkh_prefix, t3.p2sh_prefix, t3.hrp.as_str()),
        (p2pkh, p2sh, hrp.as_str())
    );
    assert!(!chains.is_empty());
}

#[test]
fn key_io_valid_addresses_map_to_their_script_pubkey_and_back() {
    let file = load("base58.json");
    let entries = list(&file, "valid_addresses");
    for entry in entries {
        let address = text(entry, "address");
        let chain = chain_named(text(entry, "chain"));
        let expected = text(entry, "script_pubkey");
        let script = to_script(address, &chain)
            .unwrap_or_else(|e| panic!("{address} refused on {}: {e}", chain.name));
        assert_eq!(hex::encode(&script), expected, "{address}");
        assert_eq!(from_script(&script, &chain).unwrap(), address);

        let kind = text(entry, "type");
        match kind {
            "p2pkh" => assert!(matches!(
                Template::classify(&script),
                Some(Template::P2pkh(h)) if h[..] == script[3..23]
            )),
            "p2sh" => assert!(matches!(
                Template::classify(&script),
                Some(Template::P2sh(h)) if h[..] == script[2..22]
            )),
            _ => {
                let version: u8 = kind
                    .strip_prefix("witness_v")
                    .unwrap_or_else(|| panic!("unknown type {kind}"))
                    .parse()
                    .unwrap();
                let (v, _) = script::parse_witness_program(&script).unwrap();
                assert_eq!(v, version, "{address}");
                let encoding = if version == 0 { "bech32" } else { "bech32m" };
                assert_eq!(text(entry, "encoding"), encoding, "{address}");
            }
        }

        // Every other chain with the same prefixes reads it the same way.
        for other in ChainParams::all() {
            if same_prefixes(&file, entry, &other) {
                assert_eq!(
                    hex::encode(to_script(address, &other).unwrap()),
                    expected,
                    "{address} on {}",
                    other.name
                );
            }
        }
    }
    assert!(!entries.is_empty());
}

#[test]
fn key_io_invalid_addresses_are_refused_on_every_chain() {
    let file = load("base58.json");
    let entries = list(&file, "invalid_addresses");
    for entry in entries {
        assert_refused_everywhere(text(entry, "address"), text(entry, "observed_failure"));
    }
    assert!(!entries.is_empty());
}

#[test]
fn key_io_address_on_a_chain_with_other_prefixes_is_a_wrong_network_error() {
    let file = load("base58.json");
    let mut checked = 0;
    for entry in list(&file, "valid_addresses") {
        let address = text(entry, "address");
        let expected = text(entry, "script_pubkey");
        for chain in ChainParams::all() {
            if same_prefixes(&file, entry, &chain) {
                continue;
            }
            match to_script(address, &chain) {
                Err(AddressError::WrongNetwork {
                    address: a,
                    expected: e,
                    found,
                }) => {
                    assert_eq!(a, address);
                    assert_eq!(e, chain.name);
                    // The chain it names does accept it.
                    let found = found.unwrap_or_else(|| panic!("{address}: no chain named"));
                    let script = to_script(address, &chain_named(&found)).unwrap();
                    assert_eq!(hex::encode(script), expected, "{address} on {found}");
                }
                other => panic!("{address} on {}: {other:?}", chain.name),
            }
            checked += 1;
        }
    }
    assert!(checked > 0);
}

fn hash_field(v: &Value, key: &str) -> String {
    text(v, key).to_string()
}

#[test]
fn mainnet_headers_round_trip_and_their_fields_and_hash_match() {
    let file = load("mainnet_block_header.json");
    let blocks = list(&file, "blocks");
    for block in blocks {
        let bytes = unhex(text(block, "header"));
        let header = BlockHeader::from_bytes(&bytes).unwrap();
        assert_eq!(header.to_bytes(), bytes);
        assert_eq!(header.to_array()[..], bytes[..]);

        let fields = &block["fields"];
        let height = int(block, "height");
        // The file stores the signed int32 version.
        assert_eq!(
            i64::from(header.version as i32),
            int(fields, "version"),
            "{height}"
        );
        assert_eq!(
            header.previous_block.to_string(),
            hash_field(fields, "previous_block")
        );
        assert_eq!(
            header.merkle_root.to_string(),
            hash_field(fields, "merkle_root")
        );
        assert_eq!(i64::from(header.timestamp), int(fields, "timestamp"));
        let bits = u32::from_str_radix(text(fields, "bits"), 16).unwrap();
        assert_eq!(header.bits, Bits(bits));
        assert_eq!(header.bits.to_string(), text(fields, "bits"));
        assert_eq!(i64::from(header.nonce), int(fields, "nonce"));
        assert_eq!(header.hash().to_string(), text(block, "hash"), "{height}");
    }
    assert!(!blocks.is_empty());
}

#[test]
fn mainnet_header_hashes_meet_their_bits_target() {
    let file = load("mainnet_block_header.json");
    let blocks = list(&file, "blocks");
    for block in blocks {
        let header = BlockHeader::from_bytes(&unhex(text(block, "header"))).unwrap();
        let target = header.bits.to_target();
        assert!(
            header.hash().to_u256() <= target,
            "block {} hash {} above target {}",
            int(block, "height"),
            header.hash(),
            header.bits
        );
    }
    assert!(!blocks.is_empty());
}

#[test]
fn consecutive_mainnet_headers_link_by_previous_block() {
    let file = load("mainnet_block_header.json");
    let blocks = list(&file, "blocks");
    let mut links = 0;
    for pair in blocks.windows(2) {
        if int(&pair[1], "height") != int(&pair[0], "height") + 1 {
            continue;
        }
        let prev = BlockHeader::from_bytes(&unhex(text(&pair[0], "header"))).unwrap();
        let next = BlockHeader::from_bytes(&unhex(text(&pair[1], "header"))).unwrap();
        assert_eq!(next.previous_block, prev.hash());
        links += 1;
    }
    let genesis = blocks.iter().find(|b| int(b, "height") == 0).unwrap();
    let genesis = BlockHeader::from_bytes(&unhex(text(genesis, "header"))).unwrap();
    assert!(genesis.previous_block.is_zero());
    assert!(links > 0);
}

#[test]
fn mainnet_transactions_round_trip_with_matching_ids_and_sizes() {
    let file = load("segwit_tx.json");
    let txs = list(&file, "transactions");
    for entry in txs {
        let what = format!(
            "tx {} of block {}",
            int(entry, "index_in_block"),
            int(entry, "block_height")
        );
        let bytes = unhex(text(entry, "hex"));
        let tx = Transaction::from_bytes(&bytes).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(tx.to_bytes(), bytes, "{what}");
        assert_eq!(tx.txid().to_string(), text(entry, "txid"), "{what}");
        // For the coinbase the file's wtxid is the plain hash of its serialization,
        // which is what `wtxid()` computes (the witness tree uses zero instead).
        assert_eq!(tx.wtxid().to_string(), text(entry, "wtxid"), "{what}");

        let segwit = entry["segwit"].as_bool().unwrap();
        assert_eq!(tx.has_witness(), segwit, "{what}");
        if !segwit {
            assert_eq!(tx.txid(), tx.wtxid(), "{what}");
            assert_eq!(tx.to_stripped_bytes(), bytes, "{what}");
        }
        if !entry["size"].is_null() {
            assert_eq!(tx.total_size() as i64, int(entry, "size"), "{what}");
        }
        if !entry["base_size"].is_null() {
            assert_eq!(tx.stripped_size() as i64, int(entry, "base_size"), "{what}");
        }
        if !entry["weight"].is_null() {
            assert_eq!(tx.weight() as i64, int(entry, "weight"), "{what}");
        }
        if !entry["vsize"].is_null() {
            assert_eq!(
                tx.weight().div_ceil(4) as i64,
                int(entry, "vsize"),
                "{what}"
            );
        }
    }
    assert!(!txs.is_empty());
}

#[test]
fn segwit_transactions_have_a_witness_and_a_txid_that_ignores_it() {
    let file = load("segwit_tx.json");
    let mut checked = 0;
    for entry in list(&file, "transactions") {
        if !entry["segwit"].as_bool().unwrap() {
            continue;
        }
        let tx = Transaction::from_bytes(&unhex(text(entry, "hex"))).unwrap();
        assert!(tx.has_witness());
        assert_ne!(tx.txid(), tx.wtxid());
        let mut stripped = tx.clone();
        for input in &mut stripped.inputs {
            input.witness.clear();
        }
        assert!(!stripped.has_witness());
        assert_eq!(stripped.to_bytes(), tx.to_stripped_bytes());
        assert_eq!(stripped.txid(), tx.txid());
        assert_eq!(stripped.wtxid(), tx.txid());
        checked += 1;
    }
    assert!(checked > 0);
}

#[test]
fn segwit_coinbase_has_height_push_reserved_value_and_the_headers_witness_commitment() {
    let headers = load("mainnet_block_header.json");
    let file = load("segwit_tx.json");
    let mut checked = 0;
    for entry in list(&file, "transactions") {
        if int(entry, "index_in_block") != 0 || !entry["segwit"].as_bool().unwrap() {
            continue;
        }
        let height = int(entry, "block_height");
        let block = list(&headers, "blocks")
            .iter()
            .find(|b| int(b, "height") == height)
            .unwrap_or_else(|| panic!("block {height} not in mainnet_block_header.json"));
        assert_eq!(text(block, "hash"), text(entry, "block_hash"));
        let commitment = unhex(text(block, "witness_commitment"));

        let tx = Transaction::from_bytes(&unhex(text(entry, "hex"))).unwrap();
        assert_eq!(tx.inputs.len(), 1);
        let input = &tx.inputs[0];
        assert_eq!(input.previous_output, OutPoint::NULL);
        assert_eq!(input.witness, vec![vec![0u8; 32]]);
        let push = script::height_push(u32::try_from(height).unwrap());
        assert!(
            input.script_sig.starts_with(&push),
            "height push {push:02x?}"
        );

        let outputs: Vec<_> = tx
            .outputs
            .iter()
            .filter(|o| script::is_witness_commitment(&o.script_pubkey))
            .collect();
        assert_eq!(outputs.len(), 1);
        let expected = script::witness_commitment_script(&commitment.try_into().unwrap());
        assert_eq!(outputs[0].script_pubkey, expected);
        checked += 1;
    }
    assert!(checked > 0);
}
