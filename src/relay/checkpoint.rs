//! Restart checkpoints: per tenant, the upstream time up to which every live
//! record the relay received has been acknowledged by the broker (or
//! dead-lettered). On start, the relay treats the time since the checkpoint
//! as a gap of every socket and backfills it (see `backfill.rs`), so a crash,
//! a SIGKILL or an eviction loses nothing that GraphQL still has. One
//! checkpoint per tenant covers all its sources: each source's resume gap
//! starts there (the earliest any of them may need).
//!
//! How the time is known to be safe: the processor groups live messages into
//! epochs of a few seconds, each with a [`BatchTracker`]. When an epoch
//! closes it carries the upstream clock at that moment; the writer waits for
//! the epochs in order, and only once an epoch and all before it are settled
//! does its clock become the checkpoint.
//!
//! Where it is kept ([`CheckpointStore`], `relay.checkpoint`): by default in
//! the broker itself, a NATS KV bucket or a compacted Kafka topic under
//! `relay.checkpoint_key`, so a pod rescheduled onto another node finds it
//! again; or in a file, replaced atomically (write, fsync, rename). The value
//! is the same JSON document in both:
//! `{"tenants": {"<name>": <upstream ms>}, "seen_at": {"<name>": <relay ms>}}`.
//! `seen_at` is the relay's wall clock when the upstream clock was there: the
//! broker stamps messages with wall-clock time, so after a restart it says
//! where on the broker to look for what was already published (see
//! [`crate::publish::recent_ids::seed_from_broker`]).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::config::{CheckpointMode, Config};
use crate::ops::internal_events::{
    CheckpointDisabled, CheckpointLoadRetried, CheckpointSaveFailed, CheckpointSaveRecovered,
    CheckpointSaved,
};
use crate::ops::Metrics;
use crate::publish::outgoing::BatchTracker;
use crate::sink::{Sink, SinkError, SinkErrorKind, StateStore};

/// A point of the upstream clock, and when (relay wall clock, Unix ms) the
/// relay saw the upstream reach it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockMark {
    /// Upstream time (newest record time seen), Unix ms.
    pub upstream_ms: i64,
    /// The relay's wall clock when it saw that, Unix ms.
    pub seen_at_ms: i64,
}

impl ClockMark {
    /// A mark seen now.
    pub fn now(upstream_ms: i64) -> ClockMark {
        ClockMark {
            upstream_ms,
            seen_at_ms: wall_ms(),
        }
    }
}

/// The relay's wall clock, Unix ms.
pub fn wall_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Per tenant, the checkpoint.
pub type CheckpointState = BTreeMap<String, ClockMark>;

/// One closed epoch: settled when `tracker` is; then `clocks` hold.
pub struct Epoch {
    pub tracker: Arc<BatchTracker>,
    pub clocks: Vec<(Arc<str>, ClockMark)>,
    /// Answered once this epoch and every one before it settled (a
    /// tenant's handover waits on it).
    pub settled: Vec<tokio::sync::oneshot::Sender<()>>,
}

/// What kind of failure: decides whether trying again can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointErrorKind {
    /// Broker unreachable, timeout, disk full: try again.
    Unavailable,
    /// A value is there but is not a checkpoint.
    Corrupt,
    /// Not allowed, or set up wrongly: a human has to act.
    Config,
}

/// A checkpoint that could not be loaded or saved, naming where it lives
/// (the config key and, for the broker, the bucket or topic).
#[derive(Debug, thiserror::Error)]
#[error("{location}: {message}")]
pub struct CheckpointError {
    pub kind: CheckpointErrorKind,
    /// `relay.checkpoint_file /path` or
    /// `relay.checkpoint_key "k" in NATS KV bucket b`.
    pub location: String,
    pub message: String,
}

impl CheckpointError {
    pub fn is_retryable(&self) -> bool {
        self.kind == CheckpointErrorKind::Unavailable
    }

    fn from_sink(location: String, e: SinkError) -> Self {
        CheckpointError {
            kind: match e.kind {
                SinkErrorKind::Unavailable => CheckpointErrorKind::Unavailable,
                SinkErrorKind::Rejected | SinkErrorKind::TooLarge | SinkErrorKind::Config => {
                    CheckpointErrorKind::Config
                }
            },
            location,
            message: e.message,
        }
    }
}

/// The stored document (see the module docs).
#[derive(serde::Serialize, serde::Deserialize)]
struct Document {
    tenants: BTreeMap<String, i64>,
    /// Absent in checkpoints written before it existed: the upstream time
    /// stands in (the same clock in production).
    #[serde(default)]
    seen_at: BTreeMap<String, i64>,
}

/// The checkpoint as stored.
pub fn encode(state: &CheckpointState) -> Vec<u8> {
    let doc = Document {
        tenants: state
            .iter()
            .map(|(t, m)| (t.clone(), m.upstream_ms))
            .collect(),
        seen_at: state
            .iter()
            .map(|(t, m)| (t.clone(), m.seen_at_ms))
            .collect(),
    };
    serde_json::to_vec(&doc).unwrap_or_default()
}

/// A stored checkpoint; the error says what is wrong with it.
pub fn decode(bytes: &[u8]) -> Result<CheckpointState, String> {
    let doc: Document =
        serde_json::from_slice(bytes).map_err(|e| format!("not a checkpoint: {e}"))?;
    Ok(doc
        .tenants
        .into_iter()
        .map(|(t, upstream_ms)| {
            let seen_at_ms = doc.seen_at.get(&t).copied().unwrap_or(upstream_ms);
            (
                t,
                ClockMark {
                    upstream_ms,
                    seen_at_ms,
                },
            )
        })
        .collect())
}

/// The checkpoint file.
#[derive(Debug, Clone)]
pub struct CheckpointFile {
    path: PathBuf,
}

impl CheckpointFile {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        CheckpointFile { path: path.into() }
    }

    fn location(&self) -> String {
        format!("relay.checkpoint_file {}", self.path.display())
    }

    fn err(&self, kind: CheckpointErrorKind, e: impl std::fmt::Display) -> CheckpointError {
        CheckpointError {
            kind,
            location: self.location(),
            message: e.to_string(),
        }
    }

    /// The stored times; empty when the file does not exist yet.
    pub fn load(&self) -> Result<CheckpointState, CheckpointError> {
        let bytes = match std::fs::read(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
            Err(e) => return Err(self.err(CheckpointErrorKind::Unavailable, e)),
        };
        decode(&bytes).map_err(|e| self.err(CheckpointErrorKind::Corrupt, e))
    }

    /// Replaces the file atomically.
    pub fn save(&self, state: &CheckpointState) -> Result<(), CheckpointError> {
        use std::io::Write;
        let io = |e| self.err(CheckpointErrorKind::Unavailable, e);
        let tmp = self.path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(&encode(state)).map_err(io)?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&tmp, &self.path).map_err(io)
    }
}

/// Where the checkpoint lives: a file, or a key in the broker's state store.
#[derive(Clone)]
pub enum CheckpointStore {
    File(CheckpointFile),
    Broker {
        store: Arc<dyn StateStore>,
        key: String,
        /// Each tenant under its own key, `<key>.<tenant>` (`ha.enabled`):
        /// replicas sharing the tenants each write only their own.
        per_tenant: bool,
    },
}

impl std::fmt::Debug for CheckpointStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.location())
    }
}

/// Where one tenant's checkpoint is kept with `per_tenant`.
fn tenant_key(key: &str, tenant: &str) -> String {
    format!("{key}.{tenant}")
}

/// Attempts of a load that fails with a retryable error, at start-up.
const LOAD_ATTEMPTS: usize = 3;

/// A second after the first failure, two after the second.
fn load_retries() -> backon::ExponentialBuilder {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_secs(1))
        .with_max_times(LOAD_ATTEMPTS - 1)
}

impl CheckpointStore {
    /// Where, for logs and errors; names the config key.
    pub fn location(&self) -> String {
        match self {
            CheckpointStore::File(f) => f.location(),
            CheckpointStore::Broker { store, key, .. } => {
                format!("relay.checkpoint_key {key:?} in {}", store.describe())
            }
        }
    }

    /// Low-cardinality backend name for metric labels.
    pub fn backend(&self) -> &'static str {
        match self {
            CheckpointStore::File(_) => "file",
            CheckpointStore::Broker { store, .. } => store.backend(),
        }
    }

    /// The stored checkpoint (empty when there is none yet). A retryable
    /// failure is tried again a few times: a broker that is just starting
    /// should not fail the relay's start-up.
    pub async fn load(&self) -> Result<CheckpointState, CheckpointError> {
        use backon::Retryable;
        let attempt = std::cell::Cell::new(0);
        (|| {
            attempt.set(attempt.get() + 1);
            self.load_once()
        })
        .retry(load_retries())
        .when(CheckpointError::is_retryable)
        .notify(|e, _| {
            CheckpointLoadRetried {
                error: e,
                attempt: attempt.get(),
            }
            .emit()
        })
        .await
    }

    async fn load_once(&self) -> Result<CheckpointState, CheckpointError> {
        match self {
            CheckpointStore::File(f) => {
                let f = f.clone();
                tokio::task::spawn_blocking(move || f.load())
                    .await
                    .map_err(|e| CheckpointError {
                        kind: CheckpointErrorKind::Unavailable,
                        location: self.location(),
                        message: e.to_string(),
                    })?
            }
            CheckpointStore::Broker { store, key, .. } => self.load_key(store, key).await,
        }
    }

    async fn load_key(
        &self,
        store: &Arc<dyn StateStore>,
        key: &str,
    ) -> Result<CheckpointState, CheckpointError> {
        match store.get(key).await {
            Ok(None) => Ok(BTreeMap::new()),
            Ok(Some(bytes)) => decode(&bytes).map_err(|message| CheckpointError {
                kind: CheckpointErrorKind::Corrupt,
                location: self.location(),
                message,
            }),
            Err(e) => Err(CheckpointError::from_sink(self.location(), e)),
        }
    }

    /// One tenant's checkpoint, read when the tenant is taken over from
    /// another replica: its own key, else its entry in the deployment's
    /// shared document (written before the replicas shared the tenants).
    pub async fn load_tenant(&self, tenant: &str) -> Result<Option<ClockMark>, CheckpointError> {
        use backon::Retryable;
        let once = || async {
            match self {
                CheckpointStore::Broker {
                    store,
                    key,
                    per_tenant: true,
                } => {
                    let own = self.load_key(store, &tenant_key(key, tenant)).await?;
                    match own.get(tenant) {
                        Some(m) => Ok(Some(*m)),
                        None => Ok(self.load_key(store, key).await?.get(tenant).copied()),
                    }
                }
                _ => Ok(self.load_once().await?.get(tenant).copied()),
            }
        };
        once.retry(load_retries())
            .when(CheckpointError::is_retryable)
            .await
    }

    /// Stores the checkpoints of `changed` tenants: under their own keys,
    /// or `state` as a whole.
    async fn save_changed(
        &self,
        state: &CheckpointState,
        changed: &std::collections::BTreeSet<String>,
    ) -> Result<(), CheckpointError> {
        let CheckpointStore::Broker {
            store,
            key,
            per_tenant: true,
        } = self
        else {
            return self.save(state).await;
        };
        for tenant in changed {
            let Some(mark) = state.get(tenant) else {
                continue;
            };
            let one: CheckpointState = [(tenant.clone(), *mark)].into();
            store
                .put(&tenant_key(key, tenant), encode(&one).into())
                .await
                .map_err(|e| CheckpointError::from_sink(self.location(), e))?;
        }
        Ok(())
    }

    /// Stores `state`, replacing what was there.
    pub async fn save(&self, state: &CheckpointState) -> Result<(), CheckpointError> {
        match self {
            CheckpointStore::File(f) => {
                let (f, state) = (f.clone(), state.clone());
                tokio::task::spawn_blocking(move || f.save(&state))
                    .await
                    .map_err(|e| CheckpointError {
                        kind: CheckpointErrorKind::Unavailable,
                        location: self.location(),
                        message: e.to_string(),
                    })?
            }
            CheckpointStore::Broker { store, key, .. } => store
                .put(key, encode(state).into())
                .await
                .map_err(|e| CheckpointError::from_sink(self.location(), e)),
        }
    }
}

/// The configured checkpoint store, opened (the bucket or topic created
/// when missing); None when there is to be no checkpoint.
pub async fn open(
    config: &Config,
    sink: &dyn Sink,
    metrics: &Metrics,
) -> Result<Option<CheckpointStore>, CheckpointError> {
    let r = &config.relay;
    if r.checkpoint != CheckpointMode::Off && !r.gap_backfill {
        CheckpointDisabled {
            reason: "relay.gap_backfill is off, so nothing would resume from a checkpoint",
        }
        .emit(metrics);
        return Ok(None);
    }
    match r.checkpoint {
        CheckpointMode::Off => Ok(None),
        CheckpointMode::File => Ok(Some(CheckpointStore::File(CheckpointFile::new(
            &r.checkpoint_file,
        )))),
        CheckpointMode::Broker => match sink.state_store(&r.checkpoint_store).await {
            Ok(Some(store)) => Ok(Some(CheckpointStore::Broker {
                store,
                key: r.checkpoint_key.clone(),
                per_tenant: config.ha.enabled,
            })),
            Ok(None) => {
                CheckpointDisabled {
                    reason: "relay.checkpoint is \"broker\", but this sink has no broker to keep it in (stdout, or core NATS without JetStream)",
                }
                .emit(metrics);
                Ok(None)
            }
            Err(e) => Err(CheckpointError::from_sink(
                format!("relay.checkpoint_store {:?}", r.checkpoint_store),
                e,
            )),
        },
    }
}

/// Writes the checkpoint as epochs settle, in order, until the epochs end
/// or `stop` (after the drain: an epoch still unsettled then — its messages
/// left in the spool — must not move the checkpoint). A failed save is
/// logged and counted, never fatal, and tried again at the next epoch.
pub async fn run_writer(
    store: CheckpointStore,
    mut state: CheckpointState,
    mut epochs: mpsc::UnboundedReceiver<Epoch>,
    stop: tokio_util::sync::CancellationToken,
    metrics: Arc<Metrics>,
) {
    let location = store.location();
    let mut unsaved = std::collections::BTreeSet::new();
    let mut failures: u64 = 0;
    while let Some(epoch) = epochs.recv().await {
        tokio::select! {
            // Settled epochs are written even when the stop came meanwhile.
            biased;
            _ = epoch.tracker.wait() => {}
            _ = stop.cancelled() => return,
        }
        for settled in epoch.settled {
            let _ = settled.send(());
        }
        for (tenant, at) in epoch.clocks {
            let e = state.entry(tenant.to_string()).or_insert(ClockMark {
                upstream_ms: i64::MIN,
                seen_at_ms: i64::MIN,
            });
            if at.upstream_ms > e.upstream_ms {
                *e = at;
                unsaved.insert(tenant.to_string());
            }
        }
        if unsaved.is_empty() {
            continue;
        }
        match store.save_changed(&state, &unsaved).await {
            Ok(()) => {
                unsaved.clear();
                if failures > 0 {
                    CheckpointSaveRecovered {
                        location: &location,
                        failures,
                    }
                    .emit(&metrics);
                    failures = 0;
                }
                for (tenant, at) in &state {
                    CheckpointSaved {
                        tenant,
                        upstream_ms: at.upstream_ms,
                    }
                    .emit(&metrics);
                }
            }
            Err(e) => {
                failures += 1;
                CheckpointSaveFailed {
                    store: store.backend(),
                    error: &e.to_string(),
                    first: failures == 1,
                }
                .emit(&metrics);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(upstream_ms: i64) -> ClockMark {
        ClockMark {
            upstream_ms,
            seen_at_ms: upstream_ms + 7,
        }
    }

    /// A broker store that is unavailable for its first `failures` reads.
    struct Flaky {
        failures: std::sync::atomic::AtomicU32,
        reads: std::sync::atomic::AtomicU32,
    }

    #[async_trait::async_trait]
    impl StateStore for Flaky {
        fn describe(&self) -> String {
            "a flaky store".into()
        }
        fn backend(&self) -> &'static str {
            "test"
        }
        async fn get(&self, _: &str) -> Result<Option<bytes::Bytes>, SinkError> {
            use std::sync::atomic::Ordering::SeqCst;
            self.reads.fetch_add(1, SeqCst);
            if self.failures.load(SeqCst) > 0 {
                self.failures.fetch_sub(1, SeqCst);
                return Err(SinkError::new(SinkErrorKind::Unavailable, "starting"));
            }
            Ok(Some(
                encode(&BTreeMap::from([("acme".to_string(), mark(5))])).into(),
            ))
        }
        async fn put(&self, _: &str, _: bytes::Bytes) -> Result<(), SinkError> {
            Ok(())
        }
    }

    fn flaky(failures: u32) -> (Arc<Flaky>, CheckpointStore) {
        let store = Arc::new(Flaky {
            failures: failures.into(),
            reads: 0.into(),
        });
        let checkpoint = CheckpointStore::Broker {
            store: store.clone(),
            key: "k".into(),
            per_tenant: false,
        };
        (store, checkpoint)
    }

    #[tokio::test(start_paused = true)]
    async fn a_load_is_tried_three_times_while_the_broker_is_unavailable() {
        use std::sync::atomic::Ordering::SeqCst;
        let (store, checkpoint) = flaky(2);
        let state = checkpoint.load().await.unwrap();
        assert_eq!(state.get("acme"), Some(&mark(5)));
        assert_eq!(store.reads.load(SeqCst), 3);

        let (store, checkpoint) = flaky(3);
        let e = checkpoint.load().await.unwrap_err();
        assert_eq!(e.kind, CheckpointErrorKind::Unavailable, "{e}");
        assert_eq!(store.reads.load(SeqCst), 3, "no fourth try");
    }

    #[test]
    fn survives_a_round_trip_and_a_missing_file_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let f = CheckpointFile::new(dir.path().join("cp.json"));
        assert!(f.load().unwrap().is_empty());
        let state = BTreeMap::from([("acme".to_string(), mark(1_779_100_000_000))]);
        f.save(&state).unwrap();
        assert_eq!(f.load().unwrap(), state);
        std::fs::write(dir.path().join("cp.json"), "garbage").unwrap();
        let e = f.load().unwrap_err();
        assert!(e.to_string().contains("checkpoint_file"), "{e}");
        assert_eq!(e.kind, CheckpointErrorKind::Corrupt);
        assert!(!e.is_retryable());
    }

    #[test]
    fn a_checkpoint_without_seen_at_uses_the_upstream_time() {
        let old = br#"{"tenants": {"acme": 1000}}"#;
        assert_eq!(
            decode(old).unwrap()["acme"],
            ClockMark {
                upstream_ms: 1000,
                seen_at_ms: 1000
            }
        );
        let state = BTreeMap::from([("acme".to_string(), mark(5)), ("b".into(), mark(9))]);
        assert_eq!(decode(&encode(&state)).unwrap(), state);
        assert!(decode(b"{}").is_err());
    }

    #[tokio::test]
    async fn advances_only_when_an_epoch_and_all_before_it_settled() {
        let dir = tempfile::tempdir().unwrap();
        let f = CheckpointFile::new(dir.path().join("cp.json"));
        let (tx, rx) = mpsc::unbounded_channel();
        let writer = tokio::spawn(run_writer(
            CheckpointStore::File(f.clone()),
            BTreeMap::new(),
            rx,
            tokio_util::sync::CancellationToken::new(),
            Arc::new(Metrics::new()),
        ));
        let t: Arc<str> = Arc::from("acme");
        let first = BatchTracker::new();
        first.add(1);
        tx.send(Epoch {
            tracker: first.clone(),
            clocks: vec![(t.clone(), mark(100))],
            settled: Vec::new(),
        })
        .unwrap();
        tx.send(Epoch {
            tracker: BatchTracker::new(),
            clocks: vec![(t.clone(), mark(200))],
            settled: Vec::new(),
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
        assert_eq!(f.load().unwrap()["acme"], mark(200));
    }

    #[tokio::test]
    async fn a_failed_save_is_counted_and_retried_at_the_next_epoch() {
        let dir = tempfile::tempdir().unwrap();
        // The directory does not exist yet: saving fails.
        let f = CheckpointFile::new(dir.path().join("later").join("cp.json"));
        let metrics = Arc::new(Metrics::new());
        let (tx, rx) = mpsc::unbounded_channel();
        let writer = tokio::spawn(run_writer(
            CheckpointStore::File(f.clone()),
            BTreeMap::new(),
            rx,
            tokio_util::sync::CancellationToken::new(),
            metrics.clone(),
        ));
        let t: Arc<str> = Arc::from("acme");
        let settled = || BatchTracker::new();
        tx.send(Epoch {
            tracker: settled(),
            clocks: vec![(t.clone(), mark(100))],
            settled: Vec::new(),
        })
        .unwrap();
        let failures = || {
            metrics
                .render()
                .lines()
                .find(|l| l.starts_with("studio_relay_checkpoint_save_failures_total{"))
                .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while failures() < 1.0 {
            assert!(std::time::Instant::now() < deadline, "no failure counted");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        std::fs::create_dir(dir.path().join("later")).unwrap();
        // The next epoch brings nothing newer, yet the unsaved state is saved.
        tx.send(Epoch {
            tracker: settled(),
            clocks: vec![(t.clone(), mark(50))],
            settled: Vec::new(),
        })
        .unwrap();
        drop(tx);
        writer.await.unwrap();
        assert_eq!(f.load().unwrap()["acme"], mark(100));
        assert_eq!(failures(), 1.0);
        assert!(metrics
            .render()
            .contains("studio_relay_checkpoint_timestamp_seconds{tenant=\"acme\"} 0.1"));
    }

    /// A broker store in memory.
    #[derive(Default)]
    struct Kept(std::sync::Mutex<BTreeMap<String, bytes::Bytes>>);

    #[async_trait::async_trait]
    impl StateStore for Kept {
        fn describe(&self) -> String {
            "memory".into()
        }
        fn backend(&self) -> &'static str {
            "test"
        }
        async fn get(&self, key: &str) -> Result<Option<bytes::Bytes>, SinkError> {
            Ok(self.0.lock().unwrap().get(key).cloned())
        }
        async fn put(&self, key: &str, value: bytes::Bytes) -> Result<(), SinkError> {
            self.0.lock().unwrap().insert(key.into(), value);
            Ok(())
        }
    }

    #[tokio::test]
    async fn replicas_sharing_tenants_write_each_tenant_under_its_own_key() {
        let kept = Arc::new(Kept::default());
        // A relay without ha wrote the shared document before.
        let shared: CheckpointState = [("old".to_string(), mark(50))].into();
        kept.put("k", encode(&shared).into()).await.unwrap();
        let store = CheckpointStore::Broker {
            store: kept.clone(),
            key: "k".into(),
            per_tenant: true,
        };
        let state: CheckpointState =
            [("a".to_string(), mark(100)), ("b".to_string(), mark(200))].into();
        let changed = ["b".to_string()].into();
        store.save_changed(&state, &changed).await.unwrap();
        // Only the changed tenant is written, under its own key.
        assert_eq!(store.load_tenant("b").await.unwrap(), Some(mark(200)));
        assert_eq!(store.load_tenant("a").await.unwrap(), None);
        assert!(kept.0.lock().unwrap().contains_key("k.b"));
        // A tenant without its own key resumes from the shared document.
        assert_eq!(store.load_tenant("old").await.unwrap(), Some(mark(50)));
    }
}
