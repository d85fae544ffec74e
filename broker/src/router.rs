//! Where work runs: the one routing seam of the broker.
//!
//! [`route`] serves every partition-addressed API (Produce, Fetch, ListOffsets, and
//! every later one): it checks each partition against the shard's metadata snapshot,
//! splits the partitions by owning shard, runs the connection shard's own share in
//! place (no task, no channel), sends every other share to its shard in one call, and
//! stitches the answers back in request order. It is the one place that answers
//! "no such partition" — and, in a cluster, "not the leader here"
//! (NOT_LEADER_OR_FOLLOWER) and, with ACLs, "not authorised".
//!
//! [`ask`] does the same for coordinator work: it runs a closure on the shard hosting
//! a key's coordinator state.

use std::collections::BTreeMap;
use std::future::Future;
use std::rc::Rc;

use futures_util::future::join_all;
use kafka_protocol::messages::ApiKey;
use kafka_protocol::ResponseError;
use sluice_controller::{ClusterMetadata, TopicMetadata, NO_LEADER};
use tokio::sync::oneshot;

use crate::coordinator::Coordinator;
use crate::partition::TopicPartition;
use crate::shard::{Shard, ShardCall};

/// The work of one partition-addressed API on the shard that owns the partitions.
pub(crate) trait PartitionOp: Clone + Send + 'static {
    type Item: Send + 'static;
    type Outcome: Send + 'static;
    /// The API, for metrics.
    const API: ApiKey;
    /// The answer for a partition the op is not run on.
    fn refused(error: ResponseError) -> Self::Outcome;
    /// A check of the request against the partition's topic before it is routed.
    fn admit(&self, _topic: &TopicMetadata, _item: &Self::Item) -> Result<(), ResponseError> {
        Ok(())
    }
    /// The leader epoch the client believes current (KIP-320's `current_leader_epoch`),
    /// when the request carries one.
    fn current_leader_epoch(_item: &Self::Item) -> Option<i32> {
        None
    }
    /// Runs on the shard that owns every partition in `items`; one outcome per item,
    /// in order.
    fn serve(
        self,
        shard: Rc<Shard>,
        items: Vec<(TopicPartition, Self::Item)>,
    ) -> impl Future<Output = Vec<Self::Outcome>>;
}

/// A shard's share of a request: the items' positions in the request, and the items.
type Share<I> = (Vec<usize>, Vec<(TopicPartition, I)>);
/// A share's positions and its outcomes (None when its shard is gone).
type Answered<O> = (Vec<usize>, Option<Vec<O>>);

/// Runs `op` for every (partition, item) of a request and returns the outcomes in the
/// request's order.
pub(crate) async fn route<O: PartitionOp>(
    shard: &Rc<Shard>,
    op: O,
    items: Vec<(TopicPartition, O::Item)>,
) -> Vec<O::Outcome> {
    let metadata = shard.metadata();
    let mut out: Vec<Option<O::Outcome>> = (0..items.len()).map(|_| None).collect();
    let mut by_shard: BTreeMap<usize, Share<O::Item>> = BTreeMap::new();
    for (i, (tp, item)) in items.into_iter().enumerate() {
        let admitted = match metadata.topic(&tp.topic) {
            Some(topic) if (0..topic.partitions).contains(&tp.partition) => {
                leadership(shard, &metadata, topic, tp.partition, O::current_leader_epoch(&item))
                    .and_then(|()| op.admit(topic, &item))
            }
            _ => Err(ResponseError::UnknownTopicOrPartition),
        };
        match admitted {
            Ok(()) => {
                let share = by_shard
                    .entry(shard.cluster.owner_of(&tp.topic, tp.partition))
                    .or_default();
                share.0.push(i);
                share.1.push((tp, item));
            }
            Err(e) => out[i] = Some(O::refused(e)),
        }
    }
    let mut local = None;
    let mut remote = Vec::new();
    for (owner, (positions, share)) in by_shard {
        if owner == shard.id {
            local = Some((positions, share));
            continue;
        }
        let (reply, answer) = oneshot::channel();
        let op = op.clone();
        let call = ShardCall::new(Some(O::API as i16), move |target| async move {
            let _ = reply.send(op.serve(target, share).await);
        });
        let sent = async move {
            shard.send(owner, call).await;
            answer.await.ok()
        };
        remote.push((positions, sent));
    }
    if local.is_some() {
        // The local share waits in no queue; counted so the queue-time series covers
        // every request, as a remote share's wait in the owner's inbox is.
        let mut metrics = shard.metrics.borrow_mut();
        metrics
            .queue_time
            .entry(O::API as i16)
            .or_default()
            .observe(std::time::Duration::ZERO);
    }
    let (remote_positions, remote): (Vec<_>, Vec<_>) = remote.into_iter().unzip();
    let mut answers: Vec<Answered<O::Outcome>> = Vec::new();
    match local {
        // The common case of a client that talks to the right shard: no hop at all.
        Some((positions, share)) if remote.is_empty() => {
            answers.push((positions, Some(op.serve(shard.clone(), share).await)));
        }
        Some((positions, share)) => {
            let (mine, theirs) = futures_util::future::join(op.serve(shard.clone(), share), join_all(remote)).await;
            answers.push((positions, Some(mine)));
            answers.extend(remote_positions.into_iter().zip(theirs));
        }
        None => answers.extend(remote_positions.into_iter().zip(join_all(remote).await)),
    }
    for (positions, outcomes) in answers {
        match outcomes {
            Some(outcomes) => {
                for (i, o) in positions.into_iter().zip(outcomes) {
                    out[i] = Some(o);
                }
            }
            // The owning shard is gone (shutdown).
            None => {
                for i in positions {
                    out[i] = Some(O::refused(ResponseError::NotLeaderOrFollower));
                }
            }
        }
    }
    out.into_iter()
        .map(|o| o.unwrap_or_else(|| O::refused(ResponseError::UnknownServerError)))
        .collect()
}

/// Whether this broker may serve a partition: Kafka's LEADER_NOT_AVAILABLE while it has
/// no leader, NOT_LEADER_OR_FOLLOWER when another broker leads it, and (KIP-320)
/// FENCED_LEADER_EPOCH for a client behind the current epoch, UNKNOWN_LEADER_EPOCH for
/// one ahead of this broker's metadata.
fn leadership(
    shard: &Shard,
    metadata: &ClusterMetadata,
    topic: &TopicMetadata,
    partition: i32,
    client_epoch: Option<i32>,
) -> Result<(), ResponseError> {
    let Some(state) = topic.partition(partition) else {
        return Err(ResponseError::LeaderNotAvailable);
    };
    if state.leader == NO_LEADER {
        return Err(ResponseError::LeaderNotAvailable);
    }
    if !shard.leads(metadata, state.leader) {
        return Err(ResponseError::NotLeaderOrFollower);
    }
    match client_epoch {
        Some(e) if e >= 0 && e < state.leader_epoch => Err(ResponseError::FencedLeaderEpoch),
        Some(e) if e > state.leader_epoch => Err(ResponseError::UnknownLeaderEpoch),
        _ => Ok(()),
    }
}

/// Runs `work` on the shard hosting `key`'s state for coordinator `C` and returns its
/// answer, or Kafka's error when this broker cannot: NOT_COORDINATOR when it does not
/// lead the key's partition, COORDINATOR_LOAD_IN_PROGRESS while it loads it, and
/// COORDINATOR_NOT_AVAILABLE when the shard is gone (shutdown).
pub(crate) async fn ask<C, T, F, Fut>(shard: &Rc<Shard>, key: &str, work: F) -> Result<T, ResponseError>
where
    C: Coordinator,
    T: Send + 'static,
    F: FnOnce(Rc<Shard>) -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
{
    let owner = shard.cluster.coordinator_shard::<C>(key);
    let tp = shard.cluster.coordinator_partition::<C>(key);
    let answer = run_on(shard, owner, move |s| async move {
        match s.coordinator_status(&tp) {
            Ok(()) => Ok(work(s).await),
            Err(e) => Err(e),
        }
    })
    .await;
    answer.unwrap_or(Err(ResponseError::CoordinatorNotAvailable))
}

/// Runs `work` on shard `target` (in place when it is this one).
pub(crate) async fn run_on<T, F, Fut>(shard: &Rc<Shard>, target: usize, work: F) -> Option<T>
where
    T: Send + 'static,
    F: FnOnce(Rc<Shard>) -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
{
    if target == shard.id {
        return Some(work(shard.clone()).await);
    }
    let (reply, answer) = oneshot::channel();
    let call = ShardCall::new(None, move |s| async move {
        let _ = reply.send(work(s).await);
    });
    shard.send(target, call).await;
    answer.await.ok()
}

/// Runs `work` on every shard and returns the answers in shard order; None for a shard
/// that is gone.
pub(crate) async fn broadcast<T, F, Fut>(shard: &Rc<Shard>, work: F) -> Vec<Option<T>>
where
    T: Send + 'static,
    F: Fn(Rc<Shard>) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = T> + 'static,
{
    let targets = 0..shard.cluster.peers.len();
    join_all(targets.map(|target| run_on(shard, target, work.clone()))).await
}
