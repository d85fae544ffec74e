//! Small write rounds written, and page-cache reads served, on the shard's own thread.
//!
//! ext4 (this project's machines, kernel 6.18) cannot do buffered writes without
//! possibly blocking (`pwritev2(RWF_NOWAIT)` answers EOPNOTSUPP), so io_uring hands
//! every buffered write to a kernel worker thread (io-wq) and signals its completion
//! back: two thread wake-ups and a context switch per round. For a round of a few
//! produce requests that overhead is most of the round's cost (profiled at linger.ms=0:
//! the io-wq workers took 20 % of the broker's CPU), while copying a few KiB into the
//! page cache takes microseconds. So a round that syncs nothing and writes at most
//! [`INLINE_ROUND_BYTES_MAX`] is written with one `pwritev` per file right here, as
//! Kafka's request threads write; larger rounds and rounds with an fdatasync (which
//! waits for the disk) still go through the ring or the blocking pool. Direct I/O
//! (a later step) makes writes asynchronous without this trade-off.
//!
//! Direct-I/O log files take small rounds the same way, through a second, buffered
//! descriptor of the same file ([`super::direct::DirectFile::write_small`]).
//!
//! Reads are tried first with `preadv2(RWF_NOWAIT)`, which ext4 supports: data in the
//! page cache (a consumer at the tail, the common case) is copied out at once with no
//! completion to wait for; a read that would wait for the disk goes through the ring.

#![allow(unsafe_code)] // pwritev and preadv2 take raw iovecs; see each function for why it is sound

use std::io;

use bytes::Bytes;

use super::{iovecs, RoundOutcome, RoundWrite, WriteRound, IOV_MAX};

/// The most bytes a round may write to be written inline. A page-cache copy of 64 KiB
/// takes ~10-30 µs, about what handing a round to io-wq and back costs; above it the
/// worker's cost is the smaller share.
pub const INLINE_ROUND_BYTES_MAX: u64 = 64 << 10;

/// The same bound for a round to direct-I/O log files: their alternative is not an
/// io-wq copy into the page cache but a wait for the device (plus the io-wq hop ext4
/// needs for appends), so a larger round is still cheaper written through the page
/// cache here, while the rounds of a busy producer (MBs) still go direct.
pub const INLINE_DIRECT_ROUND_BYTES_MAX: u64 = 256 << 10;

/// The largest write to one direct-I/O log file that a larger round still writes
/// inline, and the most bytes a round writes that way: with thousands of busy
/// partitions a round is thousands of sub-block writes, each of which as `O_DIRECT` is
/// a device request of its own and a wait on an io-wq worker (profiled with 10,000
/// partitions of one-record batches: the workers' switches and the device kicks were a
/// sixth of the broker's CPU), while copying a few KiB into the page cache takes a
/// microsecond or two.
pub const SMALL_DIRECT_WRITE_MAX: u64 = 16 << 10;
pub const SMALL_DIRECT_ROUND_BYTES_MAX: u64 = 2 << 20;

/// A round's small direct-I/O writes done in place, and the parts left for the ring.
pub struct SmallWrites {
    /// Per part of the round, in its order: the outcome of a part written in place.
    pub done: Vec<Option<io::Result<()>>>,
    /// The other parts, in the round's order.
    pub rest: Vec<RoundWrite>,
}

impl SmallWrites {
    /// Every part's outcome in the round's order, given the outcomes of `rest`.
    pub fn merge(self, rest: Vec<io::Result<()>>) -> Vec<io::Result<()>> {
        let mut rest = rest.into_iter();
        self.done
            .into_iter()
            .map(|done| {
                done.or_else(|| rest.next())
                    .unwrap_or_else(|| Err(io::Error::other("a round lost a write")))
            })
            .collect()
    }
}

/// Writes the small sync-free writes to direct-I/O files of a round too large to
/// write inline whole (see [`SMALL_DIRECT_WRITE_MAX`]).
pub fn write_small_direct(writes: Vec<RoundWrite>) -> SmallWrites {
    let mut budget = SMALL_DIRECT_ROUND_BYTES_MAX;
    let mut out = SmallWrites {
        done: Vec::with_capacity(writes.len()),
        rest: Vec::with_capacity(writes.len()),
    };
    for w in writes {
        let len = w.len();
        let small = !w.sync && len > 0 && len <= SMALL_DIRECT_WRITE_MAX && len <= budget && w.file.raw_fd().is_some();
        match w.file.direct().filter(|_| small) {
            Some(d) => {
                budget -= len;
                out.done.push(Some(d.write_small(w.pos, &w.bufs)));
            }
            None => {
                out.done.push(None);
                out.rest.push(w);
            }
        }
    }
    out
}

/// Whether `round` is small enough, and sync-free, to be written inline.
pub fn fits(round: &WriteRound) -> bool {
    let direct = round.writes.iter().any(|w| w.file.direct().is_some());
    let max = if direct {
        INLINE_DIRECT_ROUND_BYTES_MAX
    } else {
        INLINE_ROUND_BYTES_MAX
    };
    round.dirs.is_empty() && round.bytes() <= max && round.writes.iter().all(|w| !w.sync && w.file.raw_fd().is_some())
}

/// Writes every part of a round that [`fits`] on the calling thread.
pub fn run(round: WriteRound) -> RoundOutcome {
    RoundOutcome {
        writes: round.writes.iter().map(write).collect(),
        dirs: Vec::new(),
    }
}

fn write(w: &RoundWrite) -> io::Result<()> {
    if let Some(d) = w.file.direct() {
        return if w.is_empty() {
            Ok(())
        } else {
            d.write_small(w.pos, &w.bufs)
        };
    }
    let Some(fd) = w.file.raw_fd() else {
        return w.run_blocking();
    };
    pwritev_all(fd, &w.bufs, w.pos)
}

/// Writes `bufs` back to back at `pos`, resuming after short writes.
///
/// Sound because every iovec points into a `Bytes` that `bufs` keeps alive for the
/// whole call, and the kernel only reads from them before pwritev returns.
fn pwritev_all(fd: std::os::fd::RawFd, bufs: &[Bytes], mut pos: u64) -> io::Result<()> {
    let mut pending: Vec<&[u8]> = bufs.iter().map(|b| &b[..]).filter(|b| !b.is_empty()).collect();
    let mut first = 0;
    while first < pending.len() {
        let chunk = &pending[first..pending.len().min(first + IOV_MAX)];
        let iovecs = iovecs(chunk);
        // SAFETY: see the function's comment; `iovecs` outlives the call.
        let n = unsafe { libc::pwritev(fd, iovecs.as_ptr(), iovecs.len() as i32, pos as libc::off_t) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "the disk took no bytes"));
        }
        pos += n as u64;
        let mut left = n as usize;
        while left > 0 && first < pending.len() {
            let b = pending[first];
            if left >= b.len() {
                left -= b.len();
                first += 1;
            } else {
                pending[first] = &b[left..];
                left = 0;
            }
        }
    }
    Ok(())
}

/// Reads `len` bytes at `pos` if they are all in the page cache, without waiting for
/// the disk: None when some are not (or the kernel cannot tell without waiting).
///
/// Sound because the iovec points into `buf`'s spare capacity, which `buf` owns for
/// the whole call, and only the bytes the kernel reports as read are kept.
pub fn read_cached(fd: std::os::fd::RawFd, pos: u64, len: usize) -> Option<Vec<u8>> {
    let mut buf: Vec<u8> = Vec::with_capacity(len);
    let iovec = libc::iovec {
        iov_base: buf.as_mut_ptr() as *mut libc::c_void,
        iov_len: len,
    };
    // SAFETY: see the function's comment.
    let n = unsafe { libc::preadv2(fd, &iovec, 1, pos as libc::off_t, libc::RWF_NOWAIT) };
    if n < 0 || n as usize != len {
        return None;
    }
    // SAFETY: the kernel initialised the first `n` == `len` bytes, within capacity.
    unsafe { buf.set_len(len) };
    Some(buf)
}
