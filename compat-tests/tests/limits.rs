//! One broker's limits (issue 17): many partitions inside a small open-file limit, and
//! a full disk that an operator frees through Kafka's own APIs.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use compat_tests::{Broker, RawClient};
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

fn admin(broker: &Broker) -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .create()
        .expect("admin client")
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
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &broker.addr)
            .set("group.id", "many")
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer");
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
