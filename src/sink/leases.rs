//! Leases on the broker: which shards of the tenants this replica owns.
//!
//! Replicas of one deployment share its tenants through the broker they
//! publish to, with no coordination service of their own. Each tenant
//! hashes into one of a fixed number of shards; a [`Membership`] reports the
//! shards this replica is given ([`LeaseEvent::Acquired`]) and those it must
//! give up ([`LeaseEvent::Revoked`], answered once the shards' tenants are
//! stopped and their events acknowledged, so the next owner resumes from a
//! checkpoint that covers them).
//!
//! - Kafka (`kafka_group.rs`): the partitions of a coordination topic are
//!   the shards, assigned to the members of a consumer group by the group
//!   coordinator (cooperative-sticky: a rebalance moves only what it must),
//!   as Kafka Connect's workers share connectors. A member that stops
//!   heartbeating loses its partitions after `session.timeout.ms`.
//! - NATS (`nats_leases.rs`): one KV key per shard holds its owner, taken
//!   with compare-and-set and refreshed by the owner; the bucket's `max_age`
//!   expires a key whose owner stopped refreshing it. Members announce
//!   themselves under `members.*`, and each shard's owner is the live member
//!   that ranks highest for it ([`owner_of`], rendezvous hashing), so every
//!   member computes the same assignment and a new member takes its share.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::model::stable_hash;

/// What a replica needs to join its deployment's group.
#[derive(Debug, Clone)]
pub struct GroupSettings {
    /// Kafka: the consumer group.
    pub group: String,
    /// Kafka: the coordination topic (its partitions are the shards).
    pub topic: String,
    /// NATS: the KV bucket of the leases.
    pub bucket: String,
    /// Shards to create (Kafka: an existing topic's partition count wins).
    pub shards: u32,
    /// How long a silent member keeps its shards.
    pub lease_ttl: Duration,
    /// This member's name.
    pub member: String,
}

/// A change of the shards this replica owns.
#[derive(Debug)]
pub enum LeaseEvent {
    /// These shards are this replica's now.
    Acquired(Vec<u32>),
    /// These shards go to another replica: stop their tenants, then answer
    /// on `released` (or drop it). The lease is given up after the answer.
    Revoked {
        shards: Vec<u32>,
        released: oneshot::Sender<()>,
    },
}

/// This replica's place in the group.
pub struct Membership {
    /// How many shards the tenants hash into (the same on every member).
    pub shards: u32,
    /// Changes of what this replica owns, in order. Ends when the member
    /// left the group (its `leave` token cancelled).
    pub events: mpsc::UnboundedReceiver<LeaseEvent>,
    /// Where the leases are, for logs: `Kafka consumer group g on topic t`.
    pub describe: String,
    /// Answered once the member has left after `leave` (its leases given
    /// up, so the others need not wait for them to expire).
    pub left: oneshot::Receiver<()>,
}

/// The shard `tenant` belongs to.
pub fn shard_of(tenant: &str, shards: u32) -> u32 {
    (stable_hash(tenant) % u64::from(shards.max(1))) as u32
}

/// The member that owns `shard` among `members`: the one ranking highest
/// for it. Every member computes the same answer from the same list, and a
/// member joining or leaving moves only the shards it wins or held.
pub fn owner_of(shard: u32, members: &[String]) -> Option<&str> {
    members
        .iter()
        .max_by_key(|m| (score(shard, m), m.as_str()))
        .map(String::as_str)
}

/// How `member` ranks for `shard`. FNV-1a of names that differ in their
/// last characters differs in few bits; the SplitMix64 finalizer spreads
/// them over the whole word, so each member wins its share of shards.
fn score(shard: u32, member: &str) -> u64 {
    let mut z = stable_hash(member) ^ u64::from(shard).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A member name when the config has none: the host name (the pod's name on
/// Kubernetes) and a random suffix, so a restarted pod is a new member.
pub fn default_member_name() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.trim().is_empty())
        .unwrap_or_else(|| "studio-relay".into());
    let host: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("{host}-{:08x}", rand::random::<u32>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("relay-{i}")).collect()
    }

    fn owned(shards: u32, members: &[String]) -> Vec<String> {
        (0..shards)
            .map(|s| owner_of(s, members).unwrap().to_string())
            .collect()
    }

    #[test]
    fn every_shard_has_one_owner_and_the_shares_are_even() {
        for count in [2, 3, 4] {
            let m = members(count);
            let owners = owned(64, &m);
            let fair = 64 / count;
            for name in &m {
                let n = owners.iter().filter(|o| *o == name).count();
                assert!(
                    n * 3 >= fair * 2 && n * 3 <= fair * 4,
                    "{name} owns {n} of 64"
                );
            }
        }
    }

    #[test]
    fn a_member_joining_takes_shards_only_from_the_others_and_leaving_gives_back_only_its_own() {
        let three = members(3);
        let four = members(4);
        let before = owned(64, &three);
        let after = owned(64, &four);
        for (b, a) in before.iter().zip(&after) {
            assert!(a == b || a == "relay-3", "shard moved from {b} to {a}");
        }
        assert!(after.iter().any(|a| a == "relay-3"));
        // The order of the list does not matter.
        let mut shuffled = four.clone();
        shuffled.reverse();
        assert_eq!(owned(64, &shuffled), after);
    }

    #[test]
    fn tenants_spread_over_shards_the_same_everywhere() {
        assert_eq!(shard_of("acme", 64), shard_of("acme", 64));
        let used: std::collections::BTreeSet<u32> =
            (0..30).map(|i| shard_of(&format!("t{i}"), 64)).collect();
        assert!(used.len() > 15, "30 tenants in {} shards", used.len());
        assert_eq!(shard_of("acme", 1), 0);
    }

    #[test]
    fn a_default_member_name_is_unique_per_process_start() {
        let (a, b) = (default_member_name(), default_member_name());
        assert_ne!(a, b);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    }
}
