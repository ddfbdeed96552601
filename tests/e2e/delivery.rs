//! The foundation: delivery, signing, invalid records, the first tier, offsets, the target guard, config errors.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use crate::harness::*;

const SECRET_A: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SECRET_B: &str = "whsec_c2Vjb25kLXNlY3JldC0xMjM0NTY3OA==";

/// The test config: inline URLs signed with `SECRET_A`.
fn config(topics: &Topics) -> Config {
    Config::new(topics).set("delivery.signing_secrets", vec![SECRET_A])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_events_over_several_partitions_arrive_signed() {
    let receiver = Receiver::start(Behaviour::default()).await;
    let topics = Topics::create(4, &[Duration::from_secs(3600)]).await;
    let config = config(&topics)
        .endpoint("two", &receiver.url("/two"))
        .set("endpoints.two.secrets", vec![SECRET_A, SECRET_B])
        .set("endpoints.two.headers", table([("x-tenant", "acme".into())]));
    let _relay = Relay::start(&config, &[]).await;
    let producer = producer();
    let total: usize = 200;
    let mut expected = HashMap::new();
    for i in 0..total as i32 {
        let payload = format!(r#"{{"n": {i}, "text": "héllo \u00e9 {i}", "nested": {{"list": [1, 2.5, null]}}}}"#);
        let (value, id) = match i % 3 {
            0 => (
                format!(r#"{{"url":"{}","payload":{payload},"id":"evt-{i}"}}"#, receiver.url("/one")),
                Some(format!("evt-{i}")),
            ),
            1 => (format!(r#"{{"endpoint":"two","payload":{payload},"id":"evt-{i}"}}"#), Some(format!("evt-{i}"))),
            _ => (format!(r#"{{"url":"{}","payload":{payload}}}"#, receiver.url("/one")), None),
        };
        let (partition, offset) =
            produce(&producer, &topics.events, Some(i % 4), Some(&format!("k{i}")), value.as_bytes()).await;
        let id = id.unwrap_or_else(|| format!("{}-{partition}-{offset}", topics.events));
        expected.insert(id, (payload, i % 3 == 1));
    }
    eventually("all events delivered", Duration::from_secs(60), || (receiver.count() >= total).then_some(())).await;
    let received = receiver.received();
    assert_eq!(received.len(), total, "each event exactly once when nothing fails");
    let ids: HashSet<_> = received.iter().map(|r| r.header("webhook-id").to_string()).collect();
    assert_eq!(ids.len(), total);
    for request in &received {
        let id = request.header("webhook-id");
        let (payload, two_secrets) = expected.get(id).unwrap_or_else(|| panic!("unexpected id {id}"));
        assert_eq!(request.body, payload.as_bytes(), "body is the payload byte for byte");
        assert_eq!(request.header("content-type"), "application/json");
        assert!(request.header("user-agent").starts_with("hookrelay/"));
        let signatures: Vec<_> = request.header("webhook-signature").split(' ').collect();
        verify(SECRET_A, request).unwrap_or_else(|e| panic!("signature of {id} refused: {e}"));
        if *two_secrets {
            assert_eq!(signatures.len(), 2, "one signature per secret");
            assert_eq!(request.path, "/two");
            assert_eq!(request.header("x-tenant"), "acme");
            verify(SECRET_B, request).unwrap_or_else(|e| panic!("second signature of {id} refused: {e}"));
        } else {
            assert_eq!(signatures.len(), 1);
            assert!(verify(SECRET_B, request).is_err(), "a secret that was not used must not verify");
        }
    }
    // Every partition's offsets are committed up to the end.
    for partition in 0..4 {
        let group = topics.group.clone();
        let topic = topics.events.clone();
        let end = total as i64 / 4;
        eventually("offsets committed to the end", Duration::from_secs(20), || {
            (committed(&group, &topic, partition) == Some(end)).then_some(())
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_records_go_to_the_dead_topic_and_do_not_stall_the_partition() {
    let receiver = Receiver::start(Behaviour::default()).await;
    let topics = Topics::create(1, &[Duration::from_secs(3600)]).await;
    let config = config(&topics).set("delivery.max_payload_bytes", 100);
    let url = receiver.url("/ok");
    let big = "x".repeat(200);
    let cases: Vec<(String, &str)> = vec![
        ("not json".into(), "not JSON"),
        ("[1,2,3]".into(), "not a JSON object"),
        (r#"{"payload":1}"#.into(), "exactly one of"),
        (format!(r#"{{"url":"{url}","endpoint":"x","payload":1}}"#), "exactly one of"),
        (r#"{"endpoint":"nope","payload":1}"#.into(), "unknown endpoint"),
        (r#"{"url":"ftp://example.com/x","payload":1}"#.into(), "bad url"),
        (format!(r#"{{"url":"{url}","payload":"{big}"}}"#), "over the limit"),
        (format!(r#"{{"url":"{url}","payload":1,"headers":{{"webhook-signature":"forged"}}}}"#), "bad header"),
        (format!(r#"{{"url":"{url}"}}"#), "missing \"payload\""),
    ];
    let _relay = Relay::start(&config, &[]).await;
    let producer = producer();
    let mut offsets = Vec::new();
    for (i, (value, _)) in cases.iter().enumerate() {
        offsets.push(produce(&producer, &topics.events, Some(0), Some(&format!("bad-{i}")), value.as_bytes()).await.1);
    }
    let good = format!(r#"{{"url":"{url}","payload":{{"ok":true}},"id":"good-1"}}"#);
    let (_, good_offset) = produce(&producer, &topics.events, Some(0), None, good.as_bytes()).await;

    eventually("the good record after the bad ones is delivered", Duration::from_secs(30), || {
        (receiver.count() == 1).then_some(())
    })
    .await;
    assert_eq!(receiver.received()[0].header("webhook-id"), "good-1");

    let dead = read_topic(&topics.dead, cases.len(), Duration::from_secs(30)).await;
    assert_eq!(dead.len(), cases.len(), "one dead letter per invalid record");
    // Records of a partition are worked on concurrently: match by origin offset, not by order.
    for record in &dead {
        let origin = record.header_i64("hookrelay-origin-offset");
        let i = offsets.iter().position(|&o| o == origin).expect("dead letter of a produced record");
        let (value, detail) = &cases[i];
        assert_eq!(record.value, value.as_bytes(), "value kept byte for byte");
        assert_eq!(record.key.as_deref(), Some(format!("bad-{i}").as_bytes()), "key kept");
        assert_eq!(record.header("hookrelay-reason"), Some("invalid_event"));
        let error = record.header("hookrelay-last-error").unwrap_or_default();
        assert!(error.contains(detail), "{value:?}: error {error:?} should mention {detail:?}");
        assert_eq!(record.header("hookrelay-origin-topic"), Some(topics.events.as_str()));
        assert_eq!(record.header("hookrelay-origin-partition"), Some("0"));
        assert_eq!(record.header("hookrelay-attempt"), Some("0"));
        assert_eq!(record.header_count("hookrelay-reason"), 1);
    }
    let origins: HashSet<i64> = dead.iter().map(|r| r.header_i64("hookrelay-origin-offset")).collect();
    assert_eq!(origins.len(), cases.len(), "each invalid record exactly once");
    let (group, topic) = (topics.group.clone(), topics.events.clone());
    eventually("offset committed past every record", Duration::from_secs(20), || {
        (committed(&group, &topic, 0) == Some(good_offset + 1)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_goes_to_the_first_tier_unchanged() {
    let receiver = Receiver::start(Behaviour { status: 503, ..Behaviour::default() }).await;
    let topics = Topics::create(2, &[Duration::from_secs(3600), Duration::from_secs(7200)]).await;
    let _relay = Relay::start(&config(&topics), &[]).await;
    let producer = producer();
    let value = format!(r#"{{"url":"{}","payload":{{"a": 1}}, "id": "evt-503"}}"#, receiver.url("/x"));
    let before = now_ms();
    let (partition, offset) = produce(&producer, &topics.events, Some(1), Some("the-key"), value.as_bytes()).await;
    let tier = read_topic(&topics.tiers[0].0, 1, Duration::from_secs(30)).await;
    assert_eq!(tier.len(), 1, "the record is on the first tier");
    let r = &tier[0];
    assert_eq!(r.value, value.as_bytes());
    assert_eq!(r.key.as_deref(), Some(&b"the-key"[..]));
    assert_eq!(r.header("hookrelay-attempt"), Some("1"));
    assert_eq!(r.header("hookrelay-last-status"), Some("503"));
    assert!(r.header("hookrelay-last-error").unwrap().starts_with("HTTP 503"));
    assert_eq!(r.header("hookrelay-origin-topic"), Some(topics.events.as_str()));
    assert_eq!(r.header_i64("hookrelay-origin-partition"), partition as i64);
    assert_eq!(r.header_i64("hookrelay-origin-offset"), offset);
    let first = r.header_i64("hookrelay-first-attempt-ms");
    assert!(first >= before && first <= now_ms());
    // Due one tier delay (+ at most 10 % jitter) after the routing decision, which falls between
    // the first attempt and the tier record's timestamp: bounds that do not depend on the machine's speed.
    let due = r.header_i64("hookrelay-due-ms");
    assert!(due >= first + 3_600_000, "due {due} is at least one tier delay after the attempt at {first}");
    assert!(
        due <= r.timestamp_ms + 3_600_000 + 360_000,
        "due {due} is at most one tier delay + 10 % jitter after routing at {}",
        r.timestamp_ms
    );
    assert_eq!(r.header_i64("hookrelay-deadline-ms"), first + 24 * 3_600_000, "default deadline: first attempt + 24h");
    assert!(r.header("hookrelay-reason").is_none());
    assert_eq!(receiver.count(), 1, "no second attempt before the tier's delay");
    let (group, topic) = (topics.group.clone(), topics.events.clone());
    eventually("offset committed once routed", Duration::from_secs(20), || {
        (committed(&group, &topic, partition) == Some(offset + 1)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_request_holds_the_committed_offset() {
    let receiver = Receiver::start(Behaviour { hold_marker: Some("HOLD".into()), ..Behaviour::default() }).await;
    let topics = Topics::create(1, &[Duration::from_secs(3600)]).await;
    let _relay = Relay::start(&config(&topics), &[]).await;
    let producer = producer();
    let mut offsets = Vec::new();
    for i in 0..10 {
        let marker = if i == 3 { "HOLD" } else { "go" };
        let value = format!(r#"{{"url":"{}","payload":{{"i":{i},"m":"{marker}"}}}}"#, receiver.url("/x"));
        offsets.push(produce(&producer, &topics.events, Some(0), None, value.as_bytes()).await.1);
    }
    eventually("all ten requests arrived (one held)", Duration::from_secs(30), || {
        (receiver.count() == 10).then_some(())
    })
    .await;
    let (group, topic) = (topics.group.clone(), topics.events.clone());
    let held = offsets[3];
    eventually("offset committed up to the held record", Duration::from_secs(20), || {
        (committed(&group, &topic, 0) == Some(held)).then_some(())
    })
    .await;
    // Later records are done; the commit must stay at the held one for a while.
    holds_for("the offset stays at the undecided (held) record", Duration::from_secs(2), || {
        committed(&group, &topic, 0) == Some(held)
    })
    .await;
    receiver.release();
    eventually("offset moves on once the held record answers", Duration::from_secs(20), || {
        (committed(&group, &topic, 0) == Some(offsets[9] + 1)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_targets_are_refused_when_the_guard_is_on() {
    let receiver = Receiver::start(Behaviour::default()).await;
    let topics = Topics::create(1, &[Duration::from_secs(3600)]).await;
    let config = config(&topics).set("delivery.allow_private_networks", false);
    let _relay = Relay::start(&config, &[]).await;
    let producer = producer();
    let port = receiver.addr.port();
    let targets = [
        format!("http://127.0.0.1:{port}/x"),
        format!("http://localhost:{port}/x"),
        format!("http://[::1]:{port}/x"),
        format!("http://169.254.169.254:{port}/latest"),
    ];
    for url in &targets {
        let value = format!(r#"{{"url":"{url}","payload":1}}"#);
        produce(&producer, &topics.events, Some(0), None, value.as_bytes()).await;
    }
    let dead = read_topic(&topics.dead, targets.len(), Duration::from_secs(30)).await;
    assert_eq!(dead.len(), targets.len());
    for record in &dead {
        assert_eq!(record.header("hookrelay-reason"), Some("forbidden_target"), "{:?}", record.headers);
        assert!(record.header("hookrelay-last-error").unwrap().contains("forbidden target"));
    }
    assert_eq!(receiver.count(), 0, "the guard let a request through");
}

#[test]
fn bad_config_exits_64_with_one_clear_line() {
    let cases = [
        ("[kafka]\nbrokerz = \"x\"\n", "brokerz"),
        ("[delivery]\ntimeout = \"soon\"\n", "timeout"),
        ("[endpoints.billing]\nurl = \"ftp://x\"\n", "endpoints.billing.url"),
        (
            "[[retry.tiers]]\ntopic = \"a\"\ndelay = \"2m\"\n[[retry.tiers]]\ntopic = \"b\"\ndelay = \"1m\"\n",
            "retry.tiers[1].delay",
        ),
        ("not toml at all [", "invalid"),
    ];
    for (text, expected) in cases {
        for command in [&["check-config"][..], &["run"][..]] {
            let (_dir, path, _) = write_config(text);
            let output =
                std::process::Command::new(binary()).arg("--config").arg(&path).args(command).output().unwrap();
            assert_eq!(output.status.code(), Some(64), "{text:?} {command:?}");
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr:?}");
            assert!(stderr.contains(expected), "{stderr:?} should mention {expected:?}");
        }
    }
    let output = std::process::Command::new(binary())
        .args(["check-config"])
        .env("HOOKRELAY_DELIVERY__MAX_IN_FLIGHT", "0")
        .current_dir(tempfile::tempdir().unwrap().path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&output.stderr).contains("delivery.max_in_flight"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_send_command_reaches_a_local_receiver() {
    let receiver = Receiver::start(Behaviour::default()).await;
    let topics = Topics::create(1, &[Duration::from_secs(3600)]).await;
    let config = config(&topics);
    let relay = Relay::start(&config, &[]).await;
    let (_dir, path, _) = write_config(&config.to_string());
    let output = std::process::Command::new(binary())
        .arg("--config")
        .arg(&path)
        .args(["send", "--url", &receiver.url("/smoke"), "--payload", r#"{"a":1}"#, "--id", "smoke-1"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stdout).contains(&format!("sent to {}", topics.events)));
    eventually("the smoke event arrives", Duration::from_secs(30), || (receiver.count() == 1).then_some(())).await;
    let got = &receiver.received()[0];
    assert_eq!(got.body, br#"{"a":1}"#);
    assert_eq!(got.header("webhook-id"), "smoke-1");
    verify(SECRET_A, got).unwrap();
    // Inline URLs are labelled by host and port, never by the full URL.
    let label =
        format!("hookrelay_deliveries_total{{endpoint=\"127.0.0.1:{}\",outcome=\"delivered\"}}", receiver.addr.port());
    eventually_async("the delivery is counted", Duration::from_secs(5), || async {
        metric(&relay.metrics().await, &label).filter(|&n| n == 1.0)
    })
    .await;
    assert!(!relay.metrics().await.contains("/smoke"), "a URL path leaked into a label");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_endpoint_does_not_take_every_slot() {
    // Ten slow records ahead of the fast ones: without the endpoint limit in
    // the partition loop they would hold all 4 slots until the slow endpoint answers.
    // The slow endpoint answers nothing until released, so "the fast ones did not wait"
    // is an order of events (all fast delivered before any slow answer), not a stopwatch.
    let slow = Receiver::start(Behaviour { hold_marker: Some("HOLD".into()), ..Behaviour::default() }).await;
    let fast = Receiver::start(Behaviour::default()).await;
    let topics = Topics::create(1, &[Duration::from_secs(3600)]).await;
    // A held request must not time out (and free its slot) while the fast ones are awaited (60 s below).
    let config = config(&topics)
        .set("delivery.max_in_flight_per_partition", 4)
        .endpoint("slow", &slow.url("/slow"))
        .set("endpoints.slow.max_in_flight", 2)
        .set("endpoints.slow.timeout", "120s");
    let _relay = Relay::start(&config, &[]).await;
    let producer = producer();
    for i in 0..10 {
        let value = format!(r#"{{"endpoint":"slow","payload":{{"HOLD":{i}}},"id":"slow-{i}"}}"#);
        produce(&producer, &topics.events, Some(0), None, value.as_bytes()).await;
    }
    // The slow records are in flight (and held) before the fast ones exist, so they are truly ahead.
    eventually("the slow endpoint holds its first requests", Duration::from_secs(30), || {
        (slow.count() >= 1).then_some(())
    })
    .await;
    for i in 0..10 {
        let value = format!(r#"{{"url":"{}","payload":{i},"id":"fast-{i}"}}"#, fast.url("/fast"));
        produce(&producer, &topics.events, Some(0), None, value.as_bytes()).await;
    }
    eventually("the fast records delivered while every slow request is held", Duration::from_secs(60), || {
        (fast.delivered_ids().len() == 10).then_some(())
    })
    .await;
    // Held requests never finish, so every request the slow receiver got is still in flight.
    let in_flight = slow.count();
    assert!(in_flight <= 2, "{in_flight} slow requests in flight at once, the endpoint's limit is 2");
    slow.release();
    eventually("the slow ones finish once released", Duration::from_secs(30), || {
        (slow.delivered_ids().len() == 10).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_route_produce_holds_the_offset() {
    let failing = Receiver::start(Behaviour { status: 503, ..Behaviour::default() }).await;
    let ok = Receiver::start(Behaviour::default()).await;
    let topics = Topics::create(1, &[]).await;
    // The tier does not exist and the producer may not create it: routing the
    // 503 fails until it is created (a size error would be a dead letter instead).
    let tier = format!("{}.missing-tier", topics.events);
    let config =
        Config::new(&topics).tier(&tier, Duration::from_secs(3600)).set("kafka.route_held_not_ready_after", "2s").set(
            "kafka.properties",
            table([("allow.auto.create.topics", "false".into()), ("topic.metadata.propagation.max.ms", "1000".into())]),
        );
    let relay = Relay::start(&config, &["--role", "events,dead"]).await;
    let producer = producer();
    let stuck = format!(r#"{{"url":"{}","payload":"stuck","id":"stuck"}}"#, failing.url("/x"));
    let (_, stuck_offset) = produce(&producer, &topics.events, Some(0), None, stuck.as_bytes()).await;
    for i in 0..5 {
        let value = format!(r#"{{"url":"{}","payload":{i},"id":"after-{i}"}}"#, ok.url("/x"));
        produce(&producer, &topics.events, Some(0), None, value.as_bytes()).await;
    }
    eventually("later records are delivered", Duration::from_secs(20), || {
        (ok.delivered_ids().len() == 5).then_some(())
    })
    .await;
    let label = format!("hookrelay_produce_failures_total{{topic=\"{tier}\"}}");
    eventually_async("the failed produce is counted and retried", Duration::from_secs(30), || async {
        metric(&relay.metrics().await, &label).filter(|&n| n >= 2.0)
    })
    .await;
    // Held, visibly: the gauges say since when, and /ready turns 503 past the bound.
    let (records, seconds) = (
        format!("hookrelay_route_held_records{{topic=\"{tier}\"}}"),
        format!("hookrelay_route_held_seconds{{topic=\"{tier}\"}}"),
    );
    eventually_async("the held route shows in the gauges", Duration::from_secs(20), || async {
        let text = relay.metrics().await;
        (metric(&text, &records) == Some(1.0) && metric(&text, &seconds).is_some_and(|s| s >= 3.0)).then_some(())
    })
    .await;
    let ready = format!("http://{}/ready", relay.admin);
    let answer = reqwest::get(&ready).await.unwrap();
    assert_eq!(answer.status(), 503);
    assert!(answer.text().await.unwrap().contains("held"));
    let (group, topic) = (topics.group.clone(), topics.events.clone());
    holds_for("the offset stays at or before the undecided record", Duration::from_secs(2), || {
        committed(&group, &topic, 0).is_none_or(|c| c <= stuck_offset)
    })
    .await;
    // Once the tier exists the route goes through: committed, ready again.
    create_topics(std::slice::from_ref(&tier), 1).await;
    eventually("the offset moves past the record once routed", Duration::from_secs(90), || {
        committed(&group, &topic, 0).filter(|&c| c > stuck_offset + 5)
    })
    .await;
    assert_eq!(read_topic(&tier, 1, Duration::from_secs(10)).await.len(), 1);
    eventually_async("ready again", Duration::from_secs(10), || async {
        reqwest::get(&ready).await.ok().filter(|r| r.status().is_success())
    })
    .await;
    // The gauges are refreshed every second.
    eventually_async("the held gauge back at 0", Duration::from_secs(10), || async {
        (metric(&relay.metrics().await, &seconds) == Some(0.0)).then_some(())
    })
    .await;
}
