//! Idempotent producers (KIP-98): per partition, the recent batches of each producer
//! id, so a retried batch is recognised and answered with its original offsets instead
//! of being written twice, and a gap in sequence numbers is refused.
//!
//! The rules follow Kafka's `ProducerStateManager`: an older epoch is fenced; a new
//! epoch must start at sequence 0 unless the producer is unknown here; within an epoch
//! a batch must continue the last sequence or repeat one of the last five batches.

use std::collections::{HashMap, VecDeque};

use thiserror::Error;

use crate::batch::BatchHeader;
use crate::offset::Offset;

/// Kafka keeps the last five batches per producer: `max.in.flight.requests.per.connection`
/// may be at most 5 with idempotence, so a retry always finds its original here.
pub const BATCHES_RETAINED: usize = 5;

/// Producers idle this long are forgotten (`producer.id.expiration.ms`, Kafka: 1 day);
/// a forgotten producer is treated as new, which accepts its next sequence.
pub const PRODUCER_EXPIRATION_MS: i64 = 24 * 3600 * 1000;

/// Past this many producers on one partition, idle ones are swept on the next append.
const PRODUCERS_BEFORE_SWEEP: usize = 10_000;

#[derive(Debug, Error, PartialEq, Eq, Clone)]
pub enum SequenceError {
    #[error("producer {producer_id} epoch {epoch} is older than its current epoch {current}")]
    Fenced { producer_id: i64, epoch: i16, current: i16 },
    #[error("producer {producer_id}: expected sequence {expected}, got {got}")]
    OutOfOrder { producer_id: i64, expected: i32, got: i32 },
}

/// What an idempotent batch turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    /// Not seen before: append it.
    New,
    /// A retry of a batch already in the log at these offsets.
    Duplicate { base_offset: Offset, last_offset: Offset },
}

#[derive(Debug, Clone, Copy)]
struct BatchMeta {
    first_sequence: i32,
    last_sequence: i32,
    base_offset: Offset,
    last_offset: Offset,
}

#[derive(Debug, Default)]
struct ProducerEntry {
    epoch: i16,
    batches: VecDeque<BatchMeta>,
    last_append_ms: i64,
}

#[derive(Debug, Default)]
pub struct ProducerState {
    producers: HashMap<i64, ProducerEntry>,
}

impl ProducerState {
    /// Checks an incoming batch (with its producer's fields) before it is appended.
    pub fn check(&self, batch: &BatchHeader) -> Result<SequenceCheck, SequenceError> {
        if batch.producer_id < 0 || batch.base_sequence < 0 {
            return Ok(SequenceCheck::New);
        }
        let Some(entry) = self.producers.get(&batch.producer_id) else {
            return Ok(SequenceCheck::New);
        };
        if batch.producer_epoch < entry.epoch {
            return Err(SequenceError::Fenced {
                producer_id: batch.producer_id,
                epoch: batch.producer_epoch,
                current: entry.epoch,
            });
        }
        if batch.producer_epoch > entry.epoch {
            if batch.base_sequence != 0 {
                return Err(SequenceError::OutOfOrder {
                    producer_id: batch.producer_id,
                    expected: 0,
                    got: batch.base_sequence,
                });
            }
            return Ok(SequenceCheck::New);
        }
        let last_sequence = batch.last_sequence();
        if let Some(dup) = entry
            .batches
            .iter()
            .find(|b| b.first_sequence == batch.base_sequence && b.last_sequence == last_sequence)
        {
            return Ok(SequenceCheck::Duplicate {
                base_offset: dup.base_offset,
                last_offset: dup.last_offset,
            });
        }
        let expected = entry
            .batches
            .back()
            .map(|b| next_sequence(b.last_sequence))
            .unwrap_or(batch.base_sequence);
        if batch.base_sequence != expected {
            return Err(SequenceError::OutOfOrder {
                producer_id: batch.producer_id,
                expected,
                got: batch.base_sequence,
            });
        }
        Ok(SequenceCheck::New)
    }

    /// Checks a transaction marker: one from an epoch older than the producer's
    /// current one comes from a fenced coordinator's view and is refused.
    pub fn check_marker(&self, producer_id: i64, epoch: i16) -> Result<(), SequenceError> {
        match self.producers.get(&producer_id) {
            Some(entry) if epoch < entry.epoch => Err(SequenceError::Fenced {
                producer_id,
                epoch,
                current: entry.epoch,
            }),
            _ => Ok(()),
        }
    }

    /// Records a batch that is now in the log (on append, and on replay at recovery).
    /// A transaction marker moves its producer to the marker's epoch (a coordinator
    /// that bumped the epoch to fence a zombie writes its markers with the new one).
    pub fn record(&mut self, batch: &BatchHeader, now_ms: i64) {
        if batch.producer_id >= 0 && batch.is_control() {
            let entry = self.producers.entry(batch.producer_id).or_default();
            if batch.producer_epoch > entry.epoch {
                entry.batches.clear();
                entry.epoch = batch.producer_epoch;
            }
            entry.last_append_ms = now_ms;
            return;
        }
        if batch.producer_id < 0 || batch.base_sequence < 0 {
            return;
        }
        if self.producers.len() >= PRODUCERS_BEFORE_SWEEP {
            self.producers
                .retain(|_, e| now_ms.saturating_sub(e.last_append_ms) < PRODUCER_EXPIRATION_MS);
        }
        let entry = self.producers.entry(batch.producer_id).or_default();
        if batch.producer_epoch != entry.epoch {
            entry.batches.clear();
            entry.epoch = batch.producer_epoch;
        }
        if entry.batches.len() == BATCHES_RETAINED {
            entry.batches.pop_front();
        }
        entry.batches.push_back(BatchMeta {
            first_sequence: batch.base_sequence,
            last_sequence: batch.last_sequence(),
            base_offset: batch.base_offset,
            last_offset: batch.last_offset(),
        });
        entry.last_append_ms = now_ms;
    }

    pub fn len(&self) -> usize {
        self.producers.len()
    }

    /// Appends the state to a snapshot (see `snapshot`): per producer its id, epoch,
    /// last append time and its retained batches.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.producers.len() as u32).to_be_bytes());
        for (id, e) in &self.producers {
            out.extend_from_slice(&id.to_be_bytes());
            out.extend_from_slice(&e.epoch.to_be_bytes());
            out.extend_from_slice(&e.last_append_ms.to_be_bytes());
            out.push(e.batches.len() as u8);
            for b in &e.batches {
                out.extend_from_slice(&b.first_sequence.to_be_bytes());
                out.extend_from_slice(&b.last_sequence.to_be_bytes());
                out.extend_from_slice(&b.base_offset.0.to_be_bytes());
                out.extend_from_slice(&b.last_offset.0.to_be_bytes());
            }
        }
    }

    /// Reads what [`ProducerState::encode`] wrote; None if it does not parse.
    pub(crate) fn decode(r: &mut crate::snapshot::Reader) -> Option<ProducerState> {
        let count = r.u32()?;
        let mut producers = HashMap::new();
        for _ in 0..count {
            let id = r.i64()?;
            let epoch = r.i16()?;
            let last_append_ms = r.i64()?;
            let batches = r.u8()? as usize;
            if batches > BATCHES_RETAINED {
                return None;
            }
            let mut entry = ProducerEntry {
                epoch,
                batches: VecDeque::with_capacity(batches),
                last_append_ms,
            };
            for _ in 0..batches {
                entry.batches.push_back(BatchMeta {
                    first_sequence: r.i32()?,
                    last_sequence: r.i32()?,
                    base_offset: Offset(r.i64()?),
                    last_offset: Offset(r.i64()?),
                });
            }
            producers.insert(id, entry);
        }
        Some(ProducerState { producers })
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }
}

fn next_sequence(sequence: i32) -> i32 {
    if sequence == i32::MAX {
        0
    } else {
        sequence + 1
    }
}
