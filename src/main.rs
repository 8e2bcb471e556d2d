use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--version" || a == "-V") {
        println!("p2pool {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    eprintln!(
        "p2pool {}: the node cannot run yet; this build has the codec and primitives only \
         (see README.md)",
        env!("CARGO_PKG_VERSION")
    );
    ExitCode::FAILURE
}
