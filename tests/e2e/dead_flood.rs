//! The failure handler at volume: a dead record does not stay in flight for its
//! notification window (only its offset is held), so a flood of dead letters is
//! handled at full speed, notified once per window, and committed; a drain sends
//! the open windows before its final commit, so a restart does not notify again.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::*;

const TIERS: [Duration; 1] = [Duration::from_secs(1)];

/// Produces `count` dead records (as the relay writes them: endpoint and reason headers),
/// spread over `partitions`, many at a time; returns how many went to each partition.
pub async fn produce_dead(topic: &str, partitions: i32, count: usize, endpoint: &str) -> Vec<i64> {
    let producer = producer();
    let mut per_partition = vec![0i64; partitions as usize];
    let headers = [("hookrelay-endpoint", endpoint), ("hookrelay-reason", "invalid_event")];
    let mut sent = 0;
    while sent < count {
        let batch = (count - sent).min(2000);
        let sends = (0..batch).map(|i| {
            let partition = ((sent + i) % partitions as usize) as i32;
            let value = format!("not json {}", sent + i);
            let producer = &producer;
            async move { produce_with_headers(producer, topic, partition, value.as_bytes(), &headers).await }
        });
        for (partition, _) in futures::future::join_all(sends).await {
            per_partition[partition as usize] += 1;
        }
        sent += batch;
    }
    per_partition
}

/// The sum of every series of a counter.
pub fn counter_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn notified_counts(sink: &Receiver) -> Vec<u64> {
    sink.received()
        .iter()
        .map(|r| serde_json::from_slice::<Value>(&r.body).expect("a JSON body")["count"].as_u64().expect("a count"))
        .collect()
}

fn json_sink(url: &str) -> toml::Table {
    table([("kind", "http".into()), ("url", url.into()), ("format", "json".into())])
}

async fn all_committed(topics: &Topics, ends: &[i64]) {
    let group = format!("{}.dead", topics.group);
    eventually("the dead topic committed to its end", Duration::from_secs(60), || {
        ends.iter().enumerate().all(|(p, &end)| committed(&group, &topics.dead, p as i32) == Some(end)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_flood_is_handled_within_a_window_and_notified_once_per_window() {
    const COUNT: usize = 20_000;
    let sink = Receiver::start(Behaviour::default()).await;
    let topics = Topics::create(2, &TIERS).await;
    let ends = produce_dead(&topics.dead, 2, COUNT, "flood").await;
    let config = Config::new(&topics).set("notify.window", "5s").push("notify.sinks", json_sink(&sink.url("/ops")));
    // Only the failure handler: what is measured is the handler.
    let relay = Relay::start(&config, &["--role", "dead"]).await;

    let started = Instant::now();
    let (elapsed, sent_meanwhile) = eventually_async("every dead letter handled", Duration::from_secs(300), || async {
        let handled = counter_sum(&relay.metrics().await, "hookrelay_dead_letters_handled_total");
        // Read before the metric: a notification counted here was sent before all were handled.
        (handled >= COUNT as f64).then(|| (started.elapsed(), sink.count()))
    })
    .await;
    let rate = COUNT as f64 / elapsed.as_secs_f64();
    println!("dead letters: {COUNT} handled in {elapsed:.2?} = {rate:.0}/s (5 s window, {sent_meanwhile} notifications meanwhile)");
    // Held in flight per window, the old handler moved at most max_in_flight (1024) per 5 s window:
    // 20 windows for these. Now all are handled within the first few.
    assert!(sent_meanwhile <= 3, "{sent_meanwhile} windows were sent before all {COUNT} were handled");

    all_committed(&topics, &ends).await;
    let counts = notified_counts(&sink);
    assert_eq!(counts.iter().sum::<u64>(), COUNT as u64, "every dead letter in exactly one notification: {counts:?}");
    assert!(counts.len() <= 5, "one notification per window: {counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_sends_the_open_window_before_its_final_commit() {
    const COUNT: usize = 50;
    let sink = Receiver::start(Behaviour::default()).await;
    let topics = Topics::create(1, &TIERS).await;
    let ends = produce_dead(&topics.dead, 1, COUNT, "drained").await;
    // A window far longer than the grace: only the drain can send it in time.
    let config = Config::new(&topics).set("notify.window", "1h").push("notify.sinks", json_sink(&sink.url("/ops")));
    let mut relay = Relay::start(&config, &["--role", "dead"]).await;
    eventually_async("every dead letter handled", Duration::from_secs(60), || async {
        let handled = counter_sum(&relay.metrics().await, "hookrelay_dead_letters_handled_total");
        (handled >= COUNT as f64).then_some(())
    })
    .await;
    assert_eq!(sink.count(), 0, "the window is open");

    assert_eq!(relay.terminate(Duration::from_secs(30)), Some(0), "log:\n{}", relay.log_text());
    assert_eq!(notified_counts(&sink), [COUNT as u64], "the open window was sent on SIGTERM");
    let group = format!("{}.dead", topics.group);
    assert_eq!(committed(&group, &topics.dead, 0), Some(ends[0]), "and its offsets committed before exit");

    // A restart (the next pod of a deploy) has nothing left to notify.
    let restarted = Relay::start(&config, &["--role", "dead"]).await;
    holds_for("no notification after the restart", Duration::from_secs(4), || sink.count() == 1).await;
    let handled = counter_sum(&restarted.metrics().await, "hookrelay_dead_letters_handled_total");
    assert_eq!(handled, 0.0, "nothing was read again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoke_of_dead_partitions_sends_the_open_window_first() {
    const COUNT: usize = 40;
    let sink = Receiver::start(Behaviour::default()).await;
    let topics = Topics::create(2, &TIERS).await;
    let ends = produce_dead(&topics.dead, 2, COUNT, "moved").await;
    let config = Config::new(&topics).set("notify.window", "1h").push("notify.sinks", json_sink(&sink.url("/ops")));
    let first = Relay::start(&config, &["--role", "dead"]).await;
    eventually_async("every dead letter handled", Duration::from_secs(60), || async {
        let handled = counter_sum(&first.metrics().await, "hookrelay_dead_letters_handled_total");
        (handled >= COUNT as f64).then_some(())
    })
    .await;
    assert_eq!(sink.count(), 0, "the window is open");

    // A second replica joins: a partition is revoked from the first, which sends its window before letting go.
    let second = Relay::start(&config, &["--role", "dead"]).await;
    eventually("the window sent on the revoke", Duration::from_secs(60), || (sink.count() >= 1).then_some(())).await;
    all_committed(&topics, &ends).await;
    holds_for("nothing notified twice", Duration::from_secs(3), || notified_counts(&sink) == [COUNT as u64]).await;
    let handled = counter_sum(&second.metrics().await, "hookrelay_dead_letters_handled_total");
    assert_eq!(handled, 0.0, "the new owner had nothing to read again");
}
