//! The handler of event and tier records: decode -> circuit -> endpoint limit -> attempt -> classify -> plan -> route.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use futures::future::BoxFuture;
use futures::FutureExt;
use rdkafka::message::{Message, OwnedMessage};
use tokio_util::sync::CancellationToken;

use crate::circuit::{Admission, Circuits, Transition, Verdict};
use crate::clock::now_ms;
use crate::concurrency::{Limiter, Signal};
use crate::config::Config;
use crate::consume::{Decider, Done, EndpointSlot, Handler, Ticket, Work};
use crate::deliver::Deliverer;
use crate::event::{Endpoints, Event, InvalidEvent};
use crate::hop::{headers_of, trusted_on_event_topic, Coordinates, Destination, Hop, RelayHeaders};
use crate::metrics::{self, Retry};
use crate::outcome::{classify, Attempt, DeadReason, Outcome, Route};
use crate::route::{plan, Ladder, Original, PlanInput, Router};
use crate::seal::ReplayKey;

/// What every relay consumer (events and each tier) shares.
pub struct Shared {
    pub endpoints: Endpoints,
    pub deliverer: Deliverer,
    pub circuits: Circuits,
    pub router: Router,
    pub ladder: Ladder,
    pub limiter: Limiter,
    pub permanent_statuses: Vec<u16>,
    pub max_age_ms: i64,
    pub max_attempts: u32,
    /// Checks the seal of `replay`'s headers on event topics.
    pub replay_key: Option<ReplayKey>,
}

/// The relay could not set up its clients.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("cannot build the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    #[error("cannot create the Kafka producer: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
}

impl Shared {
    pub fn new(config: &Config) -> Result<Arc<Shared>, SetupError> {
        Ok(Arc::new(Shared {
            endpoints: Endpoints::new(config),
            deliverer: Deliverer::new(config.delivery.allow_private_networks)?,
            circuits: Circuits::new(config.circuit.clone()),
            router: Router::new(config)?,
            ladder: Ladder::new(config.retry.tiers.iter().map(|t| t.delay), config.retry.jitter),
            limiter: limiter(config),
            permanent_statuses: config.delivery.permanent_statuses.clone(),
            max_age_ms: config.retry.max_age.as_millis() as i64,
            max_attempts: config.retry.max_attempts,
            replay_key: config.replay.key.as_ref().map(|key| ReplayKey::new(key.expose())),
        }))
    }
}

/// The adaptive per-endpoint limits, with each configured endpoint's own ceiling.
fn limiter(config: &Config) -> Limiter {
    let ceilings = config.endpoints.iter().filter_map(|(name, e)| e.max_in_flight.map(|n| (name.clone(), n))).collect();
    Limiter::new(config.delivery.max_in_flight_per_endpoint, ceilings)
}

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
}

impl Deferral {
    fn describe(self, endpoint: &str) -> String {
        match self {
            Deferral::Circuit => format!("deferred: circuit open for {endpoint}"),
            Deferral::Overflow => format!("deferred: {endpoint} has too many records waiting (overflow)"),
        }
    }
}

/// A record read by a relay consumer, decoded once when it was accepted.
pub struct Prepared {
    record: OwnedMessage,
    headers: Vec<(String, Vec<u8>)>,
    hop: Hop,
    event: Result<Event, InvalidEvent>,
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
        let event = s.endpoints.decode(record.payload().unwrap_or_default(), || hop.origin.default_id());
        let ticket = Ticket {
            due_ms: match self.source {
                Source::Tier(_) => hop.due_ms,
                Source::Events => None,
            },
            endpoint: event
                .as_ref()
                .ok()
                .map(|e| EndpointSlot { key: e.endpoint_key.clone(), limit: s.limiter.live(&e.endpoint_key) }),
        };
        (ticket, Prepared { record, headers, hop, event })
    }

    /// Never holds: every record is decided or abandoned before its slot is free.
    fn handle(
        self: Arc<Self>,
        record: Prepared,
        work: Work,
        cancel: CancellationToken,
        _: Decider,
    ) -> BoxFuture<'static, Done> {
        async move { self.process(record, work, cancel).await }.boxed()
    }
}

impl Relay {
    /// One record, from decode to an acknowledged route. Every early return is
    /// either decided (routed) or `Abandoned` (shutdown): never "dropped".
    async fn process(&self, prepared: Prepared, work: Work, cancel: CancellationToken) -> Done {
        let s = &*self.shared;
        let Prepared { record, headers, mut hop, event } = prepared;
        let original = Original { key: record.key(), value: record.payload(), headers: &headers };
        let event = match event {
            Ok(event) => event,
            Err(invalid) => {
                // Bad data is a dead letter, never a crash or a stalled partition.
                let error = invalid.to_string();
                let relay = |destination| RelayHeaders {
                    hop: &hop,
                    destination,
                    last_status: None,
                    last_error: Some(&error),
                    endpoint: "invalid",
                };
                return self.send_dead(&original, DeadReason::InvalidEvent, relay, &cancel).await;
            }
        };
        // Set on the first hop and carried in headers afterwards; a replay sets
        // a fresh deadline header, which wins over the event's own retry_until.
        let now = now_ms();
        let first = *hop.first_attempt_ms.get_or_insert(now);
        let deadline = *hop.deadline_ms.get_or_insert(event.retry_until_ms.unwrap_or(first + s.max_age_ms));
        let endpoint = event.endpoint_key.clone();
        let circuit_changed = |change: Option<Transition>| {
            if let Some(change) = change {
                metrics::circuit_changed(&endpoint, change, s.circuits.cool_down());
            }
        };

        if work == Work::Defer {
            return self.route(&original, &hop, &event, Outcome::Deferred, Deferral::Overflow, deadline, &cancel).await;
        }
        // The circuit is asked once the endpoint's permit is held, so records
        // queued behind a failing endpoint see the circuit it opened.
        let permit = tokio::select! {
            permit = s.limiter.acquire(&endpoint) => permit,
            _ = cancel.cancelled() => return Done::Abandoned,
        };
        let (admission, change) = s.circuits.admit(&endpoint, Instant::now());
        circuit_changed(change);
        let outcome = if admission == Admission::Defer {
            permit.finish(Signal::None);
            Outcome::Deferred
        } else {
            let attempt = tokio::select! {
                attempt = s.deliverer.attempt(&event, SystemTime::now()) => attempt,
                _ = cancel.cancelled() => {
                    if admission == Admission::Probe {
                        s.circuits.probe_abandoned(&endpoint, Instant::now());
                    }
                    return Done::Abandoned;
                }
            };
            let took = permit.elapsed();
            permit.finish(signal(&attempt, took));
            metrics::attempt_finished(&endpoint, took.as_secs_f64());
            hop.attempts += 1;
            let outcome = classify(&attempt, &s.permanent_statuses, SystemTime::now());
            // Only retryable failures count against the circuit: a 410 is the
            // receiver answering, so it is up.
            let verdict = if matches!(outcome, Outcome::Retryable { .. }) { Verdict::Failed } else { Verdict::Up };
            circuit_changed(s.circuits.report(&endpoint, admission, verdict, Instant::now()));
            outcome
        };

        self.route(&original, &hop, &event, outcome, Deferral::Circuit, deadline, &cancel).await
    }

    #[allow(clippy::too_many_arguments)] // the record's parts, each a borrow: a struct would only rename them
    /// Plans where the record goes after `outcome` and takes it there; decided
    /// once delivered or once the broker acknowledged the route.
    async fn route(
        &self,
        original: &Original<'_>,
        hop: &Hop,
        event: &Event,
        outcome: Outcome,
        deferral: Deferral,
        deadline_ms: i64,
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
        };
        let relay =
            |destination| RelayHeaders { hop, destination, last_status, last_error: last_error.as_deref(), endpoint };
        match route {
            Route::Delivered => {
                let latency_ms = hop.event_ms.map(|t| now_ms() - t);
                metrics::delivered(endpoint, &event.id, hop.attempts, latency_ms);
                Done::Decided
            }
            Route::Tier { index, due_ms } => {
                let topic = s.router.tier_topic(index);
                let built = relay(Destination::Tier { due_ms }).write(original.headers);
                // Decided only once the broker acknowledged the tier record.
                if s.router.produce(topic, original, built, cancel).await.is_err() {
                    return Done::Abandoned;
                }
                let why = match (&outcome, deferral) {
                    (Outcome::Deferred, Deferral::Circuit) => Retry::Deferred,
                    (Outcome::Deferred, Deferral::Overflow) => Retry::Overflow,
                    _ => Retry::Failed,
                };
                metrics::retry_routed(endpoint, &event.id, hop.attempts, topic, why, last_error.as_deref());
                Done::Decided
            }
            Route::Dead { reason } => self.send_dead(original, reason, relay, cancel).await,
        }
    }

    async fn send_dead<'a>(
        &self,
        original: &Original<'_>,
        reason: DeadReason,
        relay: impl FnOnce(Destination) -> RelayHeaders<'a>,
        cancel: &CancellationToken,
    ) -> Done {
        let router = &self.shared.router;
        let relay = relay(Destination::Dead { reason });
        if router.produce(router.dead_topic(), original, relay.write(original.headers), cancel).await.is_err() {
            return Done::Abandoned;
        }
        metrics::dead_routed(
            relay.endpoint,
            &relay.hop.origin.default_id(),
            relay.hop.attempts,
            reason,
            relay.last_error,
        );
        Done::Decided
    }
}
