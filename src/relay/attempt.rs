//! One attempt: the endpoint's permit and whether it may take the record now, the request, and what it tells the endpoint's state.

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
    /// Waits for the endpoint's permit, asks whether the endpoint may take the
    /// record now, and makes the attempt unless it defers (and why). `None`:
    /// cancelled (shutdown or revoke) on the way. With the outcome, how long the
    /// request took (none: no request was made).
    pub(super) async fn attempt(
        &self,
        event: &Event,
        hop: &mut Hop,
        cancel: &CancellationToken,
    ) -> Option<(Outcome, Option<Duration>)> {
        let shared = &*self.shared;
        let endpoint = &event.endpoint_key;
        let circuit_changed = |change: Option<Transition>| {
            if let Some(change) = change {
                metrics::circuit_changed(endpoint, change, shared.states.cool_down());
            }
        };
        // The circuit is asked once the endpoint's permit is held, so records
        // queued behind a failing endpoint see the circuit it opened.
        let mut permit = tokio::select! {
            permit = shared.states.acquire(endpoint) => permit,
            _ = cancel.cancelled() => return None,
        };
        loop {
            // Dispatched before a `Retry-After` came back: the hold applies to it too.
            let (ready, change) = permit.ready(now_ms(), Instant::now());
            circuit_changed(change);
            match ready {
                Ready::Now => break,
                Ready::Defer(why) => return Some((Outcome::Deferred(why), None)),
                Ready::Wait(held) => tokio::select! {
                    _ = tokio::time::sleep(held) => {}
                    _ = cancel.cancelled() => return None,
                },
            }
        }
        // Cancelled, the permit is dropped: a probe it carried lets the next record probe.
        let started = Instant::now();
        let attempt = tokio::select! {
            attempt = shared.deliverer.attempt(event, SystemTime::now())
                .instrument(child(|| tracing::info_span!("attempt", endpoint = &**endpoint, attempt = hop.attempts + 1))) => attempt,
            _ = cancel.cancelled() => return None,
        };
        let took = permit.elapsed();
        let outcome = classify(&attempt, &shared.permanent_statuses, SystemTime::now());
        // SPEC: a 429 or 503 with `Retry-After` holds the endpoint (no request) for that long.
        if let (Attempt::Response { status: 429 | 503, .. }, Outcome::Retryable { retry_after: Some(after), .. }) =
            (&attempt, &outcome)
        {
            if !after.is_zero() {
                let now = now_ms();
                permit.hold(now, now.saturating_add(after.as_millis().min(i64::MAX as u128) as i64));
                metrics::endpoint_held(endpoint, *after);
            }
        }
        // Only retryable failures count against the circuit: a 410 is the
        // receiver answering, so it is up.
        let verdict = if matches!(outcome, Outcome::Retryable { .. }) { Verdict::Failed } else { Verdict::Up };
        circuit_changed(permit.finish(signal(&attempt, took), verdict));
        metrics::attempt_finished(endpoint, took.as_secs_f64());
        hop.attempts += 1;
        Some((outcome, Some(started.elapsed())))
    }
}
