//! The embedded single-node controller: metadata in `<data-dir>/metadata.json`. Its one
//! broker is the whole cluster: it is the controller and leads every partition.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::{watch, Mutex};
use uuid::Uuid;

use crate::{
    placement, AlterIsr, BrokerInfo, Change, ClusterMetadata, ConfigEntity, Controller, ControllerError,
    ControllerFuture, Election, NewTopic, PartitionState, TopicMetadata,
};

const FILE_NAME: &str = "metadata.json";

/// Space kept aside for the metadata file: when the disk fills up, this file is
/// removed to make room for the next metadata write, so that DeleteTopics (how an
/// operator frees space through Kafka's APIs) still works on a full disk. It is made
/// again once a metadata write finds room for it.
const RESERVE_NAME: &str = "metadata.reserve";
/// The reserve holds this much, or twice the metadata file when that is larger.
const RESERVE_BYTES_MIN: usize = 1 << 20;

pub struct LocalController {
    path: PathBuf,
    /// Writers take turns here, so two concurrent CreateTopics for one name cannot
    /// both succeed; readers never wait for it.
    writer: Mutex<()>,
    /// The current metadata, sent to every watcher on each change.
    current: watch::Sender<Arc<ClusterMetadata>>,
    /// The one broker is the cluster: its session never ends.
    session: watch::Sender<bool>,
}

impl LocalController {
    /// Loads the metadata file in `data_dir`, or starts a new cluster with a new id;
    /// `me` is the one broker, which leads every partition.
    pub fn open(data_dir: &Path, me: BrokerInfo) -> Result<LocalController, ControllerError> {
        fs::create_dir_all(data_dir)?;
        let path = data_dir.join(FILE_NAME);
        let metadata = match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| ControllerError::Corrupt(e.to_string()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let fresh = ClusterMetadata {
                    cluster_id: new_cluster_id(),
                    topics: Default::default(),
                    next_producer_id: 0,
                    revision: 0,
                    brokers: Default::default(),
                    controller_id: me.id,
                    broker_configs: Default::default(),
                    group_configs: Default::default(),
                };
                write_atomically(&path, &fresh)?;
                fresh
            }
            Err(e) => return Err(e.into()),
        };
        let metadata = single_node(metadata, me);
        keep_reserve(&path);
        let (current, _) = watch::channel(Arc::new(metadata));
        Ok(LocalController {
            path,
            writer: Mutex::new(()),
            current,
            session: watch::channel(true).0,
        })
    }

    /// Applies `change` to a copy of the metadata, persists the copy (on the blocking
    /// pool: it fsyncs) and then publishes it to watchers.
    async fn update<T>(
        &self,
        change: impl FnOnce(&mut ClusterMetadata) -> Result<T, ControllerError>,
    ) -> Result<Change<T>, ControllerError> {
        let _turn = self.writer.lock().await;
        let mut next = ClusterMetadata::clone(&self.current.borrow());
        let value = change(&mut next)?;
        next.revision += 1;
        let next = Arc::new(next);
        let (path, written) = (self.path.clone(), next.clone());
        match tokio::task::spawn_blocking(move || write_with_reserve(&path, &written)).await {
            Ok(result) => result?,
            Err(e) => return Err(ControllerError::Storage(std::io::Error::other(e))),
        }
        let revision = next.revision;
        self.current.send_replace(next);
        Ok(Change { value, revision })
    }
}

impl Controller for LocalController {
    fn watch(&self) -> watch::Receiver<Arc<ClusterMetadata>> {
        self.current.subscribe()
    }

    fn session(&self) -> watch::Receiver<bool> {
        self.session.subscribe()
    }

    fn create_topic(&self, topic: NewTopic) -> ControllerFuture<'_, Change<TopicMetadata>> {
        Box::pin(async move {
            crate::validate_topic_name(&topic.name).map_err(ControllerError::InvalidTopicName)?;
            if topic.partitions < 1 {
                return Err(ControllerError::InvalidPartitions(topic.partitions));
            }
            self.update(|meta| {
                if meta.topics.contains_key(&topic.name) {
                    return Err(ControllerError::TopicExists(topic.name.clone()));
                }
                let replicas = placement::place(&topic, &meta.brokers)?;
                let created = TopicMetadata {
                    name: topic.name.clone(),
                    id: Uuid::new_v4(),
                    partitions: replicas.len() as i32,
                    replication_factor: replicas.first().map_or(1, |r| r.len() as i16),
                    configs: topic.configs,
                    internal: topic.internal,
                    assignments: replicas.into_iter().map(PartitionState::new).collect(),
                };
                meta.topics.insert(topic.name, created.clone());
                Ok(created)
            })
            .await
        })
    }

    fn delete_topic(&self, name: &str) -> ControllerFuture<'_, Change<TopicMetadata>> {
        let name = name.to_string();
        Box::pin(async move {
            self.update(|meta| {
                meta.topics
                    .remove(&name)
                    .ok_or_else(|| ControllerError::UnknownTopic(name.clone()))
            })
            .await
        })
    }

    fn create_partitions(
        &self,
        name: &str,
        partitions: i32,
        assignments: Option<Vec<Vec<i32>>>,
    ) -> ControllerFuture<'_, Change<TopicMetadata>> {
        let name = name.to_string();
        Box::pin(async move {
            self.update(|meta| {
                let brokers = meta.brokers.clone();
                let topic = topic_mut(meta, &name)?;
                let added = placement::grow(topic, partitions, assignments, &brokers, placement::Start::random(1))?;
                topic.partitions = partitions;
                topic.assignments.extend(added.into_iter().map(PartitionState::new));
                Ok(topic.clone())
            })
            .await
        })
    }

    fn remove_partitions(&self, name: &str, partitions: i32) -> ControllerFuture<'_, Change<TopicMetadata>> {
        let name = name.to_string();
        Box::pin(async move {
            self.update(|meta| {
                let topic = topic_mut(meta, &name)?;
                let keep = partitions.clamp(1, topic.partitions);
                topic.partitions = keep;
                topic.assignments.truncate(keep as usize);
                Ok(topic.clone())
            })
            .await
        })
    }

    fn alter_topic_configs(
        &self,
        name: &str,
        configs: BTreeMap<String, String>,
    ) -> ControllerFuture<'_, Change<TopicMetadata>> {
        let name = name.to_string();
        Box::pin(async move {
            self.update(|meta| {
                let topic = topic_mut(meta, &name)?;
                topic.configs = configs;
                Ok(topic.clone())
            })
            .await
        })
    }

    fn alter_entity_configs(
        &self,
        kind: ConfigEntity,
        entity: &str,
        configs: BTreeMap<String, String>,
    ) -> ControllerFuture<'_, Change<()>> {
        let entity = entity.to_string();
        Box::pin(async move {
            self.update(|meta| {
                if configs.is_empty() {
                    meta.entity_configs_mut(kind).remove(&entity);
                } else {
                    meta.entity_configs_mut(kind).insert(entity, configs);
                }
                Ok(())
            })
            .await
        })
    }

    fn elect_leader(
        &self,
        topic: &str,
        partition: i32,
        kind: Election,
    ) -> ControllerFuture<'_, Change<PartitionState>> {
        let topic = topic.to_string();
        Box::pin(async move {
            self.update(|meta| {
                let live = meta.brokers.keys().copied().collect();
                let state = partition_mut(meta, &topic, partition)?;
                *state = state.elect(kind, &live)?;
                Ok(state.clone())
            })
            .await
        })
    }

    fn reassign(
        &self,
        topic: &str,
        partition: i32,
        target: Option<Vec<i32>>,
    ) -> ControllerFuture<'_, Change<PartitionState>> {
        let topic = topic.to_string();
        Box::pin(async move {
            self.update(|meta| {
                let live = meta.brokers.keys().copied().collect();
                let state = partition_mut(meta, &topic, partition)?;
                let mut next = state.start_reassignment(target.as_deref(), &live)?;
                // One broker: every target replica is this one, in sync at once.
                if let Some(done) = next.advance_reassignment() {
                    next = done;
                }
                *state = next;
                Ok(state.clone())
            })
            .await
        })
    }

    fn alter_isr(
        &self,
        topic: &str,
        partition: i32,
        expected: AlterIsr,
    ) -> ControllerFuture<'_, Change<PartitionState>> {
        let topic = topic.to_string();
        Box::pin(async move {
            self.update(|meta| {
                let state = meta
                    .topics
                    .get_mut(&topic)
                    .and_then(|t| usize::try_from(partition).ok().and_then(|i| t.assignments.get_mut(i)))
                    .ok_or_else(|| ControllerError::UnknownTopic(topic.clone()))?;
                *state = expected.apply(state)?;
                Ok(state.clone())
            })
            .await
        })
    }

    fn allocate_producer_ids(&self, count: i64) -> ControllerFuture<'_, std::ops::Range<i64>> {
        Box::pin(async move {
            let change = self
                .update(|meta| {
                    let start = meta.next_producer_id;
                    meta.next_producer_id = start + count.max(1);
                    Ok(start..meta.next_producer_id)
                })
                .await?;
            Ok(change.value)
        })
    }
}

fn partition_mut<'a>(
    meta: &'a mut ClusterMetadata,
    topic: &str,
    partition: i32,
) -> Result<&'a mut PartitionState, ControllerError> {
    meta.topics
        .get_mut(topic)
        .and_then(|t| usize::try_from(partition).ok().and_then(|i| t.assignments.get_mut(i)))
        .ok_or_else(|| ControllerError::UnknownTopic(topic.to_string()))
}

/// The one broker is the cluster: it is live, the controller, and the only replica and
/// leader of every partition (a partition moved from another node id leads here under a
/// new epoch). Files from before leadership was recorded get their assignments here.
fn single_node(mut metadata: ClusterMetadata, me: BrokerInfo) -> ClusterMetadata {
    for topic in metadata.topics.values_mut() {
        topic.assignments.truncate(topic.partitions.max(0) as usize);
        for state in topic.assignments.iter_mut() {
            if state.replicas != [me.id] || state.leader != me.id {
                *state = PartitionState {
                    replicas: vec![me.id],
                    leader: me.id,
                    leader_epoch: state.leader_epoch + 1,
                    isr: vec![me.id],
                    partition_epoch: state.partition_epoch + 1,
                    adding: Vec::new(),
                    removing: Vec::new(),
                };
            }
        }
        while topic.assignments.len() < topic.partitions.max(0) as usize {
            topic.assignments.push(PartitionState::new(vec![me.id]));
        }
        topic.replication_factor = 1;
    }
    metadata.controller_id = me.id;
    metadata.brokers = [(me.id, me)].into();
    metadata
}

fn topic_mut<'a>(meta: &'a mut ClusterMetadata, name: &str) -> Result<&'a mut TopicMetadata, ControllerError> {
    meta.topics
        .get_mut(name)
        .ok_or_else(|| ControllerError::UnknownTopic(name.to_string()))
}

fn reserve_path(path: &Path) -> PathBuf {
    path.with_file_name(RESERVE_NAME)
}

/// Makes the reserve file if it is missing or too small for the metadata file at `path`
/// (best effort: on a full disk it waits for the next write).
fn keep_reserve(path: &Path) {
    let reserve = reserve_path(path);
    let metadata_len = fs::metadata(path).map_or(0, |m| m.len() as usize);
    let want = RESERVE_BYTES_MIN.max(2 * metadata_len);
    if fs::metadata(&reserve).is_ok_and(|m| m.len() as usize >= want) {
        return;
    }
    // Written, not just sized: a sparse file would reserve nothing.
    let made = File::create(&reserve).and_then(|mut f| f.write_all(&vec![0u8; want]).and_then(|()| f.sync_all()));
    if let Err(e) = made {
        let _ = fs::remove_file(&reserve);
        tracing::debug!(reserve = %reserve.display(), "cannot make the metadata reserve yet: {e}");
    }
}

fn out_of_space(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    )
}

/// Writes the metadata; on a full disk, gives up the reserve and tries once more.
fn write_with_reserve(path: &Path, metadata: &ClusterMetadata) -> std::io::Result<()> {
    match write_atomically(path, metadata) {
        Err(e) if out_of_space(&e) && fs::remove_file(reserve_path(path)).is_ok() => {
            tracing::warn!(
                "the disk holding {} is full: used the space kept aside for metadata",
                path.display()
            );
            let _ = fs::remove_file(path.with_extension("json.tmp"));
            write_atomically(path, metadata)?;
        }
        other => other?,
    }
    keep_reserve(path);
    Ok(())
}

/// Write to a temporary file, fsync it, rename it over the old one, fsync the
/// directory: after a crash the file is either the old or the new version, whole.
fn write_atomically(path: &Path, metadata: &ClusterMetadata) -> std::io::Result<()> {
    let bytes = serde_json::to_vec_pretty(metadata).map_err(std::io::Error::other)?;
    let tmp = path.with_extension("json.tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(&bytes)?;
    f.sync_all()?;
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Kafka's cluster ids are a random UUID in URL-safe base64 without padding (22 chars).
pub(crate) fn new_cluster_id() -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes = Uuid::new_v4().into_bytes();
    let mut out = String::with_capacity(22);
    let mut bits = 0u32;
    let mut nbits = 0;
    for b in bytes {
        bits = (bits << 8) | b as u32;
        nbits += 8;
        while nbits >= 6 {
            nbits -= 6;
            out.push(ALPHABET[((bits >> nbits) & 63) as usize] as char);
        }
    }
    if nbits > 0 {
        out.push(ALPHABET[((bits << (6 - nbits)) & 63) as usize] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(name: &str, partitions: i32) -> NewTopic {
        NewTopic {
            name: name.into(),
            partitions,
            replication_factor: 1,
            configs: Default::default(),
            internal: false,
            replica_assignments: None,
        }
    }

    fn me() -> BrokerInfo {
        BrokerInfo {
            id: 1,
            host: "localhost".into(),
            port: 9092,
            rack: None,
            incarnation: Uuid::new_v4(),
        }
    }

    #[tokio::test]
    async fn cluster_id_and_topic_ids_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let c = LocalController::open(dir.path(), me()).unwrap();
        let created = c.create_topic(topic("orders", 6)).await.unwrap().value;
        let cluster_id = c.metadata().cluster_id.clone();
        assert_eq!(cluster_id.len(), 22);
        drop(c);
        let c = LocalController::open(dir.path(), me()).unwrap();
        assert_eq!(c.metadata().cluster_id, cluster_id);
        assert_eq!(c.metadata().topic("orders"), Some(&created));
        // The one broker leads every partition at epoch 0.
        assert!(created
            .assignments
            .iter()
            .all(|p| p.leader == 1 && p.replicas == [1] && p.leader_epoch == 0));
        // Started under another node id, it leads them all again under a new epoch.
        drop(c);
        let other = BrokerInfo { id: 7, ..me() };
        let c = LocalController::open(dir.path(), other).unwrap();
        let orders = c.metadata().topic("orders").cloned().unwrap();
        assert!(orders
            .assignments
            .iter()
            .all(|p| p.leader == 7 && p.isr == [7] && p.leader_epoch == 1));
        assert_eq!(c.metadata().controller_id, 7);
        assert!(matches!(
            c.create_topic(NewTopic {
                replication_factor: 2,
                ..topic("pairs", 1)
            })
            .await,
            Err(ControllerError::InvalidReplicationFactor(2, 1))
        ));
    }

    #[tokio::test]
    async fn producer_id_blocks_never_overlap_across_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let c = LocalController::open(dir.path(), me()).unwrap();
        assert_eq!(c.allocate_producer_ids(1000).await.unwrap(), 0..1000);
        drop(c);
        let c = LocalController::open(dir.path(), me()).unwrap();
        assert_eq!(c.allocate_producer_ids(1000).await.unwrap(), 1000..2000);
    }

    #[tokio::test]
    async fn watchers_see_every_change_with_a_higher_revision() {
        let dir = tempfile::tempdir().unwrap();
        let c = LocalController::open(dir.path(), me()).unwrap();
        let mut watch = c.watch();
        let start = watch.borrow_and_update().revision;
        let created = c.create_topic(topic("orders", 2)).await.unwrap();
        assert!(watch.has_changed().unwrap());
        let seen = watch.borrow_and_update().clone();
        assert_eq!(seen.revision, created.revision);
        assert!(created.revision > start);
        assert_eq!(seen.topic("orders").map(|t| t.partitions), Some(2));
        let grown = c.create_partitions("orders", 5, None).await.unwrap();
        assert!(grown.revision > created.revision);
        watch.changed().await.unwrap();
        assert_eq!(watch.borrow().topic("orders").map(|t| t.partitions), Some(5));
        // A refused change publishes nothing.
        assert!(c.create_topic(topic("orders", 1)).await.is_err());
        assert!(!watch.has_changed().unwrap());
        // The revision survives a restart, so it never goes back.
        drop(c);
        let c = LocalController::open(dir.path(), me()).unwrap();
        assert_eq!(c.metadata().revision, grown.revision);
    }

    #[tokio::test]
    async fn duplicates_bad_names_and_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let c = LocalController::open(dir.path(), me()).unwrap();
        c.create_topic(topic("a", 1)).await.unwrap();
        assert!(matches!(
            c.create_topic(topic("a", 1)).await,
            Err(ControllerError::TopicExists(_))
        ));
        assert!(matches!(
            c.create_topic(topic("a/b", 1)).await,
            Err(ControllerError::InvalidTopicName(_))
        ));
        assert!(matches!(
            c.create_topic(topic("b", 0)).await,
            Err(ControllerError::InvalidPartitions(0))
        ));
        let old_id = c.delete_topic("a").await.unwrap().value.id;
        assert!(c.metadata().topic("a").is_none());
        assert_ne!(
            c.create_topic(topic("a", 1)).await.unwrap().value.id,
            old_id,
            "a recreated topic gets a new id"
        );
    }
}
