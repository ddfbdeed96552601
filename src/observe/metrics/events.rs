//! Every event that is both logged and counted: one function each, so the log fields and the metric
//! labels cannot drift apart; and the gauges the consumers and the limiter set.

use std::time::Duration;

use super::get;
use crate::endpoint::circuit::{CircuitState, Transition};
use crate::event::dead_letter::DeadLetter;
use crate::observe::labels;
use crate::route::outcome::{DeadReason, Outcome, Why};

/// The most of an error text put in one log field: a receiver's body or a
/// long error chain must not flood the logs.
pub const MAX_LOGGED_ERROR_BYTES: usize = 1024;

/// An error text cut to [`MAX_LOGGED_ERROR_BYTES`] on a character boundary.
pub(super) fn capped(error: Option<&str>) -> Option<&str> {
    error.map(|e| crate::event::hop::truncate(e, MAX_LOGGED_ERROR_BYTES))
}

/// A displayable error as a capped log field.
pub(super) fn capped_display(error: &dyn std::fmt::Display) -> String {
    let text = error.to_string();
    crate::event::hop::truncate(&text, MAX_LOGGED_ERROR_BYTES).to_string()
}

/// One HTTP attempt finished (whatever its result).
pub fn attempt_finished(endpoint: &str, seconds: f64) {
    get().attempt_duration.with_label_values(&[labels::endpoint(endpoint)]).observe(seconds);
}

/// A record was delivered (2xx).
pub fn delivered(endpoint: &str, id: &str, attempt: u32, latency_ms: Option<i64>) {
    let (m, label) = (get(), labels::endpoint(endpoint));
    m.deliveries.with_label_values(&[label, "delivered"]).inc();
    if let Some(ms) = latency_ms {
        m.end_to_end_latency.with_label_values(&[label]).observe(ms.max(0) as f64 / 1000.0);
    }
    tracing::debug!(endpoint, id, attempt, latency_ms, "delivered");
}

/// A record was routed to a retry tier after `outcome`: a failed attempt, a
/// deferral ([`Why`]), or a record lapping the last tier until it is due.
pub fn retry_routed(endpoint: &str, id: &str, attempt: u32, tier: &str, outcome: &Outcome, error: Option<&str>) {
    let (m, label) = (get(), labels::endpoint(endpoint));
    m.retries_routed.with_label_values(&[tier]).inc();
    let why = match outcome {
        Outcome::Deferred(why) => Some(*why),
        Outcome::NotYet { .. } => {
            // Not a delivery outcome: the record is waiting, as it was.
            tracing::debug!(endpoint, id, attempt, tier, "not due yet, lapping the last tier");
            return;
        }
        _ => None,
    };
    m.deliveries.with_label_values(&[label, if why.is_some() { "deferred" } else { "retry" }]).inc();
    match why {
        Some(Why::Overflow) => m.endpoint_overflow.with_label_values(&[label]).inc(),
        Some(Why::Pace) => m.endpoint_paced.with_label_values(&[label]).inc(),
        _ => {}
    }
    let error = capped(error);
    let deferred = why.is_some();
    let (overflow, paced) = (why == Some(Why::Overflow), why == Some(Why::Pace));
    tracing::info!(endpoint, id, attempt, tier, deferred, overflow, paced, error, "routed to retry tier");
}

/// A 429 or 503 with `Retry-After` holds its endpoint: no request for `hold`.
pub fn endpoint_held(endpoint: &str, hold: Duration) {
    get().endpoint_holds.with_label_values(&[labels::endpoint(endpoint)]).inc();
    tracing::info!(endpoint, hold_ms = hold.as_millis() as u64, "endpoint held by Retry-After");
}

/// A record of an ordered key failed (or its circuit is open) and waits in
/// place, its key behind it, until `wait_ms` from now (`ordering = "key"`).
pub fn retried_in_place(endpoint: &str, id: &str, attempt: u32, deferred: bool, wait_ms: i64, error: Option<&str>) {
    let (m, label) = (get(), labels::endpoint(endpoint));
    m.deliveries.with_label_values(&[label, if deferred { "deferred" } else { "retry" }]).inc();
    let error = capped(error);
    tracing::info!(endpoint, id, attempt, deferred, wait_ms, error, "retried in place (ordered key)");
}

/// A record was routed to the dead topic.
pub fn dead_routed(endpoint: &str, id: &str, attempt: u32, reason: DeadReason, error: Option<&str>) {
    let m = get();
    m.deliveries.with_label_values(&[labels::endpoint(endpoint), "dead"]).inc();
    m.dead_letters.with_label_values(&[reason.as_str()]).inc();
    let error = capped(error);
    tracing::warn!(endpoint, id, attempt, reason = reason.as_str(), error, "routed to dead topic");
}

/// A produce to a tier or the dead topic failed; it is retried.
pub fn produce_failed(topic: &str, error: &dyn std::fmt::Display, retry_in: Duration) {
    get().produce_failures.with_label_values(&[topic]).inc();
    let error = capped_display(error);
    tracing::warn!(topic, error, retry_in_ms = retry_in.as_millis() as u64, "produce failed, retrying");
}

/// A record could not be written to `topic` because of its size: it is dead-lettered instead.
pub fn produce_too_large(topic: &str, id: &str, error: &str) {
    get().produce_failures.with_label_values(&[topic]).inc();
    tracing::warn!(topic, id, error = capped(Some(error)), "record too large for topic, dead-lettered as too_large");
}

/// The producer failed fatally (librdkafka's fatal error); the process exits to restart.
pub fn producer_fatal(topic: &str, why: &str) {
    get().produce_failures.with_label_values(&[topic]).inc();
    tracing::error!(topic, error = capped(Some(why)), "fatal producer error, stopping");
}

/// How routes to one topic are held by a failing produce (updated every second).
pub fn route_held(topic: &str, records: usize, oldest: Duration) {
    let m = get();
    m.route_held_records.with_label_values(&[topic]).set(records as i64);
    m.route_held_seconds.with_label_values(&[topic]).set(oldest.as_secs() as i64);
}

/// An event-topic record carried relay headers the relay does not believe.
pub fn relay_headers_ignored(record: &crate::event::hop::Coordinates, headers: usize) {
    get().relay_headers_ignored.with_label_values(&[&record.topic]).inc();
    tracing::debug!(
        topic = record.topic,
        partition = record.partition,
        offset = record.offset,
        headers,
        "relay headers on an event topic ignored"
    );
}

/// An event that names its receiver carried malformed attribute fields
/// (`type`, `source`, `subject`, `attributes`): dropped, the event delivered.
pub fn event_attributes_ignored(record: &crate::event::hop::Coordinates, fields: usize) {
    get().event_attributes_ignored.with_label_values(&[&record.topic]).inc_by(fields as u64);
    tracing::debug!(
        topic = record.topic,
        partition = record.partition,
        offset = record.offset,
        fields,
        "malformed event attributes ignored"
    );
}

/// An event that names no receiver matched no subscription: decided at once.
pub fn event_unmatched(topic: &str, id: &str, r#type: Option<&str>) {
    get().events_unmatched.with_label_values(&[topic]).inc();
    tracing::debug!(topic, id, r#type, "event matched no subscription");
}

/// An event fanned out to `legs` endpoints.
pub fn fanned_out(legs: usize) {
    get().fanout_legs.with_label_values::<&str>(&[]).observe(legs as f64);
}

/// An endpoint's circuit changed (or was seen for the first time).
pub fn circuit_changed(endpoint: &str, change: Transition, cool_down: Duration) {
    get().circuit_state.with_label_values(&[labels::endpoint(endpoint)]).set(change.to.gauge());
    match (change.from, change.to) {
        (from, CircuitState::Open) if from != Some(CircuitState::Open) => {
            tracing::warn!(endpoint, cool_down_ms = cool_down.as_millis() as u64, "circuit opened")
        }
        (Some(CircuitState::Open | CircuitState::HalfOpen), CircuitState::Closed) => {
            tracing::info!(endpoint, "circuit closed")
        }
        _ => {}
    }
}

/// A record's handler panicked; the record is set aside (dead letter, or logged in the dead role).
pub fn handler_panicked(role: &str, why: &str) {
    get().handler_panics.with_label_values(&[role]).inc();
    tracing::error!(role, why, "handler panicked; setting the record aside");
}

/// The failure handler read a dead record.
pub fn dead_letter_handled(dead: &DeadLetter) {
    let reason = dead.reason.map_or("unknown", DeadReason::as_str);
    get().dead_letters_handled.with_label_values(&[labels::endpoint(&dead.endpoint), reason]).inc();
    tracing::warn!(
        endpoint = dead.endpoint,
        id = dead.id,
        reason,
        error = capped(dead.last_error.as_deref()),
        status = dead.last_status,
        attempt = dead.hop.attempts,
        topic = dead.here.topic,
        partition = dead.here.partition,
        offset = dead.here.offset,
        "dead letter"
    );
}

/// What became of one try to send a notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notified {
    Sent,
    /// Failed; retried after `retry_in`.
    Failed {
        retry_in: Duration,
    },
    /// Failed, and the sink's time is up.
    GaveUp,
}

/// One try to send a notification through a sink.
pub fn notification(sink: &str, endpoint: &str, result: Notified, error: Option<&dyn std::fmt::Display>) {
    let counter = &get().notifications;
    let error = error.map(capped_display);
    match result {
        Notified::Sent => counter.with_label_values(&[sink, "sent"]).inc(),
        Notified::Failed { retry_in } => {
            counter.with_label_values(&[sink, "failed"]).inc();
            tracing::warn!(sink, endpoint, error, retry_in_s = retry_in.as_secs(), "notification failed, retrying");
        }
        Notified::GaveUp => {
            counter.with_label_values(&[sink, "failed"]).inc();
            counter.with_label_values(&[sink, "gave_up"]).inc();
            tracing::error!(sink, endpoint, error, "notification given up");
        }
    }
}

// Gauges.

/// An endpoint's adaptive concurrency limit changed (or the endpoint is new).
pub fn concurrency_limit(endpoint: &str, limit: usize, ceiling: usize) {
    let (gauge, label) = (&get().endpoint_concurrency, labels::endpoint(endpoint));
    gauge.with_label_values(&[label, "limit"]).set(limit as i64);
    gauge.with_label_values(&[label, "ceiling"]).set(ceiling as i64);
}

/// An idle endpoint's circuit (`circuit`) or concurrency limit was evicted:
/// its gauge goes too, unless its label is shared (`other`).
pub fn endpoint_evicted(endpoint: &str) {
    if labels::get().owns(endpoint) {
        let m = get();
        if labels::get().is_configured(endpoint) {
            // A configured endpoint's circuit series stays, as it was at start-up (closed).
            m.circuit_state.with_label_values(&[endpoint]).set(CircuitState::Closed.gauge());
        } else {
            let _ = m.circuit_state.remove_label_values(&[endpoint]);
        }
        let _ = m.endpoint_concurrency.remove_label_values(&[endpoint, "limit"]);
        let _ = m.endpoint_concurrency.remove_label_values(&[endpoint, "ceiling"]);
    }
    tracing::debug!(endpoint, "idle endpoint state evicted");
}

/// Bytes of records read and not yet decided, in the whole process.
pub fn buffered_bytes(bytes: usize) {
    get().buffered_bytes.set(bytes as i64);
}

/// Consumer lag of one partition, from librdkafka statistics.
pub fn consumer_lag(group: &str, topic: &str, partition: i32, lag: i64) {
    get().consumer_lag.with_label_values(&[group, topic, &partition.to_string()]).set(lag);
}

/// A consumer's records in flight and paused partitions by reason.
pub fn consumer_gauges<const N: usize>(role: &str, in_flight: usize, paused: [(&str, usize); N]) {
    let m = get();
    m.in_flight.with_label_values(&[role]).set(in_flight as i64);
    for (reason, count) in paused {
        m.paused_partitions.with_label_values(&[role, reason]).set(count as i64);
    }
}

/// A record skipped on taking a partition over: the last owner's commit said it was decided.
pub fn offsets_skipped(topic: &str) {
    get().offsets_skipped.with_label_values(&[topic]).inc();
}

/// A commit written without its map of decided offsets (too long, or refused by the broker).
pub fn offset_map_overflow(topic: &str) {
    get().offset_map_overflow.with_label_values(&[topic]).inc();
}
