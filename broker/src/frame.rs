//! Response frames as runs of bytes, so record data leaves the broker without being
//! copied into the frame.
//!
//! A Fetch answer is mostly records the log already holds as `Bytes` (its in-memory
//! tail, the read cache, a disk read). Encoding it into one buffer copied every fetched
//! byte once more before the socket's own copy; a follower's fetch paid it per replica.
//! `encode` writes the frame through [`Splice`], which keeps each large run of the
//! shared `Bytes` as it is, and the connection writes the runs with one vectored write
//! ([`Runs`]).

use std::collections::VecDeque;
use std::io::IoSlice;
use std::ops::Range;

use bytes::buf::UninitSlice;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::protocol::buf::ByteBufMut;

/// Runs shorter than this are copied: a writev entry costs about what copying a few
/// KiB does, and answers of a few hundred bytes gather better in one buffer.
const SHARE_MIN: usize = 4 << 10;

/// An encoded response: length prefix, header and body, as consecutive runs.
#[derive(Debug, Default)]
pub struct Frame {
    runs: Vec<Bytes>,
}

impl Frame {
    pub fn into_runs(self) -> Vec<Bytes> {
        self.runs
    }

    /// The frame as one buffer (tests, and callers that need it contiguous).
    #[cfg(test)]
    pub fn to_vec(&self) -> Vec<u8> {
        self.runs.iter().flat_map(|r| r.iter().copied()).collect()
    }
}

/// The buffer a response is encoded into. A slice put into it that lies inside one of
/// the `shared` buffers (and is at least [`SHARE_MIN`] long) becomes a run of that
/// buffer instead of a copy; everything else is copied into the current run.
pub struct Splice {
    runs: Vec<Bytes>,
    /// Bytes in `runs`.
    before: usize,
    current: BytesMut,
    shared: Vec<Bytes>,
}

impl Splice {
    /// A buffer for a frame of about `capacity` copied bytes, sharing slices of `shared`.
    pub fn new(capacity: usize, shared: Vec<Bytes>) -> Splice {
        let shared: Vec<Bytes> = shared.into_iter().filter(|b| b.len() >= SHARE_MIN).collect();
        let copied = capacity.saturating_sub(shared.iter().map(Bytes::len).sum());
        Splice {
            runs: Vec::new(),
            before: 0,
            current: BytesMut::with_capacity(copied),
            shared,
        }
    }

    pub fn finish(mut self) -> Frame {
        if !self.current.is_empty() {
            self.runs.push(self.current.freeze());
        }
        Frame { runs: self.runs }
    }

    /// The shared buffer `src` lies in, as a run of it.
    fn shared_run(&self, src: &[u8]) -> Option<Bytes> {
        let start = src.as_ptr() as usize;
        let end = start + src.len();
        self.shared
            .iter()
            .find(|b| {
                let base = b.as_ptr() as usize;
                base <= start && end <= base + b.len()
            })
            .map(|b| b.slice_ref(src))
    }

    /// Makes everything written so far one run again, for the rare encoder that goes
    /// back into what it wrote (size gaps in record batches; no response does).
    fn rejoin(&mut self) {
        if self.runs.is_empty() {
            return;
        }
        let mut all = BytesMut::with_capacity(self.before + self.current.len());
        for run in self.runs.drain(..) {
            all.extend_from_slice(&run);
        }
        all.extend_from_slice(&self.current);
        self.current = all;
        self.before = 0;
    }
}

// SAFETY: every method hands on to `current`, a BytesMut, whose own implementation
// upholds BufMut's contract; `put_slice` only adds whole runs before it.
#[allow(unsafe_code)]
unsafe impl BufMut for Splice {
    fn remaining_mut(&self) -> usize {
        self.current.remaining_mut()
    }

    unsafe fn advance_mut(&mut self, cnt: usize) {
        // SAFETY: the caller initialised `cnt` bytes of `chunk_mut`, which is current's.
        unsafe { self.current.advance_mut(cnt) }
    }

    fn chunk_mut(&mut self) -> &mut UninitSlice {
        self.current.chunk_mut()
    }

    fn put_slice(&mut self, src: &[u8]) {
        if src.len() >= SHARE_MIN {
            if let Some(run) = self.shared_run(src) {
                if !self.current.is_empty() {
                    self.before += self.current.len();
                    self.runs.push(self.current.split().freeze());
                }
                self.before += run.len();
                self.runs.push(run);
                return;
            }
        }
        self.current.extend_from_slice(src);
    }
}

impl ByteBufMut for Splice {
    fn offset(&self) -> usize {
        self.before + self.current.len()
    }

    fn seek(&mut self, offset: usize) {
        if offset < self.before {
            self.rejoin();
        }
        self.current.resize(offset - self.before, 0);
    }

    fn range(&mut self, r: Range<usize>) -> &mut [u8] {
        if r.start < self.before {
            self.rejoin();
        }
        let before = self.before;
        &mut self.current[r.start - before..r.end - before]
    }
}

/// Frames on their way to the socket: small runs gathered into one buffer, large ones
/// kept as they are, all written by vectored writes.
#[derive(Default)]
pub struct Runs {
    runs: VecDeque<Bytes>,
    gathered: BytesMut,
    remaining: usize,
}

impl Runs {
    pub fn push(&mut self, frame: Frame) {
        for run in frame.into_runs() {
            if run.is_empty() {
                continue;
            }
            self.remaining += run.len();
            if run.len() < SHARE_MIN {
                self.gathered.extend_from_slice(&run);
            } else {
                self.end_gathered();
                self.runs.push_back(run);
            }
        }
    }

    /// Bytes pushed and not yet written.
    pub fn len(&self) -> usize {
        self.remaining
    }

    pub fn is_empty(&self) -> bool {
        self.remaining == 0
    }

    /// Call before writing: what was gathered last becomes a run.
    pub fn seal(&mut self) {
        self.end_gathered();
    }

    fn end_gathered(&mut self) {
        if !self.gathered.is_empty() {
            self.runs.push_back(self.gathered.split().freeze());
        }
    }
}

impl Buf for Runs {
    fn remaining(&self) -> usize {
        self.remaining - self.gathered.len()
    }

    fn chunk(&self) -> &[u8] {
        self.runs.front().map_or(&[], |r| r)
    }

    fn advance(&mut self, mut cnt: usize) {
        while cnt > 0 {
            let Some(front) = self.runs.front_mut() else { break };
            if cnt < front.len() {
                front.advance(cnt);
                self.remaining -= cnt;
                return;
            }
            cnt -= front.len();
            self.remaining -= front.len();
            self.runs.pop_front();
        }
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        for (slot, run) in dst.iter_mut().zip(self.runs.iter()) {
            *slot = IoSlice::new(run);
            n += 1;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use kafka_protocol::messages::{FetchResponse, TopicName};
    use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

    fn response(records: &[Bytes]) -> FetchResponse {
        let partitions = records
            .iter()
            .enumerate()
            .map(|(i, r)| {
                PartitionData::default()
                    .with_partition_index(i as i32)
                    .with_records(Some(r.clone()))
            })
            .collect();
        FetchResponse::default().with_responses(vec![FetchableTopicResponse::default()
            .with_topic(TopicName(StrBytes::from_static_str("t")))
            .with_partitions(partitions)])
    }

    #[test]
    fn shared_records_are_runs_of_their_buffers_and_the_frame_decodes_as_encoded() {
        let big: Bytes = (0..100_000u32).map(|i| i as u8).collect();
        let small = Bytes::from_static(b"tiny records");
        let records = vec![big.slice(10..60_000), small.clone(), big.slice(60_000..)];
        let body = response(&records);
        for version in [4, 11, 12, 16] {
            let mut plain = BytesMut::new();
            body.encode(&mut plain, version).expect("encode");
            let mut splice = Splice::new(0, vec![big.clone(), small.clone()]);
            body.encode(&mut splice, version).expect("encode");
            let frame = splice.finish();
            assert_eq!(frame.to_vec(), plain.to_vec(), "v{version}");
            // The two large slices went out as runs of `big`, not as copies.
            let shared = frame
                .into_runs()
                .iter()
                .filter(|r| {
                    let p = r.as_ptr() as usize;
                    let b = big.as_ptr() as usize;
                    p >= b && p < b + big.len()
                })
                .count();
            assert_eq!(shared, 2, "v{version}");
            let decoded = FetchResponse::decode(&mut plain.freeze(), version).expect("decode");
            let got: Vec<Option<Bytes>> = decoded.responses[0]
                .partitions
                .iter()
                .map(|p| p.records.clone())
                .collect();
            let want: Vec<Option<Bytes>> = records.iter().cloned().map(Some).collect();
            assert!(got == want, "v{version}: the records decode as they were given");
        }
    }

    #[test]
    fn going_back_into_written_bytes_rejoins_the_runs() {
        let big: Bytes = vec![7u8; 10_000].into();
        let mut splice = Splice::new(0, vec![big.clone()]);
        splice.put_slice(b"head");
        splice.put_slice(&big);
        splice.put_slice(b"tail");
        splice.range(0..4).copy_from_slice(b"HEAD");
        let mut want = b"HEAD".to_vec();
        want.extend_from_slice(&big);
        want.extend_from_slice(b"tail");
        assert_eq!(splice.finish().to_vec(), want);
    }

    #[test]
    fn runs_write_in_order_across_partial_writes() {
        let big: Bytes = (0..20_000u32).map(|i| (i % 251) as u8).collect();
        let mut runs = Runs::default();
        let mut splice = Splice::new(0, vec![big.clone()]);
        splice.put_slice(b"a");
        splice.put_slice(&big);
        splice.put_slice(b"b");
        runs.push(splice.finish());
        let mut second = Splice::new(0, Vec::new());
        second.put_slice(b"cd");
        runs.push(second.finish());
        runs.seal();
        let mut want = b"a".to_vec();
        want.extend_from_slice(&big);
        want.extend_from_slice(b"bcd");
        assert_eq!(runs.remaining(), want.len());
        let mut got = Vec::new();
        // Odd-sized "writes", as a socket might take them.
        while runs.has_remaining() {
            let mut slices = [IoSlice::new(&[]); 4];
            let n = runs.chunks_vectored(&mut slices);
            let mut take = 777;
            for s in &slices[..n] {
                let k = s.len().min(take);
                got.extend_from_slice(&s[..k]);
                take -= k;
            }
            runs.advance(777 - take);
        }
        assert_eq!(got, want);
        assert!(runs.is_empty());
    }
}
