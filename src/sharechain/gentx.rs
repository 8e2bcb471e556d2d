//! The generation transaction: retarget, PPLNS weights, amounts, output order and the
//! coinbase script (§5 of the legacy spec, with the fixes and modern changes).
//!
//! The same function builds work for local miners and regenerates a peer's share for
//! verification; every quantity that can pass 2^256 is computed in 512 bits.

use std::cell::RefCell;
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
use super::tracker::{Credit, Tracker, Weight, WindowWeights};

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
            .iter()
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
        tracker.nth_parent_with_work(&near_hash, window.saturating_sub(1)),
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
/// two 64-bit multiplications by a 128-bit reciprocal, exact; when they fit in 128 bits
/// (mainnet: about 2^118) a floating-point estimate checked (and if need be corrected)
/// in exact 128-bit arithmetic; only otherwise, or for a weight above the total (a
/// broken invariant), the 512-bit formula. The total must not be zero.
struct Divider {
    subsidy: u64,
    by_weight: u64,
    total: U512,
    fit: Fit,
}

#[derive(Clone, Copy)]
enum Fit {
    /// `scale × w // den` for `w ≤ max`, in 64 bits: `(scale × w × magic) >> 128` with
    /// `magic = ⌈2^128 / den⌉`, exact for every numerator below 2^64 (Lemire, Kaser and
    /// Kurz, "Faster remainder by direct computation", 2019, theorem 1: 128 ≥ 64 +
    /// log2 den). A division costs some 30 cycles, 300 times a share.
    Narrow { scale: u64, magic: u128, max: u64 },
    /// The same in 128 bits: `inverse ≈ 1 / den` gives an estimate that the
    /// remainder, computed exactly, confirms (or a division replaces).
    Wide {
        scale: u128,
        den: u128,
        inverse: f64,
        max: u128,
    },
    /// Neither fits: [`share_of`] for each weight.
    Full,
}

/// `⌊a × b / 2^128⌋` for `b < 2^64`.
#[inline(always)]
fn mul_high(a: u128, b: u64) -> u64 {
    let low = (a as u64 as u128) * u128::from(b);
    let high = (a >> 64) * u128::from(b);
    // high ≤ (2^64 − 1)^2 and low >> 64 < 2^64: no overflow.
    ((high + (low >> 64)) >> 64) as u64
}

/// `x` as a float, without the library's conversion call (rounding is fine: an
/// estimate).
#[inline(always)]
fn float(x: u128) -> f64 {
    ((x >> 64) as u64 as f64) * 18_446_744_073_709_551_616.0 + (x as u64 as f64)
}

impl Fit {
    /// `scale × w // den`, or `None` when `w` is beyond what this fit covers.
    #[inline(always)]
    fn quotient(self, w: u128) -> Option<u64> {
        match self {
            Fit::Narrow { scale, magic, max } => {
                (w <= u128::from(max)).then(|| mul_high(magic, scale * w as u64))
            }
            Fit::Wide {
                scale,
                den,
                inverse,
                max,
            } => {
                if w > max {
                    return None;
                }
                // At most scale / 400 < 2^64, since w ≤ total.
                let num = scale * w;
                let q = (float(num) * inverse) as u64;
                // Exact when q × den ≤ num < q × den + den, which a 53-bit estimate of
                // a quotient below 2^51 (amounts of at most MAX_MONEY) always is but
                // for rounding at the edge: then one step either way, else divide.
                Some(match (q as u128).checked_mul(den) {
                    Some(low) if low <= num => {
                        if num - low < den {
                            q
                        } else if num - low - den < den {
                            q + 1
                        } else {
                            (num / den) as u64
                        }
                    }
                    _ if q > 0 && (q as u128 - 1).checked_mul(den).is_some_and(|l| l <= num) => {
                        q - 1
                    }
                    _ => (num / den) as u64,
                })
            }
            Fit::Full => None,
        }
    }
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
                            // den ≥ 400: the total is not zero (checked by the caller),
                            // so ⌊(2^128 − 1) / den⌋ + 1 (which is ⌈2^128 / den⌉, den
                            // dividing 2^128 or not) fits.
                            magic: u128::MAX / u128::from(den) + 1,
                            max: t as u64,
                        },
                        _ => Fit::Wide {
                            scale,
                            den,
                            inverse: 1.0 / float(den),
                            max: t,
                        },
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
        match u128::try_from(w) {
            Ok(w) => self.of128(w),
            Err(_) => share_of(self.subsidy, self.by_weight, w, self.total),
        }
    }

    /// [`Divider::of`] for a weight below 2^128.
    #[inline]
    fn of128(&self, w: u128) -> u64 {
        match self.fit.quotient(w) {
            Some(q) => q,
            None => self.slow(w),
        }
    }

    /// The 512-bit formula, out of the way of the fast paths.
    #[cold]
    #[inline(never)]
    fn slow(&self, w: u128) -> u64 {
        share_of(self.subsidy, self.by_weight, U512::from(w), self.total)
    }

    /// [`Divider::of`] for a window's weight of either width.
    #[inline]
    fn of_weight<W: Weight>(&self, w: W) -> u64 {
        match w.as_u128() {
            Some(w) => self.of128(w),
            None => self.of(w.wide()),
        }
    }
}

/// Where a paid script comes from: its number in the tracker's table for a window's
/// script, its place for a list's (see [`ByScript::script`]), or one of these two (the
/// tracker numbers fewer scripts than it has shares, a list is shorter than a window).
type Src = u32;
const FINDER: Src = u32::MAX;
const DONATION: Src = u32::MAX - 1;

/// An amount to pay, with its script's [`script_key`] computed once: the selection and
/// the sort below compare keys, and read a script's bytes only on a tie. The script is
/// named by where it comes from ([`Payees::script`]), so that lists of these outlive a
/// share and are reused.
#[derive(Debug, Clone, Copy)]
struct Paid {
    key: u64,
    value: u64,
    src: Src,
}

/// The scripts a generation transaction pays: the finder, the donation and the window's.
#[derive(Clone, Copy)]
struct Payees<'w, 'a> {
    finder: &'a [u8],
    donation: Option<&'a [u8]>,
    by_script: &'w ByScript<'a>,
}

impl<'a> Payees<'_, 'a> {
    fn script(&self, src: Src) -> &'a [u8] {
        match src {
            FINDER => self.finder,
            DONATION => self.donation.unwrap_or_default(),
            src => self.by_script.script(src),
        }
    }

    /// Scripts in byte order.
    fn by_script(&self, a: &Paid, b: &Paid) -> std::cmp::Ordering {
        a.key
            .cmp(&b.key)
            .then_with(|| self.script(a.src).cmp(self.script(b.src)))
    }

    /// Largest amount first, ties broken by the larger script, as R's reverse sort by
    /// (amount, script).
    fn largest_first(&self, a: &Paid, b: &Paid) -> std::cmp::Ordering {
        b.value.cmp(&a.value).then_with(|| self.by_script(b, a))
    }

    /// Adds `value` to `src`'s script, or pays it anew.
    fn credit(&self, amount: &mut Vec<Paid>, src: Src, value: u64) {
        let script = self.script(src);
        let key = script_key(script);
        match amount
            .iter_mut()
            .find(|p| p.key == key && self.script(p.src) == script)
        {
            Some(p) => p.value += value,
            None => amount.push(Paid { key, value, src }),
        }
    }
}

/// Pays each of a window's credits but the finder's by weight; returns the finder's.
fn pay_credits<W: Weight>(
    amount: &mut Vec<Paid>,
    credits: &[Credit<W>],
    window: &WindowWeights<'_>,
    finder: &[u8],
    finder_key: u64,
    divider: &Divider,
) -> U512 {
    let mut own = U512::ZERO;
    for c in credits {
        // Keys first: most scripts differ from the finder's in their first 8 bytes.
        if c.key == finder_key && window.bytes(c.script) == finder {
            own += c.weight.wide();
        } else if !c.weight.is_zero() {
            amount.push(Paid {
                key: c.key,
                value: divider.of_weight(c.weight),
                src: c.script,
            });
        }
    }
    own
}

/// Splits `subsidy` by weight (§5.3): 396/400 by weight + 2/400 to the finder + 2/400
/// and the rounding remainder to the donation script, or without donation 398/400 by
/// weight + 2/400 and the remainder to the finder. The finder has `this_weight` and its
/// weight in the window, if any (it is paid the fee all the same); the window has each
/// script once. Writes into `amount` each script once, the finder's first, others of
/// weight 0 left out.
fn amounts(
    amount: &mut Vec<Paid>,
    payees: &Payees<'_, '_>,
    subsidy: u64,
    this_weight: U512,
    total: U512,
) -> Result<(), GentxError> {
    if total.is_zero() {
        return Err(GentxError::ZeroTotalWeight);
    }
    let by_weight = if payees.donation.is_some() {
        396u64
    } else {
        398
    };
    let divider = Divider::new(subsidy, by_weight, total);
    let finder = payees.finder;
    let finder_key = script_key(finder);
    // One pass: each script's key, kept by the window, serves the finder comparison,
    // the donation's and the selection and order of the outputs.
    amount.clear();
    amount.reserve(payees.by_script.len() + 2);
    amount.push(Paid {
        key: finder_key,
        value: 0,
        src: FINDER,
    });
    let own = match payees.by_script {
        ByScript::Window(window) => match (window.narrow(), window.wide()) {
            (Some(credits), _) => {
                pay_credits(amount, credits, window, finder, finder_key, &divider)
            }
            (_, Some(credits)) => {
                pay_credits(amount, credits, window, finder, finder_key, &divider)
            }
            _ => U512::ZERO,
        },
        ByScript::List(list) => {
            let mut own = U512::ZERO;
            for (k, &(script, w)) in list.iter().enumerate() {
                let key = script_key(script);
                if key == finder_key && script == finder {
                    own += w;
                } else if !w.is_zero() {
                    amount.push(Paid {
                        key,
                        value: divider.of(w),
                        src: k as Src,
                    });
                }
            }
            own
        }
    };
    let fee = subsidy * 2 / 400;
    amount[0].value = divider.of(this_weight + own) + fee;
    let remainder_to = match payees.donation {
        Some(_) => {
            payees.credit(amount, DONATION, fee);
            DONATION
        }
        None => FINDER,
    };
    let paid: u64 = amount.iter().map(|p| p.value).sum();
    payees.credit(amount, remainder_to, subsidy.saturating_sub(paid));
    Ok(())
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

/// Drops `amount[..from]`, keeps the `keep` largest of `amount[from..]` in their order
/// but none of value 0, and returns the sum of the others and whether the kept are in
/// script order. Each script is in `amount` once, so no two are equal by
/// [`Payees::largest_first`]. `values` is room to work in.
fn keep_largest(
    amount: &mut Vec<Paid>,
    from: usize,
    keep: usize,
    payees: &Payees<'_, '_>,
    values: &mut Vec<u64>,
) -> (u64, bool) {
    let candidates = amount.get(from..).unwrap_or_default();
    // In script order (as the window gives them), position breaks ties as the script
    // would: the selection compares integers only.
    let sorted = candidates.is_sorted_by(|a, b| payees.by_script(a, b).is_lt());
    let mut index = 0;
    let mut rest = 0;
    let mut keep_if = |amount: &mut Vec<Paid>, kept: &dyn Fn(usize, &Paid) -> bool| {
        // One pass that keeps the order.
        amount.retain(|p| {
            index += 1;
            if index <= from {
                return false;
            }
            let kept = p.value != 0 && kept(index - from - 1, p);
            if !kept {
                rest += p.value;
            }
            kept
        });
    };
    if sorted {
        match smallest_kept_value(candidates, keep, values) {
            Some((value, position)) => keep_if(amount, &|k, p| {
                p.value > value || (p.value == value && k >= position)
            }),
            None => keep_if(amount, &|_, _| keep > 0),
        }
    } else {
        let cutoff = smallest_kept(candidates, keep, payees, values);
        keep_if(amount, &|_, p| {
            cutoff.is_some_and(|c| payees.largest_first(p, &c).is_le())
        });
    }
    (rest, sorted)
}

/// For `candidates` in script order, the smallest kept amount and the position from
/// which those equal to it are kept (ties go to the larger script, the later one), when
/// fewer than all are kept; `None` when all or none are.
fn smallest_kept_value(
    candidates: &[Paid],
    keep: usize,
    values: &mut Vec<u64>,
) -> Option<(u64, usize)> {
    if keep == 0 || keep >= candidates.len() {
        return None;
    }
    let last = keep - 1;
    values.clear();
    values.extend(candidates.iter().map(|p| p.value));
    let (_, &mut value, _) = values.select_nth_unstable_by(last, |a, b| b.cmp(a));
    let above = values[..last].iter().filter(|&&v| v > value).count();
    // The last `keep − above` of the amounts equal to it are kept.
    let mut tied = keep - above;
    for (k, p) in candidates.iter().enumerate().rev() {
        if p.value == value {
            tied -= 1;
            if tied == 0 {
                return Some((value, k));
            }
        }
    }
    // Not reached: at least `keep − above` amounts equal the selected one.
    Some((value, 0))
}

/// The smallest by [`Payees::largest_first`] of the `keep` largest of `candidates`: the
/// largest are those not after it. `None` when none is kept.
///
/// The selection runs on the amounts alone, copied out to `values` (integer comparisons,
/// and the list keeps its order); only scripts tied with the smallest kept amount are
/// compared by their bytes.
fn smallest_kept(
    candidates: &[Paid],
    keep: usize,
    payees: &Payees<'_, '_>,
    values: &mut Vec<u64>,
) -> Option<Paid> {
    let last = keep.min(candidates.len()).checked_sub(1)?;
    values.clear();
    values.extend(candidates.iter().map(|p| p.value));
    let (_, &mut value, _) = values.select_nth_unstable_by(last, |a, b| b.cmp(a));
    let above = values[..last].iter().filter(|&&v| v > value).count();
    let mut tied: Vec<Paid> = candidates
        .iter()
        .filter(|p| p.value == value)
        .copied()
        .collect();
    // `last − above` of the tied amounts come before the smallest kept; largest first.
    tied.sort_unstable_by(|a, b| payees.largest_first(a, b));
    tied.get(last - above).copied()
}

/// Chooses the paid outputs and their order (§5.4, and the modern 200-output cap):
/// by script bytes, the finder last, none of value 0. `paid` has each script once,
/// the finder's first; `values` is room to work in.
///
/// Only which scripts make the cut depends on the order by amount, so the largest are
/// selected (linear time), not sorted, and the list keeps its order by script.
fn payout_outputs(
    paid: &mut Vec<Paid>,
    payees: &Payees<'_, '_>,
    rules: RuleSet,
    values: &mut Vec<u64>,
) {
    let cap = rules.max_payout_outputs();
    let Some(&finder) = paid.first() else {
        return;
    };
    let (finder_value, sorted) = match rules {
        RuleSet::Legacy2011 => {
            // The `cap` largest, the finder among them or not; the rest is not paid.
            let (_, sorted) = keep_largest(paid, 0, cap, payees, values);
            let script = payees.script(finder.src);
            let at = paid
                .iter()
                .position(|p| p.key == finder.key && payees.script(p.src) == script);
            (at.map(|k| paid.remove(k).value), sorted)
        }
        RuleSet::Modern => {
            // The finder and the `cap − 1` largest others; the rest is the finder's.
            let (rest, sorted) = keep_largest(paid, 1, cap.saturating_sub(1), payees, values);
            (Some(finder.value + rest), sorted)
        }
    };
    // The window hands its scripts in order, so only a donation script credited at the
    // end (or a caller's list in another order) needs the sort.
    if !sorted && !paid.is_sorted_by(|a, b| payees.by_script(a, b).is_lt()) {
        paid.sort_unstable_by(|a, b| payees.by_script(a, b));
    }
    paid.extend(
        finder_value
            .filter(|&value| value != 0)
            .map(|value| Paid { value, ..finder }),
    );
}

/// The coinbase script: [BIP34 height push, modern only] ‖ IDENTIFIER ‖ share_data.
pub fn coinbase_script(
    net: &Network,
    share_data: &ShareData,
    modern: Option<&ModernFields>,
) -> Vec<u8> {
    coinbase_script_of(
        net,
        share_data.previous_share_hash,
        share_data.target,
        &share_data.nonce,
        modern,
    )
}

fn coinbase_script_of(
    net: &Network,
    previous_share_hash: Option<Hash256>,
    target: Bits,
    nonce: &[u8],
    modern: Option<&ModernFields>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    if let Some(m) = modern {
        out.extend_from_slice(&script::height_push(m.block_height));
    }
    out.extend_from_slice(&net.identifier);
    out.extend_from_slice(&previous_share_hash.unwrap_or(Hash256::ZERO).0);
    out.put_u32_le(target.0);
    out.put_var_bytes(nonce);
    out
}

/// The weights of the window before a share, by payout script, each script once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ByScript<'a> {
    /// The tracker's window, borrowed: in the order of the scripts' bytes.
    Window(WindowWeights<'a>),
    /// A list in any order (work keeps its window so, apart from the tracker).
    List(Vec<(&'a [u8], U512)>),
}

impl<'a> ByScript<'a> {
    pub fn len(&self) -> usize {
        match self {
            ByScript::Window(w) => w.len(),
            ByScript::List(l) => l.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `k`-th script and its weight.
    pub fn get(&self, k: usize) -> Option<(&'a [u8], U512)> {
        match self {
            ByScript::Window(w) => w.get(k),
            ByScript::List(l) => l.get(k).copied(),
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&'a [u8], U512)> + '_ {
        (0..self.len()).filter_map(|k| self.get(k))
    }

    /// The script of a [`Paid`] from this window: for the tracker's, the script
    /// numbered `src` in its table; for a list, the `src`-th (empty past the end).
    fn script(&self, src: Src) -> &'a [u8] {
        match self {
            ByScript::Window(w) => w.bytes(src),
            ByScript::List(l) => l.get(src as usize).map_or(&[], |e| e.0),
        }
    }
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
    /// The weights of the window before this share, by payout script, each script once.
    pub by_script: ByScript<'a>,
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
    let by_script = tracker.weights(previous, max_shares, desired);
    let other_total = by_script.total();
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
        by_script: ByScript::Window(by_script),
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
    let plan = Plan::new(net, window, req, &mut Scratch::default())?;
    Ok(Generated {
        tx: plan.transaction(),
        share_data: ShareData {
            previous_share_hash: window.previous_share_hash,
            target: window.target,
            nonce: req.nonce.to_vec(),
        },
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

/// Room to work in, kept from one share's verification to the next (no allocation per
/// share): the amounts, the selection's copy of them, the transaction's bytes.
#[derive(Debug, Default)]
struct Scratch {
    paid: Vec<Paid>,
    values: Vec<u64>,
    select: Vec<u64>,
    bytes: Vec<u8>,
    /// The cut of the latest share's outputs: the next share's is near it.
    last_cut: u64,
}

/// The window's credits, their weights' table, and the finder's script key and bytes.
type Payees128<'a, 'w> = (&'a [Credit<u128>], &'a WindowWeights<'w>, u64, &'a [u8]);

/// Writes into `values` the amount of each credit (0 for the finder's own credit, paid
/// with the finder) and returns the finder's weight in the window, the sum of the amounts
/// and how many are not zero. Generic in `amount` so that each divider gets its own loop.
#[inline(always)]
fn fill_amounts(
    values: &mut Vec<u64>,
    (credits, weights, finder_key, finder): Payees128<'_, '_>,
    amount: impl Fn(u128) -> u64,
) -> (u128, u64, usize) {
    let (mut own, mut paid, mut nonzero) = (0u128, 0u64, 0usize);
    values.clear();
    values.extend(credits.iter().map(|c| {
        if c.key == finder_key && weights.bytes(c.script) == finder {
            // Paid with the finder (a script is in a window once).
            own = c.weight;
            0
        } else {
            let value = amount(c.weight);
            paid += value;
            nonzero += usize::from(value != 0);
            value
        }
    }));
    (own, paid, nonzero)
}

/// Ranks [`kth_largest`] finds by a pass instead of a selection.
const NEAR_RANKS: usize = 8;

/// The `keep`-th largest of `values` (`1 ≤ keep ≤ values.len()`), found near `guess`
/// (the previous share's cut: from one share to the next, one share enters the window
/// and one leaves it, so the cut moves by a rank or two). One pass counts the values
/// above and at the guess; when the answer is within [`NEAR_RANKS`] ranks of it, a
/// second pass picks it; only otherwise a selection on a copy (in `copy`).
fn kth_largest(values: &[u64], keep: usize, guess: u64, copy: &mut Vec<u64>) -> u64 {
    let (mut above, mut equal) = (0, 0);
    for &v in values {
        above += usize::from(v > guess);
        equal += usize::from(v == guess);
    }
    if above < keep && keep <= above + equal {
        return guess;
    }
    if above >= keep {
        // The (above − keep + 1)-th smallest of those above the guess.
        let rank = above - keep + 1;
        if rank <= NEAR_RANKS {
            return nth_nearest(
                values.iter().copied().filter(|&v| v > guess),
                rank,
                |a, b| a < b,
            );
        }
    } else {
        // The (keep − above − equal)-th largest of those below it.
        let rank = keep - above - equal;
        if rank <= NEAR_RANKS {
            return nth_nearest(
                values.iter().copied().filter(|&v| v < guess),
                rank,
                |a, b| a > b,
            );
        }
    }
    copy.clear();
    copy.extend_from_slice(values);
    let (_, &mut cut, _) = copy.select_nth_unstable_by(keep - 1, |a, b| b.cmp(a));
    cut
}

/// The `rank`-th (from 1, at most [`NEAR_RANKS`]) of `values` in the order `first`
/// (whether `a` comes before `b`); `values` holds at least `rank`.
fn nth_nearest(
    values: impl Iterator<Item = u64>,
    rank: usize,
    first: impl Fn(u64, u64) -> bool,
) -> u64 {
    // The `rank` first seen so far, in order.
    let mut best = [0u64; NEAR_RANKS];
    let mut len = 0;
    for v in values {
        if len == rank && !first(v, best[rank - 1]) {
            continue;
        }
        let mut k = len.min(rank - 1);
        if len < rank {
            len += 1;
        }
        while k > 0 && first(v, best[k - 1]) {
            best[k] = best[k - 1];
            k -= 1;
        }
        best[k] = v;
    }
    best[rank - 1]
}

thread_local! {
    /// [`generation_id`]'s room, on the thread that verifies shares (the node's).
    static SCRATCH: RefCell<Scratch> = RefCell::default();
}

/// The txid and stripped size of the transaction [`build_generation`] builds, from its
/// bytes written once: no `Transaction`, no copy of each payout script.
pub fn generation_id(
    net: &Network,
    window: &Window<'_>,
    req: &GentxRequest<'_>,
) -> Result<GenerationId, GentxError> {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut scratch) => generation_id_in(net, window, req, &mut scratch),
        Err(_) => generation_id_in(net, window, req, &mut Scratch::default()),
    })
}

fn generation_id_in(
    net: &Network,
    window: &Window<'_>,
    req: &GentxRequest<'_>,
    scratch: &mut Scratch,
) -> Result<GenerationId, GentxError> {
    if let (RuleSet::Modern, None, ByScript::Window(weights)) =
        (net.rules, &net.donation_script, &window.by_script)
        && let Some(credits) = weights.narrow()
    {
        modern_bytes(net, window, weights, credits, req, scratch)?;
        return Ok(GenerationId {
            txid: sha256d(&scratch.bytes),
            stripped_size: scratch.bytes.len(),
        });
    }
    let plan = Plan::new(net, window, req, scratch)?;
    plan.write_stripped(&mut scratch.bytes);
    scratch.paid = plan.payouts;
    Ok(GenerationId {
        txid: sha256d(&scratch.bytes),
        stripped_size: scratch.bytes.len(),
    })
}

/// Writes into `scratch.bytes` what [`Plan`] writes (a test compares the two on random
/// windows), for what every share of a built-in network is: modern rules, no donation,
/// the tracker's window in 128 bits. No list of amounts: one pass over the window's
/// credits for their amounts (in `scratch.values`, aligned with the credits), the
/// selection on a copy of them, one pass that writes the kept ones.
fn modern_bytes(
    net: &Network,
    window: &Window<'_>,
    weights: &WindowWeights<'_>,
    credits: &[Credit<u128>],
    req: &GentxRequest<'_>,
    scratch: &mut Scratch,
) -> Result<(), GentxError> {
    let script_sig = coinbase_script_of(
        net,
        window.previous_share_hash,
        window.target,
        req.nonce,
        req.modern.as_ref(),
    );
    if script_sig.len() > MAX_COINBASE_SCRIPT_LEN {
        return Err(GentxError::CoinbaseScriptTooLong {
            len: script_sig.len(),
        });
    }
    let this_weight = window.weights.this_weight;
    let total = this_weight + window.weights.other_total;
    if total.is_zero() {
        return Err(GentxError::ZeroTotalWeight);
    }
    // `amounts`: 398/400 by weight, 2/400 and the remainder to the finder.
    let subsidy = req.subsidy;
    let divider = Divider::new(subsidy, 398, total);
    let finder = req.new_script;
    let finder_key = script_key(finder);
    let values = &mut scratch.values;
    // One loop per kind of divider, its constants in registers (a `match` in the loop
    // reloaded them for every credit).
    let payees = (credits, weights, finder_key, finder);
    let (own, mut paid, nonzero) = match divider.fit {
        Fit::Narrow { scale, magic, max } => fill_amounts(values, payees, |w| {
            if w <= u128::from(max) {
                mul_high(magic, scale * w as u64)
            } else {
                divider.slow(w)
            }
        }),
        _ => fill_amounts(values, payees, |w| divider.of128(w)),
    };
    let mut finder_value = divider.of(this_weight + U512::from(own)) + subsidy * 2 / 400;
    paid += finder_value;
    finder_value += subsidy.saturating_sub(paid);

    // `payout_outputs`: the `keep` largest others by (amount, script), in script order:
    // amounts above `cut`, and those equal to it from the credit `from` on. None of 0.
    let keep = RuleSet::Modern.max_payout_outputs().saturating_sub(1);
    let (cut, from) = if keep == 0 {
        (u64::MAX, usize::MAX)
    } else if nonzero <= keep {
        (1, 0)
    } else {
        let cut = kth_largest(values, keep, scratch.last_cut, &mut scratch.select);
        scratch.last_cut = cut;
        let above = values.iter().filter(|&&v| v > cut).count();
        // The last `keep − above` of the amounts equal to it (ties go to the larger
        // script, later in the window).
        let mut tied = keep - above;
        let mut from = 0;
        for (k, &v) in values.iter().enumerate().rev() {
            if v == cut {
                tied -= 1;
                if tied == 0 {
                    from = k;
                    break;
                }
            }
        }
        (cut, from)
    };
    let kept = |k: usize, v: u64| v > cut || (v == cut && k >= from);
    // The finder's output, unless it comes to 0 with what the cut leaves it.
    let finder_paid = finder_value != 0
        || values
            .iter()
            .enumerate()
            .any(|(k, &v)| v != 0 && !kept(k, v));

    let commitment = req
        .modern
        .as_ref()
        .and_then(ModernFields::commitment)
        .map(|c| script::witness_commitment_script(&c));
    let outputs = nonzero.min(keep) + usize::from(finder_paid) + usize::from(commitment.is_some());
    let out = &mut scratch.bytes;
    out.clear();
    out.put_u32_le(1); // version
    out.put_compact_size(1);
    OutPoint::NULL.txid.encode_to(out);
    out.put_u32_le(OutPoint::NULL.vout);
    out.put_var_bytes(&script_sig);
    out.put_u32_le(0xffff_ffff); // sequence
    out.put_compact_size(outputs as u64);
    if let Some(c) = &commitment {
        out.put_u64_le(0);
        out.put_var_bytes(c);
    }
    let mut rest = 0;
    for (k, (c, &value)) in credits.iter().zip(values.iter()).enumerate() {
        if kept(k, value) {
            put_output(out, value, weights.bytes(c.script));
        } else {
            rest += value;
        }
    }
    if finder_paid {
        out.put_u64_le(finder_value + rest);
        out.put_var_bytes(finder);
    }
    out.put_u32_le(0); // lock time
    Ok(())
}

/// Writes one output: `value`, then `script` with its length. The standard lengths
/// (P2WPKH, P2SH, P2PKH, P2WSH and P2TR) go as one fixed-size block: a copy of an
/// unknown length is a call, 200 times a share.
#[inline(always)]
fn put_output(out: &mut Vec<u8>, value: u64, script: &[u8]) {
    match script.len() {
        22 => put_fixed::<22>(out, value, script),
        23 => put_fixed::<23>(out, value, script),
        25 => put_fixed::<25>(out, value, script),
        34 => put_fixed::<34>(out, value, script),
        _ => {
            out.put_u64_le(value);
            out.put_var_bytes(script);
        }
    }
}

/// An output whose `script` is `N` bytes long (`N` below 0xfd): written in place, not
/// through a block on the stack (whose read-back, a store-forwarding stall, cost more
/// than the copy).
#[inline(always)]
fn put_fixed<const N: usize>(out: &mut Vec<u8>, value: u64, script: &[u8]) {
    out.reserve(9 + N);
    out.put_u64_le(value);
    out.push(N as u8);
    out.extend_from_slice(&script[..N]);
}

/// A generation transaction decided but not written: its coinbase script, witness
/// commitment and payouts (scripts borrowed from the window and the request). Written as
/// a `Transaction` for work and blocks, or straight to bytes for verification.
struct Plan<'w, 'a> {
    script_sig: Vec<u8>,
    commitment: Option<[u8; 32]>,
    payees: Payees<'w, 'a>,
    /// In output order.
    payouts: Vec<Paid>,
}

impl<'w, 'a> Plan<'w, 'a> {
    /// Takes `scratch.paid` for its payouts (give it back) and works in `scratch.values`.
    fn new(
        net: &'a Network,
        window: &'w Window<'a>,
        req: &GentxRequest<'a>,
        scratch: &mut Scratch,
    ) -> Result<Plan<'w, 'a>, GentxError> {
        let script_sig = coinbase_script_of(
            net,
            window.previous_share_hash,
            window.target,
            req.nonce,
            req.modern.as_ref(),
        );
        if script_sig.len() > MAX_COINBASE_SCRIPT_LEN {
            return Err(GentxError::CoinbaseScriptTooLong {
                len: script_sig.len(),
            });
        }
        let payees = Payees {
            finder: req.new_script,
            donation: net.donation_script.as_deref(),
            by_script: &window.by_script,
        };
        let this_weight = window.weights.this_weight;
        let total_weight = this_weight + window.weights.other_total;
        let mut payouts = std::mem::take(&mut scratch.paid);
        amounts(
            &mut payouts,
            &payees,
            req.subsidy,
            this_weight,
            total_weight,
        )?;
        payout_outputs(&mut payouts, &payees, net.rules, &mut scratch.values);
        Ok(Plan {
            script_sig,
            commitment: req.modern.as_ref().and_then(ModernFields::commitment),
            payees,
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
            script_pubkey: self.payees.script(p.src).to_vec(),
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

    /// `self.transaction().to_stripped_bytes()`, written directly into `out` (a test
    /// holds the two equal).
    fn write_stripped(&self, out: &mut Vec<u8>) {
        let commitment = self
            .commitment
            .map(|c| script::witness_commitment_script(&c));
        let outputs = self.payouts.len() + usize::from(commitment.is_some());
        out.clear();
        out.put_u32_le(1); // version
        out.put_compact_size(1);
        OutPoint::NULL.txid.encode_to(out);
        out.put_u32_le(OutPoint::NULL.vout);
        out.put_var_bytes(&self.script_sig);
        out.put_u32_le(0xffff_ffff); // sequence
        out.put_compact_size(outputs as u64);
        if let Some(c) = &commitment {
            out.put_u64_le(0);
            out.put_var_bytes(c);
        }
        for p in &self.payouts {
            let script = self.payees.script(p.src);
            out.put_u64_le(p.value);
            // A one-byte length for every script but a long one (the common case
            // written inline: this loop writes some 200 outputs a share).
            match u8::try_from(script.len()) {
                Ok(len) if len < 0xfd => out.push(len),
                _ => out.put_compact_size(script.len() as u64),
            }
            out.extend_from_slice(script);
        }
        out.put_u32_le(0); // lock time
    }

    #[cfg(test)]
    fn stripped_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_stripped(&mut out);
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
        let by_script = ByScript::List(weights.iter().map(|(s, &w)| (s.as_slice(), w)).collect());
        let payees = Payees {
            finder: new_script,
            donation,
            by_script: &by_script,
        };
        let mut out = Vec::new();
        amounts(&mut out, &payees, subsidy, U512::ZERO, total).map(|()| {
            out.iter()
                .map(|p| (payees.script(p.src).to_vec(), p.value))
                .collect()
        })
    }

    /// `payout_outputs` of a list of scripts and amounts, the finder's first.
    fn select(finder_first: &[(&[u8], u64)], rules: RuleSet) -> Vec<(Vec<u8>, u64)> {
        let Some((&(finder, value), rest)) = finder_first.split_first() else {
            return Vec::new();
        };
        let by_script = ByScript::List(rest.iter().map(|&(s, _)| (s, U512::ZERO)).collect());
        let payees = Payees {
            finder,
            donation: None,
            by_script: &by_script,
        };
        let mut paid = vec![Paid {
            key: script_key(finder),
            value,
            src: FINDER,
        }];
        paid.extend(rest.iter().enumerate().map(|(k, &(s, value))| Paid {
            key: script_key(s),
            value,
            src: k as Src,
        }));
        payout_outputs(&mut paid, &payees, rules, &mut Vec::new());
        paid.iter()
            .map(|p| (payees.script(p.src).to_vec(), p.value))
            .collect()
    }

    fn outputs_of(amount: BTreeMap<Vec<u8>, u64>, finder: &[u8], rules: RuleSet) -> Vec<TxOut> {
        let mut list = vec![(finder, amount.get(finder).copied().unwrap_or(0))];
        list.extend(
            amount
                .iter()
                .filter(|(s, _)| s.as_slice() != finder)
                .map(|(s, a)| (s.as_slice(), *a)),
        );
        select(&list, rules)
            .into_iter()
            .map(|(script_pubkey, value)| TxOut {
                value,
                script_pubkey,
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
        let mut next = crate::bitcoin::xorshift(0x2545_f491_4f6c_dd1du64);
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
            let mut finder_first = vec![(finder, 0)];
            for &(s, a) in &amount {
                if s == finder {
                    finder_first[0].1 = a;
                } else {
                    finder_first.push((s, a));
                }
            }
            // In script order (as a window gives them) or not (the sort's path).
            if case % 2 == 1 {
                finder_first[1..].reverse();
                let k = (next() % finder_first.len() as u64) as usize;
                finder_first[1..].rotate_left(k.saturating_sub(1));
            }
            let got = select(&finder_first, rules);
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
        let mut next = crate::bitcoin::xorshift(0x9e37_79b9_7f4a_7c15u64);
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
                let plan = Plan::new(&net, &window, &req, &mut Scratch::default()).unwrap();
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
    fn window_weights_and_a_list_of_them_give_the_same_transaction() {
        // The tracker's window (scripts in order, keys kept, weights in 128 bits or 512)
        // against the same weights as a list in another order (keys computed, 512-bit
        // weights, sorted at the end): random weights from 0 to past 2^256, windows
        // capped or not, both rule sets with and without donation, more scripts than
        // the modern cap.
        let mut next = crate::bitcoin::xorshift(0x853c_49e6_748f_ea9bu64);
        // Standard templates (modern chains take no other), some sharing their 8-byte keys.
        let mut scripts: Vec<Vec<u8>> = (0..=255).map(payout).collect();
        scripts.push(script::p2pk(&[4; 65]));
        scripts.extend(
            (0..4u8).map(|k| {
                script::p2pkh(&[1, 1, 1, 1, 1, k, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
            }),
        );
        for (rules, donation) in [
            (RuleSet::Modern, false),
            (RuleSet::Modern, true),
            (RuleSet::Legacy2011, false),
            (RuleSet::Legacy2011, true),
        ] {
            let mut net = legacy_net(donation);
            net.rules = rules;
            net.chain_length = 260;
            let mut order = scripts.clone();
            for k in (1..order.len()).rev() {
                order.swap(k, (next() % (k as u64 + 1)) as usize);
            }
            let (small, hashes) = sample::chain(&net, 280, 10, &order[..255]);
            // The fast path's case (`modern_bytes`) more often.
            let cases = if rules == RuleSet::Modern && !donation {
                360
            } else {
                72
            };
            for case in (0..cases).map(|c| c % 72) {
                let shift = [0usize, 40, 70, 100, 130, 200][case % 6];
                // Few multipliers make many ties; a few huge weights make most amounts 0.
                let (few, spiky) = (case / 18 % 2 == 1, case / 36 == 1);
                let scale: Vec<U512> = hashes
                    .iter()
                    .map(|_| match next() % 32 {
                        0..4 => U512::ZERO,
                        4 if spiky => U512::from(1u64) << (shift + 60),
                        _ if few => U512::from(1 + next() % 4) << shift,
                        _ => U512::from(next() % 1000) << shift,
                    })
                    .collect();
                let tracker = Tracker::rescaled(&small, &hashes, |k| scale[k]);
                let finder = &scripts[(next() % scripts.len() as u64) as usize];
                let block_bits = match case / 6 % 3 {
                    0 => Bits(0x1f1fffff),
                    1 => Bits::from_target_floor(U256::MAX >> (shift + 22)),
                    _ => Bits::from_target_floor(U256::MAX >> 255),
                };
                let req = GentxRequest {
                    previous_share_hash: hashes.get(279 - case % 20).copied(),
                    new_script: finder,
                    subsidy: [5_000_000_000, 7_000_000_000, 199, u64::MAX >> 12]
                        [(next() % 4) as usize],
                    nonce: b"nonce",
                    block_bits,
                    modern: (rules == RuleSet::Modern).then_some(ModernFields {
                        block_height: 300,
                        witness_commitment: [case as u8; 32],
                    }),
                };
                // The target as retargeting would give it (this chain's rates are made up).
                let target = Bits::from_target_floor(net.max_target);
                let window = window_with_target(
                    &tracker,
                    &net,
                    req.previous_share_hash,
                    req.block_bits,
                    target,
                )
                .unwrap();
                let mut list: Vec<(&[u8], U512)> = window.by_script.iter().collect();
                list.reverse();
                let k = (next() % (list.len() as u64 + 1)) as usize;
                let k = k.min(list.len());
                list.rotate_left(k);
                let listed = Window {
                    by_script: ByScript::List(list),
                    ..window.clone()
                };
                let from_window = Plan::new(&net, &window, &req, &mut Scratch::default())
                    .map(|p| p.stripped_bytes());
                let from_list = Plan::new(&net, &listed, &req, &mut Scratch::default())
                    .map(|p| p.stripped_bytes());
                assert_eq!(from_window, from_list, "{rules:?}, case {case}");
                assert_eq!(
                    generation_id(&net, &window, &req),
                    generation_id(&net, &listed, &req)
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

    #[test]
    fn the_kth_largest_near_a_guess_is_what_a_sort_gives() {
        let mut next = crate::bitcoin::xorshift(0x2545_f491_4f6c_dd1d);
        let mut copy = Vec::new();
        for case in 0..2_000 {
            let n = 1 + (next() % 300) as usize;
            // Few distinct values (ties) in some cases, spread ones in others.
            let spread = [4, 50, 1 << 40][case % 3];
            let values: Vec<u64> = (0..n).map(|_| next() % spread).collect();
            let keep = 1 + (next() % n as u64) as usize;
            let mut sorted = values.clone();
            sorted.sort_unstable_by(|a, b| b.cmp(a));
            let want = sorted[keep - 1];
            // Guesses: the answer, its neighbours in rank, values near it, far away.
            let near = |d: usize| sorted[(keep - 1 + d).min(n - 1)];
            let guesses = [
                want,
                near(1),
                near(3),
                sorted[(keep - 1).saturating_sub(2)],
                want.saturating_add(1),
                want.saturating_sub(1),
                0,
                u64::MAX,
                next() % spread,
            ];
            for guess in guesses {
                assert_eq!(
                    kth_largest(&values, keep, guess, &mut copy),
                    want,
                    "case {case}: keep {keep} of {n}, guess {guess}"
                );
            }
        }
    }
}
