//! Talking to Telavox: [`live`] keeps the WebSockets connected; [`historic`]
//! walks the GraphQL API (replay and gap backfill); [`egress`] is how the
//! sockets get out (directly or through the environment's proxy); [`tls`]
//! whom both trust.

pub mod egress;
pub mod historic;
pub mod live;
pub mod tls;
