//! One attempt: the endpoint's permit, the circuit, the request, and what it tells the limiter.

use std::time::Duration;

use super::*;

/// What an attempt says about the receiver's capacity.
fn signal(attempt: &Attempt, took: std::time::Duration) -> Signal {
    match attempt {
        Attempt::Response { status: 429 | 503 | 504, .. } | Attempt::Timeout | Attempt::Transport(_) => {
            Signal::Overloaded
        }
        Attempt::Response { .. } => Signal::Answered(took),
        Attempt::Forbidden(_) => Signal::None,
    }
}

impl Relay {
    /// Waits for the endpoint's permit, asks the circuit, and makes the attempt
    /// unless it defers (and why), with how long the request took (none: no request).
    /// `None`: cancelled (shutdown or revoke) on the way.
    pub(super) async fn attempt(
        &self,
        event: &Event,
        hop: &mut Hop,
        cancel: &CancellationToken,
    ) -> Option<(Outcome, Deferral, Option<Duration>)> {
        let s = &*self.shared;
        let endpoint = &event.endpoint_key;
        let circuit_changed = |change: Option<Transition>| {
            if let Some(change) = change {
                metrics::circuit_changed(endpoint, change, s.circuits.cool_down());
            }
        };
        // The circuit is asked once the endpoint's permit is held, so records
        // queued behind a failing endpoint see the circuit it opened.
        let permit = tokio::select! {
            permit = s.limiter.acquire(endpoint) => permit,
            _ = cancel.cancelled() => return None,
        };
        // Dispatched before a `Retry-After` came back: the hold applies to it too.
        loop {
            let held = permit.pace().held_ms(now_ms());
            if held == 0 {
                break;
            }
            if held > permit.pace().max_wait_ms() {
                permit.finish(Signal::None);
                return Some((Outcome::Deferred, Deferral::Pace, None));
            }
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_millis(held as u64)) => {}
                _ = cancel.cancelled() => return None,
            }
        }
        let (admission, change) = s.circuits.admit(endpoint, Instant::now());
        circuit_changed(change);
        if admission == Admission::Defer {
            permit.finish(Signal::None);
            return Some((Outcome::Deferred, Deferral::Circuit, None));
        }
        let started = Instant::now();
        let attempt = tokio::select! {
            attempt = s.deliverer.attempt(event, SystemTime::now())
                .instrument(child(|| tracing::info_span!("attempt", endpoint = &**endpoint, attempt = hop.attempts + 1))) => attempt,
            _ = cancel.cancelled() => {
                if admission == Admission::Probe {
                    s.circuits.probe_abandoned(endpoint, Instant::now());
                }
                return None;
            }
        };
        let took = permit.elapsed();
        let outcome = classify(&attempt, &s.permanent_statuses, SystemTime::now());
        // SPEC: a 429 or 503 with `Retry-After` holds the endpoint (no request) for that long.
        if let (Attempt::Response { status: 429 | 503, .. }, Outcome::Retryable { retry_after: Some(after), .. }) =
            (&attempt, &outcome)
        {
            if !after.is_zero() {
                let now = now_ms();
                permit.pace().hold(now, now.saturating_add(after.as_millis().min(i64::MAX as u128) as i64));
                metrics::endpoint_held(endpoint, *after);
            }
        }
        permit.finish(signal(&attempt, took));
        metrics::attempt_finished(endpoint, took.as_secs_f64());
        hop.attempts += 1;
        // Only retryable failures count against the circuit: a 410 is the
        // receiver answering, so it is up.
        let verdict = if matches!(outcome, Outcome::Retryable { .. }) { Verdict::Failed } else { Verdict::Up };
        circuit_changed(s.circuits.report(endpoint, admission, verdict, Instant::now()));
        Some((outcome, Deferral::Circuit, Some(started.elapsed())))
    }
}
