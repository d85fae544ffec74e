//! Topic configs by Kafka's names: validation, where each value comes from, and the
//! storage [`LogConfig`] a partition log runs with.
//!
//! A topic config's value is, in Kafka's order (KIP-226): the topic's override, else
//! this broker's dynamic config of the synonym broker key (`retention.ms` →
//! `log.retention.ms`), else the cluster-wide dynamic default, else the broker's
//! static config (flag or file), else the default. [`resolve`] walks that chain once
//! for every key; [`log_config`] and DescribeConfigs read its answer.
//!
//! Keys Sluice enforces: segment.bytes, segment.ms, max.message.bytes,
//! message.timestamp.type, flush.messages, flush.ms, index.interval.bytes,
//! min.insync.replicas, retention.ms, retention.bytes, cleanup.policy,
//! compression.type, delete.retention.ms, min.cleanable.dirty.ratio,
//! min.compaction.lag.ms, max.compaction.lag.ms. The keys in [`STORED_ONLY`] are
//! accepted, stored and described.

use std::borrow::Cow;
use std::collections::BTreeMap;

use sluice_controller::{ClusterMetadata, TopicMetadata};
use sluice_storage::{LogConfig, TimestampType};

use crate::config::BrokerConfig;

/// Kafka's DescribeConfigs sources (KIP-226).
pub const SOURCE_TOPIC: i8 = 1;
pub const SOURCE_DYNAMIC_BROKER: i8 = 2;
pub const SOURCE_DYNAMIC_DEFAULT_BROKER: i8 = 3;
pub const SOURCE_STATIC_BROKER: i8 = 4;
pub const SOURCE_DEFAULT: i8 = 5;
/// KIP-848: a value a group config set.
pub const SOURCE_GROUP: i8 = 8;

/// Kafka's config types (DescribeConfigs v3+).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigType {
    Boolean = 1,
    String = 2,
    Int = 3,
    Long = 5,
    Double = 6,
    List = 7,
}

/// Every topic key: its broker synonym (the broker config that gives its default),
/// its type, and its built-in default (used when the broker has no value of its own).
const TOPIC_KEYS: &[(&str, Option<&str>, ConfigType, &str)] = &[
    ("cleanup.policy", Some("log.cleanup.policy"), ConfigType::List, "delete"),
    (
        "compression.type",
        Some("compression.type"),
        ConfigType::String,
        "producer",
    ),
    (
        "delete.retention.ms",
        Some("log.cleaner.delete.retention.ms"),
        ConfigType::Long,
        "86400000",
    ),
    (
        "file.delete.delay.ms",
        Some("log.segment.delete.delay.ms"),
        ConfigType::Long,
        "60000",
    ),
    (
        "flush.messages",
        Some("log.flush.interval.messages"),
        ConfigType::Long,
        "9223372036854775807",
    ),
    (
        "flush.ms",
        Some("log.flush.interval.ms"),
        ConfigType::Long,
        "9223372036854775807",
    ),
    (
        "index.interval.bytes",
        Some("log.index.interval.bytes"),
        ConfigType::Int,
        "4096",
    ),
    (
        "max.compaction.lag.ms",
        Some("log.cleaner.max.compaction.lag.ms"),
        ConfigType::Long,
        "9223372036854775807",
    ),
    (
        "max.message.bytes",
        Some("message.max.bytes"),
        ConfigType::Int,
        "1048588",
    ),
    (
        "message.format.version",
        Some("log.message.format.version"),
        ConfigType::String,
        "3.0-IV1",
    ),
    (
        "message.timestamp.after.max.ms",
        Some("log.message.timestamp.after.max.ms"),
        ConfigType::Long,
        "9223372036854775807",
    ),
    (
        "message.timestamp.before.max.ms",
        Some("log.message.timestamp.before.max.ms"),
        ConfigType::Long,
        "9223372036854775807",
    ),
    (
        "message.timestamp.type",
        Some("log.message.timestamp.type"),
        ConfigType::String,
        "CreateTime",
    ),
    (
        "min.cleanable.dirty.ratio",
        Some("log.cleaner.min.cleanable.ratio"),
        ConfigType::Double,
        "0.5",
    ),
    (
        "min.compaction.lag.ms",
        Some("log.cleaner.min.compaction.lag.ms"),
        ConfigType::Long,
        "0",
    ),
    ("min.insync.replicas", Some("min.insync.replicas"), ConfigType::Int, "1"),
    ("preallocate", Some("log.preallocate"), ConfigType::Boolean, "false"),
    ("retention.bytes", Some("log.retention.bytes"), ConfigType::Long, "-1"),
    // Sluice's default: two weeks (Kafka's: 7 days).
    ("retention.ms", Some("log.retention.ms"), ConfigType::Long, "1209600000"),
    (
        "segment.bytes",
        Some("log.segment.bytes"),
        ConfigType::Int,
        "1073741824",
    ),
    ("segment.jitter.ms", Some("log.roll.jitter.ms"), ConfigType::Long, "0"),
    ("segment.ms", Some("log.roll.ms"), ConfigType::Long, "604800000"),
    (
        "unclean.leader.election.enable",
        Some("unclean.leader.election.enable"),
        ConfigType::Boolean,
        "false",
    ),
];

/// Keys kept and described but not acted on (message.format.version is ignored by
/// Kafka 3 too, and gone in Kafka 4; files are deleted in the background at once).
const STORED_ONLY: &[&str] = &[
    "file.delete.delay.ms",
    "message.format.version",
    "message.timestamp.after.max.ms",
    "message.timestamp.before.max.ms",
    "preallocate",
    "segment.jitter.ms",
    "unclean.leader.election.enable",
];

/// The topic key whose default a broker key sets (`log.retention.ms` → `retention.ms`).
pub fn topic_key_of(broker_key: &str) -> Option<&'static str> {
    TOPIC_KEYS
        .iter()
        .find(|(_, synonym, _, _)| *synonym == Some(broker_key))
        .map(|(name, ..)| *name)
}

/// The broker key that sets a topic key's default.
pub fn broker_key_of(topic_key: &str) -> Option<&'static str> {
    TOPIC_KEYS
        .iter()
        .find(|(name, ..)| *name == topic_key)
        .and_then(|(_, synonym, _, _)| *synonym)
}

/// Whether `key` is a topic config Sluice knows.
pub fn is_known(key: &str) -> bool {
    TOPIC_KEYS.iter().any(|(name, ..)| *name == key)
}

pub fn config_type(topic_key: &str) -> ConfigType {
    TOPIC_KEYS
        .iter()
        .find(|(name, ..)| *name == topic_key)
        .map_or(ConfigType::String, |(_, _, kind, _)| *kind)
}

/// The broker's static values of the topic keys' synonyms (flags and file), where it
/// has them.
fn static_broker_value(broker: &BrokerConfig, topic_key: &str) -> Option<String> {
    Some(match topic_key {
        "segment.bytes" => broker.segment_bytes.to_string(),
        "segment.ms" => broker.segment_ms.to_string(),
        "max.message.bytes" => broker.message_max_bytes.to_string(),
        "flush.messages" => broker.flush_messages.min(i64::MAX as u64).to_string(),
        "flush.ms" => broker.flush_ms.to_string(),
        "min.insync.replicas" => broker.min_insync_replicas.to_string(),
        "retention.ms" => broker.log_retention_ms.to_string(),
        "retention.bytes" => broker.log_retention_bytes.to_string(),
        "cleanup.policy" => broker.log_cleanup_policy.clone(),
        "delete.retention.ms" => broker.log_cleaner_delete_retention_ms.to_string(),
        "min.cleanable.dirty.ratio" => broker.log_cleaner_min_cleanable_ratio.to_string(),
        "min.compaction.lag.ms" => broker.log_cleaner_min_compaction_lag_ms.to_string(),
        "max.compaction.lag.ms" => broker.log_cleaner_max_compaction_lag_ms.to_string(),
        _ => return None,
    })
}

/// One step of a value's resolution: who set it, under which name, to what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Synonym {
    pub name: String,
    pub value: String,
    pub source: i8,
}

/// A topic key's value and every level that sets it, the winning one first (Kafka's
/// synonyms, in precedence order).
#[derive(Debug, Clone)]
pub struct Resolved {
    pub key: &'static str,
    pub value: String,
    pub source: i8,
    pub synonyms: Vec<Synonym>,
    pub kind: ConfigType,
}

/// A topic's overrides as they apply: the internal topics created before their
/// `segment.bytes` was set at creation (`offsets.topic.segment.bytes`,
/// `transaction.state.log.segment.bytes`) take it from the broker, so that their
/// segments roll and the cleaner can compact them.
pub fn overrides_of<'a>(broker: &BrokerConfig, topic: &'a TopicMetadata) -> Cow<'a, BTreeMap<String, String>> {
    let segment_bytes = match topic.name.as_str() {
        crate::group::OFFSETS_TOPIC => broker.offsets_topic_segment_bytes,
        crate::txn::TRANSACTION_STATE_TOPIC => broker.transaction_state_log_segment_bytes,
        _ => return Cow::Borrowed(&topic.configs),
    };
    if topic.configs.contains_key("segment.bytes") {
        return Cow::Borrowed(&topic.configs);
    }
    let mut configs = topic.configs.clone();
    configs.insert("segment.bytes".to_string(), segment_bytes.to_string());
    Cow::Owned(configs)
}

/// Every topic key's value for `topic` (see [`overrides_of`]).
pub fn topic_values(
    broker: &BrokerConfig,
    metadata: &ClusterMetadata,
    topic: &TopicMetadata,
) -> BTreeMap<String, String> {
    values(broker, metadata, &overrides_of(broker, topic))
}

/// Every topic key's value for a topic with `overrides`, walking Kafka's chain.
pub fn resolve(
    broker: &BrokerConfig,
    metadata: &ClusterMetadata,
    overrides: &BTreeMap<String, String>,
) -> Vec<Resolved> {
    TOPIC_KEYS
        .iter()
        .map(|(key, synonym, kind, default)| {
            let mut synonyms = Vec::new();
            if let Some(v) = overrides.get(*key) {
                synonyms.push(Synonym {
                    name: key.to_string(),
                    value: v.clone(),
                    source: SOURCE_TOPIC,
                });
            }
            if let Some(broker_key) = synonym {
                let dynamic = [
                    (
                        SOURCE_DYNAMIC_BROKER,
                        metadata.broker_configs.get(&broker.node_id.to_string()),
                    ),
                    (
                        SOURCE_DYNAMIC_DEFAULT_BROKER,
                        metadata.broker_configs.get(sluice_controller::CLUSTER_DEFAULT),
                    ),
                ];
                for (source, configs) in dynamic {
                    if let Some(v) = configs.and_then(|c| c.get(*broker_key)) {
                        synonyms.push(Synonym {
                            name: broker_key.to_string(),
                            value: v.clone(),
                            source,
                        });
                    }
                }
                match static_broker_value(broker, key) {
                    Some(v) if v != *default => synonyms.push(Synonym {
                        name: broker_key.to_string(),
                        value: v,
                        source: SOURCE_STATIC_BROKER,
                    }),
                    _ => {}
                }
            }
            synonyms.push(Synonym {
                name: synonym.unwrap_or(key).to_string(),
                value: default.to_string(),
                source: SOURCE_DEFAULT,
            });
            let winner = synonyms[0].clone();
            Resolved {
                key,
                value: winner.value,
                source: winner.source,
                synonyms,
                kind: *kind,
            }
        })
        .collect()
}

/// Every key a topic has, with its value now (CreateTopics' answer, AlterConfigs'
/// starting point).
pub fn values(
    broker: &BrokerConfig,
    metadata: &ClusterMetadata,
    overrides: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    resolve(broker, metadata, overrides)
        .into_iter()
        .map(|r| (r.key.to_string(), r.value))
        .collect()
}

/// Checks one key and value; the error text goes back to the client.
pub fn validate(key: &str, value: &str) -> Result<(), String> {
    let positive = |min: i64, max: i64| match value.parse::<i64>() {
        Ok(v) if (min..=max).contains(&v) => Ok(()),
        _ => Err(format!(
            "{key} must be an integer between {min} and {max}, not '{value}'"
        )),
    };
    match key {
        "segment.bytes" => positive(14, u32::MAX as i64),
        "segment.ms" | "flush.ms" | "flush.messages" => positive(1, i64::MAX),
        "max.message.bytes" => positive(0, i32::MAX as i64),
        "index.interval.bytes" => positive(0, i32::MAX as i64),
        "message.timestamp.type" => match value {
            "CreateTime" | "LogAppendTime" => Ok(()),
            _ => Err(format!(
                "message.timestamp.type must be CreateTime or LogAppendTime, not '{value}'"
            )),
        },
        "compression.type" => match value {
            "producer" | "uncompressed" | "gzip" | "snappy" | "lz4" | "zstd" => Ok(()),
            _ => Err(format!(
                "compression.type must be producer, uncompressed, gzip, snappy, lz4 or zstd, not '{value}'"
            )),
        },
        "cleanup.policy" => {
            if value.split(',').all(|p| matches!(p.trim(), "delete" | "compact")) {
                Ok(())
            } else {
                Err(format!("cleanup.policy must be delete, compact or both, not '{value}'"))
            }
        }
        "retention.ms" | "retention.bytes" => positive(-1, i64::MAX),
        "min.insync.replicas" => positive(1, i32::MAX as i64),
        "delete.retention.ms" | "min.compaction.lag.ms" | "max.compaction.lag.ms" | "file.delete.delay.ms" => {
            positive(0, i64::MAX)
        }
        "min.cleanable.dirty.ratio" => match value.parse::<f64>() {
            Ok(v) if (0.0..=1.0).contains(&v) => Ok(()),
            _ => Err(format!(
                "min.cleanable.dirty.ratio must be between 0 and 1, not '{value}'"
            )),
        },
        "preallocate" | "unclean.leader.election.enable" => match value {
            "true" | "false" => Ok(()),
            _ => Err(format!("{key} must be true or false, not '{value}'")),
        },
        _ if STORED_ONLY.contains(&key) => Ok(()),
        _ => Err(format!("unknown topic config '{key}'")),
    }
}

/// `min.insync.replicas` of a topic from its resolved values.
pub fn min_insync_replicas(values: &BTreeMap<String, String>) -> i32 {
    values
        .get("min.insync.replicas")
        .and_then(|v| v.parse::<i32>().ok())
        .unwrap_or(1)
        .max(1)
}

/// The storage settings of a topic from its resolved values.
pub fn log_config(values: &BTreeMap<String, String>) -> LogConfig {
    let defaults = LogConfig::default();
    let get = |key: &str| values.get(key).map(String::as_str);
    let num = |key: &str, default: i64| get(key).and_then(|v| v.parse::<i64>().ok()).unwrap_or(default);
    let policy: Vec<&str> = get("cleanup.policy")
        .unwrap_or("delete")
        .split(',')
        .map(str::trim)
        .collect();
    LogConfig {
        segment_bytes: num("segment.bytes", defaults.segment_bytes as i64).max(1) as u64,
        segment_ms: num("segment.ms", defaults.segment_ms),
        index_interval_bytes: num("index.interval.bytes", 4096).max(0) as u64,
        max_message_bytes: num("max.message.bytes", defaults.max_message_bytes as i64).max(0) as usize,
        timestamp_type: match get("message.timestamp.type") {
            Some("LogAppendTime") => TimestampType::LogAppendTime,
            _ => TimestampType::CreateTime,
        },
        flush_messages: num("flush.messages", i64::MAX).max(1) as u64,
        flush_ms: num("flush.ms", defaults.flush_ms),
        retention_ms: num("retention.ms", defaults.retention_ms),
        retention_bytes: num("retention.bytes", defaults.retention_bytes),
        cleanup_delete: policy.contains(&"delete"),
        cleanup_compact: policy.contains(&"compact"),
        compression: get("compression.type").and_then(sluice_storage::compression::codec_of),
        compaction: sluice_storage::cleaner::CompactionConfig {
            delete_retention_ms: num("delete.retention.ms", 86_400_000),
            min_compaction_lag_ms: num("min.compaction.lag.ms", 0),
            max_compaction_lag_ms: num("max.compaction.lag.ms", i64::MAX),
            min_cleanable_dirty_ratio: get("min.cleanable.dirty.ratio")
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.5),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn broker(args: &[&str]) -> BrokerConfig {
        let mut all = vec!["sluice"];
        all.extend_from_slice(args);
        BrokerConfig::resolve(crate::config::Cli::parse_from(all)).unwrap()
    }

    fn metadata() -> ClusterMetadata {
        ClusterMetadata {
            cluster_id: "c".into(),
            topics: Default::default(),
            next_producer_id: 0,
            revision: 0,
            brokers: Default::default(),
            group_configs: Default::default(),
            controller_id: 1,
            broker_configs: Default::default(),
        }
    }

    fn find<'a>(all: &'a [Resolved], key: &str) -> &'a Resolved {
        all.iter().find(|r| r.key == key).unwrap()
    }

    #[test]
    fn a_value_comes_from_the_topic_then_dynamic_then_static_broker_configs_then_the_default() {
        let b = broker(&["--log-retention-ms", "5000"]);
        let mut m = metadata();
        let none = BTreeMap::new();
        let r = resolve(&b, &m, &none);
        assert_eq!(
            (find(&r, "retention.ms").value.as_str(), find(&r, "retention.ms").source),
            ("5000", SOURCE_STATIC_BROKER)
        );
        assert_eq!(find(&r, "retention.bytes").source, SOURCE_DEFAULT);
        m.broker_configs
            .insert("".into(), [("log.retention.ms".to_string(), "7000".to_string())].into());
        let r = resolve(&b, &m, &none);
        assert_eq!(find(&r, "retention.ms").value, "7000");
        assert_eq!(find(&r, "retention.ms").source, SOURCE_DYNAMIC_DEFAULT_BROKER);
        m.broker_configs.insert(
            "1".into(),
            [("log.retention.ms".to_string(), "8000".to_string())].into(),
        );
        let overrides = [("retention.ms".to_string(), "9000".to_string())].into();
        let r = resolve(&b, &m, &overrides);
        let retention = find(&r, "retention.ms");
        assert_eq!((retention.value.as_str(), retention.source), ("9000", SOURCE_TOPIC));
        let sources: Vec<i8> = retention.synonyms.iter().map(|s| s.source).collect();
        assert_eq!(
            sources,
            [
                SOURCE_TOPIC,
                SOURCE_DYNAMIC_BROKER,
                SOURCE_DYNAMIC_DEFAULT_BROKER,
                SOURCE_STATIC_BROKER,
                SOURCE_DEFAULT
            ]
        );
        let config = log_config(&values(&b, &m, &overrides));
        assert_eq!(config.retention_ms, 9000);
        assert!(config.cleanup_delete && !config.cleanup_compact);
    }

    #[test]
    fn every_described_value_is_accepted_back() {
        let b = broker(&[]);
        for (key, value) in values(&b, &metadata(), &BTreeMap::new()) {
            validate(&key, &value).unwrap_or_else(|e| panic!("{key}={value}: {e}"));
        }
        assert!(validate("retention.ms", "-2").is_err());
        assert!(validate("no.such.key", "1").is_err());
        assert!(validate("min.cleanable.dirty.ratio", "1.5").is_err());
    }
}
