//! The config APIs' logic (DescribeConfigs, AlterConfigs, IncrementalAlterConfigs;
//! KIP-133, KIP-226, KIP-339): what a TOPIC or BROKER resource reports, and how a
//! change is validated and recorded. Topic overrides and dynamic broker configs are
//! kept by the controller (the metadata file, or etcd in a cluster); every shard
//! applies a change when the controller's watch brings it, so a retention change acts
//! at the next retention check without a restart.

use std::collections::BTreeMap;
use std::rc::Rc;

use kafka_protocol::ResponseError;
use sluice_controller::{ClusterMetadata, TopicMetadata, CLUSTER_DEFAULT};

use crate::admin::{self, AdminError};
use crate::config::BrokerConfig;
use crate::shard::Shard;
use crate::topic_config::{self, ConfigType, Synonym, SOURCE_DEFAULT, SOURCE_STATIC_BROKER};

/// Kafka's ConfigResource types.
pub const RESOURCE_TOPIC: i8 = 2;
pub const RESOURCE_BROKER: i8 = 4;
pub const RESOURCE_GROUP: i8 = 32;

/// IncrementalAlterConfigs' operations.
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;

/// One config as DescribeConfigs reports it.
#[derive(Debug, Clone)]
pub struct Described {
    pub name: String,
    pub value: Option<String>,
    pub read_only: bool,
    pub source: i8,
    pub synonyms: Vec<Synonym>,
    pub kind: ConfigType,
}

/// The broker's own configs that only a restart changes: (Kafka's name, value, built-in
/// default, type).
fn static_broker_configs(b: &BrokerConfig) -> Vec<(&'static str, Option<String>, &'static str, ConfigType)> {
    let advertised = match &b.advertised_listener {
        Some((host, port)) => format!("PLAINTEXT://{host}:{port}"),
        None => format!("PLAINTEXT://{}", b.listen),
    };
    vec![
        ("node.id", Some(b.node_id.to_string()), "1", ConfigType::Int),
        ("broker.id", Some(b.node_id.to_string()), "1", ConfigType::Int),
        (
            "listeners",
            Some(format!("PLAINTEXT://{}", b.listen)),
            "PLAINTEXT://127.0.0.1:9092",
            ConfigType::String,
        ),
        ("advertised.listeners", Some(advertised), "", ConfigType::String),
        (
            "log.dirs",
            Some(b.data_dir.display().to_string()),
            "data",
            ConfigType::String,
        ),
        ("broker.rack", b.broker_rack.clone(), "", ConfigType::String),
        (
            "num.partitions",
            Some(b.num_partitions.to_string()),
            "1",
            ConfigType::Int,
        ),
        (
            "default.replication.factor",
            Some(b.default_replication_factor.to_string()),
            "1",
            ConfigType::Int,
        ),
        (
            "auto.create.topics.enable",
            Some(b.auto_create_topics.to_string()),
            "true",
            ConfigType::Boolean,
        ),
        (
            "socket.request.max.bytes",
            Some(b.socket_request_max_bytes.to_string()),
            "104857600",
            ConfigType::Int,
        ),
        (
            "max.connections",
            Some(b.max_connections.to_string()),
            "2147483647",
            ConfigType::Int,
        ),
        (
            "max.connections.per.ip",
            Some(b.max_connections_per_ip.to_string()),
            "2147483647",
            ConfigType::Int,
        ),
        (
            "max.connections.per.ip.overrides",
            Some(b.max_connections_per_ip_overrides.clone()),
            "",
            ConfigType::String,
        ),
        (
            "max.connection.creation.rate",
            Some(
                b.max_connection_creation_rate
                    .map_or(i32::MAX.to_string(), |r| r.to_string()),
            ),
            "2147483647",
            ConfigType::Int,
        ),
        (
            "queued.max.request.bytes",
            Some(b.queued_max_request_bytes.map_or("-1".to_string(), |n| n.to_string())),
            "-1",
            ConfigType::Long,
        ),
        (
            "log.retention.check.interval.ms",
            Some(b.log_retention_check_interval_ms.to_string()),
            "300000",
            ConfigType::Long,
        ),
        (
            "offsets.topic.num.partitions",
            Some(b.offsets_topic_num_partitions.to_string()),
            "50",
            ConfigType::Int,
        ),
        (
            "offsets.topic.replication.factor",
            Some(b.offsets_topic_replication_factor.to_string()),
            "3",
            ConfigType::Int,
        ),
        (
            "offsets.retention.minutes",
            Some(b.offsets_retention_minutes.to_string()),
            "10080",
            ConfigType::Int,
        ),
        (
            "transaction.state.log.num.partitions",
            Some(b.transaction_state_log_num_partitions.to_string()),
            "50",
            ConfigType::Int,
        ),
        (
            "transaction.state.log.replication.factor",
            Some(b.transaction_state_log_replication_factor.to_string()),
            "3",
            ConfigType::Int,
        ),
        (
            "transaction.state.log.min.isr",
            Some(b.transaction_state_log_min_isr.to_string()),
            "2",
            ConfigType::Int,
        ),
        (
            "transaction.max.timeout.ms",
            Some(b.transaction_max_timeout_ms.to_string()),
            "900000",
            ConfigType::Int,
        ),
        (
            "transaction.abort.timed.out.transaction.cleanup.interval.ms",
            Some(
                b.transaction_abort_timed_out_transaction_cleanup_interval_ms
                    .to_string(),
            ),
            "10000",
            ConfigType::Int,
        ),
        (
            "group.initial.rebalance.delay.ms",
            Some(b.group_initial_rebalance_delay_ms.to_string()),
            "3000",
            ConfigType::Int,
        ),
        (
            "group.min.session.timeout.ms",
            Some(b.group_min_session_timeout_ms.to_string()),
            "6000",
            ConfigType::Int,
        ),
        (
            "group.max.session.timeout.ms",
            Some(b.group_max_session_timeout_ms.to_string()),
            "1800000",
            ConfigType::Int,
        ),
        (
            "group.max.size",
            Some(b.group_max_size.min(i32::MAX as usize).to_string()),
            "2147483647",
            ConfigType::Int,
        ),
        (
            "replica.lag.time.max.ms",
            Some(b.replica_lag_time_max_ms.to_string()),
            "30000",
            ConfigType::Long,
        ),
        (
            "broker.session.timeout.ms",
            Some(b.broker_session_timeout_ms.to_string()),
            "9000",
            ConfigType::Int,
        ),
        (
            "auto.leader.rebalance.enable",
            Some(b.auto_leader_rebalance_enable.to_string()),
            "true",
            ConfigType::Boolean,
        ),
    ]
}

fn existing_topic<'a>(metadata: &'a ClusterMetadata, name: &str) -> Result<&'a TopicMetadata, AdminError> {
    metadata.topic(name).ok_or_else(|| {
        AdminError::new(
            ResponseError::UnknownTopicOrPartition,
            format!("topic '{name}' does not exist"),
        )
    })
}

/// DescribeConfigs of a topic: every topic key with its value, source and synonyms.
pub fn describe_topic(shard: &Shard, name: &str) -> Result<Vec<Described>, AdminError> {
    let metadata = shard.metadata();
    let topic = existing_topic(&metadata, name)?;
    Ok(topic_config::resolve(
        shard.config(),
        &metadata,
        &topic_config::overrides_of(shard.config(), topic),
    )
    .into_iter()
    .map(|r| Described {
        name: r.key.to_string(),
        value: Some(r.value),
        read_only: false,
        source: r.source,
        synonyms: r.synonyms,
        kind: r.kind,
    })
    .collect())
}

/// DescribeConfigs of a broker: `name` is this broker's id (its configs, static and
/// dynamic) or empty (the cluster-wide dynamic defaults only, as Kafka answers).
pub fn describe_broker(shard: &Shard, name: &str) -> Result<Vec<Described>, AdminError> {
    let metadata = shard.metadata();
    let me = shard.config().node_id;
    if name.is_empty() {
        let defaults = metadata
            .broker_configs
            .get(CLUSTER_DEFAULT)
            .cloned()
            .unwrap_or_default();
        return Ok(defaults
            .into_iter()
            .map(|(k, v)| Described {
                kind: topic_config::topic_key_of(&k).map_or(ConfigType::String, topic_config::config_type),
                synonyms: vec![Synonym {
                    name: k.clone(),
                    value: v.clone(),
                    source: topic_config::SOURCE_DYNAMIC_DEFAULT_BROKER,
                }],
                name: k,
                value: Some(v),
                read_only: false,
                source: topic_config::SOURCE_DYNAMIC_DEFAULT_BROKER,
            })
            .collect());
    }
    if name.parse::<i32>().ok() != Some(me) {
        return Err(AdminError::new(
            ResponseError::InvalidRequest,
            format!("unexpected broker id '{name}': this is broker {me}; ask that broker, or name none for the cluster defaults"),
        ));
    }
    let mut out: Vec<Described> = static_broker_configs(shard.config())
        .into_iter()
        .map(|(key, value, default, kind)| {
            let source = if value.as_deref() == Some(default) {
                SOURCE_DEFAULT
            } else {
                SOURCE_STATIC_BROKER
            };
            Described {
                name: key.to_string(),
                synonyms: value
                    .iter()
                    .map(|v| Synonym {
                        name: key.to_string(),
                        value: v.clone(),
                        source,
                    })
                    .collect(),
                value,
                read_only: true,
                source,
                kind,
            }
        })
        .collect();
    // The topic keys' broker synonyms: dynamic, and resolved as a topic with no
    // overrides would resolve them.
    for r in topic_config::resolve(shard.config(), &metadata, &BTreeMap::new()) {
        let Some(broker_key) = topic_config::broker_key_of(r.key) else {
            continue;
        };
        let synonyms: Vec<Synonym> = r
            .synonyms
            .into_iter()
            .filter(|s| s.source != topic_config::SOURCE_TOPIC)
            .collect();
        out.push(Described {
            name: broker_key.to_string(),
            value: Some(r.value),
            read_only: false,
            source: r.source,
            synonyms,
            kind: r.kind,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// A change to a resource's configs.
pub enum Change {
    /// AlterConfigs: these become the whole set of overrides (a null value is refused).
    Replace(Vec<(String, Option<String>)>),
    /// IncrementalAlterConfigs: (key, operation, value) applied to the current set.
    Ops(Vec<(String, i8, Option<String>)>),
}

impl Change {
    fn keys(&self) -> Vec<&str> {
        match self {
            Change::Replace(c) => c.iter().map(|(k, _)| k.as_str()).collect(),
            Change::Ops(c) => c.iter().map(|(k, _, _)| k.as_str()).collect(),
        }
    }
}

fn invalid_config(message: impl Into<String>) -> AdminError {
    AdminError::new(ResponseError::InvalidConfig, message)
}

fn invalid_request(message: impl Into<String>) -> AdminError {
    AdminError::new(ResponseError::InvalidRequest, message)
}

/// Checks a key (and with `Some` its value) and gives its type.
type Validate<'a> = &'a dyn Fn(&str, Option<&str>) -> Result<ConfigType, AdminError>;

/// The overrides `change` leaves, starting from `current`; `effective` gives a key's
/// value now (for APPEND and SUBTRACT) and `validate` checks keys and values.
fn apply(
    current: &BTreeMap<String, String>,
    change: Change,
    effective: impl Fn(&str) -> Option<String>,
    validate: Validate<'_>,
) -> Result<BTreeMap<String, String>, AdminError> {
    let mut keys = change.keys();
    keys.sort_unstable();
    if let Some(pair) = keys.windows(2).find(|w| w[0] == w[1]) {
        return Err(invalid_request(format!("config '{}' is named more than once", pair[0])));
    }
    match change {
        Change::Replace(configs) => {
            let mut next = BTreeMap::new();
            for (key, value) in configs {
                let value = value.ok_or_else(|| invalid_request(format!("null value for config '{key}'")))?;
                validate(&key, Some(&value))?;
                next.insert(key, value);
            }
            Ok(next)
        }
        Change::Ops(ops) => {
            let mut next = current.clone();
            for (key, op, value) in ops {
                match op {
                    OP_SET => {
                        let value = value.ok_or_else(|| invalid_request(format!("null value for config '{key}'")))?;
                        validate(&key, Some(&value))?;
                        next.insert(key, value);
                    }
                    OP_DELETE => {
                        // Deleting an unknown key is refused as Kafka does; a known one
                        // that has no override is fine.
                        validate(&key, None)?;
                        next.remove(&key);
                    }
                    OP_APPEND | OP_SUBTRACT => {
                        let kind = validate(&key, None)?;
                        if kind != ConfigType::List {
                            return Err(invalid_config(format!(
                                "config '{key}' is not a list: APPEND and SUBTRACT do not apply"
                            )));
                        }
                        let value = value.unwrap_or_default();
                        let given: Vec<&str> = value.split(',').map(str::trim).filter(|v| !v.is_empty()).collect();
                        let base = next.get(&key).cloned().or_else(|| effective(&key)).unwrap_or_default();
                        let mut items: Vec<String> = base
                            .split(',')
                            .map(str::trim)
                            .filter(|v| !v.is_empty())
                            .map(str::to_string)
                            .collect();
                        if op == OP_APPEND {
                            for g in given {
                                if !items.iter().any(|i| i == g) {
                                    items.push(g.to_string());
                                }
                            }
                        } else {
                            items.retain(|i| !given.contains(&i.as_str()));
                        }
                        let joined = items.join(",");
                        if !joined.is_empty() {
                            validate(&key, Some(&joined))?;
                        }
                        next.insert(key, joined);
                    }
                    other => return Err(invalid_request(format!("unknown config operation {other}"))),
                }
            }
            Ok(next)
        }
    }
}

/// Alters a topic's overrides; with `validate_only` checks and records nothing.
pub async fn alter_topic(shard: &Rc<Shard>, name: &str, change: Change, validate_only: bool) -> Result<(), AdminError> {
    let metadata = shard.metadata();
    let topic = existing_topic(&metadata, name)?;
    let values = topic_config::topic_values(shard.config(), &metadata, topic);
    let next = apply(&topic.configs, change, |key| values.get(key).cloned(), &topic_validate)?;
    if validate_only || next == topic.configs {
        return Ok(());
    }
    let change = shard.controller().alter_topic_configs(name, next.clone()).await?;
    admin::applied_everywhere(shard, change.revision).await?;
    tracing::info!(topic = name, configs = ?next, "altered topic configs");
    Ok(())
}

/// Alters the dynamic configs of a broker (`name` its id) or of every broker (`name`
/// empty). Only the broker keys that set topic defaults change at run time; the others
/// need a restart (INVALID_REQUEST, as Kafka answers for a static config).
pub async fn alter_broker(
    shard: &Rc<Shard>,
    name: &str,
    change: Change,
    validate_only: bool,
) -> Result<(), AdminError> {
    let entity = if name.is_empty() {
        CLUSTER_DEFAULT.to_string()
    } else {
        name.parse::<i32>()
            .map_err(|_| invalid_request(format!("'{name}' is not a broker id")))?
            .to_string()
    };
    let metadata = shard.metadata();
    let current = metadata.broker_configs.get(&entity).cloned().unwrap_or_default();
    let static_keys: Vec<&str> = static_broker_configs(shard.config())
        .into_iter()
        .map(|(k, ..)| k)
        .collect();
    let values = topic_config::values(shard.config(), &metadata, &BTreeMap::new());
    let validate = |key: &str, value: Option<&str>| match topic_config::topic_key_of(key) {
        Some(topic_key) => {
            if let Some(value) = value {
                topic_config::validate(topic_key, value).map_err(|m| invalid_config(m.replace(topic_key, key)))?;
            }
            Ok(topic_config::config_type(topic_key))
        }
        None if static_keys.contains(&key) => Err(invalid_request(format!(
            "cannot update config '{key}' dynamically: it changes with a restart"
        ))),
        None => Err(invalid_config(format!("unknown broker config '{key}'"))),
    };
    let next = apply(
        &current,
        change,
        |key| topic_config::topic_key_of(key).and_then(|t| values.get(t).cloned()),
        &validate,
    )?;
    if validate_only || next == current {
        return Ok(());
    }
    let change = shard
        .controller()
        .alter_entity_configs(sluice_controller::ConfigEntity::Broker, &entity, next.clone())
        .await?;
    admin::applied_everywhere(shard, change.revision).await?;
    tracing::info!(broker = %if entity.is_empty() { "<default>" } else { &entity }, configs = ?next, "altered dynamic broker configs");
    Ok(())
}

/// DescribeConfigs of a group (KIP-848/932 group configs): every key a group may set,
/// with the group's value or the broker's default.
pub fn describe_group(shard: &Shard, name: &str) -> Result<Vec<Described>, AdminError> {
    if name.is_empty() {
        return Err(invalid_request("a group resource needs a group id"));
    }
    let metadata = shard.metadata();
    Ok(
        crate::share::GroupSettings::described(shard.config(), name, metadata.group_configs.get(name))
            .into_iter()
            .map(|(key, value, set)| {
                let source = if set {
                    topic_config::SOURCE_GROUP
                } else {
                    SOURCE_DEFAULT
                };
                Described {
                    name: key.to_string(),
                    synonyms: vec![Synonym {
                        name: key.to_string(),
                        value: value.clone(),
                        source,
                    }],
                    value: Some(value),
                    read_only: false,
                    source,
                    kind: group_config_type(key),
                }
            })
            .collect(),
    )
}

fn group_config_type(key: &str) -> ConfigType {
    match key {
        "share.auto.offset.reset" | "share.isolation.level" | "errors.deadletterqueue.topic.name" => ConfigType::String,
        "errors.deadletterqueue.copy.record.enable" => ConfigType::Boolean,
        _ => ConfigType::Int,
    }
}

/// Alters a group's configs (IncrementalAlterConfigs or AlterConfigs on a GROUP
/// resource), validated as Kafka's GroupConfig does; they apply to the group at once.
pub async fn alter_group(shard: &Rc<Shard>, name: &str, change: Change, validate_only: bool) -> Result<(), AdminError> {
    if name.is_empty() {
        return Err(invalid_request("a group resource needs a group id"));
    }
    let metadata = shard.metadata();
    let current = metadata.group_configs.get(name).cloned().unwrap_or_default();
    let config = shard.config();
    let validate = |key: &str, value: Option<&str>| {
        if !crate::share::GROUP_KEYS.contains(&key) {
            return Err(invalid_config(format!("unknown group config '{key}'")));
        }
        if let Some(value) = value {
            crate::share::validate_group_config(config, key, value).map_err(invalid_config)?;
        }
        Ok(group_config_type(key))
    };
    let next = apply(&current, change, |_| None, &validate)?;
    if validate_only || next == current {
        return Ok(());
    }
    let change = shard
        .controller()
        .alter_entity_configs(sluice_controller::ConfigEntity::Group, name, next.clone())
        .await?;
    admin::applied_everywhere(shard, change.revision).await?;
    tracing::info!(group = name, configs = ?next, "altered group configs");
    Ok(())
}

/// A topic key (and value) check.
fn topic_validate(key: &str, value: Option<&str>) -> Result<ConfigType, AdminError> {
    if !topic_config::is_known(key) {
        return Err(invalid_config(format!("unknown topic config '{key}'")));
    }
    if let Some(value) = value {
        topic_config::validate(key, value).map_err(invalid_config)?;
    }
    Ok(topic_config::config_type(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incremental_operations_set_delete_append_and_subtract() {
        let current: BTreeMap<String, String> = [("retention.ms".to_string(), "1000".to_string())].into();
        let effective = |key: &str| (key == "cleanup.policy").then(|| "delete".to_string());
        let next = apply(
            &current,
            Change::Ops(vec![
                ("cleanup.policy".into(), OP_APPEND, Some("compact".into())),
                ("retention.ms".into(), OP_DELETE, None),
                ("segment.bytes".into(), OP_SET, Some("2048".into())),
            ]),
            effective,
            &topic_validate,
        )
        .unwrap();
        assert_eq!(next.get("cleanup.policy").map(String::as_str), Some("delete,compact"));
        assert_eq!(next.get("segment.bytes").map(String::as_str), Some("2048"));
        assert!(!next.contains_key("retention.ms"));
        let back = apply(
            &next,
            Change::Ops(vec![("cleanup.policy".into(), OP_SUBTRACT, Some("compact".into()))]),
            effective,
            &topic_validate,
        )
        .unwrap();
        assert_eq!(back.get("cleanup.policy").map(String::as_str), Some("delete"));
    }

    #[test]
    fn bad_changes_get_kafkas_error_codes() {
        let none = BTreeMap::new();
        let effective = |_: &str| None;
        let code = |change| apply(&none, change, effective, &topic_validate).unwrap_err().code;
        assert_eq!(
            code(Change::Ops(vec![("retention.ms".into(), OP_APPEND, Some("5".into()))])),
            ResponseError::InvalidConfig
        );
        assert_eq!(
            code(Change::Ops(vec![("retention.ms".into(), OP_SET, Some("soon".into()))])),
            ResponseError::InvalidConfig
        );
        assert_eq!(
            code(Change::Replace(vec![("no.such.config".into(), Some("1".into()))])),
            ResponseError::InvalidConfig
        );
        assert_eq!(
            code(Change::Replace(vec![("retention.ms".into(), None)])),
            ResponseError::InvalidRequest
        );
        assert_eq!(
            code(Change::Ops(vec![
                ("retention.ms".into(), OP_SET, Some("5".into())),
                ("retention.ms".into(), OP_DELETE, None),
            ])),
            ResponseError::InvalidRequest
        );
    }
}
