//! The I/O underneath the log (DESIGN.md, "Storage"): positional reads and writes, data
//! syncs and directory operations behind one trait, so the engine can change without the
//! log noticing. Backends: [`Positional`] (pread/pwrite/fdatasync, portable, the one the
//! broker runs on today) and [`sim::SimIo`] (an in-memory disk with seeded faults and
//! crashes, for tests) and [`uring::Uring`] (io_uring; see its module for how far it
//! goes).

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

pub mod sim;
pub mod uring;

/// A file as storage uses it.
pub trait IoFile: Send + Sync {
    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()>;
    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()>;
    fn set_len(&self, len: u64) -> io::Result<()>;
    fn size(&self) -> io::Result<u64>;
    /// Makes everything written so far durable (fdatasync); an error means it may not be.
    fn sync_data(&self) -> io::Result<()>;
    /// The file descriptor, for engines that submit to the kernel themselves (io_uring).
    fn raw_fd(&self) -> Option<RawFd> {
        None
    }
}

/// Files are shared: a flush job holds them while the log goes on appending.
pub type FileRef = Arc<dyn IoFile>;

/// Opening files and the directory operations the log needs.
pub trait Io: Send + Sync {
    /// Opens `path` for reading and writing, creating it if `create`.
    fn open(&self, path: &Path, create: bool) -> io::Result<FileRef>;
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Names of the entries of a directory.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    fn remove_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Makes the directory's entries (files created or removed) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// The engine's name, for logs and metrics.
    fn name(&self) -> &'static str;
}

/// Plain positional I/O on the page cache: works everywhere.
#[derive(Debug, Default, Clone, Copy)]
pub struct Positional;

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
/// how every engine opens segment and index files.
pub(crate) fn open_read_write(path: &Path, create: bool) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .truncate(false)
        .open(path)
}

impl Io for Positional {
    fn open(&self, path: &Path, create: bool) -> io::Result<FileRef> {
        Ok(Arc::new(PositionalFile(open_read_write(path, create)?)))
    }
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        fs::create_dir_all(path)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(dir)? {
            if let Some(name) = entry?.file_name().to_str() {
                names.push(name.to_string());
            }
        }
        Ok(names)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        match fs::remove_file(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }
    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        fs::remove_dir_all(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
    fn name(&self) -> &'static str {
        "pwrite"
    }
}
