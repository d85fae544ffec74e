//! One broker's limits (issue 17): many partitions inside a small open-file limit, and
//! a full disk that an operator frees through Kafka's own APIs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use compat_tests::{Broker, Mount, RawClient};
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

fn admin(broker: &Broker) -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .create()
        .expect("admin client")
}

/// A consumer for assign() (rdkafka needs a group id even then; nothing is committed).
fn assigning_consumer(broker: &Broker) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .set("group.id", "limits")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer")
}

/// Descriptors the process holds now.
fn descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

fn answers_api_versions(broker: &Broker) -> bool {
    let mut client = RawClient::connect(&broker.addr);
    let answer: ApiVersionsResponse = client.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    answer.error_code == 0
}

/// 10 topics of 1,000 partitions under `ulimit -n 4096`: created, every partition
/// produced to and read back, the process never near its limit (idle partitions hold
/// no descriptor), and new connections answered throughout; then the same after a
/// restart, which opens all 10,000 logs again.
#[tokio::test(flavor = "multi_thread")]
async fn ten_thousand_partitions_fit_in_4096_descriptors() {
    const TOPICS: usize = 10;
    const PARTITIONS: i32 = 1000;
    const LIMIT: usize = 4096;
    let mut broker = Broker::start_under(&["prlimit", "--nofile=4096:4096"], &[]);
    let pid = broker.pid().expect("broker pid");
    let most = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (most, done) = (most.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                most.fetch_max(descriptors(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let names: Vec<String> = (0..TOPICS).map(|t| format!("many-{t}")).collect();
    let topics: Vec<NewTopic> = names
        .iter()
        .map(|name| NewTopic::new(name, PARTITIONS, TopicReplication::Fixed(1)))
        .collect();
    let results = admin(&broker)
        .create_topics(
            &topics,
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(60))),
        )
        .await
        .expect("create topics");
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
    assert!(
        answers_api_versions(&broker),
        "a new connection after creating the topics"
    );

    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .set("acks", "1")
        .set("linger.ms", "20")
        .create()
        .expect("producer");
    let value = |t: usize, p: i32| format!("many-{t}/{p}");
    for t in 0..TOPICS {
        let topic = format!("many-{t}");
        for p in 0..PARTITIONS {
            let payload = value(t, p);
            producer
                .send(BaseRecord::<(), _>::to(&topic).partition(p).payload(&payload))
                .expect("queue a message");
        }
        producer.poll(Duration::ZERO);
    }
    producer
        .flush(Duration::from_secs(120))
        .expect("every message acknowledged");
    assert!(answers_api_versions(&broker), "a new connection after producing");

    let read_back = |broker: &Broker| {
        let consumer = assigning_consumer(broker);
        let mut tpl = TopicPartitionList::new();
        for t in 0..TOPICS {
            for p in 0..PARTITIONS {
                tpl.add_partition_offset(&format!("many-{t}"), p, Offset::Beginning)
                    .expect("partition");
            }
        }
        consumer.assign(&tpl).expect("assign");
        let mut got: HashMap<(String, i32), String> = HashMap::new();
        let deadline = Instant::now() + Duration::from_secs(120);
        while got.len() < TOPICS * PARTITIONS as usize && Instant::now() < deadline {
            if let Some(m) = consumer.poll(Duration::from_millis(200)) {
                let m = m.expect("consume");
                let payload = String::from_utf8(m.payload().expect("payload").to_vec()).expect("utf8");
                got.insert((m.topic().to_string(), m.partition()), payload);
            }
        }
        got
    };
    let check = |got: &HashMap<(String, i32), String>| {
        assert_eq!(got.len(), TOPICS * PARTITIONS as usize, "every partition reads back");
        for ((topic, p), payload) in got {
            let t: usize = topic["many-".len()..].parse().expect("topic number");
            assert_eq!(payload, &value(t, *p), "{topic}/{p}");
        }
    };
    check(&read_back(&broker));
    let closed = broker.metric("sluice_storage_files_closed_total").unwrap_or(0.0);
    assert!(closed > 0.0, "idle files must have been closed to fit");

    broker.restart();
    check(&read_back(&broker));
    assert!(answers_api_versions(&broker), "a new connection after the restart");
    done.store(true, Ordering::Relaxed);
    sampler.join().expect("sampler");
    // The sampler watched the first run; the restarted process must stay inside too.
    let after = descriptors(broker.pid().expect("pid"));
    let most = most.load(Ordering::Relaxed);
    assert!(most < LIMIT - 256, "the broker held {most} descriptors of {LIMIT}");
    assert!(
        after < LIMIT - 256,
        "the restarted broker holds {after} descriptors of {LIMIT}"
    );
}

/// One delivery report: topic, payload, and the error if it failed.
type Report = (String, Vec<u8>, Option<RDKafkaErrorCode>);

/// Every delivery report.
#[derive(Default, Clone)]
struct Reports(Arc<Mutex<Vec<Report>>>);

impl ClientContext for Reports {}
impl ProducerContext for Reports {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let (message, error) = match result {
            Ok(m) => (m, None),
            Err((e, m)) => (m, Some(e.rdkafka_error_code().unwrap_or(RDKafkaErrorCode::Unknown))),
        };
        let report = (
            message.topic().to_string(),
            message.payload().unwrap_or_default().to_vec(),
            error,
        );
        self.0.lock().expect("reports").push(report);
    }
}

impl Reports {
    fn taken(&self) -> Vec<Report> {
        std::mem::take(&mut *self.0.lock().expect("reports"))
    }
}

/// Sends `payloads` to `topic` and waits for every report.
fn send_all(producer: &BaseProducer<Reports>, topic: &str, payloads: &[Vec<u8>]) {
    for payload in payloads {
        loop {
            match producer.send(BaseRecord::<(), _>::to(topic).payload(payload)) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    producer.poll(Duration::from_millis(10));
                }
                Err((e, _)) => panic!("send failed: {e}"),
            }
        }
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(60)).expect("every message reported");
}

/// Fills what is left of the filesystem at `dir` with a file (another tenant of the
/// disk), so that nothing has room; returns the file.
fn fill_up(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("ballast");
    let mut file = std::fs::File::create(&path).expect("ballast");
    let block = vec![0xbbu8; 64 << 10];
    while file.write_all(&block).is_ok() {}
    let _ = file.sync_all();
    path
}

/// The data directory on a 64 MiB tmpfs. One topic fills it (its producer gets
/// KAFKA_STORAGE_ERROR), someone else takes the last bytes, and a second topic's
/// partition then finds no room either: it refuses writes and the metrics say why.
/// DeleteTopics of the filler still works on the full disk (the metadata write uses
/// the space kept aside for it), the second partition takes writes again without a
/// restart, and after a restart every acknowledged record is there.
#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_is_freed_by_deleting_a_topic_and_writes_resume_without_a_restart() {
    let Some(disk) = Mount::new("tmpfs", Some("size=64m")) else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    };
    let mut broker = Broker::start_with_data_in(disk.path(), &[]);
    let admin = admin(&broker);
    let topics = [
        NewTopic::new("filler", 1, TopicReplication::Fixed(1)),
        NewTopic::new("keeper", 1, TopicReplication::Fixed(1)),
    ];
    let created = admin
        .create_topics(&topics, &AdminOptions::new())
        .await
        .expect("create");
    assert!(created.iter().all(|r| r.is_ok()), "{created:?}");
    let reports = Reports::default();
    let producer: BaseProducer<Reports> = ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("retries", "0")
        .set("message.timeout.ms", "20000")
        .create_with_context(reports.clone())
        .expect("producer");
    let small = |tag: &str, n: usize| -> Vec<Vec<u8>> { (0..n).map(|i| format!("{tag}-{i}").into_bytes()).collect() };
    let mut acked_keeper: Vec<Vec<u8>> = Vec::new();
    let mut sent_keeper: Vec<Vec<u8>> = Vec::new();
    let mut keep = |payloads: Vec<Vec<u8>>, producer: &BaseProducer<Reports>| -> usize {
        send_all(producer, "keeper", &payloads);
        sent_keeper.extend(payloads);
        let mut failed = 0;
        for (_, payload, error) in reports.taken() {
            match error {
                None => acked_keeper.push(payload),
                Some(code) => {
                    assert_eq!(code, RDKafkaErrorCode::KafkaStorageError);
                    failed += 1;
                }
            }
        }
        failed
    };
    assert_eq!(keep(small("before", 100), &producer), 0);

    let big: Vec<Vec<u8>> = (0..1000).map(|i| vec![b'a' + (i % 26) as u8; 100_000]).collect();
    send_all(&producer, "filler", &big);
    let filler = reports.taken();
    let refused = filler.iter().filter(|(_, _, e)| e.is_some()).count();
    assert!(refused > 0, "100 MB into a 64 MiB disk must fail");
    assert!(
        filler
            .iter()
            .all(|(_, _, e)| e.is_none_or(|c| c == RDKafkaErrorCode::KafkaStorageError)),
        "a full disk is KAFKA_STORAGE_ERROR"
    );
    let ballast = fill_up(disk.path());
    // More than the keeper's preallocated room: its write finds the disk full.
    let large: Vec<Vec<u8>> = (0..3).map(|i| vec![b'k' + i as u8; 900_000]).collect();
    assert!(keep(large, &producer) > 0, "the keeper must find the disk full");
    let refusing = "sluice_partition_refusing_writes{topic=\"keeper\",partition=\"0\",reason=\"disk_full\"}";
    assert_eq!(
        broker.metric(refusing),
        Some(1.0),
        "the metrics say which partition refuses and why"
    );

    let deleted = admin
        .delete_topics(&["filler"], &AdminOptions::new())
        .await
        .expect("delete topics");
    assert!(
        deleted.iter().all(|r| r.is_ok()),
        "DeleteTopics on a full disk: {deleted:?}"
    );
    assert!(
        broker.log().contains("used the space kept aside for metadata"),
        "{}",
        broker.log()
    );

    // The keeper takes writes again by itself once the filler's space is back.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut round = 0;
    while keep(small(&format!("retry{round}"), 1), &producer) > 0 {
        assert!(Instant::now() < deadline, "the keeper never took writes again");
        round += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        keep(small("after", 50), &producer),
        0,
        "writes resume without a restart"
    );
    assert_eq!(broker.metric(refusing), None);
    std::fs::remove_file(ballast).expect("ballast");

    broker.restart();
    let consumer = assigning_consumer(&broker);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("keeper", 0, Offset::Beginning)
        .expect("partition");
    consumer.assign(&tpl).expect("assign");
    let mut got: Vec<Vec<u8>> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !acked_keeper.iter().all(|a| got.contains(a)) && Instant::now() < deadline {
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            got.push(m.expect("consume").payload().expect("payload").to_vec());
        }
    }
    let lost = acked_keeper.iter().filter(|a| !got.contains(a)).count();
    assert_eq!(lost, 0, "acknowledged records lost across the full disk and a restart");
    assert!(got.iter().all(|g| sent_keeper.contains(g)), "a record nobody sent");
    let order: Vec<usize> = acked_keeper
        .iter()
        .map(|a| got.iter().position(|g| g == a).expect("read"))
        .collect();
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "acknowledged records out of order"
    );
}
