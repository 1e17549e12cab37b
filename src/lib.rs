//! studio-relay bridges the Telavox Studio API to Kafka topics and NATS subjects.
//!
//! The modules follow the path of an event:
//!
//! - [`upstream`]: talking to Telavox. [`upstream::live`] keeps the WebSockets
//!   connected (backoff, ping/pong liveness); [`upstream::historic`] walks the
//!   GraphQL API page by page.
//! - [`model`]: the canonical records and the normalizers from live (snake_case)
//!   and historic (camelCase) JSON. Pure: no I/O, no async.
//! - [`encode`]: Avro (Confluent wire format or single-object) and JSON
//!   encodings, event ids, CloudEvents headers, destinations. Pure.
//! - [`sink`]: one [`sink::Sink`] trait; Kafka, NATS (JetStream or core) and
//!   stdout implementations; the dead-letter path.
//! - [`relay`]: the live pipeline (`run`): sockets → normalize → encode → sink.
//! - [`replay`]: the historic backfill command (`replay`).
//! - [`simulator`]: a faithful local Studio API (`simulate`). Only the CLI and
//!   the tests use it; the relay never depends on it.
//! - [`registry`]: Confluent Schema Registry client (start-up registration).
//! - [`ops`]: metrics, health endpoints, logging, shutdown.
//! - [`config`]: the TOML file plus `STUDIO_RELAY__*` environment overrides.
//! - [`cli`]: the command line; `main.rs` only sets the allocator and calls
//!   [`cli::main`].
//!
//! `ARCHITECTURE.md` at the repository root has the longer tour.

pub mod cli;
pub mod config;
pub mod encode;
pub mod model;
pub mod ops;
pub mod registry;
pub mod relay;
pub mod replay;
pub mod simulator;
pub mod sink;
pub mod upstream;
