//! The registry's metrics and the events that are both logged and counted.

use std::sync::LazyLock;

use prometheus::{IntCounterVec, IntGauge, IntGaugeVec, Opts};

struct Metrics {
    /// source (file | registry)
    endpoints: IntGaugeVec,
    /// result (applied | refused)
    updates: IntCounterVec,
    up: IntGauge,
    /// partition
    offset: IntGaugeVec,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let registry = &crate::observe::metrics::get().registry;
    let endpoints = IntGaugeVec::new(
        Opts::new("hookrelay_registry_endpoints", "Named endpoints this replica knows, by source (file, registry)."),
        &["source"],
    )
    .expect("valid metric");
    let updates = IntCounterVec::new(
        Opts::new("hookrelay_registry_updates_total", "Registry records read, by result (applied, refused)."),
        &["result"],
    )
    .expect("valid metric");
    let up = IntGauge::new("hookrelay_registry_up", "1 while the registry topic can be read, else 0.")
        .expect("valid metric");
    let offset = IntGaugeVec::new(
        Opts::new("hookrelay_registry_offset", "Next registry offset to apply, by partition (the applied position)."),
        &["partition"],
    )
    .expect("valid metric");
    for metric in [Box::new(endpoints.clone()) as Box<dyn prometheus::core::Collector>, Box::new(updates.clone())] {
        registry.register(metric).expect("metric registered once");
    }
    registry.register(Box::new(up.clone())).expect("metric registered once");
    registry.register(Box::new(offset.clone())).expect("metric registered once");
    Metrics { endpoints, updates, up, offset }
});

/// The series at 0 from start-up, and the file's count.
pub fn init(file_endpoints: usize) {
    let m = &*METRICS;
    m.endpoints.with_label_values(&["file"]).set(file_endpoints as i64);
    m.endpoints.with_label_values(&["registry"]).set(0);
    for result in ["applied", "refused"] {
        m.updates.with_label_values(&[result]).inc_by(0);
    }
}

/// A record was applied.
pub fn applied(name: &str, partition: i32, offset: i64, endpoints: usize, delete: bool) {
    let m = &*METRICS;
    m.updates.with_label_values(&["applied"]).inc();
    m.endpoints.with_label_values(&["registry"]).set(endpoints as i64);
    tracing::debug!(endpoint = name, partition, offset, delete, "registry record applied");
}

/// A record was refused; the previous spec of `name` stays.
pub fn refused(name: &str, partition: i32, offset: i64, why: &str) {
    METRICS.updates.with_label_values(&["refused"]).inc();
    tracing::warn!(endpoint = name, partition, offset, error = why, "registry record refused, previous spec kept");
}

/// The applied position of a partition.
pub fn position(partition: i32, next: i64) {
    METRICS.offset.with_label_values(&[&partition.to_string()]).set(next);
}

pub fn up(up: bool) {
    METRICS.up.set(i64::from(up));
}
