//! The etcd backend against a real etcd (Debian's `etcd-server`, installed by
//! `scripts/install-deps.sh`): registration and takeover, watches across brokers,
//! producer-id blocks, and the controller duty repairing what an interrupted change
//! left behind.
#![allow(clippy::expect_used)] // helpers outside #[test] fns: a test stops at its first failure

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use etcd_client::Client;
use sluice_controller::{BrokerInfo, Controller, ControllerError, EtcdConfig, EtcdController, NewTopic};
use uuid::Uuid;

struct Etcd {
    child: Child,
    endpoint: String,
    _data: tempfile::TempDir,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn etcd() -> Etcd {
    let data = tempfile::tempdir().expect("temp dir");
    let (client, peer) = (free_port(), free_port());
    let endpoint = format!("127.0.0.1:{client}");
    let child = Command::new("etcd")
        .arg("--data-dir")
        .arg(data.path())
        .args(["--listen-client-urls", &format!("http://{endpoint}")])
        .args(["--advertise-client-urls", &format!("http://{endpoint}")])
        .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
        .args(["--initial-advertise-peer-urls", &format!("http://127.0.0.1:{peer}")])
        .args(["--initial-cluster", &format!("default=http://127.0.0.1:{peer}")])
        .args(["--logger", "zap", "--log-level", "error"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("etcd must be installed (Debian etcd-server; scripts/install-deps.sh)");
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(&endpoint).is_err() {
        assert!(Instant::now() < deadline, "etcd did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Etcd {
        child,
        endpoint,
        _data: data,
    }
}

fn broker(id: i32) -> BrokerInfo {
    BrokerInfo {
        id,
        host: "127.0.0.1".into(),
        port: 9000 + id as u16,
        rack: None,
        incarnation: Uuid::new_v4(),
    }
}

fn config(etcd: &Etcd, me: BrokerInfo, previous: Option<Uuid>) -> EtcdConfig {
    EtcdConfig {
        endpoints: vec![format!("http://{}", etcd.endpoint)],
        prefix: "/t".into(),
        me,
        previous_incarnation: previous,
        session_timeout: Duration::from_secs(3),
        auto_leader_rebalance: true,
    }
}

/// `EtcdController::connect` blocks (a broker calls it before its runtimes start), so
/// from inside a test's runtime it runs on a thread of its own.
fn connect(config: EtcdConfig) -> Result<EtcdController, ControllerError> {
    std::thread::spawn(move || EtcdController::connect(config))
        .join()
        .expect("connect thread")
}

fn topic(name: &str, partitions: i32, rf: i16) -> NewTopic {
    NewTopic {
        name: name.into(),
        partitions,
        replication_factor: rf,
        configs: Default::default(),
        internal: false,
        replica_assignments: None,
    }
}

/// Waits (up to 20 s) until `c`'s metadata satisfies `done`.
async fn wait_for(c: &EtcdController, done: impl Fn(&sluice_controller::ClusterMetadata) -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut watch = c.watch();
    loop {
        if done(&watch.borrow_and_update()) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {:?}",
            c.metadata()
        );
        let _ = tokio::time::timeout(Duration::from_millis(200), watch.changed()).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn registration_takeover_and_duplicates() {
    let etcd = etcd();
    let first = broker(1);
    let c1 = connect(config(&etcd, first.clone(), None)).expect("first");
    // Another process claiming node 1 is refused while the first lives.
    let refused = connect(config(&etcd, broker(1), None));
    assert!(
        matches!(refused, Err(ControllerError::DuplicateBroker(1))),
        "{:?}",
        refused.err()
    );
    // The same node restarted from its data directory (which recorded the first
    // incarnation) takes the registration over at once, without waiting for the lease.
    drop(c1);
    let started = Instant::now();
    let again = broker(1);
    let c1 = connect(config(&etcd, again.clone(), Some(first.incarnation))).expect("takeover");
    assert!(started.elapsed() < Duration::from_secs(2));
    wait_for(
        &c1,
        |m| m.brokers.get(&1).is_some_and(|b| b.incarnation == again.incarnation),
        "new incarnation",
    )
    .await;
    // A clean shutdown drops the registration at once.
    let c2 = connect(config(&etcd, broker(2), None)).expect("second");
    wait_for(&c1, |m| m.brokers.len() == 2, "two brokers").await;
    c2.shutdown().await.expect("shutdown");
    wait_for(&c1, |m| m.brokers.len() == 1, "one broker left").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn changes_reach_every_broker_and_producer_ids_never_overlap() {
    let etcd = etcd();
    let c1 = connect(config(&etcd, broker(1), None)).expect("c1");
    let c2 = connect(config(&etcd, broker(2), None)).expect("c2");
    wait_for(&c1, |m| m.brokers.len() == 2, "two brokers").await;
    assert_eq!(c1.metadata().cluster_id, c2.metadata().cluster_id);
    assert_eq!(c1.metadata().cluster_id.len(), 22);

    let created = c1.create_topic(topic("orders", 6, 2)).await.expect("create");
    assert!(matches!(
        c2.create_topic(topic("orders", 1, 1)).await,
        Err(ControllerError::TopicExists(_))
    ));
    assert!(matches!(
        c2.create_topic(topic("wide", 1, 3)).await,
        Err(ControllerError::InvalidReplicationFactor(3, 2))
    ));
    wait_for(&c2, |m| m.revision >= created.revision, "c2 sees the topic").await;
    let seen = c2.metadata().topic("orders").cloned().expect("orders");
    assert_eq!(seen.id, created.value.id);
    assert!(seen
        .assignments
        .iter()
        .all(|p| p.replicas.len() == 2 && p.isr == p.replicas && p.leader == p.replicas[0]));
    let grown = c2.create_partitions("orders", 9, None).await.expect("grow");
    wait_for(&c1, |m| m.revision >= grown.revision, "c1 sees the growth").await;
    assert_eq!(c1.metadata().topic("orders").map(|t| t.assignments.len()), Some(9));

    let mut ranges = Vec::new();
    for _ in 0..5 {
        ranges.push(c1.allocate_producer_ids(1000).await.expect("ids"));
        ranges.push(c2.allocate_producer_ids(1000).await.expect("ids"));
    }
    ranges.sort_by_key(|r| r.start);
    for pair in ranges.windows(2) {
        assert!(pair[0].end <= pair[1].start, "{ranges:?}");
    }

    c2.delete_topic("orders").await.expect("delete");
    wait_for(&c1, |m| m.topic("orders").is_none(), "deleted everywhere").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_controller_duty_repairs_what_an_interrupted_change_left() {
    let etcd = etcd();
    let c1 = connect(config(&etcd, broker(1), None)).expect("c1");
    wait_for(&c1, |m| m.controller_id == 1, "broker 1 runs the controller duty").await;
    c1.create_topic(topic("half", 3, 1)).await.expect("create");
    let mut raw = Client::connect([etcd.endpoint.as_str()], None)
        .await
        .expect("etcd client");
    // A creation cut short: one partition's state was never written.
    raw.delete("/t/partitions/half/1", None).await.expect("delete key");
    // A deletion cut short: a partition state whose topic is gone.
    let stale = r#"{"topic_id":"00000000-0000-0000-0000-000000000001","replicas":[1],"leader":1,"leader_epoch":0,"isr":[1],"partition_epoch":0}"#;
    raw.put("/t/partitions/gone/0", stale, None).await.expect("put");
    wait_for(
        &c1,
        |m| {
            m.partition("half", 1)
                .is_some_and(|p| p.leader == 1 && p.partition_epoch == 0)
        },
        "the missing partition placed",
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !raw
        .get("/t/partitions/gone/0", None)
        .await
        .expect("get")
        .kvs()
        .is_empty()
    {
        assert!(Instant::now() < deadline, "stale partition state not removed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
