//! The field tree of each source ([`super::schema::fields`]) compiled once
//! for the per-event path: each level's key → field tables (live and
//! historic), the folded list fields, every field's `"name":` JSON text,
//! and the index paths of the partition key and the event time. Built
//! lazily, then shared read-only by every thread.

use std::sync::OnceLock;

use super::schema::{self, Field, Ty, FOLDED};
use super::DataSource;

/// One level of the field tree (the top of a record, or a nested record).
pub(crate) struct Level {
    pub fields: &'static [Field],
    /// The compiled level of each `Record`/`RecordList` field's items.
    subs: Vec<Option<Level>>,
    /// `"name":` per field, escaped exactly as serde_json writes keys.
    json_keys: Vec<Box<[u8]>>,
    /// Per field: present in both layers (feeds the event id).
    in_both: Vec<bool>,
    live: KeyIndex,
    historic: KeyIndex,
    /// Per [`FOLDED`] entry: the index of its list field at this level.
    folded: [Option<usize>; FOLDED.len()],
    /// Slots of a record of this level with every nested record present
    /// (lists not counted): what a record's arena reserves.
    slot_count: usize,
    /// `StrList` fields of such a record: the arena reserves a few items each.
    str_list_count: usize,
}

/// Layer key → index of the first field carrying it, bucketed by key
/// length: a level has a few dozen keys and rarely more than two of one
/// length, so a lookup is an index and a compare or two (no hashing).
#[derive(Default)]
struct KeyIndex {
    by_len: Vec<Vec<(&'static [u8], usize)>>,
}

impl KeyIndex {
    fn insert(&mut self, key: &'static str, i: usize) {
        let k = key.as_bytes();
        if self.by_len.len() <= k.len() {
            self.by_len.resize_with(k.len() + 1, Vec::new);
        }
        let bucket = &mut self.by_len[k.len()];
        // The first field with a key wins, as a front-to-back search would.
        if !bucket.iter().any(|(b, _)| *b == k) {
            bucket.push((k, i));
        }
    }

    fn get(&self, key: &str) -> Option<usize> {
        let k = key.as_bytes();
        self.by_len
            .get(k.len())?
            .iter()
            .find(|(b, _)| *b == k)
            .map(|(_, i)| *i)
    }
}

impl Level {
    fn build(fields: &'static [Field]) -> Level {
        let mut live = KeyIndex::default();
        let mut historic = KeyIndex::default();
        for (i, f) in fields.iter().enumerate() {
            if let Some(k) = &f.live {
                live.insert(k, i);
            }
            if let Some(k) = &f.historic {
                historic.insert(k, i);
            }
        }
        let mut folded = [None; FOLDED.len()];
        for (slot, (_, name, _)) in folded.iter_mut().zip(FOLDED.iter()) {
            *slot = fields.iter().position(|f| f.name == *name);
        }
        let subs: Vec<Option<Level>> = fields
            .iter()
            .map(|f| match &f.ty {
                Ty::Record(sub) | Ty::RecordList(sub) => Some(Level::build(sub)),
                _ => None,
            })
            .collect();
        let nested = |count: fn(&Level) -> usize| -> usize {
            fields
                .iter()
                .zip(&subs)
                .filter_map(|(f, sub)| match (&f.ty, sub) {
                    (Ty::Record(_), Some(l)) => Some(count(l)),
                    _ => None,
                })
                .sum()
        };
        let own_str_lists = fields.iter().filter(|f| f.ty == Ty::StrList).count();
        Level {
            fields,
            slot_count: fields.len() + nested(|l| l.slot_count),
            str_list_count: own_str_lists + nested(|l| l.str_list_count),
            subs,
            json_keys: fields
                .iter()
                .map(|f| {
                    let mut k = Vec::with_capacity(f.name.len() + 3);
                    super::write_json_str(&mut k, &f.name);
                    k.push(b':');
                    k.into_boxed_slice()
                })
                .collect(),
            // Account ids are left out of the cross-layer match key: the
            // reference (§3.1) calls the live `account_id` "the reliable
            // source", so the historic `accountId` may differ, and the two
            // versions of one record must still match (else backfill would
            // publish a record the live stream delivered).
            in_both: fields
                .iter()
                .map(|f| f.in_both() && f.name != "account_id")
                .collect(),
            live,
            historic,
            folded,
        }
    }

    pub fn slot_count(&self) -> usize {
        self.slot_count
    }

    pub fn str_list_count(&self) -> usize {
        self.str_list_count
    }

    /// The compiled level of field `i`'s record (or list items).
    pub fn sub(&self, i: usize) -> Option<&Level> {
        self.subs[i].as_ref()
    }

    pub fn json_key(&self, i: usize) -> &[u8] {
        &self.json_keys[i]
    }

    pub fn in_both(&self, i: usize) -> bool {
        self.in_both[i]
    }

    /// The field a payload key names, in the live or the historic layer.
    pub fn index(&self, live: bool, key: &str) -> Option<usize> {
        let map = if live { &self.live } else { &self.historic };
        map.get(key)
    }

    /// `extra_profile_available_3` → (index of the folded list field, 3).
    pub fn fold_slot(&self, key: &str) -> Option<(usize, usize)> {
        let (j, (prefix, _, max)) = FOLDED
            .iter()
            .enumerate()
            .find(|(_, (p, _, _))| key.starts_with(p))?;
        let n: usize = key[prefix.len()..].parse().ok()?;
        if n == 0 || n > *max {
            return None;
        }
        Some((self.folded[j]?, n))
    }

    /// Index path of a field given by canonical names.
    fn path(&self, names: &[&str]) -> Option<Vec<usize>> {
        let mut level = self;
        let mut out = Vec::new();
        for (depth, name) in names.iter().enumerate() {
            let i = level.fields.iter().position(|f| f.name == *name)?;
            out.push(i);
            if depth + 1 < names.len() {
                level = level.sub(i)?;
            }
        }
        Some(out)
    }
}

/// One source's compiled tree plus the paths its envelope reads.
pub(crate) struct Compiled {
    pub root: Level,
    /// Partition key: `id_call`, or the agent id for profile sources.
    pub key_path: Option<Vec<usize>>,
    /// The record's own time.
    pub time_path: Option<Vec<usize>>,
    /// [`expected`] fields: (dotted name, index path).
    pub expected: Vec<(&'static str, Vec<usize>)>,
}

/// Fields a whole live document of `source` carries at every push: those
/// the reference's sample payloads (§2.1, §2.3, §2.4, pushed as a call
/// starts or a profile changes) carry, and what the cadence names (a queue
/// record fires as a call enters a queue; a profile_history record is one
/// agent's slot). The relay takes each push as the whole document; one
/// without these looks like a partial update (docs/upstream-contract.md).
fn expected(source: DataSource) -> &'static [&'static str] {
    match source {
        DataSource::Calls => &[
            "id_call",
            "call_direction",
            "customer_telavox",
            "time.start",
        ],
        DataSource::Queues => &["id_call", "queue", "time.start"],
        DataSource::Agents => &["id_call", "call_direction", "agent", "time.start"],
        DataSource::ProfileLive => &["agent", "profile"],
        DataSource::ProfileHistory => &["agent", "slot"],
    }
}

impl super::Record {
    /// The first field a whole document of this source always carries
    /// (see [`expected`]) that this record lacks or has as null: a sign
    /// that the push was a partial update.
    pub fn missing_expected_field(&self) -> Option<&'static str> {
        compiled(self.source())
            .expected
            .iter()
            .find(|(_, path)| self.get(Some(path)).is_none())
            .map(|(name, _)| *name)
    }
}

/// The compiled tree of `source`.
pub(crate) fn compiled(source: DataSource) -> &'static Compiled {
    static ALL: OnceLock<Vec<Compiled>> = OnceLock::new();
    &ALL.get_or_init(|| {
        DataSource::ALL
            .iter()
            .map(|s| {
                let root = Level::build(schema::fields(*s));
                let (key, time): (&[&str], &[&str]) = match s {
                    DataSource::Calls | DataSource::Queues | DataSource::Agents => {
                        (&["id_call"], &["time", "start"])
                    }
                    DataSource::ProfileHistory => (&["agent", "id"], &["slot", "start_date"]),
                    DataSource::ProfileLive => {
                        (&["agent", "id"], &["profile", "active", "start_date"])
                    }
                };
                let expected = expected(*s)
                    .iter()
                    .map(|name| {
                        let names: Vec<&str> = name.split('.').collect();
                        let path = root
                            .path(&names)
                            .expect("expected fields are in the schema");
                        (*name, path)
                    })
                    .collect();
                Compiled {
                    key_path: root.path(key),
                    time_path: root.path(time),
                    expected,
                    root,
                }
            })
            .collect()
    })[source.index()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_and_historic_records_match_whatever_their_account_ids() {
        let live = crate::model::normalize_live(
            DataSource::Agents,
            br#"{"id_call":"x","time":{"start":1779099997234},"agent":{"id":7,"account_id":3467672}}"#,
        )
        .unwrap();
        let historic = crate::model::normalize_historic(
            DataSource::Agents,
            &serde_json::json!({"idCall":"x","time":{"start":"2026-05-18T10:26:37.234Z"},"agent":{"id":7,"accountId":null}}),
        )
        .unwrap();
        assert_eq!(live.match_key(), historic.match_key());
        let other_agent = crate::model::normalize_historic(
            DataSource::Agents,
            &serde_json::json!({"idCall":"x","time":{"start":"2026-05-18T10:26:37.234Z"},"agent":{"id":8}}),
        )
        .unwrap();
        assert_ne!(live.match_key(), other_agent.match_key());
    }

    #[test]
    fn whole_documents_carry_the_expected_fields_and_deltas_do_not() {
        let whole = [
            (
                DataSource::Calls,
                include_str!("../../tests/fixtures/normalize/calls.simulator.live.json"),
            ),
            (
                DataSource::Queues,
                include_str!("../../tests/fixtures/normalize/queues.simulator.live.json"),
            ),
            (
                DataSource::Agents,
                include_str!("../../tests/fixtures/normalize/agents.simulator.live.json"),
            ),
            (
                DataSource::ProfileLive,
                include_str!("../../tests/fixtures/normalize/profile_live.simulator.live.json"),
            ),
            (
                DataSource::ProfileHistory,
                include_str!(
                    "../../tests/fixtures/normalize/profile_history.simulator-batch.live.json"
                ),
            ),
            // The reference's §2.1 sample, pushed as the call starts.
            (
                DataSource::Calls,
                r#"{"id_call":"4d9c10dc","answered":0,"active":1,"call_direction":"incoming","time":{"start":1779099997234},"customer_telavox":{"id":43,"name":"Telavox AB"},"customer_target":{"number":"0032470624609"},"agent_list":["Jennifer Symoens"]}"#,
            ),
        ];
        for (source, text) in whole {
            let r = crate::model::normalize_live(source, text.as_bytes()).unwrap();
            assert_eq!(r.missing_expected_field(), None, "{source}");
        }
        for (source, text, missing) in [
            (
                DataSource::Calls,
                r#"{"id_call":"x","answered":1}"#,
                "call_direction",
            ),
            (
                DataSource::Calls,
                r#"{"id_call":"x","call_direction":"in","customer_telavox":{},"time":{"end":1}}"#,
                "time.start",
            ),
            (DataSource::ProfileLive, r#"{"agent":{"id":1}}"#, "profile"),
            (
                DataSource::ProfileHistory,
                r#"{"agent":null,"slot":{}}"#,
                "agent",
            ),
        ] {
            let r = crate::model::normalize_live(source, text.as_bytes()).unwrap();
            assert_eq!(r.missing_expected_field(), Some(missing), "{text}");
        }
    }

    #[test]
    fn every_source_has_its_key_and_time_and_unique_names() {
        fn unique(level: &Level) {
            for (i, f) in level.fields.iter().enumerate() {
                assert!(
                    level.fields[..i].iter().all(|g| g.name != f.name),
                    "{} twice",
                    f.name
                );
                if let Some(sub) = level.sub(i) {
                    unique(sub);
                }
            }
        }
        for (i, s) in DataSource::ALL.iter().enumerate() {
            assert_eq!(s.index(), i);
            let c = compiled(*s);
            assert!(c.key_path.is_some(), "{s}");
            assert!(c.time_path.is_some(), "{s}");
            assert!(!c.expected.is_empty(), "{s}");
            unique(&c.root);
        }
    }
}
