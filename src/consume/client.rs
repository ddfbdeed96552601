//! The librdkafka side of a consumer: its callbacks (lag, fatal errors, the rebalance handshake), the poll thread, commits.
//!
//! A dedicated thread polls librdkafka and sends every message *and* every
//! rebalance event, in order, down one bounded channel to the async loop. The
//! revoke callback blocks the poll thread until the loop has drained the
//! revoked partitions (bounded by `shutdown.grace`), then commits what the loop handed it.
//! An assignment carries the maps of decided offsets committed with it (see [`super::commit`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::OwnedMessage;
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, TopicPartitionList};
use tokio::sync::mpsc;

use super::commit::{commit_sync, committed_maps, CommitState};
use super::error::ConsumeError;
use super::handler::{Role, Spec};
use super::offset_map::OffsetMap;
use crate::config::client::Refusal;
use crate::config::Config;
use crate::observe::metrics;
use crate::observe::readiness::Readiness;

/// Messages and rebalance events waiting for the loop, at most.
const CHANNEL: usize = 256;

/// How long a close waits for the consumer's last other holder (see `poll_thread`).
const CLOSE_WAIT: Duration = Duration::from_secs(10);

/// What the poll thread sends to the loop, in the order librdkafka produced it.
pub enum Polled {
    Message(OwnedMessage),
    /// Partitions assigned, each with the map of decided offsets its last commit carried.
    Assigned(Vec<(String, i32, Option<OffsetMap>)>),
    /// The poll thread waits on the sender until the loop has drained these partitions;
    /// it then commits the list it was sent, if any.
    Revoked(Vec<(String, i32)>, std::sync::mpsc::Sender<Option<TopicPartitionList>>),
    /// The brokers refused the client (authentication failed, say): it cannot go on.
    Refused(String),
}

/// librdkafka callbacks; they run on the poll thread.
pub struct Context {
    tx: mpsc::Sender<Polled>,
    group: String,
    role: Role,
    grace: Duration,
    /// Set before the consumer closes: the loop is gone, do not wait for it.
    closing: AtomicBool,
    joined: AtomicBool,
    readiness: Readiness,
    commits: Arc<CommitState>,
}

pub type KafkaConsumer = BaseConsumer<Context>;

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
        for topic in stats.topics.values() {
            for p in topic.partitions.values() {
                // librdkafka reports partition -1 (internal UA), and -1 lag when it knows no
                // position: for a partition never read nor committed that is everything on it
                // (auto.offset.reset = earliest), so the series exists from the start.
                let never_read = p.committed_offset < 0 && p.app_offset < 0 && p.lo_offset >= 0;
                let lag = match p.consumer_lag {
                    lag if lag >= 0 => lag,
                    _ if never_read && p.hi_offset >= p.lo_offset => p.hi_offset - p.lo_offset,
                    _ => continue,
                };
                if p.partition >= 0 && p.desired {
                    metrics::consumer_lag(&self.group, &topic.topic, p.partition, lag);
                }
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // A TLS error after start-up is one broker's handshake, not a refusal of the client.
        let refused =
            matches!(error.rdkafka_error_code().and_then(Refusal::of), Some(Refusal::Access | Refusal::Fatal));
        if refused {
            tracing::error!(group = %self.group, %error, reason, "kafka refused the client, stopping");
            let _ = self.tx.try_send(Polled::Refused(format!("{error}: {reason}")));
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
        // Closing, the loop committed everything at the end of its drain.
        let mut list = None;
        if !self.closing.load(Ordering::SeqCst) {
            let (ack_tx, ack_rx) = std::sync::mpsc::channel();
            if self.tx.blocking_send(Polled::Revoked(revoked, ack_tx)).is_ok() {
                // The loop answers within the grace period; the margin covers its own timer.
                list = ack_rx.recv_timeout(self.grace + Duration::from_secs(5)).ok().flatten();
            }
        }
        if let Some(list) = list.filter(|_| !consumer.assignment_lost()) {
            // The partitions are gone: a failure is not retried (the next owner reads again from the last commit).
            commit_sync(consumer, &list);
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let maps = committed_maps(consumer, tpl);
            let skip: Vec<(String, i32, u64)> = partitions(tpl)
                .into_iter()
                .zip(&maps)
                .filter_map(|((t, p), m)| Some((t, p, m.as_ref()?.len())))
                .collect();
            tracing::info!(group = %self.group, assigned = ?partitions(tpl), ?skip, "partitions assigned");
            self.mark_joined();
            let assigned = partitions(tpl).into_iter().zip(maps).map(|((t, p), m)| (t, p, m)).collect();
            let _ = self.tx.blocking_send(Polled::Assigned(assigned));
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        self.commits.done(&result, offsets);
    }
}

/// A subscribed consumer and the thread that polls it.
pub struct Client {
    consumer: Arc<KafkaConsumer>,
    stop: Arc<AtomicBool>,
    poller: JoinHandle<()>,
}

impl Client {
    /// Subscribes and starts polling; what is polled arrives on the receiver.
    pub fn start(
        config: &Config,
        spec: &Spec,
        readiness: Readiness,
    ) -> Result<(Client, mpsc::Receiver<Polled>), ConsumeError> {
        let (tx, rx) = mpsc::channel(CHANNEL);
        let context = Context {
            tx,
            group: spec.group_id.clone(),
            role: spec.role,
            grace: spec.grace,
            closing: AtomicBool::new(false),
            joined: AtomicBool::new(false),
            readiness,
            commits: Arc::default(),
        };
        let consumer: Arc<KafkaConsumer> = Arc::new(
            crate::config::client::consumer_config(&config.kafka, &spec.group_id).create_with_context(context)?,
        );
        let topics: Vec<&str> = spec.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics)?;
        tracing::info!(group = %spec.group_id, role = spec.role.as_str(), ?topics, "consumer started");
        let stop = Arc::new(AtomicBool::new(false));
        let poller = {
            let (consumer, stop, group) = (consumer.clone(), stop.clone(), spec.group_id.clone());
            std::thread::Builder::new()
                .name(format!("poll-{}", spec.role.as_str()))
                .spawn(move || poll_thread(consumer, stop, group))?
        };
        Ok((Client { consumer, stop, poller }, rx))
    }

    pub fn consumer(&self) -> Arc<KafkaConsumer> {
        self.consumer.clone()
    }

    /// What the loop and the commit callback share.
    pub fn commit_state(&self) -> Arc<CommitState> {
        self.consumer.context().commits.clone()
    }

    /// Leaves the group from the poll thread (the loop committed at the end of its
    /// drain): it closes once the loop has dropped its handle on the consumer.
    pub async fn close(self) {
        self.consumer.context().closing.store(true, Ordering::SeqCst);
        self.stop.store(true, Ordering::SeqCst);
        drop(self.consumer);
        let poller = self.poller;
        let _ = tokio::task::spawn_blocking(move || poller.join()).await;
    }
}

/// Polls until told to stop, then closes the consumer (leaving the group).
fn poll_thread(consumer: Arc<KafkaConsumer>, stop: Arc<AtomicBool>, group: String) {
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
    // The loop may still hold a clone for a moment; wait until this is the last one.
    // The committing thread holds one until its commit returns, which waits for the
    // group coordinator without end when the brokers are gone: past CLOSE_WAIT the
    // process stops without leaving the group (the session timeout ends its membership).
    let mut consumer = consumer;
    let until = std::time::Instant::now() + CLOSE_WAIT;
    loop {
        match Arc::try_unwrap(consumer) {
            Ok(last) => {
                drop(last); // closes: leaves the group
                tracing::info!(%group, "consumer closed");
                break;
            }
            Err(shared) if std::time::Instant::now() >= until => {
                tracing::warn!(%group, wait = ?CLOSE_WAIT, "consumer not closed: a commit still waits for the brokers");
                drop(shared);
                break;
            }
            Err(shared) => {
                consumer = shared;
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}
