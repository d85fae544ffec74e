//! Share groups (KIP-932, "queues for Kafka"), with dead-letter topics (KIP-1191).
//!
//! Three places, as in Kafka:
//! - `group`: membership and assignment, hosted by the shard that coordinates the
//!   group id (the same `__consumer_offsets` partition as a classic group; membership
//!   is in memory: after a coordinator restart members join again).
//! - `partition` + `manager`: each share-partition's in-flight records, hosted by the
//!   shard that owns (leads) the partition, where ShareFetch and ShareAcknowledge run.
//! - `state`: the share coordinator, which keeps every share-partition's state durable
//!   in `__share_group_state` (compacted; one record per share-partition, replaced by
//!   each change) so that acknowledgements, delivery counts and the start offset
//!   survive a crash.
//!
//! Settings come from the broker's `group.share.*` configs, overridden per group by
//! group configs (IncrementalAlterConfigs on a GROUP resource).

pub mod dlq;
pub mod group;
pub mod manager;
mod members;
pub mod partition;
pub mod persister;
pub mod state;

use std::collections::BTreeMap;

use sluice_controller::ClusterMetadata;

use crate::config::BrokerConfig;
use partition::Limits;

/// Kafka's internal topic of share-partition state.
pub const SHARE_STATE_TOPIC: &str = "__share_group_state";

/// `__share_group_state` as it is created (replicas capped to the live brokers).
pub fn share_state_topic(config: &BrokerConfig, live_brokers: i16) -> sluice_controller::NewTopic {
    sluice_controller::NewTopic {
        name: SHARE_STATE_TOPIC.to_string(),
        partitions: config.share_coordinator_state_topic_num_partitions,
        replication_factor: config
            .share_coordinator_state_topic_replication_factor
            .min(live_brokers.max(1)),
        configs: [
            ("cleanup.policy".to_string(), "compact".to_string()),
            (
                "segment.bytes".to_string(),
                config.share_coordinator_state_topic_segment_bytes.to_string(),
            ),
        ]
        .into(),
        internal: true,
        replica_assignments: None,
    }
}

/// Creates `__share_group_state` if no broker has yet (as Kafka does on first use).
pub(crate) async fn ensure_share_state_topic(
    shard: &std::rc::Rc<crate::shard::Shard>,
) -> Result<(), kafka_protocol::ResponseError> {
    if shard.metadata().topic(SHARE_STATE_TOPIC).is_some() {
        return Ok(());
    }
    let live = shard.metadata().brokers.len().max(1) as i16;
    match crate::admin::create(shard, share_state_topic(shard.config(), live)).await {
        Err(e) if e.code != kafka_protocol::ResponseError::TopicAlreadyExists => {
            tracing::warn!("cannot create {SHARE_STATE_TOPIC}: {}", e.message);
            Err(kafka_protocol::ResponseError::CoordinatorNotAvailable)
        }
        _ => Ok(()),
    }
}

/// Where a share group starts reading a partition it has no state for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoOffsetReset {
    Earliest,
    Latest,
}

/// One share group's settings: the broker's, overridden by the group's configs.
#[derive(Debug, Clone)]
pub struct GroupSettings {
    pub limits: Limits,
    pub auto_offset_reset: AutoOffsetReset,
    pub read_committed: bool,
    pub session_timeout_ms: i32,
    pub heartbeat_interval_ms: i32,
    /// The dead-letter topic: `errors.deadletterqueue.topic.name`, else Sluice's
    /// default `<errors.deadletterqueue.topic.name.prefix><group>`; none when the group
    /// sets the name empty.
    pub dlq_topic: Option<String>,
    /// `errors.deadletterqueue.copy.record.enable`: copy key and value.
    pub dlq_copy_record: bool,
}

/// The group configs a share group may set, with their broker defaults' names (for
/// DescribeConfigs' synonyms).
pub const GROUP_KEYS: &[&str] = &[
    "share.session.timeout.ms",
    "share.heartbeat.interval.ms",
    "share.record.lock.duration.ms",
    "share.delivery.count.limit",
    "share.auto.offset.reset",
    "share.isolation.level",
    "errors.deadletterqueue.topic.name",
    "errors.deadletterqueue.copy.record.enable",
];

impl GroupSettings {
    pub fn resolve(config: &BrokerConfig, metadata: &ClusterMetadata, group: &str) -> GroupSettings {
        let set = metadata.group_configs.get(group);
        let get = |key: &str| set.and_then(|c| c.get(key)).map(String::as_str);
        let int = |key: &str, default: i64| get(key).and_then(|v| v.parse::<i64>().ok()).unwrap_or(default);
        GroupSettings {
            limits: Limits {
                lock_ms: int(
                    "share.record.lock.duration.ms",
                    config.group_share_record_lock_duration_ms as i64,
                ),
                delivery_count_limit: int(
                    "share.delivery.count.limit",
                    config.group_share_delivery_count_limit as i64,
                ) as i16,
                in_flight_max: config.group_share_partition_max_record_locks as i64,
            },
            auto_offset_reset: match get("share.auto.offset.reset") {
                Some("earliest") => AutoOffsetReset::Earliest,
                _ => AutoOffsetReset::Latest,
            },
            read_committed: get("share.isolation.level") == Some("read_committed"),
            session_timeout_ms: int("share.session.timeout.ms", config.group_share_session_timeout_ms as i64) as i32,
            heartbeat_interval_ms: int(
                "share.heartbeat.interval.ms",
                config.group_share_heartbeat_interval_ms as i64,
            ) as i32,
            dlq_topic: match get("errors.deadletterqueue.topic.name") {
                Some("") => None,
                Some(name) => Some(name.to_string()),
                None => Some(format!("{}{group}", config.errors_deadletterqueue_topic_name_prefix)),
            },
            dlq_copy_record: get("errors.deadletterqueue.copy.record.enable") == Some("true"),
        }
    }

    /// Every group config's value for DescribeConfigs: (name, value, set by the group).
    pub fn described(
        config: &BrokerConfig,
        group: &str,
        configs: Option<&BTreeMap<String, String>>,
    ) -> Vec<(&'static str, String, bool)> {
        let defaults = [
            config.group_share_session_timeout_ms.to_string(),
            config.group_share_heartbeat_interval_ms.to_string(),
            config.group_share_record_lock_duration_ms.to_string(),
            config.group_share_delivery_count_limit.to_string(),
            "latest".to_string(),
            "read_uncommitted".to_string(),
            format!("{}{group}", config.errors_deadletterqueue_topic_name_prefix),
            "false".to_string(),
        ];
        GROUP_KEYS
            .iter()
            .zip(defaults)
            .map(|(key, default)| match configs.and_then(|c| c.get(*key)) {
                Some(v) => (*key, v.clone(), true),
                None => (*key, default, false),
            })
            .collect()
    }
}

/// Checks one group config against Kafka's rules (GroupConfig's validators and the
/// broker's bounds); the message for INVALID_CONFIG.
pub fn validate_group_config(config: &BrokerConfig, key: &str, value: &str) -> Result<(), String> {
    let int = || {
        value
            .parse::<i64>()
            .map_err(|_| format!("{key} must be an integer, not {value:?}"))
    };
    let within = |v: i64, lo: i64, hi: i64| {
        if (lo..=hi).contains(&v) {
            Ok(())
        } else {
            Err(format!("{key} must be between {lo} and {hi}, not {v}"))
        }
    };
    match key {
        "share.record.lock.duration.ms" => within(
            int()?,
            config.group_share_min_record_lock_duration_ms as i64,
            config.group_share_max_record_lock_duration_ms as i64,
        ),
        "share.delivery.count.limit" => within(int()?, 2, 10),
        "share.session.timeout.ms" | "share.heartbeat.interval.ms" => within(int()?, 1, i32::MAX as i64),
        "share.auto.offset.reset" => match value {
            "earliest" | "latest" => Ok(()),
            _ => Err(format!("{key} must be earliest or latest, not {value:?}")),
        },
        "share.isolation.level" => match value {
            "read_committed" | "read_uncommitted" => Ok(()),
            _ => Err(format!(
                "{key} must be read_committed or read_uncommitted, not {value:?}"
            )),
        },
        "errors.deadletterqueue.topic.name" => {
            let prefix = &config.errors_deadletterqueue_topic_name_prefix;
            if value.is_empty() || value.starts_with(prefix.as_str()) {
                sluice_controller::validate_topic_name(value)
                    .or_else(|e| if value.is_empty() { Ok(()) } else { Err(e) })
            } else {
                Err(format!(
                    "{key} must start with {prefix:?} (errors.deadletterqueue.topic.name.prefix)"
                ))
            }
        }
        "errors.deadletterqueue.copy.record.enable" => match value {
            "true" | "false" => Ok(()),
            _ => Err(format!("{key} must be true or false, not {value:?}")),
        },
        _ => Err(format!("unknown group config {key}")),
    }
}
