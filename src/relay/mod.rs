//! The handler of event and tier records: decode -> circuit -> endpoint limit -> attempt -> classify -> plan -> route.

mod attempt;
pub mod fanout;
mod in_place;
mod routing;
mod shared;
mod unknown;

pub use self::shared::{SetupError, Shared};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use futures::future::BoxFuture;
use futures::FutureExt;
use rdkafka::message::{Message, OwnedMessage};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::app::clock::now_ms;
use crate::config::Config;
use crate::consume::{Decider, Done, EndpointSlot, Handler, Role, Ticket, Work};
use crate::endpoint::circuit::{Transition, Verdict};
use crate::endpoint::deliver::Deliverer;
use crate::endpoint::limit::Signal;
use crate::endpoint::state::{Ready, States};
use crate::event::headers::RecordHeaders;
use crate::event::hop::{headers_of, Coordinates, Destination, Hop, RelayHeaders};
use crate::event::seal::ReplayKey;
use crate::event::trace_context::TraceContext;
use crate::event::trust::trusted_on_event_topic;
use crate::event::{Endpoints, Event, InvalidEvent};
use crate::observe::attempts::{id_of_invalid, At, Entry, Step};
use crate::observe::metrics;
use crate::observe::otel;
use crate::observe::waiting::{self, Waiting};
use crate::route::held::Held;
use crate::route::outcome::{classify, Attempt, DeadReason, Outcome, Route};
use crate::route::{not_yet, plan, Ladder, Original, PlanInput, Router, Unrouted};

/// A span inside the record's, or none when the record has none (no
/// `traceparent` and no export): spans cost nothing on the common path.
fn child(make: impl FnOnce() -> tracing::Span) -> tracing::Span {
    if tracing::Span::current().is_none() {
        tracing::Span::none()
    } else {
        make()
    }
}

/// A relay consumer's handler: the event topics or one tier.
pub struct Relay {
    shared: Arc<Shared>,
    /// The ladder's tier this consumer reads, or `None` for the event topics.
    tier: Option<usize>,
}

impl Relay {
    /// The handler of a consumer of the event topics or of a tier (the dead role has its own).
    pub fn new(shared: Arc<Shared>, role: Role) -> Relay {
        let tier = match role {
            Role::Tier(index) => Some(index),
            Role::Events => None,
            Role::Dead => unreachable!("the dead topic's handler is notify::Notifier"),
        };
        Relay { shared, tier }
    }
}

/// The parts of one record that its route needs, borrowed from [`Prepared`].
struct Record<'a> {
    original: &'a Original<'a>,
    hop: &'a Hop,
    event: &'a Event,
    in_place: Option<&'a in_place::Kept>,
    /// Where it was read and how long this processing's attempt took, for the attempt log.
    step: Step<'a>,
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
    /// An event that fans out by subscription (then `event` is not read).
    fanout: Option<crate::event::Fanout>,
    /// The endpoint of the fan-out leg it carries: a tier record's, or a sealed replay's.
    leg: Option<Box<str>>,
    /// What its legs will hold while they run (see [`fanout::LEG_BYTES`]), for the memory budget.
    legs_bytes: usize,
    /// A fan-out with ordered legs on an event topic: its legs' states between runs in place.
    legs: Option<in_place::Legs>,
    /// Counts in its endpoint's oldest-waiting age until the record is decided or let go (dropped).
    _waiting: Option<Waiting>,
}

impl Handler for Relay {
    type Record = Prepared;

    /// The partition loop keeps each consumer within the endpoint's limit; the
    /// semaphore in `process` keeps the whole process (events and tiers) within it.
    fn prepare(&self, record: OwnedMessage) -> (Ticket, Prepared) {
        let shared = &*self.shared;
        // Producers write the event topics: a header bomb is dropped unread (the
        // record goes dead with its value and key). Tier records are the relay's own.
        let header_bytes = crate::consume::budget::header_bytes(&record);
        let bomb = self.tier.is_none() && header_bytes > shared.max_record_header_bytes;
        let headers = if bomb { Default::default() } else { headers_of(&record) };
        let here = Coordinates::of(&record);
        let timestamp_ms = record.timestamp().to_millis();
        let (hop, leg) = match self.tier {
            // Producers write the event topics: their relay headers would set
            // the deadline, the attempt count or the origin (and so the id).
            None => {
                let value = record.payload().unwrap_or_default();
                let (trusted, ignored) = trusted_on_event_topic(&headers, value, shared.replay_key.as_ref());
                if ignored > 0 {
                    metrics::relay_headers_ignored(&here, ignored);
                }
                (Hop::read(&trusted, here, timestamp_ms), self.leg_of(&headers, Some(&trusted)))
            }
            Some(_) => (Hop::read(&headers, here, timestamp_ms), self.leg_of(&headers, None)),
        };
        // The default id comes from the origin record, so it stays the same on
        // every hop and every replay: receivers de-duplicate on it.
        let fanout::Decode { mut event, fanout } = match bomb {
            true => fanout::Decode {
                event: Err(InvalidEvent::RecordHeadersTooLarge {
                    size: header_bytes,
                    limit: shared.max_record_header_bytes,
                }),
                fanout: None,
            },
            false => {
                self.decode(&headers, leg.as_deref(), record.payload().unwrap_or_default(), || hop.origin.default_id())
            }
        };
        // Counted once, where the record enters: a tier record carries the same value.
        if let (Ok(Event { ignored_attributes: fields @ 1.., .. }), None) = (&event, self.tier) {
            metrics::event_attributes_ignored(&Coordinates::of(&record), *fields);
        }
        // The record's trace context goes on every attempt; tier and dead
        // records carry it on, as they keep every header that is not ours.
        let context = TraceContext::of(&headers);
        if let (Ok(event), Some(context)) = (event.as_mut(), &context) {
            context.apply(&mut event.headers);
        }
        let (order, legs_bytes) = self.order_of(&event, fanout.as_ref(), record.key());
        // Never later than the tier's delay after the record was written:
        // a far due time must not hold the partition (it laps instead).
        let due_ms =
            self.tier.and_then(|index| shared.ladder.ready_at(index, record.timestamp().to_millis(), hop.due_ms));
        // One that will lap makes no request: neither its endpoint's slot nor its
        // pace may hold it (a Retry-After hold would keep it in the tier past its delay).
        // (The same rule as `process` applies once the tier lets it go.)
        let deadline = hop.deadline_ms.unwrap_or(i64::MAX);
        let laps = due_ms.is_some_and(|ready| not_yet(hop.due_ms, ready.max(now_ms()), deadline).is_some());
        let ordered = !order.is_empty();
        let ticket = Ticket {
            due_ms,
            endpoint: event.as_ref().ok().filter(|_| !laps).map(|e| {
                let (limit, pace) = shared.states.slot(&e.endpoint_key, e.endpoint_name.is_none());
                EndpointSlot { key: e.endpoint_key.clone(), limit, pace }
            }),
            order,
        };
        let in_place = (ordered && fanout.is_none()).then(in_place::Kept::default);
        let legs = (ordered && fanout.is_some()).then(in_place::Legs::default);
        let since_ms = hop.event_ms.unwrap_or_else(now_ms);
        let _waiting = event.as_ref().ok().map(|e| waiting::track(&e.endpoint_key, since_ms));
        let prepared =
            Prepared { record, headers, hop, event, trace: context, in_place, _waiting, fanout, leg, legs_bytes, legs };
        (ticket, prepared)
    }

    fn held_bytes(&self, record: &Prepared) -> usize {
        record.legs_bytes
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
        let shared = &*self.shared;
        let Prepared { record, headers, hop, event, in_place, .. } = prepared;
        let mut hop = in_place.as_ref().map_or_else(|| hop.clone(), |kept| kept.hop(hop));
        let original = Original { key: record.key(), value: record.payload(), headers };
        // No event is judged on a stale view of the registry (SPEC): wait for it.
        if let (None, Some(registry)) = (self.tier, &shared.registry) {
            if !registry.wait_fresh(&cancel).await {
                return Done::Abandoned;
            }
        }
        if let Some(fanout) = &prepared.fanout {
            return self.fan_out(prepared, fanout, &cancel).await;
        }
        let found;
        let event = match event {
            Ok(event) => event,
            Err(InvalidEvent::UnknownEndpoint(name)) if shared.registry.is_some() => {
                match self.unknown(prepared, &original, &mut hop, name, &cancel).await {
                    Ok(event) => {
                        found = event;
                        &found
                    }
                    Err(done) => return done,
                }
            }
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
        self.deliver(prepared, hop, event, work, in_place.as_ref(), &cancel).await
    }

    /// One delivery of `prepared` (the record's, or one leg of a fan-out)
    /// from its attempt to an acknowledged route.
    async fn deliver(
        &self,
        prepared: &Prepared,
        mut hop: Hop,
        event: &Event,
        work: Work,
        in_place: Option<&in_place::Kept>,
        cancel: &CancellationToken,
    ) -> Done {
        let shared = &*self.shared;
        let original =
            Original { key: prepared.record.key(), value: prepared.record.payload(), headers: &prepared.headers };
        // Set on the first hop and carried in headers afterwards; a replay sets
        // a fresh deadline header, which wins over the event's own retry_until.
        let now = now_ms();
        let first = *hop.first_attempt_ms.get_or_insert(now);
        let deadline = *hop.deadline_ms.get_or_insert(event.retry_until_ms.unwrap_or(first + shared.max_age_ms));
        // A tier lets a record go after at most its delay (see `prepare`); one
        // whose own due time is still ahead laps the last tier, unattempted.
        let lap = self.tier.and_then(|_| not_yet(hop.due_ms, now, deadline));
        let (outcome, took) = match (work, lap) {
            (Work::Defer(why), _) => (Outcome::Deferred(why), None),
            (Work::Attempt, Some(due_ms)) => (Outcome::NotYet { due_ms }, None),
            (Work::Attempt, None) => match self.attempt(event, &mut hop, cancel).await {
                Some(attempted) => attempted,
                None => return Done::Abandoned,
            },
        };
        let step = Step { record: At::of(&prepared.record), took };
        let record = Record { original: &original, hop: &hop, event, in_place, step };
        self.route(record, outcome, cancel).instrument(child(|| tracing::info_span!("route"))).await
    }
}
