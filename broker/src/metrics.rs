//! Metrics: each shard counts into its own plain (non-atomic) counters, so the produce
//! and fetch paths share nothing; a scrape asks every shard for a snapshot and sums
//! them (DESIGN.md, "Observability"). Names follow Prometheus conventions: base units
//! in the name, `_total` for counters.

use std::collections::BTreeMap;
use std::time::Duration;

/// Upper bounds (seconds) of latency histograms: 100 µs to 10 s, roughly ×2.5 apart,
/// which resolves both sub-millisecond produce answers and long-polling fetches.
pub const LATENCY_BUCKETS: [f64; 15] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

#[derive(Debug, Clone, Default)]
pub struct Histogram {
    /// Non-cumulative counts per bucket; the last slot counts values above every bound.
    counts: [u64; LATENCY_BUCKETS.len() + 1],
    pub sum: f64,
    pub count: u64,
}

impl Histogram {
    pub fn observe(&mut self, d: Duration) {
        let v = d.as_secs_f64();
        let i = LATENCY_BUCKETS
            .iter()
            .position(|b| v <= *b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.counts[i] += 1;
        self.sum += v;
        self.count += 1;
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += b;
        }
        self.sum += other.sum;
        self.count += other.count;
    }

    /// (upper bound, cumulative count) per bucket, as Prometheus wants them.
    pub fn cumulative(&self) -> Vec<(f64, u64)> {
        let mut total = 0;
        LATENCY_BUCKETS
            .iter()
            .zip(self.counts.iter())
            .map(|(bound, c)| {
                total += c;
                (*bound, total)
            })
            .collect()
    }
}

#[derive(Debug, Clone, Default)]
pub struct TopicIo {
    pub bytes_in: u64,
    pub records_in: u64,
    pub bytes_out: u64,
    pub records_out: u64,
}

/// One shard's counters.
#[derive(Debug, Clone, Default)]
pub struct ShardMetrics {
    pub requests: BTreeMap<i16, u64>,
    /// (API key, Kafka error code) → answers carrying that error.
    pub errors: BTreeMap<(i16, i16), u64>,
    pub latency: BTreeMap<i16, Histogram>,
    /// Time a produce or fetch waited between its connection's shard and the owning
    /// shard starting on it (the cross-shard queue).
    pub queue_time: BTreeMap<i16, Histogram>,
    pub topics: BTreeMap<String, TopicIo>,
    pub connections_accepted: u64,
    pub connections_closed: u64,
    /// Connections closed because their bytes could not be framed or decoded.
    pub connections_rejected: u64,
    /// Failed accepts (out of descriptors or memory, mostly).
    pub accept_errors: u64,
    /// Connections closed at accept for max.connections and for max.connections.per.ip.
    pub connections_refused_total_limit: u64,
    pub connections_refused_ip_limit: u64,
    pub connections_refused_descriptors: u64,
    /// Accepts that waited for max.connection.creation.rate.
    pub connections_throttled: u64,
    pub fsync: Histogram,
    /// In-sync set changes this broker made as a leader (Kafka's IsrShrinksPerSec and
    /// IsrExpandsPerSec, counted apart).
    pub isr_shrinks: u64,
    pub isr_expands: u64,
    /// Partitions this broker came to lead under a new leader epoch.
    pub leader_elections: u64,
    /// Segments and bytes deleted by retention (time, size, or the log start moving).
    pub retention_deleted_segments: u64,
    pub retention_deleted_bytes: u64,
    /// Cleaner passes installed, and the bytes they reclaimed.
    pub cleaner_runs: u64,
    pub cleaner_reclaimed_bytes: u64,
}

impl ShardMetrics {
    pub fn count_refused(&mut self, refusal: crate::limits::Refusal) {
        match refusal {
            crate::limits::Refusal::Total => self.connections_refused_total_limit += 1,
            crate::limits::Refusal::PerIp => self.connections_refused_ip_limit += 1,
            crate::limits::Refusal::Descriptors => self.connections_refused_descriptors += 1,
        }
    }

    pub fn request(&mut self, api: i16, elapsed: Duration) {
        *self.requests.entry(api).or_default() += 1;
        self.latency.entry(api).or_default().observe(elapsed);
    }

    pub fn error(&mut self, api: i16, code: i16) {
        if code != 0 {
            *self.errors.entry((api, code)).or_default() += 1;
        }
    }

    pub fn topic(&mut self, topic: &str) -> &mut TopicIo {
        if !self.topics.contains_key(topic) {
            self.topics.insert(topic.to_string(), TopicIo::default());
        }
        self.topics.entry(topic.to_string()).or_default()
    }

    pub fn merge(&mut self, other: &ShardMetrics) {
        for (k, v) in &other.requests {
            *self.requests.entry(*k).or_default() += v;
        }
        for (k, v) in &other.errors {
            *self.errors.entry(*k).or_default() += v;
        }
        for (k, h) in &other.latency {
            self.latency.entry(*k).or_default().merge(h);
        }
        for (k, h) in &other.queue_time {
            self.queue_time.entry(*k).or_default().merge(h);
        }
        for (k, t) in &other.topics {
            let mine = self.topic(k);
            mine.bytes_in += t.bytes_in;
            mine.records_in += t.records_in;
            mine.bytes_out += t.bytes_out;
            mine.records_out += t.records_out;
        }
        self.connections_accepted += other.connections_accepted;
        self.connections_closed += other.connections_closed;
        self.connections_rejected += other.connections_rejected;
        self.accept_errors += other.accept_errors;
        self.connections_refused_total_limit += other.connections_refused_total_limit;
        self.connections_refused_ip_limit += other.connections_refused_ip_limit;
        self.connections_refused_descriptors += other.connections_refused_descriptors;
        self.connections_throttled += other.connections_throttled;
        self.fsync.merge(&other.fsync);
        self.isr_shrinks += other.isr_shrinks;
        self.isr_expands += other.isr_expands;
        self.leader_elections += other.leader_elections;
        self.retention_deleted_segments += other.retention_deleted_segments;
        self.retention_deleted_bytes += other.retention_deleted_bytes;
        self.cleaner_runs += other.cleaner_runs;
        self.cleaner_reclaimed_bytes += other.cleaner_reclaimed_bytes;
    }
}

/// A partition's offsets and size at scrape time.
#[derive(Debug, Clone)]
pub struct PartitionStats {
    pub topic: String,
    pub partition: i32,
    pub log_start_offset: i64,
    pub high_watermark: i64,
    /// `read_committed` consumers read below this (KIP-98).
    pub last_stable_offset: i64,
    pub log_end_offset: i64,
    pub size_bytes: u64,
    pub segments: usize,
    /// On a leader: how many records its furthest-behind follower lacks.
    pub follower_lag: Option<i64>,
    /// For a compacted partition: the share of its closed segments' bytes not yet cleaned.
    pub dirty_ratio: Option<f64>,
    /// Why the partition's log refuses writes, if it does (`disk_full`, `io_error`).
    pub refusing: Option<&'static str>,
}

/// A consumer group at scrape time.
#[derive(Debug, Clone)]
pub struct GroupStats {
    pub group: String,
    pub state: &'static str,
    pub members: usize,
    pub generation: i32,
    /// (topic, partition, committed offset)
    pub offsets: Vec<(String, i32, i64)>,
}

/// Everything one shard reports to a scrape.
#[derive(Debug, Clone, Default)]
pub struct ShardSnapshot {
    /// The storage engine the shard runs on.
    pub engine: &'static str,
    /// Whether its log files use direct I/O.
    pub direct_io: bool,
    /// Bytes of the broker-wide request budget (queued.max.request.bytes) in use.
    pub queued_request_bytes: usize,
    pub metrics: ShardMetrics,
    pub partitions: Vec<PartitionStats>,
    pub groups: Vec<GroupStats>,
    /// Transactions open at the shard's transaction coordinator.
    pub transactions_open: usize,
    /// Transactions the shard's coordinator committed and aborted since start.
    pub transactions_committed: u64,
    pub transactions_aborted: u64,
    /// Share-partitions hosted and share-group counters.
    pub shares: crate::share::manager::ShareStats,
    /// (share group, members) of the share groups the shard coordinates.
    pub share_groups: Vec<(String, usize)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_bucket_and_merge() {
        let mut a = Histogram::default();
        a.observe(Duration::from_micros(50));
        a.observe(Duration::from_millis(3));
        let mut b = Histogram::default();
        b.observe(Duration::from_secs(60));
        a.merge(&b);
        assert_eq!(a.count, 3);
        let c = a.cumulative();
        assert_eq!(c[0], (0.0001, 1));
        assert_eq!(c.iter().find(|(b, _)| *b == 0.005).map(|x| x.1), Some(2));
        assert_eq!(
            c.last().map(|x| x.1),
            Some(2),
            "60 s is above every bound; +Inf adds it"
        );
    }
}
