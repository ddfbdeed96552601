//! A pace the receiver can take: `rate_limit` per endpoint (token bucket), `rate_max_wait`, and the hold of a
//! `Retry-After`; an unlimited endpoint on the same partitions is not held back by either.

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::harness::*;

/// The relay tests of this file run one at a time: the 20/s measurement is
/// about timers, and the other two each start a relay and a burst of their
/// own (on a 2-core machine at a load of 18, a stall of 0.7 s in the
/// relay's loop was seen, which a rate limit rightly never makes up for).
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Produces `values` at once (concurrently), each to its partition.
async fn produce_all(topic: &str, values: &[(i32, String)]) {
    let producer = producer();
    let sends =
        values.iter().map(|(partition, value)| produce(&producer, topic, Some(*partition), None, value.as_bytes()));
    futures::future::join_all(sends).await;
}

fn event(url: Option<&str>, endpoint: Option<&str>, id: &str) -> String {
    match (url, endpoint) {
        (Some(url), _) => format!(r#"{{"url":"{url}","payload":"{id}","id":"{id}"}}"#),
        (None, Some(endpoint)) => format!(r#"{{"endpoint":"{endpoint}","payload":"{id}","id":"{id}"}}"#),
        _ => unreachable!(),
    }
}

/// Receipt times of the 2xx answers, in order.
fn delivered_at(receiver: &Receiver) -> Vec<i64> {
    let mut at: Vec<i64> = receiver.received().iter().filter(|r| r.status == 200).map(|r| r.at_ms).collect();
    at.sort_unstable();
    at
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_per_second_with_a_burst_of_one_takes_ten_seconds_while_an_unlimited_endpoint_runs_at_full_speed() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let paced = Receiver::start(Behaviour::default()).await;
    let fast = Receiver::start(Behaviour::default()).await;
    let topics = Topics::create(2, &[Duration::from_secs(60)]).await;
    let config = Config::new(&topics)
        .endpoint("paced", &paced.url("/p"))
        .set("endpoints.paced.rate_limit", "20/s")
        .set("endpoints.paced.rate_burst", 1);
    // The whole backlog is there before the relay starts, the two endpoints
    // interleaved on both partitions.
    let n = 200;
    let mut values = Vec::new();
    for i in 0..n {
        values.push(((i % 2) as i32, event(None, Some("paced"), &format!("paced-{i}"))));
        values.push(((i % 2) as i32, event(Some(&fast.url("/f")), None, &format!("fast-{i}"))));
    }
    produce_all(&topics.events, &values).await;
    let relay = Relay::start(&config, &[]).await;
    eventually("every paced event delivered", Duration::from_secs(90), || {
        (paced.delivered_ids().len() == n).then_some(())
    })
    .await;
    let (paced_at, fast_at) = (delivered_at(&paced), delivered_at(&fast));
    assert_eq!(fast.delivered_ids().len(), n);
    assert_eq!(paced.count(), n, "each paced event was sent once: none deferred, none failed");
    let took_ms = paced_at[n - 1] - paced_at[0];
    let gaps: Vec<i64> = paced_at.windows(2).map(|w| w[1] - w[0]).collect();
    println!(
        "paced gaps: min {} ms, max {} ms, over 60 ms: {:?}",
        gaps.iter().min().unwrap(),
        gaps.iter().max().unwrap(),
        gaps.iter().enumerate().filter(|(_, &g)| g > 60).collect::<Vec<_>>()
    );
    println!(
        "paced: {n} events first to last in {took_ms} ms (199 intervals at 20/s = 9950 ms, error {:+.1} %); \
         fast: all {n} by +{} ms, when the paced endpoint had {} of {n}",
        (took_ms as f64 - 9950.0) / 99.50,
        fast_at[n - 1] - paced_at[0],
        paced_at.iter().filter(|&&t| t <= fast_at[n - 1]).count(),
    );
    assert!((9_000..=11_000).contains(&took_ms), "200 events at 20/s took {took_ms} ms, not 10 s +- 10 %");
    assert!(
        fast_at[n - 1] < paced_at[n / 2],
        "the unlimited endpoint finished before the paced one was half way ({} ms after its {}th event)",
        fast_at[n - 1] - paced_at[n / 2],
        n / 2
    );
    let text = relay.metrics().await;
    assert_eq!(metric(&text, r#"hookrelay_endpoint_paced_total{endpoint="paced"}"#), None, "nothing deferred");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_holds_its_endpoint_while_another_flows() {
    let _alone = ONE_AT_A_TIME.lock().await;
    // The first request gets a 429 asking for 3 s; every later one is answered 200.
    let held = Receiver::start(Behaviour {
        fail_first: 1,
        fail_status: 429,
        retry_after: Some("3".into()),
        ..Behaviour::default()
    })
    .await;
    let other = Receiver::start(Behaviour::default()).await;
    let topics = Topics::create(1, &[Duration::from_secs(5)]).await;
    let relay = Relay::start(&Config::new(&topics), &[]).await;
    produce_all(&topics.events, &[(0, event(Some(&held.url("/h")), None, "first"))]).await;
    eventually("the first request answered 429", Duration::from_secs(30), || (held.count() == 1).then_some(())).await;
    held.set(|b| b.fail_first = 0);
    let n = 10;
    let mut values = Vec::new();
    for i in 0..n {
        values.push((0, event(Some(&other.url("/o")), None, &format!("other-{i}"))));
        values.push((0, event(Some(&held.url("/h")), None, &format!("held-{i}"))));
    }
    produce_all(&topics.events, &values).await;
    eventually("everything delivered", Duration::from_secs(60), || {
        (other.delivered_ids().len() == n && held.delivered_ids().len() == n + 1).then_some(())
    })
    .await;
    let requests = held.received();
    let asked_at = requests[0].at_ms;
    let after: Vec<i64> = requests[1..].iter().map(|r| r.at_ms).collect();
    let resumed = *after.iter().min().unwrap();
    println!(
        "429 with Retry-After: 3 at 0 ms; next request to that endpoint at +{} ms; the other endpoint's {n} done by +{} ms",
        resumed - asked_at,
        delivered_at(&other)[n - 1] - asked_at
    );
    // The hold starts when the 429 came back, after the receiver logged the request.
    assert!(resumed >= asked_at + 3_000, "a request {} ms after the 429 asked for 3 s", resumed - asked_at);
    assert!(delivered_at(&other)[n - 1] < resumed, "the other endpoint's events all went while the held one waited");
    assert_eq!(requests.len(), n + 2, "the held events waited and went once each; only the first was retried");
    let tier = read_topic(&topics.tiers[0].0, 1, Duration::from_secs(10)).await;
    let ids: Vec<&str> = tier.iter().map(|r| std::str::from_utf8(&r.value).unwrap()).collect();
    assert!(tier.len() == 1 && ids[0].contains("\"first\""), "only the 429'd event went to the tier: {ids:?}");
    let text = relay.metrics().await;
    let label = format!("hookrelay_endpoint_holds_total{{endpoint=\"127.0.0.1:{}\"}}", held.addr.port());
    assert_eq!(metric(&text, &label), Some(1.0), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_that_would_wait_past_rate_max_wait_are_deferred_and_none_is_lost() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let paced = Receiver::start(Behaviour::default()).await;
    let topics = Topics::create(1, &[Duration::from_secs(2), Duration::from_secs(4)]).await;
    let config = Config::new(&topics)
        .endpoint("paced", &paced.url("/p"))
        .set("endpoints.paced.rate_limit", "20/s")
        .set("endpoints.paced.rate_burst", 1)
        .set("endpoints.paced.rate_max_wait", "1s");
    let n = 200;
    let values: Vec<(i32, String)> = (0..n).map(|i| (0, event(None, Some("paced"), &format!("p-{i}")))).collect();
    produce_all(&topics.events, &values).await;
    let relay = Relay::start(&config, &[]).await;
    eventually("every event delivered in the end", Duration::from_secs(120), || {
        (paced.delivered_ids().len() == n).then_some(())
    })
    .await;
    // Read from the first tier: what the events consumer deferred (and maybe the first tier's own, which go to the second).
    let tier = read_topic(&topics.tiers[0].0, n, Duration::from_secs(10)).await;
    let deferred: HashSet<&[u8]> = tier
        .iter()
        .filter(|r| r.header("hookrelay-last-error").is_some_and(|e| e.contains("would wait past rate_max_wait")))
        .map(|r| r.value.as_slice())
        .collect();
    for record in &tier {
        assert_eq!(record.header("hookrelay-attempt"), Some("0"), "a deferral is no attempt");
    }
    let text = relay.metrics().await;
    let counted = metric(&text, r#"hookrelay_endpoint_paced_total{endpoint="paced"}"#).unwrap_or(0.0);
    let attempted = paced.count();
    println!(
        "{n} events at 20/s with rate_max_wait 1s: {} deferred at once from the event topic, {counted} deferrals \
         in all, {attempted} requests, all {n} delivered",
        deferred.len()
    );
    // 1 goes at once and about 20 fit within a second; the rest is deferred (the
    // loop reads in batches of 64, so a few more may wait).
    assert!(deferred.len() >= n / 2, "most deferred at once: {}", deferred.len());
    assert_eq!(tier.len(), deferred.len(), "every first-tier record is a pace deferral");
    assert!(counted >= deferred.len() as f64);
    assert_eq!(attempted, n, "no request failed or was repeated: deferrals are not failures");
}

#[test]
fn bad_pace_values_exit_64_with_one_line() {
    let cases = [
        ("[endpoints.x]\nurl = \"https://x.example/\"\nrate_limit = \"0/s\"\n", "\"0/s\" is not a rate"),
        ("[endpoints.x]\nurl = \"https://x.example/\"\nrate_limit = \"abc\"\n", "\"abc\" is not a rate"),
        ("[delivery]\nrate_limit = \"5/h\"\n", "\"5/h\" is not a rate"),
        ("[delivery]\nrate_burst = 0\n", "delivery.rate_burst: must be at least 1"),
    ];
    for (config, expected) in cases {
        let (_dir, path, _) = write_config(&format!("[kafka]\nbrokers = \"127.0.0.1:1\"\n{config}"));
        let output = Command::new(binary())
            .arg("--config")
            .arg(&path)
            .arg("run")
            .stdin(Stdio::null())
            .output()
            .expect("run hookrelay");
        let text = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(64), "{config:?}: {text}");
        assert_eq!(text.trim_end().lines().count(), 1, "{config:?}: one line: {text:?}");
        assert!(text.starts_with("hookrelay: ") && text.contains(expected), "{config:?}: {text:?} lacks {expected:?}");
    }
}
