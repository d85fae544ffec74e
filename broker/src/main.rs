//! `sluice`: a Kafka wire-protocol compatible broker.
//!
//! With no flags it serves 127.0.0.1:9092 from `./data` on the embedded local
//! controller. See `sluice --help` and DESIGN.md for the shape: one pinned shard per
//! core, partitions owned by shards, a segment log per partition.

mod admin;
mod config;
mod configs;
mod connection;
mod coordinator;
mod data_dir;
mod exporter;
mod group;
mod handlers;
mod metrics;
mod partition;
mod peer;
mod replication;
mod router;
mod server;
mod shard;
mod share;
mod topic_config;
mod txn;

use std::process::ExitCode;

use clap::Parser;

/// Wall-clock milliseconds since the epoch: Kafka's timestamps (LogAppendTime, commit
/// times, state changes).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn main() -> ExitCode {
    let cli = config::Cli::parse();
    let config = match config::BrokerConfig::resolve(cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sluice: {e}");
            return ExitCode::from(2);
        }
    };
    init_tracing(config.log_json);
    match server::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("sluice: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
