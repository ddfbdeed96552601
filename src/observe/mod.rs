//! Being watched: metrics and the events that are both logged and counted, the bounded
//! endpoint label, the alerted series, readiness, the admin server and span export.
//!
//! - [`metrics`]: every metric name and label, and each event that is both logged and counted.
//! - [`labels`]: the bounded `endpoint` label; [`series`]: the alerted series, at 0 from start-up.
//! - [`readiness`]: the latch behind `/ready`; [`admin`]: `/metrics`, `/live`, `/ready`.
//! - [`otel`]: span export over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.

pub mod admin;
pub mod labels;
pub mod metrics;
pub mod otel;
pub mod readiness;
pub mod series;
