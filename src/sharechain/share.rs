//! Shares on the wire: share_data, share_info, share1a and share1b, and their hashes.
//!
//! A share is a block header whose coinbase commits to `share_info`. The share's ID is
//! sha256d of its share1a encoding; its proof-of-work hash is the header's block hash.
//! The generation transaction itself is never sent: it is regenerated from share_info
//! and the chain.

use std::fmt;

use ruint::aliases::U256;

use crate::bitcoin::block::BlockHeader;
use crate::bitcoin::encode::{self, Decode, Encode, Reader, WriteExt};
use crate::bitcoin::hash::{Hash256, sha256d};
use crate::bitcoin::merkle::{self, BranchStep};
use crate::bitcoin::script::{self, Template};
use crate::bitcoin::target::Bits;
use crate::bitcoin::template::MAX_MONEY;
use crate::bitcoin::tx::Transaction;
use crate::network::{Network, RuleSet};

/// Longest `share_data.nonce` (consensus, §6.1).
pub const MAX_NONCE_LEN: usize = 100;
/// Longest payout script (consensus, §6.1).
pub const MAX_NEW_SCRIPT_LEN: usize = 100;
/// Most merkle branch steps in a share1a (consensus, §6.1).
pub const MAX_MERKLE_BRANCH_LEN: usize = 16;
/// The smallest transaction encoding, for bounding share1b transaction counts.
const MIN_TX_SIZE: usize = 10;

/// The part of share_info carried in the coinbase script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareData {
    /// The parent share; `None` at genesis (32 zero bytes on the wire).
    pub previous_share_hash: Option<Hash256>,
    /// This share's share-chain target.
    pub target: Bits,
    pub nonce: Vec<u8>,
}

/// Fields the modern rule set adds after `subsidy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModernFields {
    /// The template's block height.
    pub block_height: u32,
    /// The witness commitment; all zeros when there is none.
    pub witness_commitment: [u8; 32],
}

impl ModernFields {
    pub fn commitment(&self) -> Option<[u8; 32]> {
        (self.witness_commitment != [0; 32]).then_some(self.witness_commitment)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareInfo {
    pub share_data: ShareData,
    /// The payout script of the share's creator.
    pub new_script: Vec<u8>,
    /// Total value of the generation transaction in satoshis, as claimed.
    pub subsidy: u64,
    /// Present exactly on modern networks.
    pub modern: Option<ModernFields>,
}

impl Encode for ShareData {
    fn encode_to(&self, out: &mut Vec<u8>) {
        self.previous_share_hash
            .unwrap_or(Hash256::ZERO)
            .encode_to(out);
        out.put_u32_le(self.target.0);
        out.put_var_bytes(&self.nonce);
    }
}

impl Decode for ShareData {
    const NAME: &'static str = "share_data";
    fn decode_from(r: &mut Reader<'_>) -> encode::Result<Self> {
        Ok(ShareData {
            previous_share_hash: Hash256::decode_from(r)?.non_zero(),
            target: Bits(r.u32_le("share target")?),
            nonce: r.var_bytes("share nonce", MAX_NONCE_LEN)?.to_vec(),
        })
    }
}

impl ShareInfo {
    pub fn decode_from(r: &mut Reader<'_>, rules: RuleSet) -> encode::Result<Self> {
        let share_data = ShareData::decode_from(r)?;
        let new_script = r
            .var_bytes("share payout script", MAX_NEW_SCRIPT_LEN)?
            .to_vec();
        let subsidy = r.u64_le("share subsidy")?;
        let modern = match rules {
            RuleSet::Legacy2011 => None,
            RuleSet::Modern => Some(ModernFields {
                block_height: r.u32_le("share block height")?,
                witness_commitment: r.array("share witness commitment")?,
            }),
        };
        Ok(ShareInfo {
            share_data,
            new_script,
            subsidy,
            modern,
        })
    }
}

impl Encode for ShareInfo {
    fn encode_to(&self, out: &mut Vec<u8>) {
        self.share_data.encode_to(out);
        out.put_var_bytes(&self.new_script);
        out.put_u64_le(self.subsidy);
        if let Some(m) = &self.modern {
            out.put_u32_le(m.block_height);
            out.extend_from_slice(&m.witness_commitment);
        }
    }
}

/// A share with the merkle branch of its generation transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share1a {
    pub header: BlockHeader,
    pub info: ShareInfo,
    pub merkle_branch: Vec<BranchStep>,
}

/// A block share: the header, share_info and every other transaction of the block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share1b {
    pub header: BlockHeader,
    pub info: ShareInfo,
    pub other_txs: Vec<Transaction>,
}

impl Share1a {
    pub fn decode_from(r: &mut Reader<'_>, rules: RuleSet) -> encode::Result<Self> {
        let header = BlockHeader::decode_from(r)?;
        let info = ShareInfo::decode_from(r, rules)?;
        let n = r.count("merkle branch", 33)?;
        if n > MAX_MERKLE_BRANCH_LEN {
            return Err(encode::Error::Oversized {
                what: "merkle branch",
                len: n as u64,
                max: MAX_MERKLE_BRANCH_LEN as u64,
            });
        }
        let mut merkle_branch = Vec::with_capacity(n);
        for _ in 0..n {
            merkle_branch.push(BranchStep::decode_from(r)?);
        }
        Ok(Share1a {
            header,
            info,
            merkle_branch,
        })
    }

    pub fn from_bytes(bytes: &[u8], rules: RuleSet) -> encode::Result<Self> {
        let mut r = Reader::new(bytes);
        let share = Share1a::decode_from(&mut r, rules)?;
        r.finish("share1a")?;
        Ok(share)
    }

    /// The share's ID: sha256d of its share1a encoding.
    pub fn hash(&self) -> Hash256 {
        sha256d(&self.to_bytes())
    }

    /// The proof-of-work hash: the header's block hash.
    pub fn pow_hash(&self) -> Hash256 {
        self.header.hash()
    }
}

impl Encode for Share1a {
    fn encode_to(&self, out: &mut Vec<u8>) {
        self.header.encode_to(out);
        self.info.encode_to(out);
        out.put_compact_size(self.merkle_branch.len() as u64);
        for step in &self.merkle_branch {
            step.encode_to(out);
        }
    }
}

impl Share1b {
    /// Reads a share1b; its transactions may use the witness form only on modern networks.
    pub fn decode_from(r: &mut Reader<'_>, rules: RuleSet) -> encode::Result<Self> {
        let header = BlockHeader::decode_from(r)?;
        let info = ShareInfo::decode_from(r, rules)?;
        let other_txs = r.list("share1b transactions", MIN_TX_SIZE, |r| {
            Transaction::decode_with(r, rules == RuleSet::Modern)
        })?;
        Ok(Share1b {
            header,
            info,
            other_txs,
        })
    }

    pub fn from_bytes(bytes: &[u8], rules: RuleSet) -> encode::Result<Self> {
        let mut r = Reader::new(bytes);
        let share = Share1b::decode_from(&mut r, rules)?;
        r.finish("share1b")?;
        Ok(share)
    }

    /// The merkle branch of position 0 among `[gentx] + other_txs`.
    pub fn merkle_branch(&self) -> Vec<BranchStep> {
        let mut txids = Vec::with_capacity(self.other_txs.len() + 1);
        txids.push(Hash256::ZERO); // the generation transaction's place; its value is unused
        txids.extend(self.other_txs.iter().map(Transaction::txid));
        merkle::branch(&txids, 0)
    }

    /// The share1a form, from which the share's ID is computed.
    pub fn to_share1a(&self) -> Share1a {
        Share1a {
            header: self.header,
            info: self.info.clone(),
            merkle_branch: self.merkle_branch(),
        }
    }

    pub fn hash(&self) -> Hash256 {
        self.to_share1a().hash()
    }

    pub fn pow_hash(&self) -> Hash256 {
        self.header.hash()
    }
}

impl Encode for Share1b {
    fn encode_to(&self, out: &mut Vec<u8>) {
        self.header.encode_to(out);
        self.info.encode_to(out);
        out.put_compact_size(self.other_txs.len() as u64);
        for tx in &self.other_txs {
            tx.encode_to(out);
        }
    }
}

/// A share that passed the stateless checks (§6.1 and the modern payout-script rule):
/// what the tracker holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    pub hash: Hash256,
    pub pow_hash: Hash256,
    pub header: BlockHeader,
    pub info: ShareInfo,
    pub merkle_branch: Vec<BranchStep>,
    /// The block's other transactions, for a block share received as share1b.
    pub other_txs: Option<Vec<Transaction>>,
    /// The claimed share target, decoded.
    pub target: U256,
}

/// Why a share failed its stateless checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShareError {
    /// A share1a that is a block, or a share1b that is not: the sender misbehaves.
    WrongType {
        hash: Hash256,
        is_block: bool,
    },
    MerkleBranchTooLong {
        hash: Hash256,
        len: usize,
    },
    NotEnoughWork {
        hash: Hash256,
    },
    /// R's rule: the payout script must parse and have at most one sig-op.
    PayoutScriptSigops {
        hash: Hash256,
    },
    /// Modern rule: the payout script must be one of the standard templates.
    PayoutScriptTemplate {
        hash: Hash256,
    },
    /// A share of the other rule set (modern fields missing or present).
    WrongRuleSet {
        hash: Hash256,
    },
    /// Fix 4: the claimed share target is easier than the network's MAX_TARGET.
    TargetAboveMax {
        hash: Hash256,
        bits: Bits,
    },
    /// The subsidy is more than all the bitcoin there will ever be.
    SubsidyAboveMaxMoney {
        hash: Hash256,
        subsidy: u64,
    },
}

impl fmt::Display for ShareError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShareError::WrongType {
                hash,
                is_block: true,
            } => {
                write!(
                    f,
                    "share {hash} is a block but was sent without its transactions"
                )
            }
            ShareError::WrongType {
                hash,
                is_block: false,
            } => {
                write!(
                    f,
                    "share {hash} was sent as a block but does not meet the block target"
                )
            }
            ShareError::MerkleBranchTooLong { hash, len } => write!(
                f,
                "share {hash} has a merkle branch of {len} steps (at most {MAX_MERKLE_BRANCH_LEN})"
            ),
            ShareError::NotEnoughWork { hash } => {
                write!(f, "share {hash} does not meet its own share target")
            }
            ShareError::PayoutScriptSigops { hash } => {
                write!(
                    f,
                    "share {hash} has a payout script with more than one sig-op or a bad push"
                )
            }
            ShareError::PayoutScriptTemplate { hash } => {
                write!(
                    f,
                    "share {hash} pays to a script that is not a standard payout template"
                )
            }
            ShareError::WrongRuleSet { hash } => {
                write!(f, "share {hash} is not in this network's share format")
            }
            ShareError::TargetAboveMax { hash, bits } => write!(
                f,
                "share {hash} claims target bits {bits}, easier than the network's maximum"
            ),
            ShareError::SubsidyAboveMaxMoney { hash, subsidy } => write!(
                f,
                "share {hash} claims a subsidy of {subsidy} satoshis (at most {MAX_MONEY})"
            ),
        }
    }
}

impl std::error::Error for ShareError {}

impl Share {
    /// A share received without its transactions.
    pub fn from_share1a(a: Share1a, net: &Network) -> Result<Share, ShareError> {
        let share = Share::build(a.header, a.info, a.merkle_branch, None, net)?;
        if share.is_block() {
            return Err(ShareError::WrongType {
                hash: share.hash,
                is_block: true,
            });
        }
        Ok(share)
    }

    /// A block share received with its transactions.
    pub fn from_share1b(b: Share1b, net: &Network) -> Result<Share, ShareError> {
        let merkle_branch = b.merkle_branch();
        let share = Share::build(b.header, b.info, merkle_branch, Some(b.other_txs), net)?;
        if !share.is_block() {
            return Err(ShareError::WrongType {
                hash: share.hash,
                is_block: false,
            });
        }
        Ok(share)
    }

    fn build(
        header: BlockHeader,
        info: ShareInfo,
        merkle_branch: Vec<BranchStep>,
        other_txs: Option<Vec<Transaction>>,
        net: &Network,
    ) -> Result<Share, ShareError> {
        let a = Share1a {
            header,
            info,
            merkle_branch,
        };
        let hash = a.hash();
        if a.info.modern.is_some() != (net.rules == RuleSet::Modern) {
            return Err(ShareError::WrongRuleSet { hash });
        }
        if a.merkle_branch.len() > MAX_MERKLE_BRANCH_LEN {
            return Err(ShareError::MerkleBranchTooLong {
                hash,
                len: a.merkle_branch.len(),
            });
        }
        // Fix 4 before any hashing of the header: a claimed target above MAX_TARGET
        // (0xff7fffff saturates to 2^256) would let any header pass the work check.
        let target = a.info.share_data.target.to_target();
        if target > net.max_target {
            return Err(ShareError::TargetAboveMax {
                hash,
                bits: a.info.share_data.target,
            });
        }
        if a.info.subsidy > MAX_MONEY {
            return Err(ShareError::SubsidyAboveMaxMoney {
                hash,
                subsidy: a.info.subsidy,
            });
        }
        let pow_hash = a.pow_hash();
        if pow_hash.to_u256() > target {
            return Err(ShareError::NotEnoughWork { hash });
        }
        match script::legacy_sigop_count(&a.info.new_script) {
            Ok(n) if n <= 1 => {}
            _ => return Err(ShareError::PayoutScriptSigops { hash }),
        }
        if net.rules == RuleSet::Modern && Template::classify(&a.info.new_script).is_none() {
            return Err(ShareError::PayoutScriptTemplate { hash });
        }
        Ok(Share {
            hash,
            pow_hash,
            header: a.header,
            info: a.info,
            merkle_branch: a.merkle_branch,
            other_txs,
            target,
        })
    }

    pub fn previous_hash(&self) -> Option<Hash256> {
        self.info.share_data.previous_share_hash
    }

    /// Whether the header also meets its Bitcoin target.
    pub fn is_block(&self) -> bool {
        self.pow_hash.to_u256() <= self.header.bits.to_target()
    }

    pub fn timestamp(&self) -> u32 {
        self.header.timestamp
    }

    /// The share's share1a form.
    pub fn to_share1a(&self) -> Share1a {
        Share1a {
            header: self.header,
            info: self.info.clone(),
            merkle_branch: self.merkle_branch.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bitcoin::tx::{OutPoint, TxIn, TxOut};

    fn info(modern: bool) -> ShareInfo {
        ShareInfo {
            share_data: ShareData {
                previous_share_hash: Some(sha256d(b"parent")),
                target: Bits(0x2000ffff),
                nonce: vec![1, 2, 3],
            },
            new_script: vec![0x00, 0x14, 9, 9],
            subsidy: 5_000_000_000,
            modern: modern.then_some(ModernFields {
                block_height: 500,
                witness_commitment: [7; 32],
            }),
        }
    }

    fn tx(n: u8) -> Transaction {
        Transaction {
            version: 2,
            inputs: vec![TxIn {
                previous_output: OutPoint {
                    txid: sha256d(&[n]),
                    vout: 0,
                },
                script_sig: vec![],
                sequence: 0,
                witness: vec![vec![n; 10]],
            }],
            outputs: vec![TxOut {
                value: 1,
                script_pubkey: vec![0x51],
            }],
            lock_time: 0,
        }
    }

    #[test]
    fn modern_share_info_carries_height_and_commitment_after_subsidy() {
        let legacy = info(false).to_bytes();
        let modern = info(true).to_bytes();
        assert_eq!(modern.len(), legacy.len() + 36);
        assert_eq!(&modern[..legacy.len()], &legacy[..]);
        assert_eq!(
            &modern[legacy.len()..legacy.len() + 4],
            &500u32.to_le_bytes()
        );
    }

    #[test]
    fn share1b_has_the_same_id_as_its_share1a_form() {
        let header = BlockHeader {
            version: 0x2000_0000,
            previous_block: sha256d(b"block"),
            merkle_root: Hash256::ZERO,
            timestamp: 1_700_000_000,
            bits: Bits(0x207fffff),
            nonce: 0,
        };
        let b = Share1b {
            header,
            info: info(true),
            other_txs: vec![tx(1), tx(2)],
        };
        let a = b.to_share1a();
        assert_eq!(a.merkle_branch.len(), 2);
        assert_eq!(a.hash(), b.hash());
        let bytes = b.to_bytes();
        assert_eq!(Share1b::from_bytes(&bytes, RuleSet::Modern).unwrap(), b);
        // The legacy rule set has no witness form.
        assert!(Share1b::from_bytes(&bytes, RuleSet::Legacy2011).is_err());
    }

    #[test]
    fn long_nonce_script_and_branch_are_refused() {
        let header = BlockHeader {
            version: 1,
            previous_block: Hash256::ZERO,
            merkle_root: Hash256::ZERO,
            timestamp: 0,
            bits: Bits(0),
            nonce: 0,
        };
        let mut share = Share1a {
            header,
            info: info(false),
            merkle_branch: vec![],
        };
        share.info.share_data.nonce = vec![0; MAX_NONCE_LEN + 1];
        assert!(Share1a::from_bytes(&share.to_bytes(), RuleSet::Legacy2011).is_err());
        share.info.share_data.nonce = vec![];
        share.info.new_script = vec![0; MAX_NEW_SCRIPT_LEN + 1];
        assert!(Share1a::from_bytes(&share.to_bytes(), RuleSet::Legacy2011).is_err());
        share.info.new_script = vec![];
        share.merkle_branch = vec![
            BranchStep {
                side: 1,
                hash: Hash256::ZERO
            };
            17
        ];
        assert!(Share1a::from_bytes(&share.to_bytes(), RuleSet::Legacy2011).is_err());
        share.merkle_branch.pop();
        assert!(Share1a::from_bytes(&share.to_bytes(), RuleSet::Legacy2011).is_ok());
    }
}
