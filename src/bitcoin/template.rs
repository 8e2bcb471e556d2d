//! Block templates from `getblocktemplate`: parsed into checked types, and cut down to fit
//! beside a given generation transaction.
//!
//! Rules (BIP9 "rules"): a name with a `!` prefix is one a client must understand to use the
//! template. Unknown names without `!` are ignored; an unknown `!` name is refused. `segwit`
//! (with or without `!`) decides whether the block carries a witness commitment, whatever
//! else the node sends: bcoin offers a `default_witness_commitment` before activation too.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Deserializer};
use serde_json::Value;

use super::encode::Decode;
use super::fit::{CoinbaseCost, FitError, Fitted};
use super::hash::Hash256;
use super::script;
use super::target::Bits;
use super::tx::Transaction;

/// Rules this node understands. Only `segwit` changes what it builds; the others add no
/// block-level requirement a pool has to meet.
pub const KNOWN_RULES: [&str; 4] = ["segwit", "csv", "taproot", "testdummy"];

/// Limits when the template does not state them (Bitcoin Core's consensus values).
pub const LEGACY_SIZE_LIMIT: u64 = 1_000_000;
pub const LEGACY_SIGOP_LIMIT: u64 = 20_000;
pub const WEIGHT_LIMIT: u64 = 4_000_000;
pub const SIGOP_COST_LIMIT: u64 = 80_000;
/// No bitcoind builds a template with more than this many satoshis (21 million BTC).
pub const MAX_MONEY: u64 = 21_000_000 * 100_000_000;

/// A template transaction with what the template says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateTx {
    pub tx: Transaction,
    /// As the template states it (computed when absent).
    pub txid: Hash256,
    /// The witness txid (`hash`); equal to the txid without a witness.
    pub wtxid: Hash256,
    /// Indices (0-based) of the template transactions this one spends; each is lower than
    /// its own index.
    pub depends: Vec<usize>,
    /// Fee in satoshis.
    pub fee: u64,
    /// Sig-op cost in the template's units (see `Template::sigop_scale`).
    pub sigops: u64,
    pub weight: u64,
    /// Serialised size, witness included.
    pub size: u64,
}

/// The block limits a template must fit in. `None` means the limit does not apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub weight: Option<u64>,
    pub size: Option<u64>,
    pub sigops: u64,
}

/// A checked block template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub version: u32,
    pub previous_block: Hash256,
    /// The height of the block to build.
    pub height: u32,
    pub bits: Bits,
    pub cur_time: u32,
    pub min_time: u32,
    /// Subsidy plus the fees of every template transaction.
    pub coinbase_value: u64,
    pub transactions: Vec<TemplateTx>,
    /// The rules as sent, `!` prefixes kept.
    pub rules: Vec<String>,
    /// True when the rules name `segwit`: the block needs a witness commitment.
    pub segwit: bool,
    /// Bytes 6..38 of `default_witness_commitment`, only when `segwit`.
    pub default_witness_commitment: Option<[u8; 32]>,
    pub limits: Limits,
    pub longpollid: Option<String>,
}

/// Why a template answer was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateError {
    /// The answer is not a template object.
    Json(String),
    /// A top-level field is missing or malformed.
    Field { field: &'static str, reason: String },
    /// A transaction entry is malformed.
    Transaction { index: usize, reason: String },
    /// A `!` rule this node does not understand: it cannot build a valid block.
    UnsupportedRule(String),
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TemplateError::Json(reason) => write!(f, "block template is malformed: {reason}"),
            TemplateError::Field { field, reason } => {
                write!(f, "block template field {field} is invalid: {reason}")
            }
            TemplateError::Transaction { index, reason } => {
                write!(f, "block template transaction {index} is invalid: {reason}")
            }
            TemplateError::UnsupportedRule(rule) => write!(
                f,
                "block template requires rule '{rule}', which this node does not support"
            ),
        }
    }
}

impl std::error::Error for TemplateError {}

/// The template as it comes, strings borrowed from the JSON where possible.
#[derive(Deserialize)]
struct RawTemplate<'a> {
    version: i64,
    #[serde(borrow)]
    previousblockhash: Cow<'a, str>,
    height: u64,
    bits: Value,
    curtime: u64,
    #[serde(default)]
    mintime: Option<u64>,
    coinbasevalue: u64,
    #[serde(borrow, default)]
    transactions: Vec<RawTx<'a>>,
    #[serde(default)]
    rules: Vec<String>,
    #[serde(borrow, default)]
    default_witness_commitment: Option<Cow<'a, str>>,
    #[serde(default)]
    weightlimit: Option<u64>,
    #[serde(default)]
    sizelimit: Option<u64>,
    #[serde(default)]
    sigoplimit: Option<u64>,
    #[serde(default)]
    longpollid: Option<String>,
}

#[derive(Deserialize)]
struct RawTx<'a> {
    #[serde(borrow)]
    data: Cow<'a, str>,
    #[serde(borrow, default)]
    txid: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    hash: Option<Cow<'a, str>>,
    #[serde(default)]
    depends: Vec<u64>,
    fee: Option<i64>,
    sigops: Option<i64>,
    #[serde(default)]
    weight: Option<u64>,
}

fn field_err(field: &'static str, reason: impl Into<String>) -> TemplateError {
    TemplateError::Field {
        field,
        reason: reason.into(),
    }
}

fn u32_field(field: &'static str, v: u64) -> Result<u32, TemplateError> {
    u32::try_from(v).map_err(|_| field_err(field, format!("{v} does not fit in 32 bits")))
}

fn hash_field(field: &'static str, s: &str) -> Result<Hash256, TemplateError> {
    parse_hash(s).ok_or_else(|| field_err(field, "expected 64 hex digits"))
}

/// A hash in display hex (`Hash256::from_hex`, by table).
fn parse_hash(s: &str) -> Option<Hash256> {
    let bytes = decode_hex(s.as_bytes())?;
    let mut hash: [u8; 32] = bytes.try_into().ok()?;
    hash.reverse();
    Some(Hash256(hash))
}

/// A `getblocktemplate` result read straight from the bytes of bitcoind's answer (strings
/// borrowed, no `serde_json::Value` built): the template, or why it cannot be used. JSON
/// that is not a template object at all fails to deserialise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateAnswer(pub Result<Template, TemplateError>);

impl<'de> Deserialize<'de> for TemplateAnswer {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = RawTemplate::deserialize(d)?;
        Ok(TemplateAnswer(Template::from_raw(raw)))
    }
}

impl Template {
    /// Parses the `result` of `getblocktemplate`.
    pub fn from_value(value: &Value) -> Result<Template, TemplateError> {
        let raw =
            RawTemplate::deserialize(value).map_err(|e| TemplateError::Json(e.to_string()))?;
        Template::from_raw(raw)
    }

    /// Parses the JSON text of a template (the `result` object alone).
    pub fn from_json(bytes: &[u8]) -> Result<Template, TemplateError> {
        let raw: RawTemplate<'_> =
            serde_json::from_slice(bytes).map_err(|e| TemplateError::Json(e.to_string()))?;
        Template::from_raw(raw)
    }

    fn from_raw(raw: RawTemplate<'_>) -> Result<Template, TemplateError> {
        let segwit = check_rules(&raw.rules)?;
        let version = i32::try_from(raw.version)
            .map(|v| v as u32)
            .or_else(|_| u32::try_from(raw.version))
            .map_err(|_| field_err("version", format!("{} is not a 32-bit number", raw.version)))?;
        let bits = match &raw.bits {
            Value::String(s) => decode_hex(s.as_bytes())
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .map(u32::from_be_bytes),
            Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
            _ => None,
        }
        .map(Bits)
        .ok_or_else(|| field_err("bits", format!("expected 8 hex digits, got {}", raw.bits)))?;
        if raw.coinbasevalue > MAX_MONEY {
            return Err(field_err("coinbasevalue", "more than 21 million bitcoin"));
        }
        let default_witness_commitment = match (&raw.default_witness_commitment, segwit) {
            (Some(hex), true) => Some(parse_commitment(hex)?),
            _ => None,
        };
        let limits = Limits {
            weight: raw.weightlimit.or(segwit.then_some(WEIGHT_LIMIT)),
            size: raw.sizelimit.or((!segwit).then_some(LEGACY_SIZE_LIMIT)),
            sigops: raw.sigoplimit.unwrap_or(if segwit {
                SIGOP_COST_LIMIT
            } else {
                LEGACY_SIGOP_LIMIT
            }),
        };
        let mut transactions = Vec::with_capacity(raw.transactions.len());
        for (index, tx) in raw.transactions.iter().enumerate() {
            transactions.push(parse_tx(index, tx)?);
        }
        Ok(Template {
            version,
            previous_block: hash_field("previousblockhash", &raw.previousblockhash)?,
            height: u32_field("height", raw.height)?,
            bits,
            cur_time: u32_field("curtime", raw.curtime)?,
            min_time: u32_field("mintime", raw.mintime.unwrap_or(0))?,
            coinbase_value: raw.coinbasevalue,
            transactions,
            rules: raw.rules,
            segwit,
            default_witness_commitment,
            limits,
            longpollid: raw.longpollid,
        })
    }

    /// What one legacy sig-op counts for in `sigops` and `limits.sigops`: 4 under segwit
    /// (sig-op cost), 1 before.
    pub fn sigop_scale(&self) -> u64 {
        if self.segwit { 4 } else { 1 }
    }

    /// The transaction ids in template order.
    pub fn txids(&self) -> Vec<Hash256> {
        self.transactions.iter().map(|t| t.txid).collect()
    }

    /// Keeps the template transactions that fit in the block beside `coinbase`, dropping
    /// the lowest fee rates first (and with each dropped transaction every transaction that
    /// depends on it), and lowers the coinbase value by the fees dropped. A template that
    /// already fits keeps every transaction and its coinbase value.
    pub fn fit(&self, coinbase: CoinbaseCost) -> Result<Fitted, FitError> {
        super::fit::fit(self, coinbase)
    }
}

/// Checks the rules; true when `segwit` is among them.
fn check_rules(rules: &[String]) -> Result<bool, TemplateError> {
    let mut segwit = false;
    for rule in rules {
        let (required, name) = match rule.strip_prefix('!') {
            Some(name) => (true, name),
            None => (false, rule.as_str()),
        };
        if name == "segwit" {
            segwit = true;
        } else if required && !KNOWN_RULES.contains(&name) {
            return Err(TemplateError::UnsupportedRule(name.to_string()));
        }
    }
    Ok(segwit)
}

fn parse_commitment(hex: &str) -> Result<[u8; 32], TemplateError> {
    let bad = |reason: &str| field_err("default_witness_commitment", reason);
    let script = hex::decode(hex).map_err(|_| bad("not hex"))?;
    if script.len() != 38 || !script::is_witness_commitment(&script) {
        return Err(bad("not a 38-byte witness commitment script"));
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(&script[6..38]);
    Ok(out)
}

/// Hex digit values; 0xff for anything else.
const HEX_DIGITS: [u8; 256] = {
    let mut table = [0xff; 256];
    let mut i = 0;
    while i < 10 {
        table[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        table[b'a' as usize + i] = 10 + i as u8;
        table[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    table
};

/// Decodes hex by table: the `hex` crate's decoder is the slowest step of a 4 MB template.
fn decode_hex(hex: &[u8]) -> Option<Vec<u8>> {
    if hex.len() % 2 != 0 {
        return None;
    }
    let mut out = Vec::with_capacity(hex.len() / 2);
    let mut bad = 0u8;
    for pair in hex.chunks_exact(2) {
        let (hi, lo) = (HEX_DIGITS[pair[0] as usize], HEX_DIGITS[pair[1] as usize]);
        bad |= hi | lo;
        out.push(hi << 4 | lo);
    }
    (bad & 0xf0 == 0).then_some(out)
}

fn parse_tx(index: usize, raw: &RawTx<'_>) -> Result<TemplateTx, TemplateError> {
    let err = |reason: String| TemplateError::Transaction { index, reason };
    let data = decode_hex(raw.data.as_bytes()).ok_or_else(|| err("data is not hex".into()))?;
    let tx = Transaction::from_bytes(&data).map_err(|e| err(e.to_string()))?;
    let id = |field: &str, hex: &Option<Cow<'_, str>>| -> Result<Option<Hash256>, TemplateError> {
        hex.as_deref()
            .map(|h| parse_hash(h).ok_or_else(|| err(format!("{field}: expected 64 hex digits"))))
            .transpose()
    };
    let txid = id("txid", &raw.txid)?.unwrap_or_else(|| tx.txid());
    let wtxid = id("hash", &raw.hash)?.unwrap_or_else(|| tx.wtxid());
    let mut depends = Vec::with_capacity(raw.depends.len());
    for &d in &raw.depends {
        // 1-based, and a parent comes before its child.
        match usize::try_from(d) {
            Ok(d) if d >= 1 && d <= index => depends.push(d - 1),
            _ => return Err(err(format!("depends on {d}, not an earlier transaction"))),
        }
    }
    let fee = match raw.fee {
        Some(fee) if (0..=MAX_MONEY as i64).contains(&fee) => fee as u64,
        Some(fee) => return Err(err(format!("fee {fee} out of range"))),
        None => return Err(err("no fee: cannot tell what dropping it costs".into())),
    };
    let sigops = match raw.sigops {
        Some(n) if n >= 0 => n as u64,
        Some(n) => return Err(err(format!("sigops {n} out of range"))),
        None => {
            return Err(err(
                "no sigops: cannot check the block's sig-op limit".into()
            ));
        }
    };
    let size = data.len() as u64;
    let weight = raw.weight.unwrap_or_else(|| tx.weight() as u64);
    Ok(TemplateTx {
        tx,
        txid,
        wtxid,
        depends,
        fee,
        sigops,
        weight,
        size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bitcoin::encode::Encode;
    use crate::bitcoin::hash::sha256d;
    use crate::bitcoin::tx::{OutPoint, TxIn, TxOut};
    use serde_json::json;

    fn tx(n: u8, witness: bool) -> Transaction {
        Transaction {
            version: 2,
            inputs: vec![TxIn {
                previous_output: OutPoint {
                    txid: sha256d(&[n]),
                    vout: 0,
                },
                script_sig: vec![],
                sequence: 0xffff_ffff,
                witness: if witness { vec![vec![0x51]] } else { vec![] },
            }],
            outputs: vec![TxOut {
                value: 1000,
                script_pubkey: vec![0x51],
            }],
            lock_time: 0,
        }
    }

    /// bcoin's answer after segwit activation, with two transactions (the second spends
    /// the first).
    fn answer() -> Value {
        let (a, b) = (tx(1, true), tx(2, false));
        json!({
            "capabilities": ["proposal"],
            "version": 536870912,
            "rules": ["csv", "!segwit", "testdummy"],
            "height": 433,
            "previousblockhash": "334df9bf5545f9f890f1a8cd757dec2eac53c04bc024bbf75291cdda976089cf",
            "bits": "207fffff",
            "curtime": 1795316744,
            "mintime": 1795316700,
            "sigoplimit": 80000,
            "sizelimit": 4000000,
            "weightlimit": 4000000,
            "longpollid": "334df9bf5545f9f890f1a8cd757dec2eac53c04bc024bbf75291cdda976089cf00000000",
            "coinbasevalue": 1250000300,
            "default_witness_commitment": "6a24aa21a9ede2f61c3f71d1defd3fa999dfa36953755c690689799962b48bebd836974e8cf9",
            "transactions": [
                {"data": hex::encode(a.to_bytes()), "txid": a.txid().to_hex(), "hash": a.wtxid().to_hex(),
                 "depends": [], "fee": 100, "sigops": 0, "weight": a.weight()},
                {"data": hex::encode(b.to_bytes()), "txid": b.txid().to_hex(), "hash": b.wtxid().to_hex(),
                 "depends": [1], "fee": 200, "sigops": 4, "weight": b.weight()},
            ],
        })
    }

    #[test]
    fn bcoin_segwit_template_parses() {
        let t = Template::from_value(&answer()).unwrap();
        assert_eq!(t.version, 0x2000_0000);
        assert_eq!(t.height, 433);
        assert_eq!(t.bits, Bits(0x207fffff));
        assert_eq!(
            t.previous_block.to_string(),
            "334df9bf5545f9f890f1a8cd757dec2eac53c04bc024bbf75291cdda976089cf"
        );
        assert!(t.segwit);
        assert_eq!(t.sigop_scale(), 4);
        assert_eq!(
            t.default_witness_commitment.unwrap()[..4],
            [0xe2, 0xf6, 0x1c, 0x3f]
        );
        assert_eq!(
            t.limits,
            Limits {
                weight: Some(4_000_000),
                size: Some(4_000_000),
                sigops: 80_000
            }
        );
        assert_eq!(t.transactions.len(), 2);
        assert_eq!(t.transactions[0].tx, tx(1, true));
        assert_eq!(t.transactions[0].wtxid, tx(1, true).wtxid());
        assert_eq!(t.transactions[1].depends, vec![0]);
        assert_eq!(t.transactions[1].size, tx(2, false).to_bytes().len() as u64);
        assert_eq!(t.min_time, 1795316700);
        // The same text parses the same way from bytes.
        let text = serde_json::to_vec(&answer()).unwrap();
        assert_eq!(Template::from_json(&text).unwrap(), t);
    }

    #[test]
    fn without_segwit_rule_there_is_no_commitment_whatever_the_node_sends() {
        let mut v = answer();
        v["rules"] = json!([]);
        v.as_object_mut().unwrap().remove("weightlimit");
        v.as_object_mut().unwrap().remove("sizelimit");
        v["sigoplimit"] = json!(20000);
        v["transactions"] = json!([]);
        let t = Template::from_value(&v).unwrap();
        assert!(!t.segwit);
        assert_eq!(t.default_witness_commitment, None);
        assert_eq!(t.sigop_scale(), 1);
        assert_eq!(
            t.limits,
            Limits {
                weight: None,
                size: Some(1_000_000),
                sigops: 20_000
            }
        );
    }

    #[test]
    fn rules_tolerate_prefixes_and_unknown_names_but_not_unknown_required_ones() {
        for rules in [
            json!(["segwit"]),
            json!(["!segwit", "taproot", "frobnicate"]),
        ] {
            let mut v = answer();
            v["rules"] = rules;
            assert!(Template::from_value(&v).unwrap().segwit);
        }
        let mut v = answer();
        v["rules"] = json!(["csv", "!signet", "!segwit"]);
        let err = Template::from_value(&v).unwrap_err();
        assert_eq!(err, TemplateError::UnsupportedRule("signet".into()));
        assert_eq!(
            err.to_string(),
            "block template requires rule 'signet', which this node does not support"
        );
    }

    #[test]
    fn bits_may_be_a_number_and_ids_may_be_missing() {
        let mut v = answer();
        v["bits"] = json!(0x207fffffu32);
        for t in v["transactions"].as_array_mut().unwrap() {
            let t = t.as_object_mut().unwrap();
            t.remove("txid");
            t.remove("hash");
            t.remove("weight");
        }
        let t = Template::from_value(&v).unwrap();
        assert_eq!(t.bits, Bits(0x207fffff));
        assert_eq!(t.transactions[0].txid, tx(1, true).txid());
        assert_eq!(t.transactions[0].wtxid, tx(1, true).wtxid());
        assert_eq!(t.transactions[0].weight, tx(1, true).weight() as u64);
    }

    #[test]
    fn malformed_entries_name_the_field_or_transaction() {
        let cases: [(&str, Value, &str); 8] = [
            (
                "previousblockhash",
                json!("abcd"),
                "field previousblockhash",
            ),
            ("bits", json!("zz"), "field bits"),
            ("bits", json!("+7fffff0"), "field bits"),
            ("height", json!(1u64 << 40), "field height"),
            ("coinbasevalue", json!(u64::MAX), "field coinbasevalue"),
            (
                "default_witness_commitment",
                json!("6a24aa21a9ed00"),
                "default_witness_commitment",
            ),
            ("version", json!("x"), "malformed"),
            (
                "transactions",
                json!([{"data": "00", "fee": 0, "sigops": 0}]),
                "transaction 0",
            ),
        ];
        for (field, value, expected) in cases {
            let mut v = answer();
            v[field] = value;
            let err = Template::from_value(&v).unwrap_err().to_string();
            assert!(err.contains(expected), "{field}: {err}");
        }
    }

    #[test]
    fn depends_must_name_an_earlier_transaction() {
        for depends in [json!([0]), json!([2]), json!([3])] {
            let mut v = answer();
            v["transactions"][1]["depends"] = depends.clone();
            let err = Template::from_value(&v).unwrap_err();
            assert!(
                matches!(err, TemplateError::Transaction { index: 1, .. }),
                "{depends}: {err}"
            );
        }
    }

    #[test]
    fn an_answer_deserialises_from_the_rpc_body_with_its_verdict() {
        #[derive(Deserialize)]
        struct Envelope {
            result: TemplateAnswer,
        }
        let body = serde_json::to_vec(&json!({"result": answer(), "error": null})).unwrap();
        let got: Envelope = serde_json::from_slice(&body).unwrap();
        assert_eq!(got.result.0, Template::from_value(&answer()));
        let mut refused = answer();
        refused["rules"] = json!(["!signet"]);
        let body = serde_json::to_vec(&json!({"result": refused})).unwrap();
        let got: Envelope = serde_json::from_slice(&body).unwrap();
        assert!(matches!(
            got.result.0,
            Err(TemplateError::UnsupportedRule(_))
        ));
        assert!(serde_json::from_slice::<Envelope>(br#"{"result": 7}"#).is_err());
    }

    #[test]
    fn hashes_parse_in_display_order() {
        let hex = "000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f";
        assert_eq!(parse_hash(hex), Hash256::from_hex(hex).ok());
        assert_eq!(parse_hash(&hex[2..]), None);
        assert_eq!(parse_hash(&format!("{hex}00")), None);
    }

    #[test]
    fn table_hex_decoding_matches_the_hex_crate() {
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(
            decode_hex(hex::encode(&bytes).as_bytes()),
            Some(bytes.clone())
        );
        let upper = hex::encode_upper(&bytes);
        assert_eq!(decode_hex(upper.as_bytes()), Some(bytes));
        for bad in ["0", "0g", "g0", "zz", "0 ", "éé"] {
            assert_eq!(decode_hex(bad.as_bytes()), None, "{bad}");
        }
        assert_eq!(decode_hex(b""), Some(vec![]));
    }

    #[test]
    fn fee_and_sigops_are_required() {
        for field in ["fee", "sigops"] {
            let mut v = answer();
            v["transactions"][0].as_object_mut().unwrap().remove(field);
            let err = Template::from_value(&v).unwrap_err().to_string();
            assert!(err.contains(&format!("no {field}")), "{err}");
        }
    }
}
