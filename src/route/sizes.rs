//! The producer's record size limit, made to agree with the topics' at start-up.
//!
//! A record the relay routes is an event record plus relay headers. If the
//! producer (`message.max.bytes`) or a tier topic (`max.message.bytes`) takes
//! less than an event topic does, an event that arrived fine can never be
//! routed. So the relay reads what the topics take, sets its producer above
//! the largest of them, and refuses to start when a tier or the dead topic
//! takes less than the event topics.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::util::Timeout;

use crate::config::Config;

/// Added to the largest topic limit for the relay's headers (about a dozen,
/// `hookrelay-last-error` up to 1 KiB) and the record's framing.
pub const HEADER_ROOM: usize = 64 * 1024;

/// The broker's default `message.max.bytes` (1 MiB + 12), assumed for a topic
/// whose limit cannot be read (missing, or describe not allowed).
pub const BROKER_DEFAULT: usize = 1_048_588;

const DESCRIBE_TIMEOUT: Duration = Duration::from_secs(15);

/// What each topic takes (`max.message.bytes`); `None` when it could not be read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicLimits {
    pub events: Vec<(String, Option<usize>)>,
    /// The tiers, then the dead topic.
    pub routes: Vec<(String, Option<usize>)>,
}

/// A tier or the dead topic takes smaller records than an event topic: the CLI exits 64.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "topic {topic} takes records of at most {takes} bytes (max.message.bytes) but event topic {event_topic} takes \
     {events_take}: raise {topic}'s max.message.bytes to at least {events_take}"
)]
pub struct TooSmall {
    pub topic: String,
    pub takes: usize,
    pub event_topic: String,
    pub events_take: usize,
}

/// The producer's `message.max.bytes`: the largest topic limit plus
/// [`HEADER_ROOM`], or [`TooSmall`] when a route topic takes less than an
/// event topic. Unknown limits count as the broker default. Pure.
pub fn producer_limit(limits: &TopicLimits) -> Result<usize, TooSmall> {
    let known = |limit: Option<usize>| limit.unwrap_or(BROKER_DEFAULT);
    // Only limits read on both sides refuse the start: an unknown one is not held against it.
    let largest_event =
        limits.events.iter().filter_map(|(topic, limit)| limit.map(|l| (topic, l))).max_by_key(|(_, l)| *l);
    if let Some((event_topic, events_take)) = largest_event {
        let smaller =
            limits.routes.iter().find_map(|(topic, limit)| limit.filter(|&l| l < events_take).map(|l| (topic, l)));
        if let Some((topic, takes)) = smaller {
            return Err(TooSmall { topic: topic.clone(), takes, event_topic: event_topic.clone(), events_take });
        }
    }
    let largest = limits.events.iter().chain(&limits.routes).map(|(_, limit)| known(*limit)).max();
    Ok(largest.unwrap_or(BROKER_DEFAULT) + HEADER_ROOM)
}

/// Reads every topic's `max.message.bytes`. A topic that cannot be described
/// is logged and left `None`; an unreachable broker leaves them all `None`
/// (preflight already checked it answers).
pub async fn read(config: &Config) -> TopicLimits {
    let topics = &config.topics;
    let routes: Vec<String> = config.retry.tiers.iter().map(|t| t.topic.clone()).chain([topics.dead.clone()]).collect();
    let names: Vec<&String> = topics.events.iter().chain(&routes).collect();
    let described = describe(config, &names).await;
    let limit_of = |name: &String| {
        let found = described.iter().find(|(n, _)| n == name).and_then(|(_, limit)| *limit);
        (name.clone(), found)
    };
    TopicLimits { events: topics.events.iter().map(limit_of).collect(), routes: routes.iter().map(limit_of).collect() }
}

async fn describe(config: &Config, names: &[&String]) -> Vec<(String, Option<usize>)> {
    let admin: AdminClient<DefaultClientContext> = match crate::config::client::admin_config(&config.kafka).create() {
        Ok(admin) => admin,
        Err(error) => {
            tracing::warn!(%error, "cannot read the topics' max.message.bytes");
            return Vec::new();
        }
    };
    let specifiers: Vec<ResourceSpecifier<'_>> = names.iter().map(|n| ResourceSpecifier::Topic(n)).collect();
    let options = AdminOptions::new().request_timeout(Some(Timeout::After(DESCRIBE_TIMEOUT)));
    let results = match admin.describe_configs(&specifiers, &options).await {
        Ok(results) => results,
        Err(error) => {
            tracing::warn!(%error, "cannot read the topics' max.message.bytes");
            return Vec::new();
        }
    };
    names
        .iter()
        .zip(results)
        .map(|(name, result)| {
            let limit = match result {
                Ok(resource) => {
                    resource.get("max.message.bytes").and_then(|e| e.value.as_deref()).and_then(|v| v.parse().ok())
                }
                Err(code) => {
                    tracing::warn!(topic = name.as_str(), error = %code, "cannot read max.message.bytes of topic");
                    None
                }
            };
            (name.to_string(), limit)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(events: &[Option<usize>], routes: &[Option<usize>]) -> TopicLimits {
        let named = |prefix: &str, list: &[Option<usize>]| {
            list.iter().enumerate().map(|(i, l)| (format!("{prefix}{i}"), *l)).collect::<Vec<_>>()
        };
        TopicLimits { events: named("e", events), routes: named("r", routes) }
    }

    #[test]
    fn the_producer_takes_the_largest_topic_plus_header_room() {
        let too_small = |topic: &str, takes, events_take| {
            Err(TooSmall { topic: topic.into(), takes, event_topic: "e0".into(), events_take })
        };
        let table: Vec<(TopicLimits, Result<usize, TooSmall>)> = vec![
            // A broker with default settings: every topic at the default (librdkafka's own
            // default of 1,000,000 would refuse what such topics take).
            (limits(&[Some(BROKER_DEFAULT)], &[Some(BROKER_DEFAULT); 4]), Ok(BROKER_DEFAULT + HEADER_ROOM)),
            // Larger route topics are fine; the producer follows the largest.
            (limits(&[Some(1000)], &[Some(5000), Some(2000)]), Ok(5000 + HEADER_ROOM)),
            (limits(&[Some(9000), Some(1000)], &[Some(9000)]), Ok(9000 + HEADER_ROOM)),
            // A tier or the dead topic smaller than an event topic refuses the start.
            (limits(&[Some(2000)], &[Some(2000), Some(100)]), too_small("r1", 100, 2000)),
            (limits(&[Some(2000)], &[Some(1999)]), too_small("r0", 1999, 2000)),
            // Unknown limits count as the broker default; an unknown route limit never refuses.
            (limits(&[None], &[None, Some(2_000_000)]), Ok(2_000_000 + HEADER_ROOM)),
            (limits(&[Some(5_000_000)], &[None]), Ok(5_000_000 + HEADER_ROOM)),
            (limits(&[None], &[Some(1000)]), Ok(BROKER_DEFAULT + HEADER_ROOM)),
            (TopicLimits::default(), Ok(BROKER_DEFAULT + HEADER_ROOM)),
        ];
        for (limits, expected) in table {
            assert_eq!(producer_limit(&limits), expected, "{limits:?}");
        }
    }
}
