//! Fewer duplicates (SPEC "Fewer duplicates"): one record held by its receiver at a
//! partition's head pins the committed offset, while thousands behind it are
//! delivered. Their offsets travel in the commit's metadata, so whoever reads the
//! partition next (the same relay after a kill -9, or the replica a rebalance
//! moves it to) skips them and sends only the held one again.

use std::time::Duration;

use hookrelay::consume::offset_map::OffsetMap;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::harness::*;

/// Records behind the held head, per partition.
const BEHIND: usize = 5_000;

/// The head's marker: the slow receiver holds its requests until released.
const HELD: &str = "held-at-head";

/// The test's relay config: the records behind the head wait in their partition for
/// the fast endpoint rather than overflow to a tier (not what this test is about).
fn config(topics: &Topics) -> Config {
    Config::new(topics).set("delivery.max_waiting_per_endpoint", 10_000)
}

fn event(url: &str, id: &str, payload: &str) -> Vec<u8> {
    // The timeout is above anything the test waits for: the held request stays in flight.
    format!(r#"{{"url":"{url}","payload":"{payload}","id":"{id}","timeout_ms":120000}}"#).into_bytes()
}

/// Produces on `partition` one record for `slow` (held) and then [`BEHIND`] for `fast`.
async fn head_and_behind(topic: &str, partition: i32, slow: &Receiver, fast: &Receiver) {
    let producer = producer();
    let head = event(&slow.url("/slow"), &format!("head-{partition}"), HELD);
    let (_, offset) = produce(&producer, topic, Some(partition), None, &head).await;
    assert_eq!(offset, 0, "the held record is the partition's first");
    let values: Vec<Vec<u8>> =
        (0..BEHIND).map(|i| event(&fast.url("/fast"), &format!("behind-{partition}-{i}"), "quick")).collect();
    for chunk in values.chunks(1_000) {
        let sends = chunk.iter().map(|value| produce(&producer, topic, Some(partition), None, value));
        futures::future::join_all(sends).await;
    }
}

/// The committed offset of `group` on `topic`/`partition`, and how many offsets its metadata says are decided.
fn committed_map(group: &str, topic: &str, partition: i32) -> Option<(i64, u64)> {
    let consumer: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", bootstrap()).set("group.id", group).create().ok()?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, partition);
    let committed = consumer.committed_offsets(tpl, Duration::from_secs(10)).ok()?;
    let element = committed.find_partition(topic, partition)?;
    let Offset::Offset(offset) = element.offset() else { return None };
    let decided = OffsetMap::decode(element.metadata(), offset).map_or(0, |m| m.len());
    Some((offset, decided))
}

/// Requests `receiver` answered with a 2xx beyond the first per id: sent again.
fn sent_again(receiver: &Receiver) -> usize {
    let answered = receiver.received().iter().filter(|r| (200..300).contains(&r.status)).count();
    answered - receiver.delivered_ids().len()
}

/// Waits until the records behind the head of each of `partitions` are delivered and
/// their offsets are in the committed map, the head still undecided (offset 0).
async fn behind_delivered_and_committed(topics: &Topics, partitions: i32, fast: &Receiver) {
    let all = BEHIND * partitions as usize;
    eventually("the records behind the heads delivered", Duration::from_secs(180), || {
        (fast.delivered_ids().len() == all).then_some(())
    })
    .await;
    for partition in 0..partitions {
        // Committed every kafka.commit_interval (200 ms in tests) at the latest.
        let committed = eventually("their offsets in the committed map", Duration::from_secs(20), || {
            committed_map(&topics.group, &topics.events, partition).filter(|(_, d)| *d == BEHIND as u64)
        })
        .await;
        assert_eq!(committed.0, 0, "the held head pins the committed offset");
    }
}

/// Waits until every partition's committed offset is past all its records: the held heads were delivered too.
async fn all_decided(topics: &Topics, partitions: i32) {
    for partition in 0..partitions {
        eventually("the held head delivered and committed", Duration::from_secs(120), || {
            (committed(&topics.group, &topics.events, partition) == Some(BEHIND as i64 + 1)).then_some(())
        })
        .await;
    }
}

fn skipped(metrics: &str, topics: &Topics) -> f64 {
    metric(metrics, &format!(r#"hookrelay_offsets_skipped_total{{topic="{}"}}"#, topics.events)).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_does_not_send_again_what_was_decided_behind_a_held_head() {
    let slow = Receiver::start(Behaviour { hold_marker: Some(HELD.into()), ..Behaviour::default() }).await;
    let fast = Receiver::start(Behaviour::default()).await;
    let topics = Topics::create(1, &[Duration::from_secs(1)]).await;
    head_and_behind(&topics.events, 0, &slow, &fast).await;
    let config = config(&topics);
    let mut relay = Relay::start(&config, &[]).await;
    behind_delivered_and_committed(&topics, 1, &fast).await;
    assert_eq!(slow.count(), 1, "the head is in flight");
    signal(&relay.child, "KILL");
    let _ = relay.child.wait();

    let second = Relay::start(&config, &[]).await;
    eventually("the head sent again", Duration::from_secs(60), || (slow.count() == 2).then_some(())).await;
    slow.release();
    all_decided(&topics, 1).await;
    let again = sent_again(&fast);
    println!("kill -9 behind a held head: {again} of {BEHIND} sent again");
    assert_eq!(again, 0, "the records decided behind the head are not sent again");
    assert_eq!(skipped(&second.metrics().await, &topics), BEHIND as f64, "skipped, counted");
    assert_eq!(slow.delivered_ids().len() + fast.delivered_ids().len(), BEHIND + 1, "lost 0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebalance_does_not_send_again_what_was_decided_behind_a_held_head() {
    let slow = Receiver::start(Behaviour { hold_marker: Some(HELD.into()), ..Behaviour::default() }).await;
    let fast = Receiver::start(Behaviour::default()).await;
    // Two partitions, each with a held head: a second replica takes one of them over.
    let topics = Topics::create(2, &[Duration::from_secs(1)]).await;
    for partition in 0..2 {
        head_and_behind(&topics.events, partition, &slow, &fast).await;
    }
    // The revoke lets go of the held head after 2 s: the new owner sends it again.
    let config = config(&topics).set("shutdown.grace", "2s");
    let _first = Relay::start(&config, &[]).await;
    behind_delivered_and_committed(&topics, 2, &fast).await;
    assert_eq!(slow.count(), 2, "both heads in flight");

    let second = Relay::start(&config, &[]).await;
    eventually("the moved partition's head sent again", Duration::from_secs(60), || (slow.count() == 3).then_some(()))
        .await;
    slow.release();
    all_decided(&topics, 2).await;
    let again = sent_again(&fast);
    println!("rebalance behind a held head: {again} of {BEHIND} sent again");
    assert_eq!(again, 0, "the records decided behind the moved head are not sent again");
    assert_eq!(skipped(&second.metrics().await, &topics), BEHIND as f64, "skipped by the new owner, counted");
    assert_eq!(slow.delivered_ids().len() + fast.delivered_ids().len(), 2 * (BEHIND + 1), "lost 0");
}
