//! Events naming an endpoint this replica does not know while the registry
//! is on (SPEC, amending "unknown endpoint -> invalid_event at once"): decoded
//! again (the endpoint may have been put since the record was read); else
//! deferred through the tiers without an attempt until `registry.unknown_grace`
//! after the event's first timestamp, then dead `invalid_event`.

use super::*;
use crate::route::outcome::Why;

impl Relay {
    /// The event, once its endpoint is known; else the record routed (deferred or dead).
    pub(super) async fn unknown(
        &self,
        prepared: &Prepared,
        original: &Original<'_>,
        hop: &mut Hop,
        name: &str,
        cancel: &CancellationToken,
    ) -> Result<Event, Done> {
        let shared = &*self.shared;
        let registry = shared.registry.as_ref().expect("called only with the registry on");
        let value = prepared.record.payload().unwrap_or_default();
        // As `prepare` decodes: a fan-out leg (on a tier, or replayed) is its named endpoint's event again.
        let again = self.decode(&prepared.headers, prepared.leg.as_deref(), value, || hop.origin.default_id()).event;
        let now = now_ms();
        let error = match again {
            Ok(mut event) => {
                if let Some(context) = &prepared.trace {
                    context.apply(&mut event.headers);
                }
                return Ok(event);
            }
            Err(invalid) => invalid.to_string(),
        };
        let id = id_of_invalid(Some(value)).unwrap_or_else(|| hop.origin.default_id());
        // The event's first timestamp, never later than now (SPEC).
        let first = hop.event_ms.unwrap_or(now).min(now);
        if now >= first.saturating_add(registry.grace_ms()) && !registry.is_stale(now) {
            let error = format!("{error} (not in the config file nor in the registry after registry.unknown_grace)");
            let relay = RelayHeaders {
                hop,
                destination: Destination::Dead { reason: DeadReason::InvalidEvent },
                last_status: hop.last_status,
                last_error: Some(&error),
                endpoint: "unknown",
            };
            let log = Entry::without_attempt(&id, "unknown", hop.attempts, At::of(&prepared.record), Some(&error));
            return Err(self.send_dead(original, relay, &log, cancel).await);
        }
        let log = Entry::without_attempt(&id, name, hop.attempts, At::of(&prepared.record), None);
        Err(self.defer_unknown(original, hop, name, now, &log, cancel).await)
    }

    /// Passes the record to the next tier without an attempt (or to the dead topic past its deadline).
    async fn defer_unknown(
        &self,
        original: &Original<'_>,
        hop: &mut Hop,
        name: &str,
        now: i64,
        log: &Entry<'_>,
        cancel: &CancellationToken,
    ) -> Done {
        let shared = &*self.shared;
        let first_attempt = *hop.first_attempt_ms.get_or_insert(now);
        let deadline_ms = *hop.deadline_ms.get_or_insert(first_attempt + shared.max_age_ms);
        let input = PlanInput {
            attempts: hop.attempts,
            from_tier: self.tier,
            now_ms: now,
            deadline_ms,
            max_attempts: shared.max_attempts,
            jitter_sample: rand::random::<f64>(),
        };
        let outcome = Outcome::Deferred(Why::Unknown);
        let last_error = Why::Unknown.describe(name);
        let relay = |destination| RelayHeaders {
            hop,
            destination,
            last_status: hop.last_status,
            last_error: Some(&last_error),
            endpoint: name,
        };
        match plan(&shared.ladder, &outcome, input) {
            Route::Tier { index, due_ms } => {
                let topic = shared.router.tier_topic(index);
                let built = relay(Destination::Tier { due_ms }).write(original.headers);
                match shared.router.produce(topic, original, built, cancel).await {
                    Ok(_) => {
                        shared.attempts.passed_on(&Entry { error: Some(&last_error), ..*log }, &outcome, topic, None);
                        metrics::retry_routed(
                            "unknown",
                            &hop.origin.default_id(),
                            hop.attempts,
                            topic,
                            &outcome,
                            Some(&last_error),
                        );
                        Done::Decided
                    }
                    Err(Unrouted::Abandoned) => Done::Abandoned,
                    Err(Unrouted::TooLarge { .. }) => {
                        let dead = Destination::Dead { reason: DeadReason::TooLarge };
                        self.send_dead(original, relay(dead), log, cancel).await
                    }
                }
            }
            Route::Dead { reason } => self.send_dead(original, relay(Destination::Dead { reason }), log, cancel).await,
            Route::Delivered => unreachable!("a deferral is never delivered"),
        }
    }
}
