//! Record sizes: the producer takes what the topics take; a route that can never fit is a `too_large`
//! dead letter, never a held offset; a tier smaller than the event topics refuses the start.

use std::process::{Command, Stdio};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::FutureProducer;
use rdkafka::ClientConfig;

use crate::harness::*;

fn admin() -> AdminClient<DefaultClientContext> {
    ClientConfig::new().set("bootstrap.servers", bootstrap()).create().expect("admin client")
}

/// A test producer that takes what the broker's default topics take (librdkafka's own default is 1,000,000).
fn big_producer() -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("linger.ms", "0")
        .set("message.max.bytes", "2000000")
        .create()
        .expect("producer")
}

/// Sets a topic's `max.message.bytes` while the relay runs (an operator's change).
async fn shrink(topic: &str, bytes: usize) {
    let bytes = bytes.to_string();
    let alter = AlterConfig::new(ResourceSpecifier::Topic(topic)).set("max.message.bytes", &bytes);
    for result in admin().alter_configs(&[alter], &AdminOptions::new()).await.expect("alter configs") {
        result.expect("topic altered");
    }
}

/// An event of about `bytes` bytes, with a payload under `max_payload_bytes` (1 MiB). Random
/// letters: the relay's producer compresses (lz4), and the broker checks the compressed size.
fn big_event(url: &str, id: &str, bytes: usize) -> Vec<u8> {
    let payload: String = (0..bytes - 100).map(|_| rand::random_range(b'a'..=b'z') as char).collect();
    format!(r#"{{"url":"{url}","id":"{id}","payload":"{payload}"}}"#).into_bytes()
}

/// Before: the producer kept librdkafka's 1,000,000-byte limit, so an event the
/// broker took (its default is 1,048,588) failed every route produce, forever.
#[tokio::test]
async fn an_event_near_the_broker_default_size_is_routed_to_a_tier() {
    let failing = Receiver::start(Behaviour { status: 503, ..Behaviour::default() }).await;
    let topics = Topics::create(1, &[Duration::from_secs(3600)]).await;
    let _relay = Relay::start(&Config::new(&topics), &[]).await;
    let value = big_event(&failing.url("/x"), "big", 1_030_000);
    produce(&big_producer(), &topics.events, Some(0), None, &value).await;
    let tier = &topics.tiers[0].0;
    let routed = read_topic(tier, 1, Duration::from_secs(30)).await;
    assert_eq!(routed.len(), 1, "the large event reached the tier");
    assert_eq!(routed[0].value, value, "byte for byte");
    assert_eq!(routed[0].header("hookrelay-attempt"), Some("1"));
}

/// A tier shrunk below an event after start: the route is decided as a
/// `too_large` dead letter (value kept), and the offset moves past it.
#[tokio::test]
async fn a_route_the_tier_cannot_take_is_dead_as_too_large_and_committed() {
    let failing = Receiver::start(Behaviour { status: 503, ..Behaviour::default() }).await;
    let ok = Receiver::start(Behaviour::default()).await;
    let topics = Topics::create(1, &[Duration::from_secs(3600)]).await;
    let relay = Relay::start(&Config::new(&topics), &[]).await;
    let tier = topics.tiers[0].0.clone();
    shrink(&tier, 100_000).await;
    let value = big_event(&failing.url("/x"), "too-big", 1_000_000);
    let (_, big_offset) = produce(&big_producer(), &topics.events, Some(0), None, &value).await;
    let after = format!(r#"{{"url":"{}","payload":1,"id":"after"}}"#, ok.url("/x"));
    produce(&producer(), &topics.events, Some(0), None, after.as_bytes()).await;

    let dead = read_topic(&topics.dead, 1, Duration::from_secs(30)).await;
    assert_eq!(dead.len(), 1, "one dead letter; log:\n{}", relay.log_text());
    let record = &dead[0];
    assert_eq!(record.header("hookrelay-reason"), Some("too_large"), "{:?}", record.headers);
    assert_eq!(record.header("hookrelay-origin-topic"), Some(topics.events.as_str()));
    assert_eq!(record.header_i64("hookrelay-origin-offset"), big_offset);
    assert_eq!(record.header("hookrelay-attempt"), Some("1"));
    let error = record.header("hookrelay-last-error").unwrap();
    assert!(error.contains(&tier) && error.to_lowercase().contains("too large"), "{error}");
    assert_eq!(record.value, value, "the dead topic takes the value: it is kept");
    let (group, events) = (topics.group.clone(), topics.events.clone());
    eventually("the offset moves past the too-large record", Duration::from_secs(20), || {
        committed(&group, &events, 0).filter(|&c| c > big_offset + 1)
    })
    .await;
    assert_eq!(ok.delivered_ids().len(), 1);
    let text = relay.metrics().await;
    assert_eq!(metric(&text, r#"hookrelay_dead_letters_total{reason="too_large"}"#), Some(1.0));
}

/// The dead topic cannot take the value either: the dead record keeps the
/// headers, drops the value and says so.
#[tokio::test]
async fn a_value_the_dead_topic_cannot_take_is_dropped_and_said() {
    let failing = Receiver::start(Behaviour { status: 503, ..Behaviour::default() }).await;
    let topics = Topics::create(1, &[Duration::from_secs(3600)]).await;
    let relay = Relay::start(&Config::new(&topics), &[]).await;
    shrink(&topics.tiers[0].0, 100_000).await;
    shrink(&topics.dead, 100_000).await;
    let value = big_event(&failing.url("/x"), "too-big", 1_000_000);
    let headers = [("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")];
    let mut with_header = rdkafka::message::OwnedHeaders::new();
    for (key, value) in headers {
        with_header = with_header.insert(rdkafka::message::Header { key, value: Some(value) });
    }
    let record = rdkafka::producer::FutureRecord::<str, [u8]>::to(&topics.events).payload(&value).headers(with_header);
    let offset = big_producer().send(record, Duration::from_secs(10)).await.expect("produce").offset;

    let dead = read_topic(&topics.dead, 1, Duration::from_secs(30)).await;
    assert_eq!(dead.len(), 1, "log:\n{}", relay.log_text());
    let record = &dead[0];
    assert!(record.value.is_empty(), "the value is dropped");
    assert_eq!(record.header("hookrelay-reason"), Some("too_large"));
    assert_eq!(record.header_i64("hookrelay-origin-offset"), offset);
    assert_eq!(record.header("traceparent"), Some(headers[0].1), "the record's own headers are kept");
    let error = record.header("hookrelay-last-error").unwrap();
    assert!(error.contains("value dropped") && error.contains(&topics.dead), "{error}");
    let (group, events) = (topics.group.clone(), topics.events.clone());
    eventually("the offset moves past it", Duration::from_secs(20), || {
        committed(&group, &events, 0).filter(|&c| c > offset)
    })
    .await;
}

/// A tier that takes less than the event topics can never route what they
/// take: the relay refuses to start, exit 64, one line naming the topic.
#[tokio::test]
async fn a_tier_smaller_than_the_event_topics_refuses_the_start() {
    let topics = Topics::create(1, &[]).await;
    let tier = format!("{}.tiny-tier", topics.events);
    let new = NewTopic::new(&tier, 1, TopicReplication::Fixed(1)).set("max.message.bytes", "1000");
    admin().create_topics(&[new], &AdminOptions::new()).await.unwrap()[0].as_ref().unwrap();
    let config = Config::new(&topics).tier(&tier, Duration::from_secs(60));
    let (_dir, path, _) = write_config(&config.to_string());
    let output = tokio::task::spawn_blocking(move || {
        Command::new(binary())
            .arg("--config")
            .arg(&path)
            .arg("run")
            .env("HOOKRELAY_LOG", "off")
            .stdin(Stdio::null())
            .output()
            .expect("run hookrelay")
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(64), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr:?}");
    assert!(stderr.contains(&tier) && stderr.contains("max.message.bytes"), "{stderr}");
}
