//! The one place where metric names, help texts and labels live.
//!
//! Label values are bounded: endpoint names or URL hosts, at most
//! `delivery.max_endpoint_labels` hosts then `other` ([`crate::observe::labels`]; never
//! URLs or ids), topic names, reasons, roles and sink kinds. Every function
//! here that takes an endpoint labels it through [`labels::endpoint`](crate::observe::labels::endpoint) and logs
//! the real one.

use std::sync::{LazyLock, Mutex};

use prometheus::core::Collector;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

pub use self::events::*;

mod events;

pub struct Metrics {
    pub registry: Registry,
    pub ready: IntGauge,
    pub buffered_bytes: IntGauge,
    /// endpoint, outcome (delivered | retry | deferred | dead)
    pub deliveries: IntCounterVec,
    /// endpoint
    pub attempt_duration: HistogramVec,
    /// endpoint
    pub end_to_end_latency: HistogramVec,
    /// tier (topic)
    pub retries_routed: IntCounterVec,
    /// reason
    pub dead_letters: IntCounterVec,
    /// role
    pub in_flight: IntGaugeVec,
    /// role, reason (capacity | not_due | ordered)
    pub paused_partitions: IntGaugeVec,
    /// group, topic, partition
    pub consumer_lag: IntGaugeVec,
    /// endpoint: 0 closed, 1 half-open, 2 open
    pub circuit_state: IntGaugeVec,
    /// sink, outcome (sent | failed | gave_up)
    pub notifications: IntCounterVec,
    /// endpoint, reason
    pub dead_letters_handled: IntCounterVec,
    /// topic
    pub produce_failures: IntCounterVec,
    /// endpoint
    pub endpoint_overflow: IntCounterVec,
    /// endpoint
    pub endpoint_paced: IntCounterVec,
    /// endpoint
    pub endpoint_holds: IntCounterVec,
    /// endpoint, bound (limit | ceiling)
    pub endpoint_concurrency: IntGaugeVec,
    /// topic
    pub relay_headers_ignored: IntCounterVec,
    /// topic
    pub event_attributes_ignored: IntCounterVec,
    /// topic
    pub events_unmatched: IntCounterVec,
    /// no labels
    pub fanout_legs: HistogramVec,
    /// role
    pub handler_panics: IntCounterVec,
    /// topic (tiers and dead)
    pub route_held_seconds: IntGaugeVec,
    /// topic (tiers and dead)
    pub route_held_records: IntGaugeVec,
    /// source (file | registry)
    pub registry_endpoints: IntGaugeVec,
    /// result (applied | refused)
    pub registry_updates: IntCounterVec,
    /// no labels: 1 while the registry topic can be read
    pub registry_up: IntGaugeVec,
    /// partition
    pub registry_offset: IntGaugeVec,
    /// topic
    pub offsets_skipped: IntCounterVec,
    /// topic
    pub offset_map_overflow: IntCounterVec,
}

/// The name of every metric registered, in order: the registry's `gather()`
/// leaves out a labelled metric until a label value is set.
static NAMES: Mutex<Vec<String>> = Mutex::new(Vec::new());

pub(crate) fn register<C: Collector + Clone + 'static>(registry: &Registry, metric: C) -> C {
    let names: Vec<String> = metric.desc().into_iter().map(|desc| desc.fq_name.clone()).collect();
    NAMES.lock().unwrap_or_else(|e| e.into_inner()).extend(names);
    registry.register(Box::new(metric.clone())).expect("metric registered once");
    metric
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(registry, IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"))
}

fn gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    register(registry, IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"))
}

fn histogram(registry: &Registry, name: &str, help: &str, labels: &[&str], buckets: Vec<f64>) -> HistogramVec {
    register(
        registry,
        HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels).expect("valid metric"),
    )
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let r = Registry::new();
    let build = gauge(&r, "hookrelay_build_info", "Build information; always 1.", &["version"]);
    build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
    let ready = IntGauge::new("hookrelay_ready", "1 once every consumer of this process joined its group.")
        .expect("valid metric");
    let ready = register(&r, ready);
    // Attempt buckets span fast receivers to the 5 s default timeout and beyond;
    // end-to-end spans retries up to the 24 h default deadline.
    let attempt_buckets = vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
    let e2e_buckets =
        vec![0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 4.0 * 3600.0, 24.0 * 3600.0];
    let buffered_bytes = IntGauge::new(
        "hookrelay_buffered_bytes",
        "Bytes of records read and not yet decided (bounded by delivery.max_buffered_bytes).",
    )
    .expect("valid metric");
    let buffered_bytes = register(&r, buffered_bytes);
    Metrics {
        ready,
        buffered_bytes,
        deliveries: counter(
            &r,
            "hookrelay_deliveries_total",
            "Records by what became of them.",
            &["endpoint", "outcome"],
        ),
        attempt_duration: histogram(
            &r,
            "hookrelay_attempt_duration_seconds",
            "Duration of one HTTP attempt.",
            &["endpoint"],
            attempt_buckets,
        ),
        end_to_end_latency: histogram(
            &r,
            "hookrelay_end_to_end_latency_seconds",
            "Event record timestamp to successful delivery.",
            &["endpoint"],
            e2e_buckets,
        ),
        retries_routed: counter(&r, "hookrelay_retries_routed_total", "Records routed to a retry tier.", &["tier"]),
        dead_letters: counter(&r, "hookrelay_dead_letters_total", "Records routed to the dead topic.", &["reason"]),
        in_flight: gauge(&r, "hookrelay_in_flight_records", "Records being worked on.", &["role"]),
        paused_partitions: gauge(
            &r,
            "hookrelay_paused_partitions",
            "Partitions paused by the relay.",
            &["role", "reason"],
        ),
        consumer_lag: gauge(
            &r,
            "hookrelay_consumer_lag",
            "Consumer lag in records, from librdkafka statistics.",
            &["group", "topic", "partition"],
        ),
        circuit_state: gauge(
            &r,
            "hookrelay_circuit_state",
            "Circuit per endpoint: 0 closed, 1 half-open, 2 open.",
            &["endpoint"],
        ),
        notifications: counter(
            &r,
            "hookrelay_notifications_total",
            "Failure notifications by sink and outcome.",
            &["sink", "outcome"],
        ),
        dead_letters_handled: counter(
            &r,
            "hookrelay_dead_letters_handled_total",
            "Dead records seen by the failure handler.",
            &["endpoint", "reason"],
        ),
        produce_failures: counter(
            &r,
            "hookrelay_produce_failures_total",
            "Failed produce attempts to a tier or the dead topic (size errors are dead-lettered, others retried).",
            &["topic"],
        ),
        endpoint_overflow: counter(
            &r,
            "hookrelay_endpoint_overflow_total",
            "Records deferred without an attempt because their endpoint had too many waiting in a partition.",
            &["endpoint"],
        ),
        endpoint_paced: counter(
            &r,
            "hookrelay_endpoint_paced_total",
            "Records deferred without an attempt because their endpoint's pace (rate_limit or a Retry-After hold) would have kept them waiting past rate_max_wait.",
            &["endpoint"],
        ),
        endpoint_holds: counter(
            &r,
            "hookrelay_endpoint_holds_total",
            "Times an endpoint was held (no request) for the Retry-After of a 429 or 503.",
            &["endpoint"],
        ),
        endpoint_concurrency: gauge(
            &r,
            "hookrelay_endpoint_concurrency",
            "Adaptive concurrency per endpoint: the current limit and its ceiling.",
            &["endpoint", "bound"],
        ),
        registry_endpoints: gauge(
            &r,
            "hookrelay_registry_endpoints",
            "Named endpoints this replica knows, by source (file, registry).",
            &["source"],
        ),
        registry_updates: counter(
            &r,
            "hookrelay_registry_updates_total",
            "Registry records read, by result (applied, refused).",
            &["result"],
        ),
        registry_up: gauge(&r, "hookrelay_registry_up", "1 while the registry topic can be read, else 0.", &[]),
        registry_offset: gauge(
            &r,
            "hookrelay_registry_offset",
            "Next registry offset to apply, by partition (the applied position).",
            &["partition"],
        ),
        relay_headers_ignored: counter(
            &r,
            "hookrelay_relay_headers_ignored_total",
            "Event-topic records whose hookrelay-* headers were ignored (not written by the relay, or a replay without a valid seal).",
            &["topic"],
        ),
        event_attributes_ignored: counter(
            &r,
            "hookrelay_event_attributes_ignored_total",
            "Malformed type, source, subject or attributes fields dropped from events that name their url or endpoint.",
            &["topic"],
        ),
        events_unmatched: counter(
            &r,
            "hookrelay_events_unmatched_total",
            "Events with a type and no receiver that no endpoint subscribes to (decided at once, no dead letter).",
            &["topic"],
        ),
        fanout_legs: histogram(
            &r,
            "hookrelay_fanout_legs",
            "Legs (matching endpoints) per fanned-out event.",
            &[],
            vec![1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0],
        ),
        handler_panics: {
            let panics = counter(
                &r,
                "hookrelay_handler_panics_total",
                "Records whose handler panicked (a bug); each was set aside, not held.",
                &["role"],
            );
            // From start-up, so that the first panic shows in increase().
            for role in ["events", "retry", "dead"] {
                panics.with_label_values(&[role]).reset();
            }
            panics
        },
        route_held_seconds: gauge(
            &r,
            "hookrelay_route_held_seconds",
            "Age of the oldest route to this topic held by a failing produce (its offset is not committed); 0 when none.",
            &["topic"],
        ),
        route_held_records: gauge(
            &r,
            "hookrelay_route_held_records",
            "Records whose route to this topic is held by a failing produce.",
            &["topic"],
        ),
        offsets_skipped: counter(
            &r,
            "hookrelay_offsets_skipped_total",
            "Records skipped without delivery on taking a partition over: its last commit's map said they were decided.",
            &["topic"],
        ),
        offset_map_overflow: counter(
            &r,
            "hookrelay_offset_map_overflow_total",
            "Commits written without their map of decided offsets (too long, or refused by the broker as OFFSET_METADATA_TOO_LARGE): a new owner of the partition delivers those records again.",
            &["topic"],
        ),
        registry: r,
    }
});

/// The process-wide metrics.
pub fn get() -> &'static Metrics {
    &METRICS
}

/// The name of every metric registered so far (see [`crate::observe::metric_names`] for all of them).
pub fn names() -> Vec<String> {
    let _registered = get();
    NAMES.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// The Prometheus text exposition of every metric.
pub fn render() -> String {
    let mut out = Vec::new();
    TextEncoder::new().encode(&get().registry.gather(), &mut out).expect("text encoding cannot fail");
    String::from_utf8(out).expect("the text format is UTF-8")
}

#[cfg(test)]
mod tests {
    use super::events::{capped, capped_display};
    use super::*;

    #[test]
    fn logged_errors_are_capped_on_a_char_boundary() {
        let long = "é".repeat(1000);
        let cut = capped(Some(&long)).unwrap();
        assert_eq!(cut.len(), MAX_LOGGED_ERROR_BYTES);
        assert!(cut.chars().all(|c| c == 'é'));
        assert_eq!(capped_display(&"x".repeat(5000)).len(), MAX_LOGGED_ERROR_BYTES);
        assert_eq!(capped(Some("short")), Some("short"));
    }
}
