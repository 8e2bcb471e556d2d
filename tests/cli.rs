//! The command line: every flag parses, every refusal names its flag, `--help` lists them.

use std::net::SocketAddr;
use std::process::Command;

use p2pool::bitcoind::rpc::Auth;
use p2pool::config::{Cli, Config, ConfigError};

use clap::Parser;

fn parse(args: &[&str]) -> Result<Config, ConfigError> {
    parse_env(args, None)
}

fn parse_env(args: &[&str], env_password: Option<&str>) -> Result<Config, ConfigError> {
    let cli = Cli::try_parse_from(std::iter::once("p2pool").chain(args.iter().copied()))
        .map_err(|e| panic!("clap refused {args:?}: {e}"))
        .unwrap();
    Config::from_cli(cli, env_password.map(str::to_string))
}

fn refused(args: &[&str]) -> ConfigError {
    match parse(args) {
        Ok(c) => panic!("{args:?} was accepted: {c:?}"),
        Err(e) => e,
    }
}

fn clap_refuses(args: &[&str]) -> String {
    match Cli::try_parse_from(std::iter::once("p2pool").chain(args.iter().copied())) {
        Ok(c) => panic!("{args:?} was accepted: {c:?}"),
        Err(e) => e.to_string(),
    }
}

const ALL_FLAGS: [&str; 25] = [
    "--version",
    "--net",
    "--net-file",
    "--testnet",
    "--debug",
    "--address",
    "--p2pool-port",
    "--p2pool-node",
    "--low-bandwidth",
    "--worker-port",
    "--stratum-port",
    "--max-stratum-connections",
    "--bitcoind-address",
    "--bitcoind-rpc-port",
    "--bitcoind-p2p-port",
    "--bitcoind-datadir",
    "--datadir",
    "--max-inbound",
    "--max-outbound",
    "--external-ip",
    "--start-new-chain",
    "--fee",
    "--logfile",
    "BITCOIND_RPC_USERNAME",
    "BITCOIND_RPC_PASSWORD",
];

#[test]
fn help_lists_every_flag_and_the_per_network_defaults() {
    let out = Command::new(env!("CARGO_BIN_EXE_p2pool"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in ALL_FLAGS {
        assert!(help.contains(flag), "--help lacks {flag}:\n{help}");
    }
    for short in ["-a,", "-n,", "-l,", "-w,"] {
        assert!(help.contains(short), "--help lacks {short}:\n{help}");
    }
    assert!(
        help.contains("19332"),
        "per-network ports in --help:\n{help}"
    );
}

#[test]
fn version_prints_the_crate_version() {
    let out = Command::new(env!("CARGO_BIN_EXE_p2pool"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains(env!("CARGO_PKG_VERSION")), "{text}");
}

#[test]
fn defaults_come_from_the_network() {
    let c = parse(&["--net", "testnet4", "u", "p"]).unwrap();
    assert_eq!(c.net.name, "testnet4");
    assert_eq!(c.worker_listen.port(), 29332);
    assert_eq!(c.p2p_listen.port(), 29333);
    assert_eq!(c.stratum_listen.port(), 29334);
    assert_eq!(c.bitcoind.rpc_port, 48332);
    assert_eq!(c.bitcoind.p2p_port, Some(48333));
    assert_eq!(c.bitcoind.host, "127.0.0.1");
    assert_eq!(c.max_inbound, 40);
    assert_eq!(c.max_outbound, 6);
    // 10,000 miners connect without a flag (issue 15).
    assert_eq!(c.max_stratum_connections, 16_384);
    assert_eq!(c.fee, 0.0);
    assert!(!c.low_bandwidth && !c.start_new_chain && !c.debug);
    assert!(c.datadir.ends_with("testnet4"), "{}", c.datadir.display());
    let main = parse(&["u", "p"]).unwrap();
    assert_eq!(main.net.name, "bitcoin");
    assert_eq!(main.worker_listen.port(), 9332);
    assert_eq!(main.bitcoind.rpc_port, 8332);
}

#[test]
fn testnet_flag_is_an_alias_of_net_testnet() {
    let c = parse(&["--testnet", "u", "p"]).unwrap();
    assert_eq!(c.net.name, "testnet");
    assert_eq!(c.worker_listen.port(), 19332);
}

#[test]
fn every_flag_sets_its_value() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("p2pool.log");
    let data = dir.path().join("data");
    let btc = dir.path().join("btc");
    let c = parse(&[
        "--net",
        "regtest",
        "--debug",
        "-a",
        "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080",
        "--p2pool-port",
        "1001",
        "-n",
        "127.0.0.1:1002",
        "--p2pool-node",
        "[::1]",
        "-l",
        "-w",
        "1003",
        "--stratum-port",
        "1004",
        "--max-stratum-connections",
        "20000",
        "--bitcoind-address",
        "localhost",
        "--bitcoind-rpc-port",
        "1005",
        "--bitcoind-p2p-port",
        "1006",
        "--bitcoind-datadir",
        btc.to_str().unwrap(),
        "--datadir",
        data.to_str().unwrap(),
        "--max-inbound",
        "7",
        "--max-outbound",
        "3",
        "--external-ip",
        "203.0.113.9",
        "--start-new-chain",
        "--fee",
        "1.5",
        "--logfile",
        log.to_str().unwrap(),
    ])
    .unwrap();
    assert!(c.debug);
    assert_eq!(c.address.as_ref().unwrap().1.len(), 22);
    assert_eq!(c.p2p_listen.port(), 1001);
    assert_eq!(
        c.connect,
        vec![
            "127.0.0.1:1002".parse::<SocketAddr>().unwrap(),
            "[::1]:49333".parse().unwrap()
        ]
    );
    assert!(c.low_bandwidth);
    assert_eq!(c.worker_listen.port(), 1003);
    assert_eq!(c.stratum_listen.port(), 1004);
    assert_eq!(c.max_stratum_connections, 20_000);
    assert_eq!(c.bitcoind.host, "localhost");
    assert_eq!(c.bitcoind.rpc_port, 1005);
    assert_eq!(c.bitcoind.p2p_port, Some(1006));
    assert_eq!(
        c.bitcoind.auth,
        Auth::Cookie(btc.join("regtest").join(".cookie"))
    );
    assert_eq!(c.datadir, data);
    assert_eq!(c.max_inbound, 7);
    assert_eq!(c.max_outbound, 3);
    assert_eq!(c.external_ip, Some("203.0.113.9".parse().unwrap()));
    assert!(c.start_new_chain);
    assert_eq!(c.fee, 1.5);
    assert_eq!(c.logfile.as_deref(), Some(log.as_path()));
}

#[test]
fn credentials_come_from_arguments_then_environment_then_cookie() {
    let c = parse(&["--net", "regtest", "alice", "secret"]).unwrap();
    assert_eq!(c.bitcoind.auth, Auth::user_pass("alice", "secret"));
    let c = parse_env(&["--net", "regtest", "alice"], Some("from-env")).unwrap();
    assert_eq!(c.bitcoind.auth, Auth::user_pass("alice", "from-env"));
    let c = parse_env(&["--net", "regtest", "alice", "arg"], Some("from-env")).unwrap();
    assert_eq!(c.bitcoind.auth, Auth::user_pass("alice", "arg"));
    let c = parse(&["--net", "regtest", "--bitcoind-datadir", "/b"]).unwrap();
    assert_eq!(c.bitcoind.auth, Auth::Cookie("/b/regtest/.cookie".into()));
    assert!(c.bitcoind.auth_flag.contains("--bitcoind-datadir"));
}

#[test]
fn a_password_in_the_environment_without_a_user_name_is_used_with_an_empty_user() {
    // As bitcoind's own rpcpassword without rpcuser: never silently the cookie instead.
    let c = parse_env(&["--net", "testnet"], Some("from-env")).unwrap();
    assert_eq!(c.bitcoind.auth, Auth::user_pass("", "from-env"));
    assert!(
        c.bitcoind.auth_flag.contains("BITCOIND_RPC_USERNAME"),
        "a refusal names the user name to give: {}",
        c.bitcoind.auth_flag
    );
    let summary = c.summary();
    assert!(summary.contains("no user name"), "{summary}");
    assert!(
        !summary.contains("from-env") && !summary.contains("cookie"),
        "{summary}"
    );
}

#[test]
fn the_binary_takes_the_password_from_the_environment_and_says_so_in_help() {
    let help = Command::new(env!("CARGO_BIN_EXE_p2pool"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    assert!(
        help.contains("P2POOL_BITCOIND_RPC_PASSWORD") && help.contains("without"),
        "{help}"
    );
    // A dead RPC port: the node starts, and its summary shows a password and no cookie.
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_p2pool"))
        .args([
            "--net",
            "regtest",
            "--bitcoind-rpc-port",
            "1",
            "--bitcoind-p2p-port",
            "0",
        ])
        .args(["-w", "127.0.0.1:0", "--p2pool-port", "127.0.0.1:0"])
        .args(["--stratum-port", "127.0.0.1:0"])
        .arg("--datadir")
        .arg(dir.path())
        .env("P2POOL_BITCOIND_RPC_PASSWORD", "sekrit-pw")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let lines = std::thread::spawn(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .take_while(|l| !l.contains("data directory:"))
            .collect::<Vec<_>>()
            .join("\n")
    });
    let start = std::time::Instant::now();
    while !lines.is_finished() && start.elapsed() < std::time::Duration::from_secs(30) {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    let log = lines.join().unwrap();
    assert!(log.contains("password <redacted>"), "{log}");
    assert!(
        !log.contains("cookie") && !log.contains("sekrit-pw"),
        "{log}"
    );
}

#[test]
fn a_file_network_is_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("net.json");
    std::fs::write(
        &path,
        r#"{"NAME": "mynet", "BITCOIN": "regtest", "SHARE_PERIOD": 2, "CHAIN_LENGTH": 30,
            "TARGET_LOOKBEHIND": 10, "SPREAD": 3,
            "MAX_TARGET": "00ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
            "IDENTIFIER": "0102030405060708", "PREFIX": "1112131415161718",
            "WORKER_PORT": 5001, "P2P_PORT": 5002, "STRATUM_PORT": 5003}"#,
    )
    .unwrap();
    let c = parse(&["--net-file", path.to_str().unwrap(), "u", "p"]).unwrap();
    assert_eq!(c.net.name, "mynet");
    assert_eq!(c.net.chain_length, 30);
    assert_eq!(c.worker_listen.port(), 5001);
    assert_eq!(c.p2p_listen.port(), 5002);
    assert_eq!(c.bitcoind.rpc_port, 18443);
    std::fs::write(&path, "{").unwrap();
    let e = refused(&["--net-file", path.to_str().unwrap(), "u", "p"]);
    assert_eq!(e.flag, "--net-file");
}

#[test]
fn each_bad_value_is_refused_naming_its_flag() {
    let file = tempfile::NamedTempFile::new().unwrap();
    let file = file.path().to_str().unwrap().to_string();
    let cases: [(&[&str], &str); 19] = [
        (&["--net", "nonet", "u", "p"], "--net"),
        (
            &["--net-file", "/nonexistent/net.json", "u", "p"],
            "--net-file",
        ),
        (&["-a", "notanaddress", "u", "p"], "-a/--address"),
        (
            &[
                "--net",
                "regtest",
                "-a",
                "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4",
                "u",
                "p",
            ],
            "-a/--address",
        ),
        (&["--fee", "-1", "u", "p"], "--fee"),
        (&["--fee", "100.5", "u", "p"], "--fee"),
        (&["--external-ip", "nope", "u", "p"], "--external-ip"),
        (&["-n", "127.0.0.1:notaport", "u", "p"], "-n/--p2pool-node"),
        (&["-n", ":9333", "u", "p"], "-n/--p2pool-node"),
        (
            &["-w", "5000", "--stratum-port", "5000", "u", "p"],
            "--stratum-port",
        ),
        (&["--max-outbound", "1000", "u", "p"], "--max-outbound"),
        (
            &["--max-stratum-connections", "0", "u", "p"],
            "--max-stratum-connections",
        ),
        (
            &["--max-stratum-connections", "2000000", "u", "p"],
            "--max-stratum-connections",
        ),
        (&["u"], "BITCOIND_RPC_PASSWORD"),
        (&["-n", "not a host", "u", "p"], "-n/--p2pool-node"),
        (
            &["--bitcoind-address", "not a host", "u", "p"],
            "--bitcoind-address",
        ),
        (
            &["--bitcoind-address", "127.0.0.1:8332", "u", "p"],
            "--bitcoind-address",
        ),
        (&["--datadir", &file, "u", "p"], "--datadir"),
        (
            &["-w", "127.0.0.1:5000", "--stratum-port", "5000", "u", "p"],
            "--stratum-port",
        ),
    ];
    for (args, flag) in cases {
        let e = refused(args);
        assert_eq!(e.flag, flag, "{args:?}: {e}");
        assert!(e.to_string().starts_with(flag), "{e}");
    }
    let e = refused(&["--datadir", &file, "u", "p"]);
    assert!(
        e.reason.contains(&file) && e.reason.contains("not a directory"),
        "{e}"
    );
}

#[test]
fn the_datadir_refusal_at_the_binary_names_the_flag_and_the_path() {
    let file = tempfile::NamedTempFile::new().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_p2pool"))
        .args(["--net", "regtest", "--datadir"])
        .arg(file.path())
        .args(["u", "p"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--datadir") && err.contains(&*file.path().to_string_lossy()),
        "{err}"
    );
    assert!(!err.contains("os error"), "{err}");
}

#[test]
fn host_names_are_checked_at_start_and_resolved_later_ips_with_brackets_are_taken() {
    // -n names are left to the connector, which resolves (and retries) them.
    let c = parse(&[
        "--net",
        "regtest",
        "-n",
        "nosuchhost.invalid:7",
        "-n",
        "10.0.0.1",
        "u",
        "p",
    ])
    .unwrap();
    assert_eq!(c.connect_hosts, vec![("nosuchhost.invalid".to_string(), 7)]);
    assert_eq!(
        c.connect,
        vec!["10.0.0.1:49333".parse::<SocketAddr>().unwrap()]
    );
    assert!(
        c.summary().contains("nosuchhost.invalid:7"),
        "{}",
        c.summary()
    );
    let c = parse(&["--bitcoind-address", "[::1]", "u", "p"]).unwrap();
    assert_eq!(c.bitcoind.host, "::1");
    let c = parse(&["--bitcoind-address", "node.example.org", "u", "p"]).unwrap();
    assert_eq!(c.bitcoind.host, "node.example.org");
}

#[test]
fn each_listening_port_takes_an_address_to_bind_and_a_bare_port_binds_every_interface() {
    let c = parse(&[
        "--net",
        "regtest",
        "-w",
        "127.0.0.1:1003",
        "--stratum-port",
        "[::1]:1004",
        "--p2pool-port",
        "127.0.0.2:1001",
        "u",
        "p",
    ])
    .unwrap();
    assert_eq!(c.worker_listen, "127.0.0.1:1003".parse().unwrap());
    assert_eq!(c.stratum_listen, "[::1]:1004".parse().unwrap());
    assert_eq!(c.p2p_listen, "127.0.0.2:1001".parse().unwrap());
    let c = parse(&["--net", "regtest", "-w", "1003", "u", "p"]).unwrap();
    assert!(c.worker_listen.ip().is_unspecified());
    assert_eq!(c.worker_listen.port(), 1003);
    // The same port on two different addresses is allowed.
    let c = parse(&[
        "-w",
        "127.0.0.1:5000",
        "--stratum-port",
        "127.0.0.2:5000",
        "u",
        "p",
    ]);
    assert!(c.is_ok(), "{c:?}");
    let e = clap_refuses(&["-w", "localhost:9332"]);
    assert!(
        e.contains("--worker-port") && e.contains("ADDR:PORT"),
        "{e}"
    );
}

#[test]
fn malformed_numbers_and_unknown_flags_are_refused_by_the_parser() {
    for (args, flag) in [
        (&["--p2pool-port", "70000"][..], "--p2pool-port"),
        (&["-w", "x"][..], "--worker-port"),
        (&["-w", "127.0.0.1"][..], "--worker-port"),
        (&["--stratum-port=-3"][..], "--stratum-port"),
        (&["--bitcoind-rpc-port", "1e3"][..], "--bitcoind-rpc-port"),
        (&["--bitcoind-p2p-port", ""][..], "--bitcoind-p2p-port"),
        (&["--max-inbound", "many"][..], "--max-inbound"),
        (
            &["--max-stratum-connections", "lots"][..],
            "--max-stratum-connections",
        ),
        (&["--fee", "lots"][..], "--fee"),
    ] {
        let e = clap_refuses(args);
        assert!(e.contains(flag), "{args:?}: {e}");
    }
    let e = clap_refuses(&["--no-such-flag"]);
    assert!(e.contains("--no-such-flag"), "{e}");
}

#[test]
fn a_refused_value_exits_with_status_2_and_names_the_flag() {
    let out = Command::new(env!("CARGO_BIN_EXE_p2pool"))
        .args(["--fee", "200", "u", "p"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--fee"), "{err}");
}

#[test]
fn the_bitcoind_p2p_link_can_be_turned_off() {
    let c = parse(&["--bitcoind-p2p-port", "0", "u", "p"]).unwrap();
    assert_eq!(c.bitcoind.p2p_port, None);
}
