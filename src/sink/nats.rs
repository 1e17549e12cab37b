//! `JetStreamSink` (acknowledged, deduplicated by `Nats-Msg-Id`) and core NATS
//! publishing (no acknowledgement: at most once) on one connection.

use std::borrow::Cow;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::header::{HeaderName, IntoHeaderName, NATS_MESSAGE_ID};
use async_nats::jetstream::{self, kv, stream, ErrorCode};
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::Semaphore;

use super::{
    AckFuture, EventIdScan, NewestIds, OutboundMessage, Sink, SinkError, SinkErrorKind, StateStore,
};
use crate::config::NatsConfig;
use crate::ops::internal_events::{
    BrokerMessageLimitFound, JetStreamStreamCreated, JetStreamStreamSettingKept,
};

/// Room kept under `max_payload` for what a JetStream publish adds to
/// [`OutboundMessage::size`]: the `NATS/1.0` line, the closing blank line
/// and `Nats-Msg-Id: <event id>` (ids are under 100 bytes).
const PUBLISH_OVERHEAD: usize = 256;

/// The CloudEvents attributes the relay writes, as the encoder names them
/// (the Kafka binding's `ce_` prefix) and as the NATS binding names them
/// (`ce-`): static both ways, so renaming costs no allocation per event.
const CE_HEADER_NAMES: [(&str, &str); 9] = [
    ("ce_specversion", "ce-specversion"),
    ("ce_id", "ce-id"),
    ("ce_matchkey", "ce-matchkey"),
    ("ce_type", "ce-type"),
    ("ce_source", "ce-source"),
    ("ce_time", "ce-time"),
    ("ce_subject", "ce-subject"),
    ("ce_dataschema", "ce-dataschema"),
    ("ce_datacontenttype", "ce-datacontenttype"),
];

/// The NATS header name of a header the encoder wrote: CloudEvents
/// attributes take the NATS binding's `ce-` prefix, the rest stay.
/// (The `Cow` itself says whether the name is `'static`, and so becomes a
/// header name without a copy.)
#[allow(clippy::ptr_arg)]
fn nats_header_name(name: &Cow<'static, str>) -> HeaderName {
    if let Some(attribute) = name.strip_prefix("ce_") {
        return match CE_HEADER_NAMES.iter().find(|(kafka, _)| *kafka == name) {
            Some((_, nats)) => HeaderName::from_static(nats),
            None => format!("ce-{attribute}").into_header_name(),
        };
    }
    match name {
        Cow::Borrowed(k) => HeaderName::from_static(k),
        Cow::Owned(k) => k.as_str().into_header_name(),
    }
}

/// The encoder's headers as NATS headers (CloudEvents NATS binding, binary
/// mode): `ce-` attributes, and `datacontenttype` as `ce-datacontenttype`
/// besides `content-type`.
fn nats_headers(m: &OutboundMessage) -> async_nats::HeaderMap {
    let mut headers = async_nats::HeaderMap::new();
    for (k, v) in &m.headers {
        if k == "content-type" {
            headers.insert(HeaderName::from_static("ce-datacontenttype"), v.as_ref());
        }
        headers.insert(nats_header_name(k), v.as_ref());
    }
    headers
}

/// Whether `filter` (a stream subject: `*` one token, `>` the rest)
/// captures the literal subject `subject`.
fn subject_matches(filter: &str, subject: &str) -> bool {
    let (mut f, mut s) = (filter.split('.'), subject.split('.'));
    loop {
        match (f.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// The destinations none of `subjects` captures.
fn uncovered<'a>(subjects: &[String], destinations: &'a [String]) -> Vec<&'a str> {
    destinations
        .iter()
        .filter(|d| !subjects.iter().any(|f| subject_matches(f, d)))
        .map(String::as_str)
        .collect()
}

/// How an existing stream differs from `wanted` (the settings the relay
/// would create it with): (setting, existing, wanted). Values the server
/// fills in when left at zero are compared as the server stores them.
fn differences(
    existing: &stream::Config,
    wanted: &stream::Config,
) -> Vec<(&'static str, String, String)> {
    let limit = |v: i64| {
        if v <= 0 {
            "unlimited".to_string()
        } else {
            v.to_string()
        }
    };
    let subjects = |c: &stream::Config| {
        let mut v = c.subjects.clone();
        v.sort();
        format!("{v:?}")
    };
    let mut out = Vec::new();
    let mut check = |setting: &'static str, existing: String, wanted: String| {
        if existing != wanted {
            out.push((setting, existing, wanted));
        }
    };
    check("subjects", subjects(existing), subjects(wanted));
    check(
        "retention",
        format!("{:?}", existing.retention),
        format!("{:?}", wanted.retention),
    );
    check(
        "storage",
        format!("{:?}", existing.storage),
        format!("{:?}", wanted.storage),
    );
    check(
        "num_replicas",
        existing.num_replicas.max(1).to_string(),
        wanted.num_replicas.max(1).to_string(),
    );
    if !wanted.duplicate_window.is_zero() {
        check(
            "duplicate_window",
            format!("{:?}", existing.duplicate_window),
            format!("{:?}", wanted.duplicate_window),
        );
    }
    let age = |d: Duration| {
        if d.is_zero() {
            "unlimited".to_string()
        } else {
            format!("{d:?}")
        }
    };
    check("max_age", age(existing.max_age), age(wanted.max_age));
    check(
        "max_bytes",
        limit(existing.max_bytes),
        limit(wanted.max_bytes),
    );
    check(
        "max_messages",
        limit(existing.max_messages),
        limit(wanted.max_messages),
    );
    check(
        "max_messages_per_subject",
        limit(existing.max_messages_per_subject),
        limit(wanted.max_messages_per_subject),
    );
    check(
        "max_message_size",
        limit(existing.max_message_size.into()),
        limit(wanted.max_message_size.into()),
    );
    check(
        "discard",
        format!("{:?}", existing.discard),
        format!("{:?}", wanted.discard),
    );
    out
}

/// Logs each way `existing` differs from `wanted`; changes nothing.
fn log_differences(name: &str, existing: &stream::Config, wanted: &stream::Config) {
    for (setting, existing, wanted) in differences(existing, wanted) {
        JetStreamStreamSettingKept {
            stream: name,
            setting,
            existing: &existing,
            relay_default: &wanted,
        }
        .emit();
    }
}

fn is_jetstream_error(e: &(dyn std::error::Error + 'static), code: ErrorCode) -> bool {
    e.downcast_ref::<jetstream::Error>()
        .is_some_and(|j| j.error_code() == code)
}

/// A JetStream KV bucket (history 1) as the relay's state store.
pub struct KvStateStore {
    bucket: String,
    store: kv::Store,
}

#[async_trait]
impl StateStore for KvStateStore {
    fn describe(&self) -> String {
        format!("NATS KV bucket {}", self.bucket)
    }

    fn backend(&self) -> &'static str {
        "nats"
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>, SinkError> {
        self.store
            .get(key)
            .await
            .map_err(|e| unavailable("KV get", e))
    }

    async fn put(&self, key: &str, value: Bytes) -> Result<(), SinkError> {
        self.store
            .put(key, value)
            .await
            .map(drop)
            .map_err(|e| unavailable("KV put", e))
    }
}

/// The KV bucket `wanted` describes: an existing one as it is (what
/// differs is logged), else created.
async fn open_bucket(
    js: &jetstream::Context,
    wanted: stream::Config,
) -> Result<kv::Store, SinkError> {
    let name = wanted.name.trim_start_matches("KV_").to_string();
    if let Ok(s) = js.get_key_value(&name).await {
        if let Ok(status) = s.status().await {
            log_differences(&wanted.name, &status.info.config, &wanted);
        }
        return Ok(s);
    }
    // The bucket's stream, laid out as `create_key_value` does (ADR-8).
    // That call first reads the account info, which async-nats 0.42
    // cannot parse from older servers (2.9).
    let created = js.create_stream(wanted.clone()).await;
    if created.is_ok() {
        JetStreamStreamCreated {
            stream: &wanted.name,
            subjects: &wanted.subjects,
        }
        .emit();
    }
    // Created now, or by another relay meanwhile.
    js.get_key_value(&name).await.map_err(|e| {
        let why = created
            .err()
            .map(|c| c.to_string())
            .unwrap_or(e.to_string());
        SinkError::new(
            SinkErrorKind::Config,
            format!("cannot create NATS KV bucket {name}: {why}"),
        )
    })
}

/// Publishes to NATS, with JetStream unless `jetstream = false`.
pub struct JetStreamSink {
    client: async_nats::Client,
    jetstream: Option<jetstream::Context>,
    config: NatsConfig,
    /// Bounds PubAcks in flight; a permit is released when its ack arrives.
    permits: Arc<Semaphore>,
    /// The server's `max_payload` (from its INFO; 0 until known), kept
    /// here because reading the client's copy clones the whole INFO.
    max_payload: AtomicUsize,
    /// The stream's `max_msg_size` (0 or less: none), read at `prepare`.
    stream_max_message: AtomicI64,
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> SinkError {
    SinkError::new(SinkErrorKind::Unavailable, format!("{what}: {e}"))
}

impl JetStreamSink {
    pub async fn connect(config: &NatsConfig) -> Result<Self, SinkError> {
        let mut opts = async_nats::ConnectOptions::new()
            .name(concat!("studio-relay/", env!("CARGO_PKG_VERSION")))
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(5))
            .max_reconnects(None);
        if let Some(t) = &config.token {
            opts = opts.token(t.expose().to_string());
        }
        if let (Some(u), Some(p)) = (&config.user, &config.password) {
            opts = opts.user_and_password(u.clone(), p.expose().to_string());
        }
        if let Some(path) = &config.credentials_file {
            opts = opts.credentials_file(path).await.map_err(|e| {
                SinkError::new(
                    SinkErrorKind::Config,
                    format!("credentials_file {}: {e}", path.display()),
                )
            })?;
        }
        if let Some(path) = &config.nkey_file {
            let seed = std::fs::read_to_string(path).map_err(|e| {
                SinkError::new(
                    SinkErrorKind::Config,
                    format!("nkey_file {}: {e}", path.display()),
                )
            })?;
            opts = opts.nkey(seed.trim().to_string());
        }
        if let Some(ca) = &config.tls_ca_file {
            opts = opts.add_root_certificates(ca.clone());
        }
        if let (Some(cert), Some(key)) = (&config.tls_cert_file, &config.tls_key_file) {
            opts = opts.add_client_certificate(cert.clone(), key.clone());
        }
        if config.tls_required {
            opts = opts.require_tls(true);
        }
        let urls: Vec<&str> = config.url.split(',').map(str::trim).collect();
        let servers: Vec<async_nats::ServerAddr> = urls
            .iter()
            .map(|u| u.parse())
            .collect::<Result<_, _>>()
            .map_err(|e| SinkError::new(SinkErrorKind::Config, format!("sink.nats.url: {e}")))?;
        // Never log the URL as given: it may carry credentials.
        let client = opts
            .connect(servers)
            .await
            .map_err(|e| unavailable("NATS connect", e))?;
        let jetstream = config.jetstream.then(|| jetstream::new(client.clone()));
        Ok(JetStreamSink {
            client,
            jetstream,
            permits: Arc::new(Semaphore::new(config.max_pending_acks.max(1))),
            config: config.clone(),
            max_payload: AtomicUsize::new(0),
            stream_max_message: AtomicI64::new(0),
        })
    }

    /// Reads `max_payload` from the server's INFO (it may differ after a
    /// reconnect to another server of a cluster); logs it when it changed.
    fn refresh_max_payload(&self) -> usize {
        let now = self.client.server_info().max_payload;
        let before = self.max_payload.swap(now, Ordering::Relaxed);
        if now != 0 && now != before {
            BrokerMessageLimitFound {
                sink: "nats",
                setting: "max_payload",
                bytes: now,
            }
            .emit();
        }
        now
    }

    /// The stream's info; `None` when the server has no such stream.
    async fn existing_stream(
        &self,
        js: &jetstream::Context,
    ) -> Result<Option<stream::Info>, SinkError> {
        let name = &self.config.stream;
        match js.get_stream(name).await {
            Ok(s) => Ok(Some(s.cached_info().clone())),
            Err(e) => match e.kind() {
                jetstream::context::GetStreamErrorKind::JetStream(j)
                    if j.error_code() == ErrorCode::STREAM_NOT_FOUND =>
                {
                    Ok(None)
                }
                _ => Err(unavailable(&format!("JetStream stream {name} info"), e)),
            },
        }
    }

    /// Creates the stream with the configured settings. Should another
    /// relay have created it meanwhile, that one is returned as found.
    async fn create_stream(
        &self,
        js: &jetstream::Context,
    ) -> Result<(stream::Info, bool), SinkError> {
        let name = &self.config.stream;
        match js.create_stream(self.stream_config()?).await {
            Ok(s) => {
                JetStreamStreamCreated {
                    stream: name,
                    subjects: &self.config.stream_subjects,
                }
                .emit();
                Ok((s.cached_info().clone(), true))
            }
            Err(e) => {
                let exists = matches!(
                    e.kind(),
                    jetstream::context::CreateStreamErrorKind::JetStream(j)
                        if j.error_code() == ErrorCode::STREAM_NAME_EXIST
                );
                if exists {
                    if let Some(info) = self.existing_stream(js).await? {
                        return Ok((info, false));
                    }
                }
                Err(SinkError::new(
                    SinkErrorKind::Config,
                    format!("cannot create JetStream stream {name}: {e}"),
                ))
            }
        }
    }

    /// The stream of KV bucket `name` as the relay creates it: history 1
    /// (only the last checkpoint matters).
    fn kv_bucket_config(&self, name: &str) -> stream::Config {
        let storage = if self.config.storage == "memory" {
            stream::StorageType::Memory
        } else {
            stream::StorageType::File
        };
        stream::Config {
            name: format!("KV_{name}"),
            description: Some("studio-relay restart checkpoints".into()),
            subjects: vec![format!("$KV.{name}.>")],
            max_messages_per_subject: 1,
            storage,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: stream::DiscardPolicy::New,
            num_replicas: self.replicas(self.config.kv_replicas),
            ..Default::default()
        }
    }

    /// The leases' bucket: a key not refreshed for `ttl` expires.
    fn lease_bucket_config(&self, name: &str, ttl: Duration) -> stream::Config {
        stream::Config {
            description: Some("studio-relay leases: the owner of each shard of tenants".into()),
            max_age: ttl,
            // A lease given up is a delete marker (the key's next owner
            // creates it again).
            deny_delete: false,
            ..self.kv_bucket_config(name)
        }
    }

    /// Replicas for a stream or bucket the relay creates: the configured
    /// number, or as many as the cluster has servers (their client URLs in
    /// the server's INFO), at most 3, so a checkpoint outlives a server.
    fn replicas(&self, configured: usize) -> usize {
        if configured > 0 {
            return configured;
        }
        self.client.server_info().connect_urls.len().clamp(1, 3)
    }

    fn stream_config(&self) -> Result<stream::Config, SinkError> {
        let c = &self.config;
        let retention = match c.retention.as_str() {
            "interest" => stream::RetentionPolicy::Interest,
            "workqueue" => stream::RetentionPolicy::WorkQueue,
            _ => stream::RetentionPolicy::Limits,
        };
        let storage = if c.storage == "memory" {
            stream::StorageType::Memory
        } else {
            stream::StorageType::File
        };
        Ok(stream::Config {
            name: c.stream.clone(),
            subjects: c.stream_subjects.clone(),
            duplicate_window: c.duplicate_window,
            retention,
            storage,
            num_replicas: self.replicas(c.replicas),
            ..Default::default()
        })
    }
}

#[async_trait]
impl Sink for JetStreamSink {
    fn name(&self) -> &'static str {
        "nats"
    }

    /// Creates the stream when it is missing; an existing stream is used as
    /// it is, never updated (another team may own its limits, and an update
    /// could shorten its retention or dedup window). It must capture every
    /// destination: otherwise nothing published there would be stored.
    async fn prepare(&self, destinations: &[String]) -> Result<(), SinkError> {
        self.refresh_max_payload();
        let Some(js) = &self.jetstream else {
            return Ok(());
        };
        let name = &self.config.stream;
        let (info, created) = match self.existing_stream(js).await? {
            Some(info) => (info, false),
            None if self.config.create_stream => self.create_stream(js).await?,
            None => {
                return Err(SinkError::new(
                    SinkErrorKind::Config,
                    format!(
                    "JetStream stream {name} does not exist and sink.nats.create_stream is false: \
                         create it, or let the relay create it"
                ),
                ))
            }
        };
        let missing = uncovered(&info.config.subjects, destinations);
        if !missing.is_empty() {
            return Err(SinkError::new(
                SinkErrorKind::Config,
                format!(
                    "JetStream stream {name} does not capture {missing:?} (its subjects: {:?}), \
                     so nothing published there would be stored; add them to the stream, or \
                     change sink.topic_template / sink.deadletter_topic / sink.control_topic",
                    info.config.subjects
                ),
            ));
        }
        if !created && self.config.create_stream {
            log_differences(name, &info.config, &self.stream_config()?);
        }
        self.stream_max_message
            .store(info.config.max_message_size.into(), Ordering::Relaxed);
        Ok(())
    }

    /// `max_payload` and the stream's `max_msg_size`, whichever is smaller
    /// (both count headers and payload), less the publish's own headers.
    fn max_message_bytes(&self, _destination: &str) -> Option<usize> {
        let mut max = self.max_payload.load(Ordering::Relaxed);
        if max == 0 {
            // Not connected when the sink was built: read it once known.
            max = self.refresh_max_payload();
        }
        let stream = self.stream_max_message.load(Ordering::Relaxed);
        if stream > 0 && self.jetstream.is_some() {
            max = if max == 0 {
                stream as usize
            } else {
                max.min(stream as usize)
            };
        }
        (max > 0).then(|| max.saturating_sub(PUBLISH_OVERHEAD))
    }

    async fn send(&self, m: &OutboundMessage) -> Result<AckFuture, SinkError> {
        let mut headers = nats_headers(m);
        let Some(js) = &self.jetstream else {
            self.client
                .publish_with_headers(m.destination.clone(), headers, m.payload.clone())
                .await
                .map_err(|e| unavailable("publish", e))?;
            return Ok(Box::pin(async { Ok(()) }));
        };
        headers.insert(NATS_MESSAGE_ID, m.event_id.as_str());
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| unavailable("ack window", e))?;
        let ack = js
            .publish_with_headers(m.destination.clone(), headers, m.payload.clone())
            .await
            .map_err(|e| unavailable("publish", e))?;
        Ok(Box::pin(async move {
            let r = ack.await;
            drop(permit);
            match r {
                // `duplicate: true` means JetStream already has this event id: success.
                Ok(_) => Ok(()),
                Err(e) => {
                    use async_nats::jetstream::context::PublishErrorKind as K;
                    let too_large = std::error::Error::source(&e).is_some_and(|s| {
                        is_jetstream_error(s, ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM)
                    });
                    let kind = match e.kind() {
                        K::TimedOut | K::BrokenPipe | K::StreamNotFound => {
                            SinkErrorKind::Unavailable
                        }
                        K::Other if too_large => SinkErrorKind::TooLarge,
                        K::Other => SinkErrorKind::Unavailable,
                        _ => SinkErrorKind::Rejected,
                    };
                    Err(SinkError::new(kind, format!("PubAck: {e}")))
                }
            }
        }))
    }

    async fn flush(&self, timeout: Duration) -> Result<(), SinkError> {
        let all = self.config.max_pending_acks.max(1) as u32;
        let wait_acks = async {
            // Holding every permit means no ack is outstanding.
            let _all = self.permits.acquire_many(all).await;
        };
        tokio::time::timeout(timeout, async {
            wait_acks.await;
            self.client.flush().await
        })
        .await
        .map_err(|_| unavailable("flush", "timed out"))?
        .map_err(|e| unavailable("flush", e))
    }

    async fn check_health(&self) -> Result<(), SinkError> {
        if self.client.connection_state() != async_nats::connection::State::Connected {
            return Err(unavailable("NATS", "not connected"));
        }
        // A PING/PONG round trip proves the server answers, not just that a socket is open.
        tokio::time::timeout(Duration::from_secs(3), self.client.flush())
            .await
            .map_err(|_| unavailable("NATS", "ping timed out"))?
            .map_err(|e| unavailable("NATS", e))?;
        self.refresh_max_payload();
        if let (Some(js), true) = (&self.jetstream, self.config.create_stream) {
            tokio::time::timeout(Duration::from_secs(3), js.get_stream(&self.config.stream))
                .await
                .map_err(|_| unavailable("JetStream", "stream info timed out"))?
                .map_err(|e| unavailable("JetStream", e))?;
        }
        Ok(())
    }

    /// A KV bucket; core NATS (`jetstream = false`) keeps nothing.
    async fn state_store(&self, name: &str) -> Result<Option<Arc<dyn StateStore>>, SinkError> {
        let Some(js) = &self.jetstream else {
            return Ok(None);
        };
        let store = open_bucket(js, self.kv_bucket_config(name)).await?;
        Ok(Some(Arc::new(KvStateStore {
            bucket: name.to_string(),
            store,
        })))
    }

    /// Leases in a KV bucket whose `max_age` is the lease TTL.
    async fn join_group(
        &self,
        settings: &super::leases::GroupSettings,
        leave: tokio_util::sync::CancellationToken,
    ) -> Result<Option<super::leases::Membership>, SinkError> {
        let Some(js) = &self.jetstream else {
            return Ok(None);
        };
        let store = open_bucket(
            js,
            self.lease_bucket_config(&settings.bucket, settings.lease_ttl),
        )
        .await?;
        let (tx, events) = tokio::sync::mpsc::unbounded_channel();
        let (has_left, left) = tokio::sync::oneshot::channel();
        let lease = super::nats_leases::run(store, settings.clone(), settings.shards, tx, leave);
        tokio::spawn(async move {
            lease.await;
            let _ = has_left.send(());
        });
        Ok(Some(super::leases::Membership {
            shards: settings.shards,
            events,
            describe: format!("NATS KV bucket {}", settings.bucket),
            left,
        }))
    }

    /// JetStream drops a re-published event id by `Nats-Msg-Id`, but only
    /// within `duplicate_window` (2 h): a relay down longer than that minus
    /// `relay.gap_margin` would re-publish the start of its resume window.
    /// So the ids are read here as for Kafka: a headers-only ordered
    /// consumer per subject from `since_ms`, one subject at a time because
    /// multiple filter subjects need nats-server 2.10.
    async fn recent_event_ids(
        &self,
        destinations: &[String],
        since_ms: i64,
        limit: usize,
        timeout: Duration,
    ) -> Result<EventIdScan, SinkError> {
        let mut newest = NewestIds::new(limit);
        let Some(js) = &self.jetstream else {
            return Ok(EventIdScan {
                complete: true,
                ..Default::default()
            });
        };
        let scan = async {
            let stream = js
                .get_stream(&self.config.stream)
                .await
                .map_err(|e| unavailable("JetStream stream", e))?;
            // The start time goes in as JetStream's own JSON, which saves a
            // direct dependency on the `time` crate for one value.
            let start = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(since_ms)
                .unwrap_or_default()
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            let deliver_policy: jetstream::consumer::DeliverPolicy = serde_json::from_value(
                serde_json::json!({"deliver_policy": "by_start_time", "opt_start_time": start}),
            )
            .map_err(|e| SinkError::new(SinkErrorKind::Config, format!("start time: {e}")))?;
            for subject in destinations {
                let consumer = stream
                    .create_consumer(jetstream::consumer::pull::OrderedConfig {
                        filter_subject: subject.clone(),
                        headers_only: true,
                        deliver_policy,
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| unavailable("ordered consumer", e))?;
                if consumer.cached_info().num_pending == 0 {
                    continue;
                }
                let mut messages = consumer
                    .messages()
                    .await
                    .map_err(|e| unavailable("ordered consumer", e))?;
                while let Some(m) = messages.next().await {
                    let m = m.map_err(|e| unavailable("ordered consumer", e))?;
                    let info = m.info().map_err(|e| unavailable("message info", e))?;
                    let at_ms = (info.published.unix_timestamp_nanos() / 1_000_000) as i64;
                    let caught_up = info.pending == 0;
                    // `ce_id`: published before the relay used the NATS binding's names.
                    let id = m.headers.as_ref().and_then(|h| {
                        h.get("Nats-Msg-Id")
                            .or_else(|| h.get("ce-id"))
                            .or_else(|| h.get("ce_id"))
                            .map(|v| v.as_str().to_string())
                    });
                    let key = m
                        .headers
                        .as_ref()
                        .and_then(|h| h.get("ce-matchkey").map(|v| v.as_str().to_string()));
                    if let Some(id) = id {
                        newest.push(at_ms, id, key);
                    }
                    if caught_up {
                        break;
                    }
                }
            }
            Ok::<_, SinkError>(())
        };
        let complete = match tokio::time::timeout(timeout, scan).await {
            Ok(r) => {
                r?;
                true
            }
            Err(_) => false,
        };
        Ok(newest.into_scan(complete))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cloudevents_headers_take_the_nats_binding_prefix_and_the_rest_stay() {
        let m = OutboundMessage {
            destination: "telavox.studio.calls.v1".into(),
            key: None,
            headers: vec![
                ("ce_id".into(), "e1".into()),
                ("ce_specversion".into(), "1.0".into()),
                ("ce_extension".to_string().into(), "x".into()),
                ("content-type".into(), "application/json".into()),
                ("schema_name".into(), "s".into()),
            ],
            payload: Bytes::new(),
            event_id: "e1".into(),
        };
        let h = nats_headers(&m);
        let get = |k: &str| h.get(k).map(|v| v.as_str().to_string());
        assert_eq!(get("ce-id").as_deref(), Some("e1"));
        assert_eq!(get("ce-specversion").as_deref(), Some("1.0"));
        assert_eq!(get("ce-extension").as_deref(), Some("x"));
        assert_eq!(
            get("ce-datacontenttype").as_deref(),
            Some("application/json")
        );
        assert_eq!(get("content-type").as_deref(), Some("application/json"));
        assert_eq!(get("schema_name").as_deref(), Some("s"));
        assert_eq!(get("ce_id"), None);
        assert_eq!(h.iter().count(), 6);
    }

    #[test]
    fn stream_subjects_capture_destinations_as_nats_wildcards_do() {
        assert!(subject_matches(
            "telavox.studio.>",
            "telavox.studio.calls.v1"
        ));
        assert!(!subject_matches("telavox.studio.>", "telavox.studio"));
        assert!(subject_matches(
            "telavox.*.calls.v1",
            "telavox.studio.calls.v1"
        ));
        assert!(!subject_matches("telavox.*", "telavox.studio.calls"));
        assert!(subject_matches("a.b", "a.b"));
        assert!(!subject_matches("a.b", "a.b.c"));
        let destinations = vec![
            "telavox.studio.calls.v1".to_string(),
            "telavox.studio.deadletter".to_string(),
            "other.control".to_string(),
        ];
        assert_eq!(
            uncovered(&["telavox.studio.*.v1".into()], &destinations),
            ["telavox.studio.deadletter", "other.control"]
        );
        assert!(uncovered(&["telavox.>".into(), "other.*".into()], &destinations).is_empty());
    }

    #[test]
    fn differences_compare_what_the_server_stores_not_zero_defaults() {
        let wanted = stream::Config {
            name: "S".into(),
            subjects: vec!["a.>".into()],
            duplicate_window: Duration::from_secs(7200),
            ..Default::default()
        };
        // As the server reports a stream created from `wanted`.
        let mut existing = stream::Config {
            max_bytes: -1,
            max_messages: -1,
            max_messages_per_subject: -1,
            max_message_size: -1,
            num_replicas: 1,
            ..wanted.clone()
        };
        assert!(differences(&existing, &wanted).is_empty());
        existing.max_age = Duration::from_secs(3600);
        existing.subjects.push("b.>".into());
        existing.duplicate_window = Duration::from_secs(120);
        let found: Vec<&str> = differences(&existing, &wanted)
            .iter()
            .map(|d| d.0)
            .collect();
        assert_eq!(found, ["subjects", "duplicate_window", "max_age"]);
    }
}
