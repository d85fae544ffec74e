//! The transaction coordinator a shard hosts: the state of the transactional ids whose
//! `__transaction_state` partition the shard owns (and this broker leads), every
//! transition persisted to that partition (replicated, as acks=all) before it takes
//! effect, replayed when the partition is gained. Completing a prepared transaction
//! (markers, then the Complete state) runs as its own task, so a slow partition never
//! holds a request; a transaction whose markers could not all be written stays
//! prepared and is retried by [`TxnCoordinator::maintain`], which also aborts
//! transactions older than their timeout.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use sluice_storage::batch;
use sluice_storage::{ControlType, Durability, Marker};

use super::machine::{self, InitPlan, Step, TxnMetadata, TxnState};
use super::{records, TxnConfig, TRANSACTION_STATE_TOPIC};
use crate::coordinator::{kafka_partition_for, replay, Coordinator, Host};
use crate::now_ms;
use crate::partition::TopicPartition;
use crate::shard::Shard;

/// How long a state write waits to be durable on the in-sync replicas (Kafka's
/// `transaction.state.log` writes use the request timeout; 5 s as for offsets).
const STATE_WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long EndTxn and InitProducerId wait for the markers of the transaction they
/// finished before answering anyway (the outcome is decided and durable; markers go
/// on in the background). Waiting makes a commit readable when its answer arrives.
const COMPLETION_WAIT: Duration = Duration::from_secs(5);
/// Pause before a prepared transaction whose markers failed is tried again.
const COMPLETION_RETRY_MS: i64 = 1000;

/// A transactional id's entry: its persisted state, and when its completion may be
/// retried.
struct Entry {
    meta: TxnMetadata,
    /// The `__transaction_state` partition's leader epoch when loaded (the markers'
    /// coordinator epoch).
    coordinator_epoch: i32,
}

pub(crate) struct TxnCoordinator {
    txns: RefCell<HashMap<String, Entry>>,
    /// Ids with a state write or a completion under way (Kafka's `pendingState`):
    /// other requests for them get CONCURRENT_TRANSACTIONS meanwhile.
    busy: RefCell<HashSet<String>>,
    /// Prepared ids whose completion failed, and when to try again.
    retry_at: RefCell<HashMap<String, i64>>,
    partitions: i32,
    config: TxnConfig,
    last_abort_check_ms: Cell<i64>,
    /// Transactions committed and aborted by this coordinator, for the metrics.
    pub outcomes: Cell<(u64, u64)>,
}

impl Coordinator for TxnCoordinator {
    const TOPIC: &'static str = TRANSACTION_STATE_TOPIC;

    fn partition_for(transactional_id: &str, partitions: i32) -> i32 {
        kafka_partition_for(transactional_id, partitions)
    }

    /// Rebuilds the transactional ids of `partitions` by replaying each from its start
    /// (the latest record of an id is its state; a tombstone removes it).
    async fn load(&self, host: &impl Host, partitions: &[TopicPartition]) -> Result<(), String> {
        let metadata = host.metadata();
        for tp in partitions {
            let coordinator_epoch = metadata
                .partition(&tp.topic, tp.partition)
                .map_or(0, |s| s.leader_epoch);
            replay(host, tp, |h, batch| {
                if h.compression() != 0 || h.is_control() {
                    return;
                }
                let mut txns = self.txns.borrow_mut();
                let _ = batch::for_each_record(&batch[batch::BATCH_HEADER_LEN..], |r| {
                    match r.key.and_then(|k| records::decode(k, r.value)) {
                        Some((id, Some(meta))) => {
                            txns.insert(
                                id,
                                Entry {
                                    meta,
                                    coordinator_epoch,
                                },
                            );
                        }
                        Some((id, None)) => {
                            txns.remove(&id);
                        }
                        None => {}
                    }
                    Ok(())
                });
            })
            .await?;
        }
        Ok(())
    }

    /// Timers need the shard to write markers: see [`TxnCoordinator::maintain`].
    fn tick(&self, _host: &impl Host) {}
}

/// What InitProducerId answers.
pub type ProducerIdAndEpoch = (i64, i16);

impl TxnCoordinator {
    pub fn new(config: TxnConfig, partitions: i32) -> TxnCoordinator {
        TxnCoordinator {
            txns: RefCell::new(HashMap::new()),
            busy: RefCell::new(HashSet::new()),
            retry_at: RefCell::new(HashMap::new()),
            partitions,
            config,
            last_abort_check_ms: Cell::new(0),
            outcomes: Cell::new((0, 0)),
        }
    }

    /// The `__transaction_state` partition of a transactional id.
    pub fn partition_of(&self, transactional_id: &str) -> TopicPartition {
        TopicPartition::new(
            TRANSACTION_STATE_TOPIC,
            Self::partition_for(transactional_id, self.partitions),
        )
    }

    /// Forgets the ids of `tp`, whose leadership moved away.
    pub fn unload(&self, tp: &TopicPartition) {
        let gone: Vec<String> = self
            .txns
            .borrow()
            .keys()
            .filter(|id| self.partition_of(id) == *tp)
            .cloned()
            .collect();
        let mut txns = self.txns.borrow_mut();
        for id in gone {
            txns.remove(&id);
            self.retry_at.borrow_mut().remove(&id);
        }
    }

    fn meta(&self, id: &str) -> Option<TxnMetadata> {
        self.txns.borrow().get(id).map(|e| e.meta.clone())
    }

    /// Marks `id` busy for the life of the returned guard, or refuses while it is.
    fn claim(self: &Rc<Self>, id: &str) -> Result<Busy, ResponseError> {
        if !self.busy.borrow_mut().insert(id.to_string()) {
            return Err(ResponseError::ConcurrentTransactions);
        }
        Ok(Busy {
            coordinator: self.clone(),
            id: id.to_string(),
        })
    }

    /// Open transactions (Ongoing or being completed), for the metrics.
    pub fn open_count(&self) -> usize {
        self.txns
            .borrow()
            .values()
            .filter(|e| matches!(e.meta.state, TxnState::Ongoing) || e.meta.state.is_prepare())
            .count()
    }

    /// InitProducerId with a transactional id.
    pub async fn init(
        self: &Rc<Self>,
        shard: &Rc<Shard>,
        id: &str,
        timeout_ms: i32,
        client: ProducerIdAndEpoch,
    ) -> Result<ProducerIdAndEpoch, ResponseError> {
        if timeout_ms <= 0 || timeout_ms > self.config.timeout_ms_max {
            return Err(ResponseError::InvalidTransactionTimeout);
        }
        // At most twice: an open transaction is aborted first (under a bumped epoch,
        // fencing the old producer), then the id moves on from the aborted state.
        for _ in 0..2 {
            let busy = self.claim(id)?;
            match machine::init(self.meta(id).as_ref(), id, timeout_ms, client, now_ms()) {
                InitPlan::Refuse(e) => return Err(e),
                InitPlan::AbortFirst(abort) => {
                    self.persist(shard, &abort).await?;
                    drop(busy);
                    self.complete_and_wait(shard, id).await;
                }
                InitPlan::Ready { mut next, new_id } => {
                    if new_id {
                        next.producer_id = shard
                            .next_producer_id()
                            .await
                            .map_err(|_| ResponseError::CoordinatorNotAvailable)?;
                    }
                    self.persist(shard, &next).await?;
                    return Ok((next.producer_id, next.producer_epoch));
                }
            }
        }
        // The abort's markers are still being written: Kafka's retriable answer.
        Err(ResponseError::ConcurrentTransactions)
    }

    /// AddPartitionsToTxn (and AddOffsetsToTxn, with the group's offsets partition).
    pub async fn add_partitions(
        self: &Rc<Self>,
        shard: &Rc<Shard>,
        id: &str,
        producer: ProducerIdAndEpoch,
        partitions: &[(String, i32)],
    ) -> Result<(), ResponseError> {
        let _busy = self.claim(id)?;
        match machine::add_partitions(self.meta(id).as_ref(), producer.0, producer.1, partitions, now_ms()) {
            Step::Answer(None) => Ok(()),
            Step::Answer(Some(e)) => Err(e),
            Step::Persist(next) => self.persist(shard, &next).await,
        }
    }

    /// AddPartitionsToTxn v4+ with `verify_only`: whether each partition is in the
    /// ongoing transaction (KIP-890's check a leader makes before a transactional write).
    pub fn verify(
        &self,
        id: &str,
        producer: ProducerIdAndEpoch,
        partitions: &[(String, i32)],
    ) -> Vec<Option<ResponseError>> {
        let meta = self.meta(id);
        let checked = machine::check_producer(meta.as_ref(), producer.0, producer.1).cloned();
        partitions
            .iter()
            .map(|p| match &checked {
                Err(e) => Some(*e),
                Ok(m) if m.state == TxnState::Ongoing && m.partitions.contains(p) => None,
                Ok(_) => Some(ResponseError::InvalidTxnState),
            })
            .collect()
    }

    /// EndTxn: the outcome is durable before this answers; its markers are written in
    /// the background (waited for a while, so a commit is usually readable at once).
    pub async fn end(
        self: &Rc<Self>,
        shard: &Rc<Shard>,
        id: &str,
        producer: ProducerIdAndEpoch,
        commit: bool,
    ) -> Result<(), ResponseError> {
        let busy = self.claim(id)?;
        match machine::end(self.meta(id).as_ref(), producer.0, producer.1, commit, now_ms()) {
            Step::Answer(None) => Ok(()),
            Step::Answer(Some(e)) => Err(e),
            Step::Persist(prepared) => {
                self.persist(shard, &prepared).await?;
                drop(busy);
                self.complete_and_wait(shard, id).await;
                Ok(())
            }
        }
    }

    /// Starts completing `id`'s prepared transaction and waits up to
    /// [`COMPLETION_WAIT`] for it.
    async fn complete_and_wait(self: &Rc<Self>, shard: &Rc<Shard>, id: &str) {
        let Some(done) = self.start_completion(shard, id) else {
            return;
        };
        let _ = tokio::time::timeout(COMPLETION_WAIT, done).await;
    }

    /// Spawns the completion of a prepared transaction (markers, then its Complete
    /// state); the receiver says when it finished.
    fn start_completion(self: &Rc<Self>, shard: &Rc<Shard>, id: &str) -> Option<tokio::sync::oneshot::Receiver<()>> {
        let busy = self.claim(id).ok()?;
        let (prepared, coordinator_epoch) = {
            let txns = self.txns.borrow();
            let entry = txns.get(id)?;
            (entry.meta.clone(), entry.coordinator_epoch)
        };
        if !prepared.state.is_prepare() {
            return None;
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let coordinator = self.clone();
        let shard = shard.clone();
        let id = id.to_string();
        tokio::task::spawn_local(async move {
            let marker = Marker {
                producer_id: prepared.producer_id,
                producer_epoch: prepared.producer_epoch,
                control: if prepared.state == TxnState::PrepareCommit {
                    ControlType::Commit
                } else {
                    ControlType::Abort
                },
                coordinator_epoch,
            };
            let written = super::markers::write(&shard, marker, &prepared.partitions).await;
            let outcome = match written {
                Ok(()) => {
                    coordinator
                        .persist(&shard, &machine::completed(&prepared, now_ms()))
                        .await
                }
                Err(why) => {
                    tracing::warn!(transactional_id = %id, "markers not written yet, will retry: {why}");
                    Err(ResponseError::CoordinatorNotAvailable)
                }
            };
            match outcome {
                Ok(()) => {
                    coordinator.retry_at.borrow_mut().remove(&id);
                    let (commits, aborts) = coordinator.outcomes.get();
                    coordinator.outcomes.set(match marker.control {
                        ControlType::Commit => (commits + 1, aborts),
                        ControlType::Abort => (commits, aborts + 1),
                    });
                }
                Err(_) => {
                    coordinator
                        .retry_at
                        .borrow_mut()
                        .insert(id.clone(), now_ms() + COMPLETION_RETRY_MS);
                }
            }
            drop(busy);
            let _ = tx.send(());
        });
        Some(rx)
    }

    /// Retries prepared transactions whose markers failed (and those found prepared at
    /// load), and aborts Ongoing ones past their timeout, bumping the epoch so their
    /// producer is fenced (Kafka's `abortTimedOutTransactions`).
    pub fn maintain(self: &Rc<Self>, shard: &Rc<Shard>) {
        let now = now_ms();
        let prepared: Vec<String> = self
            .txns
            .borrow()
            .iter()
            .filter(|(id, e)| {
                e.meta.state.is_prepare()
                    && !self.busy.borrow().contains(*id)
                    && self.retry_at.borrow().get(*id).is_none_or(|at| *at <= now)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in prepared {
            let _ = self.start_completion(shard, &id);
        }
        if now - self.last_abort_check_ms.get() < self.config.abort_check_interval_ms as i64 {
            return;
        }
        self.last_abort_check_ms.set(now);
        let expired: Vec<TxnMetadata> = self
            .txns
            .borrow()
            .values()
            .filter(|e| machine::timed_out(&e.meta, now))
            .map(|e| e.meta.clone())
            .collect();
        for meta in expired {
            let coordinator = self.clone();
            let shard = shard.clone();
            tokio::task::spawn_local(async move {
                let id = meta.transactional_id.clone();
                let Ok(busy) = coordinator.claim(&id) else {
                    return;
                };
                tracing::info!(transactional_id = %id, producer_id = meta.producer_id, "aborting a transaction past its timeout");
                let abort = machine::fence_and_abort(&meta, now_ms());
                if coordinator.persist(&shard, &abort).await.is_ok() {
                    drop(busy);
                    let _ = coordinator.start_completion(&shard, &id);
                }
            });
        }
    }

    /// DescribeTransactions of one id: None when this coordinator does not know it.
    pub fn describe(&self, id: &str) -> Option<TxnMetadata> {
        self.meta(id)
    }

    /// ListTransactions: every id this shard coordinates.
    pub fn list(&self) -> Vec<TxnMetadata> {
        self.txns.borrow().values().map(|e| e.meta.clone()).collect()
    }

    /// Writes `next` to the id's partition, waits until every in-sync replica has it,
    /// then makes it the id's state. Kafka's answers for a write that did not take:
    /// NOT_COORDINATOR when leadership moved, COORDINATOR_NOT_AVAILABLE otherwise.
    async fn persist(&self, shard: &Rc<Shard>, next: &TxnMetadata) -> Result<(), ResponseError> {
        let tp = self.partition_of(&next.transactional_id);
        let record = (records::key(&next.transactional_id), Some(records::value(next)));
        let batch = Bytes::from(batch::build(
            &[(Some(record.0.as_slice()), record.1.as_deref())],
            now_ms(),
        ));
        let appended = match Host::append(shard.as_ref(), &tp, batch, Durability::Synced) {
            Ok(a) => a,
            Err(e) => {
                tracing::error!(transactional_id = %next.transactional_id, "cannot write to {TRANSACTION_STATE_TOPIC}: {e:?}");
                return Err(match e {
                    ResponseError::NotLeaderOrFollower | ResponseError::UnknownTopicOrPartition => {
                        ResponseError::NotCoordinator
                    }
                    _ => ResponseError::CoordinatorNotAvailable,
                });
            }
        };
        let what = format!("state of transactional id {}", next.transactional_id);
        crate::coordinator::wait_durable(shard.as_ref(), &tp, appended, STATE_WRITE_TIMEOUT, &what).await?;
        let coordinator_epoch = shard
            .metadata()
            .partition(&tp.topic, tp.partition)
            .map_or(0, |s| s.leader_epoch);
        self.txns.borrow_mut().insert(
            next.transactional_id.clone(),
            Entry {
                meta: next.clone(),
                coordinator_epoch,
            },
        );
        Ok(())
    }
}

/// An id's claim on its coordinator, released when dropped.
struct Busy {
    coordinator: Rc<TxnCoordinator>,
    id: String,
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.coordinator.busy.borrow_mut().remove(&self.id);
    }
}
