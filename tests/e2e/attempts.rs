//! The attempt log (`topics.attempts`), `hookrelay trace`, and the per-endpoint oldest-waiting gauge.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use hookrelay::observe::attempts::partition_of;
use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::ClientConfig;
use serde_json::Value;

use crate::harness::*;

const TIERS: [Duration; 2] = [Duration::from_secs(1), Duration::from_secs(1)];

/// The fields of every record, exactly (SPEC "What happened to event X").
const FIELDS: [&str; 13] = [
    "id",
    "endpoint",
    "attempt",
    "at",
    "outcome",
    "status",
    "duration_ms",
    "error",
    "tier",
    "reason",
    "record",
    "to",
    "relay",
];

/// Partitions of the test's attempt log: more than one, so the key partitioner matters.
const LOG_PARTITIONS: i32 = 3;

/// Creates the test's attempt-log topic (as `topics ensure` would, with `LOG_PARTITIONS`).
async fn attempts_log(topics: &Topics) -> String {
    let topic = attempts_topic(topics);
    create_topics(std::slice::from_ref(&topic), LOG_PARTITIONS).await;
    topic
}

/// The log records of `id` as JSON, in the order written (one key, one partition).
fn of_id<'a>(records: &'a [Record], id: &str) -> Vec<(&'a Record, Value)> {
    records
        .iter()
        .filter(|r| r.key.as_deref() == Some(id.as_bytes()))
        .map(|r| (r, serde_json::from_slice(&r.value).expect("a log record is JSON")))
        .collect()
}

/// `hookrelay trace ARGS` with `config`: (exit code, stdout, stderr).
async fn trace(config: &Config, args: &[&str]) -> (Option<i32>, String, String) {
    let (config, args): (String, Vec<String>) = (config.to_string(), args.iter().map(|a| a.to_string()).collect());
    tokio::task::spawn_blocking(move || {
        let (_dir, path, _) = write_config(&config);
        let output = Command::new(binary()).arg("--config").arg(&path).arg("trace").args(&args).output().unwrap();
        let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
        (output.status.code(), text(&output.stdout), text(&output.stderr))
    })
    .await
    .unwrap()
}

fn outcomes(records: &[(&Record, Value)]) -> Vec<String> {
    records.iter().map(|(_, v)| v["outcome"].as_str().unwrap().to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_that_fails_twice_has_three_records_and_trace_prints_them() {
    let receiver = Receiver::start(Behaviour { fail_first: 2, ..Behaviour::default() }).await;
    let topics = Topics::create(2, &TIERS).await;
    let log = attempts_log(&topics).await;
    // A token in the endpoint's URL and one in an inline URL: neither may reach the log.
    let closed = format!("http://127.0.0.1:{}/x?token=s3cret-inline", free_port());
    let config = Config::new(&topics)
        .set("circuit.enabled", false)
        .endpoint("billing", &receiver.url("/hook?token=s3cret-named"));
    let _relay = Relay::start(&config, &[]).await;
    let producer = producer();
    let ids: Vec<String> =
        ["order-1001".to_string()].into_iter().chain((0..20).map(|i| format!("order-2{i:03}"))).collect();
    let mut produced = Vec::new();
    for id in &ids {
        let value = format!(r#"{{"endpoint":"billing","payload":{{"order":"{id}"}},"id":"{id}"}}"#);
        produced.push(produce(&producer, &topics.events, None, Some(id), value.as_bytes()).await);
    }
    let value = format!(r#"{{"url":"{closed}","payload":{{}},"id":"order-closed","max_attempts":2}}"#);
    produce(&producer, &topics.events, None, None, value.as_bytes()).await;

    eventually("every event delivered on its third attempt", Duration::from_secs(60), || {
        (receiver.delivered_ids().len() == ids.len()).then_some(())
    })
    .await;
    // 3 records per delivered event, 2 (retry, dead) for the one to a closed port.
    let expected = 3 * ids.len() + 2;
    let records = read_topic(&log, expected, Duration::from_secs(30)).await;
    assert_eq!(records.len(), expected, "one record per attempt");

    let first = of_id(&records, "order-1001");
    assert_eq!(outcomes(&first), ["retry", "retry", "delivered"]);
    let field = |i: usize, name: &str| first[i].1[name].clone();
    let statuses: Vec<Value> = (0..3).map(|i| field(i, "status")).collect();
    assert_eq!(statuses, [503, 503, 200]);
    let attempts: Vec<Value> = (0..3).map(|i| field(i, "attempt")).collect();
    assert_eq!(attempts, [1, 2, 3]);
    let (partition, offset) = produced[0];
    assert_eq!(field(0, "record"), format!("{}/{partition}/{offset}", topics.events), "the event record attempted");
    for (i, (tier, _)) in topics.tiers.iter().enumerate() {
        assert_eq!(field(i, "tier"), tier.as_str(), "retry {i} names its tier");
        let to = field(i, "to");
        assert!(to.as_str().unwrap().starts_with(&format!("{tier}/")), "retry {i} acknowledged on its tier: {to}");
        assert_eq!(field(i + 1, "record"), to, "the next attempt is of the record the retry wrote");
    }
    assert_eq!((field(2, "tier"), field(2, "to"), field(2, "error")), (Value::Null, Value::Null, Value::Null));
    assert!(field(0, "error").as_str().is_some_and(|e| e.starts_with("HTTP 503")), "{}", field(0, "error"));
    for (record, value) in &first {
        assert!(value["duration_ms"].is_u64(), "{value}");
        let at = value["at"].as_str().unwrap();
        assert_eq!((at.len(), &at[19..20], &at[23..]), (24, ".", "Z"), "RFC 3339 with three fractional digits: {at}");
        assert!(!value["relay"].as_str().unwrap().is_empty());
        assert_eq!(value["endpoint"], "billing");
        assert_eq!(record.partition, first[0].0.partition, "one key, one partition");
    }

    // Every record: key = id, exactly the SPEC's fields, the partition Kafka's murmur2 gives the
    // key (the one `trace` reads), and no secret from a URL.
    let mut partitions = BTreeSet::new();
    for record in &records {
        let value: Value = serde_json::from_slice(&record.value).unwrap();
        assert_eq!(record.key.as_deref(), value["id"].as_str().map(str::as_bytes), "key = id");
        let keys: BTreeSet<&str> = value.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, FIELDS.into_iter().collect(), "{value}");
        assert_eq!(record.partition, partition_of(record.key.as_deref().unwrap(), LOG_PARTITIONS), "{value}");
        partitions.insert(record.partition);
        let text = String::from_utf8_lossy(&record.value);
        assert!(!text.contains("s3cret") && !text.contains("token"), "{text}");
    }
    assert!(partitions.len() > 1, "21 ids over {LOG_PARTITIONS} partitions use more than one");
    let closed_records = of_id(&records, "order-closed");
    assert_eq!(outcomes(&closed_records), ["retry", "dead"]);
    let (_, dead) = &closed_records[1];
    assert_eq!((dead["reason"].as_str(), dead["status"].clone()), (Some("max_attempts"), Value::Null));
    assert!(dead["error"].as_str().is_some_and(|e| !e.is_empty()), "a transport error: {dead}");
    assert!(dead["to"].as_str().unwrap().starts_with(&format!("{}/", topics.dead)));

    // The handbook's example (docs: concepts/attempt-log.md): these commands, these lines.
    let (code, stdout, stderr) = trace(&config, &["order-1001"]).await;
    assert_eq!(code, Some(0), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    for (line, (outcome, status)) in lines.iter().zip([("retry", "503"), ("retry", "503"), ("delivered", "200")]) {
        assert!(line.contains("  billing  ") && line.contains(outcome) && line.contains(status), "{line}");
    }
    assert!(lines[0].contains("attempt 1") && lines[2].contains("attempt 3"), "oldest first: {stdout}");
    assert!(lines[0].contains(&format!("tier={}", topics.tiers[0].0)), "{stdout}");
    println!("hookrelay trace order-1001\n{stdout}");
    let (code, stdout, _) = trace(&config, &["order-1001", "--since", "1h", "--json"]).await;
    assert_eq!(code, Some(0));
    let json: Vec<Value> = stdout.lines().map(|l| serde_json::from_str(l).expect("each line is JSON")).collect();
    assert_eq!(
        json.iter().map(|v| v["outcome"].as_str().unwrap()).collect::<Vec<_>>(),
        ["retry", "retry", "delivered"]
    );
    assert!(json.iter().all(|v| v["id"] == "order-1001"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_events_are_logged_with_their_dead_letter_and_unknown_ids_exit_1() {
    let receiver = Receiver::start(Behaviour { status: 410, ..Behaviour::default() }).await;
    let topics = Topics::create(1, &TIERS).await;
    let log = attempts_log(&topics).await;
    let config = Config::new(&topics).endpoint("crm", &receiver.url("/gone"));
    let _relay = Relay::start(&config, &[]).await;
    let producer = producer();
    produce(&producer, &topics.events, None, None, br#"{"endpoint":"crm","payload":{},"id":"gone-1"}"#).await;
    // Invalid: no payload; and a URL with credentials (refused) and a token.
    produce(&producer, &topics.events, None, None, br#"{"endpoint":"crm","id":"bad-1"}"#).await;
    let userinfo = br#"{"url":"http://user:pw@127.0.0.1:1/x?token=s3cret","payload":{},"id":"bad-2"}"#;
    produce(&producer, &topics.events, None, None, userinfo).await;

    let dead = read_topic(&topics.dead, 3, Duration::from_secs(30)).await;
    assert_eq!(dead.len(), 3);
    let records = read_topic(&log, 3, Duration::from_secs(30)).await;
    assert_eq!(records.len(), 3, "one record per dead event");
    // Where the dead letter of `id` is (dead records keep the event's value).
    let dead_at = |id: &str| {
        let record = dead.iter().find(|r| String::from_utf8_lossy(&r.value).contains(id)).expect("a dead letter");
        format!("{}/{}/{}", topics.dead, record.partition, record.offset)
    };

    let gone = of_id(&records, "gone-1");
    let (_, gone) = &gone[0];
    assert_eq!((gone["outcome"].as_str(), gone["reason"].as_str()), (Some("dead"), Some("rejected")));
    assert_eq!((gone["status"].clone(), gone["attempt"].clone()), (Value::from(410), Value::from(1)));
    assert_eq!(gone["to"], dead_at("gone-1"), "the acknowledged dead letter");
    for id in ["bad-1", "bad-2"] {
        let (_, bad) = &of_id(&records, id)[0];
        assert_eq!((bad["outcome"].as_str(), bad["reason"].as_str()), (Some("dead"), Some("invalid_event")), "{bad}");
        assert_eq!((bad["attempt"].clone(), bad["duration_ms"].clone()), (Value::from(0), Value::Null), "{bad}");
        assert_eq!((bad["status"].clone(), bad["endpoint"].as_str()), (Value::Null, Some("invalid")), "{bad}");
        assert_eq!(bad["to"], dead_at(id), "{bad}");
    }
    for record in &records {
        let text = String::from_utf8_lossy(&record.value);
        assert!(!text.contains("s3cret") && !text.contains("pw@") && !text.contains("user:pw"), "{text}");
    }

    let (code, stdout, stderr) = trace(&config, &["gone-1"]).await;
    assert_eq!(code, Some(0), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].contains("dead") && lines[0].contains("410") && lines[0].contains("reason=rejected"), "{stdout}");
    assert_eq!(lines[1], format!("dead letter: {} (reason rejected)", dead_at("gone-1")));
    assert!(lines[2].starts_with("replay it: hookrelay replay --endpoint crm --reason rejected --since "), "{stdout}");
    println!("hookrelay trace gone-1\n{stdout}");

    let (code, stdout, stderr) = trace(&config, &["never-sent", "--since", "1h"]).await;
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert_eq!(stdout, "");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("no record of never-sent since "), "{stderr}");
    println!("hookrelay trace never-sent --since 1h\n{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_log_off_nothing_is_written_and_delivery_works() {
    let receiver = Receiver::start(Behaviour::default()).await;
    let topics = Topics::create(1, &TIERS).await;
    let log = attempts_log(&topics).await;
    let config = Config::new(&topics).set("topics.attempts", "");
    let _relay = Relay::start(&config, &[]).await;
    let value = format!(r#"{{"url":"{}","payload":{{}},"id":"quiet-1"}}"#, receiver.url("/q"));
    produce(&producer(), &topics.events, None, None, value.as_bytes()).await;
    eventually("delivered", Duration::from_secs(30), || (receiver.count() == 1).then_some(())).await;
    assert!(read_topic(&log, 1, Duration::from_secs(3)).await.is_empty(), "nothing on the log's topic");
    let (code, _, stderr) = trace(&config, &["quiet-1"]).await;
    assert_eq!(code, Some(64), "the log is off: a config matter: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_log_drops_and_counts_while_deliveries_go_on() {
    let receiver = Receiver::start(Behaviour::default()).await;
    let topics = Topics::create(1, &TIERS).await;
    let log = attempts_log(&topics).await;
    let relay = Relay::start(&Config::new(&topics), &[]).await;
    let producer = producer();
    let event = |i: usize| format!(r#"{{"url":"{}","payload":{{}},"id":"drop-{i}"}}"#, receiver.url("/d"));
    produce(&producer, &topics.events, None, None, event(0).as_bytes()).await;
    assert_eq!(read_topic(&log, 1, Duration::from_secs(30)).await.len(), 1, "the log works first");
    let dropped = |text: &str| metric(text, "hookrelay_attempt_log_dropped_total");
    assert_eq!(dropped(&relay.metrics().await), Some(0.0));

    // The topic now refuses every record (this test's own topic: the shared broker is untouched).
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", bootstrap()).create().expect("admin client");
    let alter = AlterConfig::new(ResourceSpecifier::Topic(&log)).set("max.message.bytes", "16");
    for result in admin.alter_configs(&[alter], &AdminOptions::new()).await.expect("alter configs") {
        result.expect("topic altered");
    }
    for i in 1..=20 {
        produce(&producer, &topics.events, None, None, event(i).as_bytes()).await;
    }
    eventually("every event delivered", Duration::from_secs(30), || (receiver.count() == 21).then_some(())).await;
    eventually_async("the drops counted", Duration::from_secs(30), || async {
        dropped(&relay.metrics().await).filter(|&n| n >= 1.0)
    })
    .await;
    assert!(relay.log_text().contains("attempt log records dropped"), "one warning");
    assert_eq!(read_topic(&log, 2, Duration::from_secs(2)).await.len(), 1, "nothing more written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_oldest_waiting_age_names_the_endpoint_that_holds_records() {
    let receiver = Receiver::start(Behaviour { hold_marker: Some("hold-me".into()), ..Behaviour::default() }).await;
    let topics = Topics::create(1, &TIERS).await;
    let config =
        Config::new(&topics).endpoint("slowpoke", &receiver.url("/s")).set("endpoints.slowpoke.timeout", "60s");
    let relay = Relay::start(&config, &[]).await;
    let series = r#"hookrelay_endpoint_oldest_waiting_seconds{endpoint="slowpoke"}"#;
    assert_eq!(metric(&relay.metrics().await, series), Some(0.0), "at 0 from start-up");
    let value = br#"{"endpoint":"slowpoke","payload":{"x":"hold-me"},"id":"slow-1"}"#;
    produce(&producer(), &topics.events, None, None, value).await;
    // Ages grow in real time: wait until the held record is over a second old.
    eventually_async("the held record's age shows", Duration::from_secs(30), || async {
        metric(&relay.metrics().await, series).filter(|&age| age >= 1.0)
    })
    .await;
    receiver.release();
    eventually_async("back to 0 once decided", Duration::from_secs(30), || async {
        metric(&relay.metrics().await, series).filter(|&age| age == 0.0)
    })
    .await;
    assert_eq!(receiver.delivered_ids().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_retries_are_logged_in_place() {
    let receiver = Receiver::start(Behaviour { fail_first: 2, ..Behaviour::default() }).await;
    let topics = Topics::create(1, &TIERS).await;
    let log = attempts_log(&topics).await;
    let config = Config::new(&topics)
        .set("circuit.enabled", false)
        .endpoint("ordered", &receiver.url("/o"))
        .set("endpoints.ordered.ordering", "key");
    let _relay = Relay::start(&config, &[]).await;
    let value = br#"{"endpoint":"ordered","payload":{},"id":"ord-1"}"#;
    let (partition, offset) = produce(&producer(), &topics.events, None, Some("k1"), value).await;
    let records = read_topic(&log, 3, Duration::from_secs(30)).await;
    let records = of_id(&records, "ord-1");
    assert_eq!(outcomes(&records), ["retry", "retry", "delivered"]);
    let event = format!("{}/{partition}/{offset}", topics.events);
    for (_, value) in &records[..2] {
        assert_eq!((value["tier"].as_str(), value["to"].clone()), (Some("in-place"), Value::Null), "{value}");
        assert_eq!((value["status"].clone(), value["record"].as_str()), (Value::from(503), Some(event.as_str())));
    }
    assert_eq!(records[2].1["attempt"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deferral_by_an_open_circuit_is_logged_without_an_attempt() {
    let receiver = Receiver::start(Behaviour { status: 503, ..Behaviour::default() }).await;
    let topics = Topics::create(1, &TIERS).await;
    let log = attempts_log(&topics).await;
    let config = Config::new(&topics)
        .set("circuit.failure_threshold", 1)
        .set("circuit.cool_down", "60s")
        .endpoint("down", &receiver.url("/d"));
    let _relay = Relay::start(&config, &[]).await;
    produce(&producer(), &topics.events, None, None, br#"{"endpoint":"down","payload":{},"id":"down-1"}"#).await;
    let records = read_topic(&log, 2, Duration::from_secs(30)).await;
    let records = of_id(&records, "down-1");
    assert_eq!(outcomes(&records), ["retry", "deferred"]);
    let (_, deferred) = &records[1];
    assert_eq!((deferred["reason"].as_str(), deferred["attempt"].clone()), (Some("circuit"), Value::from(1)));
    assert_eq!((deferred["status"].clone(), deferred["duration_ms"].clone()), (Value::Null, Value::Null));
    assert_eq!(deferred["tier"], topics.tiers[1].0.as_str(), "deferred from the first tier to the next");
    assert_eq!(deferred["record"], records[0].1["to"], "the tier record the retry wrote");
    assert_eq!(receiver.count(), 1, "no attempt while the circuit is open");
}
