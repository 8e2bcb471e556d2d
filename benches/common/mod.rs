//! What the bench binaries share.

/// Whether to measure: `cargo bench` passes `--bench`, while `cargo test --all-targets`
/// runs each bench binary without it (and `--list` asks only for names). Measuring in a
/// debug build would only slow the test suite down.
pub fn measuring() -> bool {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return false;
    }
    if !args.iter().any(|a| a == "--bench") {
        println!("measurements run under `cargo bench` only");
        return false;
    }
    true
}
