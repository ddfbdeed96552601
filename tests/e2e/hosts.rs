//! Per-host state is bounded: the `endpoint` metric label takes the configured names, then the first
//! `delivery.max_endpoint_labels` hosts, then `other`; records keep the real host.

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use crate::harness::*;

/// Every value of the `endpoint` label in a Prometheus text exposition.
fn endpoint_labels(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split("endpoint=\"").nth(1)?.split('"').next().map(String::from))
        .collect()
}

#[tokio::test]
async fn more_hosts_than_the_bound_share_one_label_and_keep_their_host() {
    const BOUND: usize = 2;
    let billing = Receiver::start(Behaviour::default()).await;
    let mut hosts = Vec::new();
    for _ in 0..6 {
        hosts.push(Receiver::start(Behaviour { status: 503, ..Behaviour::default() }).await);
    }
    let topics = Topics::create(1, &[Duration::from_secs(3600)]).await;
    let config = Config::new(&topics)
        .endpoint("billing", &billing.url("/hook"))
        .set("delivery.max_endpoint_labels", BOUND as i64);
    let relay = Relay::start(&config, &[]).await;
    let producer = producer();
    let value = r#"{"endpoint":"billing","payload":1,"id":"bill"}"#;
    produce(&producer, &topics.events, Some(0), None, value.as_bytes()).await;
    for (i, host) in hosts.iter().enumerate() {
        let value = format!(r#"{{"url":"{}","payload":{i},"id":"host-{i}"}}"#, host.url("/x"));
        produce(&producer, &topics.events, Some(0), None, value.as_bytes()).await;
    }
    let tier = read_topic(&topics.tiers[0].0, hosts.len(), Duration::from_secs(30)).await;
    assert_eq!(tier.len(), hosts.len(), "every failing host routed; log:\n{}", relay.log_text());
    let real: HashSet<String> = hosts.iter().map(|h| h.addr.to_string()).collect();
    let written: HashSet<String> = tier.iter().map(|r| r.header("hookrelay-endpoint").unwrap().to_string()).collect();
    assert_eq!(written, real, "the tier records keep each real host");

    let labels = endpoint_labels(&relay.metrics().await);
    assert!(labels.len() <= BOUND + 1 + 1, "at most {BOUND} hosts + billing + other: {labels:?}");
    assert!(labels.contains("billing") && labels.contains("other"), "{labels:?}");
    let own: Vec<&String> = labels.iter().filter(|l| real.contains(*l)).collect();
    assert_eq!(own.len(), BOUND, "the first {BOUND} hosts keep their own label: {labels:?}");
    let text = relay.metrics().await;
    let other = metric(&text, r#"hookrelay_deliveries_total{endpoint="other",outcome="retry"}"#);
    assert_eq!(other, Some((hosts.len() - BOUND) as f64), "the others are counted under other");
    assert!(relay.log_text().contains(&hosts[hosts.len() - 1].addr.to_string()), "logs keep the real host");
}
