//! studio-relay bridges the Telavox Studio API to Kafka topics and NATS subjects.
//!
//! The modules follow the path of an event:
//!
//! - [`upstream`]: talking to Telavox. [`upstream::live`] keeps the WebSockets
//!   connected (backoff, ping/pong liveness), through the environment's
//!   proxy when it names one ([`upstream::egress`]); [`upstream::historic`]
//!   walks the GraphQL API page by page.
//! - [`model`]: the canonical records, the normalizers from live (snake_case)
//!   and historic (camelCase) JSON, and each record's event id and match key.
//!   Pure: no I/O, no async.
//! - [`encode`]: Avro (Confluent wire format or single-object) and JSON
//!   encodings, CloudEvents headers, destinations. Pure.
//! - [`sink`]: one [`sink::Sink`] trait; Kafka, NATS (JetStream or core) and
//!   stdout implementations, and the leases replicas share tenants by.
//! - [`publish`]: the publishing path both commands share: encoder →
//!   message builder → intake (and spool) → publisher (ordered send,
//!   windowed acks, retries, dead letters), the live frame and historic
//!   window steps that feed it, and the one place it is put together.
//! - [`relay`]: `run`'s wiring: sockets → processor → publishing path, the
//!   tenants' supervisor and their moves between replicas, the upstream
//!   clock, gap backfill and the restart checkpoint.
//! - [`replay`]: `replay`'s wiring: windows → publishing path, its
//!   checkpoint file and its record of what it published.
//! - [`simulator`]: a faithful local Studio API (`simulate`). Only the CLI and
//!   the tests use it; the relay never depends on it.
//! - [`registry`]: Confluent Schema Registry client (start-up registration).
//! - [`ops`]: metrics, health endpoints, logging, shutdown.
//! - [`config`]: the TOML file plus `STUDIO_RELAY__*` environment overrides.
//! - [`cli`]: the command line (arguments, printing, exit codes); `main.rs`
//!   only sets the allocator and calls [`cli::main`].
//!
//! `ARCHITECTURE.md` at the repository root has the longer tour.

pub mod cli;
pub mod config;
pub mod encode;
pub mod model;
pub mod ops;
pub mod publish;
pub mod registry;
pub mod relay;
pub mod replay;
pub mod simulator;
pub mod sink;
pub mod upstream;
