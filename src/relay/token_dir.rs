//! Tenants from a directory of token files: a mounted Kubernetes Secret
//! with one key per Telavox account, so one Secret holds them all. A file's
//! name is the tenant's name, its content the token. The directory is read
//! every `token_dir.poll_interval`; a file added, changed or removed
//! becomes a [`TenantChange`] for [`super::tenants`].
//!
//! Polling rather than file-system events: a Secret volume is updated by
//! swapping a symlink (`..data`), which inotify reports on the directory's
//! hidden entries, not on the files; a read every few seconds sees every
//! update the same way, on every file system.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Secret};
use crate::model::DataSource;
use crate::ops::internal_events::{TokenDirReadFailed, TokenFileSkipped};
use crate::ops::Metrics;
use crate::relay::tenants::{TenantChange, TenantSpec};

/// What one reading found: tenant name → token.
pub type Tokens = BTreeMap<String, Secret>;

/// A file that cannot be a tenant, and why: `bad_name` (not letters,
/// digits, `-`, `_`), `reserved` (the config file has a tenant of this
/// name), `not_a_file`, `unreadable`, `empty`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Skipped {
    pub file: String,
    pub reason: &'static str,
}

/// The token directory of `token_dir.path`.
pub struct TokenDir {
    path: PathBuf,
    poll_interval: Duration,
    /// The sources its tenants relay (`upstream.sources`).
    sources: Vec<DataSource>,
    /// Tenant names the config file has: a file of the same name is skipped.
    reserved: BTreeSet<String>,
}

impl TokenDir {
    /// None when `token_dir.path` is empty.
    pub fn from_config(config: &Config) -> Option<TokenDir> {
        let dir = &config.token_dir;
        (!dir.path.trim().is_empty()).then(|| TokenDir {
            path: PathBuf::from(dir.path.trim()),
            poll_interval: dir.poll_interval,
            sources: config.upstream.sources.clone(),
            reserved: config.tenants.iter().map(|t| t.name.clone()).collect(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the directory (blocking file I/O: call it off the runtime
    /// threads once running).
    pub fn read(&self) -> std::io::Result<(Tokens, Vec<Skipped>)> {
        let mut tokens = Tokens::new();
        let mut skipped = Vec::new();
        for entry in std::fs::read_dir(&self.path)? {
            let entry = entry?;
            let file = entry.file_name().to_string_lossy().into_owned();
            // Kubernetes' own entries (`..data`, `..2026_…`) and dot files.
            if file.starts_with('.') {
                continue;
            }
            match self.token_of(&entry.path(), &file) {
                Ok(token) => {
                    tokens.insert(file, token);
                }
                Err(reason) => skipped.push(Skipped { file, reason }),
            }
        }
        skipped.sort();
        Ok((tokens, skipped))
    }

    fn token_of(&self, path: &Path, file: &str) -> Result<Secret, &'static str> {
        if !is_tenant_name(file) {
            return Err("bad_name");
        }
        if self.reserved.contains(file) {
            return Err("reserved");
        }
        // Follows the Secret volume's symlinks; a directory is not a token.
        let metadata = std::fs::metadata(path).map_err(|_| "unreadable")?;
        if !metadata.is_file() {
            return Err("not_a_file");
        }
        let text = std::fs::read_to_string(path).map_err(|_| "unreadable")?;
        let token = text.trim();
        if token.is_empty() {
            return Err("empty");
        }
        Ok(Secret::new(token))
    }

    /// The tenants `tokens` stands for.
    pub fn specs(&self, tokens: &Tokens) -> Vec<TenantSpec> {
        tokens
            .iter()
            .map(|(name, token)| self.spec(name, token))
            .collect()
    }

    fn spec(&self, name: &str, token: &Secret) -> TenantSpec {
        TenantSpec {
            name: Arc::from(name),
            token: token.clone(),
            sources: self.sources.clone(),
        }
    }

    /// Reads the directory every poll interval until `stop`, and sends what
    /// changed since `known` (the reading the relay started with, whose
    /// skipped files were reported). A directory that cannot be read
    /// changes nothing: the tenants keep running until it can be read again.
    pub async fn watch(
        self,
        (mut known, skipped): (Tokens, Vec<Skipped>),
        changes: mpsc::Sender<TenantChange>,
        metrics: Arc<Metrics>,
        stop: CancellationToken,
    ) {
        let dir = Arc::new(self);
        let mut reported = Reported {
            read_failing: false,
            skipped,
        };
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(dir.poll_interval) => {}
            }
            let reading = {
                let dir = dir.clone();
                tokio::task::spawn_blocking(move || dir.read()).await
            };
            let (tokens, skipped) = match reading {
                Ok(Ok(read)) => read,
                Ok(Err(e)) => {
                    reported.read_failed(&dir.path, &e, &metrics);
                    continue;
                }
                // The runtime is going away.
                Err(_) => return,
            };
            reported.read_ok();
            reported.skipped(skipped, &metrics);
            for change in diff(&known, &tokens) {
                let change = match change {
                    (name, Some(token)) => TenantChange::Upsert(dir.spec(&name, &token)),
                    (name, None) => TenantChange::Remove(Arc::from(name.as_str())),
                };
                if changes.send(change).await.is_err() {
                    return;
                }
            }
            known = tokens;
        }
    }
}

/// What changed from `before` to `after`: each tenant added or whose token
/// changed with its token, each tenant removed with None; in name order.
pub fn diff(before: &Tokens, after: &Tokens) -> Vec<(String, Option<Secret>)> {
    let upserts = after
        .iter()
        .filter(|(name, token)| before.get(*name) != Some(token))
        .map(|(name, token)| (name.clone(), Some(token.clone())));
    let removals = before
        .keys()
        .filter(|name| !after.contains_key(*name))
        .map(|name| (name.clone(), None));
    let mut out: Vec<_> = upserts.chain(removals).collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The same rule as `tenants[].name` in the config file.
fn is_tenant_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// What has been reported, so that a bad file or an unreadable directory
/// is logged once, not at every poll.
#[derive(Default)]
struct Reported {
    read_failing: bool,
    skipped: Vec<Skipped>,
}

impl Reported {
    fn read_failed(&mut self, path: &Path, e: &std::io::Error, metrics: &Metrics) {
        if !std::mem::replace(&mut self.read_failing, true) {
            TokenDirReadFailed {
                path: &path.display().to_string(),
                error: &e.to_string(),
            }
            .emit(metrics);
        }
    }

    fn read_ok(&mut self) {
        self.read_failing = false;
    }

    fn skipped(&mut self, now: Vec<Skipped>, metrics: &Metrics) {
        for s in now.iter().filter(|s| !self.skipped.contains(s)) {
            TokenFileSkipped {
                file: &s.file,
                reason: s.reason,
            }
            .emit(metrics);
        }
        self.skipped = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(pairs: &[(&str, &str)]) -> Tokens {
        pairs
            .iter()
            .map(|(n, t)| (n.to_string(), Secret::new(*t)))
            .collect()
    }

    #[test]
    fn a_file_added_changed_or_removed_is_a_change_and_nothing_else_is() {
        let before = tokens(&[("acme", "a1"), ("globex", "g1"), ("initech", "i1")]);
        let after = tokens(&[("acme", "a1"), ("globex", "g2"), ("umbrella", "u1")]);
        let changes: Vec<_> = diff(&before, &after)
            .into_iter()
            .map(|(n, t)| (n, t.map(|t| t.expose().to_string())))
            .collect();
        assert_eq!(
            changes,
            [
                ("globex".to_string(), Some("g2".to_string())),
                ("initech".to_string(), None),
                ("umbrella".to_string(), Some("u1".to_string())),
            ]
        );
        assert!(diff(&after, &after).is_empty());
    }

    #[test]
    fn a_secret_volume_is_read_through_its_symlinks_and_bad_files_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        // A Secret volume: the keys are symlinks into `..data`.
        let data = dir.path().join("..2026_12_06_10_00_00.1");
        std::fs::create_dir(&data).unwrap();
        std::fs::write(data.join("acme"), "tok-acme\n").unwrap();
        std::fs::write(data.join("empty"), "  \n").unwrap();
        std::os::unix::fs::symlink(&data, dir.path().join("..data")).unwrap();
        for key in ["acme", "empty"] {
            std::os::unix::fs::symlink(Path::new("..data").join(key), dir.path().join(key))
                .unwrap();
        }
        std::fs::write(dir.path().join("bad name"), "tok").unwrap();
        std::fs::write(dir.path().join("reserved"), "tok").unwrap();
        let token_dir = TokenDir {
            path: dir.path().to_path_buf(),
            poll_interval: Duration::from_secs(1),
            sources: vec![DataSource::Calls],
            reserved: BTreeSet::from(["reserved".to_string()]),
        };

        let (found, skipped) = token_dir.read().unwrap();
        assert_eq!(found, tokens(&[("acme", "tok-acme")]));
        let skipped: Vec<_> = skipped.iter().map(|s| s.file.as_str()).collect();
        assert_eq!(skipped, ["bad name", "empty", "reserved"]);
        let specs = token_dir.specs(&found);
        assert_eq!(&*specs[0].name, "acme");
        assert_eq!(specs[0].sources, [DataSource::Calls]);
    }
}
