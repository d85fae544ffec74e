//! `produce --raw`: Produce requests encoded once and sent over plain sockets, so the
//! load generator's own cost per record (librdkafka's is 2–3 ms per MB, and tens of
//! ms per MB when every batch is one record) stays out of what the run measures.
//!
//! Each partition's leader gets `--producers` connections that split its partitions
//! between them. A request carries one batch of `--key-run` records (`--message-size`
//! bytes of value each) for as many of the connection's partitions as fit in
//! `--batch-size` bytes; a connection cycles through its partitions request by request
//! and keeps `--raw-in-flight` requests outstanding. Records carry no producer id, so
//! the same bytes can be sent again; the broker assigns every batch its offsets.
//! Latency is per request, send to response.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use hdrhistogram::Histogram;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, MetadataRequest, MetadataResponse, ProduceRequest, ProduceResponse, RequestHeader, ResponseHeader,
    TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};

use crate::{ensure_topic, histogram, Common, Report, Sampler};

const PRODUCE_VERSION: i16 = 9;
const METADATA_VERSION: i16 = 12;
/// Where the correlation id sits in a framed request: after the length, api key and
/// api version.
const CORRELATION_AT: usize = 8;

pub fn run_produce(c: &Common) -> Result<Report, String> {
    if c.rate_mb.is_some() || c.idempotent || c.transaction_records > 0 || c.compression != "none" {
        return Err(
            "--raw sends plain batches as fast as the broker takes them: no --rate-mb, \
                    --idempotent, --transaction-records or --compression"
                .into(),
        );
    }
    let acks: i16 = match c.acks.as_str() {
        "all" | "-1" => -1,
        "0" => 0,
        "1" => 1,
        other => return Err(format!("--acks {other}: want 0, 1 or all")),
    };
    ensure_topic(c)?;
    let leaders = leaders(c)?;
    let batch = encode_batch(c)?;
    let per_batch = c.key_run.max(1);
    let per_request = ((c.batch_size as usize) / batch.len()).max(1);
    let mut connections = Vec::new();
    for (addr, partitions) in &leaders {
        for j in 0..c.producers {
            let share: Vec<i32> = partitions
                .iter()
                .copied()
                .enumerate()
                .filter(|(i, _)| i % c.producers == j)
                .map(|(_, p)| p)
                .collect();
            if share.is_empty() {
                continue;
            }
            let requests = share
                .chunks(per_request)
                .map(|chunk| encode_request(c, acks, chunk, &batch).map(|r| (r, chunk.len() as u64 * per_batch)))
                .collect::<Result<Vec<_>, _>>()?;
            connections.push((addr.clone(), requests));
        }
    }
    let total = AcksTally::default();
    let stop = Arc::new(AtomicBool::new(false));
    let per_connection = c.count / connections.len().max(1) as u64;
    let sampler = c.broker_pid.map(Sampler::start);
    let started = Instant::now();
    let mut threads = Vec::new();
    for (addr, requests) in connections {
        let stream = TcpStream::connect(&addr).map_err(|e| format!("connect {addr}: {e}"))?;
        let _ = stream.set_nodelay(true);
        let c = c.clone();
        let tally = total.clone();
        let stop = stop.clone();
        threads.push(std::thread::spawn(move || {
            connection(stream, requests, &c, acks, per_connection, started, &tally, &stop)
        }));
    }
    let mut failure = None;
    for t in threads {
        match t.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failure = failure.or(Some(e)),
            Err(_) => failure = failure.or(Some("a connection thread panicked".to_string())),
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    if let Some(e) = failure {
        return Err(e);
    }
    let failed = total.failed.load(Ordering::Relaxed);
    if failed > 0 {
        return Err(format!("{failed} records were not acknowledged"));
    }
    let records = total.acked.load(Ordering::Relaxed);
    let (rss_peak, cpu_seconds) = sampler.map(Sampler::finish).unwrap_or((None, None));
    let latency = total.latency.lock().map(|h| h.clone()).ok();
    let ack_gap_ms = total.gap_ms.lock().ok().map(|g| *g);
    Ok(Report {
        mode: "produce",
        records,
        bytes: records * c.message_size as u64,
        seconds,
        latency_us: if acks == 0 { None } else { latency },
        ack_gap_ms: if acks == 0 { None } else { ack_gap_ms },
        rss_peak,
        cpu_seconds,
        client_cpu_seconds: None,
    })
}

#[derive(Clone)]
struct AcksTally {
    acked: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    latency: Arc<Mutex<Histogram<u64>>>,
    gap_ms: Arc<Mutex<f64>>,
}

impl Default for AcksTally {
    fn default() -> Self {
        AcksTally {
            acked: Arc::default(),
            failed: Arc::default(),
            latency: Arc::new(Mutex::new(histogram())),
            gap_ms: Arc::default(),
        }
    }
}

/// One connection: this thread writes requests, a second reads the responses in order.
#[allow(clippy::too_many_arguments)]
fn connection(
    stream: TcpStream,
    mut requests: Vec<(Vec<u8>, u64)>,
    c: &Common,
    acks: i16,
    quota: u64,
    started: Instant,
    tally: &AcksTally,
    stop: &AtomicBool,
) -> Result<(), String> {
    let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
    // The queue holds the requests in flight beyond the one the reader waits for.
    let (sent_tx, sent_rx) = mpsc::sync_channel::<(Instant, u64)>(c.raw_in_flight.saturating_sub(1));
    let reader = if acks == 0 {
        None
    } else {
        let tally = tally.clone();
        Some(std::thread::spawn(move || read_responses(stream, sent_rx, &tally)))
    };
    let mut sent = 0u64;
    let mut correlation = 0i32;
    let mut result = Ok(());
    'run: loop {
        for (request, records) in requests.iter_mut() {
            let done = match c.duration {
                Some(d) => started.elapsed().as_secs_f64() >= d,
                None => sent >= quota,
            } || stop.load(Ordering::Relaxed);
            if done {
                break 'run;
            }
            correlation = correlation.wrapping_add(1);
            request[CORRELATION_AT..CORRELATION_AT + 4].copy_from_slice(&correlation.to_be_bytes());
            if acks != 0 && sent_tx.send((Instant::now(), *records)).is_err() {
                // The reader ended: it failed, and says why when joined.
                break 'run;
            }
            if let Err(e) = writer.write_all(request) {
                result = Err(format!("write: {e}"));
                stop.store(true, Ordering::Relaxed);
                break 'run;
            }
            sent += *records;
            if acks == 0 {
                tally.acked.fetch_add(*records, Ordering::Relaxed);
            }
        }
    }
    drop(sent_tx);
    if let Some(reader) = reader {
        match reader.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                stop.store(true, Ordering::Relaxed);
                result = result.and(Err(e));
            }
            Err(_) => result = result.and(Err("a reader thread panicked".to_string())),
        }
    }
    result
}

fn read_responses(
    mut stream: TcpStream,
    sent: mpsc::Receiver<(Instant, u64)>,
    tally: &AcksTally,
) -> Result<(), String> {
    let mut latency = histogram();
    let mut last: Option<Instant> = None;
    let mut gap = Duration::ZERO;
    let header_version = ApiKey::Produce.response_header_version(PRODUCE_VERSION);
    let mut result = Ok(());
    while let Ok((at, records)) = sent.recv() {
        let mut frame = match read_frame(&mut stream) {
            Ok(frame) => frame,
            Err(e) => {
                result = Err(format!("read: {e}"));
                break;
            }
        };
        let now = Instant::now();
        let _ = latency.record((now - at).as_micros().max(1) as u64);
        if let Some(last) = last {
            gap = gap.max(now - last);
        }
        last = Some(now);
        let response = ResponseHeader::decode(&mut frame, header_version)
            .and_then(|_| ProduceResponse::decode(&mut frame, PRODUCE_VERSION))
            .map_err(|e| format!("decode a Produce response: {e}"));
        let response = match response {
            Ok(r) => r,
            Err(e) => {
                result = Err(e);
                break;
            }
        };
        let errors: Vec<i16> = response
            .responses
            .iter()
            .flat_map(|t| t.partition_responses.iter())
            .map(|p| p.error_code)
            .filter(|code| *code != 0)
            .collect();
        let partitions = response
            .responses
            .iter()
            .map(|t| t.partition_responses.len())
            .sum::<usize>() as u64;
        let per_partition = records / partitions.max(1);
        let failed = errors.len() as u64 * per_partition;
        tally.acked.fetch_add(records - failed.min(records), Ordering::Relaxed);
        if failed > 0 {
            tally.failed.fetch_add(failed, Ordering::Relaxed);
            result = Err(format!("a Produce response has error codes {errors:?}"));
            break;
        }
    }
    if let Ok(mut h) = tally.latency.lock() {
        let _ = h.add(&latency);
    }
    if let Ok(mut g) = tally.gap_ms.lock() {
        *g = g.max(gap.as_secs_f64() * 1e3);
    }
    result
}

fn read_frame(stream: &mut TcpStream) -> std::io::Result<Bytes> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len)?;
    let len = i32::from_be_bytes(len);
    if !(0..=64 << 20).contains(&len) {
        return Err(std::io::Error::other(format!("a response frame of {len} bytes")));
    }
    let mut frame = vec![0u8; len as usize];
    stream.read_exact(&mut frame)?;
    Ok(Bytes::from(frame))
}

/// One batch of `--key-run` records, reused for every partition and request.
fn encode_batch(c: &Common) -> Result<Bytes, String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let value = Bytes::from(vec![b'x'; c.message_size]);
    let records: Vec<Record> = (0..c.key_run.max(1))
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // No producer, so the batch's base sequence is -1; kafka-protocol starts a
            // new batch wherever offset minus sequence changes, so both advance.
            sequence: i as i32 - 1,
            timestamp: now,
            key: Some(Bytes::copy_from_slice(&i.to_be_bytes())),
            value: Some(value.clone()),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    RecordBatchEncoder::encode(&mut buf, &records, &options).map_err(|e| format!("encode a batch: {e}"))?;
    Ok(buf.freeze())
}

/// A framed Produce request with `batch` for each of `partitions` (correlation id 0).
fn encode_request(c: &Common, acks: i16, partitions: &[i32], batch: &Bytes) -> Result<Vec<u8>, String> {
    let topic = TopicProduceData::default()
        .with_name(TopicName(StrBytes::from_string(c.topic.clone())))
        .with_partition_data(
            partitions
                .iter()
                .map(|p| {
                    PartitionProduceData::default()
                        .with_index(*p)
                        .with_records(Some(batch.clone()))
                })
                .collect(),
        );
    let request = ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![topic]);
    frame(ApiKey::Produce, PRODUCE_VERSION, 0, &request)
}

fn frame<R: Encodable>(key: ApiKey, version: i16, correlation: i32, request: &R) -> Result<Vec<u8>, String> {
    let header = RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation)
        .with_client_id(Some(StrBytes::from_static_str("sluice-bench")));
    let mut body = BytesMut::new();
    header
        .encode(&mut body, key.request_header_version(version))
        .and_then(|_| request.encode(&mut body, version))
        .map_err(|e| format!("encode a {key:?} request: {e}"))?;
    let mut framed = Vec::with_capacity(body.len() + 4);
    framed.extend_from_slice(&(body.len() as i32).to_be_bytes());
    framed.extend_from_slice(&body);
    Ok(framed)
}

/// Each leader's address and the topic's partitions it leads, from Metadata (asked
/// again until every partition of a topic just made has a leader).
fn leaders(c: &Common) -> Result<BTreeMap<String, Vec<i32>>, String> {
    let mut stream = TcpStream::connect(&c.bootstrap).map_err(|e| format!("connect {}: {e}", c.bootstrap))?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let request = MetadataRequest::default().with_topics(Some(vec![
        kafka_protocol::messages::metadata_request::MetadataRequestTopic::default()
            .with_name(Some(TopicName(StrBytes::from_string(c.topic.clone())))),
    ]));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        stream
            .write_all(&frame(ApiKey::Metadata, METADATA_VERSION, 1, &request)?)
            .map_err(|e| format!("write: {e}"))?;
        let mut response = read_frame(&mut stream).map_err(|e| format!("read Metadata: {e}"))?;
        let metadata = ResponseHeader::decode(
            &mut response,
            ApiKey::Metadata.response_header_version(METADATA_VERSION),
        )
        .and_then(|_| MetadataResponse::decode(&mut response, METADATA_VERSION))
        .map_err(|e| format!("decode Metadata: {e}"))?;
        let brokers: BTreeMap<i32, String> = metadata
            .brokers
            .iter()
            .map(|b| (b.node_id.0, format!("{}:{}", b.host, b.port)))
            .collect();
        let mut leaders: BTreeMap<String, Vec<i32>> = BTreeMap::new();
        let mut complete = false;
        if let Some(topic) = metadata.topics.first().filter(|t| t.error_code == 0) {
            complete = !topic.partitions.is_empty();
            for p in &topic.partitions {
                match brokers.get(&p.leader_id.0) {
                    Some(addr) if p.error_code == 0 => leaders.entry(addr.clone()).or_default().push(p.partition_index),
                    _ => complete = false,
                }
            }
        }
        if complete {
            return Ok(leaders);
        }
        if Instant::now() > deadline {
            return Err(format!("topic {} has partitions without a leader after 30 s", c.topic));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn common(args: &[&str]) -> Common {
        let mut argv = vec!["sluice-bench", "produce"];
        argv.extend_from_slice(args);
        match crate::Cli::parse_from(argv).mode {
            crate::Mode::Produce(c) => c,
            _ => unreachable!("parsed as produce"),
        }
    }

    /// The batch the raw producer sends is one the broker's validation accepts.
    #[test]
    fn raw_batches_pass_the_brokers_validation() {
        for key_run in ["1", "7", "256"] {
            let c = common(&["--raw", "--key-run", key_run, "--message-size", "1000"]);
            let batch = encode_batch(&c).unwrap();
            let header = sluice_storage::batch::validate_produced(&batch, 1 << 30).unwrap();
            assert_eq!(header.record_count as u64, key_run.parse::<u64>().unwrap());
        }
    }
}
