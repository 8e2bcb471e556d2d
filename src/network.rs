//! P2Pool networks: the built-in ones of `modern-rules.md` and custom ones from a JSON
//! file. A network fixes the rule set, the chain parameters, the ports, the 8-byte
//! message PREFIX and the coinbase IDENTIFIER, and the Bitcoin chain it mines on.

use std::fmt;
use std::path::Path;

use ruint::aliases::U256;
use serde::Deserialize;

use crate::bitcoin::chain::ChainParams;
use crate::bitcoin::frame::Framing;
use crate::bitcoin::hash::sha256;
use crate::bitcoin::target::u256_from_be_hex;

/// Which share format and consensus rules a network runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleSet {
    /// R's formats and rules (plus the three fixes of modern-rules.md).
    Legacy2011,
    /// Legacy plus the changes that mine on today's Bitcoin.
    Modern,
}

impl RuleSet {
    pub fn name(self) -> &'static str {
        match self {
            RuleSet::Legacy2011 => "legacy-2011",
            RuleSet::Modern => "modern",
        }
    }

    /// Largest frame payload.
    pub fn max_payload(self) -> usize {
        match self {
            RuleSet::Legacy2011 => 1_000_000,
            RuleSet::Modern => 8_000_000,
        }
    }

    /// Most payout outputs in a generation transaction.
    pub fn max_payout_outputs(self) -> usize {
        match self {
            RuleSet::Legacy2011 => 4000,
            RuleSet::Modern => 200,
        }
    }

    /// Longest `sub_version` in a `version` message.
    pub fn max_sub_version(self) -> usize {
        match self {
            RuleSet::Legacy2011 => 512,
            RuleSet::Modern => 256,
        }
    }

    /// Whether peer addresses must be IPv4-mapped.
    pub fn ipv4_only(self) -> bool {
        self == RuleSet::Legacy2011
    }
}

/// Where the payout window ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightCap {
    /// At SPREAD × the expected work of a block (R).
    Block,
    /// Only at min(height, CHAIN_LENGTH) shares.
    None,
}

/// Everything that distinguishes one P2Pool network from another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    pub name: String,
    pub rules: RuleSet,
    /// Target seconds between shares.
    pub share_period: u32,
    /// Shares in the payout window.
    pub chain_length: u32,
    pub target_lookbehind: u32,
    pub spread: u32,
    pub weight_cap: WeightCap,
    /// The easiest share target.
    pub max_target: U256,
    /// The donation output script; `None` means no donation.
    pub donation_script: Option<Vec<u8>>,
    /// Whether miners are served only once the node has peers and the chain.
    pub persist: bool,
    pub worker_port: u16,
    pub p2p_port: u16,
    pub stratum_port: u16,
    pub prefix: [u8; 8],
    pub identifier: [u8; 8],
    pub bootstrap: Vec<String>,
    pub bitcoin: ChainParams,
}

/// The names of the built-in networks.
pub const BUILT_IN: [&str; 5] = ["bitcoin", "testnet", "testnet4", "signet", "regtest"];

/// First 8 bytes of SHA-256(`label` + `name`).
fn derive8(label: &str, name: &str) -> [u8; 8] {
    let digest = sha256(format!("{label}{name}").as_bytes());
    let mut out = [0u8; 8];
    out.copy_from_slice(&digest[..8]);
    out
}

impl Network {
    /// A built-in network by name (`testnet3` is accepted for `testnet`).
    pub fn built_in(name: &str) -> Option<Network> {
        let (name, chain, ports, max_target_shift, weight_cap, persist) = match name {
            "bitcoin" | "mainnet" => (
                "bitcoin",
                ChainParams::main(),
                9332,
                32,
                WeightCap::Block,
                true,
            ),
            "testnet" | "testnet3" => (
                "testnet",
                ChainParams::testnet3(),
                19332,
                20,
                WeightCap::Block,
                false,
            ),
            "testnet4" => (
                "testnet4",
                ChainParams::testnet4(),
                29332,
                20,
                WeightCap::Block,
                false,
            ),
            "signet" => (
                "signet",
                ChainParams::signet(),
                39332,
                20,
                WeightCap::Block,
                false,
            ),
            "regtest" => (
                "regtest",
                ChainParams::regtest(),
                49332,
                8,
                WeightCap::None,
                false,
            ),
            _ => return None,
        };
        Some(Network {
            name: name.to_string(),
            rules: RuleSet::Modern,
            share_period: 5,
            chain_length: 17280,
            target_lookbehind: 200,
            spread: 3,
            weight_cap,
            max_target: U256::MAX >> max_target_shift,
            donation_script: None,
            persist,
            worker_port: ports,
            p2p_port: ports + 1,
            stratum_port: ports + 2,
            prefix: derive8("p2pool modern v1 prefix ", name),
            identifier: derive8("p2pool modern v1 identifier ", name),
            bootstrap: Vec::new(),
            bitcoin: chain,
        })
    }

    /// The framing of this network's P2Pool messages.
    pub fn framing(&self) -> Framing {
        Framing::p2pool(self.prefix, self.rules.max_payload())
    }

    /// Reads a custom network file.
    pub fn from_file(path: &Path) -> Result<Network, NetworkError> {
        let text = std::fs::read_to_string(path).map_err(|e| NetworkError::Read {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let default_name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("custom");
        Network::from_json(&text, default_name)
    }

    /// Parses a custom network; `default_name` names it when the file does not.
    pub fn from_json(text: &str, default_name: &str) -> Result<Network, NetworkError> {
        let file: NetworkFile =
            serde_json::from_str(text).map_err(|e| NetworkError::Json(e.to_string()))?;
        file.into_network(default_name)
    }
}

/// A custom network file. Keys use the original's parameter names, so the `params`
/// object of a vector file is accepted as it is (add `"RULES": "legacy-2011"` for R's
/// rule set; the default is `modern`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NetworkFile {
    #[serde(rename = "NAME")]
    name: Option<String>,
    #[serde(rename = "RULES")]
    rules: Option<String>,
    #[serde(rename = "SHARE_PERIOD")]
    share_period: u32,
    #[serde(rename = "CHAIN_LENGTH")]
    chain_length: u32,
    #[serde(rename = "TARGET_LOOKBEHIND")]
    target_lookbehind: u32,
    #[serde(rename = "SPREAD")]
    spread: u32,
    #[serde(rename = "MAX_TARGET")]
    max_target: String,
    #[serde(rename = "IDENTIFIER")]
    identifier: String,
    #[serde(rename = "PREFIX")]
    prefix: String,
    /// The donation script, hex; absent or null for none.
    #[serde(rename = "SCRIPT", default)]
    script: Option<String>,
    #[serde(rename = "WEIGHT_CAP")]
    weight_cap: Option<String>,
    #[serde(rename = "PERSIST", default)]
    persist: bool,
    #[serde(rename = "WORKER_PORT")]
    worker_port: Option<u16>,
    #[serde(rename = "P2P_PORT")]
    p2p_port: Option<u16>,
    #[serde(rename = "STRATUM_PORT")]
    stratum_port: Option<u16>,
    #[serde(rename = "BOOTSTRAP_ADDRS", default)]
    bootstrap: Vec<String>,
    /// The Bitcoin chain: a name (`main`, `test`, `testnet4`, `signet`, `regtest`) or an
    /// object with `chain` and any field of `ChainParams` to override.
    #[serde(rename = "BITCOIN")]
    bitcoin: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChainOverride {
    chain: String,
    p2pkh_prefix: Option<u8>,
    p2sh_prefix: Option<u8>,
    hrp: Option<String>,
    rpc_port: Option<u16>,
    p2p_port: Option<u16>,
    magic: Option<String>,
    cookie_dir: Option<String>,
}

fn hex_array<const N: usize>(field: &'static str, s: &str) -> Result<[u8; N], NetworkError> {
    let mut out = [0u8; N];
    hex::decode_to_slice(s, &mut out).map_err(|_| NetworkError::Field {
        field,
        reason: format!("expected {} hex digits", 2 * N),
    })?;
    Ok(out)
}

fn chain_params(value: Option<serde_json::Value>) -> Result<ChainParams, NetworkError> {
    let unknown = |name: &str| NetworkError::Field {
        field: "BITCOIN",
        reason: format!("unknown bitcoin chain {name:?}"),
    };
    match value {
        None => Ok(ChainParams::main()),
        Some(serde_json::Value::String(name)) => {
            ChainParams::by_name(&name).ok_or_else(|| unknown(&name))
        }
        Some(v) => {
            let o: ChainOverride = serde_json::from_value(v).map_err(|e| NetworkError::Field {
                field: "BITCOIN",
                reason: e.to_string(),
            })?;
            let mut p = ChainParams::by_name(&o.chain).ok_or_else(|| unknown(&o.chain))?;
            p.p2pkh_prefix = o.p2pkh_prefix.unwrap_or(p.p2pkh_prefix);
            p.p2sh_prefix = o.p2sh_prefix.unwrap_or(p.p2sh_prefix);
            p.hrp = o.hrp.map(|h| h.to_lowercase()).unwrap_or(p.hrp);
            p.rpc_port = o.rpc_port.unwrap_or(p.rpc_port);
            p.p2p_port = o.p2p_port.unwrap_or(p.p2p_port);
            if let Some(m) = o.magic {
                p.magic = hex_array::<4>("BITCOIN.magic", &m)?;
            }
            p.cookie_dir = o.cookie_dir.unwrap_or(p.cookie_dir);
            Ok(p)
        }
    }
}

impl NetworkFile {
    fn into_network(self, default_name: &str) -> Result<Network, NetworkError> {
        let field = |field: &'static str, reason: &str| NetworkError::Field {
            field,
            reason: reason.to_string(),
        };
        let rules = match self.rules.as_deref() {
            None | Some("modern") => RuleSet::Modern,
            Some("legacy-2011") => RuleSet::Legacy2011,
            Some(_) => return Err(field("RULES", "must be \"modern\" or \"legacy-2011\"")),
        };
        let weight_cap = match self.weight_cap.as_deref() {
            None | Some("block") => WeightCap::Block,
            Some("none") => WeightCap::None,
            Some(_) => return Err(field("WEIGHT_CAP", "must be \"block\" or \"none\"")),
        };
        let max_target = u256_from_be_hex(&self.max_target)
            .filter(|t| !t.is_zero())
            .ok_or_else(|| {
                field(
                    "MAX_TARGET",
                    "must be a non-zero 256-bit big-endian hex number",
                )
            })?;
        if self.share_period == 0 {
            return Err(field("SHARE_PERIOD", "must be at least 1 second"));
        }
        if self.chain_length == 0 {
            return Err(field("CHAIN_LENGTH", "must be at least 1"));
        }
        if self.target_lookbehind < 2 || self.target_lookbehind > self.chain_length {
            return Err(field(
                "TARGET_LOOKBEHIND",
                "must be between 2 and CHAIN_LENGTH",
            ));
        }
        if self.spread == 0 {
            return Err(field("SPREAD", "must be at least 1"));
        }
        let donation_script = match self.script {
            None => None,
            Some(s) => {
                let bytes = hex::decode(&s).map_err(|_| field("SCRIPT", "must be hex or null"))?;
                if bytes.is_empty() || bytes.len() > 100 {
                    return Err(field("SCRIPT", "must be 1 to 100 bytes"));
                }
                Some(bytes)
            }
        };
        let bitcoin = chain_params(self.bitcoin)?;
        let name = self.name.unwrap_or_else(|| default_name.to_string());
        let base = BUILT_IN
            .iter()
            .filter_map(|n| Network::built_in(n))
            .find(|n| n.bitcoin.name == bitcoin.name)
            .map(|n| (n.worker_port, n.p2p_port, n.stratum_port))
            .unwrap_or((9332, 9333, 9334));
        Ok(Network {
            name,
            rules,
            share_period: self.share_period,
            chain_length: self.chain_length,
            target_lookbehind: self.target_lookbehind,
            spread: self.spread,
            weight_cap,
            max_target,
            donation_script,
            persist: self.persist,
            worker_port: self.worker_port.unwrap_or(base.0),
            p2p_port: self.p2p_port.unwrap_or(base.1),
            stratum_port: self.stratum_port.unwrap_or(base.2),
            prefix: hex_array::<8>("PREFIX", &self.prefix)?,
            identifier: hex_array::<8>("IDENTIFIER", &self.identifier)?,
            bootstrap: self.bootstrap,
            bitcoin,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkError {
    Read { path: String, reason: String },
    Json(String),
    Field { field: &'static str, reason: String },
}

impl fmt::Display for NetworkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetworkError::Read { path, reason } => {
                write!(f, "cannot read network file {path}: {reason}")
            }
            NetworkError::Json(e) => write!(f, "invalid network file: {e}"),
            NetworkError::Field { field, reason } => {
                write!(f, "invalid network file: {field} {reason}")
            }
        }
    }
}

impl std::error::Error for NetworkError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_networks_follow_the_table() {
        let main = Network::built_in("bitcoin").unwrap();
        assert_eq!(
            (main.worker_port, main.p2p_port, main.stratum_port),
            (9332, 9333, 9334)
        );
        assert_eq!(main.max_target, U256::MAX >> 32);
        assert!(main.persist);
        assert_eq!(main.weight_cap, WeightCap::Block);
        let reg = Network::built_in("regtest").unwrap();
        assert_eq!(
            (reg.worker_port, reg.p2p_port, reg.stratum_port),
            (49332, 49333, 49334)
        );
        assert_eq!(reg.weight_cap, WeightCap::None);
        assert_eq!(reg.max_target, U256::MAX >> 8);
        for name in BUILT_IN {
            let n = Network::built_in(name).unwrap();
            assert_eq!(n.rules, RuleSet::Modern);
            assert_eq!(
                (
                    n.share_period,
                    n.chain_length,
                    n.target_lookbehind,
                    n.spread
                ),
                (5, 17280, 200, 3)
            );
            assert_eq!(n.donation_script, None);
            assert!(n.bootstrap.is_empty());
        }
        assert!(Network::built_in("litecoin").is_none());
    }

    #[test]
    fn prefix_and_identifier_are_derived_from_the_name() {
        let n = Network::built_in("testnet4").unwrap();
        assert_eq!(
            n.prefix[..],
            sha256(b"p2pool modern v1 prefix testnet4")[..8]
        );
        assert_eq!(
            n.identifier[..],
            sha256(b"p2pool modern v1 identifier testnet4")[..8]
        );
        let names: std::collections::HashSet<_> = BUILT_IN
            .iter()
            .map(|n| Network::built_in(n).unwrap().prefix)
            .collect();
        assert_eq!(names.len(), BUILT_IN.len());
    }

    #[test]
    fn vector_params_load_as_a_legacy_network() {
        let json = r#"{"CHAIN_LENGTH": 12, "IDENTIFIER": "fc70035c7a81bc6f",
            "MAX_TARGET": "00ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
            "PREFIX": "2472ef181efcd37b", "SCRIPT": "4104ff", "SHARE_PERIOD": 10,
            "SPREAD": 3, "TARGET_LOOKBEHIND": 4, "RULES": "legacy-2011"}"#;
        let n = Network::from_json(json, "vecnet").unwrap();
        assert_eq!(n.name, "vecnet");
        assert_eq!(n.rules, RuleSet::Legacy2011);
        assert_eq!(n.prefix, [0x24, 0x72, 0xef, 0x18, 0x1e, 0xfc, 0xd3, 0x7b]);
        assert_eq!(n.donation_script, Some(vec![0x41, 0x04, 0xff]));
        assert_eq!(n.max_target, U256::MAX >> 8);
        assert_eq!(n.bitcoin, ChainParams::main());
    }

    #[test]
    fn custom_network_can_override_the_bitcoin_side() {
        let json = r#"{"CHAIN_LENGTH": 100, "IDENTIFIER": "0102030405060708",
            "MAX_TARGET": "7fff", "PREFIX": "0807060504030201", "SHARE_PERIOD": 1,
            "SPREAD": 3, "TARGET_LOOKBEHIND": 10, "WEIGHT_CAP": "none", "SCRIPT": null,
            "BITCOIN": {"chain": "regtest", "hrp": "rb", "p2pkh_prefix": 60}}"#;
        let n = Network::from_json(json, "x").unwrap();
        assert_eq!(n.bitcoin.hrp, "rb");
        assert_eq!(n.bitcoin.p2pkh_prefix, 60);
        assert_eq!(n.bitcoin.p2sh_prefix, 196);
        assert_eq!(n.worker_port, 49332);
        assert_eq!(n.weight_cap, WeightCap::None);
        assert_eq!(n.rules, RuleSet::Modern);
    }

    #[test]
    fn bad_network_files_name_the_field() {
        let base = r#""CHAIN_LENGTH": 12, "IDENTIFIER": "fc70035c7a81bc6f",
            "MAX_TARGET": "ff", "PREFIX": "2472ef181efcd37b", "SHARE_PERIOD": 10, "SPREAD": 3"#;
        let err =
            Network::from_json(&format!("{{{base}, \"TARGET_LOOKBEHIND\": 13}}"), "x").unwrap_err();
        assert!(err.to_string().contains("TARGET_LOOKBEHIND"), "{err}");
        let err = Network::from_json(
            &format!("{{{base}, \"TARGET_LOOKBEHIND\": 4, \"TYPO\": 1}}"),
            "x",
        )
        .unwrap_err();
        assert!(err.to_string().contains("TYPO"), "{err}");
        let err = Network::from_json(
            &format!("{{{base}, \"TARGET_LOOKBEHIND\": 4, \"BITCOIN\": \"dogecoin\"}}"),
            "x",
        )
        .unwrap_err();
        assert!(err.to_string().contains("dogecoin"), "{err}");
    }
}
