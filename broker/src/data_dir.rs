//! The data directory's identity (Kafka's `meta.properties`): which node and cluster it
//! belongs to, and the incarnation of the last broker process that ran on it. A lock
//! file keeps two processes off one directory.
//!
//! The node id and cluster id checks are Kafka's: a directory written by node 2, or by
//! another cluster, is refused rather than served under a wrong identity. The
//! incarnation lets a restarted broker (same directory, new process) take over its own
//! registration in etcd before the dead process's session has expired, while a second
//! process that merely claims the same node id is refused.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use uuid::Uuid;

const FILE_NAME: &str = "meta.properties";
const LOCK_NAME: &str = ".lock";

/// The identity a previous run left in the directory.
#[derive(Debug, Default)]
pub struct Identity {
    pub node_id: Option<i32>,
    pub cluster_id: Option<String>,
    pub incarnation: Option<Uuid>,
}

/// The locked data directory; the lock holds while this lives.
pub struct DataDir {
    path: PathBuf,
    _lock: File,
}

impl DataDir {
    /// Creates and locks the directory; refused when another process holds it.
    pub fn lock(path: &Path) -> Result<DataDir, String> {
        fs::create_dir_all(path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        let lock_path = path.join(LOCK_NAME);
        let lock = File::create(&lock_path).map_err(|e| format!("{}: {e}", lock_path.display()))?;
        lock.try_lock().map_err(|_| {
            format!(
                "{} is in use by another sluice process (one data directory per broker)",
                path.display()
            )
        })?;
        Ok(DataDir {
            path: path.to_path_buf(),
            _lock: lock,
        })
    }

    /// What the previous run recorded; refused when it was another node.
    pub fn identity(&self, node_id: i32) -> Result<Identity, String> {
        let file = self.path.join(FILE_NAME);
        let text = match fs::read_to_string(&file) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Identity::default()),
            Err(e) => return Err(format!("{}: {e}", file.display())),
        };
        let props: BTreeMap<&str, &str> = text
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim(), v.trim()))
            .collect();
        let identity = Identity {
            node_id: props.get("node.id").and_then(|v| v.parse().ok()),
            cluster_id: props.get("cluster.id").map(|v| v.to_string()),
            incarnation: props.get("sluice.incarnation").and_then(|v| v.parse().ok()),
        };
        if let Some(recorded) = identity.node_id.filter(|&id| id != node_id) {
            return Err(format!(
                "{} belongs to node {recorded}, not node {node_id} (--node-id); give each broker its own data directory",
                self.path.display()
            ));
        }
        Ok(identity)
    }

    /// Records this run's identity (fsynced, replaced atomically).
    pub fn record(&self, node_id: i32, cluster_id: Option<&str>, incarnation: Uuid) -> Result<(), String> {
        let mut text =
            format!("# sluice broker identity\nversion=1\nnode.id={node_id}\nsluice.incarnation={incarnation}\n");
        if let Some(id) = cluster_id {
            text.push_str(&format!("cluster.id={id}\n"));
        }
        let file = self.path.join(FILE_NAME);
        let tmp = self.path.join("meta.properties.tmp");
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            fs::rename(&tmp, &file)?;
            File::open(&self.path)?.sync_all()
        };
        write().map_err(|e| format!("{}: {e}", file.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_survives_and_guards_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::lock(dir.path()).unwrap();
        assert!(DataDir::lock(dir.path()).is_err(), "a second process is refused");
        assert!(data.identity(1).unwrap().node_id.is_none());
        let incarnation = Uuid::new_v4();
        data.record(1, Some("abc"), incarnation).unwrap();
        let seen = data.identity(1).unwrap();
        assert_eq!((seen.node_id, seen.cluster_id.as_deref()), (Some(1), Some("abc")));
        assert_eq!(seen.incarnation, Some(incarnation));
        assert!(data.identity(2).is_err(), "another node's directory is refused");
        drop(data);
        assert!(DataDir::lock(dir.path()).is_ok(), "the lock goes with the process");
    }
}
