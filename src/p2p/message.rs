//! The ten P2Pool messages and their payload codec.
//!
//! Decoding takes the network's rule set (share format, address form, limits), reads a
//! payload of known length and refuses trailing bytes. A command we do not know decodes
//! to `Message::Unknown`, which the caller may ignore.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

use crate::bitcoin::encode::{self, Decode, Encode, Reader, WriteExt};
use crate::bitcoin::frame::{FrameError, Framing};
use crate::bitcoin::hash::Hash256;
use crate::network::RuleSet;
use crate::sharechain::share::{Share1a, Share1b};

/// Size of an `address_type` on the wire.
const NET_ADDRESS_SIZE: usize = 26;
/// Size of an `addrs` record.
const ADDR_RECORD_SIZE: usize = 8 + NET_ADDRESS_SIZE;
/// The smallest share1a (header, share_data, empty script, subsidy, empty branch).
const MIN_SHARE_SIZE: usize = 80 + 32 + 4 + 1 + 1 + 8 + 1;

/// A peer address: `services u64 ‖ IPv6 [16] ‖ port u16 big-endian`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NetAddress {
    pub services: u64,
    pub ip: Ipv6Addr,
    pub port: u16,
}

impl NetAddress {
    pub fn new(services: u64, ip: IpAddr, port: u16) -> NetAddress {
        let ip = match ip {
            IpAddr::V4(v4) => v4.to_ipv6_mapped(),
            IpAddr::V6(v6) => v6,
        };
        NetAddress { services, ip, port }
    }

    /// The address as IPv4 when it is IPv4-mapped.
    pub fn ip_addr(&self) -> IpAddr {
        match self.ip.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(self.ip),
        }
    }

    fn encode_to(&self, out: &mut Vec<u8>) {
        out.put_u64_le(self.services);
        out.extend_from_slice(&self.ip.octets());
        out.put_u16_be(self.port);
    }

    fn decode_from(r: &mut Reader<'_>, rules: RuleSet) -> encode::Result<Self> {
        let services = r.u64_le("address services")?;
        let ip = Ipv6Addr::from(r.array::<16>("address ip")?);
        if rules.ipv4_only() && ip.to_ipv4_mapped().is_none() {
            return Err(encode::Error::Invalid {
                what: "address ip",
                reason: "must be IPv4-mapped under the legacy rules",
            });
        }
        let port = r.u16_be("address port")?;
        Ok(NetAddress { services, ip, port })
    }
}

/// One `addrs` record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddrRecord {
    /// Unix seconds (u64, unlike Bitcoin's u32).
    pub timestamp: u64,
    pub address: NetAddress,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    pub version: u32,
    pub services: u64,
    pub addr_to: NetAddress,
    pub addr_from: NetAddress,
    /// Random per node process; detects self-connections and duplicates.
    pub nonce: u64,
    pub sub_version: String,
    /// 0 = low bandwidth (announce shares by hash), 1 = normal.
    pub mode: u32,
    pub best_share_hash: Option<Hash256>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Version(Version),
    SetMode {
        mode: u32,
    },
    Ping,
    /// "I listen on this port at the address you see."
    AddrMe {
        port: u16,
    },
    Addrs(Vec<AddrRecord>),
    GetAddrs {
        count: u32,
    },
    /// Send each share in `hashes` and up to `parents` ancestors, stopping at `stops`.
    GetShares {
        hashes: Vec<Hash256>,
        parents: u64,
        stops: Vec<Hash256>,
    },
    /// Share hashes without bodies.
    Share0s(Vec<Hash256>),
    Share1as(Vec<Share1a>),
    Share1bs(Vec<Share1b>),
    /// A command this node does not know; ignored by the caller.
    Unknown {
        command: String,
        len: usize,
    },
}

impl Message {
    pub fn command(&self) -> &str {
        match self {
            Message::Version(_) => "version",
            Message::SetMode { .. } => "setmode",
            Message::Ping => "ping",
            Message::AddrMe { .. } => "addrme",
            Message::Addrs(_) => "addrs",
            Message::GetAddrs { .. } => "getaddrs",
            Message::GetShares { .. } => "getshares",
            Message::Share0s(_) => "share0s",
            Message::Share1as(_) => "share1as",
            Message::Share1bs(_) => "share1bs",
            Message::Unknown { command, .. } => command,
        }
    }

    /// The payload bytes. `Unknown` has none to send.
    pub fn encode_payload(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Message::Version(v) => {
                out.put_u32_le(v.version);
                out.put_u64_le(v.services);
                v.addr_to.encode_to(&mut out);
                v.addr_from.encode_to(&mut out);
                out.put_u64_le(v.nonce);
                out.put_var_bytes(v.sub_version.as_bytes());
                out.put_u32_le(v.mode);
                v.best_share_hash
                    .unwrap_or(Hash256::ZERO)
                    .encode_to(&mut out);
            }
            Message::SetMode { mode } => out.put_u32_le(*mode),
            Message::Ping | Message::Unknown { .. } => {}
            Message::AddrMe { port } => out.put_u16_le(*port),
            Message::Addrs(addrs) => {
                out.put_compact_size(addrs.len() as u64);
                for a in addrs {
                    out.put_u64_le(a.timestamp);
                    a.address.encode_to(&mut out);
                }
            }
            Message::GetAddrs { count } => out.put_u32_le(*count),
            Message::GetShares {
                hashes,
                parents,
                stops,
            } => {
                put_hashes(&mut out, hashes);
                out.put_compact_size(*parents);
                put_hashes(&mut out, stops);
            }
            Message::Share0s(hashes) => put_hashes(&mut out, hashes),
            Message::Share1as(shares) => {
                out.put_compact_size(shares.len() as u64);
                shares.iter().for_each(|s| s.encode_to(&mut out));
            }
            Message::Share1bs(shares) => {
                out.put_compact_size(shares.len() as u64);
                shares.iter().for_each(|s| s.encode_to(&mut out));
            }
        }
        out
    }

    /// A complete frame on `framing`.
    pub fn to_frame(&self, framing: &Framing) -> Result<Vec<u8>, FrameError> {
        framing.encode(self.command(), &self.encode_payload())
    }

    /// Decodes the payload of `command`, which must be consumed exactly.
    pub fn decode(command: &str, payload: &[u8], rules: RuleSet) -> Result<Message, MessageError> {
        let mut r = Reader::new(payload);
        let msg = Self::decode_inner(command, &mut r, rules).map_err(|source| MessageError {
            command: command.to_string(),
            source,
        })?;
        if !matches!(msg, Message::Unknown { .. }) {
            r.finish("message payload").map_err(|source| MessageError {
                command: command.to_string(),
                source,
            })?;
        }
        Ok(msg)
    }

    fn decode_inner(command: &str, r: &mut Reader<'_>, rules: RuleSet) -> encode::Result<Message> {
        Ok(match command {
            "version" => {
                let version = r.u32_le("version")?;
                let services = r.u64_le("services")?;
                let addr_to = NetAddress::decode_from(r, rules)?;
                let addr_from = NetAddress::decode_from(r, rules)?;
                let nonce = r.u64_le("nonce")?;
                let sub_version = r.var_bytes("sub_version", rules.max_sub_version())?;
                let sub_version = String::from_utf8(sub_version.to_vec()).map_err(|_| {
                    encode::Error::Invalid {
                        what: "sub_version",
                        reason: "not UTF-8",
                    }
                })?;
                let mode = r.u32_le("mode")?;
                let best_share_hash = Hash256::decode_from(r)?.non_zero();
                Message::Version(Version {
                    version,
                    services,
                    addr_to,
                    addr_from,
                    nonce,
                    sub_version,
                    mode,
                    best_share_hash,
                })
            }
            "setmode" => Message::SetMode {
                mode: r.u32_le("mode")?,
            },
            "ping" => Message::Ping,
            "addrme" => Message::AddrMe {
                port: r.u16_le("port")?,
            },
            "addrs" => Message::Addrs(r.list("addrs", ADDR_RECORD_SIZE, |r| {
                Ok(AddrRecord {
                    timestamp: r.u64_le("addr timestamp")?,
                    address: NetAddress::decode_from(r, rules)?,
                })
            })?),
            "getaddrs" => Message::GetAddrs {
                count: r.u32_le("count")?,
            },
            "getshares" => Message::GetShares {
                hashes: get_hashes(r, "getshares hashes")?,
                parents: r.compact_size("getshares parents")?,
                stops: get_hashes(r, "getshares stops")?,
            },
            "share0s" => Message::Share0s(get_hashes(r, "share0s hashes")?),
            "share1as" => Message::Share1as(r.list("share1as", MIN_SHARE_SIZE, |r| {
                Share1a::decode_from(r, rules)
            })?),
            "share1bs" => Message::Share1bs(r.list("share1bs", MIN_SHARE_SIZE, |r| {
                Share1b::decode_from(r, rules)
            })?),
            other => Message::Unknown {
                command: other.to_string(),
                len: r.remaining(),
            },
        })
    }
}

fn put_hashes(out: &mut Vec<u8>, hashes: &[Hash256]) {
    out.put_compact_size(hashes.len() as u64);
    hashes.iter().for_each(|h| h.encode_to(out));
}

fn get_hashes(r: &mut Reader<'_>, what: &'static str) -> encode::Result<Vec<Hash256>> {
    r.list(what, 32, Hash256::decode_from)
}

/// A known message whose payload does not decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageError {
    pub command: String,
    pub source: encode::Error,
}

impl fmt::Display for MessageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed {} message: {}", self.command, self.source)
    }
}

impl std::error::Error for MessageError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(sub: &str) -> Message {
        Message::Version(Version {
            version: 1,
            services: 0,
            addr_to: NetAddress::new(0, "1.2.3.4".parse().unwrap(), 9333),
            addr_from: NetAddress::new(0, "::1".parse().unwrap(), 40000),
            nonce: 7,
            sub_version: sub.into(),
            mode: 1,
            best_share_hash: None,
        })
    }

    #[test]
    fn ipv6_addresses_only_under_modern_rules() {
        let payload = version("x").encode_payload();
        assert_eq!(
            Message::decode("version", &payload, RuleSet::Modern).unwrap(),
            version("x")
        );
        let err = Message::decode("version", &payload, RuleSet::Legacy2011).unwrap_err();
        assert!(err.to_string().contains("IPv4-mapped"), "{err}");
    }

    #[test]
    fn sub_version_over_the_limit_is_refused() {
        let ok = version(&"a".repeat(256)).encode_payload();
        assert!(Message::decode("version", &ok, RuleSet::Modern).is_ok());
        let long = version(&"a".repeat(257)).encode_payload();
        assert!(Message::decode("version", &long, RuleSet::Modern).is_err());
    }

    #[test]
    fn trailing_bytes_after_a_known_message_are_refused() {
        let err = Message::decode("ping", &[0], RuleSet::Modern).unwrap_err();
        assert_eq!(
            err.to_string(),
            "malformed ping message: 1 trailing bytes after message payload"
        );
    }

    #[test]
    fn unknown_commands_decode_to_a_value_to_ignore() {
        assert_eq!(
            Message::decode("sendcmpct", &[1, 2, 3], RuleSet::Modern).unwrap(),
            Message::Unknown {
                command: "sendcmpct".into(),
                len: 3
            }
        );
    }

    #[test]
    fn a_huge_claimed_count_is_refused_without_allocating() {
        let payload = [0xff, 0, 0, 0, 0, 0, 0, 0, 1];
        for cmd in ["addrs", "share0s", "share1as", "share1bs", "getshares"] {
            assert!(
                Message::decode(cmd, &payload, RuleSet::Modern).is_err(),
                "{cmd}"
            );
        }
    }
}
