//! The publishing path below both commands (`run` and `replay`): from a
//! normalized record to a message acknowledged by the broker.
//!
//! ```text
//! live frame ──(frames)──┐
//!                        ├─▶ MessageBuilder ──Outgoing──▶ Intake ──▶ publisher ──▶ Sink
//! historic page ─(window)┘   encode + headers           queue, or     ordered send,
//!                            (dead letters: dead_letter) the spool    windowed acks,
//!                                                        when full    retries, DLQ
//! ```
//!
//! - [`pipeline`]: the one place encoder → builder → publisher is put together.
//! - [`outgoing`]: a message on its way, with its [`Origin`] and accounting.
//! - [`message_builder`]: pure: envelope → message, dead letters, gap markers.
//! - [`dead_letter`]: every dead letter is made here, counted and logged.
//! - [`frames`]: one live frame → its messages.
//! - [`window`]: the historic window walk (replay and gap backfill).
//! - [`on_broker`]: what is on the destinations already (replay).
//! - [`recent_ids`]: bounded memories of ids already taken.
//! - [`spool`]: [`Intake`], the way in, through the on-disk spool when the
//!   queue is full.
//! - [`publisher`]: the ordered send loop.

pub mod dead_letter;
pub mod frames;
pub mod message_builder;
pub mod on_broker;
pub mod outgoing;
pub mod pipeline;
pub mod publisher;
pub mod recent_ids;
pub mod spool;
#[cfg(test)]
pub(crate) mod test_support;
pub mod window;

pub use message_builder::MessageBuilder;
pub use outgoing::{BatchTracker, HandOver, Origin, Outgoing, StageTimes};
pub use pipeline::{Pipeline, PipelineError, PipelineSettings};
pub use publisher::{PublisherSettings, PublisherStats};
pub use recent_ids::RecentIds;
pub use spool::{Intake, SpoolSettings};
