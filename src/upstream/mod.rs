//! Talking to Telavox: [`live`] keeps the WebSockets connected; [`historic`]
//! walks the GraphQL API (replay and gap backfill).

pub mod historic;
pub mod live;
