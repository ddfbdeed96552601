//! Drills for `make bench` (ignored in `make test`): throughput, latency, a slow
//! endpoint beside a fast one, and a dead endpoint behind the circuit
//! (the kill -9 and broker drills are in drill.rs, `make drill`).
//! Every drill is bounded in count and time, sends only to 127.0.0.1, and prints a report line.

use std::time::{Duration, Instant};

use crate::harness::*;

fn percentile(values: &mut [i64], p: f64) -> i64 {
    values.sort_unstable();
    values[((values.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: make bench"]
async fn bench_throughput_and_latency() {
    let receiver = Receiver::start(Behaviour::default()).await;
    let topics = Topics::create(6, &[Duration::from_secs(60)]).await;
    let producer = producer();
    let n = 20_000;
    let payload = format!("\"{}\"", "x".repeat(512));
    for i in 0..n {
        let value = format!(r#"{{"url":"{}","payload":{payload},"id":"tp-{i}"}}"#, receiver.url("/x"));
        produce(&producer, &topics.events, Some(i % 6), None, value.as_bytes()).await;
    }
    // Backlog drain: all events are on the topic before the relay starts.
    let started = Instant::now();
    let _relay = Relay::start(&Config::new(&topics), &[]).await;
    eventually("backlog delivered", Duration::from_secs(300), || (receiver.count() >= n as usize).then_some(())).await;
    let took = started.elapsed();
    println!(
        "BENCH throughput: {n} events (512 B payload, 6 partitions, 1 relay) in {:.1} s = {:.0} deliveries/s, start-up and group join included",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64()
    );
    // Steady state: 200 events/s for 10 s; latency = produce -> receiver.
    let rate_n = 2_000;
    let before = receiver.count();
    let mut sent_at = std::collections::HashMap::new();
    let start = Instant::now();
    for i in 0..rate_n {
        let due = start + Duration::from_millis(i as u64 * 5);
        tokio::time::sleep_until(due.into()).await;
        let id = format!("lat-{i}");
        let value = format!(r#"{{"url":"{}","payload":1,"id":"{id}"}}"#, receiver.url("/x"));
        sent_at.insert(id, now_ms());
        produce(&producer, &topics.events, None, None, value.as_bytes()).await;
    }
    eventually("steady-state events delivered", Duration::from_secs(60), || {
        (receiver.count() >= before + rate_n).then_some(())
    })
    .await;
    let mut latencies: Vec<i64> =
        receiver.received().iter().filter_map(|r| sent_at.get(r.header("webhook-id")).map(|t| r.at_ms - t)).collect();
    let (p50, p99, max) =
        (percentile(&mut latencies, 0.5), percentile(&mut latencies, 0.99), *latencies.iter().max().unwrap());
    println!(
        "BENCH latency at 200 events/s: produce to receiver p50 {p50} ms, p99 {p99} ms, max {max} ms ({} samples)",
        latencies.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: make bench"]
async fn bench_slow_endpoint_beside_a_fast_one() {
    let slow = Receiver::start(Behaviour { delay: Duration::from_millis(200), ..Behaviour::default() }).await;
    let fast = Receiver::start(Behaviour::default()).await;
    let topics = Topics::create(6, &[Duration::from_secs(60)]).await;
    let _relay = Relay::start(&Config::new(&topics), &[]).await;
    let producer = producer();
    let n = 2_000;
    let started = Instant::now();
    for i in 0..n {
        let target = if i % 2 == 0 { slow.url("/slow") } else { fast.url("/fast") };
        let value = format!(r#"{{"url":"{target}","payload":{i},"id":"sf-{i}"}}"#);
        produce(&producer, &topics.events, None, None, value.as_bytes()).await;
    }
    eventually("fast delivered", Duration::from_secs(120), || (fast.count() >= n / 2).then_some(())).await;
    let fast_done = started.elapsed();
    eventually("slow delivered", Duration::from_secs(120), || (slow.count() >= n / 2).then_some(())).await;
    let slow_done = started.elapsed();
    println!(
        "BENCH slow+fast: {} events to a 200 ms endpoint and {} to a fast one, interleaved: fast all done in {:.1} s, slow in {:.1} s ({:.0}/s at max_in_flight_per_endpoint = 64)",
        n / 2, n / 2, fast_done.as_secs_f64(), slow_done.as_secs_f64(), (n / 2) as f64 / slow_done.as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: make bench"]
async fn bench_dead_endpoint_behind_the_circuit() {
    // A receiver that always answers 503: without the circuit every event would cost a request.
    let down = Receiver::start(Behaviour { status: 503, ..Behaviour::default() }).await;
    let topics = Topics::create(6, &[Duration::from_secs(60)]).await;
    let relay = Relay::start(&Config::new(&topics), &[]).await;
    let producer = producer();
    let n = 2_000;
    for i in 0..n {
        let value = format!(r#"{{"url":"{}","payload":{i},"id":"dd-{i}"}}"#, down.url("/x"));
        produce(&producer, &topics.events, None, None, value.as_bytes()).await;
    }
    let label =
        format!("hookrelay_deliveries_total{{endpoint=\"127.0.0.1:{}\",outcome=\"deferred\"}}", down.addr.port());
    let deferred = eventually_async("records deferred", Duration::from_secs(60), || async {
        let text = relay.metrics().await;
        let deferred = metric(&text, &label).unwrap_or(0.0);
        let retried = metric(&text, &label.replace("deferred", "retry")).unwrap_or(0.0);
        (deferred + retried >= n as f64).then_some(deferred)
    })
    .await;
    println!(
        "BENCH dead endpoint: {n} events to an endpoint answering 503: {} HTTP requests, {deferred} deferred by the open circuit without a request",
        down.count()
    );
}
