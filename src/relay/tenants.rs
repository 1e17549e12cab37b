//! The tenants `run` keeps sockets for, and their changes while it runs: a
//! tenant added starts its sockets, one removed stops them, one whose token
//! changed reconnects with the new token. No other tenant's sockets are
//! touched by a change.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{Secret, UpstreamConfig};
use crate::model::DataSource;
use crate::ops::internal_events::{
    BackfillClientFailed, TenantDestinationsFailed, TenantRemoved, TenantStarted,
    TenantTokenRotated,
};
use crate::ops::{Health, Metrics};
use crate::publish::MessageBuilder;
use crate::relay::backfill::HistoricClients;
use crate::sink::Sink;
use crate::upstream::egress::Egress;
use crate::upstream::historic::{GraphqlClient, RetryPolicy};
use crate::upstream::live::{LiveFrame, LiveSocket, SocketEvent};

/// One tenant as the relay runs it.
#[derive(Clone, PartialEq, Eq)]
pub struct TenantSpec {
    pub name: Arc<str>,
    pub token: Secret,
    pub sources: Vec<DataSource>,
}

/// A change to the set of tenants.
pub enum TenantChange {
    /// A tenant to run: started when new, reconnected when its token or
    /// sources changed, left alone otherwise.
    Upsert(TenantSpec),
    /// A tenant to stop.
    Remove(Arc<str>),
}

/// What a tenant's sockets are made with.
pub struct SocketFactory {
    pub settings: UpstreamConfig,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    pub egress: Arc<Egress>,
    pub frames: mpsc::Sender<LiveFrame>,
    /// Gap backfill's socket events, when it runs.
    pub events: Option<mpsc::UnboundedSender<SocketEvent>>,
    /// Gap backfill's clients, when it runs.
    pub clients: Option<Arc<HistoricClients<GraphqlClient>>>,
    /// Where a tenant added while running gets its destinations prepared.
    pub sink: Arc<dyn Sink>,
    pub builder: Arc<MessageBuilder>,
}

/// A tenant's sockets while they run.
struct Running {
    spec: TenantSpec,
    stop: CancellationToken,
    sockets: Vec<JoinHandle<()>>,
}

/// Runs `initial`'s sockets, applies each change from `changes`, and once
/// `stop` is cancelled waits for every socket to end.
pub async fn supervise(
    initial: Vec<TenantSpec>,
    mut changes: mpsc::Receiver<TenantChange>,
    factory: SocketFactory,
    stop: CancellationToken,
) {
    let mut running: BTreeMap<Arc<str>, Running> = BTreeMap::new();
    for spec in initial {
        let tenant = factory.start(spec, &stop);
        running.insert(tenant.spec.name.clone(), tenant);
    }
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            change = changes.recv() => match change {
                Some(change) => factory.apply(change, &mut running, &stop).await,
                // No more changes: the sockets run until the stop.
                None => {
                    stop.cancelled().await;
                    break;
                }
            },
        }
    }
    for (_, tenant) in running {
        for socket in tenant.sockets {
            let _ = socket.await;
        }
    }
}

impl SocketFactory {
    async fn apply(
        &self,
        change: TenantChange,
        running: &mut BTreeMap<Arc<str>, Running>,
        stop: &CancellationToken,
    ) {
        match change {
            TenantChange::Upsert(spec) => match running.remove(&spec.name) {
                None => {
                    TenantStarted {
                        tenant: &spec.name,
                        sources: spec.sources.len(),
                    }
                    .emit(&self.metrics);
                    self.prepare_destinations(&spec).await;
                    running.insert(spec.name.clone(), self.start(spec, stop));
                }
                Some(same) if same.spec == spec => {
                    running.insert(spec.name.clone(), same);
                }
                Some(old) => {
                    TenantTokenRotated { tenant: &spec.name }.emit(&self.metrics);
                    // The changeover is a gap like any reconnect: backfill
                    // covers it once the new sockets are up.
                    self.announce_gap(&old.spec);
                    self.stop_sockets(old).await;
                    running.insert(spec.name.clone(), self.start(spec, stop));
                }
            },
            TenantChange::Remove(name) => {
                if let Some(old) = running.remove(&name) {
                    self.stop_sockets(old).await;
                    self.forget(&name);
                    TenantRemoved { tenant: &name }.emit(&self.metrics);
                }
            }
        }
    }

    /// A topic template with `{tenant}` gives a new tenant new topics or
    /// subjects: created (when the sink is told to) before its first event.
    async fn prepare_destinations(&self, spec: &TenantSpec) {
        let destinations = self.builder.all_destinations([&*spec.name], &spec.sources);
        if let Err(e) = self.sink.prepare(&destinations).await {
            // Its events are retried by the publisher until they can go.
            TenantDestinationsFailed {
                tenant: &spec.name,
                error: &e.to_string(),
            }
            .emit(&self.metrics);
        }
    }

    /// Starts one socket per source of `spec`.
    fn start(&self, spec: TenantSpec, stop: &CancellationToken) -> Running {
        if let Some(clients) = &self.clients {
            self.set_client(clients, &spec);
        }
        let tenant_stop = stop.child_token();
        let sockets = spec
            .sources
            .iter()
            .map(|&source| {
                let socket = LiveSocket {
                    tenant: spec.name.clone(),
                    source,
                    token: spec.token.clone(),
                    settings: self.settings.clone(),
                    metrics: self.metrics.clone(),
                    health: self.health.clone(),
                    egress: self.egress.clone(),
                    events: self.events.clone(),
                };
                tokio::spawn(socket.run(self.frames.clone(), tenant_stop.clone()))
            })
            .collect();
        Running {
            spec,
            stop: tenant_stop,
            sockets,
        }
    }

    /// The tenant's GraphQL client for gap backfill, with its current token.
    fn set_client(&self, clients: &HistoricClients<GraphqlClient>, spec: &TenantSpec) {
        let client = GraphqlClient::with_roots(
            &self.settings.graphql_url,
            spec.token.clone(),
            self.settings.request_timeout,
            RetryPolicy::default(),
            self.egress.tls().extra_roots(),
        );
        let mut clients = clients.write().unwrap_or_else(|p| p.into_inner());
        match client {
            Ok(client) => {
                clients.insert(spec.name.clone(), Arc::new(client));
            }
            Err(e) => {
                clients.remove(&spec.name);
                BackfillClientFailed {
                    tenant: &spec.name,
                    error: &e.to_string(),
                }
                .emit(&self.metrics);
            }
        }
    }

    fn announce_gap(&self, spec: &TenantSpec) {
        let Some(events) = &self.events else { return };
        let at_ms = chrono::Utc::now().timestamp_millis();
        for &source in &spec.sources {
            let _ = events.send(SocketEvent::Disconnected {
                tenant: spec.name.clone(),
                source,
                at_ms,
            });
        }
    }

    async fn stop_sockets(&self, tenant: Running) {
        tenant.stop.cancel();
        for socket in tenant.sockets {
            let _ = socket.await;
        }
    }

    /// A removed tenant leaves no state, series or client behind.
    fn forget(&self, name: &str) {
        self.health.remove_tenant(name);
        self.metrics.remove_tenant_state(name);
        if let Some(clients) = &self.clients {
            clients
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .remove(name);
        }
    }
}
