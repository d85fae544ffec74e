//! Who does a shard's storage I/O on the hot path: the write rounds of group commit
//! ([`crate::WriteJob`]) and the file reads of fetches ([`crate::DiskRead`]).
//!
//! With io_uring, the shard's own [`Ring`] runs them and the shard awaits completions,
//! so it never waits for the disk: every file of a round gets one vectored write, with
//! its fdatasync linked behind it when the round syncs. With positional I/O (the
//! fallback where io_uring is unavailable), a round runs on tokio's blocking pool and
//! reads run inline (they are page-cache reads in the common case).

use std::io;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;

use crate::io::uring::{Ring, RoundWrite};
use crate::io::{FileRef, Io};
use crate::log::WriteJob;
use crate::segment::DiskRead;

pub enum Engine {
    /// Positional I/O: rounds on the blocking pool, reads inline.
    Blocking,
    /// The shard's io_uring ring; [`Ring::drive`] must run on the shard.
    Ring(Rc<Ring>),
}

impl Engine {
    /// The engine for logs opened on `io`, for the calling thread. With io_uring this
    /// creates the thread's ring, which needs a tokio runtime to register with.
    pub fn for_io(io: &dyn Io) -> io::Result<Engine> {
        if io.name() == "io_uring" {
            Ok(Engine::Ring(Ring::new()?))
        } else {
            Ok(Engine::Blocking)
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Engine::Blocking => "pwrite",
            Engine::Ring(_) => "io_uring",
        }
    }

    /// The ring, whose driver the caller must spawn on its runtime.
    pub fn ring(&self) -> Option<Rc<Ring>> {
        match self {
            Engine::Ring(ring) => Some(ring.clone()),
            Engine::Blocking => None,
        }
    }

    /// Runs a write round; Ok means every write (and with a sync, every fdatasync) of
    /// it succeeded.
    pub async fn run(&self, job: WriteJob) -> io::Result<()> {
        match self {
            Engine::Blocking => match tokio::task::spawn_blocking(move || job.run_blocking()).await {
                Ok(result) => result,
                Err(e) => Err(io::Error::other(e)),
            },
            Engine::Ring(ring) => run_on_ring(ring, job).await,
        }
    }

    /// Reads the range a read step asked for.
    pub async fn read(&self, read: &DiskRead) -> io::Result<Bytes> {
        match self {
            Engine::Blocking => {
                let mut buf = vec![0u8; read.len];
                read.file.read_exact_at(&mut buf, read.pos)?;
                Ok(Bytes::from(buf))
            }
            Engine::Ring(ring) => ring.read_exact(&read.file, read.pos, read.len).await.map(Bytes::from),
        }
    }
}

fn same_file(a: &FileRef, b: &FileRef) -> bool {
    std::ptr::eq(Arc::as_ptr(a) as *const u8, Arc::as_ptr(b) as *const u8)
}

async fn run_on_ring(ring: &Rc<Ring>, job: WriteJob) -> io::Result<()> {
    // One submission for the round: each written file with its sync linked behind its
    // write when it needs one, and the files that only need a sync.
    let mut syncs_alone = job.syncs;
    let mut round = Vec::with_capacity(job.writes.len() + syncs_alone.len());
    for w in job.writes {
        let before = syncs_alone.len();
        syncs_alone.retain(|f| !same_file(f, &w.file));
        let sync = syncs_alone.len() < before;
        round.push(RoundWrite {
            file: w.file,
            pos: w.pos,
            bufs: w.bufs,
            sync,
        });
    }
    round.extend(syncs_alone.into_iter().map(|file| RoundWrite {
        file,
        pos: 0,
        bufs: Vec::new(),
        sync: true,
    }));
    ring.write_round(round).await?;
    if let Some((io, dir)) = job.dir {
        // A directory sync happens once per new segment: rare enough for the pool.
        match tokio::task::spawn_blocking(move || io.sync_dir(&dir)).await {
            Ok(result) => result?,
            Err(e) => return Err(io::Error::other(e)),
        }
    }
    Ok(())
}
