//! `p2pool [options] [BITCOIND_RPC_USERNAME BITCOIND_RPC_PASSWORD]`: parses the command
//! line, sets up logging and signals, runs the node until SIGINT/SIGTERM or a failure.

use std::process::ExitCode;

use crossbeam_channel::{bounded, select};
use log::{error, info, warn};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use p2pool::config::{Config, ConfigParseError};
use p2pool::{limits, logging, node};

fn main() -> ExitCode {
    let config = match Config::parse_from(std::env::args_os()) {
        Ok(c) => c,
        Err(ConfigParseError::Clap(e)) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
        Err(ConfigParseError::Invalid(e)) => {
            eprintln!("p2pool: {e}");
            return ExitCode::from(2);
        }
    };
    let reopen = match logging::init(config.debug, config.logfile.as_deref()) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("p2pool: --logfile: {e}");
            return ExitCode::from(2);
        }
    };
    info!(target: "node", "p2pool {} starting", env!("CARGO_PKG_VERSION"));
    if !limits::bound_allocator() {
        warn!(target: "node", "could not set the allocator's mmap threshold; large freed buffers may be kept");
    }
    raise_open_files(config.max_stratum_connections);
    for line in config.summary().lines() {
        info!(target: "node", "{line}");
    }

    // Signals are taken before any thread starts so none of them dies of SIGTERM.
    let mut signals = match Signals::new([SIGINT, SIGTERM, SIGHUP]) {
        Ok(s) => s,
        Err(e) => {
            error!(target: "node", "cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let handle = signals.handle();
    let (sig_tx, sig_rx) = bounded::<i32>(4);
    let signal_thread = p2pool::thread::spawn("signal", move || {
        for sig in signals.forever() {
            if sig == SIGHUP {
                reopen.request();
                info!(target: "node", "SIGHUP: reopening the log file");
                continue;
            }
            if sig_tx.send(sig).is_err() {
                break;
            }
        }
    });
    if let Err(e) = signal_thread {
        error!(target: "node", "cannot start the signal thread: {e}");
        return ExitCode::FAILURE;
    }

    let running = match node::start(config) {
        Ok(r) => r,
        Err(e) => {
            error!(target: "node", "{e}");
            return ExitCode::FAILURE;
        }
    };
    let done = running.done().clone();
    select! {
        recv(sig_rx) -> sig => info!(
            target: "node",
            "{} received: shutting down",
            if sig == Ok(SIGINT) { "SIGINT" } else { "SIGTERM" }
        ),
        recv(done) -> _ => {}
    }
    handle.close();
    match running.stop() {
        Ok(()) => {
            info!(target: "node", "stopped cleanly");
            ExitCode::SUCCESS
        }
        Err(e) => {
            error!(target: "node", "{e}; stopped");
            ExitCode::FAILURE
        }
    }
}

/// Raises the open-files limit to the hard limit, so that thousands of miners need no
/// `ulimit`, and says how many connections that holds beside the Stratum cap (`cap`).
fn raise_open_files(cap: usize) {
    match limits::raise_open_files() {
        Ok(files) => {
            let room = files.stratum_room(p2pool::worker::MAX_HTTP_CONNECTIONS);
            if files.now > files.before {
                info!(target: "node", "open files: soft limit raised from {} to {}; room for about {room} stratum miners (at most {cap} taken: --max-stratum-connections)", files.before, files.now);
            } else {
                info!(target: "node", "open files: limit {}; room for about {room} stratum miners (at most {cap} taken: --max-stratum-connections)", files.now);
            }
            if room < u64::try_from(cap).unwrap_or(u64::MAX) {
                warn!(target: "node", "open files: the hard limit {} holds about {room} stratum miners, fewer than the {cap} of --max-stratum-connections; connections past it wait in the backlog until a miner leaves (raise the hard limit: ulimit -Hn, or LimitNOFILE= in a systemd unit)", files.now);
            }
        }
        Err(e) => warn!(target: "node", "open files: the limit could not be raised: {e}"),
    }
}
