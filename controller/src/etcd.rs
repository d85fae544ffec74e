//! The etcd backend of cluster mode (`--controller etcd://host:port[,host:port]/prefix`).
//! The key layout is in `controller/ETCD.md`.
//!
//! - Every broker registers under a lease whose TTL is `broker.session.timeout.ms`, and
//!   keeps it alive; a broker whose lease expires disappears from every snapshot.
//! - Every change is one etcd transaction that compares what it read (a key's
//!   `mod_revision`, or its absence); nothing is written blindly. A conflicting change
//!   is retried from a fresh read or refused.
//! - Every broker watches the prefix from the revision of its first read and publishes
//!   one [`ClusterMetadata`] per watch response, in revision order; on a broken watch
//!   it reads everything again and resumes, so it never goes back in revision.
//! - The controller duty (electing leaders when brokers come and go, preferred-leader
//!   rebalance, repairing an interrupted topic creation) runs on the broker holding the
//!   `controller` key, created under its lease; each of its writes also compares that
//!   key's lease with its own, so a broker that lost the key stops at once.
//! - All etcd traffic runs on this backend's own small runtime; callers on the shards'
//!   runtimes await its answers without blocking.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions, PutOptions, Txn, TxnOp,
    WatchOptions,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use uuid::Uuid;

use crate::{
    placement, AlterIsr, BrokerInfo, Change, ClusterMetadata, ConfigEntity, Controller, ControllerError,
    ControllerFuture, Election, NewTopic, PartitionState, TopicMetadata, NO_LEADER,
};

/// How long one etcd call may take before the change fails with REQUEST_TIMED_OUT.
/// Kafka's admin requests default to 30 s of client patience; 5 s leaves clients room
/// to retry and keeps a dead etcd from holding a request for long.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the controller duty looks at leadership even when nothing changed: it also
/// runs at every watched change, so this only bounds how long a missed one waits.
const DUTY_INTERVAL: Duration = Duration::from_secs(1);
/// Operations per transaction: etcd refuses more than `--max-txn-ops` (128 by default).
const TXN_OPS_MAX: usize = 100;
/// Attempts at a compare-and-swap change that keeps racing with others.
const CAS_ATTEMPTS: usize = 16;

/// Where etcd is and how this broker takes part.
#[derive(Debug, Clone)]
pub struct EtcdConfig {
    pub endpoints: Vec<String>,
    /// Every key lives under this prefix, so clusters can share one etcd.
    pub prefix: String,
    pub me: BrokerInfo,
    /// The incarnation this broker's data directory recorded at its previous start: a
    /// live registration carrying it is this broker's own dead predecessor, not a
    /// duplicate.
    pub previous_incarnation: Option<Uuid>,
    /// Kafka's `broker.session.timeout.ms`: the registration's lease TTL.
    pub session_timeout: Duration,
    /// Kafka's `auto.leader.rebalance.enable`.
    pub auto_leader_rebalance: bool,
}

impl EtcdConfig {
    /// Parses `etcd://host:port[,host:port...][/prefix]` into endpoints and a prefix
    /// (default `/sluice`).
    pub fn parse_url(url: &str) -> Result<(Vec<String>, String), String> {
        let rest = url
            .strip_prefix("etcd://")
            .ok_or_else(|| format!("'{url}' is not etcd://host:port[,host:port][/prefix]"))?;
        let (hosts, prefix) = match rest.split_once('/') {
            Some((hosts, prefix)) if !prefix.trim_matches('/').is_empty() => {
                (hosts, format!("/{}", prefix.trim_matches('/')))
            }
            Some((hosts, _)) => (hosts, "/sluice".to_string()),
            None => (rest, "/sluice".to_string()),
        };
        let endpoints: Vec<String> = hosts
            .split(',')
            .filter(|h| !h.is_empty())
            .map(|h| format!("http://{h}"))
            .collect();
        if endpoints.is_empty() {
            return Err(format!("'{url}' names no etcd endpoint"));
        }
        Ok((endpoints, prefix))
    }
}

/// The keys, under the configured prefix.
#[derive(Debug, Clone)]
struct Keys {
    prefix: String,
}

impl Keys {
    fn all(&self) -> String {
        format!("{}/", self.prefix)
    }
    fn cluster_id(&self) -> String {
        format!("{}/cluster_id", self.prefix)
    }
    fn controller(&self) -> String {
        format!("{}/controller", self.prefix)
    }
    fn producer_ids(&self) -> String {
        format!("{}/producer_ids", self.prefix)
    }
    fn broker(&self, id: i32) -> String {
        format!("{}/brokers/{id}", self.prefix)
    }
    fn topic(&self, name: &str) -> String {
        format!("{}/topics/{name}", self.prefix)
    }
    fn entity_configs(&self, kind: ConfigEntity, entity: &str) -> String {
        format!("{}/{}/{entity}", self.prefix, kind.key_name())
    }
    fn partitions_of(&self, name: &str) -> String {
        format!("{}/partitions/{name}/", self.prefix)
    }
    fn partition(&self, name: &str, index: i32) -> String {
        format!("{}/partitions/{name}/{index}", self.prefix)
    }
}

/// `topics/<name>`: what a topic is, apart from its partitions' states.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TopicRecord {
    id: Uuid,
    partitions: i32,
    replication_factor: i16,
    #[serde(default)]
    configs: BTreeMap<String, String>,
    #[serde(default)]
    internal: bool,
}

/// `partitions/<topic>/<index>`: one partition's state, tied to its topic's id so a
/// leftover of a deleted topic never passes for a partition of a new one.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PartitionRecord {
    topic_id: Uuid,
    #[serde(flatten)]
    state: PartitionState,
}

/// `controller`: who runs the controller duty (under that broker's lease).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ControllerRecord {
    id: i32,
    incarnation: Uuid,
}

/// One key as last read or watched.
#[derive(Debug, Clone)]
struct Entry {
    value: Vec<u8>,
    mod_revision: i64,
}

type Store = BTreeMap<String, Entry>;

fn unavailable(e: impl std::fmt::Display) -> ControllerError {
    ControllerError::Unavailable(e.to_string())
}

/// An etcd call bounded by [`CALL_TIMEOUT`].
async fn bounded<T>(
    call: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, ControllerError> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(unavailable(e)),
        Err(_) => Err(unavailable(format!("etcd did not answer within {CALL_TIMEOUT:?}"))),
    }
}

fn json<T: Serialize>(value: &T) -> Vec<u8> {
    // Serialising these plain structs cannot fail; an empty value would be refused on
    // read rather than trusted.
    serde_json::to_vec(value).unwrap_or_default()
}

struct Inner {
    client: Client,
    keys: Keys,
    config: EtcdConfig,
    /// The lease this broker's registration (and the controller key, when it holds the
    /// duty) lives under; replaced when a lost lease is re-granted.
    lease: AtomicI64,
    current: watch::Sender<Arc<ClusterMetadata>>,
    /// Until when the lease certainly lasts: the time a renewal (or the grant) was
    /// sent plus the TTL etcd answered with. etcd counts from when it received it, so
    /// this is never later than the real expiry.
    session_deadline: std::sync::Mutex<tokio::time::Instant>,
    session: watch::Sender<bool>,
    /// Told when the watch is found behind a write this broker made: it starts over.
    rewatch: tokio::sync::Notify,
}

impl Inner {
    /// The lease lasts at least until `deadline`.
    fn extend_session(&self, deadline: tokio::time::Instant) {
        if let Ok(mut d) = self.session_deadline.lock() {
            *d = (*d).max(deadline);
        }
        self.session.send_if_modified(|valid| !std::mem::replace(valid, true));
    }
}

/// Publishes whether this broker's session certainly lasts, every
/// [`SESSION_CHECK_INTERVAL`]: a broker cut off from etcd stops leading once its lease
/// may have expired, before the controller can have elected another leader.
async fn guard_session(inner: Arc<Inner>) {
    loop {
        let deadline = inner.session_deadline.lock().map(|d| *d).ok();
        let valid = deadline.is_some_and(|d| tokio::time::Instant::now() < d);
        let changed = inner.session.send_if_modified(|v| std::mem::replace(v, valid) != valid);
        if changed && !valid {
            tracing::error!("this broker's etcd session may have ended: it leads nothing until etcd confirms it");
        }
        tokio::time::sleep(SESSION_CHECK_INTERVAL).await;
    }
}

/// How often the session deadline is checked: a small fraction of any session timeout.
const SESSION_CHECK_INTERVAL: Duration = Duration::from_millis(50);

pub struct EtcdController {
    runtime: Option<tokio::runtime::Runtime>,
    inner: Arc<Inner>,
}

impl EtcdController {
    /// Connects, makes sure the cluster has an id, registers this broker (refusing a
    /// node id another live broker holds), reads the metadata, and starts following
    /// it. Blocks the calling thread until done: the broker cannot start without it.
    pub fn connect(config: EtcdConfig) -> Result<EtcdController, ControllerError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("controller")
            .enable_all()
            .build()
            .map_err(ControllerError::Storage)?;
        let inner = runtime.block_on(start(config))?;
        let inner = Arc::new(inner);
        runtime.spawn(follow(inner.clone()));
        runtime.spawn(keep_registered(inner.clone()));
        runtime.spawn(guard_session(inner.clone()));
        runtime.spawn(controller_duty(inner.clone()));
        Ok(EtcdController {
            runtime: Some(runtime),
            inner,
        })
    }

    /// Runs `work` on this backend's runtime and awaits it from any runtime.
    fn run<T: Send + 'static>(
        &self,
        work: impl std::future::Future<Output = Result<T, ControllerError>> + Send + 'static,
    ) -> ControllerFuture<'_, T> {
        let handle = self.runtime.as_ref().map(|rt| rt.spawn(work));
        Box::pin(async move {
            match handle {
                Some(h) => h.await.map_err(unavailable)?,
                None => Err(unavailable("controller is shut down")),
            }
        })
    }
}

impl Drop for EtcdController {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

async fn start(config: EtcdConfig) -> Result<Inner, ControllerError> {
    let options = ConnectOptions::new()
        .with_connect_timeout(CALL_TIMEOUT)
        .with_timeout(CALL_TIMEOUT)
        .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2));
    let mut client = bounded(Client::connect(config.endpoints.clone(), Some(options)))
        .await
        .map_err(|e| unavailable(format!("cannot reach etcd at {}: {e}", config.endpoints.join(","))))?;
    let keys = Keys {
        prefix: config.prefix.clone(),
    };
    // The cluster id: the first broker ever to start chooses it.
    let proposed = crate::local::new_cluster_id();
    // The client connects lazily: this first call is where an unreachable etcd shows.
    bounded(
        client.txn(
            Txn::new()
                .when([Compare::create_revision(keys.cluster_id(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(keys.cluster_id(), proposed, None)]),
        ),
    )
    .await
    .map_err(|e| unavailable(format!("cannot reach etcd at {}: {e}", config.endpoints.join(","))))?;
    let ttl = config.session_timeout.as_secs().max(1) as i64;
    let granted_at = tokio::time::Instant::now();
    let lease = bounded(client.lease_grant(ttl, None)).await?.id();
    let inner = Inner {
        client,
        keys,
        config,
        lease: AtomicI64::new(lease),
        current: watch::channel(Arc::new(ClusterMetadata {
            cluster_id: String::new(),
            topics: Default::default(),
            next_producer_id: 0,
            revision: 0,
            brokers: Default::default(),
            controller_id: NO_LEADER,
            broker_configs: Default::default(),
            group_configs: Default::default(),
        }))
        .0,
        session_deadline: std::sync::Mutex::new(granted_at + Duration::from_secs(ttl as u64)),
        session: watch::channel(true).0,
        rewatch: tokio::sync::Notify::new(),
    };
    if let Err(e) = register(&inner, lease).await {
        let mut client = inner.client.clone();
        let _ = bounded(client.lease_revoke(lease)).await;
        return Err(e);
    }
    // The first snapshot, so the broker starts with the cluster as it is.
    let (store, revision) = read_all(&inner).await?;
    inner
        .current
        .send_replace(Arc::new(decode(&inner.keys, &store, revision)));
    Ok(inner)
}

/// Puts this broker's registration under `lease`. A registration of the same node id
/// already there is this broker's dead predecessor only when it carries the incarnation
/// the data directory recorded (its lease is revoked, which drops its keys); anything
/// else is another live broker and the registration is refused.
async fn register(inner: &Inner, lease: i64) -> Result<(), ControllerError> {
    let me = &inner.config.me;
    let key = inner.keys.broker(me.id);
    let mut client = inner.client.clone();
    for _ in 0..CAS_ATTEMPTS {
        let put = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key.clone(),
                json(me),
                Some(PutOptions::new().with_lease(lease)),
            )]);
        if bounded(client.txn(put)).await?.succeeded() {
            return Ok(());
        }
        let existing = bounded(client.get(key.clone(), None)).await?;
        let Some(kv) = existing.kvs().first() else {
            continue;
        };
        if kv.lease() == lease {
            // An earlier attempt of ours went through after all (its answer was lost).
            return Ok(());
        }
        let holder: Option<BrokerInfo> = serde_json::from_slice(kv.value()).ok();
        let ours = holder.as_ref().is_some_and(|h| {
            h.incarnation == me.incarnation || Some(h.incarnation) == inner.config.previous_incarnation
        });
        if !ours {
            return Err(ControllerError::DuplicateBroker(me.id));
        }
        tracing::info!(
            node = me.id,
            "taking over the registration of this broker's previous run"
        );
        let _ = bounded(client.lease_revoke(kv.lease())).await;
    }
    Err(ControllerError::Conflict)
}

/// Everything under the prefix, and the revision it was read at.
async fn read_all(inner: &Inner) -> Result<(Store, i64), ControllerError> {
    let mut client = inner.client.clone();
    let mut response = bounded(client.get(inner.keys.all(), Some(GetOptions::new().with_prefix()))).await?;
    let revision = response.take_header().map(|h| h.revision()).unwrap_or(0);
    let store = response
        .take_kvs()
        .into_iter()
        .filter_map(|kv| {
            let key = kv.key_str().ok()?.to_string();
            let entry = Entry {
                mod_revision: kv.mod_revision(),
                value: kv.value().to_vec(),
            };
            Some((key, entry))
        })
        .collect();
    Ok((store, revision))
}

/// The cluster as the keys in `store` describe it. Values that do not parse are
/// skipped (and so are partitions whose record belongs to another topic id).
fn decode(keys: &Keys, store: &Store, revision: i64) -> ClusterMetadata {
    let p = &keys.prefix;
    let brokers: BTreeMap<i32, BrokerInfo> = store
        .range(format!("{p}/brokers/")..format!("{p}/brokers0"))
        .filter_map(|(_, e)| serde_json::from_slice::<BrokerInfo>(&e.value).ok())
        .map(|b| (b.id, b))
        .collect();
    let controller_id = store
        .get(&keys.controller())
        .and_then(|e| serde_json::from_slice::<ControllerRecord>(&e.value).ok())
        .map_or(NO_LEADER, |c| c.id);
    let mut topics = BTreeMap::new();
    for (key, entry) in store.range(format!("{p}/topics/")..format!("{p}/topics0")) {
        let Some(name) = key.strip_prefix(&format!("{p}/topics/")) else {
            continue;
        };
        let Ok(record) = serde_json::from_slice::<TopicRecord>(&entry.value) else {
            continue;
        };
        let assignments = (0..record.partitions)
            .map(|index| {
                store
                    .get(&keys.partition(name, index))
                    .and_then(|e| serde_json::from_slice::<PartitionRecord>(&e.value).ok())
                    .filter(|r| r.topic_id == record.id)
                    .map_or_else(unplaced, |r| r.state)
            })
            .collect();
        topics.insert(
            name.to_string(),
            TopicMetadata {
                name: name.to_string(),
                id: record.id,
                partitions: record.partitions,
                replication_factor: record.replication_factor,
                configs: record.configs,
                internal: record.internal,
                assignments,
            },
        );
    }
    ClusterMetadata {
        cluster_id: store
            .get(&keys.cluster_id())
            .map(|e| String::from_utf8_lossy(&e.value).to_string())
            .unwrap_or_default(),
        topics,
        next_producer_id: store
            .get(&keys.producer_ids())
            .and_then(|e| std::str::from_utf8(&e.value).ok()?.parse().ok())
            .unwrap_or(0),
        revision: revision.max(0) as u64,
        broker_configs: entity_configs(store, p, ConfigEntity::Broker),
        group_configs: entity_configs(store, p, ConfigEntity::Group),
        controller_id: if brokers.contains_key(&controller_id) {
            controller_id
        } else {
            NO_LEADER
        },
        brokers,
    }
}

/// A partition whose state is not written yet (its topic's creation is under way).
/// Every entity's configs of one kind, from the keys under `<prefix>/<kind>/`.
fn entity_configs(store: &Store, prefix: &str, kind: ConfigEntity) -> BTreeMap<String, BTreeMap<String, String>> {
    let under = format!("{prefix}/{}/", kind.key_name());
    store
        .range(under.clone()..format!("{prefix}/{}0", kind.key_name()))
        .filter_map(|(key, e)| {
            let entity = key.strip_prefix(&under)?;
            let configs = serde_json::from_slice::<BTreeMap<String, String>>(&e.value).ok()?;
            Some((entity.to_string(), configs))
        })
        .collect()
}

fn unplaced() -> PartitionState {
    PartitionState {
        replicas: Vec::new(),
        leader: NO_LEADER,
        leader_epoch: -1,
        isr: Vec::new(),
        partition_epoch: -1,
        adding: Vec::new(),
        removing: Vec::new(),
    }
}

/// Follows the prefix for as long as the backend runs: a full read, then the watch from
/// the next revision; a broken watch (etcd down, or compacted past us) starts over.
async fn follow(inner: Arc<Inner>) {
    let mut pause = Duration::from_millis(100);
    loop {
        match follow_once(&inner).await {
            Ok(()) => pause = Duration::from_millis(100),
            Err(e) => {
                tracing::warn!("etcd watch interrupted ({e}); serving the last metadata and retrying");
                pause = (pause * 2).min(Duration::from_secs(2));
            }
        }
        tokio::time::sleep(pause).await;
    }
}

async fn follow_once(inner: &Inner) -> Result<(), ControllerError> {
    let (mut store, revision) = read_all(inner).await?;
    publish(inner, &store, revision);
    let mut client = inner.client.clone();
    let options = WatchOptions::new().with_prefix().with_start_revision(revision + 1);
    let mut stream = bounded(client.watch(inner.keys.all(), Some(options))).await?;
    loop {
        let message = tokio::select! {
            message = stream.message() => message.map_err(unavailable)?,
            _ = inner.rewatch.notified() => {
                return Err(unavailable("the watch fell behind this broker's own write"));
            }
        };
        let Some(response) = message else { break };
        if response.canceled() {
            return Err(unavailable(format!("watch cancelled: {}", response.cancel_reason())));
        }
        // The header's revision is etcd's current one, which may be ahead of the events
        // this response carries: the snapshot is at the revision of its last event.
        let mut seen = 0;
        for event in response.events() {
            let Some(kv) = event.kv() else { continue };
            seen = seen.max(kv.mod_revision());
            let Ok(key) = kv.key_str() else { continue };
            match event.event_type() {
                EventType::Put => {
                    store.insert(
                        key.to_string(),
                        Entry {
                            value: kv.value().to_vec(),
                            mod_revision: kv.mod_revision(),
                        },
                    );
                }
                EventType::Delete => {
                    store.remove(key);
                }
            }
        }
        publish(inner, &store, seen);
    }
    Err(unavailable("watch stream ended"))
}

/// How long a write waits for the watch to show it before reading the store itself.
const WATCH_LAG_MAX: Duration = Duration::from_secs(2);

/// Makes sure watchers see revision `revision` (a write this broker just made): the
/// watch normally brings it within milliseconds; if it has not within
/// [`WATCH_LAG_MAX`], the store is read and published, and the watch starts over (a
/// watch that stops delivering must not leave a CreateTopics waiting forever for its
/// own topic).
async fn catch_up(inner: &Inner, revision: i64) {
    let wanted = revision.max(0) as u64;
    let mut seen = inner.current.subscribe();
    if tokio::time::timeout(WATCH_LAG_MAX, seen.wait_for(|m| m.revision >= wanted))
        .await
        .is_ok_and(|r| r.is_ok())
    {
        return;
    }
    tracing::warn!(
        revision,
        "the etcd watch is behind this broker's own write; reading the store"
    );
    if let Ok((store, at)) = read_all(inner).await {
        publish(inner, &store, at);
    }
    inner.rewatch.notify_one();
}

/// Publishes the store at `revision` unless watchers have seen it (or a later one).
fn publish(inner: &Inner, store: &Store, revision: i64) {
    if revision.max(0) as u64 <= inner.current.borrow().revision {
        return;
    }
    inner
        .current
        .send_replace(Arc::new(decode(&inner.keys, store, revision)));
}

/// Keeps the lease alive (every third of its TTL). When etcd says it has expired (etcd
/// was unreachable past the TTL, or the broker stalled), the registration is gone:
/// every snapshot now shows this broker as dead, so it leads nothing; it registers again
/// under a new lease and the controller duty gives it back its partitions.
async fn keep_registered(inner: Arc<Inner>) {
    let ttl = inner.config.session_timeout.max(Duration::from_secs(1));
    let every = ttl / 3;
    let mut client = inner.client.clone();
    loop {
        let lease = inner.lease.load(Ordering::Acquire);
        let renewed = match bounded(client.lease_keep_alive(lease)).await {
            Ok((mut keeper, mut responses)) => loop {
                let sent = tokio::time::Instant::now();
                if let Err(e) = bounded(keeper.keep_alive()).await {
                    break Err(e);
                }
                match tokio::time::timeout(CALL_TIMEOUT, responses.message()).await {
                    Ok(Ok(Some(r))) if r.ttl() <= 0 => break Ok(false),
                    Ok(Ok(Some(r))) => inner.extend_session(sent + Duration::from_secs(r.ttl() as u64)),
                    Ok(Ok(None)) => break Err(unavailable("keep-alive stream ended")),
                    Ok(Err(e)) => break Err(unavailable(e)),
                    Err(_) => break Err(unavailable("keep-alive unanswered")),
                }
                tokio::time::sleep(every).await;
            },
            Err(e) => Err(e),
        };
        // A failed renewal means etcd is unreachable, or that it no longer knows the
        // lease (it says so as an error); only the second is a lost registration.
        let alive = match renewed {
            Ok(alive) => alive,
            Err(e) => match bounded(client.lease_time_to_live(lease, None)).await {
                Ok(ttl) if ttl.ttl() <= 0 => false,
                _ => {
                    tracing::warn!("cannot renew the broker's etcd lease: {e}");
                    true
                }
            },
        };
        if alive {
            tokio::time::sleep(every).await;
            continue;
        }
        tracing::error!("this broker's etcd lease expired: it leads nothing until it has registered again");
        let ttl_secs = inner.config.session_timeout.as_secs().max(1) as i64;
        let granted_at = tokio::time::Instant::now();
        match bounded(client.lease_grant(ttl_secs, None)).await {
            Ok(granted) => {
                let lease = granted.id();
                match register(&inner, lease).await {
                    Ok(()) => {
                        inner.lease.store(lease, Ordering::Release);
                        inner.extend_session(granted_at + Duration::from_secs(ttl_secs as u64));
                        tracing::info!("registered again under a new lease");
                    }
                    Err(e) => {
                        tracing::error!("cannot register again: {e}");
                        let _ = bounded(client.lease_revoke(lease)).await;
                    }
                }
            }
            Err(e) => tracing::warn!("cannot get a new etcd lease: {e}"),
        }
        tokio::time::sleep(every).await;
    }
}

/// Competes for the `controller` key and, while holding it, brings partition
/// leadership in line with the live brokers.
async fn controller_duty(inner: Arc<Inner>) {
    let mut changes = inner.current.subscribe();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(DUTY_INTERVAL) => {}
            changed = changes.changed() => if changed.is_err() { return },
        }
        let lease = inner.lease.load(Ordering::Acquire);
        if !inner.current.borrow().is_live(inner.config.me.id) {
            continue;
        }
        match holds_controller(&inner, lease).await {
            Ok(true) => {
                if let Err(e) = elect_leaders(&inner, lease).await {
                    tracing::warn!("controller duty: {e}");
                }
            }
            Ok(false) => {}
            Err(e) => tracing::debug!("controller election: {e}"),
        }
    }
}

/// Takes the controller key when nobody holds it; whether this broker holds it now.
async fn holds_controller(inner: &Inner, lease: i64) -> Result<bool, ControllerError> {
    let mut client = inner.client.clone();
    let key = inner.keys.controller();
    let me = ControllerRecord {
        id: inner.config.me.id,
        incarnation: inner.config.me.incarnation,
    };
    let txn = Txn::new()
        .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
        .and_then([TxnOp::put(
            key.clone(),
            json(&me),
            Some(PutOptions::new().with_lease(lease)),
        )])
        .or_else([TxnOp::get(key, None)]);
    let response = bounded(client.txn(txn)).await?;
    if response.succeeded() {
        tracing::info!(node = me.id, "this broker now runs the controller duty");
        return Ok(true);
    }
    let holder = response.op_responses().into_iter().find_map(|r| match r {
        etcd_client::TxnOpResponse::Get(g) => g.kvs().first().map(|kv| kv.lease()),
        _ => None,
    });
    Ok(holder == Some(lease))
}

/// One pass of the controller duty over every partition (Kafka's
/// `PartitionChangeBuilder` election, clean only): a partition whose leader is dead gets
/// the first live in-sync replica, or no leader (offline, its in-sync set kept so that
/// replica takes over again when it returns); with `auto.leader.rebalance.enable` a live
/// in-sync preferred replica gets leadership back. Every write compares the partition's
/// revision and that this broker still holds the controller key.
async fn elect_leaders(inner: &Inner, lease: i64) -> Result<(), ControllerError> {
    let (store, revision) = read_all(inner).await?;
    let metadata = decode(&inner.keys, &store, revision);
    let live: BTreeSet<i32> = metadata.brokers.keys().copied().collect();
    let guard = Compare::lease(inner.keys.controller(), CompareOp::Equal, lease);
    let mut client = inner.client.clone();
    for topic in metadata.topics.values() {
        for (index, state) in topic.assignments.iter().enumerate() {
            let index = index as i32;
            let key = inner.keys.partition(&topic.name, index);
            let written = store.get(&key).filter(|_| state.partition_epoch >= 0);
            let unclean = topic
                .configs
                .get("unclean.leader.election.enable")
                .is_some_and(|v| v == "true");
            let next = match written {
                Some(_) => {
                    let elected = elect(state, &live, inner.config.auto_leader_rebalance);
                    let elected = elected.or_else(|| {
                        // A leaderless partition whose topic allows it: an unclean election.
                        (unclean && (state.leader == NO_LEADER || !live.contains(&state.leader)))
                            .then(|| state.elect(Election::Unclean, &live).ok())
                            .flatten()
                    });
                    // A reassignment whose new replicas are in sync completes.
                    match elected.as_ref().unwrap_or(state).advance_reassignment() {
                        Some(done) => Some(done),
                        None => elected,
                    }
                }
                // A creation that stopped half-way: place the missing partition now.
                None => placement::assign(
                    &metadata.brokers,
                    index,
                    1,
                    topic.replication_factor,
                    placement::Start::random(live.len()),
                )
                .ok()
                .and_then(|mut r| r.pop())
                .map(PartitionState::new),
            };
            let Some(next) = next else { continue };
            let compare = match written {
                Some(e) => Compare::mod_revision(key.clone(), CompareOp::Equal, e.mod_revision),
                None => Compare::create_revision(key.clone(), CompareOp::Equal, 0),
            };
            let record = PartitionRecord {
                topic_id: topic.id,
                state: next.clone(),
            };
            let txn = Txn::new()
                .when([compare, guard.clone()])
                .and_then([TxnOp::put(key, json(&record), None)]);
            if bounded(client.txn(txn)).await?.succeeded() {
                tracing::info!(
                    topic = %topic.name,
                    partition = index,
                    leader = next.leader,
                    leader_epoch = next.leader_epoch,
                    "partition leadership changed"
                );
            }
        }
    }
    // Partition states of topics that no longer exist (a deletion cut short).
    let topics_prefix = format!("{}/partitions/", inner.keys.prefix);
    for (key, entry) in store.range(topics_prefix.clone()..format!("{}/partitions0", inner.keys.prefix)) {
        let topic = key
            .strip_prefix(&topics_prefix)
            .and_then(|rest| rest.rsplit_once('/'))
            .map(|(t, _)| t);
        let stale = topic.is_none_or(|t| {
            serde_json::from_slice::<PartitionRecord>(&entry.value)
                .map_or(true, |r| metadata.topic(t).is_none_or(|m| m.id != r.topic_id))
        });
        if stale {
            let txn = Txn::new()
                .when([
                    Compare::mod_revision(key.clone(), CompareOp::Equal, entry.mod_revision),
                    guard.clone(),
                ])
                .and_then([TxnOp::delete(key.clone(), None)]);
            bounded(client.txn(txn)).await?;
        }
    }
    Ok(())
}

/// The next state of a partition given the live brokers, or None to leave it. A dead
/// leader is replaced by the first live in-sync replica (never one outside the in-sync
/// set: it may lack acknowledged records); dead followers leave the in-sync set at once
/// (Kafka fences a broker whose session ended, KIP-841), so `min.insync.replicas`
/// counts only brokers that can still acknowledge.
fn elect(state: &PartitionState, live: &BTreeSet<i32>, rebalance: bool) -> Option<PartitionState> {
    let leader_live = state.leader != NO_LEADER && live.contains(&state.leader);
    let mut next = state.clone();
    if !leader_live {
        match state.isr.iter().find(|id| live.contains(id)) {
            Some(&candidate) => {
                next.leader = candidate;
                next.isr.retain(|id| live.contains(id));
            }
            // No in-sync replica is live: offline, keeping the in-sync set so that the
            // first of them to return leads again.
            None if state.leader != NO_LEADER => next.leader = NO_LEADER,
            None => return None,
        }
        next.leader_epoch += 1;
    } else {
        next.isr.retain(|id| live.contains(id));
        let preferred = state.replicas.first().copied().unwrap_or(state.leader);
        if rebalance && preferred != state.leader && live.contains(&preferred) && state.isr.contains(&preferred) {
            next.leader = preferred;
            next.leader_epoch += 1;
        } else if next.isr == state.isr {
            return None;
        }
    }
    next.partition_epoch += 1;
    Some(next)
}

/// Reads one partition's state, applies `change` and writes the result if the key did
/// not change meanwhile (retrying a few times when it did).
async fn update_partition(
    inner: &Inner,
    topic: &str,
    partition: i32,
    change: impl Fn(&PartitionState) -> Result<PartitionState, ControllerError>,
) -> Result<Change<PartitionState>, ControllerError> {
    let mut client = inner.client.clone();
    let key = inner.keys.partition(topic, partition);
    for _ in 0..CAS_ATTEMPTS {
        let current = bounded(client.get(key.clone(), None)).await?;
        let kv = current
            .kvs()
            .first()
            .ok_or_else(|| ControllerError::UnknownTopic(topic.to_string()))?;
        let mut record: PartitionRecord =
            serde_json::from_slice(kv.value()).map_err(|e| ControllerError::Corrupt(format!("{key}: {e}")))?;
        record.state = change(&record.state)?;
        let txn = Txn::new()
            .when([Compare::mod_revision(key.clone(), CompareOp::Equal, kv.mod_revision())])
            .and_then([TxnOp::put(key.clone(), json(&record), None)]);
        let mut response = bounded(client.txn(txn)).await?;
        if response.succeeded() {
            let revision = response.take_header().map(|h| h.revision()).unwrap_or(0);
            catch_up(inner, revision).await;
            return Ok(Change {
                value: record.state,
                revision: revision.max(0) as u64,
            });
        }
    }
    Err(ControllerError::Conflict)
}

/// Partition records for `assignments`, numbered from `first`.
fn partition_puts(keys: &Keys, topic: &str, topic_id: Uuid, first: i32, assignments: &[PartitionState]) -> Vec<TxnOp> {
    assignments
        .iter()
        .enumerate()
        .map(|(i, state)| {
            let record = PartitionRecord {
                topic_id,
                state: state.clone(),
            };
            TxnOp::put(keys.partition(topic, first + i as i32), json(&record), None)
        })
        .collect()
}

/// Writes a topic record (compared with `expected`: absent, or at a `mod_revision`)
/// and partition records after it, in transactions of at most [`TXN_OPS_MAX`]
/// operations; later ones compare the topic record as the first left it. Returns the
/// revision of the last, or None when the first found the topic changed.
/// Changes a topic's record by compare-and-swap on its revision, retrying when another
/// change raced it: `change` gives the topic as it is to become and the partition
/// records to put with it.
async fn update_topic(
    inner: &Inner,
    name: &str,
    change: impl Fn(&ClusterMetadata, &TopicMetadata) -> Result<(TopicMetadata, Vec<TxnOp>), ControllerError>,
) -> Result<Change<TopicMetadata>, ControllerError> {
    for _ in 0..CAS_ATTEMPTS {
        let (store, revision) = read_all(inner).await?;
        let metadata = decode(&inner.keys, &store, revision);
        let (Some(topic), Some(entry)) = (metadata.topic(name), store.get(&inner.keys.topic(name))) else {
            return Err(ControllerError::UnknownTopic(name.to_string()));
        };
        let (next, puts) = change(&metadata, topic)?;
        let record = TopicRecord {
            id: next.id,
            partitions: next.partitions,
            replication_factor: next.replication_factor,
            configs: next.configs.clone(),
            internal: next.internal,
        };
        if let Some(revision) = write_topic(inner, name, &record, Some(entry.mod_revision), puts).await? {
            catch_up(inner, revision).await;
            return Ok(Change {
                value: next,
                revision: revision.max(0) as u64,
            });
        }
    }
    Err(ControllerError::Conflict)
}

async fn write_topic(
    inner: &Inner,
    name: &str,
    record: &TopicRecord,
    expected: Option<i64>,
    partitions: Vec<TxnOp>,
) -> Result<Option<i64>, ControllerError> {
    let mut client = inner.client.clone();
    let key = inner.keys.topic(name);
    let mut chunks = partitions.chunks(TXN_OPS_MAX);
    let mut first_ops = vec![TxnOp::put(key.clone(), json(record), None)];
    first_ops.extend(chunks.next().unwrap_or_default().iter().cloned());
    let compare = match expected {
        None => Compare::create_revision(key.clone(), CompareOp::Equal, 0),
        Some(revision) => Compare::mod_revision(key.clone(), CompareOp::Equal, revision),
    };
    let mut response = bounded(client.txn(Txn::new().when([compare]).and_then(first_ops))).await?;
    if !response.succeeded() {
        return Ok(None);
    }
    let written = response.take_header().map(|h| h.revision()).unwrap_or(0);
    let mut last = written;
    for chunk in chunks {
        let txn = Txn::new()
            .when([Compare::mod_revision(key.clone(), CompareOp::Equal, written)])
            .and_then(chunk.to_vec());
        let mut response = bounded(client.txn(txn)).await?;
        if !response.succeeded() {
            // The topic changed meanwhile (deleted, grown); the controller duty places
            // whatever is still missing.
            break;
        }
        last = response.take_header().map(|h| h.revision()).unwrap_or(last);
    }
    Ok(Some(last))
}

impl Controller for EtcdController {
    fn watch(&self) -> watch::Receiver<Arc<ClusterMetadata>> {
        self.inner.current.subscribe()
    }

    fn session(&self) -> watch::Receiver<bool> {
        self.inner.session.subscribe()
    }

    fn create_topic(&self, topic: NewTopic) -> ControllerFuture<'_, Change<TopicMetadata>> {
        let inner = self.inner.clone();
        self.run(async move {
            crate::validate_topic_name(&topic.name).map_err(ControllerError::InvalidTopicName)?;
            if topic.partitions < 1 && topic.replica_assignments.is_none() {
                return Err(ControllerError::InvalidPartitions(topic.partitions));
            }
            let brokers = inner.current.borrow().brokers.clone();
            let replicas = placement::place(&topic, &brokers)?;
            let assignments: Vec<PartitionState> = replicas.into_iter().map(PartitionState::new).collect();
            let record = TopicRecord {
                id: Uuid::new_v4(),
                partitions: assignments.len() as i32,
                replication_factor: assignments.first().map_or(1, |a| a.replicas.len() as i16),
                configs: topic.configs,
                internal: topic.internal,
            };
            let puts = partition_puts(&inner.keys, &topic.name, record.id, 0, &assignments);
            let Some(revision) = write_topic(&inner, &topic.name, &record, None, puts).await? else {
                return Err(ControllerError::TopicExists(topic.name));
            };
            catch_up(&inner, revision).await;
            Ok(Change {
                value: TopicMetadata {
                    name: topic.name,
                    id: record.id,
                    partitions: record.partitions,
                    replication_factor: record.replication_factor,
                    configs: record.configs,
                    internal: record.internal,
                    assignments,
                },
                revision: revision.max(0) as u64,
            })
        })
    }

    fn delete_topic(&self, name: &str) -> ControllerFuture<'_, Change<TopicMetadata>> {
        let inner = self.inner.clone();
        let name = name.to_string();
        self.run(async move {
            let mut client = inner.client.clone();
            for _ in 0..CAS_ATTEMPTS {
                let (store, revision) = read_all(&inner).await?;
                let metadata = decode(&inner.keys, &store, revision);
                let (Some(topic), Some(entry)) = (metadata.topic(&name), store.get(&inner.keys.topic(&name))) else {
                    return Err(ControllerError::UnknownTopic(name));
                };
                let txn = Txn::new()
                    .when([Compare::mod_revision(
                        inner.keys.topic(&name),
                        CompareOp::Equal,
                        entry.mod_revision,
                    )])
                    .and_then([
                        TxnOp::delete(inner.keys.topic(&name), None),
                        TxnOp::delete(
                            inner.keys.partitions_of(&name),
                            Some(DeleteOptions::new().with_prefix()),
                        ),
                    ]);
                let mut response = bounded(client.txn(txn)).await?;
                if response.succeeded() {
                    let revision = response.take_header().map(|h| h.revision()).unwrap_or(revision);
                    catch_up(&inner, revision).await;
                    return Ok(Change {
                        value: topic.clone(),
                        revision: revision.max(0) as u64,
                    });
                }
            }
            Err(ControllerError::Conflict)
        })
    }

    fn create_partitions(
        &self,
        name: &str,
        partitions: i32,
        assignments: Option<Vec<Vec<i32>>>,
    ) -> ControllerFuture<'_, Change<TopicMetadata>> {
        let inner = self.inner.clone();
        let name = name.to_string();
        self.run(async move {
            update_topic(&inner, &name, |metadata, topic| {
                let start = placement::Start::random(metadata.brokers.len());
                let added = placement::grow(topic, partitions, assignments.clone(), &metadata.brokers, start)?;
                let added: Vec<PartitionState> = added.into_iter().map(PartitionState::new).collect();
                let puts = partition_puts(&inner.keys, &name, topic.id, topic.partitions, &added);
                let mut grown = topic.clone();
                grown.partitions = partitions;
                grown.assignments.extend(added);
                Ok((grown, puts))
            })
            .await
        })
    }

    fn remove_partitions(&self, name: &str, partitions: i32) -> ControllerFuture<'_, Change<TopicMetadata>> {
        let inner = self.inner.clone();
        let name = name.to_string();
        self.run(async move {
            update_topic(&inner, &name, |_, topic| {
                let keep = partitions.clamp(1, topic.partitions);
                let deletes = (keep..topic.partitions)
                    .map(|p| TxnOp::delete(inner.keys.partition(&name, p), None))
                    .collect();
                let mut shrunk = topic.clone();
                shrunk.partitions = keep;
                shrunk.assignments.truncate(keep as usize);
                Ok((shrunk, deletes))
            })
            .await
        })
    }

    fn alter_topic_configs(
        &self,
        name: &str,
        configs: BTreeMap<String, String>,
    ) -> ControllerFuture<'_, Change<TopicMetadata>> {
        let inner = self.inner.clone();
        let name = name.to_string();
        self.run(async move {
            update_topic(&inner, &name, |_, topic| {
                let mut altered = topic.clone();
                altered.configs = configs.clone();
                Ok((altered, Vec::new()))
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
        let inner = self.inner.clone();
        let key = inner.keys.entity_configs(kind, entity);
        self.run(async move {
            let mut client = inner.client.clone();
            // The whole set is replaced at once; the last writer wins, as in Kafka.
            let response = if configs.is_empty() {
                bounded(client.delete(key, None)).await?.take_header()
            } else {
                bounded(client.put(key, json(&configs), None)).await?.take_header()
            };
            let revision = response.map(|h| h.revision()).unwrap_or(0);
            catch_up(&inner, revision).await;
            Ok(Change {
                value: (),
                revision: revision.max(0) as u64,
            })
        })
    }

    fn allocate_producer_ids(&self, count: i64) -> ControllerFuture<'_, std::ops::Range<i64>> {
        let inner = self.inner.clone();
        self.run(async move {
            let mut client = inner.client.clone();
            let key = inner.keys.producer_ids();
            for _ in 0..CAS_ATTEMPTS {
                let current = bounded(client.get(key.clone(), None)).await?;
                let (start, compare) = match current.kvs().first() {
                    Some(kv) => (
                        std::str::from_utf8(kv.value())
                            .ok()
                            .and_then(|v| v.parse::<i64>().ok())
                            .ok_or_else(|| ControllerError::Corrupt(format!("{key} is not a number")))?,
                        Compare::mod_revision(key.clone(), CompareOp::Equal, kv.mod_revision()),
                    ),
                    None => (0, Compare::create_revision(key.clone(), CompareOp::Equal, 0)),
                };
                let end = start + count.max(1);
                let txn = Txn::new()
                    .when([compare])
                    .and_then([TxnOp::put(key.clone(), end.to_string(), None)]);
                if bounded(client.txn(txn)).await?.succeeded() {
                    return Ok(start..end);
                }
            }
            Err(ControllerError::Conflict)
        })
    }

    fn elect_leader(
        &self,
        topic: &str,
        partition: i32,
        kind: Election,
    ) -> ControllerFuture<'_, Change<PartitionState>> {
        let inner = self.inner.clone();
        let topic = topic.to_string();
        self.run(async move {
            let live: BTreeSet<i32> = inner.current.borrow().brokers.keys().copied().collect();
            update_partition(&inner, &topic, partition, |state| state.elect(kind, &live)).await
        })
    }

    fn reassign(
        &self,
        topic: &str,
        partition: i32,
        target: Option<Vec<i32>>,
    ) -> ControllerFuture<'_, Change<PartitionState>> {
        let inner = self.inner.clone();
        let topic = topic.to_string();
        self.run(async move {
            let registered: BTreeSet<i32> = inner.current.borrow().brokers.keys().copied().collect();
            update_partition(&inner, &topic, partition, |state| {
                state.start_reassignment(target.as_deref(), &registered)
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
        let inner = self.inner.clone();
        let topic = topic.to_string();
        self.run(async move {
            let mut client = inner.client.clone();
            let key = inner.keys.partition(&topic, partition);
            let current = bounded(client.get(key.clone(), None)).await?;
            let kv = current
                .kvs()
                .first()
                .ok_or_else(|| ControllerError::UnknownTopic(topic.clone()))?;
            let mut record: PartitionRecord =
                serde_json::from_slice(kv.value()).map_err(|e| ControllerError::Corrupt(format!("{key}: {e}")))?;
            record.state = expected.apply(&record.state)?;
            // The leader's own registration must still be live: a leader that lost its
            // session (cut off, or stalled past it) changes nothing.
            let me = inner.keys.broker(inner.config.me.id);
            let lease = inner.lease.load(Ordering::Acquire);
            let txn = Txn::new()
                .when([
                    Compare::mod_revision(key.clone(), CompareOp::Equal, kv.mod_revision()),
                    Compare::lease(me, CompareOp::Equal, lease),
                ])
                .and_then([TxnOp::put(key, json(&record), None)]);
            let mut response = bounded(client.txn(txn)).await?;
            if !response.succeeded() {
                return Err(ControllerError::StalePartitionState {
                    leader_epoch: expected.leader_epoch,
                    partition_epoch: expected.partition_epoch,
                });
            }
            let revision = response.take_header().map(|h| h.revision()).unwrap_or(0);
            catch_up(&inner, revision).await;
            Ok(Change {
                value: record.state,
                revision: revision.max(0) as u64,
            })
        })
    }

    fn shutdown(&self) -> ControllerFuture<'_, ()> {
        let inner = self.inner.clone();
        self.run(async move {
            // A clean stop drops the registration at once instead of after the session
            // timeout, so clients and the controller duty move on immediately.
            let mut client = inner.client.clone();
            bounded(client.lease_revoke(inner.lease.load(Ordering::Acquire))).await?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_give_endpoints_and_a_prefix() {
        let (e, p) = EtcdConfig::parse_url("etcd://127.0.0.1:2379").unwrap();
        assert_eq!((e, p.as_str()), (vec!["http://127.0.0.1:2379".to_string()], "/sluice"));
        let (e, p) = EtcdConfig::parse_url("etcd://a:1,b:2/prod/kafka/").unwrap();
        assert_eq!(e, vec!["http://a:1".to_string(), "http://b:2".to_string()]);
        assert_eq!(p, "/prod/kafka");
        assert!(EtcdConfig::parse_url("http://a:1").is_err());
        assert!(EtcdConfig::parse_url("etcd:///x").is_err());
    }

    fn state(replicas: &[i32], leader: i32, isr: &[i32]) -> PartitionState {
        PartitionState {
            replicas: replicas.to_vec(),
            leader,
            leader_epoch: 3,
            isr: isr.to_vec(),
            partition_epoch: 5,
            adding: Vec::new(),
            removing: Vec::new(),
        }
    }

    #[test]
    fn election_is_clean_and_bumps_epochs() {
        let live = |ids: &[i32]| ids.iter().copied().collect::<BTreeSet<i32>>();
        // A live leader stays.
        assert!(elect(&state(&[1, 2], 1, &[1]), &live(&[1, 2]), true).is_none());
        // A dead leader with no other in-sync replica: offline, ISR kept.
        let offline = elect(&state(&[1, 2], 1, &[1]), &live(&[2]), true).unwrap();
        assert_eq!(
            (offline.leader, offline.isr.clone(), offline.leader_epoch),
            (NO_LEADER, vec![1], 4)
        );
        assert_eq!(offline.partition_epoch, 6);
        // Offline stays offline until an in-sync replica returns, then it leads.
        assert!(elect(&offline, &live(&[2]), true).is_none());
        let back = elect(&offline, &live(&[1, 2]), true).unwrap();
        assert_eq!((back.leader, back.leader_epoch), (1, 5));
        // Another in-sync replica takes over from a dead leader.
        let moved = elect(&state(&[1, 2], 1, &[1, 2]), &live(&[2]), false).unwrap();
        assert_eq!((moved.leader, moved.isr), (2, vec![2]));
        // A dead follower leaves the in-sync set; the leader and its epoch stay.
        let shrunk = elect(&state(&[1, 2, 3], 1, &[1, 2, 3]), &live(&[1, 3]), false).unwrap();
        assert_eq!((shrunk.leader, shrunk.isr, shrunk.leader_epoch), (1, vec![1, 3], 3));
        // The preferred replica gets leadership back only with rebalancing on.
        assert!(elect(&state(&[1, 2], 2, &[1, 2]), &live(&[1, 2]), false).is_none());
        assert_eq!(
            elect(&state(&[1, 2], 2, &[1, 2]), &live(&[1, 2]), true).unwrap().leader,
            1
        );
    }
}
