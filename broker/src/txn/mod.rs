//! The transaction coordinator (KIP-98, Kafka's `TransactionCoordinator`): the state of
//! each transactional id (producer id, epoch, state, partitions, timeout) kept in the
//! internal topic `__transaction_state`, hosted through the same coordinator seam as
//! groups (the shard owning a transactional id's partition, on the broker leading it).
//!
//! Three layers, as for groups: `machine` is the pure state machine, `coordinator`
//! hosts it (persists every transition before acting on it, replays the log when a
//! partition is gained, completes prepared transactions by writing markers, aborts
//! timed-out ones) and `markers` writes COMMIT / ABORT markers to every partition of a
//! transaction: in place on this broker's shards, over the wire (WriteTxnMarkers) to
//! the leaders elsewhere.

pub mod coordinator;
pub mod machine;
pub mod markers;
pub mod records;
pub mod verify;

/// Kafka's internal topic of transaction state.
pub const TRANSACTION_STATE_TOPIC: &str = "__transaction_state";

/// `__transaction_state` as it is created: compacted, internal, with the configured
/// partitions (which place every transactional id, so they never change), replicas and
/// `min.insync.replicas` (Kafka's `transaction.state.log.*` settings).
pub fn transaction_state_topic(config: &crate::config::BrokerConfig, live_brokers: i16) -> sluice_controller::NewTopic {
    let replication_factor = config.transaction_state_log_replication_factor.min(live_brokers.max(1));
    let min_isr = config.transaction_state_log_min_isr.min(replication_factor as i32);
    sluice_controller::NewTopic {
        name: TRANSACTION_STATE_TOPIC.to_string(),
        partitions: config.transaction_state_log_num_partitions,
        replication_factor,
        configs: [
            ("cleanup.policy".to_string(), "compact".to_string()),
            ("min.insync.replicas".to_string(), min_isr.to_string()),
            (
                "segment.bytes".to_string(),
                config.transaction_state_log_segment_bytes.to_string(),
            ),
        ]
        .into(),
        internal: true,
        replica_assignments: None,
    }
}

/// The coordinator's settings, with Kafka's names and defaults.
#[derive(Debug, Clone)]
pub struct TxnConfig {
    /// `transaction.max.timeout.ms` (Kafka: 900000): the longest timeout a producer
    /// may ask for.
    pub timeout_ms_max: i32,
    /// `transaction.abort.timed.out.transaction.cleanup.interval.ms` (Kafka: 10000).
    pub abort_check_interval_ms: u64,
}
