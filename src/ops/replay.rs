//! `hookrelay replay`: copies dead records back to their event topic with a fresh deadline and the attempt count reset.
//!
//! The dead topic is a log and is never modified; replaying twice sends twice
//! (with the same `webhook-id`, so receivers can de-duplicate). A dead fan-out
//! leg goes back with its endpoint under the seal, so the relay re-drives that
//! leg alone: without `replay.key` it would fan out to every subscriber again,
//! so replaying legs without one is refused before anything is sent.

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{DeliveryFuture, FutureProducer};
use rdkafka::{Offset, TopicPartitionList};

use crate::app::clock::{now_ms, parse_rfc3339_ms};
use crate::config::Config;
use crate::event::dead_letter::DeadLetter;
use crate::event::seal::ReplayKey;
use crate::event::trust::replay_headers;
use crate::event::Endpoints;
use crate::route::future_record;
use crate::route::outcome::DeadReason;

const TIMEOUT: Duration = Duration::from_secs(30);

/// Which dead records to replay.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Dead records written at or after this time (ms).
    pub since_ms: Option<i64>,
    /// Dead records written before this time (ms).
    pub until_ms: Option<i64>,
    pub reason: Option<DeadReason>,
    pub endpoint: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    pub scanned: u64,
    pub matched: u64,
    pub replayed: u64,
}

/// Why a replay stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("{0:?} is neither an RFC 3339 time nor a duration like 2h")]
    BadTime(String),
    #[error("topic {0} does not exist")]
    NoTopic(String),
    #[error("no record from {topic} within {waited:?}; {unfinished} partitions unfinished")]
    Stalled { topic: String, waited: Duration, unfinished: usize },
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("replay produce was cancelled")]
    Cancelled,
    /// The operator's to fix (exit 64): set `replay.key`, or filter the legs out.
    #[error(
        "{at} is a fan-out leg (endpoint {endpoint:?}): replaying legs needs replay.key, without which the relay \
         would fan the event out to every subscriber again; nothing was replayed"
    )]
    LegNeedsKey { at: String, endpoint: String },
}

/// What a scan does with each matched record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Lists it.
    DryRun,
    /// Only looks for a fan-out leg, before a replay without `replay.key` sends anything.
    Check,
    /// Lists it and sends it.
    Send,
}

/// Parses `--since`/`--until`: an RFC 3339 time, or a duration meaning "that long ago" (`2h`).
pub fn parse_time(text: &str, now_ms: i64) -> Result<i64, ReplayError> {
    if let Ok(ms) = parse_rfc3339_ms(text) {
        return Ok(ms);
    }
    humantime::parse_duration(text)
        .map(|ago| now_ms - ago.as_millis() as i64)
        .map_err(|_| ReplayError::BadTime(text.to_string()))
}

impl Filter {
    /// Whether a dead record written at `at_ms` (0 when unknown), with `reason`
    /// and `endpoint`, is one to replay.
    pub fn matches(&self, at_ms: i64, reason: Option<DeadReason>, endpoint: &str) -> bool {
        self.since_ms.is_none_or(|s| at_ms >= s)
            && self.until_ms.is_none_or(|u| at_ms < u)
            && self.reason.is_none_or(|r| reason == Some(r))
            && self.endpoint.as_deref().is_none_or(|e| endpoint == e)
    }
}

/// Scans the dead topic up to its end at the start of the run; `progress` gets one line at a time.
/// Without `replay.key`, a first scan makes sure no matched record is a fan-out leg.
pub async fn replay(
    config: &Config,
    filter: &Filter,
    dry_run: bool,
    mut progress: impl FnMut(&str),
) -> Result<Summary, ReplayError> {
    let key = config.replay.key.as_ref().map(|key| ReplayKey::new(key.expose()));
    if key.is_none() && !dry_run {
        scan(config, filter, Mode::Check, None, &mut progress).await?;
        progress(
            "note: replay.key is not set, so the relay will not believe the replayed records' origin and deadline: \
             events without an id get new default ids (receivers will not de-duplicate them against the first \
             delivery) and their deadline starts again from retry_until or retry.max_age",
        );
    }
    let mode = if dry_run { Mode::DryRun } else { Mode::Send };
    scan(config, filter, mode, key.as_ref(), &mut progress).await
}

/// One pass over the dead topic up to its end at the pass's start.
async fn scan(
    config: &Config,
    filter: &Filter,
    mode: Mode,
    key: Option<&ReplayKey>,
    progress: &mut impl FnMut(&str),
) -> Result<Summary, ReplayError> {
    let dead = config.topics.dead.clone();
    let consumer = scan_consumer(config)?;
    let mut sender = if mode == Mode::Send { Some(Sender::new(config)?) } else { None };
    let (assignment, ends) = tokio::task::block_in_place(|| scan_range(&consumer, &dead, filter))?;
    consumer.assign(&assignment)?;
    let mut remaining = ends.clone();
    // Only to tell a fan-out leg from a record that names its receiver (no registry needed).
    let endpoints = Endpoints::new(config);

    let mut summary = Summary::default();
    let deadline_ms = now_ms() + config.retry.max_age.as_millis() as i64;
    while !remaining.is_empty() {
        let polled = tokio::task::block_in_place(|| consumer.poll(TIMEOUT).map(|r| r.map(|m| m.detach())));
        let record = match polled {
            Some(Ok(record)) => record,
            Some(Err(e)) => return Err(e.into()),
            None => {
                return Err(ReplayError::Stalled { topic: dead, waited: TIMEOUT, unfinished: remaining.len() });
            }
        };
        // Records written after the scan started are not replayed.
        let end = ends.get(&record.partition()).copied().unwrap_or(0);
        if record.offset() >= end {
            continue;
        }
        if record.offset() + 1 >= end {
            remaining.remove(&record.partition());
        }
        summary.scanned += 1;
        let letter = DeadLetter::read(&record);
        if !filter.matches(letter.at_ms.unwrap_or(0), letter.reason, &letter.endpoint) {
            continue;
        }
        summary.matched += 1;
        let value = record.payload().unwrap_or_default();
        let leg = letter.leg(&endpoints, value);
        if let (Some(endpoint), None, Mode::Check | Mode::Send) = (leg, key, mode) {
            // In Send mode only a leg dead since the check: what was sent before it stays sent.
            if let Some(sender) = &mut sender {
                settle(&mut sender.pending).await?;
            }
            let here = &letter.here;
            let at = format!("{}/{}/{}", here.topic, here.partition, here.offset);
            return Err(ReplayError::LegNeedsKey { at, endpoint: endpoint.to_string() });
        }
        let Some(sender) = &mut sender else {
            if mode == Mode::DryRun {
                let target = target_topic(config, &letter.hop.origin.topic);
                progress(&describe(&letter, target, leg.is_some(), true));
            }
            continue;
        };
        let target = target_topic(config, &letter.hop.origin.topic);
        progress(&describe(&letter, target, leg.is_some(), false));
        let fresh = replay_headers(&letter.headers, &letter.hop, &letter.here, deadline_ms, value, leg, key);
        summary.replayed += sender.send(&record, target, fresh).await?;
        if sender.pending.len() >= 500 {
            summary.replayed += settle(&mut sender.pending).await?;
            progress(&format!("progress: scanned {}, replayed {}", summary.scanned, summary.replayed));
        }
    }
    if let Some(sender) = &mut sender {
        summary.replayed += settle(&mut sender.pending).await?;
    }
    Ok(summary)
}

/// A consumer of the dead topic that starts where it is told and commits nothing.
fn scan_consumer(config: &Config) -> Result<BaseConsumer, ReplayError> {
    let mut consumer_config = crate::config::client::admin_config(&config.kafka);
    consumer_config
        .set("group.id", format!("{}.replay", config.kafka.group_id))
        .set("enable.auto.commit", "false")
        // Retention may delete the first records between the scan's start and the read.
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false");
    Ok(consumer_config.create()?)
}

/// Where each partition of `dead` starts and ends, fixed now so the scan
/// terminates: the assignment to read, and the end offset of each partition in it.
fn scan_range(
    consumer: &BaseConsumer,
    dead: &str,
    filter: &Filter,
) -> Result<(TopicPartitionList, HashMap<i32, i64>), ReplayError> {
    let metadata = consumer.fetch_metadata(Some(dead), TIMEOUT)?;
    let topic = metadata.topics().first().filter(|t| !t.partitions().is_empty());
    let topic = topic.ok_or_else(|| ReplayError::NoTopic(dead.to_string()))?;
    let mut starts = TopicPartitionList::new();
    let mut ends = HashMap::new();
    for p in topic.partitions() {
        let (low, high) = consumer.fetch_watermarks(dead, p.id(), TIMEOUT)?;
        if high > low {
            starts.add_partition_offset(dead, p.id(), Offset::Offset(low))?;
            ends.insert(p.id(), high);
        }
    }
    if let Some(since) = filter.since_ms {
        start_at_time(consumer, dead, since, &mut starts, &mut ends)?;
    }
    let mut assignment = TopicPartitionList::new();
    for e in starts.elements() {
        if ends.contains_key(&e.partition()) {
            assignment.add_partition_offset(dead, e.partition(), e.offset())?;
        }
    }
    Ok((assignment, ends))
}

/// Moves each partition's start to its first record at or after `since`.
fn start_at_time(
    consumer: &BaseConsumer,
    dead: &str,
    since: i64,
    starts: &mut TopicPartitionList,
    ends: &mut HashMap<i32, i64>,
) -> Result<(), ReplayError> {
    let mut times = TopicPartitionList::new();
    for p in ends.keys() {
        times.add_partition_offset(dead, *p, Offset::Offset(since))?;
    }
    for e in consumer.offsets_for_times(times, TIMEOUT)?.elements() {
        let end = ends.get(&e.partition()).copied().unwrap_or(0);
        match e.offset() {
            Offset::Offset(o) if o < end => starts.set_partition_offset(dead, e.partition(), Offset::Offset(o))?,
            // No record at or after `since` in this partition before the
            // scan's end (one written since would keep the scan waiting).
            _ => {
                ends.remove(&e.partition());
            }
        }
    }
    Ok(())
}

/// The event topic a dead record goes back to: its origin if that is still
/// an event topic, else the first event topic.
fn target_topic<'a>(config: &'a Config, origin: &'a String) -> &'a str {
    if config.topics.events.contains(origin) {
        origin
    } else {
        &config.topics.events[0]
    }
}

/// The progress line of one matched record. Reason, status and error: what an
/// operator checks before moving anything; a fan-out leg says so.
fn describe(letter: &DeadLetter, target: &str, leg: bool, dry_run: bool) -> String {
    let DeadLetter { here, id, endpoint, reason, last_status, last_error, .. } = letter;
    format!(
        "{} {}/{}/{} id={} endpoint={} reason={} status={} error={:?} -> {target}{}",
        if dry_run { "would replay" } else { "replay" },
        here.topic,
        here.partition,
        here.offset,
        // Escaped: nothing read from a record reaches the terminal raw.
        id.escape_debug(),
        endpoint.escape_debug(),
        reason.map_or("", DeadReason::as_str),
        last_status.map_or_else(|| "-".to_string(), |s| s.to_string()),
        last_error.as_deref().unwrap_or(""),
        if leg { " (fan-out leg: that endpoint only)" } else { "" },
    )
}

/// The producer of replayed records and the sends not yet confirmed.
struct Sender {
    producer: FutureProducer,
    pending: Vec<DeliveryFuture>,
}

impl Sender {
    fn new(config: &Config) -> Result<Sender, ReplayError> {
        let producer = crate::config::client::producer_config(&config.kafka).create()?;
        Ok(Sender { producer, pending: Vec::new() })
    }

    /// Queues a copy of `record` to `target` with `headers`; returns how many
    /// earlier sends it had to wait for (settled) to find room in the queue.
    async fn send(&mut self, record: &OwnedMessage, target: &str, headers: OwnedHeaders) -> Result<u64, ReplayError> {
        let out = future_record(target, record.key(), record.payload(), headers);
        let mut settled = 0;
        let queued = match self.producer.send_result(out) {
            Ok(queued) => queued,
            Err((_, out)) => {
                // The local queue is full: wait for what is queued, then try once more.
                settled = settle(&mut self.pending).await?;
                self.producer.send_result(out).map_err(|(e, _)| ReplayError::Kafka(e))?
            }
        };
        self.pending.push(queued);
        Ok(settled)
    }
}

async fn settle(pending: &mut Vec<DeliveryFuture>) -> Result<u64, ReplayError> {
    let mut done = 0;
    for sent in futures::future::join_all(pending.drain(..)).await {
        match sent {
            Ok(Ok(_)) => done += 1,
            Ok(Err((e, _))) => return Err(ReplayError::Kafka(e)),
            Err(_) => return Err(ReplayError::Cancelled),
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_or_ago() {
        assert_eq!(parse_time("2030-01-01T00:00:00Z", 0).ok(), Some(1_893_456_000_000));
        assert_eq!(parse_time("2h", 10_000_000).ok(), Some(10_000_000 - 7_200_000));
        assert!(parse_time("yesterday", 0).is_err());
    }

    #[test]
    fn the_filter_matches_on_every_field_it_sets() {
        use DeadReason::{Expired, Rejected};
        let all = Filter::default();
        let since = Filter { since_ms: Some(100), ..Filter::default() };
        let until = Filter { until_ms: Some(200), ..Filter::default() };
        let reason = Filter { reason: Some(Rejected), ..Filter::default() };
        let endpoint = Filter { endpoint: Some("billing".into()), ..Filter::default() };
        let both = Filter { reason: Some(Rejected), endpoint: Some("billing".into()), ..Filter::default() };
        let cases: &[(&Filter, i64, Option<DeadReason>, &str, bool)] = &[
            (&all, 0, None, "unknown", true),
            (&since, 99, None, "billing", false),
            (&since, 100, None, "billing", true),
            (&until, 199, None, "billing", true),
            (&until, 200, None, "billing", false),
            (&reason, 0, Some(Rejected), "billing", true),
            (&reason, 0, Some(Expired), "billing", false),
            (&reason, 0, None, "billing", false),
            (&endpoint, 0, None, "billing", true),
            (&endpoint, 0, None, "billings", false),
            (&both, 0, Some(Rejected), "billing", true),
            (&both, 0, Some(Rejected), "orders", false),
            (&both, 0, Some(Expired), "billing", false),
        ];
        for &(filter, at_ms, reason, endpoint, expected) in cases {
            assert_eq!(
                filter.matches(at_ms, reason, endpoint),
                expected,
                "{filter:?} at {at_ms} {reason:?} {endpoint}"
            );
        }
    }
}
