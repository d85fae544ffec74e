//! Broker configuration: command-line flags, each also settable in a TOML file given by
//! `--config` (keys are the flag names without dashes in front, e.g. `data-dir`). A flag
//! on the command line wins over the file, the file over the default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Parser;
use serde::Deserialize;

/// Kafka's `socket.request.max.bytes`: 100 MiB. A frame announcing more is refused
/// before anything is allocated for it.
pub const SOCKET_REQUEST_MAX_BYTES_DEFAULT: usize = 104_857_600;
/// Shards beyond this would each own almost nothing; it also bounds per-shard state.
const SHARDS_MAX: usize = 1024;

#[derive(Debug, Parser, Default)]
#[command(name = "sluice", version, about = "A Kafka wire-protocol compatible broker", long_about = None)]
pub struct Cli {
    /// TOML file with any of these settings (keys as the long flag names, e.g. data-dir).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to accept Kafka clients on [default: 127.0.0.1:9092].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Address of the Prometheus endpoint (/metrics, /health) [default: 127.0.0.1:9644].
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// Address clients are told to connect to [default: the listen address].
    #[arg(long, value_name = "HOST:PORT")]
    pub advertised_listener: Option<String>,
    /// Directory for partition logs and metadata [default: ./data].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Shards, one pinned thread each [default: the number of cores].
    #[arg(long, value_name = "N")]
    pub shards: Option<usize>,
    /// This broker's node id (node.id); unique in a cluster [default: 1].
    #[arg(long, value_name = "N")]
    pub node_id: Option<i32>,
    /// Where cluster metadata lives: `local` (a file in the data directory, a single
    /// broker) or `etcd://host:port[,host:port...][/prefix]` (a cluster) [default: local].
    #[arg(long, value_name = "URL")]
    pub controller: Option<String>,
    /// This broker's rack, for rack-aware replica placement (broker.rack) [default: none].
    #[arg(long, value_name = "RACK")]
    pub broker_rack: Option<String>,
    /// Replicas of an auto-created topic, and of CreateTopics asking for -1
    /// (default.replication.factor) [default: 1].
    #[arg(long, value_name = "N")]
    pub default_replication_factor: Option<i16>,
    /// How long a broker that stopped renewing its registration stays in the cluster
    /// (broker.session.timeout.ms) [default: 9000].
    #[arg(long, value_name = "MS")]
    pub broker_session_timeout_ms: Option<u64>,
    /// Give leadership back to a partition's preferred replica when it is live and in
    /// sync (auto.leader.rebalance.enable) [default: true].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub auto_leader_rebalance_enable: Option<bool>,
    /// A follower that has not caught up with its leader for this long leaves the
    /// in-sync set (replica.lag.time.max.ms) [default: 30000].
    #[arg(long, value_name = "MS")]
    pub replica_lag_time_max_ms: Option<u64>,
    /// In-sync replicas an acks=all write needs, unless the topic says otherwise
    /// (min.insync.replicas) [default: 1].
    #[arg(long, value_name = "N")]
    pub min_insync_replicas: Option<i32>,
    /// Partitions of an auto-created topic (Kafka's num.partitions) [default: 1].
    #[arg(long, value_name = "N")]
    pub num_partitions: Option<i32>,
    /// Create unknown topics when a client's Metadata request asks to
    /// (auto.create.topics.enable) [default: true].
    #[arg(long, visible_alias = "auto-create-topics-enable", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub auto_create_topics: Option<bool>,
    /// Largest record batch accepted (Kafka's message.max.bytes) [default: 1048588].
    #[arg(long, value_name = "BYTES")]
    pub message_max_bytes: Option<usize>,
    /// Most client connections open at once across the broker (max.connections); a
    /// connection over it is closed at once and counted [default: 2147483647].
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,
    /// Most connections open at once from one IP address (max.connections.per.ip); a
    /// connection over it is closed at once and counted [default: 2147483647].
    #[arg(long, value_name = "N")]
    pub max_connections_per_ip: Option<usize>,
    /// Per-address exceptions to --max-connections-per-ip, `ip:count` pairs separated
    /// by commas (max.connections.per.ip.overrides) [default: none].
    #[arg(long, value_name = "LIST")]
    pub max_connections_per_ip_overrides: Option<String>,
    /// Most new connections accepted per second across the broker
    /// (max.connection.creation.rate); accepting waits beyond it [default: 2147483647].
    #[arg(long, value_name = "N")]
    pub max_connection_creation_rate: Option<u64>,
    /// Most bytes of requests read but not yet answered across the broker
    /// (queued.max.request.bytes); reading more waits, so clients feel backpressure.
    /// -1 for no limit [default: 67108864; Kafka's default is -1].
    #[arg(long, value_name = "BYTES", allow_hyphen_values = true)]
    pub queued_max_request_bytes: Option<i64>,
    /// Largest request frame accepted (socket.request.max.bytes) [default: 104857600].
    #[arg(long, value_name = "BYTES")]
    pub socket_request_max_bytes: Option<usize>,
    /// Roll a segment at this size (log.segment.bytes) [default: 1073741824].
    #[arg(long, visible_alias = "log-segment-bytes", value_name = "BYTES")]
    pub segment_bytes: Option<u64>,
    /// Roll a segment at this age (log.roll.ms) [default: 604800000].
    #[arg(long, visible_alias = "log-roll-ms", value_name = "MS")]
    pub segment_ms: Option<i64>,
    /// Flush a partition after this many records (log.flush.interval.messages) [default: never].
    #[arg(long, visible_alias = "log-flush-interval-messages", value_name = "N")]
    pub flush_messages: Option<u64>,
    /// Flush a partition's data older than this (log.flush.interval.ms) [default: never].
    #[arg(long, visible_alias = "log-flush-interval-ms", value_name = "MS")]
    pub flush_ms: Option<i64>,
    /// Delete closed segments whose newest record is older than this; -1 keeps them
    /// (log.retention.ms; wins over the minutes and hours forms) [default: 1209600000, two weeks].
    #[arg(long, value_name = "MS", allow_hyphen_values = true)]
    pub log_retention_ms: Option<i64>,
    /// log.retention.ms in minutes (log.retention.minutes).
    #[arg(long, value_name = "MINUTES", allow_hyphen_values = true)]
    pub log_retention_minutes: Option<i64>,
    /// log.retention.ms in hours (log.retention.hours) [default: 336; Kafka's is 168].
    #[arg(long, value_name = "HOURS", allow_hyphen_values = true)]
    pub log_retention_hours: Option<i64>,
    /// Delete the oldest closed segments while a partition is larger; -1 for no limit
    /// (log.retention.bytes) [default: -1].
    #[arg(long, value_name = "BYTES", allow_hyphen_values = true)]
    pub log_retention_bytes: Option<i64>,
    /// How often partitions are checked for segments to delete
    /// (log.retention.check.interval.ms) [default: 300000].
    #[arg(long, value_name = "MS")]
    pub log_retention_check_interval_ms: Option<u64>,
    /// Topics' default cleanup.policy: delete, compact, or compact,delete
    /// (log.cleanup.policy) [default: delete].
    #[arg(long, value_name = "POLICY")]
    pub log_cleanup_policy: Option<String>,
    /// Run the log cleaner for compacted topics (log.cleaner.enable) [default: true].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub log_cleaner_enable: Option<bool>,
    /// How long the cleaner waits between checks of a shard's compacted partitions
    /// (log.cleaner.backoff.ms) [default: 15000].
    #[arg(long, value_name = "MS")]
    pub log_cleaner_backoff_ms: Option<u64>,
    /// Memory for one cleaning pass's key map, 24 bytes a key
    /// (log.cleaner.dedupe.buffer.size) [default: 134217728].
    #[arg(long, value_name = "BYTES")]
    pub log_cleaner_dedupe_buffer_size: Option<u64>,
    /// Bytes per second the cleaner may read and write; unset for no limit
    /// (log.cleaner.io.max.bytes.per.second) [default: unlimited].
    #[arg(long, value_name = "BYTES")]
    pub log_cleaner_io_max_bytes_per_second: Option<f64>,
    /// Topics' default delete.retention.ms: how long tombstones stay
    /// (log.cleaner.delete.retention.ms) [default: 86400000].
    #[arg(long, value_name = "MS")]
    pub log_cleaner_delete_retention_ms: Option<i64>,
    /// Topics' default min.cleanable.dirty.ratio (log.cleaner.min.cleanable.ratio) [default: 0.5].
    #[arg(long, value_name = "RATIO")]
    pub log_cleaner_min_cleanable_ratio: Option<f64>,
    /// Topics' default min.compaction.lag.ms (log.cleaner.min.compaction.lag.ms) [default: 0].
    #[arg(long, value_name = "MS")]
    pub log_cleaner_min_compaction_lag_ms: Option<i64>,
    /// Topics' default max.compaction.lag.ms (log.cleaner.max.compaction.lag.ms) [default: never].
    #[arg(long, value_name = "MS")]
    pub log_cleaner_max_compaction_lag_ms: Option<i64>,
    /// segment.bytes of __consumer_offsets (offsets.topic.segment.bytes), so the cleaner
    /// can compact it long before a 1 GiB segment fills [default: 104857600].
    #[arg(long, value_name = "BYTES")]
    pub offsets_topic_segment_bytes: Option<u64>,
    /// segment.bytes of __transaction_state (transaction.state.log.segment.bytes) [default: 104857600].
    #[arg(long, value_name = "BYTES")]
    pub transaction_state_log_segment_bytes: Option<u64>,
    /// Answer acks=all only after fdatasync; false relies on replication alone, as Kafka
    /// does by default [default: true].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub acks_all_fsync: Option<bool>,
    /// Partitions of __consumer_offsets, fixed when it is first created
    /// (offsets.topic.num.partitions) [default: 50].
    #[arg(long, value_name = "N")]
    pub offsets_topic_num_partitions: Option<i32>,
    /// Replicas of __consumer_offsets, fixed when it is first created
    /// (offsets.topic.replication.factor; capped to the live brokers) [default: 3].
    #[arg(long, value_name = "N")]
    pub offsets_topic_replication_factor: Option<i16>,
    /// Partitions of __transaction_state, fixed when it is first created
    /// (transaction.state.log.num.partitions) [default: 50].
    #[arg(long, value_name = "N")]
    pub transaction_state_log_num_partitions: Option<i32>,
    /// Replicas of __transaction_state, fixed when it is first created
    /// (transaction.state.log.replication.factor; capped to the live brokers) [default: 3].
    #[arg(long, value_name = "N")]
    pub transaction_state_log_replication_factor: Option<i16>,
    /// min.insync.replicas of __transaction_state (transaction.state.log.min.isr;
    /// capped to its replicas) [default: 2].
    #[arg(long, value_name = "N")]
    pub transaction_state_log_min_isr: Option<i32>,
    /// Largest transaction.timeout.ms a producer may ask for (transaction.max.timeout.ms) [default: 900000].
    #[arg(long, value_name = "MS")]
    pub transaction_max_timeout_ms: Option<i32>,
    /// How often the coordinator aborts transactions older than their timeout
    /// (transaction.abort.timed.out.transaction.cleanup.interval.ms) [default: 10000].
    #[arg(long, value_name = "MS")]
    pub transaction_abort_timed_out_transaction_cleanup_interval_ms: Option<u64>,
    /// How long a new group waits for more members before its first rebalance
    /// (group.initial.rebalance.delay.ms) [default: 3000].
    #[arg(long, value_name = "MS")]
    pub group_initial_rebalance_delay_ms: Option<u64>,
    /// Smallest session timeout a member may ask for (group.min.session.timeout.ms) [default: 6000].
    #[arg(long, value_name = "MS")]
    pub group_min_session_timeout_ms: Option<i32>,
    /// Largest session timeout a member may ask for (group.max.session.timeout.ms) [default: 1800000].
    #[arg(long, value_name = "MS")]
    pub group_max_session_timeout_ms: Option<i32>,
    /// Most members a group may have (group.max.size) [default: unlimited].
    #[arg(long, value_name = "N")]
    pub group_max_size: Option<usize>,
    /// Committed offsets of a group empty this long are removed (offsets.retention.minutes) [default: 10080].
    #[arg(long, value_name = "MINUTES")]
    pub offsets_retention_minutes: Option<i64>,
    /// How long a share consumer holds the records it fetched before they are handed out
    /// again (group.share.record.lock.duration.ms) [default: 30000]
    #[arg(long, value_name = "MS")]
    pub group_share_record_lock_duration_ms: Option<i32>,
    /// Smallest share.record.lock.duration.ms a share group may set
    /// (group.share.min.record.lock.duration.ms) [default: 15000]
    #[arg(long, value_name = "MS")]
    pub group_share_min_record_lock_duration_ms: Option<i32>,
    /// Largest share.record.lock.duration.ms a share group may set
    /// (group.share.max.record.lock.duration.ms) [default: 60000]
    #[arg(long, value_name = "MS")]
    pub group_share_max_record_lock_duration_ms: Option<i32>,
    /// Deliveries after which a record is archived, and dead-lettered when the group has a
    /// DLQ (group.share.delivery.count.limit, 2-10) [default: 5]
    #[arg(long, value_name = "N")]
    pub group_share_delivery_count_limit: Option<i16>,
    /// Most records of one partition a share group has in flight
    /// (group.share.partition.max.record.locks) [default: 2000]
    #[arg(long, value_name = "N")]
    pub group_share_partition_max_record_locks: Option<i32>,
    /// A share consumer that does not heartbeat this long leaves its group
    /// (group.share.session.timeout.ms) [default: 45000]
    #[arg(long, value_name = "MS")]
    pub group_share_session_timeout_ms: Option<i32>,
    /// How often share consumers heartbeat (group.share.heartbeat.interval.ms) [default:
    /// 5000]
    #[arg(long, value_name = "MS")]
    pub group_share_heartbeat_interval_ms: Option<i32>,
    /// Partitions of __share_group_state, fixed when it is first created
    /// (share.coordinator.state.topic.num.partitions) [default: 50]
    #[arg(long, value_name = "N")]
    pub share_coordinator_state_topic_num_partitions: Option<i32>,
    /// Replicas of __share_group_state, fixed when it is first created
    /// (share.coordinator.state.topic.replication.factor; capped to the live brokers)
    /// [default: 3]
    #[arg(long, value_name = "N")]
    pub share_coordinator_state_topic_replication_factor: Option<i16>,
    /// segment.bytes of __share_group_state (share.coordinator.state.topic.segment.bytes)
    /// [default: 104857600]
    #[arg(long, value_name = "BYTES")]
    pub share_coordinator_state_topic_segment_bytes: Option<u64>,
    /// Prefix every share group's dead-letter topic name must have
    /// (errors.deadletterqueue.topic.name.prefix) [default: dlq.]
    #[arg(long, value_name = "PREFIX")]
    pub errors_deadletterqueue_topic_name_prefix: Option<String>,
    /// A KIP-848 consumer that does not heartbeat this long leaves its group
    /// (group.consumer.session.timeout.ms) [default: 45000]
    #[arg(long, value_name = "MS")]
    pub group_consumer_session_timeout_ms: Option<i32>,
    /// How often KIP-848 consumers heartbeat (group.consumer.heartbeat.interval.ms)
    /// [default: 5000]
    #[arg(long, value_name = "MS")]
    pub group_consumer_heartbeat_interval_ms: Option<i32>,
    /// Most members a KIP-848 consumer group may have (group.consumer.max.size) [default:
    /// unlimited]
    #[arg(long, value_name = "N")]
    pub group_consumer_max_size: Option<usize>,
    /// Most members a share group may have (group.share.max.size) [default: 200]
    #[arg(long, value_name = "N")]
    pub group_share_max_size: Option<usize>,
    /// Storage I/O engine: io_uring, pwrite, or auto (io_uring when the kernel allows
    /// it, else pwrite) [default: auto].
    #[arg(long, value_name = "ENGINE", value_parser = ["auto", "io_uring", "pwrite"])]
    pub io_engine: Option<String>,
    /// Write and read segment log files with O_DIRECT from the broker's own aligned
    /// buffers, bypassing the page cache; falls back to buffered I/O, with a warning,
    /// where the data directory's filesystem refuses O_DIRECT (tmpfs) [default: true].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub io_direct: Option<bool>,
    /// Memory for recently written and read log chunks with direct I/O, split between
    /// the shards; consumers at the tail read from it [default: 33554432].
    #[arg(long, value_name = "BYTES")]
    pub log_cache_bytes: Option<u64>,
    /// Descriptors the shards' segment and index files may hold open at once (idle
    /// partitions' files are closed and reopened on use); 0 derives it from the
    /// open-file limit: a quarter of it, the rest for connections and in-flight work
    /// [default: 0].
    #[arg(long, value_name = "N")]
    pub log_open_files_max: Option<usize>,
    /// Log format: human or json [default: human].
    #[arg(long, value_name = "FORMAT", value_parser = ["human", "json"])]
    pub log_format: Option<String>,
}

/// The same settings as they may appear in the TOML file.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileConfig {
    listen: Option<SocketAddr>,
    advertised_listener: Option<String>,
    metrics_addr: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    shards: Option<usize>,
    node_id: Option<i32>,
    controller: Option<String>,
    broker_rack: Option<String>,
    default_replication_factor: Option<i16>,
    broker_session_timeout_ms: Option<u64>,
    auto_leader_rebalance_enable: Option<bool>,
    replica_lag_time_max_ms: Option<u64>,
    min_insync_replicas: Option<i32>,
    num_partitions: Option<i32>,
    #[serde(alias = "auto-create-topics-enable")]
    auto_create_topics: Option<bool>,
    message_max_bytes: Option<usize>,
    socket_request_max_bytes: Option<usize>,
    max_connections: Option<usize>,
    max_connections_per_ip: Option<usize>,
    max_connections_per_ip_overrides: Option<String>,
    max_connection_creation_rate: Option<u64>,
    queued_max_request_bytes: Option<i64>,
    #[serde(alias = "log-segment-bytes")]
    segment_bytes: Option<u64>,
    #[serde(alias = "log-roll-ms")]
    segment_ms: Option<i64>,
    #[serde(alias = "log-flush-interval-messages")]
    flush_messages: Option<u64>,
    #[serde(alias = "log-flush-interval-ms")]
    flush_ms: Option<i64>,
    log_retention_ms: Option<i64>,
    log_retention_minutes: Option<i64>,
    log_retention_hours: Option<i64>,
    log_retention_bytes: Option<i64>,
    log_retention_check_interval_ms: Option<u64>,
    log_cleanup_policy: Option<String>,
    log_cleaner_enable: Option<bool>,
    log_cleaner_backoff_ms: Option<u64>,
    log_cleaner_dedupe_buffer_size: Option<u64>,
    log_cleaner_io_max_bytes_per_second: Option<f64>,
    log_cleaner_delete_retention_ms: Option<i64>,
    log_cleaner_min_cleanable_ratio: Option<f64>,
    log_cleaner_min_compaction_lag_ms: Option<i64>,
    log_cleaner_max_compaction_lag_ms: Option<i64>,
    offsets_topic_segment_bytes: Option<u64>,
    transaction_state_log_segment_bytes: Option<u64>,
    acks_all_fsync: Option<bool>,
    offsets_topic_num_partitions: Option<i32>,
    offsets_topic_replication_factor: Option<i16>,
    transaction_state_log_num_partitions: Option<i32>,
    transaction_state_log_replication_factor: Option<i16>,
    transaction_state_log_min_isr: Option<i32>,
    transaction_max_timeout_ms: Option<i32>,
    transaction_abort_timed_out_transaction_cleanup_interval_ms: Option<u64>,
    group_initial_rebalance_delay_ms: Option<u64>,
    group_min_session_timeout_ms: Option<i32>,
    group_max_session_timeout_ms: Option<i32>,
    group_max_size: Option<usize>,
    offsets_retention_minutes: Option<i64>,
    io_engine: Option<String>,
    io_direct: Option<bool>,
    log_cache_bytes: Option<u64>,
    log_open_files_max: Option<usize>,
    group_share_max_size: Option<usize>,
    group_consumer_session_timeout_ms: Option<i32>,
    group_consumer_heartbeat_interval_ms: Option<i32>,
    group_consumer_max_size: Option<usize>,
    group_share_record_lock_duration_ms: Option<i32>,
    group_share_min_record_lock_duration_ms: Option<i32>,
    group_share_max_record_lock_duration_ms: Option<i32>,
    group_share_delivery_count_limit: Option<i16>,
    group_share_partition_max_record_locks: Option<i32>,
    group_share_session_timeout_ms: Option<i32>,
    group_share_heartbeat_interval_ms: Option<i32>,
    share_coordinator_state_topic_num_partitions: Option<i32>,
    share_coordinator_state_topic_replication_factor: Option<i16>,
    share_coordinator_state_topic_segment_bytes: Option<u64>,
    errors_deadletterqueue_topic_name_prefix: Option<String>,
    log_format: Option<String>,
}

/// The resolved configuration the broker runs with.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub listen: SocketAddr,
    pub advertised_listener: Option<(String, u16)>,
    pub metrics_addr: SocketAddr,
    pub data_dir: PathBuf,
    pub shards: usize,
    pub node_id: i32,
    /// "local", or an etcd:// URL.
    pub controller: String,
    pub broker_rack: Option<String>,
    pub default_replication_factor: i16,
    pub broker_session_timeout_ms: u64,
    pub auto_leader_rebalance_enable: bool,
    pub replica_lag_time_max_ms: u64,
    pub min_insync_replicas: i32,
    pub num_partitions: i32,
    pub auto_create_topics: bool,
    pub message_max_bytes: usize,
    pub socket_request_max_bytes: usize,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    /// As given (`ip:count,...`); parsed by `limits::parse_overrides`.
    pub max_connections_per_ip_overrides: String,
    pub max_connection_creation_rate: Option<u64>,
    /// None: no limit (-1).
    pub queued_max_request_bytes: Option<usize>,
    pub segment_bytes: u64,
    pub segment_ms: i64,
    pub flush_messages: u64,
    pub flush_ms: i64,
    /// log.retention.ms, from whichever of its three forms was given.
    pub log_retention_ms: i64,
    pub log_retention_bytes: i64,
    pub log_retention_check_interval_ms: u64,
    pub log_cleanup_policy: String,
    pub log_cleaner_enable: bool,
    pub log_cleaner_backoff_ms: u64,
    pub log_cleaner_dedupe_buffer_size: u64,
    pub log_cleaner_io_max_bytes_per_second: Option<f64>,
    pub log_cleaner_delete_retention_ms: i64,
    pub log_cleaner_min_cleanable_ratio: f64,
    pub log_cleaner_min_compaction_lag_ms: i64,
    pub log_cleaner_max_compaction_lag_ms: i64,
    pub offsets_topic_segment_bytes: u64,
    pub transaction_state_log_segment_bytes: u64,
    pub acks_all_fsync: bool,
    pub offsets_topic_num_partitions: i32,
    pub offsets_topic_replication_factor: i16,
    pub transaction_state_log_num_partitions: i32,
    pub transaction_state_log_replication_factor: i16,
    pub transaction_state_log_min_isr: i32,
    pub transaction_max_timeout_ms: i32,
    pub transaction_abort_timed_out_transaction_cleanup_interval_ms: u64,
    pub group_initial_rebalance_delay_ms: u64,
    pub group_min_session_timeout_ms: i32,
    pub group_max_session_timeout_ms: i32,
    pub group_max_size: usize,
    pub offsets_retention_minutes: i64,
    pub group_share_max_size: usize,
    pub group_consumer_session_timeout_ms: i32,
    pub group_consumer_heartbeat_interval_ms: i32,
    pub group_consumer_max_size: usize,
    pub group_share_record_lock_duration_ms: i32,
    pub group_share_min_record_lock_duration_ms: i32,
    pub group_share_max_record_lock_duration_ms: i32,
    pub group_share_delivery_count_limit: i16,
    pub group_share_partition_max_record_locks: i32,
    pub group_share_session_timeout_ms: i32,
    pub group_share_heartbeat_interval_ms: i32,
    pub share_coordinator_state_topic_num_partitions: i32,
    pub share_coordinator_state_topic_replication_factor: i16,
    pub share_coordinator_state_topic_segment_bytes: u64,
    pub errors_deadletterqueue_topic_name_prefix: String,
    /// "auto", "io_uring" or "pwrite".
    pub io_engine: String,
    /// Direct I/O for segment log files, where the filesystem allows it.
    pub io_direct: bool,
    /// The direct-I/O chunk cache of the whole broker (each shard has its share).
    pub log_cache_bytes: u64,
    /// Descriptors for segment files across the shards; 0 for a share of the limit.
    pub log_open_files_max: usize,
    pub log_json: bool,
}

/// The broker-wide budget of request bytes read and not yet answered: 64 requests of
/// 1 MB at once, which keeps a shard's write rounds full (100 producers beside 9,900
/// idle connections: 269 MB/s at 64 MiB, 247-270 MB/s at 512 MiB, broker RSS peak
/// 272 MiB against 1 GiB; `benches/limits.sh`), while a flood of producers cannot grow
/// the broker's memory without bound (Kafka's default is no limit).
pub const DEFAULT_QUEUED_MAX_REQUEST_BYTES: i64 = 64 << 20;

/// The direct-I/O chunk cache: enough for a few seconds of a busy shard's appends
/// (consumers at the tail read them from memory) while the broker's RSS under the
/// standard benchmark stays well under 200 MiB.
pub const DEFAULT_LOG_CACHE_BYTES: u64 = 32 << 20;

impl BrokerConfig {
    pub fn resolve(cli: Cli) -> Result<BrokerConfig, String> {
        let file = match &cli.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let config = BrokerConfig {
            listen: cli
                .listen
                .or(file.listen)
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9092))),
            advertised_listener: match cli.advertised_listener.or(file.advertised_listener) {
                Some(s) => Some(parse_host_port(&s)?),
                None => None,
            },
            metrics_addr: cli
                .metrics_addr
                .or(file.metrics_addr)
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9644))),
            data_dir: cli.data_dir.or(file.data_dir).unwrap_or_else(|| PathBuf::from("data")),
            shards: cli.shards.or(file.shards).unwrap_or(cores),
            node_id: cli.node_id.or(file.node_id).unwrap_or(1),
            controller: cli
                .controller
                .or(file.controller)
                .unwrap_or_else(|| "local".to_string()),
            broker_rack: cli.broker_rack.or(file.broker_rack),
            default_replication_factor: cli
                .default_replication_factor
                .or(file.default_replication_factor)
                .unwrap_or(1),
            broker_session_timeout_ms: cli
                .broker_session_timeout_ms
                .or(file.broker_session_timeout_ms)
                .unwrap_or(9000),
            auto_leader_rebalance_enable: cli
                .auto_leader_rebalance_enable
                .or(file.auto_leader_rebalance_enable)
                .unwrap_or(true),
            replica_lag_time_max_ms: cli
                .replica_lag_time_max_ms
                .or(file.replica_lag_time_max_ms)
                .unwrap_or(30_000),
            min_insync_replicas: cli.min_insync_replicas.or(file.min_insync_replicas).unwrap_or(1),
            num_partitions: cli.num_partitions.or(file.num_partitions).unwrap_or(1),
            auto_create_topics: cli.auto_create_topics.or(file.auto_create_topics).unwrap_or(true),
            message_max_bytes: cli
                .message_max_bytes
                .or(file.message_max_bytes)
                .unwrap_or(sluice_storage::log::MESSAGE_MAX_BYTES_DEFAULT),
            max_connections: cli
                .max_connections
                .or(file.max_connections)
                .unwrap_or(i32::MAX as usize),
            max_connections_per_ip: cli
                .max_connections_per_ip
                .or(file.max_connections_per_ip)
                .unwrap_or(i32::MAX as usize),
            max_connections_per_ip_overrides: cli
                .max_connections_per_ip_overrides
                .or(file.max_connections_per_ip_overrides)
                .unwrap_or_default(),
            max_connection_creation_rate: cli
                .max_connection_creation_rate
                .or(file.max_connection_creation_rate)
                .filter(|&r| r < i32::MAX as u64),
            queued_max_request_bytes: match cli
                .queued_max_request_bytes
                .or(file.queued_max_request_bytes)
                .unwrap_or(DEFAULT_QUEUED_MAX_REQUEST_BYTES)
            {
                n if n < 0 => None,
                n => Some(n as usize),
            },
            socket_request_max_bytes: cli
                .socket_request_max_bytes
                .or(file.socket_request_max_bytes)
                .unwrap_or(SOCKET_REQUEST_MAX_BYTES_DEFAULT),
            segment_bytes: cli
                .segment_bytes
                .or(file.segment_bytes)
                .unwrap_or(sluice_storage::log::SEGMENT_BYTES_DEFAULT),
            segment_ms: cli.segment_ms.or(file.segment_ms).unwrap_or(7 * 24 * 3600 * 1000),
            flush_messages: cli.flush_messages.or(file.flush_messages).unwrap_or(u64::MAX),
            flush_ms: cli.flush_ms.or(file.flush_ms).unwrap_or(i64::MAX),
            // Kafka's precedence: ms over minutes over hours, whatever their source.
            log_retention_ms: cli
                .log_retention_ms
                .or(file.log_retention_ms)
                .or(cli
                    .log_retention_minutes
                    .or(file.log_retention_minutes)
                    .map(|m| m.saturating_mul(60_000)))
                .or(cli
                    .log_retention_hours
                    .or(file.log_retention_hours)
                    .map(|h| h.saturating_mul(3_600_000)))
                .unwrap_or(sluice_storage::log::RETENTION_MS_DEFAULT),
            log_retention_bytes: cli.log_retention_bytes.or(file.log_retention_bytes).unwrap_or(-1),
            log_retention_check_interval_ms: cli
                .log_retention_check_interval_ms
                .or(file.log_retention_check_interval_ms)
                .unwrap_or(300_000),
            log_cleanup_policy: cli
                .log_cleanup_policy
                .or(file.log_cleanup_policy)
                .unwrap_or_else(|| "delete".to_string()),
            log_cleaner_enable: cli.log_cleaner_enable.or(file.log_cleaner_enable).unwrap_or(true),
            log_cleaner_backoff_ms: cli
                .log_cleaner_backoff_ms
                .or(file.log_cleaner_backoff_ms)
                .unwrap_or(15_000),
            log_cleaner_dedupe_buffer_size: cli
                .log_cleaner_dedupe_buffer_size
                .or(file.log_cleaner_dedupe_buffer_size)
                .unwrap_or(128 << 20),
            log_cleaner_io_max_bytes_per_second: cli
                .log_cleaner_io_max_bytes_per_second
                .or(file.log_cleaner_io_max_bytes_per_second),
            log_cleaner_delete_retention_ms: cli
                .log_cleaner_delete_retention_ms
                .or(file.log_cleaner_delete_retention_ms)
                .unwrap_or(86_400_000),
            log_cleaner_min_cleanable_ratio: cli
                .log_cleaner_min_cleanable_ratio
                .or(file.log_cleaner_min_cleanable_ratio)
                .unwrap_or(0.5),
            log_cleaner_min_compaction_lag_ms: cli
                .log_cleaner_min_compaction_lag_ms
                .or(file.log_cleaner_min_compaction_lag_ms)
                .unwrap_or(0),
            log_cleaner_max_compaction_lag_ms: cli
                .log_cleaner_max_compaction_lag_ms
                .or(file.log_cleaner_max_compaction_lag_ms)
                .unwrap_or(i64::MAX),
            offsets_topic_segment_bytes: cli
                .offsets_topic_segment_bytes
                .or(file.offsets_topic_segment_bytes)
                .unwrap_or(104_857_600),
            transaction_state_log_segment_bytes: cli
                .transaction_state_log_segment_bytes
                .or(file.transaction_state_log_segment_bytes)
                .unwrap_or(104_857_600),
            acks_all_fsync: cli.acks_all_fsync.or(file.acks_all_fsync).unwrap_or(true),
            offsets_topic_num_partitions: cli
                .offsets_topic_num_partitions
                .or(file.offsets_topic_num_partitions)
                .unwrap_or(50),
            offsets_topic_replication_factor: cli
                .offsets_topic_replication_factor
                .or(file.offsets_topic_replication_factor)
                .unwrap_or(3),
            transaction_state_log_num_partitions: cli
                .transaction_state_log_num_partitions
                .or(file.transaction_state_log_num_partitions)
                .unwrap_or(50),
            transaction_state_log_replication_factor: cli
                .transaction_state_log_replication_factor
                .or(file.transaction_state_log_replication_factor)
                .unwrap_or(3),
            transaction_state_log_min_isr: cli
                .transaction_state_log_min_isr
                .or(file.transaction_state_log_min_isr)
                .unwrap_or(2),
            transaction_max_timeout_ms: cli
                .transaction_max_timeout_ms
                .or(file.transaction_max_timeout_ms)
                .unwrap_or(900_000),
            transaction_abort_timed_out_transaction_cleanup_interval_ms: cli
                .transaction_abort_timed_out_transaction_cleanup_interval_ms
                .or(file.transaction_abort_timed_out_transaction_cleanup_interval_ms)
                .unwrap_or(10_000),
            group_consumer_session_timeout_ms: cli
                .group_consumer_session_timeout_ms
                .or(file.group_consumer_session_timeout_ms)
                .unwrap_or(45_000),
            group_consumer_heartbeat_interval_ms: cli
                .group_consumer_heartbeat_interval_ms
                .or(file.group_consumer_heartbeat_interval_ms)
                .unwrap_or(5000),
            group_consumer_max_size: cli
                .group_consumer_max_size
                .or(file.group_consumer_max_size)
                .unwrap_or(usize::MAX),
            group_share_max_size: cli.group_share_max_size.or(file.group_share_max_size).unwrap_or(200),
            group_share_record_lock_duration_ms: cli
                .group_share_record_lock_duration_ms
                .or(file.group_share_record_lock_duration_ms)
                .unwrap_or(30_000),
            group_share_min_record_lock_duration_ms: cli
                .group_share_min_record_lock_duration_ms
                .or(file.group_share_min_record_lock_duration_ms)
                .unwrap_or(15_000),
            group_share_max_record_lock_duration_ms: cli
                .group_share_max_record_lock_duration_ms
                .or(file.group_share_max_record_lock_duration_ms)
                .unwrap_or(60_000),
            group_share_delivery_count_limit: cli
                .group_share_delivery_count_limit
                .or(file.group_share_delivery_count_limit)
                .unwrap_or(5),
            group_share_partition_max_record_locks: cli
                .group_share_partition_max_record_locks
                .or(file.group_share_partition_max_record_locks)
                .unwrap_or(2000),
            group_share_session_timeout_ms: cli
                .group_share_session_timeout_ms
                .or(file.group_share_session_timeout_ms)
                .unwrap_or(45_000),
            group_share_heartbeat_interval_ms: cli
                .group_share_heartbeat_interval_ms
                .or(file.group_share_heartbeat_interval_ms)
                .unwrap_or(5000),
            share_coordinator_state_topic_num_partitions: cli
                .share_coordinator_state_topic_num_partitions
                .or(file.share_coordinator_state_topic_num_partitions)
                .unwrap_or(50),
            share_coordinator_state_topic_replication_factor: cli
                .share_coordinator_state_topic_replication_factor
                .or(file.share_coordinator_state_topic_replication_factor)
                .unwrap_or(3),
            share_coordinator_state_topic_segment_bytes: cli
                .share_coordinator_state_topic_segment_bytes
                .or(file.share_coordinator_state_topic_segment_bytes)
                .unwrap_or(104_857_600),
            errors_deadletterqueue_topic_name_prefix: cli
                .errors_deadletterqueue_topic_name_prefix
                .or(file.errors_deadletterqueue_topic_name_prefix)
                .unwrap_or_else(|| "dlq.".to_string()),
            group_initial_rebalance_delay_ms: cli
                .group_initial_rebalance_delay_ms
                .or(file.group_initial_rebalance_delay_ms)
                .unwrap_or(3000),
            group_min_session_timeout_ms: cli
                .group_min_session_timeout_ms
                .or(file.group_min_session_timeout_ms)
                .unwrap_or(6000),
            group_max_session_timeout_ms: cli
                .group_max_session_timeout_ms
                .or(file.group_max_session_timeout_ms)
                .unwrap_or(1_800_000),
            group_max_size: cli.group_max_size.or(file.group_max_size).unwrap_or(usize::MAX),
            offsets_retention_minutes: cli
                .offsets_retention_minutes
                .or(file.offsets_retention_minutes)
                .unwrap_or(7 * 24 * 60),
            io_engine: cli.io_engine.or(file.io_engine).unwrap_or_else(|| "auto".to_string()),
            io_direct: cli.io_direct.or(file.io_direct).unwrap_or(true),
            log_cache_bytes: cli
                .log_cache_bytes
                .or(file.log_cache_bytes)
                .unwrap_or(DEFAULT_LOG_CACHE_BYTES),
            log_open_files_max: cli.log_open_files_max.or(file.log_open_files_max).unwrap_or(0),
            log_json: cli.log_format.or(file.log_format).is_some_and(|f| f == "json"),
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        if self.shards == 0 || self.shards > SHARDS_MAX {
            return Err(format!(
                "--shards must be between 1 and {SHARDS_MAX}, not {}",
                self.shards
            ));
        }
        if self.node_id < 0 {
            return Err(format!("--node-id must not be negative, not {}", self.node_id));
        }
        if self.controller != "local" {
            sluice_controller::EtcdConfig::parse_url(&self.controller).map_err(|e| format!("--controller: {e}"))?;
        }
        if self.default_replication_factor < 1 || self.offsets_topic_replication_factor < 1 {
            return Err(
                "--default-replication-factor and --offsets-topic-replication-factor must be at least 1".into(),
            );
        }
        if self.min_insync_replicas < 1 {
            return Err(format!(
                "--min-insync-replicas must be at least 1, not {}",
                self.min_insync_replicas
            ));
        }
        if self.replica_lag_time_max_ms < 100 {
            return Err(format!(
                "--replica-lag-time-max-ms must be at least 100, not {}",
                self.replica_lag_time_max_ms
            ));
        }
        if self.broker_session_timeout_ms < 1000 {
            return Err("--broker-session-timeout-ms must be at least 1000 (etcd leases count whole seconds)".into());
        }
        if self.num_partitions < 1 {
            return Err(format!(
                "--num-partitions must be at least 1, not {}",
                self.num_partitions
            ));
        }
        if self.message_max_bytes < 64 || self.message_max_bytes > self.socket_request_max_bytes {
            return Err("--message-max-bytes must be between 64 and --socket-request-max-bytes".into());
        }
        crate::limits::parse_overrides(&self.max_connections_per_ip_overrides)?;
        if self.socket_request_max_bytes > i32::MAX as usize {
            return Err("--socket-request-max-bytes must fit a Kafka frame length (2147483647)".into());
        }
        if self.segment_bytes < 1024 || self.segment_bytes > u32::MAX as u64 {
            return Err("--segment-bytes must be between 1024 and 4294967295".into());
        }
        if !matches!(self.io_engine.as_str(), "auto" | "io_uring" | "pwrite") {
            return Err(format!(
                "io-engine must be auto, io_uring or pwrite, not {}",
                self.io_engine
            ));
        }
        if self.transaction_state_log_num_partitions < 1
            || self.transaction_state_log_replication_factor < 1
            || self.transaction_state_log_min_isr < 1
        {
            return Err("--transaction-state-log-num-partitions, --transaction-state-log-replication-factor and --transaction-state-log-min-isr must be at least 1".into());
        }
        if self.transaction_max_timeout_ms < 1 {
            return Err("--transaction-max-timeout-ms must be at least 1".into());
        }
        if self.group_share_min_record_lock_duration_ms < 1
            || self.group_share_min_record_lock_duration_ms > self.group_share_record_lock_duration_ms
            || self.group_share_record_lock_duration_ms > self.group_share_max_record_lock_duration_ms
        {
            return Err("--group-share-record-lock-duration-ms must lie between --group-share-min-record-lock-duration-ms (at least 1) and --group-share-max-record-lock-duration-ms".into());
        }
        if self.group_consumer_session_timeout_ms < 1 || self.group_consumer_heartbeat_interval_ms < 1 {
            return Err(
                "--group-consumer-session-timeout-ms and --group-consumer-heartbeat-interval-ms must be at least 1"
                    .into(),
            );
        }
        if !(2..=10).contains(&self.group_share_delivery_count_limit) {
            return Err("--group-share-delivery-count-limit must be between 2 and 10".into());
        }
        if self.group_share_partition_max_record_locks < 1
            || self.group_share_session_timeout_ms < 1
            || self.group_share_heartbeat_interval_ms < 1
            || self.share_coordinator_state_topic_num_partitions < 1
            || self.share_coordinator_state_topic_replication_factor < 1
        {
            return Err("--group-share-partition-max-record-locks, --group-share-session-timeout-ms, --group-share-heartbeat-interval-ms and the --share-coordinator-state-topic-* counts must be at least 1".into());
        }
        if self.offsets_topic_num_partitions < 1 {
            return Err("--offsets-topic-num-partitions must be at least 1".into());
        }
        if self.group_min_session_timeout_ms < 1
            || self.group_min_session_timeout_ms > self.group_max_session_timeout_ms
        {
            return Err(
                "--group-min-session-timeout-ms must be positive and at most --group-max-session-timeout-ms".into(),
            );
        }
        if self.group_max_size < 1 || self.offsets_retention_minutes < 1 {
            return Err("--group-max-size and --offsets-retention-minutes must be positive".into());
        }
        if self.log_retention_ms < -1 || self.log_retention_bytes < -1 {
            return Err("--log-retention-ms (or -minutes, -hours) and --log-retention-bytes must be -1 or more".into());
        }
        if self.log_cleaner_backoff_ms < 1 || self.log_cleaner_dedupe_buffer_size < 1024 {
            return Err(
                "--log-cleaner-backoff-ms must be positive and --log-cleaner-dedupe-buffer-size at least 1024".into(),
            );
        }
        if !(0.0..=1.0).contains(&self.log_cleaner_min_cleanable_ratio) {
            return Err("--log-cleaner-min-cleanable-ratio must be between 0 and 1".into());
        }
        if self.log_cleaner_delete_retention_ms < 0
            || self.log_cleaner_min_compaction_lag_ms < 0
            || self.log_cleaner_max_compaction_lag_ms < 1
        {
            return Err("--log-cleaner-*-ms must not be negative".into());
        }
        for (flag, bytes) in [
            ("--offsets-topic-segment-bytes", self.offsets_topic_segment_bytes),
            (
                "--transaction-state-log-segment-bytes",
                self.transaction_state_log_segment_bytes,
            ),
        ] {
            if !(1024..=u32::MAX as u64).contains(&bytes) {
                return Err(format!("{flag} must be between 1024 and 4294967295"));
            }
        }
        if self.log_retention_check_interval_ms < 1 {
            return Err("--log-retention-check-interval-ms must be positive".into());
        }
        crate::topic_config::validate("cleanup.policy", &self.log_cleanup_policy)
            .map_err(|e| format!("--log-cleanup-policy: {e}"))?;
        if self.segment_ms < 1 || self.flush_ms < 1 || self.flush_messages < 1 {
            return Err("--segment-ms, --flush-ms and --flush-messages must be positive".into());
        }
        Ok(())
    }
}

fn read_file(path: &Path) -> Result<FileConfig, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let table: toml::Table = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut flat = toml::Table::new();
    flatten_keys("", table, &mut flat);
    FileConfig::deserialize(toml::Value::Table(flat)).map_err(|e| format!("{}: {e}", path.display()))
}

/// The file may name a setting as its flag does (`log-retention-ms`) or as Kafka does
/// (`log.retention.ms`, which TOML reads as nested tables, or `"log.retention.ms"`):
/// every key becomes the flag's spelling.
fn flatten_keys(prefix: &str, table: toml::Table, out: &mut toml::Table) {
    for (key, value) in table {
        let key = key.replace(['.', '_'], "-");
        let name = if prefix.is_empty() {
            key
        } else {
            format!("{prefix}-{key}")
        };
        match value {
            toml::Value::Table(inner) => flatten_keys(&name, inner, out),
            value => {
                out.insert(name, value);
            }
        }
    }
}

fn parse_host_port(s: &str) -> Result<(String, u16), String> {
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("advertised listener '{s}' is not HOST:PORT"))?;
    let port = port
        .parse::<u16>()
        .map_err(|_| format!("advertised listener '{s}' has a bad port"))?;
    if host.is_empty() {
        return Err(format!("advertised listener '{s}' has no host"));
    }
    Ok((host.trim_start_matches('[').trim_end_matches(']').to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_file_and_the_file_over_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sluice.toml");
        std::fs::write(&path, "num-partitions = 6\nnode-id = 7\n").unwrap();
        let cli = Cli::parse_from(["sluice", "--config", path.to_str().unwrap(), "--node-id", "3"]);
        let c = BrokerConfig::resolve(cli).unwrap();
        assert_eq!((c.num_partitions, c.node_id, c.auto_create_topics), (6, 3, true));
        assert_eq!(c.controller, "local");
    }

    #[test]
    fn cluster_settings_come_from_flags_or_the_file_under_kafkas_names() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sluice.toml");
        std::fs::write(
            &path,
            "controller = \"etcd://10.0.0.1:2379,10.0.0.2:2379/prod\"\nbroker-rack = \"a\"\n\
             broker-session-timeout-ms = 6000\nauto-leader-rebalance-enable = false\n\
             replica-lag-time-max-ms = 5000\n",
        )
        .unwrap();
        let cli = Cli::parse_from([
            "sluice",
            "--config",
            path.to_str().unwrap(),
            "--default-replication-factor",
            "3",
            "--min-insync-replicas",
            "2",
        ]);
        let c = BrokerConfig::resolve(cli).unwrap();
        assert_eq!(c.controller, "etcd://10.0.0.1:2379,10.0.0.2:2379/prod");
        assert_eq!(c.broker_rack.as_deref(), Some("a"));
        assert_eq!(
            (c.broker_session_timeout_ms, c.auto_leader_rebalance_enable),
            (6000, false)
        );
        assert_eq!(
            (c.default_replication_factor, c.offsets_topic_replication_factor),
            (3, 3)
        );
        assert_eq!((c.replica_lag_time_max_ms, c.min_insync_replicas), (5000, 2));
    }

    #[test]
    fn kafka_names_work_as_flags_and_as_file_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sluice.toml");
        std::fs::write(
            &path,
            "log.retention.hours = 1\n\"log.retention.bytes\" = 5000\nlog.segment.bytes = 2048\n\
             log-retention-check-interval-ms = 1000\n",
        )
        .unwrap();
        let c = BrokerConfig::resolve(Cli::parse_from(["sluice", "--config", path.to_str().unwrap()])).unwrap();
        assert_eq!(
            (
                c.log_retention_ms,
                c.log_retention_bytes,
                c.segment_bytes,
                c.log_retention_check_interval_ms
            ),
            (3_600_000, 5000, 2048, 1000)
        );
        let c = BrokerConfig::resolve(Cli::parse_from([
            "sluice",
            "--config",
            path.to_str().unwrap(),
            "--log-retention-minutes",
            "2",
            "--log-roll-ms",
            "500",
        ]))
        .unwrap();
        assert_eq!((c.log_retention_ms, c.segment_ms), (120_000, 500));
        let c = BrokerConfig::resolve(Cli::parse_from(["sluice", "--log-retention-ms", "-1"])).unwrap();
        assert_eq!((c.log_retention_ms, c.log_cleanup_policy.as_str()), (-1, "delete"));
        let c = BrokerConfig::resolve(Cli::parse_from(["sluice"])).unwrap();
        assert_eq!(c.log_retention_ms, 1_209_600_000);
    }

    #[test]
    fn bad_values_and_unknown_keys_are_refused() {
        assert!(BrokerConfig::resolve(Cli::parse_from(["sluice", "--shards", "0"])).is_err());
        assert!(BrokerConfig::resolve(Cli::parse_from(["sluice", "--controller", "zookeeper://x:2181"])).is_err());
        assert!(BrokerConfig::resolve(Cli::parse_from(["sluice", "--broker-session-timeout-ms", "10"])).is_err());
        assert!(Cli::try_parse_from(["sluice", "--no-such-flag"]).is_err());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "colour = 'blue'\n").unwrap();
        assert!(BrokerConfig::resolve(Cli::parse_from(["sluice", "--config", path.to_str().unwrap()])).is_err());
    }
}
