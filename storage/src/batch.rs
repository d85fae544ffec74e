//! The record batch view: Kafka's on-disk and on-wire unit (magic v2, KIP-98).
//!
//! Storage keeps batches exactly as producers sent them. This module reads their
//! fixed 61-byte header, checks what Kafka's `LogValidator` checks before a byte reaches
//! disk (lengths, magic, CRC-32C, offset range, record count), and patches the few
//! fields the broker owns (base offset, leader epoch, LogAppendTime). Compressed
//! payloads are never decompressed here: the CRC covers them and Kafka itself only
//! inspects records of uncompressed batches on this path.
//!
//! Layout (byte offsets): 0 baseOffset i64 · 8 batchLength i32 · 12 partitionLeaderEpoch
//! i32 · 16 magic i8 · 17 crc u32 · 21 attributes i16 · 23 lastOffsetDelta i32 ·
//! 27 baseTimestamp i64 · 35 maxTimestamp i64 · 43 producerId i64 · 51 producerEpoch i16 ·
//! 53 baseSequence i32 · 57 recordCount i32 · 61 records. The CRC covers 21..end.

use thiserror::Error;

use crate::offset::Offset;

/// Size of the v2 batch header; a batch is never shorter.
pub const BATCH_HEADER_LEN: usize = 61;
/// Bytes before `batchLength` counts: baseOffset and batchLength themselves.
pub const BATCH_LENGTH_PREFIX: usize = 12;
const MAGIC_POS: usize = 16;
pub(crate) const CRC_POS: usize = 17;
pub(crate) const ATTRIBUTES_POS: usize = 21;
pub(crate) const CRC_START: usize = ATTRIBUTES_POS;
const LAST_OFFSET_DELTA_POS: usize = 23;
pub(crate) const BASE_TIMESTAMP_POS: usize = 27;
pub(crate) const MAX_TIMESTAMP_POS: usize = 35;
const PRODUCER_ID_POS: usize = 43;
const PRODUCER_EPOCH_POS: usize = 51;
const BASE_SEQUENCE_POS: usize = 53;
pub(crate) const RECORD_COUNT_POS: usize = 57;
const LEADER_EPOCH_POS: usize = 12;

pub(crate) const COMPRESSION_MASK: i16 = 0x07;
const TIMESTAMP_TYPE_LOG_APPEND: i16 = 0x08;
const TRANSACTIONAL_FLAG: i16 = 0x10;
const CONTROL_FLAG: i16 = 0x20;

/// Why a batch was refused. Each maps to one Kafka error code in the broker.
#[derive(Debug, Error, PartialEq, Eq, Clone)]
pub enum BatchError {
    /// Lengths that do not add up or a CRC mismatch (CORRUPT_MESSAGE).
    #[error("corrupt record batch: {0}")]
    Corrupt(&'static str),
    /// Magic 0 or 1: Kafka 4 no longer accepts them (UNSUPPORTED_FOR_MESSAGE_FORMAT).
    #[error("record batch magic {0} is not supported; only magic 2")]
    UnsupportedMagic(i8),
    /// Larger than `max.message.bytes` (MESSAGE_TOO_LARGE).
    #[error("record batch of {size} bytes exceeds the limit of {limit}")]
    TooLarge { size: usize, limit: usize },
    /// Well-formed bytes describing an impossible batch (INVALID_RECORD).
    #[error("invalid record batch: {0}")]
    InvalidRecord(&'static str),
}

/// Timestamp semantics of a topic (`message.timestamp.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimestampType {
    #[default]
    CreateTime,
    LogAppendTime,
}

/// A copy of the header fields storage and the broker need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: Offset,
    /// Whole batch size in bytes, header included.
    pub size: usize,
    /// The epoch of the leader that appended the batch (KIP-101), -1 before that.
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    /// Sequence of the first record for idempotent producers, -1 otherwise.
    pub base_sequence: i32,
    pub record_count: i32,
}

impl BatchHeader {
    /// Reads the header at the start of `buf`. Checks only that the header is there and
    /// that its length field is sane; the body may be absent (a partial read).
    pub fn parse(buf: &[u8]) -> Result<BatchHeader, BatchError> {
        if buf.len() < BATCH_LENGTH_PREFIX + 5 {
            return Err(BatchError::Corrupt("shorter than a batch header"));
        }
        let magic = buf[MAGIC_POS] as i8;
        if magic != 2 {
            return Err(BatchError::UnsupportedMagic(magic));
        }
        if buf.len() < BATCH_HEADER_LEN {
            return Err(BatchError::Corrupt("shorter than a batch header"));
        }
        let batch_length = read_i32(buf, 8);
        let size = batch_length as i64 + BATCH_LENGTH_PREFIX as i64;
        if size < BATCH_HEADER_LEN as i64 {
            return Err(BatchError::Corrupt("batch length smaller than its header"));
        }
        Ok(BatchHeader {
            base_offset: Offset(read_i64(buf, 0)),
            size: size as usize,
            partition_leader_epoch: read_i32(buf, LEADER_EPOCH_POS),
            magic,
            crc: read_u32(buf, CRC_POS),
            attributes: read_i16(buf, ATTRIBUTES_POS),
            last_offset_delta: read_i32(buf, LAST_OFFSET_DELTA_POS),
            base_timestamp: read_i64(buf, BASE_TIMESTAMP_POS),
            max_timestamp: read_i64(buf, MAX_TIMESTAMP_POS),
            producer_id: read_i64(buf, PRODUCER_ID_POS),
            producer_epoch: read_i16(buf, PRODUCER_EPOCH_POS),
            base_sequence: read_i32(buf, BASE_SEQUENCE_POS),
            record_count: read_i32(buf, RECORD_COUNT_POS),
        })
    }

    pub fn last_offset(&self) -> Offset {
        self.base_offset.plus(self.last_offset_delta as i64)
    }

    pub fn next_offset(&self) -> Offset {
        self.last_offset().plus(1)
    }

    pub fn compression(&self) -> i16 {
        self.attributes & COMPRESSION_MASK
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_FLAG != 0
    }

    /// Sequence of the last record; sequences wrap from i32::MAX to 0 (KIP-98).
    pub fn last_sequence(&self) -> i32 {
        let last = self.base_sequence as i64 + self.last_offset_delta as i64;
        (last % (i32::MAX as i64 + 1)) as i32
    }

    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_FLAG != 0
    }

    pub fn timestamp_type(&self) -> TimestampType {
        if self.attributes & TIMESTAMP_TYPE_LOG_APPEND != 0 {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        }
    }
}

/// Checks the CRC-32C of a complete batch.
pub fn crc_matches(batch: &[u8], header: &BatchHeader) -> bool {
    batch.len() >= BATCH_HEADER_LEN && crc32c::crc32c(&batch[CRC_START..]) == header.crc
}

/// Validates a producer's records field: exactly one complete v2 batch (as Kafka
/// requires of v2 produce requests), with a matching CRC and a consistent offset range.
pub fn validate_produced(records: &[u8], size_limit: usize) -> Result<BatchHeader, BatchError> {
    let header = BatchHeader::parse(records)?;
    if header.size > records.len() {
        return Err(BatchError::Corrupt("batch length exceeds the bytes sent"));
    }
    if header.size < records.len() {
        return Err(BatchError::InvalidRecord(
            "a produce request must carry exactly one record batch per partition",
        ));
    }
    if header.size > size_limit {
        return Err(BatchError::TooLarge {
            size: header.size,
            limit: size_limit,
        });
    }
    if !crc_matches(records, &header) {
        return Err(BatchError::Corrupt("CRC-32C mismatch"));
    }
    if header.is_control() {
        return Err(BatchError::InvalidRecord("clients may not send control batches"));
    }
    if header.is_transactional() && (header.producer_id < 0 || header.producer_epoch < 0) {
        return Err(BatchError::InvalidRecord(
            "a transactional batch needs a producer id and epoch",
        ));
    }
    if header.record_count <= 0 || header.last_offset_delta < 0 {
        return Err(BatchError::InvalidRecord("batch has no records"));
    }
    if header.last_offset_delta as i64 + 1 != header.record_count as i64 {
        return Err(BatchError::InvalidRecord("inconsistent batch offset range"));
    }
    if header.compression() == 0 {
        let mut expected_delta = 0i64;
        for_each_record(&records[BATCH_HEADER_LEN..], |record| {
            if record.offset_delta != expected_delta {
                return Err(BatchError::InvalidRecord("record offsets are not consecutive"));
            }
            expected_delta += 1;
            Ok(())
        })?;
        if expected_delta != header.record_count as i64 {
            return Err(BatchError::InvalidRecord(
                "record count does not match the batch header",
            ));
        }
    } else if header.compression() > 4 {
        return Err(BatchError::InvalidRecord("unknown compression codec"));
    }
    Ok(header)
}

/// Writes the fields the broker assigns: the base offset and the leader epoch, both
/// outside the CRC, and for LogAppendTime topics the timestamp type and max timestamp,
/// which are inside it (so the CRC is recomputed, as Kafka does).
pub fn assign(batch: &mut [u8], base_offset: Offset, leader_epoch: i32, log_append_time_ms: Option<i64>) {
    batch[0..8].copy_from_slice(&base_offset.0.to_be_bytes());
    batch[LEADER_EPOCH_POS..LEADER_EPOCH_POS + 4].copy_from_slice(&leader_epoch.to_be_bytes());
    if let Some(now) = log_append_time_ms {
        let attributes = read_i16(batch, ATTRIBUTES_POS) | TIMESTAMP_TYPE_LOG_APPEND;
        batch[ATTRIBUTES_POS..ATTRIBUTES_POS + 2].copy_from_slice(&attributes.to_be_bytes());
        batch[MAX_TIMESTAMP_POS..MAX_TIMESTAMP_POS + 8].copy_from_slice(&now.to_be_bytes());
        let crc = crc32c::crc32c(&batch[CRC_START..]);
        batch[CRC_POS..CRC_POS + 4].copy_from_slice(&crc.to_be_bytes());
    }
}

/// One record of an uncompressed batch, borrowed from the batch bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordView<'a> {
    pub timestamp_delta: i64,
    pub offset_delta: i64,
    /// None for a null key.
    pub key: Option<&'a [u8]>,
    /// None for a null value (a tombstone in a compacted topic).
    pub value: Option<&'a [u8]>,
    /// The whole record as it is in the batch, its length prefix included.
    pub raw: &'a [u8],
}

/// Walks the records of an uncompressed batch body (the bytes after the header).
pub fn for_each_record<'a>(
    mut body: &'a [u8],
    mut visit: impl FnMut(RecordView<'a>) -> Result<(), BatchError>,
) -> Result<(), BatchError> {
    const TRUNCATED: BatchError = BatchError::InvalidRecord("truncated record");
    while !body.is_empty() {
        let start = body;
        let length = read_varint(&mut body).ok_or(TRUNCATED)?;
        if length < 0 || length as usize > body.len() {
            return Err(TRUNCATED);
        }
        let (mut record, rest) = body.split_at(length as usize);
        let raw = &start[..start.len() - rest.len()];
        body = rest;
        let _attributes = take(&mut record, 1).ok_or(TRUNCATED)?;
        let timestamp_delta = read_varint(&mut record).ok_or(TRUNCATED)?;
        let offset_delta = read_varint(&mut record).ok_or(TRUNCATED)?;
        let key_len = read_varint(&mut record).ok_or(TRUNCATED)?;
        let key = if key_len >= 0 {
            Some(take(&mut record, key_len as usize).ok_or(TRUNCATED)?)
        } else {
            None
        };
        let value_len = read_varint(&mut record).ok_or(TRUNCATED)?;
        let value = if value_len >= 0 {
            Some(take(&mut record, value_len as usize).ok_or(TRUNCATED)?)
        } else {
            None
        };
        let headers = read_varint(&mut record).ok_or(TRUNCATED)?;
        if headers < 0 {
            return Err(BatchError::InvalidRecord("negative header count"));
        }
        for _ in 0..headers {
            let key_len = read_varint(&mut record).ok_or(TRUNCATED)?;
            if key_len < 0 {
                return Err(BatchError::InvalidRecord("null header key"));
            }
            take(&mut record, key_len as usize).ok_or(TRUNCATED)?;
            let value_len = read_varint(&mut record).ok_or(TRUNCATED)?;
            if value_len >= 0 {
                take(&mut record, value_len as usize).ok_or(TRUNCATED)?;
            }
        }
        if !record.is_empty() {
            return Err(BatchError::InvalidRecord("record length does not match its fields"));
        }
        visit(RecordView {
            timestamp_delta,
            offset_delta,
            key,
            value,
            raw,
        })?;
    }
    Ok(())
}

/// A record's key and value; None is null.
pub type KeyValue<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

/// Builds an uncompressed batch of `records` (key, value) with every record at
/// `timestamp_ms`: how the broker writes its own internal topics.
pub fn build(records: &[KeyValue], timestamp_ms: i64) -> Vec<u8> {
    let with_headers: Vec<(KeyValue, &[Header])> = records.iter().map(|kv| (*kv, &[][..])).collect();
    build_with_headers(&with_headers, timestamp_ms)
}

/// A record header's key and value (None is null).
pub type Header<'a> = (&'a [u8], Option<&'a [u8]>);

/// [`build`] with headers on each record (dead-letter records carry their origin).
pub fn build_with_headers(records: &[(KeyValue, &[Header])], timestamp_ms: i64) -> Vec<u8> {
    let mut body = Vec::new();
    let mut record = Vec::new();
    for (i, ((key, value), headers)) in records.iter().enumerate() {
        record.clear();
        record.push(0); // attributes
        put_varint(&mut record, 0); // timestamp delta
        put_varint(&mut record, i as i64); // offset delta
        for field in [key, value] {
            match field {
                Some(bytes) => {
                    put_varint(&mut record, bytes.len() as i64);
                    record.extend_from_slice(bytes);
                }
                None => put_varint(&mut record, -1),
            }
        }
        put_varint(&mut record, headers.len() as i64);
        for (key, value) in headers.iter() {
            put_varint(&mut record, key.len() as i64);
            record.extend_from_slice(key);
            match value {
                Some(bytes) => {
                    put_varint(&mut record, bytes.len() as i64);
                    record.extend_from_slice(bytes);
                }
                None => put_varint(&mut record, -1),
            }
        }
        put_varint(&mut body, record.len() as i64);
        body.extend_from_slice(&record);
    }
    let count = records.len() as i32;
    let mut b = Vec::with_capacity(BATCH_HEADER_LEN + body.len());
    b.extend_from_slice(&0i64.to_be_bytes());
    b.extend_from_slice(&((BATCH_HEADER_LEN - BATCH_LENGTH_PREFIX + body.len()) as i32).to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes()); // leader epoch
    b.push(2); // magic
    b.extend_from_slice(&0u32.to_be_bytes()); // crc, set below
    b.extend_from_slice(&0i16.to_be_bytes()); // attributes
    b.extend_from_slice(&(count - 1).to_be_bytes());
    b.extend_from_slice(&timestamp_ms.to_be_bytes());
    b.extend_from_slice(&timestamp_ms.to_be_bytes());
    b.extend_from_slice(&(-1i64).to_be_bytes()); // producer id
    b.extend_from_slice(&(-1i16).to_be_bytes()); // producer epoch
    b.extend_from_slice(&(-1i32).to_be_bytes()); // base sequence
    b.extend_from_slice(&count.to_be_bytes());
    b.extend_from_slice(&body);
    let crc = crc32c::crc32c(&b[CRC_START..]);
    b[CRC_POS..CRC_POS + 4].copy_from_slice(&crc.to_be_bytes());
    b
}

/// Sets a built batch's producer fields and its transactional and control flags, and
/// recomputes the CRC (the broker's own transactional offset commits and markers).
pub fn set_producer(
    batch: &mut [u8],
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    transactional: bool,
    control: bool,
) {
    if batch.len() < BATCH_HEADER_LEN {
        return;
    }
    let mut attributes = read_i16(batch, ATTRIBUTES_POS) & !(TRANSACTIONAL_FLAG | CONTROL_FLAG);
    if transactional {
        attributes |= TRANSACTIONAL_FLAG;
    }
    if control {
        attributes |= CONTROL_FLAG;
    }
    batch[ATTRIBUTES_POS..ATTRIBUTES_POS + 2].copy_from_slice(&attributes.to_be_bytes());
    batch[PRODUCER_ID_POS..PRODUCER_ID_POS + 8].copy_from_slice(&producer_id.to_be_bytes());
    batch[PRODUCER_EPOCH_POS..PRODUCER_EPOCH_POS + 2].copy_from_slice(&producer_epoch.to_be_bytes());
    batch[BASE_SEQUENCE_POS..BASE_SEQUENCE_POS + 4].copy_from_slice(&base_sequence.to_be_bytes());
    let crc = crc32c::crc32c(&batch[CRC_START..]);
    batch[CRC_POS..CRC_POS + 4].copy_from_slice(&crc.to_be_bytes());
}

pub(crate) fn put_varint(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

fn take<'a>(buf: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if buf.len() < n {
        return None;
    }
    let (head, tail) = buf.split_at(n);
    *buf = tail;
    Some(head)
}

/// A zig-zag varint of at most 10 bytes (Kafka's varlong covers varint too).
fn read_varint(buf: &mut &[u8]) -> Option<i64> {
    let mut raw: u64 = 0;
    for i in 0..10 {
        let (&b, rest) = buf.split_first()?;
        *buf = rest;
        raw |= ((b & 0x7f) as u64) << (7 * i);
        if b < 0x80 {
            return Some(((raw >> 1) as i64) ^ -((raw & 1) as i64));
        }
    }
    None
}

fn read_i16(buf: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([buf[at], buf[at + 1]])
}

fn read_i32(buf: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
}

fn read_u32(buf: &[u8], at: usize) -> u32 {
    read_i32(buf, at) as u32
}

fn read_i64(buf: &[u8], at: usize) -> i64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&buf[at..at + 8]);
    i64::from_be_bytes(b)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds an uncompressed v2 batch the way a producer does.
    pub(crate) fn build_batch(base_timestamp: i64, values: &[&[u8]]) -> Vec<u8> {
        let mut records = Vec::new();
        for (i, value) in values.iter().enumerate() {
            let mut r = vec![0u8];
            put_varint(&mut r, i as i64); // timestamp delta
            put_varint(&mut r, i as i64); // offset delta
            put_varint(&mut r, -1); // null key
            put_varint(&mut r, value.len() as i64);
            r.extend_from_slice(value);
            put_varint(&mut r, 0);
            put_varint(&mut records, r.len() as i64);
            records.extend_from_slice(&r);
        }
        let n = values.len() as i32;
        let mut b = Vec::new();
        b.extend_from_slice(&0i64.to_be_bytes());
        b.extend_from_slice(&((BATCH_HEADER_LEN - 12 + records.len()) as i32).to_be_bytes());
        b.extend_from_slice(&(-1i32).to_be_bytes());
        b.push(2);
        b.extend_from_slice(&0u32.to_be_bytes());
        b.extend_from_slice(&0i16.to_be_bytes());
        b.extend_from_slice(&(n - 1).to_be_bytes());
        b.extend_from_slice(&base_timestamp.to_be_bytes());
        b.extend_from_slice(&(base_timestamp + n as i64 - 1).to_be_bytes());
        b.extend_from_slice(&(-1i64).to_be_bytes());
        b.extend_from_slice(&(-1i16).to_be_bytes());
        b.extend_from_slice(&(-1i32).to_be_bytes());
        b.extend_from_slice(&n.to_be_bytes());
        b.extend_from_slice(&records);
        let crc = crc32c::crc32c(&b[CRC_START..]);
        b[CRC_POS..CRC_POS + 4].copy_from_slice(&crc.to_be_bytes());
        b
    }

    #[test]
    fn built_batches_validate_and_their_records_read_back() {
        let b = build(&[(Some(b"k1"), Some(b"v1")), (Some(b"k2"), None)], 77);
        let h = validate_produced(&b, 1 << 20).expect("valid");
        assert_eq!((h.record_count, h.max_timestamp), (2, 77));
        let mut seen = Vec::new();
        for_each_record(&b[BATCH_HEADER_LEN..], |r| {
            seen.push((r.key.map(<[u8]>::to_vec), r.value.map(<[u8]>::to_vec)));
            Ok(())
        })
        .expect("records");
        assert_eq!(
            seen,
            vec![
                (Some(b"k1".to_vec()), Some(b"v1".to_vec())),
                (Some(b"k2".to_vec()), None)
            ]
        );
    }

    #[test]
    fn a_producers_batch_validates() {
        let b = build_batch(1000, &[b"a", b"bb", b"ccc"]);
        let h = validate_produced(&b, 1 << 20).expect("valid");
        assert_eq!(h.record_count, 3);
        assert_eq!(h.size, b.len());
        assert_eq!(h.max_timestamp, 1002);
    }

    #[test]
    fn a_flipped_bit_is_corrupt() {
        let mut b = build_batch(1000, &[b"hello"]);
        let last = b.len() - 2;
        b[last] ^= 1;
        assert_eq!(
            validate_produced(&b, 1 << 20),
            Err(BatchError::Corrupt("CRC-32C mismatch"))
        );
    }

    #[test]
    fn old_magic_is_unsupported() {
        let mut b = build_batch(1000, &[b"hello"]);
        b[MAGIC_POS] = 1;
        assert_eq!(validate_produced(&b, 1 << 20), Err(BatchError::UnsupportedMagic(1)));
    }

    #[test]
    fn too_large_and_truncated_and_two_batches() {
        let b = build_batch(1000, &[&[7u8; 100]]);
        assert!(matches!(validate_produced(&b, 50), Err(BatchError::TooLarge { .. })));
        assert!(matches!(
            validate_produced(&b[..b.len() - 1], 1 << 20),
            Err(BatchError::Corrupt(_))
        ));
        let mut two = b.clone();
        two.extend_from_slice(&b);
        assert!(matches!(
            validate_produced(&two, 1 << 20),
            Err(BatchError::InvalidRecord(_))
        ));
    }

    #[test]
    fn a_lying_record_count_is_invalid() {
        let mut b = build_batch(1000, &[b"x", b"y"]);
        b[RECORD_COUNT_POS..RECORD_COUNT_POS + 4].copy_from_slice(&3i32.to_be_bytes());
        b[LAST_OFFSET_DELTA_POS..LAST_OFFSET_DELTA_POS + 4].copy_from_slice(&2i32.to_be_bytes());
        let crc = crc32c::crc32c(&b[CRC_START..]);
        b[CRC_POS..CRC_POS + 4].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(
            validate_produced(&b, 1 << 20),
            Err(BatchError::InvalidRecord(_))
        ));
    }

    #[test]
    fn log_append_time_keeps_the_crc_valid() {
        let mut b = build_batch(1000, &[b"x"]);
        assign(&mut b, Offset(42), 0, Some(5555));
        let h = BatchHeader::parse(&b).expect("header");
        assert_eq!(h.base_offset, Offset(42));
        assert_eq!(h.max_timestamp, 5555);
        assert_eq!(h.timestamp_type(), TimestampType::LogAppendTime);
        assert!(crc_matches(&b, &h));
    }
}
