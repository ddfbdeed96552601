//! Consumer group, partition lifecycle, pause/resume, rebalance: the loop every role (events, tiers, dead) runs.
//!
//! # Shape
//! A dedicated thread polls librdkafka and sends every message *and* every
//! rebalance event, in order, down one bounded channel to an async loop. The
//! loop owns all partition state; handlers run as tasks and report back on a
//! second channel. Offsets are stored (and then committed by librdkafka's
//! background commit, on revoke and on close) only at the highest contiguous
//! decided offset of each partition.
//!
//! # Partition lifecycle
//! ```text
//! assigned -> Consuming --revoke--> Draining --in-flight done or grace over--> (removed; offsets committed)
//! ```
//! While Consuming, records wait in a per-partition backlog until they are due
//! (retry tiers) and a slot is free (per-partition and per-consumer in-flight
//! limits) and their endpoint has room. A partition is paused when none of its
//! waiting records is due for a while (it resumes shortly before, see
//! [`RESUME_LEAD_MS`]) or when its backlog reaches `max_read_ahead` (it
//! resumes at half). Memory per partition is therefore at most
//! `max_in_flight_per_partition + max_read_ahead` records. Pausing stops the fetch;
//! librdkafka resumes from the position after the last record it handed out,
//! which sits in the backlog, so nothing is skipped.
//! The revoke callback blocks the poll thread until the loop has drained the
//! revoked partitions (bounded by `shutdown.grace`), then commits.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message, OwnedMessage};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::metrics;

/// Which part of the relay a consumer plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Events,
    Retry,
    Dead,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Events => "events",
            Role::Retry => "retry",
            Role::Dead => "dead",
        }
    }
}

/// What became of a record a handler was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Done {
    /// Its outcome is decided (delivered, or a route acknowledged): the offset may pass it.
    Decided,
    /// Given up at shutdown or revoke: it will be read again.
    Abandoned,
}

/// Works on one record at a time; many run concurrently.
pub trait Handler: Send + Sync + 'static {
    /// When the record may be worked on (ms since the epoch); `None` = now.
    fn due_ms(&self, _record: &OwnedMessage) -> Option<i64> {
        None
    }
    /// The endpoint a record goes to and how many of its records may be in
    /// flight at once; `None` = no endpoint limit (invalid records, say).
    fn endpoint(&self, _record: &OwnedMessage) -> Option<(Arc<str>, usize)> {
        None
    }
    /// Works on the record until its outcome is decided, or `cancel` fires.
    fn handle(self: Arc<Self>, record: OwnedMessage, cancel: CancellationToken) -> BoxFuture<'static, Done>;
}

/// One consumer: its group, topics and limits.
#[derive(Debug, Clone)]
pub struct Spec {
    pub role: Role,
    pub group_id: String,
    pub topics: Vec<String>,
    pub max_in_flight: usize,
    pub max_in_flight_per_partition: usize,
    /// Records read but waiting, per partition, before the partition is paused.
    pub max_read_ahead: usize,
    pub grace: Duration,
}

/// Readiness latch: ready once every consumer of the process joined its
/// group; not ready again from the moment a drain starts (SIGTERM).
#[derive(Clone, Default)]
pub struct Readiness {
    expected: usize,
    joined: Arc<AtomicUsize>,
    draining: Arc<AtomicBool>,
}

impl Readiness {
    pub fn new(consumers: usize) -> Readiness {
        Readiness { expected: consumers, ..Readiness::default() }
    }
    fn joined_one(&self) {
        self.joined.fetch_add(1, Ordering::SeqCst);
        metrics::get().ready.set(i64::from(self.is_ready()));
    }
    /// The process is shutting down: not ready any more, for good.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
        metrics::get().ready.set(0);
    }
    pub fn is_ready(&self) -> bool {
        !self.draining.load(Ordering::SeqCst) && self.joined.load(Ordering::SeqCst) >= self.expected
    }
}

/// What the poll thread sends to the loop, in the order librdkafka produced it.
enum Polled {
    Message(OwnedMessage),
    Assigned(Vec<(String, i32)>),
    /// The poll thread waits on the sender until the loop has drained these partitions.
    Revoked(Vec<(String, i32)>, std::sync::mpsc::Sender<()>),
    /// The client cannot go on (authentication failed, say).
    Fatal(String),
}

/// librdkafka callbacks; they run on the poll thread.
struct Context {
    tx: mpsc::Sender<Polled>,
    group: String,
    role: Role,
    grace: Duration,
    /// Set before the consumer closes: the loop is gone, do not wait for it.
    closing: AtomicBool,
    joined: AtomicBool,
    readiness: Readiness,
}

impl Context {
    fn mark_joined(&self) {
        if !self.joined.swap(true, Ordering::SeqCst) {
            tracing::info!(group = %self.group, role = self.role.as_str(), "joined consumer group");
            self.readiness.joined_one();
        }
    }
}

fn partitions(tpl: &TopicPartitionList) -> Vec<(String, i32)> {
    tpl.elements().iter().map(|e| (e.topic().to_string(), e.partition())).collect()
}

impl ClientContext for Context {
    fn stats(&self, stats: Statistics) {
        if stats.cgrp.as_ref().is_some_and(|g| g.state == "up") {
            self.mark_joined();
        }
        let lag = &metrics::get().consumer_lag;
        for topic in stats.topics.values() {
            for partition in topic.partitions.values() {
                // librdkafka reports partition -1 (internal UA) and -1 lag when unknown.
                if partition.partition >= 0 && partition.consumer_lag >= 0 && partition.desired {
                    let p = partition.partition.to_string();
                    lag.with_label_values(&[&self.group, &topic.topic, &p]).set(partition.consumer_lag);
                }
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        use rdkafka::types::RDKafkaErrorCode as Code;
        let fatal = matches!(
            error.rdkafka_error_code(),
            Some(
                Code::Authentication
                    | Code::SaslAuthenticationFailed
                    | Code::Fatal
                    | Code::TopicAuthorizationFailed
                    | Code::GroupAuthorizationFailed
            )
        );
        if fatal {
            tracing::error!(group = %self.group, %error, reason, "kafka client error, stopping");
            let _ = self.tx.try_send(Polled::Fatal(format!("{error}: {reason}")));
        } else {
            tracing::warn!(group = %self.group, %error, reason, "kafka client error");
        }
    }
}

impl ConsumerContext for Context {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(tpl) = rebalance else { return };
        let revoked = partitions(tpl);
        tracing::info!(group = %self.group, ?revoked, "partitions revoked");
        if !self.closing.load(Ordering::SeqCst) {
            let (ack_tx, ack_rx) = std::sync::mpsc::channel();
            if self.tx.blocking_send(Polled::Revoked(revoked, ack_tx)).is_ok() {
                // The loop answers within the grace period; the margin covers its own timer.
                let _ = ack_rx.recv_timeout(self.grace + Duration::from_secs(5));
            }
        }
        if !consumer.assignment_lost() {
            commit(consumer, &self.group);
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let assigned = partitions(tpl);
            tracing::info!(group = %self.group, ?assigned, "partitions assigned");
            self.mark_joined();
            let _ = self.tx.blocking_send(Polled::Assigned(assigned));
        }
    }
}

fn commit(consumer: &BaseConsumer<Context>, group: &str) {
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) => {}
        // Nothing stored since the last commit.
        Err(KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)) => {}
        Err(error) => tracing::warn!(group, %error, "commit failed"),
    }
}

/// How long before a paused head is due its partition resumes fetching.
/// librdkafka restarts the fetch of a resumed partition at its broker
/// thread's next wake-up (up to about a second when nothing else is being
/// fetched), so resuming exactly at the due time would make the records
/// behind the head late by up to that much. With the lead they are read by then.
const RESUME_LEAD_MS: i64 = 1_000;

/// A record read but not yet handed to its handler.
struct Waiting {
    record: OwnedMessage,
    due_ms: Option<i64>,
    endpoint: Option<(Arc<str>, usize)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lifecycle {
    Consuming,
    /// Revoked: no new work, waiting for in-flight records before letting go.
    Draining,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PauseReason {
    /// A limit is reached.
    Capacity,
    /// The head record is not due yet.
    NotDue,
}

struct Partition {
    /// Tells this assignment's completions from a previous one's.
    generation: u64,
    lifecycle: Lifecycle,
    tracker: crate::offsets::OffsetTracker,
    in_flight: usize,
    backlog: VecDeque<Waiting>,
    paused: Option<PauseReason>,
    /// When a waiting record needs the loop's attention (ms), if one waits for time.
    wake_ms: Option<i64>,
}

struct Completion {
    key: (Arc<str>, i32),
    /// The endpoint slot the record held, with the endpoint's limit.
    endpoint: Option<(Arc<str>, usize)>,
    generation: u64,
    offset: i64,
    done: Done,
}

/// A revoke the poll thread is waiting on.
struct PendingRevoke {
    partitions: Vec<(Arc<str>, i32)>,
    ack: std::sync::mpsc::Sender<()>,
    deadline: Instant,
}

/// Runs one consumer until `shutdown` fires and the drain is over.
pub async fn run(
    config: &Config,
    spec: Spec,
    handler: Arc<dyn Handler>,
    shutdown: CancellationToken,
    readiness: Readiness,
) -> anyhow::Result<()> {
    let (tx, rx) = mpsc::channel(256);
    let context = Context {
        tx,
        group: spec.group_id.clone(),
        role: spec.role,
        grace: spec.grace,
        closing: AtomicBool::new(false),
        joined: AtomicBool::new(false),
        readiness,
    };
    let consumer: Arc<BaseConsumer<Context>> =
        Arc::new(crate::kafka::consumer_config(&config.kafka, &spec.group_id).create_with_context(context)?);
    let topics: Vec<&str> = spec.topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    tracing::info!(group = %spec.group_id, role = spec.role.as_str(), ?topics, "consumer started");

    let stop = Arc::new(AtomicBool::new(false));
    let poller = {
        let consumer = consumer.clone();
        let stop = stop.clone();
        let group = spec.group_id.clone();
        std::thread::Builder::new()
            .name(format!("poll-{}", spec.role.as_str()))
            .spawn(move || poll_thread(consumer, stop, group))?
    };

    let mut state = Loop::new(spec, consumer.clone(), handler);
    let result = state.run(rx, shutdown).await;

    // Leave the group from the poll thread: it commits, then closes.
    consumer.context().closing.store(true, Ordering::SeqCst);
    stop.store(true, Ordering::SeqCst);
    drop(state);
    drop(consumer);
    tokio::task::spawn_blocking(move || poller.join()).await?.ok();
    result
}

/// Polls until told to stop, then commits and closes the consumer (leaving the group).
fn poll_thread(consumer: Arc<BaseConsumer<Context>>, stop: Arc<AtomicBool>, group: String) {
    while !stop.load(Ordering::SeqCst) {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                let owned = message.detach();
                drop(message);
                if consumer.context().tx.blocking_send(Polled::Message(owned)).is_err() {
                    break;
                }
            }
            Some(Err(error)) => tracing::warn!(%group, %error, "consume error"),
            None => {}
        }
    }
    commit(&consumer, &group);
    // The loop may still hold a clone for a moment; wait until this is the last one.
    let mut consumer = consumer;
    loop {
        match Arc::try_unwrap(consumer) {
            Ok(last) => {
                drop(last); // closes: leaves the group
                break;
            }
            Err(shared) => {
                consumer = shared;
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
    tracing::info!(%group, "consumer closed");
}

/// The async side: owns partition state, dispatches work, stores offsets.
struct Loop {
    spec: Spec,
    consumer: Arc<BaseConsumer<Context>>,
    handler: Arc<dyn Handler>,
    partitions: HashMap<(Arc<str>, i32), Partition>,
    in_flight: usize,
    generation: u64,
    tasks: TaskTracker,
    /// Cancels handlers (abandon) once the grace period is over.
    abandon: CancellationToken,
    done_tx: mpsc::Sender<Completion>,
    done_rx: mpsc::Receiver<Completion>,
    revoke: Option<PendingRevoke>,
    /// Records in flight per endpoint, in this consumer.
    endpoint_in_flight: HashMap<Arc<str>, usize>,
}

impl Loop {
    fn new(spec: Spec, consumer: Arc<BaseConsumer<Context>>, handler: Arc<dyn Handler>) -> Loop {
        // At most max_in_flight tasks exist, each sends one completion: this never blocks.
        let (done_tx, done_rx) = mpsc::channel(spec.max_in_flight + 1);
        Loop {
            spec,
            consumer,
            handler,
            partitions: HashMap::new(),
            in_flight: 0,
            generation: 0,
            tasks: TaskTracker::new(),
            abandon: CancellationToken::new(),
            done_tx,
            done_rx,
            revoke: None,
            endpoint_in_flight: HashMap::new(),
        }
    }

    async fn run(&mut self, mut rx: mpsc::Receiver<Polled>, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut fatal = None;
        loop {
            let next_due = self.next_due();
            let revoke_deadline = self.revoke.as_ref().map(|r| r.deadline);
            tokio::select! {
                // Finished work first: it frees capacity and moves offsets.
                biased;
                Some(done) = self.done_rx.recv() => self.complete(done),
                _ = sleep_until_opt(revoke_deadline) => self.finish_revoke(true),
                _ = shutdown.cancelled() => break,
                _ = sleep_until_opt(next_due) => self.pump_all(),
                polled = rx.recv() => match polled {
                    Some(Polled::Message(record)) => self.accept(record),
                    Some(Polled::Assigned(assigned)) => self.assign(assigned),
                    Some(Polled::Revoked(revoked, ack)) => self.start_revoke(revoked, ack),
                    Some(Polled::Fatal(why)) => {
                        fatal = Some(why);
                        break;
                    }
                    None => break,
                },
                _ = tick.tick() => self.publish_gauges(),
            }
            self.check_revoke();
        }
        self.drain().await;
        match fatal {
            Some(why) => Err(anyhow::anyhow!("kafka: {why}")),
            None => Ok(()),
        }
    }

    /// Stop fetching, give in-flight work the grace period, abandon the rest, store what is decided.
    async fn drain(&mut self) {
        tracing::info!(role = self.spec.role.as_str(), in_flight = self.in_flight, "draining");
        if let Ok(assignment) = self.consumer.assignment() {
            let _ = self.consumer.pause(&assignment);
        }
        for partition in self.partitions.values_mut() {
            // No new work and no resume from here on; waiting records are read again after a restart.
            partition.lifecycle = Lifecycle::Draining;
            partition.backlog.clear();
            partition.paused = None;
        }
        let deadline = Instant::now() + self.spec.grace;
        while self.in_flight > 0 {
            tokio::select! {
                Some(done) = self.done_rx.recv() => self.complete(done),
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        if self.in_flight > 0 {
            tracing::warn!(
                role = self.spec.role.as_str(),
                abandoned = self.in_flight,
                "grace period over, abandoning in-flight records"
            );
            self.abandon.cancel();
            self.tasks.close();
            // Abandoned handlers return promptly; their records stay undecided.
            let _ = tokio::time::timeout(Duration::from_secs(2), self.tasks.wait()).await;
            while let Ok(done) = self.done_rx.try_recv() {
                self.complete(done);
            }
        }
        if let Some(revoke) = self.revoke.take() {
            let _ = revoke.ack.send(());
        }
        self.publish_gauges();
    }

    fn assign(&mut self, assigned: Vec<(String, i32)>) {
        let mut tpl = TopicPartitionList::new();
        for (topic, partition) in assigned {
            tpl.add_partition(&topic, partition);
            self.generation += 1;
            let key = (Arc::<str>::from(topic), partition);
            self.partitions.insert(key, self.new_partition());
        }
        // A new assignment starts unpaused, whatever librdkafka remembers of an earlier one.
        if let Err(error) = self.consumer.resume(&tpl) {
            tracing::debug!(%error, "resume of assigned partitions failed");
        }
    }

    fn new_partition(&self) -> Partition {
        Partition {
            generation: self.generation,
            lifecycle: Lifecycle::Consuming,
            tracker: Default::default(),
            in_flight: 0,
            backlog: VecDeque::new(),
            paused: None,
            wake_ms: None,
        }
    }

    fn accept(&mut self, record: OwnedMessage) {
        let key = (Arc::<str>::from(record.topic()), record.partition());
        if !self.partitions.contains_key(&key) {
            // A record can only come from an assigned partition; be robust anyway.
            self.generation += 1;
            let partition = self.new_partition();
            self.partitions.insert(key.clone(), partition);
        }
        let due_ms = self.handler.due_ms(&record);
        let endpoint = self.handler.endpoint(&record);
        tracing::trace!(
            topic = &*key.0,
            partition = key.1,
            offset = record.offset(),
            due_ms,
            now_ms = now_ms(),
            "record read"
        );
        let partition = self.partitions.get_mut(&key).expect("inserted above");
        if partition.lifecycle != Lifecycle::Consuming {
            return; // not ours any more: the next owner reads it again
        }
        // Pending from the moment it is read: a record waiting in the backlog
        // holds the commit position just like one in flight.
        partition.tracker.begin(record.offset());
        partition.backlog.push_back(Waiting { record, due_ms, endpoint });
        self.pump(&key);
    }

    /// Hands due records of one partition to handlers while limits allow, then sets its pause state.
    ///
    /// Any due record is dispatched, not only the head: jitter can make a
    /// later record due first, and the offset tracker copes with any order.
    /// Pause rules (see the module doc): a partition none of whose waiting
    /// records is due within [`RESUME_LEAD_MS`] is paused; one whose backlog
    /// of read records reached `max_read_ahead` is paused until it is down to
    /// half. Otherwise it fetches, so that records are at hand when due.
    fn pump(&mut self, key: &(Arc<str>, i32)) {
        let now = now_ms();
        let limit = self.spec.max_in_flight_per_partition;
        let Some(partition) = self.partitions.get_mut(key) else { return };
        let mut i = 0;
        while i < partition.backlog.len() && partition.lifecycle == Lifecycle::Consuming {
            let candidate = &partition.backlog[i];
            let endpoint_full = candidate
                .endpoint
                .as_ref()
                .is_some_and(|(name, max)| self.endpoint_in_flight.get(name).is_some_and(|n| n >= max));
            // A record for a saturated endpoint waits without taking a slot, so
            // the records behind it for other endpoints can go.
            if candidate.due_ms.is_some_and(|due| due > now) || endpoint_full {
                i += 1;
                continue;
            }
            if partition.in_flight >= limit || self.in_flight >= self.spec.max_in_flight {
                break;
            }
            let waiting = partition.backlog.remove(i).expect("index in range");
            let offset = waiting.record.offset();
            partition.in_flight += 1;
            self.in_flight += 1;
            if let Some((name, _)) = &waiting.endpoint {
                *self.endpoint_in_flight.entry(name.clone()).or_default() += 1;
            }
            let completion = Completion {
                key: key.clone(),
                endpoint: waiting.endpoint,
                generation: partition.generation,
                offset,
                done: Done::Abandoned,
            };
            let work = self.handler.clone().handle(waiting.record, self.abandon.child_token());
            let done_tx = self.done_tx.clone();
            self.tasks.spawn(async move {
                let done = work.await;
                let _ = done_tx.send(Completion { done, ..completion }).await;
            });
        }
        // The earliest due time among records that wait for time only.
        let next_due = partition.backlog.iter().filter_map(|w| w.due_ms).filter(|&due| due > now).min();
        let anything_due = partition.backlog.iter().any(|w| w.due_ms.is_none_or(|due| due <= now));
        let waiting_for_time = !anything_due && next_due.is_some_and(|due| due - now > RESUME_LEAD_MS);
        let read_ahead = self.spec.max_read_ahead;
        let full = match partition.paused {
            // Hysteresis: a partition paused for capacity resumes at half, not at limit - 1.
            Some(PauseReason::Capacity) => partition.backlog.len() > read_ahead / 2,
            _ => partition.backlog.len() >= read_ahead,
        };
        let reason = match () {
            _ if partition.lifecycle != Lifecycle::Consuming => None,
            _ if full => Some(PauseReason::Capacity),
            _ if waiting_for_time => Some(PauseReason::NotDue),
            _ => None,
        };
        if partition.paused.is_some() != reason.is_some() {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition(&key.0, key.1);
            let applied = if reason.is_some() { self.consumer.pause(&tpl) } else { self.consumer.resume(&tpl) };
            if let Err(error) = applied {
                tracing::warn!(topic = &*key.0, partition = key.1, %error, "pause/resume failed");
            }
        }
        partition.paused = reason;
        partition.wake_ms =
            next_due.map(|due| if reason == Some(PauseReason::NotDue) { due - RESUME_LEAD_MS } else { due });
    }

    /// Pumps every partition with a backlog (a timer fired, or capacity came back).
    fn pump_all(&mut self) {
        let keys: Vec<_> = self
            .partitions
            .iter()
            .filter(|(_, p)| !p.backlog.is_empty() || p.paused.is_some())
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            self.pump(&key);
        }
    }

    fn complete(&mut self, done: Completion) {
        // The endpoint slot is freed whatever became of the partition meanwhile.
        let mut endpoint_was_full = false;
        if let Some((name, max)) = &done.endpoint {
            if let Some(n) = self.endpoint_in_flight.get_mut(name) {
                endpoint_was_full = *n >= *max;
                *n -= 1;
                if *n == 0 {
                    self.endpoint_in_flight.remove(name);
                }
            }
        }
        let Some(partition) = self.partitions.get_mut(&done.key) else { return };
        if partition.generation != done.generation {
            return; // from an earlier assignment of this partition
        }
        let was_full = self.in_flight >= self.spec.max_in_flight;
        partition.in_flight -= 1;
        self.in_flight -= 1;
        if done.done == Done::Decided {
            if let Some(position) = partition.tracker.decide(done.offset) {
                let mut tpl = TopicPartitionList::new();
                let stored = tpl
                    .add_partition_offset(&done.key.0, done.key.1, Offset::Offset(position))
                    .and_then(|()| self.consumer.store_offsets(&tpl));
                if let Err(error) = stored {
                    tracing::debug!(topic = &*done.key.0, partition = done.key.1, position, %error, "offset not stored");
                }
            }
        }
        // Records of any partition may have waited for the freed slot.
        if was_full || endpoint_was_full {
            self.pump_all();
        } else {
            self.pump(&done.key.clone());
        }
    }

    fn start_revoke(&mut self, revoked: Vec<(String, i32)>, ack: std::sync::mpsc::Sender<()>) {
        let mut keys = Vec::new();
        let mut paused = TopicPartitionList::new();
        for (topic, partition) in revoked {
            let key = (Arc::<str>::from(topic), partition);
            if let Some(p) = self.partitions.get_mut(&key) {
                // Waiting records and due timers go with the partition: the next
                // owner reads them again from the committed offset.
                p.lifecycle = Lifecycle::Draining;
                p.backlog.clear();
                if p.paused.take().is_some() {
                    paused.add_partition(&key.0, key.1);
                }
            }
            keys.push(key);
        }
        if paused.count() > 0 {
            if let Err(error) = self.consumer.resume(&paused) {
                tracing::debug!(%error, "resume of revoked partitions failed");
            }
        }
        self.revoke = Some(PendingRevoke { partitions: keys, ack, deadline: Instant::now() + self.spec.grace });
    }

    fn check_revoke(&mut self) {
        let drained = self
            .revoke
            .as_ref()
            .is_some_and(|r| r.partitions.iter().all(|k| self.partitions.get(k).is_none_or(|p| p.in_flight == 0)));
        if drained {
            self.finish_revoke(false);
        }
    }

    /// Lets go of the revoked partitions: their decided offsets are stored already,
    /// the callback commits them once acknowledged.
    fn finish_revoke(&mut self, timed_out: bool) {
        let Some(revoke) = self.revoke.take() else { return };
        for key in &revoke.partitions {
            if let Some(p) = self.partitions.remove(key) {
                if timed_out && p.in_flight > 0 {
                    tracing::warn!(
                        topic = &*key.0,
                        partition = key.1,
                        in_flight = p.in_flight,
                        "revoke grace over; records will be read again by the new owner"
                    );
                    self.in_flight -= p.in_flight;
                }
            }
        }
        let _ = revoke.ack.send(());
    }

    /// When the loop must look at a partition again for time's sake: the
    /// resume point (due - lead) of a paused partition, or the next due time.
    fn next_due(&self) -> Option<Instant> {
        let wake =
            self.partitions.values().filter(|p| p.lifecycle == Lifecycle::Consuming).filter_map(|p| p.wake_ms).min()?;
        let wait = (wake - now_ms()).max(0) as u64;
        Some(Instant::now() + Duration::from_millis(wait))
    }

    fn publish_gauges(&self) {
        let m = metrics::get();
        let role = self.spec.role.as_str();
        m.in_flight.with_label_values(&[role]).set(self.in_flight as i64);
        for (reason, label) in [(PauseReason::Capacity, "capacity"), (PauseReason::NotDue, "not_due")] {
            let count = self.partitions.values().filter(|p| p.paused == Some(reason)).count();
            m.paused_partitions.with_label_values(&[role, label]).set(count as i64);
        }
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// A record's headers as owned pairs (values that are null become empty).
pub fn headers_of(record: &OwnedMessage) -> Vec<(String, Vec<u8>)> {
    record
        .headers()
        .map(|headers| headers.iter().map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec())).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_is_a_latch() {
        let r = Readiness::new(2);
        assert!(!r.is_ready());
        r.joined_one();
        assert!(!r.is_ready(), "one of two consumers joined");
        r.joined_one();
        assert!(r.is_ready());
        r.drain();
        assert!(!r.is_ready(), "draining is not ready");
        r.joined_one();
        assert!(!r.is_ready(), "and stays so");
    }
}
