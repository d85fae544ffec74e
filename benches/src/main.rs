//! sluice-bench: a load generator for any Kafka-compatible broker, built on librdkafka.
//!
//!   sluice-bench produce --bootstrap 127.0.0.1:9092 --topic bench --count 1000000
//!   sluice-bench consume --bootstrap 127.0.0.1:9092 --topic bench --count 1000000
//!   sluice-bench e2e     --bootstrap 127.0.0.1:9092 --topic bench --rate-mb 50 --duration 30
//!
//! Reports records/s, MB/s and latency percentiles (HdrHistogram; produce latency is
//! send to acknowledgement, e2e latency is send to consume), the longest gap between
//! two acknowledgements (a leader failover during the run shows there), and with `--broker-pid`
//! the broker's peak RSS and CPU seconds per MB. `--json` prints one JSON object.
//! Targets given with `--target-*` are reported as PASS or MISS; they never fail a run.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Args, Parser, Subcommand};
use hdrhistogram::Histogram;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

mod raw;

#[derive(Parser)]
#[command(name = "sluice-bench", about = "Load generator for Kafka-compatible brokers")]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Produce as fast as the broker takes it (or at --rate-mb).
    Produce(Common),
    /// Read a topic from the beginning.
    Consume(Common),
    /// Produce at a fixed rate and consume at once: end-to-end latency.
    E2e(Common),
}

#[derive(Args, Clone)]
struct Common {
    #[arg(long, default_value = "127.0.0.1:9092")]
    bootstrap: String,
    #[arg(long, default_value = "sluice-bench")]
    topic: String,
    /// Partitions when the topic is created.
    #[arg(long, default_value_t = 6)]
    partitions: i32,
    /// Replicas of each partition when the topic is created.
    #[arg(long, default_value_t = 1)]
    replication_factor: i32,
    /// Topic configs when the topic is created, KEY=VALUE (repeatable), e.g.
    /// `--topic-config min.insync.replicas=2`.
    #[arg(long)]
    topic_config: Vec<String>,
    /// Delete the topic when the run ends, so repeated runs do not fill the disk.
    #[arg(long)]
    delete_topic: bool,
    #[arg(long, default_value_t = 1024)]
    message_size: usize,
    /// Consecutive records that share a key (so land in one partition and batch
    /// together); 1 keys every record apart, which with many partitions makes every
    /// batch a single record.
    #[arg(long, default_value_t = 1)]
    key_run: u64,
    /// Messages to produce or consume (produce: ignored when --duration is given).
    #[arg(long, default_value_t = 1_000_000)]
    count: u64,
    /// Seconds to run instead of --count.
    #[arg(long)]
    duration: Option<f64>,
    #[arg(long, default_value_t = 1)]
    producers: usize,
    #[arg(long, default_value_t = 1)]
    consumers: usize,
    #[arg(long, default_value = "1")]
    acks: String,
    #[arg(long, default_value_t = 5)]
    linger_ms: u32,
    #[arg(long, default_value_t = 1_000_000)]
    batch_size: u32,
    #[arg(long, default_value = "none")]
    compression: String,
    /// Produce at this many MB/s in total (e2e needs it; produce may use it).
    #[arg(long)]
    rate_mb: Option<f64>,
    /// Produce with an idempotent producer (enable.idempotence=true).
    #[arg(long)]
    idempotent: bool,
    /// Produce in transactions of this many records each (a transactional producer per
    /// thread, committing every N records); 0 for no transactions.
    #[arg(long, default_value_t = 0)]
    transaction_records: u64,
    /// PID of the broker, to report its peak RSS and CPU per MB.
    #[arg(long)]
    broker_pid: Option<u32>,
    #[arg(long)]
    json: bool,
    /// Produce with Produce requests encoded once and sent over plain sockets instead
    /// of librdkafka (see raw.rs): each batch is --key-run records, each request as
    /// many partitions' batches as fit in --batch-size bytes.
    #[arg(long)]
    raw: bool,
    /// Requests each --raw connection keeps outstanding.
    #[arg(long, default_value_t = 5)]
    raw_in_flight: usize,
    /// Throughput target in MB/s (reported PASS/MISS).
    #[arg(long)]
    target_mb: Option<f64>,
    /// p99 latency target in ms (reported PASS/MISS).
    #[arg(long)]
    target_p99_ms: Option<f64>,
}

struct Report {
    mode: &'static str,
    records: u64,
    bytes: u64,
    seconds: f64,
    latency_us: Option<Histogram<u64>>,
    /// The longest time between two consecutive acknowledgements, in ms.
    ack_gap_ms: Option<f64>,
    rss_peak: Option<u64>,
    cpu_seconds: Option<f64>,
    /// CPU this load generator used (librdkafka's threads included), filled in by main.
    client_cpu_seconds: Option<f64>,
}

fn main() {
    let cli = Cli::parse();
    let cpu_before = cpu_seconds(std::process::id());
    let report = match &cli.mode {
        Mode::Produce(c) if c.raw => raw::run_produce(c),
        Mode::Produce(c) => run_produce(c, None),
        Mode::Consume(c) => run_consume(c),
        Mode::E2e(c) => run_e2e(c),
    };
    let cpu_after = cpu_seconds(std::process::id());
    let (Mode::Produce(c) | Mode::Consume(c) | Mode::E2e(c)) = &cli.mode;
    if c.delete_topic {
        if let Err(e) = delete_topic(c) {
            eprintln!("sluice-bench: {e}");
        }
    }
    match report {
        Ok(mut r) => {
            r.client_cpu_seconds = cpu_before.zip(cpu_after).map(|(a, b)| b - a);
            print(&r, c)
        }
        Err(e) => {
            eprintln!("sluice-bench: {e}");
            std::process::exit(1);
        }
    }
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn histogram() -> Histogram<u64> {
    // 1 µs to 60 s at 3 significant digits.
    match Histogram::new_with_bounds(1, 60_000_000, 3) {
        Ok(h) => h,
        Err(e) => panic!("constant histogram bounds rejected: {e}"),
    }
}

/// Creates the topic unless it exists.
fn ensure_topic(c: &Common) -> Result<(), String> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &c.bootstrap)
        .create()
        .map_err(|e| e.to_string())?;
    let mut topic = NewTopic::new(&c.topic, c.partitions, TopicReplication::Fixed(c.replication_factor));
    for kv in &c.topic_config {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| format!("--topic-config wants KEY=VALUE, not '{kv}'"))?;
        topic = topic.set(k, v);
    }
    let results = block_on(admin.create_topics(&[topic], &AdminOptions::new())).map_err(|e| e.to_string())?;
    for r in results {
        if let Err((_, code)) = r {
            if code != RDKafkaErrorCode::TopicAlreadyExists {
                return Err(format!("create topic: {code}"));
            }
        }
    }
    Ok(())
}

/// Deletes the run's topic (`--delete-topic`).
fn delete_topic(c: &Common) -> Result<(), String> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &c.bootstrap)
        .create()
        .map_err(|e| e.to_string())?;
    let results =
        block_on(admin.delete_topics(&[c.topic.as_str()], &AdminOptions::new())).map_err(|e| e.to_string())?;
    for r in results {
        if let Err((_, code)) = r {
            return Err(format!("delete topic: {code}"));
        }
    }
    Ok(())
}

/// A tiny executor for the one admin future (no async runtime needed elsewhere).
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    use std::task::{Context, Poll, Wake, Waker};
    struct Thread(std::thread::Thread);
    impl Wake for Thread {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Thread(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park_timeout(Duration::from_millis(10));
    }
}

/// Records acknowledgement latency of every message (its payload starts with the send time).
struct Acks {
    latency: Arc<Mutex<Histogram<u64>>>,
    acked: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    /// When the previous acknowledgement came and the longest gap so far (ns).
    gaps: Arc<Mutex<(u64, u64)>>,
}
impl ClientContext for Acks {}
impl ProducerContext for Acks {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(m) => {
                if let Some(p) = m.payload() {
                    if p.len() >= 8 {
                        let sent = u64::from_be_bytes([p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7]]);
                        let us = now_nanos().saturating_sub(sent) / 1000;
                        if let Ok(mut h) = self.latency.lock() {
                            let _ = h.record(us.max(1));
                        }
                    }
                }
                self.acked.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut g) = self.gaps.lock() {
                    let now = now_nanos();
                    if g.0 > 0 {
                        g.1 = g.1.max(now.saturating_sub(g.0));
                    }
                    g.0 = now;
                }
            }
            Err(_) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Waits until every message sent is acknowledged. rust-rdkafka's `flush` (which
/// `commit_transaction` calls first) polls for up to 100 ms at a time while the
/// threaded producer's own thread takes the events, so every commit cost ~100 ms of
/// idle client time; with nothing left in flight it returns at once.
fn wait_delivered(producer: &ThreadedProducer<Acks>) {
    while producer.in_flight_count() > 0 {
        std::thread::sleep(Duration::from_micros(200));
    }
}

fn producer_config(c: &Common) -> ClientConfig {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", &c.bootstrap)
        .set("acks", &c.acks)
        .set("linger.ms", c.linger_ms.to_string())
        .set("batch.size", c.batch_size.to_string())
        .set("compression.type", &c.compression)
        // 64 MiB of queued messages keeps the producer busy without the seconds of
        // queueing (and the page faults) a 1 GiB queue brought.
        .set("queue.buffering.max.kbytes", "65536")
        // librdkafka leaves Nagle's algorithm on by default; Kafka's Java client and
        // every latency benchmark turn it off.
        .set("socket.nagle.disable", "true")
        .set("queue.buffering.max.messages", "1000000");
    if c.idempotent {
        cfg.set("enable.idempotence", "true");
    }
    cfg
}

/// Produces with `--producers` threads; `stop` (for e2e) ends the run early.
fn run_produce(c: &Common, stop: Option<Arc<std::sync::atomic::AtomicBool>>) -> Result<Report, String> {
    ensure_topic(c)?;
    let latency = Arc::new(Mutex::new(histogram()));
    let acked = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let gaps = Arc::new(Mutex::new((0u64, 0u64)));
    let sampler = c.broker_pid.map(Sampler::start);
    let started = Instant::now();
    let per_producer = c.count / c.producers as u64;
    let rate_per_producer = c
        .rate_mb
        .map(|mb| mb * 1e6 / c.message_size as f64 / c.producers as f64);
    let mut threads = Vec::new();
    for thread in 0..c.producers {
        let c = c.clone();
        let ctx = Acks {
            latency: latency.clone(),
            acked: acked.clone(),
            failed: failed.clone(),
            gaps: gaps.clone(),
        };
        let stop = stop.clone();
        threads.push(std::thread::spawn(move || -> Result<u64, String> {
            // A threaded producer serves delivery reports on its own thread as they
            // arrive; polling them from the send loop (one event per poll) let them
            // queue up and added up to a second of fake latency at 50 MB/s.
            let mut config = producer_config(&c);
            let transactional = c.transaction_records > 0;
            if transactional {
                config.set(
                    "transactional.id",
                    format!("sluice-bench-{}-{thread}", std::process::id()),
                );
            }
            let producer: ThreadedProducer<Acks> = config.create_with_context(ctx).map_err(|e| e.to_string())?;
            let txn_timeout = Duration::from_secs(60);
            if transactional {
                producer.init_transactions(txn_timeout).map_err(|e| e.to_string())?;
                producer.begin_transaction().map_err(|e| e.to_string())?;
            }
            let mut payload = vec![b'x'; c.message_size.max(8)];
            let begin = Instant::now();
            let mut sent = 0u64;
            loop {
                let elapsed = begin.elapsed().as_secs_f64();
                let done = match c.duration {
                    Some(d) => elapsed >= d,
                    None => sent >= per_producer,
                } || stop.as_ref().is_some_and(|s| s.load(Ordering::Relaxed));
                if done {
                    break;
                }
                if let Some(rate) = rate_per_producer {
                    let due = (elapsed * rate) as u64;
                    if sent >= due {
                        std::thread::sleep(Duration::from_micros(200));
                        continue;
                    }
                }
                payload[..8].copy_from_slice(&now_nanos().to_be_bytes());
                let key = (sent / c.key_run.max(1)).to_be_bytes();
                match producer.send(BaseRecord::to(&c.topic).key(&key).payload(&payload)) {
                    Ok(()) => {
                        sent += 1;
                        if transactional && sent.is_multiple_of(c.transaction_records) {
                            wait_delivered(&producer);
                            producer.commit_transaction(txn_timeout).map_err(|e| e.to_string())?;
                            producer.begin_transaction().map_err(|e| e.to_string())?;
                        }
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err((e, _)) => return Err(e.to_string()),
                }
            }
            if transactional {
                wait_delivered(&producer);
                producer.commit_transaction(txn_timeout).map_err(|e| e.to_string())?;
            }
            producer.flush(Duration::from_secs(120)).map_err(|e| e.to_string())?;
            Ok(sent)
        }));
    }
    for t in threads {
        t.join().map_err(|_| "producer thread panicked".to_string())??;
    }
    let seconds = started.elapsed().as_secs_f64();
    let records = acked.load(Ordering::Relaxed);
    if failed.load(Ordering::Relaxed) > 0 {
        return Err(format!(
            "{} messages were not acknowledged",
            failed.load(Ordering::Relaxed)
        ));
    }
    let (rss_peak, cpu_seconds) = sampler.map(Sampler::finish).unwrap_or((None, None));
    let latency = latency.lock().map(|h| h.clone()).ok();
    let ack_gap_ms = gaps.lock().ok().map(|g| g.1 as f64 / 1e6);
    Ok(Report {
        mode: "produce",
        records,
        bytes: records * c.message_size as u64,
        seconds,
        latency_us: latency,
        ack_gap_ms,
        rss_peak,
        cpu_seconds,
        client_cpu_seconds: None,
    })
}

fn consumer(c: &Common, group: &str) -> Result<BaseConsumer, String> {
    ClientConfig::new()
        .set("bootstrap.servers", &c.bootstrap)
        .set("group.id", group)
        .set("socket.nagle.disable", "true")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.max.bytes", "52428800")
        .set("max.partition.fetch.bytes", "10485760")
        .set("fetch.wait.max.ms", "100")
        .set("queued.max.messages.kbytes", "262144")
        .create()
        .map_err(|e| e.to_string())
}

/// Reads `--count` messages from the beginning, split over `--consumers` threads that
/// each take a share of the partitions.
fn run_consume(c: &Common) -> Result<Report, String> {
    let sampler = c.broker_pid.map(Sampler::start);
    let read = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut threads = Vec::new();
    for i in 0..c.consumers {
        let c = c.clone();
        let read = read.clone();
        let bytes = bytes.clone();
        threads.push(std::thread::spawn(move || -> Result<(), String> {
            let consumer = consumer(&c, "sluice-bench-consume")?;
            let mut tpl = TopicPartitionList::new();
            for p in (0..c.partitions).filter(|p| *p as usize % c.consumers == i) {
                tpl.add_partition_offset(&c.topic, p, Offset::Beginning)
                    .map_err(|e| e.to_string())?;
            }
            consumer.assign(&tpl).map_err(|e| e.to_string())?;
            let deadline = Instant::now() + Duration::from_secs_f64(c.duration.unwrap_or(600.0));
            while read.load(Ordering::Relaxed) < c.count && Instant::now() < deadline {
                match consumer.poll(Duration::from_millis(100)) {
                    Some(Ok(m)) => {
                        read.fetch_add(1, Ordering::Relaxed);
                        bytes.fetch_add(m.payload_len() as u64, Ordering::Relaxed);
                    }
                    Some(Err(e)) => return Err(e.to_string()),
                    None => {}
                }
            }
            Ok(())
        }));
    }
    for t in threads {
        t.join().map_err(|_| "consumer thread panicked".to_string())??;
    }
    let seconds = started.elapsed().as_secs_f64();
    let (rss_peak, cpu_seconds) = sampler.map(Sampler::finish).unwrap_or((None, None));
    Ok(Report {
        mode: "consume",
        records: read.load(Ordering::Relaxed),
        bytes: bytes.load(Ordering::Relaxed),
        seconds,
        latency_us: None,
        ack_gap_ms: None,
        rss_peak,
        cpu_seconds,
        client_cpu_seconds: None,
    })
}

/// Produces at `--rate-mb` for `--duration` while a consumer reads from the end; the
/// latency is consume time minus the send time carried in each payload.
fn run_e2e(c: &Common) -> Result<Report, String> {
    let c = Common {
        duration: Some(c.duration.unwrap_or(30.0)),
        rate_mb: Some(c.rate_mb.unwrap_or(50.0)),
        ..c.clone()
    };
    ensure_topic(&c)?;
    let consumer = consumer(&c, "sluice-bench-e2e")?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..c.partitions {
        tpl.add_partition_offset(&c.topic, p, Offset::End)
            .map_err(|e| e.to_string())?;
    }
    consumer.assign(&tpl).map_err(|e| e.to_string())?;
    // Let the consumer settle on the end offsets before the first message is sent.
    let settle = Instant::now() + Duration::from_secs(2);
    while Instant::now() < settle {
        let _ = consumer.poll(Duration::from_millis(50));
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let producer = {
        let c = c.clone();
        let stop = stop.clone();
        std::thread::spawn(move || run_produce(&Common { broker_pid: None, ..c }, Some(stop)))
    };
    let sampler = c.broker_pid.map(Sampler::start);
    let mut latency = histogram();
    let mut records = 0u64;
    let mut bytes = 0u64;
    let started = Instant::now();
    let end = started + Duration::from_secs_f64(c.duration.unwrap_or(30.0) + 5.0);
    while Instant::now() < end {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(50)) {
            if let Some(p) = m.payload() {
                if p.len() >= 8 {
                    let sent = u64::from_be_bytes([p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7]]);
                    let _ = latency.record((now_nanos().saturating_sub(sent) / 1000).max(1));
                }
                records += 1;
                bytes += p.len() as u64;
            }
        } else if producer.is_finished() && started.elapsed().as_secs_f64() > c.duration.unwrap_or(30.0) + 1.0 {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let produced = producer.join().map_err(|_| "producer panicked".to_string())??;
    if records < produced.records {
        return Err(format!("consumed {records} of {} produced messages", produced.records));
    }
    let (rss_peak, cpu_seconds) = sampler.map(Sampler::finish).unwrap_or((None, None));
    Ok(Report {
        mode: "e2e",
        records,
        bytes,
        seconds: c.duration.unwrap_or(30.0),
        latency_us: Some(latency),
        ack_gap_ms: None,
        rss_peak,
        cpu_seconds,
        client_cpu_seconds: None,
    })
}

/// Samples a process's RSS every 100 ms and its CPU time at start and end.
struct Sampler {
    pid: u32,
    cpu_start: f64,
    peak: Arc<AtomicU64>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Sampler {
    fn start(pid: u32) -> Sampler {
        let peak = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (p, s) = (peak.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if let Some(rss) = rss_bytes(pid) {
                    p.fetch_max(rss, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Sampler {
            pid,
            cpu_start: cpu_seconds(pid).unwrap_or(0.0),
            peak,
            stop,
            thread,
        }
    }

    fn finish(self) -> (Option<u64>, Option<f64>) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
        let cpu = cpu_seconds(self.pid).map(|c| c - self.cpu_start);
        (Some(self.peak.load(Ordering::Relaxed)), cpu)
    }
}

fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

fn print(r: &Report, c: &Common) {
    let mb = r.bytes as f64 / 1e6;
    let mbps = mb / r.seconds.max(1e-9);
    let rps = r.records as f64 / r.seconds.max(1e-9);
    let pct = |q: f64| r.latency_us.as_ref().map(|h| h.value_at_quantile(q) as f64 / 1000.0);
    let (p50, p99, p999, max) = (
        pct(0.5),
        pct(0.99),
        pct(0.999),
        r.latency_us.as_ref().map(|h| h.max() as f64 / 1000.0),
    );
    let verdict = |ok: bool| if ok { "PASS" } else { "MISS" };
    let mut targets = Vec::new();
    if let Some(t) = c.target_mb {
        targets.push(format!("throughput >= {t} MB/s: {}", verdict(mbps >= t)));
    }
    if let (Some(t), Some(v)) = (c.target_p99_ms, p99) {
        targets.push(format!("p99 <= {t} ms: {}", verdict(v <= t)));
    }
    if let (Some(p99), Some(p999)) = (p99, p999) {
        if c.target_p99_ms.is_some() {
            targets.push(format!("p99.9 <= 3 x p99: {}", verdict(p999 <= 3.0 * p99)));
        }
    }
    let cpu_per_mb = r.cpu_seconds.map(|s| s / mb.max(1e-9));
    let client_cpu_per_mb = r.client_cpu_seconds.map(|s| s / mb.max(1e-9));
    if c.json {
        let v = serde_json::json!({
            "mode": r.mode, "records": r.records, "bytes": r.bytes, "seconds": r.seconds,
            "records_per_s": rps, "mb_per_s": mbps,
            "latency_ms": {"p50": p50, "p99": p99, "p99.9": p999, "max": max},
            "ack_gap_ms_max": r.ack_gap_ms,
            "broker_rss_peak_bytes": r.rss_peak, "broker_cpu_seconds_per_mb": cpu_per_mb,
            "client_cpu_seconds_per_mb": client_cpu_per_mb,
            "targets": targets,
        });
        println!("{v}");
        return;
    }
    println!("mode        {}", r.mode);
    println!("records     {} in {:.2} s", r.records, r.seconds);
    println!("throughput  {rps:.0} records/s, {mbps:.1} MB/s");
    if let (Some(a), Some(b), Some(c2), Some(d)) = (p50, p99, p999, max) {
        println!("latency     p50 {a:.2} ms, p99 {b:.2} ms, p99.9 {c2:.2} ms, max {d:.2} ms");
    }
    if let Some(gap) = r.ack_gap_ms {
        println!("ack gap     longest {gap:.1} ms between two acknowledgements");
    }
    if let Some(rss) = r.rss_peak {
        println!("broker RSS  peak {:.1} MiB", rss as f64 / (1 << 20) as f64);
    }
    if let Some(cpu) = cpu_per_mb {
        println!("broker CPU  {:.4} s per MB", cpu);
    }
    if let Some(cpu) = client_cpu_per_mb {
        println!("client CPU  {:.4} s per MB (this load generator)", cpu);
    }
    for t in targets {
        println!("target      {t}");
    }
}
