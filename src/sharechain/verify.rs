//! Contextual verification of a share against its known ancestors (§6.2 with the fixes
//! of modern-rules.md): timestamps, the regenerated generation transaction, the claimed
//! target and the merkle root, and for a block share its transactions and size.

use std::fmt;

use crate::bitcoin::hash::Hash256;
use crate::bitcoin::merkle;
use crate::bitcoin::target::Bits;
use crate::bitcoin::tx::Transaction;
use crate::network::{Network, RuleSet};

use super::gentx::{self, Generated, GenerationId, GentxError, GentxRequest, Window};
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

impl VerifyError {
    /// A failure that depends on our clock, not on the share alone: not the sender's
    /// fault as far as we can tell.
    pub fn is_timing(&self) -> bool {
        matches!(self, VerifyError::TimestampInFuture { .. })
    }

    /// The share cannot be checked yet (ancestors missing): not a verdict on it.
    pub fn is_missing_history(&self) -> bool {
        matches!(
            self,
            VerifyError::Generation {
                source: GentxError::NotEnoughHistory { .. },
                ..
            }
        )
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
    let mut ts = [0u64; MEDIAN_WINDOW];
    let mut n = 0;
    for (t, e) in ts.iter_mut().zip(tracker.chain(start)) {
        *t = u64::from(e.share.timestamp());
        n += 1;
    }
    let ts = &mut ts[..n];
    ts.sort_unstable();
    Some(((ts.get(n.checked_sub(1)? / 2)? + ts.get(n / 2)?) / 2) as u32)
}

/// Checks `share` against its known ancestors with the clock at `now` (Unix seconds,
/// corrected to bitcoind's clock). Returns the regenerated generation transaction.
pub fn check(
    tracker: &Tracker,
    net: &Network,
    share: &Share,
    now: i64,
) -> Result<Generated, VerifyError> {
    let window = checked_window(tracker, net, share, now)?;
    let generated = gentx::build_generation(net, &window, &request(share)).map_err(|source| {
        VerifyError::Generation {
            hash: share.hash,
            source,
        }
    })?;
    let id = GenerationId {
        txid: generated.tx.txid(),
        stripped_size: generated.tx.stripped_size(),
    };
    check_generation(net, share, window.target, id)?;
    Ok(generated)
}

/// [`check`] without building the generation transaction: the same verdict, with only
/// the transaction's txid and size, which is what verifying a share needs (the
/// transaction itself is needed only to assemble a block share's block).
pub fn check_id(
    tracker: &Tracker,
    net: &Network,
    share: &Share,
    now: i64,
) -> Result<GenerationId, VerifyError> {
    let window = checked_window(tracker, net, share, now)?;
    let id = gentx::generation_id(net, &window, &request(share)).map_err(|source| {
        VerifyError::Generation {
            hash: share.hash,
            source,
        }
    })?;
    check_generation(net, share, window.target, id)?;
    Ok(id)
}

/// What the share claims, for regenerating its generation transaction.
fn request(share: &Share) -> GentxRequest<'_> {
    let info = &share.info;
    GentxRequest {
        previous_share_hash: info.share_data.previous_share_hash,
        new_script: &info.new_script,
        subsidy: info.subsidy,
        nonce: &info.share_data.nonce,
        block_bits: share.header.bits,
        modern: info.modern,
    }
}

/// The timestamp checks and the retarget, then the generation window of the share.
fn checked_window<'t>(
    tracker: &'t Tracker,
    net: &Network,
    share: &Share,
    now: i64,
) -> Result<Window<'t>, VerifyError> {
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
    if i64::from(timestamp) > now.saturating_add(MAX_FUTURE_SECONDS) {
        return Err(VerifyError::TimestampInFuture {
            hash,
            timestamp,
            now,
        });
    }
    let info = &share.info;
    // The cheap comparison first: retargeting walks the window's work in O(1) per
    // share, while the generation transaction walks the payout window.
    // Only with the retarget window known: otherwise the history is what is missing.
    let previous = info.share_data.previous_share_hash;
    let (height, last) = tracker.height_and_last(previous);
    let window = if last.is_none() || height >= net.target_lookbehind {
        let computed = gentx::next_target(tracker, net, previous)
            .map_err(|source| VerifyError::Generation { hash, source })?;
        if info.share_data.target != computed {
            return Err(VerifyError::WrongTarget {
                hash,
                claimed: info.share_data.target,
                computed,
            });
        }
        // The target is computed once: the window takes it.
        gentx::window_with_target(tracker, net, previous, share.header.bits, computed)
    } else {
        gentx::window(tracker, net, previous, share.header.bits)
    };
    window.map_err(|source| VerifyError::Generation { hash, source })
}

/// The checks on the regenerated generation transaction `id` of a window whose share
/// target is `target`: the claimed target, the merkle root, and for a block share its
/// transactions and size.
fn check_generation(
    net: &Network,
    share: &Share,
    target: Bits,
    id: GenerationId,
) -> Result<(), VerifyError> {
    let hash = share.hash;
    let claimed = share.info.share_data.target;
    if claimed != target {
        return Err(VerifyError::WrongTarget {
            hash,
            claimed,
            computed: target,
        });
    }
    if merkle::apply_branch(id.txid, &share.merkle_branch) != share.header.merkle_root {
        return Err(VerifyError::MerkleRootMismatch { hash });
    }
    if let Some(other_txs) = &share.other_txs {
        let mut txids = Vec::with_capacity(other_txs.len() + 1);
        txids.push(id.txid);
        txids.extend(other_txs.iter().map(Transaction::txid));
        // Fix 5: a list that repeats a txid is a mutated copy (CVE-2012-2459). The share
        // hash does not commit to the list, so the share stands on its share1a form; the
        // block is never submitted from this copy (`chain::assemble_block`).
        if has_duplicate(&txids) {
            return Ok(());
        }
        if merkle::root(&txids) != share.header.merkle_root {
            return Err(VerifyError::BlockMerkleRootMismatch { hash });
        }
        let size = stripped_block_size(id.stripped_size, other_txs);
        let max = match net.rules {
            RuleSet::Legacy2011 => LEGACY_MAX_BLOCK_SIZE,
            RuleSet::Modern => MODERN_MAX_STRIPPED_SIZE,
        };
        if size > max {
            return Err(VerifyError::BlockTooLarge { hash, size, max });
        }
    }
    Ok(())
}

/// Whether a list of txids names one transaction twice.
pub fn has_duplicate(txids: &[Hash256]) -> bool {
    let mut seen = std::collections::HashSet::with_capacity(txids.len());
    txids.iter().any(|t| !seen.insert(*t))
}

/// The block's size without witnesses: header, transaction count, transactions.
fn stripped_block_size(gentx_size: usize, other_txs: &[Transaction]) -> usize {
    let count = other_txs.len() as u64 + 1;
    80 + crate::bitcoin::encode::compact_size_len(count)
        + gentx_size
        + other_txs
            .iter()
            .map(Transaction::stripped_size)
            .sum::<usize>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bitcoin::block::BlockHeader;
    use crate::bitcoin::merkle::BranchStep;
    use crate::bitcoin::script;
    use crate::bitcoin::tx::{OutPoint, TxIn, TxOut};
    use crate::sharechain::sample::{self, Spec, legacy_net, modern_net, payout};
    use crate::sharechain::share::{Share1a, Share1b, ShareError};

    const T0: u32 = 1_600_000_000;

    fn verified_chain(net: &Network, n: usize) -> (Tracker, Vec<Hash256>) {
        let (tracker, hashes) = sample::chain(net, n, 10, &[payout(1), payout(2)]);
        for h in &hashes {
            let share = tracker.get(h).unwrap();
            check(&tracker, net, share, i64::from(share.timestamp()) + 1).unwrap();
        }
        (tracker, hashes)
    }

    #[test]
    fn honest_shares_verify_on_both_rule_sets() {
        verified_chain(&legacy_net(true), 8);
        verified_chain(&modern_net(), 8);
    }

    #[test]
    fn timestamp_at_or_below_the_median_is_rejected() {
        let net = legacy_net(false);
        let (tracker, hashes) = verified_chain(&net, 5);
        // The median of the five is the third timestamp, T0 + 20.
        let share = sample::mine(
            &tracker,
            &net,
            &Spec::new(hashes.last().copied(), T0 + 20, payout(1)),
        );
        let err = check(&tracker, &net, &share, i64::from(T0) + 100).unwrap_err();
        assert_eq!(
            err,
            VerifyError::TimestampNotAfterMedian {
                hash: share.hash,
                timestamp: T0 + 20,
                median: T0 + 20
            }
        );
        assert!(err.to_string().contains("is not after the median"), "{err}");
    }

    #[test]
    fn timestamp_more_than_two_hours_ahead_is_rejected() {
        let net = legacy_net(false);
        let share = sample::mine(
            &Tracker::new(),
            &net,
            &Spec::new(None, T0 + 7201, payout(1)),
        );
        assert!(check(&Tracker::new(), &net, &share, i64::from(T0) + 7201 - 7200).is_ok());
        let err = check(&Tracker::new(), &net, &share, i64::from(T0)).unwrap_err();
        assert!(
            matches!(err, VerifyError::TimestampInFuture { .. }),
            "{err}"
        );
    }

    #[test]
    fn claimed_target_other_than_the_computed_one_is_rejected() {
        let net = legacy_net(false);
        // One second apart: retargeting lowers the target below MAX_TARGET.
        let (tracker, hashes) = sample::chain(&net, 6, 1, &[payout(1)]);
        let mut spec = Spec::new(hashes.last().copied(), T0 + 60, payout(1));
        // An easier claim than retargeting allows (R never compared the two).
        spec.claimed_target = Some(Bits::from_target_floor(net.max_target));
        let share = sample::mine(&tracker, &net, &spec);
        let err = check(&tracker, &net, &share, i64::from(T0) + 100).unwrap_err();
        assert!(matches!(err, VerifyError::WrongTarget { .. }), "{err}");
        assert!(err.to_string().contains("retargeting gives"), "{err}");
    }

    #[test]
    fn tampered_payout_breaks_the_merkle_root() {
        let net = legacy_net(false);
        let (tracker, hashes) = verified_chain(&net, 3);
        let share = sample::mine(
            &tracker,
            &net,
            &Spec::new(hashes.last().copied(), T0 + 30, payout(1)),
        );
        let mut a = share.to_share1a();
        a.info.subsidy += 1;
        // Re-mine the header so that only the gentx commitment is wrong.
        let target = a.info.share_data.target.to_target();
        while a.header.hash().to_u256() > target
            || a.header.hash().to_u256() <= a.header.bits.to_target()
        {
            a.header.nonce += 1;
        }
        let tampered = Share::from_share1a(a, &net).unwrap();
        let err = check(&tracker, &net, &tampered, i64::from(T0) + 100).unwrap_err();
        assert_eq!(
            err,
            VerifyError::MerkleRootMismatch {
                hash: tampered.hash
            }
        );
    }

    #[test]
    fn missing_ancestors_make_a_share_unverifiable() {
        let net = legacy_net(false);
        let (mut tracker, hashes) = verified_chain(&net, 6);
        tracker.remove(&hashes[0]);
        let share = tracker.get(&hashes[5]).unwrap().clone();
        let err = check(&tracker, &net, &share, i64::from(T0) + 100).unwrap_err();
        assert!(
            matches!(
                err,
                VerifyError::Generation {
                    source: GentxError::NotEnoughHistory { .. },
                    ..
                }
            ),
            "{err}"
        );
    }

    fn extra_tx(n: u8) -> Transaction {
        Transaction {
            version: 1,
            inputs: vec![TxIn {
                previous_output: OutPoint {
                    txid: Hash256([n; 32]),
                    vout: 0,
                },
                script_sig: vec![0x51],
                sequence: 0xffff_ffff,
                witness: vec![],
            }],
            outputs: vec![TxOut {
                value: 1000,
                script_pubkey: vec![0x51; 20],
            }],
            lock_time: 0,
        }
    }

    /// A block share: header bits easy enough that the share is a block.
    fn block_share(
        net: &Network,
        txs: Vec<Transaction>,
        wrong_root: bool,
    ) -> (Share, Result<Generated, VerifyError>) {
        let tracker = Tracker::new();
        let mut spec = Spec::new(None, T0, payout(1));
        spec.block_bits = Bits::from_target_floor(net.max_target);
        let g = gentx::generate_transaction(
            &tracker,
            net,
            &GentxRequest {
                previous_share_hash: None,
                new_script: &spec.new_script,
                subsidy: spec.subsidy,
                nonce: b"b",
                block_bits: spec.block_bits,
                modern: None,
            },
        )
        .unwrap();
        let mut txids = vec![g.tx.txid()];
        txids.extend(txs.iter().map(Transaction::txid));
        let root = if wrong_root {
            Hash256([9; 32])
        } else {
            merkle::root(&txids)
        };
        let mut header = BlockHeader {
            version: 1,
            previous_block: Hash256::ZERO,
            merkle_root: root,
            timestamp: T0,
            bits: spec.block_bits,
            nonce: 0,
        };
        while header.hash().to_u256() > g.share_data.target.to_target() {
            header.nonce += 1;
        }
        let info = crate::sharechain::share::ShareInfo {
            share_data: g.share_data,
            new_script: spec.new_script,
            subsidy: spec.subsidy,
            modern: None,
        };
        let share = Share::from_share1b(
            Share1b {
                header,
                info,
                other_txs: txs,
            },
            net,
        )
        .unwrap();
        let result = check(&tracker, net, &share, i64::from(T0));
        (share, result)
    }

    #[test]
    fn block_share_with_its_transactions_verifies() {
        let net = legacy_net(false);
        let (_, result) = block_share(&net, vec![extra_tx(1), extra_tx(2)], false);
        result.unwrap();
    }

    #[test]
    fn block_share_whose_transactions_do_not_match_the_root_is_rejected() {
        let net = legacy_net(false);
        let (share, result) = block_share(&net, vec![extra_tx(1)], true);
        // The branch is derived from the transactions, so the gentx check fails first.
        assert_eq!(
            result.unwrap_err(),
            VerifyError::MerkleRootMismatch { hash: share.hash }
        );
    }

    #[test]
    fn oversize_block_share_is_rejected() {
        let net = legacy_net(false);
        let mut big = extra_tx(1);
        big.outputs[0].script_pubkey = vec![0x51; LEGACY_MAX_BLOCK_SIZE];
        let (_, result) = block_share(&net, vec![big], false);
        assert!(matches!(
            result.unwrap_err(),
            VerifyError::BlockTooLarge {
                max: LEGACY_MAX_BLOCK_SIZE,
                ..
            }
        ));
    }

    fn header_meeting(target: Bits, bits: Bits, block: bool) -> BlockHeader {
        let mut h = BlockHeader {
            version: 1,
            previous_block: Hash256::ZERO,
            merkle_root: Hash256::ZERO,
            timestamp: T0,
            bits,
            nonce: 0,
        };
        loop {
            let pow = h.hash().to_u256();
            if pow <= target.to_target() && (pow <= bits.to_target()) == block {
                return h;
            }
            h.nonce += 1;
        }
    }

    fn info(script: Vec<u8>, target: Bits, modern: bool) -> crate::sharechain::share::ShareInfo {
        crate::sharechain::share::ShareInfo {
            share_data: crate::sharechain::share::ShareData {
                previous_share_hash: None,
                target,
                nonce: vec![],
            },
            new_script: script,
            subsidy: 1,
            modern: modern.then_some(crate::sharechain::share::ModernFields {
                block_height: 1,
                witness_commitment: [0; 32],
            }),
        }
    }

    #[test]
    fn stateless_checks_reject_each_bad_share_with_a_reason() {
        let legacy = legacy_net(false);
        let modern = modern_net();
        let easy = Bits(0x2000ffff);
        let block_bits = Bits(0x1f1fffff);
        // A share1a that is a block.
        let h = header_meeting(easy, block_bits, true);
        let err = Share::from_share1a(
            Share1a {
                header: h,
                info: info(payout(1), easy, false),
                merkle_branch: vec![],
            },
            &legacy,
        )
        .unwrap_err();
        assert!(
            matches!(err, ShareError::WrongType { is_block: true, .. }),
            "{err}"
        );
        // A share1b that is not.
        let h = header_meeting(easy, block_bits, false);
        let err = Share::from_share1b(
            Share1b {
                header: h,
                info: info(payout(1), easy, false),
                other_txs: vec![],
            },
            &legacy,
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                ShareError::WrongType {
                    is_block: false,
                    ..
                }
            ),
            "{err}"
        );
        // Not enough work for the claimed target.
        let mut weak = h;
        while weak.hash().to_u256() <= Bits(0x1f00ffff).to_target() {
            weak.nonce += 1;
        }
        let err = Share::from_share1a(
            Share1a {
                header: weak,
                info: info(payout(1), Bits(0x1f00ffff), false),
                merkle_branch: vec![],
            },
            &legacy,
        )
        .unwrap_err();
        assert!(matches!(err, ShareError::NotEnoughWork { .. }), "{err}");
        // A branch of 17 steps.
        let branch = vec![
            BranchStep {
                side: 1,
                hash: Hash256::ZERO
            };
            17
        ];
        let err = Share::from_share1a(
            Share1a {
                header: h,
                info: info(payout(1), easy, false),
                merkle_branch: branch,
            },
            &legacy,
        )
        .unwrap_err();
        assert!(
            matches!(err, ShareError::MerkleBranchTooLong { len: 17, .. }),
            "{err}"
        );
        // Two sig-ops in the payout script (legacy), and a truncated push.
        let two = vec![script::OP_CHECKSIG, script::OP_CHECKSIG];
        let err = Share::from_share1a(
            Share1a {
                header: h,
                info: info(two, easy, false),
                merkle_branch: vec![],
            },
            &legacy,
        )
        .unwrap_err();
        assert!(
            matches!(err, ShareError::PayoutScriptSigops { .. }),
            "{err}"
        );
        let err = Share::from_share1a(
            Share1a {
                header: h,
                info: info(vec![0x05, 1], easy, false),
                merkle_branch: vec![],
            },
            &legacy,
        )
        .unwrap_err();
        assert!(
            matches!(err, ShareError::PayoutScriptSigops { .. }),
            "{err}"
        );
        // A non-template payout script on a modern network (legal under R's rule).
        let commitment_like = script::witness_commitment_script(&[1; 32]);
        let err = Share::from_share1a(
            Share1a {
                header: h,
                info: info(commitment_like, easy, true),
                merkle_branch: vec![],
            },
            &modern,
        )
        .unwrap_err();
        assert!(
            matches!(err, ShareError::PayoutScriptTemplate { .. }),
            "{err}"
        );
        assert!(
            err.to_string().contains("not a standard payout template"),
            "{err}"
        );
        // A legacy-format share on a modern network.
        let err = Share::from_share1a(
            Share1a {
                header: h,
                info: info(payout(1), easy, false),
                merkle_branch: vec![],
            },
            &modern,
        )
        .unwrap_err();
        assert!(matches!(err, ShareError::WrongRuleSet { .. }), "{err}");
    }

    #[test]
    fn claimed_target_above_max_target_is_refused_before_the_work_check() {
        let net = modern_net();
        // 0xff7fffff saturates to 2^256: any header would pass a work check against it.
        for bits in [Bits(0xff7fffff), Bits(0x2100ffff)] {
            let header = BlockHeader {
                version: 1,
                previous_block: Hash256::ZERO,
                merkle_root: Hash256::ZERO,
                timestamp: T0,
                bits,
                nonce: 7,
            };
            let err = Share::from_share1a(
                Share1a {
                    header,
                    info: info(payout(1), bits, true),
                    merkle_branch: vec![],
                },
                &net,
            )
            .unwrap_err();
            assert!(matches!(err, ShareError::TargetAboveMax { .. }), "{err}");
            assert!(err.to_string().contains("easier than"), "{err}");
        }
        // Exactly MAX_TARGET (as bits) is allowed.
        let max = Bits::from_target_floor(net.max_target);
        let h = header_meeting(max, Bits(0x1d00ffff), false);
        assert!(
            Share::from_share1a(
                Share1a {
                    header: h,
                    info: info(payout(1), max, true),
                    merkle_branch: vec![],
                },
                &net,
            )
            .is_ok()
        );
    }

    #[test]
    fn subsidy_above_max_money_is_refused() {
        let net = modern_net();
        let easy = Bits(0x2000ffff);
        let h = header_meeting(easy, Bits(0x1d00ffff), false);
        let mut i = info(payout(1), easy, true);
        i.subsidy = u64::MAX;
        let err = Share::from_share1a(
            Share1a {
                header: h,
                info: i,
                merkle_branch: vec![],
            },
            &net,
        )
        .unwrap_err();
        assert!(
            matches!(err, ShareError::SubsidyAboveMaxMoney { .. }),
            "{err}"
        );
    }
}
