//! Which tenants this replica runs when replicas share them (`ha`), and how
//! a tenant moves between replicas.
//!
//! The leases (see [`crate::sink::leases`]) say which shards this replica
//! owns; it runs the known tenants (config and token directory) whose shard
//! it owns. A tenant taken over resumes as after a restart, but alone: its
//! checkpoint is loaded, the event ids and match keys already on the broker
//! since then are read back (so neither its first live pushes nor its
//! resume backfill publish again what its previous owner published), its
//! sockets' gaps open at the checkpoint, and then its sockets start. A
//! tenant handed over stops its sockets and fills, and the lease is given
//! up only once what they handed to the publisher is acknowledged (or
//! `ha.handoff_timeout` passed), so the next owner's read-back sees
//! everything this one published.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::model::DataSource;
use crate::ops::internal_events::{CheckpointLoaded, TenantCheckpointLoadFailed};
use crate::ops::Metrics;
use crate::publish::recent_ids;
use crate::publish::MessageBuilder;
use crate::relay::backfill::{self, Handover};
use crate::relay::checkpoint::CheckpointStore;
use crate::relay::processor::Barrier;
use crate::relay::processor::LiveMemory;
use crate::sink::leases::shard_of;
use crate::sink::Sink;

/// The shards this replica owns.
#[derive(Debug, Clone)]
pub struct Owned {
    shards: u32,
    owned: BTreeSet<u32>,
}

impl Owned {
    /// Owning nothing yet, of `shards`.
    pub fn none(shards: u32) -> Owned {
        Owned {
            shards,
            owned: BTreeSet::new(),
        }
    }

    pub fn owns(&self, tenant: &str) -> bool {
        self.owned.contains(&shard_of(tenant, self.shards))
    }

    pub fn in_shards(&self, tenant: &str, shards: &[u32]) -> bool {
        shards.contains(&shard_of(tenant, self.shards))
    }

    pub fn add(&mut self, shards: &[u32]) {
        self.owned.extend(shards);
    }

    pub fn remove(&mut self, shards: &[u32]) {
        for s in shards {
            self.owned.remove(s);
        }
    }
}

/// What taking tenants over and handing them over use.
pub struct Handovers {
    /// The tenants' checkpoints (per tenant keys in the broker).
    pub checkpoint: CheckpointStore,
    pub sink: Arc<dyn Sink>,
    pub builder: Arc<MessageBuilder>,
    /// The live path's memories, seeded at a takeover.
    pub memory: LiveMemory,
    /// `relay.gap_margin`.
    pub margin: Duration,
    /// Gap backfill's handovers.
    pub backfill: mpsc::UnboundedSender<Handover>,
    /// The live processor's barriers: answered once every frame queued
    /// before is acknowledged.
    pub barriers: mpsc::UnboundedSender<Barrier>,
    /// `ha.handoff_timeout`.
    pub handoff_timeout: Duration,
    pub metrics: Arc<Metrics>,
}

impl Handovers {
    /// Prepares `tenants` to start here: checkpoints loaded, memories
    /// seeded from the broker, gaps opened. Their sockets start after.
    pub async fn take_over(&self, tenants: &[(Arc<str>, Vec<DataSource>)]) {
        let mut from = HashMap::new();
        for (name, _) in tenants {
            match self.checkpoint.load_tenant(name).await {
                Ok(Some(mark)) => {
                    from.insert(name.to_string(), mark);
                }
                Ok(None) => {}
                Err(e) => TenantCheckpointLoadFailed {
                    tenant: name,
                    error: &e.to_string(),
                }
                .emit(),
            }
        }
        let loaded: Vec<(&str, i64)> = from
            .iter()
            .map(|(t, m)| (t.as_str(), m.upstream_ms))
            .collect();
        CheckpointLoaded {
            location: &self.checkpoint.location(),
            tenants: &loaded,
        }
        .emit(&self.metrics);
        if let Some(since) = backfill::seed_since(&from, self.margin) {
            let mut destinations: Vec<String> = tenants
                .iter()
                .flat_map(|(name, sources)| {
                    sources.iter().map(|&s| self.builder.destination(s, name))
                })
                .collect();
            destinations.sort();
            destinations.dedup();
            recent_ids::seed_from_broker(
                &self.memory.event_ids,
                &self.memory.match_keys,
                self.sink.as_ref(),
                &destinations,
                since,
                backfill::SEED_TIMEOUT,
                &self.metrics,
            )
            .await;
        }
        for (name, sources) in tenants {
            if let Some(&mark) = from.get(&**name) {
                let _ = self.backfill.send(Handover::Resumed {
                    tenant: name.clone(),
                    sources: sources.clone(),
                    from: mark,
                });
            }
        }
    }

    /// After `tenants`' sockets stopped: their fills stop, and this waits
    /// until what the fills and the sockets handed over is acknowledged
    /// (true), or the handoff timeout passed (false).
    pub async fn hand_over(&self, tenants: &[Arc<str>]) -> bool {
        let settled = async {
            for t in tenants {
                // Answered once the tenant's fills ended, which each do
                // once what they published is acknowledged.
                let (stopped, done) = oneshot::channel();
                let sent = self.backfill.send(Handover::Released {
                    tenant: t.clone(),
                    stopped,
                });
                if sent.is_ok() {
                    let _ = done.await;
                }
            }
            // The sockets' frames: all queued before this barrier.
            let (barrier, done) = oneshot::channel();
            if self.barriers.send(barrier).is_ok() {
                let _ = done.await;
            }
        };
        tokio::time::timeout(self.handoff_timeout, settled)
            .await
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replica_owns_the_tenants_of_its_shards() {
        let mut owned = Owned::none(8);
        assert!(!owned.owns("acme"));
        let shard = shard_of("acme", 8);
        owned.add(&[shard]);
        assert!(owned.owns("acme"));
        assert!(owned.in_shards("acme", &[shard]));
        owned.remove(&[shard]);
        assert!(!owned.owns("acme"));
    }
}
