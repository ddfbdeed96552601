//! Nothing stuck: records that can never be delivered are decided at once, odd headers and panics do not
//! pin an offset, a far due time does not hold a tier partition, a revoke past its grace cancels its work.

use std::time::Duration;

use crate::harness::*;

/// The test config: no circuit breaker, so every failure makes its attempt.
fn config(topics: &Topics) -> Config {
    Config::new(topics).set("circuit.enabled", false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_with_a_control_character_is_dead_at_once() {
    let receiver = Receiver::start(Behaviour::default()).await;
    let topics = Topics::create(1, &[Duration::from_secs(1)]).await;
    let _relay = Relay::start(&config(&topics), &[]).await;
    let producer = producer();
    let bad = format!(r#"{{"url":"{}","payload":1,"id":"evt\u0001x"}}"#, receiver.url("/x"));
    let good = format!(r#"{{"url":"{}","payload":2,"id":"evt-good"}}"#, receiver.url("/x"));
    produce(&producer, &topics.events, Some(0), None, bad.as_bytes()).await;
    produce(&producer, &topics.events, Some(0), None, good.as_bytes()).await;

    let dead = read_topic(&topics.dead, 1, Duration::from_secs(30)).await;
    assert_eq!(dead.len(), 1, "one dead letter");
    assert_eq!(dead[0].value, bad.as_bytes(), "the value byte for byte");
    assert_eq!(dead[0].header("hookrelay-reason"), Some("invalid_event"));
    assert!(dead[0].header("hookrelay-last-error").is_some_and(|e| e.contains("\"id\"")), "{:?}", dead[0].headers);
    assert_eq!(dead[0].header("hookrelay-attempt"), Some("0"), "never attempted");
    eventually("both offsets committed", Duration::from_secs(20), || {
        (committed(&topics.group, &topics.events, 0) == Some(2)).then_some(())
    })
    .await;
    assert_eq!(receiver.delivered_ids(), ["evt-good".to_string()].into(), "only the good one reached the receiver");
    assert_eq!(receiver.count(), 1);
    assert!(read_topic(&topics.tiers[0].0, 1, Duration::from_secs(2)).await.is_empty(), "never sent to a tier");
}

/// A header key that is not UTF-8 (Latin-1 "clé"), as clients other than Java can write.
const ODD_KEY: &[u8] = b"cl\xe9";

/// Produces `value` to `partition` with a header whose key is not UTF-8, through
/// the relay's own byte-keyed writer (rdkafka's `insert` takes only `&str` keys).
async fn produce_with_odd_header(producer: &rdkafka::producer::FutureProducer, topic: &str, value: &[u8]) {
    use rdkafka::message::OwnedHeaders;
    use rdkafka::producer::FutureRecord;
    let headers = hookrelay::event::headers::add(OwnedHeaders::new(), ODD_KEY, Some(b"\x00\xff value"));
    let headers = hookrelay::event::headers::add(headers, b"traceparent", Some(b"00-abc"));
    let record = FutureRecord::<str, [u8]>::to(topic).payload(value).partition(0).headers(headers);
    producer.send(record, Duration::from_secs(10)).await.expect("produce");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_key_that_is_not_utf8_is_kept_byte_for_byte_and_never_stalls() {
    // The first attempt of each event fails: the odd record crosses a tier consumer too.
    let receiver = Receiver::start(Behaviour { fail_first: 1, ..Behaviour::default() }).await;
    let topics = Topics::create(1, &[Duration::from_secs(1)]).await;
    let mut relay = Relay::start(&config(&topics), &[]).await;
    let producer = producer();
    let good = format!(r#"{{"url":"{}","payload":1,"id":"odd-good"}}"#, receiver.url("/x"));
    produce_with_odd_header(&producer, &topics.events, good.as_bytes()).await;
    produce_with_odd_header(&producer, &topics.events, b"not json").await;
    let after = format!(r#"{{"url":"{}","payload":2,"id":"plain-after"}}"#, receiver.url("/x"));
    produce(&producer, &topics.events, Some(0), None, after.as_bytes()).await;

    eventually("both events delivered on their second attempt", Duration::from_secs(30), || {
        (receiver.delivered_ids().len() == 2).then_some(())
    })
    .await;
    eventually("every event offset committed", Duration::from_secs(20), || {
        (committed(&topics.group, &topics.events, 0) == Some(3)).then_some(())
    })
    .await;
    eventually("the tier offsets committed", Duration::from_secs(20), || {
        (committed(&format!("{}.{}", topics.group, topics.tiers[0].0), &topics.tiers[0].0, 0) == Some(2)).then_some(())
    })
    .await;
    let odd = (ODD_KEY.to_vec(), Some(b"\x00\xff value".to_vec()));
    let tier: Vec<_> =
        read_topic(&topics.tiers[0].0, 2, Duration::from_secs(30)).await.into_iter().map(|r| r.raw_headers).collect();
    assert_eq!(tier.len(), 2);
    // The two events fail side by side: their tier records come in either order.
    let (with_odd, plain): (Vec<_>, Vec<_>) = tier.into_iter().partition(|headers| headers.contains(&odd));
    assert_eq!((with_odd.len(), plain.len()), (1, 1), "the odd header is on one tier record, the plain one has none");
    assert_eq!(with_odd[0][0], odd, "the odd header is kept byte for byte on the tier record");
    assert_eq!(with_odd[0][1], (b"traceparent".to_vec(), Some(b"00-abc".to_vec())));
    let dead: Vec<_> =
        read_topic(&topics.dead, 1, Duration::from_secs(30)).await.into_iter().map(|r| r.raw_headers).collect();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0][0], odd, "and on the dead record");
    assert!(dead[0].contains(&(b"hookrelay-reason".to_vec(), Some(b"invalid_event".to_vec()))));
    assert!(relay.child.try_wait().unwrap().is_none(), "the relay is alive");
    assert!(!relay.log_text().contains("panicked"), "no panic:\n{}", relay.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_retry_after_does_not_block_the_tier_partition() {
    // One record asks for 20 s; the others fail twice, so they reach the last
    // tier (2 s) right behind it, on the same single partition.
    let far = Receiver::start(Behaviour {
        fail_first: 1,
        fail_status: 429,
        retry_after: Some("20".into()),
        ..Behaviour::default()
    })
    .await;
    let others = Receiver::start(Behaviour { fail_first: 2, ..Behaviour::default() }).await;
    let topics = Topics::create(1, &[Duration::from_secs(1), Duration::from_secs(2)]).await;
    let _relay = Relay::start(&config(&topics), &[]).await;
    let producer = producer();
    let value = format!(r#"{{"url":"{}","payload":0,"id":"far"}}"#, far.url("/far"));
    produce(&producer, &topics.events, Some(0), None, value.as_bytes()).await;
    let n = 5;
    for i in 0..n {
        let value = format!(r#"{{"url":"{}","payload":{i},"id":"near-{i}"}}"#, others.url("/near"));
        produce(&producer, &topics.events, Some(0), None, value.as_bytes()).await;
    }
    eventually("the far one attempted again", Duration::from_secs(60), || (far.count() >= 2).then_some(())).await;
    let far_requests = far.received();
    let asked_at = far_requests[0].at_ms + 20_000;
    assert!(far_requests[1].at_ms >= asked_at, "attempted {} ms early", asked_at - far_requests[1].at_ms);
    assert_eq!(far.delivered_ids().len(), 1);
    eventually("the others delivered", Duration::from_secs(30), || (others.delivered_ids().len() == n).then_some(()))
        .await;
    // Each near record is due about 3 s after its first attempt; held behind the
    // far one it would wait until about 1 s before the far one's due time.
    for request in others.received().iter().filter(|r| r.status == 200) {
        assert!(
            request.at_ms < asked_at - 8_000,
            "{} delivered {} ms before the far due time: held behind it",
            request.header("webhook-id"),
            asked_at - request.at_ms
        );
    }
    // The far record lapped the last tier unattempted, its due time and attempt count kept.
    let last_tier = read_topic(&topics.tiers[1].0, 2 * n + 20, Duration::from_secs(5)).await;
    let laps: Vec<_> = last_tier.iter().filter(|r| r.value == value.as_bytes()).collect();
    assert!(laps.len() >= 2, "the far record lapped: {} record(s) on the last tier", laps.len());
    for lap in &laps {
        assert_eq!(lap.header("hookrelay-attempt"), Some("1"));
        assert_eq!(lap.header_i64("hookrelay-due-ms"), laps[0].header_i64("hookrelay-due-ms"));
    }
    let near_last = others.received().iter().filter(|r| r.status == 200).map(|r| r.at_ms).max().unwrap();
    println!(
        "near records delivered by +{} ms, far re-attempted at +{} ms (asked +20000), {} laps",
        near_last - far_requests[0].at_ms,
        far_requests[1].at_ms - far_requests[0].at_ms,
        laps.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoke_past_its_grace_cancels_its_work() {
    // Both requests are held; when released they fail, so each attempt that is
    // still running writes a tier record.
    let receiver =
        Receiver::start(Behaviour { status: 503, hold_marker: Some("hold".into()), ..Behaviour::default() }).await;
    let topics = Topics::create(2, &[Duration::from_secs(3600)]).await;
    let config = config(&topics).set("shutdown.grace", "1s");
    let first = Relay::start(&config, &[]).await;
    let producer = producer();
    for partition in 0..2 {
        let value = format!(r#"{{"url":"{}","payload":"hold","id":"held-{partition}"}}"#, receiver.url("/x"));
        produce(&producer, &topics.events, Some(partition), None, value.as_bytes()).await;
    }
    eventually("both held by the first relay", Duration::from_secs(30), || (receiver.count() == 2).then_some(())).await;
    // A second relay joins: one partition moves to it, its record still in flight
    // in the first relay past the 1 s grace, and the new owner attempts it again.
    let second = Relay::start(&config, &[]).await;
    eventually("the moved record attempted by the new owner", Duration::from_secs(60), || {
        (receiver.count() == 3).then_some(())
    })
    .await;
    let moved = receiver.received()[2].header("webhook-id").to_string();
    receiver.release();
    // Each event fails once per live attempt: one tier record each, not two.
    let tier = read_topic(&topics.tiers[0].0, 4, Duration::from_secs(15)).await;
    let mut ids: Vec<String> = tier
        .iter()
        .map(|r| serde_json::from_slice::<serde_json::Value>(&r.value).unwrap()["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    assert_eq!(ids, vec!["held-0", "held-1"], "{moved} was cancelled in the first relay, not routed twice");
    assert!(
        first.log_text().contains("cancelled its in-flight records"),
        "the first relay says it cancelled:\n{}",
        first.log_text()
    );
    drop(second);
}
