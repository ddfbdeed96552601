//! Per-endpoint circuit breaker: closed -> (N consecutive failures) open -> (cool-down) half-open -> one probe decides.
//!
//! While open, an endpoint's records skip the HTTP attempt and are deferred to
//! the next tier, so a dead receiver costs no sockets, timeouts or CPU.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::CircuitConfig;

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

/// What the attempt told about the endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The receiver answered (2xx, or a permanent status: it is up).
    Up,
    /// A retryable failure: counts towards opening the circuit.
    Failed,
}

/// The circuit of one endpoint as operators see it (`hookrelay_circuit_state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    Closed,
    HalfOpen,
    Open,
}

impl CircuitState {
    /// The gauge value: 0 closed, 1 half-open, 2 open.
    pub fn gauge(self) -> i64 {
        match self {
            CircuitState::Closed => 0,
            CircuitState::HalfOpen => 1,
            CircuitState::Open => 2,
        }
    }
}

/// A change the caller reports (metrics and logs); `from: None` = the endpoint is new.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub from: Option<CircuitState>,
    pub to: CircuitState,
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
    fn public(self) -> CircuitState {
        match self {
            State::Closed { .. } => CircuitState::Closed,
            State::HalfOpen => CircuitState::HalfOpen,
            State::Open { .. } => CircuitState::Open,
        }
    }
}

fn transition(before: Option<State>, after: State) -> Option<Transition> {
    let (from, to) = (before.map(State::public), after.public());
    (from != Some(to)).then_some(Transition { from, to })
}

/// How long an endpoint's circuit is kept after its last use: inline URLs can
/// name any number of hosts, and a host not seen for this long starts afresh
/// (closed) when it comes back.
pub const IDLE_EVICTION: Duration = Duration::from_secs(600);

/// The breakers of all endpoints. Cheap to clone (shared).
#[derive(Clone)]
pub struct Circuits {
    config: CircuitConfig,
    states: Arc<Mutex<States>>,
}

/// Each endpoint's state and when it was last admitted or reported.
type States = HashMap<Arc<str>, (State, Instant)>;

impl Circuits {
    pub fn new(config: CircuitConfig) -> Circuits {
        Circuits { config, states: Arc::default() }
    }

    pub fn cool_down(&self) -> Duration {
        self.config.cool_down
    }

    /// May a record for `endpoint` be attempted at `now`? Also says whether the circuit changed.
    pub fn admit(&self, endpoint: &Arc<str>, now: Instant) -> (Admission, Option<Transition>) {
        if !self.config.enabled {
            return (Admission::Attempt, None);
        }
        let mut states = self.states.lock().expect("circuit lock poisoned");
        let before = states.get(endpoint).map(|(state, _)| *state);
        let (state, used) = states.entry(endpoint.clone()).or_insert((State::Closed { failures: 0 }, now));
        *used = now;
        let admission = match *state {
            State::Closed { .. } => Admission::Attempt,
            State::Open { until } if now >= until => {
                *state = State::HalfOpen;
                Admission::Probe
            }
            State::Open { .. } | State::HalfOpen => Admission::Defer,
        };
        (admission, transition(before, *state))
    }

    /// Records what an admitted attempt told about the endpoint.
    pub fn report(
        &self,
        endpoint: &Arc<str>,
        admission: Admission,
        verdict: Verdict,
        now: Instant,
    ) -> Option<Transition> {
        if !self.config.enabled {
            return None;
        }
        let mut states = self.states.lock().expect("circuit lock poisoned");
        let (state, used) = states.entry(endpoint.clone()).or_insert((State::Closed { failures: 0 }, now));
        *used = now;
        let open = State::Open { until: now + self.config.cool_down };
        let before = *state;
        *state = match (before, admission, verdict) {
            (_, Admission::Probe, Verdict::Failed) => open,
            (_, Admission::Probe, Verdict::Up) => State::Closed { failures: 0 },
            (State::Closed { failures }, _, Verdict::Failed) if failures + 1 >= self.config.failure_threshold => open,
            (State::Closed { failures }, _, Verdict::Failed) => State::Closed { failures: failures + 1 },
            (State::Closed { .. }, _, Verdict::Up) => State::Closed { failures: 0 },
            // Requests admitted before the circuit opened report while it is open: they change nothing.
            (other, _, _) => other,
        };
        transition(Some(before), *state)
    }

    /// Forgets `endpoint`'s circuit (its registry spec moved it to another host): it starts closed.
    pub fn forget(&self, endpoint: &str) {
        self.states.lock().expect("circuit lock poisoned").remove(endpoint);
    }

    /// The probe was abandoned (shutdown): let the next record probe at once.
    pub fn probe_abandoned(&self, endpoint: &Arc<str>, now: Instant) {
        let mut states = self.states.lock().expect("circuit lock poisoned");
        if let Some((state @ State::HalfOpen, _)) = states.get_mut(endpoint) {
            *state = State::Open { until: now };
        }
    }

    /// Forgets the endpoints not used for [`IDLE_EVICTION`] whose circuit is
    /// settled: closed, or open past its cool-down (the next record would
    /// probe anyway). A half-open circuit waits for its probe. Returns them.
    pub fn evict_idle(&self, now: Instant) -> Vec<Arc<str>> {
        let mut evicted = Vec::new();
        self.states.lock().expect("circuit lock poisoned").retain(|endpoint, (state, used)| {
            let settled = match *state {
                State::Closed { .. } => true,
                State::Open { until } => now >= until,
                State::HalfOpen => false,
            };
            let keep = !settled || now.saturating_duration_since(*used) < IDLE_EVICTION;
            if !keep {
                evicted.push(endpoint.clone());
            }
            keep
        });
        evicted
    }
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
            assert_eq!(c.admit(&e, t0).0, Admission::Attempt);
            c.report(&e, Admission::Attempt, Verdict::Failed, t0);
        }
        assert_eq!(c.admit(&e, t0).0, Admission::Attempt, "two failures are below the threshold");
        c.report(&e, Admission::Attempt, Verdict::Failed, t0);
        assert_eq!(c.admit(&e, t0).0, Admission::Defer, "three failures open it");
        assert_eq!(c.admit(&e, t0 + Duration::from_secs(9)).0, Admission::Defer);
        let later = t0 + Duration::from_secs(10);
        assert_eq!(c.admit(&e, later).0, Admission::Probe, "cool-down over: one probe");
        assert_eq!(c.admit(&e, later).0, Admission::Defer, "only one probe at a time");
        c.report(&e, Admission::Probe, Verdict::Failed, later);
        assert_eq!(c.admit(&e, later + Duration::from_secs(5)).0, Admission::Defer, "a failed probe re-opens it");
        let again = later + Duration::from_secs(10);
        assert_eq!(c.admit(&e, again).0, Admission::Probe);
        c.report(&e, Admission::Probe, Verdict::Up, again);
        assert_eq!(c.admit(&e, again).0, Admission::Attempt, "a good probe closes it");
    }

    #[test]
    fn a_success_resets_the_count_and_endpoints_are_separate() {
        let c = circuits();
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        let t = Instant::now();
        c.report(&a, Admission::Attempt, Verdict::Failed, t);
        c.report(&a, Admission::Attempt, Verdict::Failed, t);
        c.report(&a, Admission::Attempt, Verdict::Up, t);
        c.report(&a, Admission::Attempt, Verdict::Failed, t);
        c.report(&a, Admission::Attempt, Verdict::Failed, t);
        assert_eq!(c.admit(&a, t).0, Admission::Attempt);
        c.report(&b, Admission::Attempt, Verdict::Failed, t);
        c.report(&b, Admission::Attempt, Verdict::Failed, t);
        c.report(&b, Admission::Attempt, Verdict::Failed, t);
        assert_eq!(c.admit(&b, t).0, Admission::Defer);
        assert_eq!(c.admit(&a, t).0, Admission::Attempt);
    }

    #[test]
    fn transitions_are_returned_for_the_caller_to_report() {
        let c = circuits();
        let e: Arc<str> = "billing".into();
        let t = Instant::now();
        let first = c.admit(&e, t).1;
        assert_eq!(first, Some(Transition { from: None, to: CircuitState::Closed }), "a new endpoint is reported");
        assert_eq!(c.admit(&e, t).1, None, "no change, nothing to report");
        assert_eq!(c.report(&e, Admission::Attempt, Verdict::Failed, t), None, "still closed");
        c.report(&e, Admission::Attempt, Verdict::Failed, t);
        let opened = c.report(&e, Admission::Attempt, Verdict::Failed, t);
        assert_eq!(opened, Some(Transition { from: Some(CircuitState::Closed), to: CircuitState::Open }));
        let later = t + Duration::from_secs(10);
        let (admission, half) = c.admit(&e, later);
        assert_eq!(admission, Admission::Probe);
        assert_eq!(half, Some(Transition { from: Some(CircuitState::Open), to: CircuitState::HalfOpen }));
        let closed = c.report(&e, Admission::Probe, Verdict::Up, later);
        assert_eq!(closed, Some(Transition { from: Some(CircuitState::HalfOpen), to: CircuitState::Closed }));
    }

    #[test]
    fn idle_settled_circuits_are_evicted_and_start_afresh() {
        let c = circuits();
        let (idle, open, probing, busy): (Arc<str>, Arc<str>, Arc<str>, Arc<str>) =
            ("idle".into(), "open".into(), "probing".into(), "busy".into());
        let t0 = Instant::now();
        c.admit(&idle, t0);
        c.report(&idle, Admission::Attempt, Verdict::Failed, t0);
        for e in [&open, &probing] {
            for _ in 0..3 {
                c.report(e, Admission::Attempt, Verdict::Failed, t0);
            }
        }
        assert_eq!(c.admit(&probing, t0 + Duration::from_secs(10)).0, Admission::Probe);
        let late = t0 + IDLE_EVICTION + Duration::from_secs(10);
        c.admit(&busy, late - Duration::from_secs(1));
        assert!(c.evict_idle(late - IDLE_EVICTION).is_empty(), "nothing idle long enough yet");
        let mut evicted = c.evict_idle(late);
        evicted.sort();
        assert_eq!(evicted, vec![idle.clone(), open.clone()], "a probe in flight and a recent use are kept");
        assert_eq!(
            c.admit(&open, late),
            (Admission::Attempt, Some(Transition { from: None, to: CircuitState::Closed })),
            "an evicted endpoint that comes back starts closed"
        );
        assert_eq!(c.admit(&probing, late).0, Admission::Defer, "the probe still decides");
    }

    #[test]
    fn disabled_always_attempts() {
        let c =
            Circuits::new(CircuitConfig { enabled: false, failure_threshold: 1, cool_down: Duration::from_secs(1) });
        let e: Arc<str> = "x".into();
        let t = Instant::now();
        c.report(&e, Admission::Attempt, Verdict::Failed, t);
        assert_eq!(c.admit(&e, t).0, Admission::Attempt);
    }
}
