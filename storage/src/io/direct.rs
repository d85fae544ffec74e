//! Direct I/O for segment log files (issue 16): appends go to the disk by DMA from
//! aligned buffers this module owns and reuses, instead of being copied into freshly
//! allocated page-cache pages (81 % of the broker's CPU when it was buffered).
//!
//! A [`DirectFile`] wraps a file opened with `O_DIRECT` (or, in tests, the simulated
//! disk) and is the only thing that knows alignment. Every transfer is [`BLOCK`]-aligned
//! in position, length and memory. An append is *staged* ([`DirectFile::stage`]): the
//! file's partial last block (kept in memory, at most one block) and the new bytes are
//! copied once into aligned buffers, padded with zeros to a whole block; the engine
//! writes them, and [`DirectFile::commit`] records the new end. The next append starts
//! by rewriting that partial block, as Redpanda's segment appender does, so the file's
//! length on disk may run past its logical end by less than a block of zeros until the
//! segment is sealed or the broker shuts down (`IoFile::trim`); a crash in between
//! leaves zeros that recovery cuts off like any torn tail.
//!
//! Reads are served from the shard's [`Shared`] cache of recently written and read
//! chunks (bounded by `--log-cache-bytes`, oldest first out), so the hot tail never
//! touches the disk; a miss reads aligned from the disk in steps of at least
//! [`READ_STEP`], one step ahead of the reader, and keeps what it read. The page cache
//! holds none of it: no double caching.
//!
//! Segment files grow by preallocated extents (`fallocate` with `KEEP_SIZE`, doubling
//! from [`PREALLOCATE_MIN`] to [`PREALLOCATE_MAX`]), so appends rarely allocate blocks;
//! trimming gives back what a sealed segment did not use.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use bytes::Bytes;

use super::IoFile;

/// Alignment of every direct transfer (position, length, memory address). The logical
/// block size of the disks we run on is 512 or 4096 bytes; 4 KiB satisfies both.
pub const BLOCK: usize = 4096;

/// The largest buffer a write is staged into, and the largest size class the pool
/// keeps: a round's bytes for one file go out as several of these in one writev.
/// 1 MiB keeps a spare buffer's memory modest while making each iovec a large DMA.
pub const CHUNK_MAX: usize = 1 << 20;

/// A read that misses the cache reads at least this much, and this much more than it
/// was asked for (one step of readahead for a sequential consumer).
pub const READ_STEP: usize = 256 << 10;

/// The most one cache-missing read fetches: a consumer's 1 MiB step with its readahead,
/// or one of the log's largest (4 MiB) steps alone; a huge first batch (KIP-74) is
/// still read whole.
const READ_MAX: usize = 4 << 20;

/// A synchronous read (recovery scans, index rebuilds, lookups by timestamp) that
/// misses reads this window, so the header-by-header scans that follow hit the cache.
const SYNC_READ_WINDOW: usize = 1 << 20;

/// Preallocation grows a file's extent by its current size, within these bounds: a
/// small partition reserves little disk, a busy one allocates rarely.
pub const PREALLOCATE_MIN: u64 = 1 << 20;
pub const PREALLOCATE_MAX: u64 = 64 << 20;

/// Memory the pool keeps in spare buffers per shard; more is unmapped. The cache's
/// evictions hand buffers back about as fast as rounds take them, so a few MiB keep
/// mapping (and the page faults of fresh memory) off the hot path.
const SPARE_BYTES_MAX: usize = 8 << 20;

/// Spare buffers by size class.
struct Spares {
    classes: Vec<Vec<Memory>>,
    bytes: usize,
}

/// Size classes: `BLOCK << k` for k in 0..CLASSES, up to `POOLED_MAX`.
const CLASSES: usize = 11;

/// The largest buffer the pool keeps: a cache-missing read of a backlog takes up to
/// 4 MiB (a consumer's 1 MiB step with readahead, or a follower's whole step), so
/// reads come from the pool too
/// (measured: without it a cold 2 GiB consume mapped ~9,700 fresh buffers).
pub(crate) const POOLED_MAX: usize = BLOCK << (CLASSES - 1);

fn align_down(n: u64) -> u64 {
    n - n % BLOCK as u64
}

fn align_up(n: usize) -> usize {
    n.div_ceil(BLOCK) * BLOCK
}

/// Process-wide counters for the metrics page.
pub struct Stats {
    pub cache_hits: AtomicU64,
    pub cache_misses: AtomicU64,
    pub cache_bytes: AtomicU64,
    pub bytes_written: AtomicU64,
    pub bytes_read: AtomicU64,
    /// Buffers mapped afresh because the pool had no spare (each costs page faults).
    pub buffers_mapped: AtomicU64,
    pub buffers_unmapped: AtomicU64,
}

pub static STATS: Stats = Stats {
    cache_hits: AtomicU64::new(0),
    cache_misses: AtomicU64::new(0),
    cache_bytes: AtomicU64::new(0),
    bytes_written: AtomicU64::new(0),
    bytes_read: AtomicU64::new(0),
    buffers_mapped: AtomicU64::new(0),
    buffers_unmapped: AtomicU64::new(0),
};

/// Whether files under `dir` can be opened with `O_DIRECT` and written through an
/// aligned buffer (tmpfs, for one, refuses with EINVAL).
pub fn probe(dir: &Path) -> io::Result<()> {
    let path = dir.join(".sluice-direct-probe");
    let result = (|| {
        let file = open_direct(&path, true)?;
        let mut buf = AlignedBuf::fresh(BLOCK)?;
        buf.as_mut_slice().fill(0);
        file.write_all_at(buf.as_mut_slice(), 0)?;
        Ok(())
    })();
    let _ = std::fs::remove_file(&path);
    result
}

/// Opens `path` with `O_DIRECT` for reading and writing, never truncating.
pub fn open_direct(path: &Path, create: bool) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .truncate(false)
        .custom_flags(libc::O_DIRECT)
        .open(path)
}

/// A buffer's memory. Small buffers (up to [`HEAP_MAX`]) come from the heap as
/// [`BLOCK`]-aligned blocks: with thousands of busy partitions a round stages a 4 KiB
/// block per partition, and mapping and unmapping each (a syscall, a page fault and a
/// TLB shootdown of every core) took a fifth of the broker's CPU. Larger ones are
/// mapped anonymous memory, given back to the system when unmapped, so the broker's
/// memory follows what the cache and the pool hold rather than what the allocator
/// kept from the churn of MiB-sized reads.
enum Memory {
    Heap(Vec<Block>),
    Mapped(memmap2::MmapMut),
}

/// One aligned block of heap memory.
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C, align(4096))]
struct Block([u8; BLOCK]);

/// Gives a buffer's memory back to the heap or the system.
fn release(memory: Option<Memory>) {
    if let Some(Memory::Mapped(_)) = memory {
        STATS.buffers_unmapped.fetch_add(1, Ordering::Relaxed);
    }
}

/// The largest buffer taken from the heap rather than mapped.
const HEAP_MAX: usize = 64 << 10;

impl std::ops::Deref for Memory {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Memory::Heap(blocks) => bytemuck::cast_slice(blocks),
            Memory::Mapped(m) => m,
        }
    }
}

impl std::ops::DerefMut for Memory {
    fn deref_mut(&mut self) -> &mut [u8] {
        match self {
            Memory::Heap(blocks) => bytemuck::cast_slice_mut(blocks),
            Memory::Mapped(m) => m,
        }
    }
}

fn map(len: usize) -> io::Result<Memory> {
    if len <= HEAP_MAX {
        return Ok(Memory::Heap(vec![Block([0; BLOCK]); len.div_ceil(BLOCK)]));
    }
    STATS.buffers_mapped.fetch_add(1, Ordering::Relaxed);
    memmap2::MmapMut::map_anon(len).map(Memory::Mapped)
}

/// A [`BLOCK`]-aligned buffer, of heap blocks or mapped memory. Dropped, it goes back
/// to the pool it came from.
pub struct AlignedBuf {
    memory: Option<Memory>,
    cap: usize,
    pool: Weak<Shared>,
}

impl AlignedBuf {
    fn fresh(cap: usize) -> io::Result<AlignedBuf> {
        Ok(AlignedBuf::from_memory(map(cap)?, cap, Weak::new()))
    }

    fn from_memory(memory: Memory, cap: usize, pool: Weak<Shared>) -> AlignedBuf {
        AlignedBuf {
            memory: Some(memory),
            cap,
            pool,
        }
    }

    pub fn capacity(&self) -> usize {
        self.cap
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        match &mut self.memory {
            Some(m) => &mut m[..self.cap],
            None => &mut [],
        }
    }

    fn as_slice(&self) -> &[u8] {
        match &self.memory {
            Some(m) => &m[..self.cap],
            None => &[],
        }
    }

    /// The first `len` bytes as shared, immutable bytes; the buffer returns to its pool
    /// when the last of them is dropped.
    pub fn freeze(self, len: usize) -> Bytes {
        Bytes::from_owner(Frozen {
            len: len.min(self.cap),
            buf: self,
        })
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        if let (Some(pool), Some(memory)) = (self.pool.upgrade(), self.memory.take()) {
            pool.give_back(memory, self.cap);
        }
    }
}

struct Frozen {
    buf: AlignedBuf,
    len: usize,
}

impl AsRef<[u8]> for Frozen {
    fn as_ref(&self) -> &[u8] {
        &self.buf.as_slice()[..self.len]
    }
}

/// A shard's direct-I/O state shared by its files: the cache of recent chunks and the
/// pool of aligned buffers. Files are `Send + Sync`, hence the mutexes; only the
/// shard's thread takes them, so they are never contended.
pub struct Shared {
    cache: Mutex<Cache>,
    spares: Mutex<Spares>,
    next_file: AtomicU64,
    me: Weak<Shared>,
}

impl Shared {
    /// A shard's state with a cache of at most `cache_bytes`.
    pub fn new(cache_bytes: usize) -> Arc<Shared> {
        Arc::new_cyclic(|me| Shared {
            cache: Mutex::new(Cache {
                entries: BTreeMap::new(),
                order: VecDeque::new(),
                bytes: 0,
                max: cache_bytes,
                seq: 0,
            }),
            spares: Mutex::new(Spares {
                classes: (0..CLASSES).map(|_| Vec::new()).collect(),
                bytes: 0,
            }),
            next_file: AtomicU64::new(1),
            me: me.clone(),
        })
    }

    fn cache(&self) -> MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An aligned buffer of at least `len` bytes: a spare of its size class when there
    /// is one, a fresh one otherwise (larger than `CHUNK_MAX`: exact and not pooled).
    pub fn buffer(&self, len: usize) -> io::Result<AlignedBuf> {
        let len = align_up(len.max(1));
        let Some(class) = class_of(len) else {
            return AlignedBuf::fresh(len);
        };
        // The smallest spare that is large enough: a larger one serves a small need
        // (and counts at its own size in the cache) rather than a fresh mapping.
        let spare = {
            let mut spares = self.spares.lock().unwrap_or_else(|p| p.into_inner());
            let found = (class..CLASSES).find(|&c| !spares.classes[c].is_empty());
            found.and_then(|c| {
                let memory = spares.classes[c].pop()?;
                spares.bytes -= BLOCK << c;
                Some((memory, BLOCK << c))
            })
        };
        let (memory, cap) = match spare {
            Some(spare) => spare,
            None => (map(BLOCK << class)?, BLOCK << class),
        };
        Ok(AlignedBuf::from_memory(memory, cap, self.me.clone()))
    }

    fn give_back(&self, memory: Memory, cap: usize) {
        let Some(class) = class_of(cap).filter(|&c| BLOCK << c == cap) else {
            return;
        };
        let mut spares = self.spares.lock().unwrap_or_else(|p| p.into_inner());
        // Full: smaller spares go first, since a large one can serve any need.
        while spares.bytes + cap > SPARE_BYTES_MAX {
            let Some(c) = (0..class).find(|&c| !spares.classes[c].is_empty()) else {
                break;
            };
            release(spares.classes[c].pop());
            spares.bytes -= BLOCK << c;
        }
        if spares.bytes + cap <= SPARE_BYTES_MAX {
            spares.classes[class].push(memory);
            spares.bytes += cap;
        } else {
            release(Some(memory));
        }
    }

    fn new_file_id(&self) -> u64 {
        self.next_file.fetch_add(1, Ordering::Relaxed)
    }
}

/// The size class holding `len` bytes, if it is pooled.
fn class_of(len: usize) -> Option<usize> {
    if len > POOLED_MAX {
        return None;
    }
    let blocks = len.div_ceil(BLOCK).next_power_of_two();
    Some(blocks.trailing_zeros() as usize)
}

/// Recently written and read chunks of a shard's files, keyed by (file, position):
/// each holds the valid bytes of one aligned buffer. Bounded by bytes held (each entry
/// costs its whole buffer); the oldest entries go first.
struct Cache {
    entries: BTreeMap<(u64, u64), Entry>,
    /// Insertion order, for eviction; an entry replaced since is skipped by its `seq`.
    order: VecDeque<((u64, u64), u64)>,
    bytes: usize,
    max: usize,
    seq: u64,
}

struct Entry {
    bytes: Bytes,
    cost: usize,
    seq: u64,
}

impl Cache {
    fn insert(&mut self, file: u64, pos: u64, bytes: Bytes, cost: usize) {
        if bytes.is_empty() || cost > self.max {
            return;
        }
        // Entries starting inside the new one are superseded by it.
        let end = pos + bytes.len() as u64;
        let covered: Vec<(u64, u64)> = self.entries.range((file, pos)..(file, end)).map(|(k, _)| *k).collect();
        for key in covered {
            self.remove(key);
        }
        self.seq += 1;
        self.entries.insert(
            (file, pos),
            Entry {
                bytes,
                cost,
                seq: self.seq,
            },
        );
        self.order.push_back(((file, pos), self.seq));
        self.bytes += cost;
        STATS.cache_bytes.fetch_add(cost as u64, Ordering::Relaxed);
        while self.bytes > self.max {
            let Some((key, seq)) = self.order.pop_front() else {
                break;
            };
            if self.entries.get(&key).is_some_and(|e| e.seq == seq) {
                self.remove(key);
            }
        }
    }

    fn remove(&mut self, key: (u64, u64)) {
        if let Some(e) = self.entries.remove(&key) {
            self.bytes -= e.cost;
            STATS.cache_bytes.fetch_sub(e.cost as u64, Ordering::Relaxed);
        }
    }

    /// Every entry of `file`.
    fn forget(&mut self, file: u64) {
        let keys: Vec<(u64, u64)> = self
            .entries
            .range((file, 0)..=(file, u64::MAX))
            .map(|(k, _)| *k)
            .collect();
        for key in keys {
            self.remove(key);
        }
        if self.entries.is_empty() {
            self.order.clear();
        }
    }

    /// `len` bytes at `pos` if cached entries cover them: a slice of one entry, or the
    /// pieces of adjacent ones copied together.
    fn lookup(&self, file: u64, pos: u64, len: usize) -> Option<Bytes> {
        let end = pos + len as u64;
        let (&(_, first_pos), first) = self.entries.range((file, 0)..=(file, pos)).next_back()?;
        let first_end = first_pos + first.bytes.len() as u64;
        if first_end >= end {
            let from = (pos - first_pos) as usize;
            return Some(first.bytes.slice(from..from + len));
        }
        if first_end <= pos {
            return None;
        }
        let mut out = Vec::with_capacity(len);
        out.extend_from_slice(&first.bytes[(pos - first_pos) as usize..]);
        let mut at = first_end;
        for (&(_, p), e) in self.entries.range((file, first_pos + 1)..(file, end)) {
            if p > at {
                return None;
            }
            let e_end = p + e.bytes.len() as u64;
            if e_end <= at {
                continue;
            }
            let from = (at - p) as usize;
            let upto = (end.min(e_end) - p) as usize;
            out.extend_from_slice(&e.bytes[from..upto]);
            at = p + upto as u64;
            if at >= end {
                return Some(Bytes::from(out));
            }
        }
        None
    }
}

/// What a [`DirectFile`] writes to: a file that takes only aligned transfers.
pub trait Blocks: Send + Sync {
    /// Reads into `buf` at `pos` (both aligned) until it is full or the file ends;
    /// returns how many bytes were read.
    fn read_blocks(&self, buf: &mut [u8], pos: u64) -> io::Result<usize>;
    /// Writes all of `buf` at `pos` (both aligned).
    fn write_blocks(&self, buf: &[u8], pos: u64) -> io::Result<()>;
    /// The same through the page cache: a small write that must not wait for the
    /// device (see [`DirectFile::write_small`]). The first `unchanged` bytes are
    /// already in the file, and a store that takes unaligned writes may skip them.
    fn write_buffered(&self, buf: &[u8], pos: u64, _unchanged: usize) -> io::Result<()> {
        self.write_blocks(buf, pos)
    }
    fn set_len(&self, len: u64) -> io::Result<()>;
    fn size(&self) -> io::Result<u64>;
    fn sync_data(&self) -> io::Result<()>;
    /// Reserves disk for `len` bytes from `pos` without changing the file's size.
    fn allocate(&self, _pos: u64, _len: u64) -> io::Result<()> {
        Ok(())
    }
    fn raw_fd(&self) -> Option<RawFd> {
        None
    }
}

/// A real file opened with `O_DIRECT`.
pub struct DiskBlocks {
    direct: File,
    /// The same file without `O_DIRECT`, opened at its first small write.
    buffered: std::sync::OnceLock<File>,
}

impl DiskBlocks {
    pub fn new(direct: File) -> DiskBlocks {
        DiskBlocks {
            direct,
            buffered: std::sync::OnceLock::new(),
        }
    }

    /// A second open of the same file (by its descriptor, so a rename does not
    /// matter) without `O_DIRECT`.
    fn buffered(&self) -> io::Result<&File> {
        if let Some(file) = self.buffered.get() {
            return Ok(file);
        }
        let path = format!("/proc/self/fd/{}", self.direct.as_raw_fd());
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        Ok(self.buffered.get_or_init(|| file))
    }
}

impl Blocks for DiskBlocks {
    fn write_buffered(&self, buf: &[u8], pos: u64, unchanged: usize) -> io::Result<()> {
        let skip = unchanged.min(buf.len());
        self.buffered()?.write_all_at(&buf[skip..], pos + skip as u64)
    }
    fn read_blocks(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            match self.direct.read_at(&mut buf[done..], pos + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }
    fn write_blocks(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        self.direct.write_all_at(buf, pos)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.direct.set_len(len)
    }
    fn size(&self) -> io::Result<u64> {
        Ok(self.direct.metadata()?.len())
    }
    fn sync_data(&self) -> io::Result<()> {
        self.direct.sync_data()
    }
    fn allocate(&self, pos: u64, len: u64) -> io::Result<()> {
        match rustix::fs::fallocate(&self.direct, rustix::fs::FallocateFlags::KEEP_SIZE, pos, len) {
            Ok(()) => Ok(()),
            // A filesystem without fallocate still takes the writes.
            Err(e) if e == rustix::io::Errno::OPNOTSUPP => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
    fn raw_fd(&self) -> Option<RawFd> {
        Some(self.direct.as_raw_fd())
    }
}

struct FileState {
    /// The logical length: bytes appended and written, all valid.
    len: u64,
    /// The bytes of the partial last block (from `align_down(len)` to `len`).
    tail: Vec<u8>,
    /// How far the file on disk reaches (padding included).
    physical: u64,
    /// How far disk is reserved for it.
    allocated: u64,
    /// Bumped whenever bytes below the end change (truncation, overwrite): a read
    /// planned before must not put what it read into the cache.
    generation: u64,
}

/// What a direct-I/O file closed by the descriptor budget needs to be opened again as
/// it was: its logical end, its partial last block, and how far it reaches on disk.
/// So closing cuts nothing (the padding and the preallocation stay) and opening again
/// reads nothing; a crash meanwhile leaves the padding recovery always cuts.
#[derive(Debug, Clone)]
pub struct Resume {
    len: u64,
    tail: Vec<u8>,
    physical: u64,
    allocated: u64,
}

/// A segment log file written and read with direct I/O; see the module comment.
pub struct DirectFile {
    raw: Box<dyn Blocks>,
    id: u64,
    shared: Arc<Shared>,
    state: Mutex<FileState>,
    /// Whether what is written stays in the cache for readers (see
    /// [`DirectFile::keep_written`]).
    keep_written: AtomicBool,
}

/// An append staged into aligned buffers: the engine writes `chunks` back to back at
/// `pos`, then hands the staged write back to [`DirectFile::commit`].
pub struct Staged {
    pub pos: u64,
    pub chunks: Vec<Bytes>,
    /// The valid part of each chunk and the memory it holds (for the cache).
    valid: Vec<(Bytes, usize)>,
    end: u64,
}

/// A cache-missing read: the engine reads into `buf` at `pos`, then hands it back to
/// [`DirectFile::finish_read`].
pub struct PlannedRead {
    pub pos: u64,
    /// Read into the first `size` bytes (a pooled buffer may be larger).
    pub buf: AlignedBuf,
    pub size: usize,
    /// The file's logical length when the read was planned: bytes past it are not data.
    valid_end: u64,
    generation: u64,
    want: (u64, usize),
}

impl DirectFile {
    pub fn new(raw: Box<dyn Blocks>, shared: Arc<Shared>) -> io::Result<DirectFile> {
        let len = raw.size()?;
        let file = DirectFile {
            raw,
            id: shared.new_file_id(),
            shared,
            state: Mutex::new(FileState {
                len,
                tail: Vec::new(),
                physical: len,
                allocated: len,
                generation: 0,
            }),
            keep_written: AtomicBool::new(true),
        };
        let tail = file.read_tail_block(len)?;
        file.lock().tail = tail;
        Ok(file)
    }

    /// The file as it was when [`DirectFile::suspend`] gave `resume`.
    pub fn resume(raw: Box<dyn Blocks>, shared: Arc<Shared>, resume: Resume) -> DirectFile {
        DirectFile {
            raw,
            id: shared.new_file_id(),
            shared,
            state: Mutex::new(FileState {
                len: resume.len,
                tail: resume.tail,
                physical: resume.physical,
                allocated: resume.allocated,
                generation: 0,
            }),
            keep_written: AtomicBool::new(true),
        }
    }

    /// Whether chunks written from now on stay in the cache. A follower's log is read by
    /// no one (consumers and other followers read the leader), so its writes would only
    /// push out the chunks a leader's followers are about to fetch: measured with RF 3
    /// on one machine, followers a few MB behind then read from disk what had just been
    /// written, and the disk reads slowed every write round.
    pub fn keep_written(&self, keep: bool) {
        self.keep_written.store(keep, Ordering::Relaxed);
    }

    /// What opening the file again needs (see [`Resume`]).
    pub fn suspend(&self) -> Resume {
        let state = self.lock();
        Resume {
            len: state.len,
            tail: state.tail.clone(),
            physical: state.physical,
            allocated: state.allocated,
        }
    }

    fn lock(&self) -> MutexGuard<'_, FileState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The bytes of the partial block that ends at `len`, read from the file.
    fn read_tail_block(&self, len: u64) -> io::Result<Vec<u8>> {
        let start = align_down(len);
        let want = (len - start) as usize;
        if want == 0 {
            return Ok(Vec::new());
        }
        let mut buf = self.shared.buffer(BLOCK)?;
        let n = self.raw.read_blocks(&mut buf.as_mut_slice()[..BLOCK], start)?;
        if n < want {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file ends inside its last block",
            ));
        }
        Ok(buf.as_mut_slice()[..want].to_vec())
    }

    /// Stages an append of `bufs` at `pos`, which must be the file's end.
    pub fn stage(&self, pos: u64, bufs: &[Bytes]) -> io::Result<Staged> {
        let state = self.lock();
        if pos != state.len {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("a direct write appends at {} (asked at {pos})", state.len),
            ));
        }
        let start = align_down(pos);
        let total = state.tail.len() + bufs.iter().map(Bytes::len).sum::<usize>();
        let end = start + total as u64;
        let want_allocated = start + align_up(total) as u64;
        if want_allocated > state.allocated {
            let step = state.allocated.clamp(PREALLOCATE_MIN, PREALLOCATE_MAX);
            let ahead = want_allocated.max(state.allocated + step);
            drop(state);
            // Near a full disk the step ahead may not fit while the write itself does.
            let to = match self.raw.allocate(0, ahead) {
                Err(e) if crate::io::out_of_space(&e) && ahead > want_allocated => {
                    self.raw.allocate(0, want_allocated)?;
                    want_allocated
                }
                other => other.map(|()| ahead)?,
            };
            self.lock().allocated = to;
        } else {
            drop(state);
        }
        let state = self.lock();
        let mut pieces = std::iter::once(&state.tail[..]).chain(bufs.iter().map(|b| &b[..]));
        let mut piece: &[u8] = &[];
        let mut chunks = Vec::with_capacity(total.div_ceil(CHUNK_MAX));
        let mut valid = Vec::with_capacity(chunks.capacity());
        let mut left = total;
        while left > 0 {
            let size = left.min(CHUNK_MAX);
            let mut buf = self.shared.buffer(size)?;
            let cost = buf.capacity();
            let out = buf.as_mut_slice();
            let mut filled = 0;
            while filled < size {
                if piece.is_empty() {
                    match pieces.next() {
                        Some(next) => piece = next,
                        None => break,
                    }
                    continue;
                }
                let n = piece.len().min(size - filled);
                out[filled..filled + n].copy_from_slice(&piece[..n]);
                piece = &piece[n..];
                filled += n;
            }
            let padded = align_up(size);
            out[size..padded].fill(0);
            let bytes = buf.freeze(padded);
            valid.push((bytes.slice(..size), cost));
            chunks.push(bytes);
            left -= size;
        }
        Ok(Staged {
            pos: start,
            chunks,
            valid,
            end,
        })
    }

    /// Records a staged append as written: the new end, the new partial block, and
    /// the written chunks in the cache.
    pub fn commit(&self, staged: Staged) {
        let mut state = self.lock();
        let written: usize = staged.chunks.iter().map(Bytes::len).sum();
        STATS.bytes_written.fetch_add(written as u64, Ordering::Relaxed);
        state.len = staged.end;
        state.physical = state.physical.max(staged.pos + written as u64);
        let tail_start = align_down(staged.end);
        state.tail.clear();
        let mut cache = self.shared.cache();
        let keep = self.keep_written.load(Ordering::Relaxed);
        let mut at = staged.pos;
        for (bytes, cost) in staged.valid {
            let chunk_end = at + bytes.len() as u64;
            if chunk_end > tail_start {
                let from = (tail_start.max(at) - at) as usize;
                state.tail.extend_from_slice(&bytes[from..]);
            }
            if keep {
                cache.insert(self.id, at, bytes, cost);
            }
            at = chunk_end;
        }
    }

    /// The cached bytes at `pos`, if all `len` of them are cached.
    pub fn cached(&self, pos: u64, len: usize) -> Option<Bytes> {
        let hit = self.shared.cache().lookup(self.id, pos, len);
        let counter = if hit.is_some() {
            &STATS.cache_hits
        } else {
            &STATS.cache_misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        hit
    }

    /// Plans a read of `len` bytes at `pos` that missed the cache, reading at least
    /// `min_read` and one step ahead.
    pub fn plan_read(&self, pos: u64, len: usize, min_read: usize) -> io::Result<PlannedRead> {
        self.plan(pos, len, min_read, true)
    }

    /// A planned read of the blocks `len` bytes at `pos` touch, with read-ahead when
    /// `ahead`.
    fn plan(&self, pos: u64, len: usize, min_read: usize, ahead: bool) -> io::Result<PlannedRead> {
        let (valid_end, generation) = {
            let state = self.lock();
            (state.len, state.generation)
        };
        if pos + len as u64 > valid_end {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "read past the end of the file",
            ));
        }
        let start = align_down(pos);
        let asked = (pos + len as u64 - start) as usize;
        let step = if ahead { asked.max(READ_STEP) } else { 0 };
        let wanted = (asked + step).max(min_read).min(READ_MAX.max(asked));
        let upto = align_up((valid_end - start) as usize);
        let size = align_up(wanted).min(upto).max(align_up(asked));
        Ok(PlannedRead {
            pos: start,
            buf: self.shared.buffer(size)?,
            size,
            valid_end,
            generation,
            want: (pos, len),
        })
    }

    /// The asked bytes of a planned read that read `n` bytes; what it read is cached.
    pub fn finish_read(&self, read: PlannedRead, n: usize) -> io::Result<Bytes> {
        STATS.bytes_read.fetch_add(n as u64, Ordering::Relaxed);
        let (pos, len) = read.want;
        let valid = n.min((read.valid_end - read.pos) as usize);
        if read.pos + (valid as u64) < pos + len as u64 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "read past the end of the file",
            ));
        }
        let cost = read.buf.capacity();
        let bytes = read.buf.freeze(valid);
        let from = (pos - read.pos) as usize;
        let answer = bytes.slice(from..from + len);
        // A read that raced a truncation or an overwrite keeps nothing.
        if self.lock().generation == read.generation {
            self.shared.cache().insert(self.id, read.pos, bytes, cost);
        }
        Ok(answer)
    }

    /// The file's `O_DIRECT` descriptor, for an engine that submits to the kernel.
    pub fn fd(&self) -> Option<RawFd> {
        self.raw.raw_fd()
    }

    fn read_blocking(&self, buf: &mut [u8], pos: u64, min_read: usize) -> io::Result<()> {
        if let Some(bytes) = self.cached(pos, buf.len()) {
            buf.copy_from_slice(&bytes);
            return Ok(());
        }
        let mut read = self.plan(pos, buf.len(), min_read, min_read > 0)?;
        let size = read.size;
        let n = self.raw.read_blocks(&mut read.buf.as_mut_slice()[..size], read.pos)?;
        let bytes = self.finish_read(read, n)?;
        buf.copy_from_slice(&bytes);
        Ok(())
    }

    /// Overwrites inside the file (never on the hot path): read, change, write back
    /// the blocks it touches.
    fn overwrite(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        let len = self.lock().len;
        let start = align_down(pos);
        let end = (pos + buf.len() as u64).max(len);
        let mut whole = vec![0u8; (end - start) as usize];
        let existing = (len - start) as usize;
        if existing > 0 {
            self.read_blocking(&mut whole[..existing], start, 0)?;
        }
        let from = (pos - start) as usize;
        whole[from..from + buf.len()].copy_from_slice(buf);
        // Rewritten as an append from `start`: cut the logical end back, then stage.
        self.shared.cache().forget(self.id);
        {
            let mut state = self.lock();
            state.len = start;
            state.tail.clear();
            state.generation += 1;
        }
        let staged = self.stage(start, &[Bytes::from(whole)])?;
        self.write_staged_blocking(staged)
    }

    /// A small append written through the page cache on the calling thread: a round of
    /// a few KiB that syncs nothing (acks=1 at a low rate) costs microseconds this way,
    /// where a direct write waits for the device and, on ext4, for an io_uring worker
    /// thread (profiled: p99 end-to-end latency 17 ms against 1.4 ms at 50 MB/s with
    /// linger.ms=0). The staged layout is the same, so the file is the same either way;
    /// the kernel writes a dirty page back before a later direct write or read of it.
    pub fn write_small(&self, pos: u64, bufs: &[Bytes]) -> io::Result<()> {
        let staged = self.stage(pos, bufs)?;
        let mut at = staged.pos;
        for chunk in &staged.chunks {
            // The page cache takes any offset: the partial block's old bytes, already
            // in the file, are not copied again (with one-record batches they were
            // most of what each write copied).
            let skip = (pos.saturating_sub(at) as usize).min(chunk.len());
            self.raw.write_buffered(chunk, at, skip)?;
            at += chunk.len() as u64;
        }
        self.commit(staged);
        Ok(())
    }

    fn write_staged_blocking(&self, staged: Staged) -> io::Result<()> {
        let mut at = staged.pos;
        for chunk in &staged.chunks {
            self.raw.write_blocks(chunk, at)?;
            at += chunk.len() as u64;
        }
        self.commit(staged);
        Ok(())
    }
}

impl IoFile for DirectFile {
    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        self.read_blocking(buf, pos, SYNC_READ_WINDOW)
    }

    fn peek_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        // Only the blocks it touches.
        self.read_blocking(buf, pos, 0)
    }

    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        let len = self.lock().len;
        if pos > len {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a direct write past the end of the file",
            ));
        }
        if pos < len {
            return self.overwrite(buf, pos);
        }
        let staged = self.stage(pos, &[Bytes::copy_from_slice(buf)])?;
        self.write_staged_blocking(staged)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.shared.cache().forget(self.id);
        self.raw.set_len(len)?;
        let tail = self.read_tail_block(len)?;
        let mut state = self.lock();
        state.len = len;
        state.tail = tail;
        state.generation += 1;
        state.physical = len;
        state.allocated = state.allocated.max(len);
        Ok(())
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.lock().len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.raw.sync_data()
    }

    fn raw_fd(&self) -> Option<RawFd> {
        self.raw.raw_fd()
    }

    fn direct(&self) -> Option<&DirectFile> {
        Some(self)
    }

    fn suspend(&self) -> Option<Resume> {
        Some(DirectFile::suspend(self))
    }

    /// Cuts the zero padding and the unused preallocation off a file that takes no
    /// more appends (a sealed segment).
    fn trim(&self) -> io::Result<()> {
        let mut state = self.lock();
        if state.physical > state.len || state.allocated > state.len {
            self.raw.set_len(state.len)?;
            state.physical = state.len;
            state.allocated = state.len;
        }
        Ok(())
    }
}

impl Drop for DirectFile {
    /// Forgets the file's cached chunks. It does not trim: an operation still in
    /// flight may hold the last handle after the log reopened the same file (a
    /// truncation) and appended through a new one, and a trim then would cut those
    /// appends off. The log trims sealed segments, and the active one at shutdown.
    fn drop(&mut self) {
        self.shared.cache().forget(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An in-memory file that, like `O_DIRECT`, refuses misaligned transfers.
    #[derive(Default)]
    struct MemBlocks(Mutex<Vec<u8>>);

    impl Blocks for Arc<MemBlocks> {
        fn read_blocks(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
            assert_eq!((pos as usize % BLOCK, buf.len() % BLOCK), (0, 0), "misaligned read");
            let data = self.0.lock().unwrap();
            let start = (pos as usize).min(data.len());
            let n = buf.len().min(data.len() - start);
            buf[..n].copy_from_slice(&data[start..start + n]);
            Ok(n)
        }
        fn write_blocks(&self, buf: &[u8], pos: u64) -> io::Result<()> {
            assert_eq!((pos as usize % BLOCK, buf.len() % BLOCK), (0, 0), "misaligned write");
            assert_eq!(buf.as_ptr() as usize % BLOCK, 0, "misaligned memory");
            let mut data = self.0.lock().unwrap();
            let end = pos as usize + buf.len();
            if data.len() < end {
                data.resize(end, 0);
            }
            data[pos as usize..end].copy_from_slice(buf);
            Ok(())
        }
        fn set_len(&self, len: u64) -> io::Result<()> {
            self.0.lock().unwrap().resize(len as usize, 0);
            Ok(())
        }
        fn size(&self) -> io::Result<u64> {
            Ok(self.0.lock().unwrap().len() as u64)
        }
        fn sync_data(&self) -> io::Result<()> {
            Ok(())
        }
    }

    fn file(cache: usize) -> (Arc<MemBlocks>, DirectFile) {
        let mem = Arc::new(MemBlocks::default());
        let file = DirectFile::new(Box::new(mem.clone()), Shared::new(cache)).unwrap();
        (mem, file)
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    #[test]
    fn appends_rewrite_the_partial_block_and_pad_with_zeros() {
        let (mem, file) = file(1 << 20);
        let mut expected = Vec::new();
        for (i, len) in [1usize, 100, 4095, 4096, 4097, 9000, CHUNK_MAX + 123, 7]
            .into_iter()
            .enumerate()
        {
            let bytes = pattern(len, i as u8);
            let staged = file
                .stage(expected.len() as u64, &[Bytes::from(bytes.clone())])
                .unwrap();
            assert_eq!(staged.pos % BLOCK as u64, 0);
            assert!(staged
                .chunks
                .iter()
                .all(|c| c.len() % BLOCK == 0 && (c.as_ptr() as usize).is_multiple_of(BLOCK)));
            file.write_staged_blocking(staged).unwrap();
            expected.extend_from_slice(&bytes);
            let disk = mem.0.lock().unwrap().clone();
            assert_eq!(&disk[..expected.len()], &expected[..], "after append {i}");
            assert!(disk.len() - expected.len() < BLOCK && disk[expected.len()..].iter().all(|&b| b == 0));
            assert_eq!(file.size().unwrap(), expected.len() as u64);
        }
        // Reads from the cache and, on a new handle with an empty cache, from the disk.
        let mut buf = vec![0u8; 5000];
        file.read_exact_at(&mut buf, 4000).unwrap();
        assert_eq!(buf, expected[4000..9000]);
        file.trim().unwrap();
        assert_eq!(mem.0.lock().unwrap().len(), expected.len(), "trimmed to the end");
        let reopened = DirectFile::new(Box::new(mem.clone()), Shared::new(1 << 20)).unwrap();
        let mut all = vec![0u8; expected.len()];
        reopened.read_exact_at(&mut all, 0).unwrap();
        assert_eq!(all, expected);
        // An append after reopening starts from the partial block it read back.
        let staged = reopened
            .stage(expected.len() as u64, &[Bytes::from_static(b"more")])
            .unwrap();
        reopened.write_staged_blocking(staged).unwrap();
        expected.extend_from_slice(b"more");
        assert_eq!(&mem.0.lock().unwrap()[..expected.len()], &expected[..]);
        assert!(
            reopened.stage(3, &[Bytes::from_static(b"x")]).is_err(),
            "appends only at the end"
        );
    }

    #[test]
    fn the_cache_stitches_adjacent_chunks_and_keeps_to_its_bound() {
        let (_, file) = file(64 << 10);
        let mut expected = Vec::new();
        for i in 0..40u8 {
            let bytes = pattern(3000, i);
            let staged = file
                .stage(expected.len() as u64, &[Bytes::from(bytes.clone())])
                .unwrap();
            file.write_staged_blocking(staged).unwrap();
            expected.extend_from_slice(&bytes);
            assert!(file.shared.cache().bytes <= 64 << 10);
        }
        let end = expected.len() as u64;
        // The last few appends are cached: a read spanning several of them is a hit.
        let hit = file.cached(end - 9000, 9000).expect("recent appends are cached");
        assert_eq!(&hit[..], &expected[expected.len() - 9000..]);
        // The oldest were evicted; reading them goes to the disk and is right.
        assert!(file.cached(0, 100).is_none());
        let mut buf = vec![0u8; 100];
        file.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(buf, expected[..100]);
    }

    #[test]
    fn a_truncation_forgets_what_was_cached() {
        let (_, file) = file(1 << 20);
        let first = pattern(10_000, 1);
        file.write_staged_blocking(file.stage(0, &[Bytes::from(first.clone())]).unwrap())
            .unwrap();
        let planned = file.plan_read(0, 100, 0).unwrap();
        file.set_len(5000).unwrap();
        let second = pattern(8000, 2);
        file.write_staged_blocking(file.stage(5000, &[Bytes::from(second.clone())]).unwrap())
            .unwrap();
        // A read planned before the truncation puts nothing stale into the cache.
        let mut stale = planned;
        let n = stale.size;
        stale.buf.as_mut_slice()[..n].copy_from_slice(&[0xEE; 1][..].repeat(n));
        let _ = file.finish_read(stale, n);
        let mut buf = vec![0u8; 8000];
        file.read_exact_at(&mut buf, 5000).unwrap();
        assert_eq!(buf, second);
        let mut head = vec![0u8; 5000];
        file.read_exact_at(&mut head, 0).unwrap();
        assert_eq!(head, first[..5000]);
    }
}
