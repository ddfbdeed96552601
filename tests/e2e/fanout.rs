//! Fan-out (issue 21): events with a `type` and no receiver go to every subscribed endpoint, one leg each.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use crate::harness::*;

const SECRET_A: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SECRET_B: &str = "whsec_c2Vjb25kLXNlY3JldC0xMjM0NTY3OA==";
const SECRET_C: &str = "whsec_dGhpcmQtc2VjcmV0LWZvci1jLTEyMzQ1Njc4";

/// A `invoice.*`, B `invoice.paid`, C tenant acme (each its own receiver and secret); B's receiver as given.
async fn three(b: Behaviour, tier: Duration) -> (Topics, Config, [Receiver; 3]) {
    let receivers = [
        Receiver::start(Behaviour::default()).await,
        Receiver::start(b).await,
        Receiver::start(Behaviour::default()).await,
    ];
    let topics = Topics::create(1, &[tier]).await;
    let config = Config::new(&topics)
        .endpoint("a", &receivers[0].url("/a"))
        .set("endpoints.a.secrets", vec![SECRET_A])
        .set("endpoints.a.types", vec!["invoice.*"])
        .endpoint("b", &receivers[1].url("/b"))
        .set("endpoints.b.secrets", vec![SECRET_B])
        .set("endpoints.b.types", vec!["invoice.paid"])
        .endpoint("c", &receivers[2].url("/c"))
        .set("endpoints.c.secrets", vec![SECRET_C])
        .set("endpoints.c.filter", table([("exact", toml::Value::Table(table([("tenant", "acme".into())])))]));
    (topics, config, receivers)
}

async fn send_four(topics: &Topics) -> i64 {
    let producer = producer();
    let mut last = 0;
    for (id, r#type, tenant) in [
        ("e1", "invoice.paid", "acme"),
        ("e2", "invoice.void", "beta"),
        ("e3", "user.created", "acme"),
        ("e4", "order.x", "beta"),
    ] {
        let value = format!(
            r#"{{"id":"{id}","type":"{type}","attributes":{{"tenant":"{tenant}"}},"payload":{{"event":"{id}"}}}}"#
        );
        (_, last) = produce(&producer, &topics.events, Some(0), Some(id), value.as_bytes()).await;
    }
    last
}

fn ids(receiver: &Receiver) -> Vec<String> {
    let mut ids: Vec<String> = receiver.received().iter().map(|r| r.header("webhook-id").to_string()).collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_subscriber_gets_exactly_its_events_signed_with_its_own_secret() {
    let (topics, config, [a, b, c]) = three(Behaviour::default(), Duration::from_secs(3600)).await;
    let relay = Relay::start(&config, &[]).await;
    let last = send_four(&topics).await;
    eventually("every leg delivered", Duration::from_secs(60), || {
        (a.count() >= 2 && b.count() >= 1 && c.count() >= 2).then_some(())
    })
    .await;
    eventually("the source offset committed past the last event", Duration::from_secs(30), || {
        (committed(&topics.group, &topics.events, 0) == Some(last + 1)).then_some(())
    })
    .await;
    assert_eq!(ids(&a), ["e1", "e2"]);
    assert_eq!(ids(&b), ["e1"]);
    assert_eq!(ids(&c), ["e1", "e3"]);
    for (receiver, secret) in [(&a, SECRET_A), (&b, SECRET_B), (&c, SECRET_C)] {
        for request in receiver.received() {
            verify(secret, &request).unwrap();
            let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
            assert_eq!(body["event"], request.header("webhook-id"), "the payload is the body");
            let expected = match request.header("webhook-id") {
                "e1" => "invoice.paid",
                "e2" => "invoice.void",
                _ => "user.created",
            };
            assert_eq!(request.header("webhook-type"), expected);
        }
    }
    let text = relay.metrics().await;
    let unmatched = format!("hookrelay_events_unmatched_total{{topic=\"{}\"}}", topics.events);
    assert_eq!(metric(&text, &unmatched), Some(1.0), "order.x is unmatched:\n{text}");
    assert!(read_topic(&topics.dead, 1, Duration::from_secs(2)).await.is_empty(), "no dead letter");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_leg_retries_alone_and_the_others_are_not_resent() {
    let failing = Behaviour { fail_first: 2, ..Behaviour::default() };
    let (topics, config, [a, b, c]) = three(failing, Duration::from_secs(1)).await;
    let _relay = Relay::start(&config, &[]).await;
    let last = send_four(&topics).await;
    eventually("b answered 200 on its third attempt", Duration::from_secs(60), || {
        b.received().iter().any(|r| r.status == 200).then_some(())
    })
    .await;
    eventually("the source offset committed past the last event", Duration::from_secs(30), || {
        (committed(&topics.group, &topics.events, 0) == Some(last + 1)).then_some(())
    })
    .await;
    let statuses: Vec<u16> = b.received().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [503, 503, 200], "b: three requests of e1");
    assert_eq!(ids(&b), ["e1", "e1", "e1"]);
    assert_eq!(ids(&a), ["e1", "e2"], "a: one request each, never re-sent for b");
    assert_eq!(ids(&c), ["e1", "e3"], "c: one request each");
    let tier = read_topic(&topics.tiers[0].0, 2, Duration::from_secs(10)).await;
    let named: HashSet<&str> = tier.iter().filter_map(|r| r.header("hookrelay-endpoint")).collect();
    assert_eq!(named, HashSet::from(["b"]), "a tier record carries b's leg alone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejecting_leg_is_dead_alone() {
    let gone = Behaviour { status: 410, ..Behaviour::default() };
    let (topics, config, [a, b, c]) = three(gone, Duration::from_secs(3600)).await;
    let _relay = Relay::start(&config, &[]).await;
    let last = send_four(&topics).await;
    let dead = read_topic(&topics.dead, 1, Duration::from_secs(60)).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].header("hookrelay-endpoint"), Some("b"));
    assert_eq!(dead[0].header("hookrelay-reason"), Some("rejected"));
    eventually("the source offset committed past the last event", Duration::from_secs(30), || {
        (committed(&topics.group, &topics.events, 0) == Some(last + 1)).then_some(())
    })
    .await;
    assert_eq!(ids(&a), ["e1", "e2"]);
    assert_eq!(ids(&c), ["e1", "e3"]);
    assert_eq!(b.count(), 1);
}

/// Records as a CloudEvents SDK writes them (binary and structured mode, Kafka binding).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudevents_reach_their_subscribers_with_the_data_as_body() {
    let (topics, config, [a, b, c]) = three(Behaviour::default(), Duration::from_secs(3600)).await;
    let _relay = Relay::start(&config, &[]).await;
    let producer = producer();
    let binary = [
        ("ce_specversion", "1.0"),
        ("ce_id", "ce-1"),
        ("ce_source", "/billing"),
        ("ce_type", "invoice.paid"),
        ("ce_tenant", "beta"),
        ("content-type", "application/json"),
    ];
    produce_with_headers(&producer, &topics.events, 0, br#"{"amount":42}"#, &binary).await;
    let structured = br#"{"specversion":"1.0","id":"ce-2","source":"/users","type":"user.created","tenant":"acme","datacontenttype":"application/json","data":{"user":7}}"#;
    let (_, last) = produce_with_headers(
        &producer,
        &topics.events,
        0,
        structured,
        &[("content-type", "application/cloudevents+json; charset=UTF-8")],
    )
    .await;
    eventually("both CloudEvents delivered", Duration::from_secs(60), || {
        (a.count() >= 1 && b.count() >= 1 && c.count() >= 1).then_some(())
    })
    .await;
    eventually("committed", Duration::from_secs(30), || {
        (committed(&topics.group, &topics.events, 0) == Some(last + 1)).then_some(())
    })
    .await;
    let bodies = |r: &Receiver| -> HashMap<String, Vec<u8>> {
        r.received().into_iter().map(|q| (q.header("webhook-id").to_string(), q.body)).collect()
    };
    assert_eq!(bodies(&a), HashMap::from([("ce-1".to_string(), br#"{"amount":42}"#.to_vec())]));
    assert_eq!(bodies(&b), HashMap::from([("ce-1".to_string(), br#"{"amount":42}"#.to_vec())]));
    assert_eq!(bodies(&c), HashMap::from([("ce-2".to_string(), br#"{"user":7}"#.to_vec())]));
}

/// SPEC: a registry change takes effect within 5 s; a subscription is one (time is the feature here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_endpoint_subscribed_by_put_receives_within_5_s() {
    let receiver = Receiver::start(Behaviour::default()).await;
    let topics = Topics::create(1, &[Duration::from_secs(3600)]).await;
    let registry = crate::registry::registry_topic().await;
    let config =
        Config::new(&topics).set("topics.endpoints", registry.as_str()).set("registry.key", crate::registry::KEY);
    let relay = Relay::start(&config, &[]).await;
    let producer = producer();
    let event = |id: &str| format!(r#"{{"id":"{id}","type":"invoice.paid","payload":{{"id":"{id}"}}}}"#);
    produce(&producer, &topics.events, Some(0), None, event("before").as_bytes()).await;
    let unmatched = format!("hookrelay_events_unmatched_total{{topic=\"{}\"}}", topics.events);
    eventually_async("the event before the put is unmatched", Duration::from_secs(30), || async {
        (metric(&relay.metrics().await, &unmatched) == Some(1.0)).then_some(())
    })
    .await;
    let cli = crate::registry::Cli::new(&config);
    let spec = serde_json::json!({"url": receiver.url("/late"), "secrets": [SECRET_A], "types": ["invoice.*"]});
    let output = cli.put("late", &spec);
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    let put = std::time::Instant::now();
    let mut n = 0;
    while receiver.count() == 0 {
        assert!(put.elapsed() < Duration::from_secs(5), "no delivery within 5 s of the put");
        produce(&producer, &topics.events, Some(0), None, event(&format!("after-{n}")).as_bytes()).await;
        n += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("put -> first fanned-out delivery: {:?}", put.elapsed());
    let first = &receiver.received()[0];
    verify(SECRET_A, first).unwrap();
    assert!(first.header("webhook-id").starts_with("after-"), "the event before the put stays unmatched");
}

/// Records written by the CloudEvents Python SDK's Kafka binding (tests/e2e/cloudevents_records.py):
/// binary mode, and structured mode as that SDK labels it (`content-type: application/json`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_of_the_cloudevents_python_sdk_fan_out() {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/cloudevents_records.py");
    let output = std::process::Command::new("python3").arg(&script).output().expect("python3 runs");
    assert!(
        output.status.success(),
        "scripts/test-deps.sh installs cloudevents: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let (topics, config, [a, b, c]) = three(Behaviour::default(), Duration::from_secs(3600)).await;
    let _relay = Relay::start(&config, &[]).await;
    let producer = producer();
    let mut last = 0;
    for line in String::from_utf8(output.stdout).unwrap().lines() {
        let record: serde_json::Value = serde_json::from_str(line).unwrap();
        let headers: Vec<(&str, &str)> =
            record["headers"].as_object().unwrap().iter().map(|(k, v)| (k.as_str(), v.as_str().unwrap())).collect();
        let value = record["value"].as_str().unwrap();
        (_, last) = produce_with_headers(&producer, &topics.events, 0, value.as_bytes(), &headers).await;
    }
    eventually("both SDK events delivered", Duration::from_secs(60), || {
        (a.count() >= 1 && b.count() >= 1 && c.count() >= 1).then_some(())
    })
    .await;
    eventually("committed", Duration::from_secs(30), || {
        (committed(&topics.group, &topics.events, 0) == Some(last + 1)).then_some(())
    })
    .await;
    let body = |r: &Receiver, id: &str| -> serde_json::Value {
        let request = r.received().into_iter().find(|q| q.header("webhook-id") == id).expect(id);
        serde_json::from_slice(&request.body).unwrap()
    };
    assert_eq!(body(&a, "py-1"), serde_json::json!({"amount": 42}), "binary mode: the value is the body");
    assert_eq!(body(&b, "py-1"), serde_json::json!({"amount": 42}));
    assert_eq!(body(&c, "py-2"), serde_json::json!({"user": 7}), "structured mode: data is the body");
    assert_eq!((a.count(), b.count(), c.count()), (1, 1, 1));
}

/// A slow subscriber does not hold the others: past its limit and `max_waiting_per_endpoint`,
/// its legs go to the tier, so the records waiting for it do not fill the partition's slots.
/// (Without that, a fast subscriber got one event per slow answer: 16 slots all waiting on B.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_subscriber_does_not_hold_the_others_legs() {
    let slow = Behaviour { delay: Duration::from_secs(3), ..Behaviour::default() };
    let (topics, config, [a, b, _c]) = three(slow, Duration::from_secs(3600)).await;
    let config = config
        .set("endpoints.b.max_in_flight", 1)
        .set("delivery.max_waiting_per_endpoint", 8)
        .set("delivery.max_in_flight_per_partition", 16);
    let _relay = Relay::start(&config, &[]).await;
    let producer = producer();
    let total = 100;
    for i in 0..total {
        let value = format!(r#"{{"id":"p{i}","type":"invoice.paid","payload":{{"n":{i}}}}}"#);
        produce(&producer, &topics.events, Some(0), None, value.as_bytes()).await;
    }
    // Time is the feature: B takes 3 s a request one at a time, so held legs would need ~250 s.
    eventually("a got every event while b is slow", Duration::from_secs(30), || (a.count() >= total).then_some(()))
        .await;
    assert!(b.count() < 20, "b got {} requests: the overflow went to the tier", b.count());
    let tier = read_topic(&topics.tiers[0].0, 50, Duration::from_secs(10)).await;
    assert!(tier.len() >= 50, "b's overflowed legs are in the tier: {}", tier.len());
    assert!(tier.iter().all(|r| r.header("hookrelay-endpoint") == Some("b")));
}

/// A leg in the tiers whose registry endpoint is deleted is deferred as an unknown endpoint,
/// then dead naming that endpoint (not "needs a url or endpoint": it is still that endpoint's leg).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leg_whose_endpoint_is_deleted_is_dead_naming_it() {
    let failing = Receiver::start(Behaviour { fail_first: 1000, ..Behaviour::default() }).await;
    let topics = Topics::create(1, &[Duration::from_secs(1)]).await;
    let registry = crate::registry::registry_topic().await;
    let config = Config::new(&topics)
        .set("topics.endpoints", registry.as_str())
        .set("registry.key", crate::registry::KEY)
        .set("registry.unknown_grace", "3s");
    let _relay = Relay::start(&config, &[]).await;
    let cli = crate::registry::Cli::new(&config);
    let spec = serde_json::json!({"url": failing.url("/late"), "types": ["invoice.*"]});
    assert_eq!(cli.put("late", &spec).status.code(), Some(0));
    let value = br#"{"id":"gone-1","type":"invoice.paid","payload":{}}"#;
    // Until the put is applied the event is unmatched: send again until the endpoint got one.
    let producer = producer();
    let started = std::time::Instant::now();
    while failing.count() == 0 {
        assert!(started.elapsed() < Duration::from_secs(10), "the put endpoint never got the event");
        produce(&producer, &topics.events, Some(0), None, value).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    cli.ok(&["endpoints", "delete", "late"]);
    let dead = read_topic(&topics.dead, 1, Duration::from_secs(60)).await;
    assert_eq!(dead.len(), 1, "one dead leg");
    let error = dead[0].header("hookrelay-last-error").unwrap_or_default();
    assert!(error.contains("unknown endpoint \"late\""), "{error}");
}

/// The legs in flight in the process are at most `delivery.max_in_flight`, as
/// its records are: a record's legs wait for a place, they are not all made at
/// once (1,024 records of ten legs each held 10,240; bench S9's peak RSS).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legs_in_flight_are_at_most_max_in_flight() {
    let receiver = Receiver::start(Behaviour { hold_marker: Some("held".into()), ..Behaviour::default() }).await;
    let topics = Topics::create(1, &[Duration::from_secs(3600)]).await;
    let mut config = Config::new(&topics).set("delivery.max_in_flight", 2);
    for name in ["x", "y", "z"] {
        config = config
            .endpoint(name, &receiver.url(&format!("/{name}")))
            .set(&format!("endpoints.{name}.types"), vec!["t"]);
    }
    let _relay = Relay::start(&config, &[]).await;
    produce(&producer(), &topics.events, Some(0), None, br#"{"id":"f1","type":"t","payload":{"m":"held"}}"#).await;
    eventually("two legs at the receiver", Duration::from_secs(30), || (receiver.count() == 2).then_some(())).await;
    // Without the bound the third leg is sent within milliseconds of the others.
    holds_for("the third leg waits for a place", Duration::from_secs(2), || receiver.count() == 2).await;
    receiver.release();
    eventually("the third leg once a place is free", Duration::from_secs(30), || (receiver.count() == 3).then_some(()))
        .await;
    let mut paths: Vec<String> = receiver.received().iter().map(|r| r.path.clone()).collect();
    paths.sort();
    assert_eq!(paths, ["/x", "/y", "/z"]);
}

/// `ordering = "key"` holds per (endpoint, key) for legs: an ordered leg that
/// fails is retried in place, holding its record's commit and the next record
/// of its key (its leg to the same endpoint waits), while the unordered leg of
/// each record is delivered once and not sent again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ordered_leg_is_retried_in_place_and_keeps_its_keys_order() {
    // The ordered endpoint fails the first event's first two requests.
    let ordered = Receiver::start(Behaviour { fail_matching: Some(("first".into(), 2)), ..Behaviour::default() }).await;
    let plain = Receiver::start(Behaviour::default()).await;
    let topics = Topics::create(1, &[Duration::from_secs(1)]).await;
    let config = Config::new(&topics)
        .endpoint("o", &ordered.url("/o"))
        .set("endpoints.o.types", vec!["t"])
        .set("endpoints.o.ordering", "key")
        .endpoint("p", &plain.url("/p"))
        .set("endpoints.p.types", vec!["t"]);
    let _relay = Relay::start(&config, &[]).await;
    let producer = producer();
    produce(&producer, &topics.events, Some(0), Some("k"), br#"{"id":"e1","type":"t","payload":{"m":"first"}}"#).await;
    let (_, last) =
        produce(&producer, &topics.events, Some(0), Some("k"), br#"{"id":"e2","type":"t","payload":{"m":"second"}}"#)
            .await;
    eventually("both events delivered to the ordered endpoint", Duration::from_secs(60), || {
        ordered.received().iter().filter(|r| r.status == 200).count().eq(&2).then_some(())
    })
    .await;
    eventually("the source offset committed past the last event", Duration::from_secs(30), || {
        (committed(&topics.group, &topics.events, 0) == Some(last + 1)).then_some(())
    })
    .await;
    let at_ordered: Vec<(String, u16)> =
        ordered.received().iter().map(|r| (r.header("webhook-id").to_string(), r.status)).collect();
    let expected = [("e1", 503), ("e1", 503), ("e1", 200), ("e2", 200)].map(|(id, status)| (id.to_string(), status));
    assert_eq!(at_ordered, expected, "e2 waits until e1 is delivered to the ordered endpoint");
    assert_eq!(ids(&plain), ["e1", "e2"], "the unordered leg is delivered once, not again with each retry");
    let tier = read_topic(&topics.tiers[0].0, 1, Duration::from_secs(2)).await;
    assert!(tier.is_empty(), "an ordered leg is retried in place, not through a tier: {} tier records", tier.len());
}
