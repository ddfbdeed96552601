//! The attempt log: one JSON record per attempt and per decision on `topics.attempts`, keyed by event id; best effort, counted.
//!
//! The promise for events is "nothing lost"; for this log it is "best effort,
//! counted". The log has a producer of its own: a librdkafka producer has one
//! queue, so sharing the router's would make log records compete with tier and
//! dead records, whose acknowledgement decides offsets. Records are handed to
//! it after each decision and never awaited; a full queue or a failed delivery
//! (after a short `message.timeout.ms`) drops the record and counts it in
//! `hookrelay_attempt_log_dropped_total`, with a warning at most once a minute.
//!
//! The partitioner is pinned to `murmur2_random` after `kafka.properties`, so
//! every record of an id lands on [`partition_of`] that id, which is where
//! `hookrelay trace` (and any Java client, whose default partitioner this is) looks.

mod record;

use std::cell::RefCell;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use prometheus::IntCounter;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::util::Timeout;
use rdkafka::{ClientConfig, ClientContext};

pub use self::record::{scrub, At, Logged, Read, Written, MAX_ERROR_BYTES};
use crate::app::clock::{now_ms, rfc3339};
use crate::config::{Config, KafkaConfig};
use crate::route::outcome::{Outcome, Why};

/// How long the log's topic keeps records (SPEC: 7 days).
pub const RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// A record not acknowledged within this is dropped: short, so that a broken
/// log topic frees its queue quickly, and long enough to ride out a leader change.
const MESSAGE_TIMEOUT_MS: &str = "5000";

/// The queue's bound: at 20,000 records/s (about 300 bytes each) a few
/// seconds of an unreachable broker, then drops rather than memory.
const QUEUE_MAX_MESSAGES: &str = "100000";
const QUEUE_MAX_KBYTES: &str = "16384";

/// How `topics ensure` creates the log's topic: stored lz4-compressed (and kept [`RETENTION`]).
pub const COMPRESSION: &str = "lz4";

/// The partition Kafka's key partitioner gives `key` among `partitions`:
/// librdkafka's `murmur2_random` and the Java client's default (murmur2 with
/// Kafka's seed, the sign bit cleared, modulo the count). Pure.
pub fn partition_of(key: &[u8], partitions: i32) -> i32 {
    let hash = murmur2::murmur2(key, murmur2::KAFKA_SEED) & 0x7fff_ffff;
    (hash % partitions.max(1) as u32) as i32
}

/// The log producer's settings: the client's, a bounded queue and short
/// timeout, batching, then `kafka.properties`, then the partitioner, which
/// nothing may change. Half a second of linger: latency does not matter here,
/// the relay's and the broker's work per record does (make bench S0 with the
/// log on vs off: 100 ms gave 0.83x the rate, 500 ms 0.94x).
pub fn producer_config(kafka: &KafkaConfig) -> ClientConfig {
    let mut c = crate::config::client::client_config(kafka);
    c.set("acks", "1")
        .set("enable.idempotence", "false")
        .set("linger.ms", "500")
        .set("compression.type", "lz4")
        .set("message.timeout.ms", MESSAGE_TIMEOUT_MS)
        // Only failures are counted: a delivery report per written record would
        // cost the poll thread a callback per decision for nothing.
        .set("delivery.report.only.error", "true")
        .set("queue.buffering.max.messages", QUEUE_MAX_MESSAGES)
        .set("queue.buffering.max.kbytes", QUEUE_MAX_KBYTES);
    let mut c = crate::config::client::with_properties(c, kafka);
    c.set("partitioner", "murmur2_random");
    c
}

/// The `reason` of a deferred record.
fn deferred_reason(why: Why) -> &'static str {
    match why {
        Why::Circuit => "circuit",
        Why::Overflow => "overflow",
        Why::Pace => "pace",
        Why::Unknown => "unknown",
    }
}

/// `hookrelay_attempt_log_dropped_total`, registered with the other metrics on first use.
pub(crate) fn dropped_total() -> &'static IntCounter {
    static DROPPED: LazyLock<IntCounter> = LazyLock::new(|| {
        let counter = IntCounter::new(
            "hookrelay_attempt_log_dropped_total",
            "Attempt-log records dropped because the log's queue was full or its topic failed (the log is best effort).",
        )
        .expect("valid metric");
        crate::observe::metrics::register(&crate::observe::metrics::get().registry, counter)
    });
    &DROPPED
}

/// Counts drops and warns about them at most once a minute.
#[derive(Debug)]
struct Drops {
    topic: String,
    last_warned_ms: AtomicI64,
    since_warned: AtomicU64,
}

impl Drops {
    fn dropped(&self, why: &KafkaError) {
        dropped_total().inc();
        self.since_warned.fetch_add(1, Ordering::Relaxed);
        let (now, last) = (now_ms(), self.last_warned_ms.load(Ordering::Relaxed));
        if now - last >= 60_000
            && self.last_warned_ms.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            let dropped = self.since_warned.swap(0, Ordering::Relaxed);
            tracing::warn!(
                topic = %self.topic,
                dropped,
                error = %why,
                "attempt log records dropped (the log is best effort; deliveries go on)"
            );
        }
    }
}

/// Counts the records librdkafka could not deliver in time.
struct Context(Arc<Drops>);

impl ClientContext for Context {}

impl ProducerContext for Context {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((error, _)) = result {
            self.0.dropped(error);
        }
    }
}

struct Writer {
    producer: ThreadedProducer<Context>,
    topic: String,
    drops: Arc<Drops>,
    /// This replica's host name, the `relay` field.
    relay: String,
}

/// The attempt-log writer every relay consumer of a process shares; a no-op when the log is off.
#[derive(Clone, Default)]
pub struct AttemptLog {
    writer: Option<Arc<Writer>>,
}

/// What the relay knows of a record at a decision, borrowed from its state.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    pub id: &'a str,
    /// The endpoint name or URL host (the endpoint key), never the URL.
    pub endpoint: &'a str,
    /// Attempts made so far, counting the one this step made.
    pub attempt: u32,
    /// The record attempted (or decided), where it was read.
    pub record: Option<At<'a>>,
    /// This step's attempt: its status and duration; both `None` without an attempt.
    pub status: Option<u16>,
    pub took: Option<Duration>,
    pub error: Option<&'a str>,
}

/// Where the record being worked on was read, and how long this processing's
/// attempt took (`None`: no attempt was made).
#[derive(Debug, Clone, Copy)]
pub struct Step<'a> {
    pub record: At<'a>,
    pub took: Option<Duration>,
}

impl<'a> Entry<'a> {
    /// A decision without an attempt in this step (dead without attempt, a handler that panicked).
    pub fn without_attempt(
        id: &'a str,
        endpoint: &'a str,
        attempt: u32,
        record: At<'a>,
        error: Option<&'a str>,
    ) -> Self {
        Entry { id, endpoint, attempt, record: Some(record), status: None, took: None, error }
    }
}

/// The id of an event that did not decode, when its value is a JSON object
/// with a string `id` (so that `trace` finds it by the id its producer gave it).
pub fn id_of_invalid(value: Option<&[u8]>) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Id {
        id: Option<String>,
    }
    serde_json::from_slice::<Id>(value?).ok()?.id.filter(|id| !id.is_empty())
}

impl<'a> Step<'a> {
    /// The entry of a decision after this step; `status` counts only when an attempt was made.
    pub fn entry(
        self,
        id: &'a str,
        endpoint: &'a str,
        attempt: u32,
        status: Option<u16>,
        error: Option<&'a str>,
    ) -> Entry<'a> {
        let status = self.took.and(status);
        Entry { id, endpoint, attempt, record: Some(self.record), status, took: self.took, error }
    }
}

thread_local! {
    /// One serialization buffer per thread: librdkafka copies the bytes on send.
    static BUFFER: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(512));
}

impl AttemptLog {
    /// The writer of `topics.attempts`, or a no-op one when it is `""`.
    pub fn new(config: &Config) -> Result<AttemptLog, KafkaError> {
        let _ = dropped_total();
        let topic = config.topics.attempts.clone();
        if topic.is_empty() {
            return Ok(AttemptLog::default());
        }
        let drops = Arc::new(Drops { topic: topic.clone(), last_warned_ms: AtomicI64::new(0), since_warned: 0.into() });
        let producer = producer_config(&config.kafka).create_with_context(Context(drops.clone()))?;
        let relay = hostname::get().map_or_else(|_| "unknown".into(), |h| h.to_string_lossy().into_owned());
        Ok(AttemptLog { writer: Some(Arc::new(Writer { producer, topic, drops, relay })) })
    }

    pub fn delivered(&self, entry: &Entry<'_>) {
        self.write(entry, Logged::Delivered, None, None, None);
    }

    /// Failed and routed to `tier` (acknowledged there, at `to`), or retried in place (`to` none).
    pub fn retry(&self, entry: &Entry<'_>, tier: &str, to: Option<At<'_>>) {
        self.write(entry, Logged::Retry, Some(tier), None, to);
    }

    /// Passed on to `tier` without an attempt, for `why` (circuit, pace, overflow).
    pub fn deferred(&self, entry: &Entry<'_>, tier: &str, why: &str) {
        self.write(entry, Logged::Deferred, Some(tier), Some(why), None);
    }

    /// A record routed to `tier` (or kept in place) after `outcome`: a retry
    /// when an attempt failed, a deferral (and why) when none was made. A lap
    /// of the last tier before the record is due decides nothing and is not logged.
    pub fn passed_on(&self, entry: &Entry<'_>, outcome: &Outcome, tier: &str, to: Option<At<'_>>) {
        match outcome {
            Outcome::Deferred(why) => self.deferred(entry, tier, deferred_reason(*why)),
            Outcome::NotYet { .. } => {}
            _ => self.retry(entry, tier, to),
        }
    }

    /// Dead for `reason`, the dead letter acknowledged at `to`.
    pub fn dead(&self, entry: &Entry<'_>, reason: &str, to: At<'_>) {
        self.write(entry, Logged::Dead, None, Some(reason), Some(to));
    }

    /// Serializes into this thread's buffer and hands the bytes to librdkafka
    /// without waiting; a refusal (queue full) is a drop.
    fn write(&self, entry: &Entry<'_>, outcome: Logged, tier: Option<&str>, reason: Option<&str>, to: Option<At<'_>>) {
        let Some(writer) = &self.writer else { return };
        let at = rfc3339(now_ms());
        let written = Written {
            id: entry.id,
            endpoint: entry.endpoint,
            attempt: entry.attempt,
            at: &at,
            outcome,
            status: entry.status,
            duration_ms: entry.took.map(record::millis),
            error: entry.error,
            tier,
            reason,
            record: entry.record,
            to,
            relay: &writer.relay,
        };
        BUFFER.with(|buffer| {
            let mut buffer = buffer.borrow_mut();
            buffer.clear();
            // Strings and numbers into a Vec: serde_json cannot fail here.
            if serde_json::to_writer(&mut *buffer, &written).is_ok() {
                let record = BaseRecord::to(&writer.topic).key(entry.id).payload(buffer.as_slice());
                if let Err((error, _)) = writer.producer.send(record) {
                    writer.drops.dropped(&error);
                }
            }
        });
    }

    /// Gives queued records up to `timeout` to be delivered (shutdown).
    pub fn flush(&self, timeout: Duration) {
        if let Some(writer) = &self.writer {
            if let Err(error) = writer.producer.flush(Timeout::After(timeout)) {
                tracing::debug!(%error, "attempt log flush did not finish");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Partitions of keys as the Java client's `Utils.murmur2` gives them
    /// (values from Kafka's own `UtilsTest` and `DefaultPartitioner` tests).
    #[test]
    fn keys_map_to_the_partitions_kafka_gives_them() {
        // Kafka's UtilsTest: murmur2 of these strings (as signed Java ints).
        let cases: [(&str, i32); 3] =
            [("21", -973932308), ("foobar", -790332482), ("a-little-bit-long-string", -985981536)];
        for (key, java) in cases {
            assert_eq!(murmur2::murmur2(key.as_bytes(), murmur2::KAFKA_SEED) as i32, java, "{key}");
            assert_eq!(partition_of(key.as_bytes(), 7), ((java & 0x7fff_ffff) % 7), "{key}");
        }
        assert_eq!(partition_of(b"anything", 1), 0);
    }

    #[test]
    fn the_partitioner_is_pinned_after_the_properties() {
        let config = Config::from_toml("[kafka.properties]\n\"linger.ms\" = \"7\"\n").unwrap();
        let c = producer_config(&config.kafka);
        assert_eq!(c.get("partitioner"), Some("murmur2_random"));
        assert_eq!(c.get("linger.ms"), Some("7"), "other settings stay tunable");
        assert_eq!(c.get("message.timeout.ms"), Some(MESSAGE_TIMEOUT_MS));
    }
}
