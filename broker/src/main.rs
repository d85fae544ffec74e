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
mod frame;
mod group;
mod handlers;
mod limits;
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

/// glibc's malloc maps each large block (a 1 MB produce frame) afresh and page-faults it
/// in, and gives freed heap memory back to the system as soon as its top is free, so
/// under produce load the broker spent ~8 % of its CPU in page faults re-zeroing request
/// buffers. A fixed mapping threshold above any frame we read and a trim threshold of a
/// few frames keep that memory in the shard threads' arenas for the next request.
#[allow(unsafe_code)] // mallopt is a plain libc call; it is made before any thread starts
fn keep_request_buffers_mapped() {
    /// Blocks up to socket.request.max.bytes' default (100 MiB) come from the arenas.
    const MMAP_THRESHOLD: i32 = 128 << 20;
    /// An arena keeps up to this much free memory at its top before trimming.
    const TRIM_THRESHOLD: i32 = 32 << 20;
    // SAFETY: mallopt takes two integers and changes only malloc's tuning.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
    }
}

/// What the arenas keep free (the thresholds above, and holes below their tops that
/// no threshold reaches) goes back to the system every few seconds: after 10,000
/// connections closed or a burst of large requests the broker's RSS falls back, and
/// a request after it page-faults its buffer in once.
#[allow(unsafe_code)] // malloc_trim is a plain libc call, safe from any thread
fn trim_freed_memory_periodically() {
    const EVERY: std::time::Duration = std::time::Duration::from_secs(10);
    let spawned = std::thread::Builder::new().name("malloc-trim".into()).spawn(|| loop {
        std::thread::sleep(EVERY);
        // SAFETY: malloc_trim takes an integer and only returns free memory.
        unsafe {
            libc::malloc_trim(0);
        }
    });
    if let Err(e) = spawned {
        tracing::warn!("cannot start the thread that gives freed memory back: {e}");
    }
}

fn main() -> ExitCode {
    keep_request_buffers_mapped();
    let cli = config::Cli::parse();
    let config = match config::BrokerConfig::resolve(cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sluice: {e}");
            return ExitCode::from(2);
        }
    };
    init_tracing(config.log_json);
    trim_freed_memory_periodically();
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
