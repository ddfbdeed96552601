//! `hookrelay trace ID`: every attempt-log record of one event since a time, oldest first, read from the one partition its id maps to.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::app::clock::rfc3339;
use crate::config::Config;
use crate::observe::attempts::{partition_of, Logged, Read};

/// Longest wait for the broker on one call (metadata, offsets, one poll).
const TIMEOUT: Duration = Duration::from_secs(15);

/// Progress shows on a terminal once reading takes longer than this.
const QUIET_FOR: Duration = Duration::from_secs(3);

/// Why `trace` could not read the log.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// A configuration matter: the CLI exits 64.
    #[error("the attempt log is off (topics.attempts = \"\"): nothing to trace")]
    Off,
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("the attempt log topic {0} does not exist (hookrelay topics ensure creates it)")]
    NoTopic(String),
    #[error("reading {topic} partition {partition} stalled at offset {at} of {end} for {waited:?}")]
    Stalled { topic: String, partition: i32, at: i64, end: i64, waited: Duration },
}

/// One record of the event, as read, with the JSON as written (for `--json`).
#[derive(Debug, Clone)]
pub struct Found {
    pub record: Read,
    pub json: String,
}

/// Every record of `id` in the attempt log written at or after `since_ms`,
/// oldest first: reads the partition the id's key maps to, from the first
/// offset at `since_ms` to the end it had when the read began.
pub async fn find(config: &Config, id: &str, since_ms: i64) -> Result<Vec<Found>, TraceError> {
    if config.topics.attempts.is_empty() {
        return Err(TraceError::Off);
    }
    let (config, id) = (config.clone(), id.to_string());
    tokio::task::spawn_blocking(move || read_partition(&config, &id, since_ms))
        .await
        .unwrap_or_else(|panicked| std::panic::resume_unwind(panicked.into_panic()))
}

fn read_partition(config: &Config, id: &str, since_ms: i64) -> Result<Vec<Found>, TraceError> {
    let topic = config.topics.attempts.as_str();
    let mut consumer_config = crate::config::client::admin_config(&config.kafka);
    consumer_config
        .set("group.id", format!("{}.trace", config.kafka.group_id))
        .set("enable.auto.commit", "false")
        // Retention may delete the first records between the seek and the read.
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false");
    let consumer: BaseConsumer = consumer_config.create()?;
    let metadata = consumer.fetch_metadata(Some(topic), TIMEOUT)?;
    let partitions = metadata.topics().first().map_or(0, |t| t.partitions().len()) as i32;
    if partitions == 0 {
        return Err(TraceError::NoTopic(topic.to_string()));
    }
    let partition = partition_of(id.as_bytes(), partitions);
    let (_, end) = consumer.fetch_watermarks(topic, partition, TIMEOUT)?;
    let mut times = TopicPartitionList::new();
    times.add_partition_offset(topic, partition, Offset::Offset(since_ms))?;
    let start = consumer.offsets_for_times(times, TIMEOUT)?.elements().first().map(|e| e.offset());
    let start = match start {
        Some(Offset::Offset(start)) if start < end => start,
        // Nothing written at or after `since_ms` before the end.
        _ => return Ok(Vec::new()),
    };
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(topic, partition, Offset::Offset(start))?;
    consumer.assign(&assignment)?;
    let mut progress = Progress::new(end - start);
    let (mut found, mut at) = (Vec::new(), start);
    while at < end {
        let message = match consumer.poll(TIMEOUT) {
            Some(message) => message?,
            None => {
                let waited = TIMEOUT;
                return Err(TraceError::Stalled { topic: topic.to_string(), partition, at, end, waited });
            }
        };
        at = message.offset() + 1;
        progress.at(at - start);
        if message.key() != Some(id.as_bytes()) {
            continue;
        }
        let json = String::from_utf8_lossy(message.payload().unwrap_or_default()).into_owned();
        // Another writer's record under the same key is not ours to print.
        if let Ok(record) = serde_json::from_str::<Read>(&json) {
            found.push(Found { record, json });
        }
    }
    progress.done();
    Ok(found)
}

/// "read N of M records" on stderr, when it is a terminal and the read is slow.
struct Progress {
    total: i64,
    started: Instant,
    shown: Option<Instant>,
    terminal: bool,
}

impl Progress {
    fn new(total: i64) -> Progress {
        Progress { total, started: Instant::now(), shown: None, terminal: std::io::stderr().is_terminal() }
    }

    fn at(&mut self, read: i64) {
        let due = match self.shown {
            None => self.started.elapsed() >= QUIET_FOR,
            Some(shown) => shown.elapsed() >= Duration::from_secs(1),
        };
        if self.terminal && due {
            eprint!("\rread {read} of {} records", self.total);
            let _ = std::io::stderr().flush();
            self.shown = Some(Instant::now());
        }
    }

    fn done(&self) {
        if self.shown.is_some() {
            eprintln!("\rread {} of {} records", self.total, self.total);
        }
    }
}

/// The timeline as text: one line per record, then, for a dead event, where
/// its dead letter is and how to replay it.
pub fn lines(found: &[Found]) -> Vec<String> {
    let mut out: Vec<String> = found.iter().map(|f| line(&f.record)).collect();
    if let Some(dead) = found.iter().rev().map(|f| &f.record).find(|r| r.outcome == Logged::Dead) {
        out.extend(dead_letter(dead));
    }
    out
}

/// `time  endpoint  attempt  outcome  status  duration  details`.
fn line(r: &Read) -> String {
    let status = r.status.map_or("-".to_string(), |s| s.to_string());
    let duration = r.duration_ms.map_or("-".to_string(), |ms| format!("{ms}ms"));
    let mut details = Vec::new();
    let fields = [("tier", &r.tier), ("reason", &r.reason), ("to", &r.to), ("error", &r.error)];
    for (name, value) in fields {
        if let Some(value) = value {
            details.push(if name == "error" { format!("{name}={value:?}") } else { format!("{name}={value}") });
        }
    }
    format!(
        "{}  {}  attempt {}  {:<9}  {:>3}  {:>7}  {}",
        r.at,
        r.endpoint,
        r.attempt,
        r.outcome.as_str(),
        status,
        duration,
        details.join(" ")
    )
    .trim_end()
    .to_string()
}

/// Where a dead event's dead letter is, and the replay that re-drives it:
/// a narrow window around its time, listed first with `--dry-run`.
fn dead_letter(dead: &Read) -> Vec<String> {
    let mut out = vec![format!(
        "dead letter: {} (reason {})",
        dead.to.as_deref().unwrap_or("not acknowledged"),
        dead.reason.as_deref().unwrap_or("unknown")
    )];
    if let Ok(at) = crate::app::clock::parse_rfc3339_ms(&dead.at) {
        // The dead letter's own timestamp is taken just before the log's `at`.
        let (since, until) = (rfc3339(at - 10_000), rfc3339(at + 1_000));
        let reason = dead.reason.as_deref().map(|r| format!(" --reason {r}")).unwrap_or_default();
        out.push(format!(
            "replay it: hookrelay replay --endpoint {}{reason} --since {since} --until {until} --dry-run \
             (check that it lists id={}, then run it without --dry-run)",
            dead.endpoint, dead.id
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(outcome: Logged, attempt: u32, status: Option<u16>) -> Read {
        Read {
            id: "evt-1".into(),
            endpoint: "billing".into(),
            attempt,
            at: "2026-12-04T18:30:00.120Z".into(),
            outcome,
            status,
            duration_ms: status.map(|_| 12),
            error: None,
            tier: None,
            reason: None,
            record: Some("webhooks.events/0/3".into()),
            to: None,
            relay: "r".into(),
        }
    }

    #[test]
    fn a_timeline_line_per_record_and_the_dead_letter_last() {
        let retry = Read {
            tier: Some("webhooks.retry-1m".into()),
            to: Some("webhooks.retry-1m/0/9".into()),
            error: Some("HTTP 503".into()),
            ..read(Logged::Retry, 1, Some(503))
        };
        let dead = Read {
            reason: Some("rejected".into()),
            to: Some("webhooks.dead/0/4".into()),
            ..read(Logged::Dead, 2, Some(410))
        };
        let found: Vec<Found> = [retry, dead].into_iter().map(|record| Found { json: String::new(), record }).collect();
        let text = lines(&found);
        assert_eq!(
            text[0],
            "2026-12-04T18:30:00.120Z  billing  attempt 1  retry      503     12ms  tier=webhooks.retry-1m \
             to=webhooks.retry-1m/0/9 error=\"HTTP 503\""
        );
        assert!(text[1].contains("dead") && text[1].contains("reason=rejected"), "{}", text[1]);
        assert_eq!(text[2], "dead letter: webhooks.dead/0/4 (reason rejected)");
        assert!(
            text[3].starts_with(
                "replay it: hookrelay replay --endpoint billing --reason rejected \
                 --since 2026-12-04T18:29:50.120Z --until 2026-12-04T18:30:01.120Z --dry-run"
            ),
            "{}",
            text[3]
        );
        assert_eq!(text.len(), 4);
    }
}
