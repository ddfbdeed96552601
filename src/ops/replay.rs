//! `hookrelay replay`: copies dead records back to their event topic with a fresh deadline and the attempt count reset.
//!
//! The dead topic is a log and is never modified; replaying twice sends twice
//! (with the same `webhook-id`, so receivers can de-duplicate).

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use crate::app::clock::{now_ms, parse_rfc3339_ms};
use crate::config::Config;
use crate::event::hop::{replay_headers, DeadLetter};
use crate::event::seal::ReplayKey;
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

/// Scans the dead topic up to its end at the start of the run; `progress` gets one line at a time.
pub async fn replay(
    config: &Config,
    filter: &Filter,
    dry_run: bool,
    mut progress: impl FnMut(&str),
) -> Result<Summary, ReplayError> {
    let dead = config.topics.dead.clone();
    let mut consumer_config = crate::config::client::admin_config(&config.kafka);
    consumer_config
        .set("group.id", format!("{}.replay", config.kafka.group_id))
        .set("enable.auto.commit", "false")
        // Retention may delete the first records between the scan's start and the read.
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false");
    let consumer: BaseConsumer = consumer_config.create()?;
    let producer: FutureProducer = crate::config::client::producer_config(&config.kafka).create()?;

    // Where each partition starts and ends, fixed now so the scan terminates.
    let (assignment, ends) = tokio::task::block_in_place(|| -> Result<_, ReplayError> {
        let metadata = consumer.fetch_metadata(Some(&dead), TIMEOUT)?;
        let topic = metadata.topics().first().filter(|t| !t.partitions().is_empty());
        let topic = topic.ok_or_else(|| ReplayError::NoTopic(dead.clone()))?;
        let mut starts = TopicPartitionList::new();
        let mut ends = std::collections::HashMap::new();
        for p in topic.partitions() {
            let (low, high) = consumer.fetch_watermarks(&dead, p.id(), TIMEOUT)?;
            if high > low {
                starts.add_partition_offset(&dead, p.id(), Offset::Offset(low))?;
                ends.insert(p.id(), high);
            }
        }
        if let Some(since) = filter.since_ms {
            let mut times = TopicPartitionList::new();
            for p in ends.keys() {
                times.add_partition_offset(&dead, *p, Offset::Offset(since))?;
            }
            for e in consumer.offsets_for_times(times, TIMEOUT)?.elements() {
                let end = ends.get(&e.partition()).copied().unwrap_or(0);
                match e.offset() {
                    Offset::Offset(o) if o < end => {
                        starts.set_partition_offset(&dead, e.partition(), Offset::Offset(o))?
                    }
                    // No record at or after `since` in this partition before the
                    // scan's end (one written since would keep the scan waiting).
                    _ => {
                        ends.remove(&e.partition());
                    }
                }
            }
        }
        let mut assignment = TopicPartitionList::new();
        for e in starts.elements() {
            if ends.contains_key(&e.partition()) {
                assignment.add_partition_offset(&dead, e.partition(), e.offset())?;
            }
        }
        Ok((assignment, ends))
    })?;
    consumer.assign(&assignment)?;
    let mut remaining = ends.clone();

    let mut summary = Summary::default();
    let mut pending = Vec::new();
    let deadline_ms = now_ms() + config.retry.max_age.as_millis() as i64;
    let key = config.replay.key.as_ref().map(|key| ReplayKey::new(key.expose()));
    if key.is_none() && !dry_run {
        progress(
            "note: replay.key is not set, so the relay will not believe the replayed records' origin and deadline: \
             events without an id get new default ids (receivers will not de-duplicate them against the first \
             delivery) and their deadline starts again from retry_until or retry.max_age",
        );
    }
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
        let dead_letter = DeadLetter::read(&record);
        let at = dead_letter.at_ms.unwrap_or(0);
        let matches = filter.since_ms.is_none_or(|s| at >= s)
            && filter.until_ms.is_none_or(|u| at < u)
            && filter.reason.is_none_or(|r| dead_letter.reason == Some(r))
            && filter.endpoint.as_ref().is_none_or(|e| &dead_letter.endpoint == e);
        if !matches {
            continue;
        }
        summary.matched += 1;
        let DeadLetter { here, hop, id, endpoint, reason, headers, last_status, last_error, .. } = dead_letter;
        let target =
            if config.topics.events.contains(&hop.origin.topic) { &hop.origin.topic } else { &config.topics.events[0] };
        // Reason, status and error: what an operator checks before moving anything.
        let line = format!(
            "{} {}/{}/{} id={id} endpoint={endpoint} reason={} status={} error={:?} -> {target}",
            if dry_run { "would replay" } else { "replay" },
            here.topic,
            here.partition,
            here.offset,
            reason.map_or("", DeadReason::as_str),
            last_status.map_or_else(|| "-".to_string(), |s| s.to_string()),
            last_error.as_deref().unwrap_or(""),
        );
        progress(&line);
        if dry_run {
            continue;
        }
        let fresh =
            replay_headers(&headers, &hop, &here, deadline_ms, record.payload().unwrap_or_default(), key.as_ref());
        let mut out = FutureRecord::<[u8], [u8]>::to(target).headers(fresh);
        if let Some(key) = record.key() {
            out = out.key(key);
        }
        if let Some(value) = record.payload() {
            out = out.payload(value);
        }
        let queued = match producer.send_result(out) {
            Ok(queued) => queued,
            Err((_, out)) => {
                // The local queue is full: wait for what is queued, then try once more.
                summary.replayed += settle(&mut pending).await?;
                producer.send_result(out).map_err(|(e, _)| ReplayError::Kafka(e))?
            }
        };
        pending.push(queued);
        if pending.len() >= 500 {
            summary.replayed += settle(&mut pending).await?;
            progress(&format!("progress: scanned {}, replayed {}", summary.scanned, summary.replayed));
        }
    }
    summary.replayed += settle(&mut pending).await?;
    Ok(summary)
}

async fn settle(pending: &mut Vec<rdkafka::producer::DeliveryFuture>) -> Result<u64, ReplayError> {
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
}
