//! Data-driven golden tests of the normalizers: every
//! `tests/fixtures/normalize/<source>.<case>.<live|historic>.json` is
//! normalized and compared with `<same name>.expected.json` (the canonical
//! record, its `extra` and its event id). Add a case by dropping in a
//! payload; `STUDIO_RELAY_UPDATE_GOLDEN=1 cargo test --test normalize_golden`
//! writes the expected files, which are then reviewed like code.

use std::path::Path;

use serde_json::{json, Value};
use studio_relay::model::{self, DataSource, Envelope, Origin};

#[test]
fn every_fixture_normalizes_to_its_expected_record() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/normalize");
    let update = std::env::var_os("STUDIO_RELAY_UPDATE_GOLDEN").is_some();
    let mut cases = 0;
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .expect("fixture dir")
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        let Some(stem) = name
            .strip_suffix(".live.json")
            .map(|s| (s, true))
            .or_else(|| name.strip_suffix(".historic.json").map(|s| (s, false)))
        else {
            continue;
        };
        let (stem, live) = stem;
        let source: DataSource = stem
            .split('.')
            .next()
            .unwrap()
            .parse()
            .expect("source prefix");
        let raw = std::fs::read(&path).unwrap();
        let record = if live {
            model::normalize_live(source, &raw)
        } else {
            model::normalize_historic(source, &serde_json::from_slice(&raw).unwrap())
        }
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        let env = Envelope::new("golden".into(), Origin::Live, 0, record);
        let got = json!({
            "event_id": env.event_id,
            "match_key": env.match_key,
            "record": env.record.to_json(),
            "extra": env.record.extra_json(),
        });
        let expected_path = dir.join(format!(
            "{stem}.{}.expected.json",
            if live { "live" } else { "historic" }
        ));
        if update {
            std::fs::write(
                &expected_path,
                serde_json::to_string_pretty(&got).unwrap() + "\n",
            )
            .unwrap();
        }
        let expected: Value =
            serde_json::from_slice(&std::fs::read(&expected_path).unwrap_or_else(|_| {
                panic!(
                    "{} missing: run with STUDIO_RELAY_UPDATE_GOLDEN=1",
                    expected_path.display()
                )
            }))
            .unwrap();
        assert_eq!(got, expected, "{name}");
        cases += 1;
    }
    assert!(cases >= 6, "only {cases} golden cases found");
}

/// A lone object where a list is expected is the one-element list: the
/// documented form and the sent form of profile_history's queue_summary agree.
#[test]
fn documented_objects_and_sent_lists_give_the_same_shape() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/normalize");
    let read = |n: &str| {
        let raw = std::fs::read(dir.join(n)).unwrap();
        model::normalize_live(DataSource::ProfileHistory, &raw)
            .unwrap()
            .to_json()
    };
    let doc = read("profile_history.documented-objects.live.json");
    let sent = read("profile_history.simulator-batch.live.json");
    for key in ["logged_in", "logged_out"] {
        assert!(doc["queue_summary"][key].is_array(), "{key}: {doc}");
        assert_eq!(doc["queue_summary"][key].as_array().unwrap().len(), 1);
    }
    assert_eq!(
        doc["queue_summary"]["logged_in"][0],
        sent["queue_summary"]["logged_in"][0]
    );
}
