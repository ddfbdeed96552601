//! The handler of event and tier records: decode -> circuit -> endpoint limit -> attempt -> classify -> plan -> route.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use futures::future::BoxFuture;
use futures::FutureExt;
use rdkafka::message::{Message, OwnedMessage};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::circuit::{Admission, Circuits, Transition, Verdict};
use crate::clock::now_ms;
use crate::config::Config;
use crate::consume::{Done, EndpointSlot, Handler, Ticket};
use crate::deliver::Deliverer;
use crate::event::{Endpoints, Event, InvalidEvent};
use crate::headers::RecordHeaders;
use crate::hop::{headers_of, Coordinates, Destination, Hop, RelayHeaders};
use crate::metrics::{self, Retry};
use crate::outcome::{classify, DeadReason, Outcome, Route};
use crate::route::{not_yet, plan, Ladder, Original, PlanInput, Router};

/// What every relay consumer (events and each tier) shares.
pub struct Shared {
    pub endpoints: Endpoints,
    pub deliverer: Deliverer,
    pub circuits: Circuits,
    pub router: Router,
    pub ladder: Ladder,
    pub limits: EndpointLimits,
    pub permanent_statuses: Vec<u16>,
    pub max_age_ms: i64,
    pub max_attempts: u32,
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
            limits: EndpointLimits::new(config),
            permanent_statuses: config.delivery.permanent_statuses.clone(),
            max_age_ms: config.retry.max_age.as_millis() as i64,
            max_attempts: config.retry.max_attempts,
        }))
    }
}

/// Concurrent requests per endpoint, so one slow receiver cannot take every slot.
pub struct EndpointLimits {
    default: usize,
    configured: HashMap<String, usize>,
    semaphores: Mutex<HashMap<Arc<str>, Arc<Semaphore>>>,
}

impl EndpointLimits {
    fn new(config: &Config) -> EndpointLimits {
        let configured =
            config.endpoints.iter().filter_map(|(name, e)| e.max_in_flight.map(|n| (name.clone(), n))).collect();
        EndpointLimits { default: config.delivery.max_in_flight_per_endpoint, configured, semaphores: Mutex::default() }
    }

    fn limit(&self, endpoint: &str) -> usize {
        self.configured.get(endpoint).copied().unwrap_or(self.default)
    }

    fn semaphore(&self, endpoint: &Arc<str>) -> Arc<Semaphore> {
        let mut semaphores = self.semaphores.lock().expect("limits lock poisoned");
        semaphores.entry(endpoint.clone()).or_insert_with(|| Arc::new(Semaphore::new(self.limit(endpoint)))).clone()
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

/// A record read by a relay consumer, decoded once when it was accepted.
pub struct Prepared {
    record: OwnedMessage,
    headers: RecordHeaders,
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
        let hop = Hop::read(&headers, Coordinates::of(&record), record.timestamp().to_millis());
        // The default id comes from the origin record, so it stays the same on
        // every hop and every replay: receivers de-duplicate on it.
        let event = s.endpoints.decode(record.payload().unwrap_or_default(), || hop.origin.default_id());
        let ticket = Ticket {
            due_ms: match self.source {
                // Never later than the tier's delay after the record was written:
                // a far due time must not hold the partition (it laps instead).
                Source::Tier(index) => s.ladder.ready_at(index, record.timestamp().to_millis(), hop.due_ms),
                Source::Events => None,
            },
            endpoint: event
                .as_ref()
                .ok()
                .map(|e| EndpointSlot { key: e.endpoint_key.clone(), limit: s.limits.limit(&e.endpoint_key) }),
        };
        (ticket, Prepared { record, headers, hop, event })
    }

    fn handle(self: Arc<Self>, record: Arc<Prepared>, cancel: CancellationToken) -> BoxFuture<'static, Done> {
        async move { self.process(&record, cancel).await }.boxed()
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
            let Prepared { record, headers, hop, event } = &*prepared;
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
            self.send_dead(&original, DeadReason::InternalError, relay, &cancel).await
        }
        .boxed()
    }
}

impl Relay {
    /// One record, from decode to an acknowledged route. Every early return is
    /// either decided (routed) or `Abandoned` (shutdown): never "dropped".
    async fn process(&self, prepared: &Prepared, cancel: CancellationToken) -> Done {
        let s = &*self.shared;
        let Prepared { record, headers, hop, event } = prepared;
        let mut hop = hop.clone();
        let original = Original { key: record.key(), value: record.payload(), headers };
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
        // A tier lets a record go after at most its delay (see `prepare`); one
        // whose own due time is still ahead laps the last tier, unattempted.
        let lap = match self.source {
            Source::Tier(_) => not_yet(hop.due_ms, now_ms(), deadline),
            Source::Events => None,
        };
        let outcome = match lap {
            Some(due_ms) => Outcome::NotYet { due_ms },
            None => match self.attempt(event, &mut hop, &cancel).await {
                Some(outcome) => outcome,
                None => return Done::Abandoned,
            },
        };

        let input = PlanInput {
            attempts: hop.attempts,
            from_tier: match self.source {
                Source::Tier(index) => Some(index),
                Source::Events => None,
            },
            now_ms: now_ms(),
            deadline_ms: deadline,
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
            Outcome::Deferred => (hop.last_status, Some(format!("deferred: circuit open for {endpoint}"))),
            Outcome::NotYet { .. } => (hop.last_status, hop.last_error.clone()),
        };
        let relay = |destination| RelayHeaders {
            hop: &hop,
            destination,
            last_status,
            last_error: last_error.as_deref(),
            endpoint: &endpoint,
        };
        match route {
            Route::Delivered => {
                let latency_ms = hop.event_ms.map(|t| now_ms() - t);
                metrics::delivered(&endpoint, &event.id, hop.attempts, latency_ms);
                Done::Decided
            }
            Route::Tier { index, due_ms } => {
                let topic = s.router.tier_topic(index);
                let built = relay(Destination::Tier { due_ms }).write(original.headers);
                // Decided only once the broker acknowledged the tier record.
                if s.router.produce(topic, &original, built, &cancel).await.is_err() {
                    return Done::Abandoned;
                }
                let why = match outcome {
                    Outcome::Deferred => Retry::Deferred,
                    Outcome::NotYet { .. } => Retry::NotYet,
                    _ => Retry::Failed,
                };
                metrics::retry_routed(&endpoint, &event.id, hop.attempts, topic, why, last_error.as_deref());
                Done::Decided
            }
            Route::Dead { reason } => self.send_dead(&original, reason, relay, &cancel).await,
        }
    }

    /// Waits for the endpoint's permit, asks the circuit, and makes the attempt
    /// unless it defers. `None`: cancelled (shutdown or revoke) on the way.
    async fn attempt(&self, event: &Event, hop: &mut Hop, cancel: &CancellationToken) -> Option<Outcome> {
        let s = &*self.shared;
        let endpoint = &event.endpoint_key;
        let circuit_changed = |change: Option<Transition>| {
            if let Some(change) = change {
                metrics::circuit_changed(endpoint, change, s.circuits.cool_down());
            }
        };
        // The circuit is asked once the endpoint's permit is held, so records
        // queued behind a failing endpoint see the circuit it opened.
        let semaphore = s.limits.semaphore(endpoint);
        let permit = tokio::select! {
            permit = semaphore.acquire() => permit.expect("semaphores are never closed"),
            _ = cancel.cancelled() => return None,
        };
        let (admission, change) = s.circuits.admit(endpoint, Instant::now());
        circuit_changed(change);
        if admission == Admission::Defer {
            return Some(Outcome::Deferred);
        }
        let started = Instant::now();
        let attempt = tokio::select! {
            attempt = s.deliverer.attempt(event, SystemTime::now()) => attempt,
            _ = cancel.cancelled() => {
                if admission == Admission::Probe {
                    s.circuits.probe_abandoned(endpoint, Instant::now());
                }
                return None;
            }
        };
        drop(permit);
        metrics::attempt_finished(endpoint, started.elapsed().as_secs_f64());
        hop.attempts += 1;
        let outcome = classify(&attempt, &s.permanent_statuses, SystemTime::now());
        // Only retryable failures count against the circuit: a 410 is the
        // receiver answering, so it is up.
        let verdict = if matches!(outcome, Outcome::Retryable { .. }) { Verdict::Failed } else { Verdict::Up };
        circuit_changed(s.circuits.report(endpoint, admission, verdict, Instant::now()));
        Some(outcome)
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
