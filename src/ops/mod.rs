//! Operations: metrics, health, the ops HTTP listener, logging, shutdown, and
//! the typed internal events through which everything else reports.

mod health;
pub mod internal_events;
pub mod logging;
mod metrics;
pub mod server;
pub mod shutdown;

pub use health::{Health, SocketState, TenantState};
pub use metrics::{FamilyDescriptor, Metrics, TenantLabel, LATENCY_STAGES};
