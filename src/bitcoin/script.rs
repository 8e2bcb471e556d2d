//! Output script templates, the BIP34 height push, the witness commitment and the
//! legacy signature-operation count.

use super::hash::{Hash256, sha256d};

pub const OP_0: u8 = 0x00;
pub const OP_PUSHDATA1: u8 = 0x4c;
pub const OP_PUSHDATA2: u8 = 0x4d;
pub const OP_PUSHDATA4: u8 = 0x4e;
pub const OP_1: u8 = 0x51;
pub const OP_16: u8 = 0x60;
pub const OP_RETURN: u8 = 0x6a;
pub const OP_DUP: u8 = 0x76;
pub const OP_EQUAL: u8 = 0x87;
pub const OP_EQUALVERIFY: u8 = 0x88;
pub const OP_HASH160: u8 = 0xa9;
pub const OP_CHECKSIG: u8 = 0xac;
pub const OP_CHECKSIGVERIFY: u8 = 0xad;
pub const OP_CHECKMULTISIG: u8 = 0xae;
pub const OP_CHECKMULTISIGVERIFY: u8 = 0xaf;

/// The header of a witness commitment output script: OP_RETURN, push 36, magic.
pub const WITNESS_COMMITMENT_HEADER: [u8; 6] = [0x6a, 0x24, 0xaa, 0x21, 0xa9, 0xed];

/// The standard output templates a payout may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Template {
    /// `21 <33-byte key> ac` or `41 <65-byte key> ac`.
    P2pk,
    P2pkh([u8; 20]),
    P2sh([u8; 20]),
    P2wpkh([u8; 20]),
    P2wsh([u8; 32]),
    P2tr([u8; 32]),
}

impl Template {
    /// Recognises exactly the byte patterns of the templates; anything else is `None`.
    pub fn classify(script: &[u8]) -> Option<Template> {
        match script {
            [0x21, key @ .., OP_CHECKSIG] if key.len() == 33 => Some(Template::P2pk),
            [0x41, key @ .., OP_CHECKSIG] if key.len() == 65 => Some(Template::P2pk),
            [
                OP_DUP,
                OP_HASH160,
                0x14,
                h @ ..,
                OP_EQUALVERIFY,
                OP_CHECKSIG,
            ] if h.len() == 20 => Some(Template::P2pkh(h.try_into().ok()?)),
            [OP_HASH160, 0x14, h @ .., OP_EQUAL] if h.len() == 20 => {
                Some(Template::P2sh(h.try_into().ok()?))
            }
            [OP_0, 0x14, h @ ..] if h.len() == 20 => Some(Template::P2wpkh(h.try_into().ok()?)),
            [OP_0, 0x20, h @ ..] if h.len() == 32 => Some(Template::P2wsh(h.try_into().ok()?)),
            [OP_1, 0x20, h @ ..] if h.len() == 32 => Some(Template::P2tr(h.try_into().ok()?)),
            _ => None,
        }
    }
}

pub fn p2pkh(hash: &[u8; 20]) -> Vec<u8> {
    let mut s = vec![OP_DUP, OP_HASH160, 0x14];
    s.extend_from_slice(hash);
    s.extend_from_slice(&[OP_EQUALVERIFY, OP_CHECKSIG]);
    s
}

pub fn p2sh(hash: &[u8; 20]) -> Vec<u8> {
    let mut s = vec![OP_HASH160, 0x14];
    s.extend_from_slice(hash);
    s.push(OP_EQUAL);
    s
}

pub fn p2pk(pubkey: &[u8]) -> Vec<u8> {
    let mut s = vec![pubkey.len() as u8];
    s.extend_from_slice(pubkey);
    s.push(OP_CHECKSIG);
    s
}

/// A witness program output: `OP_n <push program>`. `version` must be 0..=16 and the
/// program 2..=40 bytes (checked by the caller).
pub fn witness_program(version: u8, program: &[u8]) -> Vec<u8> {
    let mut s = Vec::with_capacity(2 + program.len());
    s.push(if version == 0 {
        OP_0
    } else {
        OP_1 + version - 1
    });
    s.push(program.len() as u8);
    s.extend_from_slice(program);
    s
}

/// Splits a witness program output into its version and program, if it is one.
pub fn parse_witness_program(script: &[u8]) -> Option<(u8, &[u8])> {
    let (&op, rest) = script.split_first()?;
    let version = match op {
        OP_0 => 0,
        OP_1..=OP_16 => op - OP_1 + 1,
        _ => return None,
    };
    let (&len, program) = rest.split_first()?;
    (usize::from(len) == program.len() && (2..=40).contains(&program.len()))
        .then_some((version, program))
}

/// The witness commitment output script for `commitment`.
pub fn witness_commitment_script(commitment: &[u8; 32]) -> Vec<u8> {
    let mut s = WITNESS_COMMITMENT_HEADER.to_vec();
    s.extend_from_slice(commitment);
    s
}

/// The commitment of BIP141: `sha256d(witness merkle root ‖ witness reserved value)`.
pub fn witness_commitment(witness_root: &Hash256, reserved: &[u8; 32]) -> Hash256 {
    let mut buf = [0u8; 64];
    buf[..32].copy_from_slice(&witness_root.0);
    buf[32..].copy_from_slice(reserved);
    sha256d(&buf)
}

/// Whether `script` is a witness commitment output (BIP141: at least 38 bytes starting
/// with the commitment header).
pub fn is_witness_commitment(script: &[u8]) -> bool {
    script.len() >= 38 && script.starts_with(&WITNESS_COMMITMENT_HEADER)
}

/// The BIP34 block height push, exactly as Bitcoin Core's `CScript() << height`.
pub fn height_push(height: u32) -> Vec<u8> {
    match height {
        0 => vec![OP_0],
        1..=16 => vec![OP_1 + (height as u8) - 1],
        _ => {
            let mut num: Vec<u8> = height.to_le_bytes().to_vec();
            while num.last() == Some(&0) {
                num.pop();
            }
            if num.last().is_some_and(|&b| b & 0x80 != 0) {
                num.push(0);
            }
            let mut out = vec![num.len() as u8];
            out.extend_from_slice(&num);
            out
        }
    }
}

/// A script whose pushes run past its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TruncatedPush {
    pub offset: usize,
}

impl std::fmt::Display for TruncatedPush {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "script push at offset {} runs past the end of the script",
            self.offset
        )
    }
}

impl std::error::Error for TruncatedPush {}

/// The legacy signature-operation count as the original counted it: CHECKSIG and
/// CHECKSIGVERIFY count 1, CHECKMULTISIG and CHECKMULTISIGVERIFY count 20; a truncated
/// push is an error.
pub fn legacy_sigop_count(script: &[u8]) -> Result<u32, TruncatedPush> {
    let mut count = 0u32;
    let mut i = 0usize;
    while i < script.len() {
        let op = script[i];
        let start = i;
        i += 1;
        let push_len = match op {
            0x01..=0x4b => usize::from(op),
            OP_PUSHDATA1 | OP_PUSHDATA2 | OP_PUSHDATA4 => {
                let width = match op {
                    OP_PUSHDATA1 => 1,
                    OP_PUSHDATA2 => 2,
                    _ => 4,
                };
                let len_bytes = script
                    .get(i..i + width)
                    .ok_or(TruncatedPush { offset: start })?;
                i += width;
                len_bytes
                    .iter()
                    .rev()
                    .fold(0usize, |acc, &b| (acc << 8) | usize::from(b))
            }
            OP_CHECKSIG | OP_CHECKSIGVERIFY => {
                count += 1;
                0
            }
            OP_CHECKMULTISIG | OP_CHECKMULTISIGVERIFY => {
                count += 20;
                0
            }
            _ => 0,
        };
        if push_len > script.len() - i {
            return Err(TruncatedPush { offset: start });
        }
        i += push_len;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn height_push_matches_bitcoin_core_for_the_documented_examples() {
        let cases: &[(u32, &str)] = &[
            (0, "00"),
            (1, "51"),
            (16, "60"),
            (17, "0111"),
            (127, "017f"),
            (128, "028000"),
            (255, "02ff00"),
            (256, "020001"),
            (65535, "03ffff00"),
            (8388607, "03ffff7f"),
            (8388608, "0400008000"),
        ];
        for (height, hex_push) in cases {
            assert_eq!(
                hex::encode(height_push(*height)),
                *hex_push,
                "height {height}"
            );
        }
    }

    #[test]
    fn templates_are_recognised_byte_for_byte() {
        let h20 = [7u8; 20];
        let h32 = [9u8; 32];
        assert_eq!(Template::classify(&p2pkh(&h20)), Some(Template::P2pkh(h20)));
        assert_eq!(Template::classify(&p2sh(&h20)), Some(Template::P2sh(h20)));
        assert_eq!(
            Template::classify(&witness_program(0, &h20)),
            Some(Template::P2wpkh(h20))
        );
        assert_eq!(
            Template::classify(&witness_program(0, &h32)),
            Some(Template::P2wsh(h32))
        );
        assert_eq!(
            Template::classify(&witness_program(1, &h32)),
            Some(Template::P2tr(h32))
        );
        assert_eq!(Template::classify(&p2pk(&[2; 33])), Some(Template::P2pk));
        assert_eq!(Template::classify(&p2pk(&[4; 65])), Some(Template::P2pk));
        // Near misses.
        assert_eq!(Template::classify(&p2pk(&[2; 34])), None);
        assert_eq!(Template::classify(&witness_program(1, &h20)), None);
        assert_eq!(Template::classify(&witness_commitment_script(&h32)), None);
        let mut long = p2pkh(&h20);
        long.push(0);
        assert_eq!(Template::classify(&long), None);
    }

    #[test]
    fn witness_commitment_script_is_recognised() {
        let s = witness_commitment_script(&[1; 32]);
        assert_eq!(s.len(), 38);
        assert!(is_witness_commitment(&s));
        assert!(!is_witness_commitment(&s[..37]));
    }

    #[test]
    fn sigops_count_checksig_one_and_multisig_twenty() {
        assert_eq!(legacy_sigop_count(&p2pkh(&[0; 20])), Ok(1));
        assert_eq!(legacy_sigop_count(&p2pk(&[4; 65])), Ok(1));
        assert_eq!(
            legacy_sigop_count(&[OP_CHECKMULTISIG, OP_CHECKSIGVERIFY]),
            Ok(21)
        );
        // A 0xac inside a push is data, not an opcode.
        assert_eq!(legacy_sigop_count(&[0x02, OP_CHECKSIG, OP_CHECKSIG]), Ok(0));
        assert_eq!(
            legacy_sigop_count(&[OP_PUSHDATA1, 1, OP_CHECKSIG, OP_CHECKSIG]),
            Ok(1)
        );
    }

    #[test]
    fn truncated_pushes_are_errors() {
        assert!(legacy_sigop_count(&[0x05, 1, 2]).is_err());
        assert!(legacy_sigop_count(&[OP_PUSHDATA2, 1]).is_err());
        assert!(legacy_sigop_count(&[OP_PUSHDATA4, 0xff, 0xff, 0xff, 0xff]).is_err());
    }

    #[test]
    fn witness_program_parses_back() {
        let s = witness_program(16, &[1, 2]);
        assert_eq!(parse_witness_program(&s), Some((16, &[1u8, 2][..])));
        assert_eq!(parse_witness_program(&[OP_0, 1, 5]), None);
    }
}
