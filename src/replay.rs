//! `hookrelay replay`: copies dead records back to their event topic with a fresh deadline and the attempt count reset.
//!
//! The dead topic is a log and is never modified; replaying twice sends twice
//! (with the same `webhook-id`, so receivers can de-duplicate).

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use crate::config::Config;
use crate::consume::now_ms;
use crate::event::{header, last_header, Coordinates, Hop};

const TIMEOUT: Duration = Duration::from_secs(30);

/// Which dead records to replay.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Dead records written at or after this time (ms).
    pub since_ms: Option<i64>,
    /// Dead records written before this time (ms).
    pub until_ms: Option<i64>,
    pub reason: Option<String>,
    pub endpoint: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    pub scanned: u64,
    pub matched: u64,
    pub replayed: u64,
}

/// Parses `--since`/`--until`: an RFC 3339 time, or a duration meaning "that long ago" (`2h`).
pub fn parse_time(text: &str, now_ms: i64) -> Result<i64, String> {
    if let Ok(ms) = crate::event::parse_rfc3339_ms(text) {
        return Ok(ms);
    }
    humantime::parse_duration(text)
        .map(|ago| now_ms - ago.as_millis() as i64)
        .map_err(|_| format!("{text:?} is neither an RFC 3339 time nor a duration like 2h"))
}

/// Scans the dead topic up to its end at the start of the run; `progress` gets one line at a time.
pub async fn replay(
    config: &Config,
    filter: &Filter,
    dry_run: bool,
    mut progress: impl FnMut(&str),
) -> anyhow::Result<Summary> {
    let dead = config.topics.dead.clone();
    let mut consumer_config = crate::kafka::admin_config(&config.kafka);
    consumer_config
        .set("group.id", format!("{}.replay", config.kafka.group_id))
        .set("enable.auto.commit", "false")
        // Retention may delete the first records between the scan's start and the read.
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false");
    let consumer: BaseConsumer = consumer_config.create()?;
    let producer: FutureProducer = crate::kafka::producer_config(&config.kafka).create()?;

    // Where each partition starts and ends, fixed now so the scan terminates.
    let (assignment, ends) = tokio::task::block_in_place(|| -> anyhow::Result<_> {
        let metadata = consumer.fetch_metadata(Some(&dead), TIMEOUT)?;
        let topic = metadata.topics().first().ok_or_else(|| anyhow::anyhow!("no topic {dead}"))?;
        if topic.partitions().is_empty() {
            anyhow::bail!("topic {dead} does not exist");
        }
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
    while !remaining.is_empty() {
        let polled = tokio::task::block_in_place(|| consumer.poll(TIMEOUT).map(|r| r.map(|m| m.detach())));
        let record = match polled {
            Some(Ok(record)) => record,
            Some(Err(e)) => return Err(e.into()),
            None => {
                anyhow::bail!("no record from {dead} within {TIMEOUT:?}; {} partitions unfinished", remaining.len())
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
        let headers = crate::consume::headers_of(&record);
        let get = |name: &str| last_header(&headers, name).map(String::from);
        let at = record.timestamp().to_millis().unwrap_or(0);
        let matches = filter.since_ms.is_none_or(|s| at >= s)
            && filter.until_ms.is_none_or(|u| at < u)
            && filter.reason.as_ref().is_none_or(|r| get(header::REASON).as_ref() == Some(r))
            && filter.endpoint.as_ref().is_none_or(|e| get(header::ENDPOINT).as_ref() == Some(e));
        if !matches {
            continue;
        }
        summary.matched += 1;
        let here = Coordinates::of(&record);
        let hop = Hop::read(&headers, here.clone(), Some(at));
        let target =
            if config.topics.events.contains(&hop.origin.topic) { &hop.origin.topic } else { &config.topics.events[0] };
        let line = format!(
            "{} {}/{}/{} id={} endpoint={} reason={} -> {target}",
            if dry_run { "would replay" } else { "replay" },
            here.topic,
            here.partition,
            here.offset,
            crate::event::event_id(record.payload()).unwrap_or_else(|| hop.origin.default_id()),
            get(header::ENDPOINT).unwrap_or_default(),
            get(header::REASON).unwrap_or_default(),
        );
        progress(&line);
        if dry_run {
            continue;
        }
        let fresh = replay_headers(&headers, &hop, &here, deadline_ms);
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
                producer.send_result(out).map_err(|(e, _)| anyhow::anyhow!("replay produce failed: {e}"))?
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

async fn settle(pending: &mut Vec<rdkafka::producer::DeliveryFuture>) -> anyhow::Result<u64> {
    let mut done = 0;
    for sent in futures::future::join_all(pending.drain(..)).await {
        match sent {
            Ok(Ok(_)) => done += 1,
            Ok(Err((e, _))) => anyhow::bail!("replay produce failed: {e}"),
            Err(_) => anyhow::bail!("replay produce was cancelled"),
        }
    }
    Ok(done)
}

/// The headers of a replayed record: the original non-relay ones, the origin,
/// a fresh deadline, no attempt count, and where it was replayed from.
fn replay_headers(original: &[(String, Vec<u8>)], hop: &Hop, dead: &Coordinates, deadline_ms: i64) -> OwnedHeaders {
    use rdkafka::message::Header;
    let mut out = OwnedHeaders::new();
    for (key, value) in original.iter().filter(|(k, _)| !k.starts_with(header::PREFIX)) {
        out = out.insert(Header { key, value: Some(value) });
    }
    let origin_partition = hop.origin.partition.to_string();
    let origin_offset = hop.origin.offset.to_string();
    let deadline = deadline_ms.to_string();
    let from = format!("{}/{}/{}", dead.topic, dead.partition, dead.offset);
    let event_ms = hop.event_ms.map(|ms| ms.to_string());
    if let Some(ms) = &event_ms {
        // The end-to-end latency of a replayed delivery still counts from the original event.
        out = out.insert(Header { key: header::EVENT_MS, value: Some(ms.as_str()) });
    }
    let fields = [
        (header::ORIGIN_TOPIC, hop.origin.topic.as_str()),
        (header::ORIGIN_PARTITION, origin_partition.as_str()),
        (header::ORIGIN_OFFSET, origin_offset.as_str()),
        (header::DEADLINE_MS, deadline.as_str()),
        (header::REPLAYED_FROM, from.as_str()),
    ];
    for (key, value) in fields {
        out = out.insert(Header { key, value: Some(value) });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_or_ago() {
        assert_eq!(parse_time("2030-01-01T00:00:00Z", 0), Ok(1_893_456_000_000));
        assert_eq!(parse_time("2h", 10_000_000), Ok(10_000_000 - 7_200_000));
        assert!(parse_time("yesterday", 0).is_err());
    }
}
