//! The replay checkpoint: which windows are fully published. Written
//! atomically (temp file, fsync, rename) after every completed window, so a
//! rerun of the same command skips them.

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

    pub fn is_done(&self, key: &str) -> bool {
        self.file.completed.contains(key)
    }

    pub fn completed(&self) -> usize {
        self.file.completed.len()
    }

    /// Records a completed window and persists it atomically.
    pub fn mark_done(&mut self, key: String) -> Result<(), CheckpointError> {
        self.file.completed.insert(key);
        let Some(path) = &self.path else {
            return Ok(());
        };
        let tmp = path.with_extension("tmp");
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(
                serde_json::to_string(&self.file)
                    .unwrap_or_default()
                    .as_bytes(),
            )?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)?;
            Ok(())
        };
        write().map_err(|source| CheckpointError::Write {
            path: path.clone(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_reopen_and_rejects_other_replays() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp.json");
        let mut cp = Checkpoint::open(&path, "f1").unwrap();
        cp.mark_done("t/calls/0/1".into()).unwrap();
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
