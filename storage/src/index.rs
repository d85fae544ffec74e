//! Sparse indexes of a segment: `<base>.index` maps a relative offset to a file
//! position, `<base>.timeindex` maps the largest timestamp seen so far to a relative
//! offset. Both are written the way Kafka lays them out (big-endian, 8 and 12 bytes an
//! entry) and kept in memory as well, so lookups never touch the disk. New entries
//! reach the file with the log's next write round (write-behind, like the log's own
//! tail). Neither is ever trusted over the log: recovery rebuilds an index that
//! disagrees with it.

use std::io;
use std::path::Path;

use bytes::Bytes;

use crate::io::handles::Handle;
use crate::io::{FileRef, Io};

/// One fixed-size entry of an index file.
pub trait Entry: Copy {
    const LEN: usize;
    fn encode(&self, out: &mut Vec<u8>);
    fn decode(buf: &[u8]) -> Self;
}

/// `<base>.index`: the relative offset of a batch and its byte position in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetEntry {
    pub relative_offset: u32,
    pub position: u32,
}

impl Entry for OffsetEntry {
    const LEN: usize = 8;
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.relative_offset.to_be_bytes());
        out.extend_from_slice(&self.position.to_be_bytes());
    }
    fn decode(buf: &[u8]) -> Self {
        OffsetEntry {
            relative_offset: u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]),
            position: u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]),
        }
    }
}

/// `<base>.timeindex`: by `relative_offset`, the largest timestamp seen is `timestamp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeEntry {
    pub timestamp: i64,
    pub relative_offset: u32,
}

impl Entry for TimeEntry {
    const LEN: usize = 12;
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        out.extend_from_slice(&self.relative_offset.to_be_bytes());
    }
    fn decode(buf: &[u8]) -> Self {
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&buf[0..8]);
        TimeEntry {
            timestamp: i64::from_be_bytes(ts),
            relative_offset: u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]),
        }
    }
}

/// An index file and its in-memory copy.
pub struct IndexFile<E: Entry> {
    entries: Vec<E>,
    file: Handle,
    /// Entries handed to a write round, and entries known to be in the file.
    submitted: usize,
    written: usize,
}

impl<E: Entry> IndexFile<E> {
    /// Opens (creating if absent) and reads every whole entry. A trailing partial entry
    /// is dropped; whether the entries agree with the log is for the caller to judge.
    pub fn open(io: &dyn Io, path: &Path) -> io::Result<Self> {
        let file = io.handle(path, false, true)?;
        let open = file.file()?;
        let len = open.size()? as usize;
        let mut raw = vec![0u8; len - len % E::LEN];
        open.read_exact_at(&mut raw, 0)?;
        let entries = raw.chunks_exact(E::LEN).map(E::decode).collect();
        let count = raw.len() / E::LEN;
        Ok(IndexFile {
            entries,
            file,
            submitted: count,
            written: count,
        })
    }

    pub fn entries(&self) -> &[E] {
        &self.entries
    }

    pub fn last(&self) -> Option<&E> {
        self.entries.last()
    }

    /// Adds an entry in memory; the next write round puts it in the file.
    pub fn push(&mut self, entry: E) {
        self.entries.push(entry);
    }

    /// The encoded entries not yet handed to a write round, and where they go.
    pub fn take_unwritten(&mut self) -> Option<(u64, Bytes)> {
        if self.submitted >= self.entries.len() {
            return None;
        }
        let mut raw = Vec::with_capacity((self.entries.len() - self.submitted) * E::LEN);
        for e in &self.entries[self.submitted..] {
            e.encode(&mut raw);
        }
        let pos = (self.submitted * E::LEN) as u64;
        self.submitted = self.entries.len();
        Some((pos, Bytes::from(raw)))
    }

    /// A write round put `bytes` more bytes of entries in the file.
    pub fn wrote(&mut self, bytes: u64) {
        self.written = (self.written + bytes as usize / E::LEN).min(self.entries.len());
    }

    /// Forgets rounds that never completed, so the next one writes their entries again.
    pub fn rewind(&mut self) {
        self.submitted = self.written;
    }

    /// Replaces the whole index, on disk too (recovery and truncation use this).
    pub fn replace(&mut self, entries: Vec<E>) -> io::Result<()> {
        let mut raw = Vec::with_capacity(entries.len() * E::LEN);
        for e in &entries {
            e.encode(&mut raw);
        }
        let file = self.file.file()?;
        file.set_len(0)?;
        file.write_all_at(&raw, 0)?;
        self.submitted = entries.len();
        self.written = entries.len();
        self.entries = entries;
        Ok(())
    }

    /// The file, for a flush job to sync.
    pub fn file(&self) -> io::Result<FileRef> {
        self.file.file()
    }

    /// Whether every entry was handed to a write round.
    pub fn fully_submitted(&self) -> bool {
        self.submitted >= self.entries.len()
    }

    /// The file when entries wait to be written (see [`IndexFile::take_unwritten`]).
    pub fn file_if_unwritten(&self) -> io::Result<Option<FileRef>> {
        if self.fully_submitted() {
            return Ok(None);
        }
        self.file.file().map(Some)
    }
}

impl IndexFile<OffsetEntry> {
    /// The last entry at or before `relative_offset`: where a scan for it starts.
    pub fn floor(&self, relative_offset: u32) -> Option<OffsetEntry> {
        let i = self.entries.partition_point(|e| e.relative_offset <= relative_offset);
        i.checked_sub(1).map(|i| self.entries[i])
    }
}

impl IndexFile<TimeEntry> {
    /// The last entry whose timestamp is below `timestamp`: every batch up to its
    /// offset is older than `timestamp`, so a search can start there.
    pub fn last_below(&self, timestamp: i64) -> Option<TimeEntry> {
        let i = self.entries.partition_point(|e| e.timestamp < timestamp);
        i.checked_sub(1).map(|i| self.entries[i])
    }
}
