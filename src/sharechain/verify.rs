//! Contextual verification of a share against its known ancestors (§6.2 with the fixes
//! of modern-rules.md): timestamps, the regenerated generation transaction, the claimed
//! target and the merkle root, and for a block share its transactions and size.

use std::fmt;

use crate::bitcoin::hash::Hash256;
use crate::bitcoin::merkle;
use crate::bitcoin::target::Bits;
use crate::bitcoin::tx::Transaction;
use crate::network::{Network, RuleSet};

use super::gentx::{self, Generated, GentxError, GentxRequest};
use super::share::Share;
use super::tracker::Tracker;

/// How far a share's timestamp may run ahead of "now" (seconds).
pub const MAX_FUTURE_SECONDS: i64 = 7200;
/// Shares whose timestamps form the median a new share must beat.
pub const MEDIAN_WINDOW: usize = 11;
/// Stripped size limit of a block share under the legacy rules (R: 1,000,000 − 1,000).
pub const LEGACY_MAX_BLOCK_SIZE: usize = 1_000_000 - 1_000;
/// Stripped size limit of a block share under the modern rules.
pub const MODERN_MAX_STRIPPED_SIZE: usize = 1_000_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyError {
    TimestampNotAfterMedian {
        hash: Hash256,
        timestamp: u32,
        median: u32,
    },
    TimestampInFuture {
        hash: Hash256,
        timestamp: u32,
        now: i64,
    },
    Generation {
        hash: Hash256,
        source: GentxError,
    },
    /// Fix 1: the claimed share target differs from the one retargeting gives.
    WrongTarget {
        hash: Hash256,
        claimed: Bits,
        computed: Bits,
    },
    MerkleRootMismatch {
        hash: Hash256,
    },
    BlockMerkleRootMismatch {
        hash: Hash256,
    },
    BlockTooLarge {
        hash: Hash256,
        size: usize,
        max: usize,
    },
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VerifyError::TimestampNotAfterMedian {
                hash,
                timestamp,
                median,
            } => write!(
                f,
                "share {hash} timestamp {timestamp} is not after the median {median} of its last {MEDIAN_WINDOW} ancestors"
            ),
            VerifyError::TimestampInFuture {
                hash,
                timestamp,
                now,
            } => write!(
                f,
                "share {hash} timestamp {timestamp} is more than {MAX_FUTURE_SECONDS} s after now ({now})"
            ),
            VerifyError::Generation { hash, source } => {
                write!(f, "share {hash} cannot be regenerated: {source}")
            }
            VerifyError::WrongTarget {
                hash,
                claimed,
                computed,
            } => write!(
                f,
                "share {hash} claims target bits {claimed}, but retargeting gives {computed}"
            ),
            VerifyError::MerkleRootMismatch { hash } => write!(
                f,
                "share {hash} header merkle root does not commit to the regenerated generation transaction"
            ),
            VerifyError::BlockMerkleRootMismatch { hash } => write!(
                f,
                "share {hash} header merkle root does not match its block's transactions"
            ),
            VerifyError::BlockTooLarge { hash, size, max } => {
                write!(
                    f,
                    "share {hash} block is {size} bytes without witnesses (at most {max})"
                )
            }
        }
    }
}

impl std::error::Error for VerifyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            VerifyError::Generation { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// `(y[(n-1)//2] + y[n//2]) // 2` of the sorted timestamps of up to 11 shares from
/// `start` back; `None` when `start` is unknown.
pub fn median_timestamp(tracker: &Tracker, start: Option<Hash256>) -> Option<u32> {
    let mut ts: Vec<u64> = tracker
        .chain(start)
        .take(MEDIAN_WINDOW)
        .map(|e| u64::from(e.share.timestamp()))
        .collect();
    if ts.is_empty() {
        return None;
    }
    ts.sort_unstable();
    let n = ts.len();
    Some(((ts[(n - 1) / 2] + ts[n / 2]) / 2) as u32)
}

/// Checks `share` against its known ancestors with the clock at `now` (Unix seconds,
/// corrected to bitcoind's clock). Returns the regenerated generation transaction.
pub fn check(
    tracker: &Tracker,
    net: &Network,
    share: &Share,
    now: i64,
) -> Result<Generated, VerifyError> {
    let hash = share.hash;
    let timestamp = share.timestamp();
    if let Some(prev) = share.previous_hash()
        && let Some(median) = median_timestamp(tracker, Some(prev))
        && timestamp <= median
    {
        return Err(VerifyError::TimestampNotAfterMedian {
            hash,
            timestamp,
            median,
        });
    }
    if i64::from(timestamp) > now + MAX_FUTURE_SECONDS {
        return Err(VerifyError::TimestampInFuture {
            hash,
            timestamp,
            now,
        });
    }
    let info = &share.info;
    let generated = gentx::generate_transaction(
        tracker,
        net,
        &GentxRequest {
            previous_share_hash: info.share_data.previous_share_hash,
            new_script: &info.new_script,
            subsidy: info.subsidy,
            nonce: &info.share_data.nonce,
            block_bits: share.header.bits,
            modern: info.modern,
        },
    )
    .map_err(|source| VerifyError::Generation { hash, source })?;
    let computed = generated.share_data.target;
    if info.share_data.target != computed {
        return Err(VerifyError::WrongTarget {
            hash,
            claimed: info.share_data.target,
            computed,
        });
    }
    let gentx_txid = generated.tx.txid();
    if merkle::apply_branch(gentx_txid, &share.merkle_branch) != share.header.merkle_root {
        return Err(VerifyError::MerkleRootMismatch { hash });
    }
    if let Some(other_txs) = &share.other_txs {
        let mut txids = Vec::with_capacity(other_txs.len() + 1);
        txids.push(gentx_txid);
        txids.extend(other_txs.iter().map(Transaction::txid));
        if merkle::root(&txids) != share.header.merkle_root {
            return Err(VerifyError::BlockMerkleRootMismatch { hash });
        }
        let size = stripped_block_size(&generated.tx, other_txs);
        let max = match net.rules {
            RuleSet::Legacy2011 => LEGACY_MAX_BLOCK_SIZE,
            RuleSet::Modern => MODERN_MAX_STRIPPED_SIZE,
        };
        if size > max {
            return Err(VerifyError::BlockTooLarge { hash, size, max });
        }
    }
    Ok(generated)
}

/// The block's size without witnesses: header, transaction count, transactions.
fn stripped_block_size(gentx: &Transaction, other_txs: &[Transaction]) -> usize {
    let count = other_txs.len() as u64 + 1;
    80 + crate::bitcoin::encode::compact_size_len(count)
        + gentx.stripped_size()
        + other_txs
            .iter()
            .map(Transaction::stripped_size)
            .sum::<usize>()
}
