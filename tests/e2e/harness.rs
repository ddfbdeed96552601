//! Test harness: a real Kafka broker (from `KAFKA_BOOTSTRAP`), real local HTTP receivers, real relay processes.
//!
//! Every test makes its own topics and groups (random names), so tests run
//! side by side. Waits are on conditions with deadlines, never fixed sleeps; "nothing
//! more happens" is a condition checked for the whole of a duration ([`holds_for`]).

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio::sync::Notify;

pub fn bootstrap() -> String {
    std::env::var("KAFKA_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

/// A name no other test (or earlier run) uses.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}-{:x}", std::process::id(), rand::random::<u32>())
}

/// Waits until `check` returns Some, polling every 50 ms; panics with `what` at the deadline.
pub async fn eventually<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Like [`eventually`], for checks that need to await (HTTP calls).
pub async fn eventually_async<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    eventually_explained(what, timeout, || {
        let answer = check();
        async move { answer.await.ok_or_else(String::new) }
    })
    .await
}

/// Like [`eventually_async`], for checks that say what is still missing (`Err`): the last
/// answer is in the panic message.
pub async fn eventually_explained<T, F, Fut>(what: &str, timeout: Duration, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    match poll_until(timeout, Duration::from_millis(100), check).await {
        Ok(value) => value,
        Err(last) if last.is_empty() => panic!("timed out after {timeout:?} waiting for: {what}"),
        Err(last) => panic!("timed out after {timeout:?} waiting for: {what}\n{last}"),
    }
}

/// Polls `check` every `every` until it answers `Ok` or `timeout` has passed; then its last
/// `Err`. For waits that report instead of panicking at the deadline (a drill's ledger).
pub async fn poll_until<T, E, F, Fut>(timeout: Duration, every: Duration, mut check: F) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let answer = check().await;
        if answer.is_ok() || Instant::now() >= deadline {
            return answer;
        }
        tokio::time::sleep(every).await;
    }
}

/// Runs `command` to its end and returns its output; panics if it is still running after
/// `limit` (killed then). A guard against a hang, not a measure of speed: give it room.
pub async fn output_within(command: Command, limit: Duration) -> std::process::Output {
    let child = tokio::process::Command::from(command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the command");
    match tokio::time::timeout(limit, child.wait_with_output()).await {
        Ok(output) => output.expect("wait for the command"),
        Err(_) => panic!("still running after {limit:?} (a hang): killed"),
    }
}

/// Checks that `check` stays true for the whole of `duration`, polling every 100 ms; panics with
/// `what` the first time it is false. For "nothing more happens" assertions, instead of a sleep.
pub async fn holds_for(what: &str, duration: Duration, mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    loop {
        assert!(check(), "stopped holding after {:?} of {duration:?}: {what}", started.elapsed());
        if started.elapsed() >= duration {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------- config

/// A relay config edited as TOML tables, not as text: every edit lands at its
/// dotted path or panics, so no edit can silently do nothing.
#[derive(Debug, Clone)]
pub struct Config {
    table: toml::Table,
}

impl Config {
    /// The base of every test: `topics` and their tiers, the local broker, quick
    /// commits and statistics, private targets allowed (the receivers are on
    /// 127.0.0.1), a 1 s notification window and the endpoint registry off.
    pub fn new(topics: &Topics) -> Config {
        let mut config = Config { table: toml::Table::new() }
            .set("kafka.brokers", bootstrap())
            .set("kafka.group_id", topics.group.as_str())
            .set("kafka.commit_interval", "200ms")
            .set("kafka.statistics_interval", "1s")
            .set("topics.events", vec![topics.events.as_str()])
            .set("topics.dead", topics.dead.as_str())
            // Each relay its own attempt log, as its own event topic (created on first write).
            .set("topics.attempts", attempts_topic(topics))
            .set("delivery.allow_private_networks", true)
            // The endpoint registry off: tests of it give each relay a registry topic of its own (registry.rs).
            .set("topics.endpoints", "")
            .set("notify.window", "1s");
        for (topic, delay) in &topics.tiers {
            config = config.tier(topic, *delay);
        }
        config
    }

    /// Sets the value at a dotted path (`"kafka.group_protocol"`), making missing tables on the way.
    /// Panics when a parent on the path is there but is not a table.
    pub fn set(mut self, path: &str, value: impl Into<toml::Value>) -> Config {
        let (parent, key) = self.parent(path);
        parent.insert(key.to_string(), value.into());
        self
    }

    /// Appends `table` to the array of tables at `path` (`"retry.tiers"`, `"notify.sinks"`).
    /// Panics when something other than an array of tables is there.
    pub fn push(mut self, path: &str, table: toml::Table) -> Config {
        let (parent, key) = self.parent(path);
        match parent.entry(key).or_insert_with(|| toml::Value::Array(Vec::new())) {
            toml::Value::Array(array) if array.iter().all(toml::Value::is_table) => {
                array.push(toml::Value::Table(table))
            }
            other => panic!("config: cannot push to {path}: not an array of tables but {other:?}"),
        }
        self
    }

    /// Appends a retry tier.
    pub fn tier(self, topic: &str, delay: Duration) -> Config {
        self.push("retry.tiers", table([("topic", topic.into()), ("delay", format!("{}ms", delay.as_millis()).into())]))
    }

    /// Adds `[endpoints.<name>]` with `url`; further keys with `set("endpoints.<name>.<key>", ...)`.
    pub fn endpoint(self, name: &str, url: &str) -> Config {
        self.set(&format!("endpoints.{name}.url"), url)
    }

    /// The table that holds the last key of `path`, and that key.
    fn parent<'a>(&mut self, path: &'a str) -> (&mut toml::Table, &'a str) {
        let mut keys: Vec<&str> = path.split('.').collect();
        let last = keys.pop().unwrap();
        assert!(!last.is_empty() && keys.iter().all(|k| !k.is_empty()), "config: bad path {path:?}");
        let mut table = &mut self.table;
        for (i, key) in keys.iter().enumerate() {
            let value = table.entry(key.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
            table = match value {
                toml::Value::Table(t) => t,
                other => panic!("config: cannot set {path}: {} is not a table but {other:?}", keys[..=i].join(".")),
            };
        }
        (table, last)
    }
}

impl std::fmt::Display for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&toml::to_string(&self.table).expect("config serializes"))
    }
}

/// A TOML table from key-value pairs: `table([("kind", "http".into()), ("url", url.into())])`.
pub fn table<'a>(entries: impl IntoIterator<Item = (&'a str, toml::Value)>) -> toml::Table {
    entries.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

// ---------------------------------------------------------------- Kafka

/// The topics of one test: events, tiers, dead.
#[derive(Debug, Clone)]
pub struct Topics {
    pub events: String,
    pub tiers: Vec<(String, Duration)>,
    pub dead: String,
    pub group: String,
}

impl Topics {
    /// Creates fresh topics with `partitions` partitions and tiers with the given delays.
    pub async fn create(partitions: i32, tier_delays: &[Duration]) -> Topics {
        let base = unique("t");
        let topics = Topics {
            events: format!("{base}.events"),
            tiers: tier_delays.iter().enumerate().map(|(i, d)| (format!("{base}.retry-{i}"), *d)).collect(),
            dead: format!("{base}.dead"),
            group: format!("{base}.group"),
        };
        let mut names = vec![topics.events.clone(), topics.dead.clone()];
        names.extend(topics.tiers.iter().map(|(t, _)| t.clone()));
        create_topics(&names, partitions).await;
        topics
    }
}

/// The attempt-log topic [`Config::new`] gives a test's relay.
pub fn attempts_topic(topics: &Topics) -> String {
    format!("{}.attempts", topics.events)
}

pub async fn create_topics(names: &[String], partitions: i32) {
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", bootstrap()).create().expect("admin client");
    let new: Vec<NewTopic<'_>> =
        names.iter().map(|n| NewTopic::new(n, partitions, TopicReplication::Fixed(1))).collect();
    for result in admin.create_topics(&new, &AdminOptions::new()).await.expect("create topics") {
        result.expect("topic created");
    }
}

pub fn producer() -> FutureProducer {
    ClientConfig::new().set("bootstrap.servers", bootstrap()).set("linger.ms", "0").create().expect("producer")
}

/// Produces one record; returns (partition, offset).
pub async fn produce(
    producer: &FutureProducer,
    topic: &str,
    partition: Option<i32>,
    key: Option<&str>,
    value: &[u8],
) -> (i32, i64) {
    let mut record = FutureRecord::<str, [u8]>::to(topic).payload(value);
    if let Some(key) = key {
        record = record.key(key);
    }
    if let Some(p) = partition {
        record = record.partition(p);
    }
    let delivery = producer.send(record, Timeout::After(Duration::from_secs(10))).await.expect("produce");
    (delivery.partition, delivery.offset)
}

/// Produces a record with headers; returns (partition, offset).
pub async fn produce_with_headers(
    producer: &FutureProducer,
    topic: &str,
    partition: i32,
    value: &[u8],
    headers: &[(&str, &str)],
) -> (i32, i64) {
    let mut h = OwnedHeaders::new();
    for (k, v) in headers {
        h = h.insert(Header { key: k, value: Some(*v) });
    }
    let record = FutureRecord::<str, [u8]>::to(topic).payload(value).partition(partition).headers(h);
    let delivery = producer.send(record, Timeout::After(Duration::from_secs(10))).await.expect("produce");
    (delivery.partition, delivery.offset)
}

/// A record read back from a topic.
#[derive(Debug, Clone)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    /// Header keys and values as text (lossy where they are not UTF-8).
    pub headers: Vec<(String, String)>,
    /// The same headers byte for byte (`None` = a null value).
    pub raw_headers: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    pub timestamp_ms: i64,
}

impl Record {
    /// The last value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
    pub fn header_count(&self, name: &str) -> usize {
        self.headers.iter().filter(|(k, _)| k == name).count()
    }
    pub fn header_i64(&self, name: &str) -> i64 {
        self.header(name).unwrap_or_else(|| panic!("no header {name}")).parse().expect("numeric header")
    }
}

/// Reads `topic` from the start until `count` records arrived or `timeout` passed.
pub async fn read_topic(topic: &str, count: usize, timeout: Duration) -> Vec<Record> {
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap())
            .set("group.id", unique("reader"))
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .create()
            .expect("reader");
        consumer.subscribe(&[&topic]).expect("subscribe");
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        while out.len() < count && Instant::now() < deadline {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                // Read as bytes (rdkafka's own accessor panics on a key that is not UTF-8).
                let raw: Vec<(Vec<u8>, Option<Vec<u8>>)> = m
                    .headers()
                    .map(hookrelay::event::headers::RecordHeaders::read)
                    .unwrap_or_default()
                    .iter()
                    .map(|(k, v)| (k.to_vec(), v.map(<[u8]>::to_vec)))
                    .collect();
                let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
                out.push(Record {
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key().map(<[u8]>::to_vec),
                    value: m.payload().unwrap_or_default().to_vec(),
                    headers: raw.iter().map(|(k, v)| (text(k), text(v.as_deref().unwrap_or_default()))).collect(),
                    raw_headers: raw,
                    timestamp_ms: m.timestamp().to_millis().unwrap_or(0),
                });
            }
        }
        out
    })
    .await
    .expect("reader thread")
}

/// The committed offset of `group` on one partition (None when nothing is committed).
/// The number of partitions `topic` has.
pub fn partition_count(topic: &str) -> i32 {
    let consumer: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", bootstrap()).create().expect("metadata reader");
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).expect("metadata");
    metadata.topics().first().map_or(0, |t| t.partitions().len() as i32)
}

pub fn committed(group: &str, topic: &str, partition: i32) -> Option<i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("group.id", group)
        .create()
        .expect("offset reader");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, partition);
    let committed = consumer.committed_offsets(tpl, Duration::from_secs(10)).ok()?;
    match committed.find_partition(topic, partition)?.offset() {
        Offset::Offset(o) => Some(o),
        _ => None,
    }
}

// ---------------------------------------------------------------- receiver

/// One request a receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
    pub at_ms: i64,
    /// The status the receiver answered with.
    pub status: u16,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(String::as_str).unwrap_or_else(|| panic!("no header {name}"))
    }
}

/// How a receiver answers.
#[derive(Debug, Clone)]
pub struct Behaviour {
    pub status: u16,
    /// The first `fail_first` requests (per `webhook-id`) get `fail_status`.
    pub fail_first: usize,
    pub fail_status: u16,
    pub delay: Duration,
    pub retry_after: Option<String>,
    /// Requests whose body contains this are held until [`Receiver::release`].
    pub hold_marker: Option<String>,
    /// `(text, n)`: the first `n` requests whose body contains `text` get `fail_status` (one key's, say).
    pub fail_matching: Option<(String, usize)>,
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            status: 200,
            fail_first: 0,
            fail_status: 503,
            delay: Duration::ZERO,
            retry_after: None,
            hold_marker: None,
            fail_matching: None,
        }
    }
}

struct ReceiverState {
    behaviour: Mutex<Behaviour>,
    received: Mutex<Vec<Received>>,
    seen: Mutex<HashMap<String, usize>>,
    /// Requests that matched `fail_matching` so far.
    matched: Mutex<usize>,
    release: Notify,
    released: Mutex<bool>,
}

/// A real HTTP server on 127.0.0.1 with settable behaviour.
#[derive(Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    state: Arc<ReceiverState>,
}

impl Receiver {
    pub async fn start(behaviour: Behaviour) -> Receiver {
        let state = Arc::new(ReceiverState {
            behaviour: Mutex::new(behaviour),
            received: Mutex::default(),
            seen: Mutex::default(),
            matched: Mutex::default(),
            release: Notify::new(),
            released: Mutex::new(false),
        });
        let app = axum::Router::new().fallback(handle).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind receiver");
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.ok() });
        Receiver { addr, state }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.state.received.lock().unwrap().len()
    }

    /// The distinct `webhook-id`s answered with a 2xx.
    pub fn delivered_ids(&self) -> std::collections::HashSet<String> {
        self.received()
            .iter()
            .filter(|r| (200..300).contains(&r.status))
            .map(|r| r.header("webhook-id").to_string())
            .collect()
    }

    pub fn set(&self, change: impl FnOnce(&mut Behaviour)) {
        change(&mut self.state.behaviour.lock().unwrap());
    }

    /// Lets held requests answer.
    pub fn release(&self) {
        *self.state.released.lock().unwrap() = true;
        self.state.release.notify_waiters();
    }
}

async fn handle(
    State(state): State<Arc<ReceiverState>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let behaviour = state.behaviour.lock().unwrap().clone();
    let id = headers.get("webhook-id").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let nth = {
        let mut seen = state.seen.lock().unwrap();
        let n = seen.entry(id).or_insert(0);
        *n += 1;
        *n
    };
    let matching = behaviour.fail_matching.as_ref().is_some_and(|(text, n)| {
        let hit = String::from_utf8_lossy(&body).contains(text.as_str());
        let mut matched = state.matched.lock().unwrap();
        *matched += usize::from(hit);
        hit && *matched <= *n
    });
    let status = if nth <= behaviour.fail_first || matching { behaviour.fail_status } else { behaviour.status };
    let held = behaviour.hold_marker.as_ref().is_some_and(|m| String::from_utf8_lossy(&body).contains(m.as_str()));
    state.received.lock().unwrap().push(Received {
        path: uri.path().to_string(),
        headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string())).collect(),
        body: body.to_vec(),
        at_ms: now_ms(),
        status,
    });
    if held {
        loop {
            let notified = state.release.notified();
            if *state.released.lock().unwrap() {
                break;
            }
            notified.await;
        }
    }
    if !behaviour.delay.is_zero() {
        tokio::time::sleep(behaviour.delay).await;
    }
    let mut response = (StatusCode::from_u16(status).unwrap(), format!("answer {status}")).into_response();
    if status >= 300 {
        if let Some(after) = &behaviour.retry_after {
            response.headers_mut().insert("retry-after", after.parse().unwrap());
        }
    }
    response
}

// ---------------------------------------------------------------- relay process

/// A `hookrelay run` process with its own config; SIGTERM (then kill) on drop.
pub struct Relay {
    pub child: Child,
    pub admin: SocketAddr,
    pub log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

/// Verifies a received request with the official `standardwebhooks` crate.
pub fn verify(secret: &str, request: &Received) -> Result<(), String> {
    let webhook = standardwebhooks::Webhook::new(secret).map_err(|e| format!("{e:?}"))?;
    let mut headers = axum::http::HeaderMap::new();
    for name in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        headers.insert(name, request.header(name).parse().unwrap());
    }
    webhook.verify(&request.body, &headers).map_err(|e| format!("{e:?}"))
}

/// A free port for a listener a test's relay opens later (its admin server, say).
///
/// Not one the kernel hands out (`bind(:0)` and every outgoing connection take
/// ports from its ephemeral range, 32768-60999 by default): a port picked that
/// way and released could be taken again before the relay binds it, and its
/// /ready would then be answered by another test's relay (seen under load: the
/// relay exited "Address already in use" and the test waited on the other one).
/// Below that range, each port is given out once per test process.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    const FIRST: u16 = 21_000;
    const LAST: u16 = 32_000;
    static NEXT: AtomicU16 = AtomicU16::new(0);
    // Apart per process, should two test binaries run at once.
    let _ =
        NEXT.compare_exchange(0, FIRST + (std::process::id() % 50) as u16 * 200, Ordering::SeqCst, Ordering::SeqCst);
    loop {
        let port = NEXT.fetch_add(1, Ordering::SeqCst);
        let port = FIRST + port.wrapping_sub(FIRST) % (LAST - FIRST);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// The relay binary under test: this build's, or `E2E_RELAY_BIN` (a release build, say; not `HOOKRELAY_*`, which the relay reads as config).
pub fn binary() -> &'static str {
    static BINARY: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        std::env::var("E2E_RELAY_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_hookrelay").to_string())
    });
    &BINARY
}

/// Writes `config` (plus an admin listener) to a file and returns (dir, path, admin address).
pub fn write_config(config: &str) -> (tempfile::TempDir, std::path::PathBuf, SocketAddr) {
    let dir = tempfile::tempdir().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let path = dir.path().join("hookrelay.toml");
    let mut file = std::fs::File::create(&path).unwrap();
    write!(file, "{config}\n[admin]\nlisten = \"{admin}\"\n").unwrap();
    (dir, path, admin)
}

impl Relay {
    /// Starts `hookrelay run` with `config` and waits until /ready answers 200.
    pub async fn start(config: &Config, args: &[&str]) -> Relay {
        let relay = Relay::spawn(config, args);
        relay.wait_ready(Duration::from_secs(60)).await;
        relay
    }

    /// Starts without waiting.
    pub fn spawn(config: &Config, args: &[&str]) -> Relay {
        let (dir, path, admin) = write_config(&config.to_string());
        let log = dir.path().join("relay.log");
        let child = Command::new(binary())
            .arg("--config")
            .arg(&path)
            .arg("run")
            .args(args)
            .env("HOOKRELAY_LOG", std::env::var("TEST_RELAY_LOG").unwrap_or_else(|_| "info,hookrelay=debug".into()))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start hookrelay");
        Relay { child, admin, log, _dir: dir }
    }

    pub async fn wait_ready(&self, timeout: Duration) {
        let url = format!("http://{}/ready", self.admin);
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(r) = reqwest::get(&url).await {
                if r.status().is_success() {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "relay not ready in {timeout:?}; log:\n{}", self.log_text());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn log_text(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log).unwrap_or_default()).into_owned()
    }

    pub async fn metrics(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.admin)).await.unwrap().text().await.unwrap()
    }

    /// Sends SIGTERM and waits for the exit; returns the exit code.
    pub fn terminate(&mut self, timeout: Duration) -> Option<i32> {
        signal(&self.child, "TERM");
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

pub fn signal(child: &Child, name: &str) {
    Command::new("kill").arg(format!("-{name}")).arg(child.id().to_string()).status().expect("kill");
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.terminate(Duration::from_secs(10));
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() || std::env::var("TEST_KEEP_LOG").is_ok() {
            eprintln!("---- relay log ({}):\n{}", self.log.display(), self.log_text());
        }
    }
}

/// The value of one sample in a Prometheus text exposition (labels as written, sorted by name).
pub fn metric(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name_and_labels)?.strip_prefix(' ')?.trim().parse().ok())
}

#[test]
fn config_edits_land_where_they_say_or_panic() {
    let topics = Topics {
        events: "e".into(),
        tiers: vec![("t0".into(), Duration::from_secs(1))],
        dead: "d".into(),
        group: "g".into(),
    };
    let config = Config::new(&topics)
        .set("kafka.group_protocol", "consumer")
        .endpoint("a", "http://x")
        .set("endpoints.a.headers", table([("x-tenant", "acme".into())]))
        .tier("t1", Duration::from_secs(2));
    let parsed: toml::Table = config.to_string().parse().expect("the config is TOML");
    assert_eq!(parsed["kafka"]["group_protocol"].as_str(), Some("consumer"));
    assert_eq!(parsed["kafka"]["group_id"].as_str(), Some("g"));
    assert_eq!(parsed["endpoints"]["a"]["url"].as_str(), Some("http://x"));
    assert_eq!(parsed["endpoints"]["a"]["headers"]["x-tenant"].as_str(), Some("acme"));
    let tiers = parsed["retry"]["tiers"].as_array().unwrap();
    assert_eq!(tiers.iter().map(|t| t["delay"].as_str().unwrap()).collect::<Vec<_>>(), ["1000ms", "2000ms"]);

    // An edit under something that is not a table panics rather than doing nothing.
    let under_a_value = std::panic::catch_unwind(|| Config::new(&topics).set("kafka.brokers.port", 1));
    assert!(under_a_value.is_err(), "set under a string value");
    let under_an_array = std::panic::catch_unwind(|| Config::new(&topics).set("retry.tiers.delay", "1s"));
    assert!(under_an_array.is_err(), "set under an array of tables");
    let push_to_a_value = std::panic::catch_unwind(|| Config::new(&topics).push("kafka.brokers", toml::Table::new()));
    assert!(push_to_a_value.is_err(), "push to a string value");
}
