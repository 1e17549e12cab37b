//! Liveness and readiness state, shared by the socket tasks, the sink watcher
//! and the HTTP endpoints.
//!
//! Ready means: every configured socket is connected (or still in its first
//! connection attempt / first backoff) AND the sink answered its last health
//! check. A broker outage therefore turns readiness off, which is what the
//! platform team wants to see.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// State of one live socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SocketState {
    /// First attempt, not yet answered.
    Starting,
    Connected,
    /// Waiting before reconnect attempt `attempt` (1 = first retry).
    BackingOff {
        attempt: u32,
        reason: String,
    },
    /// HTTP 401: token missing, expired or revoked.
    Unauthorized,
    /// `Invalid path.`: this source does not exist upstream (configuration error).
    InvalidPath,
    /// Shut down on purpose.
    Stopped,
}

impl SocketState {
    fn is_ready(&self) -> bool {
        matches!(
            self,
            SocketState::Starting
                | SocketState::Connected
                | SocketState::BackingOff { attempt: 0..=1, .. }
        )
    }
}

/// Shared health registry.
#[derive(Default)]
pub struct Health {
    sockets: Mutex<BTreeMap<(String, String), SocketState>>,
    sink_up: AtomicBool,
    sink_error: Mutex<Option<String>>,
    /// Set when a task the process cannot live without has ended unexpectedly.
    broken: Mutex<Option<String>>,
    /// Set once start-up is over (sink prepared).
    started: AtomicBool,
}

/// Why the process is not ready, one line per cause.
pub type NotReady = Vec<String>;

impl Health {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn set_socket(&self, tenant: &str, source: &str, state: SocketState) {
        let mut map = self.sockets.lock().unwrap_or_else(|p| p.into_inner());
        map.insert((tenant.to_string(), source.to_string()), state);
    }

    pub fn socket(&self, tenant: &str, source: &str) -> Option<SocketState> {
        let map = self.sockets.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&(tenant.to_string(), source.to_string())).cloned()
    }

    pub fn set_sink(&self, result: Result<(), String>) {
        self.sink_up.store(result.is_ok(), Ordering::Relaxed);
        *self.sink_error.lock().unwrap_or_else(|p| p.into_inner()) = result.err();
    }

    pub fn sink_up(&self) -> bool {
        self.sink_up.load(Ordering::Relaxed)
    }

    pub fn mark_started(&self) {
        self.started.store(true, Ordering::Relaxed);
    }

    /// A vital task died: liveness fails so Kubernetes restarts the pod.
    pub fn mark_broken(&self, why: impl Into<String>) {
        *self.broken.lock().unwrap_or_else(|p| p.into_inner()) = Some(why.into());
    }

    /// Liveness: `Err(reason)` when a vital task has died.
    pub fn live(&self) -> Result<(), String> {
        match self
            .broken
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            Some(why) => Err(why),
            None => Ok(()),
        }
    }

    /// Readiness: `Err(causes)` when not ready.
    pub fn ready(&self) -> Result<(), NotReady> {
        let mut causes = Vec::new();
        if let Err(why) = self.live() {
            causes.push(format!("broken: {why}"));
        }
        if !self.started.load(Ordering::Relaxed) {
            causes.push("starting".to_string());
        }
        if !self.sink_up() {
            let err = self
                .sink_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            causes.push(format!(
                "sink unreachable: {}",
                err.unwrap_or_else(|| "not checked yet".into())
            ));
        }
        let map = self.sockets.lock().unwrap_or_else(|p| p.into_inner());
        for ((tenant, source), state) in map.iter() {
            if !state.is_ready() {
                causes.push(format!("socket {tenant}/{source}: {state:?}"));
            }
        }
        if causes.is_empty() {
            Ok(())
        } else {
            Err(causes)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_needs_sink_and_sockets() {
        let h = Health::new();
        h.set_socket("t", "calls", SocketState::Connected);
        assert!(h.ready().is_err(), "not started, sink unknown");
        h.mark_started();
        h.set_sink(Ok(()));
        assert!(h.ready().is_ok());
        h.set_socket(
            "t",
            "queues",
            SocketState::BackingOff {
                attempt: 1,
                reason: "closed".into(),
            },
        );
        assert!(h.ready().is_ok(), "first backoff is still ready");
        h.set_socket(
            "t",
            "queues",
            SocketState::BackingOff {
                attempt: 2,
                reason: "closed".into(),
            },
        );
        assert!(h.ready().is_err());
        h.set_socket("t", "queues", SocketState::Connected);
        h.set_sink(Err("down".into()));
        let causes = h.ready().unwrap_err();
        assert!(causes[0].contains("down"), "{causes:?}");
        h.set_sink(Ok(()));
        h.set_socket("t", "agents", SocketState::Unauthorized);
        assert!(h.ready().is_err());
    }
}
