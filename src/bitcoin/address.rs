//! Addresses: base58check P2PKH/P2SH and bech32/bech32m segwit, to and from
//! scriptPubKey, checked against the chain.

use std::fmt;

use bech32::{Fe32, Hrp};

use super::chain::ChainParams;
use super::hash::sha256d;
use super::script::{self, Template};

/// Longer strings are refused before decoding (the longest valid address is 90).
pub const MAX_ADDRESS_LEN: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddressError {
    TooLong {
        len: usize,
    },
    /// Neither valid base58check nor a valid segwit address.
    Malformed {
        address: String,
        reason: String,
    },
    /// Valid, but for another chain.
    WrongNetwork {
        address: String,
        expected: String,
        found: Option<String>,
    },
    /// A script with no address form.
    NoAddressForm,
}

impl fmt::Display for AddressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddressError::TooLong { len } => {
                write!(
                    f,
                    "address too long: {len} characters (at most {MAX_ADDRESS_LEN})"
                )
            }
            AddressError::Malformed { address, reason } => {
                write!(f, "invalid address {address:?}: {reason}")
            }
            AddressError::WrongNetwork {
                address,
                expected,
                found: Some(found),
            } => write!(
                f,
                "address {address} is for bitcoin {found}, but this node runs on bitcoin {expected}"
            ),
            AddressError::WrongNetwork {
                address,
                expected,
                found: None,
            } => {
                write!(f, "address {address} is not for bitcoin {expected}")
            }
            AddressError::NoAddressForm => write!(f, "script has no address form"),
        }
    }
}

impl std::error::Error for AddressError {}

const BASE58_ALPHABET: &[u8; 58] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";

fn base58_encode(data: &[u8]) -> String {
    let zeros = data.iter().take_while(|&&b| b == 0).count();
    // Base-58 digits, least significant first.
    let mut digits: Vec<u8> = Vec::with_capacity(data.len() * 138 / 100 + 1);
    for &byte in &data[zeros..] {
        let mut carry = u32::from(byte);
        for d in digits.iter_mut() {
            carry += u32::from(*d) << 8;
            *d = (carry % 58) as u8;
            carry /= 58;
        }
        while carry > 0 {
            digits.push((carry % 58) as u8);
            carry /= 58;
        }
    }
    let mut out = String::with_capacity(zeros + digits.len());
    out.extend(std::iter::repeat_n('1', zeros));
    out.extend(
        digits
            .iter()
            .rev()
            .map(|&d| BASE58_ALPHABET[usize::from(d)] as char),
    );
    out
}

fn base58_decode(s: &str) -> Option<Vec<u8>> {
    let zeros = s.bytes().take_while(|&b| b == b'1').count();
    let mut bytes: Vec<u8> = Vec::with_capacity(s.len());
    for c in s.bytes().skip(zeros) {
        let mut carry = BASE58_ALPHABET.iter().position(|&a| a == c)? as u32;
        for b in bytes.iter_mut() {
            carry += u32::from(*b) * 58;
            *b = carry as u8;
            carry >>= 8;
        }
        while carry > 0 {
            bytes.push(carry as u8);
            carry >>= 8;
        }
    }
    let mut out = vec![0u8; zeros];
    out.extend(bytes.iter().rev());
    Some(out)
}

/// Base58 with a 4-byte sha256d checksum.
pub fn base58check_encode(payload: &[u8]) -> String {
    let mut data = payload.to_vec();
    data.extend_from_slice(&sha256d(payload).0[..4]);
    base58_encode(&data)
}

/// The payload of a base58check string, if the string and checksum are valid.
pub fn base58check_decode(s: &str) -> Option<Vec<u8>> {
    let data = base58_decode(s)?;
    let split = data.len().checked_sub(4)?;
    let (payload, check) = data.split_at(split);
    (sha256d(payload).0[..4] == *check).then(|| payload.to_vec())
}

/// The address of `script` on `chain`, for the templates that have one (all but P2PK).
pub fn from_script(script: &[u8], chain: &ChainParams) -> Result<String, AddressError> {
    let b58 = |prefix: u8, h: &[u8; 20]| {
        let mut payload = vec![prefix];
        payload.extend_from_slice(h);
        base58check_encode(&payload)
    };
    match Template::classify(script) {
        Some(Template::P2pkh(h)) => Ok(b58(chain.p2pkh_prefix, &h)),
        Some(Template::P2sh(h)) => Ok(b58(chain.p2sh_prefix, &h)),
        _ => {
            let (version, program) =
                script::parse_witness_program(script).ok_or(AddressError::NoAddressForm)?;
            let hrp = Hrp::parse(&chain.hrp).map_err(|_| AddressError::NoAddressForm)?;
            let version = Fe32::try_from(version).map_err(|_| AddressError::NoAddressForm)?;
            bech32::segwit::encode(hrp, version, program).map_err(|_| AddressError::NoAddressForm)
        }
    }
}

/// The scriptPubKey paid by `address`, which must belong to `chain`.
pub fn to_script(address: &str, chain: &ChainParams) -> Result<Vec<u8>, AddressError> {
    if address.len() > MAX_ADDRESS_LEN {
        return Err(AddressError::TooLong { len: address.len() });
    }
    let wrong_network = |found: Option<String>| AddressError::WrongNetwork {
        address: address.to_string(),
        expected: chain.name.clone(),
        found,
    };
    if let Some(payload) = base58check_decode(address) {
        let (&version, hash) = payload
            .split_first()
            .ok_or_else(|| malformed(address, "empty"))?;
        let hash: [u8; 20] = hash
            .try_into()
            .map_err(|_| malformed(address, "base58 payload is not 21 bytes"))?;
        if version == chain.p2pkh_prefix {
            return Ok(script::p2pkh(&hash));
        }
        if version == chain.p2sh_prefix {
            return Ok(script::p2sh(&hash));
        }
        return match ChainParams::all()
            .into_iter()
            .find(|c| c.p2pkh_prefix == version || c.p2sh_prefix == version)
        {
            Some(other) => Err(wrong_network(Some(other.name))),
            None => Err(AddressError::Malformed {
                address: address.to_string(),
                reason: format!("unknown base58 version byte {version}"),
            }),
        };
    }
    match bech32::segwit::decode(address) {
        Ok((hrp, version, program)) => {
            let hrp = hrp.to_lowercase();
            if hrp != chain.hrp {
                let found = ChainParams::all()
                    .into_iter()
                    .find(|c| c.hrp == hrp)
                    .map(|c| c.name);
                return Err(wrong_network(found));
            }
            Ok(script::witness_program(version.to_u8(), &program))
        }
        Err(e) => Err(AddressError::Malformed {
            address: address.to_string(),
            reason: format!(
                "not base58check, and not a valid segwit address: {}",
                error_chain(&e)
            ),
        }),
    }
}

/// An error and its sources, joined by ": ".
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

fn malformed(address: &str, reason: &str) -> AddressError {
    AddressError::Malformed {
        address: address.to_string(),
        reason: reason.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn genesis_coinbase_address_round_trips() {
        let main = ChainParams::main();
        let script = to_script("1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa", &main).unwrap();
        assert_eq!(
            hex::encode(&script),
            "76a91462e907b15cbf27d5425399ebf6f0fb50ebb88f1888ac"
        );
        assert_eq!(
            from_script(&script, &main).unwrap(),
            "1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa"
        );
    }

    #[test]
    fn testnet_address_on_mainnet_is_a_clear_error() {
        let err =
            to_script("mipcBbFg9gMiCh81Kj8tqqdgoZub1ZJRfn", &ChainParams::main()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "address mipcBbFg9gMiCh81Kj8tqqdgoZub1ZJRfn is for bitcoin test, but this node runs on bitcoin main"
        );
        let err = to_script(
            "tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsx",
            &ChainParams::main(),
        )
        .unwrap_err();
        assert!(matches!(err, AddressError::WrongNetwork { .. }), "{err}");
    }

    #[test]
    fn bad_checksum_is_malformed() {
        let err =
            to_script("1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNb", &ChainParams::main()).unwrap_err();
        assert!(matches!(err, AddressError::Malformed { .. }), "{err}");
    }

    #[test]
    fn segwit_errors_say_why() {
        // BIP173: mixed case.
        let err = to_script(
            "tb1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3q0sL5k7",
            &ChainParams::testnet3(),
        )
        .unwrap_err();
        assert!(err.to_string().to_lowercase().contains("case"), "{err}");
    }

    #[test]
    fn unknown_base58_version_byte_is_malformed_not_wrong_network() {
        let mut payload = vec![0xd4];
        payload.extend_from_slice(&[1; 20]);
        let err = to_script(&base58check_encode(&payload), &ChainParams::main()).unwrap_err();
        assert!(
            err.to_string().contains("unknown base58 version byte 212"),
            "{err}"
        );
    }

    #[test]
    fn overlong_input_is_refused_before_decoding() {
        let long = "1".repeat(MAX_ADDRESS_LEN + 1);
        assert_eq!(
            to_script(&long, &ChainParams::main()),
            Err(AddressError::TooLong {
                len: MAX_ADDRESS_LEN + 1
            })
        );
    }

    #[test]
    fn p2pk_has_no_address_form() {
        let s = script::p2pk(&[2; 33]);
        assert_eq!(
            from_script(&s, &ChainParams::main()),
            Err(AddressError::NoAddressForm)
        );
    }

    #[test]
    fn base58_keeps_leading_zero_bytes() {
        let data = [0u8, 0, 1, 2, 3];
        assert_eq!(base58_decode(&base58_encode(&data)).unwrap(), data);
        assert_eq!(base58_encode(&[]), "");
    }
}
