//! Where a record goes once its outcome is known: delivered, a tier, the dead
//! topic, or (an ordered key's) back in place; decided once the broker acknowledged it.

use tokio_util::sync::CancellationToken;

use super::{in_place, Record, Relay};
use crate::app::clock::now_ms;
use crate::consume::Done;
use crate::event::headers::RecordHeaders;
use crate::event::hop::{Destination, Hop, RelayHeaders};
use crate::observe::attempts::{At, Entry};
use crate::observe::metrics;
use crate::route::outcome::{DeadReason, Outcome, Route};
use crate::route::{plan, Original, PlanInput, Unrouted};

impl Relay {
    /// Plans where the record goes after `outcome` and takes it there; decided
    /// once delivered or once the broker acknowledged the route. A record of an
    /// ordered key (`in_place`) waits in place instead of going to a tier.
    pub(super) async fn route(&self, record: Record<'_>, outcome: Outcome, cancel: &CancellationToken) -> Done {
        let shared = &*self.shared;
        let Record { original, hop, event, in_place, step } = record;
        let endpoint = &*event.endpoint_key;
        // One reading of the clock for the whole decision.
        let now = now_ms();
        let input = PlanInput {
            attempts: hop.attempts,
            from_tier: self.tier,
            now_ms: now,
            deadline_ms: hop.deadline_ms.expect("set by process before routing"),
            max_attempts: event.max_attempts.unwrap_or(shared.max_attempts),
            jitter_sample: rand::random::<f64>(),
        };
        let route = plan(&shared.ladder, &outcome, input);
        let (last_status, last_error) = match &outcome {
            Outcome::Delivered { status } => (Some(*status), None),
            Outcome::Retryable { status, error, .. } | Outcome::Final { status, error, .. } => {
                (*status, Some(error.clone()))
            }
            // No attempt was made: keep the last real status for the operators.
            Outcome::Deferred(why) => (hop.last_status, Some(why.describe(endpoint))),
            Outcome::NotYet { .. } => (hop.last_status, hop.last_error.clone()),
        };
        let log = step.entry(&event.id, endpoint, hop.attempts, last_status, last_error.as_deref());
        if let (Some(kept), Route::Tier { due_ms, .. }) = (in_place, &route) {
            let deferred = matches!(outcome, Outcome::Deferred(_));
            let due_ms = in_place::due_ms(*due_ms, deferred, now, shared.states.cool_down().as_millis() as i64);
            kept.keep(Hop { last_status, last_error: last_error.clone(), ..hop.clone() });
            metrics::retried_in_place(endpoint, &event.id, hop.attempts, deferred, due_ms - now, last_error.as_deref());
            shared.attempts.passed_on(&log, &outcome, "in-place", None);
            return Done::Again { due_ms };
        }
        let relay =
            |destination| RelayHeaders { hop, destination, last_status, last_error: last_error.as_deref(), endpoint };
        match route {
            Route::Delivered => {
                let latency_ms = hop.event_ms.map(|t| now - t);
                metrics::delivered(endpoint, &event.id, hop.attempts, latency_ms);
                shared.attempts.delivered(&log);
                Done::Decided
            }
            Route::Tier { index, due_ms } => {
                let topic = shared.router.tier_topic(index);
                let built = relay(Destination::Tier { due_ms }).write(original.headers);
                // Decided only once the broker acknowledged the tier record, or
                // once it is known that the tier can never take it.
                let to = match shared.router.produce(topic, original, built, cancel).await {
                    Ok((partition, offset)) => At { topic, partition, offset },
                    Err(Unrouted::Abandoned) => return Done::Abandoned,
                    Err(too_large @ Unrouted::TooLarge { .. }) => {
                        let error = too_large.to_string();
                        metrics::produce_too_large(topic, &event.id, &error);
                        let reason = DeadReason::TooLarge;
                        let dead = RelayHeaders { last_error: Some(&error), ..relay(Destination::Dead { reason }) };
                        return self.send_dead(original, dead, &Entry { error: Some(&error), ..log }, cancel).await;
                    }
                };
                metrics::retry_routed(endpoint, &event.id, hop.attempts, topic, &outcome, last_error.as_deref());
                shared.attempts.passed_on(&log, &outcome, topic, Some(to));
                Done::Decided
            }
            Route::Dead { reason } => self.send_dead(original, relay(Destination::Dead { reason }), &log, cancel).await,
        }
    }

    /// Writes the dead record. A dead topic that cannot take the value gets
    /// the record without it (headers kept, and the loss said in
    /// `hookrelay-last-error`); one that cannot take even the original headers
    /// gets the relay's headers alone. `log` is its attempt-log record, written once acknowledged.
    pub(super) async fn send_dead(
        &self,
        original: &Original<'_>,
        relay: RelayHeaders<'_>,
        log: &Entry<'_>,
        cancel: &CancellationToken,
    ) -> Done {
        let router = &self.shared.router;
        let topic = router.dead_topic();
        let Destination::Dead { reason } = relay.destination else { unreachable!("send_dead writes dead records") };
        let mut produced = router.produce(topic, original, relay.write(original.headers), cancel).await;
        let mut dropped = None;
        if let Err(Unrouted::TooLarge { error, .. }) = &produced {
            let lost = format!("value dropped, too large for the dead topic {topic} ({error})");
            let last_error = match relay.last_error {
                Some(before) => format!("{}; {lost}", crate::event::hop::truncate(before, 512)),
                None => lost,
            };
            let without_value = Original { value: None, ..original.clone() };
            let relay = RelayHeaders { last_error: Some(&last_error), ..relay.clone() };
            produced = router.produce(topic, &without_value, relay.write(original.headers), cancel).await;
            if let Err(Unrouted::TooLarge { .. }) = produced {
                // Even the headers are too large: keep only the relay's.
                produced = router.produce(topic, &without_value, relay.write(&RecordHeaders::default()), cancel).await;
            }
            dropped = Some(last_error);
        }
        let (partition, offset) = match produced {
            Ok(to) => to,
            Err(Unrouted::Abandoned) => return Done::Abandoned,
            Err(Unrouted::TooLarge { error, .. }) => {
                // Cannot happen above a few KiB of max.message.bytes (start-up refuses a dead
                // topic smaller than the event topics): hold the record rather than lose it.
                tracing::error!(topic, error, "dead record too large even without value and headers");
                router.hold_until_cancelled(topic, cancel).await;
                return Done::Abandoned;
            }
        };
        self.shared.attempts.dead(log, reason.as_str(), At { topic, partition, offset });
        metrics::dead_routed(
            relay.endpoint,
            &relay.hop.origin.default_id(),
            relay.hop.attempts,
            reason,
            dropped.as_deref().or(relay.last_error),
        );
        Done::Decided
    }
}
