//! `hookrelay replay`: dry runs move nothing, filters, the same `webhook-id` and body on redelivery,
//! a fresh deadline, and the dead topic left as it was.

use std::collections::{HashMap, HashSet};
use std::process::Output;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;

use crate::harness::*;

const TIERS: [Duration; 3] = [Duration::from_secs(1), Duration::from_secs(2), Duration::from_secs(3)];

/// The test config: a `billing` endpoint at `billing_url`, no circuit breaker, a replay key.
fn config(topics: &Topics, billing_url: &str) -> Config {
    Config::new(topics)
        .set("circuit.enabled", false)
        .endpoint("billing", billing_url)
        .set("replay.key", "e2e-replay-key-0123456789")
}

/// Runs `hookrelay --config <config> replay <args>` to the end.
async fn replay(config: &Config, args: &[&str]) -> Output {
    let (dir, path, _) = write_config(&config.to_string());
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let output = std::process::Command::new(binary())
            .arg("--config")
            .arg(&path)
            .arg("replay")
            .args(&args)
            .env("HOOKRELAY_LOG", "warn")
            .output()
            .expect("run hookrelay replay");
        drop(dir);
        output
    })
    .await
    .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Runs a replay that must succeed; returns its stdout lines.
async fn replay_ok(config: &Config, args: &[&str]) -> Vec<String> {
    let output = replay(config, args).await;
    assert!(
        output.status.success(),
        "replay {args:?} failed: {:?}\nstdout: {}\nstderr: {}",
        output.status,
        stdout(&output),
        String::from_utf8_lossy(&output.stderr)
    );
    stdout(&output).lines().map(String::from).collect()
}

/// The lines that list one record each.
fn listed<'a>(lines: &'a [String], prefix: &str) -> Vec<&'a String> {
    lines.iter().filter(|l| l.starts_with(prefix)).collect()
}

/// (low, high) watermarks of every partition of `topic`.
async fn watermarks(topic: &str, partitions: i32) -> Vec<(i64, i64)> {
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer =
            ClientConfig::new().set("bootstrap.servers", bootstrap()).create().expect("watermark reader");
        (0..partitions)
            .map(|p| consumer.fetch_watermarks(&topic, p, Duration::from_secs(10)).expect("watermarks"))
            .collect()
    })
    .await
    .unwrap()
}

async fn records_in(topic: &str, partitions: i32) -> i64 {
    watermarks(topic, partitions).await.iter().map(|(low, high)| high - low).sum()
}

async fn wait_for_dead(topics: &Topics, partitions: i32, count: i64) {
    eventually_async("the dead records", Duration::from_secs(30), || async {
        (records_in(&topics.dead, partitions).await >= count).then_some(())
    })
    .await;
    assert_eq!(records_in(&topics.dead, partitions).await, count, "more dead records than expected");
}

fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_redelivers_dead_records_once_the_receiver_is_fixed() {
    let receiver = Receiver::start(Behaviour { status: 410, ..Behaviour::default() }).await;
    let topics = Topics::create(2, &TIERS).await;
    let config = config(&topics, &receiver.url("/billing"));
    let _relay = Relay::start(&config, &[]).await;
    let producer = producer();
    let mut ids = HashSet::new();
    for i in 0..2 {
        let value = format!(r#"{{"endpoint":"billing","payload":{{"i":{i}}},"id":"bill-{i}"}}"#);
        produce(&producer, &topics.events, Some(i), Some(&format!("k{i}")), value.as_bytes()).await;
        ids.insert(format!("bill-{i}"));
    }
    for i in 0..2 {
        // No `id`: the default one, `<topic>-<partition>-<offset>` of this record, must survive the replay.
        let value = format!(r#"{{"url":"{}","payload":{{"j":{i}}}}}"#, receiver.url("/inline"));
        let (partition, offset) = produce(&producer, &topics.events, Some(i), None, value.as_bytes()).await;
        ids.insert(format!("{}-{partition}-{offset}", topics.events));
    }
    wait_for_dead(&topics, 2, 4).await;
    assert_eq!(receiver.count(), 4);
    let first: HashMap<String, Vec<u8>> =
        receiver.received().into_iter().map(|r| (r.header("webhook-id").to_string(), r.body)).collect();
    assert_eq!(first.keys().cloned().collect::<HashSet<_>>(), ids);
    let events_before = watermarks(&topics.events, 2).await;
    let dead_before = watermarks(&topics.dead, 2).await;

    let lines = replay_ok(&config, &["--dry-run"]).await;
    let would = listed(&lines, "would replay ");
    assert_eq!(would.len(), 4, "{lines:?}");
    for id in &ids {
        assert!(would.iter().any(|l| l.contains(&format!(" id={id} "))), "{id} not listed: {lines:?}");
    }
    assert!(would.iter().all(|l| l.contains("reason=rejected") && l.ends_with(&format!("-> {}", topics.events))));
    let why = "reason=rejected status=410 error=\"HTTP 410: answer 410\" ->";
    assert!(would.iter().all(|l| l.contains(why)), "each line shows status and last error: {lines:?}");
    assert_eq!(lines.last().unwrap(), "dry run: would replay 4 of 4 scanned, moved nothing");
    // A dry run moves nothing: no delivery follows it, and the topics are as they were.
    holds_for("no delivery after a dry run", Duration::from_secs(3), || receiver.count() == 4).await;
    assert_eq!(watermarks(&topics.events, 2).await, events_before, "a dry run wrote to the events topic");
    assert_eq!(watermarks(&topics.dead, 2).await, dead_before);

    receiver.set(|b| b.status = 200);
    let lines = replay_ok(&config, &[]).await;
    assert_eq!(listed(&lines, "replay ").len(), 4, "{lines:?}");
    assert_eq!(lines.last().unwrap(), "replayed 4 of 4 scanned");
    eventually("every replayed record delivered", Duration::from_secs(30), || {
        (receiver.delivered_ids() == ids).then_some(())
    })
    .await;
    let again: Vec<Received> = receiver.received().into_iter().filter(|r| r.status == 200).collect();
    assert_eq!(again.len(), 4, "each replayed record delivered once");
    for request in &again {
        let id = request.header("webhook-id");
        assert_eq!(Some(&request.body), first.get(id), "{id}: the same body as before");
    }
    let events_after = watermarks(&topics.events, 2).await;
    let added: i64 = events_after.iter().zip(&events_before).map(|(a, b)| a.1 - b.1).sum();
    assert_eq!(added, 4, "one replayed record per dead one on the events topic");
    assert_eq!(watermarks(&topics.dead, 2).await, dead_before, "the dead topic is never modified");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_filters_by_reason_endpoint_and_time() {
    let receiver = Receiver::start(Behaviour { status: 410, ..Behaviour::default() }).await;
    let topics = Topics::create(1, &TIERS).await;
    let config = config(&topics, &receiver.url("/billing"));
    let before = now_ms() - 1;
    let _relay = Relay::start(&config, &[]).await;
    let producer = producer();
    let values = [
        r#"{"endpoint":"billing","payload":1,"id":"bill-1"}"#.to_string(),
        r#"{"endpoint":"billing","payload":2,"id":"bill-2"}"#.to_string(),
        format!(r#"{{"url":"{}","payload":3,"id":"url-1"}}"#, receiver.url("/inline")),
        r#"{"endpoint":"billing","id":"no-payload"}"#.to_string(),
        "not json".to_string(),
    ];
    for value in &values {
        produce(&producer, &topics.events, Some(0), None, value.as_bytes()).await;
    }
    wait_for_dead(&topics, 1, 5).await;
    let after = now_ms() + 1000;

    let lines = replay_ok(&config, &["--dry-run", "--reason", "rejected", "--endpoint", "billing"]).await;
    let would = listed(&lines, "would replay ");
    assert_eq!(would.len(), 2, "{lines:?}");
    assert!(would.iter().all(|l| l.contains("endpoint=billing reason=rejected")), "{lines:?}");
    let ids: HashSet<&str> = would.iter().filter_map(|l| l.split(' ').find(|w| w.starts_with("id="))).collect();
    assert_eq!(ids, HashSet::from(["id=bill-1", "id=bill-2"]));
    assert_eq!(lines.last().unwrap(), "dry run: would replay 2 of 5 scanned, moved nothing");

    let lines = replay_ok(&config, &["--dry-run", "--reason", "invalid_event"]).await;
    assert_eq!(listed(&lines, "would replay ").len(), 2, "{lines:?}");
    // The inline URL's endpoint label, as the relay wrote it (the host, or host:port).
    let dead = read_topic(&topics.dead, 5, Duration::from_secs(20)).await;
    let label = dead
        .iter()
        .filter_map(|r| r.header("hookrelay-endpoint"))
        .find(|l| l.starts_with("127.0.0.1"))
        .expect("a dead record of the inline URL")
        .to_string();
    assert!(label == "127.0.0.1" || label == receiver.addr.to_string(), "{label:?}");
    let lines = replay_ok(&config, &["--dry-run", "--endpoint", &label]).await;
    let would = listed(&lines, "would replay ");
    assert_eq!(would.len(), 1, "{lines:?}");
    assert!(would[0].contains(" id=url-1 "), "{lines:?}");

    let lines = replay_ok(&config, &["--dry-run", "--since", &rfc3339(after)]).await;
    assert_eq!(listed(&lines, "would replay ").len(), 0, "{lines:?}");
    assert_eq!(lines.last().unwrap(), "dry run: would replay 0 of 0 scanned, moved nothing");
    let lines = replay_ok(&config, &["--dry-run", "--until", &rfc3339(before)]).await;
    assert_eq!(listed(&lines, "would replay ").len(), 0, "{lines:?}");
    let lines = replay_ok(&config, &["--dry-run", "--since", &rfc3339(before), "--until", &rfc3339(after)]).await;
    assert_eq!(listed(&lines, "would replay ").len(), 5, "{lines:?}");
    let lines = replay_ok(&config, &["--dry-run", "--since", "1h", "--reason", "rejected"]).await;
    assert_eq!(listed(&lines, "would replay ").len(), 3, "a duration means that long ago: {lines:?}");

    for bad in [&["--reason", "bogus"][..], &["--since", "yesterday"][..]] {
        let output = replay(&config, &[&["--dry-run"][..], bad].concat()).await;
        assert_eq!(output.status.code(), Some(64), "{bad:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr:?}");
        assert!(stderr.contains(bad[1]), "{stderr:?} should name {:?}", bad[1]);
    }
    assert_eq!(records_in(&topics.events, 1).await, 5, "dry runs wrote nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_record_gets_a_fresh_deadline() {
    let receiver = Receiver::start(Behaviour { status: 503, ..Behaviour::default() }).await;
    let topics = Topics::create(1, &TIERS).await;
    let config = config(&topics, &receiver.url("/billing"));
    let _relay = Relay::start(&config, &[]).await;
    let producer = producer();
    let value = format!(
        r#"{{"url":"{}","payload":{{"late":true}},"id":"late-1","retry_until":"2020-01-01T00:00:00Z"}}"#,
        receiver.url("/x")
    );
    let (partition, offset) = produce(&producer, &topics.events, Some(0), Some("late-key"), value.as_bytes()).await;
    let dead = read_topic(&topics.dead, 1, Duration::from_secs(30)).await;
    assert_eq!(dead.len(), 1);
    let dead = &dead[0];
    assert_eq!(dead.header("hookrelay-reason"), Some("expired"), "{:?}", dead.headers);
    assert_eq!(receiver.count(), 1, "one attempt, then the passed deadline decides");

    receiver.set(|b| b.status = 200);
    let started = now_ms();
    let lines = replay_ok(&config, &[]).await;
    assert_eq!(lines.last().unwrap(), "replayed 1 of 1 scanned", "{lines:?}");
    eventually("the replayed record is delivered", Duration::from_secs(30), || {
        receiver.delivered_ids().contains("late-1").then_some(())
    })
    .await;
    let received = receiver.received();
    assert_eq!(received.len(), 2, "delivered on its first attempt after the replay");
    assert_eq!(received[1].body, received[0].body);

    let events = read_topic(&topics.events, 2, Duration::from_secs(30)).await;
    assert_eq!(events.len(), 2);
    let replayed = events.iter().find(|r| r.header("hookrelay-replayed-from").is_some()).expect("the replayed record");
    assert_eq!(replayed.value, value.as_bytes(), "the value byte for byte");
    assert_eq!(replayed.key.as_deref(), Some(&b"late-key"[..]), "the key kept");
    assert_eq!(
        replayed.header("hookrelay-replayed-from"),
        Some(format!("{}/{}/{}", topics.dead, dead.partition, dead.offset).as_str())
    );
    let deadline = replayed.header_i64("hookrelay-deadline-ms");
    assert!(deadline > now_ms(), "the fresh deadline {deadline} is in the future");
    assert!(
        deadline <= now_ms() + 24 * 3_600_000 && deadline >= started + 24 * 3_600_000 - 60_000,
        "retry.max_age from now"
    );
    assert_eq!(replayed.header("hookrelay-attempt"), None, "the attempt count starts again");
    assert_eq!(replayed.header("hookrelay-reason"), None);
    assert_eq!(replayed.header("hookrelay-origin-topic"), Some(topics.events.as_str()));
    assert_eq!(replayed.header_i64("hookrelay-origin-partition"), partition as i64);
    assert_eq!(replayed.header_i64("hookrelay-origin-offset"), offset);
    for record in &events {
        assert_eq!(record.header_count("hookrelay-deadline-ms"), usize::from(record.offset != offset));
    }
}

/// A dead fan-out leg is re-driven to its endpoint alone, with or without `--endpoint`, never fanned out
/// again; without `replay.key` replaying it is refused (exit 64) before anything is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_a_dead_leg_re_drives_that_leg_only() {
    let receivers = [
        Receiver::start(Behaviour::default()).await,
        Receiver::start(Behaviour { status: 410, ..Behaviour::default() }).await,
        Receiver::start(Behaviour::default()).await,
    ];
    let [a, b, c] = &receivers;
    let topics = Topics::create(1, &TIERS).await;
    let config = Config::new(&topics)
        .set("circuit.enabled", false)
        .set("replay.key", "e2e-replay-key-0123456789")
        .endpoint("a", &a.url("/a"))
        .set("endpoints.a.types", vec!["invoice.*"])
        .endpoint("b", &b.url("/b"))
        .set("endpoints.b.types", vec!["invoice.paid"])
        .endpoint("c", &c.url("/c"))
        .set("endpoints.c.types", vec!["invoice.paid", "user.created"]);
    let _relay = Relay::start(&config, &[]).await;
    let value = br#"{"id":"paid-1","type":"invoice.paid","payload":{"n":1}}"#;
    produce(&producer(), &topics.events, Some(0), Some("k"), value).await;
    wait_for_dead(&topics, 1, 1).await;
    eventually("a and c delivered", Duration::from_secs(30), || (a.count() == 1 && c.count() == 1).then_some(())).await;
    assert_eq!(b.count(), 1);
    let events_before = watermarks(&topics.events, 1).await;

    // Without a key the relay could not believe the leg's endpoint: refused, nothing written.
    let without_key = Config::new(&topics)
        .set("circuit.enabled", false)
        .endpoint("a", &a.url("/a"))
        .set("endpoints.a.types", vec!["invoice.*"])
        .endpoint("b", &b.url("/b"))
        .set("endpoints.b.types", vec!["invoice.paid"]);
    let refused = replay(&without_key, &[]).await;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(64), "stdout: {}\nstderr: {stderr}", stdout(&refused));
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains("fan-out leg (endpoint \"b\")") && stderr.contains("replay.key"), "{stderr}");
    assert_eq!(watermarks(&topics.events, 1).await, events_before, "a refused replay wrote nothing");
    // A dry run may list it.
    let lines = replay_ok(&without_key, &["--dry-run"]).await;
    assert!(listed(&lines, "would replay ").iter().any(|l| l.contains("endpoint=b") && l.contains("fan-out leg")));

    b.set(|b| b.status = 200);
    let lines = replay_ok(&config, &[]).await;
    assert_eq!(lines.last().unwrap(), "replayed 1 of 1 scanned", "{lines:?}");
    eventually("b's leg re-driven", Duration::from_secs(30), || (b.count() == 2).then_some(())).await;
    let lines = replay_ok(&config, &["--endpoint", "b"]).await;
    assert_eq!(lines.last().unwrap(), "replayed 1 of 1 scanned", "{lines:?}");
    eventually("b's leg re-driven again", Duration::from_secs(30), || (b.count() == 3).then_some(())).await;
    assert!(b.received().iter().all(|r| r.header("webhook-id") == "paid-1"));
    // The other subscribers get no second request (before the fix they got one per replay).
    holds_for("a and c are not fanned out to again", Duration::from_secs(3), || a.count() == 1 && c.count() == 1).await;
}
