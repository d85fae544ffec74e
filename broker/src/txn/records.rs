//! The records of `__transaction_state`, in Kafka's own layout so Kafka's tools can read
//! them: TransactionLogKey v0 (version i16, transactional id string) →
//! TransactionLogValue v0 (producer id i64, producer epoch i16, timeout i32, state i8,
//! partitions [topic string, [partition i32]], last update time i64, start time i64).
//! A null value is a tombstone. Big-endian; strings carry an i16 length.

use std::collections::BTreeSet;

use super::machine::{TxnMetadata, TxnState};
use crate::group::records::{put_string, Reader};

const KEY_VERSION: i16 = 0;
const VALUE_VERSION: i16 = 0;

pub fn key(transactional_id: &str) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&KEY_VERSION.to_be_bytes());
    put_string(&mut out, Some(transactional_id));
    out
}

pub fn value(m: &TxnMetadata) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&VALUE_VERSION.to_be_bytes());
    out.extend_from_slice(&m.producer_id.to_be_bytes());
    out.extend_from_slice(&m.producer_epoch.to_be_bytes());
    out.extend_from_slice(&m.timeout_ms.to_be_bytes());
    out.push(m.state.id() as u8);
    let mut topics: Vec<(&str, Vec<i32>)> = Vec::new();
    for (topic, partition) in &m.partitions {
        match topics.last_mut() {
            Some((t, ps)) if *t == topic.as_str() => ps.push(*partition),
            _ => topics.push((topic, vec![*partition])),
        }
    }
    out.extend_from_slice(&(topics.len() as i32).to_be_bytes());
    for (topic, partitions) in topics {
        put_string(&mut out, Some(topic));
        out.extend_from_slice(&(partitions.len() as i32).to_be_bytes());
        for p in partitions {
            out.extend_from_slice(&p.to_be_bytes());
        }
    }
    out.extend_from_slice(&m.last_update_ms.to_be_bytes());
    out.extend_from_slice(&m.start_ms.to_be_bytes());
    out
}

/// Decodes a record: the transactional id and its state (None for a tombstone); None
/// for a record this broker does not know (skipped).
pub fn decode(key: &[u8], value: Option<&[u8]>) -> Option<(String, Option<TxnMetadata>)> {
    let mut k = Reader(key);
    if k.i16()? != KEY_VERSION {
        return None;
    }
    let transactional_id = k.string()?;
    let Some(value) = value else {
        return Some((transactional_id, None));
    };
    let mut v = Reader(value);
    // v1 (Kafka 4) adds tagged fields after the same fields; those are not read.
    if !(0..=1).contains(&v.i16()?) {
        return None;
    }
    let producer_id = v.i64()?;
    let producer_epoch = v.i16()?;
    let timeout_ms = v.i32()?;
    let state = TxnState::from_id(v.i8()?)?;
    let topics = v.i32()?;
    let mut partitions = BTreeSet::new();
    for _ in 0..topics.max(0) {
        let topic = v.string()?;
        let count = v.i32()?;
        for _ in 0..count.max(0) {
            partitions.insert((topic.clone(), v.i32()?));
        }
    }
    let last_update_ms = v.i64()?;
    let start_ms = v.i64()?;
    Some((
        transactional_id.clone(),
        Some(TxnMetadata {
            transactional_id,
            producer_id,
            producer_epoch,
            timeout_ms,
            state,
            partitions,
            last_update_ms,
            start_ms,
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips() {
        let m = TxnMetadata {
            transactional_id: "t-1".into(),
            producer_id: 42,
            producer_epoch: 3,
            timeout_ms: 60000,
            state: TxnState::PrepareCommit,
            partitions: [("a".to_string(), 0), ("a".to_string(), 2), ("b".to_string(), 1)].into(),
            last_update_ms: 7,
            start_ms: 5,
        };
        assert_eq!(
            decode(&key("t-1"), Some(&value(&m))),
            Some(("t-1".to_string(), Some(m)))
        );
        assert_eq!(decode(&key("t-1"), None), Some(("t-1".to_string(), None)));
        assert_eq!(decode(&[0, 9], None), None);
    }
}
