//! Replay's own record, per destination and window, of the event ids it
//! published, kept in the broker's state store.

use bytes::Bytes;

use crate::publish::recent_ids::RecentIds;
use crate::sink::{SinkError, StateStore};

/// Replay's durable record of the event ids it published into one
/// destination for one window, in the broker's state store (NATS KV bucket
/// or compacted Kafka topic `relay.checkpoint_store`): a rerun of the
/// window skips them however long ago they were published, on Kafka (no
/// dedup) and on NATS past the duplicate window alike. The value is the
/// ids as 16-byte binary, sorted.
pub struct PublishedRecord<'a> {
    pub store: Option<&'a dyn StateStore>,
    pub key: String,
}

impl PublishedRecord<'_> {
    /// The ids recorded for this window.
    pub async fn load(&self) -> Result<RecentIds, SinkError> {
        let ids = RecentIds::new(usize::MAX);
        let Some(store) = self.store else {
            return Ok(ids);
        };
        if let Some(value) = store.get(&self.key).await? {
            for id in value.chunks_exact(16) {
                ids.insert(&hex::encode(id));
            }
        }
        Ok(ids)
    }

    /// Records `prior` and `covered` together, when `covered` adds any.
    pub async fn save(&self, prior: &RecentIds, covered: &[String]) -> Result<(), SinkError> {
        let Some(store) = self.store else {
            return Ok(());
        };
        if covered.iter().all(|id| prior.contains(id)) {
            return Ok(());
        }
        let mut all: Vec<[u8; 16]> = prior
            .ids()
            .into_iter()
            .chain(covered.iter().filter_map(|id| {
                let mut b = [0u8; 16];
                hex::decode_to_slice(id, &mut b).ok().map(|()| b)
            }))
            .collect();
        all.sort_unstable();
        all.dedup();
        store.put(&self.key, Bytes::from(all.concat())).await
    }
}
