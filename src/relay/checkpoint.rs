//! Restart checkpoints: per tenant, the upstream time up to which every live
//! record the relay received has been acknowledged by the broker (or
//! dead-lettered). On start, the relay treats the time since the checkpoint
//! as a gap of every socket and backfills it (see `backfill.rs`), so a crash,
//! a SIGKILL or an eviction loses nothing that GraphQL still has.
//!
//! How the time is known to be safe: the processor groups live messages into
//! epochs of a few seconds, each with a [`BatchTracker`]. When an epoch
//! closes it carries the upstream clock at that moment; the writer waits for
//! the epochs in order, and only once an epoch and all before it are settled
//! does its clock become the checkpoint. The file is replaced atomically
//! (write, fsync, rename).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::BatchTracker;

/// One closed epoch: settled when `tracker` is; then `clocks` hold.
pub struct Epoch {
    pub tracker: Arc<BatchTracker>,
    pub clocks: Vec<(Arc<str>, i64)>,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("relay.checkpoint_file {path}: {message}")]
    Io { path: PathBuf, message: String },
}

/// The checkpoint file: `{"tenants": {"<name>": <epoch ms>}}`.
#[derive(Debug, Clone)]
pub struct CheckpointFile {
    path: PathBuf,
}

impl CheckpointFile {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        CheckpointFile { path: path.into() }
    }

    fn err(&self, e: impl std::fmt::Display) -> CheckpointError {
        CheckpointError::Io {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    /// The stored times; empty when the file does not exist yet.
    pub fn load(&self) -> Result<BTreeMap<String, i64>, CheckpointError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
            Err(e) => return Err(self.err(e)),
        };
        #[derive(serde::Deserialize)]
        struct File {
            tenants: BTreeMap<String, i64>,
        }
        serde_json::from_str::<File>(&text)
            .map(|f| f.tenants)
            .map_err(|e| self.err(format!("not a checkpoint file: {e}")))
    }

    /// Replaces the file atomically.
    pub fn save(&self, tenants: &BTreeMap<String, i64>) -> Result<(), CheckpointError> {
        use std::io::Write;
        let tmp = self.path.with_extension("tmp");
        let body = serde_json::json!({ "tenants": tenants }).to_string();
        let mut f = std::fs::File::create(&tmp).map_err(|e| self.err(e))?;
        f.write_all(body.as_bytes()).map_err(|e| self.err(e))?;
        f.sync_all().map_err(|e| self.err(e))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| self.err(e))
    }
}

/// Writes the checkpoint as epochs settle, in order, until the epochs end
/// or `stop` (after the drain: an epoch still unsettled then — its messages
/// left in the spool — must not move the checkpoint).
pub async fn run_writer(
    file: CheckpointFile,
    mut state: BTreeMap<String, i64>,
    mut epochs: mpsc::UnboundedReceiver<Epoch>,
    stop: tokio_util::sync::CancellationToken,
) {
    while let Some(epoch) = epochs.recv().await {
        tokio::select! {
            _ = epoch.tracker.wait() => {}
            _ = stop.cancelled() => return,
        }
        let mut changed = false;
        for (tenant, at) in epoch.clocks {
            let e = state.entry(tenant.to_string()).or_insert(i64::MIN);
            if at > *e {
                *e = at;
                changed = true;
            }
        }
        if changed {
            continue_or_log(file.save(&state));
        }
    }
}

fn continue_or_log(r: Result<(), CheckpointError>) {
    if let Err(e) = r {
        tracing::error!(error = %e, "cannot write the restart checkpoint; a restart will not know what it missed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_a_round_trip_and_a_missing_file_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let f = CheckpointFile::new(dir.path().join("cp.json"));
        assert!(f.load().unwrap().is_empty());
        let state = BTreeMap::from([("acme".to_string(), 1_779_100_000_000)]);
        f.save(&state).unwrap();
        assert_eq!(f.load().unwrap(), state);
        std::fs::write(dir.path().join("cp.json"), "garbage").unwrap();
        assert!(f
            .load()
            .unwrap_err()
            .to_string()
            .contains("checkpoint_file"));
    }

    #[tokio::test]
    async fn advances_only_when_an_epoch_and_all_before_it_settled() {
        let dir = tempfile::tempdir().unwrap();
        let f = CheckpointFile::new(dir.path().join("cp.json"));
        let (tx, rx) = mpsc::unbounded_channel();
        let writer = tokio::spawn(run_writer(
            f.clone(),
            BTreeMap::new(),
            rx,
            tokio_util::sync::CancellationToken::new(),
        ));
        let t: Arc<str> = Arc::from("acme");
        let first = BatchTracker::new();
        first.add(1);
        tx.send(Epoch {
            tracker: first.clone(),
            clocks: vec![(t.clone(), 100)],
        })
        .unwrap();
        tx.send(Epoch {
            tracker: BatchTracker::new(),
            clocks: vec![(t.clone(), 200)],
        })
        .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(
            f.load().unwrap().is_empty(),
            "the first epoch is not settled"
        );
        first.settle(false);
        drop(tx);
        writer.await.unwrap();
        assert_eq!(f.load().unwrap()["acme"], 200);
    }
}
