//! Message payloads (p2p/message.rs) under both rule sets. Byte 0 picks the command among
//! the ten and an unknown one, and the rule set; the rest is the payload.
//!
//! Asserts: decode → encode → decode gives the same message; the re-encoding is stable.
#![no_main]

use libfuzzer_sys::fuzz_target;
use p2pool::network::RuleSet;
use p2pool::p2p::message::Message;
use p2pool_fuzz::RULE_SETS;

const COMMANDS: [&str; 11] = [
    "version",
    "setmode",
    "ping",
    "addrme",
    "addrs",
    "getaddrs",
    "getshares",
    "share0s",
    "share1as",
    "share1bs",
    "unknowncmd",
];

fn check(command: &str, payload: &[u8], rules: RuleSet) {
    let Ok(msg) = Message::decode(command, payload, rules) else {
        return;
    };
    assert_eq!(msg.command(), command);
    if let Message::Unknown { len, .. } = msg {
        assert_eq!(len, payload.len());
        return;
    }
    let encoded = msg.encode_payload();
    let again = Message::decode(command, &encoded, rules)
        .unwrap_or_else(|e| panic!("re-encoded {command} does not decode: {e}"));
    assert_eq!(again, msg, "{command} round trip differs");
    assert_eq!(
        again.encode_payload(),
        encoded,
        "{command} encoding unstable"
    );
}

fuzz_target!(|data: &[u8]| {
    let [selector, payload @ ..] = data else {
        return;
    };
    let command = COMMANDS[usize::from(selector % 11)];
    let rules = RULE_SETS[usize::from((selector / 11) % 2)];
    check(command, payload, rules);
});
