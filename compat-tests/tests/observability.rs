//! Metrics as an operator sees them: a real Prometheus scrapes the broker, and every
//! PromQL expression of every Grafana dashboard panel parses and returns data;
//! `promtool check metrics` accepts a scrape; the compose file is valid.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use compat_tests::{http_get, record_batch, url_encode, Broker, RawClient};
use kafka_protocol::messages::produce_request::{PartitionProduceData, ProduceRequest, TopicProduceData};
use kafka_protocol::messages::produce_response::ProduceResponse;
use kafka_protocol::messages::{ApiKey, TopicName};
use kafka_protocol::protocol::StrBytes;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// Produces (acks=all, so group commits and fsyncs happen), consumes in a group with
/// commits, and sends one produce that fails, so every family has samples.
fn traffic(broker: &Broker) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .set("acks", "all")
        .create()
        .expect("producer");
    for i in 0..300 {
        producer
            .send(BaseRecord::to("observed").key("k").payload(&format!("v{i}")))
            .expect("send");
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .set("group.id", "watchers")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "200")
        .create()
        .expect("consumer");
    consumer.subscribe(&["observed"]).expect("subscribe");
    let mut seen = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen < 250 && Instant::now() < deadline {
        if let Some(Ok(_)) = consumer.poll(Duration::from_millis(100)) {
            seen += 1;
        }
    }
    // Stop short of the end so the group has lag; give auto-commit time to run.
    for _ in 0..10 {
        let _ = consumer.poll(Duration::from_millis(100));
    }
    consumer
        .commit_consumer_state(rdkafka::consumer::CommitMode::Sync)
        .expect("commit");
    // A share group that accepts, rejects (dead-letters) and so has every series.
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/share_consumers.py");
    for args in [
        vec!["produce", &broker.addr, "queued", "1", "20", "m"],
        vec!["produce", &broker.addr, "queued", "1", "1", "reject"],
        vec![
            "configure",
            &broker.addr,
            "queue-workers",
            "share.auto.offset.reset=earliest",
        ],
        vec!["consume", &broker.addr, "queued", "queue-workers", "1", "20", "30"],
    ] {
        let out = std::process::Command::new("python3")
            .arg(script)
            .args(&args)
            .output()
            .expect("python3");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut raw = RawClient::connect(&broker.addr);
    let bad = ProduceRequest::default()
        .with_acks(1)
        .with_timeout_ms(1000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_static_str("observed")))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(42)
                .with_records(Some(record_batch(&[b"x"], 1)))])]);
    let r: ProduceResponse = raw.call(ApiKey::Produce, 9, &bad);
    assert_eq!(r.responses[0].partition_responses[0].error_code, 3);
}

#[test]
fn metrics_pass_promtool_and_health_answers() {
    let broker = Broker::start(&[]);
    traffic(&broker);
    let (status, body) = http_get(&broker.metrics_addr, "/health").expect("health");
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let (status, scrape) = http_get(&broker.metrics_addr, "/metrics").expect("scrape");
    assert_eq!(status, 200);
    for family in [
        "sluice_requests_total{api=\"Produce\"}",
        "sluice_topic_records_in_total{topic=\"observed\"} 300",
        "sluice_consumer_group_lag{group=\"watchers\"",
        "sluice_storage_fsync_duration_seconds_count",
        "sluice_request_errors_total{api=\"Produce\",error=\"UnknownTopicOrPartition\",code=\"3\"} 1",
        "process_resident_memory_bytes",
        // io_uring is available on this project's machines, and `auto` picks it.
        "sluice_storage_io_engine{engine=\"io_uring\"} 1",
    ] {
        assert!(scrape.contains(family), "{family} missing from the scrape:\n{scrape}");
    }
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; see scripts/test.sh)");
    use std::io::Write;
    promtool
        .stdin
        .take()
        .expect("stdin")
        .write_all(scrape.as_bytes())
        .expect("write");
    let out = promtool.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Kills the child process when dropped, so a failing test leaves nothing running.
struct Kill(std::process::Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Every `expr` of every panel of every dashboard.
fn dashboard_queries() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(repo().join("grafana/dashboards")).expect("dashboards") {
        let path = entry.expect("entry").path();
        let dashboard: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
        for panel in dashboard["panels"].as_array().expect("panels") {
            for target in panel["targets"].as_array().expect("targets") {
                let title = format!("{} / {}", dashboard["title"], panel["title"]);
                out.push((title, target["expr"].as_str().expect("expr").to_string()));
            }
        }
    }
    out
}

#[test]
fn every_dashboard_query_returns_data_from_a_real_prometheus() {
    let broker = Broker::start(&[]);
    traffic(&broker);
    let dir = tempfile::tempdir().expect("temp");
    let config = format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: sluice\n    static_configs:\n      - targets: [\"{}\"]\n",
        broker.metrics_addr
    );
    std::fs::write(dir.path().join("prometheus.yml"), config).expect("config");
    let web = format!("127.0.0.1:{}", free_port());
    let _prometheus = Kill(
        Command::new("prometheus")
            .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("tsdb").display()))
            .arg(format!("--web.listen-address={web}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (Debian package prometheus; see scripts/test.sh)"),
    );

    let query = |q: &str| -> serde_json::Value {
        let (status, body) =
            http_get(&web, &format!("/api/v1/query?query={}", url_encode(q))).unwrap_or((0, String::new()));
        assert!(
            status == 200 || status == 0 || status == 503,
            "query {q}: HTTP {status}: {body}"
        );
        serde_json::from_str(&body).unwrap_or(serde_json::Value::Null)
    };
    // Enough scrapes for rate() over the traffic (which keeps flowing: the group's lag
    // and offsets are gauges, counters only need two samples).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = query("count_over_time(up{job=\"sluice\"}[1m])");
        let scrapes = r["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        if scrapes >= 5.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never scraped sluice 5 times: {r}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let queries = dashboard_queries();
    assert!(queries.len() >= 20, "the dashboards have {} queries", queries.len());
    let mut failures = Vec::new();
    for (panel, expr) in &queries {
        let r = query(expr);
        if r["status"] != "success" {
            failures.push(format!("{panel}: `{expr}` failed: {r}"));
        } else if r["data"]["result"].as_array().is_none_or(|a| a.is_empty()) {
            failures.push(format!("{panel}: `{expr}` returned no data"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} dashboard queries failed:\n{}",
        failures.len(),
        queries.len(),
        failures.join("\n")
    );
    println!("{} dashboard queries returned data", queries.len());
}

#[test]
fn the_compose_file_is_valid() {
    let out = Command::new("docker-compose")
        .args(["-f", "docker/compose.yaml", "config", "-q"])
        .current_dir(repo())
        .output()
        .expect("docker-compose (Debian package docker-compose; see scripts/test.sh)");
    assert!(
        out.status.success(),
        "docker-compose config: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The cluster: etcd and three brokers, each told where etcd is and its own id.
    let out = Command::new("docker-compose")
        .args(["-f", "docker/compose.yaml", "config"])
        .current_dir(repo())
        .output()
        .expect("docker-compose");
    let config = String::from_utf8_lossy(&out.stdout);
    for service in [
        "etcd:",
        "sluice-1:",
        "sluice-2:",
        "sluice-3:",
        "prometheus:",
        "grafana:",
    ] {
        assert!(config.contains(service), "no {service} in\n{config}");
    }
    assert_eq!(config.matches("etcd://etcd:2379").count(), 3, "{config}");
}
