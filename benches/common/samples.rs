//! One frame per source as the simulator sends it (realistic sizes and
//! shapes): the inputs of `benches/encode.rs`, `examples/profile_hot_path.rs`
//! and a unit test in `src/model/normalize.rs`, each of which includes this
//! file with `#[path]` and has `DataSource` in scope.

use super::DataSource;

/// `(source, live frame)`.
pub const SAMPLES: &[(DataSource, &str)] = &[
    (
        DataSource::Calls,
        include_str!("../../tests/fixtures/bench/calls.json"),
    ),
    (
        DataSource::Queues,
        include_str!("../../tests/fixtures/bench/queues.json"),
    ),
    (
        DataSource::Agents,
        include_str!("../../tests/fixtures/bench/agents.json"),
    ),
    (
        DataSource::ProfileLive,
        include_str!("../../tests/fixtures/bench/profile_live.json"),
    ),
    (
        DataSource::ProfileHistory,
        include_str!("../../tests/fixtures/bench/profile_history.json"),
    ),
];
