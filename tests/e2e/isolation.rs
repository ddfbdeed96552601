//! One receiver that cannot keep up must not hold anyone else back: past
//! `delivery.max_waiting_per_endpoint` its records are deferred to the next tier.

use std::time::Duration;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saturated_endpoint_overflows_to_the_tier_and_the_others_flow() {
    // The slow receiver holds every request until released: its 2 slots stay taken.
    let slow = Receiver::start(Behaviour { hold_marker: Some("slow".into()), ..Behaviour::default() }).await;
    let fast = Receiver::start(Behaviour::default()).await;
    // One partition: every record shares one read-ahead, the worst case for head-of-line blocking.
    let topics = Topics::create(1, &[Duration::from_secs(60)]).await;
    let config = Config::new(&topics)
        .set("delivery.max_in_flight_per_endpoint", 2)
        .set("delivery.max_waiting_per_endpoint", 8)
        .set("delivery.max_read_ahead_per_partition", 64);
    let relay = Relay::start(&config, &[]).await;
    let producer = producer();
    let (n_slow, n_fast) = (100, 100);
    for i in 0..n_slow.max(n_fast) {
        if i < n_slow {
            let value = format!(r#"{{"url":"{}","payload":"slow","id":"slow-{i}"}}"#, slow.url("/s"));
            produce(&producer, &topics.events, Some(0), None, value.as_bytes()).await;
        }
        if i < n_fast {
            let value = format!(r#"{{"url":"{}","payload":"fast","id":"fast-{i}"}}"#, fast.url("/f"));
            produce(&producer, &topics.events, Some(0), None, value.as_bytes()).await;
        }
    }
    // Every fast record is delivered while the slow receiver still holds its first requests:
    // without the overflow rule the 64-record read-ahead fills with slow records and stops.
    eventually("all fast records delivered", Duration::from_secs(60), || {
        (fast.delivered_ids().len() == n_fast).then_some(())
    })
    .await;
    // (The receiver logs a held request when it arrives; none was answered yet.)
    assert!(slow.count() <= 2, "the slow endpoint never had more than its 2 slots: {}", slow.count());
    // The overflow went to the first tier, without an attempt, deadline kept. Once the
    // fast records are gone, deferring protects only the read-ahead: the slow records
    // that fit in it wait for their own endpoint (see `a_lone_healthy_endpoint_...`).
    // So at least those past the read-ahead overflow, at most all but the 8 it may keep waiting.
    let label = format!("hookrelay_endpoint_overflow_total{{endpoint=\"127.0.0.1:{}\"}}", slow.addr.port());
    let past_read_ahead = n_slow - 2 - 64 + 1;
    let overflow = eventually_async("the slow records past the read-ahead deferred", Duration::from_secs(30), || {
        let relay = &relay;
        let label = label.clone();
        async move {
            let n = metric(&relay.metrics().await, &label).unwrap_or(0.0) as usize;
            (n >= past_read_ahead).then_some(n)
        }
    })
    .await;
    assert!(overflow <= n_slow - 2 - 8, "at most all but the 8 allowed to wait: {overflow}");
    let tier = read_topic(&topics.tiers[0].0, overflow, Duration::from_secs(30)).await;
    assert!(tier.len() >= overflow, "every counted overflow is on the tier: {} of {overflow}", tier.len());
    for record in &tier {
        assert_eq!(record.header("hookrelay-attempt"), Some("0"), "no attempt counted");
        assert!(record.header("hookrelay-last-error").is_some_and(|e| e.contains("overflow")));
        assert!(record.header("hookrelay-deadline-ms").is_some());
    }
    slow.release();
    // Every slow record is delivered or deferred, none twice.
    eventually_async("the waiting slow records delivered", Duration::from_secs(30), || {
        let (relay, label, slow) = (&relay, label.clone(), &slow);
        async move {
            let overflow = metric(&relay.metrics().await, &label).unwrap_or(0.0) as usize;
            (slow.delivered_ids().len() + overflow == n_slow).then_some(())
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_healthy_endpoint_is_not_deferred_however_long_its_backlog() {
    // 200 records on one partition to one receiver answering in 100 ms, 4 at a time:
    // the last waits about 5 s, far past the overflow's second. Nobody waits behind
    // them and the read-ahead has room, so deferring them would protect no one: every
    // one is delivered on its first attempt, none goes to a tier.
    let receiver = Receiver::start(Behaviour { delay: Duration::from_millis(100), ..Behaviour::default() }).await;
    let topics = Topics::create(1, &[Duration::from_secs(60)]).await;
    let config = Config::new(&topics)
        .set("delivery.max_in_flight_per_endpoint", 4)
        .set("delivery.max_waiting_per_endpoint", 8)
        .set("delivery.max_read_ahead_per_partition", 512);
    let producer = producer();
    let n = 200;
    for i in 0..n {
        let value = format!(r#"{{"url":"{}","payload":{i},"id":"lone-{i}"}}"#, receiver.url("/lone"));
        produce(&producer, &topics.events, Some(0), None, value.as_bytes()).await;
    }
    let relay = Relay::start(&config, &[]).await;
    eventually("every record delivered", Duration::from_secs(120), || {
        (receiver.delivered_ids().len() == n).then_some(())
    })
    .await;
    let text = relay.metrics().await;
    let label = format!("hookrelay_endpoint_overflow_total{{endpoint=\"127.0.0.1:{}\"}}", receiver.addr.port());
    assert_eq!(metric(&text, &label).unwrap_or(0.0), 0.0, "nothing deferred for overflow");
    assert_eq!(receiver.count(), n, "one attempt each");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_concurrency_limit_grows_for_a_fast_receiver_and_shrinks_for_an_overloaded_one() {
    let fast = Receiver::start(Behaviour::default()).await;
    let overloaded = Receiver::start(Behaviour { status: 503, ..Behaviour::default() }).await;
    let topics = Topics::create(2, &[Duration::from_secs(60)]).await;
    let config = Config::new(&topics);
    let relay = Relay::start(&config, &[]).await;
    let producer = producer();
    for i in 0..200 {
        let value = format!(r#"{{"url":"{}","payload":{i},"id":"fast-{i}"}}"#, fast.url("/f"));
        produce(&producer, &topics.events, None, None, value.as_bytes()).await;
        if i < 20 {
            let value = format!(r#"{{"url":"{}","payload":{i},"id":"busy-{i}"}}"#, overloaded.url("/o"));
            produce(&producer, &topics.events, None, None, value.as_bytes()).await;
        }
    }
    eventually("fast records delivered", Duration::from_secs(60), || (fast.delivered_ids().len() == 200).then_some(()))
        .await;
    let limit = |r: &Receiver, bound: &str| {
        format!("hookrelay_endpoint_concurrency{{bound=\"{bound}\",endpoint=\"127.0.0.1:{}\"}}", r.addr.port())
    };
    let text = eventually_async("the overloaded receiver's records routed", Duration::from_secs(30), || async {
        let text = relay.metrics().await;
        let label = format!(
            "hookrelay_deliveries_total{{endpoint=\"127.0.0.1:{}\",outcome=\"retry\"}}",
            overloaded.addr.port()
        );
        let deferred = label.replace("retry", "deferred");
        let routed = metric(&text, &label).unwrap_or(0.0) + metric(&text, &deferred).unwrap_or(0.0);
        (routed >= 20.0).then_some(text)
    })
    .await;
    let grown = metric(&text, &limit(&fast, "limit")).expect("limit of the fast receiver");
    assert!(grown > 16.0, "a fast receiver's limit grows from its start of 16: {grown}");
    assert_eq!(metric(&text, &limit(&fast, "ceiling")), Some(1024.0), "the default ceiling");
    let shrunk = metric(&text, &limit(&overloaded, "limit")).expect("limit of the overloaded receiver");
    assert!(shrunk < 16.0, "503s shrink it below its start: {shrunk}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_memory_budget_pauses_reading_and_nothing_is_lost() {
    let held = Receiver::start(Behaviour { hold_marker: Some("held".into()), ..Behaviour::default() }).await;
    let topics = Topics::create(1, &[Duration::from_secs(2)]).await;
    // 64 KiB of records read and not decided, at most: about 70 of these ~700 B records.
    let config = Config::new(&topics)
        .set("delivery.max_payload_bytes", 4096)
        .set("delivery.max_buffered_bytes", "64KiB")
        .set("delivery.timeout", "60s");
    let relay = Relay::start(&config, &[]).await;
    let producer = producer();
    let n = 1_000;
    let padding = "p".repeat(400);
    for i in 0..n {
        let value = format!(r#"{{"url":"{}","payload":"held {padding}","id":"m-{i}"}}"#, held.url("/h"));
        produce(&producer, &topics.events, Some(0), None, value.as_bytes()).await;
    }
    let paused = r#"hookrelay_paused_partitions{reason="capacity",role="events"}"#;
    let text = eventually_async("the partition paused for capacity", Duration::from_secs(30), || async {
        let text = relay.metrics().await;
        (metric(&text, paused) == Some(1.0)).then_some(text)
    })
    .await;
    let buffered = metric(&text, "hookrelay_buffered_bytes").expect("the gauge");
    // The budget, plus what was already on its way from the poll thread (a channel of 256 records).
    assert!(buffered <= (64 * 1024 + 256 * 1024) as f64, "bounded: {buffered} bytes");
    assert!(held.count() < n, "reading stopped: {} requests of {n}", held.count());
    held.release();
    eventually("every record delivered once the receiver answers", Duration::from_secs(90), || {
        (held.delivered_ids().len() == n).then_some(())
    })
    .await;
}
