//! Topic configs by Kafka's names: validation, broker defaults, and the storage
//! [`LogConfig`] a partition log runs with.
//!
//! Keys Sluice enforces today: segment.bytes, segment.ms, max.message.bytes,
//! message.timestamp.type, flush.messages, flush.ms, index.interval.bytes,
//! min.insync.replicas. Keys it
//! accepts, stores and reports but whose behaviour arrives with later issues
//! (retention, compaction, replication): see [`STORED_ONLY`].

use std::collections::BTreeMap;

use sluice_storage::{LogConfig, TimestampType};

use crate::config::BrokerConfig;

/// Retention keys and others Kafka users commonly set at creation: kept and described,
/// enforced once their feature lands (retention and compaction issue, cluster issue).
const STORED_ONLY: &[(&str, &str)] = &[
    ("cleanup.policy", "delete"),
    // The mission's default: two weeks.
    ("retention.ms", "1209600000"),
    ("retention.bytes", "-1"),
    ("delete.retention.ms", "86400000"),
    ("min.compaction.lag.ms", "0"),
    ("max.compaction.lag.ms", "9223372036854775807"),
    ("min.cleanable.dirty.ratio", "0.5"),
    ("file.delete.delay.ms", "60000"),
    ("unclean.leader.election.enable", "false"),
    ("message.timestamp.before.max.ms", "9223372036854775807"),
    ("message.timestamp.after.max.ms", "9223372036854775807"),
    ("segment.jitter.ms", "0"),
    ("preallocate", "false"),
];

/// Every config a topic has, with the value it takes from the broker when unset.
pub fn defaults(broker: &BrokerConfig) -> BTreeMap<String, String> {
    let mut all: BTreeMap<String, String> = STORED_ONLY
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let flush_messages = broker.flush_messages.min(i64::MAX as u64);
    for (k, v) in [
        ("segment.bytes", broker.segment_bytes.to_string()),
        ("segment.ms", broker.segment_ms.to_string()),
        ("max.message.bytes", broker.message_max_bytes.to_string()),
        ("message.timestamp.type", "CreateTime".to_string()),
        ("flush.messages", flush_messages.to_string()),
        ("flush.ms", broker.flush_ms.to_string()),
        ("index.interval.bytes", "4096".to_string()),
        ("compression.type", "producer".to_string()),
        ("min.insync.replicas", broker.min_insync_replicas.to_string()),
    ] {
        all.insert(k.to_string(), v);
    }
    all
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
            "producer" => Ok(()),
            _ => Err("compression.type: only 'producer' (batches kept as sent) is supported".into()),
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
        _ if STORED_ONLY.iter().any(|(k, _)| *k == key) => Ok(()),
        _ => Err(format!("unknown topic config '{key}'")),
    }
}

/// `min.insync.replicas` of a topic: its override, or the broker's.
pub fn min_insync_replicas(broker: &BrokerConfig, overrides: &BTreeMap<String, String>) -> i32 {
    overrides
        .get("min.insync.replicas")
        .and_then(|v| v.parse::<i32>().ok())
        .unwrap_or(broker.min_insync_replicas)
        .max(1)
}

/// The storage settings of a topic: its overrides over the broker's defaults.
pub fn log_config(broker: &BrokerConfig, overrides: &BTreeMap<String, String>) -> LogConfig {
    let get = |key: &str| overrides.get(key).map(String::as_str);
    let num = |key: &str, default: i64| get(key).and_then(|v| v.parse::<i64>().ok()).unwrap_or(default);
    LogConfig {
        segment_bytes: num("segment.bytes", broker.segment_bytes as i64).max(1) as u64,
        segment_ms: num("segment.ms", broker.segment_ms),
        index_interval_bytes: num("index.interval.bytes", 4096).max(0) as u64,
        max_message_bytes: num("max.message.bytes", broker.message_max_bytes as i64).max(0) as usize,
        timestamp_type: match get("message.timestamp.type") {
            Some("LogAppendTime") => TimestampType::LogAppendTime,
            _ => TimestampType::CreateTime,
        },
        flush_messages: num("flush.messages", broker.flush_messages.min(i64::MAX as u64) as i64).max(1) as u64,
        flush_ms: num("flush.ms", broker.flush_ms),
    }
}
