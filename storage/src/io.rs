//! The one I/O seam underneath storage (DESIGN.md, "Storage"): a shard's backend opens
//! files and does the rare directory operations synchronously, and runs the hot path
//! asynchronously: write rounds (every file a round touches, written and synced in one
//! go) and fetch reads. The log and the [`crate::LogManager`] see only this trait.
//!
//! Backends: [`uring::Uring`] (the default: the shard's own io_uring ring, so the shard
//! thread never waits for the disk), [`Positional`] (pread/pwrite/fdatasync where
//! io_uring is unavailable; rounds run on tokio's blocking pool) and [`sim::SimIo`] (an
//! in-memory disk with seeded faults and crashes, for tests). [`Engine`] is the choice
//! `--io-engine` makes; each shard starts its own backend from it.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::LocalBoxFuture;

pub mod direct;
pub mod handles;
pub mod inline;
pub mod sim;
mod trash;
pub mod uring;

/// A file as storage uses it. These calls wait for the disk on the calling thread, so
/// the hot path never makes them: they open and recover logs, and serve rare lookups.
pub trait IoFile: Send + Sync {
    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()>;
    /// A read of a few bytes that fetches no more than it must (a direct-I/O file
    /// otherwise reads a whole window ahead, which a scan wants and a lookup of one
    /// batch header does not).
    fn peek_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        self.read_exact_at(buf, pos)
    }
    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()>;
    fn set_len(&self, len: u64) -> io::Result<()>;
    fn size(&self) -> io::Result<u64>;
    /// Makes everything written so far durable (fdatasync); an error means it may not be.
    fn sync_data(&self) -> io::Result<()>;
    /// The file descriptor, for backends that submit to the kernel themselves (io_uring).
    fn raw_fd(&self) -> Option<RawFd> {
        None
    }
    /// The direct-I/O file behind this handle, when it is one: engines stage its
    /// writes into aligned buffers and serve its reads from the shard's chunk cache.
    fn direct(&self) -> Option<&direct::DirectFile> {
        None
    }
    /// Gives back what the file holds past its end (direct I/O's padding and
    /// preallocation) once it takes no more appends.
    fn trim(&self) -> io::Result<()> {
        Ok(())
    }
    /// What opening this file again needs beyond its path (a direct-I/O file's end
    /// and last block), when the descriptor budget closes it.
    fn suspend(&self) -> Option<direct::Resume> {
        None
    }
}

/// A failed fdatasync, kept apart from a failed write: after one the page cache may
/// have dropped data the log no longer holds in memory, so it stays fatal for the
/// partition, while a write refused for want of space is tried again.
#[derive(Debug, thiserror::Error)]
#[error("fdatasync failed: {0}")]
pub struct SyncFailed(pub io::Error);

/// `e` as the failure of a sync (see [`SyncFailed`]).
pub fn sync_failed(e: io::Error) -> io::Error {
    io::Error::new(e.kind(), SyncFailed(e))
}

/// Whether a write failed for want of space (ENOSPC, EDQUOT): the log keeps what it
/// holds in memory and writes it again once there is room. A failed sync never is.
pub fn out_of_space(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded)
        && !e.get_ref().is_some_and(|inner| inner.is::<SyncFailed>())
}

/// Files are shared: a write round holds them while the log goes on appending.
pub type FileRef = Arc<dyn IoFile>;

/// A shard's storage backend. Single-threaded: each shard starts its own (see
/// [`Engine::start`]), so an io_uring backend can own the shard's ring.
pub trait Io {
    /// Opens `path` for reading and writing, creating it if `create`.
    fn open(&self, path: &Path, create: bool) -> io::Result<FileRef>;
    /// Opens a segment's log file: with direct I/O where the backend runs it.
    fn open_log(&self, path: &Path, create: bool) -> io::Result<FileRef> {
        self.open(path, create)
    }
    /// The shard's descriptor budget, for backends that run one (see [`handles`]).
    fn budget(&self) -> Option<&handles::Budget> {
        None
    }
    /// A handle to a file (a segment's log file when `log`) through the shard's
    /// descriptor budget: it is open now, and may be closed while idle and reopened on
    /// use. Backends without a budget keep it open.
    fn handle(&self, path: &Path, log: bool, create: bool) -> io::Result<handles::Handle> {
        if let Some(budget) = self.budget() {
            return budget.handle(path, log, create);
        }
        let file = if log {
            self.open_log(path, create)?
        } else {
            self.open(path, create)?
        };
        Ok(handles::Handle::fixed(path, file))
    }
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Names of the entries of a directory.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Removes a file that nothing reads any more off the calling thread: unlinking a
    /// large file frees its blocks, which can take the filesystem a while, and a shard
    /// must not wait for it (Kafka's `.deleted` step). The file is already renamed out
    /// of the log's view; a crash before it goes leaves it for the next open to remove.
    fn remove_file_later(&self, path: &Path) -> io::Result<()> {
        trash::remove_later(path.to_path_buf());
        Ok(())
    }
    fn remove_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Renames a file over another (atomically, as rename(2) does).
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }
    /// Makes the directory's entries (files created or removed) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// The backend's name, for logs and metrics.
    fn name(&self) -> &'static str;
    /// Whether segment log files are written and read with direct I/O.
    fn direct_io(&self) -> bool {
        false
    }

    /// Runs a write round: every write in full, each file's sync after its write, and
    /// the directory syncs; one result per write and per directory. The default runs
    /// it inline, which suits backends that never wait (the simulated disk).
    fn write_round(&self, round: WriteRound) -> LocalBoxFuture<'_, RoundOutcome> {
        let outcome = round.run_blocking(|dir| self.sync_dir(dir));
        Box::pin(std::future::ready(outcome))
    }

    /// Reads exactly `len` bytes of `file` at `pos`. The default reads inline.
    fn read(&self, file: &FileRef, pos: u64, len: usize) -> LocalBoxFuture<'_, io::Result<Bytes>> {
        let mut buf = vec![0u8; len];
        let result = file.read_exact_at(&mut buf, pos).map(|()| Bytes::from(buf));
        Box::pin(std::future::ready(result))
    }

    /// A task the backend needs running on its shard (io_uring's completion reaper);
    /// the log manager runs it beside its write rounds.
    fn driver(&self) -> Option<LocalBoxFuture<'static, ()>> {
        None
    }
}

/// The most iovecs one vectored write takes (Linux's IOV_MAX).
pub(crate) const IOV_MAX: usize = 1024;

/// The iovecs of `bufs`, for a vectored write. They point into `bufs`, which the caller
/// keeps alive (and unmoved) until the kernel is done with them.
pub(crate) fn iovecs<B: AsRef<[u8]>>(bufs: &[B]) -> Vec<libc::iovec> {
    bufs.iter()
        .map(|b| {
            let b = b.as_ref();
            libc::iovec {
                iov_base: b.as_ptr() as *mut libc::c_void,
                iov_len: b.len(),
            }
        })
        .collect()
}

/// One file's part of a write round: `bufs` go to `file` at `pos`, back to back, and
/// with `sync` the file is fdatasynced once they are all in.
pub struct RoundWrite {
    pub file: FileRef,
    pub pos: u64,
    pub bufs: Vec<Bytes>,
    pub sync: bool,
}

impl RoundWrite {
    pub fn len(&self) -> u64 {
        self.bufs.iter().map(|b| b.len() as u64).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes on the calling thread, gathering small buffers into one write each
    /// `STAGING_BYTES` (positional I/O has no vectored write in std), then syncs.
    pub fn run_blocking(&self) -> io::Result<()> {
        /// Large enough that a round costs few syscalls, small enough to stay in cache.
        const STAGING_BYTES: usize = 1 << 20;
        let mut pos = self.pos;
        let mut staging: Vec<u8> = Vec::new();
        for b in &self.bufs {
            if staging.is_empty() && b.len() >= STAGING_BYTES {
                self.file.write_all_at(b, pos)?;
                pos += b.len() as u64;
                continue;
            }
            staging.extend_from_slice(b);
            if staging.len() >= STAGING_BYTES {
                self.file.write_all_at(&staging, pos)?;
                pos += staging.len() as u64;
                staging.clear();
            }
        }
        if !staging.is_empty() {
            self.file.write_all_at(&staging, pos)?;
        }
        if self.sync {
            self.file.sync_data().map_err(sync_failed)?;
        }
        Ok(())
    }
}

/// Everything a shard writes in one round, across all its partitions: the backend
/// submits it at once (one io_uring submission) and reports each part's outcome.
#[derive(Default)]
pub struct WriteRound {
    pub writes: Vec<RoundWrite>,
    /// Directories whose new entries (segments created since the last sync) must be
    /// made durable after the writes.
    pub dirs: Vec<PathBuf>,
}

/// The outcome of each part of a [`WriteRound`], in the round's order.
pub struct RoundOutcome {
    pub writes: Vec<io::Result<()>>,
    pub dirs: Vec<io::Result<()>>,
}

impl WriteRound {
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty() && self.dirs.is_empty()
    }

    /// Bytes this round writes.
    pub fn bytes(&self) -> u64 {
        self.writes.iter().map(RoundWrite::len).sum()
    }

    /// Whether any part of the round syncs.
    pub fn syncs(&self) -> bool {
        !self.dirs.is_empty() || self.writes.iter().any(|w| w.sync)
    }

    /// Runs the round on the calling thread: each file written then synced, then the
    /// directories.
    pub fn run_blocking(self, sync_dir: impl Fn(&Path) -> io::Result<()>) -> RoundOutcome {
        RoundOutcome {
            writes: self.writes.iter().map(RoundWrite::run_blocking).collect(),
            dirs: self.dirs.iter().map(|d| sync_dir(d)).collect(),
        }
    }
}

/// Plain positional I/O: works everywhere. Segment log files use direct I/O when
/// the backend was started with it.
#[derive(Default, Clone)]
pub struct Positional {
    direct: Option<Arc<direct::Shared>>,
    budget: Option<Arc<handles::Budget>>,
}

impl Positional {
    pub fn new() -> Positional {
        Positional::default()
    }

    /// Positional I/O with direct-I/O log files and a chunk cache of `cache_bytes`.
    pub fn direct(cache_bytes: usize) -> Positional {
        Positional {
            direct: Some(direct::Shared::new(cache_bytes)),
            budget: None,
        }
    }

    /// The same with segment files opened through a budget of `descriptors`.
    pub fn with_open_files(mut self, descriptors: usize) -> Positional {
        self.budget = Some(Arc::new(budget_for(descriptors, self.direct.clone(), |p, c| {
            Ok(Arc::new(PositionalFile(open_read_write(p, c)?)))
        })));
        self
    }
}

/// A descriptor budget whose files are opened by `plain`, and log files with direct
/// I/O when `direct` is set (see [`open_log_file`]).
pub(crate) fn budget_for(
    descriptors: usize,
    direct: Option<Arc<direct::Shared>>,
    plain: fn(&Path, bool) -> io::Result<FileRef>,
) -> handles::Budget {
    let log_cost = if direct.is_some() { 2 } else { 1 };
    handles::Budget::new(
        descriptors,
        Arc::new(move |p: &Path, c: bool, _| plain(p, c)),
        Arc::new(move |p: &Path, c: bool, resume| open_log_file(direct.as_ref(), p, c, plain, resume)),
        log_cost,
    )
}

struct PositionalFile(File);

impl IoFile for PositionalFile {
    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        self.0.read_exact_at(buf, pos)
    }
    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        self.0.write_all_at(buf, pos)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
    fn size(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }
    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn raw_fd(&self) -> Option<RawFd> {
        Some(self.0.as_raw_fd())
    }
}

/// Opens `path` for reading and writing (creating it if `create`), never truncating:
/// how every backend opens segment and index files.
pub(crate) fn open_read_write(path: &Path, create: bool) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .truncate(false)
        .open(path)
}

pub(crate) fn list_dir(dir: &Path) -> io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir)? {
        if let Some(name) = entry?.file_name().to_str() {
            names.push(name.to_string());
        }
    }
    Ok(names)
}

pub(crate) fn remove_file_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

pub(crate) fn sync_dir_now(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Io for Positional {
    fn open(&self, path: &Path, create: bool) -> io::Result<FileRef> {
        Ok(Arc::new(PositionalFile(open_read_write(path, create)?)))
    }
    fn open_log(&self, path: &Path, create: bool) -> io::Result<FileRef> {
        open_log_file(self.direct.as_ref(), path, create, |p, c| self.open(p, c), None)
    }
    fn budget(&self) -> Option<&handles::Budget> {
        self.budget.as_deref()
    }
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        fs::create_dir_all(path)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        list_dir(dir)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        remove_file_if_present(path)
    }
    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        fs::remove_dir_all(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        sync_dir_now(dir)
    }
    fn name(&self) -> &'static str {
        "pwrite"
    }
    fn direct_io(&self) -> bool {
        self.direct.is_some()
    }

    /// Rounds that may wait for the disk run on tokio's blocking pool; small rounds
    /// without a sync are written in place (see [`inline`]); reads stay inline
    /// (page-cache reads in the common case).
    fn write_round(&self, round: WriteRound) -> LocalBoxFuture<'_, RoundOutcome> {
        if inline::fits(&round) {
            return Box::pin(std::future::ready(inline::run(round)));
        }
        Box::pin(async move {
            let parts = (round.writes.len(), round.dirs.len());
            match tokio::task::spawn_blocking(move || round.run_blocking(sync_dir_now)).await {
                Ok(outcome) => outcome,
                Err(e) => failed_round(parts, &e.to_string()),
            }
        })
    }
}

/// A round none of whose parts can be vouched for.
pub(crate) fn failed_round((writes, dirs): (usize, usize), why: &str) -> RoundOutcome {
    RoundOutcome {
        writes: (0..writes).map(|_| Err(io::Error::other(why.to_string()))).collect(),
        dirs: (0..dirs).map(|_| Err(io::Error::other(why.to_string()))).collect(),
    }
}

/// Opens a log file with direct I/O when `direct` is set, buffered otherwise, and
/// buffered too where this file's filesystem refuses `O_DIRECT` (EINVAL): the start-up
/// probe covers the data directory, this covers a directory mounted differently.
pub(crate) fn open_log_file(
    direct: Option<&Arc<direct::Shared>>,
    path: &Path,
    create: bool,
    buffered: impl FnOnce(&Path, bool) -> io::Result<FileRef>,
    resume: Option<direct::Resume>,
) -> io::Result<FileRef> {
    let Some(shared) = direct else {
        return buffered(path, create);
    };
    match direct::open_direct(path, create) {
        Ok(file) => {
            let blocks = Box::new(direct::DiskBlocks::new(file));
            Ok(Arc::new(match resume {
                Some(resume) => direct::DirectFile::resume(blocks, shared.clone(), resume),
                None => direct::DirectFile::new(blocks, shared.clone())?,
            }))
        }
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => buffered(path, create),
        Err(e) => Err(e),
    }
}

/// Which backend the broker's shards run on (`--io-engine`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    IoUring,
    Pwrite,
}

/// How a shard's backend treats segment log files (`--io-direct`, `--log-cache-bytes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IoOptions {
    /// Direct I/O for log files, with a chunk cache of this many bytes per shard;
    /// None for buffered I/O through the page cache.
    pub direct_cache_bytes: Option<usize>,
    /// Descriptors a shard's segment files may hold (see [`handles`]); None keeps
    /// every file open.
    pub open_files: Option<usize>,
}

impl Engine {
    pub fn name(self) -> &'static str {
        match self {
            Engine::IoUring => "io_uring",
            Engine::Pwrite => "pwrite",
        }
    }

    /// The calling shard's own backend. io_uring creates the shard's ring, which must
    /// happen on the shard's tokio runtime.
    pub fn start(self) -> io::Result<Rc<dyn Io>> {
        self.start_with(IoOptions::default())
    }

    /// The calling shard's backend with `options`.
    pub fn start_with(self, options: IoOptions) -> io::Result<Rc<dyn Io>> {
        let (cache, files) = (options.direct_cache_bytes, options.open_files);
        Ok(match self {
            Engine::IoUring => {
                let io = cache.map_or_else(uring::Uring::new, uring::Uring::direct)?;
                match files {
                    Some(n) => Rc::new(io.with_open_files(n)),
                    None => Rc::new(io),
                }
            }
            Engine::Pwrite => {
                let io = cache.map_or_else(Positional::new, Positional::direct);
                Rc::new(match files {
                    Some(n) => io.with_open_files(n),
                    None => io,
                })
            }
        })
    }
}

/// Replaces `dir/name` with `bytes` so that a crash leaves the old file or the new one
/// whole: a synced temporary file renamed over it, then (with `sync_dir`) the
/// directory synced so the rename itself is durable.
pub(crate) fn replace_file(io: &dyn Io, dir: &Path, name: &str, bytes: &[u8], sync_dir: bool) -> io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let file = io.open(&tmp, true)?;
    file.set_len(0)?;
    file.write_all_at(bytes, 0)?;
    file.sync_data()?;
    drop(file);
    io.rename(&tmp, &dir.join(name))?;
    if sync_dir {
        io.sync_dir(dir)?;
    }
    Ok(())
}

/// The whole of a small file; None when it is missing, unreadable or over `max` bytes
/// (then it is not the file it claims to be).
pub(crate) fn read_small(io: &dyn Io, path: &Path, max: usize) -> Option<Vec<u8>> {
    let file = io.open(path, false).ok()?;
    let len = file.size().ok()? as usize;
    if len > max {
        return None;
    }
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, 0).ok()?;
    Some(buf)
}

/// Whether two handles are the same open file.
pub(crate) fn same_file(a: &FileRef, b: &FileRef) -> bool {
    std::ptr::eq(Arc::as_ptr(a) as *const u8, Arc::as_ptr(b) as *const u8)
}

/// The filesystem holding `path`: (total bytes, bytes an unprivileged writer may still
/// use), for DescribeLogDirs.
pub fn disk_space(path: &Path) -> io::Result<(u64, u64)> {
    let stat = rustix::fs::statvfs(path)?;
    Ok((stat.f_blocks * stat.f_frsize, stat.f_bavail * stat.f_frsize))
}
