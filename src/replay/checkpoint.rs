//! The replay checkpoint: which windows are fully published. Written
//! atomically (temp file, fsync, rename) after every completed window, so a
//! rerun of the same command skips them. The file is read and written on a
//! blocking thread: an fsync must not hold up a runtime thread.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("cannot read checkpoint {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("checkpoint {path} is not valid: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("checkpoint {path} belongs to another replay (filter or sources differ); use a new --checkpoint file")]
    Mismatch { path: PathBuf },
    #[error("cannot write checkpoint {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct CheckpointFile {
    version: u32,
    /// Identifies the replay's filter; windows of another filter do not count.
    fingerprint: String,
    completed: BTreeSet<String>,
}

/// Completed windows, keyed `tenant/source/from_ms/to_ms`.
pub struct Checkpoint {
    path: Option<PathBuf>,
    file: CheckpointFile,
}

impl Checkpoint {
    /// A checkpoint that remembers nothing (no `--checkpoint`).
    pub fn none() -> Self {
        Checkpoint {
            path: None,
            file: CheckpointFile::default(),
        }
    }

    /// Opens or creates the checkpoint at `path` for a replay with `fingerprint`.
    pub fn open(path: &Path, fingerprint: &str) -> Result<Self, CheckpointError> {
        let file = match std::fs::read_to_string(path) {
            Ok(text) => {
                let file: CheckpointFile =
                    serde_json::from_str(&text).map_err(|e| CheckpointError::Invalid {
                        path: path.into(),
                        message: e.to_string(),
                    })?;
                if file.fingerprint != fingerprint {
                    return Err(CheckpointError::Mismatch { path: path.into() });
                }
                file
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => CheckpointFile {
                version: 1,
                fingerprint: fingerprint.into(),
                completed: BTreeSet::new(),
            },
            Err(source) => {
                return Err(CheckpointError::Read {
                    path: path.into(),
                    source,
                })
            }
        };
        Ok(Checkpoint {
            path: Some(path.into()),
            file,
        })
    }

    /// [`Checkpoint::open`] on a blocking thread.
    pub async fn open_off_runtime(
        path: PathBuf,
        fingerprint: String,
    ) -> Result<Self, CheckpointError> {
        let at = path.clone();
        tokio::task::spawn_blocking(move || Checkpoint::open(&path, &fingerprint))
            .await
            .unwrap_or_else(|e| {
                Err(CheckpointError::Read {
                    path: at,
                    source: std::io::Error::other(e.to_string()),
                })
            })
    }

    pub fn is_done(&self, key: &str) -> bool {
        self.file.completed.contains(key)
    }

    pub fn completed(&self) -> usize {
        self.file.completed.len()
    }

    /// Records a completed window and persists it atomically.
    pub async fn mark_done(&mut self, key: String) -> Result<(), CheckpointError> {
        self.file.completed.insert(key);
        let Some(path) = &self.path else {
            return Ok(());
        };
        let text = serde_json::to_string(&self.file).unwrap_or_default();
        let target = path.clone();
        tokio::task::spawn_blocking(move || replace_atomically(&target, text.as_bytes()))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())))
            .map_err(|source| CheckpointError::Write {
                path: path.clone(),
                source,
            })
    }
}

/// Writes `bytes` to a temporary file beside `path`, syncs it and renames
/// it over `path`: a crash leaves the old file or the new one, never half.
fn replace_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn survives_reopen_and_rejects_other_replays() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp.json");
        let mut cp = Checkpoint::open_off_runtime(path.clone(), "f1".into())
            .await
            .unwrap();
        cp.mark_done("t/calls/0/1".into()).await.unwrap();
        let cp = Checkpoint::open(&path, "f1").unwrap();
        assert!(cp.is_done("t/calls/0/1"));
        assert!(!cp.is_done("t/calls/1/2"));
        assert!(matches!(
            Checkpoint::open(&path, "f2"),
            Err(CheckpointError::Mismatch { .. })
        ));
        std::fs::write(&path, "{not json").unwrap();
        assert!(matches!(
            Checkpoint::open(&path, "f1"),
            Err(CheckpointError::Invalid { .. })
        ));
    }
}
