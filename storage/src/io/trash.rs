//! Files waiting to be unlinked, removed by one background thread for the whole
//! process (see [`super::Io::remove_file_later`]). Unlinking never races a reader: the
//! log has forgotten the file before it comes here, and a read still holding its
//! descriptor keeps the data until it closes it, as POSIX promises.

use std::path::PathBuf;
use std::sync::mpsc::{self, Sender};
use std::sync::OnceLock;

static TRASH: OnceLock<Option<Sender<PathBuf>>> = OnceLock::new();

fn start() -> Option<Sender<PathBuf>> {
    let (tx, rx) = mpsc::channel::<PathBuf>();
    let spawned = std::thread::Builder::new().name("sluice-trash".into()).spawn(move || {
        for path in rx {
            if let Err(e) = super::remove_file_if_present(&path) {
                tracing::warn!(path = %path.display(), "cannot remove a deleted segment file: {e}");
            }
        }
    });
    match spawned {
        Ok(_) => Some(tx),
        Err(e) => {
            tracing::warn!("cannot start the file-removal thread ({e}); files are removed inline");
            None
        }
    }
}

/// Queues `path` for removal; removes it at once if the thread could not start.
pub(crate) fn remove_later(path: PathBuf) {
    match TRASH.get_or_init(start) {
        Some(tx) => {
            if let Err(mpsc::SendError(path)) = tx.send(path) {
                let _ = super::remove_file_if_present(&path);
            }
        }
        None => {
            let _ = super::remove_file_if_present(&path);
        }
    }
}
