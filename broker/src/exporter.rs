//! The metrics endpoint: `/metrics` in the Prometheus text format (rendered by the
//! `prometheus` crate's encoder, which `promtool check metrics` accepts) and `/health`,
//! served from a thread of its own so a scrape never runs on a shard. A scrape asks
//! every shard for a snapshot over its inbox and sums the answers.

use std::collections::{BTreeMap, HashMap};
use std::net::TcpListener as StdListener;
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::ApiKey;
use kafka_protocol::ResponseError;
use prometheus::proto::{
    Bucket, Counter, Gauge, Histogram as PromHistogram, LabelPair, Metric, MetricFamily, MetricType,
};
use prometheus::Encoder;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

use crate::metrics::{Histogram, ShardMetrics, ShardSnapshot};
use crate::shard::{Cluster, ShardCall};

/// How long a scrape waits for a shard; a shard slower than this is reported unhealthy.
const SHARD_ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// A scrape request larger than this is not HTTP we serve.
const REQUEST_HEAD_MAX: usize = 8192;

pub fn spawn(cluster: Arc<Cluster>, listener: StdListener) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name("metrics".into()).spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
            return;
        };
        rt.block_on(async move {
            let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                return;
            };
            let mut shutdown = cluster.shutdown.clone();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        if let Ok((stream, _)) = accepted {
                            tokio::spawn(serve(cluster.clone(), stream));
                        }
                    }
                    _ = shutdown.changed() => return,
                }
            }
        });
    })
}

async fn serve(cluster: Arc<Cluster>, mut stream: tokio::net::TcpStream) {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() > REQUEST_HEAD_MAX {
            return;
        }
    }
    let line = String::from_utf8_lossy(head.split(|b| *b == b'\n').next().unwrap_or_default()).to_string();
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let (status, content_type, body) = match (method, path) {
        ("GET", "/metrics") => match collect(&cluster).await {
            Some(snapshots) => ("200 OK", prometheus::TEXT_FORMAT, render(&cluster, snapshots)),
            None => (
                "503 Service Unavailable",
                "text/plain",
                b"a shard did not answer\n".to_vec(),
            ),
        },
        ("GET", "/health") => match collect(&cluster).await {
            Some(_) => ("200 OK", "text/plain", b"ok\n".to_vec()),
            None => (
                "503 Service Unavailable",
                "text/plain",
                b"a shard did not answer\n".to_vec(),
            ),
        },
        ("GET", _) => ("404 Not Found", "text/plain", b"try /metrics or /health\n".to_vec()),
        _ => ("405 Method Not Allowed", "text/plain", Vec::new()),
    };
    let header = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(header.as_bytes()).await;
    let _ = stream.write_all(&body).await;
    let _ = stream.shutdown().await;
}

/// One snapshot per shard, or None if any shard fails to answer in time.
async fn collect(cluster: &Cluster) -> Option<Vec<ShardSnapshot>> {
    let mut answers = Vec::new();
    for peer in &cluster.peers {
        let (reply, answer) = oneshot::channel();
        let call = ShardCall::new(None, move |shard| async move {
            let _ = reply.send(shard.snapshot());
        });
        peer.send(call).await.ok()?;
        answers.push(answer);
    }
    let mut out = Vec::new();
    for answer in answers {
        out.push(tokio::time::timeout(SHARD_ANSWER_TIMEOUT, answer).await.ok()?.ok()?);
    }
    Some(out)
}

#[derive(Default)]
struct Families(BTreeMap<String, MetricFamily>);

impl Families {
    fn push(
        &mut self,
        name: &str,
        help: &str,
        kind: MetricType,
        labels: &[(&str, String)],
        fill: impl FnOnce(&mut Metric),
    ) {
        let family = self.0.entry(name.to_string()).or_insert_with(|| {
            let mut f = MetricFamily::default();
            f.set_name(name.to_string());
            f.set_help(help.to_string());
            f.set_field_type(kind);
            f
        });
        let mut m = Metric::default();
        m.set_label(
            labels
                .iter()
                .map(|(k, v)| {
                    let mut l = LabelPair::default();
                    l.set_name(k.to_string());
                    l.set_value(v.clone());
                    l
                })
                .collect(),
        );
        fill(&mut m);
        family.mut_metric().push(m);
    }

    fn counter(&mut self, name: &str, help: &str, labels: &[(&str, String)], value: f64) {
        self.push(name, help, MetricType::COUNTER, labels, |m| {
            let mut c = Counter::default();
            c.set_value(value);
            m.set_counter(c);
        });
    }

    fn gauge(&mut self, name: &str, help: &str, labels: &[(&str, String)], value: f64) {
        self.push(name, help, MetricType::GAUGE, labels, |m| {
            let mut g = Gauge::default();
            g.set_value(value);
            m.set_gauge(g);
        });
    }

    fn histogram(&mut self, name: &str, help: &str, labels: &[(&str, String)], h: &Histogram) {
        self.push(name, help, MetricType::HISTOGRAM, labels, |m| {
            let mut p = PromHistogram::default();
            p.set_sample_count(h.count);
            p.set_sample_sum(h.sum);
            p.set_bucket(
                h.cumulative()
                    .into_iter()
                    .map(|(bound, count)| {
                        let mut b = Bucket::default();
                        b.set_upper_bound(bound);
                        b.set_cumulative_count(count);
                        b
                    })
                    .collect(),
            );
            m.set_histogram(p);
        });
    }
}

fn api_name(key: i16) -> String {
    ApiKey::try_from(key)
        .map(|k| format!("{k:?}"))
        .unwrap_or_else(|_| key.to_string())
}

/// Share groups (KIP-932): members, each share-partition's records in flight and
/// backlog, and per group the records handed out, redelivered, acknowledged,
/// archived and dead-lettered (summed over shards).
fn share_metrics(f: &mut Families, snapshots: &[ShardSnapshot]) {
    for (group, members) in snapshots.iter().flat_map(|s| s.share_groups.iter()) {
        let l = [("group", group.clone())];
        f.gauge(
            "sluice_share_group_members",
            "Members of a share group.",
            &l,
            *members as f64,
        );
    }
    for p in snapshots.iter().flat_map(|s| s.shares.partitions.iter()) {
        let l = [
            ("group", p.group.clone()),
            ("topic", p.topic.clone()),
            ("partition", p.partition.to_string()),
        ];
        f.gauge(
            "sluice_share_partition_in_flight_records",
            "Records a share group has handed out on the partition and not yet had acknowledged (acquired, under a lock).",
            &l,
            p.in_flight as f64,
        );
        f.gauge(
            "sluice_share_partition_backlog_records",
            "Records the share group could hand out now: released or expired ones and those below the high watermark never handed out.",
            &l,
            p.backlog as f64,
        );
        f.gauge(
            "sluice_share_partition_start_offset",
            "The share-partition start offset (SPSO): every record below it is acknowledged or archived.",
            &l,
            p.start_offset as f64,
        );
    }
    let mut groups: BTreeMap<String, crate::share::manager::ShareCounters> = BTreeMap::new();
    for (group, c) in snapshots.iter().flat_map(|s| s.shares.counters.iter()) {
        groups.entry(group.clone()).or_default().add(c);
    }
    for (group, c) in groups {
        let l = [("group", group)];
        for (name, help, value) in [
            (
                "sluice_share_records_acquired_total",
                "Records handed out to share consumers (each delivery counts).",
                c.acquired,
            ),
            (
                "sluice_share_records_redelivered_total",
                "Deliveries of records handed out before (released, or their lock expired).",
                c.redelivered,
            ),
            (
                "sluice_share_records_acknowledged_total",
                "Records share consumers acknowledged (accepted, released, rejected).",
                c.acknowledged,
            ),
            (
                "sluice_share_records_archived_total",
                "Records archived: rejected, or at their delivery limit.",
                c.archived,
            ),
            (
                "sluice_share_records_dead_lettered_total",
                "Archived records written to the group's dead-letter topic.",
                c.dead_lettered,
            ),
        ] {
            f.counter(name, help, &l, value as f64);
        }
    }
}

fn render(cluster: &Cluster, snapshots: Vec<ShardSnapshot>) -> Vec<u8> {
    let mut total = ShardMetrics::default();
    for s in &snapshots {
        total.merge(&s.metrics);
    }
    let mut f = Families::default();
    for (api, n) in &total.requests {
        f.counter(
            "sluice_requests_total",
            "Requests answered, by API.",
            &[("api", api_name(*api))],
            *n as f64,
        );
    }
    for ((api, code), n) in &total.errors {
        let error = ResponseError::try_from_code(*code)
            .map(|e| format!("{e:?}"))
            .unwrap_or_else(|| code.to_string());
        let labels = [("api", api_name(*api)), ("error", error), ("code", code.to_string())];
        f.counter(
            "sluice_request_errors_total",
            "Error codes returned, by API and error.",
            &labels,
            *n as f64,
        );
    }
    for (api, h) in &total.latency {
        let help = "Time from a request's arrival to its answer, by API.";
        f.histogram("sluice_request_duration_seconds", help, &[("api", api_name(*api))], h);
    }
    for (api, h) in &total.queue_time {
        let help = "Time a produce or fetch waited to reach the shard owning its partitions.";
        f.histogram("sluice_request_queue_seconds", help, &[("api", api_name(*api))], h);
    }
    for (topic, io) in &total.topics {
        let l = [("topic", topic.clone())];
        f.counter(
            "sluice_topic_bytes_in_total",
            "Record batch bytes appended, by topic.",
            &l,
            io.bytes_in as f64,
        );
        f.counter(
            "sluice_topic_records_in_total",
            "Records appended, by topic.",
            &l,
            io.records_in as f64,
        );
        f.counter(
            "sluice_topic_bytes_out_total",
            "Record batch bytes fetched, by topic.",
            &l,
            io.bytes_out as f64,
        );
        f.counter(
            "sluice_topic_records_out_total",
            "Records fetched, by topic.",
            &l,
            io.records_out as f64,
        );
    }
    let open = total.connections_accepted.saturating_sub(total.connections_closed);
    f.gauge(
        "sluice_connections_open",
        "Client connections open now.",
        &[],
        open as f64,
    );
    f.counter(
        "sluice_connections_accepted_total",
        "Client connections accepted.",
        &[],
        total.connections_accepted as f64,
    );
    f.counter(
        "sluice_connections_closed_total",
        "Client connections closed.",
        &[],
        total.connections_closed as f64,
    );
    f.counter(
        "sluice_accept_errors_total",
        "Failed accepts of new connections (out of file descriptors or memory, mostly); accepting backs off meanwhile.",
        &[],
        total.accept_errors as f64,
    );
    let help = "Connections closed at accept, before a byte was read, for being over a connection limit: max.connections, max.connections.per.ip, or the connections' share of the open-file limit (descriptors).";
    for (limit, n) in [
        ("max.connections", total.connections_refused_total_limit),
        ("max.connections.per.ip", total.connections_refused_ip_limit),
        ("descriptors", total.connections_refused_descriptors),
    ] {
        f.counter(
            "sluice_connections_refused_total",
            help,
            &[("limit", limit.to_string())],
            n as f64,
        );
    }
    f.gauge(
        "sluice_requests_queued_bytes",
        "Bytes of requests read and not yet answered, of the broker-wide budget queued.max.request.bytes.",
        &[],
        snapshots.iter().map(|s| s.queued_request_bytes).max().unwrap_or(0) as f64,
    );
    f.counter(
        "sluice_connections_throttled_total",
        "New connections the acceptor made wait for max.connection.creation.rate.",
        &[],
        total.connections_throttled as f64,
    );
    let help = "Connections closed for bytes that could not be framed or decoded.";
    f.counter(
        "sluice_connections_rejected_total",
        help,
        &[],
        total.connections_rejected as f64,
    );
    f.counter(
        "sluice_isr_shrinks_total",
        "In-sync sets this broker shrank as a leader (Kafka's IsrShrinksPerSec).",
        &[],
        total.isr_shrinks as f64,
    );
    f.counter(
        "sluice_isr_expands_total",
        "In-sync sets this broker expanded as a leader (Kafka's IsrExpandsPerSec).",
        &[],
        total.isr_expands as f64,
    );
    f.counter(
        "sluice_leader_elections_total",
        "Partitions this broker came to lead under a new leader epoch; summed over brokers, the cluster's leader elections (Kafka's LeaderElectionRateAndTimeMs count).",
        &[],
        total.leader_elections as f64,
    );
    f.counter(
        "sluice_retention_deleted_segments_total",
        "Closed segments deleted by retention (retention.ms, retention.bytes) or below a log start that DeleteRecords moved.",
        &[],
        total.retention_deleted_segments as f64,
    );
    f.counter(
        "sluice_retention_deleted_bytes_total",
        "Bytes of the segments retention deleted.",
        &[],
        total.retention_deleted_bytes as f64,
    );
    f.counter(
        "sluice_cleaner_runs_total",
        "Log cleaner passes over compacted partitions that were installed.",
        &[],
        total.cleaner_runs as f64,
    );
    f.counter(
        "sluice_cleaner_reclaimed_bytes_total",
        "Bytes the log cleaner's passes reclaimed (size before minus after).",
        &[],
        total.cleaner_reclaimed_bytes as f64,
    );
    f.histogram(
        "sluice_storage_fsync_duration_seconds",
        "Duration of each write round that synced (group commit), writes and fdatasyncs together.",
        &[],
        &total.fsync,
    );
    let help = "The storage I/O engine in use (value 1); a shard that could not start the configured engine adds its fallback.";
    let engines: std::collections::BTreeSet<&str> = snapshots.iter().map(|s| s.engine).collect();
    for engine in engines {
        f.gauge("sluice_storage_io_engine", help, &[("engine", engine.to_string())], 1.0);
    }
    let help = "How segment log files are written and read (value 1): direct (O_DIRECT, the broker's own chunk cache) or buffered (the page cache).";
    let modes: std::collections::BTreeSet<&str> = snapshots
        .iter()
        .map(|s| if s.direct_io { "direct" } else { "buffered" })
        .collect();
    for mode in modes {
        f.gauge("sluice_storage_io_mode", help, &[("mode", mode.to_string())], 1.0);
    }
    let direct = &sluice_storage::io::direct::STATS;
    let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed) as f64;
    f.counter(
        "sluice_storage_log_cache_hits_total",
        "Direct-I/O reads answered from the chunk cache of recently written and read log data.",
        &[],
        load(&direct.cache_hits),
    );
    f.counter(
        "sluice_storage_log_cache_misses_total",
        "Direct-I/O reads that went to the disk.",
        &[],
        load(&direct.cache_misses),
    );
    f.gauge(
        "sluice_storage_log_cache_bytes",
        "Memory the direct-I/O chunk cache holds (bounded by --log-cache-bytes).",
        &[],
        load(&direct.cache_bytes),
    );
    f.counter(
        "sluice_storage_direct_written_bytes_total",
        "Bytes written to log files with O_DIRECT, block padding and rewritten partial blocks included.",
        &[],
        load(&direct.bytes_written),
    );
    f.counter(
        "sluice_storage_direct_buffers_mapped_total",
        "Aligned buffers mapped afresh for direct I/O because the pool had none spare (each costs page faults).",
        &[],
        load(&direct.buffers_mapped),
    );
    f.counter(
        "sluice_storage_direct_buffers_unmapped_total",
        "Aligned buffers given back to the system because the pool was full.",
        &[],
        load(&direct.buffers_unmapped),
    );
    let files = &sluice_storage::io::handles::STATS;
    f.gauge(
        "sluice_storage_open_file_descriptors",
        "Descriptors segment and index files hold open now (idle partitions' files are closed; see --log-open-files-max).",
        &[],
        load(&files.descriptors),
    );
    f.gauge(
        "sluice_storage_open_file_descriptors_budget",
        "Descriptors segment and index files may hold outside in-flight work, every shard's budget together.",
        &[],
        load(&files.budget),
    );
    f.counter(
        "sluice_storage_files_opened_total",
        "Segment and index files opened, reopens of files the budget had closed included.",
        &[],
        load(&files.opened),
    );
    f.counter(
        "sluice_storage_files_closed_total",
        "Idle segment and index files closed to stay inside the descriptor budget.",
        &[],
        load(&files.closed),
    );
    f.counter(
        "sluice_storage_direct_read_bytes_total",
        "Bytes read from log files with O_DIRECT (cache misses, readahead included).",
        &[],
        load(&direct.bytes_read),
    );

    f.gauge(
        "sluice_transactions_open",
        "Transactions open (ongoing or being completed) at this broker's transaction coordinators.",
        &[],
        snapshots.iter().map(|s| s.transactions_open).sum::<usize>() as f64,
    );
    let help = "Transactions this broker's coordinators completed, by outcome.";
    let committed: u64 = snapshots.iter().map(|s| s.transactions_committed).sum();
    let aborted: u64 = snapshots.iter().map(|s| s.transactions_aborted).sum();
    f.counter(
        "sluice_transactions_total",
        help,
        &[("outcome", "commit".to_string())],
        committed as f64,
    );
    f.counter(
        "sluice_transactions_total",
        help,
        &[("outcome", "abort".to_string())],
        aborted as f64,
    );

    let mut high_watermarks = HashMap::new();
    for p in snapshots.iter().flat_map(|s| s.partitions.iter()) {
        high_watermarks.insert((p.topic.clone(), p.partition), p.high_watermark);
        let l = [("topic", p.topic.clone()), ("partition", p.partition.to_string())];
        f.gauge(
            "sluice_partition_log_end_offset",
            "Offset the next record appended gets.",
            &l,
            p.log_end_offset as f64,
        );
        f.gauge(
            "sluice_partition_log_start_offset",
            "First offset still in the log.",
            &l,
            p.log_start_offset as f64,
        );
        f.gauge(
            "sluice_partition_high_watermark",
            "Consumers read up to this offset.",
            &l,
            p.high_watermark as f64,
        );
        f.gauge(
            "sluice_partition_last_stable_offset_lag",
            "High watermark minus last stable offset: records read_committed consumers wait for while transactions are open.",
            &l,
            (p.high_watermark - p.last_stable_offset) as f64,
        );
        f.gauge(
            "sluice_partition_size_bytes",
            "Bytes of the partition's segments on disk.",
            &l,
            p.size_bytes as f64,
        );
        f.gauge(
            "sluice_partition_segments",
            "Segments in the partition's log.",
            &l,
            p.segments as f64,
        );
        if let Some(ratio) = p.dirty_ratio {
            f.gauge(
                "sluice_partition_dirty_ratio",
                "For a compacted partition: the share of its closed segments' bytes the cleaner has not compacted yet (it cleans at min.cleanable.dirty.ratio).",
                &l,
                ratio,
            );
        }
        if let Some(reason) = p.refusing {
            let mut labels = l.to_vec();
            labels.push(("reason", reason.to_string()));
            f.gauge(
                "sluice_partition_refusing_writes",
                "A partition that refuses produce (KAFKA_STORAGE_ERROR), with why: disk_full (until a write finds room again, without a restart) or io_error (a failed write or fdatasync: until the broker restarts).",
                &labels,
                1.0,
            );
        }
        if let Some(lag) = p.follower_lag {
            f.gauge(
                "sluice_partition_follower_lag_records",
                "On the leader: records its furthest-behind follower lacks (Kafka's replica lag).",
                &l,
                lag as f64,
            );
        }
    }
    for g in snapshots.iter().flat_map(|s| s.groups.iter()) {
        let l = [("group", g.group.clone())];
        f.gauge(
            "sluice_consumer_group_members",
            "Members of a consumer group.",
            &l,
            g.members as f64,
        );
        let help = "Completed rebalances (the group's generation).";
        f.counter(
            "sluice_consumer_group_rebalances_total",
            help,
            &l,
            g.generation.max(0) as f64,
        );
        for state in ["Empty", "PreparingRebalance", "CompletingRebalance", "Stable", "Dead"] {
            let l = [("group", g.group.clone()), ("state", state.to_string())];
            let help = "1 for the state the group is in, 0 for the others.";
            f.gauge(
                "sluice_consumer_group_state",
                help,
                &l,
                if g.state == state { 1.0 } else { 0.0 },
            );
        }
        for (topic, partition, committed) in &g.offsets {
            let Some(hw) = high_watermarks.get(&(topic.clone(), *partition)) else {
                continue;
            };
            let l = [
                ("group", g.group.clone()),
                ("topic", topic.clone()),
                ("partition", partition.to_string()),
            ];
            f.gauge(
                "sluice_consumer_group_committed_offset",
                "Committed offset.",
                &l,
                *committed as f64,
            );
            let lag = (hw - committed).max(0);
            f.gauge(
                "sluice_consumer_group_lag",
                "High watermark minus committed offset.",
                &l,
                lag as f64,
            );
        }
    }
    share_metrics(&mut f, &snapshots);
    cluster_metrics(&mut f, cluster);
    process_metrics(&mut f);
    let version = [("version", env!("CARGO_PKG_VERSION").to_string())];
    f.gauge("sluice_build_info", "Build information (value 1).", &version, 1.0);
    f.gauge(
        "sluice_shards",
        "Shards (pinned threads) serving.",
        &[],
        cluster.peers.len() as f64,
    );

    let families: Vec<MetricFamily> = f.0.into_values().collect();
    let mut out = Vec::new();
    if let Err(e) = prometheus::TextEncoder::new().encode(&families, &mut out) {
        tracing::error!("cannot encode metrics: {e}");
    }
    out
}

/// The cluster as this broker sees it (Kafka's controller and replica-manager gauges):
/// live brokers, whether this broker runs the controller duty, the partitions it leads,
/// and, on the controller only (so a sum over brokers counts each once), partitions
/// without a leader.
fn cluster_metrics(f: &mut Families, cluster: &Cluster) {
    let metadata = cluster.controller.metadata();
    let me = cluster.me.id;
    let active = metadata.controller_id == me;
    let states = || metadata.topics.values().flat_map(|t| t.assignments.iter());
    f.gauge(
        "sluice_cluster_brokers",
        "Live brokers in the cluster, as this broker's metadata lists them.",
        &[],
        metadata.brokers.len() as f64,
    );
    f.gauge(
        "sluice_controller_active",
        "1 on the broker running the controller duty (Kafka's ActiveControllerCount).",
        &[],
        if active { 1.0 } else { 0.0 },
    );
    f.gauge(
        "sluice_partitions_leader",
        "Partitions this broker leads (Kafka's LeaderCount).",
        &[],
        states().filter(|s| s.leader == me).count() as f64,
    );
    f.gauge(
        "sluice_partitions_under_replicated",
        "Partitions this broker leads with fewer in-sync replicas than replicas (Kafka's UnderReplicatedPartitions).",
        &[],
        states()
            .filter(|s| s.leader == me && s.isr.len() < s.replicas.len())
            .count() as f64,
    );
    let offline = if active {
        states().filter(|s| s.leader == sluice_controller::NO_LEADER).count()
    } else {
        0
    };
    f.gauge(
        "sluice_partitions_offline",
        "Partitions without a leader, reported by the controller (Kafka's OfflinePartitionsCount).",
        &[],
        offline as f64,
    );
}

/// RSS, CPU and open files of this process, from /proc.
fn process_metrics(f: &mut Families) {
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        if let Some(kb) = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        {
            f.gauge(
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                &[],
                kb * 1024.0,
            );
        }
    }
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        // Fields after the parenthesised command name; utime and stime are the 12th and
        // 13th of them, in clock ticks (USER_HZ, 100 on Linux).
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        let cpu = (ticks(11) + ticks(12)) / 100.0;
        f.counter(
            "process_cpu_seconds_total",
            "User and system CPU time spent in seconds.",
            &[],
            cpu,
        );
    }
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        f.gauge(
            "process_open_fds",
            "Number of open file descriptors.",
            &[],
            dir.count() as f64,
        );
    }
}
