//! File descriptors as a budget: a segment holds a [`Handle`] to each of its files, not
//! an open file. The handle opens the file when it is used and keeps it open while it
//! is used often; a shard's [`OpenFiles`] closes the least recently used ones when more
//! descriptors are open than its budget allows (a CLOCK sweep: each use sets a bit, the
//! sweep clears it, and closes a file whose bit is clear). So an idle partition holds
//! no descriptor, and 10,000 partitions fit in a few thousand.
//!
//! A file in use is never closed under its user: [`Handle::file`] hands out the open
//! file itself (an `Arc`), which write rounds, reads and the cleaner hold while the
//! kernel works on it; the sweep passes over a file anyone else holds. Such pinned
//! files may take the count past the budget for as long as they are in flight (the
//! share of descriptors the broker reserves for in-flight work).
//!
//! Closing loses nothing: a file's data is in the kernel's page cache or on the disk,
//! a direct-I/O file leaves its logical end and partial last block with its handle
//! ([`super::direct::Resume`], under 4 KiB), so closing cuts nothing and opening again
//! reads nothing (with 10,000 busy partitions, cutting the padding and reading the
//! block back on every reopen was a quarter of the broker's CPU), and a writeback
//! error no descriptor has seen yet is reported to the next fdatasync through
//! whichever descriptor makes it (Linux's errseq, since 4.16).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use super::direct::Resume;
use super::FileRef;

/// Process-wide counts for the metrics page (every shard's budget together).
pub struct Stats {
    /// Descriptors segment files hold now, and the budgets' sum.
    pub descriptors: AtomicU64,
    pub budget: AtomicU64,
    /// Files opened (first opens and reopens) and closed by a budget.
    pub opened: AtomicU64,
    pub closed: AtomicU64,
}

pub static STATS: Stats = Stats {
    descriptors: AtomicU64::new(0),
    budget: AtomicU64::new(0),
    opened: AtomicU64::new(0),
    closed: AtomicU64::new(0),
};

/// Opens a file: `(path, create, what its last close left)`.
pub type Opener = Arc<dyn Fn(&Path, bool, Option<Resume>) -> io::Result<FileRef> + Send + Sync>;

/// A shard's open files and their budget.
pub struct OpenFiles {
    /// Descriptors the shard's files may hold (outside of in-flight work).
    budget: usize,
    /// Descriptors the open files hold: outside the clock's lock, because a slot
    /// dropped on another thread (the cleaner's) while the sweep holds the lock and
    /// the last reference to it takes its descriptors off here.
    descriptors: AtomicUsize,
    clock: Mutex<Clock>,
    opened: AtomicU64,
    closed: AtomicU64,
}

#[derive(Default)]
struct Clock {
    /// Every open file's slot (dead or closed ones are dropped as the hand meets them).
    ring: Vec<Weak<Slot>>,
    hand: usize,
}

/// How a backend opens files through its budget.
pub struct Budget {
    files: Arc<OpenFiles>,
    plain: Opener,
    log: Opener,
    /// Descriptors a log file may hold: a direct-I/O file opens a second, buffered one
    /// for small writes.
    log_cost: usize,
}

impl Budget {
    pub fn new(budget: usize, plain: Opener, log: Opener, log_cost: usize) -> Budget {
        Budget {
            files: OpenFiles::new(budget),
            plain,
            log,
            log_cost,
        }
    }

    /// A handle to `path` (a segment's log file when `log`), opened now so that a
    /// missing file or a refused create is reported here.
    pub fn handle(&self, path: &Path, log: bool, create: bool) -> io::Result<Handle> {
        let (opener, cost) = if log {
            (self.log.clone(), self.log_cost)
        } else {
            (self.plain.clone(), 1)
        };
        let file = opener(path, create, None)?;
        let handle = Handle(Arc::new(Slot {
            path: path.to_path_buf(),
            opener: Some(opener),
            cost,
            file: Mutex::new(Held::open(file)),
            used: AtomicBool::new(true),
            files: Some(self.files.clone()),
        }));
        self.files.admit(&handle.0);
        Ok(handle)
    }

    pub fn files(&self) -> &Arc<OpenFiles> {
        &self.files
    }
}

/// What [`OpenFiles::stats`] reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpenFilesStats {
    pub budget: usize,
    /// Descriptors the open files hold now.
    pub descriptors: usize,
    pub opened: u64,
    pub closed: u64,
}

impl OpenFiles {
    pub fn new(budget: usize) -> Arc<OpenFiles> {
        STATS.budget.fetch_add(budget.max(1) as u64, Ordering::Relaxed);
        Arc::new(OpenFiles {
            budget: budget.max(1),
            descriptors: AtomicUsize::new(0),
            clock: Mutex::new(Clock::default()),
            opened: AtomicU64::new(0),
            closed: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Clock> {
        self.clock.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn stats(&self) -> OpenFilesStats {
        OpenFilesStats {
            budget: self.budget,
            descriptors: self.descriptors.load(Ordering::Relaxed),
            opened: self.opened.load(Ordering::Relaxed),
            closed: self.closed.load(Ordering::Relaxed),
        }
    }

    /// Counts a file just opened, and closes others while the count is over budget.
    fn admit(&self, slot: &Arc<Slot>) {
        self.opened.fetch_add(1, Ordering::Relaxed);
        STATS.opened.fetch_add(1, Ordering::Relaxed);
        STATS.descriptors.fetch_add(slot.cost as u64, Ordering::Relaxed);
        self.descriptors.fetch_add(slot.cost, Ordering::Relaxed);
        let mut clock = self.lock();
        clock.ring.push(Arc::downgrade(slot));
        // Two turns of the hand: the first may only clear use bits. Past that, every
        // file left is pinned by work in flight and the count stays over for now.
        let mut steps = 2 * clock.ring.len();
        while self.descriptors.load(Ordering::Relaxed) > self.budget && steps > 0 && !clock.ring.is_empty() {
            steps -= 1;
            let at = clock.hand % clock.ring.len();
            let Some(other) = clock.ring[at].upgrade() else {
                // Dropped: its Drop already took its descriptors off the count.
                clock.ring.swap_remove(at);
                continue;
            };
            if Arc::ptr_eq(&other, slot) {
                // The file just opened is about to be used.
                clock.hand = at + 1;
                continue;
            }
            match other.try_close() {
                Closing::Closed => {
                    self.descriptors.fetch_sub(other.cost, Ordering::Relaxed);
                    clock.ring.swap_remove(at);
                    self.closed.fetch_add(1, Ordering::Relaxed);
                    STATS.closed.fetch_add(1, Ordering::Relaxed);
                    STATS.descriptors.fetch_sub(other.cost as u64, Ordering::Relaxed);
                }
                Closing::AlreadyClosed => {
                    clock.ring.swap_remove(at);
                }
                Closing::Kept => clock.hand = at + 1,
            }
        }
    }

    /// A slot that held an open file went away (its segment was deleted or reopened).
    fn dropped(&self, cost: usize) {
        self.descriptors.fetch_sub(cost, Ordering::Relaxed);
        STATS.descriptors.fetch_sub(cost as u64, Ordering::Relaxed);
    }
}

impl Drop for OpenFiles {
    fn drop(&mut self) {
        STATS.budget.fetch_sub(self.budget as u64, Ordering::Relaxed);
    }
}

enum Closing {
    Closed,
    AlreadyClosed,
    /// Recently used, or in use.
    Kept,
}

/// A slot's file: open, or closed with what opening it again needs.
struct Held {
    open: Option<FileRef>,
    resume: Option<Resume>,
}

impl Held {
    fn open(file: FileRef) -> Held {
        Held {
            open: Some(file),
            resume: None,
        }
    }
}

struct Slot {
    path: PathBuf,
    /// None for a file that stays open for as long as its handle lives.
    opener: Option<Opener>,
    cost: usize,
    file: Mutex<Held>,
    used: AtomicBool,
    files: Option<Arc<OpenFiles>>,
}

impl Slot {
    fn lock(&self) -> MutexGuard<'_, Held> {
        self.file.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn try_close(&self) -> Closing {
        if self.used.swap(false, Ordering::Relaxed) {
            return Closing::Kept;
        }
        // Another thread (the cleaner) is opening or using this very slot: leave it.
        let Ok(mut held) = self.file.try_lock() else {
            return Closing::Kept;
        };
        let Some(open) = held.open.as_ref() else {
            return Closing::AlreadyClosed;
        };
        if Arc::strong_count(open) > 1 {
            return Closing::Kept;
        }
        held.resume = open.suspend();
        held.open = None;
        Closing::Closed
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let open = self.file.get_mut().map(|f| f.open.is_some()).unwrap_or(true);
        if let (true, Some(files)) = (open, &self.files) {
            files.dropped(self.cost);
        }
    }
}

/// A file as a segment holds it; see the module comment. Clones are the same handle.
#[derive(Clone)]
pub struct Handle(Arc<Slot>);

impl Handle {
    /// A handle to a file that stays open (backends without a budget, and tests).
    pub fn fixed(path: &Path, file: FileRef) -> Handle {
        Handle(Arc::new(Slot {
            path: path.to_path_buf(),
            opener: None,
            cost: 1,
            file: Mutex::new(Held::open(file)),
            used: AtomicBool::new(true),
            files: None,
        }))
    }

    /// The open file, opening it again if the budget closed it. Hold it only for the
    /// work at hand: while it is held the file cannot be closed.
    pub fn file(&self) -> io::Result<FileRef> {
        self.0.used.store(true, Ordering::Relaxed);
        let mut slot = self.0.lock();
        if let Some(file) = slot.open.as_ref() {
            return Ok(file.clone());
        }
        let Some(opener) = &self.0.opener else {
            return Err(io::Error::other("a fixed file handle lost its file"));
        };
        // Kept until the open succeeds: without it a direct file would take its
        // padding for data.
        let file = opener(&self.0.path, false, slot.resume.clone())?;
        slot.resume = None;
        slot.open = Some(file.clone());
        drop(slot);
        if let Some(files) = &self.0.files {
            files.admit(&self.0);
        }
        Ok(file)
    }

    /// The file if it is open now (without opening it).
    pub fn if_open(&self) -> Option<FileRef> {
        self.0.lock().open.clone()
    }

    pub fn path(&self) -> &Path {
        &self.0.path
    }

    /// Whether two handles are the same (a segment's file, and not one that replaced it).
    pub fn same(&self, other: &Handle) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::{Io, Positional};

    fn budget(n: usize) -> Budget {
        let plain: Opener = Arc::new(|p, c, _| Positional::new().open(p, c));
        Budget::new(n, plain.clone(), plain, 1)
    }

    #[test]
    fn idle_files_are_closed_past_the_budget_and_reopened_on_use() {
        let dir = tempfile::tempdir().unwrap();
        let b = budget(3);
        let handles: Vec<Handle> = (0..10)
            .map(|i| b.handle(&dir.path().join(format!("f{i}")), false, true).unwrap())
            .collect();
        assert!(b.files().stats().descriptors <= 3);
        for (i, h) in handles.iter().enumerate() {
            h.file()
                .unwrap()
                .write_all_at(format!("file {i}").as_bytes(), 0)
                .unwrap();
            assert!(b.files().stats().descriptors <= 3);
        }
        for (i, h) in handles.iter().enumerate() {
            let f = h.file().unwrap();
            let mut buf = vec![0u8; f.size().unwrap() as usize];
            f.read_exact_at(&mut buf, 0).unwrap();
            assert_eq!(buf, format!("file {i}").as_bytes());
        }
        let stats = b.files().stats();
        assert!(stats.closed >= 10, "{stats:?}");
        drop(handles);
        assert_eq!(b.files().stats().descriptors, 0);
    }

    #[test]
    fn a_file_in_use_is_never_closed() {
        let dir = tempfile::tempdir().unwrap();
        let b = budget(1);
        let first = b.handle(&dir.path().join("a"), false, true).unwrap();
        let pinned = first.file().unwrap();
        let others: Vec<Handle> = (0..5)
            .map(|i| b.handle(&dir.path().join(format!("b{i}")), false, true).unwrap())
            .collect();
        assert!(first.if_open().is_some_and(|f| Arc::ptr_eq(&f, &pinned)));
        drop(pinned);
        for h in &others {
            h.file().unwrap();
        }
        others[4].file().unwrap();
        assert!(first.if_open().is_none(), "an idle file past the budget is closed");
    }
}
