//! The generation transaction: retarget, PPLNS weights, amounts, output order and the
//! coinbase script (§5 of the legacy spec, with the fixes and modern changes).
//!
//! The same function builds work for local miners and regenerates a peer's share for
//! verification; every quantity that can pass 2^256 is computed in 512 bits.

use std::collections::BTreeMap;
use std::fmt;

use ruint::aliases::{U256, U512};

use crate::bitcoin::encode::{Encode, WriteExt};
use crate::bitcoin::hash::{Hash256, sha256d};
use crate::bitcoin::script;
use crate::bitcoin::target::{Bits, two_pow_256};
use crate::bitcoin::tx::{OutPoint, Transaction, TxIn, TxOut};
use crate::network::{Network, RuleSet, WeightCap};

use super::share::{ModernFields, ShareData};
use super::tracker::Tracker;

/// Longest coinbase script (consensus, since R's `a15f771`).
pub const MAX_COINBASE_SCRIPT_LEN: usize = 100;

/// What a share claims, from which its generation transaction is rebuilt.
#[derive(Debug, Clone)]
pub struct GentxRequest<'a> {
    pub previous_share_hash: Option<Hash256>,
    pub new_script: &'a [u8],
    pub subsidy: u64,
    pub nonce: &'a [u8],
    /// The header bits of the share being built or verified.
    pub block_bits: Bits,
    /// The modern fields; `None` on legacy networks.
    pub modern: Option<ModernFields>,
}

/// Payout weights of one generation transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Weights {
    pub this_weight: U512,
    pub other_total: U512,
    /// SPREAD × block work; `None` under the weight cap `none`.
    pub max_weight: Option<U512>,
    /// The window before this share: at most this many shares...
    pub max_shares: u32,
    /// ...up to this much weight.
    pub desired: Option<U512>,
}

impl Weights {
    /// The weights of the window before this share, by payout script (every credited
    /// script, even at weight 0), as they were when the transaction was generated.
    pub fn other_weights(
        &self,
        tracker: &Tracker,
        previous: Option<Hash256>,
    ) -> BTreeMap<Vec<u8>, U512> {
        tracker
            .weights(previous, self.max_shares, self.desired)
            .0
            .into_iter()
            .map(|(s, w)| (s.to_vec(), w))
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generated {
    pub tx: Transaction,
    /// share_data with the target retargeting computes.
    pub share_data: ShareData,
    pub weights: Weights,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GentxError {
    /// Fewer than CHAIN_LENGTH ancestors are known and the chain does not reach genesis.
    NotEnoughHistory {
        height: u32,
        missing: Hash256,
    },
    /// The pool's rate over the retarget window is 0 (R: ZeroDivisionError).
    ZeroPoolRate,
    /// No weight at all to pay by (R: ZeroDivisionError).
    ZeroTotalWeight,
    CoinbaseScriptTooLong {
        len: usize,
    },
}

impl fmt::Display for GentxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GentxError::NotEnoughHistory { height, missing } => write!(
                f,
                "generation transaction needs more history: {height} shares known, share {missing} missing"
            ),
            GentxError::ZeroPoolRate => {
                write!(
                    f,
                    "generation transaction has a pool rate of 0 over the retarget window"
                )
            }
            GentxError::ZeroTotalWeight => {
                write!(
                    f,
                    "generation transaction has no payout weight to divide the subsidy by"
                )
            }
            GentxError::CoinbaseScriptTooLong { len } => write!(
                f,
                "generation transaction coinbase script is {len} bytes (at most {MAX_COINBASE_SCRIPT_LEN})"
            ),
        }
    }
}

impl std::error::Error for GentxError {}

/// The share target that retargeting gives a child of `previous` (§5.1 with the fixes:
/// signed floor division, dt = 0 → 1, a negative rate → the lower clamp, rate 0 → error).
///
/// Over how many shares: R's rule keeps MAX_TARGET until the chain below holds
/// TARGET_LOOKBEHIND shares; modern change 9 retargets a shorter chain (from 2 shares on)
/// over the `L = min(height, TARGET_LOOKBEHIND)` shares it has, which is R's rule again
/// from TARGET_LOOKBEHIND shares on.
pub fn next_target(
    tracker: &Tracker,
    net: &Network,
    previous: Option<Hash256>,
) -> Result<Bits, GentxError> {
    let (height, _) = tracker.height_and_last(previous);
    let max_target = U512::from(net.max_target);
    let window = match net.rules {
        RuleSet::Legacy2011 => (height >= net.target_lookbehind).then_some(net.target_lookbehind),
        RuleSet::Modern => (height >= 2)
            .then(|| height.min(net.target_lookbehind))
            .filter(|l| *l >= 2),
    };
    let (Some(near_hash), Some(window)) = (previous, window) else {
        return Ok(Bits::from_target_floor(net.max_target));
    };
    let (Some(near), Some((far, attempts))) = (
        tracker.entry(&near_hash),
        tracker
            .all()
            .nth_parent_with_work(&near_hash, window.saturating_sub(1)),
    ) else {
        // height >= window guarantees both are known.
        return Ok(Bits::from_target_floor(net.max_target));
    };
    let mut dt = i64::from(near.share.timestamp()) - i64::from(far.share.timestamp());
    if dt == 0 {
        dt = 1;
    }
    let near_target = near.share.info.share_data.target.to_target_wide();
    let lower = near_target * U512::from(9u64) / U512::from(10u64);
    let upper = near_target * U512::from(11u64) / U512::from(10u64);
    // Python's floor division: a positive `attempts` over a negative `dt` is negative,
    // and so is `2^256 // (period × aps) − 1`, which the lower clamp then replaces.
    let aps = attempts / U512::from(dt.unsigned_abs());
    let pre = if attempts.is_zero() || (dt > 0 && aps.is_zero()) {
        return Err(GentxError::ZeroPoolRate);
    } else if dt < 0 {
        lower
    } else {
        let quotient = two_pow_256() / (U512::from(net.share_period) * aps);
        if quotient.is_zero() {
            lower
        } else {
            (quotient - U512::from(1u64)).clamp(lower, upper)
        }
    };
    let pre = pre.min(max_target);
    Ok(Bits::from_target_floor(U256::saturating_from(pre)))
}

/// `subsidy × by_weight × w // (400 × total)`, in 128 bits when it fits.
fn share_of(subsidy: u64, by_weight: u64, w: U512, total: U512) -> u64 {
    let (w128, t128) = (u128::try_from(w), u128::try_from(total));
    if let (Ok(w), Ok(t)) = (w128, t128)
        && let (Some(num), Some(den)) = (
            u128::from(subsidy)
                .checked_mul(u128::from(by_weight))
                .and_then(|x| x.checked_mul(w)),
            t.checked_mul(400),
        )
    {
        return u64::try_from(num / den).unwrap_or(u64::MAX);
    }
    let a = U512::from(subsidy) * U512::from(by_weight) * w / (U512::from(400u64) * total);
    // a ≤ subsidy because w ≤ total; saturating keeps a broken invariant from panicking.
    a.saturating_to::<u64>()
}

/// [`share_of`] for every weight of one transaction, with what they share formed once.
///
/// Every weight is at most the total, so when `subsidy × by_weight × total` and
/// `400 × total` fit in 64 bits (small shares, as in tests and benches) each amount is
/// a 64-bit multiplication by an inverse, and when they fit in 128 bits (mainnet: about
/// 2^118) one 128-bit division; only otherwise, or for a weight above the total (a broken
/// invariant), the 512-bit formula. The total must not be zero.
struct Divider {
    subsidy: u64,
    by_weight: u64,
    total: U512,
    fit: Fit,
}

#[derive(Clone, Copy)]
enum Fit {
    /// `scale × w // den` for `w ≤ max`, in 64 bits, by multiplying with
    /// `inverse = 2^64 // den` (a division costs some 30 cycles, 300 times a share).
    Narrow {
        scale: u64,
        den: u64,
        inverse: u128,
        max: u64,
    },
    /// The same in 128 bits.
    Wide { scale: u128, den: u128, max: u128 },
    /// Neither fits: [`share_of`] for each weight.
    Full,
}

impl Divider {
    fn new(subsidy: u64, by_weight: u64, total: U512) -> Divider {
        let scale = u128::from(subsidy) * u128::from(by_weight);
        let fit = match u128::try_from(total) {
            Ok(t) => match (scale.checked_mul(t), t.checked_mul(400)) {
                (Some(num), Some(den)) => {
                    match (u64::try_from(num), u64::try_from(den), u64::try_from(scale)) {
                        (Ok(_), Ok(den), Ok(scale)) => Fit::Narrow {
                            scale,
                            den,
                            // den > 0: the total is not zero (checked by the caller).
                            inverse: (1u128 << 64) / u128::from(den),
                            max: t as u64,
                        },
                        _ => Fit::Wide { scale, den, max: t },
                    }
                }
                _ => Fit::Full,
            },
            Err(_) => Fit::Full,
        };
        Divider {
            subsidy,
            by_weight,
            total,
            fit,
        }
    }

    /// `share_of(subsidy, by_weight, w, total)`.
    #[inline]
    fn of(&self, w: U512) -> u64 {
        match self.fit {
            Fit::Narrow {
                scale,
                den,
                inverse,
                max,
            } => {
                if let Ok(w) = u64::try_from(w)
                    && w <= max
                {
                    let num = scale * w;
                    // inverse ≤ 2^64 / den, so this is at most the quotient, and at most 2
                    // below it (num < 2^64): the remainder, corrected, makes it exact.
                    let mut q = ((u128::from(num) * inverse) >> 64) as u64;
                    let mut r = num - q * den;
                    while r >= den {
                        q += 1;
                        r -= den;
                    }
                    return q;
                }
            }
            Fit::Wide { scale, den, max } => {
                if let Ok(w) = u128::try_from(w)
                    && w <= max
                {
                    // At most scale / 400 < 2^64, since w ≤ total.
                    return (scale * w / den) as u64;
                }
            }
            Fit::Full => {}
        }
        share_of(self.subsidy, self.by_weight, w, self.total)
    }
}

fn credit<'a>(amount: &mut Vec<Paid<'a>>, script: &'a [u8], value: u64) {
    let key = script_key(script);
    match amount
        .iter_mut()
        .find(|p| p.key == key && p.script == script)
    {
        Some(p) => p.value += value,
        None => amount.push(Paid { key, script, value }),
    }
}

/// Splits `subsidy` by weight (§5.3): 396/400 by weight + 2/400 to the finder + 2/400
/// and the rounding remainder to the donation script, or without donation 398/400 by
/// weight + 2/400 and the remainder to the finder. The finder has `this_weight` and its
/// weight in `others`, if any (it is paid the fee all the same); `others` has each script
/// once. The result has each script once, the finder's first, others of weight 0 left out.
fn amounts<'a>(
    subsidy: u64,
    finder: &'a [u8],
    this_weight: U512,
    others: &[(&'a [u8], U512)],
    total: U512,
    donation: Option<&'a [u8]>,
) -> Result<Vec<Paid<'a>>, GentxError> {
    if total.is_zero() {
        return Err(GentxError::ZeroTotalWeight);
    }
    let by_weight = if donation.is_some() { 396u64 } else { 398 };
    let divider = Divider::new(subsidy, by_weight, total);
    let finder_key = script_key(finder);
    let mut finder_weight = this_weight;
    // One pass, one allocation: each script's key, computed here, serves the finder
    // comparison, the donation's and the selection and order of the outputs.
    let mut amount = Vec::with_capacity(others.len() + 2);
    amount.push(Paid {
        key: finder_key,
        script: finder,
        value: 0,
    });
    for &(script, w) in others {
        let key = script_key(script);
        // Keys first: most scripts differ from the finder's in their first 8 bytes.
        if key == finder_key && script == finder {
            finder_weight += w;
        } else if !w.is_zero() {
            amount.push(Paid {
                key,
                script,
                value: divider.of(w),
            });
        }
    }
    let fee = subsidy * 2 / 400;
    amount[0].value = divider.of(finder_weight) + fee;
    let remainder_to = match donation {
        Some(d) => {
            credit(&mut amount, d, fee);
            d
        }
        None => finder,
    };
    let paid: u64 = amount.iter().map(|p| p.value).sum();
    credit(&mut amount, remainder_to, subsidy.saturating_sub(paid));
    Ok(amount)
}

/// The first 8 bytes of a script, big-endian, zero-padded: ordering scripts by this and
/// then by their bytes is ordering them by their bytes, with one integer comparison
/// for most pairs instead of a `memcmp`.
pub(super) fn script_key(script: &[u8]) -> u64 {
    match script.first_chunk::<8>() {
        Some(head) => u64::from_be_bytes(*head),
        None => script
            .iter()
            .enumerate()
            .fold(0, |key, (i, &b)| key | u64::from(b) << (56 - 8 * i)),
    }
}

/// An amount to pay, with its script's [`script_key`] computed once: the selection and
/// the sort below compare keys, and read a script's bytes only on a tie.
#[derive(Debug, Clone, Copy)]
struct Paid<'a> {
    key: u64,
    script: &'a [u8],
    value: u64,
}

impl Paid<'_> {
    /// Scripts in byte order.
    fn by_script(&self, other: &Paid<'_>) -> std::cmp::Ordering {
        (self.key, self.script).cmp(&(other.key, other.script))
    }

    /// Largest amount first, ties broken by the larger script, as R's reverse sort by
    /// (amount, script).
    fn largest_first(&self, other: &Paid<'_>) -> std::cmp::Ordering {
        other
            .value
            .cmp(&self.value)
            .then_with(|| other.by_script(self))
    }
}

/// Drops `amount[..from]`, keeps the `keep` largest of `amount[from..]` in their order,
/// and returns the sum of the others. Each script is in `amount` once, so no two are
/// equal by [`Paid::largest_first`].
fn keep_largest(amount: &mut Vec<Paid<'_>>, from: usize, keep: usize) -> u64 {
    let candidates = amount.get(from..).unwrap_or_default();
    let cutoff = smallest_kept(candidates, keep);
    let mut index = 0;
    let mut rest = 0;
    // One pass that keeps the order (by script, as the window gives it: then the outputs
    // need no sort).
    amount.retain(|p| {
        index += 1;
        if index <= from {
            return false;
        }
        let kept = cutoff.is_some_and(|c| p.largest_first(&c).is_le());
        if !kept {
            rest += p.value;
        }
        kept
    });
    rest
}

/// The smallest by [`Paid::largest_first`] of the `keep` largest of `candidates`: the
/// largest are those not after it. `None` when none is kept.
///
/// The selection runs on the amounts alone, copied out (integer comparisons, and the
/// list keeps its order); only scripts tied with the smallest kept amount are compared
/// by their bytes.
fn smallest_kept<'a>(candidates: &[Paid<'a>], keep: usize) -> Option<Paid<'a>> {
    let last = keep.min(candidates.len()).checked_sub(1)?;
    let mut values: Vec<u64> = candidates.iter().map(|p| p.value).collect();
    let (_, &mut value, _) = values.select_nth_unstable_by(last, |a, b| b.cmp(a));
    let above = values[..last].iter().filter(|&&v| v > value).count();
    let mut tied: Vec<Paid<'a>> = candidates
        .iter()
        .filter(|p| p.value == value)
        .copied()
        .collect();
    // `last − above` of the tied amounts come before the smallest kept; largest first.
    tied.sort_unstable_by(Paid::largest_first);
    tied.get(last - above).copied()
}

/// Chooses the paid outputs and their order (§5.4, and the modern 200-output cap):
/// by script bytes, the finder last, none of value 0. `amount` has each script once,
/// the finder's first.
///
/// Only which scripts make the cut depends on the order by amount, so the largest are
/// selected (linear time), not sorted, and the list keeps its order by script.
fn payout_outputs(mut paid: Vec<Paid<'_>>, rules: RuleSet) -> Vec<Paid<'_>> {
    let cap = rules.max_payout_outputs();
    let Some(&finder) = paid.first() else {
        return paid;
    };
    let mut finder_value = None;
    match rules {
        RuleSet::Legacy2011 => {
            // The `cap` largest, the finder among them or not; the rest is not paid.
            keep_largest(&mut paid, 0, cap);
            if let Some(k) = paid.iter().position(|p| p.script == finder.script) {
                finder_value = Some(paid.remove(k).value);
            }
        }
        RuleSet::Modern => {
            // The finder and the `cap − 1` largest others; the rest is the finder's.
            let value = finder.value;
            let rest = keep_largest(&mut paid, 1, cap.saturating_sub(1));
            finder_value = Some(value + rest);
        }
    }
    // The window hands its scripts in order, so only a donation script credited at the
    // end (or a caller's list in another order) needs the sort.
    if !paid.is_sorted_by(|a, b| a.by_script(b).is_lt()) {
        paid.sort_unstable_by(Paid::by_script);
    }
    paid.extend(finder_value.map(|value| Paid { value, ..finder }));
    paid.retain(|p| p.value != 0);
    paid
}

/// The coinbase script: [BIP34 height push, modern only] ‖ IDENTIFIER ‖ share_data.
pub fn coinbase_script(
    net: &Network,
    share_data: &ShareData,
    modern: Option<&ModernFields>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    if let Some(m) = modern {
        out.extend_from_slice(&script::height_push(m.block_height));
    }
    out.extend_from_slice(&net.identifier);
    out.extend_from_slice(&share_data.previous_share_hash.unwrap_or(Hash256::ZERO).0);
    out.put_u32_le(share_data.target.0);
    out.put_var_bytes(&share_data.nonce);
    out
}

/// What a generation transaction takes from the chain for a given parent and block
/// target: the share target, the weight totals and the window's weights by payout script.
/// It does not depend on the payout script, nonce or subsidy, so work for many miners can
/// be built from one `Window` computed once on the thread that owns the tracker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window<'a> {
    pub previous_share_hash: Option<Hash256>,
    /// The share target that retargeting gives a child of `previous_share_hash`.
    pub target: Bits,
    pub weights: Weights,
    /// The weights of the window before this share, by payout script, each script once
    /// (in no particular order).
    pub by_script: Vec<(&'a [u8], U512)>,
}

/// Computes the `Window` of a child of `previous` whose header has `block_bits`.
pub fn window<'t>(
    tracker: &'t Tracker,
    net: &Network,
    previous: Option<Hash256>,
    block_bits: Bits,
) -> Result<Window<'t>, GentxError> {
    window_with(tracker, net, previous, block_bits, None)
}

/// [`window`] with `target`, what [`next_target`] gives for `previous`, computed
/// already (verification compares it with the claim before anything else).
pub fn window_with_target<'t>(
    tracker: &'t Tracker,
    net: &Network,
    previous: Option<Hash256>,
    block_bits: Bits,
    target: Bits,
) -> Result<Window<'t>, GentxError> {
    window_with(tracker, net, previous, block_bits, Some(target))
}

fn window_with<'t>(
    tracker: &'t Tracker,
    net: &Network,
    previous: Option<Hash256>,
    block_bits: Bits,
    target: Option<Bits>,
) -> Result<Window<'t>, GentxError> {
    let (height, last) = tracker.height_and_last(previous);
    if let Some(missing) = last
        && height < net.chain_length
    {
        return Err(GentxError::NotEnoughHistory { height, missing });
    }
    let target = match target {
        Some(t) => t,
        None => next_target(tracker, net, previous)?,
    };
    let own_attempts = target.average_attempts();
    let max_weight = match net.weight_cap {
        WeightCap::Block => Some(U512::from(net.spread) * block_bits.average_attempts()),
        WeightCap::None => None,
    };
    let this_weight = max_weight.map_or(own_attempts, |m| own_attempts.min(m));
    let desired = max_weight.map(|m| m.saturating_sub(this_weight));
    let max_shares = height.min(net.chain_length);
    let (by_script, other_total) = tracker.weights(previous, max_shares, desired);
    Ok(Window {
        previous_share_hash: previous,
        target,
        weights: Weights {
            this_weight,
            other_total,
            max_weight,
            max_shares,
            desired,
        },
        by_script,
    })
}

/// Builds the generation transaction for a share with the given claims on top of the
/// tracker's chain.
pub fn generate_transaction(
    tracker: &Tracker,
    net: &Network,
    req: &GentxRequest<'_>,
) -> Result<Generated, GentxError> {
    let window = window(tracker, net, req.previous_share_hash, req.block_bits)?;
    build_generation(net, &window, req)
}

/// Builds the generation transaction from a precomputed `window` (a pure function: no
/// tracker). `req.previous_share_hash` and `req.block_bits` must be those the window was
/// computed for; `generate_transaction` is `window` followed by this.
pub fn build_generation(
    net: &Network,
    window: &Window<'_>,
    req: &GentxRequest<'_>,
) -> Result<Generated, GentxError> {
    let plan = Plan::new(net, window, req)?;
    Ok(Generated {
        tx: plan.transaction(),
        share_data: plan.share_data,
        weights: window.weights.clone(),
    })
}

/// What verification needs of a generation transaction: its txid and its size without
/// witness (which the block size limit counts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GenerationId {
    pub txid: Hash256,
    pub stripped_size: usize,
}

/// The txid and stripped size of the transaction [`build_generation`] builds, from its
/// bytes written once: no `Transaction`, no copy of each payout script.
pub fn generation_id(
    net: &Network,
    window: &Window<'_>,
    req: &GentxRequest<'_>,
) -> Result<GenerationId, GentxError> {
    let bytes = Plan::new(net, window, req)?.stripped_bytes();
    Ok(GenerationId {
        txid: sha256d(&bytes),
        stripped_size: bytes.len(),
    })
}

/// A generation transaction decided but not written: its coinbase script, witness
/// commitment and payouts (scripts borrowed from the window and the request). Written as
/// a `Transaction` for work and blocks, or straight to bytes for verification.
struct Plan<'a> {
    share_data: ShareData,
    script_sig: Vec<u8>,
    commitment: Option<[u8; 32]>,
    /// In output order.
    payouts: Vec<Paid<'a>>,
}

impl<'a> Plan<'a> {
    fn new(
        net: &'a Network,
        window: &Window<'a>,
        req: &GentxRequest<'a>,
    ) -> Result<Plan<'a>, GentxError> {
        let share_data = ShareData {
            previous_share_hash: window.previous_share_hash,
            target: window.target,
            nonce: req.nonce.to_vec(),
        };
        let this_weight = window.weights.this_weight;
        let total_weight = this_weight + window.weights.other_total;
        let amount = amounts(
            req.subsidy,
            req.new_script,
            this_weight,
            &window.by_script,
            total_weight,
            net.donation_script.as_deref(),
        )?;
        let payouts = payout_outputs(amount, net.rules);

        let script_sig = coinbase_script(net, &share_data, req.modern.as_ref());
        if script_sig.len() > MAX_COINBASE_SCRIPT_LEN {
            return Err(GentxError::CoinbaseScriptTooLong {
                len: script_sig.len(),
            });
        }
        Ok(Plan {
            share_data,
            script_sig,
            commitment: req.modern.as_ref().and_then(ModernFields::commitment),
            payouts,
        })
    }

    fn transaction(&self) -> Transaction {
        let mut outputs = Vec::with_capacity(self.payouts.len() + 1);
        if let Some(c) = &self.commitment {
            outputs.push(TxOut {
                value: 0,
                script_pubkey: script::witness_commitment_script(c),
            });
        }
        outputs.extend(self.payouts.iter().map(|p| TxOut {
            value: p.value,
            script_pubkey: p.script.to_vec(),
        }));
        Transaction {
            version: 1,
            inputs: vec![TxIn {
                previous_output: OutPoint::NULL,
                script_sig: self.script_sig.clone(),
                sequence: 0xffff_ffff,
                // The witness reserved value, only when the block carries a commitment.
                witness: if self.commitment.is_some() {
                    vec![vec![0; 32]]
                } else {
                    vec![]
                },
            }],
            outputs,
            lock_time: 0,
        }
    }

    /// `self.transaction().to_stripped_bytes()`, written directly (a test holds the two
    /// equal).
    fn stripped_bytes(&self) -> Vec<u8> {
        let commitment = self
            .commitment
            .map(|c| script::witness_commitment_script(&c));
        let outputs = self.payouts.len() + usize::from(commitment.is_some());
        let size = 4
            + 1
            + 36
            + 9
            + self.script_sig.len()
            + 4
            + 9
            + self
                .payouts
                .iter()
                .map(|p| 8 + 9 + p.script.len())
                .sum::<usize>()
            + commitment.as_ref().map_or(0, |c| 8 + 9 + c.len())
            + 4;
        let mut out = Vec::with_capacity(size);
        out.put_u32_le(1); // version
        out.put_compact_size(1);
        OutPoint::NULL.txid.encode_to(&mut out);
        out.put_u32_le(OutPoint::NULL.vout);
        out.put_var_bytes(&self.script_sig);
        out.put_u32_le(0xffff_ffff); // sequence
        out.put_compact_size(outputs as u64);
        if let Some(c) = &commitment {
            out.put_u64_le(0);
            out.put_var_bytes(c);
        }
        for p in &self.payouts {
            out.put_u64_le(p.value);
            // A one-byte length for every script but a long one (the common case
            // written inline: this loop writes some 200 outputs a share).
            match u8::try_from(p.script.len()) {
                Ok(len) if len < 0xfd => out.push(len),
                _ => out.put_compact_size(p.script.len() as u64),
            }
            out.extend_from_slice(p.script);
        }
        out.put_u32_le(0); // lock time
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn amounts_map(
        subsidy: u64,
        weights: &BTreeMap<Vec<u8>, U512>,
        total: U512,
        new_script: &[u8],
        donation: Option<&[u8]>,
    ) -> Result<BTreeMap<Vec<u8>, u64>, GentxError> {
        let w: Vec<(&[u8], U512)> = weights.iter().map(|(s, &w)| (s.as_slice(), w)).collect();
        amounts(subsidy, new_script, U512::ZERO, &w, total, donation).map(|v| {
            v.into_iter()
                .map(|p| (p.script.to_vec(), p.value))
                .collect()
        })
    }

    fn paid(script: &[u8], value: u64) -> Paid<'_> {
        Paid {
            key: script_key(script),
            script,
            value,
        }
    }

    fn outputs_of(amount: BTreeMap<Vec<u8>, u64>, finder: &[u8], rules: RuleSet) -> Vec<TxOut> {
        let mut list = vec![paid(finder, amount.get(finder).copied().unwrap_or(0))];
        list.extend(
            amount
                .iter()
                .filter(|(s, _)| s.as_slice() != finder)
                .map(|(s, a)| paid(s, *a)),
        );
        payout_outputs(list, rules)
            .into_iter()
            .map(|p| TxOut {
                value: p.value,
                script_pubkey: p.script.to_vec(),
            })
            .collect()
    }
    use crate::sharechain::sample::{self, Spec, legacy_net, modern_net, payout};

    fn request(previous: Option<Hash256>, script: &[u8], block_bits: Bits) -> GentxRequest<'_> {
        GentxRequest {
            previous_share_hash: previous,
            new_script: script,
            subsidy: 5_000_000_000,
            nonce: b"n",
            block_bits,
            modern: None,
        }
    }

    #[test]
    fn boundary_share_gets_partial_credit() {
        let net = legacy_net(false);
        let scripts = [payout(1), payout(2), payout(3)];
        let (tracker, hashes) = sample::chain(&net, 3, 10, &scripts);
        // Block work 300 → max weight 900; this share 256 → 644 for the window:
        // shares 3 and 2 in full (512), share 1 only 132.
        let block_bits = Bits::from_target_floor(U256::MAX / U256::from(300u64));
        assert_eq!(block_bits.average_attempts(), U512::from(300u64));
        let g = generate_transaction(
            &tracker,
            &net,
            &request(hashes.last().copied(), &payout(9), block_bits),
        )
        .unwrap();
        assert_eq!(g.weights.this_weight, U512::from(256u64));
        assert_eq!(g.weights.max_weight, Some(U512::from(900u64)));
        assert_eq!(g.weights.other_total, U512::from(644u64));
        assert_eq!(
            g.weights.other_weights(&tracker, Some(hashes[2]))[&payout(1)],
            U512::from(132u64)
        );
        assert_eq!(
            g.weights.other_weights(&tracker, Some(hashes[2]))[&payout(3)],
            U512::from(256u64)
        );
    }

    #[test]
    fn weight_cap_none_pays_the_whole_window() {
        let mut net = legacy_net(false);
        net.weight_cap = WeightCap::None;
        let scripts = [payout(1), payout(2), payout(3)];
        let (tracker, hashes) = sample::chain(&net, 3, 10, &scripts);
        let block_bits = Bits::from_target_floor(U256::MAX / U256::from(300u64));
        let g = generate_transaction(
            &tracker,
            &net,
            &request(hashes.last().copied(), &payout(9), block_bits),
        )
        .unwrap();
        assert_eq!(g.weights.max_weight, None);
        assert_eq!(g.weights.other_total, U512::from(768u64));
    }

    fn near_target(tracker: &Tracker, hash: Hash256) -> U512 {
        tracker
            .get(&hash)
            .unwrap()
            .info
            .share_data
            .target
            .to_target_wide()
    }

    fn bits_of(t: U512) -> Bits {
        Bits::from_target_floor(U256::saturating_from(t))
    }

    #[test]
    fn retarget_moves_at_most_ten_percent_per_share() {
        let net = legacy_net(false);
        // One second apart with a 10 s period: far too fast, so the target drops by 10%.
        let (tracker, hashes) = sample::chain(&net, 5, 1, &[payout(1)]);
        let last = *hashes.last().unwrap();
        let near = near_target(&tracker, last);
        let next = next_target(&tracker, &net, Some(last)).unwrap();
        assert_eq!(next, bits_of(near * U512::from(9u64) / U512::from(10u64)));
        // 100 s apart: too slow, so it would rise by 10%, but MAX_TARGET caps it.
        let (tracker, hashes) = sample::chain(&net, 5, 100, &[payout(1)]);
        let next = next_target(&tracker, &net, hashes.last().copied()).unwrap();
        assert_eq!(next, Bits::from_target_floor(net.max_target));
    }

    #[test]
    fn retarget_rises_ten_percent_below_the_maximum() {
        let net = legacy_net(false);
        // Ten shares at once drive the target well below the maximum...
        let (mut tracker, hashes) = sample::chain(&net, 10, 0, &[payout(1)]);
        // ...then a share 1000 s later makes the window far too slow.
        let spec = Spec::new(hashes.last().copied(), 1_600_001_000, payout(1));
        let share = sample::mine(&tracker, &net, &spec);
        let last = share.hash;
        tracker.add(share, 0, None);
        let near = near_target(&tracker, last);
        assert!(near * U512::from(11u64) / U512::from(10u64) < U512::from(net.max_target));
        let next = next_target(&tracker, &net, Some(last)).unwrap();
        assert_eq!(next, bits_of(near * U512::from(11u64) / U512::from(10u64)));
    }

    #[test]
    fn equal_timestamps_count_as_one_second_and_negative_spans_give_the_lower_clamp() {
        let net = legacy_net(false);
        let (tracker, hashes) = sample::chain(&net, 5, 0, &[payout(1)]);
        let last = *hashes.last().unwrap();
        let near = near_target(&tracker, last);
        // dt = 0 → 1: a pool rate of 768 attempts/s is far above target: lower clamp.
        assert_eq!(
            next_target(&tracker, &net, Some(last)).unwrap(),
            bits_of(near * U512::from(9u64) / U512::from(10u64))
        );

        let mut tracker = Tracker::new();
        let mut prev = None;
        for i in 0..5u32 {
            let share = sample::mine(
                &tracker,
                &net,
                &Spec::new(prev, 1_600_000_000 - 100 * i, payout(1)),
            );
            prev = Some(share.hash);
            tracker.add(share, 0, None);
        }
        let near = near_target(&tracker, prev.unwrap());
        assert_eq!(
            next_target(&tracker, &net, prev).unwrap(),
            bits_of(near * U512::from(9u64) / U512::from(10u64))
        );
    }

    /// A chain of `n` shares `spacing` s apart built by R's rule (every target MAX_TARGET
    /// below TARGET_LOOKBEHIND = 4 shares), and its shares' hashes.
    fn legacy_built(n: usize, spacing: i64) -> (Tracker, Vec<Hash256>) {
        let net = legacy_net(false);
        let mut tracker = Tracker::new();
        let mut hashes = Vec::new();
        for i in 0..n {
            let timestamp = u32::try_from(1_600_000_000 + spacing * i as i64).unwrap();
            let spec = Spec::new(hashes.last().copied(), timestamp, payout(1));
            let share = sample::mine(&tracker, &net, &spec);
            hashes.push(share.hash);
            tracker.add(share, 0, None);
        }
        (tracker, hashes)
    }

    /// `2^256 // (period × aps) − 1` for a pool rate of `aps` attempts a second.
    fn formula(net: &Network, aps: u64) -> Bits {
        bits_of(two_pow_256() / (U512::from(net.share_period) * U512::from(aps)) - U512::from(1u64))
    }

    #[test]
    fn modern_retargets_a_short_chain_over_the_shares_it_has() {
        let (legacy, modern) = (legacy_net(false), modern_net());
        assert_eq!(modern.target_lookbehind, 4);
        let max = Bits::from_target_floor(modern.max_target);
        // Shares 9 s apart at MAX_TARGET (256 attempts each): 28 attempts/s over any
        // window, 2^256 // 280 − 1, within 10 % of MAX_TARGET (0.914 of it).
        let (tracker, hashes) = legacy_built(6, 9);
        let expected = formula(&modern, 256 / 9);
        let target_below = |net: &Network, height: usize| {
            let previous = height.checked_sub(1).map(|i| hashes[i]);
            next_target(&tracker, net, previous).unwrap()
        };
        // Heights 0 and 1: nothing to measure a rate over.
        for height in [0, 1] {
            assert_eq!(target_below(&modern, height), max, "height {height}");
        }
        // Height 2 (L = 2: one share, 9 s) and 3 (L − 1 = 3: two shares, 18 s).
        for height in [2, 3] {
            assert_eq!(target_below(&modern, height), expected, "height {height}");
            assert_eq!(target_below(&legacy, height), max, "R at height {height}");
        }
        // Heights 4 (L) and 5 (L + 1): R's rule unchanged.
        assert_eq!(target_below(&modern, 4), expected);
        for height in [4, 5] {
            assert_eq!(
                target_below(&modern, height),
                target_below(&legacy, height),
                "height {height}"
            );
        }
        assert_ne!(target_below(&modern, 5), max);
    }

    #[test]
    fn modern_short_chain_zero_and_negative_spans_take_the_lower_clamp() {
        let net = modern_net();
        let lower = |tracker: &Tracker, near: Hash256| {
            bits_of(near_target(tracker, near) * U512::from(9u64) / U512::from(10u64))
        };
        // dt = 0 counts as 1 s: 256 attempts/s at height 2, far too fast.
        let (tracker, hashes) = legacy_built(2, 0);
        let next = next_target(&tracker, &net, Some(hashes[1])).unwrap();
        assert_eq!(next, lower(&tracker, hashes[1]));
        // Timestamps going back at height 3: a negative rate.
        let (tracker, hashes) = legacy_built(3, -100);
        let next = next_target(&tracker, &net, Some(hashes[2])).unwrap();
        assert_eq!(next, lower(&tracker, hashes[2]));
        // Slow at height 2: up to 10 % above MAX_TARGET, clipped to it.
        let (tracker, hashes) = legacy_built(2, 50);
        assert_eq!(
            next_target(&tracker, &net, Some(hashes[1])).unwrap(),
            Bits::from_target_floor(net.max_target)
        );
    }

    #[test]
    fn zero_pool_rate_is_an_error_not_a_panic() {
        let net = legacy_net(false);
        // 768 attempts over a million seconds: 0 attempts per second.
        let (tracker, hashes) = sample::chain(&net, 4, 1_000_000, &[payout(1)]);
        assert_eq!(
            next_target(&tracker, &net, hashes.last().copied()),
            Err(GentxError::ZeroPoolRate)
        );
    }

    #[test]
    fn missing_history_is_an_error() {
        let net = legacy_net(false);
        let (mut tracker, hashes) = sample::chain(&net, 6, 10, &[payout(1)]);
        tracker.remove(&hashes[0]);
        let err = generate_transaction(
            &tracker,
            &net,
            &request(hashes.last().copied(), &payout(1), Bits(0x1f1fffff)),
        )
        .unwrap_err();
        assert_eq!(
            err,
            GentxError::NotEnoughHistory {
                height: 5,
                missing: hashes[0]
            }
        );
    }

    #[test]
    fn without_donation_the_finder_gets_the_fee_and_the_remainder() {
        let mut weights = BTreeMap::new();
        weights.insert(payout(1), U512::from(1u64));
        weights.insert(payout(2), U512::from(2u64));
        let a = amounts_map(1000, &weights, U512::from(3u64), &payout(2), None).unwrap();
        // 1000·398·1//1200 = 331; 1000·398·2//1200 = 663; finder +5, remainder 1.
        assert_eq!(a[&payout(1)], 331);
        assert_eq!(a[&payout(2)], 663 + 5 + 1);
        assert_eq!(a.values().sum::<u64>(), 1000);
    }

    #[test]
    fn with_donation_the_donation_gets_the_fee_and_the_dust() {
        let donation = script::p2pk(&[4; 65]);
        let mut weights = BTreeMap::new();
        weights.insert(payout(1), U512::from(1u64));
        weights.insert(payout(2), U512::from(2u64));
        let a = amounts_map(
            1000,
            &weights,
            U512::from(3u64),
            &payout(2),
            Some(&donation),
        )
        .unwrap();
        // 1000·396·1//1200 = 330; ·2 = 660; finder +5; donation 5 + dust 0.
        assert_eq!(a[&payout(1)], 330);
        assert_eq!(a[&payout(2)], 665);
        assert_eq!(a[&donation], 5);
        assert_eq!(a.values().sum::<u64>(), 1000);
        assert_eq!(
            amounts_map(1, &weights, U512::ZERO, &payout(2), None),
            Err(GentxError::ZeroTotalWeight)
        );
    }

    #[test]
    fn modern_cap_pays_the_finder_and_199_largest_and_folds_the_rest_into_the_finder() {
        let finder = payout(0);
        let mut amount = BTreeMap::new();
        for i in 1..=250u32 {
            let mut s = payout(1);
            s[3..7].copy_from_slice(&i.to_be_bytes());
            amount.insert(s, u64::from(i) * 10);
        }
        amount.insert(finder.clone(), 7);
        let total: u64 = amount.values().sum();
        let outs = outputs_of(amount, &finder, RuleSet::Modern);
        assert_eq!(outs.len(), 200);
        assert_eq!(outs.iter().map(|o| o.value).sum::<u64>(), total);
        assert_eq!(outs.last().unwrap().script_pubkey, finder);
        // The 51 smallest (10..=510) went to the finder.
        assert_eq!(
            outs.last().unwrap().value,
            7 + (1..=51u64).map(|i| i * 10).sum::<u64>()
        );
        assert!(
            outs[..199]
                .windows(2)
                .all(|w| w[0].script_pubkey < w[1].script_pubkey)
        );
    }

    #[test]
    fn legacy_cap_keeps_the_4000_largest_and_drops_the_rest_as_r_did() {
        let finder = payout(0);
        let mut amount = BTreeMap::new();
        for i in 1..=4005u32 {
            let mut s = payout(1);
            s[3..7].copy_from_slice(&i.to_be_bytes());
            amount.insert(s, 1000 + u64::from(i));
        }
        amount.insert(finder.clone(), 1_000_000);
        let outs = outputs_of(amount, &finder, RuleSet::Legacy2011);
        assert_eq!(outs.len(), 4000);
        assert_eq!(outs.last().unwrap().script_pubkey, finder);
        assert!(outs.iter().all(|o| o.value > 1006));
    }

    #[test]
    fn ties_on_amount_keep_the_larger_script_bytes_and_order_is_by_script_then_finder() {
        let finder = payout(5);
        let mut amount = BTreeMap::new();
        for n in [1u8, 2, 3] {
            amount.insert(payout(n), 100);
        }
        amount.insert(finder.clone(), 1);
        amount.insert(payout(9), 0);
        let mut tight = amount.clone();
        tight.insert(script::p2sh(&[1; 20]), 100);
        // Legacy with room for all: zero amounts dropped, sorted by script bytes, finder last.
        let outs = outputs_of(amount, &finder, RuleSet::Legacy2011);
        let scripts: Vec<Vec<u8>> = outs.iter().map(|o| o.script_pubkey.clone()).collect();
        assert_eq!(
            scripts,
            vec![payout(1), payout(2), payout(3), finder.clone()]
        );
        // P2SH (a9…) sorts before P2PKH (76…)? No: 0x76 < 0xa9, so P2PKH first.
        let outs = outputs_of(tight, &finder, RuleSet::Legacy2011);
        assert_eq!(outs[3].script_pubkey, script::p2sh(&[1; 20]));
    }

    #[test]
    fn modern_gentx_has_the_height_push_and_the_commitment_first() {
        let net = modern_net();
        let tracker = Tracker::new();
        let req = GentxRequest {
            previous_share_hash: None,
            new_script: &payout(1),
            subsidy: 1000,
            nonce: b"abc",
            block_bits: Bits(0x1f1fffff),
            modern: Some(ModernFields {
                block_height: 128,
                witness_commitment: [3; 32],
            }),
        };
        let g = generate_transaction(&tracker, &net, &req).unwrap();
        assert!(g.tx.inputs[0].script_sig.starts_with(&[0x02, 0x80, 0x00]));
        assert_eq!(&g.tx.inputs[0].script_sig[3..11], &net.identifier);
        assert_eq!(
            g.tx.outputs[0].script_pubkey,
            script::witness_commitment_script(&[3; 32])
        );
        assert_eq!(g.tx.outputs[0].value, 0);
        assert_eq!(g.tx.outputs.iter().map(|o| o.value).sum::<u64>(), 1000);
        assert_eq!(g.tx.inputs[0].witness, vec![vec![0u8; 32]]);
        let none = GentxRequest {
            modern: Some(ModernFields {
                block_height: 128,
                witness_commitment: [0; 32],
            }),
            ..req
        };
        let g = generate_transaction(&tracker, &net, &none).unwrap();
        assert_eq!(g.tx.outputs.len(), 1);
        assert!(!g.tx.has_witness());
    }

    /// §5.4 as it was first written: sort everything by amount, then the kept by script.
    fn outputs_by_sorting(
        mut amount: Vec<(&[u8], u64)>,
        new_script: &[u8],
        rules: RuleSet,
    ) -> Vec<(Vec<u8>, u64)> {
        let cap = rules.max_payout_outputs();
        amount.sort_unstable_by(|a, b| (b.1, b.0).cmp(&(a.1, a.0)));
        let mut kept: Vec<(&[u8], u64)> = match rules {
            RuleSet::Legacy2011 => {
                amount.truncate(cap);
                amount
            }
            RuleSet::Modern => {
                let mut finder = 0u64;
                let mut kept = Vec::new();
                for (script, a) in amount {
                    if script == new_script {
                        finder += a;
                    } else if kept.len() < cap - 1 {
                        kept.push((script, a));
                    } else {
                        finder += a;
                    }
                }
                kept.push((new_script, finder));
                kept
            }
        };
        kept.sort_unstable_by(|a, b| (a.0 == new_script, a.0).cmp(&(b.0 == new_script, b.0)));
        kept.into_iter()
            .filter(|&(_, v)| v != 0)
            .map(|(s, v)| (s.to_vec(), v))
            .collect()
    }

    #[test]
    fn selecting_the_largest_pays_what_sorting_everything_paid() {
        // Scripts of several lengths sharing long prefixes, amounts with many ties and
        // zeros, around both caps.
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for case in 0..60 {
            let rules = if case % 3 == 0 {
                RuleSet::Legacy2011
            } else {
                RuleSet::Modern
            };
            let n = match case % 4 {
                0 => 5,
                1 => 199 + (next() % 4) as usize,
                2 => 300,
                _ => rules.max_payout_outputs() + (next() % 3) as usize,
            };
            let mut scripts: Vec<Vec<u8>> = (0..n)
                .map(|_| {
                    let len = [1, 7, 8, 9, 25, 34][(next() % 6) as usize];
                    let mut s = vec![0x76u8; len];
                    for b in s.iter_mut().skip((next() % 10) as usize) {
                        *b = (next() % 3) as u8;
                    }
                    s
                })
                .collect();
            scripts.sort();
            scripts.dedup();
            let amount: Vec<(&[u8], u64)> = scripts
                .iter()
                .map(|s| (s.as_slice(), next() % 4 * 1000))
                .collect();
            let finder = amount[(next() % amount.len() as u64) as usize].0;
            let mut finder_first = vec![paid(finder, 0)];
            for &(s, a) in &amount {
                if s == finder {
                    finder_first[0].value = a;
                } else {
                    finder_first.push(paid(s, a));
                }
            }
            // In script order (as a window gives them) or not (the sort's path).
            if case % 2 == 1 {
                finder_first[1..].reverse();
                let k = (next() % finder_first.len() as u64) as usize;
                finder_first[1..].rotate_left(k.saturating_sub(1));
            }
            let got: Vec<(Vec<u8>, u64)> = payout_outputs(finder_first, rules)
                .into_iter()
                .map(|p| (p.script.to_vec(), p.value))
                .collect();
            assert_eq!(
                got,
                outputs_by_sorting(amount, finder, rules),
                "case {case}"
            );
        }
    }

    #[test]
    fn divider_gives_what_the_512_bit_formula_gives() {
        // Totals in each regime (64-bit, 128-bit, beyond), weights at 0, at the total,
        // tied, and (a broken invariant) above it; subsidies from 0 to u64::MAX.
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for case in 0..400 {
            let subsidy = match case % 5 {
                0 => 0,
                1 => u64::MAX,
                2 => 5_000_000_000,
                _ => next() >> (next() % 64),
            };
            let by_weight = [396, 398][case % 2];
            let bits: usize = [8, 40, 63, 64, 80, 100, 118, 128, 200][(next() % 9) as usize];
            let mut total = U512::from(next()) << bits.saturating_sub(64);
            total >>= 64 - bits.min(64);
            if total.is_zero() {
                total = U512::from(1u64);
            }
            let divider = Divider::new(subsidy, by_weight, total);
            for k in 0..40u64 {
                let w = match k {
                    0 => U512::ZERO,
                    1 => total,
                    2 => total + U512::from(1u64),
                    3 => total << 1,
                    4 => total >> 1,
                    _ => total * U512::from(next() % 1000) / U512::from(1000u64),
                };
                let plain = (U512::from(subsidy) * U512::from(by_weight) * w
                    / (U512::from(400u64) * total))
                    .saturating_to::<u64>();
                assert_eq!(divider.of(w), plain, "case {case}, weight {k}");
            }
        }
    }

    #[test]
    fn generation_bytes_written_directly_are_the_transactions() {
        let scripts: Vec<Vec<u8>> = (1..8).map(payout).collect();
        for net in [legacy_net(true), modern_net()] {
            let (tracker, hashes) = sample::chain(&net, 14, 10, &scripts);
            for (commitment, script) in [([0; 32], payout(3)), ([7; 32], script::p2pk(&[4; 65]))] {
                let req = GentxRequest {
                    previous_share_hash: hashes.last().copied(),
                    new_script: &script,
                    subsidy: 5_000_000_000,
                    nonce: b"nonce",
                    block_bits: Bits(0x1f1fffff),
                    modern: (net.rules == RuleSet::Modern).then_some(ModernFields {
                        block_height: 300,
                        witness_commitment: commitment,
                    }),
                };
                let window =
                    window(&tracker, &net, req.previous_share_hash, req.block_bits).unwrap();
                let plan = Plan::new(&net, &window, &req).unwrap();
                let tx = build_generation(&net, &window, &req).unwrap().tx;
                assert_eq!(plan.stripped_bytes(), tx.to_stripped_bytes());
                assert_eq!(
                    generation_id(&net, &window, &req).unwrap(),
                    GenerationId {
                        txid: tx.txid(),
                        stripped_size: tx.stripped_size()
                    }
                );
            }
        }
    }

    #[test]
    fn coinbase_script_over_100_bytes_is_refused() {
        let net = legacy_net(false);
        let nonce = [0u8; 60];
        let script = payout(1);
        let req = GentxRequest {
            nonce: &nonce,
            ..request(None, &script, Bits(0x1f1fffff))
        };
        let err = generate_transaction(&Tracker::new(), &net, &req).unwrap_err();
        assert_eq!(err, GentxError::CoinbaseScriptTooLong { len: 105 });
    }
}
