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
    /// Blocks between two halvings of the subsidy (regtest: 150).
    pub halving_interval: u32,
    /// How a block's bits follow from the chain below it.
    pub bits_rule: BitsRule,
}

/// How a block's bits follow from the chain below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BitsRule {
    /// Never retargeted (regtest).
    Fixed,
    /// Retargeted every 2016 blocks (mainnet, signet).
    Retarget,
    /// Retargeted every 2016 blocks, and a block 20 minutes after its parent may use
    /// the minimum difficulty (testnet3, testnet4).
    RetargetMinDifficulty,
}

/// Blocks between two retargets.
const RETARGET_INTERVAL: u32 = 2016;
/// The first block's subsidy: 50 BTC.
const INITIAL_SUBSIDY: u64 = 50 * 100_000_000;

impl ChainParams {
    fn new(
        name: &str,
        (p2pkh_prefix, p2sh_prefix): (u8, u8),
        hrp: &str,
        (rpc_port, p2p_port): (u16, u16),
        magic: [u8; 4],
        cookie_dir: &str,
        (halving_interval, bits_rule): (u32, BitsRule),
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
            halving_interval,
            bits_rule,
        }
    }

    /// The subsidy of the block at `height`, in satoshis.
    pub fn subsidy(&self, height: u32) -> u64 {
        let halvings = height / self.halving_interval.max(1);
        INITIAL_SUBSIDY.checked_shr(halvings).unwrap_or(0)
    }

    /// Whether the block at `height` must have the bits of the block below it, whatever
    /// its time: true unless it starts a retarget period or the chain allows
    /// minimum-difficulty blocks.
    pub fn bits_carry_over(&self, height: u32) -> bool {
        match self.bits_rule {
            BitsRule::Fixed => true,
            BitsRule::Retarget => height % RETARGET_INTERVAL != 0,
            BitsRule::RetargetMinDifficulty => false,
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
            (210_000, BitsRule::Retarget),
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
            (210_000, BitsRule::RetargetMinDifficulty),
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
            (210_000, BitsRule::RetargetMinDifficulty),
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
            (210_000, BitsRule::Retarget),
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
            (150, BitsRule::Fixed),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subsidy_halves_at_each_interval_and_ends_at_zero() {
        let (main, regtest) = (ChainParams::main(), ChainParams::regtest());
        assert_eq!(main.subsidy(0), 5_000_000_000);
        assert_eq!(main.subsidy(209_999), 5_000_000_000);
        assert_eq!(main.subsidy(210_000), 2_500_000_000);
        assert_eq!(main.subsidy(840_000), 312_500_000);
        assert_eq!(regtest.subsidy(149), 5_000_000_000);
        assert_eq!(regtest.subsidy(150), 2_500_000_000);
        assert_eq!(regtest.subsidy(150 * 64), 0);
        assert_eq!(regtest.subsidy(u32::MAX), 0);
    }

    #[test]
    fn bits_carry_over_except_at_a_retarget_or_on_testnets() {
        assert!(ChainParams::regtest().bits_carry_over(2016));
        assert!(ChainParams::main().bits_carry_over(2017));
        assert!(!ChainParams::main().bits_carry_over(4032));
        assert!(ChainParams::signet().bits_carry_over(1));
        assert!(!ChainParams::testnet3().bits_carry_over(1));
        assert!(!ChainParams::testnet4().bits_carry_over(1));
    }
}
