//! Per-endpoint circuit breaker: closed -> (N consecutive failures) open -> (cool-down) half-open -> one probe decides.
//!
//! While open, an endpoint's records skip the HTTP attempt and are deferred to
//! the next tier, so a dead receiver costs no sockets, timeouts or CPU.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::CircuitConfig;
use crate::metrics;

/// What the breaker lets a record do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Closed: attempt as usual.
    Attempt,
    /// Half-open: this record is the one probe; its result closes or re-opens the circuit.
    Probe,
    /// Open (or a probe is already out): do not attempt.
    Defer,
}

/// The state of one endpoint's circuit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// One probe is in flight; everything else defers until it reports.
    HalfOpen,
}

impl State {
    /// The `hookrelay_circuit_state` value: 0 closed, 1 half-open, 2 open.
    fn gauge(self) -> i64 {
        match self {
            State::Closed { .. } => 0,
            State::HalfOpen => 1,
            State::Open { .. } => 2,
        }
    }
}

/// The breakers of all endpoints. Cheap to clone (shared).
#[derive(Clone)]
pub struct Circuits {
    config: CircuitConfig,
    states: Arc<Mutex<HashMap<Arc<str>, State>>>,
}

impl Circuits {
    pub fn new(config: CircuitConfig) -> Circuits {
        Circuits { config, states: Arc::default() }
    }

    /// May a record for `endpoint` be attempted at `now`?
    pub fn admit(&self, endpoint: &Arc<str>, now: Instant) -> Admission {
        if !self.config.enabled {
            return Admission::Attempt;
        }
        let mut states = self.states.lock().expect("circuit lock poisoned");
        let state = states.entry(endpoint.clone()).or_insert(State::Closed { failures: 0 });
        let admission = match *state {
            State::Closed { .. } => Admission::Attempt,
            State::Open { until } if now >= until => {
                *state = State::HalfOpen;
                Admission::Probe
            }
            State::Open { .. } | State::HalfOpen => Admission::Defer,
        };
        publish(endpoint, *state);
        admission
    }

    /// Reports an attempt's result. `failed` means a retryable failure
    /// (5xx, timeout, connection error...); a delivery or a permanent answer
    /// shows the receiver is up.
    pub fn report(&self, endpoint: &Arc<str>, admission: Admission, failed: bool, now: Instant) {
        if !self.config.enabled {
            return;
        }
        let mut states = self.states.lock().expect("circuit lock poisoned");
        let state = states.entry(endpoint.clone()).or_insert(State::Closed { failures: 0 });
        let open = State::Open { until: now + self.config.cool_down };
        let before = *state;
        *state = match (before, admission, failed) {
            (_, Admission::Probe, true) => open,
            (_, Admission::Probe, false) => State::Closed { failures: 0 },
            (State::Closed { failures }, _, true) if failures + 1 >= self.config.failure_threshold => open,
            (State::Closed { failures }, _, true) => State::Closed { failures: failures + 1 },
            (State::Closed { .. }, _, false) => State::Closed { failures: 0 },
            // A plain attempt that started before the circuit opened: the
            // circuit already knows, its result changes nothing.
            (other, _, _) => other,
        };
        if before.gauge() != 2 && state.gauge() == 2 {
            tracing::warn!(
                endpoint = &**endpoint,
                cool_down_ms = self.config.cool_down.as_millis() as u64,
                "circuit opened"
            );
        } else if before.gauge() != 0 && state.gauge() == 0 {
            tracing::info!(endpoint = &**endpoint, "circuit closed");
        }
        publish(endpoint, *state);
    }

    /// A probe that never reported (abandoned at shutdown) must not leave the circuit half-open forever.
    pub fn probe_abandoned(&self, endpoint: &Arc<str>, now: Instant) {
        let mut states = self.states.lock().expect("circuit lock poisoned");
        if let Some(state @ State::HalfOpen) = states.get_mut(endpoint) {
            *state = State::Open { until: now };
        }
    }

    pub fn cool_down(&self) -> Duration {
        self.config.cool_down
    }
}

fn publish(endpoint: &str, state: State) {
    metrics::get().circuit_state.with_label_values(&[endpoint]).set(state.gauge());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn circuits() -> Circuits {
        Circuits::new(CircuitConfig { enabled: true, failure_threshold: 3, cool_down: Duration::from_secs(10) })
    }

    #[test]
    fn opens_after_the_threshold_then_probes_once() {
        let c = circuits();
        let e: Arc<str> = "billing".into();
        let t0 = Instant::now();
        for _ in 0..2 {
            assert_eq!(c.admit(&e, t0), Admission::Attempt);
            c.report(&e, Admission::Attempt, true, t0);
        }
        assert_eq!(c.admit(&e, t0), Admission::Attempt, "two failures are below the threshold");
        c.report(&e, Admission::Attempt, true, t0);
        assert_eq!(c.admit(&e, t0), Admission::Defer, "three failures open it");
        assert_eq!(c.admit(&e, t0 + Duration::from_secs(9)), Admission::Defer);
        let later = t0 + Duration::from_secs(10);
        assert_eq!(c.admit(&e, later), Admission::Probe, "cool-down over: one probe");
        assert_eq!(c.admit(&e, later), Admission::Defer, "only one probe at a time");
        c.report(&e, Admission::Probe, true, later);
        assert_eq!(c.admit(&e, later + Duration::from_secs(5)), Admission::Defer, "a failed probe re-opens it");
        let again = later + Duration::from_secs(10);
        assert_eq!(c.admit(&e, again), Admission::Probe);
        c.report(&e, Admission::Probe, false, again);
        assert_eq!(c.admit(&e, again), Admission::Attempt, "a good probe closes it");
    }

    #[test]
    fn a_success_resets_the_count_and_endpoints_are_separate() {
        let c = circuits();
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        let t = Instant::now();
        c.report(&a, Admission::Attempt, true, t);
        c.report(&a, Admission::Attempt, true, t);
        c.report(&a, Admission::Attempt, false, t);
        c.report(&a, Admission::Attempt, true, t);
        c.report(&a, Admission::Attempt, true, t);
        assert_eq!(c.admit(&a, t), Admission::Attempt);
        c.report(&b, Admission::Attempt, true, t);
        c.report(&b, Admission::Attempt, true, t);
        c.report(&b, Admission::Attempt, true, t);
        assert_eq!(c.admit(&b, t), Admission::Defer);
        assert_eq!(c.admit(&a, t), Admission::Attempt);
    }

    #[test]
    fn disabled_always_attempts() {
        let c =
            Circuits::new(CircuitConfig { enabled: false, failure_threshold: 1, cool_down: Duration::from_secs(1) });
        let e: Arc<str> = "x".into();
        let t = Instant::now();
        c.report(&e, Admission::Attempt, true, t);
        assert_eq!(c.admit(&e, t), Admission::Attempt);
    }
}
