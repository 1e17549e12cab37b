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
            in_both: fields.iter().map(Field::in_both).collect(),
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
                Compiled {
                    key_path: root.path(key),
                    time_path: root.path(time),
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
            unique(&c.root);
        }
    }
}
