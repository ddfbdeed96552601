//! Nothing stuck: records that can never be delivered are decided at once, odd headers and panics do not
//! pin an offset, a far due time does not hold a tier partition, a revoke past its grace cancels its work.

use std::time::Duration;

use crate::harness::*;

/// The test config: every key explicit, on top of the topics.
fn config(topics: &Topics, extra: &str) -> String {
    format!(
        "{}\n[delivery]\nallow_private_networks = true\n[circuit]\nenabled = false\n[notify]\nwindow = \"1s\"\n{extra}\n",
        topics.toml()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_with_a_control_character_is_dead_at_once() {
    let receiver = Receiver::start(Behaviour::default()).await;
    let topics = Topics::create(1, &[Duration::from_secs(1)]).await;
    let _relay = Relay::start(&config(&topics, ""), &[]).await;
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
