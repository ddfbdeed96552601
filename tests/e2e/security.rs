//! Issue 11: secrets stay secret (check-config, last-error, logs, metrics,
//! notifications), targets stay public (transition addresses), producers
//! cannot forge the relay's state on event topics.

use std::time::Duration;

use axum::http::StatusCode;

use crate::harness::*;

/// A key for `[replay]` in these tests.
const REPLAY_KEY: &str = "e2e-security-replay-key";

/// The base of these tests: no circuit breaker, so every record makes its attempt.
fn config(topics: &Topics) -> Config {
    Config::new(topics).set("circuit.enabled", false)
}

/// A receiver that always answers 410 with text meant to ping a Slack channel.
async fn hostile_receiver() -> std::net::SocketAddr {
    let app = axum::Router::new().fallback(|| async {
        (StatusCode::GONE, "<!channel> <https://evil.example/login|click here> & reset your password")
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.ok() });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transition_addresses_of_private_networks_are_forbidden_targets() {
    let receiver = Receiver::start(Behaviour::default()).await;
    // A retryable failure would wait an hour in the tier: only the guard makes dead letters here.
    let topics = Topics::create(1, &[Duration::from_secs(3600)]).await;
    let config = config(&topics).set("delivery.allow_private_networks", false);
    let _relay = Relay::start(&config, &[]).await;
    let producer = producer();
    let port = receiver.addr.port();
    let targets = [
        format!("http://[2002:7f00:1::1]:{port}/x"),    // 6to4 of 127.0.0.1
        format!("http://[64:ff9b:1::7f00:1]:{port}/x"), // local-use NAT64
        format!("http://[::127.0.0.1]:{port}/x"),       // IPv4-compatible
        format!("http://[::ffff:0:7f00:1]:{port}/x"),   // SIIT
        format!("http://[2001::80ff:fffe]:{port}/x"),   // Teredo, client 127.0.0.1
        format!("http://[64:ff9b::7f00:1]:{port}/x"),   // well-known NAT64 of 127.0.0.1
    ];
    for url in &targets {
        let value = format!(r#"{{"url":"{url}","payload":1}}"#);
        produce(&producer, &topics.events, Some(0), None, value.as_bytes()).await;
    }
    let dead = read_topic(&topics.dead, targets.len(), Duration::from_secs(30)).await;
    assert_eq!(dead.len(), targets.len());
    for record in &dead {
        assert_eq!(record.header("hookrelay-reason"), Some("forbidden_target"), "{:?}", record.headers);
        let error = record.header("hookrelay-last-error").unwrap();
        assert!(error.contains("forbidden target"), "{error}");
    }
    assert_eq!(receiver.count(), 0, "the guard let a request through");
}

#[test]
fn check_config_shows_no_secret() {
    let text = r#"
[kafka.properties]
"sasl.password" = "s3cret-a"
"ssl.key.password" = "s3cret-b"
"sasl.oauthbearer.client.secret" = "s3cret-c"
"linger.ms" = "7"
[endpoints.billing]
url = "https://billing.example.com/hook?token=s3cret-d"
headers = { authorization = "Bearer s3cret-e", x-tenant = "s3cret-f" }
[[notify.sinks]]
kind = "http"
format = "slack"
url = "https://hooks.slack.com/services/T0/B0/s3cret-g"
[[notify.sinks]]
kind = "email"
host = "smtp.example.com"
username = "ops"
password = "s3cret-h"
from = "relay@example.com"
to = ["ops@example.com"]
[replay]
key = "s3cret-i-0123456789"
"#;
    let (_dir, path, _) = write_config(text);
    let output = std::process::Command::new(binary()).arg("--config").arg(&path).arg("check-config").output().unwrap();
    let shown = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert_eq!(output.status.code(), Some(0), "{shown}");
    assert!(!shown.contains("s3cret"), "{shown}");
    assert!(shown.contains("\"linger.ms\" = \"7\""), "other properties are shown: {shown}");
    assert!(shown.contains("https://billing.example.com/hook?token=<redacted>"), "{shown}");
}

/// A refused connection to a URL with a `?token=` and an invalid URL with one:
/// neither the dead records, the logs, the metrics nor the notifications carry it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_tokens_stay_out_of_errors_logs_and_notifications() {
    let closed = free_port();
    let slack = Receiver::start(Behaviour::default()).await;
    let topics = Topics::create(1, &[Duration::from_secs(3600)]).await;
    let config = config(&topics)
        .set("retry.max_attempts", 1)
        .set("notify.give_up_after", "2s")
        .push("notify.sinks", table([("kind", "log".into())]))
        .push(
            "notify.sinks",
            table([("kind", "http".into()), ("format", "slack".into()), ("url", slack.url("/services/T0/B0").into())]),
        )
        .push(
            "notify.sinks",
            table([("kind", "http".into()), ("url", format!("http://127.0.0.1:{closed}/services/s3cret-sink").into())]),
        );
    let relay = Relay::start(&config, &[]).await;
    let producer = producer();
    let refused = format!(r#"{{"url":"http://127.0.0.1:{closed}/hook?token=s3cret-1","payload":1}}"#);
    produce(&producer, &topics.events, Some(0), None, refused.as_bytes()).await;
    let invalid = r#"{"url":"ftp://user:s3cret-2@a.example/hook?token=s3cret-3","payload":1}"#;
    produce(&producer, &topics.events, Some(0), None, invalid.as_bytes()).await;

    let dead = read_topic(&topics.dead, 2, Duration::from_secs(30)).await;
    assert_eq!(dead.len(), 2);
    // The values stay byte for byte.
    let refused_dead = dead.iter().find(|r| r.value == refused.as_bytes()).expect("the refused one");
    let invalid_dead = dead.iter().find(|r| r.value == invalid.as_bytes()).expect("the invalid one");
    let refused_error = refused_dead.header("hookrelay-last-error").unwrap();
    assert!(refused_error.contains(&format!("127.0.0.1:{closed}")), "the endpoint is named: {refused_error}");
    assert!(!refused_error.contains("s3cret") && !refused_error.contains("/hook"), "{refused_error}");
    let invalid_error = invalid_dead.header("hookrelay-last-error").unwrap();
    assert!(invalid_error.contains("ftp://<redacted>@a.example/hook?token=<redacted>"), "{invalid_error}");

    eventually("the Slack notifications arrived", Duration::from_secs(30), || (slack.count() >= 2).then_some(())).await;
    let log = eventually("the failing sink gave up", Duration::from_secs(30), || {
        let log = relay.log_text();
        log.contains("notification given up").then_some(log)
    })
    .await;
    assert!(log.contains("routed to dead topic") && log.contains("dead letter"), "{log}");
    assert!(!log.contains("s3cret"), "a secret in the log:\n{log}");
    for request in slack.received() {
        let body = String::from_utf8_lossy(&request.body);
        assert!(!body.contains("s3cret"), "{body}");
    }
    assert!(!relay.metrics().await.contains("s3cret"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_text_in_a_slack_notification_is_inert() {
    let hostile = hostile_receiver().await;
    let slack = Receiver::start(Behaviour::default()).await;
    let topics = Topics::create(1, &[Duration::from_secs(3600)]).await;
    let config = config(&topics).push(
        "notify.sinks",
        table([("kind", "http".into()), ("format", "slack".into()), ("url", slack.url("/slack").into())]),
    );
    let _relay = Relay::start(&config, &[]).await;
    let value = format!(r#"{{"url":"http://{hostile}/x","payload":1}}"#);
    produce(&producer(), &topics.events, Some(0), None, value.as_bytes()).await;
    eventually("the Slack notification arrived", Duration::from_secs(30), || (slack.count() == 1).then_some(())).await;
    let message: serde_json::Value = serde_json::from_slice(&slack.received()[0].body).unwrap();
    let text = message["text"].as_str().unwrap();
    assert!(text.contains("&lt;!channel&gt; &lt;https://evil.example/login|click here&gt; &amp; reset"), "{text}");
    assert!(!text.contains('<') && !text.contains('>'), "{text}");
}

/// A producer's `hookrelay-*` headers on an event topic set nothing: not the
/// deadline, not the attempt count, not the origin (and so not the id).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producers_cannot_forge_the_relay_state() {
    let receiver = Receiver::start(Behaviour::default()).await;
    let topics = Topics::create(1, &[Duration::from_secs(3600)]).await;
    let relay = Relay::start(&config(&topics).set("replay.key", REPLAY_KEY), &[]).await;
    let producer = producer();
    let value = format!(r#"{{"url":"{}","payload":1}}"#, receiver.url("/x"));
    let forged = [
        ("hookrelay-attempt", "99"),
        ("hookrelay-deadline-ms", "1"),
        ("hookrelay-origin-topic", topics.events.as_str()),
        ("hookrelay-origin-partition", "0"),
        ("hookrelay-origin-offset", "123456"),
        ("hookrelay-replay-signature", "Zm9yZ2VkLXNlYWw="),
    ];
    let (partition, offset) = produce_with_headers(&producer, &topics.events, 0, value.as_bytes(), &forged).await;
    eventually("delivered despite the forged deadline", Duration::from_secs(30), || {
        (receiver.count() == 1).then_some(())
    })
    .await;
    let id = format!("{}-{partition}-{offset}", topics.events);
    assert_eq!(receiver.received()[0].header("webhook-id"), id, "its own default id, not the forged origin's");
    let metrics = relay.metrics().await;
    let label = format!("hookrelay_relay_headers_ignored_total{{topic=\"{}\"}}", topics.events);
    assert_eq!(metric(&metrics, &label), Some(1.0), "{metrics}");
}

/// Without `replay.key`, `replay` says what the relay will make of the records.
#[test]
fn replay_without_a_key_says_ids_will_change() {
    let topics = tokio::runtime::Runtime::new().unwrap().block_on(Topics::create(1, &[Duration::from_secs(60)]));
    let (_dir, path, _) = write_config(&config(&topics).to_string());
    let output = std::process::Command::new(binary()).arg("--config").arg(&path).arg("replay").output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout} {}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("replay.key is not set") && stdout.contains("new default ids"), "{stdout}");
    assert_eq!(stdout.lines().last(), Some("replayed 0 of 0 scanned"));
}
