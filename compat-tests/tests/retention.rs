//! Retention by time and size, DeleteRecords, and the config APIs that change them at
//! run time, as users see them through librdkafka (the `rdkafka` crate), kafka-python
//! and confluent-kafka: the earliest offset rises, old segment files leave the data
//! directory, consumers behind the log start reset, and nothing newer than the limit
//! goes.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use compat_tests::Broker;
use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

const TIMEOUT: Duration = Duration::from_secs(30);

fn admin(broker: &Broker) -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .create()
        .expect("admin client")
}

async fn create_topic(broker: &Broker, name: &str, configs: &[(&str, &str)]) {
    let mut topic = NewTopic::new(name, 1, TopicReplication::Fixed(1));
    for (k, v) in configs {
        topic = topic.set(k, v);
    }
    let results = admin(broker)
        .create_topics(&[topic], &AdminOptions::new())
        .await
        .expect("create topics");
    assert!(results[0].is_ok(), "{results:?}");
}

fn producer(broker: &Broker) -> BaseProducer {
    ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .set("linger.ms", "0")
        // Small batches, so that segments of a few KB hold many of them.
        .set("batch.size", "2000")
        .create()
        .expect("producer")
}

/// Produces `count` records of `size` bytes and waits until each is acknowledged.
fn produce(producer: &BaseProducer, topic: &str, first: usize, count: usize, size: usize) {
    for i in first..first + count {
        let value = format!("{i:08}-{}", "x".repeat(size.saturating_sub(9)));
        producer
            .send(BaseRecord::<str, str>::to(topic).partition(0).payload(&value))
            .expect("send");
        producer.poll(Duration::ZERO);
    }
    producer.flush(TIMEOUT).expect("flush");
}

fn watermarks(broker: &Broker, topic: &str) -> (i64, i64) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .create()
        .expect("consumer");
    consumer.fetch_watermarks(topic, 0, TIMEOUT).expect("watermarks")
}

fn segment_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.ends_with(".log"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Waits until `check` holds, up to `limit`.
fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    check()
}

/// Reads every record from the earliest offset to the end, as a consumer with
/// `auto.offset.reset=earliest` in `group` does, committing as it goes.
fn consume_all(broker: &Broker, topic: &str, group: &str) -> Vec<(i64, String)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let end = watermarks(broker, topic).1;
    let mut seen = Vec::new();
    let deadline = Instant::now() + TIMEOUT;
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                let value = String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned();
                seen.push((m.offset(), value));
                consumer.commit_message(&m, CommitMode::Sync).expect("commit");
                if m.offset() + 1 >= end {
                    break;
                }
            }
            Some(Err(e)) => panic!("consume: {e}"),
            None => {}
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread")]
async fn time_retention_deletes_old_segments_and_a_live_config_change_takes_effect() {
    let broker = Broker::start(&["--log-retention-check-interval-ms", "300"]);
    // Two weeks by default: nothing goes until the topic's retention.ms is lowered.
    create_topic(&broker, "aging", &[("segment.ms", "300")]).await;
    let p = producer(&broker);
    for round in 0..5 {
        produce(&p, "aging", round * 20, 20, 200);
        std::thread::sleep(Duration::from_millis(350));
    }
    // A consumer that read the first 20 records and committed.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .set("group.id", "laggard")
        .create()
        .expect("consumer");
    let mut committed = TopicPartitionList::new();
    committed
        .add_partition_offset("aging", 0, Offset::Offset(20))
        .expect("offset");
    consumer.commit(&committed, CommitMode::Sync).expect("commit");
    drop(consumer);
    let dir = broker.data_dir().join("data").join("aging-0");
    let files_before = segment_files(&dir);
    assert!(
        files_before.len() >= 4,
        "segments rolled by segment.ms: {files_before:?}"
    );
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(
        watermarks(&broker, "aging"),
        (0, 100),
        "nothing expires under the default retention"
    );

    // The newest records are produced now and must survive a 3 s retention.
    std::thread::sleep(Duration::from_millis(3000));
    produce(&p, "aging", 100, 20, 200);
    let alter = AlterConfig::new(ResourceSpecifier::Topic("aging")).set("retention.ms", "3000");
    let results = admin(&broker)
        .alter_configs(&[alter], &AdminOptions::new())
        .await
        .expect("alter configs");
    assert!(results[0].is_ok(), "{results:?}");

    assert!(
        eventually(Duration::from_secs(10), || watermarks(&broker, "aging").0 >= 100),
        "the earliest offset never rose past the expired records: {:?}",
        watermarks(&broker, "aging")
    );
    let (low, high) = watermarks(&broker, "aging");
    assert_eq!(high, 120);
    assert!(
        low <= 100,
        "records newer than retention.ms were deleted (earliest {low})"
    );
    let files_after = segment_files(&dir);
    for gone in files_before.iter().take(3) {
        assert!(
            !files_after.contains(gone),
            "{gone} is still in the data dir: {files_after:?}"
        );
    }
    // The group's committed offset is below the log start: it resets to the earliest.
    let seen = consume_all(&broker, "aging", "laggard");
    assert_eq!(seen.first().map(|s| s.0), Some(low));
    assert_eq!(seen.last().map(|s| s.0), Some(119));
    for (offset, value) in &seen {
        assert!(
            value.starts_with(&format!("{offset:08}-")),
            "offset {offset} holds {value}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn size_retention_keeps_a_partition_near_its_limit_and_delete_records_moves_the_start() {
    let broker = Broker::start(&["--log-retention-check-interval-ms", "200"]);
    create_topic(
        &broker,
        "bounded",
        &[("segment.bytes", "20000"), ("retention.bytes", "60000")],
    )
    .await;
    let p = producer(&broker);
    produce(&p, "bounded", 0, 1000, 500);
    let size = || broker.partition_log_bytes("bounded-0");
    // Kafka's rule: a segment goes while the partition stays at or over the limit
    // without it, so the partition ends within one segment above it.
    assert!(
        eventually(Duration::from_secs(10), || size() < 60_000 + 20_000),
        "the partition holds {} bytes",
        size()
    );
    assert!(size() >= 60_000);
    let (low, high) = watermarks(&broker, "bounded");
    assert!(low > 0 && high == 1000, "{low}..{high}");

    // DeleteRecords: the earliest offset moves; a compact-only topic refuses it.
    let mut offsets = TopicPartitionList::new();
    offsets
        .add_partition_offset("bounded", 0, Offset::Offset(990))
        .expect("tpl");
    let deleted = admin(&broker)
        .delete_records(&offsets, &AdminOptions::new())
        .await
        .expect("delete records");
    assert_eq!(deleted.elements()[0].offset(), Offset::Offset(990));
    assert_eq!(watermarks(&broker, "bounded"), (990, 1000));
    create_topic(&broker, "keyed", &[("cleanup.policy", "compact")]).await;
    let mut offsets = TopicPartitionList::new();
    offsets
        .add_partition_offset("keyed", 0, Offset::Offset(0))
        .expect("tpl");
    let refused = admin(&broker)
        .delete_records(&offsets, &AdminOptions::new())
        .await
        .expect("delete records");
    assert_eq!(
        refused.elements()[0].error(),
        Err(rdkafka::error::KafkaError::OffsetFetch(
            rdkafka::types::RDKafkaErrorCode::PolicyViolation
        )),
        "{refused:?}"
    );
}

#[test]
fn python_admin_clients_describe_and_alter_configs_and_delete_records() {
    let broker = Broker::start(&[]);
    let p = producer(&broker);
    produce(&p, "configured", 0, 20, 50);
    let out = Command::new("python3")
        .args([
            concat!(env!("CARGO_MANIFEST_DIR"), "/python/configs_admin.py"),
            &broker.addr,
            "configured",
        ])
        .output()
        .expect("python3 runs (see .ci/run)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let config = |step: &str, key: &str| (v[step][key]["value"].clone(), v[step][key]["source"].clone());
    // DEFAULT_CONFIG (5): Sluice's two-week default, as the broker reports it too.
    assert_eq!(config("before", "retention.ms"), ("1209600000".into(), 5.into()));
    assert_eq!(config("before", "cleanup.policy"), ("delete".into(), 5.into()));
    assert_eq!(config("broker", "log.retention.ms"), ("1209600000".into(), 5.into()));
    assert_eq!(v["broker"]["num.partitions"]["read_only"], true);
    assert_eq!(v["incremental"], "NO_ERROR");
    // DYNAMIC_TOPIC_CONFIG (1) after the change; APPEND added to the list.
    assert_eq!(
        config("after_incremental", "retention.ms"),
        ("86400000".into(), 1.into())
    );
    assert_eq!(
        config("after_incremental", "cleanup.policy"),
        ("delete,compact".into(), 1.into())
    );
    assert_eq!(
        v["after_incremental"]["retention.ms"]["synonyms"],
        serde_json::json!(["retention.ms", "log.retention.ms"])
    );
    assert_eq!(v["bad_value"], "INVALID_CONFIG");
    assert_eq!(v["unknown_topic"], "UNKNOWN_TOPIC_OR_PART");
    assert_eq!(v["static_broker"], "INVALID_REQUEST");
    assert_eq!(v["dynamic_broker"], "NO_ERROR");
    // DYNAMIC_BROKER_CONFIG (2).
    assert_eq!(
        config("broker_after", "log.retention.bytes"),
        ("1000000000".into(), 2.into())
    );
    assert_eq!(v["kafka_python_after_alter"]["retention.ms"]["value"], "3600000");
    assert_eq!(
        v["kafka_python_after_alter"]["retention.bytes"]["source"],
        "DYNAMIC_BROKER_CONFIG"
    );
    // DescribeLogDirs: the partition's bytes on disk.
    let on_disk = broker.partition_log_bytes("configured-0");
    assert_eq!(v["log_dir_sizes"]["configured-0"], on_disk);
    assert_eq!(v["low_watermark"], 5);
    assert_eq!(v["delete_past_end"], "OFFSET_OUT_OF_RANGE");
    assert_eq!(watermarks(&broker, "configured"), (5, 20));
    // Every change survives a restart.
    let mut broker = broker;
    broker.restart();
    assert_eq!(watermarks(&broker, "configured"), (5, 20));
    let seen = consume_all(&broker, "configured", "after-restart");
    assert_eq!(seen.first().map(|s| s.0), Some(5));
}

/// A topic's `compression.type` other than `producer`: the broker recompresses each
/// batch to it (librdkafka sends these uncompressed), and consumers read the same
/// records back.
#[tokio::test(flavor = "multi_thread")]
async fn a_topics_compression_type_recompresses_what_producers_send() {
    let broker = Broker::start(&[]);
    create_topic(&broker, "squeezed", &[("compression.type", "lz4")]).await;
    let p = producer(&broker);
    produce(&p, "squeezed", 0, 50, 300);
    let dir = broker.data_dir().join("data").join("squeezed-0");
    let file = std::fs::read(dir.join(&segment_files(&dir)[0])).expect("segment");
    let segment = compat_tests::log_bytes(&file);
    let (mut pos, mut batches) = (0usize, 0);
    while pos + 61 <= segment.len() {
        let length = i32::from_be_bytes(segment[pos + 8..pos + 12].try_into().unwrap()) as usize;
        let attributes = i16::from_be_bytes(segment[pos + 21..pos + 23].try_into().unwrap());
        assert_eq!(attributes & 0x07, 3, "batch {batches} is not LZ4 on disk");
        pos += 12 + length;
        batches += 1;
    }
    assert!(batches > 0);
    let seen = consume_all(&broker, "squeezed", "reader");
    assert_eq!(seen.len(), 50);
    for (offset, value) in &seen {
        assert!(
            value.starts_with(&format!("{offset:08}-")),
            "offset {offset} holds {value}"
        );
    }
}
