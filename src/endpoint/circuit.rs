//! Per-endpoint circuit breaker: closed -> (N consecutive failures) open -> (cool-down) half-open -> one probe decides.
//!
//! While open, an endpoint's records skip the HTTP attempt and are deferred to
//! the next tier, so a dead receiver costs no sockets, timeouts or CPU.

use std::time::Instant;

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

/// One endpoint's breaker, kept in its entry of [`super::state::States`].
/// `None` inside: never admitted yet, so its first admission is reported as new.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Circuit(Option<State>);

const CLOSED: State = State::Closed { failures: 0 };

impl Circuit {
    /// May a record be attempted at `now`? Also says whether the circuit changed.
    pub fn admit(&mut self, config: &CircuitConfig, now: Instant) -> (Admission, Option<Transition>) {
        if !config.enabled {
            return (Admission::Attempt, None);
        }
        let before = self.0;
        let state = self.0.get_or_insert(CLOSED);
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
        &mut self,
        config: &CircuitConfig,
        admission: Admission,
        verdict: Verdict,
        now: Instant,
    ) -> Option<Transition> {
        if !config.enabled {
            return None;
        }
        let before = self.0.unwrap_or(CLOSED);
        let open = State::Open { until: now + config.cool_down };
        let after = match (before, admission, verdict) {
            (_, Admission::Probe, Verdict::Failed) => open,
            (_, Admission::Probe, Verdict::Up) => CLOSED,
            (State::Closed { failures }, _, Verdict::Failed) if failures + 1 >= config.failure_threshold => open,
            (State::Closed { failures }, _, Verdict::Failed) => State::Closed { failures: failures + 1 },
            (State::Closed { .. }, _, Verdict::Up) => CLOSED,
            // Requests admitted before the circuit opened report while it is open: they change nothing.
            (other, _, _) => other,
        };
        self.0 = Some(after);
        transition(Some(before), after)
    }

    /// The probe was abandoned (shutdown, or its task died): let the next record probe at once.
    pub fn probe_abandoned(&mut self, now: Instant) {
        if self.0 == Some(State::HalfOpen) {
            self.0 = Some(State::Open { until: now });
        }
    }

    /// Closed, or open past its cool-down (the next record would probe anyway):
    /// forgetting it changes nothing. A half-open circuit waits for its probe.
    pub fn settled(&self, now: Instant) -> bool {
        match self.0 {
            None | Some(State::Closed { .. }) => true,
            Some(State::Open { until }) => now >= until,
            Some(State::HalfOpen) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn config() -> CircuitConfig {
        CircuitConfig { enabled: true, failure_threshold: 3, cool_down: Duration::from_secs(10) }
    }

    #[test]
    fn opens_after_the_threshold_then_probes_once() {
        let (config, mut c) = (config(), Circuit::default());
        let t0 = Instant::now();
        for _ in 0..2 {
            assert_eq!(c.admit(&config, t0).0, Admission::Attempt);
            c.report(&config, Admission::Attempt, Verdict::Failed, t0);
        }
        assert_eq!(c.admit(&config, t0).0, Admission::Attempt, "two failures are below the threshold");
        c.report(&config, Admission::Attempt, Verdict::Failed, t0);
        assert_eq!(c.admit(&config, t0).0, Admission::Defer, "three failures open it");
        assert_eq!(c.admit(&config, t0 + Duration::from_secs(9)).0, Admission::Defer);
        let later = t0 + Duration::from_secs(10);
        assert_eq!(c.admit(&config, later).0, Admission::Probe, "cool-down over: one probe");
        assert_eq!(c.admit(&config, later).0, Admission::Defer, "only one probe at a time");
        c.report(&config, Admission::Probe, Verdict::Failed, later);
        assert_eq!(c.admit(&config, later + Duration::from_secs(5)).0, Admission::Defer, "a failed probe re-opens it");
        let again = later + Duration::from_secs(10);
        assert_eq!(c.admit(&config, again).0, Admission::Probe);
        c.report(&config, Admission::Probe, Verdict::Up, again);
        assert_eq!(c.admit(&config, again).0, Admission::Attempt, "a good probe closes it");
    }

    #[test]
    fn a_success_resets_the_count() {
        let (config, mut c) = (config(), Circuit::default());
        let t = Instant::now();
        for verdict in [Verdict::Failed, Verdict::Failed, Verdict::Up, Verdict::Failed, Verdict::Failed] {
            c.report(&config, Admission::Attempt, verdict, t);
        }
        assert_eq!(c.admit(&config, t).0, Admission::Attempt);
    }

    #[test]
    fn transitions_are_returned_for_the_caller_to_report() {
        let (config, mut c) = (config(), Circuit::default());
        let t = Instant::now();
        let first = c.admit(&config, t).1;
        assert_eq!(first, Some(Transition { from: None, to: CircuitState::Closed }), "a new endpoint is reported");
        assert_eq!(c.admit(&config, t).1, None, "no change, nothing to report");
        assert_eq!(c.report(&config, Admission::Attempt, Verdict::Failed, t), None, "still closed");
        c.report(&config, Admission::Attempt, Verdict::Failed, t);
        let opened = c.report(&config, Admission::Attempt, Verdict::Failed, t);
        assert_eq!(opened, Some(Transition { from: Some(CircuitState::Closed), to: CircuitState::Open }));
        let later = t + Duration::from_secs(10);
        let (admission, half) = c.admit(&config, later);
        assert_eq!(admission, Admission::Probe);
        assert_eq!(half, Some(Transition { from: Some(CircuitState::Open), to: CircuitState::HalfOpen }));
        let closed = c.report(&config, Admission::Probe, Verdict::Up, later);
        assert_eq!(closed, Some(Transition { from: Some(CircuitState::HalfOpen), to: CircuitState::Closed }));
    }

    #[test]
    fn settled_until_a_probe_is_out_and_an_abandoned_probe_lets_the_next_record_probe() {
        let (config, mut c) = (config(), Circuit::default());
        let t0 = Instant::now();
        assert!(c.settled(t0), "never used");
        for _ in 0..3 {
            c.report(&config, Admission::Attempt, Verdict::Failed, t0);
        }
        assert!(!c.settled(t0), "open within its cool-down");
        let later = t0 + Duration::from_secs(10);
        assert!(c.settled(later), "open past its cool-down: the next record would probe anyway");
        assert_eq!(c.admit(&config, later).0, Admission::Probe);
        assert!(!c.settled(later + Duration::from_secs(3600)), "a probe in flight decides");
        c.probe_abandoned(later);
        assert_eq!(c.admit(&config, later).0, Admission::Probe, "the next record probes at once");
    }

    #[test]
    fn disabled_always_attempts() {
        let config = CircuitConfig { enabled: false, failure_threshold: 1, cool_down: Duration::from_secs(1) };
        let mut c = Circuit::default();
        let t = Instant::now();
        c.report(&config, Admission::Attempt, Verdict::Failed, t);
        assert_eq!(c.admit(&config, t).0, Admission::Attempt);
    }
}
