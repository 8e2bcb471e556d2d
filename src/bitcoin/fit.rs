//! Templates that fit: which template transactions go in a block beside a given generation
//! transaction, so that a pool block never fails for weight, size or sig-ops.
//!
//! The block's totals are the header, the largest transaction count, the coinbase and the
//! kept transactions. While over a limit, the transaction with the lowest fee rate goes (ties:
//! the later one), and with it every transaction that spends it, directly or not; the
//! coinbase value is lowered by the fees dropped.

use std::fmt;

use super::encode::compact_size_len;
use super::hash::Hash256;
use super::merkle::{self, BranchStep};
use super::script;
use super::template::{Limits, Template, TemplateTx};
use super::tx::Transaction;

/// What the generation transaction takes of the block, in the template's units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CoinbaseCost {
    /// Weight as serialised in the block (with its witness, if any).
    pub weight: u64,
    /// Size as serialised in the block.
    pub size: u64,
    /// Sig-op cost (legacy count × `Template::sigop_scale`).
    pub sigops: u64,
}

impl CoinbaseCost {
    /// The cost of `coinbase` as `super::block::coinbase_for_block` would put it in a block
    /// built from `template`.
    pub fn of(coinbase: &Transaction, template: &Template) -> CoinbaseCost {
        let tx = super::block::coinbase_for_block(coinbase);
        let legacy: u64 = tx
            .inputs
            .iter()
            .map(|i| &i.script_sig)
            .chain(tx.outputs.iter().map(|o| &o.script_pubkey))
            .map(|s| u64::from(consensus_sigop_count(s)))
            .sum();
        CoinbaseCost {
            weight: tx.weight() as u64,
            size: tx.total_size() as u64,
            sigops: legacy.saturating_mul(template.sigop_scale()),
        }
    }
}

/// The legacy sig-op count as consensus counts it (Bitcoin Core's `GetSigOpCount(false)`):
/// a push that runs past the end stops the count instead of failing it. A coinbase script
/// holds raw bytes (P2Pool's identifier and share hash) that often read as such a push.
pub fn consensus_sigop_count(script: &[u8]) -> u32 {
    match script::legacy_sigop_count(script) {
        Ok(count) => count,
        // The opcodes before the truncated push parse, so counting them cannot fail.
        Err(truncated) => script::legacy_sigop_count(&script[..truncated.offset]).unwrap_or(0),
    }
}

/// The transactions to put in the block and what they leave for the coinbase. Its methods
/// take the template it was fitted from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fitted {
    /// Indices into `Template::transactions`, ascending.
    pub keep: Vec<usize>,
    /// The template's coinbase value less `dropped_fees`.
    pub coinbase_value: u64,
    pub dropped_fees: u64,
    /// The block's totals: header, transaction count, coinbase and kept transactions.
    pub weight: u64,
    pub size: u64,
    pub sigops: u64,
}

impl Fitted {
    pub fn dropped(&self, template: &Template) -> usize {
        template.transactions.len().saturating_sub(self.keep.len())
    }

    /// The kept transactions, in template order.
    pub fn transactions<'t>(
        &self,
        template: &'t Template,
    ) -> impl ExactSizeIterator<Item = &'t TemplateTx> {
        self.keep.iter().map(move |&i| &template.transactions[i])
    }

    /// The txids of the kept transactions, in template order.
    pub fn txids(&self, template: &Template) -> Vec<Hash256> {
        self.transactions(template).map(|t| t.txid).collect()
    }

    /// The merkle branch of the coinbase (position 0) among the kept transactions.
    pub fn coinbase_branch(&self, template: &Template) -> Vec<BranchStep> {
        let mut ids = Vec::with_capacity(self.keep.len() + 1);
        ids.push(Hash256::ZERO);
        ids.extend(self.transactions(template).map(|t| t.txid));
        merkle::branch(&ids, 0)
    }

    /// The witness commitment for the kept transactions, when the template is segwit: the
    /// template's own when nothing was dropped, computed otherwise.
    pub fn witness_commitment(&self, template: &Template) -> Option<[u8; 32]> {
        if !template.segwit {
            return None;
        }
        if self.keep.len() == template.transactions.len() {
            if let Some(c) = template.default_witness_commitment {
                return Some(c);
            }
        }
        let wtxids: Vec<Hash256> = self.transactions(template).map(|t| t.wtxid).collect();
        Some(super::block::witness_commitment_for(&wtxids).0)
    }
}

/// Why no block fits: the coinbase alone (with header) is over a limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FitError {
    pub what: &'static str,
    pub used: u64,
    pub limit: u64,
}

impl fmt::Display for FitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "generation transaction does not fit in a block: {} {} exceeds the limit of {}",
            self.what, self.used, self.limit
        )
    }
}

impl std::error::Error for FitError {}

#[derive(Debug, Clone, Copy, Default)]
struct Usage {
    weight: u64,
    size: u64,
    sigops: u64,
}

impl Usage {
    fn over(&self, limits: &Limits) -> Option<FitError> {
        let check = |what, used, limit: Option<u64>| match limit {
            Some(limit) if used > limit => Some(FitError { what, used, limit }),
            _ => None,
        };
        check("weight", self.weight, limits.weight)
            .or_else(|| check("size", self.size, limits.size))
            .or_else(|| check("sig-op cost", self.sigops, Some(limits.sigops)))
    }
}

pub fn fit(template: &Template, coinbase: CoinbaseCost) -> Result<Fitted, FitError> {
    let txs = &template.transactions;
    // The header and the largest transaction count the block can have.
    let fixed = 80 + compact_size_len(txs.len() as u64 + 1) as u64;
    let mut used = Usage {
        weight: fixed * 4 + coinbase.weight,
        size: fixed + coinbase.size,
        sigops: coinbase.sigops,
    };
    for t in txs {
        used.weight = used.weight.saturating_add(t.weight);
        used.size = used.size.saturating_add(t.size);
        used.sigops = used.sigops.saturating_add(t.sigops);
    }
    let mut dropped = vec![false; txs.len()];
    let mut dropped_fees = 0u64;
    if used.over(&template.limits).is_some() {
        let mut children = vec![Vec::new(); txs.len()];
        for (i, t) in txs.iter().enumerate() {
            for &p in &t.depends {
                if p < txs.len() && p != i {
                    children[p].push(i);
                }
            }
        }
        // Lowest fee rate first; among equal rates the later transaction first.
        let mut order: Vec<usize> = (0..txs.len()).collect();
        order.sort_by(|&a, &b| {
            let (ta, tb) = (&txs[a], &txs[b]);
            let ra = u128::from(ta.fee) * u128::from(tb.weight.max(1));
            let rb = u128::from(tb.fee) * u128::from(ta.weight.max(1));
            ra.cmp(&rb).then(b.cmp(&a))
        });
        let mut stack = Vec::new();
        for i in order {
            if used.over(&template.limits).is_none() {
                break;
            }
            stack.push(i);
            while let Some(j) = stack.pop() {
                if std::mem::replace(&mut dropped[j], true) {
                    continue;
                }
                let t = &txs[j];
                used.weight -= t.weight.min(used.weight);
                used.size -= t.size.min(used.size);
                used.sigops -= t.sigops.min(used.sigops);
                dropped_fees = dropped_fees.saturating_add(t.fee);
                stack.extend(children[j].iter().copied());
            }
        }
        if let Some(err) = used.over(&template.limits) {
            return Err(err);
        }
    }
    let keep: Vec<usize> = (0..txs.len()).filter(|&i| !dropped[i]).collect();
    Ok(Fitted {
        keep,
        coinbase_value: template.coinbase_value.saturating_sub(dropped_fees),
        dropped_fees,
        weight: used.weight,
        size: used.size,
        sigops: used.sigops,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bitcoin::target::Bits;
    use crate::bitcoin::tx::{OutPoint, TxIn, TxOut};
    use proptest::prelude::*;

    /// (fee, weight, sigops, depends) of each transaction; size is weight / 4.
    type Spec = (u64, u64, u64, Vec<usize>);

    fn dummy(n: usize) -> Transaction {
        Transaction {
            version: 2,
            inputs: vec![TxIn {
                previous_output: OutPoint {
                    txid: crate::bitcoin::hash::sha256d(&n.to_le_bytes()),
                    vout: 0,
                },
                script_sig: vec![],
                sequence: 0,
                witness: vec![],
            }],
            outputs: vec![TxOut {
                value: 1,
                script_pubkey: vec![0x51],
            }],
            lock_time: 0,
        }
    }

    fn template(specs: &[Spec], limits: Limits) -> Template {
        let transactions: Vec<TemplateTx> = specs
            .iter()
            .enumerate()
            .map(|(i, (fee, weight, sigops, depends))| {
                let tx = dummy(i);
                TemplateTx {
                    txid: tx.txid(),
                    wtxid: tx.wtxid(),
                    tx,
                    depends: depends.clone(),
                    fee: *fee,
                    sigops: *sigops,
                    weight: *weight,
                    size: weight / 4,
                }
            })
            .collect();
        let fees: u64 = specs.iter().map(|s| s.0).sum();
        Template {
            version: 0x2000_0000,
            previous_block: Hash256::ZERO,
            height: 500,
            bits: Bits(0x207fffff),
            cur_time: 0,
            min_time: 0,
            coinbase_value: 1_000_000 + fees,
            transactions,
            rules: vec!["!segwit".into()],
            segwit: true,
            default_witness_commitment: Some([9; 32]),
            limits,
            longpollid: None,
        }
    }

    fn weight_limit(weight: u64) -> Limits {
        Limits {
            weight: Some(weight),
            size: None,
            sigops: 80_000,
        }
    }

    /// Header (80) and a one-byte count: 81 bytes, weight 324.
    const FIXED_WEIGHT: u64 = 324;
    const COINBASE: CoinbaseCost = CoinbaseCost {
        weight: 676,
        size: 169,
        sigops: 4,
    };

    #[test]
    fn template_that_fits_is_unchanged() {
        let specs = [(100, 1000, 4, vec![]), (50, 1000, 0, vec![0])];
        let t = template(&specs, weight_limit(FIXED_WEIGHT + 676 + 2000));
        let f = t.fit(COINBASE).unwrap();
        assert_eq!(f.keep, vec![0, 1]);
        assert_eq!(f.coinbase_value, t.coinbase_value);
        assert_eq!(f.dropped_fees, 0);
        assert_eq!(f.weight, FIXED_WEIGHT + 676 + 2000);
        assert_eq!(f.sigops, 8);
        assert_eq!(
            f.witness_commitment(&t),
            Some([9; 32]),
            "the template's own"
        );
    }

    #[test]
    fn lowest_fee_rate_goes_first_and_the_subsidy_drops_by_its_fee() {
        // Rates: 0.1, 0.05, 0.2 sat per weight unit.
        let specs = [
            (100, 1000, 0, vec![]),
            (50, 1000, 0, vec![]),
            (200, 1000, 0, vec![]),
        ];
        let t = template(&specs, weight_limit(FIXED_WEIGHT + 676 + 2500));
        let f = t.fit(COINBASE).unwrap();
        assert_eq!(f.keep, vec![0, 2]);
        assert_eq!(f.dropped_fees, 50);
        assert_eq!(f.coinbase_value, t.coinbase_value - 50);
        assert_eq!(f.dropped(&t), 1);
        let wtxids = [t.transactions[0].wtxid, t.transactions[2].wtxid];
        assert_eq!(
            f.witness_commitment(&t),
            Some(super::super::block::witness_commitment_for(&wtxids).0),
            "computed for the kept transactions"
        );
        assert_eq!(
            merkle::apply_branch(Hash256::ZERO, &f.coinbase_branch(&t)),
            merkle::root(&[
                Hash256::ZERO,
                t.transactions[0].txid,
                t.transactions[2].txid
            ])
        );
    }

    #[test]
    fn equal_fee_rates_drop_the_later_transaction_first() {
        let specs = [
            (100, 1000, 0, vec![]),
            (200, 2000, 0, vec![]),
            (100, 1000, 0, vec![]),
        ];
        let t = template(&specs, weight_limit(FIXED_WEIGHT + 676 + 3000));
        assert_eq!(t.fit(COINBASE).unwrap().keep, vec![0, 1]);
    }

    #[test]
    fn dropping_a_parent_drops_its_whole_chain_of_descendants() {
        // 0 ← 1 ← 2 (a chain), 3 independent. 0 has the lowest rate; its descendants pay
        // well but cannot stay without it.
        let specs = [
            (10, 1000, 0, vec![]),
            (500, 1000, 0, vec![0]),
            (900, 1000, 0, vec![1]),
            (100, 1000, 0, vec![]),
        ];
        let t = template(&specs, weight_limit(FIXED_WEIGHT + 676 + 3500));
        let f = t.fit(COINBASE).unwrap();
        assert_eq!(f.keep, vec![3]);
        assert_eq!(f.dropped_fees, 1410);
        assert_eq!(f.coinbase_value, t.coinbase_value - 1410);
    }

    #[test]
    fn a_child_can_go_without_its_parent() {
        let specs = [(500, 1000, 0, vec![]), (10, 1000, 0, vec![0])];
        let t = template(&specs, weight_limit(FIXED_WEIGHT + 676 + 1500));
        assert_eq!(t.fit(COINBASE).unwrap().keep, vec![0]);
    }

    #[test]
    fn sigop_bound_template_drops_until_the_sigops_fit() {
        // Plenty of weight; at most 100 sig-ops, 4 of them the coinbase's.
        let specs = [
            (1000, 400, 60, vec![]),
            (100, 400, 10, vec![]),
            (5000, 400, 30, vec![]),
        ];
        let limits = Limits {
            weight: Some(4_000_000),
            size: None,
            sigops: 100,
        };
        let t = template(&specs, limits);
        let f = t.fit(COINBASE).unwrap();
        // The lowest rate (1) goes; 4 + 60 + 30 = 94 fits.
        assert_eq!(f.keep, vec![0, 2]);
        assert_eq!(f.sigops, 94);
        // With a coinbase of 40 sig-ops, 0 must go as well.
        let heavy = CoinbaseCost {
            sigops: 40,
            ..COINBASE
        };
        assert_eq!(t.fit(heavy).unwrap().keep, vec![2]);
    }

    #[test]
    fn size_limit_applies_before_segwit() {
        let specs = [(100, 4000, 0, vec![]), (300, 4000, 0, vec![])];
        let limits = Limits {
            weight: None,
            size: Some(81 + 169 + 1500),
            sigops: 20_000,
        };
        let mut t = template(&specs, limits);
        t.segwit = false;
        let f = t.fit(COINBASE).unwrap();
        assert_eq!(f.keep, vec![1]);
        assert_eq!(f.witness_commitment(&t), None);
    }

    #[test]
    fn exactly_at_the_limit_fits_and_one_over_does_not() {
        let specs = [(100, 1000, 0, vec![])];
        let at = FIXED_WEIGHT + 676 + 1000;
        let t = template(&specs, weight_limit(at));
        assert_eq!(t.fit(COINBASE).unwrap().keep, vec![0]);
        let t = template(&specs, weight_limit(at - 1));
        assert!(t.fit(COINBASE).unwrap().keep.is_empty());
    }

    #[test]
    fn a_coinbase_too_large_for_any_block_is_an_error() {
        let t = template(&[(100, 1000, 0, vec![])], weight_limit(900));
        let err = t.fit(COINBASE).unwrap_err();
        assert_eq!(
            err,
            FitError {
                what: "weight",
                used: FIXED_WEIGHT + 676,
                limit: 900
            }
        );
        assert!(
            err.to_string()
                .starts_with("generation transaction does not fit")
        );
    }

    #[test]
    fn coinbase_cost_counts_the_reserved_witness_and_scaled_sigops() {
        let t = template(&[], weight_limit(4_000_000));
        let mut cb = dummy(0);
        cb.outputs.push(TxOut {
            value: 0,
            script_pubkey: script::witness_commitment_script(&[1; 32]),
        });
        cb.outputs.push(TxOut {
            value: 5,
            script_pubkey: script::p2pkh(&[7; 20]),
        });
        let cost = CoinbaseCost::of(&cb, &t);
        let in_block = super::super::block::coinbase_for_block(&cb);
        assert!(in_block.has_witness());
        assert_eq!(cost.weight, in_block.weight() as u64);
        assert_eq!(cost.size, in_block.total_size() as u64);
        assert_eq!(cost.sigops, 4, "one legacy sig-op, scaled by 4");
    }

    #[test]
    fn sigops_stop_at_a_truncated_push_as_consensus_counts_them() {
        // CHECKSIG, then a push of 0x2f bytes with 2 left: counts 1, as Core does.
        assert_eq!(consensus_sigop_count(&[0xac, 0x2f, 0xac, 0xac]), 1);
        assert_eq!(consensus_sigop_count(&[0xae]), 20);
        assert_eq!(consensus_sigop_count(b"/p2pool/"), 0);
        assert_eq!(consensus_sigop_count(&[]), 0);
    }

    fn specs() -> impl Strategy<Value = Vec<Spec>> {
        let tx = (0u64..10_000, 1u64..5_000, 0u64..50, any::<u64>());
        prop::collection::vec(tx, 0..40).prop_map(|raw| {
            raw.into_iter()
                .enumerate()
                .map(|(i, (fee, weight, sigops, seed))| {
                    // Up to two parents among the earlier transactions.
                    let mut depends = Vec::new();
                    if i > 0 && seed % 3 != 0 {
                        depends.push((seed as usize >> 8) % i);
                        if seed % 5 == 0 {
                            depends.push((seed as usize >> 24) % i);
                        }
                    }
                    depends.sort_unstable();
                    depends.dedup();
                    (fee, weight, sigops, depends)
                })
                .collect()
        })
    }

    proptest! {
        #[test]
        fn fitted_blocks_fit_and_keep_every_parent(
            specs in specs(),
            weight in 1_000u64..120_000,
            size in prop::option::of(250u64..30_000),
            sigops in 10u64..1_000,
            coinbase_weight in 400u64..2_000,
        ) {
            let limits = Limits { weight: Some(weight), size, sigops };
            let t = template(&specs, limits);
            let cb = CoinbaseCost { weight: coinbase_weight, size: coinbase_weight / 4, sigops: 4 };
            match t.fit(cb) {
                Ok(f) => {
                    let kept: Vec<&TemplateTx> = f.transactions(&t).collect();
                    let w = FIXED_WEIGHT + cb.weight + kept.iter().map(|t| t.weight).sum::<u64>();
                    let s = 81 + cb.size + kept.iter().map(|t| t.size).sum::<u64>();
                    let o = cb.sigops + kept.iter().map(|t| t.sigops).sum::<u64>();
                    prop_assert!(w <= weight && o <= sigops, "{} {}", w, o);
                    prop_assert!(size.is_none_or(|limit| s <= limit));
                    prop_assert_eq!((f.weight, f.size, f.sigops), (w, s, o));
                    for &i in &f.keep {
                        for p in &t.transactions[i].depends {
                            prop_assert!(f.keep.contains(p), "{} kept without parent {}", i, p);
                        }
                    }
                    let dropped: u64 = (0..specs.len())
                        .filter(|i| !f.keep.contains(i))
                        .map(|i| specs[i].0)
                        .sum();
                    prop_assert_eq!(f.dropped_fees, dropped);
                    prop_assert_eq!(f.coinbase_value, t.coinbase_value - dropped);
                    prop_assert!(f.keep.windows(2).all(|w| w[0] < w[1]));
                }
                Err(e) => {
                    // Only the header and coinbase alone can fail to fit.
                    let over = FIXED_WEIGHT + cb.weight > weight
                        || cb.sigops > sigops
                        || size.is_some_and(|limit| 81 + cb.size > limit);
                    prop_assert!(over, "{}", e);
                }
            }
        }
    }
}
