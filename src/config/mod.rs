//! Configuration: one TOML file, every key overridable from the environment.
//!
//! Layering (later wins): built-in defaults → the TOML file (`--config`) →
//! `STUDIO_RELAY__SECTION__KEY` environment variables (see [`load`]).
//! Every struct denies unknown keys, so a typo is an error that names the key
//! path instead of a silently ignored setting.

mod load;
mod secret;

pub use load::{load, load_from_str, ConfigError, ENV_PREFIX};
pub use secret::{redact_url, Secret, REDACTED};

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::model::DataSource;

/// The whole configuration file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the Studio API lives and how to stay connected to it.
    pub upstream: UpstreamConfig,
    /// Telavox accounts. Each tenant has its own token and its own sockets.
    pub tenants: Vec<TenantConfig>,
    /// More tenants, from a directory of token files, changed without a
    /// restart.
    pub token_dir: TokenDirConfig,
    /// Several replicas sharing the tenants, each owned by one at a time.
    pub ha: HaConfig,
    /// How records are encoded on the wire.
    pub encoding: EncodingConfig,
    /// Where records are published.
    pub sink: SinkConfig,
    /// The live pipeline between sockets and sink.
    pub relay: RelayConfig,
    /// Metrics and health endpoints.
    pub ops: OpsConfig,
}

/// Telavox endpoints and connection behaviour.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConfig {
    /// Base URL of the live WebSockets; `/calls`, `/queues`, … are appended.
    pub live_url: String,
    /// The historic GraphQL endpoint.
    pub graphql_url: String,
    /// Which live sources to relay (default: all five).
    pub sources: Vec<DataSource>,
    /// Handshake timeout.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// How often a WebSocket ping is sent.
    #[serde(with = "humantime_serde")]
    pub ping_interval: Duration,
    /// A connection whose pong is later than this after a ping is dead.
    #[serde(with = "humantime_serde")]
    pub pong_timeout: Duration,
    /// First reconnect delay; doubles up to `backoff_max` (full jitter).
    #[serde(with = "humantime_serde")]
    pub backoff_min: Duration,
    /// Longest reconnect delay for network and 5xx errors.
    #[serde(with = "humantime_serde")]
    pub backoff_max: Duration,
    /// Delay between attempts after HTTP 401 (token missing, expired or revoked).
    #[serde(with = "humantime_serde")]
    pub auth_backoff: Duration,
    /// A connection up this long resets the backoff to `backoff_min`.
    #[serde(with = "humantime_serde")]
    pub healthy_after: Duration,
    /// Frames larger than this are dead-lettered, not parsed.
    pub max_frame_bytes: usize,
    /// Kernel receive buffer of each live socket (`SO_RCVBUF`; Linux
    /// doubles it). While the relay is slower than its input (the broker
    /// is away and no spool is set, or a burst), frames wait there. The
    /// kernel's own tuning grows it to `net.ipv4.tcp_rmem` (up to 32 MiB) per
    /// socket, and socket memory counts against the pod's memory limit: at
    /// 1,000 tenants that is gigabytes, and past `net.ipv4.tcp_mem` the
    /// kernel slows every TCP connection of the machine. 64 KiB still
    /// carries about 500 KB/s per socket at 100 ms round trip, far more
    /// than one Studio socket sends. 0 leaves it to the kernel.
    pub receive_buffer_bytes: u32,
    /// Timeout of one GraphQL request.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// A PEM bundle of CA certificates trusted for Telavox's live sockets
    /// and GraphQL on top of the platform's and Mozilla's roots (a private
    /// CA, such as a TLS-inspecting egress proxy's).
    pub ca_file: Option<PathBuf>,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            live_url: "wss://statistics-webhook.telavox.se".into(),
            graphql_url: "https://statistics-api.telavox.se/graphql".into(),
            sources: DataSource::ALL.to_vec(),
            connect_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(15),
            pong_timeout: Duration::from_secs(10),
            backoff_min: Duration::from_millis(500),
            backoff_max: Duration::from_secs(60),
            auth_backoff: Duration::from_secs(300),
            healthy_after: Duration::from_secs(30),
            max_frame_bytes: 4 * 1024 * 1024,
            receive_buffer_bytes: 64 * 1024,
            request_timeout: Duration::from_secs(30),
            ca_file: None,
        }
    }
}

/// One Telavox account.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TenantConfig {
    /// Short name, used in topic templates (`{tenant}`), metric labels and the
    /// envelope. Letters, digits, `-` and `_`.
    pub name: String,
    /// File holding the Statistics Token (a mounted Kubernetes Secret).
    /// Takes precedence over `token_env`.
    pub token_file: Option<PathBuf>,
    /// Environment variable holding the Statistics Token.
    pub token_env: String,
    /// The token itself, resolved at load time. Never set this in a file that
    /// is committed anywhere; prefer `token_file` or `token_env`.
    pub token: Secret,
    /// The live sources relayed for this account (default:
    /// `upstream.sources`). An account without the rights to a source
    /// (Telavox answers `Invalid path.`) needs no socket that will be refused.
    pub sources: Option<Vec<DataSource>>,
}

impl Default for TenantConfig {
    fn default() -> Self {
        TenantConfig {
            name: "default".into(),
            token_file: None,
            token_env: "TELAVOX_TOKEN".into(),
            token: Secret::default(),
            sources: None,
        }
    }
}

impl Config {
    /// The live sources relayed for `tenant`: its own, or `upstream.sources`.
    pub fn tenant_sources<'a>(&'a self, tenant: &'a TenantConfig) -> &'a [DataSource] {
        tenant.sources.as_deref().unwrap_or(&self.upstream.sources)
    }

    /// Every source some tenant relays, in [`DataSource::ALL`] order.
    pub fn relayed_sources(&self) -> Vec<DataSource> {
        DataSource::ALL
            .into_iter()
            .filter(|s| {
                self.tenants
                    .iter()
                    .any(|t| self.tenant_sources(t).contains(s))
            })
            .collect()
    }
}

/// Tenants from a directory of token files (a mounted Kubernetes Secret,
/// one key per account): the file's name is the tenant's name, its content
/// the token; they relay `upstream.sources`. Adding a file starts that
/// tenant's sockets, changing it reconnects them with the new token,
/// removing it stops them, each within `poll_interval`; no other tenant's
/// sockets are touched.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokenDirConfig {
    /// The directory. Empty: none (only `[[tenants]]`).
    pub path: String,
    /// How often the directory is read.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
}

impl Default for TokenDirConfig {
    fn default() -> Self {
        TokenDirConfig {
            path: String::new(),
            poll_interval: Duration::from_secs(2),
        }
    }
}

/// High availability: replicas of one deployment share its tenants. Each
/// tenant hashes into one of `shards`; each shard is leased to one replica
/// at a time through the broker the relay publishes to (Kafka: the
/// partitions of `topic`, assigned to the members of consumer group
/// `group`; NATS: keys with compare-and-set in KV bucket `bucket`, expiring
/// after `lease_ttl`). A replica that dies loses its leases after
/// `lease_ttl`; the others take its tenants over from their checkpoints.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HaConfig {
    /// Off: this replica runs every tenant (one replica per deployment).
    pub enabled: bool,
    /// How many shards the tenants hash into: the most replicas that can
    /// share the work. Kafka: the partitions of `topic` when the relay
    /// creates it (an existing topic's partition count wins). All replicas
    /// of a deployment must agree.
    pub shards: u32,
    /// Kafka: the consumer group of the deployment's replicas.
    pub group: String,
    /// Kafka: the coordination topic; its partitions are the shards. It
    /// carries no messages.
    pub topic: String,
    /// NATS: the KV bucket holding the leases.
    pub bucket: String,
    /// How long a replica that stopped answering keeps its tenants (Kafka:
    /// the group's `session.timeout.ms`, at least the broker's
    /// `group.min.session.timeout.ms`, 6 s by default).
    #[serde(with = "humantime_serde")]
    pub lease_ttl: Duration,
    /// How long a replica handing tenants over waits for their events in
    /// flight to be acknowledged before releasing them.
    #[serde(with = "humantime_serde")]
    pub handoff_timeout: Duration,
    /// This replica's name in the group. Empty: the host name (the pod's
    /// name on Kubernetes) and a random suffix.
    pub member: String,
}

impl Default for HaConfig {
    fn default() -> Self {
        HaConfig {
            enabled: false,
            shards: 64,
            group: "studio-relay".into(),
            topic: "studio-relay-shards".into(),
            bucket: "studio-relay-leases".into(),
            lease_ttl: Duration::from_secs(6),
            handoff_timeout: Duration::from_secs(10),
            member: String::new(),
        }
    }
}

/// Payload encoding.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EncodingConfig {
    /// `json` (UTF-8 JSON) or `avro`.
    pub format: EncodingFormat,
    /// Confluent-compatible Schema Registry. When unset, Avro uses the
    /// single-object encoding (`C3 01` + fingerprint) so messages stay self-describing.
    pub schema_registry: Option<SchemaRegistryConfig>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EncodingFormat {
    #[default]
    Json,
    Avro,
}

/// Confluent-compatible Schema Registry connection (Confluent, or Apicurio's
/// `/apis/ccompat/v7`). Subjects follow the TopicNameStrategy: `<topic>-value`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemaRegistryConfig {
    /// Base URL, e.g. `http://schema-registry:8081` or
    /// `http://apicurio:8080/apis/ccompat/v7`.
    pub url: String,
    /// Basic-auth user, if the registry needs one.
    #[serde(default)]
    pub username: Option<String>,
    /// Basic-auth password (prefer the env override).
    #[serde(default)]
    pub password: Option<Secret>,
    /// `register`: register each schema under its subject at start-up (a
    /// version that is already there is reused). `lookup`: never write to
    /// the registry; find the schema's id under its subject, and refuse to
    /// start when it is not there (registries where only CI registers).
    #[serde(default)]
    pub mode: RegistryMode,
    /// Before registering or looking up, ask the registry whether each
    /// schema is compatible with the latest version of its subject, and
    /// refuse to start when it is not.
    #[serde(default = "default_check_compatibility")]
    pub check_compatibility: bool,
    /// PEM CA certificate(s) trusted for the registry's TLS, on top of the
    /// built-in web roots (a private CA).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// How long start-up keeps retrying a registry that is unreachable,
    /// overloaded (HTTP 429) or failing (HTTP 5xx), with exponential backoff,
    /// before giving up. `0s` tries once.
    #[serde(default = "default_registry_retry_for", with = "humantime_serde")]
    pub retry_for: Duration,
    /// Timeout of each request to the registry.
    #[serde(default = "default_registry_request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
}

/// How the relay gets its schema ids from the registry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RegistryMode {
    #[default]
    Register,
    Lookup,
}

impl RegistryMode {
    pub fn as_str(self) -> &'static str {
        match self {
            RegistryMode::Register => "register",
            RegistryMode::Lookup => "lookup",
        }
    }
}

fn default_check_compatibility() -> bool {
    true
}

fn default_registry_retry_for() -> Duration {
    Duration::from_secs(60)
}

fn default_registry_request_timeout() -> Duration {
    Duration::from_secs(10)
}

/// Where events go.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SinkConfig {
    /// `kafka`, `nats` or `stdout`.
    pub kind: SinkKind,
    /// Topic / subject for each record. Placeholders: `{source}`, `{version}`, `{tenant}`.
    pub topic_template: String,
    /// Topic / subject for payloads that could not be relayed (raw bytes kept).
    pub deadletter_topic: String,
    /// Largest raw payload kept in a dead letter; a longer one keeps its first
    /// this-many bytes and says so in `studio_relay_payload_bytes` /
    /// `studio_relay_truncated`. Keep it below the broker's message limit
    /// (NATS `max_payload` 1 MiB, Kafka `message.max.bytes` 1 MB by default);
    /// where the broker's known limit is lower, the dead letter is cut to it.
    pub deadletter_max_bytes: usize,
    /// Topic / subject for control events (gap markers).
    pub control_topic: String,
    /// Kafka producer settings (used when `kind = "kafka"`).
    pub kafka: KafkaConfig,
    /// NATS settings (used when `kind = "nats"`).
    pub nats: NatsConfig,
}

impl Default for SinkConfig {
    fn default() -> Self {
        SinkConfig {
            kind: SinkKind::Stdout,
            topic_template: "telavox.studio.{source}.v{version}".into(),
            deadletter_topic: "telavox.studio.deadletter".into(),
            deadletter_max_bytes: 900 * 1024,
            control_topic: "telavox.studio.control".into(),
            kafka: KafkaConfig::default(),
            nats: NatsConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkKind {
    Kafka,
    Nats,
    #[default]
    Stdout,
}

/// Kafka producer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// `bootstrap.servers`.
    pub brokers: String,
    /// `compression.type`: none, gzip, snappy, lz4, zstd.
    pub compression: String,
    /// `linger.ms`: how long the producer waits to fill a batch.
    pub linger_ms: u64,
    /// `batch.size` in bytes.
    pub batch_bytes: u64,
    /// `message.timeout.ms`: a message not acknowledged within this is a failed publish.
    pub message_timeout_ms: u64,
    /// Create missing topics at start-up.
    pub create_topics: bool,
    /// Partitions of created topics.
    pub partitions: i32,
    /// Replication factor of created topics; -1 takes the cluster's
    /// `default.replication.factor` (the platform team's choice), which is
    /// what a multi-broker cluster should decide rather than the relay.
    pub replication_factor: i32,
    /// `cleanup.policy` of created topics (`delete` or `compact`).
    pub cleanup_policy: String,
    /// Further topic configs for created topics (`retention.ms`,
    /// `min.insync.replicas`, `max.message.bytes`, …), applied after
    /// `cleanup_policy`. Existing topics are never altered.
    pub topic_config: BTreeMap<String, String>,
    /// Replication factor of the checkpoint topic when the relay creates it;
    /// -1 takes the cluster's `default.replication.factor`.
    pub checkpoint_replication_factor: i32,
    /// How often librdkafka reports its statistics (queue depth, round-trip
    /// times, batch sizes, errors per broker) to `/metrics`; `0s` turns them off.
    #[serde(with = "humantime_serde")]
    pub statistics_interval: Duration,
    /// librdkafka properties, applied after the relay's own settings so any of
    /// them can be tuned (SASL, TLS, `linger.ms`, …). A setting that weakens
    /// delivery (`acks`, `enable.idempotence`) is logged once at start-up.
    /// Values whose key contains `password`, `secret` or `token` are redacted in output.
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "127.0.0.1:9092".into(),
            compression: "lz4".into(),
            linger_ms: 5,
            batch_bytes: 1_000_000,
            message_timeout_ms: 300_000,
            create_topics: false,
            partitions: 6,
            replication_factor: -1,
            cleanup_policy: "delete".into(),
            topic_config: BTreeMap::new(),
            checkpoint_replication_factor: -1,
            statistics_interval: Duration::from_secs(15),
            properties: BTreeMap::new(),
        }
    }
}

/// NATS connection and JetStream stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsConfig {
    /// Server URL(s), comma separated.
    pub url: String,
    /// Publish with JetStream (acknowledged, deduplicated by `Nats-Msg-Id`).
    /// When false, core NATS publish (no acknowledgement: at most once).
    pub jetstream: bool,
    /// Create the stream at start-up when it is missing. An existing stream
    /// is never altered (differences from these settings are logged); it
    /// must capture every destination subject, or start-up fails.
    pub create_stream: bool,
    /// Stream name.
    pub stream: String,
    /// Subjects the stream captures.
    pub stream_subjects: Vec<String>,
    /// JetStream duplicate window (dedup by `Nats-Msg-Id`).
    #[serde(with = "humantime_serde")]
    pub duplicate_window: Duration,
    /// `limits`, `interest` or `workqueue`.
    pub retention: String,
    /// `file` or `memory`.
    pub storage: String,
    /// Replicas of the stream when the relay creates it; 0: as many as the
    /// cluster has servers, at most 3 (1 on a single server).
    pub replicas: usize,
    /// Replicas of the checkpoint KV bucket when the relay creates it; 0: as
    /// for `replicas`.
    pub kv_replicas: usize,
    /// Maximum publishes awaiting their PubAck at once.
    pub max_pending_acks: usize,
    /// Token authentication.
    pub token: Option<Secret>,
    /// User/password authentication.
    pub user: Option<String>,
    pub password: Option<Secret>,
    /// `.creds` file (JWT + nkey seed).
    pub credentials_file: Option<PathBuf>,
    /// NKey seed file.
    pub nkey_file: Option<PathBuf>,
    /// CA certificate to verify the server with.
    pub tls_ca_file: Option<PathBuf>,
    /// Client certificate and key for mutual TLS.
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    /// Require TLS.
    pub tls_required: bool,
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            url: "nats://127.0.0.1:4222".into(),
            jetstream: true,
            create_stream: true,
            stream: "TELAVOX_STUDIO".into(),
            stream_subjects: vec!["telavox.studio.>".into()],
            duplicate_window: Duration::from_secs(2 * 3600),
            retention: "limits".into(),
            storage: "file".into(),
            replicas: 0,
            kv_replicas: 0,
            max_pending_acks: 256,
            token: None,
            user: None,
            password: None,
            credentials_file: None,
            nkey_file: None,
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            tls_required: false,
        }
    }
}

/// The live pipeline.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelayConfig {
    /// Events buffered in memory between the sockets and the sink. When full,
    /// socket reads pause (backpressure); nothing is dropped.
    pub queue_capacity: usize,
    /// On SIGTERM: how long to drain in-flight events and flush the producer.
    /// Keep it below the pod's `terminationGracePeriodSeconds`.
    #[serde(with = "humantime_serde")]
    pub shutdown_deadline: Duration,
    /// After a socket of calls, queues, agents or profile_history was down,
    /// fetch the gap from GraphQL and publish it (origin `backfill`);
    /// profile_live gaps become a marker on `sink.control_topic`.
    pub gap_backfill: bool,
    /// The gap is widened by this on both sides (upstream time). Records are
    /// found by their start time, so this should exceed the longest call.
    #[serde(with = "humantime_serde")]
    pub gap_margin: Duration,
    /// The gap is queried a second time after this (historic data can lag
    /// the live stream). `0s` disables the second pass.
    #[serde(with = "humantime_serde")]
    pub gap_recheck_after: Duration,
    /// Event ids remembered after their acknowledgement, so a backfill does
    /// not publish what the live stream delivered (Kafka has no broker-side
    /// dedup). About 32 bytes each.
    pub recent_ids: usize,
    /// Where the restart checkpoint lives: per tenant, the upstream time up to
    /// which everything received is on the broker; on start the relay
    /// backfills from there (needs `gap_backfill`). `broker`: in the broker
    /// itself (a NATS KV bucket or a compacted Kafka topic, both named
    /// `checkpoint_store`), so a rescheduled pod finds it again; with the
    /// stdout sink, which has no broker, this means `off`. `file`: in
    /// `checkpoint_file`. `off`: no checkpoint (a restart backfills nothing).
    pub checkpoint: CheckpointMode,
    /// The NATS KV bucket or Kafka topic (`cleanup.policy=compact`) holding
    /// the checkpoints with `checkpoint = "broker"`; created when missing.
    /// Letters, digits, `-` and `_`.
    pub checkpoint_store: String,
    /// The key of this relay deployment's checkpoint in `checkpoint_store`.
    /// Two relays sharing a broker must use different keys, or each resumes
    /// from the other's checkpoint. Letters, digits, `.`, `-` and `_`.
    pub checkpoint_key: String,
    /// Restart checkpoint file (on a volume), used with `checkpoint = "file"`.
    pub checkpoint_file: String,
    /// On-disk spool directory (on a volume): messages beyond the in-memory
    /// queue go there while the broker is away, so the sockets keep being
    /// read; drained in order, and first after a restart. Empty: no spool
    /// (a full queue pauses the sockets).
    pub spool_dir: String,
    /// Spool size limit; when reached, the queue applies back-pressure.
    pub spool_max_bytes: u64,
    /// fsync every spooled message (survives power loss, slower); otherwise
    /// the OS flushes (survives a crash of the relay).
    pub spool_fsync: bool,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            queue_capacity: 10_000,
            shutdown_deadline: Duration::from_secs(20),
            gap_backfill: true,
            gap_margin: Duration::from_secs(3600),
            gap_recheck_after: Duration::from_secs(300),
            recent_ids: 200_000,
            checkpoint: CheckpointMode::Broker,
            checkpoint_store: "studio-relay-checkpoints".into(),
            checkpoint_key: "studio-relay".into(),
            checkpoint_file: String::new(),
            spool_dir: String::new(),
            spool_max_bytes: 1 << 30,
            spool_fsync: false,
        }
    }
}

/// Where the restart checkpoint is kept (`relay.checkpoint`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckpointMode {
    /// In the broker: a NATS KV bucket or a compacted Kafka topic.
    #[default]
    Broker,
    /// In `relay.checkpoint_file`.
    File,
    /// No checkpoint.
    Off,
}

impl CheckpointMode {
    /// The value as written in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckpointMode::Broker => "broker",
            CheckpointMode::File => "file",
            CheckpointMode::Off => "off",
        }
    }
}

/// Metrics and health.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OpsConfig {
    /// Address of `/metrics`, `/healthz` and `/readyz`. Empty disables it.
    pub listen: String,
    /// The `tenant` label of the per-event metrics (frames, published,
    /// dead letters, suppressed, ...): `name`, `hashed` (one of
    /// `tenant_label_buckets` buckets, `b0`, `b1`, ...) or `none` (left
    /// empty). Per-tenant state (`socket_connected`, `tenant_state`,
    /// `reconnects_total`, staleness, checkpoints) always carries the name.
    pub tenant_label: TenantLabelMode,
    /// Buckets of `tenant_label = "hashed"`.
    pub tenant_label_buckets: u16,
}

impl Default for OpsConfig {
    fn default() -> Self {
        OpsConfig {
            listen: "127.0.0.1:9464".into(),
            tenant_label: TenantLabelMode::Name,
            tenant_label_buckets: 32,
        }
    }
}

/// See [`OpsConfig::tenant_label`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TenantLabelMode {
    #[default]
    Name,
    Hashed,
    None,
}
