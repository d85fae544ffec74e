//! Start-up and shutdown: open the controller (today the embedded local one; the etcd
//! backend plugs in here through the same `Controller` trait), bind one SO_REUSEPORT
//! listener per shard on the same port, start the pinned shard threads, and stop them
//! cleanly.

use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use sluice_controller::{ClusterMetadata, Controller, LocalController};
use sluice_storage::Engine;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::config::BrokerConfig;
use crate::connection;
use crate::coordinator::{Coordinator, TICK};
use crate::group::coordinator::GroupCoordinator;
use crate::shard::{Applied, Cluster, Shard, ShardCall, INBOX_DEPTH};

/// How long shutdown waits for connections to finish their in-flight requests.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

pub fn run(config: BrokerConfig) -> Result<(), String> {
    let controller = open_controller(&config)?;
    let offsets_partitions = ensure_offsets_topic(controller.as_ref(), &config)?;
    remove_orphan_partitions(&config.data_dir, &controller.metadata());
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
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (peers, inboxes): (Vec<_>, Vec<_>) = (0..config.shards)
        .map(|_| mpsc::channel::<ShardCall>(INBOX_DEPTH))
        .unzip();
    let shards = config.shards;
    let config_for_groups = config.clone();
    let cluster = Arc::new(Cluster {
        config,
        controller,
        advertised: advertised.clone(),
        peers,
        shutdown: shutdown_rx,
        offsets_partitions,
        groups: group_config(&config_for_groups),
        engine: choose_io_engine(&config_for_groups.io_engine)?,
        applied: (0..shards).map(|_| watch::channel(Applied::default()).0).collect(),
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
        if let Err(e) = shard.load_coordinators().await {
            let _ = ready.send(Err(format!("shard {id}: cannot load {}: {e}", GroupCoordinator::TOPIC)));
            return;
        }
        let listener = match TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => {
                let _ = ready.send(Err(format!("shard {id}: listener: {e}")));
                return;
            }
        };
        tokio::task::spawn_local(shard.clone().follow_metadata());
        let ticking = shard.clone();
        tokio::task::spawn_local(async move {
            let mut tick = tokio::time::interval(TICK);
            loop {
                tick.tick().await;
                ticking.tick_coordinators();
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
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        shard.metrics.borrow_mut().connections_accepted += 1;
                        let serving = shard.clone();
                        connections.spawn_local(async move {
                            connection::serve(serving.clone(), stream, peer).await;
                            serving.metrics.borrow_mut().connections_closed += 1;
                        });
                    }
                    Err(e) => {
                        tracing::warn!(shard = id, "accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(10)).await;
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
    });
}

/// The controller backend: the embedded local one (the etcd backend of cluster mode
/// comes through the same trait).
fn open_controller(config: &BrokerConfig) -> Result<Arc<dyn Controller>, String> {
    let local = LocalController::open(&config.data_dir).map_err(|e| format!("metadata: {e}"))?;
    Ok(Arc::new(local))
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
        .block_on(controller.create_topic(sluice_controller::NewTopic {
            name: topic_name.to_string(),
            partitions: config.offsets_topic_num_partitions,
            replication_factor: 1,
            configs: [("cleanup.policy".to_string(), "compact".to_string())].into(),
            internal: true,
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

fn group_config(config: &BrokerConfig) -> crate::group::GroupConfig {
    crate::group::GroupConfig {
        initial_rebalance_delay: Duration::from_millis(config.group_initial_rebalance_delay_ms),
        session_timeout_ms_min: config.group_min_session_timeout_ms,
        session_timeout_ms_max: config.group_max_session_timeout_ms,
        size_max: config.group_max_size,
        offsets_retention_ms: config.offsets_retention_minutes.saturating_mul(60_000),
    }
}

/// Partition directories whose topic no longer exists (a delete interrupted by a crash)
/// are removed at start-up, as Kafka does with its `-delete` directories.
fn remove_orphan_partitions(data_dir: &Path, metadata: &ClusterMetadata) {
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
        if metadata.topic(topic).is_some_and(|t| partition < t.partitions) {
            continue;
        }
        tracing::warn!(dir = %entry.path().display(), "removing data of a deleted partition");
        if let Err(e) = std::fs::remove_dir_all(entry.path()) {
            tracing::error!(dir = %entry.path().display(), "cannot remove: {e}");
        }
    }
}
