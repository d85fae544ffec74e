//! Consumer groups as librdkafka consumers use them: partitions split inside a group,
//! every group gets every message, commits survive a broker crash, rebalances when a
//! member leaves or dies, cooperative-sticky and static membership.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use compat_tests::{create_topic, Broker};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

/// Groups start rebalancing 500 ms after their first member arrives (Kafka: 3 s), so a
/// test's consumers land in one generation without slowing the suite.
const BROKER_FLAGS: &[&str] = &["--group-initial-rebalance-delay-ms", "500"];

fn produce(broker: &Broker, topic: &str, from: usize, count: usize) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    for i in from..from + count {
        let key = format!("k{i}");
        let value = format!("v{i}");
        producer
            .send(BaseRecord::to(topic).key(&key).payload(&value))
            .expect("send");
        if i % 500 == 0 {
            producer.poll(Duration::ZERO);
        }
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
}

/// Counts the rebalances a consumer goes through.
#[derive(Clone, Default)]
struct Rebalances(Arc<AtomicUsize>);
impl ClientContext for Rebalances {}
impl ConsumerContext for Rebalances {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if matches!(rebalance, Rebalance::Assign(_)) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}

fn consumer(broker: &Broker, group: &str, extra: &[(&str, &str)]) -> BaseConsumer<Rebalances> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &broker.addr)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        .set("enable.auto.commit", "false");
    for (k, v) in extra {
        config.set(*k, *v);
    }
    config.create_with_context(Rebalances::default()).expect("consumer")
}

fn assigned(c: &BaseConsumer<Rebalances>) -> BTreeSet<i32> {
    c.assignment()
        .map(|a| a.elements().iter().map(|e| e.partition()).collect())
        .unwrap_or_default()
}

/// Polls every consumer until `done` holds for their assignments, or panics.
fn poll_until(consumers: &[&BaseConsumer<Rebalances>], what: &str, done: impl Fn(&[BTreeSet<i32>]) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        for c in consumers {
            // Messages read while waiting are not the point here; offsets stay uncommitted.
            let _ = c.poll(Duration::from_millis(50));
        }
        let now: Vec<BTreeSet<i32>> = consumers.iter().map(|c| assigned(c)).collect();
        if done(&now) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: assignments are {now:?}");
    }
}

/// Reads from every consumer until `count` messages arrived; returns (consumer, partition, offset).
fn drain(consumers: &[&BaseConsumer<Rebalances>], count: usize) -> Vec<(usize, i32, i64)> {
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while got.len() < count && Instant::now() < deadline {
        for (i, c) in consumers.iter().enumerate() {
            if let Some(Ok(m)) = c.poll(Duration::from_millis(20)) {
                got.push((i, m.partition(), m.offset()));
            }
        }
    }
    got
}

fn split_evenly(sets: &[BTreeSet<i32>], partitions: usize) -> bool {
    let per = partitions / sets.len();
    let all: BTreeSet<i32> = sets.iter().flatten().copied().collect();
    sets.iter().all(|s| s.len() == per) && all.len() == partitions
}

#[tokio::test]
async fn a_group_splits_partitions_and_consumes_each_message_once() {
    let broker = Broker::start(BROKER_FLAGS);
    create_topic(&broker, "work", 6).await;
    let members: Vec<_> = (0..3).map(|_| consumer(&broker, "workers", &[])).collect();
    for m in &members {
        m.subscribe(&["work"]).expect("subscribe");
    }
    let refs: Vec<&BaseConsumer<Rebalances>> = members.iter().collect();
    poll_until(&refs, "3 members of 6 partitions", |a| split_evenly(a, 6));
    produce(&broker, "work", 0, 3000);
    let got = drain(&refs, 3000);
    assert_eq!(got.len(), 3000);
    let unique: BTreeSet<(i32, i64)> = got.iter().map(|(_, p, o)| (*p, *o)).collect();
    assert_eq!(unique.len(), 3000, "every message exactly once inside the group");
    for (i, p, _) in &got {
        assert!(
            assigned(&members[*i]).contains(p),
            "consumer {i} read partition {p} it does not own"
        );
    }
}

#[tokio::test]
async fn partitions_move_when_a_member_leaves_or_dies() {
    let broker = Broker::start(BROKER_FLAGS);
    create_topic(&broker, "moving", 6).await;
    let a = consumer(&broker, "movers", &[]);
    let b = consumer(&broker, "movers", &[]);
    a.subscribe(&["moving"]).expect("subscribe");
    b.subscribe(&["moving"]).expect("subscribe");
    // The third member is kcat in its own process, so it can be killed without a LeaveGroup.
    let mut kcat = Command::new("kcat")
        .args([
            "-b",
            &broker.addr,
            "-G",
            "movers",
            "-X",
            "session.timeout.ms=6000",
            "-q",
            "moving",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("kcat is installed (see .ci/run)");
    poll_until(&[&a, &b], "a and b hold 2 partitions each", |s| {
        s.iter().all(|p| p.len() == 2)
    });
    kcat.kill().expect("kill -9 kcat");
    let _ = kcat.wait();
    // No LeaveGroup: the broker notices when kcat's 6 s session expires.
    poll_until(&[&a, &b], "the dead member's partitions move", |s| split_evenly(s, 6));
    drop(b); // a clean close sends LeaveGroup
    poll_until(&[&a], "the last member holds everything", |s| s[0].len() == 6);
}

#[tokio::test]
async fn every_group_gets_every_message() {
    let broker = Broker::start(BROKER_FLAGS);
    create_topic(&broker, "broadcast", 3).await;
    produce(&broker, "broadcast", 0, 900);
    for group in ["billing", "audit"] {
        let c = consumer(&broker, group, &[]);
        c.subscribe(&["broadcast"]).expect("subscribe");
        let got = drain(&[&c], 900);
        let unique: BTreeSet<(i32, i64)> = got.iter().map(|(_, p, o)| (*p, *o)).collect();
        assert_eq!(unique.len(), 900, "group {group} must see all 900 messages");
    }
}

#[tokio::test]
async fn committed_offsets_and_metadata_survive_kill_9() {
    let mut broker = Broker::start(BROKER_FLAGS);
    create_topic(&broker, "ledger", 2).await;
    produce(&broker, "ledger", 0, 400);
    {
        let c = consumer(&broker, "accountants", &[]);
        let mut with_meta = TopicPartitionList::new();
        for (p, o) in [(0, 120), (1, 80)] {
            with_meta
                .add_partition_offset("ledger", p, Offset::Offset(o))
                .expect("tpl");
            with_meta
                .find_partition("ledger", p)
                .expect("just added")
                .set_metadata(format!("checkpoint-{p}"));
        }
        c.commit(&with_meta, CommitMode::Sync).expect("commit");
    }
    broker.kill9();
    broker.restart();
    let c = consumer(&broker, "accountants", &[]);
    let mut query = TopicPartitionList::new();
    query.add_partition("ledger", 0);
    query.add_partition("ledger", 1);
    let committed = c.committed_offsets(query, Duration::from_secs(15)).expect("committed");
    let found: BTreeMap<i32, (Offset, String)> = committed
        .elements()
        .iter()
        .map(|e| (e.partition(), (e.offset(), e.metadata().to_string())))
        .collect();
    assert_eq!(found[&0], (Offset::Offset(120), "checkpoint-0".to_string()));
    assert_eq!(found[&1], (Offset::Offset(80), "checkpoint-1".to_string()));
    // A member of the group resumes exactly there.
    c.subscribe(&["ledger"]).expect("subscribe");
    let got = drain(&[&c], 400 - 200);
    let firsts: BTreeMap<i32, i64> = got.iter().fold(BTreeMap::new(), |mut m, (_, p, o)| {
        m.entry(*p).or_insert(*o);
        m
    });
    assert_eq!(firsts.get(&0), Some(&120));
    assert_eq!(firsts.get(&1), Some(&80));
    assert_eq!(got.len(), 200, "nothing before the committed offsets is read again");
}

#[tokio::test]
async fn at_least_once_redelivers_the_uncommitted_tail_and_at_most_once_does_not() {
    let broker = Broker::start(BROKER_FLAGS);
    create_topic(&broker, "jobs", 1).await;
    produce(&broker, "jobs", 0, 100);
    // At-least-once: process, commit after 50, process 30 more, die before committing.
    let first = consumer(&broker, "alo", &[]);
    first.subscribe(&["jobs"]).expect("subscribe");
    let processed = drain(&[&first], 80);
    assert_eq!(processed.len(), 80);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("jobs", 0, Offset::Offset(50)).expect("tpl");
    first.commit(&tpl, CommitMode::Sync).expect("commit");
    drop(first);
    let next = consumer(&broker, "alo", &[]);
    next.subscribe(&["jobs"]).expect("subscribe");
    let redelivered = drain(&[&next], 50);
    assert_eq!(
        redelivered.first().map(|m| m.2),
        Some(50),
        "the next owner starts at the last commit"
    );
    assert_eq!(redelivered.len(), 50, "offsets 50..99 come again, 50..79 a second time");

    // At-most-once: commit first (up to 60), then process only 40 before dying.
    let first = consumer(&broker, "amo", &[]);
    first.subscribe(&["jobs"]).expect("subscribe");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("jobs", 0, Offset::Offset(60)).expect("tpl");
    first.commit(&tpl, CommitMode::Sync).expect("commit");
    let _ = drain(&[&first], 40);
    drop(first);
    let next = consumer(&broker, "amo", &[]);
    next.subscribe(&["jobs"]).expect("subscribe");
    let rest = drain(&[&next], 40);
    assert_eq!(
        rest.first().map(|m| m.2),
        Some(60),
        "nothing before the commit is read again"
    );
    assert_eq!(rest.len(), 40);
}

#[tokio::test]
async fn cooperative_sticky_assignment_works() {
    let broker = Broker::start(BROKER_FLAGS);
    create_topic(&broker, "sticky", 6).await;
    let extra = [("partition.assignment.strategy", "cooperative-sticky")];
    let a = consumer(&broker, "coop", &extra);
    a.subscribe(&["sticky"]).expect("subscribe");
    poll_until(&[&a], "a alone holds all 6", |s| s[0].len() == 6);
    let b = consumer(&broker, "coop", &extra);
    b.subscribe(&["sticky"]).expect("subscribe");
    poll_until(&[&a, &b], "3 and 3 after an incremental rebalance", |s| {
        split_evenly(s, 6)
    });
    drop(b);
    poll_until(&[&a], "a takes b's partitions back", |s| s[0].len() == 6);
}

#[tokio::test]
async fn a_static_member_restarting_causes_no_rebalance() {
    let broker = Broker::start(BROKER_FLAGS);
    create_topic(&broker, "static", 4).await;
    let watcher = consumer(&broker, "statics", &[]);
    watcher.subscribe(&["static"]).expect("subscribe");
    let stat = consumer(&broker, "statics", &[("group.instance.id", "pod-1")]);
    stat.subscribe(&["static"]).expect("subscribe");
    poll_until(&[&watcher, &stat], "2 and 2", |s| split_evenly(s, 4));
    let mine = assigned(&stat);
    let rebalances_before = watcher.context().0.load(Ordering::SeqCst);
    // A static member's close sends no LeaveGroup (KIP-345); it comes back within the
    // session timeout with the same instance id.
    drop(stat);
    let again = consumer(&broker, "statics", &[("group.instance.id", "pod-1")]);
    again.subscribe(&["static"]).expect("subscribe");
    poll_until(
        &[&watcher, &again],
        "the restarted static member gets its partitions back",
        |s| s[1] == mine,
    );
    for _ in 0..20 {
        let _ = watcher.poll(Duration::from_millis(100));
    }
    assert_eq!(
        watcher.context().0.load(Ordering::SeqCst),
        rebalances_before,
        "the other member must not have been rebalanced"
    );
}
