//! One client connection: frames in, responses out in request order.
//!
//! The reader decodes each frame and starts its handler at once, so a client's
//! pipelined requests (librdkafka keeps up to 5 or more in flight) run concurrently;
//! the writer awaits the handlers strictly in arrival order, so responses leave in
//! request order even when a later request finishes first, as Kafka clients require.
//! A frame that cannot be framed or decoded closes only this connection.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use crate::frame::{Frame, Runs};
use crate::handlers;
use crate::shard::Shard;

/// Requests decoded but not yet answered, per connection, and the bytes of their
/// frames. Past either the reader stops reading the socket until the oldest answer is
/// written: backpressure, not growth. The count is high because a producer with
/// linger.ms=0 pipelines thousands of small requests a second while each waits a few
/// milliseconds for its write round; with 64, stalled writes stopped the reading of
/// new requests and so held back data consumers could already have been served.
const IN_FLIGHT_MAX: usize = 1024;
const IN_FLIGHT_BYTES_MAX: usize = 64 << 20;
/// Buffers for a large frame grow by at most this much, or by what already arrived if
/// that is more, per read: a client that announces 100 MB and sends 10 bytes costs
/// 1 MiB, not 100 MB, while a real 8 MB frame grows by doubling (a few reallocations
/// copying 8 MB in all, not one per MiB copying ~36 MB).
const READ_CHUNK_MAX: usize = 1 << 20;
/// Finished answers are gathered into one write up to this size: enough for hundreds
/// of produce answers. Only their small runs are copied (into one buffer); the records
/// of a fetch are written from the log's own buffers.
const GATHER_BYTES_MAX: usize = 64 << 10;

#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error("frame length {0} is outside 0..={1} (socket.request.max.bytes)")]
    FrameSize(i32, usize),
    #[error("connection closed in the middle of a frame")]
    Truncated,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Rejected connections are logged at most once per this interval (with how many were
/// not), so a client (or a fuzzer) sending garbage in a loop cannot flood the log; the
/// metric `sluice_connections_rejected_total` counts every one.
const REJECT_LOG_INTERVAL_MS: u64 = 10_000;

use sluice_storage::sparse::Sparse;

static REJECTED: Sparse = Sparse::new(REJECT_LOG_INTERVAL_MS);
static REFUSED: Sparse = Sparse::new(REJECT_LOG_INTERVAL_MS);

fn warn_rejected(peer: SocketAddr, e: &dyn std::fmt::Display) {
    if let Some(unlogged) = REJECTED.due() {
        tracing::warn!(%peer, unlogged_since_last = unlogged, "closing connection: {e}");
    }
}

/// Logs a connection closed at accept for a connection limit, at most once per
/// interval (`sluice_connections_refused_total` counts each).
pub fn note_refused(peer: SocketAddr, refusal: crate::limits::Refusal) {
    if let Some(unlogged) = REFUSED.due() {
        tracing::info!(%peer, limit = refusal.config(), unlogged_since_last = unlogged, "refused a connection over the limit");
    }
}

/// A connection's read buffer starts this small when data arrives, and is given back
/// between frames, so ten thousand idle connections cost little memory.
const IDLE_BUFFER_BYTES: usize = 4 << 10;

pub async fn serve(shard: Rc<Shard>, stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let (mut reader, writer) = stream.into_split();
    let (queue, answers) = mpsc::channel::<Answer>(IN_FLIGHT_MAX);
    let budget = Arc::new(Semaphore::new(IN_FLIGHT_BYTES_MAX));
    let write_task = tokio::task::spawn_local(write_answers(answers, writer, peer));
    let max = shard.config().socket_request_max_bytes;
    let mut buf = BytesMut::new();
    let limits = shard.cluster.limits.clone();
    let mut shutdown = shard.cluster.shutdown.clone();
    loop {
        let frame = tokio::select! {
            frame = read_frame(&mut reader, &mut buf, max, &limits) => frame,
            _ = shutdown.changed() => break,
        };
        let (frame, queued) = match frame {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            // A client that resets or leaves mid-frame: what clients do, not news.
            Err(e @ (ReadError::Io(_) | ReadError::Truncated)) => {
                tracing::debug!(%peer, "connection ended: {e}");
                break;
            }
            Err(e) => {
                warn_rejected(peer, &e);
                shard.metrics.borrow_mut().connections_rejected += 1;
                break;
            }
        };
        let cost = frame.len().clamp(1, IN_FLIGHT_BYTES_MAX) as u32;
        let Ok(bytes) = budget.clone().acquire_many_owned(cost).await else {
            break;
        };
        match handlers::dispatch(&shard, peer, frame) {
            Ok(pending) => {
                if queue
                    .send((tokio::task::spawn_local(pending), bytes, queued))
                    .await
                    .is_err()
                {
                    break;
                }
            }
            Err(e) => {
                warn_rejected(peer, &e);
                shard.metrics.borrow_mut().connections_rejected += 1;
                break;
            }
        }
    }
    drop(queue);
    let _ = write_task.await;
}

/// A request being answered, and its share of the connection's in-flight budget,
/// held until its answer is written.
/// Also its share of the broker-wide budget (queued.max.request.bytes), when there is one.
type Answer = (
    tokio::task::JoinHandle<Option<Frame>>,
    OwnedSemaphorePermit,
    Option<OwnedSemaphorePermit>,
);

/// Writes answers in request order. Answers that are already done when the writer gets
/// to them go out together in one (vectored) write, rather than a syscall per
/// ~100-byte answer; record data goes out from the log's own buffers.
async fn write_answers(mut answers: mpsc::Receiver<Answer>, mut writer: OwnedWriteHalf, peer: SocketAddr) {
    let mut queue: VecDeque<Answer> = VecDeque::new();
    'answers: loop {
        if queue.is_empty() {
            match answers.recv().await {
                Some(answer) => queue.push_back(answer),
                None => break,
            }
        }
        while let Ok(answer) = answers.try_recv() {
            queue.push_back(answer);
        }
        let mut out = Runs::default();
        let mut written = Vec::new();
        // The oldest answer is awaited; the ones after it join only if already done.
        while let Some((pending, bytes, queued)) = queue.pop_front() {
            match pending.await {
                Ok(Some(frame)) => out.push(frame),
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(%peer, "request handler failed: {e}");
                    break 'answers;
                }
            }
            written.push((bytes, queued));
            let next_done = queue.front().is_some_and(|(next, _, _)| next.is_finished());
            if !next_done || out.len() >= GATHER_BYTES_MAX {
                break;
            }
        }
        out.seal();
        if !out.is_empty() && writer.write_all_buf(&mut out).await.is_err() {
            break;
        }
    }
    let _ = writer.shutdown().await;
}

/// Reads one length-prefixed frame. The length is checked against the limit before
/// any buffer grows for it, and the frame's bytes are taken from the broker-wide
/// request budget before its body is read (the permit comes back with the frame).
/// Ok(None) is a clean end of stream between frames.
async fn read_frame(
    reader: &mut OwnedReadHalf,
    buf: &mut BytesMut,
    max: usize,
    limits: &crate::limits::Limits,
) -> Result<Option<(Bytes, Option<OwnedSemaphorePermit>)>, ReadError> {
    if buf.is_empty() {
        // Between frames an idle connection holds no buffer at all: it waits for data
        // first, and only then takes one (10,000 idle connections, 40 MB less).
        *buf = BytesMut::new();
        reader.readable().await?;
        buf.reserve(IDLE_BUFFER_BYTES);
    }
    let mut queued = None;
    let mut budgeted = false;
    loop {
        if buf.len() >= 4 {
            let len = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
            if len < 0 || len as usize > max {
                return Err(ReadError::FrameSize(len, max));
            }
            if !budgeted {
                queued = limits.request_bytes(len as usize).await;
                budgeted = true;
            }
            let need = 4 + len as usize;
            if buf.len() >= need {
                buf.advance(4);
                return Ok(Some((buf.split_to(len as usize).freeze(), queued)));
            }
            buf.reserve((need - buf.len()).min(READ_CHUNK_MAX.max(buf.len())));
        } else {
            buf.reserve(4);
        }
        if reader.read_buf(buf).await? == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(ReadError::Truncated)
            };
        }
    }
}
