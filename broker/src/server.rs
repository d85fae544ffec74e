//! Start-up and shutdown: lock the data directory, bind one SO_REUSEPORT listener per
//! shard on the same port, open the controller (the embedded local one, or etcd in a
//! cluster) and register this broker with it, start the pinned shard threads, and stop
//! them cleanly.

use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use sluice_controller::{BrokerInfo, ClusterMetadata, Controller, EtcdConfig, EtcdController, LocalController};
use sluice_storage::Engine;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::config::BrokerConfig;
use crate::connection;
use crate::coordinator::{Coordinator, TICK};
use crate::data_dir::DataDir;
use crate::group::coordinator::GroupCoordinator;
use crate::shard::{Applied, Cluster, Shard, ShardCall, INBOX_DEPTH};

/// How long shutdown waits for connections to finish their in-flight requests.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Raises the soft limit on open files to the hard limit: partitions hold files and
/// connections hold sockets, and the usual soft default (1024) is far below what a
/// broker needs, while the hard limit is what the administrator allowed.
/// Returns the limit now in force.
fn raise_descriptor_limit() -> usize {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let limit = getrlimit(Resource::Nofile);
    let as_count = |n: Option<u64>| n.map_or(usize::MAX, |n| n.min(usize::MAX as u64) as usize);
    let mut raised = limit;
    raised.current = limit.maximum;
    if raised.current != limit.current {
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            tracing::warn!(soft = ?limit.current, hard = ?limit.maximum, "cannot raise the open-file limit: {e}");
            return as_count(limit.current);
        }
    }
    tracing::info!(was = ?limit.current, now = ?raised.current, hard = ?limit.maximum, "open-file limit");
    as_count(raised.current)
}

/// The descriptor budget (see [`crate::limits::Descriptors`]), logged once.
fn share_descriptors(limit: usize, config: &BrokerConfig) -> crate::limits::Descriptors {
    // An unlimited open-file limit still gets finite budgets.
    let limit = limit.min(1 << 24);
    let share = crate::limits::Descriptors::share(limit, config.log_open_files_max);
    tracing::info!(
        limit = share.limit,
        segment_files = share.files,
        per_shard = share.files / config.shards.max(1),
        connections = share.connections,
        reserved = share.reserved,
        "descriptor budget"
    );
    share
}

pub fn run(config: BrokerConfig) -> Result<(), String> {
    let descriptors = share_descriptors(raise_descriptor_limit(), &config);
    let data_dir = DataDir::lock(&config.data_dir)?;
    let previous = data_dir.identity(config.node_id)?;
    let listeners = bind(config.listen, config.shards)?;
    let metrics_listener = StdListener::bind(config.metrics_addr)
        .and_then(|l| l.set_nonblocking(true).map(|_| l))
        .map_err(|e| format!("cannot serve metrics on {}: {e}", config.metrics_addr))?;
    let metrics_bound = metrics_listener.local_addr().map_err(|e| e.to_string())?;
    let bound = listeners[0].local_addr().map_err(|e| e.to_string())?;
    let advertised = config.advertised_listener.clone().unwrap_or_else(|| {
        let host = if bound.ip().is_unspecified() {
            "localhost".to_string()
        } else {
            bound.ip().to_string()
        };
        (host, bound.port())
    });
    let me = BrokerInfo {
        id: config.node_id,
        host: advertised.0.clone(),
        port: advertised.1,
        rack: config.broker_rack.clone(),
        incarnation: Uuid::new_v4(),
    };
    // Recorded before registering, so a crash right after leaves a directory whose
    // next run recognises this registration as its own.
    data_dir.record(config.node_id, previous.cluster_id.as_deref(), me.incarnation)?;
    let controller = open_controller(&config, me.clone(), previous.incarnation)?;
    let cluster_id = controller.metadata().cluster_id.clone();
    if let Some(recorded) = previous.cluster_id.as_deref().filter(|id| *id != cluster_id) {
        shutdown_controller(controller.as_ref());
        return Err(format!(
            "{} belongs to cluster {recorded}, but the controller's cluster is {cluster_id}",
            config.data_dir.display()
        ));
    }
    data_dir.record(config.node_id, Some(&cluster_id), me.incarnation)?;
    let offsets_partitions = match config.controller.as_str() {
        "local" => ensure_offsets_topic(controller.as_ref(), &config)?,
        // In a cluster it is created when a group first needs it, once brokers have
        // joined, so its partitions spread over them (as Kafka does).
        _ => controller
            .metadata()
            .topic(GroupCoordinator::TOPIC)
            .map_or(config.offsets_topic_num_partitions, |t| t.partitions),
    };
    // Created when a transactional producer first needs it (as Kafka does); its
    // partition count, once created, is the one that places transactional ids.
    let txn_partitions = controller
        .metadata()
        .topic(crate::txn::TRANSACTION_STATE_TOPIC)
        .map_or(config.transaction_state_log_num_partitions, |t| t.partitions);
    let share_partitions = controller
        .metadata()
        .topic(crate::share::SHARE_STATE_TOPIC)
        .map_or(config.share_coordinator_state_topic_num_partitions, |t| t.partitions);
    remove_orphan_partitions(&config.data_dir, &controller.metadata(), config.node_id);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (peers, inboxes): (Vec<_>, Vec<_>) = (0..config.shards)
        .map(|_| mpsc::channel::<ShardCall>(INBOX_DEPTH))
        .unzip();
    let shards = config.shards;
    let config_for_groups = config.clone();
    let cluster = Arc::new(Cluster {
        config,
        me,
        controller,
        peers,
        shutdown: shutdown_rx,
        offsets_partitions,
        groups: group_config(&config_for_groups),
        txn_partitions,
        share_partitions,
        txns: crate::txn::TxnConfig {
            timeout_ms_max: config_for_groups.transaction_max_timeout_ms,
            abort_check_interval_ms: config_for_groups.transaction_abort_timed_out_transaction_cleanup_interval_ms,
        },
        engine: choose_io_engine(&config_for_groups.io_engine)?,
        io_options: sluice_storage::io::IoOptions {
            open_files: Some((descriptors.files / shards.max(1)).max(1)),
            ..choose_io_options(&config_for_groups)
        },
        limits: crate::limits::Limits::new(crate::limits::LimitsConfig {
            max_connections: config_for_groups.max_connections,
            connection_descriptors: descriptors.connections,
            max_connections_per_ip: config_for_groups.max_connections_per_ip,
            max_connections_per_ip_overrides: crate::limits::parse_overrides(
                &config_for_groups.max_connections_per_ip_overrides,
            )?,
            max_connection_creation_rate: config_for_groups.max_connection_creation_rate,
            queued_max_request_bytes: config_for_groups.queued_max_request_bytes,
        }),
        applied: (0..shards).map(|_| watch::channel(Applied::default()).0).collect(),
        cleaner: if config_for_groups.log_cleaner_enable {
            Some(
                sluice_storage::cleaner::CleanerThread::start()
                    .map_err(|e| format!("cannot start the log cleaner: {e}"))?,
            )
        } else {
            None
        },
    });
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let mut threads = Vec::new();
    for (id, (listener, inbox)) in listeners.into_iter().zip(inboxes).enumerate() {
        let cluster = cluster.clone();
        let ready = ready_tx.clone();
        let core = if cores.is_empty() {
            None
        } else {
            Some(cores[id % cores.len()])
        };
        let thread = std::thread::Builder::new()
            .name(format!("shard-{id}"))
            .spawn(move || {
                if let Some(core) = core {
                    core_affinity::set_for_current(core);
                }
                run_shard(id, cluster, listener, inbox, ready)
            })
            .map_err(|e| format!("cannot start shard thread: {e}"))?;
        threads.push(thread);
    }
    drop(ready_tx);
    let exporter =
        crate::exporter::spawn(cluster.clone(), metrics_listener).map_err(|e| format!("metrics thread: {e}"))?;
    let mut failure = None;
    for _ in 0..shards {
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failure = Some(e),
            Err(_) => failure = Some("a shard stopped during start-up".to_string()),
        }
    }
    if failure.is_none() {
        tracing::info!(listen = %bound, advertised = %format!("{}:{}", advertised.0, advertised.1), shards, "sluice is ready");
        // Tests and scripts read this line to learn the port when started with port 0.
        println!("sluice listening on {bound}");
        println!("sluice metrics on {metrics_bound}");
        wait_for_signal();
        tracing::info!("shutting down");
    }
    let _ = shutdown_tx.send(true);
    for t in threads {
        let _ = t.join();
    }
    let _ = exporter.join();
    shutdown_controller(cluster.controller.as_ref());
    drop(data_dir);
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn wait_for_signal() {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
        return;
    };
    rt.block_on(async {
        let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) else {
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    });
}

/// One listener per shard on the same address. The first binds (port 0 picks a free
/// port); the rest join it through SO_REUSEPORT, and the kernel spreads connections.
fn bind(addr: SocketAddr, shards: usize) -> Result<Vec<StdListener>, String> {
    /// The accept queue Linux and Kafka commonly use.
    const BACKLOG: u32 = 1024;
    // tokio registers a listener with the reactor of the runtime it is created in; a
    // throwaway runtime lets us create them here and hand plain std sockets to shards.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|e| e.to_string())?;
    let _guard = rt.enter();
    if addr.port() != 0 {
        refuse_if_taken(addr)?;
    }
    let mut listeners: Vec<StdListener> = Vec::with_capacity(shards);
    let mut addr = addr;
    for _ in 0..shards {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()
        } else {
            tokio::net::TcpSocket::new_v6()
        }
        .map_err(|e| format!("socket: {e}"))?;
        socket.set_reuseaddr(true).map_err(|e| e.to_string())?;
        socket.set_reuseport(true).map_err(|e| e.to_string())?;
        socket.bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        let listener = socket
            .listen(BACKLOG)
            .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        let listener = listener.into_std().map_err(|e| e.to_string())?;
        addr = listener.local_addr().map_err(|e| e.to_string())?;
        listeners.push(listener);
    }
    Ok(listeners)
}

/// SO_REUSEPORT lets any process of the same user join a listening port, and the
/// kernel would split new connections between two brokers. Kafka binds its port
/// exclusively; so a socket without SO_REUSEPORT tries the address first: it cannot
/// bind while anything listens there (SO_REUSEADDR only lets it past connections in
/// TIME_WAIT), and it is closed before the shards' listeners bind.
fn refuse_if_taken(addr: SocketAddr) -> Result<(), String> {
    let probe = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .map_err(|e| format!("socket: {e}"))?;
    probe.set_reuseaddr(true).map_err(|e| e.to_string())?;
    probe.bind(addr).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            format!("cannot listen on {addr}: another process (another broker?) is listening there")
        } else {
            format!("cannot listen on {addr}: {e}")
        }
    })?;
    Ok(())
}

fn run_shard(
    id: usize,
    cluster: Arc<Cluster>,
    listener: StdListener,
    mut inbox: mpsc::Receiver<ShardCall>,
    ready: std::sync::mpsc::Sender<Result<(), String>>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(format!("shard {id}: runtime: {e}")));
            return;
        }
    };
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let shard = Rc::new(Shard::new(id, cluster.clone()));
        let metadata = cluster.controller.metadata();
        let revision = metadata.revision;
        // Applying starts loading the groups of the offsets partitions this broker leads.
        if let Err(e) = shard.apply_metadata(metadata) {
            let _ = ready.send(Err(format!("shard {id}: cannot open partitions: {e}")));
            return;
        }
        if let Some(applied) = cluster.applied.get(id) {
            applied.send_replace(Applied {
                revision,
                failure: None,
            });
        }
        // Storage runs until the connections have drained, so their last appends and
        // reads complete.
        let (storage_stop, storage_stopped) = tokio::sync::oneshot::channel::<()>();
        let storage = tokio::task::spawn_local(shard.logs.clone().run(async move {
            let _ = storage_stopped.await;
        }));
        // The groups this shard coordinates are loaded before it takes requests.
        while shard.coordinators_loading() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let listener = match TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => {
                let _ = ready.send(Err(format!("shard {id}: listener: {e}")));
                return;
            }
        };
        tokio::task::spawn_local(shard.clone().follow_metadata());
        tokio::task::spawn_local(crate::replication::maintain_isr(shard.clone()));
        let ticking = shard.clone();
        tokio::task::spawn_local(async move {
            let mut tick = tokio::time::interval(TICK);
            loop {
                tick.tick().await;
                ticking.tick_coordinators();
            }
        });
        let retaining = shard.clone();
        tokio::task::spawn_local(async move {
            let period = Duration::from_millis(retaining.config().log_retention_check_interval_ms);
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                retaining.apply_retention();
            }
        });
        let cleaning = shard.clone();
        tokio::task::spawn_local(async move {
            let period = Duration::from_millis(cleaning.config().log_cleaner_backoff_ms);
            loop {
                tokio::time::sleep(period).await;
                cleaning.clean_compacted().await;
            }
        });
        let serving = shard.clone();
        tokio::task::spawn_local(async move {
            while let Some(call) = inbox.recv().await {
                tokio::task::spawn_local(serving.clone().serve(call));
            }
        });
        let _ = ready.send(Ok(()));
        let mut connections = JoinSet::new();
        let mut shutdown = cluster.shutdown.clone();
        let mut accept_failures = 0u32;
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        if accept_failures > 0 {
                            tracing::info!(shard = id, failures = accept_failures, "accepting again");
                            accept_failures = 0;
                        }
                        let slot = match cluster.limits.admit(peer.ip()) {
                            Ok(slot) => slot,
                            Err(refusal) => {
                                // Closed before a byte is read, as Kafka does.
                                shard.metrics.borrow_mut().count_refused(refusal);
                                connection::note_refused(peer, refusal);
                                drop(stream);
                                continue;
                            }
                        };
                        shard.metrics.borrow_mut().connections_accepted += 1;
                        let serving = shard.clone();
                        connections.spawn_local(async move {
                            let _slot = slot;
                            connection::serve(serving.clone(), stream, peer).await;
                            serving.metrics.borrow_mut().connections_closed += 1;
                        });
                        // max.connection.creation.rate: the acceptor waits for its turn.
                        let wait = cluster.limits.creation_delay();
                        if !wait.is_zero() {
                            shard.metrics.borrow_mut().connections_throttled += 1;
                            tokio::time::sleep(wait).await;
                        }
                    }
                    Err(e) => {
                        // Out of descriptors (or memory) most likely: existing
                        // connections go on; accepting backs off, doubling up to 1 s
                        // while it keeps failing, and the log says so once a
                        // stretch rather than once an attempt.
                        shard.metrics.borrow_mut().accept_errors += 1;
                        if accept_failures == 0 {
                            tracing::warn!(shard = id, "accept failed, backing off: {e}");
                        }
                        accept_failures += 1;
                        let pause = Duration::from_millis(10u64 << accept_failures.min(7));
                        tokio::time::sleep(pause).await;
                        continue;
                    }
                },
                Some(_) = connections.join_next() => {}
                _ = shutdown.changed() => break,
            }
        }
        drop(listener);
        let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
            while connections.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                shard = id,
                "connections still busy after {DRAIN_TIMEOUT:?}; closing them"
            );
        }
        let _ = storage_stop.send(());
        let _ = storage.await;
        shard.logs.flush_all();
        for p in shard.partitions.borrow_mut().values_mut() {
            let _ = p.checkpoint_high_watermark();
        }
    });
}

/// The controller backend: the embedded local one, or etcd for a cluster (this broker
/// registers there; a node id another live broker holds is refused).
fn open_controller(
    config: &BrokerConfig,
    me: BrokerInfo,
    previous_incarnation: Option<Uuid>,
) -> Result<Arc<dyn Controller>, String> {
    if config.controller == "local" {
        let local = LocalController::open(&config.data_dir, me).map_err(|e| format!("metadata: {e}"))?;
        return Ok(Arc::new(local));
    }
    let (endpoints, prefix) = EtcdConfig::parse_url(&config.controller)?;
    let etcd = EtcdController::connect(EtcdConfig {
        endpoints,
        prefix,
        me,
        previous_incarnation,
        session_timeout: Duration::from_millis(config.broker_session_timeout_ms),
        auto_leader_rebalance: config.auto_leader_rebalance_enable,
    })
    .map_err(|e| format!("cannot join the cluster through {}: {e}", config.controller))?;
    tracing::info!(controller = %config.controller, node = config.node_id, "registered with etcd");
    Ok(Arc::new(etcd))
}

/// Leaves the cluster cleanly (drops this broker's registration at once).
fn shutdown_controller(controller: &dyn Controller) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
        return;
    };
    if let Err(e) = rt.block_on(controller.shutdown()) {
        tracing::warn!("cannot leave the cluster cleanly: {e}");
    }
}

/// Creates `__consumer_offsets` on first start; returns its partition count, which
/// places every group and so must never change afterwards.
fn ensure_offsets_topic(controller: &dyn Controller, config: &BrokerConfig) -> Result<i32, String> {
    let topic_name = GroupCoordinator::TOPIC;
    if let Some(topic) = controller.metadata().topic(topic_name) {
        return Ok(topic.partitions);
    }
    // Start-up is not on a shard yet: a runtime of its own waits for the controller.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let created = rt
        // The local controller's one broker holds the only replica.
        .block_on(controller.create_topic(sluice_controller::NewTopic {
            replication_factor: 1,
            ..crate::group::offsets_topic(config)
        }))
        .map_err(|e| format!("cannot create {topic_name}: {e}"))?;
    Ok(created.value.partitions)
}

/// The storage engine: io_uring when asked for or when `auto` finds it usable, else
/// positional I/O. Which one runs, and why, is logged.
fn choose_io_engine(wanted: &str) -> Result<Engine, String> {
    let probe = sluice_storage::io::uring::Uring::probe();
    match (wanted, probe) {
        ("pwrite", _) => {
            tracing::info!("storage engine: pwrite (as configured)");
            Ok(Engine::Pwrite)
        }
        (_, Ok(())) => {
            tracing::info!("storage engine: io_uring");
            Ok(Engine::IoUring)
        }
        ("io_uring", Err(e)) => Err(format!("--io-engine io_uring: io_uring is unavailable here: {e}")),
        (_, Err(e)) => {
            tracing::warn!("storage engine: pwrite (io_uring is unavailable here: {e})");
            Ok(Engine::Pwrite)
        }
    }
}

/// Direct I/O when asked for (the default) and the data directory's filesystem takes
/// it; buffered otherwise. Which mode runs, and why, is logged.
fn choose_io_options(config: &BrokerConfig) -> sluice_storage::io::IoOptions {
    let buffered = sluice_storage::io::IoOptions::default();
    if !config.io_direct {
        tracing::info!("log files: buffered I/O (as configured)");
        return buffered;
    }
    match sluice_storage::io::direct::probe(&config.data_dir) {
        Ok(()) => {
            let per_shard = (config.log_cache_bytes / config.shards.max(1) as u64) as usize;
            tracing::info!(
                cache_bytes = config.log_cache_bytes,
                "log files: direct I/O (O_DIRECT), {} MiB chunk cache per shard",
                per_shard >> 20
            );
            sluice_storage::io::IoOptions {
                direct_cache_bytes: Some(per_shard),
                ..buffered
            }
        }
        Err(e) => {
            tracing::warn!(
                data_dir = %config.data_dir.display(),
                "log files: buffered I/O (the data directory's filesystem refuses O_DIRECT: {e})"
            );
            buffered
        }
    }
}

fn group_config(config: &BrokerConfig) -> crate::group::GroupConfig {
    crate::group::GroupConfig {
        initial_rebalance_delay: Duration::from_millis(config.group_initial_rebalance_delay_ms),
        session_timeout_ms_min: config.group_min_session_timeout_ms,
        session_timeout_ms_max: config.group_max_session_timeout_ms,
        size_max: config.group_max_size,
        offsets_retention_ms: config.offsets_retention_minutes.saturating_mul(60_000),
        consumer: crate::group::consumer::ConsumerSettings {
            session_timeout_ms: config.group_consumer_session_timeout_ms as i64,
            size_max: config.group_consumer_max_size,
        },
        consumer_heartbeat_interval_ms: config.group_consumer_heartbeat_interval_ms,
    }
}

/// Partition directories whose topic no longer exists (a delete interrupted by a crash),
/// or whose replica was moved off this broker, are removed at start-up, as Kafka does
/// with its `-delete` directories.
fn remove_orphan_partitions(data_dir: &Path, metadata: &ClusterMetadata, node_id: i32) {
    let Ok(entries) = std::fs::read_dir(data_dir) else {
        return;
    };
    for entry in entries.flatten() {
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let name = entry.file_name().to_string_lossy().to_string();
        let Some((topic, partition)) = name.rsplit_once('-') else {
            continue;
        };
        let Ok(partition) = partition.parse::<i32>() else {
            continue;
        };
        let kept = metadata.topic(topic).is_some_and(|t| {
            partition < t.partitions
                && t.partition(partition)
                    .is_none_or(|s| s.partition_epoch < 0 || s.replicas.contains(&node_id))
        });
        if kept {
            continue;
        }
        tracing::warn!(dir = %entry.path().display(), "removing data of a deleted partition");
        if let Err(e) = std::fs::remove_dir_all(entry.path()) {
            tracing::error!(dir = %entry.path().display(), "cannot remove: {e}");
        }
    }
}
