//! `JetStreamSink` (acknowledged, deduplicated by `Nats-Msg-Id`) and core NATS
//! publishing (no acknowledgement: at most once) on one connection.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use async_nats::header::{IntoHeaderName, NATS_MESSAGE_ID};
use async_nats::jetstream::{self, kv, stream};
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::Semaphore;

use super::{
    AckFuture, EventIdScan, NewestIds, OutboundMessage, Sink, SinkError, SinkErrorKind, StateStore,
};
use crate::config::NatsConfig;

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

/// Publishes to NATS, with JetStream unless `jetstream = false`.
pub struct JetStreamSink {
    client: async_nats::Client,
    jetstream: Option<jetstream::Context>,
    config: NatsConfig,
    /// Bounds PubAcks in flight; a permit is released when its ack arrives.
    permits: Arc<Semaphore>,
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
        })
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
            ..Default::default()
        })
    }
}

#[async_trait]
impl Sink for JetStreamSink {
    fn name(&self) -> &'static str {
        "nats"
    }

    async fn prepare(&self, _destinations: &[String]) -> Result<(), SinkError> {
        let Some(js) = &self.jetstream else {
            return Ok(());
        };
        if !self.config.create_stream {
            return Ok(());
        }
        let wanted = self.stream_config()?;
        js.create_or_update_stream(wanted).await.map_err(|e| {
            SinkError::new(
                SinkErrorKind::Config,
                format!("create or update stream {}: {e}", self.config.stream),
            )
        })?;
        tracing::info!(stream = %self.config.stream, "JetStream stream ready");
        Ok(())
    }

    async fn send(&self, m: &OutboundMessage) -> Result<AckFuture, SinkError> {
        let mut headers = async_nats::HeaderMap::new();
        for (k, v) in &m.headers {
            // A static name becomes a header name without a copy.
            let name = match k {
                Cow::Borrowed(k) => async_nats::HeaderName::from_static(k),
                Cow::Owned(k) => k.as_str().into_header_name(),
            };
            headers.insert(name, v.as_ref());
        }
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
                    let kind = match e.kind() {
                        K::TimedOut | K::BrokenPipe | K::StreamNotFound => {
                            SinkErrorKind::Unavailable
                        }
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
        let store = match js.get_key_value(name).await {
            Ok(s) => s,
            Err(_) => {
                let storage = if self.config.storage == "memory" {
                    stream::StorageType::Memory
                } else {
                    stream::StorageType::File
                };
                // The bucket's stream, laid out as `create_key_value` does
                // (ADR-8). That call first reads the account info, which
                // async-nats 0.42 cannot parse from older servers (2.9).
                let created = js
                    .create_stream(stream::Config {
                        name: format!("KV_{name}"),
                        description: Some("studio-relay restart checkpoints".into()),
                        subjects: vec![format!("$KV.{name}.>")],
                        // History 1: only the last checkpoint matters.
                        max_messages_per_subject: 1,
                        storage,
                        allow_rollup: true,
                        deny_delete: true,
                        allow_direct: true,
                        discard: stream::DiscardPolicy::New,
                        num_replicas: 1,
                        ..Default::default()
                    })
                    .await;
                if created.is_ok() {
                    tracing::info!(bucket = %name, "NATS KV checkpoint bucket created");
                }
                // Created now, or by another relay meanwhile.
                js.get_key_value(name).await.map_err(|e| {
                    let why = created
                        .err()
                        .map(|c| c.to_string())
                        .unwrap_or(e.to_string());
                    SinkError::new(
                        SinkErrorKind::Config,
                        format!("cannot create NATS KV bucket {name}: {why}"),
                    )
                })?
            }
        };
        Ok(Some(Arc::new(KvStateStore {
            bucket: name.to_string(),
            store,
        })))
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
                ids: Vec::new(),
                complete: true,
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
                    let id = m.headers.as_ref().and_then(|h| {
                        h.get("Nats-Msg-Id")
                            .or_else(|| h.get("ce_id"))
                            .map(|v| v.as_str().to_string())
                    });
                    if let Some(id) = id {
                        newest.push(at_ms, id);
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
        Ok(EventIdScan {
            ids: newest.into_ids(),
            complete,
        })
    }
}
