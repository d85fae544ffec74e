//! A simulated disk for tests (after TigerBeetle's `testing/storage.zig`): files live in
//! memory with two versions, what the page cache holds and what is durable. A seeded
//! generator injects faults (failed and short writes, failed syncs, failed reads) and
//! [`SimIo::crash`] keeps only what was synced, plus, like a real crash, a random torn
//! piece of what was not. The same seed replays the same faults exactly.
//!
//! [`SimIo::direct`] opens segment log files through [`DirectFile`], as direct I/O
//! does: the simulated file then refuses any transfer that is not block-aligned, and a
//! failed write or a crash keeps whole 512-byte sectors only (a disk writes a sector
//! whole or not at all).

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::direct::{self, DirectFile};
use super::{FileRef, Io, IoFile};

/// The unit a simulated direct-I/O file tears at.
const SECTOR: usize = 512;

/// Probabilities, in parts per million, of each fault on each call.
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    pub write_error_ppm: u32,
    pub sync_error_ppm: u32,
    pub read_error_ppm: u32,
}

#[derive(Default)]
struct SimFile {
    /// What readers see now (the page cache).
    data: Vec<u8>,
    /// What survives a crash.
    durable: Vec<u8>,
    /// Whether the directory entry survives a crash (its directory was synced).
    entry_durable: bool,
    /// Written with direct I/O: tears at sector boundaries.
    sectors: bool,
}

/// A rename whose directory has not been synced since: a crash may undo it (rename(2)
/// is atomic, so the file is then at `from` again and what it displaced at `to`).
struct PendingRename {
    from: PathBuf,
    to: PathBuf,
    displaced: Option<SimFile>,
}

struct State {
    files: BTreeMap<PathBuf, SimFile>,
    dirs: BTreeSet<PathBuf>,
    renames: Vec<PendingRename>,
    rng: u64,
    faults: Faults,
    /// Count of injected faults, so a test can check that faults did happen.
    injected: u64,
    /// Bytes read from simulated files, so a test can check what an open reads.
    bytes_read: u64,
}

impl State {
    /// xorshift64*: tiny, seedable, and good enough to pick faults.
    fn next(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn roll(&mut self, ppm: u32) -> bool {
        let hit = ppm > 0 && self.next() % 1_000_000 < ppm as u64;
        if hit {
            self.injected += 1;
        }
        hit
    }
}

/// The simulated disk. Clones share the same disk.
#[derive(Clone)]
pub struct SimIo {
    state: Arc<Mutex<State>>,
    direct: Option<Arc<direct::Shared>>,
    budget: Option<Arc<super::handles::Budget>>,
}

fn injected(what: &str) -> io::Error {
    io::Error::other(format!("injected {what} fault"))
}

fn missing() -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, "no such simulated file")
}

impl SimIo {
    pub fn new(seed: u64, faults: Faults) -> SimIo {
        let state = State {
            files: BTreeMap::new(),
            dirs: BTreeSet::new(),
            renames: Vec::new(),
            rng: seed | 1,
            faults,
            injected: 0,
            bytes_read: 0,
        };
        SimIo {
            state: Arc::new(Mutex::new(state)),
            direct: None,
            budget: None,
        }
    }

    /// A simulated disk whose segment log files are written with direct I/O, through
    /// a chunk cache of `cache_bytes` (small, so tests also read from the disk).
    pub fn direct(seed: u64, faults: Faults, cache_bytes: usize) -> SimIo {
        SimIo {
            direct: Some(direct::Shared::new(cache_bytes)),
            ..SimIo::new(seed, faults)
        }
    }

    /// The same disk with segment files opened through a budget of `descriptors`, so
    /// tests see files closed and reopened under them.
    pub fn with_open_files(mut self, descriptors: usize) -> SimIo {
        let (plain, log) = (self.clone(), self.clone());
        let log_cost = if self.direct.is_some() { 2 } else { 1 };
        self.budget = Some(Arc::new(super::handles::Budget::new(
            descriptors,
            Arc::new(move |p: &Path, c: bool, _| plain.open(p, c)),
            Arc::new(move |p: &Path, c: bool, resume| log.open_log_resumed(p, c, resume)),
            log_cost,
        )));
        self
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn set_faults(&self, faults: Faults) {
        self.lock().faults = faults;
    }

    pub fn faults_injected(&self) -> u64 {
        self.lock().injected
    }

    /// Bytes read from the simulated files so far (direct reads included).
    pub fn bytes_read(&self) -> u64 {
        self.lock().bytes_read
    }

    /// Power loss: every file falls back to its durable bytes plus a random prefix of
    /// what was written after, possibly with its last byte garbled (a torn write);
    /// files whose directory entry was never synced disappear.
    pub fn crash(&self) {
        let mut s = self.lock();
        // Renames not yet made durable by a directory sync each happened or not.
        for rename in std::mem::take(&mut s.renames).into_iter().rev() {
            if s.next().is_multiple_of(2) {
                if let Some(file) = s.files.remove(&rename.to) {
                    s.files.insert(rename.from, file);
                }
                if let Some(old) = rename.displaced {
                    s.files.insert(rename.to, old);
                }
            }
        }
        let paths: Vec<PathBuf> = s.files.keys().cloned().collect();
        for path in paths {
            let Some((keep_entry, durable_len, data_len, sectors)) = s
                .files
                .get(&path)
                .map(|f| (f.entry_durable, f.durable.len(), f.data.len(), f.sectors))
            else {
                continue;
            };
            if !keep_entry {
                s.files.remove(&path);
                continue;
            }
            let unsynced = data_len.saturating_sub(durable_len);
            let mut extra = if unsynced > 0 {
                (s.next() % (unsynced as u64 + 1)) as usize
            } else {
                0
            };
            if sectors && durable_len + extra < data_len {
                // Whole sectors only (what is kept ends on a sector boundary).
                extra = ((durable_len + extra) / SECTOR * SECTOR).saturating_sub(durable_len);
            }
            let garble = extra > 0 && s.next().is_multiple_of(2);
            let garbage = s.next() as u8 | 1;
            if let Some(f) = s.files.get_mut(&path) {
                let mut survived = f.durable.clone();
                if extra > 0 {
                    survived.extend_from_slice(&f.data[durable_len..durable_len + extra]);
                }
                if garble {
                    if let Some(last) = survived.last_mut() {
                        *last ^= garbage;
                    }
                }
                f.data = survived.clone();
                f.durable = survived;
            }
        }
    }
}

/// Writes `buf` at `pos`, or, when a write fault is rolled, a prefix of it in whole
/// `unit`s (bytes for a buffered file, sectors for a direct one: a short write) and an
/// error.
fn faulty_write(s: &mut State, path: &Path, buf: &[u8], pos: u64, unit: usize) -> io::Result<()> {
    let fault = s.faults.write_error_ppm;
    let fail = s.roll(fault);
    let written = if fail {
        (s.next() % ((buf.len() / unit) as u64 + 1)) as usize * unit
    } else {
        buf.len()
    };
    let f = s.files.get_mut(path).ok_or_else(missing)?;
    let start = pos as usize;
    if f.data.len() < start + written {
        f.data.resize(start + written, 0);
    }
    f.data[start..start + written].copy_from_slice(&buf[..written]);
    if fail {
        Err(injected("write"))
    } else {
        Ok(())
    }
}

struct SimHandle {
    io: SimIo,
    path: PathBuf,
}

impl SimHandle {
    fn with<T>(&self, f: impl FnOnce(&mut State, &Path) -> io::Result<T>) -> io::Result<T> {
        let mut s = self.io.lock();
        f(&mut s, &self.path)
    }
}

impl IoFile for SimHandle {
    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        self.with(|s, path| {
            let fault = s.faults.read_error_ppm;
            if s.roll(fault) {
                return Err(injected("read"));
            }
            let f = s.files.get(path).ok_or_else(missing)?;
            let start = pos as usize;
            let end = start + buf.len();
            if end > f.data.len() {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end"));
            }
            buf.copy_from_slice(&f.data[start..end]);
            s.bytes_read += buf.len() as u64;
            Ok(())
        })
    }

    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        self.with(|s, path| faulty_write(s, path, buf, pos, 1))
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.with(|s, path| {
            s.files.get_mut(path).ok_or_else(missing)?.data.resize(len as usize, 0);
            Ok(())
        })
    }

    fn size(&self) -> io::Result<u64> {
        self.with(|s, path| Ok(s.files.get(path).ok_or_else(missing)?.data.len() as u64))
    }

    fn sync_data(&self) -> io::Result<()> {
        self.with(|s, path| {
            let fault = s.faults.sync_error_ppm;
            if s.roll(fault) {
                return Err(injected("sync"));
            }
            let f = s.files.get_mut(path).ok_or_else(missing)?;
            f.durable = f.data.clone();
            Ok(())
        })
    }
}

impl SimIo {
    /// A log file, direct when the disk was made so, opened again as `resume` says
    /// when given (see [`direct::Resume`]).
    fn open_log_resumed(&self, path: &Path, create: bool, resume: Option<direct::Resume>) -> io::Result<FileRef> {
        let Some(shared) = &self.direct else {
            return self.open(path, create);
        };
        self.open(path, create)?;
        if let Some(f) = self.lock().files.get_mut(path) {
            f.sectors = true;
        }
        let blocks = Box::new(SimBlocks(SimHandle {
            io: self.clone(),
            path: path.to_path_buf(),
        }));
        Ok(Arc::new(match resume {
            Some(resume) => DirectFile::resume(blocks, shared.clone(), resume),
            None => DirectFile::new(blocks, shared.clone())?,
        }))
    }
}

impl Io for SimIo {
    fn open_log(&self, path: &Path, create: bool) -> io::Result<FileRef> {
        self.open_log_resumed(path, create, None)
    }

    fn direct_io(&self) -> bool {
        self.direct.is_some()
    }

    fn budget(&self) -> Option<&super::handles::Budget> {
        self.budget.as_deref()
    }

    fn open(&self, path: &Path, create: bool) -> io::Result<FileRef> {
        {
            let mut s = self.lock();
            if !s.files.contains_key(path) {
                if !create {
                    return Err(missing());
                }
                s.files.insert(path.to_path_buf(), SimFile::default());
            }
        }
        Ok(Arc::new(SimHandle {
            io: self.clone(),
            path: path.to_path_buf(),
        }))
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.lock().dirs.insert(path.to_path_buf());
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let s = self.lock();
        Ok(s.files
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name()?.to_str().map(str::to_string))
            .collect())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.lock().files.remove(path);
        Ok(())
    }

    /// The simulated disk frees nothing slowly: the file goes at once.
    fn remove_file_later(&self, path: &Path) -> io::Result<()> {
        self.remove_file(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut s = self.lock();
        let file = s.files.remove(from).ok_or_else(missing)?;
        // The file keeps its own entry's durability; until the directory is synced a
        // crash may undo the rename as a whole (see `PendingRename`).
        let displaced = s.files.insert(to.to_path_buf(), file);
        s.renames.push(PendingRename {
            from: from.to_path_buf(),
            to: to.to_path_buf(),
            displaced,
        });
        Ok(())
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut s = self.lock();
        s.files.retain(|p, _| !p.starts_with(path));
        s.dirs.retain(|d| !d.starts_with(path));
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.lock();
        let fault = s.faults.sync_error_ppm;
        if s.roll(fault) {
            return Err(injected("directory sync"));
        }
        for (path, f) in s.files.iter_mut() {
            if path.parent() == Some(dir) {
                f.entry_durable = true;
            }
        }
        s.renames.retain(|r| r.to.parent() != Some(dir));
        Ok(())
    }

    fn name(&self) -> &'static str {
        "simulated"
    }
}

/// A simulated file seen through direct I/O: every transfer must be block-aligned in
/// position and length (a misaligned one is refused as `O_DIRECT` refuses it), and a
/// failed write keeps whole sectors only.
struct SimBlocks(SimHandle);

fn misaligned(pos: u64, len: usize) -> Option<io::Error> {
    (!pos.is_multiple_of(direct::BLOCK as u64) || !len.is_multiple_of(direct::BLOCK))
        .then(|| io::Error::from_raw_os_error(libc::EINVAL))
}

impl direct::Blocks for SimBlocks {
    fn read_blocks(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        if let Some(e) = misaligned(pos, buf.len()) {
            return Err(e);
        }
        self.0.with(|s, path| {
            let fault = s.faults.read_error_ppm;
            if s.roll(fault) {
                return Err(injected("read"));
            }
            let f = s.files.get(path).ok_or_else(missing)?;
            let start = (pos as usize).min(f.data.len());
            let n = buf.len().min(f.data.len() - start);
            buf[..n].copy_from_slice(&f.data[start..start + n]);
            s.bytes_read += n as u64;
            Ok(n)
        })
    }

    fn write_blocks(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        if let Some(e) = misaligned(pos, buf.len()) {
            return Err(e);
        }
        self.0.with(|s, path| faulty_write(s, path, buf, pos, SECTOR))
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }

    fn size(&self) -> io::Result<u64> {
        self.0.size()
    }

    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }
}
