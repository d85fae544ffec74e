//! The records of `__consumer_offsets`, in Kafka's own layout so Kafka's tools can read
//! them: OffsetCommitKey v1 → OffsetCommitValue v3, and GroupMetadataKey v2 →
//! GroupMetadataValue v3. A null value is a tombstone. All integers are big-endian;
//! strings carry an i16 length (-1 for null), bytes an i32 length.

use bytes::Bytes;

const OFFSET_KEY_VERSION: i16 = 1;
const GROUP_KEY_VERSION: i16 = 2;
const OFFSET_VALUE_VERSION: i16 = 3;
const GROUP_VALUE_VERSION: i16 = 3;

/// A committed offset as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp_ms: i64,
}

/// A member as stored with its group's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    pub subscription: Bytes,
    pub assignment: Bytes,
}

/// A group's metadata as stored after each completed rebalance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredGroup {
    pub protocol_type: String,
    pub generation: i32,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub state_timestamp_ms: i64,
    pub members: Vec<StoredMember>,
}

/// One decoded record of `__consumer_offsets`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OffsetsRecord {
    Offset {
        group: String,
        topic: String,
        partition: i32,
        value: Option<Committed>,
    },
    Group {
        group: String,
        value: Option<StoredGroup>,
    },
}

pub fn offset_key(group: &str, topic: &str, partition: i32) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&OFFSET_KEY_VERSION.to_be_bytes());
    put_string(&mut out, Some(group));
    put_string(&mut out, Some(topic));
    out.extend_from_slice(&partition.to_be_bytes());
    out
}

pub fn offset_value(c: &Committed) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&OFFSET_VALUE_VERSION.to_be_bytes());
    out.extend_from_slice(&c.offset.to_be_bytes());
    out.extend_from_slice(&c.leader_epoch.to_be_bytes());
    put_string(&mut out, Some(&c.metadata));
    out.extend_from_slice(&c.commit_timestamp_ms.to_be_bytes());
    out
}

pub fn group_key(group: &str) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&GROUP_KEY_VERSION.to_be_bytes());
    put_string(&mut out, Some(group));
    out
}

pub fn group_value(g: &StoredGroup) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&GROUP_VALUE_VERSION.to_be_bytes());
    put_string(&mut out, Some(&g.protocol_type));
    out.extend_from_slice(&g.generation.to_be_bytes());
    put_string(&mut out, g.protocol.as_deref());
    put_string(&mut out, g.leader.as_deref());
    out.extend_from_slice(&g.state_timestamp_ms.to_be_bytes());
    out.extend_from_slice(&(g.members.len() as i32).to_be_bytes());
    for m in &g.members {
        put_string(&mut out, Some(&m.member_id));
        put_string(&mut out, m.group_instance_id.as_deref());
        put_string(&mut out, Some(&m.client_id));
        put_string(&mut out, Some(&m.client_host));
        out.extend_from_slice(&m.rebalance_timeout_ms.to_be_bytes());
        out.extend_from_slice(&m.session_timeout_ms.to_be_bytes());
        put_bytes(&mut out, &m.subscription);
        put_bytes(&mut out, &m.assignment);
    }
    out
}

/// Decodes a record; None for a key version this broker does not know (skipped).
pub fn decode(key: &[u8], value: Option<&[u8]>) -> Option<OffsetsRecord> {
    let mut k = Reader(key);
    match k.i16()? {
        0 | OFFSET_KEY_VERSION => {
            let group = k.string()?;
            let topic = k.string()?;
            let partition = k.i32()?;
            let value = match value {
                None => None,
                Some(v) => Some(decode_offset_value(v)?),
            };
            Some(OffsetsRecord::Offset {
                group,
                topic,
                partition,
                value,
            })
        }
        GROUP_KEY_VERSION => {
            let group = k.string()?;
            let value = match value {
                None => None,
                Some(v) => Some(decode_group_value(v)?),
            };
            Some(OffsetsRecord::Group { group, value })
        }
        _ => None,
    }
}

fn decode_offset_value(v: &[u8]) -> Option<Committed> {
    let mut r = Reader(v);
    let version = r.i16()?;
    let offset = r.i64()?;
    let leader_epoch = if version >= 3 { r.i32()? } else { -1 };
    let metadata = r.string()?;
    let commit_timestamp_ms = r.i64()?;
    Some(Committed {
        offset,
        leader_epoch,
        metadata,
        commit_timestamp_ms,
    })
}

fn decode_group_value(v: &[u8]) -> Option<StoredGroup> {
    let mut r = Reader(v);
    let version = r.i16()?;
    if version != GROUP_VALUE_VERSION {
        return None;
    }
    let protocol_type = r.string()?;
    let generation = r.i32()?;
    let protocol = r.nullable_string()?;
    let leader = r.nullable_string()?;
    let state_timestamp_ms = r.i64()?;
    let count = r.i32()?;
    let mut members = Vec::new();
    for _ in 0..count.max(0) {
        members.push(StoredMember {
            member_id: r.string()?,
            group_instance_id: r.nullable_string()?,
            client_id: r.string()?,
            client_host: r.string()?,
            rebalance_timeout_ms: r.i32()?,
            session_timeout_ms: r.i32()?,
            subscription: r.bytes()?,
            assignment: r.bytes()?,
        });
    }
    Some(StoredGroup {
        protocol_type,
        generation,
        protocol,
        leader,
        state_timestamp_ms,
        members,
    })
}

pub(crate) fn put_string(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => {
            // The coordinator refuses ids this long; the cap only keeps the encoding sound.
            let bytes = &s.as_bytes()[..s.len().min(i16::MAX as usize)];
            out.extend_from_slice(&(bytes.len() as i16).to_be_bytes());
            out.extend_from_slice(bytes);
        }
        None => out.extend_from_slice(&(-1i16).to_be_bytes()),
    }
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as i32).to_be_bytes());
    out.extend_from_slice(b);
}

/// Bounds-checked reads: a damaged record decodes to None, never a panic. Shared
/// by every internal topic's records (`__transaction_state`'s too).
pub(crate) struct Reader<'a>(pub &'a [u8]);

impl Reader<'_> {
    pub fn i8(&mut self) -> Option<i8> {
        self.take(1).map(|b| b[0] as i8)
    }
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }
    pub fn i16(&mut self) -> Option<i16> {
        self.take(2).map(|b| i16::from_be_bytes([b[0], b[1]]))
    }
    pub fn i32(&mut self) -> Option<i32> {
        self.take(4).map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    pub fn i64(&mut self) -> Option<i64> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Some(i64::from_be_bytes(a))
    }
    pub fn nullable_string(&mut self) -> Option<Option<String>> {
        let len = self.i16()?;
        if len < 0 {
            return Some(None);
        }
        let b = self.take(len as usize)?;
        Some(Some(String::from_utf8_lossy(b).into_owned()))
    }
    pub fn string(&mut self) -> Option<String> {
        self.nullable_string().map(Option::unwrap_or_default)
    }
    pub fn bytes(&mut self) -> Option<Bytes> {
        let len = self.i32()?;
        if len < 0 {
            return Some(Bytes::new());
        }
        self.take(len as usize).map(Bytes::copy_from_slice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_and_groups_round_trip() {
        let c = Committed {
            offset: 42,
            leader_epoch: 3,
            metadata: "meta".into(),
            commit_timestamp_ms: 7,
        };
        let rec = decode(&offset_key("g", "t", 5), Some(&offset_value(&c)));
        assert_eq!(
            rec,
            Some(OffsetsRecord::Offset {
                group: "g".into(),
                topic: "t".into(),
                partition: 5,
                value: Some(c)
            })
        );
        let g = StoredGroup {
            protocol_type: "consumer".into(),
            generation: 4,
            protocol: Some("range".into()),
            leader: Some("m1".into()),
            state_timestamp_ms: 9,
            members: vec![StoredMember {
                member_id: "m1".into(),
                group_instance_id: None,
                client_id: "c".into(),
                client_host: "/127.0.0.1".into(),
                rebalance_timeout_ms: 1,
                session_timeout_ms: 2,
                subscription: Bytes::from_static(b"sub"),
                assignment: Bytes::from_static(b"asg"),
            }],
        };
        assert_eq!(
            decode(&group_key("g"), Some(&group_value(&g))),
            Some(OffsetsRecord::Group {
                group: "g".into(),
                value: Some(g)
            })
        );
        assert_eq!(
            decode(&group_key("g"), None),
            Some(OffsetsRecord::Group {
                group: "g".into(),
                value: None
            })
        );
        assert_eq!(decode(&[0, 9, 1], None), None);
    }
}
