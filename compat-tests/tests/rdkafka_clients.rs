//! librdkafka (through the `rdkafka` crate) producing to and consuming from the real
//! broker: every message back exactly, in order per partition, every key in one
//! partition, for each compression codec, and across a `kill -9`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use compat_tests::{create_topic, Broker};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

const PARTITIONS: i32 = 6;

/// Counts delivery failures so a test can assert none happened.
#[derive(Default, Clone)]
struct Deliveries {
    failed: Arc<AtomicUsize>,
}
impl ClientContext for Deliveries {}
impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            eprintln!("delivery failed: {e}");
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn admin(broker: &Broker) -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .create()
        .expect("admin client")
}

/// Produces `count` keyed messages with acks=all; keys cycle through 1000 values and each
/// value is `key/sequence-of-that-key`, so order per key can be checked on the way back.
fn produce_keyed(broker: &Broker, topic: &str, count: usize, codec: &str) -> HashMap<String, Vec<String>> {
    produce_keyed_with(broker, topic, count, codec, &[])
}

fn produce_keyed_with(
    broker: &Broker,
    topic: &str,
    count: usize,
    codec: &str,
    extra: &[(&str, &str)],
) -> HashMap<String, Vec<String>> {
    let context = Deliveries::default();
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &broker.addr)
        .set("acks", "all")
        .set("compression.type", codec)
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "200000");
    for (k, v) in extra {
        config.set(*k, *v);
    }
    let producer: BaseProducer<Deliveries> = config.create_with_context(context.clone()).expect("producer");
    let mut sent: HashMap<String, Vec<String>> = HashMap::new();
    for i in 0..count {
        let key = format!("key-{}", i % 1000);
        let seq = sent.get(&key).map_or(0, Vec::len);
        let value = format!("{key}/{seq}/{}", "x".repeat(i % 50));
        loop {
            match producer.send(BaseRecord::to(topic).key(&key).payload(&value)) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    producer.poll(Duration::from_millis(10));
                }
                Err((e, _)) => panic!("send failed: {e}"),
            }
        }
        sent.entry(key).or_default().push(value);
        if i % 1000 == 0 {
            producer.poll(Duration::ZERO);
        }
    }
    producer.flush(Duration::from_secs(120)).expect("flush");
    assert_eq!(
        context.failed.load(Ordering::Relaxed),
        0,
        "every message must be acknowledged"
    );
    sent
}

/// Reads every partition from the beginning until `expected` messages arrived.
fn consume_all(broker: &Broker, topic: &str, expected: usize) -> Vec<(i32, i64, String, String)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .set("enable.partition.eof", "false")
        // rdkafka requires a group id even for assign(); nothing is committed.
        .set("group.id", "compat-tests")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .expect("partition");
    }
    consumer.assign(&tpl).expect("assign");
    let mut got = Vec::with_capacity(expected);
    let deadline = Instant::now() + Duration::from_secs(120);
    while got.len() < expected && Instant::now() < deadline {
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            let m = m.expect("consume");
            let key = String::from_utf8(m.key().expect("key").to_vec()).expect("utf8");
            let value = String::from_utf8(m.payload().expect("value").to_vec()).expect("utf8");
            got.push((m.partition(), m.offset(), key, value));
        }
    }
    // Nothing more than what was produced may arrive.
    if let Some(extra) = consumer.poll(Duration::from_millis(500)) {
        panic!("unexpected extra message: {:?}", extra.map(|m| m.offset()));
    }
    got
}

/// Every message back exactly once; per key, in production order and in one partition;
/// offsets per partition dense from 0.
fn assert_round_trip(sent: &HashMap<String, Vec<String>>, got: &[(i32, i64, String, String)]) {
    let total: usize = sent.values().map(Vec::len).sum();
    assert_eq!(got.len(), total, "consumed count");
    let mut by_key: HashMap<&str, Vec<&str>> = HashMap::new();
    let mut partition_of: HashMap<&str, i32> = HashMap::new();
    let mut next_offset: HashMap<i32, i64> = HashMap::new();
    for (partition, offset, key, value) in got {
        let expected_offset = next_offset.entry(*partition).or_insert(0);
        assert_eq!(
            offset, expected_offset,
            "offsets of partition {partition} must be dense and ordered"
        );
        *expected_offset += 1;
        let first = *partition_of.entry(key).or_insert(*partition);
        assert_eq!(first, *partition, "key {key} appeared in two partitions");
        by_key.entry(key).or_default().push(value);
    }
    for (key, values) in sent {
        let got: Vec<&str> = by_key.get(key.as_str()).cloned().unwrap_or_default();
        let want: Vec<&str> = values.iter().map(String::as_str).collect();
        assert_eq!(got, want, "messages of {key}");
    }
}

async fn round_trip_with(codec: &str) {
    let broker = Broker::start(&[]);
    let topic = format!("keyed-{codec}");
    create_topic(&broker, &topic, PARTITIONS).await;
    let sent = produce_keyed(&broker, &topic, 100_000, codec);
    let got = consume_all(&broker, &topic, 100_000);
    assert_round_trip(&sent, &got);
}

#[tokio::test]
async fn keyed_messages_round_trip_uncompressed() {
    round_trip_with("none").await;
}

#[tokio::test]
async fn keyed_messages_round_trip_gzip() {
    round_trip_with("gzip").await;
}

#[tokio::test]
async fn keyed_messages_round_trip_snappy() {
    round_trip_with("snappy").await;
}

#[tokio::test]
async fn keyed_messages_round_trip_lz4() {
    round_trip_with("lz4").await;
}

#[tokio::test]
async fn keyed_messages_round_trip_zstd() {
    round_trip_with("zstd").await;
}

#[tokio::test]
async fn idempotent_producer_round_trip() {
    let broker = Broker::start(&[]);
    create_topic(&broker, "idempotent", PARTITIONS).await;
    let sent = produce_keyed_with(
        &broker,
        "idempotent",
        20_000,
        "snappy",
        &[("enable.idempotence", "true")],
    );
    let got = consume_all(&broker, "idempotent", 20_000);
    assert_round_trip(&sent, &got);
}

#[tokio::test]
async fn acknowledged_messages_survive_kill_9() {
    survives_kill_9(&[]).await;
}

/// The same on the portable engine, so CI covers both storage engines.
#[tokio::test]
async fn acknowledged_messages_survive_kill_9_on_pwrite() {
    survives_kill_9(&["--io-engine", "pwrite"]).await;
}

/// Buffered log files (`--io-direct=false`) keep the same promise as direct I/O.
#[tokio::test]
async fn acknowledged_messages_survive_kill_9_with_buffered_io() {
    survives_kill_9(&["--io-direct=false"]).await;
}

/// A series of the broker's scrape, which must be there.
fn metric(broker: &Broker, series: &str) -> f64 {
    broker
        .metric(series)
        .unwrap_or_else(|| panic!("no {series} in the scrape"))
}

/// A data directory whose filesystem refuses O_DIRECT: the broker says so at start-up,
/// reports buffered mode, and keeps every acknowledged message over a kill -9.
#[tokio::test]
async fn log_files_fall_back_to_buffered_io_where_o_direct_is_refused() {
    // Since Linux 6.6 tmpfs takes O_DIRECT, so ramfs is the filesystem that shows the
    // fallback.
    let Some(ramfs) = compat_tests::Mount::new("ramfs", None) else {
        eprintln!("skipped: cannot mount a ramfs here (needs root)");
        return;
    };
    let mut broker = Broker::start_with_data_in(ramfs.path(), &[]);
    assert!(
        broker
            .log()
            .contains("the data directory's filesystem refuses O_DIRECT"),
        "the fallback must be logged:\n{}",
        broker.log()
    );
    assert_eq!(metric(&broker, "sluice_storage_io_mode{mode=\"buffered\"}"), 1.0);
    create_topic(&broker, "on-ramfs", PARTITIONS).await;
    let sent = produce_keyed(&broker, "on-ramfs", 20_000, "lz4");
    broker.kill9();
    broker.restart();
    let got = consume_all(&broker, "on-ramfs", 20_000);
    assert_round_trip(&sent, &got);
    drop(broker);
}

/// Direct I/O: a consumer reading what was just produced is answered from memory (the
/// chunk cache and the write-behind tail: not one byte read from the disk); restarted
/// with a cache too small to hold a read, reading the whole topic again comes from the
/// disk with O_DIRECT reads. Both reads return exactly what was produced.
#[tokio::test]
async fn direct_io_serves_the_tail_from_memory_and_the_backlog_from_disk() {
    let mut broker = Broker::start(&[]);
    if !compat_tests::direct_io_available(broker.data_dir()) {
        eprintln!("skipped: the test's data directory refuses O_DIRECT");
        return;
    }
    assert_eq!(metric(&broker, "sluice_storage_io_mode{mode=\"direct\"}"), 1.0);
    create_topic(&broker, "cached", PARTITIONS).await;
    let sent = produce_keyed(&broker, "cached", 40_000, "none");
    let got = consume_all(&broker, "cached", 40_000);
    assert_round_trip(&sent, &got);
    assert!(metric(&broker, "sluice_storage_log_cache_hits_total") > 0.0);
    assert_eq!(
        metric(&broker, "sluice_storage_direct_read_bytes_total"),
        0.0,
        "the tail came from memory"
    );
    assert!(broker.stop(), "SIGTERM must exit cleanly; log:\n{}", broker.log());
    broker.restart_with(&["--log-cache-bytes", "65536"]);
    let before = metric(&broker, "sluice_storage_direct_read_bytes_total");
    let again = consume_all(&broker, "cached", 40_000);
    assert_round_trip(&sent, &again);
    assert!(
        metric(&broker, "sluice_storage_direct_read_bytes_total") > before,
        "the backlog came from the disk"
    );
    assert!(
        metric(&broker, "sluice_storage_log_cache_bytes") <= 65536.0,
        "the cache keeps to --log-cache-bytes"
    );
    // A clean stop leaves no block padding in any segment file.
    assert!(broker.stop());
    for p in 0..PARTITIONS {
        let dir = broker.data_dir().join("data").join(format!("cached-{p}"));
        for entry in std::fs::read_dir(&dir).expect("partition dir") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "log") {
                let bytes = std::fs::read(&path).expect("segment");
                assert_eq!(
                    compat_tests::log_bytes(&bytes).len(),
                    bytes.len(),
                    "{} is padded",
                    path.display()
                );
            }
        }
    }
}

/// `queued.max.request.bytes` far smaller than what four producers send at once (and
/// smaller than one of their requests): they wait for the budget in turn, nothing
/// fails, and every message reads back. The budget is back to zero afterwards.
#[tokio::test]
async fn a_small_request_budget_makes_producers_wait_and_loses_nothing() {
    let broker = Broker::start(&["--queued-max-request-bytes", "262144"]);
    for t in 0..4 {
        create_topic(&broker, &format!("budget-{t}"), PARTITIONS).await;
    }
    let sent: Vec<HashMap<String, Vec<String>>> = std::thread::scope(|s| {
        let producers: Vec<_> = (0..4)
            .map(|t| {
                let broker = &broker;
                s.spawn(move || {
                    produce_keyed_with(
                        broker,
                        &format!("budget-{t}"),
                        30_000,
                        "none",
                        &[("linger.ms", "50"), ("batch.size", "1000000")],
                    )
                })
            })
            .collect();
        producers.into_iter().map(|p| p.join().expect("producer")).collect()
    });
    for (t, sent) in sent.iter().enumerate() {
        let got = consume_all(&broker, &format!("budget-{t}"), 30_000);
        assert_round_trip(sent, &got);
    }
    // Once the clients are gone (a consumer's last long poll may still be waiting out
    // its fetch.wait.max.ms), the whole budget is free again.
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&broker, "sluice_requests_queued_bytes") != 0.0 {
        assert!(Instant::now() < deadline, "request bytes stayed taken");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// acks=1 answers come after the write round, not the append: a killed process must
/// not lose them either (only a machine crash may, as with Kafka).
#[tokio::test]
async fn acks_1_messages_survive_kill_9() {
    let mut broker = Broker::start(&[]);
    create_topic(&broker, "written", PARTITIONS).await;
    let sent = produce_keyed_with(&broker, "written", 50_000, "none", &[("acks", "1")]);
    broker.kill9();
    broker.restart();
    let got = consume_all(&broker, "written", 50_000);
    assert_round_trip(&sent, &got);
}

async fn survives_kill_9(flags: &[&str]) {
    let mut broker = Broker::start(flags);
    let direct = !flags.contains(&"--io-direct=false") && compat_tests::direct_io_available(broker.data_dir());
    assert_eq!(
        broker.log().contains("log files: direct I/O"),
        direct,
        "the I/O mode this test is about:\n{}",
        broker.log()
    );
    create_topic(&broker, "durable", PARTITIONS).await;
    let sent = produce_keyed(&broker, "durable", 100_000, "lz4");
    broker.kill9();
    broker.restart();
    let got = consume_all(&broker, "durable", 100_000);
    assert_round_trip(&sent, &got);
    // And the log keeps going where it stopped: new offsets follow the recovered ones.
    let more = produce_keyed(&broker, "durable", 600, "none");
    assert_eq!(more.values().map(Vec::len).sum::<usize>(), 600);
    let all = consume_all(&broker, "durable", 100_600);
    assert_eq!(all.len(), 100_600);
}

/// A clean stop leaves each partition a record of where its log ends, so the next
/// start reads no log to find out; that start takes the records away, so a kill -9
/// later is recovered by a scan as ever, and every acknowledged message is there.
#[tokio::test]
async fn a_clean_restart_skips_the_scan_and_a_later_kill_9_still_recovers() {
    let mut broker = Broker::start(&[]);
    create_topic(&broker, "restarted", PARTITIONS).await;
    let mut sent = produce_keyed(&broker, "restarted", 30_000, "lz4");
    let records = |broker: &Broker| {
        (0..PARTITIONS)
            .filter(|p| {
                let dir = broker.data_dir().join("data").join(format!("restarted-{p}"));
                dir.join("clean-shutdown").exists()
            })
            .count()
    };
    assert!(broker.stop(), "SIGTERM must exit cleanly; log:\n{}", broker.log());
    assert_eq!(
        records(&broker),
        PARTITIONS as usize,
        "every partition recorded its end"
    );
    broker.restart();
    assert_eq!(records(&broker), 0, "the start took the records");
    assert!(!broker.log().contains("truncating"), "{}", broker.log());
    assert_round_trip(&sent, &consume_all(&broker, "restarted", 30_000));
    for (key, values) in produce_keyed(&broker, "restarted", 600, "none") {
        sent.entry(key).or_default().extend(values);
    }
    broker.kill9();
    broker.restart();
    assert_round_trip(&sent, &consume_all(&broker, "restarted", 30_600));
}

#[tokio::test]
async fn auto_created_topic_round_trip_and_clean_shutdown() {
    let mut broker = Broker::start(&["--num-partitions", "3"]);
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .create()
        .expect("producer");
    for i in 0..10 {
        producer
            .send(BaseRecord::to("auto").key("k").payload(&format!("v{i}")))
            .expect("send");
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
    let metadata = producer
        .client()
        .fetch_metadata(Some("auto"), Duration::from_secs(10))
        .expect("metadata");
    assert_eq!(
        metadata.topics()[0].partitions().len(),
        3,
        "--num-partitions applies to auto-created topics"
    );
    drop(producer);
    assert!(broker.stop(), "SIGTERM must exit cleanly; log:\n{}", broker.log());
}

#[tokio::test]
async fn admin_creates_and_deletes_topics_with_kafka_errors() {
    let broker = Broker::start(&[]);
    let admin = admin(&broker);
    let opts = AdminOptions::new();
    let results = admin
        .create_topics(
            &[
                NewTopic::new("orders", 4, TopicReplication::Fixed(1)).set("message.timestamp.type", "LogAppendTime"),
                NewTopic::new("bad/name", 1, TopicReplication::Fixed(1)),
                NewTopic::new("replicated", 1, TopicReplication::Fixed(3)),
                NewTopic::new("badconfig", 1, TopicReplication::Fixed(1)).set("no.such.config", "1"),
            ],
            &opts,
        )
        .await
        .expect("create");
    assert!(results[0].is_ok());
    assert_eq!(results[1].as_ref().unwrap_err().1, RDKafkaErrorCode::InvalidTopic);
    assert_eq!(
        results[2].as_ref().unwrap_err().1,
        RDKafkaErrorCode::InvalidReplicationFactor
    );
    assert_eq!(results[3].as_ref().unwrap_err().1, RDKafkaErrorCode::InvalidConfig);
    let again = admin
        .create_topics(&[NewTopic::new("orders", 4, TopicReplication::Fixed(1))], &opts)
        .await
        .expect("create");
    assert_eq!(again[0].as_ref().unwrap_err().1, RDKafkaErrorCode::TopicAlreadyExists);
    let dir_of = |p: i32| broker.data_dir().join("data").join(format!("orders-{p}"));
    assert!(dir_of(3).is_dir(), "partition directories exist");
    let deleted = admin
        .delete_topics(&["orders", "missing"], &opts)
        .await
        .expect("delete");
    assert!(deleted[0].is_ok());
    assert_eq!(
        deleted[1].as_ref().unwrap_err().1,
        RDKafkaErrorCode::UnknownTopicOrPartition
    );
    for p in 0..4 {
        assert!(!dir_of(p).exists(), "partition {p} data must be removed from disk");
    }
}

#[tokio::test]
async fn watermarks_and_offsets_for_times() {
    let broker = Broker::start(&[]);
    create_topic(&broker, "times", 1).await;
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .set("linger.ms", "0")
        .create()
        .expect("producer");
    for i in 0..5i64 {
        producer
            .send(
                BaseRecord::to("times")
                    .key("k")
                    .payload("v")
                    .timestamp(1_000_000 + i * 1000),
            )
            .expect("send");
        producer.flush(Duration::from_secs(10)).expect("flush");
    }
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .create()
        .expect("consumer");
    let (low, high) = consumer
        .fetch_watermarks("times", 0, Duration::from_secs(10))
        .expect("watermarks");
    assert_eq!((low, high), (0, 5));
    let mut query = TopicPartitionList::new();
    query
        .add_partition_offset("times", 0, Offset::Offset(1_002_500))
        .expect("tpl");
    let found = consumer
        .offsets_for_times(query, Duration::from_secs(10))
        .expect("offsets for times");
    assert_eq!(
        found.elements()[0].offset(),
        Offset::Offset(3),
        "first message at or after the time"
    );
    let mut late = TopicPartitionList::new();
    late.add_partition_offset("times", 0, Offset::Offset(9_000_000))
        .expect("tpl");
    let found = consumer
        .offsets_for_times(late, Duration::from_secs(10))
        .expect("offsets for times");
    assert_eq!(found.elements()[0].offset(), Offset::End, "no message that late");
}

#[tokio::test]
async fn admin_adds_partitions_but_never_removes_them() {
    use rdkafka::admin::NewPartitions;
    let broker = Broker::start(&[]);
    create_topic(&broker, "growing", 2).await;
    let admin = admin(&broker);
    let opts = AdminOptions::new();
    let r = admin
        .create_partitions(&[NewPartitions::new("growing", 5)], &opts)
        .await
        .expect("create partitions");
    assert!(r[0].is_ok(), "{r:?}");
    let r = admin
        .create_partitions(&[NewPartitions::new("growing", 3)], &opts)
        .await
        .expect("create partitions");
    assert_eq!(r[0].as_ref().unwrap_err().1, RDKafkaErrorCode::InvalidPartitions);
    let r = admin
        .create_partitions(&[NewPartitions::new("missing", 3)], &opts)
        .await
        .expect("create partitions");
    assert_eq!(r[0].as_ref().unwrap_err().1, RDKafkaErrorCode::UnknownTopicOrPartition);
    // The new partitions take writes at once.
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .create()
        .expect("producer");
    producer
        .send(BaseRecord::to("growing").partition(4).key("k").payload("v"))
        .expect("send");
    producer.flush(Duration::from_secs(10)).expect("flush");
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .create()
        .expect("consumer");
    let (low, high) = consumer
        .fetch_watermarks("growing", 4, Duration::from_secs(10))
        .expect("watermarks");
    assert_eq!((low, high), (0, 1));
}
