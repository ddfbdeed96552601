//! The consumer every role (events, tiers, dead) runs: an async loop that owns partition state, dispatches
//! records to a [`Handler`], stores decided offsets, and drains on revoke and shutdown.
//!
//! # Shape
//! - `client`: librdkafka callbacks and the poll thread, which sends messages
//!   and rebalance events in order down one channel to the loop.
//! - [`handler`]: the contract with the work on each record.
//! - [`partition`]: partition state and the pure scheduler.
//! - `held`: decisions on records a handler holds past their slot ([`Done::Held`]).
//! - `intake`: assignments and records from the poll thread into partition state.
//! - `revoke`: letting partitions go (revoke and shutdown drain) within the grace.
//! - here: the loop. Handlers run as tasks and report back on a second channel.
//!   Each partition's commit is its first undecided offset, with the decided
//!   offsets above it in the commit's metadata (`commit`, [`offset_map`]): a
//!   new owner skips those.
//!
//! - `schedule`: the pure scheduler; `pump`: handing its choice to handlers,
//!   pausing, and gating reads.
//!
//! Memory per partition is at most `max_in_flight_per_partition` + 2 x
//! `max_read_ahead` records: while every partition's read-ahead is full the
//! loop stops reading (librdkafka keeps what it fetched); one that stays full
//! 200 ms, or reaches twice the bound, is paused. Pausing stops the fetch;
//! librdkafka resumes from the position after the last record it handed out,
//! which sits in the backlog, so nothing is skipped.

pub mod budget;
mod client;
mod commit;
pub mod handler;
mod held;
mod intake;
pub mod offset_map;
pub mod offsets;
pub mod order;
pub mod partition;
mod pump;
mod revoke;
pub mod schedule;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::error::KafkaError;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::budget::Budget;
use self::client::{Client, KafkaConsumer, Polled};
use self::handler::Decision;
pub use self::handler::{Decider, Done, EndpointSlot, Handler, Held, IdMap, Role, Spec, Ticket, Work};
pub use self::partition::PauseReason;
use self::partition::{Lifecycle, Partition, Waiting};
use self::revoke::PendingRevoke;
use crate::app::clock::now_ms;
use crate::config::client::Unavailable;
use crate::config::Config;
use crate::observe::metrics;
use crate::observe::readiness::Readiness;

/// Why a consumer stopped before it was asked to.
#[derive(Debug, thiserror::Error)]
pub enum ConsumeError {
    #[error("kafka client: {0}")]
    Client(#[from] KafkaError),
    /// The brokers refused the client mid-run: the process exits 69, as at start-up.
    #[error(transparent)]
    Refused(#[from] Unavailable),
    #[error("cannot start the poll thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// Messages read from the poll thread's channel in one wake-up of the loop, at most.
const READ_BATCH: usize = 64;

/// Completions wait to be pumped until they freed 1/COALESCE of the records in
/// flight, or for [`COALESCE_MS`]: each pump scans a backlog (every partition's,
/// once the whole consumer was full), and at 20,000 deliveries/s one scan per
/// completion or two was the loop's largest cost (a profile of make bench S0:
/// 15 % of the relay's CPU). At a few records in flight every completion pumps.
const COALESCE: usize = 16;
const COALESCE_MS: u64 = 3;

/// Runs one consumer until `shutdown` fires and the drain is over.
pub async fn run<H: Handler>(
    config: &Config,
    spec: Spec,
    budget: Arc<Budget>,
    handler: Arc<H>,
    shutdown: CancellationToken,
    readiness: Readiness,
) -> Result<(), ConsumeError> {
    let (client, rx) = Client::start(config, &spec, readiness)?;
    let commits = commit::Commits::new(client.commit_state(), client.consumer(), config.kafka.commit_interval)?;
    let mut state = Loop::new(spec, client.consumer(), budget, handler, commits);
    let result = state.run(rx, shutdown).await;
    let brokers = config.kafka.brokers.clone();
    drop(state);
    client.close().await;
    result.map_err(|why| ConsumeError::Refused(Unavailable { brokers, why }))
}

/// What a handler task reports back.
struct Completion<R> {
    key: (Arc<str>, i32),
    /// The endpoint slot the record held.
    endpoint: Option<EndpointSlot>,
    /// Its share of the memory budget.
    bytes: usize,
    /// Its endpoint was slow when it started (see `Partition::count`).
    slow: bool,
    generation: u64,
    offset: i64,
    /// Its order key, in flight until now (see [`order`]).
    order: Option<order::OrderKey>,
    done: Done,
    /// The record, back for [`Done::Again`] only.
    again: Option<Arc<R>>,
}

/// Partitions to pump once a batch of records or completions is applied.
#[derive(Default)]
struct Touched {
    keys: Vec<(Arc<str>, i32)>,
    /// A slot of the whole consumer or of an endpoint freed: any partition may go on.
    all: bool,
}

/// Completions applied but not pumped yet (see [`COALESCE`]).
#[derive(Default)]
struct Coalesced {
    touched: Touched,
    freed: usize,
    /// When they are pumped at the latest.
    until: Option<Instant>,
}

/// The async side: owns partition state, dispatches work, stores offsets.
struct Loop<H: Handler> {
    spec: Spec,
    consumer: Arc<KafkaConsumer>,
    handler: Arc<H>,
    budget: Arc<Budget>,
    partitions: HashMap<(Arc<str>, i32), Partition<H::Record>>,
    in_flight: usize,
    generation: u64,
    tasks: TaskTracker,
    /// Cancels handlers (abandon) once the grace period is over.
    abandon: CancellationToken,
    done_tx: mpsc::Sender<Completion<H::Record>>,
    done_rx: mpsc::Receiver<Completion<H::Record>>,
    revoke: Option<PendingRevoke>,
    /// Records in flight per endpoint ([`EndpointSlot::id`]), in this consumer.
    endpoint_in_flight: IdMap<usize>,
    /// Of those, records of slow endpoints (see [`schedule::Limits::slow_room`]).
    slow_in_flight: usize,
    /// Endpoints some partition's records wait for ([`schedule::Dispatch::crowded`]).
    crowded: IdMap<()>,
    /// Decisions on held records; unbounded because a [`Held`] decides from sync code.
    decide_tx: mpsc::UnboundedSender<Decision>,
    decide_rx: mpsc::UnboundedReceiver<Decision>,
    /// Held records of all partitions (the sum of [`Partition::held`]).
    held: i64,
    coalesced: Coalesced,
    commits: commit::Commits,
}

impl<H: Handler> Loop<H> {
    fn new(
        spec: Spec,
        consumer: Arc<KafkaConsumer>,
        budget: Arc<Budget>,
        handler: Arc<H>,
        commits: commit::Commits,
    ) -> Loop<H> {
        // At most max_in_flight tasks exist, each sends one completion: this never blocks.
        let (done_tx, done_rx) = mpsc::channel(spec.max_in_flight + 1);
        let (decide_tx, decide_rx) = mpsc::unbounded_channel();
        Loop {
            spec,
            consumer,
            handler,
            budget,
            partitions: HashMap::new(),
            in_flight: 0,
            generation: 0,
            tasks: TaskTracker::new(),
            abandon: CancellationToken::new(),
            done_tx,
            done_rx,
            revoke: None,
            endpoint_in_flight: IdMap::default(),
            slow_in_flight: 0,
            crowded: IdMap::default(),
            decide_tx,
            decide_rx,
            held: 0,
            coalesced: Coalesced::default(),
            commits,
        }
    }

    /// Until shutdown; `Err` carries librdkafka's reason when the brokers refused the client.
    async fn run(&mut self, mut rx: mpsc::Receiver<Polled>, shutdown: CancellationToken) -> Result<(), String> {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut commit_tick = tokio::time::interval(self.commits.interval());
        commit_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut refused = None;
        loop {
            let next_due = self.next_due();
            let revoke_deadline = self.revoke.as_ref().map(|r| r.deadline);
            tokio::select! {
                // Finished work first: it frees capacity and moves offsets.
                biased;
                Some(done) = self.done_rx.recv() => {
                    // Completions that arrived together are applied together and each
                    // partition they touched is scheduled once: under load one pump per
                    // completion (each a scan of the backlog) was the loop's largest cost.
                    let mut next = Some(done);
                    let mut touched = std::mem::take(&mut self.coalesced.touched);
                    for _ in 0..READ_BATCH {
                        let Some(done) = next.take().or_else(|| self.done_rx.try_recv().ok()) else { break };
                        self.complete(done, &mut touched);
                        self.coalesced.freed += 1;
                    }
                    self.coalesced.touched = touched;
                    if self.coalesced.freed >= (self.in_flight / COALESCE).max(1) {
                        self.pump_coalesced();
                    } else if self.coalesced.until.is_none() {
                        self.coalesced.until = Some(Instant::now() + Duration::from_millis(COALESCE_MS));
                    }
                }
                _ = sleep_until_opt(self.coalesced.until) => self.pump_coalesced(),
                Some(decision) = self.decide_rx.recv() => self.apply(decision),
                _ = sleep_until_opt(revoke_deadline) => self.finish_revoke(true),
                _ = shutdown.cancelled() => break,
                _ = sleep_until_opt(next_due) => self.pump_all(),
                polled = rx.recv(), if self.reading() => {
                    // What is already waiting is read in one go, and each partition it
                    // touched is scheduled once: not once per record.
                    let mut next = polled;
                    let mut touched = Vec::new();
                    for read in 0..READ_BATCH {
                        if read > 0 {
                            // Only what is there already; taken only when it will be handled.
                            match rx.try_recv() {
                                Ok(polled) => next = Some(polled),
                                Err(_) => break,
                            }
                        }
                        match next.take() {
                            Some(Polled::Message(record)) => touched.extend(self.accept(record)),
                            Some(Polled::Assigned(assigned)) => self.assign(assigned),
                            Some(Polled::Revoked(revoked, ack)) => self.start_revoke(revoked, ack),
                            Some(Polled::Refused(why)) => refused = Some(why),
                            None => break,
                        }
                        if refused.is_some() {
                            break;
                        }
                    }
                    self.pump_touched(Touched { keys: touched, all: false });
                    if refused.is_some() || (rx.is_closed() && rx.is_empty()) {
                        break;
                    }
                },
                _ = commit_tick.tick() => self.commit_due(true),
                _ = tick.tick() => {
                    self.publish_gauges();
                    // The budget is the process's: other consumers' completions free it too.
                    if self.partitions.values().any(|p| p.paused == Some(PauseReason::Capacity)) {
                        self.pump_all();
                    }
                }
            }
            self.check_revoke();
            self.commit_due(false);
        }
        self.drain().await;
        refused.map_or(Ok(()), Err)
    }

    /// Applies a handler's report; `touched` collects what must be pumped after.
    fn complete(&mut self, done: Completion<H::Record>, touched: &mut Touched) {
        self.budget.give_back(done.bytes);
        // The endpoint slot is freed whatever became of the partition meanwhile.
        let mut endpoint_was_full = false;
        if let Some(slot) = &done.endpoint {
            self.slow_in_flight -= usize::from(done.slow);
            // Records of some partition waited for this endpoint's slot.
            endpoint_was_full = self.crowded.remove(&slot.id()).is_some();
            if let Some(n) = self.endpoint_in_flight.get_mut(&slot.id()) {
                *n -= 1;
                if *n == 0 {
                    self.endpoint_in_flight.remove(&slot.id());
                }
            }
        }
        let Some(partition) = self.partitions.get_mut(&done.key) else { return };
        if partition.generation != done.generation {
            return; // from an earlier assignment of this partition
        }
        let was_full = self.in_flight >= self.spec.max_in_flight;
        partition.in_flight -= 1;
        if let Some(slot) = &done.endpoint {
            // A record held back by the endpoint's share of this partition is pumped below.
            partition.count(slot, done.slow, false);
        }
        self.in_flight -= 1;
        if let Some(key) = done.order {
            // The next record of its key may go (or this one again, once due).
            partition.keys_in_flight.remove(&key);
        }
        match done.done {
            Done::Decided => {
                partition.tracker.decide(done.offset);
                partition.dirty = true;
                self.commits.decisions += 1;
            }
            Done::Held => {
                partition.held += 1;
                self.held += 1;
            }
            Done::Abandoned => {}
            Done::Again { due_ms } => {
                // Back at its offset's place, undecided, so the commit waits at it and the
                // later records of its key wait behind it; a draining partition lets it go
                // (the next owner reads it again).
                if let (Some(record), Lifecycle::Consuming) = (done.again, partition.lifecycle) {
                    self.budget.take(done.bytes);
                    let ticket = Ticket { due_ms: Some(due_ms), endpoint: done.endpoint, order: done.order };
                    let (offset, bytes) = (done.offset, done.bytes);
                    partition.requeue(Waiting { offset, read_ms: now_ms(), bytes, ticket, record });
                }
            }
        }
        // Records of any partition may have waited for the freed slot.
        if was_full || endpoint_was_full {
            touched.all = true;
        } else {
            touched.keys.push(done.key);
        }
    }

    /// Pumps what the completions not pumped yet touched.
    fn pump_coalesced(&mut self) {
        let coalesced = std::mem::take(&mut self.coalesced);
        self.pump_touched(coalesced.touched);
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
        let role = self.spec.role.as_str();
        let paused = |reason| self.partitions.values().filter(|p| p.paused == Some(reason)).count();
        metrics::consumer_gauges(role, self.in_flight, PauseReason::ALL.map(|r| (r.as_str(), paused(r))));
        metrics::buffered_bytes(self.budget.used());
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
