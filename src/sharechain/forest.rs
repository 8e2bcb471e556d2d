//! A forest of shares linked by parent hash: heights, first unknown ancestor, nth parent
//! and cumulative work in constant or near-constant time, whatever order shares arrive in.
//!
//! Each connected tree (a *component*) has one tail: the oldest known share, whose parent
//! is unknown. Every node stores a height and a cumulative work *relative to its
//! component*: a child has its parent's values plus one share and its attempts. So the
//! height of a share is `rel(share) − rel(tail) + 1` and the work between a share and an
//! ancestor is a subtraction. When a share joins two components (it is the missing parent
//! of a tail), the smaller component is shifted onto the other's scale, so each share is
//! shifted O(log n) times over the life of the forest. Work is kept modulo 2^512: only
//! differences are read, and those are far below 2^512.

use ruint::aliases::U512;

use crate::bitcoin::hash::Hash256;

use super::keyed::{Keys, ShareMap};

/// Index of a node in the forest's slots.
pub(crate) type Idx = u32;

#[derive(Debug)]
struct Node<T> {
    hash: Hash256,
    prev: Option<Hash256>,
    parent: Option<Idx>,
    children: Vec<Idx>,
    height: i64,
    work: U512,
    attempts: U512,
    comp: u32,
    value: T,
}

/// The heads of a forest (a view of its head map).
#[derive(Debug, Clone, Copy)]
pub struct Heads<'a>(&'a ShareMap<Idx>);

impl<'a> Heads<'a> {
    pub fn iter(&self) -> impl Iterator<Item = &'a Hash256> + use<'a> {
        self.0.keys()
    }

    pub fn contains(&self, hash: &Hash256) -> bool {
        self.0.contains_key(hash)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'a> IntoIterator for Heads<'a> {
    type Item = &'a Hash256;
    type IntoIter = std::collections::hash_map::Keys<'a, Hash256, Idx>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.keys()
    }
}

/// One head as [`Forest::head_views`] reads it.
#[derive(Debug)]
pub struct HeadView<'a, T> {
    pub hash: Hash256,
    /// Known shares from the head back to its component's tail.
    pub height: u32,
    /// The component's tail (the oldest known ancestor).
    pub tail: Hash256,
    /// The tail's unknown parent (`None` at genesis).
    pub last: Option<Hash256>,
    /// Shares in the head's component (no head in it is taller).
    pub comp_size: u32,
    pub value: &'a T,
}

#[derive(Debug, Clone, Copy)]
struct Comp {
    tail: Idx,
    size: u32,
    /// The tail's height, hash and parent hash, kept here so that the height and first
    /// unknown ancestor of a share cost one node read, not two (`refresh`).
    tail_height: i64,
    tail_hash: Hash256,
    tail_prev: Option<Hash256>,
}

impl Comp {
    fn new(tail: Idx, size: u32) -> Comp {
        Comp {
            tail,
            size,
            tail_height: 0,
            tail_hash: Hash256::ZERO,
            tail_prev: None,
        }
    }
}

#[derive(Debug)]
pub struct Forest<T> {
    slots: Vec<Option<Node<T>>>,
    free: Vec<Idx>,
    index: ShareMap<Idx>,
    /// Tails by the hash of their unknown parent (a set: a peer can make thousands
    /// wait on one parent, and each must come out in constant time).
    waiting: ShareMap<std::collections::HashSet<Idx, Keys>>,
    comps: Vec<Comp>,
    free_comps: Vec<u32>,
    /// Shares nobody builds on, with their slot, so that a pass over every head reads
    /// each node once and never looks its hash up.
    heads: ShareMap<Idx>,
}

impl<T> Default for Forest<T> {
    fn default() -> Self {
        Forest {
            slots: Vec::new(),
            free: Vec::new(),
            index: ShareMap::default(),
            waiting: ShareMap::default(),
            comps: Vec::new(),
            free_comps: Vec::new(),
            heads: ShareMap::default(),
        }
    }
}

impl<T> Forest<T> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    pub fn contains(&self, hash: &Hash256) -> bool {
        self.index.contains_key(hash)
    }

    pub fn get(&self, hash: &Hash256) -> Option<&T> {
        self.idx(hash).map(|i| &self.node(i).value)
    }

    pub fn get_mut(&mut self, hash: &Hash256) -> Option<&mut T> {
        let i = self.idx(hash)?;
        Some(&mut self.node_mut(i).value)
    }

    /// Shares nobody known builds on.
    pub fn heads(&self) -> Heads<'_> {
        Heads(&self.heads)
    }

    /// Every head with its height, component and value, read without a hash lookup:
    /// the passes of a think over thousands of heads (most of them a flood's
    /// unconnected shares) cost one node read per head.
    pub fn head_views(&self) -> impl Iterator<Item = HeadView<'_, T>> {
        self.heads.iter().map(move |(hash, &i)| {
            let n = self.node(i);
            let comp = &self.comps[n.comp as usize];
            HeadView {
                hash: *hash,
                height: u32::try_from(n.height - comp.tail_height + 1).unwrap_or(u32::MAX),
                tail: comp.tail_hash,
                last: comp.tail_prev,
                comp_size: comp.size,
                value: &n.value,
            }
        })
    }

    /// The tails waiting for `missing`, the unknown parent they name.
    pub fn waiting(&self, missing: &Hash256) -> Vec<Hash256> {
        self.waiting
            .get(missing)
            .map(|list| list.iter().map(|&i| self.node(i).hash).collect())
            .unwrap_or_default()
    }

    pub(crate) fn idx(&self, hash: &Hash256) -> Option<Idx> {
        self.index.get(hash).copied()
    }

    fn node(&self, i: Idx) -> &Node<T> {
        match self.slots.get(i as usize) {
            Some(Some(n)) => n,
            // Indices come only from the index and from links, which removal keeps exact.
            _ => unreachable!("forest index {i} has no node"),
        }
    }

    fn node_mut(&mut self, i: Idx) -> &mut Node<T> {
        match self.slots.get_mut(i as usize) {
            Some(Some(n)) => n,
            _ => unreachable!("forest index {i} has no node"),
        }
    }

    pub(crate) fn hash_of(&self, i: Idx) -> Hash256 {
        self.node(i).hash
    }

    pub(crate) fn value_of(&self, i: Idx) -> &T {
        &self.node(i).value
    }

    pub(crate) fn parent_idx(&self, i: Idx) -> Option<Idx> {
        self.node(i).parent
    }

    pub(crate) fn attempts_of(&self, i: Idx) -> U512 {
        self.node(i).attempts
    }

    /// Known shares from `i` back to `i`'s tail.
    pub(crate) fn height_of(&self, i: Idx) -> u32 {
        let n = self.node(i);
        let tail_height = self.comps[n.comp as usize].tail_height;
        u32::try_from(n.height - tail_height + 1).unwrap_or(u32::MAX)
    }

    pub(crate) fn nth_parent_idx(&self, mut i: Idx, n: u32) -> Option<Idx> {
        for _ in 0..n {
            i = self.node(i).parent?;
        }
        Some(i)
    }

    /// Inserts a share; `false` (and nothing changes) if it is already known.
    pub fn insert(
        &mut self,
        hash: Hash256,
        prev: Option<Hash256>,
        attempts: U512,
        value: T,
    ) -> bool {
        if self.index.contains_key(&hash) {
            return false;
        }
        let parent = prev.and_then(|p| self.idx(&p));
        let (height, work, comp) = match parent {
            Some(p) => {
                let pn = self.node(p);
                (pn.height + 1, pn.work.wrapping_add(attempts), pn.comp)
            }
            None => (0, attempts, u32::MAX),
        };
        let node = Node {
            hash,
            prev,
            parent,
            children: Vec::new(),
            height,
            work,
            attempts,
            comp,
            value,
        };
        let i = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = Some(node);
                i
            }
            None => {
                self.slots.push(Some(node));
                (self.slots.len() - 1) as Idx
            }
        };
        self.index.insert(hash, i);
        match parent {
            Some(p) => {
                let pn = self.node_mut(p);
                pn.children.push(i);
                let (comp, parent_hash) = (pn.comp, pn.hash);
                self.comps[comp as usize].size += 1;
                self.heads.remove(&parent_hash);
            }
            None => {
                let c = self.new_comp(Comp::new(i, 1));
                self.node_mut(i).comp = c;
                if let Some(p) = prev {
                    self.waiting.entry(p).or_default().insert(i);
                }
            }
        }
        let tails = self.waiting.remove(&hash).unwrap_or_default();
        for t in tails {
            self.attach(t, i);
        }
        if self.node(i).children.is_empty() {
            self.heads.insert(hash, i);
        }
        true
    }

    fn new_comp(&mut self, comp: Comp) -> u32 {
        let c = match self.free_comps.pop() {
            Some(c) => {
                self.comps[c as usize] = comp;
                c
            }
            None => {
                self.comps.push(comp);
                (self.comps.len() - 1) as u32
            }
        };
        self.refresh(c);
        c
    }

    /// Copies the tail's height, hash and parent into its component.
    fn refresh(&mut self, c: u32) {
        let tail = self.comps[c as usize].tail;
        let (height, hash, prev) = {
            let n = self.node(tail);
            (n.height, n.hash, n.prev)
        };
        let comp = &mut self.comps[c as usize];
        comp.tail_height = height;
        comp.tail_hash = hash;
        comp.tail_prev = prev;
    }

    /// Makes `parent` the parent of the tail `tail`, merging their components.
    fn attach(&mut self, tail: Idx, parent: Idx) {
        let (p_height, p_work, p_comp) = {
            let p = self.node(parent);
            (p.height, p.work, p.comp)
        };
        let (t_height, t_work, t_attempts, t_comp) = {
            let t = self.node(tail);
            (t.height, t.work, t.attempts, t.comp)
        };
        let dh = p_height + 1 - t_height;
        let dw = p_work.wrapping_add(t_attempts).wrapping_sub(t_work);
        let (pc, tc) = (self.comps[p_comp as usize], self.comps[t_comp as usize]);
        if tc.size <= pc.size {
            self.shift(tail, dh, dw, p_comp);
            self.comps[p_comp as usize].size += tc.size;
            self.free_comps.push(t_comp);
        } else {
            self.shift(pc.tail, -dh, U512::ZERO.wrapping_sub(dw), t_comp);
            self.comps[t_comp as usize] = Comp::new(pc.tail, tc.size + pc.size);
            self.refresh(t_comp);
            self.free_comps.push(p_comp);
        }
        self.node_mut(tail).parent = Some(parent);
        self.node_mut(parent).children.push(tail);
        let parent_hash = self.node(parent).hash;
        self.heads.remove(&parent_hash);
    }

    /// Adds `dh` and `dw` to every node of the subtree at `root` and moves it to `comp`.
    fn shift(&mut self, root: Idx, dh: i64, dw: U512, comp: u32) {
        let mut stack = vec![root];
        while let Some(i) = stack.pop() {
            let n = self.node_mut(i);
            n.height += dh;
            n.work = n.work.wrapping_add(dw);
            n.comp = comp;
            stack.extend_from_slice(&n.children);
        }
    }

    /// Moves the subtree at `root` to `comp`, returning its size.
    fn relabel(&mut self, root: Idx, comp: u32) -> u32 {
        let mut size = 0;
        let mut stack = vec![root];
        while let Some(i) = stack.pop() {
            let n = self.node_mut(i);
            n.comp = comp;
            size += 1;
            stack.extend_from_slice(&n.children);
        }
        size
    }

    /// Removes a share. Its children become tails waiting for it again.
    pub fn remove(&mut self, hash: &Hash256) -> Option<T> {
        let i = self.index.remove(hash)?;
        let node = self.slots.get_mut(i as usize).and_then(Option::take)?;
        self.free.push(i);
        self.heads.remove(hash);
        let comp = node.comp;
        match node.parent {
            Some(p) => {
                let pn = self.node_mut(p);
                pn.children.retain(|&c| c != i);
                if pn.children.is_empty() {
                    let ph = pn.hash;
                    self.heads.insert(ph, p);
                }
            }
            None => {
                if let Some(prev) = node.prev
                    && let Some(list) = self.waiting.get_mut(&prev)
                {
                    list.remove(&i);
                    if list.is_empty() {
                        self.waiting.remove(&prev);
                    }
                }
            }
        }
        self.comps[comp as usize].size -= 1;
        // The part above the parent keeps the component; without a parent, the first
        // child's subtree keeps it and its root becomes the tail.
        let mut keep = node.parent.is_some();
        for &c in &node.children {
            self.node_mut(c).parent = None;
            self.waiting.entry(*hash).or_default().insert(c);
            if !keep {
                keep = true;
                self.comps[comp as usize].tail = c;
                self.refresh(comp);
            } else {
                let new = self.new_comp(Comp::new(c, 0));
                let size = self.relabel(c, new);
                self.comps[new as usize].size = size;
                self.comps[comp as usize].size -= size;
            }
        }
        if self.comps[comp as usize].size == 0 {
            self.free_comps.push(comp);
        }
        Some(node.value)
    }

    /// The known parent of a share.
    pub fn parent(&self, hash: &Hash256) -> Option<Hash256> {
        let i = self.idx(hash)?;
        self.node(i).parent.map(|p| self.node(p).hash)
    }

    pub fn children(&self, hash: &Hash256) -> Vec<Hash256> {
        match self.idx(hash) {
            Some(i) => self
                .node(i)
                .children
                .iter()
                .map(|&c| self.node(c).hash)
                .collect(),
            None => Vec::new(),
        }
    }

    /// The height of a share and its component's tail, in one lookup.
    pub fn height_and_tail(&self, hash: &Hash256) -> Option<(u32, Hash256)> {
        let i = self.idx(hash)?;
        let tail = self.comps[self.node(i).comp as usize].tail_hash;
        Some((self.height_of(i), tail))
    }

    /// The oldest known ancestor of a share (itself if its parent is unknown).
    pub fn tail(&self, hash: &Hash256) -> Option<Hash256> {
        let i = self.idx(hash)?;
        Some(self.comps[self.node(i).comp as usize].tail_hash)
    }

    /// The number of known shares from `start` back, and the first unknown ancestor
    /// (`None` when the chain reaches genesis). An unknown `start` is its own first
    /// unknown ancestor.
    pub fn height_and_last(&self, start: Option<Hash256>) -> (u32, Option<Hash256>) {
        let Some(hash) = start else {
            return (0, None);
        };
        let Some(i) = self.idx(&hash) else {
            return (0, Some(hash));
        };
        (
            self.height_of(i),
            self.comps[self.node(i).comp as usize].tail_prev,
        )
    }

    /// [`Forest::height_and_last`] of a known share, with its value, in one lookup.
    pub fn height_last_value(&self, hash: &Hash256) -> Option<(u32, Option<Hash256>, &T)> {
        let i = self.idx(hash)?;
        let n = self.node(i);
        Some((
            self.height_of(i),
            self.comps[n.comp as usize].tail_prev,
            &n.value,
        ))
    }

    pub fn height(&self, hash: &Hash256) -> u32 {
        self.idx(hash).map_or(0, |i| self.height_of(i))
    }

    /// The ancestor `n` generations above `hash` (`n = 0` is `hash` itself), if known.
    pub fn nth_parent(&self, hash: Hash256, n: u32) -> Option<Hash256> {
        let i = self.idx(&hash)?;
        if n >= self.height_of(i) {
            return None;
        }
        self.nth_parent_idx(i, n).map(|a| self.hash_of(a))
    }

    /// The ancestor `n` generations above `hash` with the total attempts of the `n`
    /// shares from `hash` down to it (the ancestor left out), if known: what
    /// [`Forest::nth_parent`] and [`Forest::work`] give, in one walk.
    pub fn nth_parent_with_work(&self, hash: &Hash256, n: u32) -> Option<(&T, U512)> {
        let i = self.idx(hash)?;
        if n >= self.height_of(i) {
            return None;
        }
        let a = self.nth_parent_idx(i, n)?;
        Some((
            &self.node(a).value,
            self.node(i).work.wrapping_sub(self.node(a).work),
        ))
    }

    /// The total attempts of the shares from `i` down to its ancestor `a`, `a` left out.
    pub(crate) fn work_between(&self, i: Idx, a: Idx) -> U512 {
        self.node(i).work.wrapping_sub(self.node(a).work)
    }

    /// Total attempts of the `n` shares from `start` back (fewer if fewer are known).
    pub fn work(&self, start: Hash256, n: u32) -> U512 {
        let Some(i) = self.idx(&start) else {
            return U512::ZERO;
        };
        if n == 0 {
            return U512::ZERO;
        }
        let height = self.height_of(i);
        let top = self.node(i).work;
        if n >= height {
            let tail = self.node(self.comps[self.node(i).comp as usize].tail);
            return top.wrapping_sub(tail.work).wrapping_add(tail.attempts);
        }
        match self.nth_parent_idx(i, n) {
            Some(a) => top.wrapping_sub(self.node(a).work),
            None => U512::ZERO,
        }
    }

    /// Known shares from `start` back through known parents, `start` first.
    pub fn chain(&self, start: Option<Hash256>) -> impl Iterator<Item = (Hash256, &T)> + '_ {
        let mut next = start.and_then(|h| self.idx(&h));
        std::iter::from_fn(move || {
            let n = self.node(next?);
            next = n.parent;
            Some((n.hash, &n.value))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(n: u32) -> Hash256 {
        let mut b = [0u8; 32];
        b[..4].copy_from_slice(&n.to_le_bytes());
        b[31] = 1;
        Hash256(b)
    }

    /// Shares 1..=n in a line, share k's parent k−1, share 1's parent 0 (unknown).
    fn line(order: impl IntoIterator<Item = u32>) -> Forest<u32> {
        let mut f = Forest::new();
        for k in order {
            f.insert(h(k), Some(h(k - 1)), U512::from(k), k);
        }
        f
    }

    fn slow_height(f: &Forest<u32>, hash: Hash256) -> u32 {
        f.chain(Some(hash)).count() as u32
    }

    #[test]
    fn heights_and_work_hold_whatever_the_arrival_order() {
        let orders: Vec<Vec<u32>> = vec![
            (1..=40).collect(),
            (1..=40).rev().collect(),
            (0..40)
                .map(|j| if j % 2 == 0 { j / 2 + 1 } else { 40 - j / 2 })
                .collect(),
            (1..=40).map(|k| (k * 17) % 40 + 1).collect(),
        ];
        for order in orders {
            let f = line(order);
            for k in 1..=40u32 {
                assert_eq!(f.height_and_last(Some(h(k))), (k, Some(h(0))));
                assert_eq!(f.height(&h(k)), slow_height(&f, h(k)));
                let expected: u32 = (1..=k).sum();
                assert_eq!(f.work(h(k), 1000), U512::from(expected));
                assert_eq!(
                    f.work(h(k), 3),
                    U512::from((k.saturating_sub(2)..=k).filter(|&x| x > 0).sum::<u32>())
                );
                assert_eq!(f.nth_parent(h(k), k - 1), Some(h(1)));
                assert_eq!(f.nth_parent(h(k), k), None);
            }
            assert_eq!(f.heads().iter().copied().collect::<Vec<_>>(), vec![h(40)]);
            assert_eq!(f.tail(&h(40)), Some(h(1)));
        }
    }

    #[test]
    fn removing_the_tail_moves_it_up_and_keeps_heights_true() {
        let mut f = line(1..=10);
        assert_eq!(f.remove(&h(1)), Some(1));
        assert_eq!(f.height_and_last(Some(h(10))), (9, Some(h(1))));
        assert_eq!(f.work(h(10), 100), U512::from((2..=10).sum::<u32>()));
        // The removed share comes back: the chain is whole again.
        f.insert(h(1), Some(h(0)), U512::from(1u32), 1);
        assert_eq!(f.height_and_last(Some(h(10))), (10, Some(h(0))));
    }

    #[test]
    fn removing_a_middle_share_splits_the_component() {
        let mut f = line(1..=10);
        f.remove(&h(5));
        assert_eq!(f.height_and_last(Some(h(4))), (4, Some(h(0))));
        assert_eq!(f.height_and_last(Some(h(10))), (5, Some(h(5))));
        assert!(f.heads().contains(&h(4)) && f.heads().contains(&h(10)));
        f.insert(h(5), Some(h(4)), U512::from(5u32), 5);
        assert_eq!(f.height_and_last(Some(h(10))), (10, Some(h(0))));
        assert_eq!(f.heads().len(), 1);
    }

    #[test]
    fn head_views_match_the_lookups_through_splits_and_forks() {
        let mut f = line(1..=10);
        f.insert(h(100), Some(h(3)), U512::from(7u32), 100);
        f.insert(h(200), Some(h(150)), U512::from(1u32), 200);
        f.remove(&h(6));
        let mut views: Vec<_> = f
            .head_views()
            .map(|v| (v.hash, v.height, v.tail, v.last, v.comp_size, *v.value))
            .collect();
        views.sort();
        let mut want: Vec<_> = f
            .heads()
            .iter()
            .map(|&head| {
                let (height, last) = f.height_and_last(Some(head));
                let tail = f.tail(&head).unwrap_or(head);
                (head, height, tail, last, *f.get(&head).unwrap_or(&0))
            })
            .collect();
        want.sort();
        for (v, w) in views.iter().zip(&want) {
            assert_eq!((v.0, v.1, v.2, v.3, v.5), *w);
        }
        assert_eq!(views.len(), 4, "heads 5, 10, 100 and 200");
        // Sizes: {1..5, 100} is six shares, {7..10} four, {200} one.
        let size = |head: u32| views.iter().find(|v| v.0 == h(head)).map(|v| v.4);
        assert_eq!(size(5), Some(6));
        assert_eq!(size(100), Some(6));
        assert_eq!(size(10), Some(4));
        assert_eq!(size(200), Some(1));
    }

    #[test]
    fn forks_share_ancestry_and_both_are_heads() {
        let mut f = line(1..=5);
        f.insert(h(100), Some(h(3)), U512::from(7u32), 100);
        assert_eq!(f.height(&h(100)), 4);
        assert_eq!(f.work(h(100), 10), U512::from(7u32 + 1 + 2 + 3));
        let mut heads: Vec<_> = f.heads().iter().copied().collect();
        heads.sort();
        let mut want = vec![h(5), h(100)];
        want.sort();
        assert_eq!(heads, want);
        let mut kids = f.children(&h(3));
        kids.sort();
        let mut want = vec![h(4), h(100)];
        want.sort();
        assert_eq!(kids, want);
        // Remove a fork root: the fork becomes its own component waiting for it.
        f.remove(&h(3));
        assert_eq!(f.height_and_last(Some(h(100))), (1, Some(h(3))));
        assert_eq!(f.height_and_last(Some(h(5))), (2, Some(h(3))));
        assert_eq!(f.height_and_last(Some(h(2))), (2, Some(h(0))));
    }

    #[test]
    fn genesis_chain_has_no_last() {
        let mut f: Forest<()> = Forest::new();
        f.insert(h(1), None, U512::from(1u32), ());
        f.insert(h(2), Some(h(1)), U512::from(1u32), ());
        assert_eq!(f.height_and_last(Some(h(2))), (2, None));
        assert_eq!(f.height_and_last(None), (0, None));
        assert_eq!(f.height_and_last(Some(h(9))), (0, Some(h(9))));
    }

    #[test]
    fn heights_tails_and_gaps_hold_through_random_inserts_and_removals() {
        // A tree of 300 shares (each on one of the ten before it; share 0 is genesis)
        // inserted and removed in a pseudo-random order, checked against walking.
        let parent = |k: u32| (k > 0).then(|| k - 1 - (k * 7 + 3) % k.min(10));
        let mut f: Forest<u32> = Forest::new();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..3_000 {
            let k = (next() % 300) as u32;
            if f.contains(&h(k)) {
                f.remove(&h(k));
            } else {
                f.insert(h(k), parent(k).map(h), U512::from(1u64), k);
            }
            for k in (0..300).step_by(7) {
                if !f.contains(&h(k)) {
                    continue;
                }
                let walk: Vec<Hash256> = f.chain(Some(h(k))).map(|(hash, _)| hash).collect();
                let tail = *walk.last().unwrap();
                let gap = parent(*f.get(&tail).unwrap()).map(h);
                assert_eq!(f.height_and_last(Some(h(k))), (walk.len() as u32, gap));
                assert_eq!(f.tail(&h(k)), Some(tail));
                assert_eq!(f.height_and_tail(&h(k)), Some((walk.len() as u32, tail)));
                assert_eq!(slow_height(&f, h(k)), walk.len() as u32);
            }
        }
    }
}
