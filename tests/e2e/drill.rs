//! Fault drills. The long ones are ignored here and run by `make drill`
//! (scripts/drill.sh); short versions of kill -9 and malformed input run in
//! `make test`. Every drill is bounded in events and time, sends only to
//! 127.0.0.1, and prints one ledger line: every produced event is delivered,
//! dead (by reason), or pending (not yet decided: at or after its partition's
//! committed offset, or on a tier at or after the tier group's committed
//! offset, so it will be read again); anything else is lost, and lost must be 0.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::harness::*;

/// Where each produced event sits on the event topic, and its id (when it has one a receiver will see).
#[derive(Default)]
struct Produced {
    events: Vec<(i32, i64, Option<String>)>,
}

/// Record headers as bytes, keys included (`None` = a null value).
type RawHeaders = Vec<(Vec<u8>, Option<Vec<u8>>)>;

impl Produced {
    async fn send(
        &mut self,
        producer: &rdkafka::producer::FutureProducer,
        topic: &str,
        values: Vec<(Option<String>, Vec<u8>)>,
    ) {
        let values = values.into_iter().map(|(id, value)| (id, value, RawHeaders::new())).collect();
        self.send_with_headers(producer, topic, values).await;
    }

    async fn send_with_headers(
        &mut self,
        producer: &rdkafka::producer::FutureProducer,
        topic: &str,
        values: Vec<(Option<String>, Vec<u8>, RawHeaders)>,
    ) {
        for chunk in values.chunks(1000) {
            let sends = chunk.iter().map(|(_, value, headers)| async move {
                if headers.is_empty() {
                    produce(producer, topic, None, None, value).await
                } else {
                    produce_raw_headers(producer, topic, value, headers).await
                }
            });
            let sent = futures::future::join_all(sends).await;
            for ((id, _, _), (partition, offset)) in chunk.iter().zip(sent) {
                self.events.push((partition, offset, id.clone()));
            }
        }
    }

    fn len(&self) -> usize {
        self.events.len()
    }
}

/// One drill's account of its events.
struct Ledger {
    drill: &'static str,
    produced: usize,
    delivered: usize,
    duplicates: usize,
    dead: BTreeMap<String, usize>,
    pending: usize,
    lost: usize,
}

impl Ledger {
    fn print(&self) {
        let dead = if self.dead.is_empty() {
            "0".to_string()
        } else {
            self.dead.iter().map(|(r, n)| format!("{r}={n}")).collect::<Vec<_>>().join(",")
        };
        println!(
            "DRILL {:<22} produced {:>6}  delivered {:>6}  duplicates {:>5}  dead {}  pending {}  lost {}",
            self.drill, self.produced, self.delivered, self.duplicates, dead, self.pending, self.lost
        );
    }
}

/// Waits (up to `timeout`) until every produced event is delivered to one of `receivers` or dead, then
/// prints the ledger and asserts that nothing is lost.
async fn account(
    drill: &'static str,
    topics: &Topics,
    produced: &Produced,
    receivers: &[&Receiver],
    timeout: Duration,
) -> Ledger {
    let ours: HashSet<&str> = produced.events.iter().filter_map(|(_, _, id)| id.as_deref()).collect();
    let delivered = || -> HashSet<String> {
        receivers.iter().flat_map(|r| r.delivered_ids()).filter(|id| ours.contains(id.as_str())).collect()
    };
    let dead_of = |records: &[Record]| -> HashMap<(i32, i64), String> {
        records
            .iter()
            .filter(|r| r.header("hookrelay-origin-topic") == Some(topics.events.as_str()))
            .map(|r| {
                let at = (r.header_i64("hookrelay-origin-partition") as i32, r.header_i64("hookrelay-origin-offset"));
                (at, r.header("hookrelay-reason").unwrap_or("unknown").to_string())
            })
            .collect()
    };
    let (delivered, dead_of) = (&delivered, &dead_of);
    // Every event decided, or the state at the deadline: the ledger tells what is pending or lost.
    let decided = poll_until(timeout, Duration::from_secs(2), || async move {
        let delivered_ids = delivered();
        let expected_dead = produced.len().saturating_sub(delivered_ids.len());
        let dead = dead_of(&read_topic(&topics.dead, expected_dead, Duration::from_secs(5)).await);
        let done = delivered_ids.len() + dead.len() >= produced.len();
        if done {
            Ok((delivered_ids, dead))
        } else {
            Err((delivered_ids, dead))
        }
    })
    .await;
    let all_decided = decided.is_ok();
    let (delivered_ids, dead) = decided.unwrap_or_else(|not_yet| not_yet);
    // Committed offsets first, then what was read past them: a record moved after the
    // snapshot (a lap to a new tier copy, a delivery) still has the copy the snapshot
    // counts as pending, and reading a committed offset after the topic would miss
    // a copy written between the two (a lapping record counted as lost).
    let committed: HashMap<i32, i64> = produced
        .events
        .iter()
        .map(|(p, _, _)| *p)
        .collect::<HashSet<_>>()
        .into_iter()
        .map(|p| (p, committed(&topics.group, &topics.events, p).unwrap_or(0)))
        .collect();
    let mut tier_committed = HashMap::new();
    for (tier, _) in &topics.tiers {
        let group = format!("{}.{tier}", topics.group);
        for partition in 0..crate::harness::partition_count(tier) {
            let offset = crate::harness::committed(&group, tier, partition).unwrap_or(0);
            tier_committed.insert((tier.clone(), partition), offset);
        }
    }
    let mut delivered_ids = delivered_ids;
    let mut dead = dead;
    if !all_decided {
        delivered_ids.extend(delivered());
        dead.extend(dead_of(&read_topic(&topics.dead, usize::MAX, Duration::from_secs(5)).await));
    }
    // Routed to a tier and not yet read past there: pending on the tier.
    let mut on_tiers = HashSet::new();
    for (tier, _) in &topics.tiers {
        for record in read_topic(tier, usize::MAX, Duration::from_secs(15)).await {
            let committed = tier_committed.get(&(tier.clone(), record.partition)).copied().unwrap_or(0);
            if record.offset >= committed && record.header("hookrelay-origin-topic") == Some(topics.events.as_str()) {
                on_tiers.insert((
                    record.header_i64("hookrelay-origin-partition") as i32,
                    record.header_i64("hookrelay-origin-offset"),
                ));
            }
        }
    }
    let (mut pending, mut lost) = (0, 0);
    let mut reasons = BTreeMap::new();
    let mut delivered_count = 0;
    for (partition, offset, id) in &produced.events {
        if id.as_ref().is_some_and(|id| delivered_ids.contains(id)) {
            delivered_count += 1;
        } else if let Some(reason) = dead.get(&(*partition, *offset)) {
            *reasons.entry(reason.clone()).or_default() += 1;
        } else if *offset >= committed[partition] || on_tiers.contains(&(*partition, *offset)) {
            pending += 1;
        } else {
            lost += 1;
        }
    }
    let requests: usize = receivers
        .iter()
        .flat_map(|r| r.received())
        .filter(|r| (200..300).contains(&r.status) && ours.contains(r.header("webhook-id")))
        .count();
    let ledger = Ledger {
        drill,
        produced: produced.len(),
        delivered: delivered_count,
        duplicates: requests - delivered_ids.len(),
        dead: reasons,
        pending,
        lost,
    };
    ledger.print();
    assert_eq!(ledger.lost, 0, "{drill}: events lost");
    ledger
}

fn good_events(receiver: &Receiver, prefix: &str, n: usize) -> Vec<(Option<String>, Vec<u8>)> {
    (0..n)
        .map(|i| {
            // An id is visible ASCII: the drill's name may have spaces.
            let id = format!("{}-{i}", prefix.replace(' ', "_"));
            let value = format!(r#"{{"url":"{}","payload":{{"i":{i}}},"id":"{id}"}}"#, receiver.url("/x"));
            (Some(id), value.into_bytes())
        })
        .collect()
}

async fn kill_9(drill: &'static str, n: usize) -> Ledger {
    // 20 ms per request: the kill lands mid-stream.
    let receiver = Receiver::start(Behaviour { delay: Duration::from_millis(20), ..Behaviour::default() }).await;
    let topics = Topics::create(4, &[Duration::from_secs(1)]).await;
    let config = Config::new(&topics).set("delivery.max_in_flight_per_endpoint", 16);
    let mut relay = Relay::start(&config, &[]).await;
    let mut produced = Produced::default();
    produced.send(&producer(), &topics.events, good_events(&receiver, drill, n)).await;
    eventually("some delivered", Duration::from_secs(120), || (receiver.count() >= n / 3).then_some(())).await;
    signal(&relay.child, "KILL");
    let _ = relay.child.wait();
    assert!(receiver.delivered_ids().len() < n, "the kill must land mid-stream");
    let _second = Relay::start(&config, &[]).await;
    let ledger = account(drill, &topics, &produced, &[&receiver], Duration::from_secs(180)).await;
    assert_eq!((ledger.delivered, ledger.pending), (n, 0), "every event delivered after the restart");
    ledger
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_short_kill_9_loses_nothing() {
    kill_9("kill-9 (short)", 300).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "drill: make drill"]
async fn drill_kill_9_loses_nothing() {
    kill_9("kill-9", 5_000).await;
}

/// Produces `value` with headers whose keys may be any bytes, through the relay's
/// own byte-keyed writer (rdkafka's `insert` takes only `&str` keys).
async fn produce_raw_headers(
    producer: &rdkafka::producer::FutureProducer,
    topic: &str,
    value: &[u8],
    headers: &RawHeaders,
) -> (i32, i64) {
    use rdkafka::message::OwnedHeaders;
    use rdkafka::producer::FutureRecord;
    let owned = headers
        .iter()
        .fold(OwnedHeaders::new(), |h, (key, value)| hookrelay::event::headers::add(h, key, value.as_deref()));
    let record = FutureRecord::<str, [u8]>::to(topic).payload(value).headers(owned);
    let delivery = producer.send(record, Duration::from_secs(10)).await.expect("produce");
    (delivery.partition, delivery.offset)
}

/// Headers other clients can write: keys that are not UTF-8 (Latin-1, bare
/// 0xFF), an empty key, a null value, an odd key in the relay's namespace, and
/// a `traceparent` of a later version whose tail is not ASCII.
fn odd_headers() -> RawHeaders {
    vec![
        (b"cl\xe9".to_vec(), Some(b"\x00\xff value".to_vec())),
        (b"\xff\xfe".to_vec(), None),
        (Vec::new(), Some(b"empty key".to_vec())),
        (b"hookrelay-\xff".to_vec(), Some(b"99".to_vec())),
        (b"traceparent".to_vec(), Some(b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-t\x80il".to_vec())),
    ]
}

/// What a dead or tier record keeps of [`odd_headers`]: all but the relay's namespace, byte for byte, in order.
fn odd_headers_kept() -> RawHeaders {
    odd_headers().into_iter().filter(|(key, _)| !key.starts_with(b"hookrelay-")).collect()
}

/// The value of the malformed records that carry [`odd_headers`] starts with this (and is not JSON).
const ODD_MARK: &str = "{\"odd-headers\":";

/// Ids outside SPEC's 1-256 bytes of visible ASCII: each control character
/// (tab, DEL, NUL, CR, LF and ESC first, so the short drill has them), then
/// non-ASCII, space, empty and too long.
fn bad_ids() -> Vec<String> {
    let first = [0x09u8, 0x7f, 0x00, 0x0d, 0x0a, 0x1b];
    let controls = first.into_iter().chain((0x00..0x20).filter(|b| !first.contains(b)));
    let controls = controls.map(|b| format!("ctl-{}-x", char::from(b)));
    let others = ["caf\u{e9}", "nel-\u{85}", "nb\u{a0}sp", "emoji-\u{1f600}", "zw\u{200b}sp", "a b", ""];
    controls.chain(others.into_iter().map(String::from)).chain([format!("long-{}", "x".repeat(252))]).collect()
}

/// Records that must each become a dead letter `invalid_event`: every kind in turn.
fn malformed(receiver: &Receiver, n: usize) -> Vec<(Option<String>, Vec<u8>, RawHeaders)> {
    let url = receiver.url("/x");
    let huge = "x".repeat(100_000); // over the drill's max_payload_bytes
    let ids = bad_ids();
    (0..n)
        .map(|i| {
            let mut headers = RawHeaders::new();
            let value = match i % 11 {
                0 => format!("not json {i}"),
                1 => format!(r#"{{"url":"{url}","payload":{{"i":{i}}},"id":{i}}}"#), // id of the wrong type
                2 => format!(r#"{{"url":{i},"payload":1,"id":"m-{i}"}}"#),           // url of the wrong type
                3 => format!(r#"{{"url":"ftp://127.0.0.1/{i}","payload":1,"id":"m-{i}"}}"#),
                4 => format!(r#"{{"url":"not a url {i}","payload":1,"id":"m-{i}"}}"#),
                5 => format!(r#"{{"url":"{url}","payload":1,"id":"m-{i}","headers":{{"x-a":"b\r\nx-injected: 1"}}}}"#),
                6 => format!(r#"{{"endpoint":"nowhere","payload":1,"id":"m-{i}"}}"#),
                7 => format!(r#"{{"url":"{url}","id":"m-{i}"}}"#), // no payload
                // An id that is not visible ASCII, JSON-escaped where JSON needs it: each kind in turn.
                8 => {
                    let id = serde_json::json!(ids[(i / 11) % ids.len()]);
                    format!(r#"{{"url":"{url}","payload":{{"i":{i}}},"id":{id}}}"#)
                }
                // Not JSON, with headers other clients write (keys that are not UTF-8 among them).
                9 => {
                    headers = odd_headers();
                    format!("{ODD_MARK}{i}")
                }
                // Huge (over max_payload_bytes); one in 110 only, to keep the drill's volume sane.
                _ if i % 110 == 10 => format!(r#"{{"url":"{url}","payload":"{huge}","id":"m-{i}"}}"#),
                _ => format!(r#"[{i}]"#),
            };
            (None, value.into_bytes(), headers)
        })
        .collect()
}

async fn malformed_mixed(drill: &'static str, bad: usize, good: usize) -> Ledger {
    let receiver = Receiver::start(Behaviour::default()).await;
    let topics = Topics::create(4, &[Duration::from_secs(1)]).await;
    let mut relay = Relay::start(&Config::new(&topics).set("delivery.max_payload_bytes", 65_536), &[]).await;
    let mut values = malformed(&receiver, bad);
    // One good event in three carries the odd headers too: they do not stop its delivery.
    let goods = good_events(&receiver, drill, good)
        .into_iter()
        .enumerate()
        .map(|(k, (id, value))| (id, value, if k % 3 == 0 { odd_headers() } else { RawHeaders::new() }));
    // Interleaved: the good ones are not held behind the bad ones.
    let step = (values.len() / good.max(1)).max(1);
    for (k, g) in goods.enumerate() {
        values.insert((k * (step + 1)).min(values.len()), g);
    }
    let odd_bad = values.iter().filter(|(_, value, _)| value.starts_with(ODD_MARK.as_bytes())).count();
    let mut produced = Produced::default();
    produced.send_with_headers(&producer(), &topics.events, values).await;
    let ledger = account(drill, &topics, &produced, &[&receiver], Duration::from_secs(240)).await;
    assert_eq!(ledger.delivered, good, "every good event delivered, odd headers or not");
    assert_eq!(
        ledger.dead.get("invalid_event").copied(),
        Some(bad),
        "every malformed record dead as invalid_event: {:?}",
        ledger.dead
    );
    assert_eq!(ledger.dead.len(), 1, "no other reason (no internal_error): {:?}", ledger.dead);
    assert_eq!(receiver.count(), good, "no request for a malformed record");
    // The dead records of the odd ones keep the odd headers byte for byte, first and in order.
    let dead = read_topic(&topics.dead, bad, Duration::from_secs(60)).await;
    let odd: Vec<_> = dead.iter().filter(|r| r.value.starts_with(ODD_MARK.as_bytes())).collect();
    assert_eq!(odd.len(), odd_bad);
    let kept = odd_headers_kept();
    for record in odd {
        assert_eq!(record.raw_headers[..kept.len()], kept[..], "odd headers kept on the dead record");
        assert_eq!(record.header_count("hookrelay-reason"), 1);
    }
    assert!(relay.child.try_wait().unwrap().is_none(), "the relay is alive");
    assert!(!relay.log_text().contains("panicked"), "no panic");
    ledger
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_short_malformed_records_are_dead_letters() {
    malformed_mixed("malformed (short)", 180, 60).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "drill: make drill"]
async fn drill_malformed_records_are_dead_letters() {
    malformed_mixed("malformed", 10_000, 2_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "drill: make drill"]
async fn drill_broker_down_20s_loses_nothing() {
    // Stopping the broker needs the one scripts/drill.sh started (KAFKA_RUN_DIR and ports
    // inherited): never a shared broker the drill did not start.
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/kafka.sh");
    let status = std::process::Command::new(script).arg("status").output().unwrap();
    let ours = std::env::var("DRILL_OWN_BROKER").is_ok()
        && String::from_utf8_lossy(&status.stdout).contains(&format!("KAFKA_BOOTSTRAP={}", bootstrap()));
    if !ours {
        println!(
            "DRILL broker-down-20s       not run: KAFKA_BOOTSTRAP={} is not a broker scripts/drill.sh started",
            bootstrap()
        );
        return;
    }
    // 100 ms per request at 16 concurrent: about 160/s, so the outage (about 25 s) lands
    // mid-stream. At 20 ms (800/s) the relay delivered every record it had read ahead
    // while the broker was away, and the stream was over before the broker came back.
    let receiver = Receiver::start(Behaviour { delay: Duration::from_millis(100), ..Behaviour::default() }).await;
    let topics = Topics::create(4, &[Duration::from_secs(2)]).await;
    let config = Config::new(&topics).set("delivery.max_in_flight_per_endpoint", 16);
    let mut relay = Relay::start(&config, &[]).await;
    let n = 10_000;
    let mut produced = Produced::default();
    produced.send(&producer(), &topics.events, good_events(&receiver, "broker", n)).await;
    eventually("some delivered", Duration::from_secs(60), || (receiver.count() >= n / 5).then_some(())).await;
    let started = Instant::now();
    let restarted = tokio::task::spawn_blocking(move || {
        std::process::Command::new(script).arg("restart").env("KAFKA_RESTART_PAUSE", "20").status()
    })
    .await
    .unwrap()
    .unwrap();
    assert!(restarted.success(), "scripts/kafka.sh restart failed");
    assert!(receiver.delivered_ids().len() < n, "the outage must land mid-stream");
    let outage = started.elapsed();
    let ledger = account("broker-down-20s", &topics, &produced, &[&receiver], Duration::from_secs(240)).await;
    assert_eq!(ledger.delivered, n);
    assert!(matches!(relay.child.try_wait(), Ok(None)), "the relay kept running through the outage");
    let log = relay.log_text();
    println!(
        "       broker down {:.0} s (stop + 20 s pause + start); the relay kept running; {} log lines, {} of them librdkafka errors",
        outage.as_secs_f64(),
        log.lines().count(),
        log.lines().filter(|l| l.contains("\"level\":\"ERROR\"") && l.contains("librdkafka")).count()
    );
}

/// Forwards connections on `port` to `target` from the moment it is called: before, `port` refuses them.
async fn open_port(port: u16, target: std::net::SocketAddr) -> tokio::task::JoinHandle<()> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("bind the refused port");
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "drill: make drill"]
async fn drill_receiver_refusing_then_back() {
    let receiver = Receiver::start(Behaviour::default()).await;
    let port = free_port();
    let topics = Topics::create(4, &[Duration::from_secs(3), Duration::from_secs(3)]).await;
    let relay = Relay::start(&Config::new(&topics), &[]).await;
    let n = 2_000;
    let values: Vec<_> = (0..n)
        .map(|i| {
            let id = format!("refused-{i}");
            (
                Some(id.clone()),
                format!(r#"{{"url":"http://127.0.0.1:{port}/x","payload":{i},"id":"{id}"}}"#).into_bytes(),
            )
        })
        .collect();
    let sent_ms = now_ms();
    let mut produced = Produced::default();
    produced.send(&producer(), &topics.events, values).await;
    // Refused for a while (every event's first attempt, some second ones), then back.
    let (tier_0, tier_1) = (&topics.tiers[0].0, &topics.tiers[1].0);
    eventually_explained("every first attempt and some second ones refused", Duration::from_secs(120), || async {
        let text = relay.metrics().await;
        let routed = |tier: &str| metric(&text, &format!("hookrelay_retries_routed_total{{tier=\"{tier}\"}}"));
        let (first, second) = (routed(tier_0).unwrap_or(0.0), routed(tier_1).unwrap_or(0.0));
        if first >= n as f64 && second > 0.0 {
            Ok(())
        } else {
            Err(format!("routed to the first tier {first} of {n}, to the second {second}"))
        }
    })
    .await;
    let back_ms = now_ms();
    let _proxy = open_port(port, receiver.addr).await;
    let ledger = account("receiver-refusing", &topics, &produced, &[&receiver], Duration::from_secs(120)).await;
    assert_eq!(ledger.delivered, n);
    let first = receiver.received().iter().map(|r| r.at_ms).min().unwrap();
    assert!(first >= back_ms, "nothing reached the receiver before its port was back");
    // Every event was refused first, so it was delivered from a tier, not before the tier's delay.
    assert!(first >= sent_ms + 3_000, "nothing delivered before due");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "drill: make drill"]
async fn drill_blackholed_receiver_does_not_hold_others() {
    // Accepts connections and never answers.
    let hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hole_addr = hole.local_addr().unwrap();
    let _hole = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = hole.accept().await {
            held.push(socket);
        }
    });
    let good = Receiver::start(Behaviour::default()).await;
    let topics = Topics::create(4, &[Duration::from_secs(1), Duration::from_secs(2)]).await;
    let config = Config::new(&topics)
        .endpoint("hole", &format!("http://{hole_addr}/x"))
        .set("delivery.timeout", "2s")
        .set("retry.max_age", "30s");
    let relay = Relay::start(&config, &[]).await;
    let n = 2_000;
    let values: Vec<_> = (0..n)
        .map(|i| {
            let id = format!("hole-{i}");
            let value = if i % 2 == 0 {
                format!(r#"{{"endpoint":"hole","payload":{i},"id":"{id}"}}"#)
            } else {
                format!(r#"{{"url":"{}","payload":{i},"id":"{id}"}}"#, good.url("/x"))
            };
            (Some(id), value.into_bytes())
        })
        .collect();
    let mut produced = Produced::default();
    produced.send(&producer(), &topics.events, values).await;
    eventually("the good receiver's events delivered", Duration::from_secs(60), || {
        (good.delivered_ids().len() >= n / 2).then_some(())
    })
    .await;
    // The gauge moves (open, half-open probe, open again): seen open at some point is what counts.
    let circuit = eventually_async("the blackholed endpoint's circuit open", Duration::from_secs(60), || async {
        metric(&relay.metrics().await, "hookrelay_circuit_state{endpoint=\"hole\"}").filter(|c| *c > 0.0)
    })
    .await;
    let ledger = account("blackholed-receiver", &topics, &produced, &[&good], Duration::from_secs(120)).await;
    assert_eq!(ledger.delivered, n / 2, "every event to the good receiver delivered");
    assert_eq!(ledger.dead.get("expired").copied(), Some(n / 2), "the blackholed ones expire: {:?}", ledger.dead);
    assert!(circuit > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "drill: make drill"]
async fn drill_notification_sink_down_for_two_windows() {
    let sink = Receiver::start(Behaviour { status: 503, ..Behaviour::default() }).await;
    let receiver = Receiver::start(Behaviour::default()).await;
    let topics = Topics::create(2, &[Duration::from_secs(1)]).await;
    let sink_table = table([("kind", "http".into()), ("url", sink.url("/ops").into()), ("format", "json".into())]);
    let config = Config::new(&topics)
        .set("notify.window", "2s")
        .set("delivery.max_payload_bytes", 65_536)
        .push("notify.sinks", sink_table);
    let _relay = Relay::start(&config, &[]).await;
    let bad = 1_000;
    let mut produced = Produced::default();
    produced.send_with_headers(&producer(), &topics.events, malformed(&receiver, bad)).await;
    // Down until it has refused two tries (a window's message and its retry 1 s later, or the
    // messages of two windows), then back.
    eventually("the sink refused two tries", Duration::from_secs(60), || {
        (sink.received().iter().filter(|r| r.status != 200).count() >= 2).then_some(())
    })
    .await;
    sink.set(|b| b.status = 200);
    let ledger = account("notify-sink-down", &topics, &produced, &[&receiver], Duration::from_secs(120)).await;
    assert_eq!(ledger.dead.get("invalid_event").copied(), Some(bad));
    let notified = || -> u64 {
        sink.received()
            .iter()
            .filter(|r| r.status == 200)
            .map(|r| serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()["count"].as_u64().unwrap())
            .sum()
    };
    eventually("every dead letter notified once the sink is back", Duration::from_secs(120), || {
        (notified() >= bad as u64).then_some(())
    })
    .await;
    let failed = sink.received().iter().filter(|r| r.status != 200).count();
    println!(
        "       notifications: {bad} dead letters in {} sent messages after {failed} refused attempts",
        sink.count() - failed
    );
    assert_eq!(notified(), bad as u64, "no dead letter notified twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "drill: make drill"]
async fn drill_three_replicas_one_stopped_one_killed_one_joining() {
    let fast = Receiver::start(Behaviour { delay: Duration::from_millis(20), ..Behaviour::default() }).await;
    // Down (503) through the faults: a third of the events wait on the tiers, whose partitions pause until due.
    let flaky = Receiver::start(Behaviour { status: 503, ..Behaviour::default() }).await;
    let topics = Topics::create(6, &[Duration::from_secs(5), Duration::from_secs(5)]).await;
    let config = Config::new(&topics)
        .set("delivery.max_in_flight_per_endpoint", 8)
        .set("kafka.properties", table([("session.timeout.ms", "10000".into())]));
    let mut first = Relay::start(&config, &[]).await;
    let mut second = Relay::start(&config, &[]).await;
    let _third = Relay::start(&config, &[]).await;
    let n = 3_000;
    let values: Vec<_> = (0..n)
        .map(|i| {
            let id = format!("replicas-{i}");
            let url = if i % 3 == 0 { flaky.url("/x") } else { fast.url("/x") };
            (Some(id.clone()), format!(r#"{{"url":"{url}","payload":{i},"id":"{id}"}}"#).into_bytes())
        })
        .collect();
    let mut produced = Produced::default();
    produced.send(&producer(), &topics.events, values).await;
    eventually("some delivered", Duration::from_secs(60), || (fast.count() >= n / 5).then_some(())).await;
    assert_eq!(first.terminate(Duration::from_secs(40)), Some(0), "the SIGTERMed replica drains and exits 0");
    signal(&second.child, "KILL");
    let _ = second.child.wait();
    let _fourth = Relay::start(&config, &[]).await;
    assert!(fast.delivered_ids().len() + flaky.delivered_ids().len() < n, "the faults land mid-stream");
    flaky.set(|b| b.status = 200);
    let ledger = account("three-replicas", &topics, &produced, &[&fast, &flaky], Duration::from_secs(240)).await;
    assert_eq!(ledger.delivered, n, "every event delivered");
}

/// The pod's memory limit (deploy/kubernetes/base/deployment.yaml).
const POD_MEMORY_LIMIT_MIB: u64 = 512;

/// The relay's resident memory (VmRSS), in KiB.
fn relay_rss_kib(relay: &Relay) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", relay.child.id())).unwrap_or_default();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap_or("VmRSS: 0 kB");
    line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).unwrap_or(0)
}

/// A JSON `headers` map of `n` unique names: a header bomb (refused by `max_event_headers`).
fn header_bomb(url: &str, n: usize) -> Vec<u8> {
    let names: serde_json::Map<String, serde_json::Value> = (0..n).map(|i| (format!("x-{i}"), "".into())).collect();
    serde_json::json!({"url": url, "payload": 1, "headers": names}).to_string().into_bytes()
}

/// What the good events went through: their ledger, p99 latency (receipt minus produce), and the largest RSS.
struct HostileRun {
    ledger: Ledger,
    p99_ms: i64,
    rss_mib: u64,
}

/// Good traffic (half to the named endpoint `shared`, half inline to the same receiver), with or
/// without the attackers: header bombs, record-header bombs, `timeout_ms: 1` floods at `shared`,
/// and a receiver that answers `503 Retry-After: 99999999`.
async fn hostile_mix(drill: &'static str, hostile: bool, batches: usize) -> HostileRun {
    let good = Receiver::start(Behaviour { delay: Duration::from_millis(5), ..Behaviour::default() }).await;
    let bad = Receiver::start(Behaviour {
        fail_matching: Some(("attack".into(), usize::MAX)),
        fail_status: 503,
        retry_after: Some("99999999".into()),
        ..Behaviour::default()
    })
    .await;
    let topics = Topics::create(4, &[Duration::from_secs(1)]).await;
    // A 5 s max_hold (under rate_max_wait): the attacker's records wait out each hold in
    // place instead of lapping the tier every second, and its circuit does not open (its
    // 503s would defer them to the tier, lapping until the probe), so every record is
    // decided within the drill. With the defaults (max_hold 60 s) a run on a loaded
    // machine: lost 0, 4 of the attacker's records pending (lapping) at the deadline,
    // good p99 245 ms vs 69 ms calm.
    let config = Config::new(&topics)
        .endpoint("shared", &good.url("/shared"))
        .set("delivery.max_hold", "5s")
        .set("circuit.failure_threshold", 1000);
    let relay = Relay::start(&config, &[]).await;
    // The attacker writes with a client of its own, as it would: one producer for
    // both sent each batch's good events behind its megabytes of bombs, and the
    // good events' latency (counted from before the produce) then measured the
    // drill's own producer queue (p99 137 vs 47 ms calm, on a quiet machine).
    let (producer, attacker) = (producer(), producer());
    let (mut produced, mut attacks) = (Produced::default(), Produced::default());
    let (rss_stop, rss_max) =
        (tokio_util::sync::CancellationToken::new(), std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0)));
    let pid_relay = relay.child.id();
    let sampler = tokio::spawn({
        let (stop, max) = (rss_stop.clone(), rss_max.clone());
        async move {
            while !stop.is_cancelled() {
                let status = std::fs::read_to_string(format!("/proc/{pid_relay}/status")).unwrap_or_default();
                let kib = status
                    .lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|n| n.parse::<u64>().ok())
                    .unwrap_or(0);
                max.fetch_max(kib, std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    // The attacks are made before the loop and each batch's before its good events: the
    // good events' clock starts when they are made, and building two 0.8 MB bombs after
    // that counted the drill's own work as the relay's latency.
    let bomb = header_bomb(&good.url("/bomb"), 60_000);
    let record_bomb: RawHeaders = (0..1_000).map(|k| (format!("k{k}").into_bytes(), Some(vec![b'v'; 100]))).collect();
    for batch in 0..batches {
        let mut attack: Vec<(Option<String>, Vec<u8>, RawHeaders)> = Vec::new();
        if hostile {
            for _ in 0..2 {
                attack.push((None, bomb.clone(), RawHeaders::new()));
                let value = format!(r#"{{"url":"{}","payload":1}}"#, good.url("/rh")).into_bytes();
                attack.push((None, value, record_bomb.clone()));
            }
            for _ in 0..25 {
                let value = r#"{"endpoint":"shared","payload":"flood","timeout_ms":1,"max_attempts":1}"#;
                attack.push((None, value.as_bytes().to_vec(), RawHeaders::new()));
            }
            let value = format!(r#"{{"url":"{}","payload":"attack"}}"#, bad.url("/bad"));
            attack.push((None, value.into_bytes(), RawHeaders::new()));
        }
        let mut values: Vec<(Option<String>, Vec<u8>, RawHeaders)> = Vec::new();
        for i in 0..100 {
            let id = format!("good-{batch}-{i}");
            let target = if i % 2 == 0 {
                r#""endpoint":"shared""#.to_string()
            } else {
                format!(r#""url":"{}""#, good.url("/inline"))
            };
            let value = format!(r#"{{{target},"payload":{{"t":{}}},"id":"{id}"}}"#, now_ms());
            values.push((Some(id), value.into_bytes(), RawHeaders::new()));
        }
        tokio::join!(
            produced.send_with_headers(&producer, &topics.events, values),
            attacks.send_with_headers(&attacker, &topics.events, attack),
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    produced.events.extend(attacks.events);
    let ledger = account(drill, &topics, &produced, &[&good], Duration::from_secs(300)).await;
    rss_stop.cancel();
    let _ = sampler.await;
    let mut latencies: Vec<i64> = good
        .received()
        .iter()
        .filter(|r| r.status == 200 && r.header("webhook-id").starts_with("good-"))
        .filter_map(|r| serde_json::from_slice::<serde_json::Value>(&r.body).ok()?["t"].as_i64().map(|t| r.at_ms - t))
        .collect();
    latencies.sort_unstable();
    let p99_ms = latencies.get(latencies.len() * 99 / 100).copied().unwrap_or(i64::MAX);
    let rss_mib = rss_max.load(std::sync::atomic::Ordering::Relaxed).max(relay_rss_kib(&relay)) / 1024;
    assert!(!relay.log_text().contains("panicked"), "no panic");
    HostileRun { ledger, p99_ms, rss_mib }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "drill: make drill"]
async fn drill_hostile_input_does_not_hurt_good_traffic() {
    let batches = 20;
    let calm = hostile_mix("hostile (baseline)", false, batches).await;
    let run = hostile_mix("hostile", true, batches).await;
    let good = batches * 100;
    println!(
        "DRILL hostile good delivered {}/{good}  p99 {} ms (without the attackers {} ms)  RSS max {} MiB (pod limit {} MiB)  lost {}",
        run.ledger.delivered, run.p99_ms, calm.p99_ms, run.rss_mib, POD_MEMORY_LIMIT_MIB, run.ledger.lost
    );
    assert_eq!(run.ledger.delivered, good, "every good event delivered");
    // Within 2x of the calm run; a floor of 50 ms, as a calm p99 of a few ms moves by that on a shared machine.
    assert!(run.p99_ms <= 2 * calm.p99_ms.max(50), "p99 {} ms vs {} ms calm", run.p99_ms, calm.p99_ms);
    assert!(run.rss_mib < POD_MEMORY_LIMIT_MIB, "RSS {} MiB", run.rss_mib);
}
