//! Endpoints as data: the registry topic, the `endpoints` commands, and a
//! running relay following it (SPEC "Endpoints as data"). Each relay has a
//! registry topic of its own. Times from a change to its effect are printed
//! (`--nocapture`) as they are measured.

use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::ClientConfig;
use serde_json::json;

use crate::harness::*;

/// `registry.key`: base64 of 32 bytes.
pub const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
const SECRET_A: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SECRET_BODY: &str = "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const TOKEN: &str = "tok-registry-1";

/// A compacted registry topic of one partition, as `topics ensure` makes it.
pub async fn registry_topic() -> String {
    let name = unique("registry");
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", bootstrap()).create().expect("admin client");
    let topic = NewTopic::new(&name, 1, TopicReplication::Fixed(1)).set("cleanup.policy", "compact");
    for result in admin.create_topics([&topic], &AdminOptions::new()).await.expect("create topic") {
        result.expect("topic created");
    }
    name
}

/// The test config with the registry on: its own topic, the key, a short grace.
fn with_registry(topics: &Topics, registry: &str) -> Config {
    Config::new(topics).set("topics.endpoints", registry).set("registry.key", KEY).set("registry.unknown_grace", "20s")
}

/// `hookrelay --config ... ARGS` with the given config.
pub struct Cli {
    dir: tempfile::TempDir,
    path: PathBuf,
}

impl Cli {
    pub fn new(config: &Config) -> Cli {
        let (dir, path, _) = write_config(&config.to_string());
        Cli { dir, path }
    }

    pub fn run(&self, args: &[&str]) -> Output {
        std::process::Command::new(binary())
            .arg("--config")
            .arg(&self.path)
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .output()
            .expect("run hookrelay")
    }

    /// Writes `spec` as `NAME.json` beside the config, then `endpoints put NAME --file NAME.json`.
    pub fn put(&self, name: &str, spec: &serde_json::Value) -> Output {
        let file = self.dir.path().join(format!("{name}.json"));
        std::fs::write(&file, spec.to_string()).unwrap();
        self.run(&["endpoints", "put", name, "--file", file.to_str().unwrap()])
    }

    /// Runs and asserts exit 0; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert_eq!(output.status.code(), Some(0), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap()
    }
}

fn put_ok(cli: &Cli, name: &str, spec: &serde_json::Value) -> Instant {
    let output = cli.put(name, spec);
    assert_eq!(output.status.code(), Some(0), "put {name}: {}", String::from_utf8_lossy(&output.stderr));
    Instant::now()
}

/// Exit 64 with one line on stderr that contains `expected`.
fn refused_64(output: &Output, expected: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(64), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr:?}");
    assert!(stderr.contains(expected), "{stderr:?} lacks {expected:?}");
}

fn event(name: &str, id: &str) -> Vec<u8> {
    json!({"endpoint": name, "id": id, "payload": {"id": id}}).to_string().into_bytes()
}

/// Checks one signature (of the space-separated list) against `secret`.
fn verifies(secret: &str, request: &Received, signature: &str) -> bool {
    let webhook = standardwebhooks::Webhook::new(secret).unwrap();
    let mut headers = axum::http::HeaderMap::new();
    headers.insert("webhook-id", request.header("webhook-id").parse().unwrap());
    headers.insert("webhook-timestamp", request.header("webhook-timestamp").parse().unwrap());
    headers.insert("webhook-signature", signature.parse().unwrap());
    webhook.verify(&request.body, &headers).is_ok()
}

fn signatures(request: &Received) -> Vec<String> {
    request.header("webhook-signature").split(' ').map(str::to_string).collect()
}

fn received_id(receiver: &Receiver, id: &str) -> Option<Received> {
    receiver.received().into_iter().find(|r| r.headers.get("webhook-id").map(String::as_str) == Some(id))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_endpoint_gets_signed_deliveries_and_its_secrets_show_nowhere() {
    let receiver = Receiver::start(Behaviour::default()).await;
    let topics = Topics::create(1, &[Duration::from_secs(1)]).await;
    let registry = registry_topic().await;
    let config = with_registry(&topics, &registry);
    let relay = Relay::start(&config, &[]).await;
    let cli = Cli::new(&config);
    let producer = producer();
    // Produced just before its endpoint is put: deferred, then delivered (not dead).
    produce(&producer, &topics.events, None, None, &event("acme", "early-1")).await;
    let spec = json!({
        "url": receiver.url("/acme"),
        "secrets": [SECRET_A],
        "headers": {"authorization": format!("Bearer {TOKEN}")},
        "timeout": "3s",
    });
    let put = put_ok(&cli, "acme", &spec);
    produce(&producer, &topics.events, None, None, &event("acme", "after-1")).await;
    for id in ["after-1", "early-1"] {
        let request = eventually(id, Duration::from_secs(30), || received_id(&receiver, id)).await;
        assert!(verifies(SECRET_A, &request, request.header("webhook-signature")), "{id} verifies with the secret");
        assert_eq!(request.header("authorization"), format!("Bearer {TOKEN}"));
        assert_eq!(request.path, "/acme");
    }
    println!("put -> first event produced after it delivered: {:?}", put.elapsed());
    let dead = read_topic(&topics.dead, 1, Duration::from_secs(2)).await;
    assert!(dead.is_empty(), "nothing dead: {dead:?}");

    // The raw record holds the secrets sealed, never in clear.
    let raw = read_topic(&registry, 1, Duration::from_secs(10)).await;
    let value = String::from_utf8_lossy(&raw[0].value);
    assert!(!value.contains(SECRET_BODY) && !value.contains(TOKEN), "{value}");
    assert!(value.contains("sealed:v1:"), "{value}");
    assert!(raw[0].header("hookrelay-registry-tag").is_some(), "{:?}", raw[0].headers);

    let shown = cli.ok(&["endpoints", "get", "acme"]);
    assert!(!shown.contains(SECRET_BODY) && !shown.contains(TOKEN), "{shown}");
    assert!(shown.contains("<redacted>") && shown.contains("\"timeout\": \"3s\""), "{shown}");
    let listed = cli.ok(&["endpoints", "list"]);
    let port = receiver.url("/").split(':').nth(2).unwrap().trim_end_matches('/').to_string();
    assert_eq!(listed.trim_end(), format!("acme\tregistry\t127.0.0.1:{port}\t-"));
    assert!(!listed.contains(SECRET_BODY) && !listed.contains(TOKEN));

    let metrics = relay.metrics().await;
    assert_eq!(metric(&metrics, "hookrelay_registry_endpoints{source=\"registry\"}"), Some(1.0), "{metrics}");
    assert_eq!(metric(&metrics, "hookrelay_registry_up"), Some(1.0));
    assert_eq!(metric(&metrics, "hookrelay_registry_updates_total{result=\"applied\"}"), Some(1.0));
    assert_eq!(metric(&metrics, "hookrelay_registry_offset{partition=\"0\"}"), Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_url_and_a_rotated_secret_take_effect_without_a_restart() {
    let (old, new) = (Receiver::start(Behaviour::default()).await, Receiver::start(Behaviour::default()).await);
    let topics = Topics::create(1, &[Duration::from_secs(1)]).await;
    let registry = registry_topic().await;
    let config = with_registry(&topics, &registry);
    let _relay = Relay::start(&config, &[]).await;
    let cli = Cli::new(&config);
    let producer = producer();
    put_ok(&cli, "acme", &json!({"url": old.url("/old"), "secrets": [SECRET_A]}));
    produce(&producer, &topics.events, None, None, &event("acme", "before")).await;
    eventually("the first URL gets it", Duration::from_secs(30), || received_id(&old, "before")).await;

    // The URL changes: probes every 100 ms until one reaches the new URL.
    let changed = put_ok(&cli, "acme", &json!({"url": new.url("/new"), "secrets": [SECRET_A]}));
    let mut probe = 0;
    let effect = loop {
        let id = format!("probe-{probe}");
        let sent = changed.elapsed();
        produce(&producer, &topics.events, None, None, &event("acme", &id)).await;
        if eventually_maybe(Duration::from_millis(100), || received_id(&new, &id)).await.is_some() {
            break sent;
        }
        probe += 1;
        assert!(changed.elapsed() < Duration::from_secs(10), "the new URL got nothing within 10 s");
    };
    println!("URL change: the first event produced {effect:?} after the put went to the new URL");
    // SPEC: within 5 s; an event produced 5 s after the change goes to the new URL.
    tokio::time::sleep(Duration::from_secs(5).saturating_sub(changed.elapsed())).await;
    produce(&producer, &topics.events, None, None, &event("acme", "five-seconds-later")).await;
    eventually("5 s later: the new URL", Duration::from_secs(30), || received_id(&new, "five-seconds-later")).await;
    assert!(received_id(&old, "five-seconds-later").is_none());

    // Rotation: two signatures, one per secret, until --keep has passed.
    let rotated = Instant::now();
    let rotated_ms = now_ms();
    let output = cli.run(&["endpoints", "rotate-secret", "acme", "--keep", "6s"]);
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    let secret = String::from_utf8(output.stdout).unwrap().trim().to_string();
    assert!(secret.starts_with("whsec_"), "{secret}");
    let two = probe_until(&producer, &topics.events, &new, "rotated", |r| signatures(r).len() == 2).await;
    println!("rotation: two signatures {:?} after rotate-secret", rotated.elapsed());
    let sigs = signatures(&two);
    assert!(sigs.iter().any(|s| verifies(SECRET_A, &two, s) && !verifies(&secret, &two, s)), "{sigs:?}");
    assert!(sigs.iter().any(|s| verifies(&secret, &two, s) && !verifies(SECRET_A, &two, s)), "{sigs:?}");
    let one = probe_until(&producer, &topics.events, &new, "kept", |r| signatures(r).len() == 1).await;
    assert!(one.at_ms >= rotated_ms + 6_000, "the old secret signs until --keep");
    println!("rotation: the old secret dropped {:?} after rotate-secret (--keep 6s)", rotated.elapsed());
    assert!(verifies(&secret, &one, one.header("webhook-signature")));
    assert!(!verifies(SECRET_A, &one, one.header("webhook-signature")));
    assert!(!cli.ok(&["endpoints", "get", "acme"]).contains(&secret[6..]), "get never shows the new secret");
}

/// Waits up to `within` for `check`; None when it never held.
async fn eventually_maybe<T>(within: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(found) = check() {
            return Some(found);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Produces probes `PREFIX-n` until one is received that `holds` (within 30 s).
async fn probe_until(
    producer: &rdkafka::producer::FutureProducer,
    topic: &str,
    receiver: &Receiver,
    prefix: &str,
    holds: impl Fn(&Received) -> bool,
) -> Received {
    let start = Instant::now();
    for n in 0.. {
        let id = format!("{prefix}-{n}");
        produce(producer, topic, None, None, &event("acme", &id)).await;
        let got = eventually(&id, Duration::from_secs(30), || received_id(receiver, &id)).await;
        if holds(&got) {
            return got;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{prefix}: no matching delivery within 30 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    unreachable!()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_endpoint_defers_its_events_then_they_are_dead() {
    let receiver = Receiver::start(Behaviour::default()).await;
    let topics = Topics::create(1, &[Duration::from_secs(1)]).await;
    let registry = registry_topic().await;
    let config = with_registry(&topics, &registry).set("registry.unknown_grace", "3s");
    let relay = Relay::start(&config, &[]).await;
    let cli = Cli::new(&config);
    let producer = producer();
    put_ok(&cli, "gone", &json!({"url": receiver.url("/gone")}));
    produce(&producer, &topics.events, None, None, &event("gone", "kept")).await;
    eventually("delivered while it exists", Duration::from_secs(30), || received_id(&receiver, "kept")).await;
    let output = cli.run(&["endpoints", "delete", "gone"]);
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    let deleted = Instant::now();
    let gauge = "hookrelay_registry_endpoints{source=\"registry\"}";
    eventually_async("the relay applies the delete", Duration::from_secs(10), || async {
        (metric(&relay.metrics().await, gauge) == Some(0.0)).then_some(())
    })
    .await;
    println!("delete applied by the relay {:?} after the command returned", deleted.elapsed());
    let produced_ms = now_ms();
    produce(&producer, &topics.events, None, None, &event("gone", "after-delete")).await;
    let dead = read_topic(&topics.dead, 1, Duration::from_secs(30)).await;
    assert_eq!(dead.len(), 1, "dead after the grace");
    assert_eq!(dead[0].header("hookrelay-reason"), Some("invalid_event"));
    let error = dead[0].header("hookrelay-last-error").unwrap();
    assert!(error.contains("unknown endpoint \"gone\""), "{error}");
    assert!(dead[0].header_i64("hookrelay-attempt") == 0, "never attempted: {:?}", dead[0].headers);
    let waited = dead[0].timestamp_ms - produced_ms;
    assert!(waited >= 2_900, "deferred for the grace (3 s) first, dead after {waited} ms");
    assert!(received_id(&receiver, "after-delete").is_none());
    assert_eq!(cli.run(&["endpoints", "get", "gone"]).status.code(), Some(1), "get: no such endpoint");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_puts_and_bad_registries_exit_64_with_one_line() {
    let topics = Topics::create(1, &[Duration::from_secs(1)]).await;
    let registry = registry_topic().await;
    let keyed = with_registry(&topics, &registry).endpoint("billing", "https://billing.example/hooks");
    let cli = Cli::new(&keyed);
    refused_64(
        &cli.put("billing", &json!({"url": "https://x.example/"})),
        "endpoints.billing: is defined in the config file",
    );
    refused_64(&cli.put("bad", &json!({"url": "ftp://x.example/"})), "endpoints.bad.url");
    refused_64(&cli.put("bad", &json!({"url": "https://x.example/", "colour": "red"})), "unknown field `colour`");
    refused_64(&cli.put("Bad", &json!({"url": "https://x.example/"})), "name: endpoint name \"Bad\"");
    refused_64(&cli.run(&["endpoints", "rotate-secret", "billing"]), "endpoints.billing");
    let unkeyed = Cli::new(&Config::new(&topics).set("topics.endpoints", registry.as_str()));
    refused_64(
        &unkeyed.put("acme", &json!({"url": "https://x.example/", "secrets": [SECRET_A]})),
        "registry.key: is not set",
    );
    refused_64(&unkeyed.run(&["endpoints", "delete", "acme"]), "registry.key: is not set");

    // A registry holding records that this relay cannot verify refuses the start.
    put_ok(&cli, "acme", &json!({"url": "https://x.example/"}));
    let output = unkeyed.run(&["run"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(64), "{stderr}");
    let last = stderr.trim_end().lines().last().unwrap_or_default();
    assert!(last.contains("holds 1 record(s) but registry.key is not set"), "{stderr}");

    // topics ensure: creates the registry compacted, refuses one that is not.
    let fresh = unique("registry");
    let ensure = Cli::new(&Config::new(&topics).set("topics.endpoints", fresh.as_str())).ok(&["topics", "ensure"]);
    assert!(ensure.contains(&format!("created {fresh} (1 partition, compacted)")), "{ensure}");
    // At once again (a second replica's init container): the broker may not describe
    // the new topic's configs yet; that is asked again, not "not compacted (cleanup.policy=)".
    let again = Cli::new(&Config::new(&topics).set("topics.endpoints", fresh.as_str())).ok(&["topics", "ensure"]);
    assert!(again.contains(&format!("exists  {fresh} (compacted)")), "{again}");
    let plain = unique("registry");
    create_topics(std::slice::from_ref(&plain), 1).await;
    let output = Cli::new(&Config::new(&topics).set("topics.endpoints", plain.as_str())).run(&["topics", "ensure"]);
    refused_64(&output, &format!("topic {plain} is not compacted (cleanup.policy=delete)"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_reaches_every_replica_and_a_later_one_delivers_at_once() {
    let receiver = Receiver::start(Behaviour::default()).await;
    let topics = Topics::create(2, &[Duration::from_secs(3600)]).await;
    let registry = registry_topic().await;
    let config = with_registry(&topics, &registry);
    let cli = Cli::new(&config);
    put_ok(&cli, "first", &json!({"url": receiver.url("/first")}));
    // Started after the put: it knows "first" before it consumes (no deferral, the tier is an hour).
    let one = Relay::start(&config, &[]).await;
    let producer = producer();
    produce(&producer, &topics.events, Some(0), None, &event("first", "at-once")).await;
    eventually("delivered at once", Duration::from_secs(15), || received_id(&receiver, "at-once")).await;
    let two = Relay::start(&config, &[]).await;
    let put = put_ok(&cli, "second", &json!({"url": receiver.url("/second")}));
    let gauge = "hookrelay_registry_endpoints{source=\"registry\"}";
    for (name, relay) in [("one", &one), ("two", &two)] {
        eventually_async(name, Duration::from_secs(5), || async {
            (metric(&relay.metrics().await, gauge) == Some(2.0)).then_some(())
        })
        .await;
        println!("put -> applied by replica {name}: {:?}", put.elapsed());
    }
    assert!(put.elapsed() < Duration::from_secs(5), "SPEC: on every replica within 5 s");
    for partition in 0..2 {
        let id = format!("second-{partition}");
        produce(&producer, &topics.events, Some(partition), None, &event("second", &id)).await;
    }
    for partition in 0..2 {
        let id = format!("second-{partition}");
        eventually(&id, Duration::from_secs(15), || received_id(&receiver, &id)).await;
    }
    let tier = read_topic(&topics.tiers[0].0, 1, Duration::from_secs(1)).await;
    assert!(tier.is_empty(), "nothing deferred: {tier:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_record_is_refused_and_the_endpoint_keeps_its_spec() {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::FutureRecord;
    use rdkafka::util::Timeout;
    let receiver = Receiver::start(Behaviour::default()).await;
    let topics = Topics::create(1, &[Duration::from_secs(1)]).await;
    let registry = registry_topic().await;
    let config = with_registry(&topics, &registry);
    let relay = Relay::start(&config, &[]).await;
    let cli = Cli::new(&config);
    put_ok(&cli, "acme", &json!({"url": receiver.url("/acme")}));
    // Someone with Write on the topic but not the key repoints acme, with and without a made-up tag.
    let producer = producer();
    let forged = json!({"url": "http://127.0.0.1:1/stolen"}).to_string();
    for tag in [None, Some("bm90IGEgdGFn")] {
        let mut headers =
            OwnedHeaders::new().insert(Header { key: "hookrelay-registry-at", value: Some(&now_ms().to_string()) });
        if let Some(tag) = tag {
            headers = headers.insert(Header { key: "hookrelay-registry-tag", value: Some(tag) });
        }
        let record = FutureRecord::to(&registry).key("acme").payload(&forged).headers(headers);
        producer.send(record, Timeout::After(Duration::from_secs(10))).await.expect("written");
    }
    eventually_async("both forged records refused", Duration::from_secs(10), || async {
        (metric(&relay.metrics().await, "hookrelay_registry_updates_total{result=\"refused\"}") == Some(2.0))
            .then_some(())
    })
    .await;
    produce(&producer, &topics.events, None, None, &event("acme", "still-acme")).await;
    let got =
        eventually("the original URL keeps it", Duration::from_secs(30), || received_id(&receiver, "still-acme")).await;
    assert_eq!(got.path, "/acme");
    assert!(relay.log_text().contains("registry record refused, previous spec kept"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_registry_topic_is_an_empty_registry_not_a_crash() {
    let topics = Topics::create(1, &[Duration::from_secs(3600)]).await;
    let missing = unique("registry-missing");
    let relay = Relay::start(&with_registry(&topics, &missing), &[]).await;
    let metrics = relay.metrics().await;
    assert_eq!(metric(&metrics, "hookrelay_registry_up"), Some(0.0), "{metrics}");
    assert_eq!(metric(&metrics, "hookrelay_registry_endpoints{source=\"registry\"}"), Some(0.0));
    assert!(relay.log_text().contains("the registry topic does not exist: empty registry"));
}
