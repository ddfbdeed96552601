//! The bench's Kafka side: topics, producing the events, and reading ids back
//! (dead letters, tier records, the unconsumed rest of the events topic) for the ledger.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Headers, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use serde::Deserialize;

/// The topics of one scenario.
#[derive(Debug, Clone)]
pub struct Topics {
    pub events: String,
    pub tiers: Vec<(String, &'static str)>,
    pub dead: String,
    pub group: String,
    /// The endpoint registry (S11), compacted; made only when a scenario has one.
    pub registry: String,
}

/// The registry key of S11's relay (32 bytes, base64).
pub const REGISTRY_KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

impl Topics {
    pub fn named(base: &str) -> Topics {
        Topics {
            events: format!("{base}.events"),
            tiers: vec![(format!("{base}.retry-1s"), "1s"), (format!("{base}.retry-2s"), "2s")],
            dead: format!("{base}.dead"),
            group: format!("{base}.group"),
            registry: format!("{base}.endpoints"),
        }
    }

    pub fn all(&self) -> Vec<String> {
        let mut names = vec![self.events.clone(), self.dead.clone()];
        names.extend(self.tiers.iter().map(|(t, _)| t.clone()));
        names
    }
}

fn admin(bootstrap: &str) -> anyhow::Result<AdminClient<DefaultClientContext>> {
    Ok(ClientConfig::new().set("bootstrap.servers", bootstrap).create()?)
}

pub async fn create_topics(bootstrap: &str, names: &[String], partitions: i32) -> anyhow::Result<()> {
    let new: Vec<NewTopic<'_>> =
        names.iter().map(|n| NewTopic::new(n, partitions, TopicReplication::Fixed(1))).collect();
    for result in admin(bootstrap)?.create_topics(&new, &AdminOptions::new()).await? {
        result.map_err(|(topic, e)| anyhow::anyhow!("create topic {topic}: {e}"))?;
    }
    Ok(())
}

/// Deletes the scenario's topics: a 200,000-event backlog is not left on a shared broker.
pub async fn delete_topics(bootstrap: &str, names: &[String]) {
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    if let Ok(admin) = admin(bootstrap) {
        let _ = admin.delete_topics(&refs, &AdminOptions::new()).await;
    }
}

/// Makes the compacted registry topic and writes `count` endpoints to it, `t0`,
/// `t1`, ... each to `url` with a secret and a header, as `hookrelay endpoints
/// put` would (sealed with [`REGISTRY_KEY`]).
pub async fn write_registry(bootstrap: &str, topic: &str, count: usize, url: &str) -> anyhow::Result<()> {
    use base64::Engine;
    use hookrelay::endpoint::registry::{record, RegistryKey};
    let compact = NewTopic::new(topic, 1, TopicReplication::Fixed(1)).set("cleanup.policy", "compact");
    for result in admin(bootstrap)?.create_topics([&compact], &AdminOptions::new()).await? {
        result.map_err(|(t, e)| anyhow::anyhow!("create {t}: {e}"))?;
    }
    let key = RegistryKey::new(&base64::engine::general_purpose::STANDARD.decode(REGISTRY_KEY)?);
    let producer: BaseProducer =
        ClientConfig::new().set("bootstrap.servers", bootstrap).set("linger.ms", "5").create()?;
    let at = crate::now_us() as i64 / 1000;
    for i in 0..count {
        let name = format!("t{i}");
        let spec = serde_json::json!({
            "url": url,
            "secrets": ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
            "headers": {"authorization": format!("Bearer token-{i}")},
        });
        let encoded = record::encode(&key, &name, Some(&spec), at);
        let mut headers = rdkafka::message::OwnedHeaders::new();
        for (header, value) in &encoded.headers {
            headers = headers.insert(rdkafka::message::Header { key: header, value: Some(value) });
        }
        let value = encoded.value.unwrap_or_default();
        send(&producer, BaseRecord::<str, [u8]>::to(topic).key(&name).payload(&value).headers(headers))?;
    }
    producer.flush(Duration::from_secs(60))?;
    Ok(())
}

/// Queues `record`, waiting (polling) while the producer's queue is full.
fn send<C, K, P>(producer: &BaseProducer<C>, mut record: BaseRecord<'_, K, P, C::DeliveryOpaque>) -> anyhow::Result<()>
where
    C: ProducerContext,
    K: rdkafka::message::ToBytes + ?Sized,
    P: rdkafka::message::ToBytes + ?Sized,
{
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                producer.poll(Duration::from_millis(10));
            }
            Err((e, _)) => anyhow::bail!("produce: {e}"),
        }
    }
}

/// Counts acknowledged and failed records.
#[derive(Default)]
struct Acks {
    ok: AtomicU64,
    failed: AtomicU64,
}

struct Counting(Arc<Acks>);

impl ClientContext for Counting {}
impl ProducerContext for Counting {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => self.0.ok.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.0.failed.fetch_add(1, Ordering::Relaxed),
        };
    }
}

/// What to produce: `count` events round-robin over `urls` and `partitions`.
pub struct Batch {
    pub bootstrap: String,
    pub topic: String,
    pub partitions: i32,
    pub count: u64,
    pub payload_bytes: usize,
    pub urls: Vec<String>,
    /// Events per second; None = as fast as the producer goes.
    pub rate: Option<f64>,
    /// Events with a `type` and no receiver: every subscribed endpoint gets each (S9).
    pub fanout: bool,
    /// Events naming registry endpoints `t0`..`t{n-1}` round-robin instead of a URL (S11).
    pub named: usize,
}

/// The `type` of the bench's fan-out events, which every endpoint of S9 subscribes to.
pub const FANOUT_TYPE: &str = "bench.event";

/// The event of number `i` that fans out (see [`event`]).
pub fn fanout_event(i: u64, scheduled_us: u64, pad: &str) -> String {
    format!(r#"{{"id":"e{i}","type":"{FANOUT_TYPE}","payload":{{"i":{i},"t":{scheduled_us},"pad":"{pad}"}}}}"#)
}

/// The deliveries a record of event `i` stands for: the event itself, or with
/// `legs` > 1 (a fan-out) the leg its `hookrelay-endpoint` names (`n<k>`),
/// or every leg when it names none (a record on the events topic).
pub fn deliveries(i: u64, endpoint: Option<&str>, legs: u64) -> Vec<u64> {
    if legs <= 1 {
        return vec![i];
    }
    match endpoint.and_then(|e| e.strip_prefix('n')?.parse::<u64>().ok()) {
        Some(leg) => vec![i * legs + leg],
        None => (0..legs).map(|leg| i * legs + leg).collect(),
    }
}

fn header(message: &impl Message, name: &str) -> Option<String> {
    message.headers().and_then(|h| {
        h.iter().filter(|h| h.key == name).last().and_then(|h| h.value).map(|v| String::from_utf8_lossy(v).into_owned())
    })
}

/// The event of number `i`: its payload says `i` and the scheduled produce time (µs).
pub fn event(i: u64, url: &str, scheduled_us: u64, pad: &str) -> String {
    format!(r#"{{"id":"e{i}","url":"{url}","payload":{{"i":{i},"t":{scheduled_us},"pad":"{pad}"}}}}"#)
}

/// The event of number `i` to the named endpoint `endpoint` (see [`event`]).
pub fn named_event(i: u64, endpoint: &str, scheduled_us: u64, pad: &str) -> String {
    format!(r#"{{"id":"e{i}","endpoint":"{endpoint}","payload":{{"i":{i},"t":{scheduled_us},"pad":"{pad}"}}}}"#)
}

/// Produces the batch (blocking); returns (acknowledged, failed, seconds taken).
pub fn produce(batch: &Batch) -> anyhow::Result<(u64, u64, f64)> {
    let acks = Arc::new(Acks::default());
    let producer: BaseProducer<Counting> = ClientConfig::new()
        .set("bootstrap.servers", &batch.bootstrap)
        .set("linger.ms", "5")
        .set("message.max.bytes", "2000000")
        .create_with_context(Counting(acks.clone()))?;
    // The payload's fixed part is about 40 bytes; the pad makes up the rest.
    let pad = "x".repeat(batch.payload_bytes.saturating_sub(40).max(1));
    let started = Instant::now();
    let t0 = crate::now_us();
    for i in 0..batch.count {
        let scheduled_us = match batch.rate {
            Some(rate) => {
                let due = Duration::from_secs_f64(i as f64 / rate);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    if wait > Duration::from_millis(1) {
                        producer.poll(Duration::ZERO);
                        std::thread::sleep(wait);
                    }
                }
                t0 + due.as_micros() as u64
            }
            None => crate::now_us(),
        };
        let url = &batch.urls[(i % batch.urls.len() as u64) as usize];
        let value = if batch.fanout {
            fanout_event(i, scheduled_us, &pad)
        } else if batch.named > 0 {
            named_event(i, &format!("t{}", i % batch.named as u64), scheduled_us, &pad)
        } else {
            event(i, url, scheduled_us, &pad)
        };
        let partition = (i % batch.partitions as u64) as i32;
        send(&producer, BaseRecord::<(), str>::to(&batch.topic).payload(&value).partition(partition))?;
        if i % 1000 == 0 {
            producer.poll(Duration::ZERO);
        }
    }
    producer.flush(Duration::from_secs(120))?;
    let ok = acks.ok.load(Ordering::Relaxed);
    Ok((ok, acks.failed.load(Ordering::Relaxed), started.elapsed().as_secs_f64()))
}

#[derive(Deserialize)]
struct IdOnly<'a> {
    #[serde(borrow)]
    id: Option<&'a str>,
}

/// The event number in a record value written by [`event`] (tier and dead records keep it byte for byte).
pub fn event_number(value: &[u8]) -> Option<u64> {
    serde_json::from_slice::<IdOnly<'_>>(value).ok()?.id?.strip_prefix('e')?.parse().ok()
}

fn reader(bootstrap: &str, group: &str) -> anyhow::Result<BaseConsumer> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()?)
}

fn partitions(consumer: &BaseConsumer, topic: &str) -> anyhow::Result<Vec<i32>> {
    let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    Ok(md.topics().iter().flat_map(|t| t.partitions().iter().map(|p| p.id())).collect())
}

/// The group's committed offset per partition (None = nothing committed: from the start).
pub fn committed(bootstrap: &str, group: &str, topic: &str) -> anyhow::Result<HashMap<i32, Option<i64>>> {
    let consumer = reader(bootstrap, group)?;
    let mut tpl = TopicPartitionList::new();
    for p in partitions(&consumer, topic)? {
        tpl.add_partition(topic, p);
    }
    let committed = consumer.committed_offsets(tpl, Duration::from_secs(10))?;
    Ok(committed
        .elements()
        .iter()
        .map(|e| (e.partition(), if let Offset::Offset(o) = e.offset() { Some(o) } else { None }))
        .collect())
}

/// One record read back: the event number (None if unreadable), the `hookrelay-reason` and `hookrelay-endpoint` headers.
pub struct ReadBack {
    pub id: Option<u64>,
    pub reason: Option<String>,
    pub endpoint: Option<String>,
}

/// Reads `topic` from `from` (per partition; absent = the start) up to the high watermarks at call time.
pub fn read_ids(bootstrap: &str, topic: &str, from: &HashMap<i32, Option<i64>>) -> anyhow::Result<Vec<ReadBack>> {
    let consumer = reader(bootstrap, &format!("bench-reader-{}", rand::random::<u32>()))?;
    let mut tpl = TopicPartitionList::new();
    let mut remaining = 0i64;
    let mut ends = HashMap::new();
    for p in partitions(&consumer, topic)? {
        let (low, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10))?;
        let start = from.get(&p).copied().flatten().unwrap_or(low).max(low);
        if start < high {
            tpl.add_partition_offset(topic, p, Offset::Offset(start))?;
            remaining += high - start;
            ends.insert(p, high);
        }
    }
    let mut out = Vec::new();
    if remaining == 0 {
        return Ok(out);
    }
    consumer.assign(&tpl)?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while remaining > 0 && Instant::now() < deadline {
        let Some(message) = consumer.poll(Duration::from_millis(500)) else { continue };
        let message = message?;
        if message.offset() >= ends.get(&message.partition()).copied().unwrap_or(0) {
            continue;
        }
        remaining -= 1;
        let (reason, endpoint) = (header(&message, "hookrelay-reason"), header(&message, "hookrelay-endpoint"));
        out.push(ReadBack { id: message.payload().and_then(event_number), reason, endpoint });
    }
    anyhow::ensure!(remaining == 0, "{topic}: {remaining} records not read back in 120 s");
    Ok(out)
}

/// Follows the dead topic during a run, so the driver knows when every event is decided.
pub struct DeadWatch {
    pub ids: Arc<Mutex<std::collections::HashSet<u64>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl DeadWatch {
    /// `legs` as in [`deliveries`]: the ids it collects are deliveries.
    pub fn start(bootstrap: &str, topic: &str, legs: u64) -> anyhow::Result<DeadWatch> {
        let consumer = reader(bootstrap, &format!("bench-dead-{}", rand::random::<u32>()))?;
        let mut tpl = TopicPartitionList::new();
        for p in partitions(&consumer, topic)? {
            tpl.add_partition_offset(topic, p, Offset::Beginning)?;
        }
        consumer.assign(&tpl)?;
        let ids = Arc::new(Mutex::new(std::collections::HashSet::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (ids2, stop2) = (ids.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
                    if let Some(id) = m.payload().and_then(event_number) {
                        let endpoint = header(&m, "hookrelay-endpoint");
                        ids2.lock().unwrap().extend(deliveries(id, endpoint.as_deref(), legs));
                    }
                }
            }
        });
        Ok(DeadWatch { ids, stop, thread: Some(thread) })
    }
}

impl Drop for DeadWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fan_out_record_stands_for_its_leg_or_all_its_legs() {
        assert_eq!(deliveries(7, Some("n3"), 1), [7], "no fan-out: the event");
        assert_eq!(deliveries(7, Some("n3"), 10), [73], "a tier or dead record: the leg it names");
        assert_eq!(deliveries(7, None, 3), [21, 22, 23], "an event record: every leg");
        assert_eq!(deliveries(7, Some("invalid"), 2), [14, 15]);
        let value = fanout_event(7, 1, "x");
        assert_eq!(event_number(value.as_bytes()), Some(7));
        assert!(value.contains(&format!(r#""type":"{FANOUT_TYPE}""#)) && !value.contains("\"url\""));
    }
}
