//! Prometheus metrics. One [`Metrics`] value per process (tests make their own),
//! shared as `Arc<Metrics>`. Names follow Prometheus conventions: `_total` for
//! counters, base units (seconds, bytes), low-cardinality labels only
//! (tenant, source, origin, reason, kind, sink). At thousands of tenants the
//! per-event families' `tenant` label can be bucketed or dropped
//! ([`TenantLabel`]); per-tenant state always carries the name.

use std::borrow::Cow;
use std::cell::RefCell;

use prometheus::core::Collector;
use prometheus::proto::MetricType;
use prometheus::{
    Encoder, Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

/// Every metric the relay exports.
pub struct Metrics {
    registry: Registry,
    families: Vec<FamilyDescriptor>,
    pub frames_received: IntCounterVec,
    pub events_published: IntCounterVec,
    pub publish_failures: IntCounterVec,
    pub events_deadlettered: IntCounterVec,
    pub unknown_fields: IntCounterVec,
    pub partial_pushes: IntCounterVec,
    pub reconnects: IntCounterVec,
    pub socket_connected: IntGaugeVec,
    /// 1 for each tenant's current [`TenantState`](crate::ops::TenantState), 0 for the others.
    pub tenant_state: IntGaugeVec,
    /// Tenants added, rotated and removed while the relay runs.
    pub tenant_changes: IntCounterVec,
    /// Token files skipped and token directory reads failed, by reason.
    pub token_dir_problems: IntCounterVec,
    pub last_event_timestamp: GaugeVec,
    pub seconds_since_last_event: GaugeVec,
    pub queue_depth: IntGauge,
    /// Shards of the tenants this replica holds the lease of (`ha`).
    pub owned_shards: IntGauge,
    /// Tenants this replica runs.
    pub owned_tenants: IntGauge,
    /// Tenants this replica knows (config and token directory).
    pub known_tenants: IntGauge,
    pub inflight_messages: IntGauge,
    pub end_to_end_latency: HistogramVec,
    /// Labelled by [`LATENCY_STAGES`].
    pub stage_latency: HistogramVec,
    pub sink_up: IntGaugeVec,
    pub replay_records: IntCounterVec,
    pub replay_pages: IntCounterVec,
    pub replay_retries: IntCounterVec,
    pub replay_windows_completed: IntCounterVec,
    pub replay_windows_total: IntGaugeVec,
    pub backfill_records: IntCounterVec,
    /// Labelled tenant, source, origin, reason (`repeat`, `already_live`, `already_on_broker`).
    pub events_suppressed: IntCounterVec,
    pub gaps: IntCounterVec,
    pub spool_bytes: IntGauge,
    pub spool_corrupt_records: IntCounterVec,
    pub checkpoint_save_failures: IntCounterVec,
    pub checkpoint_timestamp: GaugeVec,
    pub recent_ids_seed_failures: IntCounterVec,
    pub schema_registry_retries: IntCounterVec,
    pub schema_registry_subjects: IntGaugeVec,
    pub build_info: IntGaugeVec,
    pub process_start_time: Gauge,
    /// librdkafka's own statistics, refreshed every `sink.kafka.statistics_interval`.
    pub kafka: KafkaClientMetrics,
    /// What the per-event families carry as `tenant`.
    tenant_label: TenantLabel,
}

/// The `tenant` label of the per-event families (frames received, events
/// published, publish failures, dead letters, suppressed events, unknown
/// fields, partial pushes, backfilled records): their series grow with
/// tenants × sources × origins × reasons. Per-tenant state
/// (`socket_connected`, `tenant_state`, `reconnects_total`, staleness,
/// checkpoints) keeps the name whatever this says: that is what an operator
/// acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TenantLabel {
    /// The tenant's name.
    #[default]
    Name,
    /// One of this many buckets (`b0`, `b1`, …), by a stable hash of the name.
    Hashed(u16),
    /// Empty, which Prometheus stores as no label at all.
    None,
}

/// What librdkafka reports about its producer (see
/// `ops::internal_events::KafkaStatisticsReported`).
pub struct KafkaClientMetrics {
    pub queue_messages: IntGauge,
    pub queue_bytes: IntGauge,
    pub broker_up: IntGaugeVec,
    pub broker_rtt: GaugeVec,
    pub broker_errors: IntCounterVec,
    pub broker_in_flight: IntGaugeVec,
    pub batch_bytes: GaugeVec,
    pub batch_messages: GaugeVec,
}

impl KafkaClientMetrics {
    fn new(r: &Catalogue) -> Self {
        KafkaClientMetrics {
            queue_messages: gauge(
                r,
                "studio_relay_kafka_producer_queue_messages",
                "Messages in the Kafka producer's queue, waiting to be sent or acknowledged.",
            ),
            queue_bytes: gauge(
                r,
                "studio_relay_kafka_producer_queue_bytes",
                "Bytes in the Kafka producer's queue.",
            ),
            broker_up: gauge_vec(
                r,
                "studio_relay_kafka_broker_up",
                "1 while the producer's connection to the broker is up.",
                &["broker"],
            ),
            broker_rtt: float_gauge_vec(
                r,
                "studio_relay_kafka_broker_rtt_seconds",
                "Request round-trip time to the broker over the last statistics interval (stat: avg, p99).",
                &["broker", "stat"],
            ),
            broker_errors: counter(
                r,
                "studio_relay_kafka_broker_errors_total",
                "Errors talking to the broker (kind: transmit, receive, timeout).",
                &["broker", "kind"],
            ),
            broker_in_flight: gauge_vec(
                r,
                "studio_relay_kafka_broker_requests_in_flight",
                "Requests sent to the broker and awaiting a response.",
                &["broker"],
            ),
            batch_bytes: float_gauge_vec(
                r,
                "studio_relay_kafka_batch_size_bytes",
                "Average size of the producer's batches per topic over the last statistics interval.",
                &["topic"],
            ),
            batch_messages: float_gauge_vec(
                r,
                "studio_relay_kafka_batch_messages",
                "Average messages per producer batch per topic over the last statistics interval.",
                &["topic"],
            ),
        }
    }
}

/// A metric family as registered: its name, type and label names. Listed by
/// [`Metrics::families`] whether or not it has a series yet (the exposition
/// leaves out a labelled family until its first series).
#[derive(Debug, Clone, PartialEq)]
pub struct FamilyDescriptor {
    pub name: String,
    pub kind: MetricType,
    pub labels: Vec<String>,
}

/// The registry while [`Metrics::new`] fills it, remembering what it registers.
#[derive(Default)]
struct Catalogue {
    registry: Registry,
    families: RefCell<Vec<FamilyDescriptor>>,
}

impl Catalogue {
    fn add<C: Collector + Clone + 'static>(&self, collector: &C) {
        // `desc` names the labels; `collect` gives the type, even of an empty vector.
        for (desc, family) in collector.desc().into_iter().zip(collector.collect()) {
            self.families.borrow_mut().push(FamilyDescriptor {
                name: desc.fq_name.clone(),
                kind: family.get_field_type(),
                labels: desc.variable_labels.clone(),
            });
        }
        self.registry
            .register(Box::new(collector.clone()))
            .expect("metric registered once");
    }
}

const TS: &[&str] = &["tenant", "source"];

/// The gaps between a live event's hand-overs, in order, as the `stage`
/// label of `studio_relay_stage_latency_seconds`: frame read → off the frame
/// queue → normalized and encoded → taken by the publisher → accepted by the
/// sink → acknowledged by the broker. Their sum is the end-to-end latency.
pub const LATENCY_STAGES: [&str; 5] = ["frame_queue", "prepare", "publish_queue", "send", "ack"];

/// End to end: fine below 10 ms, where a healthy relay is (p99 target
/// 5 ms), coarse above it, where an outage's backlog lands.
const LATENCY_BUCKETS: &[f64] = &[
    0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// A stage: a healthy hand-over takes tens of microseconds, so the buckets
/// start at 10 µs; the top ones catch an outage's backlog.
const STAGE_BUCKETS: &[f64] = &[
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1,
    1.0, 10.0,
];

fn histogram_vec(
    registry: &Catalogue,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: &[f64],
) -> HistogramVec {
    let h = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(buckets.to_vec()),
        labels,
    )
    .expect("metric definition is valid");
    registry.add(&h);
    h
}

fn counter(registry: &Catalogue, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("metric definition is valid");
    registry.add(&c);
    c
}

fn gauge_vec(registry: &Catalogue, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("metric definition is valid");
    registry.add(&g);
    g
}

fn float_gauge_vec(registry: &Catalogue, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    let g = GaugeVec::new(Opts::new(name, help), labels).expect("metric definition is valid");
    registry.add(&g);
    g
}

fn gauge(registry: &Catalogue, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("metric definition is valid");
    registry.add(&g);
    g
}

impl Metrics {
    /// Every family, with `tenant_label` for the per-event ones.
    pub fn with_tenant_label(tenant_label: TenantLabel) -> Self {
        Metrics {
            tenant_label,
            ..Metrics::new()
        }
    }

    /// Drops a removed tenant's state series (sockets, tenant state,
    /// staleness), so that tenants coming and going do not pile them up.
    pub fn remove_tenant_state(&self, tenant: &str) {
        for source in crate::model::DataSource::ALL {
            let labels = [tenant, source.as_str()];
            let _ = self.socket_connected.remove_label_values(&labels);
            let _ = self.last_event_timestamp.remove_label_values(&labels);
            let _ = self.seconds_since_last_event.remove_label_values(&labels);
        }
        for state in crate::ops::TenantState::ALL {
            let _ = self
                .tenant_state
                .remove_label_values(&[tenant, state.as_str()]);
        }
    }

    /// The `tenant` label value of a per-event family for `tenant`.
    pub fn event_tenant<'a>(&self, tenant: &'a str) -> Cow<'a, str> {
        match self.tenant_label {
            TenantLabel::Name => Cow::Borrowed(tenant),
            TenantLabel::None => Cow::Borrowed(""),
            TenantLabel::Hashed(buckets) => {
                // The same bucket on every replica and every restart.
                let hash = crate::model::stable_hash(tenant);
                Cow::Owned(format!("b{}", hash % u64::from(buckets.max(1))))
            }
        }
    }

    pub fn new() -> Self {
        let r = Catalogue::default();
        let latency = histogram_vec(
            &r,
            "studio_relay_end_to_end_latency_seconds",
            "Time from a frame's arrival on the socket to the broker's acknowledgement.",
            &["source"],
            LATENCY_BUCKETS,
        );
        let stage_latency = histogram_vec(
            &r,
            "studio_relay_stage_latency_seconds",
            "Where live events wait: the time between two hand-overs on the way from socket to broker ack (stage: frame_queue, prepare, publish_queue, send, ack).",
            &["stage"],
            STAGE_BUCKETS,
        );
        let start = Gauge::new(
            "studio_relay_process_start_time_seconds",
            "Start time of the process, Unix seconds.",
        )
        .expect("metric definition is valid");
        r.add(&start);
        start.set(chrono::Utc::now().timestamp_millis() as f64 / 1000.0);
        let m = Metrics {
            frames_received: counter(
                &r,
                "studio_relay_frames_received_total",
                "WebSocket frames received.",
                TS,
            ),
            events_published: counter(
                &r,
                "studio_relay_events_published_total",
                "Events acknowledged by the broker.",
                &["tenant", "source", "origin"],
            ),
            publish_failures: counter(
                &r,
                "studio_relay_publish_failures_total",
                "Failed publish attempts (kind: retryable or rejected).",
                &["tenant", "source", "kind"],
            ),
            events_deadlettered: counter(
                &r,
                "studio_relay_events_deadlettered_total",
                "Payloads sent to the dead-letter destination, by reason.",
                &["tenant", "source", "reason"],
            ),
            unknown_fields: counter(
                &r,
                "studio_relay_unknown_fields_total",
                "Fields not in the schema, kept in the record's `extra`.",
                TS,
            ),
            partial_pushes: counter(
                &r,
                "studio_relay_partial_pushes_total",
                "Live pushes lacking a field every whole document of their source carries (relayed as they are; see docs/upstream-contract.md).",
                TS,
            ),
            reconnects: counter(
                &r,
                "studio_relay_reconnects_total",
                "WebSocket (re)connection attempts after a failure or close, by reason.",
                &["tenant", "source", "reason"],
            ),
            socket_connected: gauge_vec(
                &r,
                "studio_relay_socket_connected",
                "1 while the WebSocket is connected, 0 otherwise.",
                TS,
            ),
            tenant_state: gauge_vec(
                &r,
                "studio_relay_tenant_state",
                "1 for the tenant's current state (the worst of its sockets': connected, starting, stopped, reconnecting, invalid_path, unauthorized), 0 for the others.",
                &["tenant", "state"],
            ),
            tenant_changes: counter(
                &r,
                "studio_relay_tenant_changes_total",
                "Tenants added, whose token was rotated, or removed while the relay runs (a token directory), and taken over from or handed to another replica (ha), by change: added, rotated, removed, acquired, released.",
                &["change"],
            ),
            token_dir_problems: counter(
                &r,
                "studio_relay_token_dir_problems_total",
                "Token directory problems: files skipped (bad_name, reserved, not_a_file, unreadable, empty) and failed reads of the directory (unreadable_dir).",
                &["reason"],
            ),
            last_event_timestamp: float_gauge_vec(
                &r,
                "studio_relay_last_event_timestamp_seconds",
                "Unix time of the last frame received.",
                TS,
            ),
            seconds_since_last_event: float_gauge_vec(
                &r,
                "studio_relay_seconds_since_last_event",
                "Seconds since the last frame (computed at scrape time).",
                TS,
            ),
            queue_depth: gauge(
                &r,
                "studio_relay_queue_depth",
                "Frames waiting between the sockets and the encoder.",
            ),
            owned_shards: gauge(
                &r,
                "studio_relay_owned_shards",
                "Shards of the tenants whose lease this replica holds (ha.enabled).",
            ),
            owned_tenants: gauge(
                &r,
                "studio_relay_owned_tenants",
                "Tenants this replica runs: all of them, or with ha.enabled those of the shards it owns.",
            ),
            known_tenants: gauge(
                &r,
                "studio_relay_known_tenants",
                "Tenants this replica knows, from the config and the token directory: with ha.enabled, the replicas' studio_relay_owned_tenants add up to it.",
            ),
            inflight_messages: gauge(
                &r,
                "studio_relay_inflight_messages",
                "Messages handed to the broker client and not yet acknowledged.",
            ),
            end_to_end_latency: latency,
            stage_latency,
            sink_up: gauge_vec(
                &r,
                "studio_relay_sink_up",
                "1 when the broker answered the last health check.",
                &["sink"],
            ),
            replay_records: counter(
                &r,
                "studio_relay_replay_records_total",
                "Records published by replay.",
                &["source"],
            ),
            replay_pages: counter(
                &r,
                "studio_relay_replay_pages_total",
                "GraphQL pages fetched by replay.",
                &["source"],
            ),
            replay_retries: counter(
                &r,
                "studio_relay_replay_retries_total",
                "GraphQL requests retried (429, 5xx, network).",
                &["source"],
            ),
            replay_windows_completed: counter(
                &r,
                "studio_relay_replay_windows_completed_total",
                "Replay windows fully published and checkpointed.",
                &["source"],
            ),
            replay_windows_total: gauge_vec(
                &r,
                "studio_relay_replay_windows",
                "Windows planned by the running replay.",
                &["source"],
            ),
            backfill_records: counter(
                &r,
                "studio_relay_backfill_records_total",
                "Records published by gap backfill after a reconnect.",
                TS,
            ),
            events_suppressed: counter(
                &r,
                "studio_relay_events_suppressed_total",
                "Records not published because they were already published: reason repeat (a live push identical to one already taken), already_live (a historic record whose match key was already published), already_on_broker (replay: the record is on the destination already).",
                &["tenant", "source", "origin", "reason"],
            ),
            spool_bytes: gauge(
                &r,
                "studio_relay_spool_bytes",
                "Bytes in the on-disk spool (messages waiting for the broker beyond the in-memory queue).",
            ),
            spool_corrupt_records: counter(
                &r,
                "studio_relay_spool_corrupt_records_total",
                "Spooled records skipped because they were torn (a crash mid-write) or failed their checksum.",
                &[],
            ),
            checkpoint_save_failures: counter(
                &r,
                "studio_relay_checkpoint_save_failures_total",
                "Failed writes of the restart checkpoint, by store (file, nats, kafka); retried at the next epoch.",
                &["store"],
            ),
            checkpoint_timestamp: float_gauge_vec(
                &r,
                "studio_relay_checkpoint_timestamp_seconds",
                "Upstream time (Unix seconds) of the last restart checkpoint written: a restart backfills from here.",
                &["tenant"],
            ),
            recent_ids_seed_failures: counter(
                &r,
                "studio_relay_recent_ids_seed_failures_total",
                "Failed or cut-short reads of the event ids already on the broker after a restart (the resume backfill may then publish duplicates).",
                &[],
            ),
            schema_registry_retries: counter(
                &r,
                "studio_relay_schema_registry_retries_total",
                "Schema registry requests retried at start-up (registry unreachable, HTTP 5xx or 429).",
                &[],
            ),
            schema_registry_subjects: gauge_vec(
                &r,
                "studio_relay_schema_registry_subjects",
                "Subjects whose Avro schema id was resolved with the schema registry at start-up.",
                &[],
            ),
            gaps: counter(
                &r,
                "studio_relay_gaps_total",
                "Socket gaps detected after a reconnect (backfilled, or marked on the control topic for profile_live).",
                TS,
            ),
            build_info: gauge_vec(
                &r,
                "studio_relay_build_info",
                "Always 1; labels carry the version.",
                &["version"],
            ),
            process_start_time: start,
            kafka: KafkaClientMetrics::new(&r),
            registry: r.registry,
            families: r.families.into_inner(),
            tenant_label: TenantLabel::Name,
        };
        m.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        m
    }

    /// Records that a frame arrived now (feeds the "seconds since last event" gauge).
    pub fn mark_event(&self, tenant: &str, source: &str) {
        self.last_event_timestamp
            .with_label_values(&[tenant, source])
            .set(unix_now_seconds());
    }

    /// Every registered family, including labelled ones without a series yet.
    pub fn families(&self) -> &[FamilyDescriptor] {
        &self.families
    }

    /// Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let now = chrono::Utc::now().timestamp_millis() as f64 / 1000.0;
        for family in self.last_event_timestamp.collect_families() {
            for m in family.get_metric() {
                // Label pairs come sorted by name: match them by name, not position.
                let labels: std::collections::HashMap<&str, &str> = m
                    .get_label()
                    .iter()
                    .map(|l| (l.name(), l.value()))
                    .collect();
                let last = m.get_gauge().get_value();
                if let Ok(g) = self.seconds_since_last_event.get_metric_with(&labels) {
                    g.set((now - last).max(0.0));
                }
            }
        }
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

/// Wall-clock now, Unix seconds (millisecond resolution), as the
/// "last event" gauges hold it.
pub(crate) fn unix_now_seconds() -> f64 {
    chrono::Utc::now().timestamp_millis() as f64 / 1000.0
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Lets `render` walk one vector's children without a second registry.
trait CollectFamilies {
    fn collect_families(&self) -> Vec<prometheus::proto::MetricFamily>;
}

impl CollectFamilies for GaugeVec {
    fn collect_families(&self) -> Vec<prometheus::proto::MetricFamily> {
        use prometheus::core::Collector;
        self.collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_derived_gauges() {
        let m = Metrics::new();
        m.frames_received
            .with_label_values(&["t", "calls"])
            .inc_by(3);
        m.mark_event("t", "calls");
        let text = m.render();
        assert!(
            text.contains("studio_relay_frames_received_total{source=\"calls\",tenant=\"t\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("studio_relay_seconds_since_last_event{source=\"calls\",tenant=\"t\"}"),
            "{text}"
        );
        assert!(text.contains("studio_relay_build_info"));
    }

    #[test]
    fn families_list_labelled_families_before_their_first_series() {
        let m = Metrics::new();
        assert!(!m.render().contains("studio_relay_gaps_total"));
        let gaps = m
            .families()
            .iter()
            .find(|f| f.name == "studio_relay_gaps_total")
            .expect("gaps family listed");
        assert_eq!(gaps.kind, MetricType::COUNTER);
        assert_eq!(gaps.labels, ["tenant", "source"]);
        let latency = m
            .families()
            .iter()
            .find(|f| f.name == "studio_relay_end_to_end_latency_seconds")
            .expect("latency family listed");
        assert_eq!(latency.kind, MetricType::HISTOGRAM);
    }

    #[test]
    fn per_event_families_carry_the_tenant_label_the_option_says_and_state_keeps_the_name() {
        let hashed = Metrics::with_tenant_label(TenantLabel::Hashed(4));
        let bucket = hashed.event_tenant("acme").into_owned();
        assert!(
            ["b0", "b1", "b2", "b3"].contains(&bucket.as_str()),
            "{bucket}"
        );
        assert_eq!(hashed.event_tenant("acme"), bucket, "stable");
        let spread: std::collections::HashSet<_> = (0..100)
            .map(|i| hashed.event_tenant(&format!("t{i}")).into_owned())
            .collect();
        assert_eq!(spread.len(), 4, "100 tenants fill 4 buckets: {spread:?}");

        let dropped = Metrics::with_tenant_label(TenantLabel::None);
        crate::ops::internal_events::PartialPushReceived {
            tenant: "acme",
            source: "calls",
        }
        .emit(&dropped);
        dropped
            .socket_connected
            .with_label_values(&["acme", "calls"])
            .set(1);
        let text = dropped.render();
        assert!(
            text.contains("studio_relay_partial_pushes_total{source=\"calls\",tenant=\"\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("studio_relay_socket_connected{source=\"calls\",tenant=\"acme\"} 1"),
            "{text}"
        );
        assert_eq!(Metrics::new().event_tenant("acme"), "acme");
    }
}
