//! The transaction coordinator's state machine (Kafka's `TransactionMetadata` and the
//! checks of `TransactionCoordinator`), pure: no I/O, no clock of its own, no wire
//! types. Each request becomes a [`Step`]: an answer now, or a new state to persist
//! first. The coordinator persists, writes markers and applies what it persisted.
//!
//! States: Empty → Ongoing (AddPartitionsToTxn / AddOffsetsToTxn) → PrepareCommit or
//! PrepareAbort (EndTxn, or the coordinator aborting a timed-out or fenced
//! transaction) → CompleteCommit / CompleteAbort once every partition has its marker →
//! Ongoing again with the next AddPartitions. InitProducerId moves a finished or empty
//! transaction to Empty under the next epoch.

use std::collections::BTreeSet;

use kafka_protocol::ResponseError;

/// Kafka's `TransactionState`, with its ids in the log and its names on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnState {
    Empty,
    Ongoing,
    PrepareCommit,
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
    Dead,
    PrepareEpochFence,
}

impl TxnState {
    pub fn id(self) -> i8 {
        match self {
            TxnState::Empty => 0,
            TxnState::Ongoing => 1,
            TxnState::PrepareCommit => 2,
            TxnState::PrepareAbort => 3,
            TxnState::CompleteCommit => 4,
            TxnState::CompleteAbort => 5,
            TxnState::Dead => 6,
            TxnState::PrepareEpochFence => 7,
        }
    }

    pub fn from_id(id: i8) -> Option<TxnState> {
        Some(match id {
            0 => TxnState::Empty,
            1 => TxnState::Ongoing,
            2 => TxnState::PrepareCommit,
            3 => TxnState::PrepareAbort,
            4 => TxnState::CompleteCommit,
            5 => TxnState::CompleteAbort,
            6 => TxnState::Dead,
            7 => TxnState::PrepareEpochFence,
            _ => return None,
        })
    }

    /// The name DescribeTransactions and ListTransactions use (Kafka's `stateName`).
    pub fn name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
            TxnState::Dead => "Dead",
            TxnState::PrepareEpochFence => "PrepareEpochFence",
        }
    }

    pub fn is_prepare(self) -> bool {
        matches!(self, TxnState::PrepareCommit | TxnState::PrepareAbort)
    }
}

/// One transactional id's state, as persisted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnMetadata {
    pub transactional_id: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub timeout_ms: i32,
    pub state: TxnState,
    /// The partitions the transaction wrote to (markers go to each).
    pub partitions: BTreeSet<(String, i32)>,
    pub last_update_ms: i64,
    /// When the open transaction started (-1 with none open).
    pub start_ms: i64,
}

/// What a request leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Answer now with this (None: success with nothing to write).
    Answer(Option<ResponseError>),
    /// Persist this state, then answer success (and for a Prepare state, complete it).
    Persist(TxnMetadata),
}

/// Kafka refuses an epoch this close to i16::MAX and moves to a new producer id
/// (`isEpochExhausted`): the coordinator may still need one bump to fence.
pub fn epoch_exhausted(epoch: i16) -> bool {
    epoch >= i16::MAX - 1
}

/// The checks every transactional request after InitProducerId makes: the producer id
/// is the transactional id's, and the epoch its current one.
pub fn check_producer(meta: Option<&TxnMetadata>, producer_id: i64, epoch: i16) -> Result<&TxnMetadata, ResponseError> {
    let Some(meta) = meta else {
        return Err(ResponseError::InvalidProducerIdMapping);
    };
    if meta.producer_id != producer_id {
        return Err(ResponseError::InvalidProducerIdMapping);
    }
    if meta.producer_epoch != epoch {
        return Err(ResponseError::ProducerFenced);
    }
    if meta.state.is_prepare() || meta.state == TxnState::PrepareEpochFence {
        return Err(ResponseError::ConcurrentTransactions);
    }
    Ok(meta)
}

/// AddPartitionsToTxn and AddOffsetsToTxn: the partitions join the transaction, which
/// is Ongoing from now.
pub fn add_partitions(
    meta: Option<&TxnMetadata>,
    producer_id: i64,
    epoch: i16,
    partitions: &[(String, i32)],
    now_ms: i64,
) -> Step {
    let meta = match check_producer(meta, producer_id, epoch) {
        Ok(m) => m,
        Err(e) => return Step::Answer(Some(e)),
    };
    if meta.state == TxnState::Ongoing && partitions.iter().all(|p| meta.partitions.contains(p)) {
        return Step::Answer(None);
    }
    let mut next = meta.clone();
    if meta.state != TxnState::Ongoing {
        next.partitions.clear();
        next.start_ms = now_ms;
    }
    next.state = TxnState::Ongoing;
    next.partitions.extend(partitions.iter().cloned());
    next.last_update_ms = now_ms;
    Step::Persist(next)
}

/// EndTxn: an Ongoing transaction prepares to commit or abort; a retry of a finished
/// EndTxn with the same outcome succeeds again.
pub fn end(meta: Option<&TxnMetadata>, producer_id: i64, epoch: i16, commit: bool, now_ms: i64) -> Step {
    let Some(m) = meta else {
        return Step::Answer(Some(ResponseError::InvalidProducerIdMapping));
    };
    if m.producer_id != producer_id {
        return Step::Answer(Some(ResponseError::InvalidProducerIdMapping));
    }
    if m.producer_epoch != epoch {
        return Step::Answer(Some(ResponseError::ProducerFenced));
    }
    match (m.state, commit) {
        (TxnState::Ongoing, _) => Step::Persist(TxnMetadata {
            state: if commit {
                TxnState::PrepareCommit
            } else {
                TxnState::PrepareAbort
            },
            last_update_ms: now_ms,
            ..m.clone()
        }),
        (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => Step::Answer(None),
        (TxnState::PrepareCommit, true) | (TxnState::PrepareAbort, false) => {
            Step::Answer(Some(ResponseError::ConcurrentTransactions))
        }
        _ => Step::Answer(Some(ResponseError::InvalidTxnState)),
    }
}

/// The coordinator's own abort of an Ongoing transaction (timed out, or fenced by a
/// new InitProducerId): the epoch is bumped so the old producer is fenced everywhere
/// the markers land.
pub fn fence_and_abort(m: &TxnMetadata, now_ms: i64) -> TxnMetadata {
    TxnMetadata {
        producer_epoch: m.producer_epoch.saturating_add(1),
        state: TxnState::PrepareAbort,
        last_update_ms: now_ms,
        ..m.clone()
    }
}

/// The state once every marker of a Prepare state is written.
pub fn completed(m: &TxnMetadata, now_ms: i64) -> TxnMetadata {
    TxnMetadata {
        state: if m.state == TxnState::PrepareCommit {
            TxnState::CompleteCommit
        } else {
            TxnState::CompleteAbort
        },
        last_update_ms: now_ms,
        start_ms: -1,
        partitions: BTreeSet::new(),
        ..m.clone()
    }
}

/// What InitProducerId with a transactional id must do first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitPlan {
    /// Refuse with this error.
    Refuse(ResponseError),
    /// The transaction in progress must be aborted (and the epoch fenced) first.
    AbortFirst(TxnMetadata),
    /// Persist this state (Empty, under the next epoch) and answer with its producer
    /// id and epoch. `new_id` asks for a fresh producer id to be filled in first.
    Ready { next: TxnMetadata, new_id: bool },
}

/// InitProducerId for a transactional id (KIP-98; KIP-360's producer id and epoch,
/// -1 when the client has none).
pub fn init(
    meta: Option<&TxnMetadata>,
    transactional_id: &str,
    timeout_ms: i32,
    client: (i64, i16),
    now_ms: i64,
) -> InitPlan {
    let Some(m) = meta else {
        return InitPlan::Ready {
            next: TxnMetadata {
                transactional_id: transactional_id.to_string(),
                producer_id: -1,
                producer_epoch: 0,
                timeout_ms,
                state: TxnState::Empty,
                partitions: BTreeSet::new(),
                last_update_ms: now_ms,
                start_ms: -1,
            },
            new_id: true,
        };
    };
    if m.state.is_prepare() || m.state == TxnState::PrepareEpochFence {
        return InitPlan::Refuse(ResponseError::ConcurrentTransactions);
    }
    // KIP-360: a producer that says who it was must be the current one; any other is
    // a zombie.
    if client.0 >= 0 && (client.0 != m.producer_id || client.1 != m.producer_epoch) {
        return InitPlan::Refuse(ResponseError::ProducerFenced);
    }
    if m.state == TxnState::Ongoing {
        return InitPlan::AbortFirst(fence_and_abort(m, now_ms));
    }
    let exhausted = epoch_exhausted(m.producer_epoch);
    InitPlan::Ready {
        next: TxnMetadata {
            producer_epoch: if exhausted { 0 } else { m.producer_epoch + 1 },
            timeout_ms,
            state: TxnState::Empty,
            partitions: BTreeSet::new(),
            last_update_ms: now_ms,
            start_ms: -1,
            ..m.clone()
        },
        new_id: exhausted,
    }
}

/// Whether an Ongoing transaction has outlived its timeout.
pub fn timed_out(m: &TxnMetadata, now_ms: i64) -> bool {
    m.state == TxnState::Ongoing && m.start_ms >= 0 && now_ms - m.start_ms > m.timeout_ms as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready(meta: Option<&TxnMetadata>, client: (i64, i16)) -> TxnMetadata {
        match init(meta, "t", 60000, client, 0) {
            InitPlan::Ready { mut next, new_id } => {
                if new_id {
                    next.producer_id = 100;
                }
                next
            }
            other => panic!("{other:?}"),
        }
    }

    fn persisted(step: Step) -> TxnMetadata {
        match step {
            Step::Persist(m) => m,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_transaction_goes_through_its_states() {
        let m = ready(None, (-1, -1));
        assert_eq!((m.producer_id, m.producer_epoch, m.state), (100, 0, TxnState::Empty));
        let parts = [("a".to_string(), 0)];
        let m = persisted(add_partitions(Some(&m), 100, 0, &parts, 5));
        assert_eq!((m.state, m.start_ms), (TxnState::Ongoing, 5));
        assert_eq!(add_partitions(Some(&m), 100, 0, &parts, 6), Step::Answer(None));
        assert_eq!(
            add_partitions(Some(&m), 100, 1, &parts, 6),
            Step::Answer(Some(ResponseError::ProducerFenced))
        );
        assert_eq!(
            add_partitions(Some(&m), 7, 0, &parts, 6),
            Step::Answer(Some(ResponseError::InvalidProducerIdMapping))
        );
        let prepared = persisted(end(Some(&m), 100, 0, true, 7));
        assert_eq!(prepared.state, TxnState::PrepareCommit);
        assert_eq!(
            add_partitions(Some(&prepared), 100, 0, &parts, 8),
            Step::Answer(Some(ResponseError::ConcurrentTransactions))
        );
        let done = completed(&prepared, 9);
        assert_eq!((done.state, done.partitions.len()), (TxnState::CompleteCommit, 0));
        assert_eq!(end(Some(&done), 100, 0, true, 10), Step::Answer(None));
        assert_eq!(
            end(Some(&done), 100, 0, false, 10),
            Step::Answer(Some(ResponseError::InvalidTxnState))
        );
        // The next InitProducerId bumps the epoch; the old epoch is fenced from then on.
        let next = ready(Some(&done), (-1, -1));
        assert_eq!((next.producer_id, next.producer_epoch), (100, 1));
        assert_eq!(
            end(Some(&next), 100, 0, true, 11),
            Step::Answer(Some(ResponseError::ProducerFenced))
        );
        assert_eq!(
            end(Some(&next), 100, 1, true, 11),
            Step::Answer(Some(ResponseError::InvalidTxnState))
        );
    }

    #[test]
    fn init_aborts_an_open_transaction_and_fences_zombies() {
        let m = ready(None, (-1, -1));
        let open = persisted(add_partitions(Some(&m), 100, 0, &[("a".to_string(), 0)], 0));
        match init(Some(&open), "t", 60000, (-1, -1), 1) {
            InitPlan::AbortFirst(abort) => {
                assert_eq!((abort.state, abort.producer_epoch), (TxnState::PrepareAbort, 1));
                assert_eq!(abort.partitions, open.partitions);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            init(Some(&open), "t", 60000, (100, 5), 1),
            InitPlan::Refuse(ResponseError::ProducerFenced)
        );
        assert!(timed_out(&open, 60001) && !timed_out(&open, 60000));
        let worn = TxnMetadata {
            producer_epoch: i16::MAX - 1,
            state: TxnState::CompleteAbort,
            ..open
        };
        match init(Some(&worn), "t", 60000, (-1, -1), 1) {
            InitPlan::Ready { next, new_id } => assert!(new_id && next.producer_epoch == 0),
            other => panic!("{other:?}"),
        }
    }
}
