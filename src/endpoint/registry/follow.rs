//! Reads the registry topic to its end (the high watermarks at start) with a
//! consumer of its own, without a group (every partition assigned: every
//! replica reads everything), then follows it, applying each record to the
//! shared [`Registry`]. Once a second it asks the brokers for the topic's end:
//! the view counts as fresh only while it reaches it ([`Registry::is_stale`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use super::record::{self, Change};
use super::{metrics, Effect, Registry, RegistryKey};
use crate::app::clock::now_ms;
use crate::config::{Config, Files, RegistryConfig};

/// How long one metadata or watermark request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the registry cannot be followed.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error(
        "the registry topic {topic} holds {records} record(s) but registry.key is not set: they cannot be verified"
    )]
    NoKey { topic: String, records: u64 },
    #[error("the registry topic {0} was not read to its end within {1:?}")]
    Slow(String, Duration),
}

/// What reading a stretch of the topic did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub applied: u64,
    pub refused: u64,
    /// Refused for want of `registry.key`.
    pub no_key: u64,
}

/// The consumer's context: librdkafka reports reaching a partition's end as
/// an error, which this reader asks for (`enable.partition.eof`): not logged.
pub struct Quiet;

impl rdkafka::ClientContext for Quiet {
    fn error(&self, error: KafkaError, reason: &str) {
        // librdkafka reports it as a global error too ("Global error: PartitionEOF"),
        // which `hookrelay send --endpoint` printed on every run (seen by the handbook's examples).
        let end = matches!(error, KafkaError::PartitionEOF(_))
            || matches!(error, KafkaError::Global(rdkafka::types::RDKafkaErrorCode::PartitionEOF));
        if !end {
            tracing::error!(%error, reason, "registry reader");
        }
    }
}

impl rdkafka::consumer::ConsumerContext for Quiet {}

/// Called with each applied change's name and effect (circuits, limits, clients).
pub type OnChange = Arc<dyn Fn(&str, Effect, Option<&super::Entry>) + Send + Sync>;

/// The registry's reader.
pub struct Follower {
    consumer: Arc<StreamConsumer<Quiet>>,
    topic: String,
    key: Option<RegistryKey>,
    config: RegistryConfig,
    /// Whether a record's TLS files are read (a replica) or not (`hookrelay endpoints`, elsewhere).
    files: Files,
    /// Next offset to apply, per partition.
    next: HashMap<i32, i64>,
    /// Partitions at their end since their last record (librdkafka's EOF: it sees past compacted gaps).
    at_end: HashMap<i32, bool>,
}

fn client(config: &Config) -> rdkafka::ClientConfig {
    let mut c = crate::config::client::admin_config(&config.kafka);
    // librdkafka's assign() needs a group.id, but this consumer never joins
    // nor commits (no subscribe, offsets assigned): the group is never used.
    let group = format!("hookrelay-registry-reader-{:016x}", rand::random::<u64>());
    c.set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("fetch.wait.max.ms", "100")
        // A small prefetch (the registry is read once whole, then a record now
        // and then), fetched again within 10 ms once taken, not librdkafka's 1 s.
        .set("queued.max.messages.kbytes", "4096")
        .set("fetch.queue.backoff.ms", "10")
        .set("auto.offset.reset", "earliest");
    c
}

/// Each partition of a topic with its low and high watermarks.
type Watermarks = Vec<(i32, i64, i64)>;

/// The partitions of `topic` with their low and high watermarks; `None` when it does not exist.
fn watermarks(consumer: &StreamConsumer<Quiet>, topic: &str) -> Result<Option<Watermarks>, KafkaError> {
    let metadata = consumer.fetch_metadata(Some(topic), REQUEST_TIMEOUT)?;
    let Some(meta) = metadata.topics().first().filter(|t| t.error().is_none() && !t.partitions().is_empty()) else {
        return Ok(None);
    };
    let mut out = Vec::new();
    for partition in meta.partitions() {
        let (low, high) = consumer.fetch_watermarks(topic, partition.id(), REQUEST_TIMEOUT)?;
        out.push((partition.id(), low, high));
    }
    Ok(Some(out))
}

/// The same, off the runtime's threads (librdkafka's calls block), with the reader's own client.
async fn watermarks_of(consumer: Arc<StreamConsumer<Quiet>>, topic: &str) -> Result<Option<Watermarks>, KafkaError> {
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || watermarks(&consumer, &topic))
        .await
        .unwrap_or_else(|e| Err(KafkaError::Canceled).inspect_err(|_| tracing::error!(error = %e, "watermark task")))
}

impl Follower {
    /// A reader of `topics.endpoints` from its start; `None` when the topic does not exist.
    pub async fn open(config: &Config, files: Files) -> Result<Option<Follower>, KafkaError> {
        let topic = config.topics.endpoints.clone();
        let consumer: Arc<StreamConsumer<Quiet>> = Arc::new(client(config).create_with_context(Quiet)?);
        let Some(partitions) = watermarks_of(consumer.clone(), &topic).await? else { return Ok(None) };
        let mut assignment = TopicPartitionList::new();
        for (partition, low, _) in &partitions {
            assignment.add_partition_offset(&topic, *partition, Offset::Offset(*low))?;
        }
        consumer.assign(&assignment)?;
        let key = config.registry.key_bytes().and_then(Result::ok).map(|bytes| RegistryKey::new(&bytes));
        Ok(Some(Follower {
            consumer,
            topic,
            key,
            config: config.registry.clone(),
            files,
            next: partitions.iter().map(|(p, low, _)| (*p, *low)).collect(),
            at_end: partitions.iter().map(|(p, low, high)| (*p, low >= high)).collect(),
        }))
    }

    /// Reads up to the topic's end as it is now (its high watermarks), within `within`.
    pub async fn catch_up(
        &mut self,
        registry: &Registry,
        on_change: &OnChange,
        within: Duration,
    ) -> Result<Counts, FollowError> {
        let ends = watermarks_of(self.consumer.clone(), &self.topic).await?.unwrap_or_default();
        let ends: HashMap<i32, i64> = ends.into_iter().map(|(p, _, high)| (p, high)).collect();
        let deadline = tokio::time::Instant::now() + within;
        let mut counts = Counts::default();
        let consumer = self.consumer.clone();
        while !self.reached(&ends) {
            let received = tokio::time::timeout_at(deadline, consumer.recv())
                .await
                .map_err(|_| FollowError::Slow(self.topic.clone(), within))?;
            self.take(received, registry, on_change, &mut counts)?;
        }
        registry.caught_up(now_ms());
        Ok(counts)
    }

    /// Every partition at or past `ends` (or at its end, compacted gaps included).
    fn reached(&self, ends: &HashMap<i32, i64>) -> bool {
        ends.iter().all(|(p, end)| self.next.get(p).is_some_and(|n| n >= end) || self.at_end.get(p) == Some(&true))
    }

    /// One message or event of the consumer.
    fn take(
        &mut self,
        received: Result<BorrowedMessage<'_>, KafkaError>,
        registry: &Registry,
        on_change: &OnChange,
        counts: &mut Counts,
    ) -> Result<(), KafkaError> {
        match received {
            Ok(message) => {
                self.apply(&message, registry, on_change, counts);
                Ok(())
            }
            Err(KafkaError::PartitionEOF(partition)) => {
                self.at_end.insert(partition, true);
                Ok(())
            }
            Err(error) => Err(error),
        }
    }

    fn apply(&mut self, message: &BorrowedMessage<'_>, registry: &Registry, on_change: &OnChange, counts: &mut Counts) {
        let (partition, offset) = (message.partition(), message.offset());
        self.next.insert(partition, offset + 1);
        self.at_end.insert(partition, false);
        metrics::position(partition, offset + 1);
        let header = |name: &str| {
            let headers = message.headers()?;
            headers.iter().find(|h| h.key == name).and_then(|h| h.value.map(<[u8]>::to_vec))
        };
        let name = String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned();
        let files = self.files;
        let decoded = record::decode(
            self.key.as_ref(),
            message.key().unwrap_or_default(),
            message.payload(),
            header,
            &self.config,
            files,
        );
        let (name, at_ms, change) = match decoded {
            Ok(decoded) => decoded,
            Err(why) => {
                counts.refused += 1;
                if matches!(why, record::Refused::NoKey) {
                    counts.no_key += 1;
                }
                return metrics::refused(&name, partition, offset, &why.to_string());
            }
        };
        let delete = matches!(change, Change::Delete);
        match registry.apply(&name, at_ms, change) {
            Effect::Refused => {
                counts.refused += 1;
                let why = "defined in the config file, or older than the applied record of this name (a replay)";
                metrics::refused(&name, partition, offset, why);
            }
            effect => {
                counts.applied += 1;
                metrics::applied(&name, partition, offset, registry.len(), delete);
                on_change(&name, effect, registry.get(&name).as_deref());
            }
        }
    }

    /// Follows the topic until `stop`, checking once a second that the view reaches the topic's end.
    pub async fn follow(mut self, registry: Arc<Registry>, on_change: OnChange, stop: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut counts = Counts::default();
        let consumer = self.consumer.clone();
        loop {
            tokio::select! {
                received = consumer.recv() => {
                    if let Err(error) = self.take(received, &registry, &on_change, &mut counts) {
                        tracing::warn!(%error, topic = self.topic, "registry read failed; retrying");
                    }
                }
                _ = tick.tick() => self.check_end(&registry).await,
                _ = stop.cancelled() => return,
            }
        }
    }

    async fn check_end(&self, registry: &Registry) {
        let asked = now_ms();
        match watermarks_of(self.consumer.clone(), &self.topic).await {
            Ok(Some(ends)) => {
                let ends = ends.into_iter().map(|(p, _, high)| (p, high)).collect();
                if self.reached(&ends) {
                    registry.caught_up(asked);
                }
                registry.set_up(true);
                metrics::up(true);
            }
            Ok(None) | Err(_) => {
                registry.set_up(false);
                metrics::up(false);
            }
        }
    }
}

/// Reads the registry to its end before anything consumes, then follows it
/// in the background until `stop`. A topic that is missing or cannot be read
/// is an empty registry with a warning (`hookrelay_registry_up 0`); records
/// that cannot be verified for want of `registry.key` refuse the start.
pub async fn start(
    config: &Config,
    registry: &Arc<Registry>,
    on_change: OnChange,
    stop: CancellationToken,
) -> Result<(), FollowError> {
    metrics::init(config.endpoints.len());
    let opened = match Follower::open(config, Files::Check).await {
        Ok(Some(follower)) => Some(follower),
        Ok(None) => {
            tracing::warn!(topic = config.topics.endpoints, "the registry topic does not exist: empty registry");
            None
        }
        Err(error) => {
            tracing::warn!(topic = config.topics.endpoints, %error, "cannot read the registry topic: empty registry");
            None
        }
    };
    let Some(mut follower) = opened else {
        // Fresh by definition: there is nothing to be behind. A topic created later is not followed until a restart.
        registry.set_up(false);
        metrics::up(false);
        registry.caught_up(now_ms());
        spawn_freshness(registry.clone(), stop);
        return Ok(());
    };
    let started = std::time::Instant::now();
    let within = config.registry.max_lag.max(Duration::from_secs(30));
    let counts = follower.catch_up(registry, &on_change, within).await?;
    if counts.no_key > 0 {
        return Err(FollowError::NoKey { topic: follower.topic.clone(), records: counts.no_key });
    }
    tracing::info!(
        topic = follower.topic,
        endpoints = registry.len(),
        applied = counts.applied,
        refused = counts.refused,
        ms = started.elapsed().as_millis() as u64,
        "registry read to its end"
    );
    registry.set_up(true);
    metrics::up(true);
    tokio::spawn(follower.follow(registry.clone(), on_change, stop));
    Ok(())
}

/// Without a topic, the empty view stays fresh.
fn spawn_freshness(registry: Arc<Registry>, stop: CancellationToken) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = tick.tick() => registry.caught_up(now_ms()),
                _ = stop.cancelled() => return,
            }
        }
    });
}
