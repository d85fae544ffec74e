//! Kafka's batch codecs (attributes bits 0–2: none, gzip, snappy, lz4, zstd), for the
//! few places storage must see records inside a batch: the keys of a compacted topic's
//! batches, the cleaner, and recompression to a topic's `compression.type`. Appends to
//! other topics never decompress anything.
//!
//! Snappy comes in two framings: librdkafka sends raw snappy, the Java client xerial's
//! stream format (a magic header, then length-prefixed blocks); both are read, and
//! xerial's is written, which every client reads. LZ4 is the standard frame format
//! (KIP-57). Decompressed sizes are bounded by the caller, so a small batch cannot
//! inflate into unbounded memory.

use std::borrow::Cow;
use std::io::{self, Read, Write};

use crate::batch::{
    self, BatchError, BatchHeader, ATTRIBUTES_POS, BATCH_HEADER_LEN, BATCH_LENGTH_PREFIX, COMPRESSION_MASK, CRC_POS,
    CRC_START, RECORD_COUNT_POS,
};

pub const NONE: i16 = 0;
pub const GZIP: i16 = 1;
pub const SNAPPY: i16 = 2;
pub const LZ4: i16 = 3;
pub const ZSTD: i16 = 4;

/// xerial's snappy stream header: magic, then version 1 and compatible version 1.
const XERIAL_MAGIC: [u8; 8] = [0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0];
/// xerial's block size (its default, which the Java client uses).
const XERIAL_BLOCK: usize = 32 * 1024;

/// The codec a topic's `compression.type` names; None for `producer` (keep the
/// producer's batches as sent).
pub fn codec_of(compression_type: &str) -> Option<i16> {
    match compression_type {
        "uncompressed" => Some(NONE),
        "gzip" => Some(GZIP),
        "snappy" => Some(SNAPPY),
        "lz4" => Some(LZ4),
        "zstd" => Some(ZSTD),
        _ => None,
    }
}

fn corrupt(_: impl std::fmt::Display) -> BatchError {
    BatchError::Corrupt("the batch's records do not decompress")
}

/// Reads all of `reader` into memory, refusing more than `limit` bytes.
fn read_bounded(reader: impl Read, limit: usize) -> Result<Vec<u8>, BatchError> {
    let mut out = Vec::new();
    reader.take(limit as u64 + 1).read_to_end(&mut out).map_err(corrupt)?;
    if out.len() > limit {
        return Err(BatchError::InvalidRecord(
            "the batch decompresses to more than the broker allows",
        ));
    }
    Ok(out)
}

/// Decompresses a batch's records section.
pub fn decompress(codec: i16, data: &[u8], limit: usize) -> Result<Vec<u8>, BatchError> {
    match codec {
        NONE => Ok(data.to_vec()),
        GZIP => read_bounded(flate2::read::GzDecoder::new(data), limit),
        SNAPPY => snappy_decompress(data, limit),
        LZ4 => read_bounded(lz4_flex::frame::FrameDecoder::new(data), limit),
        ZSTD => read_bounded(zstd::stream::read::Decoder::new(data).map_err(corrupt)?, limit),
        _ => Err(BatchError::InvalidRecord("unknown compression codec")),
    }
}

fn snappy_raw(data: &[u8], limit: usize) -> Result<Vec<u8>, BatchError> {
    let len = snap::raw::decompress_len(data).map_err(corrupt)?;
    if len > limit {
        return Err(BatchError::InvalidRecord(
            "the batch decompresses to more than the broker allows",
        ));
    }
    snap::raw::Decoder::new().decompress_vec(data).map_err(corrupt)
}

fn snappy_decompress(data: &[u8], limit: usize) -> Result<Vec<u8>, BatchError> {
    if !data.starts_with(&XERIAL_MAGIC) {
        return snappy_raw(data, limit);
    }
    // Magic (8), version (4), compatible version (4), then [length i32][block]...
    let mut rest = data.get(16..).ok_or(BatchError::Corrupt("truncated snappy stream"))?;
    let mut out = Vec::new();
    while !rest.is_empty() {
        let len_bytes: [u8; 4] = rest
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .ok_or(BatchError::Corrupt("truncated snappy stream"))?;
        let len = i32::from_be_bytes(len_bytes);
        let block = usize::try_from(len)
            .ok()
            .and_then(|l| rest.get(4..4 + l))
            .ok_or(BatchError::Corrupt("truncated snappy stream"))?;
        out.extend(snappy_raw(block, limit.saturating_sub(out.len()))?);
        rest = &rest[4 + block.len()..];
    }
    Ok(out)
}

/// Compresses a records section with `codec`.
pub fn compress(codec: i16, data: &[u8]) -> io::Result<Vec<u8>> {
    match codec {
        NONE => Ok(data.to_vec()),
        GZIP => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(data)?;
            e.finish()
        }
        SNAPPY => {
            let mut out = XERIAL_MAGIC.to_vec();
            out.extend_from_slice(&1i32.to_be_bytes());
            out.extend_from_slice(&1i32.to_be_bytes());
            let mut encoder = snap::raw::Encoder::new();
            for chunk in data.chunks(XERIAL_BLOCK) {
                let block = encoder.compress_vec(chunk).map_err(io::Error::other)?;
                out.extend_from_slice(&(block.len() as i32).to_be_bytes());
                out.extend_from_slice(&block);
            }
            Ok(out)
        }
        LZ4 => {
            let mut e = lz4_flex::frame::FrameEncoder::new(Vec::new());
            e.write_all(data)?;
            e.finish().map_err(io::Error::other)
        }
        ZSTD => zstd::stream::encode_all(data, 3),
        _ => Err(io::Error::other("unknown compression codec")),
    }
}

/// The records section of a whole batch, decompressed if it is compressed.
pub fn records_of<'a>(batch: &'a [u8], header: &BatchHeader, limit: usize) -> Result<Cow<'a, [u8]>, BatchError> {
    let body = batch
        .get(BATCH_HEADER_LEN..header.size)
        .ok_or(BatchError::Corrupt("batch shorter than its length"))?;
    match header.compression() {
        NONE => Ok(Cow::Borrowed(body)),
        codec => Ok(Cow::Owned(decompress(codec, body, limit)?)),
    }
}

/// A copy of `batch` whose records section is `records` (uncompressed, `count` of
/// them) compressed with `codec`: the header's offsets, timestamps and producer fields
/// stay, so every kept record keeps its offset; the length, record count, codec bits
/// and CRC are rewritten.
pub fn rebuild(batch: &[u8], records: &[u8], count: i32, codec: i16) -> io::Result<Vec<u8>> {
    let header = batch
        .get(..BATCH_HEADER_LEN)
        .ok_or_else(|| io::Error::other("batch shorter than its header"))?;
    let body = compress(codec, records)?;
    let mut out = Vec::with_capacity(BATCH_HEADER_LEN + body.len());
    out.extend_from_slice(header);
    out.extend_from_slice(&body);
    let length = (out.len() - BATCH_LENGTH_PREFIX) as i32;
    out[8..12].copy_from_slice(&length.to_be_bytes());
    let attributes = i16::from_be_bytes([out[ATTRIBUTES_POS], out[ATTRIBUTES_POS + 1]]);
    let attributes = (attributes & !COMPRESSION_MASK) | codec;
    out[ATTRIBUTES_POS..ATTRIBUTES_POS + 2].copy_from_slice(&attributes.to_be_bytes());
    out[RECORD_COUNT_POS..RECORD_COUNT_POS + 4].copy_from_slice(&count.to_be_bytes());
    let crc = crc32c::crc32c(&out[CRC_START..]);
    out[CRC_POS..CRC_POS + 4].copy_from_slice(&crc.to_be_bytes());
    Ok(out)
}

/// The offset deltas of the records of `batch` that have a null key (a compacted
/// topic refuses them: INVALID_RECORD with per-record errors, KIP-467).
pub fn keyless_records(batch: &[u8], header: &BatchHeader, limit: usize) -> Result<Vec<i32>, BatchError> {
    let records = records_of(batch, header, limit)?;
    let mut keyless = Vec::new();
    let mut index = 0;
    batch::for_each_record(&records, |r| {
        if r.key.is_none() {
            keyless.push(index);
        }
        index += 1;
        Ok(())
    })?;
    Ok(keyless)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_codec_round_trips_and_rebuilt_batches_pass_validation() {
        let batch = batch::build(
            &[(Some(b"k1"), Some(b"v1")), (None, Some(b"v2")), (Some(b"k3"), None)],
            7,
        );
        let header = BatchHeader::parse(&batch).unwrap();
        let records = records_of(&batch, &header, 1 << 20).unwrap().into_owned();
        for codec in [NONE, GZIP, SNAPPY, LZ4, ZSTD] {
            let rebuilt = rebuild(&batch, &records, 3, codec).unwrap();
            let h = batch::validate_produced(&rebuilt, 1 << 20).unwrap();
            assert_eq!(h.compression(), codec);
            assert_eq!(records_of(&rebuilt, &h, 1 << 20).unwrap().as_ref(), records.as_slice());
            assert_eq!(keyless_records(&rebuilt, &h, 1 << 20).unwrap(), vec![1]);
        }
    }

    #[test]
    fn raw_snappy_as_librdkafka_sends_it_is_read_and_bombs_are_refused() {
        let data = vec![7u8; 100_000];
        let raw = snap::raw::Encoder::new().compress_vec(&data).unwrap();
        assert_eq!(decompress(SNAPPY, &raw, 1 << 20).unwrap(), data);
        assert!(decompress(SNAPPY, &raw, 1000).is_err());
        let gz = compress(GZIP, &data).unwrap();
        assert!(decompress(GZIP, &gz, 1000).is_err());
        assert!(decompress(ZSTD, b"not zstd", 1000).is_err());
    }
}
