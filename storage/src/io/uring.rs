//! The io_uring backend, in two parts.
//!
//! [`Ring`] is a shard's own ring, created at start-up and driven by the shard's tokio
//! runtime through the ring's eventfd: the hot path (write rounds with their linked
//! fsyncs, and fetch reads) submits and awaits completions, so the shard thread never
//! waits for the disk. The ring owns every buffer and file of an operation until the
//! kernel completes it, even when the future that asked for it was dropped.
//!
//! Files opened by [`Uring`] also answer the synchronous [`IoFile`] calls through a
//! small ring per thread, for what runs outside the hot path (opening and recovering
//! logs, rare lookups by timestamp); each such call waits for its own completion.
//!
//! [`Uring::probe`] tells at start-up whether io_uring can be used here: it is often
//! disabled by sysctl (`kernel.io_uring_disabled`) or seccomp (EPERM, ENOSYS).

#![allow(unsafe_code)] // submitting to a ring is unsafe; see `complete` for why it is sound here

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fs::File;
use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use futures_util::future::LocalBoxFuture;
use io_uring::{opcode, squeue, types, IoUring, Probe};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use super::direct::{self, DirectFile, PlannedRead, Staged};
use super::{iovecs, FileRef, Io, IoFile, RoundOutcome, RoundWrite, WriteRound, IOV_MAX};

/// Entries per ring. One operation is in flight per call today; a few more leave room
/// for linked write-then-sync submissions without resizing.
const RING_ENTRIES: u32 = 8;

thread_local! {
    static RING: RefCell<Option<IoUring>> = const { RefCell::new(None) };
}

/// A shard's io_uring backend: its own [`Ring`] for the hot path. Directory operations
/// (rare) go through plain syscalls.
pub struct Uring {
    ring: Rc<Ring>,
    /// Direct I/O for segment log files: the shard's chunk cache and buffer pool.
    direct: Option<Arc<direct::Shared>>,
    budget: Option<super::handles::Budget>,
}

impl Uring {
    /// Creates the calling shard's ring; must run inside its tokio runtime.
    pub fn new() -> io::Result<Uring> {
        Ok(Uring {
            ring: Ring::new()?,
            direct: None,
            budget: None,
        })
    }

    /// The shard's ring with direct-I/O log files and a chunk cache of `cache_bytes`.
    pub fn direct(cache_bytes: usize) -> io::Result<Uring> {
        Ok(Uring {
            ring: Ring::new()?,
            direct: Some(direct::Shared::new(cache_bytes)),
            budget: None,
        })
    }

    /// The same with segment files opened through a budget of `descriptors`.
    pub fn with_open_files(mut self, descriptors: usize) -> Uring {
        self.budget = Some(super::budget_for(descriptors, self.direct.clone(), |p, c| {
            Ok(Arc::new(UringFile(super::open_read_write(p, c)?)))
        }));
        self
    }

    /// Checks that a ring can be created and supports every operation the log uses.
    pub fn probe() -> io::Result<()> {
        let ring = IoUring::new(RING_ENTRIES)?;
        let mut probe = Probe::new();
        ring.submitter().register_probe(&mut probe)?;
        for (code, name) in [
            (opcode::Read::CODE, "read"),
            (opcode::Write::CODE, "write"),
            (opcode::Writev::CODE, "writev"),
            (opcode::Fsync::CODE, "fsync"),
        ] {
            if !probe.is_supported(code) {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!("io_uring lacks {name}"),
                ));
            }
        }
        Ok(())
    }
}

/// Submits `entry` on this thread's ring and waits for its completion.
///
/// Sound because exactly one entry is in flight per ring and this function returns
/// only once the kernel has completed it (or refused to take it): the buffer the entry
/// points into is borrowed by the caller for the whole call, so the kernel never
/// reads or writes memory that was freed or moved.
fn complete(entry: squeue::Entry) -> io::Result<i32> {
    RING.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(IoUring::new(RING_ENTRIES)?);
        }
        let ring = slot.as_mut().ok_or_else(|| io::Error::other("no io_uring ring"))?;
        // SAFETY: see the function's comment; the entry's buffer outlives its completion.
        unsafe { ring.submission().push(&entry) }.map_err(|_| io::Error::other("io_uring submission queue full"))?;
        loop {
            match ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            if let Some(cqe) = ring.completion().next() {
                let result = cqe.result();
                return if result < 0 {
                    Err(io::Error::from_raw_os_error(-result))
                } else {
                    Ok(result)
                };
            }
        }
    })
}

struct UringFile(File);

impl IoFile for UringFile {
    fn read_exact_at(&self, mut buf: &mut [u8], mut pos: u64) -> io::Result<()> {
        let fd = types::Fd(self.0.as_raw_fd());
        while !buf.is_empty() {
            let len = buf.len().min(u32::MAX as usize) as u32;
            let n = complete(opcode::Read::new(fd, buf.as_mut_ptr(), len).offset(pos).build())?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "read past the end of the file",
                ));
            }
            buf = &mut buf[n as usize..];
            pos += n as u64;
        }
        Ok(())
    }

    fn write_all_at(&self, mut buf: &[u8], mut pos: u64) -> io::Result<()> {
        let fd = types::Fd(self.0.as_raw_fd());
        while !buf.is_empty() {
            let len = buf.len().min(u32::MAX as usize) as u32;
            let n = complete(opcode::Write::new(fd, buf.as_ptr(), len).offset(pos).build())?;
            if n == 0 {
                return Err(io::Error::new(io::ErrorKind::WriteZero, "the disk took no bytes"));
            }
            buf = &buf[n as usize..];
            pos += n as u64;
        }
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }

    fn sync_data(&self) -> io::Result<()> {
        let fd = types::Fd(self.0.as_raw_fd());
        complete(opcode::Fsync::new(fd).flags(types::FsyncFlags::DATASYNC).build()).map(|_| ())
    }

    fn raw_fd(&self) -> Option<RawFd> {
        Some(self.0.as_raw_fd())
    }
}

impl Io for Uring {
    fn open(&self, path: &Path, create: bool) -> io::Result<FileRef> {
        Ok(Arc::new(UringFile(super::open_read_write(path, create)?)))
    }
    fn open_log(&self, path: &Path, create: bool) -> io::Result<FileRef> {
        super::open_log_file(self.direct.as_ref(), path, create, |p, c| self.open(p, c), None)
    }
    fn direct_io(&self) -> bool {
        self.direct.is_some()
    }
    fn budget(&self) -> Option<&super::handles::Budget> {
        self.budget.as_ref()
    }
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir_all(path)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        super::list_dir(dir)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        super::remove_file_if_present(path)
    }
    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_dir_all(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        super::sync_dir_now(dir)
    }
    fn name(&self) -> &'static str {
        "io_uring"
    }

    /// The whole round in one submission on the shard's ring; directory syncs (once
    /// per new segment, rare) on the blocking pool after the writes. Small rounds
    /// without a sync are written in place instead, and so are the small sync-free
    /// parts of a larger round to direct-I/O files (see [`super::inline`]).
    fn write_round(&self, mut round: WriteRound) -> LocalBoxFuture<'_, RoundOutcome> {
        if super::inline::fits(&round) {
            return Box::pin(std::future::ready(super::inline::run(round)));
        }
        let mut small = super::inline::write_small_direct(std::mem::take(&mut round.writes));
        round.writes = std::mem::take(&mut small.rest);
        let staged = stage_direct(&mut round.writes);
        Box::pin(async move {
            let files: Vec<FileRef> = round.writes.iter().map(|w| w.file.clone()).collect();
            let mut writes = self.ring.write_round(round.writes).await;
            commit_direct(&files, staged, &mut writes);
            let writes = small.merge(writes);
            let mut dirs = Vec::with_capacity(round.dirs.len());
            for dir in round.dirs {
                dirs.push(
                    match tokio::task::spawn_blocking(move || super::sync_dir_now(&dir)).await {
                        Ok(result) => result,
                        Err(e) => Err(io::Error::other(e)),
                    },
                );
            }
            RoundOutcome { writes, dirs }
        })
    }

    /// Page-cache hits are copied out in place (see [`super::inline`]); the rest is
    /// read through the ring.
    fn read(&self, file: &FileRef, pos: u64, len: usize) -> LocalBoxFuture<'_, io::Result<Bytes>> {
        if let Some(d) = file.direct() {
            if let Some(hit) = d.cached(pos, len) {
                return Box::pin(std::future::ready(Ok(hit)));
            }
            let file = file.clone();
            return Box::pin(async move {
                let Some(d) = file.direct() else {
                    return Err(io::Error::other("a direct file stopped being one"));
                };
                let plan = d.plan_read(pos, len, 0)?;
                let (n, plan) = self.ring.read_direct(&file, plan).await?;
                d.finish_read(plan, n)
            });
        }
        if let Some(cached) = file.raw_fd().and_then(|fd| super::inline::read_cached(fd, pos, len)) {
            return Box::pin(std::future::ready(Ok(Bytes::from(cached))));
        }
        let file = file.clone();
        Box::pin(async move { self.ring.read_exact(&file, pos, len).await.map(Bytes::from) })
    }

    fn driver(&self) -> Option<LocalBoxFuture<'static, ()>> {
        Some(Box::pin(self.ring.clone().drive()))
    }
}

/// Entries of a shard's ring. A round of group commit submits a write and a linked
/// fsync per dirty file and fetches add a read per partition; 256 covers a busy shard,
/// and a full queue is drained by submitting, never refused.
const SHARD_RING_ENTRIES: u32 = 256;
/// Completion queue size: four completions per submission slot, so bursts of
/// completions the shard has not reaped yet do not overflow it.
const SHARD_RING_COMPLETIONS: u32 = 1024;
/// Files one pass of a round submits: each adds a writev and a linked fsync, so a pass
/// always fits the submission queue and a linked pair is never split between two
/// submissions. A round over more files takes several passes.
const FILES_PER_PASS: usize = SHARD_RING_ENTRIES as usize / 2;

/// What an operation's memory and file are while the kernel may still use them. The
/// ring owns this until the completion arrives, even when the future that asked for
/// the operation was dropped: the kernel never writes into freed memory.
#[derive(Default)]
#[allow(dead_code)] // held, never read: these fields exist to outlive the kernel's use
struct Keep {
    file: Option<FileRef>,
    bufs: Vec<Bytes>,
    iovecs: Vec<libc::iovec>,
    read: Vec<u8>,
    direct: Option<PlannedRead>,
}

struct Op {
    result: Option<i32>,
    waker: Option<Waker>,
    /// The future is gone; free the slot when the completion arrives.
    abandoned: bool,
    keep: Keep,
}

struct RingState {
    ring: IoUring,
    ops: Vec<Option<Op>>,
    free: Vec<usize>,
    in_flight: usize,
}

/// A shard's own io_uring ring, driven by the shard's tokio runtime: the ring signals
/// an eventfd on every completion, tokio watches the eventfd, and [`Ring::drive`] hands
/// completions to the futures waiting for them. No call here waits for the disk on
/// the shard's thread. Single-threaded by construction (`Rc`, `RefCell`).
pub struct Ring {
    state: RefCell<RingState>,
    event: AsyncFd<OwnedFd>,
}

impl Ring {
    /// Creates the ring and registers its eventfd with the current tokio runtime.
    pub fn new() -> io::Result<Rc<Ring>> {
        let ring = IoUring::builder()
            .setup_cqsize(SHARD_RING_COMPLETIONS)
            .build(SHARD_RING_ENTRIES)?;
        // SAFETY: eventfd takes no pointers; a negative return is checked before use.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by eventfd and is owned by nothing else.
        let event = unsafe { OwnedFd::from_raw_fd(fd) };
        ring.submitter().register_eventfd(event.as_raw_fd())?;
        // Registering with a reactor panics outside a runtime; say so instead.
        tokio::runtime::Handle::try_current().map_err(io::Error::other)?;
        // SAFETY: the AsyncFd owns the OwnedFd, so the descriptor stays open and the
        // same for the AsyncFd's whole life.
        let event =
            unsafe { AsyncFd::register_with_interest(event, Interest::READABLE) }.map_err(|e| e.into_parts().1)?;
        Ok(Rc::new(Ring {
            state: RefCell::new(RingState {
                ring,
                ops: Vec::new(),
                free: Vec::new(),
                in_flight: 0,
            }),
            event,
        }))
    }

    /// Reaps completions whenever the eventfd fires; run it as a task on the shard.
    pub async fn drive(self: Rc<Self>) {
        loop {
            let Ok(mut guard) = self.event.readable().await else {
                return;
            };
            guard.clear_ready();
            let mut counter = [0u8; 8];
            // SAFETY: reads at most 8 bytes into a live 8-byte buffer.
            let _ = unsafe { libc::read(self.event.as_raw_fd(), counter.as_mut_ptr().cast(), counter.len()) };
            self.reap();
        }
    }

    /// Hands every completion in the queue to its operation.
    fn reap(&self) {
        let mut state = self.state.borrow_mut();
        let state = &mut *state;
        let mut done = Vec::new();
        for cqe in state.ring.completion() {
            done.push((cqe.user_data() as usize, cqe.result()));
        }
        for (slot, result) in done {
            state.in_flight -= 1;
            let Some(Some(op)) = state.ops.get_mut(slot) else {
                continue;
            };
            if op.abandoned {
                state.ops[slot] = None;
                state.free.push(slot);
            } else {
                op.result = Some(result);
                if let Some(w) = op.waker.take() {
                    w.wake();
                }
            }
        }
    }

    /// Queues `entries` (linked or not) with what they point into, and submits them.
    ///
    /// Sound because every pointer in `entries` points into `keeps` (or into nothing),
    /// and the ring keeps each `Keep` until its operation's completion is reaped.
    async fn submit(self: &Rc<Self>, entries: Vec<(squeue::Entry, Keep)>) -> io::Result<Vec<OpFuture>> {
        let count = entries.len();
        loop {
            {
                let mut state = self.state.borrow_mut();
                let state = &mut *state;
                let room = {
                    let queue = state.ring.submission();
                    queue.capacity() - queue.len()
                };
                if room >= count {
                    let mut futures = Vec::with_capacity(count);
                    for (entry, keep) in entries {
                        let slot = state.free.pop().unwrap_or_else(|| {
                            state.ops.push(None);
                            state.ops.len() - 1
                        });
                        state.ops[slot] = Some(Op {
                            result: None,
                            waker: None,
                            abandoned: false,
                            keep,
                        });
                        let entry = entry.user_data(slot as u64);
                        // SAFETY: see the function's comment; the memory the entry
                        // points into now belongs to `state.ops[slot]`.
                        unsafe { state.ring.submission().push(&entry) }
                            .map_err(|_| io::Error::other("io_uring submission queue full"))?;
                        state.in_flight += 1;
                        futures.push(OpFuture {
                            ring: self.clone(),
                            slot,
                            done: false,
                        });
                    }
                    loop {
                        match state.ring.submit() {
                            Ok(_) => break,
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                            // The kernel is busy with completions we have not reaped;
                            // the queued entries go in with the next submission.
                            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => break,
                            Err(e) => return Err(e),
                        }
                    }
                    return Ok(futures);
                }
                let _ = state.ring.submit();
            }
            self.reap();
            tokio::task::yield_now().await;
        }
    }

    /// A write round: for each [`RoundWrite`], its buffers written in full at its
    /// position and then, when asked, the file fdatasynced; one result per write. Each
    /// file's writev (at most `IOV_MAX` buffers) goes in the same submission as the
    /// others', with its sync linked behind its last writev. A write the kernel took
    /// only in part cancels its linked sync; the next pass writes the rest and syncs
    /// again. A failure fails only the file it happened to.
    pub async fn write_round(self: &Rc<Self>, writes: Vec<RoundWrite>) -> Vec<io::Result<()>> {
        let mut results: Vec<Option<io::Result<()>>> = (0..writes.len()).map(|_| None).collect();
        let mut pending = Vec::with_capacity(writes.len());
        for (i, w) in writes.into_iter().enumerate() {
            let Some(raw) = w.file.raw_fd() else {
                results[i] = Some(Err(io::Error::other("file has no descriptor for io_uring")));
                continue;
            };
            pending.push((
                i,
                Pending {
                    fd: types::Fd(raw),
                    bufs: w.bufs.into_iter().filter(|b| !b.is_empty()).collect(),
                    pos: w.pos,
                    sync: w.sync,
                    file: w.file,
                },
            ));
        }
        while !pending.is_empty() {
            let files = pending.len().min(FILES_PER_PASS);
            let mut entries = Vec::new();
            // Per file: whether this pass writes, and whether it syncs.
            let mut passes = Vec::with_capacity(files);
            for (_, w) in pending.iter_mut().take(files) {
                let chunk: Vec<Bytes> = w.bufs.drain(..w.bufs.len().min(IOV_MAX)).collect();
                let writes = !chunk.is_empty();
                let syncs = w.sync && w.bufs.is_empty();
                if writes {
                    let iovecs = iovecs(&chunk);
                    let mut entry = opcode::Writev::new(w.fd, iovecs.as_ptr(), iovecs.len() as u32)
                        .offset(w.pos)
                        .build();
                    if syncs {
                        entry = entry.flags(squeue::Flags::IO_LINK);
                    }
                    let keep = Keep {
                        file: Some(w.file.clone()),
                        bufs: chunk,
                        iovecs,
                        ..Keep::default()
                    };
                    entries.push((entry, keep));
                }
                if syncs {
                    entries.push((fsync_entry(w.fd), keep_file(&w.file)));
                }
                passes.push((writes, syncs));
            }
            let mut ops = match self.submit(entries).await {
                Ok(ops) => ops.into_iter(),
                Err(e) => {
                    for (i, _) in pending.drain(..files) {
                        results[i] = Some(Err(io::Error::new(e.kind(), e.to_string())));
                    }
                    continue;
                }
            };
            let mut finished = Vec::with_capacity(files);
            for ((i, w), (writes, syncs)) in pending.iter_mut().take(files).zip(passes) {
                let mut failure = None;
                let mut whole = true;
                if writes {
                    match ops.next() {
                        None => failure = Some(io::Error::other("io_uring lost a write")),
                        Some(op) => {
                            let (n, keep) = op.await;
                            if n < 0 {
                                failure = Some(io::Error::from_raw_os_error(-n));
                            } else if n == 0 {
                                failure = Some(io::Error::new(io::ErrorKind::WriteZero, "the disk took no bytes"));
                            } else {
                                w.pos += n as u64;
                                // What the kernel did not take goes back to the front.
                                let mut skip = n as usize;
                                let mut unwritten = Vec::new();
                                for b in keep.bufs {
                                    if skip >= b.len() {
                                        skip -= b.len();
                                    } else {
                                        unwritten.push(b.slice(skip..));
                                        skip = 0;
                                    }
                                }
                                whole = unwritten.is_empty();
                                for b in unwritten.into_iter().rev() {
                                    w.bufs.push_front(b);
                                }
                            }
                        }
                    }
                }
                if syncs {
                    match ops.next() {
                        None => {
                            failure.get_or_insert_with(|| io::Error::other("io_uring lost a sync"));
                        }
                        Some(op) => {
                            let result = op.await.0;
                            // After a short write the linked sync reports -ECANCELED: retried.
                            if whole && result < 0 && failure.is_none() {
                                failure = Some(super::sync_failed(io::Error::from_raw_os_error(-result)));
                            }
                        }
                    }
                }
                let done = match failure {
                    Some(e) => {
                        results[*i] = Some(Err(e));
                        true
                    }
                    None => {
                        let done = w.bufs.is_empty() && (!w.sync || (syncs && whole));
                        if done {
                            results[*i] = Some(Ok(()));
                        }
                        done
                    }
                };
                finished.push(done);
            }
            let mut finished = finished.into_iter();
            pending.retain(|_| !finished.next().unwrap_or(false));
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(io::Error::other("io_uring round left a write undone"))))
            .collect()
    }

    /// A direct file's planned read: one aligned read into the plan's buffer; returns
    /// how many bytes the kernel read, with the plan.
    pub async fn read_direct(
        self: &Rc<Self>,
        file: &FileRef,
        mut plan: PlannedRead,
    ) -> io::Result<(usize, PlannedRead)> {
        let Some(raw) = file.direct().and_then(DirectFile::fd) else {
            return Err(io::Error::other("file has no direct descriptor for io_uring"));
        };
        let size = plan.size;
        let target = plan.buf.as_mut_slice()[..size].as_mut_ptr();
        let entry = opcode::Read::new(types::Fd(raw), target, size as u32)
            .offset(plan.pos)
            .build();
        let keep = Keep {
            file: Some(file.clone()),
            direct: Some(plan),
            ..Keep::default()
        };
        let ops = self.submit(vec![(entry, keep)]).await?;
        let Some(op) = ops.into_iter().next() else {
            return Err(io::Error::other("io_uring lost a read"));
        };
        let (n, keep) = op.await;
        if n < 0 {
            return Err(io::Error::from_raw_os_error(-n));
        }
        let plan = keep
            .direct
            .ok_or_else(|| io::Error::other("io_uring lost a read's buffer"))?;
        if n as usize > plan.size {
            return Err(io::Error::other("io_uring read reported more than it was given"));
        }
        Ok((n as usize, plan))
    }

    /// Reads exactly `len` bytes at `pos`.
    pub async fn read_exact(self: &Rc<Self>, file: &FileRef, pos: u64, len: usize) -> io::Result<Vec<u8>> {
        let Some(raw) = file.raw_fd() else {
            return Err(io::Error::other("file has no descriptor for io_uring"));
        };
        let mut out: Vec<u8> = Vec::new();
        while out.len() < len {
            let want = (len - out.len()).min(u32::MAX as usize);
            // Not zeroed: the kernel fills it, and only what it reports filling is kept.
            let mut buf: Vec<u8> = Vec::with_capacity(want);
            let entry = opcode::Read::new(types::Fd(raw), buf.as_mut_ptr(), want as u32)
                .offset(pos + out.len() as u64)
                .build();
            let keep = Keep {
                file: Some(file.clone()),
                read: buf,
                ..Keep::default()
            };
            let ops = self.submit(vec![(entry, keep)]).await?;
            let Some(op) = ops.into_iter().next() else {
                return Err(io::Error::other("io_uring lost a read"));
            };
            let (n, mut keep) = op.await;
            if n < 0 {
                return Err(io::Error::from_raw_os_error(-n));
            }
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "read past the end of the file",
                ));
            }
            if n as usize > keep.read.capacity() {
                return Err(io::Error::other("io_uring read reported more than it was given"));
            }
            // SAFETY: the kernel initialised the first `n` bytes of the buffer, which
            // has at least that capacity (checked above).
            unsafe { keep.read.set_len(n as usize) };
            if out.is_empty() {
                out = keep.read;
            } else {
                out.extend_from_slice(&keep.read);
            }
        }
        Ok(out)
    }
}

/// Stages the round's writes to direct files into aligned buffers (see
/// [`direct`]): each such write then goes out as its aligned chunks from the start of
/// its partial block. A write that cannot be staged writes nothing and fails.
pub(crate) fn stage_direct(writes: &mut [RoundWrite]) -> Vec<Option<io::Result<Staged>>> {
    writes
        .iter_mut()
        .map(|w| {
            // A write with no bytes only syncs (a file written by an earlier round).
            let d = w.file.direct().filter(|_| !w.is_empty())?;
            Some(match d.stage(w.pos, &w.bufs) {
                Ok(staged) => {
                    w.pos = staged.pos;
                    w.bufs = staged.chunks.clone();
                    Ok(staged)
                }
                Err(e) => {
                    w.bufs.clear();
                    Err(e)
                }
            })
        })
        .collect()
}

/// Commits what [`stage_direct`] staged, for the writes that succeeded; a write that
/// could not be staged reports why.
pub(crate) fn commit_direct(
    files: &[FileRef],
    staged: Vec<Option<io::Result<Staged>>>,
    results: &mut [io::Result<()>],
) {
    for ((file, staged), result) in files.iter().zip(staged).zip(results.iter_mut()) {
        match (staged, file.direct()) {
            (Some(Ok(staged)), Some(d)) if result.is_ok() => d.commit(staged),
            (Some(Err(e)), _) => *result = Err(e),
            _ => {}
        }
    }
}

/// A file's part of a round while it is being written.
struct Pending {
    file: FileRef,
    fd: types::Fd,
    pos: u64,
    bufs: VecDeque<Bytes>,
    sync: bool,
}

fn fsync_entry(fd: types::Fd) -> squeue::Entry {
    opcode::Fsync::new(fd).flags(types::FsyncFlags::DATASYNC).build()
}

fn keep_file(file: &FileRef) -> Keep {
    Keep {
        file: Some(file.clone()),
        ..Keep::default()
    }
}

impl Drop for Ring {
    /// Waits for operations still in flight, so no buffer is freed under the kernel.
    fn drop(&mut self) {
        let state = self.state.get_mut();
        while state.in_flight > 0 {
            match state.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
            let reaped = state.ring.completion().count();
            state.in_flight = state.in_flight.saturating_sub(reaped);
        }
    }
}

/// One submitted operation: resolves to its result and what it kept.
struct OpFuture {
    ring: Rc<Ring>,
    slot: usize,
    done: bool,
}

impl Future for OpFuture {
    type Output = (i32, Keep);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Completions of buffered I/O often arrive during the submit itself.
        self.ring.reap();
        let slot = self.slot;
        let mut state = self.ring.state.borrow_mut();
        let ready = match state.ops.get_mut(slot) {
            Some(Some(op)) => match op.result {
                Some(result) => Some((result, std::mem::take(&mut op.keep))),
                None => {
                    op.waker = Some(cx.waker().clone());
                    None
                }
            },
            _ => Some((-libc::EIO, Keep::default())),
        };
        match ready {
            Some(out) => {
                state.ops[slot] = None;
                state.free.push(slot);
                drop(state);
                self.done = true;
                Poll::Ready(out)
            }
            None => Poll::Pending,
        }
    }
}

impl Drop for OpFuture {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if let Ok(mut state) = self.ring.state.try_borrow_mut() {
            if let Some(Some(op)) = state.ops.get_mut(self.slot) {
                if op.result.is_some() {
                    state.ops[self.slot] = None;
                    state.free.push(self.slot);
                } else {
                    op.abandoned = true;
                    op.waker = None;
                }
            }
        }
    }
}
