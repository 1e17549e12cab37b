//! Shard leases as Kafka consumer-group membership (see [`super::leases`]).
//!
//! The coordination topic's partitions are the shards. Every replica
//! subscribes to it in one consumer group; the group coordinator assigns
//! the partitions (cooperative-sticky: a member joining or leaving moves
//! only the partitions it gains or held), and a member that stops
//! heartbeating is expelled after `session.timeout.ms` (`ha.lease_ttl`).
//! The topic carries no messages: membership is all it is for.
//!
//! The consumer is polled on a thread of its own. A revocation is reported
//! from inside the rebalance callback, which waits for the answer: the
//! coordinator gives the partitions to another member only after this one
//! has stopped the shards' tenants.

use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::TopicPartitionList;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::leases::{GroupSettings, LeaseEvent};
use super::{SinkError, SinkErrorKind};
use crate::ops::internal_events::LeaseStoreFailed;

/// Reports rebalances as lease events.
struct GroupContext {
    events: mpsc::UnboundedSender<LeaseEvent>,
}

impl ClientContext for GroupContext {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        LeaseStoreFailed {
            error: &format!("{error}: {reason}"),
        }
        .emit();
    }
}

fn shards(tpl: &TopicPartitionList) -> Vec<u32> {
    tpl.elements()
        .iter()
        .filter_map(|e| u32::try_from(e.partition()).ok())
        .collect()
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(tpl) = rebalance else {
            return;
        };
        let shards = shards(tpl);
        if shards.is_empty() {
            return;
        }
        let (released, done) = oneshot::channel();
        if self
            .events
            .send(LeaseEvent::Revoked { shards, released })
            .is_ok()
        {
            // Bounded by the relay's handoff timeout; an error means the
            // relay is gone (shutting down), which is an answer too.
            let _ = done.blocking_recv();
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let shards = shards(tpl);
            if !shards.is_empty() {
                let _ = self.events.send(LeaseEvent::Acquired(shards));
            }
        }
    }
}

/// Joins the group and keeps polling (heartbeats, rebalances) until
/// `leave`; then leaves, so the others rebalance at once.
pub(super) fn join(
    mut config: ClientConfig,
    settings: &GroupSettings,
    events: mpsc::UnboundedSender<LeaseEvent>,
    leave: CancellationToken,
    has_left: oneshot::Sender<()>,
) -> Result<(), SinkError> {
    let ttl = settings.lease_ttl.as_millis().max(1000);
    config
        .set("group.id", &settings.group)
        .set("client.id", format!("studio-relay/{}", settings.member))
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("session.timeout.ms", ttl.to_string())
        .set("heartbeat.interval.ms", (ttl / 6).max(100).to_string())
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false");
    let consumer: BaseConsumer<GroupContext> = config
        .create_with_context(GroupContext { events })
        .map_err(|e| {
            SinkError::new(
                SinkErrorKind::Config,
                format!(
                    "cannot create the consumer of group {}: {e}",
                    settings.group
                ),
            )
        })?;
    consumer.subscribe(&[&settings.topic]).map_err(|e| {
        SinkError::new(
            SinkErrorKind::Config,
            format!("cannot subscribe to {}: {e}", settings.topic),
        )
    })?;
    std::thread::Builder::new()
        .name("studio-relay-group".into())
        .spawn(move || {
            while !leave.is_cancelled() {
                // The topic holds no messages: a poll serves heartbeats and
                // rebalance callbacks.
                let _ = consumer.poll(Duration::from_millis(200));
            }
            // Dropping the consumer closes it: it leaves the group.
            drop(consumer);
            let _ = has_left.send(());
        })
        .map_err(|e| SinkError::new(SinkErrorKind::Config, format!("group thread: {e}")))?;
    Ok(())
}
