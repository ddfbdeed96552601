//! `hookrelay topics ensure` (create or check every topic) and `hookrelay send` (produce one event).

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::util::Timeout;

use crate::config::Config;

const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Why `topics ensure` or `send` failed.
#[derive(Debug, thiserror::Error)]
pub enum TopicsError {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("cannot create topic {0}: {1}")]
    Create(String, RDKafkaErrorCode),
    #[error("cannot produce to {0}: {1}")]
    Produce(String, rdkafka::error::KafkaError),
    /// The registry must keep every endpoint's last record: exit 64.
    #[error("topic {0} is not compacted (cleanup.policy={1}); the endpoint registry needs cleanup.policy=compact")]
    NotCompacted(String, String),
}

/// One topic the relay needs, with its settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub name: String,
    pub retention_ms: u128,
    /// Stored compressed whatever the producer sent (`compression.type`), or as sent.
    pub compression: Option<&'static str>,
}

/// Every topic of the config: events, tiers, dead, and the attempt log unless it is off.
pub fn wanted(config: &Config) -> Vec<Wanted> {
    let t = &config.topics;
    let retention_ms = t.retention.as_millis();
    let topic = |name: &String, retention_ms| Wanted { name: name.clone(), retention_ms, compression: None };
    let mut out: Vec<Wanted> = t.events.iter().map(|name| topic(name, retention_ms)).collect();
    // A tier must keep a record at least as long as the record may wait in it.
    for tier in &config.retry.tiers {
        out.push(topic(&tier.topic, retention_ms.max(tier.delay.as_millis() * 2)));
    }
    out.push(topic(&t.dead, t.dead_retention.as_millis()));
    if !t.attempts.is_empty() {
        // The attempt log: 7 days, stored compressed.
        let retention_ms = crate::observe::attempts::RETENTION.as_millis();
        out.push(Wanted {
            name: t.attempts.clone(),
            retention_ms,
            compression: Some(crate::observe::attempts::COMPRESSION),
        });
    }
    out
}

/// Creates missing topics and reports existing ones. Returns one line per topic.
pub async fn ensure(config: &Config) -> Result<Vec<String>, TopicsError> {
    let admin: AdminClient<DefaultClientContext> = crate::config::client::admin_config(&config.kafka).create()?;
    let wanted = wanted(config);
    let retention: Vec<String> = wanted.iter().map(|w| w.retention_ms.to_string()).collect();
    let replication = config.topics.replication_factor;
    let new: Vec<NewTopic<'_>> = wanted
        .iter()
        .zip(&retention)
        .map(|(w, retention)| {
            let topic = NewTopic::new(&w.name, config.topics.partitions, TopicReplication::Fixed(replication))
                .set("retention.ms", retention);
            match w.compression {
                Some(codec) => topic.set("compression.type", codec),
                None => topic,
            }
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Timeout::After(ADMIN_TIMEOUT)));
    let results = admin.create_topics(&new, &options).await?;
    let metadata_client: BaseConsumer = crate::config::client::admin_config(&config.kafka).create()?;
    let mut lines = Vec::new();
    for result in results {
        match result {
            Ok(name) => lines.push(format!("created {name} ({} partitions)", config.topics.partitions)),
            Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => {
                let partitions = tokio::task::block_in_place(|| {
                    metadata_client
                        .fetch_metadata(Some(&name), ADMIN_TIMEOUT)
                        .map(|m| m.topics().first().map_or(0, |t| t.partitions().len()))
                })?;
                lines.push(format!("exists  {name} ({partitions} partitions)"));
            }
            Err((name, code)) => return Err(TopicsError::Create(name, code)),
        }
    }
    lines.extend(ensure_registry_topic(config).await?);
    Ok(lines)
}

/// What `hookrelay send` targets.
pub enum Target {
    Url(String),
    Endpoint(String),
}

/// Why `send`'s arguments make no valid event; the CLI exits 64 before it contacts Kafka.
#[derive(Debug, thiserror::Error)]
pub enum SendUsage {
    #[error("--payload is not JSON: {0}")]
    Payload(serde_json::Error),
    /// The relay would dead-letter it as `invalid_event`: refuse it here instead.
    #[error("the event would be invalid: {0}")]
    Invalid(#[from] crate::event::InvalidEvent),
}

/// The record value `send` produces, checked as the relay will decode it.
/// `registry`: the endpoint registry as read now, for registry names.
pub fn event_value(
    config: &Config,
    registry: Option<std::sync::Arc<crate::endpoint::registry::Registry>>,
    target: Target,
    payload: &str,
    id: Option<&str>,
) -> Result<Vec<u8>, SendUsage> {
    let payload: serde_json::Value = serde_json::from_str(payload).map_err(SendUsage::Payload)?;
    let mut event = serde_json::json!({ "payload": payload });
    match target {
        Target::Url(url) => event["url"] = url.into(),
        Target::Endpoint(name) => event["endpoint"] = name.into(),
    }
    if let Some(id) = id {
        event["id"] = id.into();
    }
    let value = event.to_string().into_bytes();
    crate::event::Endpoints::new(config).with_registry(registry).decode(&value, || "send".to_string())?;
    Ok(value)
}

/// Produces one event value (from [`event_value`]) to the first event topic; returns where it landed.
pub async fn send(config: &Config, value: &[u8], key: Option<&str>) -> Result<String, TopicsError> {
    let topic = &config.topics.events[0];
    let producer: FutureProducer = crate::config::client::producer_config(&config.kafka).create()?;
    let mut record = FutureRecord::<str, [u8]>::to(topic).payload(value);
    if let Some(key) = key {
        record = record.key(key);
    }
    let delivery = producer
        .send(record, Timeout::After(ADMIN_TIMEOUT))
        .await
        .map_err(|(e, _)| TopicsError::Produce(topic.clone(), e))?;
    Ok(format!("sent to {topic} partition {} offset {}", delivery.partition, delivery.offset))
}

/// The registry topic's part of `topics ensure`: created compacted (one
/// partition: a small topic that every replica reads whole), or checked to be.
async fn ensure_registry_topic(config: &Config) -> Result<Option<String>, TopicsError> {
    let topic = &config.topics.endpoints;
    if topic.is_empty() {
        return Ok(None);
    }
    let admin: AdminClient<DefaultClientContext> = crate::config::client::admin_config(&config.kafka).create()?;
    let options = AdminOptions::new().operation_timeout(Some(Timeout::After(ADMIN_TIMEOUT)));
    let new = NewTopic::new(topic, 1, TopicReplication::Fixed(config.topics.replication_factor))
        .set("cleanup.policy", "compact");
    match admin.create_topics([&new], &options).await?.remove(0) {
        Ok(name) => return Ok(Some(format!("created {name} (1 partition, compacted)"))),
        Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
        Err((name, code)) => return Err(TopicsError::Create(name, code)),
    }
    // Just after a create (by this or another replica) the broker may not
    // describe the topic's configs yet: an absent policy is asked again, for
    // up to 5 s; only a policy that is there and not `compact` is an error.
    let mut policy = None;
    for _ in 0..20 {
        let described = admin.describe_configs([&ResourceSpecifier::Topic(topic)], &options).await?;
        policy = described
            .into_iter()
            .flatten()
            .flat_map(|resource| resource.entries)
            .find(|entry| entry.name == "cleanup.policy")
            .and_then(|entry| entry.value)
            .filter(|value| !value.is_empty());
        if policy.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let policy = policy.unwrap_or_default();
    if !policy.split(',').any(|p| p.trim() == "compact") {
        return Err(TopicsError::NotCompacted(topic.clone(), policy));
    }
    Ok(Some(format!("exists  {topic} (compacted)")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_refuses_what_the_relay_would_dead_letter() {
        let config = Config::from_toml("[endpoints.billing]\nurl = \"https://billing.example.com/hooks\"\n").unwrap();
        let url = || Target::Url("https://example.com/hook".into());
        let cases: [(Target, &str, Option<&str>, Option<&str>); 5] = [
            (url(), "{\"a\":1}", None, None),
            (Target::Endpoint("billing".into()), "1", Some("id-1"), None),
            (url(), "{not json", None, Some("--payload is not JSON")),
            (Target::Endpoint("nope".into()), "1", None, Some("unknown endpoint \"nope\"")),
            (Target::Url("ftp://example.com/".into()), "1", None, Some("bad url")),
        ];
        for (target, payload, id, refused) in cases {
            match (event_value(&config, None, target, payload, id), refused) {
                (Ok(value), None) => assert!(serde_json::from_slice::<serde_json::Value>(&value).is_ok()),
                (Err(e), Some(expected)) => assert!(e.to_string().contains(expected), "{e} lacks {expected:?}"),
                (result, expected) => panic!("{payload}: got {result:?}, expected refusal {expected:?}"),
            }
        }
    }
}
