//! The io_uring engine, first step: every read, write and data sync of the log goes
//! through an io_uring ring (one per thread, created on first use) instead of a
//! syscall each. Calls still wait for their completion, so a shard thread still waits
//! for its I/O as with pread/pwrite; driving the rings from the shards' runtimes (their
//! eventfds registered with tokio) is the next step of the io_uring issue.
//!
//! [`Uring::probe`] tells at start-up whether io_uring can be used here: it is often
//! disabled by sysctl (`kernel.io_uring_disabled`) or seccomp (EPERM, ENOSYS).

#![allow(unsafe_code)] // submitting to a ring is unsafe; see `complete` for why it is sound here

use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;

use io_uring::{opcode, squeue, types, IoUring, Probe};

use super::{FileRef, Io, IoFile, Positional};

/// Entries per ring. One operation is in flight per call today; a few more leave room
/// for linked write-then-sync submissions without resizing.
const RING_ENTRIES: u32 = 8;

thread_local! {
    static RING: RefCell<Option<IoUring>> = const { RefCell::new(None) };
}

/// The io_uring engine. Directory operations (rare) go through plain syscalls.
#[derive(Debug, Default, Clone, Copy)]
pub struct Uring;

impl Uring {
    /// Checks that a ring can be created and supports every operation the log uses.
    pub fn probe() -> io::Result<()> {
        let ring = IoUring::new(RING_ENTRIES)?;
        let mut probe = Probe::new();
        ring.submitter().register_probe(&mut probe)?;
        for (code, name) in [
            (opcode::Read::CODE, "read"),
            (opcode::Write::CODE, "write"),
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
}

impl Io for Uring {
    fn open(&self, path: &Path, create: bool) -> io::Result<FileRef> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .open(path)?;
        Ok(Arc::new(UringFile(file)))
    }
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        Positional.create_dir_all(path)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        Positional.list(dir)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        Positional.remove_file(path)
    }
    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        Positional.remove_dir_all(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        Positional.sync_dir(dir)
    }
    fn name(&self) -> &'static str {
        "io_uring"
    }
}
