//! Ordered delivery per key (`ordering = "key"`): each key's receipts in offset order, also across in-place
//! retries, a rebalance and an expiry; a failing key holds back only itself.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

use crate::harness::*;

/// An event of key `key`, number `n` in its key's offset order, to the endpoint `ordered`.
fn event(key: &str, n: usize) -> Vec<u8> {
    format!(r#"{{"endpoint":"ordered","id":"{key}-{n}","payload":{{"k":"{key}","n":{n}}}}}"#).into_bytes()
}

/// `(record key, value, partition)` produced in this order by one idempotent producer; all acknowledged.
async fn produce_in_order(topic: &str, records: &[(String, Vec<u8>, i32)]) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    let mut acks = Vec::new();
    for (key, value, partition) in records {
        let record = FutureRecord::to(topic).key(key.as_str()).payload(value.as_slice()).partition(*partition);
        acks.push(producer.send_result(record).map_err(|(e, _)| e).expect("enqueued"));
    }
    for ack in acks {
        ack.await.expect("not cancelled").expect("acknowledged");
    }
}

/// One request as the receiver saw it: (n, answered 2xx, when).
type Receipt = (usize, bool, i64);

/// Every request per key, in arrival order.
fn receipts(receiver: &Receiver) -> BTreeMap<String, Vec<Receipt>> {
    let mut by_key: BTreeMap<String, Vec<Receipt>> = BTreeMap::new();
    for r in receiver.received() {
        let body: serde_json::Value = serde_json::from_slice(&r.body).expect("a JSON payload");
        let (key, n) = (body["k"].as_str().unwrap().to_string(), body["n"].as_u64().unwrap() as usize);
        by_key.entry(key).or_default().push((n, (200..300).contains(&r.status), r.at_ms));
    }
    by_key
}

/// Requests of a key that arrived before every earlier event of the key was
/// delivered at least once (a repeat after a rebalance is not one).
fn violations(receipts: &[Receipt]) -> usize {
    let mut delivered = HashSet::new();
    let (mut next, mut violations) = (0, 0);
    for &(n, ok, _) in receipts {
        if n > next {
            violations += 1;
        }
        if ok {
            delivered.insert(n);
            while delivered.contains(&next) {
                next += 1;
            }
        }
    }
    violations
}

#[test]
fn violations_count_a_later_event_before_an_earlier_one_was_delivered() {
    assert_eq!(violations(&[(0, false, 0), (0, true, 0), (1, true, 0), (1, true, 0), (2, true, 0)]), 0);
    assert_eq!(violations(&[(0, true, 0), (1, true, 0), (0, true, 0), (1, true, 0)]), 0, "repeats are fine");
    assert_eq!(violations(&[(0, false, 0), (1, true, 0), (0, true, 0)]), 1, "1 went while 0 was failing");
    assert_eq!(violations(&[(1, true, 0), (0, true, 0), (2, true, 0)]), 1);
}

fn ordered(topics: &Topics, receiver: &Receiver) -> Config {
    Config::new(topics).endpoint("ordered", &receiver.url("/hook")).set("endpoints.ordered.ordering", "key")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_key_holds_back_only_itself_and_every_key_keeps_its_order() {
    const PER_KEY: usize = 200;
    // Key A's first two requests fail; the in-place retries wait the tiers' delays (3 s, then 5 s).
    let failing = Behaviour { fail_matching: Some((r#""k":"A""#.into(), 2)), ..Behaviour::default() };
    let receiver = Receiver::start(failing).await;
    let topics = Topics::create(1, &[Duration::from_secs(3), Duration::from_secs(5)]).await;
    let records: Vec<_> = (0..PER_KEY).flat_map(|n| ["A", "B", "C"].map(|k| (k.to_string(), event(k, n), 0))).collect();
    produce_in_order(&topics.events, &records).await;
    let _relay = Relay::start(&ordered(&topics, &receiver), &[]).await;

    eventually("every event delivered", Duration::from_secs(120), || {
        (receiver.delivered_ids().len() == 3 * PER_KEY).then_some(())
    })
    .await;
    let by_key = receipts(&receiver);
    for (key, receipts) in &by_key {
        let bad = violations(receipts);
        let delivered: Vec<usize> = receipts.iter().filter(|r| r.1).map(|r| r.0).collect();
        println!("key {key}: {} requests, {} delivered, ordering violations: {bad}", receipts.len(), delivered.len());
        assert_eq!(bad, 0, "key {key} out of order: {receipts:?}");
        assert_eq!(delivered, (0..PER_KEY).collect::<Vec<_>>(), "key {key}: each once, in offset order");
    }
    let a = &by_key["A"];
    assert_eq!(a.iter().filter(|r| !r.1).map(|r| r.0).collect::<Vec<_>>(), vec![0, 0], "A-0 failed twice");
    // The tiers' delays are the timers of the retries in place (never earlier; jitter only adds).
    assert!(a[1].2 - a[0].2 >= 3_000 && a[2].2 - a[1].2 >= 5_000, "retried after 3 s and 5 s: {:?}", &a[..3]);
    let a_recovered = a[2].2;
    for key in ["B", "C"] {
        let last = by_key[key].iter().map(|r| r.2).max().unwrap();
        println!("key {key} finished {} ms before A recovered", a_recovered - last);
        assert!(last < a_recovered, "key {key} finished after A recovered");
    }
    // Nothing went to a tier: ordered records are retried in place.
    for (tier, _) in &topics.tiers {
        assert!(read_topic(tier, 1, Duration::from_secs(2)).await.is_empty(), "a record in {tier}");
    }
    eventually("all offsets committed", Duration::from_secs(20), || {
        (committed(&topics.group, &topics.events, 0) == Some(3 * PER_KEY as i64)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebalance_mid_stream_keeps_each_keys_order() {
    const PER_KEY: usize = 150;
    let keys = ["K0", "K1", "K2", "K3"];
    // A slow receiver, so the stream is still running when the second relay joins;
    // K0 fails three times, so it is waiting in place during the rebalance.
    let behaviour = Behaviour {
        delay: Duration::from_millis(20),
        fail_matching: Some((r#""k":"K0""#.into(), 3)),
        ..Behaviour::default()
    };
    let receiver = Receiver::start(behaviour).await;
    let topics = Topics::create(4, &[Duration::from_secs(1), Duration::from_secs(2)]).await;
    let records: Vec<_> = (0..PER_KEY)
        .flat_map(|n| keys.iter().enumerate().map(move |(p, k)| (k.to_string(), event(k, n), p as i32)))
        .collect();
    produce_in_order(&topics.events, &records).await;
    let config = ordered(&topics, &receiver);
    let _first = Relay::start(&config, &[]).await;
    eventually("the stream under way", Duration::from_secs(60), || (receiver.count() >= 100).then_some(())).await;
    let joined_at = receiver.count();
    let second = Relay::start(&config, &[]).await;

    eventually("every event delivered", Duration::from_secs(180), || {
        (receiver.delivered_ids().len() == keys.len() * PER_KEY).then_some(())
    })
    .await;
    let delivered_by_second =
        metric(&second.metrics().await, r#"hookrelay_deliveries_total{endpoint="ordered",outcome="delivered"}"#);
    println!("second relay joined after {joined_at} requests and delivered {delivered_by_second:?}");
    assert!(delivered_by_second.unwrap_or(0.0) > 0.0, "the second relay took over partitions mid-stream");
    let mut total = 0;
    for (key, receipts) in &receipts(&receiver) {
        let bad = violations(receipts);
        let delivered = receipts.iter().filter(|r| r.1).count();
        println!("key {key}: {delivered} delivered ({} repeats), ordering violations: {bad}", delivered - PER_KEY);
        assert_eq!(bad, 0, "key {key} out of order");
        total += bad;
    }
    assert_eq!(total, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_blocked_past_its_deadline_goes_dead_expired_and_the_next_follow() {
    // A-0 always fails; the deadline (3 s after the first attempt) ends its retries in place.
    let failing = Behaviour { fail_matching: Some((r#""k":"A","n":0}"#.into(), usize::MAX)), ..Behaviour::default() };
    let receiver = Receiver::start(failing).await;
    let topics = Topics::create(1, &[Duration::from_secs(1), Duration::from_secs(2)]).await;
    let records: Vec<_> = (0..5).flat_map(|n| ["A", "B"].map(|k| (k.to_string(), event(k, n), 0))).collect();
    produce_in_order(&topics.events, &records).await;
    let config = ordered(&topics, &receiver).set("retry.max_age", "3s").set("circuit.enabled", false);
    let _relay = Relay::start(&config, &[]).await;

    let dead = read_topic(&topics.dead, 1, Duration::from_secs(60)).await;
    let dead = dead.first().expect("A-0 in the dead topic");
    assert_eq!(dead.header("hookrelay-reason"), Some("expired"));
    assert_eq!(dead.header("hookrelay-origin-offset"), Some("0"));
    assert_eq!(dead.key.as_deref(), Some(&b"A"[..]), "the record key is kept");
    assert!(dead.header_i64("hookrelay-attempt") >= 2, "retried in place before it expired");
    assert_eq!(dead.header("hookrelay-last-status"), Some("503"));
    eventually("A-1..A-4 and B delivered", Duration::from_secs(30), || {
        (receiver.delivered_ids().len() == 9).then_some(())
    })
    .await;
    let by_key = receipts(&receiver);
    let a = &by_key["A"];
    let last_a0 = a.iter().filter(|r| r.0 == 0).map(|r| r.2).max().unwrap();
    let next: Vec<_> = a.iter().filter(|r| r.0 > 0).collect();
    assert_eq!(next.iter().map(|r| r.0).collect::<Vec<_>>(), vec![1, 2, 3, 4], "the next ones follow, in order");
    assert!(next[0].2 >= last_a0 && next[0].2 >= dead.timestamp_ms, "A-1 only after A-0 was set aside");
    assert_eq!(violations(&by_key["B"]), 0);
    assert!(by_key["B"].iter().all(|r| r.2 < next[0].2), "B did not wait for A");
    eventually("all offsets committed", Duration::from_secs(20), || {
        (committed(&topics.group, &topics.events, 0) == Some(10)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_waiting_behind_a_key_are_bounded_and_the_pause_is_visible() {
    // Read-ahead 8: at 4 x 8 records waiting behind key A (its head retried in place
    // after 4 s) the partition pauses with reason "ordered", then all goes on in order.
    // B's records around A's are not held by A.
    let receiver =
        Receiver::start(Behaviour { fail_matching: Some((r#""k":"A""#.into(), 1)), ..Behaviour::default() }).await;
    let topics = Topics::create(1, &[Duration::from_secs(4)]).await;
    let mut records: Vec<_> = (0..5).map(|n| ("B".to_string(), event("B", n), 0)).collect();
    records.extend((0..100).map(|n| ("A".to_string(), event("A", n), 0)));
    records.extend((5..10).map(|n| ("B".to_string(), event("B", n), 0)));
    produce_in_order(&topics.events, &records).await;
    let config = ordered(&topics, &receiver).set("delivery.max_read_ahead_per_partition", 8);
    let relay = Relay::start(&config, &[]).await;

    let paused = r#"hookrelay_paused_partitions{reason="ordered",role="events"}"#;
    eventually_async("the partition paused for records behind key A", Duration::from_secs(30), || async {
        (metric(&relay.metrics().await, paused) == Some(1.0)).then_some(())
    })
    .await;
    // (What was fetched before the pause is worked on: the pause stops reading, the bound is on memory.)
    eventually("every event delivered", Duration::from_secs(60), || {
        (receiver.delivered_ids().len() == 110).then_some(())
    })
    .await;
    eventually_async("the pause ended", Duration::from_secs(10), || async {
        (metric(&relay.metrics().await, paused) == Some(0.0)).then_some(())
    })
    .await;
    for (key, receipts) in &receipts(&receiver) {
        assert_eq!(violations(receipts), 0, "key {key} out of order");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_circuit_makes_ordered_keys_wait_in_place_not_go_to_a_tier() {
    let receiver = Receiver::start(Behaviour { status: 503, ..Behaviour::default() }).await;
    let topics = Topics::create(1, &[Duration::from_secs(1), Duration::from_secs(2)]).await;
    let records: Vec<_> = (0..50).flat_map(|n| ["A", "B", "C"].map(|k| (k.to_string(), event(k, n), 0))).collect();
    produce_in_order(&topics.events, &records).await;
    let config = ordered(&topics, &receiver).set("circuit.failure_threshold", 3).set("circuit.cool_down", "2s");
    let relay = Relay::start(&config, &[]).await;

    let deferred = r#"hookrelay_deliveries_total{endpoint="ordered",outcome="deferred"}"#;
    eventually_async("the circuit opened and deferred ordered records", Duration::from_secs(30), || async {
        (metric(&relay.metrics().await, deferred).unwrap_or(0.0) > 0.0).then_some(())
    })
    .await;
    receiver.set(|b| b.status = 200);
    eventually("every event delivered once the receiver is back", Duration::from_secs(60), || {
        (receiver.delivered_ids().len() == 150).then_some(())
    })
    .await;
    for (key, receipts) in &receipts(&receiver) {
        assert_eq!(violations(receipts), 0, "key {key} out of order");
    }
    for (tier, _) in &topics.tiers {
        assert!(read_topic(tier, 1, Duration::from_secs(2)).await.is_empty(), "a record in {tier}");
    }
    assert!(relay.log_text().contains("retried in place (ordered key)"), "the wait is logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_waiting_in_place_holds_the_commit_and_is_read_again_after_a_restart() {
    // A-0 fails once and would wait a minute in place: a SIGTERM does not wait for it,
    // nothing past it is committed, and the next relay delivers it before A-1.
    let receiver =
        Receiver::start(Behaviour { fail_matching: Some((r#""k":"A""#.into(), 1)), ..Behaviour::default() }).await;
    let topics = Topics::create(1, &[Duration::from_secs(60)]).await;
    let records: Vec<_> = (0..2).flat_map(|n| ["A", "B"].map(|k| (k.to_string(), event(k, n), 0))).collect();
    produce_in_order(&topics.events, &records).await;
    let config = ordered(&topics, &receiver);
    let mut first = Relay::start(&config, &[]).await;
    eventually("B delivered while A-0 waits", Duration::from_secs(30), || {
        let ids = receiver.delivered_ids();
        (ids.contains("B-0") && ids.contains("B-1") && receiver.count() == 3).then_some(())
    })
    .await;
    assert_eq!(first.terminate(Duration::from_secs(40)), Some(0), "a clean stop, not waiting for A-0's minute");
    assert_eq!(committed(&topics.group, &topics.events, 0).unwrap_or(0), 0, "the commit waits at A-0");
    assert!(!receiver.delivered_ids().contains("A-1"), "A-1 waited behind A-0");

    let _second = Relay::start(&config, &[]).await;
    eventually("A-0 and A-1 delivered by the next relay", Duration::from_secs(30), || {
        let ids = receiver.delivered_ids();
        (ids.contains("A-0") && ids.contains("A-1")).then_some(())
    })
    .await;
    for (key, receipts) in &receipts(&receiver) {
        assert_eq!(violations(receipts), 0, "key {key} out of order: {receipts:?}");
    }
    eventually("all offsets committed", Duration::from_secs(20), || {
        (committed(&topics.group, &topics.events, 0) == Some(4)).then_some(())
    })
    .await;
}
