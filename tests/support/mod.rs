//! The test kit (`tests/kit`), under the name every integration test uses.
pub use studio_relay_testkit::*;
