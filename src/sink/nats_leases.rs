//! Shard leases in a NATS KV bucket (see [`super::leases`]).
//!
//! Keys: `members.<member>` (a member's heartbeat) and `shards.<n>` (the
//! member owning shard `n`). The bucket's `max_age` is the lease TTL, so a
//! key its writer stopped refreshing disappears. Every tick (a third of the
//! TTL) a member refreshes its heartbeat, lists the live members, and for
//! each shard compares the owner it should have ([`owner_of`]) with the key:
//! it refreshes the shards it holds (compare-and-set on the revision it
//! wrote: a failure means the lease is gone and the shard is given up at
//! once), hands over a shard that ranks another member first (its tenants
//! stopped first, then the key deleted), and creates the key of a shard
//! that is its own and free. A member that cannot refresh for a whole TTL
//! gives up everything it holds: another member may own it by then.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream::kv;
use bytes::Bytes;
use futures::TryStreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::leases::{owner_of, GroupSettings, LeaseEvent};
use crate::ops::internal_events::{LeaseLost, LeaseStoreFailed};

const MEMBERS: &str = "members.";
const SHARDS: &str = "shards.";

/// Keeps this member's leases in `store` until `leave`, then gives them up.
pub(super) async fn run(
    store: kv::Store,
    settings: GroupSettings,
    shards: u32,
    events: mpsc::UnboundedSender<LeaseEvent>,
    leave: CancellationToken,
) {
    let mut leases = Leases {
        store,
        me: settings.member.clone(),
        shards,
        events,
        held: BTreeMap::new(),
        last_refresh: Instant::now(),
        ttl: settings.lease_ttl,
    };
    let tick = settings.lease_ttl / 3;
    let mut failing = false;
    loop {
        match leases.round().await {
            Ok(()) => failing = false,
            Err(e) => {
                if !failing {
                    LeaseStoreFailed { error: &e }.emit();
                }
                failing = true;
                leases.give_up_if_expired();
            }
        }
        tokio::select! {
            _ = leave.cancelled() => break,
            _ = tokio::time::sleep(tick) => {}
        }
    }
    leases.leave().await;
}

struct Leases {
    store: kv::Store,
    me: String,
    shards: u32,
    events: mpsc::UnboundedSender<LeaseEvent>,
    /// Held shards, with the revision this member last wrote.
    held: BTreeMap<u32, u64>,
    /// When every held lease was last refreshed.
    last_refresh: Instant,
    ttl: Duration,
}

impl Leases {
    /// One pass: heartbeat, then each shard settled against its owner.
    async fn round(&mut self) -> Result<(), String> {
        self.store
            .put(
                format!("{MEMBERS}{}", self.me),
                Bytes::from(self.me.clone()),
            )
            .await
            .map_err(|e| format!("heartbeat: {e}"))?;
        let members = self.members().await?;
        let mut acquired = Vec::new();
        let mut handed_over = Vec::new();
        for shard in 0..self.shards {
            let mine = owner_of(shard, &members) == Some(self.me.as_str());
            match (self.held.get(&shard).copied(), mine) {
                (Some(revision), true) => self.refresh(shard, revision).await?,
                (Some(revision), false) => handed_over.push((shard, revision)),
                (None, true) => {
                    if self.try_acquire(shard).await? {
                        acquired.push(shard);
                    }
                }
                (None, false) => {}
            }
        }
        self.last_refresh = Instant::now();
        if !acquired.is_empty() {
            let _ = self.events.send(LeaseEvent::Acquired(acquired));
        }
        if !handed_over.is_empty() {
            self.hand_over(handed_over).await;
        }
        Ok(())
    }

    /// The members whose heartbeat has not expired, this one included.
    async fn members(&self) -> Result<Vec<String>, String> {
        let keys: Vec<String> = self
            .store
            .keys()
            .await
            .map_err(|e| format!("list members: {e}"))?
            .try_collect()
            .await
            .map_err(|e| format!("list members: {e}"))?;
        let mut members: Vec<String> = keys
            .iter()
            .filter_map(|k| k.strip_prefix(MEMBERS))
            .map(str::to_string)
            .collect();
        if !members.contains(&self.me) {
            members.push(self.me.clone());
        }
        Ok(members)
    }

    /// Rewrites a held lease on the revision this member wrote; if another
    /// wrote since (or it expired), the shard is lost.
    async fn refresh(&mut self, shard: u32, revision: u64) -> Result<(), String> {
        let key = format!("{SHARDS}{shard}");
        match self
            .store
            .update(&key, Bytes::from(self.me.clone()), revision)
            .await
        {
            Ok(r) => {
                self.held.insert(shard, r);
                Ok(())
            }
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                self.lose(vec![shard], &e.to_string());
                Ok(())
            }
            Err(e) => Err(format!("refresh {key}: {e}")),
        }
    }

    /// Creates the key of a free shard; false when another member holds it
    /// (it is handing it over, or its lease has not expired yet).
    async fn try_acquire(&mut self, shard: u32) -> Result<bool, String> {
        let key = format!("{SHARDS}{shard}");
        match self.store.create(&key, Bytes::from(self.me.clone())).await {
            Ok(r) => {
                self.held.insert(shard, r);
                Ok(true)
            }
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(format!("acquire {key}: {e}")),
        }
    }

    /// Stops the shards' tenants, then deletes their keys for the next
    /// owner to create.
    async fn hand_over(&mut self, shards: Vec<(u32, u64)>) {
        let (released, done) = oneshot::channel();
        let ids = shards.iter().map(|(s, _)| *s).collect();
        if self
            .events
            .send(LeaseEvent::Revoked {
                shards: ids,
                released,
            })
            .is_ok()
        {
            let _ = done.await;
        }
        for (shard, revision) in shards {
            self.held.remove(&shard);
            let key = format!("{SHARDS}{shard}");
            // A failure leaves the key to expire: the next owner waits a TTL.
            if let Err(e) = self
                .store
                .delete_expect_revision(&key, Some(revision))
                .await
            {
                LeaseStoreFailed {
                    error: &format!("release {key}: {e}"),
                }
                .emit();
            }
        }
    }

    /// Shards whose lease is gone: their tenants stop at once.
    fn lose(&mut self, shards: Vec<u32>, why: &str) {
        for s in &shards {
            self.held.remove(s);
        }
        LeaseLost {
            shards: shards.len(),
            error: why,
        }
        .emit();
        let (released, _) = oneshot::channel();
        let _ = self.events.send(LeaseEvent::Revoked { shards, released });
    }

    /// Unrefreshed for a TTL, the leases may be another member's by now.
    fn give_up_if_expired(&mut self) {
        if !self.held.is_empty() && self.last_refresh.elapsed() >= self.ttl {
            let shards = self.held.keys().copied().collect();
            self.lose(shards, "not refreshed within ha.lease_ttl");
        }
    }

    /// Leaving: the leases are deleted so the others take over at their
    /// next tick rather than after a TTL.
    async fn leave(mut self) {
        let held = std::mem::take(&mut self.held);
        for (shard, revision) in held {
            let _ = self
                .store
                .delete_expect_revision(format!("{SHARDS}{shard}"), Some(revision))
                .await;
        }
        let _ = self.store.delete(format!("{MEMBERS}{}", self.me)).await;
    }
}
