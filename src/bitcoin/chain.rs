//! The Bitcoin side of each chain, as Bitcoin Core defines it: address prefixes, bech32
//! human-readable part, default ports, P2P magic and the cookie directory.

/// Parameters of one Bitcoin chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainParams {
    /// Bitcoin Core's chain name (`main`, `test`, `testnet4`, `signet`, `regtest`).
    pub name: String,
    pub p2pkh_prefix: u8,
    pub p2sh_prefix: u8,
    /// The bech32 human-readable part, lowercase.
    pub hrp: String,
    pub rpc_port: u16,
    pub p2p_port: u16,
    /// The 4-byte message start of the Bitcoin P2P protocol.
    pub magic: [u8; 4],
    /// Sub-directory of the Bitcoin data directory that holds `.cookie` ("" on mainnet).
    pub cookie_dir: String,
}

impl ChainParams {
    fn new(
        name: &str,
        (p2pkh_prefix, p2sh_prefix): (u8, u8),
        hrp: &str,
        (rpc_port, p2p_port): (u16, u16),
        magic: [u8; 4],
        cookie_dir: &str,
    ) -> ChainParams {
        ChainParams {
            name: name.into(),
            p2pkh_prefix,
            p2sh_prefix,
            hrp: hrp.into(),
            rpc_port,
            p2p_port,
            magic,
            cookie_dir: cookie_dir.into(),
        }
    }

    pub fn main() -> ChainParams {
        Self::new(
            "main",
            (0, 5),
            "bc",
            (8332, 8333),
            [0xf9, 0xbe, 0xb4, 0xd9],
            "",
        )
    }

    pub fn testnet3() -> ChainParams {
        Self::new(
            "test",
            (111, 196),
            "tb",
            (18332, 18333),
            [0x0b, 0x11, 0x09, 0x07],
            "testnet3",
        )
    }

    pub fn testnet4() -> ChainParams {
        Self::new(
            "testnet4",
            (111, 196),
            "tb",
            (48332, 48333),
            [0x1c, 0x16, 0x3f, 0x28],
            "testnet4",
        )
    }

    pub fn signet() -> ChainParams {
        Self::new(
            "signet",
            (111, 196),
            "tb",
            (38332, 38333),
            [0x0a, 0x03, 0xcf, 0x40],
            "signet",
        )
    }

    pub fn regtest() -> ChainParams {
        Self::new(
            "regtest",
            (111, 196),
            "bcrt",
            (18443, 18444),
            [0xfa, 0xbf, 0xb5, 0xda],
            "regtest",
        )
    }

    /// Every chain Bitcoin Core knows, for naming the chain of a foreign address.
    pub fn all() -> Vec<ChainParams> {
        vec![
            Self::main(),
            Self::testnet3(),
            Self::testnet4(),
            Self::signet(),
            Self::regtest(),
        ]
    }

    /// A chain by Bitcoin Core's name or the usual aliases.
    pub fn by_name(name: &str) -> Option<ChainParams> {
        match name {
            "main" | "bitcoin" | "mainnet" => Some(Self::main()),
            "test" | "testnet" | "testnet3" => Some(Self::testnet3()),
            "testnet4" => Some(Self::testnet4()),
            "signet" => Some(Self::signet()),
            "regtest" => Some(Self::regtest()),
            _ => None,
        }
    }
}
