//! Crash drills (ignored in `make test`): kill -9 of the relay and a broker
//! restart mid-stream lose nothing. Throughput, latency, slow and dead
//! endpoints are measured by the benchmark driver (`make bench`, bench/main.rs).
//! Every drill is bounded in count and time, sends only to 127.0.0.1, and prints a report line.

use std::time::{Duration, Instant};

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "drill: kill -9 / broker restart, run with --ignored"]
async fn bench_kill_9_loses_nothing() {
    // 100 ms per request at 64 concurrent: about 640/s, so the kill lands mid-stream.
    let receiver = Receiver::start(Behaviour { delay: Duration::from_millis(100), ..Behaviour::default() }).await;
    let topics = Topics::create(6, &[Duration::from_secs(60)]).await;
    let config = Config::new(&topics);
    let mut relay = Relay::start(&config, &[]).await;
    let producer = producer();
    let n = 5_000;
    for i in 0..n {
        let value = format!(r#"{{"url":"{}","payload":{i},"id":"k9-{i}"}}"#, receiver.url("/x"));
        produce(&producer, &topics.events, None, None, value.as_bytes()).await;
    }
    eventually("some delivered", Duration::from_secs(60), || (receiver.count() >= n / 3).then_some(())).await;
    let at_kill = receiver.count();
    signal(&relay.child, "KILL");
    let _ = relay.child.wait();
    assert!(at_kill < n, "the kill must land mid-stream");
    let restarted = Instant::now();
    let _second = Relay::start(&config, &[]).await;
    eventually("all delivered after the restart", Duration::from_secs(120), || {
        (receiver.delivered_ids().len() == n).then_some(())
    })
    .await;
    println!(
        "BENCH kill -9: {n} events, relay killed after {at_kill} deliveries, restarted: all {n} delivered, {} duplicates (redelivered with the same webhook-id), recovery {:.1} s",
        receiver.count() - n,
        restarted.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "drill: kill -9 / broker restart, run with --ignored"]
async fn bench_broker_restart_loses_nothing() {
    // Restarting needs the broker of scripts/kafka.sh (the one make bench starts).
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/kafka.sh");
    let status = std::process::Command::new(script).arg("status").output().unwrap();
    let ours = String::from_utf8_lossy(&status.stdout).contains(&format!("KAFKA_BOOTSTRAP={}", bootstrap()));
    if !ours {
        println!(
            "BENCH broker restart: not run: KAFKA_BOOTSTRAP={} is not the broker of scripts/kafka.sh",
            bootstrap()
        );
        return;
    }
    // 100 ms per request at 64 concurrent: about 640/s, so the restart lands mid-stream.
    let receiver = Receiver::start(Behaviour { delay: Duration::from_millis(100), ..Behaviour::default() }).await;
    let topics = Topics::create(6, &[Duration::from_secs(5)]).await;
    let producer = producer();
    // More events than the relay holds read ahead (6 x (128 + 256)), so most
    // must be fetched after the broker is back.
    let n = 10_000;
    for i in 0..n {
        let value = format!(r#"{{"url":"{}","payload":{i},"id":"br-{i}"}}"#, receiver.url("/x"));
        produce(&producer, &topics.events, None, None, value.as_bytes()).await;
    }
    let _relay = Relay::start(&Config::new(&topics), &[]).await;
    eventually("some delivered", Duration::from_secs(60), || (receiver.count() >= n / 5).then_some(())).await;
    let at_restart = receiver.count();
    let started = Instant::now();
    let restarted = tokio::task::spawn_blocking(move || std::process::Command::new(script).arg("restart").status())
        .await
        .unwrap()
        .unwrap();
    assert!(restarted.success(), "scripts/kafka.sh restart failed");
    let outage = started.elapsed();
    assert!(at_restart < n, "the restart must land mid-stream");
    eventually("all delivered after the broker came back", Duration::from_secs(180), || {
        (receiver.delivered_ids().len() == n).then_some(())
    })
    .await;
    println!(
        "BENCH broker restart: {n} events, broker restarted after {at_restart} deliveries ({:.1} s outage): all {n} delivered, {} duplicates, done {:.1} s after the restart began",
        outage.as_secs_f64(),
        receiver.count() - n,
        started.elapsed().as_secs_f64()
    );
}
