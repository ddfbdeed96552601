//! Operating it: metrics and health, SIGTERM and rebalance with two relays, SASL, KIP-848, a real Prometheus.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::*;

/// The test config: a 10 s shutdown grace.
fn config(topics: &Topics) -> Config {
    Config::new(topics).set("shutdown.grace", "10s")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_live_and_ready_show_what_happened() {
    let ok = Receiver::start(Behaviour::default()).await;
    let failing = Receiver::start(Behaviour { status: 503, ..Behaviour::default() }).await;
    let gone = Receiver::start(Behaviour { status: 410, ..Behaviour::default() }).await;
    let topics = Topics::create(2, &[Duration::from_secs(3600)]).await;
    let relay = Relay::start(&config(&topics), &[]).await;
    let base = format!("http://{}", relay.admin);
    assert_eq!(reqwest::get(format!("{base}/live")).await.unwrap().status(), 200);
    assert_eq!(reqwest::get(format!("{base}/ready")).await.unwrap().status(), 200);
    let producer = producer();
    for (receiver, id) in [(&ok, "m-ok"), (&failing, "m-503"), (&gone, "m-410")] {
        let value = format!(r#"{{"url":"{}","payload":1,"id":"{id}"}}"#, receiver.url("/x"));
        produce(&producer, &topics.events, None, None, value.as_bytes()).await;
    }
    produce(&producer, &topics.events, None, None, b"not json").await;
    let port = |r: &Receiver| r.addr.port();
    let expected = [
        "hookrelay_build_info{version=\"0.1.0\"} 1".to_string(),
        "hookrelay_ready 1".to_string(),
        format!("hookrelay_deliveries_total{{endpoint=\"127.0.0.1:{}\",outcome=\"delivered\"}} 1", port(&ok)),
        format!("hookrelay_deliveries_total{{endpoint=\"127.0.0.1:{}\",outcome=\"retry\"}} 1", port(&failing)),
        format!("hookrelay_deliveries_total{{endpoint=\"127.0.0.1:{}\",outcome=\"dead\"}} 1", port(&gone)),
        format!("hookrelay_retries_routed_total{{tier=\"{}\"}} 1", topics.tiers[0].0),
        "hookrelay_dead_letters_total{reason=\"rejected\"} 1".to_string(),
        "hookrelay_dead_letters_total{reason=\"invalid_event\"} 1".to_string(),
        format!("hookrelay_circuit_state{{endpoint=\"127.0.0.1:{}\"}} 0", port(&ok)),
        "hookrelay_notifications_total{outcome=\"sent\",sink=\"log\"} 2".to_string(),
        "hookrelay_dead_letters_handled_total{endpoint=\"invalid\",reason=\"invalid_event\"} 1".to_string(),
        format!("hookrelay_attempt_duration_seconds_count{{endpoint=\"127.0.0.1:{}\"}} 1", port(&ok)),
        format!("hookrelay_end_to_end_latency_seconds_count{{endpoint=\"127.0.0.1:{}\"}} 1", port(&ok)),
        "hookrelay_in_flight_records{role=\"events\"} 0".to_string(),
        "hookrelay_paused_partitions{reason=\"capacity\",role=\"events\"} 0".to_string(),
        format!("hookrelay_consumer_lag{{group=\"{}\",partition=\"0\",topic=\"{}\"}} 0", topics.group, topics.events),
    ];
    let text = eventually_explained("every expected series on /metrics", Duration::from_secs(20), || async {
        let text = relay.metrics().await;
        let missing: Vec<_> = expected.iter().filter(|line| !text.contains(line.as_str())).collect();
        if missing.is_empty() {
            Ok(text)
        } else {
            Err(format!("series missing from /metrics: {missing:#?}\n{text}"))
        }
    })
    .await;
    for line in text.lines().filter(|l| l.starts_with("hookrelay_")) {
        assert!(!line.contains("http://"), "a URL leaked into a label: {line}");
    }
}

/// Two relays share the event group; a third joins mid-stream, then one gets SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_and_rebalance_mid_stream_lose_nothing() {
    let receiver = Receiver::start(Behaviour { delay: Duration::from_millis(20), ..Behaviour::default() }).await;
    let topics = Topics::create(6, &[Duration::from_secs(1)]).await;
    let config = config(&topics);
    let mut first = Relay::start(&config, &[]).await;
    let producer = producer();
    let n = 600;
    for i in 0..n {
        let value = format!(r#"{{"url":"{}","payload":{i},"id":"st-{i}"}}"#, receiver.url("/x"));
        produce(&producer, &topics.events, None, Some(&format!("k{i}")), value.as_bytes()).await;
    }
    eventually("a first share delivered", Duration::from_secs(30), || (receiver.count() >= 100).then_some(())).await;
    let second = Relay::start(&config, &[]).await;
    eventually("more delivered after the join", Duration::from_secs(30), || (receiver.count() >= 250).then_some(()))
        .await;
    let started = Instant::now();
    let code = tokio::task::spawn_blocking(move || {
        let code = first.terminate(Duration::from_secs(30));
        (code, first)
    })
    .await
    .unwrap();
    let (code, first) = code;
    assert_eq!(code, Some(0), "SIGTERM drains and exits 0; log:\n{}", first.log_text());
    let drain = started.elapsed();
    // Drained within the grace, by the relay's own clock (a wall-clock bound here measured the
    // machine's load as much as the relay): nothing was left to abandon when the grace ran out.
    // terminate's 30 s above is the guard against a hang.
    assert!(
        !first.log_text().contains("grace period over"),
        "the grace (10 s) ran out before the drain was done ({drain:?}); log:\n{}",
        first.log_text()
    );
    eventually("the survivor delivers the rest", Duration::from_secs(60), || {
        (receiver.delivered_ids().len() == n).then_some(())
    })
    .await;
    let duplicates = receiver.count() - n;
    println!("sigterm drill: {n} events, 2 relays, 1 joined and 1 stopped mid-stream: {duplicates} duplicates, drain {drain:?}");
    assert!(first.log_text().contains("draining"), "the stopped relay drained");
    assert!(second.log_text().contains("partitions assigned"));
    // Everything is committed: the survivor's group offsets reach the end of each partition.
    let mut ends: HashMap<i32, i64> = HashMap::new();
    for r in read_topic(&topics.events, n, Duration::from_secs(20)).await {
        let end = ends.entry(r.partition).or_default();
        *end = (*end).max(r.offset + 1);
    }
    for (partition, end) in ends {
        let (group, topic) = (topics.group.clone(), topics.events.clone());
        eventually("offsets committed to the end", Duration::from_secs(20), || {
            (committed(&group, &topic, partition) == Some(end)).then_some(())
        })
        .await;
    }
}

fn sasl_bootstrap() -> String {
    std::env::var("KAFKA_SASL_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:9094".into())
}

fn sasl_config(topics: &Topics, mechanism: &str, password: &str) -> Config {
    config(topics)
        .set("kafka.brokers", sasl_bootstrap())
        .set("kafka.security_protocol", "sasl_plaintext")
        .set("kafka.sasl.mechanism", mechanism)
        .set("kafka.sasl.username", "hookrelay")
        .set("kafka.sasl.password", password)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_logins_work_and_a_wrong_password_fails_fast() {
    let receiver = Receiver::start(Behaviour::default()).await;
    for mechanism in ["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"] {
        let topics = Topics::create(1, &[Duration::from_secs(3600)]).await;
        let good = sasl_config(&topics, mechanism, "hookrelay-secret");
        let relay = Relay::start(&good, &[]).await;
        let value = format!(r#"{{"url":"{}","payload":1,"id":"sasl-{mechanism}"}}"#, receiver.url("/x"));
        produce(&producer(), &topics.events, None, None, value.as_bytes()).await;
        eventually("delivered through a SASL connection", Duration::from_secs(20), || {
            receiver.delivered_ids().contains(&format!("sasl-{mechanism}")).then_some(())
        })
        .await;
        drop(relay);

        let bad = sasl_config(&topics, mechanism, "wrong");
        let (_dir, path, _) = write_config(&bad.to_string());
        let mut command = Command::new(binary());
        command.arg("--config").arg(&path).arg("run");
        let output = output_within(command, Duration::from_secs(120)).await;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(69), "{mechanism}: wrong credentials exit 69; stderr:\n{stderr}");
        let last = stderr.lines().last().unwrap_or_default();
        // Refused, not a hang: the start-up check ends at the broker's refusal with "authentication
        // failed"; a broker that never answers ends it after 15 s with "no answer within 15s".
        // The words say which, whatever the machine's load.
        assert!(last.contains("authentication failed"), "{mechanism}: the last line says why: {last}");
        assert!(!stderr.contains("no answer within"), "{mechanism}: refused, not timed out: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kip848_consumer_protocol_works() {
    let receiver = Receiver::start(Behaviour::default()).await;
    let topics = Topics::create(3, &[Duration::from_secs(1)]).await;
    let config = config(&topics).set("kafka.group_protocol", "consumer");
    let relay = Relay::start(&config, &[]).await;
    let producer = producer();
    for i in 0..60 {
        let value = format!(r#"{{"url":"{}","payload":{i},"id":"k848-{i}"}}"#, receiver.url("/x"));
        produce(&producer, &topics.events, None, Some(&format!("k{i}")), value.as_bytes()).await;
    }
    eventually("all delivered", Duration::from_secs(30), || (receiver.delivered_ids().len() == 60).then_some(())).await;
    assert!(relay.log_text().contains("partitions assigned"));
}

/// A real Prometheus (Debian's `prometheus`) scrapes a running relay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_the_relay() {
    let receiver = Receiver::start(Behaviour::default()).await;
    let topics = Topics::create(1, &[Duration::from_secs(3600)]).await;
    let relay = Relay::start(&config(&topics), &[]).await;
    let value = format!(r#"{{"url":"{}","payload":1,"id":"prom-1"}}"#, receiver.url("/x"));
    produce(&producer(), &topics.events, None, None, value.as_bytes()).await;
    eventually("delivered", Duration::from_secs(20), || (receiver.count() == 1).then_some(())).await;

    let dir = tempfile::tempdir().unwrap();
    let prom_port = free_port();
    let config_path = dir.path().join("prometheus.yml");
    std::fs::write(
        &config_path,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: hookrelay\n    static_configs:\n      - targets: ['{}']\n",
            relay.admin
        ),
    )
    .unwrap();
    let mut prometheus = Command::new("prometheus")
        .arg(format!("--config.file={}", config_path.display()))
        .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus (Debian package `prometheus`, installed by scripts/test-deps.sh)");
    let query = |q: &str| format!("http://127.0.0.1:{prom_port}/api/v1/query?query={q}");
    // Wait for a successful scrape of the relay, then check what Prometheus stored from it.
    eventually_async("Prometheus has scraped the relay", Duration::from_secs(60), || async {
        (prometheus_value(&query("up{job=\"hookrelay\"}")).await? == "1").then_some(())
    })
    .await;
    let checks = [
        ("hookrelay_ready", "1"),
        ("hookrelay_build_info", "1"),
        ("sum(hookrelay_deliveries_total{outcome=\"delivered\"})", "1"),
    ];
    let mut stored = Vec::new();
    for (q, want) in checks {
        stored.push((q, want, prometheus_value(&query(q)).await));
    }
    let _ = prometheus.kill();
    let _ = prometheus.wait();
    for (q, want, got) in stored {
        assert_eq!(got.as_deref(), Some(want), "Prometheus's value of {q}");
    }
}

/// The value of the first sample of an instant query's result, if the query answered one.
async fn prometheus_value(url: &str) -> Option<String> {
    let text = reqwest::get(url).await.ok()?.text().await.ok()?;
    let body: serde_json::Value = serde_json::from_str(&text).ok()?;
    Some(body["data"]["result"][0]["value"][1].as_str()?.to_string())
}

/// In-flight work past `shutdown.grace` is abandoned: the relay exits on time,
/// the record stays undecided and is delivered again after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_abandons_work_past_the_grace_and_it_comes_back() {
    let receiver = Receiver::start(Behaviour { hold_marker: Some("HOLD".into()), ..Behaviour::default() }).await;
    let topics = Topics::create(1, &[Duration::from_secs(3600)]).await;
    let config = config(&topics).set("shutdown.grace", "2s").set("delivery.timeout", "120s");
    let mut relay = Relay::start(&config, &[]).await;
    let producer = producer();
    let mut offsets = Vec::new();
    for (i, marker) in ["go", "HOLD", "go"].iter().enumerate() {
        let value = format!(r#"{{"url":"{}","payload":"{marker}","id":"ab-{i}"}}"#, receiver.url("/x"));
        offsets.push(produce(&producer, &topics.events, Some(0), None, value.as_bytes()).await.1);
    }
    eventually("all three requests arrived", Duration::from_secs(20), || (receiver.count() == 3).then_some(())).await;
    let (group, topic) = (topics.group.clone(), topics.events.clone());
    eventually("committed up to the held record", Duration::from_secs(20), || {
        (committed(&group, &topic, 0) == Some(offsets[1])).then_some(())
    })
    .await;
    let started = Instant::now();
    let (code, relay) =
        tokio::task::spawn_blocking(move || (relay.terminate(Duration::from_secs(60)), relay)).await.unwrap();
    let took = started.elapsed();
    assert_eq!(code, Some(0), "log:\n{}", relay.log_text());
    // Time is the feature: the exit follows the 2 s grace, not the held request, which only the
    // grace can end (the receiver holds it until released below; delivery.timeout is 120 s here).
    // After the grace the relay waits up to 2 s for abandoned work and 5 s for its producer: the
    // 30 s bound leaves a loaded 2-core machine room and is still a quarter of the request's timeout.
    assert!(took >= Duration::from_secs(2), "exited {took:?} after SIGTERM, before the 2 s grace");
    assert!(took < Duration::from_secs(30), "exited {took:?} after SIGTERM with a 2 s grace");
    assert!(relay.log_text().contains("abandoning in-flight records"));
    assert_eq!(committed(&group, &topic, 0), Some(offsets[1]), "the abandoned record is not committed");
    receiver.release();
    let _again = Relay::start(&config, &[]).await;
    eventually("the abandoned record is delivered again", Duration::from_secs(30), || {
        (receiver.received().iter().filter(|r| r.header("webhook-id") == "ab-1").count() == 2).then_some(())
    })
    .await;
    eventually("and committed", Duration::from_secs(20), || {
        (committed(&group, &topic, 0) == Some(offsets[2] + 1)).then_some(())
    })
    .await;
}
