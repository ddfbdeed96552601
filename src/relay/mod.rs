//! The handler of event and tier records: decode -> circuit -> endpoint limit -> attempt -> classify -> plan -> route.

mod attempt;
mod in_place;
mod shared;

pub use self::shared::{SetupError, Shared};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use futures::future::BoxFuture;
use futures::FutureExt;
use rdkafka::message::{Message, OwnedMessage};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::circuit::{Admission, Circuits, Transition, Verdict};
use crate::clock::now_ms;
use crate::concurrency::{Limiter, Signal};
use crate::config::Config;
use crate::consume::order::order_key;
use crate::consume::{Decider, Done, EndpointSlot, Handler, Ticket, Work};
use crate::deliver::Deliverer;
use crate::event::{Endpoints, Event, InvalidEvent};
use crate::headers::RecordHeaders;
use crate::held::Held;
use crate::hop::{headers_of, trusted_on_event_topic, Coordinates, Destination, Hop, RelayHeaders};
use crate::metrics::{self, Retry};
use crate::observe::attempts::{id_of_invalid, At, Entry, Step};
use crate::observe::waiting::{self, Waiting};
use crate::otel;
use crate::outcome::{classify, Attempt, DeadReason, Outcome, Route};
use crate::route::{not_yet, plan, Ladder, Original, PlanInput, Router, Unrouted};
use crate::seal::ReplayKey;
use crate::trace::TraceContext;

/// A span inside the record's, or none when the record has none (no
/// `traceparent` and no export): spans cost nothing on the common path.
fn child(make: impl FnOnce() -> tracing::Span) -> tracing::Span {
    if tracing::Span::current().is_none() {
        tracing::Span::none()
    } else {
        make()
    }
}

/// Which records a relay consumer reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The event topics: first attempts.
    Events,
    /// Tier `index` of the ladder: records wait there until they are due.
    Tier(usize),
}

/// A relay consumer's handler: the event topics or one tier.
pub struct Relay {
    shared: Arc<Shared>,
    source: Source,
}

impl Relay {
    pub fn new(shared: Arc<Shared>, source: Source) -> Relay {
        Relay { shared, source }
    }
}

/// Why a record was passed on to the next tier without an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Deferral {
    /// The endpoint's circuit is open.
    Circuit,
    /// The endpoint had more records waiting in the partition than `delivery.max_waiting_per_endpoint`.
    Overflow,
    /// The endpoint's pace (its `rate_limit`, or a `Retry-After` hold) would have kept it waiting past `rate_max_wait`.
    Pace,
}

impl Deferral {
    /// The attempt log's `reason` for a deferred record.
    fn as_str(self) -> &'static str {
        match self {
            Deferral::Circuit => "circuit",
            Deferral::Overflow => "overflow",
            Deferral::Pace => "pace",
        }
    }

    fn describe(self, endpoint: &str) -> String {
        match self {
            Deferral::Circuit => format!("deferred: circuit open for {endpoint}"),
            Deferral::Overflow => format!("deferred: {endpoint} has too many records waiting (overflow)"),
            Deferral::Pace => {
                format!("deferred: {endpoint} is paced (rate_limit or Retry-After) and this record would wait past rate_max_wait")
            }
        }
    }
}

/// A record read by a relay consumer, decoded once when it was accepted.
pub struct Prepared {
    record: OwnedMessage,
    headers: RecordHeaders,
    hop: Hop,
    event: Result<Event, InvalidEvent>,
    /// The record's `traceparent`/`tracestate`, for its spans.
    trace: Option<TraceContext>,
    /// A record of an ordered key on an event topic: retried in place, keeping its hop state here.
    in_place: Option<in_place::Kept>,
    /// Counts in its endpoint's oldest-waiting age until the record is decided or let go (dropped).
    _waiting: Option<Waiting>,
}

impl Handler for Relay {
    type Record = Prepared;

    /// The partition loop keeps each consumer within the endpoint's limit; the
    /// semaphore in `process` keeps the whole process (events and tiers) within it.
    fn prepare(&self, record: OwnedMessage) -> (Ticket, Prepared) {
        let s = &*self.shared;
        let headers = headers_of(&record);
        let here = Coordinates::of(&record);
        let timestamp_ms = record.timestamp().to_millis();
        let hop = match self.source {
            // Producers write the event topics: their relay headers would set
            // the deadline, the attempt count or the origin (and so the id).
            Source::Events => {
                let value = record.payload().unwrap_or_default();
                let (trusted, ignored) = trusted_on_event_topic(&headers, value, s.replay_key.as_ref());
                if ignored > 0 {
                    metrics::relay_headers_ignored(&here, ignored);
                }
                Hop::read(&trusted, here, timestamp_ms)
            }
            Source::Tier(_) => Hop::read(&headers, here, timestamp_ms),
        };
        // The default id comes from the origin record, so it stays the same on
        // every hop and every replay: receivers de-duplicate on it.
        let mut event = s.endpoints.decode(record.payload().unwrap_or_default(), || hop.origin.default_id());
        // The record's trace context goes on every attempt; tier and dead
        // records carry it on, as they keep every header that is not ours.
        let context = TraceContext::of(&headers);
        if let (Ok(event), Some(context)) = (event.as_mut(), &context) {
            context.apply(&mut event.headers);
        }
        // Ordered per key on the event topics only: tier records (from before the
        // endpoint was ordered) are past keeping an order. No key, no order.
        let order = match (&event, self.source) {
            (Ok(e), Source::Events) if e.ordered => record.key().map(|key| order_key(&e.endpoint_key, key)),
            _ => None,
        };
        let due_ms = match self.source {
            // Never later than the tier's delay after the record was written:
            // a far due time must not hold the partition (it laps instead).
            Source::Tier(index) => s.ladder.ready_at(index, record.timestamp().to_millis(), hop.due_ms),
            Source::Events => None,
        };
        // One that will lap makes no request: neither its endpoint's slot nor its
        // pace may hold it (a Retry-After hold would keep it in the tier past its delay).
        // (The same rule as `process` applies once the tier lets it go.)
        let deadline = hop.deadline_ms.unwrap_or(i64::MAX);
        let laps = due_ms.is_some_and(|ready| not_yet(hop.due_ms, ready.max(now_ms()), deadline).is_some());
        let ticket = Ticket {
            due_ms,
            endpoint: event.as_ref().ok().filter(|_| !laps).map(|e| {
                let (limit, pace) = s.limiter.slot(&e.endpoint_key);
                EndpointSlot { key: e.endpoint_key.clone(), limit, pace }
            }),
            order,
        };
        let in_place = order.map(|_| in_place::Kept::default());
        let since_ms = hop.event_ms.unwrap_or_else(now_ms);
        let _waiting = event.as_ref().ok().map(|e| waiting::track(&e.endpoint_key, since_ms));
        (ticket, Prepared { record, headers, hop, event, trace: context, in_place, _waiting })
    }

    fn handle(
        self: Arc<Self>,
        record: Arc<Prepared>,
        work: Work,
        cancel: CancellationToken,
        _: Decider,
    ) -> BoxFuture<'static, Done> {
        // Never holds: every record is decided or abandoned before its slot is free.
        // The record's log lines carry its trace id, and its exported spans
        // join its trace; without either there is no span at all.
        let span = match &record.trace {
            Some(context) => {
                let span = tracing::info_span!("record", trace_id = context.trace_id());
                if otel::enabled() {
                    otel::set_parent(&span, context);
                }
                span
            }
            None if otel::enabled() => tracing::info_span!("record"),
            None => tracing::Span::none(),
        };
        async move { self.process(&record, work, cancel).await }.instrument(span).boxed()
    }

    /// A record whose handling panicked goes to the dead topic as it came,
    /// with the hop state it was read with and the panic's message.
    fn recover(
        self: Arc<Self>,
        prepared: Arc<Prepared>,
        why: String,
        cancel: CancellationToken,
    ) -> BoxFuture<'static, Done> {
        async move {
            let Prepared { record, headers, hop, event, in_place, .. } = &*prepared;
            // What its attempts in place learned, if any: the operators see the attempts made.
            let hop = &in_place.as_ref().map_or_else(|| hop.clone(), |kept| kept.hop(hop));
            let original = Original { key: record.key(), value: record.payload(), headers };
            let error = format!("internal error: {why}");
            let endpoint = event.as_ref().map_or("invalid", |e| &*e.endpoint_key);
            let relay = |destination| RelayHeaders {
                hop,
                destination,
                last_status: hop.last_status,
                last_error: Some(&error),
                endpoint,
            };
            let id = event.as_ref().map_or_else(|_| hop.origin.default_id(), |e| e.id.clone());
            let log = Entry::without_attempt(&id, endpoint, hop.attempts, At::of(record), Some(&error));
            let dead = relay(Destination::Dead { reason: DeadReason::InternalError });
            self.send_dead(&original, dead, &log, &cancel).await
        }
        .boxed()
    }
}

impl Relay {
    /// One record, from decode to an acknowledged route. Every early return is
    /// either decided (routed) or `Abandoned` (shutdown): never "dropped".
    async fn process(&self, prepared: &Prepared, work: Work, cancel: CancellationToken) -> Done {
        let s = &*self.shared;
        let Prepared { record, headers, hop, event, in_place, .. } = prepared;
        let mut hop = in_place.as_ref().map_or_else(|| hop.clone(), |kept| kept.hop(hop));
        let original = Original { key: record.key(), value: record.payload(), headers };
        let event = match event {
            Ok(event) => event,
            Err(invalid) => {
                // Bad data is a dead letter, never a crash or a stalled partition.
                let error = invalid.to_string();
                let relay = RelayHeaders {
                    hop: &hop,
                    destination: Destination::Dead { reason: DeadReason::InvalidEvent },
                    last_status: None,
                    last_error: Some(&error),
                    endpoint: "invalid",
                };
                let id = id_of_invalid(record.payload()).unwrap_or_else(|| hop.origin.default_id());
                let log = Entry::without_attempt(&id, "invalid", hop.attempts, At::of(record), Some(&error));
                return self.send_dead(&original, relay, &log, &cancel).await;
            }
        };
        // Set on the first hop and carried in headers afterwards; a replay sets
        // a fresh deadline header, which wins over the event's own retry_until.
        let now = now_ms();
        let first = *hop.first_attempt_ms.get_or_insert(now);
        let deadline = *hop.deadline_ms.get_or_insert(event.retry_until_ms.unwrap_or(first + s.max_age_ms));
        // A tier lets a record go after at most its delay (see `prepare`); one
        // whose own due time is still ahead laps the last tier, unattempted.
        let lap = match self.source {
            Source::Tier(_) => not_yet(hop.due_ms, now_ms(), deadline),
            Source::Events => None,
        };
        let deferral = match work {
            Work::Attempt => None,
            Work::Defer => Some(Deferral::Overflow),
            Work::Paced => Some(Deferral::Pace),
        };
        if let Some(deferral) = deferral {
            let step = Step { record: At::of(record), took: None };
            return self
                .route(&original, &hop, event, Outcome::Deferred, deferral, deadline, in_place.as_ref(), step, &cancel)
                .instrument(child(|| tracing::info_span!("route")))
                .await;
        }
        let (outcome, deferral, took) = match lap {
            Some(due_ms) => (Outcome::NotYet { due_ms }, Deferral::Circuit, None),
            None => match self.attempt(event, &mut hop, &cancel).await {
                Some(attempted) => attempted,
                None => return Done::Abandoned,
            },
        };

        let step = Step { record: At::of(record), took };
        self.route(&original, &hop, event, outcome, deferral, deadline, in_place.as_ref(), step, &cancel)
            .instrument(child(|| tracing::info_span!("route")))
            .await
    }

    #[allow(clippy::too_many_arguments)] // the record's parts, each a borrow: a struct would only rename them
    /// Plans where the record goes after `outcome` and takes it there; decided
    /// once delivered or once the broker acknowledged the route. A record of an
    /// ordered key (`in_place`) waits in place instead of going to a tier.
    async fn route(
        &self,
        original: &Original<'_>,
        hop: &Hop,
        event: &Event,
        outcome: Outcome,
        deferral: Deferral,
        deadline_ms: i64,
        in_place: Option<&in_place::Kept>,
        step: Step<'_>,
        cancel: &CancellationToken,
    ) -> Done {
        let s = &*self.shared;
        let endpoint = &*event.endpoint_key;
        let input = PlanInput {
            attempts: hop.attempts,
            from_tier: match self.source {
                Source::Tier(index) => Some(index),
                Source::Events => None,
            },
            now_ms: now_ms(),
            deadline_ms,
            max_attempts: event.max_attempts.unwrap_or(s.max_attempts),
            jitter_sample: rand::random::<f64>(),
        };
        let route = plan(&s.ladder, &outcome, input);
        let (last_status, last_error) = match &outcome {
            Outcome::Delivered { status } => (Some(*status), None),
            Outcome::Retryable { status, error, .. } | Outcome::Final { status, error, .. } => {
                (*status, Some(error.clone()))
            }
            // No attempt was made: keep the last real status for the operators.
            Outcome::Deferred => (hop.last_status, Some(deferral.describe(endpoint))),
            Outcome::NotYet { .. } => (hop.last_status, hop.last_error.clone()),
        };
        let log = step.entry(&event.id, endpoint, hop.attempts, last_status, last_error.as_deref());
        if let (Some(kept), Route::Tier { due_ms, .. }) = (in_place, &route) {
            let (now, deferred) = (now_ms(), outcome == Outcome::Deferred);
            let due_ms = in_place::due_ms(*due_ms, deferred, now, s.circuits.cool_down().as_millis() as i64);
            kept.keep(Hop { last_status, last_error: last_error.clone(), ..hop.clone() });
            metrics::retried_in_place(endpoint, &event.id, hop.attempts, deferred, due_ms - now, last_error.as_deref());
            s.attempts.passed_on(&log, &outcome, deferral.as_str(), "in-place", None);
            return Done::Again { due_ms };
        }
        let relay =
            |destination| RelayHeaders { hop, destination, last_status, last_error: last_error.as_deref(), endpoint };
        match route {
            Route::Delivered => {
                let latency_ms = hop.event_ms.map(|t| now_ms() - t);
                metrics::delivered(endpoint, &event.id, hop.attempts, latency_ms);
                s.attempts.delivered(&log);
                Done::Decided
            }
            Route::Tier { index, due_ms } => {
                let topic = s.router.tier_topic(index);
                let built = relay(Destination::Tier { due_ms }).write(original.headers);
                // Decided only once the broker acknowledged the tier record, or
                // once it is known that the tier can never take it.
                let to = match s.router.produce(topic, original, built, cancel).await {
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
                let why = match (&outcome, deferral) {
                    (Outcome::Deferred, Deferral::Circuit) => Retry::Deferred,
                    (Outcome::Deferred, Deferral::Overflow) => Retry::Overflow,
                    (Outcome::Deferred, Deferral::Pace) => Retry::Paced,
                    (Outcome::NotYet { .. }, _) => Retry::NotYet,
                    _ => Retry::Failed,
                };
                metrics::retry_routed(endpoint, &event.id, hop.attempts, topic, why, last_error.as_deref());
                s.attempts.passed_on(&log, &outcome, deferral.as_str(), topic, Some(to));
                Done::Decided
            }
            Route::Dead { reason } => self.send_dead(original, relay(Destination::Dead { reason }), &log, cancel).await,
        }
    }

    /// Writes the dead record. A dead topic that cannot take the value gets
    /// the record without it (headers kept, and the loss said in
    /// `hookrelay-last-error`); one that cannot take even the original headers
    /// gets the relay's headers alone. `log` is its attempt-log record, written once acknowledged.
    async fn send_dead(
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
                Some(before) => format!("{}; {lost}", crate::hop::truncate(before, 512)),
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
