//! Merkle roots and branches over transaction ids.
//!
//! Odd levels duplicate their last element; the root of an empty list is zero. A branch
//! step's `side` says where the sibling goes: 0 = left (`H(sibling ‖ h)`), 1 = right
//! (`H(h ‖ sibling)`), as in the P2Pool share format.

use super::encode::{self, Decode, Encode, Reader, WriteExt};
use super::hash::{Hash256, sha256d};

/// Branches longer than this cannot occur below 2^32 transactions.
pub const MAX_BRANCH_LEN: usize = 32;

fn hash_pair(left: &Hash256, right: &Hash256) -> Hash256 {
    let mut buf = [0u8; 64];
    buf[..32].copy_from_slice(&left.0);
    buf[32..].copy_from_slice(&right.0);
    sha256d(&buf)
}

/// The merkle root of `hashes`.
pub fn root(hashes: &[Hash256]) -> Hash256 {
    if hashes.is_empty() {
        return Hash256::ZERO;
    }
    let mut level = hashes.to_vec();
    while level.len() > 1 {
        level = next_level(&level);
    }
    level[0]
}

fn next_level(level: &[Hash256]) -> Vec<Hash256> {
    level
        .chunks(2)
        .map(|pair| hash_pair(&pair[0], pair.get(1).unwrap_or(&pair[0])))
        .collect()
}

/// One step of a merkle branch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BranchStep {
    pub side: u8,
    pub hash: Hash256,
}

impl Encode for BranchStep {
    fn encode_to(&self, out: &mut Vec<u8>) {
        out.put_u8(self.side);
        self.hash.encode_to(out);
    }
}

impl Decode for BranchStep {
    const NAME: &'static str = "merkle branch step";
    fn decode_from(r: &mut Reader<'_>) -> encode::Result<Self> {
        let side = r.u8("merkle branch side")?;
        if side > 1 {
            return Err(encode::Error::Invalid {
                what: "merkle branch side",
                reason: "must be 0 or 1",
            });
        }
        Ok(BranchStep {
            side,
            hash: Hash256::decode_from(r)?,
        })
    }
}

/// The branch linking the element at `index` to the root; empty when `index` is not
/// an element.
pub fn branch(hashes: &[Hash256], mut index: usize) -> Vec<BranchStep> {
    let mut steps = Vec::new();
    if index >= hashes.len() {
        return steps;
    }
    let mut level = hashes.to_vec();
    while level.len() > 1 {
        let sibling = index ^ 1;
        let hash = *level.get(sibling).unwrap_or(&level[index]);
        steps.push(BranchStep {
            side: (sibling > index) as u8,
            hash,
        });
        level = next_level(&level);
        index /= 2;
    }
    steps
}

/// Applies a branch to a leaf and returns the root it commits to.
pub fn apply_branch(leaf: Hash256, steps: &[BranchStep]) -> Hash256 {
    steps.iter().fold(leaf, |h, step| {
        if step.side == 0 {
            hash_pair(&step.hash, &h)
        } else {
            hash_pair(&h, &step.hash)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: u8) -> Vec<Hash256> {
        (0..n).map(|i| sha256d(&[i])).collect()
    }

    #[test]
    fn root_of_nothing_is_zero_and_of_one_is_itself() {
        assert_eq!(root(&[]), Hash256::ZERO);
        let one = leaves(1);
        assert_eq!(root(&one), one[0]);
    }

    #[test]
    fn odd_level_duplicates_the_last_element() {
        let l = leaves(3);
        let expected = hash_pair(&hash_pair(&l[0], &l[1]), &hash_pair(&l[2], &l[2]));
        assert_eq!(root(&l), expected);
    }

    #[test]
    fn branch_applied_to_any_leaf_gives_the_root() {
        for n in 1..=17u8 {
            let l = leaves(n);
            let r = root(&l);
            for (i, leaf) in l.iter().enumerate() {
                let b = branch(&l, i);
                assert_eq!(apply_branch(*leaf, &b), r, "n={n} i={i}");
            }
        }
    }

    #[test]
    fn coinbase_branch_steps_are_all_right_siblings() {
        let l = leaves(9);
        assert!(branch(&l, 0).iter().all(|s| s.side == 1));
        assert_eq!(branch(&l, 0).len(), 4);
    }

    #[test]
    fn branch_side_above_one_is_refused() {
        let mut bytes = vec![2];
        bytes.extend_from_slice(&[0; 32]);
        assert!(BranchStep::from_bytes(&bytes).is_err());
    }
}
