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
    TenantTokenRotated, TenantsAcquired, TenantsCounted, TenantsReleased,
};
use crate::ops::{Health, Metrics};
use crate::publish::MessageBuilder;
use crate::relay::backfill::HistoricClients;
use crate::relay::ownership::{Handovers, Owned};
use crate::sink::leases::LeaseEvent;
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

/// With replicas sharing the tenants: this replica's leases, and how
/// tenants move.
pub struct Shared {
    pub leases: mpsc::UnboundedReceiver<LeaseEvent>,
    pub owned: Owned,
    pub handovers: Handovers,
}

/// The tenants known (config and token directory) and those running here.
struct Tenants {
    known: BTreeMap<Arc<str>, TenantSpec>,
    running: BTreeMap<Arc<str>, Running>,
    /// None: this replica runs every known tenant.
    owned: Option<Owned>,
}

impl Tenants {
    fn runs_here(&self, tenant: &str) -> bool {
        self.owned.as_ref().is_none_or(|o| o.owns(tenant))
    }
}

/// Runs the sockets of `initial`'s tenants (with `shared`: those this
/// replica owns, as the leases come and go), applies each change from
/// `changes`, and once `stop` is cancelled waits for every socket to end.
pub async fn supervise(
    initial: Vec<TenantSpec>,
    mut changes: mpsc::Receiver<TenantChange>,
    mut shared: Option<Shared>,
    factory: SocketFactory,
    stop: CancellationToken,
) {
    let mut tenants = Tenants {
        known: initial.into_iter().map(|t| (t.name.clone(), t)).collect(),
        running: BTreeMap::new(),
        owned: shared.as_ref().map(|s| s.owned.clone()),
    };
    let first: Vec<TenantSpec> = tenants
        .known
        .values()
        .filter(|t| tenants.runs_here(&t.name))
        .cloned()
        .collect();
    for spec in first {
        let tenant = factory.start(spec, &stop);
        tenants.running.insert(tenant.spec.name.clone(), tenant);
    }
    factory.count(&tenants);
    let mut changes_open = true;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            Some(lease) = next_lease(&mut shared) => {
                if let Some(s) = &shared {
                    factory.lease(lease, &mut tenants, &s.handovers, &stop).await;
                }
            }
            change = changes.recv(), if changes_open => match change {
                Some(change) => factory.change(change, &mut tenants, &stop).await,
                // No more changes: the sockets run until the stop.
                None => changes_open = false,
            },
        }
        factory.count(&tenants);
    }
    // The leases' events end here: a rebalance during the drain is not
    // waited for.
    drop(shared);
    for (_, tenant) in tenants.running {
        for socket in tenant.sockets {
            let _ = socket.await;
        }
    }
}

async fn next_lease(shared: &mut Option<Shared>) -> Option<LeaseEvent> {
    match shared {
        Some(s) => s.leases.recv().await,
        None => std::future::pending().await,
    }
}

impl SocketFactory {
    fn count(&self, tenants: &Tenants) {
        TenantsCounted {
            known: tenants.known.len(),
            running: tenants.running.len(),
        }
        .emit(&self.metrics);
    }

    /// A change from the token directory: known everywhere, applied where
    /// the tenant runs.
    async fn change(&self, change: TenantChange, tenants: &mut Tenants, stop: &CancellationToken) {
        match &change {
            TenantChange::Upsert(spec) => {
                tenants.known.insert(spec.name.clone(), spec.clone());
                if !tenants.runs_here(&spec.name) {
                    return;
                }
            }
            TenantChange::Remove(name) => {
                tenants.known.remove(name);
            }
        }
        self.apply(change, &mut tenants.running, stop).await;
    }

    /// Shards gained: their known tenants are taken over; shards lost:
    /// their tenants stop here, and the lease is answered after.
    async fn lease(
        &self,
        lease: LeaseEvent,
        tenants: &mut Tenants,
        handovers: &Handovers,
        stop: &CancellationToken,
    ) {
        let Some(owned) = tenants.owned.as_mut() else {
            return;
        };
        match lease {
            LeaseEvent::Acquired(shards) => {
                owned.add(&shards);
                let taken: Vec<TenantSpec> = tenants
                    .known
                    .values()
                    .filter(|t| owned.in_shards(&t.name, &shards))
                    .filter(|t| !tenants.running.contains_key(&t.name))
                    .cloned()
                    .collect();
                let names: Vec<&str> = taken.iter().map(|t| &*t.name).collect();
                TenantsAcquired {
                    shards: &shards,
                    tenants: &names,
                }
                .emit(&self.metrics);
                let specs: Vec<_> = taken
                    .iter()
                    .map(|t| (t.name.clone(), t.sources.clone()))
                    .collect();
                handovers.take_over(&specs).await;
                for spec in taken {
                    tenants
                        .running
                        .insert(spec.name.clone(), self.start(spec, stop));
                }
            }
            LeaseEvent::Revoked { shards, released } => {
                owned.remove(&shards);
                let going: Vec<Arc<str>> = tenants
                    .running
                    .keys()
                    .filter(|t| !owned.owns(t))
                    .cloned()
                    .collect();
                for name in &going {
                    if let Some(tenant) = tenants.running.remove(name) {
                        self.stop_sockets(tenant).await;
                        self.forget(name);
                    }
                }
                let settled = handovers.hand_over(&going).await;
                let names: Vec<&str> = going.iter().map(|t| &**t).collect();
                TenantsReleased {
                    shards: &shards,
                    tenants: &names,
                    settled,
                }
                .emit(&self.metrics);
                let _ = released.send(());
            }
        }
    }

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
