//! Liveness and readiness state, shared by the socket tasks, the sink watcher
//! and the HTTP endpoints.
//!
//! Ready means: the sink answered its last health check AND the relay has
//! something to relay: at least one socket connected (or still in its first
//! connection attempt or first backoff). A broker outage turns readiness off
//! (the whole pod is stuck), while one account's refused token, a source its
//! account has no rights to, or a socket reconnecting degrades only that
//! tenant: it is listed in `/readyz`'s body, in `studio_relay_tenant_state`,
//! and alerted on, and the other tenants keep flowing. Only when no socket of
//! any tenant is up does the pod relay nothing, and then it is not ready.

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
    /// The tenant-state label this socket state counts as.
    fn tenant_state(&self) -> TenantState {
        match self {
            SocketState::Starting => TenantState::Starting,
            SocketState::Connected => TenantState::Connected,
            SocketState::BackingOff { .. } => TenantState::Reconnecting,
            SocketState::Unauthorized => TenantState::Unauthorized,
            SocketState::InvalidPath => TenantState::InvalidPath,
            SocketState::Stopped => TenantState::Stopped,
        }
    }

    fn is_ready(&self) -> bool {
        matches!(
            self,
            SocketState::Starting
                | SocketState::Connected
                | SocketState::BackingOff { attempt: 0..=1, .. }
        )
    }
}

/// One tenant's state: the worst of its sockets' (stopped ones only count
/// when every socket is stopped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TenantState {
    Connected,
    Starting,
    Stopped,
    /// A socket is backing off before a reconnect.
    Reconnecting,
    /// A source its account has no rights to, or that does not exist.
    InvalidPath,
    /// Its token was refused (HTTP 401).
    Unauthorized,
}

impl TenantState {
    pub const ALL: [TenantState; 6] = [
        TenantState::Connected,
        TenantState::Starting,
        TenantState::Stopped,
        TenantState::Reconnecting,
        TenantState::InvalidPath,
        TenantState::Unauthorized,
    ];

    /// The `state` label of `studio_relay_tenant_state`.
    pub fn as_str(self) -> &'static str {
        match self {
            TenantState::Connected => "connected",
            TenantState::Starting => "starting",
            TenantState::Stopped => "stopped",
            TenantState::Reconnecting => "reconnecting",
            TenantState::InvalidPath => "invalid_path",
            TenantState::Unauthorized => "unauthorized",
        }
    }
}

/// What `/readyz` says when ready: the sockets that are not up, one line
/// each (empty when everything flows).
pub type Degraded = Vec<String>;

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

    /// Records a socket's state; returns its tenant's state when that
    /// changed with it.
    pub fn set_socket(
        &self,
        tenant: &str,
        source: &str,
        state: SocketState,
    ) -> Option<TenantState> {
        let mut changed = None;
        self.set_socket_then(tenant, source, state, |s| changed = Some(s));
        changed
    }

    /// [`Health::set_socket`], calling `on_change` with the tenant's new
    /// state (while no other socket can change it, so that what it reports
    /// cannot overtake a later change).
    pub fn set_socket_then(
        &self,
        tenant: &str,
        source: &str,
        state: SocketState,
        on_change: impl FnOnce(TenantState),
    ) {
        let mut map = self.sockets.lock().unwrap_or_else(|p| p.into_inner());
        let before = tenant_state(&map, tenant);
        map.insert((tenant.to_string(), source.to_string()), state);
        let after = tenant_state(&map, tenant);
        if let Some(after) = after.filter(|a| Some(*a) != before) {
            on_change(after);
        }
    }

    /// Forgets a removed tenant's sockets.
    pub fn remove_tenant(&self, tenant: &str) {
        let mut map = self.sockets.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|(t, _), _| t != tenant);
    }

    /// The tenant's state, from its sockets (None: no socket of it known).
    pub fn tenant(&self, tenant: &str) -> Option<TenantState> {
        let map = self.sockets.lock().unwrap_or_else(|p| p.into_inner());
        tenant_state(&map, tenant)
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

    /// Readiness: the degraded sockets when ready, `Err(causes)` when not.
    pub fn ready(&self) -> Result<Degraded, NotReady> {
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
        let degraded: Degraded = map
            .iter()
            .filter(|(_, state)| !state.is_ready())
            .map(|((tenant, source), state)| format!("socket {tenant}/{source}: {state:?}"))
            .collect();
        if !map.is_empty() && degraded.len() == map.len() {
            causes.push("no socket of any tenant is connected".to_string());
            causes.extend(degraded);
            return Err(causes);
        }
        if causes.is_empty() {
            Ok(degraded)
        } else {
            Err(causes)
        }
    }
}

/// The worst state among `tenant`'s sockets; stopped sockets count only
/// when all are stopped.
fn tenant_state(
    sockets: &BTreeMap<(String, String), SocketState>,
    tenant: &str,
) -> Option<TenantState> {
    let states = sockets
        .range((tenant.to_string(), String::new())..)
        .take_while(|((t, _), _)| t == tenant)
        .map(|(_, state)| state.tenant_state());
    states.fold(None, |worst, s| match worst {
        None => Some(s),
        Some(TenantState::Stopped) => Some(s),
        Some(w) if s == TenantState::Stopped => Some(w),
        Some(w) => Some(w.max(s)),
    })
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
        assert_eq!(h.ready(), Ok(vec![]), "first backoff is still up");
        let second = SocketState::BackingOff {
            attempt: 2,
            reason: "closed".into(),
        };
        h.set_socket("t", "queues", second.clone());
        assert_eq!(h.ready().unwrap().len(), 1, "degraded, the rest flows");
        h.set_socket("t", "calls", second);
        assert!(h.ready().is_err(), "no socket up at all");
        h.set_socket("t", "queues", SocketState::Connected);
        h.set_socket("t", "calls", SocketState::Connected);
        h.set_sink(Err("down".into()));
        let causes = h.ready().unwrap_err();
        assert!(causes[0].contains("down"), "{causes:?}");
        h.set_sink(Ok(()));
        h.set_socket("t", "agents", SocketState::Unauthorized);
        let degraded = h.ready().expect("other sockets flow");
        assert_eq!(degraded, ["socket t/agents: Unauthorized"]);
    }

    #[test]
    fn one_tenant_refused_degrades_that_tenant_and_leaves_the_pod_ready() {
        let h = Health::new();
        h.mark_started();
        h.set_sink(Ok(()));
        for tenant in ["a", "b"] {
            for source in ["calls", "queues"] {
                h.set_socket(tenant, source, SocketState::Connected);
            }
        }
        assert_eq!(
            h.set_socket("b", "calls", SocketState::Unauthorized),
            Some(TenantState::Unauthorized)
        );
        assert_eq!(
            h.set_socket("b", "queues", SocketState::Unauthorized),
            None,
            "the tenant's state did not change"
        );
        assert_eq!(h.tenant("a"), Some(TenantState::Connected));
        assert_eq!(h.tenant("b"), Some(TenantState::Unauthorized));
        assert_eq!(h.ready().unwrap().len(), 2);

        for source in ["calls", "queues"] {
            h.set_socket("a", source, SocketState::Unauthorized);
        }
        let causes = h.ready().unwrap_err();
        assert_eq!(causes[0], "no socket of any tenant is connected");
    }

    #[test]
    fn a_tenant_is_as_bad_as_its_worst_socket() {
        let h = Health::new();
        h.set_socket("t", "calls", SocketState::Stopped);
        assert_eq!(h.tenant("t"), Some(TenantState::Stopped));
        h.set_socket("t", "queues", SocketState::Connected);
        assert_eq!(h.tenant("t"), Some(TenantState::Connected));
        h.set_socket("t", "agents", SocketState::InvalidPath);
        assert_eq!(h.tenant("t"), Some(TenantState::InvalidPath));
        assert_eq!(h.tenant("other"), None);
    }
}
