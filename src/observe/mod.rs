//! Being watched: metrics and the events that are both logged and counted, the bounded
//! endpoint label, the alerted series, readiness, the admin server and span export; what
//! the relay did (the attempt log) and how long each endpoint's oldest record has waited.
//!
//! - [`metrics`]: every metric name and label, and each event that is both logged and counted.
//! - [`labels`]: the bounded `endpoint` label; [`series`]: the alerted series, at 0 from start-up.
//! - [`readiness`]: the latch behind `/ready`; [`admin`]: `/metrics`, `/live`, `/ready`.
//! - [`otel`]: span export over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
//! - [`attempts`]: the attempt log (one record per attempt and decision, best effort, counted).
//! - [`waiting`]: the age of each endpoint's oldest undecided record.

pub mod admin;
pub mod attempts;
pub mod labels;
pub mod metrics;
pub mod otel;
pub mod readiness;
pub mod series;
pub mod waiting;

/// The name of every metric the process has, whether or not it has a value yet
/// (the handbook's metrics page is checked against it): the attempt log's and the
/// oldest-waiting series register on first use, in their own modules.
pub fn metric_names() -> Vec<String> {
    let _registered = (attempts::dropped_total(), waiting::registered());
    metrics::names()
}
