//! The address book (§3.11): peer addresses with services, first and last seen, bounded in
//! size, fed by `addrme` and `addrs`, read by the connector and by `getaddrs` replies.
//!
//! The book lives in memory inside the p2p subsystem; its changes are handed to the node
//! (`take_changes`), which writes them to the LMDB store, and the node gives the stored
//! entries back at start-up.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};

use crate::sharechain::store::AddrEntry;

use super::random_u64;

/// Entries kept by default (R fetched more addresses while it had fewer than 1000).
pub const DEFAULT_MAX_ENTRIES: usize = 1000;
/// Failed dials in a row after which an address is forgotten.
const MAX_FAILURES: u32 = 5;

/// Additions and removals since the last `take_changes`, for the store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddrChanges {
    pub put: Vec<(SocketAddr, AddrEntry)>,
    pub remove: Vec<SocketAddr>,
}

impl AddrChanges {
    pub fn is_empty(&self) -> bool {
        self.put.is_empty() && self.remove.is_empty()
    }
}

#[derive(Debug)]
pub struct AddrBook {
    max: usize,
    entries: HashMap<SocketAddr, AddrEntry>,
    failures: HashMap<SocketAddr, u32>,
    dirty: HashSet<SocketAddr>,
    removed: HashSet<SocketAddr>,
}

/// Whether an address can be dialled at all.
pub fn is_routable(addr: &SocketAddr) -> bool {
    if addr.port() == 0 {
        return false;
    }
    match addr.ip() {
        IpAddr::V4(v4) => !(v4.is_unspecified() || v4.is_broadcast() || v4.is_multicast()),
        IpAddr::V6(v6) => !(v6.is_unspecified() || v6.is_multicast()),
    }
}

/// `addr` with an IPv4-mapped IPv6 address turned into IPv4.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), addr.port()),
            None => addr,
        },
        IpAddr::V4(_) => addr,
    }
}

impl AddrBook {
    /// A book holding at most `max` entries, starting with `initial` (from the store).
    pub fn new(max: usize, initial: Vec<(SocketAddr, AddrEntry)>) -> AddrBook {
        let mut book = AddrBook {
            max: max.max(1),
            entries: HashMap::new(),
            failures: HashMap::new(),
            dirty: HashSet::new(),
            removed: HashSet::new(),
        };
        for (addr, entry) in initial {
            let addr = canonical(addr);
            if is_routable(&addr) {
                book.entries.insert(addr, entry);
            }
        }
        // A store written with a larger limit is cut down (and the store told).
        while book.entries.len() > book.max {
            book.evict_oldest();
        }
        book
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn get(&self, addr: &SocketAddr) -> Option<&AddrEntry> {
        self.entries.get(&canonical(*addr))
    }

    /// R's `got_addr`: keeps `first_seen`, sets `services`, `last_seen = max(old, seen)`.
    pub fn got_addr(&mut self, addr: SocketAddr, services: u64, seen: u64) {
        let addr = canonical(addr);
        if !is_routable(&addr) {
            return;
        }
        match self.entries.get_mut(&addr) {
            Some(e) => {
                let changed = e.services != services || seen > e.last_seen;
                e.services = services;
                e.last_seen = e.last_seen.max(seen);
                if changed {
                    self.dirty.insert(addr);
                }
            }
            None => {
                if self.entries.len() >= self.max {
                    self.evict_oldest();
                }
                self.entries.insert(
                    addr,
                    AddrEntry {
                        services,
                        first_seen: seen,
                        last_seen: seen,
                    },
                );
                self.removed.remove(&addr);
                self.dirty.insert(addr);
            }
        }
    }

    pub fn remove(&mut self, addr: &SocketAddr) {
        let addr = canonical(*addr);
        if self.entries.remove(&addr).is_some() {
            self.dirty.remove(&addr);
            self.removed.insert(addr);
        }
        self.failures.remove(&addr);
    }

    /// A dial to `addr` failed; the address is forgotten after a few failures in a row.
    pub fn dial_failed(&mut self, addr: &SocketAddr) {
        let addr = canonical(*addr);
        let n = self.failures.entry(addr).or_insert(0);
        *n += 1;
        if *n >= MAX_FAILURES {
            self.remove(&addr);
        }
    }

    pub fn dial_succeeded(&mut self, addr: &SocketAddr) {
        self.failures.remove(&canonical(*addr));
    }

    /// Up to `n` distinct entries chosen at random.
    pub fn sample(&self, n: usize) -> Vec<(SocketAddr, AddrEntry)> {
        let mut all: Vec<(SocketAddr, AddrEntry)> =
            self.entries.iter().map(|(a, e)| (*a, *e)).collect();
        let n = n.min(all.len());
        // A partial Fisher–Yates shuffle.
        for i in 0..n {
            let j = i + (random_u64() as usize) % (all.len() - i);
            all.swap(i, j);
        }
        all.truncate(n);
        all
    }

    /// A random entry that `usable` accepts, for the connector.
    pub fn pick(&self, usable: impl Fn(&SocketAddr) -> bool) -> Option<SocketAddr> {
        let candidates: Vec<SocketAddr> = self.entries.keys().copied().filter(usable).collect();
        if candidates.is_empty() {
            return None;
        }
        Some(candidates[(random_u64() as usize) % candidates.len()])
    }

    /// What changed since the last call.
    pub fn take_changes(&mut self) -> AddrChanges {
        let mut put: Vec<(SocketAddr, AddrEntry)> = self
            .dirty
            .drain()
            .filter_map(|a| self.entries.get(&a).map(|e| (a, *e)))
            .collect();
        put.sort_by_key(|(a, _)| *a);
        let mut remove: Vec<SocketAddr> = self.removed.drain().collect();
        remove.sort();
        AddrChanges { put, remove }
    }

    /// Changes that could not be handed over, to be taken again later.
    pub fn requeue(&mut self, changes: AddrChanges) {
        for (addr, _) in changes.put {
            if self.entries.contains_key(&addr) {
                self.dirty.insert(addr);
            }
        }
        for addr in changes.remove {
            if !self.entries.contains_key(&addr) {
                self.removed.insert(addr);
            }
        }
    }

    fn evict_oldest(&mut self) {
        if let Some(addr) = self
            .entries
            .iter()
            .min_by_key(|(a, e)| (e.last_seen, **a))
            .map(|(a, _)| *a)
        {
            self.remove(&addr);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn got_addr_keeps_first_seen_and_raises_last_seen() {
        let mut book = AddrBook::new(10, vec![]);
        book.got_addr(sa("10.0.0.1:9333"), 0, 100);
        book.got_addr(sa("10.0.0.1:9333"), 5, 50);
        book.got_addr(sa("[::ffff:10.0.0.1]:9333"), 5, 200);
        assert_eq!(book.len(), 1);
        assert_eq!(
            book.get(&sa("10.0.0.1:9333")),
            Some(&AddrEntry {
                services: 5,
                first_seen: 100,
                last_seen: 200
            })
        );
        let changes = book.take_changes();
        assert_eq!(changes.put.len(), 1);
        assert!(book.take_changes().is_empty());
    }

    #[test]
    fn the_book_is_bounded_and_forgets_the_stalest() {
        let mut book = AddrBook::new(3, vec![]);
        for i in 1..=4u64 {
            book.got_addr(sa(&format!("10.0.0.{i}:9333")), 0, 100 + i);
        }
        assert_eq!(book.len(), 3);
        assert!(book.get(&sa("10.0.0.1:9333")).is_none());
        let changes = book.take_changes();
        assert_eq!(changes.remove, vec![sa("10.0.0.1:9333")]);
        assert_eq!(changes.put.len(), 3);
    }

    #[test]
    fn unroutable_addresses_are_not_kept() {
        let mut book = AddrBook::new(10, vec![]);
        book.got_addr(sa("0.0.0.0:9333"), 0, 1);
        book.got_addr(sa("10.0.0.1:0"), 0, 1);
        book.got_addr(sa("[ff02::1]:9333"), 0, 1);
        assert!(book.is_empty());
    }

    #[test]
    fn repeated_dial_failures_forget_an_address() {
        let mut book = AddrBook::new(10, vec![(sa("10.0.0.1:9333"), AddrEntry::default())]);
        for _ in 0..MAX_FAILURES {
            book.dial_failed(&sa("10.0.0.1:9333"));
        }
        assert!(book.is_empty());
        assert_eq!(book.take_changes().remove, vec![sa("10.0.0.1:9333")]);
    }

    #[test]
    fn sample_returns_distinct_entries() {
        let mut book = AddrBook::new(100, vec![]);
        for i in 1..=50u64 {
            book.got_addr(sa(&format!("10.0.1.{i}:9333")), 0, i);
        }
        let s = book.sample(8);
        let set: HashSet<SocketAddr> = s.iter().map(|(a, _)| *a).collect();
        assert_eq!(set.len(), 8);
        assert_eq!(book.sample(500).len(), 50);
    }
}
