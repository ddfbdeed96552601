//! Outcome -> [`Route`] (the pure `plan` over the retry [`Ladder`]), and the [`Router`] that writes tier and dead records.
//!
//! Every record the router writes carries the original value byte-for-byte,
//! the original key, the original non-relay headers, and fresh relay headers
//! (overwritten, never appended). A produce decides a record's fate only once
//! the broker acknowledged it (idempotent producer, `acks=all`).

pub mod backoff;
pub mod held;
pub mod outcome;
pub mod sizes;

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rdkafka::error::KafkaError;
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::event::headers::RecordHeaders;
use crate::observe::metrics;
use crate::route::backoff::Backoff;
use crate::route::held::Held;
use crate::route::outcome::{DeadReason, FinalReason, Outcome, Route};

/// The retry ladder: one fixed delay per tier; the last repeats.
#[derive(Debug, Clone)]
pub struct Ladder {
    delays_ms: Vec<i64>,
    /// Largest jitter as a fraction of the delay (at most 0.1).
    jitter: f64,
}

impl Ladder {
    pub fn new(delays: impl IntoIterator<Item = Duration>, jitter: f64) -> Ladder {
        let delays_ms: Vec<i64> = delays.into_iter().map(|d| d.as_millis() as i64).collect();
        assert!(!delays_ms.is_empty(), "config validation guarantees at least one tier");
        Ladder { delays_ms, jitter: jitter.clamp(0.0, 0.1) }
    }

    fn last(&self) -> usize {
        self.delays_ms.len() - 1
    }

    /// The first tier whose delay is at least `wait`, else the last one.
    fn first_at_least(&self, wait_ms: i64) -> usize {
        self.delays_ms.iter().position(|&d| d >= wait_ms).unwrap_or(self.last())
    }

    /// When a record read from tier `index` is worked on: at its due time, but
    /// no later than the tier's delay plus the largest jitter after the record
    /// was written (`written_ms`, its timestamp), so that no record holds a tier
    /// partition longer than that, whatever its due time says. A missing or
    /// unreadable due time counts as that bound. `None`: now.
    pub fn ready_at(&self, index: usize, written_ms: Option<i64>, due_ms: Option<i64>) -> Option<i64> {
        let delay = self.delays_ms[index.min(self.last())];
        let bound = written_ms.map(|t| t + delay + (delay as f64 * self.jitter) as i64);
        match (due_ms, bound) {
            (Some(due), Some(bound)) => Some(due.min(bound)),
            (due, bound) => due.or(bound),
        }
    }
}

/// A tier record worked on before its own due time (see [`Ladder::ready_at`])
/// is not attempted yet: `Some(due)` to lap the last tier with. A due time past
/// the deadline is garbage: the record is attempted now, as if it were due.
pub fn not_yet(due_ms: Option<i64>, now_ms: i64, deadline_ms: i64) -> Option<i64> {
    due_ms.filter(|&due| due > now_ms && due <= deadline_ms)
}

/// Everything `plan` needs besides the outcome.
#[derive(Debug, Clone, Copy)]
pub struct PlanInput {
    /// Attempts made so far, including the one just classified (if any).
    pub attempts: u32,
    /// The tier the record was read from; `None` on an event topic.
    pub from_tier: Option<usize>,
    pub now_ms: i64,
    pub deadline_ms: i64,
    /// 0 = no cap.
    pub max_attempts: u32,
    /// A uniform sample in [0, 1) that scales the jitter.
    pub jitter_sample: f64,
}

/// Decides where a record goes. Pure: all inputs are arguments.
///
/// - attempt n (n >= 1) failed: tier n-1, the last tier repeating;
/// - deferred by an open circuit: the tier after the one it came from (no attempt counted);
/// - `Retry-After`: the first tier whose delay is at least that long, and never earlier than asked
///   (longer than the last tier: the last tier, whose consumer laps it until due);
/// - not yet due (a lap): the last tier again with the same due time, no attempt counted;
/// - a next due time past the deadline: dead, `expired`; attempts used up: dead, `max_attempts`.
pub fn plan(ladder: &Ladder, outcome: &Outcome, input: PlanInput) -> Route {
    let (index, retry_after) = match outcome {
        Outcome::Delivered { .. } => return Route::Delivered,
        Outcome::NotYet { due_ms } if *due_ms > input.deadline_ms => {
            return Route::Dead { reason: DeadReason::Expired }
        }
        Outcome::NotYet { due_ms } => return Route::Tier { index: ladder.last(), due_ms: *due_ms },
        Outcome::Final { reason: FinalReason::Rejected, .. } => return Route::Dead { reason: DeadReason::Rejected },
        Outcome::Final { reason: FinalReason::ForbiddenTarget, .. } => {
            return Route::Dead { reason: DeadReason::ForbiddenTarget }
        }
        Outcome::Deferred(_) => (input.from_tier.map_or(0, |i| i + 1).min(ladder.last()), None),
        Outcome::Retryable { retry_after, .. } => {
            if input.max_attempts > 0 && input.attempts >= input.max_attempts {
                return Route::Dead { reason: DeadReason::MaxAttempts };
            }
            let scheduled = (input.attempts.max(1) as usize - 1).min(ladder.last());
            match retry_after {
                Some(wait) => (ladder.first_at_least(wait.as_millis() as i64), Some(wait.as_millis() as i64)),
                None => (scheduled, None),
            }
        }
    };
    let delay = ladder.delays_ms[index];
    let jitter = (delay as f64 * ladder.jitter * input.jitter_sample.clamp(0.0, 1.0)) as i64;
    let due_ms = (input.now_ms + delay + jitter).max(input.now_ms + retry_after.unwrap_or(0));
    if due_ms > input.deadline_ms {
        return Route::Dead { reason: DeadReason::Expired };
    }
    Route::Tier { index, due_ms }
}

/// A record as read, for re-producing it unchanged.
#[derive(Debug, Clone)]
pub struct Original<'a> {
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: &'a RecordHeaders,
}

/// A record to `topic` with this key, value and headers (a tier, dead or replayed copy of one read).
pub fn future_record<'a>(
    topic: &'a str,
    key: Option<&'a [u8]>,
    value: Option<&'a [u8]>,
    headers: OwnedHeaders,
) -> FutureRecord<'a, [u8], [u8]> {
    let mut record = FutureRecord::to(topic).headers(headers);
    if let Some(key) = key {
        record = record.key(key);
    }
    if let Some(value) = value {
        record = record.payload(value);
    }
    record
}

/// Produces tier and dead records; only an acknowledged produce returns Ok.
#[derive(Clone)]
pub struct Router {
    producer: FutureProducer,
    tier_topics: Vec<String>,
    dead_topic: String,
    held: Arc<Held>,
    /// Fires once librdkafka reports a fatal error: the producer is unusable.
    fatal: CancellationToken,
    fatal_why: Arc<OnceLock<String>>,
}

/// Why a route was not acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unrouted {
    /// The relay is shutting down (or the producer failed fatally); the record stays undecided.
    #[error("shutting down before the broker acknowledged the record")]
    Abandoned,
    /// The record is larger than the producer or the topic takes: it never will be written there.
    #[error("too large for {topic}: {error}")]
    TooLarge { topic: String, error: String },
}

/// What a failed produce means for its record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProduceFailure {
    /// Larger than the producer or topic takes: retrying cannot help; decide it.
    TooLarge,
    /// librdkafka's fatal error (the idempotent producer fenced, say): restart the process.
    Fatal,
    /// Anything else (missing or unauthorised topic, broker outage): retry, holding the offset.
    Transient,
}

/// Classifies a produce error. `fatal` is librdkafka's fatal-error state,
/// which can lie behind an error with another code. Pure.
pub fn classify_produce(error: &KafkaError, fatal: bool) -> ProduceFailure {
    use rdkafka::types::RDKafkaErrorCode as Code;
    match error.rdkafka_error_code() {
        _ if fatal => ProduceFailure::Fatal,
        Some(Code::Fatal) => ProduceFailure::Fatal,
        // The same codes come from librdkafka itself (a record over
        // message.max.bytes) and from the broker (over the topic's max.message.bytes).
        Some(Code::MessageSizeTooLarge | Code::MessageBatchTooLarge) => ProduceFailure::TooLarge,
        _ => ProduceFailure::Transient,
    }
}

impl Router {
    /// A router whose producer takes records up to `message_max_bytes` (see [`crate::route::sizes`]).
    pub fn new(config: &Config, message_max_bytes: usize, held: Arc<Held>) -> Result<Router, KafkaError> {
        let producer: FutureProducer =
            crate::config::client::sized_producer_config(&config.kafka, message_max_bytes).create()?;
        Ok(Router {
            producer,
            tier_topics: config.retry.tiers.iter().map(|t| t.topic.clone()).collect(),
            dead_topic: config.topics.dead.clone(),
            held,
            fatal: CancellationToken::new(),
            fatal_why: Arc::default(),
        })
    }

    pub fn tier_topic(&self, index: usize) -> &str {
        &self.tier_topics[index]
    }

    pub fn tier_topics(&self) -> &[String] {
        &self.tier_topics
    }

    pub fn dead_topic(&self) -> &str {
        &self.dead_topic
    }

    /// Resolves with librdkafka's words once the producer failed fatally.
    pub async fn fatal_error(&self) -> String {
        self.fatal.cancelled().await;
        self.fatal_why.get().cloned().unwrap_or_default()
    }

    /// Writes `original` to `topic` with `headers`, retrying with backoff until
    /// the broker acknowledges it or `cancel` fires. librdkafka already retries
    /// inside `message.timeout.ms`; this loop covers longer outages, during
    /// which the record stays undecided, its offset is not committed and the
    /// route counts as held ([`Held`]). A record too large for the producer or
    /// the topic is returned as [`Unrouted::TooLarge`], never retried. Ok: the
    /// partition and offset the broker acknowledged.
    pub async fn produce(
        &self,
        topic: &str,
        original: &Original<'_>,
        headers: OwnedHeaders,
        cancel: &CancellationToken,
    ) -> Result<(i32, i64), Unrouted> {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        let mut held = None;
        loop {
            let record = future_record(topic, original.key, original.value, headers.clone());
            let sent = tokio::select! {
                sent = self.producer.send(record, Timeout::Never) => sent,
                _ = cancel.cancelled() => return Err(Unrouted::Abandoned),
            };
            let error = match sent {
                Ok(delivery) => return Ok((delivery.partition, delivery.offset)),
                Err((error, _)) => error,
            };
            let fatal = self.producer.client().fatal_error();
            match classify_produce(&error, fatal.is_some()) {
                ProduceFailure::TooLarge => {
                    return Err(Unrouted::TooLarge { topic: topic.to_string(), error: error.to_string() })
                }
                ProduceFailure::Fatal => {
                    let why = fatal.map_or_else(|| error.to_string(), |(code, why)| format!("{code}: {why}"));
                    metrics::producer_fatal(topic, &why);
                    let _ = self.fatal_why.set(why);
                    self.fatal.cancel();
                    return Err(Unrouted::Abandoned);
                }
                ProduceFailure::Transient => {
                    held.get_or_insert_with(|| self.held.hold(topic, Instant::now()));
                    metrics::produce_failed(topic, &error, backoff.peek());
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff.advance()) => {}
                _ = cancel.cancelled() => return Err(Unrouted::Abandoned),
            }
        }
    }

    /// Waits for queued records to be acknowledged (shutdown).
    pub fn flush(&self, timeout: Duration) {
        if let Err(error) = self.producer.flush(Timeout::After(timeout)) {
            tracing::warn!(%error, "producer flush did not finish");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::outcome::Why;
    use proptest::prelude::*;

    fn ladder() -> Ladder {
        Ladder::new([1, 2, 3].map(Duration::from_secs), 0.1)
    }

    fn input(attempts: u32, from_tier: Option<usize>) -> PlanInput {
        PlanInput { attempts, from_tier, now_ms: 10_000, deadline_ms: 100_000, max_attempts: 0, jitter_sample: 0.0 }
    }

    fn retryable(after: Option<u64>) -> Outcome {
        Outcome::Retryable { status: Some(503), error: "HTTP 503".into(), retry_after: after.map(Duration::from_secs) }
    }

    #[test]
    fn the_routing_table() {
        let l = ladder();
        let table: Vec<(Outcome, PlanInput, Route)> = vec![
            (Outcome::Delivered { status: 200 }, input(1, None), Route::Delivered),
            (retryable(None), input(1, None), Route::Tier { index: 0, due_ms: 11_000 }),
            (retryable(None), input(2, Some(0)), Route::Tier { index: 1, due_ms: 12_000 }),
            (retryable(None), input(3, Some(1)), Route::Tier { index: 2, due_ms: 13_000 }),
            (retryable(None), input(9, Some(2)), Route::Tier { index: 2, due_ms: 13_000 }),
            (retryable(Some(3)), input(1, None), Route::Tier { index: 2, due_ms: 13_000 }),
            (retryable(Some(2)), input(3, Some(2)), Route::Tier { index: 1, due_ms: 12_000 }),
            (retryable(Some(60)), input(1, None), Route::Tier { index: 2, due_ms: 70_000 }),
            (retryable(Some(0)), input(2, Some(0)), Route::Tier { index: 0, due_ms: 11_000 }),
            (Outcome::Deferred(Why::Circuit), input(0, None), Route::Tier { index: 0, due_ms: 11_000 }),
            (Outcome::Deferred(Why::Circuit), input(1, Some(0)), Route::Tier { index: 1, due_ms: 12_000 }),
            (Outcome::Deferred(Why::Circuit), input(1, Some(2)), Route::Tier { index: 2, due_ms: 13_000 }),
            (Outcome::NotYet { due_ms: 70_000 }, input(1, Some(2)), Route::Tier { index: 2, due_ms: 70_000 }),
            (Outcome::NotYet { due_ms: 70_000 }, input(1, Some(0)), Route::Tier { index: 2, due_ms: 70_000 }),
            (
                Outcome::NotYet { due_ms: 70_000 },
                PlanInput { max_attempts: 1, ..input(1, Some(2)) },
                Route::Tier { index: 2, due_ms: 70_000 },
            ),
            (Outcome::NotYet { due_ms: 100_001 }, input(1, Some(2)), Route::Dead { reason: DeadReason::Expired }),
            (
                retryable(None),
                PlanInput { deadline_ms: 10_999, ..input(1, None) },
                Route::Dead { reason: DeadReason::Expired },
            ),
            (
                retryable(None),
                PlanInput { deadline_ms: 11_000, ..input(1, None) },
                Route::Tier { index: 0, due_ms: 11_000 },
            ),
            (
                Outcome::Deferred(Why::Circuit),
                PlanInput { deadline_ms: 5_000, ..input(0, None) },
                Route::Dead { reason: DeadReason::Expired },
            ),
            (
                retryable(None),
                PlanInput { max_attempts: 2, ..input(2, Some(0)) },
                Route::Dead { reason: DeadReason::MaxAttempts },
            ),
            (
                retryable(None),
                PlanInput { max_attempts: 3, ..input(2, Some(0)) },
                Route::Tier { index: 1, due_ms: 12_000 },
            ),
            (
                Outcome::Deferred(Why::Circuit),
                PlanInput { max_attempts: 1, ..input(1, Some(0)) },
                Route::Tier { index: 1, due_ms: 12_000 },
            ),
            (
                Outcome::Final { reason: FinalReason::Rejected, status: Some(410), error: String::new() },
                input(1, None),
                Route::Dead { reason: DeadReason::Rejected },
            ),
            (
                Outcome::Final { reason: FinalReason::ForbiddenTarget, status: None, error: String::new() },
                input(1, None),
                Route::Dead { reason: DeadReason::ForbiddenTarget },
            ),
        ];
        for (outcome, input, expected) in table {
            assert_eq!(plan(&l, &outcome, input), expected, "{outcome:?} {input:?}");
        }
    }

    #[test]
    fn a_tier_holds_a_record_at_most_its_delay_and_a_far_due_time_laps() {
        let l = ladder();
        // Tier 1 waits 2 s, jitter up to 10 %: a record written at 10 s is worked on by 12.2 s at the latest.
        assert_eq!(l.ready_at(1, Some(10_000), Some(11_500)), Some(11_500), "due within the bound");
        assert_eq!(l.ready_at(1, Some(10_000), Some(86_400_000)), Some(12_200), "a far due time is capped");
        assert_eq!(l.ready_at(1, Some(10_000), None), Some(12_200), "an unreadable due time is the bound");
        assert_eq!(l.ready_at(1, None, Some(5_000)), Some(5_000), "no timestamp: the due time");
        assert_eq!(l.ready_at(1, None, None), None);
        // At 12.2 s: a due time still ahead (within the deadline) laps; one past the deadline is garbage.
        assert_eq!(not_yet(Some(86_400_000), 12_200, 100_000_000), Some(86_400_000));
        assert_eq!(not_yet(Some(86_400_000), 12_200, 50_000), None, "past the deadline: attempt now");
        assert_eq!(not_yet(Some(12_000), 12_200, 50_000), None, "due");
        assert_eq!(not_yet(None, 12_200, 50_000), None);
    }

    #[test]
    fn only_size_errors_are_decided_and_fatal_errors_restart() {
        use rdkafka::types::RDKafkaErrorCode as Code;
        let produced = |code| KafkaError::MessageProduction(code);
        let table = [
            (produced(Code::MessageSizeTooLarge), false, ProduceFailure::TooLarge),
            (produced(Code::MessageBatchTooLarge), false, ProduceFailure::TooLarge),
            (produced(Code::Fatal), false, ProduceFailure::Fatal),
            (produced(Code::MessageSizeTooLarge), true, ProduceFailure::Fatal),
            (produced(Code::OutOfOrderSequenceNumber), true, ProduceFailure::Fatal),
            (produced(Code::UnknownTopicOrPartition), false, ProduceFailure::Transient),
            (produced(Code::UnknownTopic), false, ProduceFailure::Transient),
            (produced(Code::TopicAuthorizationFailed), false, ProduceFailure::Transient),
            (produced(Code::MessageTimedOut), false, ProduceFailure::Transient),
            (produced(Code::AllBrokersDown), false, ProduceFailure::Transient),
            (produced(Code::QueueFull), false, ProduceFailure::Transient),
            (KafkaError::Canceled, false, ProduceFailure::Transient),
        ];
        for (error, fatal, expected) in table {
            assert_eq!(classify_produce(&error, fatal), expected, "{error:?} fatal={fatal}");
        }
    }

    proptest! {
        /// Whatever its due time, a record is worked on no later than its tier's
        /// delay plus jitter after it was written, and never after its due time.
        #[test]
        fn a_tier_never_holds_a_record_past_its_delay(
            index in 0usize..3,
            written in 0i64..1_000_000,
            due in proptest::option::of(-1_000_000i64..i64::MAX / 2),
        ) {
            let l = ladder();
            let ready = l.ready_at(index, Some(written), due).unwrap();
            let delay = l.delays_ms[index];
            prop_assert!(ready <= written + delay + delay / 10);
            prop_assert!(due.is_none_or(|due| ready <= due));
            if let Some(lap) = not_yet(due, ready, i64::MAX) {
                prop_assert_eq!(Some(lap), due, "a lap keeps the due time");
                prop_assert_eq!(
                    plan(&l, &Outcome::NotYet { due_ms: lap }, PlanInput { now_ms: ready, deadline_ms: i64::MAX, ..input(1, Some(index)) }),
                    Route::Tier { index: 2, due_ms: lap }
                );
            }
        }

        /// Jitter only adds, and at most 10 % of the tier's delay; a route never
        /// lands before the tier's delay, nor past the deadline.
        #[test]
        fn due_time_bounds(attempts in 1u32..20, sample in 0.0f64..1.0, after in proptest::option::of(0u64..10)) {
            let l = ladder();
            let input = PlanInput { jitter_sample: sample, ..input(attempts, None) };
            match plan(&l, &retryable(after), input) {
                Route::Tier { index, due_ms } => {
                    let delay = l.delays_ms[index];
                    prop_assert!(due_ms >= input.now_ms + delay);
                    prop_assert!(due_ms >= input.now_ms + after.unwrap_or(0) as i64 * 1000);
                    prop_assert!(due_ms <= input.now_ms + delay.max(after.unwrap_or(0) as i64 * 1000) + delay / 10);
                    prop_assert!(due_ms <= input.deadline_ms);
                }
                other => prop_assert!(false, "unexpected {:?}", other),
            }
        }
    }
}
