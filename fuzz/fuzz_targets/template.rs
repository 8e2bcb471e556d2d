//! getblocktemplate answers (bitcoin/template.rs), read as the RPC layer reads them:
//! `TemplateAnswer` straight from the bytes, and also `Template::from_json` and, through a
//! `serde_json::Value`, `Template::from_value`. A template that parses is then fitted to a
//! block beside a coinbase (bitcoin/fit.rs), as the node does.
//!
//! Asserts: the three readings agree whenever they succeed; a fitted block stays within
//! the template's limits and keeps only template transactions, in order.
#![no_main]

use libfuzzer_sys::fuzz_target;
use p2pool::bitcoin::fit::CoinbaseCost;
use p2pool::bitcoin::template::{Template, TemplateAnswer};
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let answer = serde_json::from_slice::<TemplateAnswer>(data);
    let from_json = Template::from_json(data);
    if let Ok(t) = &from_json {
        let TemplateAnswer(Ok(a)) = answer.as_ref().expect("answer deserialises") else {
            panic!("from_json accepts what TemplateAnswer refuses");
        };
        assert_eq!(a, t);
    }
    if let Ok(value) = serde_json::from_slice::<Value>(data) {
        let from_value = Template::from_value(&value);
        if let (Ok(a), Ok(b)) = (&from_json, &from_value) {
            assert_eq!(a, b, "from_json and from_value differ");
        }
    }
    let Ok(template) = from_json else {
        return;
    };
    let _ = template.sigop_scale();
    assert_eq!(template.txids().len(), template.transactions.len());
    for (i, tx) in template.transactions.iter().enumerate() {
        assert!(
            tx.depends.iter().all(|&d| d < i),
            "a dependency after its spender"
        );
    }
    for coinbase in [
        CoinbaseCost {
            weight: 800,
            size: 200,
            sigops: 4,
        },
        CoinbaseCost {
            weight: 40_000,
            size: 10_000,
            sigops: 400,
        },
    ] {
        let Ok(fitted) = template.fit(coinbase) else {
            continue;
        };
        assert!(fitted.keep.windows(2).all(|w| w[0] < w[1]));
        assert!(fitted.keep.iter().all(|&i| i < template.transactions.len()));
        if let Some(w) = template.limits.weight {
            assert!(
                fitted.weight <= w,
                "fitted weight {} over {w}",
                fitted.weight
            );
        }
        if let Some(s) = template.limits.size {
            assert!(fitted.size <= s, "fitted size {} over {s}", fitted.size);
        }
        assert!(fitted.sigops <= template.limits.sigops);
        assert!(fitted.coinbase_value <= template.coinbase_value);
        let _ = fitted.coinbase_branch(&template);
        let _ = fitted.witness_commitment(&template);
    }
});
