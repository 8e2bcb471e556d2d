//! The address book (§3.11): peer addresses with services, first and last seen, bounded in
//! size, fed by `addrme` and `addrs`, read by the connector and by `getaddrs` replies.
//!
//! Hostile peers cannot take it over: a full book refuses new entries instead of evicting
//! old ones (room comes back only when an address is forgotten after repeated failed
//! dials), and on a network whose peers are on the Internet only publicly routable
//! addresses are stored ([`is_public`], [`local_addresses_allowed`]), so that peers cannot
//! make the node dial loopback or private services (`127.0.0.1:22`, `10.0.0.1:445`).
//!
//! The book lives in memory inside the p2p subsystem; its changes are handed to the node
//! (`take_changes`), which writes them to the LMDB store, and the node gives the stored
//! entries back at start-up.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::network::Network;
use crate::store::AddrEntry;

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
    /// Only publicly routable addresses are stored (see [`local_addresses_allowed`]).
    public_only: bool,
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

/// Whether a network's own peers may be on loopback or private addresses: regtest and
/// custom networks (any network that is not one of the built-in ones exactly), which are
/// run for local tests. On the other built-in networks peers are on the Internet, and the
/// book stores only [`is_public`] addresses.
pub fn local_addresses_allowed(net: &Network) -> bool {
    net.name == "regtest" || Network::built_in(&net.name).as_ref() != Some(net)
}

/// Whether an address is publicly routable: not unspecified, loopback, private (10/8,
/// 172.16/12, 192.168/16, fc00::/7), shared (100.64/10), link-local (169.254/16, fe80::/10),
/// multicast, broadcast or reserved (240/4), benchmarking (198.18/15), IETF protocol
/// assignments (192.0.0/24), documentation (192.0.2/24, 198.51.100/24, 203.0.113/24,
/// 2001:db8::/32), site-local (fec0::/10) or IPv4-compatible (::/96); IPv4-mapped addresses
/// are judged as IPv4.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(a == 0
        || a == 10
        || a == 127
        || a >= 224
        || (a == 100 && (64..128).contains(&b))
        || (a == 169 && b == 254)
        || (a == 172 && (16..32).contains(&b))
        || (a == 192 && b == 168)
        || (a == 192 && b == 0 && (c == 0 || c == 2))
        || (a == 198 && (b == 18 || b == 19))
        || (a == 198 && b == 51 && c == 100)
        || (a == 203 && b == 0 && c == 113))
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    !(s[..6] == [0; 6]
        || s[0] & 0xfe00 == 0xfc00
        || s[0] & 0xffc0 == 0xfe80
        || s[0] & 0xffc0 == 0xfec0
        || s[0] & 0xff00 == 0xff00
        || (s[0] == 0x2001 && s[1] == 0x0db8))
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
    /// A book for `net` holding at most `max` entries, starting with `initial` (from the
    /// store; entries `net` would not store now are dropped and the store told).
    pub fn new(net: &Network, max: usize, initial: Vec<(SocketAddr, AddrEntry)>) -> AddrBook {
        let mut book = AddrBook {
            max: max.max(1),
            public_only: !local_addresses_allowed(net),
            entries: HashMap::new(),
            failures: HashMap::new(),
            dirty: HashSet::new(),
            removed: HashSet::new(),
        };
        for (addr, entry) in initial {
            let addr = canonical(addr);
            if book.storable(&addr) {
                book.entries.insert(addr, entry);
            } else {
                book.removed.insert(addr);
            }
        }
        // A store written with a larger limit is cut down (and the store told). Only here:
        // a full book refuses new entries rather than evicting old ones.
        while book.entries.len() > book.max {
            book.evict_oldest();
        }
        book
    }

    /// Whether the book would keep `addr`: dialable (a port, not unspecified or multicast)
    /// and, unless the network allows local addresses, publicly routable.
    pub fn storable(&self, addr: &SocketAddr) -> bool {
        let addr = canonical(*addr);
        is_routable(&addr) && (!self.public_only || is_public(addr.ip()))
    }

    /// Whether the book is full (new addresses are refused).
    pub fn is_full(&self) -> bool {
        self.entries.len() >= self.max
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
    /// A new address is refused when it is not [`storable`](Self::storable) or when the book
    /// is full (at most `max` entries; the oldest are never evicted for a newcomer, so a
    /// flood of addresses cannot push the known ones out). True when the address is in
    /// the book afterwards.
    pub fn got_addr(&mut self, addr: SocketAddr, services: u64, seen: u64) -> bool {
        let addr = canonical(addr);
        if !self.storable(&addr) {
            return false;
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
                if self.is_full() {
                    return false;
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
        true
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

    fn net(name: &str) -> Network {
        Network::built_in(name).unwrap()
    }

    /// A book on regtest, where local addresses are allowed.
    fn local_book(max: usize, initial: Vec<(SocketAddr, AddrEntry)>) -> AddrBook {
        AddrBook::new(&net("regtest"), max, initial)
    }

    #[test]
    fn got_addr_keeps_first_seen_and_raises_last_seen() {
        let mut book = local_book(10, vec![]);
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
    fn a_full_book_refuses_newcomers_and_keeps_every_entry() {
        let mut book = AddrBook::new(&net("bitcoin"), 1000, vec![]);
        let honest: Vec<SocketAddr> = (0..1000u32)
            .map(|i| SocketAddr::new(IpAddr::V4(Ipv4Addr::from(0x0102_0000 + i)), 9333))
            .collect();
        for a in &honest {
            assert!(book.got_addr(*a, 0, 100));
        }
        let _ = book.take_changes();
        // A flood of newer addresses, as one peer's addrs would bring.
        for i in 0..5000u32 {
            let a = SocketAddr::new(IpAddr::V4(Ipv4Addr::from(0x0506_0000 + i)), 9333);
            assert!(!book.got_addr(a, 0, 10_000));
        }
        assert_eq!(book.len(), 1000);
        assert!(honest.iter().all(|a| book.get(a).is_some()));
        assert!(book.take_changes().is_empty());
        // Known entries are still refreshed; forgetting one makes room for one.
        assert!(book.got_addr(honest[0], 0, 200));
        for _ in 0..MAX_FAILURES {
            book.dial_failed(&honest[1]);
        }
        assert!(book.got_addr(sa("5.6.7.8:9333"), 0, 300));
        assert!(!book.got_addr(sa("5.6.7.9:9333"), 0, 300));
    }

    #[test]
    fn a_store_written_with_a_larger_limit_is_cut_down_to_the_freshest() {
        let initial = (1..=4u64)
            .map(|i| {
                let e = AddrEntry {
                    services: 0,
                    first_seen: 1,
                    last_seen: 100 + i,
                };
                (sa(&format!("10.0.0.{i}:9333")), e)
            })
            .collect();
        let mut book = local_book(3, initial);
        assert_eq!(book.len(), 3);
        assert!(book.get(&sa("10.0.0.1:9333")).is_none());
        assert_eq!(book.take_changes().remove, vec![sa("10.0.0.1:9333")]);
    }

    #[test]
    fn only_public_addresses_are_stored_on_internet_networks() {
        let local = [
            "127.0.0.1:22",
            "10.0.0.1:445",
            "172.16.5.5:9333",
            "172.31.255.1:9333",
            "192.168.1.1:9333",
            "100.64.0.1:9333",
            "169.254.1.1:9333",
            "0.0.0.0:9333",
            "0.1.2.3:9333",
            "224.0.0.1:9333",
            "255.255.255.255:9333",
            "240.0.0.1:9333",
            "192.0.2.1:9333",
            "198.51.100.1:9333",
            "203.0.113.1:9333",
            "198.18.0.1:9333",
            "[::1]:9333",
            "[::]:9333",
            "[fc00::1]:9333",
            "[fd12:3456::1]:9333",
            "[fe80::1]:9333",
            "[ff02::1]:9333",
            "[2001:db8::1]:9333",
            "[::ffff:127.0.0.1]:9333",
            "[::ffff:10.1.2.3]:9333",
            "[::ffff:192.168.0.1]:9333",
            "[::10.1.2.3]:9333",
        ];
        let public = [
            "1.2.3.4:9333",
            "8.8.8.8:8333",
            "172.32.0.1:9333",
            "100.128.0.1:9333",
            "[2a01:4f8::1]:9333",
            "[::ffff:1.2.3.4]:9334",
        ];
        for name in ["bitcoin", "testnet", "testnet4", "signet"] {
            assert!(!local_addresses_allowed(&net(name)), "{name}");
            let mut book = AddrBook::new(&net(name), 100, vec![]);
            for a in local {
                assert!(!book.got_addr(sa(a), 0, 1), "{name} stored {a}");
            }
            assert!(book.is_empty());
            for a in public {
                assert!(book.got_addr(sa(a), 0, 1), "{name} refused {a}");
            }
            assert!(!book.got_addr(sa("1.2.3.5:0"), 0, 1), "port 0");
            assert_eq!(book.len(), public.len());
            // Entries stored earlier (say, by a version before this rule) are dropped at load.
            let stored = vec![
                (sa("127.0.0.1:22"), AddrEntry::default()),
                (sa("1.2.3.4:9333"), AddrEntry::default()),
            ];
            let mut book = AddrBook::new(&net(name), 100, stored);
            assert_eq!(book.len(), 1);
            assert_eq!(book.take_changes().remove, vec![sa("127.0.0.1:22")]);
        }
        // Regtest and custom networks run on local test networks: local addresses are kept.
        let mut custom = net("bitcoin");
        custom.chain_length = 100;
        let mut renamed = net("regtest");
        renamed.name = "lab".into();
        for n in [net("regtest"), custom, renamed] {
            assert!(local_addresses_allowed(&n), "{}", n.name);
            let mut book = AddrBook::new(&n, 100, vec![]);
            for a in [
                "127.0.0.1:9333",
                "10.0.0.1:445",
                "[::1]:9333",
                "192.168.1.1:9333",
            ] {
                assert!(book.got_addr(sa(a), 0, 1), "{} refused {a}", n.name);
            }
            assert!(!book.got_addr(sa("127.0.0.1:0"), 0, 1), "port 0");
            assert!(!book.got_addr(sa("0.0.0.0:9333"), 0, 1), "unspecified");
        }
    }

    #[test]
    fn unroutable_addresses_are_not_kept() {
        let mut book = local_book(10, vec![]);
        book.got_addr(sa("0.0.0.0:9333"), 0, 1);
        book.got_addr(sa("10.0.0.1:0"), 0, 1);
        book.got_addr(sa("[ff02::1]:9333"), 0, 1);
        assert!(book.is_empty());
    }

    #[test]
    fn repeated_dial_failures_forget_an_address() {
        let mut book = local_book(10, vec![(sa("10.0.0.1:9333"), AddrEntry::default())]);
        for _ in 0..MAX_FAILURES {
            book.dial_failed(&sa("10.0.0.1:9333"));
        }
        assert!(book.is_empty());
        assert_eq!(book.take_changes().remove, vec![sa("10.0.0.1:9333")]);
    }

    #[test]
    fn sample_returns_distinct_entries() {
        let mut book = local_book(100, vec![]);
        for i in 1..=50u64 {
            book.got_addr(sa(&format!("10.0.1.{i}:9333")), 0, i);
        }
        let s = book.sample(8);
        let set: HashSet<SocketAddr> = s.iter().map(|(a, _)| *a).collect();
        assert_eq!(set.len(), 8);
        assert_eq!(book.sample(500).len(), 50);
    }
}
