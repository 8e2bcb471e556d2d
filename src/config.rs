//! The command line, in the shape of the original `run_p2pool.py`:
//! `p2pool [options] [BITCOIND_RPC_USERNAME BITCOIND_RPC_PASSWORD]`.
//!
//! `Cli` is what clap parses; `Config` is the checked, resolved configuration the node
//! runs with (defaults filled in from the network, IP addresses parsed and host names checked
//! (the P2P connector resolves `-n` names when it dials), credentials chosen).

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use clap::{ArgAction, Parser};

use crate::bitcoin::address;
use crate::bitcoind::rpc::{self, Auth};
use crate::network::{BUILT_IN, Network};

/// The environment variable that may hold the RPC password (keeps it off the command line).
pub const PASSWORD_ENV: &str = "P2POOL_BITCOIND_RPC_PASSWORD";

/// Inbound P2Pool connections accepted by default (R: `--max-conns 40`).
pub const DEFAULT_MAX_INBOUND: usize = 40;
/// Outbound P2Pool connections kept by default (R: `--outgoing-conns 6`).
pub const DEFAULT_MAX_OUTBOUND: usize = 6;
/// Stratum connections held at once by default: room for 10,000 miners and more (each
/// takes one file descriptor and one thread; the node raises its own open-files limit).
pub const DEFAULT_MAX_STRATUM: usize = crate::worker::MAX_STRATUM_CONNECTIONS;
/// The largest `--max-stratum-connections` taken (a thread per connection).
pub const MAX_STRATUM_LIMIT: usize = 1_000_000;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "p2pool",
    version,
    about = "A decentralized Bitcoin mining pool node (P2Pool)",
    after_help = "Credentials: BITCOIND_RPC_USERNAME BITCOIND_RPC_PASSWORD, or the password in \
                  $P2POOL_BITCOIND_RPC_PASSWORD (with or without BITCOIND_RPC_USERNAME; without \
                  one the user name is empty, as bitcoind's own rpcpassword without rpcuser). \
                  With no password at all, bitcoind's cookie file is used \
                  (--bitcoind-datadir).\n\
                  Listening: -w, --stratum-port and --p2pool-port take PORT (every interface) or \
                  ADDR:PORT ([ADDR]:PORT for IPv6) to listen on one address only.\n\
                  Ports default per network: worker (getwork and web) / P2Pool / Stratum are \
                  9332 / 9333 / 9334 on bitcoin, 19332 / 19333 / 19334 on testnet, \
                  29332 / … on testnet4, 39332 / … on signet, 49332 / … on regtest."
)]
pub struct Cli {
    /// The P2Pool network: bitcoin, testnet, testnet4, signet or regtest
    #[arg(long, value_name = "NAME", default_value = "bitcoin")]
    pub net: String,
    /// A custom network from a JSON file (overrides --net)
    #[arg(long, value_name = "FILE", conflicts_with = "testnet")]
    pub net_file: Option<PathBuf>,
    /// Use the testnet (the same as --net testnet)
    #[arg(long)]
    pub testnet: bool,
    /// Debug logging
    #[arg(long)]
    pub debug: bool,
    /// Pay to this address (default: ask bitcoind's wallet, else a key generated in the data dir)
    #[arg(short = 'a', long, value_name = "ADDRESS")]
    pub address: Option<String>,
    /// Listen for P2Pool peers on PORT, on every interface or only ADDR (default: the network's port, e.g. 9333)
    #[arg(long, value_name = "[ADDR:]PORT", value_parser = parse_listen, help_heading = "p2pool interface")]
    pub p2pool_port: Option<Listen>,
    /// Connect to the P2Pool node at ADDR[:PORT] (repeatable; the port defaults to the network's)
    #[arg(short = 'n', long, value_name = "ADDR[:PORT]", action = ArgAction::Append, help_heading = "p2pool interface")]
    pub p2pool_node: Vec<String>,
    /// Trade lower bandwidth for higher latency: announce shares by hash (share0s)
    #[arg(short = 'l', long, help_heading = "p2pool interface")]
    pub low_bandwidth: bool,
    /// Most inbound P2Pool connections
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_INBOUND, help_heading = "p2pool interface")]
    pub max_inbound: usize,
    /// Most outbound P2Pool connections
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_OUTBOUND, help_heading = "p2pool interface")]
    pub max_outbound: usize,
    /// The address to advertise to peers (default: what peers see)
    #[arg(long, value_name = "IP", help_heading = "p2pool interface")]
    pub external_ip: Option<String>,
    /// Start a new share chain on a network that persists instead of waiting for peers
    #[arg(long, help_heading = "p2pool interface")]
    pub start_new_chain: bool,
    /// Listen for getwork miners and the web dashboard on PORT, on every interface or only ADDR (default: the network's port, e.g. 9332)
    #[arg(
        short = 'w',
        long,
        value_name = "[ADDR:]PORT",
        value_parser = parse_listen,
        help_heading = "worker interface"
    )]
    pub worker_port: Option<Listen>,
    /// Listen for Stratum miners on PORT, on every interface or only ADDR (default: the network's port, e.g. 9334)
    #[arg(long, value_name = "[ADDR:]PORT", value_parser = parse_listen, help_heading = "worker interface")]
    pub stratum_port: Option<Listen>,
    /// Most Stratum connections held at once; more are told "too many connections" and closed (each takes a thread and a file descriptor; the node raises its own open-files limit at start and logs how many miners it holds)
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_STRATUM, help_heading = "worker interface")]
    pub max_stratum_connections: usize,
    /// Charge miners this percentage of their work, mined to this node's address (0 to 100)
    #[arg(
        long,
        value_name = "PERCENT",
        default_value_t = 0.0,
        allow_negative_numbers = true,
        help_heading = "worker interface"
    )]
    pub fee: f64,
    /// bitcoind's host name or IP address
    #[arg(
        long,
        value_name = "ADDRESS",
        default_value = "127.0.0.1",
        help_heading = "bitcoind interface"
    )]
    pub bitcoind_address: String,
    /// bitcoind's RPC port (default: the chain's, e.g. 8332)
    #[arg(long, value_name = "PORT", help_heading = "bitcoind interface")]
    pub bitcoind_rpc_port: Option<u16>,
    /// bitcoind's P2P port, for new-block notice and block submission (default: the chain's, e.g. 8333; 0 turns the link off)
    #[arg(long, value_name = "PORT", help_heading = "bitcoind interface")]
    pub bitcoind_p2p_port: Option<u16>,
    /// bitcoind's data directory, where its cookie file is (default: ~/.bitcoin)
    #[arg(long, value_name = "DIR", help_heading = "bitcoind interface")]
    pub bitcoind_datadir: Option<PathBuf>,
    /// Where p2pool keeps its share chain, address book and key (default: ~/.p2pool/NET)
    #[arg(long, value_name = "DIR")]
    pub datadir: Option<PathBuf>,
    /// Also log to FILE (reopened on SIGHUP)
    #[arg(long, value_name = "FILE")]
    pub logfile: Option<PathBuf>,
    /// bitcoind RPC username
    #[arg(value_name = "BITCOIND_RPC_USERNAME")]
    pub rpc_username: Option<String>,
    /// bitcoind RPC password (or $P2POOL_BITCOIND_RPC_PASSWORD, which also works without a user name; without a password the cookie is used)
    #[arg(value_name = "BITCOIND_RPC_PASSWORD")]
    pub rpc_password: Option<String>,
}

/// A refused command line: the flag and what is wrong with its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub flag: &'static str,
    pub reason: String,
}

impl ConfigError {
    fn new(flag: &'static str, reason: impl Into<String>) -> ConfigError {
        ConfigError {
            flag,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.flag, self.reason)
    }
}

impl std::error::Error for ConfigError {}

/// How to reach bitcoind.
#[derive(Debug, Clone)]
pub struct BitcoindConfig {
    pub host: String,
    pub rpc_port: u16,
    /// `None` when the P2P link is turned off.
    pub p2p_port: Option<u16>,
    pub auth: Auth,
    /// Which flag a rejected credential is fixed with, for the error message.
    pub auth_flag: &'static str,
}

/// The resolved configuration the node runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub net: Network,
    pub debug: bool,
    /// The payout script of `-a`, with the address as given.
    pub address: Option<(String, Vec<u8>)>,
    pub p2p_listen: SocketAddr,
    /// `-n` IP addresses.
    pub connect: Vec<SocketAddr>,
    /// `-n` host names and ports, resolved by the P2P connector when it dials (a name
    /// that does not resolve yet is tried again, so a DNS hiccup at start stops nothing).
    pub connect_hosts: Vec<(String, u16)>,
    pub low_bandwidth: bool,
    pub max_inbound: usize,
    pub max_outbound: usize,
    pub external_ip: Option<IpAddr>,
    pub start_new_chain: bool,
    pub worker_listen: SocketAddr,
    pub stratum_listen: SocketAddr,
    /// `--max-stratum-connections`.
    pub max_stratum_connections: usize,
    pub fee: f64,
    pub bitcoind: BitcoindConfig,
    pub datadir: PathBuf,
    pub logfile: Option<PathBuf>,
}

impl Config {
    /// Parses `args` (with the program name first). Help and version requests come back as
    /// clap's error, which prints them.
    pub fn parse_from<I, T>(args: I) -> Result<Config, ConfigParseError>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let cli = Cli::try_parse_from(args).map_err(ConfigParseError::Clap)?;
        let env_password = std::env::var(PASSWORD_ENV).ok().filter(|p| !p.is_empty());
        Config::from_cli(cli, env_password).map_err(ConfigParseError::Invalid)
    }

    /// Checks and resolves a parsed command line. `env_password` is `$P2POOL_BITCOIND_RPC_PASSWORD`.
    pub fn from_cli(cli: Cli, env_password: Option<String>) -> Result<Config, ConfigError> {
        let net = match (&cli.net_file, cli.testnet) {
            (Some(path), _) => Network::from_file(path)
                .map_err(|e| ConfigError::new("--net-file", e.to_string()))?,
            (None, true) => built_in("testnet")?,
            (None, false) => built_in(&cli.net)?,
        };
        let address = match &cli.address {
            Some(a) => {
                let script = address::to_script(a, &net.bitcoin).map_err(|e| {
                    ConfigError::new(
                        "-a/--address",
                        format!("{a:?} is not a {} address: {e}", net.bitcoin.name),
                    )
                })?;
                Some((a.clone(), script))
            }
            None => None,
        };
        if !(0.0..=100.0).contains(&cli.fee) || cli.fee.is_nan() {
            return Err(ConfigError::new(
                "--fee",
                format!("{} is not a percentage from 0 to 100", cli.fee),
            ));
        }
        if cli.max_outbound > 100 {
            return Err(ConfigError::new(
                "--max-outbound",
                format!("{} is more than 100 connections", cli.max_outbound),
            ));
        }
        if cli.max_inbound > 10_000 {
            return Err(ConfigError::new(
                "--max-inbound",
                format!("{} is more than 10000 connections", cli.max_inbound),
            ));
        }
        if !(1..=MAX_STRATUM_LIMIT).contains(&cli.max_stratum_connections) {
            return Err(ConfigError::new(
                "--max-stratum-connections",
                format!(
                    "{} is not from 1 to {MAX_STRATUM_LIMIT} connections",
                    cli.max_stratum_connections
                ),
            ));
        }
        let external_ip = match &cli.external_ip {
            Some(ip) => Some(ip.parse::<IpAddr>().map_err(|_| {
                ConfigError::new("--external-ip", format!("{ip:?} is not an IP address"))
            })?),
            None => None,
        };
        let any = unspecified(&net);
        let listen = |l: Option<Listen>, port: u16| match l {
            Some(Listen { ip, port }) => SocketAddr::new(ip.unwrap_or(any), port),
            None => SocketAddr::new(any, port),
        };
        let p2p_listen = listen(cli.p2pool_port, net.p2p_port);
        let worker_listen = listen(cli.worker_port, net.worker_port);
        let stratum_listen = listen(cli.stratum_port, net.stratum_port);
        if worker_listen.port() != 0
            && worker_listen.port() == stratum_listen.port()
            && (worker_listen.ip() == stratum_listen.ip()
                || worker_listen.ip().is_unspecified()
                || stratum_listen.ip().is_unspecified())
        {
            return Err(ConfigError::new(
                "--stratum-port",
                format!(
                    "port {} is also the worker port (-w)",
                    stratum_listen.port()
                ),
            ));
        }
        let mut connect = Vec::new();
        let mut connect_hosts = Vec::new();
        for node in &cli.p2pool_node {
            match parse_node(node, net.p2p_port)? {
                NodeAddr::Ip(addr) => connect.push(addr),
                NodeAddr::Host(host, port) => connect_hosts.push((host, port)),
            }
        }

        let rpc_port = cli.bitcoind_rpc_port.unwrap_or(net.bitcoin.rpc_port);
        let p2p = cli.bitcoind_p2p_port.unwrap_or(net.bitcoin.p2p_port);
        let bitcoind_host = bitcoind_host(&cli.bitcoind_address)?;
        let password = cli.rpc_password.clone().or(env_password);
        let (auth, auth_flag) = match (&cli.rpc_username, password) {
            (Some(user), Some(password)) => (
                Auth::user_pass(user.clone(), password),
                "BITCOIND_RPC_USERNAME BITCOIND_RPC_PASSWORD (or $P2POOL_BITCOIND_RPC_PASSWORD)",
            ),
            (Some(_), None) => {
                return Err(ConfigError::new(
                    "BITCOIND_RPC_PASSWORD",
                    format!(
                        "a username was given without a password; give the password after it \
                         or in ${PASSWORD_ENV}, or neither to use bitcoind's cookie"
                    ),
                ));
            }
            // A password alone: bitcoind's own `rpcpassword` without `rpcuser` is the
            // empty user name with that password, and so is the original's single argument.
            (None, Some(password)) => (
                Auth::user_pass(String::new(), password),
                "BITCOIND_RPC_USERNAME (none was given, so the user name was empty) with \
                     $P2POOL_BITCOIND_RPC_PASSWORD, or unset it to use the cookie",
            ),
            (None, None) => {
                let dir = match &cli.bitcoind_datadir {
                    Some(d) => d.clone(),
                    None => rpc::default_datadir().ok_or_else(|| {
                        ConfigError::new(
                            "--bitcoind-datadir",
                            "no home directory to find bitcoind's cookie in; give the data \
                             directory or BITCOIND_RPC_USERNAME BITCOIND_RPC_PASSWORD",
                        )
                    })?,
                };
                (
                    Auth::cookie_in_datadir(&dir, &net.bitcoin),
                    "--bitcoind-datadir (the cookie), or BITCOIND_RPC_USERNAME BITCOIND_RPC_PASSWORD",
                )
            }
        };
        let datadir = match &cli.datadir {
            Some(d) => d.clone(),
            None => default_datadir(&net.name),
        };
        check_datadir(&datadir)?;
        Ok(Config {
            debug: cli.debug,
            address,
            p2p_listen,
            connect,
            connect_hosts,
            low_bandwidth: cli.low_bandwidth,
            max_inbound: cli.max_inbound,
            max_outbound: cli.max_outbound,
            external_ip,
            start_new_chain: cli.start_new_chain,
            worker_listen,
            stratum_listen,
            max_stratum_connections: cli.max_stratum_connections,
            fee: cli.fee,
            bitcoind: BitcoindConfig {
                host: bitcoind_host,
                rpc_port,
                p2p_port: (p2p != 0).then_some(p2p),
                auth,
                auth_flag,
            },
            datadir,
            logfile: cli.logfile.clone(),
            net,
        })
    }

    /// The effective configuration, one line per setting, secrets redacted.
    pub fn summary(&self) -> String {
        let auth = match &self.bitcoind.auth {
            Auth::UserPass { user, .. } if user.is_empty() => {
                "no user name (empty), password <redacted>".to_string()
            }
            Auth::UserPass { user, .. } => format!("user {user:?}, password <redacted>"),
            Auth::Cookie(path) => format!("cookie {}", path.display()),
        };
        let connect = if self.connect.is_empty() && self.connect_hosts.is_empty() {
            "none".to_string()
        } else {
            self.connect
                .iter()
                .map(SocketAddr::to_string)
                .chain(self.connect_hosts.iter().map(|(h, p)| format!("{h}:{p}")))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let lines = [
            format!(
                "network: {} ({} rules, share period {} s, chain length {}, persist {})",
                self.net.name,
                self.net.rules.name(),
                self.net.share_period,
                self.net.chain_length,
                self.net.persist
            ),
            format!(
                "payout: {}",
                self.address
                    .as_ref()
                    .map_or("from bitcoind's wallet or a local key", |(a, _)| a.as_str())
            ),
            format!(
                "p2pool: listen {}, connect to {connect}, max {} in / {} out, low bandwidth {}, \
                 external ip {}, start new chain {}",
                self.p2p_listen,
                self.max_inbound,
                self.max_outbound,
                self.low_bandwidth,
                self.external_ip
                    .map_or("(what peers see)".to_string(), |ip| ip.to_string()),
                self.start_new_chain
            ),
            format!(
                "miners: getwork and web on {}, stratum on {} (at most {} connections), fee {}%",
                self.worker_listen, self.stratum_listen, self.max_stratum_connections, self.fee
            ),
            format!(
                "bitcoind: rpc {}:{} ({auth}), p2p {}",
                self.bitcoind.host,
                self.bitcoind.rpc_port,
                self.bitcoind
                    .p2p_port
                    .map_or("off".to_string(), |p| format!("{}:{p}", self.bitcoind.host))
            ),
            format!("data directory: {}", self.datadir.display()),
        ];
        lines.join("\n")
    }
}

/// Why the command line was not accepted: clap's own errors (including `--help` and
/// `--version`, which it prints), or a value refused after parsing.
#[derive(Debug)]
pub enum ConfigParseError {
    Clap(clap::Error),
    Invalid(ConfigError),
}

fn built_in(name: &str) -> Result<Network, ConfigError> {
    Network::built_in(name).ok_or_else(|| {
        ConfigError::new(
            "--net",
            format!(
                "{name:?} is not a network; the networks are {} (or --net-file FILE)",
                BUILT_IN.join(", ")
            ),
        )
    })
}

/// The unspecified address to listen on: IPv6 (dual stack) on modern networks.
fn unspecified(net: &Network) -> IpAddr {
    if net.rules.ipv4_only() {
        IpAddr::from([0, 0, 0, 0])
    } else {
        IpAddr::from([0u16; 8])
    }
}

/// Where to listen, as `-w`, `--stratum-port` and `--p2pool-port` take it: `PORT` (every
/// interface) or `ADDR:PORT` / `[V6]:PORT` (that address only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listen {
    pub ip: Option<IpAddr>,
    pub port: u16,
}

/// Parses `PORT`, `ADDR:PORT` or `[V6]:PORT` (clap names the flag in its error).
pub fn parse_listen(s: &str) -> Result<Listen, String> {
    if let Ok(port) = s.parse::<u16>() {
        return Ok(Listen { ip: None, port });
    }
    match s.parse::<SocketAddr>() {
        Ok(addr) => Ok(Listen {
            ip: Some(addr.ip()),
            port: addr.port(),
        }),
        Err(_) => Err(format!(
            "{s:?} is not PORT or ADDR:PORT with ADDR an IP address (e.g. 9332, \
             127.0.0.1:9332, [::1]:9332)"
        )),
    }
}

/// A `-n` address: an IP address as given, or a host name the connector resolves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeAddr {
    Ip(SocketAddr),
    Host(String, u16),
}

/// `ADDR[:PORT]`, `[V6]:PORT` or a bare IPv6 address; a host name is checked, not resolved.
pub fn parse_node(node: &str, default_port: u16) -> Result<NodeAddr, ConfigError> {
    const FLAG: &str = "-n/--p2pool-node";
    if let Ok(addr) = node.parse::<SocketAddr>() {
        return Ok(NodeAddr::Ip(addr));
    }
    let bare = node
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .unwrap_or(node);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(NodeAddr::Ip(SocketAddr::new(ip, default_port)));
    }
    let (host, port) = match node.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => {
            let port = p
                .parse::<u16>()
                .map_err(|_| ConfigError::new(FLAG, format!("{node:?} has a bad port {p:?}")))?;
            (h, port)
        }
        _ => (node, default_port),
    };
    if host.is_empty() {
        return Err(ConfigError::new(FLAG, format!("{node:?} has no host")));
    }
    if !is_host_name(host) {
        return Err(ConfigError::new(
            FLAG,
            format!("{host:?} is not a host name or IP address"),
        ));
    }
    Ok(NodeAddr::Host(host.to_string(), port))
}

/// `--bitcoind-address`: an IP address (IPv6 with or without brackets) or a host name,
/// without brackets.
fn bitcoind_host(given: &str) -> Result<String, ConfigError> {
    let bare = given
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .unwrap_or(given);
    if bare.parse::<IpAddr>().is_ok() || is_host_name(bare) {
        return Ok(bare.to_string());
    }
    Err(ConfigError::new(
        "--bitcoind-address",
        format!("{given:?} is not a host name or IP address (the port is --bitcoind-rpc-port)"),
    ))
}

/// A syntactically valid DNS name: dot-separated labels of letters, digits, `-` and `_`
/// (1 to 63 characters, no `-` at either end), 253 characters at most, a trailing dot
/// allowed. Whether it resolves is another matter (asked when connecting).
pub fn is_host_name(host: &str) -> bool {
    let name = host.strip_suffix('.').unwrap_or(host);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// `--datadir` must be a directory or not exist yet (it is created at start).
fn check_datadir(dir: &Path) -> Result<(), ConfigError> {
    match std::fs::metadata(dir) {
        Ok(m) if !m.is_dir() => Err(ConfigError::new(
            "--datadir",
            format!(
                "{} exists and is not a directory; give a directory (it is created if missing)",
                dir.display()
            ),
        )),
        _ => Ok(()),
    }
}

/// `~/.p2pool/<net>`, or `./data/<net>` without a home directory.
pub fn default_datadir(net: &str) -> PathBuf {
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(home) => Path::new(&home).join(".p2pool").join(net),
        None => Path::new("data").join(net),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, ConfigError> {
        let cli = Cli::try_parse_from(std::iter::once("p2pool").chain(args.iter().copied()))
            .map_err(|e| ConfigError::new("clap", e.to_string()))?;
        Config::from_cli(cli, None)
    }

    #[test]
    fn node_address_forms_take_the_network_port_and_leave_names_unresolved() {
        let ip = |s: &str| NodeAddr::Ip(s.parse().unwrap());
        assert_eq!(parse_node("127.0.0.1", 9333).unwrap(), ip("127.0.0.1:9333"));
        assert_eq!(parse_node("[::1]:19", 9333).unwrap(), ip("[::1]:19"));
        assert_eq!(parse_node("::1", 9333).unwrap(), ip("[::1]:9333"));
        assert_eq!(
            parse_node("localhost:7", 9333).unwrap(),
            NodeAddr::Host("localhost".into(), 7)
        );
        assert_eq!(
            parse_node("nosuchhost.invalid", 9333).unwrap(),
            NodeAddr::Host("nosuchhost.invalid".into(), 9333)
        );
        assert!(parse_node("localhost:x", 9333).is_err());
        assert!(parse_node("not a host", 9333).is_err());
    }

    #[test]
    fn host_names_are_checked_for_their_form_only() {
        for good in ["localhost", "node-1.example.org", "a_b.example.", "x"] {
            assert!(is_host_name(good), "{good}");
        }
        for bad in [
            "",
            "not a host",
            "-a.org",
            "a..b",
            "a/b",
            "a:b",
            &"x".repeat(64),
        ] {
            assert!(!is_host_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn listen_forms_are_a_port_or_an_ip_and_port() {
        assert_eq!(
            parse_listen("9332").unwrap(),
            Listen {
                ip: None,
                port: 9332
            }
        );
        assert_eq!(
            parse_listen("127.0.0.1:0").unwrap(),
            Listen {
                ip: Some("127.0.0.1".parse().unwrap()),
                port: 0
            }
        );
        assert_eq!(
            parse_listen("[::1]:9").unwrap().ip,
            Some("::1".parse().unwrap())
        );
        for bad in ["x", "70000", "localhost:9332", "127.0.0.1", ":9332"] {
            assert!(parse_listen(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn fee_out_of_range_is_refused_naming_the_flag() {
        let e = parse(&["--fee", "101", "u", "p"]).unwrap_err();
        assert_eq!(e.flag, "--fee");
    }

    #[test]
    fn summary_never_shows_the_password() {
        let c = parse(&["--net", "regtest", "user", "hunter2-secret"]).unwrap();
        let s = c.summary();
        assert!(!s.contains("hunter2"), "{s}");
        assert!(s.contains("<redacted>"), "{s}");
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
