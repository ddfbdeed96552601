//! Issue 19: what one producer or one receiver can do on purpose (SPEC "Hostile input"). Each
//! test has the attacker (a producer's events, a receiver's answers) and a good tenant beside
//! it, and checks that the good tenant is served as if the attacker were not there.

use std::time::Duration;

use crate::harness::*;

/// A tier whose delay is longer than any test here: a record deferred to it (an open circuit,
/// a hold past `rate_max_wait`) is not back before the test's deadline.
const LONG_TIER: Duration = Duration::from_secs(600);

async fn produce_values(topic: &str, values: &[String]) {
    let producer = producer();
    for value in values {
        produce(&producer, topic, Some(0), None, value.as_bytes()).await;
    }
}

fn good(target: &str, id: &str) -> String {
    format!(r#"{{{target},"payload":"{id}","id":"{id}"}}"#)
}

/// Waits for every id in `ids` to be delivered to `receiver`, on its first request.
async fn all_delivered(receiver: &Receiver, ids: &[String], within: Duration) {
    eventually_explained("every good event delivered", within, || {
        let delivered = receiver.delivered_ids();
        let missing: Vec<_> = ids.iter().filter(|id| !delivered.contains(*id)).collect();
        async move {
            if missing.is_empty() {
                Ok(())
            } else {
                Err(format!("missing {missing:?}"))
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_ms_1_flood_does_not_open_a_shared_endpoints_circuit() {
    // Every answer takes 300 ms: a 1 ms timeout always times out, billing's own 5 s never does.
    let receiver = Receiver::start(Behaviour { delay: Duration::from_millis(300), ..Behaviour::default() }).await;
    let topics = Topics::create(1, &[LONG_TIER]).await;
    let config = Config::new(&topics).endpoint("billing", &receiver.url("/b")).set("circuit.failure_threshold", 3);
    let _relay = Relay::start(&config, &[]).await;
    let flood: Vec<String> =
        (0..10).map(|i| format!(r#"{{"endpoint":"billing","payload":{i},"id":"flood-{i}","timeout_ms":1}}"#)).collect();
    produce_values(&topics.events, &flood).await;
    let timed_out = read_topic(&topics.tiers[0].0, flood.len(), Duration::from_secs(60)).await;
    assert_eq!(timed_out.len(), flood.len(), "every flood event timed out into the tier");
    // Before: ten timeouts opened billing's circuit and every tenant's billing event was deferred.
    let ids: Vec<String> = (0..5).map(|i| format!("good-{i}")).collect();
    produce_values(&topics.events, &ids.iter().map(|id| good(r#""endpoint":"billing""#, id)).collect::<Vec<_>>()).await;
    all_delivered(&receiver, &ids, Duration::from_secs(60)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inline_host_named_like_an_endpoint_does_not_share_its_circuit() {
    let receiver = Receiver::start(Behaviour::default()).await;
    let topics = Topics::create(1, &[LONG_TIER]).await;
    let config = Config::new(&topics)
        .endpoint("billing", &receiver.url("/b"))
        .set("circuit.failure_threshold", 3)
        .set("delivery.timeout", "2s");
    let _relay = Relay::start(&config, &[]).await;
    // `http://billing/` resolves nowhere: each attempt fails, against the inline host `billing`.
    let attacks: Vec<String> =
        (0..5).map(|i| format!(r#"{{"url":"http://billing/x","payload":{i},"id":"inline-{i}"}}"#)).collect();
    produce_values(&topics.events, &attacks).await;
    let failed = read_topic(&topics.tiers[0].0, attacks.len(), Duration::from_secs(60)).await;
    assert_eq!(failed.len(), attacks.len(), "every inline event failed into the tier");
    let ids: Vec<String> = (0..5).map(|i| format!("good-{i}")).collect();
    produce_values(&topics.events, &ids.iter().map(|id| good(r#""endpoint":"billing""#, id)).collect::<Vec<_>>()).await;
    all_delivered(&receiver, &ids, Duration::from_secs(60)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_of_99999999_holds_its_host_for_max_hold_only() {
    // The path /bad answers its first request `503 Retry-After: 99999999` (three years).
    let receiver = Receiver::start(Behaviour {
        fail_matching: Some(("attack".into(), 1)),
        fail_status: 503,
        retry_after: Some("99999999".into()),
        ..Behaviour::default()
    })
    .await;
    let topics = Topics::create(1, &[LONG_TIER]).await;
    let config = Config::new(&topics).set("delivery.max_hold", "2s");
    let _relay = Relay::start(&config, &[]).await;
    let bad = format!(r#"{{"url":"{}","payload":"attack","id":"attack"}}"#, receiver.url("/bad"));
    produce_values(&topics.events, &[bad]).await;
    let answered = eventually("the 503 answered", Duration::from_secs(30), || {
        receiver.received().first().filter(|r| r.status == 503).map(|r| r.at_ms)
    })
    .await;
    // Other tenants' paths on the same host:port: before, deferred for the life of the process.
    let target = format!(r#""url":"{}""#, receiver.url("/good"));
    let ids: Vec<String> = (0..5).map(|i| format!("good-{i}")).collect();
    produce_values(&topics.events, &ids.iter().map(|id| good(&target, id)).collect::<Vec<_>>()).await;
    all_delivered(&receiver, &ids, Duration::from_secs(60)).await;
    let first_good = receiver.received().iter().filter(|r| r.status == 200).map(|r| r.at_ms).min().unwrap();
    // The 2 s hold did apply (a margin of 0.3 s for clocks read in two places).
    assert!(first_good >= answered + 1_700, "good request {} ms after the 503", first_good - answered);
    // The record itself waits its full Retry-After, up to its deadline: past it, dead `expired`.
    let dead = read_topic(&topics.dead, 1, Duration::from_secs(30)).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].header("hookrelay-reason"), Some("expired"), "{:?}", dead[0].headers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_bomb_is_invalid_and_the_partition_keeps_flowing() {
    let receiver = Receiver::start(Behaviour::default()).await;
    let topics = Topics::create(1, &[LONG_TIER]).await;
    let _relay = Relay::start(&Config::new(&topics), &[]).await;
    let url = receiver.url("/h");
    // 60,000 unique names (about 0.8 MB): quadratic to merge before, and past the ~24.5k
    // entries at which the request's header map panics.
    let bomb: serde_json::Map<String, serde_json::Value> = (0..60_000).map(|i| (format!("x-{i}"), "".into())).collect();
    let bomb = serde_json::json!({"url": url, "payload": 1, "id": "bomb", "headers": bomb}).to_string();
    let wide: serde_json::Map<String, serde_json::Value> = (0..65).map(|i| (format!("x-{i}"), "v".into())).collect();
    let wide = serde_json::json!({"url": url, "payload": 1, "id": "wide", "headers": wide}).to_string();
    let big = serde_json::json!({"url": url, "payload": 1, "id": "big", "headers": {"x-big": "v".repeat(17_000)}});
    let ids: Vec<String> = (0..5).map(|i| format!("good-{i}")).collect();
    let mut values = vec![bomb, wide, big.to_string()];
    values.extend(ids.iter().map(|id| good(&format!(r#""url":"{url}""#), id)));
    produce_values(&topics.events, &values).await;
    all_delivered(&receiver, &ids, Duration::from_secs(60)).await;
    let dead = read_topic(&topics.dead, 3, Duration::from_secs(30)).await;
    assert_eq!(dead.len(), 3);
    for record in &dead {
        assert_eq!(record.header("hookrelay-reason"), Some("invalid_event"), "{:?}", record.headers);
        let error = record.header("hookrelay-last-error").unwrap();
        assert!(error.contains("\"headers\"") && error.contains("over the limit"), "{error}");
    }
    assert_eq!(receiver.count(), ids.len(), "no request for the refused events");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_endpoint_may_reach_private_networks_while_inline_urls_stay_guarded() {
    let receiver = Receiver::start(Behaviour::default()).await;
    let topics = Topics::create(1, &[LONG_TIER]).await;
    let config = Config::new(&topics)
        .set("delivery.allow_private_networks", false)
        .endpoint("internal", &receiver.url("/internal"))
        .set("endpoints.internal.allow_private_networks", true);
    let _relay = Relay::start(&config, &[]).await;
    let port = receiver.addr.port();
    let values = [
        good(r#""endpoint":"internal""#, "internal"),
        good(&format!(r#""url":"{}""#, receiver.url("/literal")), "literal"),
        good(&format!(r#""url":"http://localhost:{port}/named""#), "named"),
    ];
    produce_values(&topics.events, &values).await;
    all_delivered(&receiver, &["internal".to_string()], Duration::from_secs(60)).await;
    let dead = read_topic(&topics.dead, 2, Duration::from_secs(30)).await;
    assert_eq!(dead.len(), 2);
    for record in &dead {
        assert_eq!(record.header("hookrelay-reason"), Some("forbidden_target"), "{:?}", record.headers);
    }
    let named =
        dead.iter().find(|r| String::from_utf8_lossy(&r.value).contains("localhost")).expect("the localhost event");
    let error = named.header("hookrelay-last-error").unwrap();
    // The name is the producer's own; what it resolves to is internal DNS and stays out.
    assert!(error.contains("localhost resolves to a non-global address (loopback)"), "{error}");
    assert!(!error.contains("127.0.0.1") && !error.contains("::1"), "{error}");
    assert_eq!(receiver.count(), 1, "only the endpoint's request went out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_header_bomb_is_dead_with_its_value_and_key_and_without_its_headers() {
    let receiver = Receiver::start(Behaviour::default()).await;
    let topics = Topics::create(1, &[LONG_TIER]).await;
    let _relay = Relay::start(&Config::new(&topics).set("delivery.max_record_header_bytes", "8KiB"), &[]).await;
    let url = receiver.url("/h");
    let value = good(&format!(r#""url":"{url}""#), "bombed");
    // 1,000 record headers of 10 bytes each: 10 KB, over the 8 KiB limit.
    let names: Vec<String> = (0..1_000).map(|i| format!("k{i:04}")).collect();
    let headers: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "vvvvv")).collect();
    let producer = producer();
    let mut record = rdkafka::producer::FutureRecord::<str, [u8]>::to(&topics.events)
        .payload(value.as_bytes())
        .key("the-key")
        .partition(0);
    let mut owned = rdkafka::message::OwnedHeaders::new();
    for (key, value) in &headers {
        owned = owned.insert(rdkafka::message::Header { key, value: Some(*value) });
    }
    record = record.headers(owned);
    producer.send(record, Duration::from_secs(10)).await.expect("produce the bomb");
    let ids: Vec<String> = (0..3).map(|i| format!("good-{i}")).collect();
    produce_values(&topics.events, &ids.iter().map(|id| good(&format!(r#""url":"{url}""#), id)).collect::<Vec<_>>())
        .await;
    all_delivered(&receiver, &ids, Duration::from_secs(60)).await;
    let dead = read_topic(&topics.dead, 1, Duration::from_secs(30)).await;
    assert_eq!(dead.len(), 1);
    let record = &dead[0];
    assert_eq!(record.header("hookrelay-reason"), Some("invalid_event"));
    let error = record.header("hookrelay-last-error").unwrap();
    assert!(error.contains("record headers are 10000 bytes, over the limit of 8192: dropped"), "{error}");
    assert_eq!(record.value, value.as_bytes(), "the value kept");
    assert_eq!(record.key.as_deref(), Some(&b"the-key"[..]), "the key kept");
    assert!(record.headers.iter().all(|(k, _)| k.starts_with("hookrelay-")), "{:?}", record.headers.len());
    assert!(!receiver.delivered_ids().contains("bombed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_to_many_inline_hosts_make_at_most_twenty_messages_and_one_summary() {
    let ops = Receiver::start(Behaviour::default()).await;
    let topics = Topics::create(1, &[LONG_TIER]).await;
    let sink = table([("kind", "http".into()), ("url", ops.url("/ops").into()), ("format", "json".into())]);
    let config = Config::new(&topics)
        .set("delivery.allow_private_networks", false)
        .set("notify.window", "3s")
        .push("notify.sinks", sink);
    // 32 inline hosts, each refused by the guard at once (a private literal): 32 dead letters, 32 endpoints.
    let values: Vec<String> =
        (0..32).map(|i| format!(r#"{{"url":"http://10.0.0.{i}/x","payload":1,"id":"host-{i}"}}"#)).collect();
    produce_values(&topics.events, &values).await;
    let _relay = Relay::start(&config, &[]).await;
    let dead = read_topic(&topics.dead, values.len(), Duration::from_secs(60)).await;
    assert_eq!(dead.len(), values.len());
    eventually("twenty messages and the summary", Duration::from_secs(60), || (ops.count() >= 21).then_some(())).await;
    holds_for("nothing more", Duration::from_secs(4), || ops.count() == 21).await;
    let bodies: Vec<serde_json::Value> =
        ops.received().iter().map(|r| serde_json::from_slice(&r.body).expect("a JSON body")).collect();
    let summaries: Vec<_> = bodies.iter().filter(|b| b["text"].as_str().unwrap().starts_with("and ")).collect();
    assert_eq!(summaries.len(), 1, "{bodies:?}");
    let text = summaries[0]["text"].as_str().unwrap();
    // However the windows fell, every dead letter is counted once: 20 alone, the rest in the summary.
    let rolled = 32 - 20;
    assert!(text.starts_with(&format!("and {rolled} other endpoints: {rolled} webhooks failed")), "{text}");
}

#[test]
fn a_property_that_undoes_at_least_once_exits_64_naming_it_and_a_numeric_secret_is_accepted() {
    let (_dir, path, _) = write_config("[kafka.properties]\n\"enable.auto.offset.store\" = \"true\"\n");
    let output = std::process::Command::new(binary())
        .arg("--config")
        .arg(&path)
        .arg("check-config")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run hookrelay");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("kafka.properties.\"enable.auto.offset.store\": is set by the relay"), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    // A password of digits from the environment (a Kubernetes Secret, say) is its text, not an error.
    let (_dir, path, _) = write_config("[kafka]\nsecurity_protocol = \"sasl_plaintext\"\n");
    let output = std::process::Command::new(binary())
        .arg("--config")
        .arg(&path)
        .arg("check-config")
        .env("HOOKRELAY_KAFKA__SASL__MECHANISM", "PLAIN")
        .env("HOOKRELAY_KAFKA__SASL__USERNAME", "hookrelay")
        .env("HOOKRELAY_KAFKA__SASL__PASSWORD", "123456")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run hookrelay");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(!String::from_utf8_lossy(&output.stdout).contains("123456"), "shown redacted");
}
