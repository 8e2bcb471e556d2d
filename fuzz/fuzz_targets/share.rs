//! Shares (sharechain/share.rs): share1a and share1b `from_bytes` under both rule sets, and
//! what decodes through `Share::from_share1a` / `from_share1b` on the built-in regtest
//! network (modern) and a legacy network. Byte 0 picks share1a or share1b and the rule set.
//!
//! Asserts: decode → encode → decode gives the same share; a share that passes the
//! stateless checks keeps its hash and bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use p2pool::bitcoin::encode::Encode;
use p2pool::sharechain::share::{Share, Share1a, Share1b};
use p2pool_fuzz::{RULE_SETS, net_of};

fuzz_target!(|data: &[u8]| {
    let [selector, bytes @ ..] = data else {
        return;
    };
    let rules = RULE_SETS[usize::from(selector & 1)];
    let net = net_of(rules);
    if selector & 2 == 0 {
        let Ok(a) = Share1a::from_bytes(bytes, rules) else {
            return;
        };
        let encoded = a.to_bytes();
        assert_eq!(Share1a::from_bytes(&encoded, rules).expect("re-decodes"), a);
        let hash = a.hash();
        let pow_hash = a.pow_hash();
        if let Ok(share) = Share::from_share1a(a.clone(), &net) {
            assert_eq!(share.hash, hash);
            assert_eq!(share.pow_hash, pow_hash);
            assert_eq!(share.to_share1a(), a);
            assert!(!share.is_block());
        }
    } else {
        let Ok(b) = Share1b::from_bytes(bytes, rules) else {
            return;
        };
        let encoded = b.to_bytes();
        assert_eq!(Share1b::from_bytes(&encoded, rules).expect("re-decodes"), b);
        let hash = b.hash();
        if let Ok(share) = Share::from_share1b(b.clone(), &net) {
            assert_eq!(share.hash, hash);
            assert_eq!(share.to_share1a(), b.to_share1a());
            assert_eq!(share.other_txs.as_ref(), Some(&b.other_txs));
            assert!(share.is_block());
        }
    }
});
