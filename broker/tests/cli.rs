//! The command line as a user meets it. (This file also makes `cargo test` build the
//! `sluice` binary that compat-tests start.)

use std::process::Command;

fn sluice() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
}

#[test]
fn help_explains_every_flag() {
    let out = sluice().arg("--help").output().expect("run sluice --help");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--config",
        "--listen",
        "--advertised-listener",
        "--data-dir",
        "--shards",
        "--node-id",
        "--num-partitions",
        "--auto-create-topics",
        "--acks-all-fsync",
        "--flush-messages",
        "--flush-ms",
        "--log-segment-bytes",
        "--log-retention-ms",
        "--log-retention-check-interval-ms",
        "--log-cleaner-enable",
        "--offsets-topic-segment-bytes",
    ] {
        assert!(help.contains(flag), "--help does not mention {flag}:\n{help}");
    }
}

#[test]
fn unknown_flags_and_bad_values_are_refused() {
    for args in [
        &["--no-such-flag"][..],
        &["--shards", "0"],
        &["--shards", "many"],
        &["--listen", "nowhere"],
        &["--io-engine", "floppy"],
    ] {
        let out = sluice().args(args).output().expect("run sluice");
        assert!(!out.status.success(), "sluice {args:?} should fail");
        assert!(!out.stderr.is_empty(), "sluice {args:?} should say why");
    }
}

#[test]
fn a_config_file_with_an_unknown_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sluice.toml");
    std::fs::write(&path, "lsiten = '127.0.0.1:1'\n").unwrap();
    let out = sluice().arg("--config").arg(&path).output().expect("run sluice");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("lsiten"));
}
