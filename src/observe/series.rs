//! Every series an alert or the dashboard reads, created at 0 at start-up for each label value known then.
//!
//! A counter series that appears only with its first increment hides that
//! increment from `increase()` and `rate()`: the first failure would never alert.

use std::time::Duration;

use crate::endpoint::circuit::CircuitState;
use crate::observe::metrics;
use crate::route::outcome::DeadReason;

/// The label values known at start-up.
pub struct Known<'a> {
    pub tiers: &'a [String],
    pub dead_topic: &'a str,
    /// Configured endpoint names.
    pub endpoints: Vec<&'a str>,
    /// Sink kinds (`http`, `email`, `log`).
    pub sinks: Vec<&'static str>,
    /// The roles this process runs, each with its pause reasons.
    pub roles: Vec<&'static str>,
    pub pause_reasons: &'a [&'static str],
}

/// Creates, at 0, every series an alert or the dashboard reads, for each
/// label value known at start-up: `increase()` cannot see the first failure
/// of a series that appears only with it.
pub fn init(known: &Known<'_>) {
    let m = metrics::get();
    for reason in DeadReason::ALL {
        m.dead_letters.with_label_values(&[reason.as_str()]).inc_by(0);
    }
    for tier in known.tiers {
        m.retries_routed.with_label_values(&[tier]).inc_by(0);
    }
    for topic in known.tiers.iter().map(String::as_str).chain([known.dead_topic]) {
        m.produce_failures.with_label_values(&[topic]).inc_by(0);
        metrics::route_held(topic, 0, Duration::ZERO);
    }
    for endpoint in &known.endpoints {
        for outcome in ["delivered", "retry", "deferred", "dead"] {
            m.deliveries.with_label_values(&[endpoint, outcome]).inc_by(0);
        }
        m.circuit_state.with_label_values(&[endpoint]).set(CircuitState::Closed.gauge());
        m.endpoint_overflow.with_label_values(&[endpoint]).inc_by(0);
        // Histograms: the child exists (zero buckets) once asked for.
        let _ =
            (m.attempt_duration.with_label_values(&[endpoint]), m.end_to_end_latency.with_label_values(&[endpoint]));
        for reason in DeadReason::ALL {
            m.dead_letters_handled.with_label_values(&[endpoint, reason.as_str()]).inc_by(0);
        }
    }
    for sink in &known.sinks {
        for outcome in ["sent", "failed", "gave_up"] {
            m.notifications.with_label_values(&[sink, outcome]).inc_by(0);
        }
    }
    for role in &known.roles {
        m.in_flight.with_label_values(&[role]).set(0);
        for reason in known.pause_reasons {
            m.paused_partitions.with_label_values(&[role, reason]).set(0);
        }
    }
}
