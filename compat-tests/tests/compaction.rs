//! Compacted topics through librdkafka (the `rdkafka` crate): the cleaner keeps the
//! latest value of every key at the offset it was produced at, tombstoned keys vanish
//! after `delete.retention.ms`, a `kill -9` during cleaning loses nothing, and
//! `__consumer_offsets` stays small while every group's offsets survive a restart.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use compat_tests::{http_get, Broker};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

const TIMEOUT: Duration = Duration::from_secs(60);
const KEYS: usize = 1000;

async fn create_compacted(broker: &Broker, name: &str, extra: &[(&str, &str)]) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .create()
        .expect("admin");
    let mut topic = NewTopic::new(name, 1, TopicReplication::Fixed(1))
        .set("cleanup.policy", "compact")
        .set("segment.bytes", "100000")
        .set("min.cleanable.dirty.ratio", "0.01");
    for (k, v) in extra {
        topic = topic.set(k, v);
    }
    let results = admin
        .create_topics(&[topic], &AdminOptions::new())
        .await
        .expect("create");
    assert!(results[0].is_ok(), "{results:?}");
}

/// offset → (key, value; None for a tombstone).
type Records = BTreeMap<i64, (String, Option<String>)>;

/// Remembers the offset every acknowledged record landed at.
#[derive(Clone, Default)]
struct Acked(Arc<Mutex<Records>>);

impl ClientContext for Acked {}

impl ProducerContext for Acked {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let m = result.as_ref().expect("acknowledged");
        let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
        let value = m.payload().map(|v| String::from_utf8_lossy(v).into_owned());
        self.0.lock().unwrap().insert(m.offset(), (key, value));
    }
}

fn producer(broker: &Broker, acked: &Acked) -> BaseProducer<Acked> {
    ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .set("linger.ms", "5")
        .set("batch.size", "16384")
        .create_with_context(acked.clone())
        .expect("producer")
}

fn send(p: &BaseProducer<Acked>, topic: &str, key: &str, value: Option<&str>) {
    let mut record = BaseRecord::<str, str>::to(topic).partition(0).key(key);
    if let Some(v) = value {
        record = record.payload(v);
    }
    let mut record = Some(record);
    while let Some(r) = record.take() {
        if let Err((_, r)) = p.send(r) {
            p.poll(Duration::from_millis(10));
            record = Some(r);
        }
    }
    p.poll(Duration::ZERO);
}

/// 200,000 records over 1,000 keys, then tombstones for keys 0..100, then one record
/// that rolls a fresh segment; returns what every acknowledged offset holds.
fn feed(broker: &Broker, topic: &str) -> Records {
    let acked = Acked::default();
    let p = producer(broker, &acked);
    for i in 0..200_000 {
        send(&p, topic, &format!("key-{}", i % KEYS), Some(&format!("value-{i}")));
    }
    for k in 0..100 {
        send(&p, topic, &format!("key-{k}"), None);
    }
    p.flush(TIMEOUT).expect("flush");
    let all = acked.0.lock().unwrap().clone();
    assert_eq!(all.len(), 200_100);
    all
}

/// The latest acknowledged value of every key.
fn latest(acked: &Records) -> HashMap<String, (i64, Option<String>)> {
    let mut out = HashMap::new();
    for (offset, (key, value)) in acked {
        out.insert(key.clone(), (*offset, value.clone()));
    }
    out
}

/// Everything a consumer reads from the beginning: offset → (key, value).
fn read_all(broker: &Broker, topic: &str) -> Records {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .set("group.id", format!("reader-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning).expect("tpl");
    consumer.assign(&tpl).expect("assign");
    let (_, end) = consumer.fetch_watermarks(topic, 0, TIMEOUT).expect("watermarks");
    let mut seen = BTreeMap::new();
    let deadline = Instant::now() + TIMEOUT;
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
                let value = m.payload().map(|v| String::from_utf8_lossy(v).into_owned());
                seen.insert(m.offset(), (key, value));
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

fn metric(broker: &Broker, name: &str) -> f64 {
    let (_, body) = http_get(&broker.metrics_addr, "/metrics").expect("metrics");
    body.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// What a reader must see of a compacted log: every record is one that was produced at
/// that offset, every live key's latest value is there, and no key appears twice
/// among the cleaned segments (only the uncleaned tail may repeat a key).
fn check_compacted(seen: &Records, acked: &Records) {
    for (offset, record) in seen {
        assert_eq!(
            acked.get(offset),
            Some(record),
            "offset {offset} holds what was never produced there"
        );
    }
    for (key, (offset, value)) in latest(acked) {
        if value.is_some() {
            assert_eq!(
                seen.get(&offset).map(|r| &r.0),
                Some(&key),
                "the latest value of {key} is gone"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cleaner_keeps_one_latest_value_per_key_and_drops_deleted_keys() {
    let broker = Broker::start(&["--log-cleaner-backoff-ms", "200"]);
    create_compacted(&broker, "compacted", &[("delete.retention.ms", "2000")]).await;
    let acked = feed(&broker, "compacted");
    let before = broker.partition_log_bytes("compacted-0");
    // A record after a pause rolls the segment holding the tombstones.
    std::thread::sleep(Duration::from_millis(2500));
    let more = Acked::default();
    let p = producer(&broker, &more);
    // Enough to fill a segment, so the tombstones' segment is closed and cleanable.
    for i in 0..5000 {
        send(
            &p,
            "compacted",
            &format!("filler-{}", i % 10),
            Some(&format!("{i:0100}")),
        );
    }
    p.flush(TIMEOUT).expect("flush");
    let mut acked = acked;
    acked.extend(more.0.lock().unwrap().clone());
    let deadline = Instant::now() + TIMEOUT;
    let expected_keys = KEYS - 100;
    let seen = loop {
        let seen = read_all(&broker, "compacted");
        let live: std::collections::HashSet<&String> = seen
            .values()
            .filter(|(k, _)| k.starts_with("key-"))
            .map(|(k, _)| k)
            .collect();
        let with_key = seen.values().filter(|(k, _)| k.starts_with("key-")).count();
        if with_key == expected_keys && live.len() == expected_keys || Instant::now() > deadline {
            break seen;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    check_compacted(&seen, &acked);
    let keyed: Vec<&(String, Option<String>)> = seen.values().filter(|(k, _)| k.starts_with("key-")).collect();
    assert_eq!(keyed.len(), expected_keys, "one record per live key");
    assert!(
        keyed.iter().all(|(_, v)| v.is_some()),
        "a tombstone outlived delete.retention.ms"
    );
    for k in 0..100 {
        let key = format!("key-{k}");
        assert!(!keyed.iter().any(|(kk, _)| *kk == key), "deleted {key} is still there");
    }
    let after = broker.partition_log_bytes("compacted-0");
    assert!(after * 5 < before, "{after} bytes left of {before}");
    assert!(metric(&broker, "sluice_cleaner_runs_total") >= 1.0);
    assert!(metric(&broker, "sluice_cleaner_reclaimed_bytes_total") > 0.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kill_during_cleaning_loses_nothing() {
    // Throttled so that a pass takes seconds and the kill lands in one.
    let mut broker = Broker::start(&[
        "--log-cleaner-backoff-ms",
        "100",
        "--log-cleaner-io-max-bytes-per-second",
        "2000000",
    ]);
    create_compacted(&broker, "crashing", &[]).await;
    let acked = feed(&broker, "crashing");
    // Kill at a few points while the cleaner works; every restart must read back a
    // log that a compaction of what was acknowledged could give.
    for pause in [300u64, 1100, 1900] {
        std::thread::sleep(Duration::from_millis(pause));
        broker.kill9();
        broker.restart();
        let seen = read_all(&broker, "crashing");
        check_compacted(&seen, &acked);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn consumer_offsets_stay_small_and_every_group_keeps_its_offsets_across_a_restart() {
    let mut broker = Broker::start(&[
        "--offsets-topic-num-partitions",
        "1",
        "--offsets-topic-segment-bytes",
        "20000",
        "--log-cleaner-backoff-ms",
        "200",
    ]);
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .create()
        .expect("admin");
    let created = admin
        .create_topics(
            &[NewTopic::new("orders", 3, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await
        .expect("create");
    assert!(created[0].is_ok(), "{created:?}");
    let consumers: Vec<BaseConsumer> = (0..50)
        .map(|g| {
            ClientConfig::new()
                .set("bootstrap.servers", &broker.addr)
                .set("group.id", format!("group-{g}"))
                .create()
                .expect("consumer")
        })
        .collect();
    let mut written = 0u64;
    for round in 1..=100i64 {
        for (g, c) in consumers.iter().enumerate() {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset("orders", (g % 3) as i32, Offset::Offset(round * 10 + g as i64))
                .expect("tpl");
            c.commit(&tpl, CommitMode::Sync).expect("commit");
            written += 1;
        }
    }
    assert_eq!(written, 5000);
    drop(consumers);
    let deadline = Instant::now() + TIMEOUT;
    while metric(&broker, "sluice_cleaner_runs_total") < 1.0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    // Every commit is a record of some 100 bytes: half a megabyte uncompacted.
    let on_disk = broker.partition_log_bytes("__consumer_offsets-0");
    assert!(on_disk < 200_000, "__consumer_offsets holds {on_disk} bytes");
    broker.restart();
    for g in 0..50 {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &broker.addr)
            .set("group.id", format!("group-{g}"))
            .create()
            .expect("consumer");
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition("orders", g % 3);
        let committed = c.committed_offsets(tpl, TIMEOUT).expect("committed");
        let offset = committed.elements()[0].offset();
        assert_eq!(offset, Offset::Offset(1000 + g as i64), "group-{g}");
    }
}
