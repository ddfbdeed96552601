//! The consumer every role (events, tiers, dead) runs: an async loop that owns partition state, dispatches
//! records to a [`Handler`], stores decided offsets, and drains on revoke and shutdown.
//!
//! # Where things are
//! - here: the loop ([`run`]). Handlers run as tasks and report back on a
//!   second channel; held records' decisions come on a third.
//! - `client`: librdkafka callbacks and the poll thread, which sends messages
//!   and rebalance events in order down one channel to the loop.
//! - `error`: why a consumer stopped ([`ConsumeError`]).
//! - [`handler`]: the contract with the work on each record; [`later`]: records whose offset a
//!   handler decides after their slot is free; [`panics`]: the guard that turns a panic into a [`Done`].
//! - `intake`: `Partitions`, the partition map, and
//!   assignments and records from the poll thread into it.
//! - [`ticket`]: what the loop learns of a record when it reads it (due time, endpoint slot, order key).
//! - [`partition`]: one partition's state (backlog, counts, pause, lifecycle).
//! - [`schedule`]: the pure scheduler: which waiting records go now, and the pause state.
//! - `pump`: handing the scheduler's choice to handlers, pausing, and gating reads.
//! - [`order`]: per-key order (`ordering = "key"`).
//! - [`budget`]: the process's memory budget for records read and not yet done.
//! - [`offsets`]: the per-partition offset tracker (highest contiguous decided offset).
//! - `offset_store`: where decided offsets go: the relay commits each
//!   partition's first undecided offset, with the decided offsets above it in
//!   the commit's metadata ([`offset_map`]), so a new owner skips those;
//!   `commit`: the committing itself, and reading the maps back on assignment.
//! - `revoke`: letting revoked partitions go within the grace.
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
mod drain;
mod error;
pub mod handler;
mod intake;
pub mod later;
pub mod offset_map;
mod offset_store;
pub mod offsets;
pub mod order;
pub mod panics;
pub mod partition;
mod pump;
mod revoke;
pub mod schedule;
pub mod ticket;

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::Consumer;
use rdkafka::message::OwnedMessage;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::budget::Budget;
use self::client::{Client, KafkaConsumer, Polled};
pub use self::error::ConsumeError;
pub use self::handler::{Done, Handler, Role, Spec, Work};
use self::intake::Partitions;
use self::later::Decision;
pub use self::later::{Decider, Later};
use self::offset_store::OffsetStore;
pub use self::partition::IdMap;
pub use self::partition::PauseReason;
use self::partition::{count_down, Lifecycle, PartitionKey, Waiting};
use self::pump::InFlight;
use self::revoke::{PendingRevoke, RevokeEnd};
pub use self::ticket::{EndpointSlot, Ticket};
use crate::app::clock::now_ms;
use crate::config::client::Unavailable;
use crate::config::Config;
use crate::observe::metrics;
use crate::observe::readiness::Readiness;

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
    let offsets = OffsetStore::new(client.commit_state(), client.consumer(), config.kafka.commit_interval)?;
    let mut state = Loop::new(spec, client.consumer(), budget, handler, offsets);
    let result = state.run(rx, shutdown).await;
    let brokers = config.kafka.brokers.clone();
    drop(state);
    client.close().await;
    result.map_err(|why| ConsumeError::Refused(Unavailable { brokers, why }))
}

/// What a handler task reports back.
struct Completion<R> {
    key: PartitionKey,
    /// The endpoint slot the record held.
    endpoint: Option<EndpointSlot>,
    /// Its share of the memory budget.
    bytes: usize,
    /// Its endpoint was slow when it started (see `Partition::count`).
    slow: bool,
    generation: u64,
    offset: i64,
    /// Its order key, in flight until now (see [`order`]).
    order: order::Order,
    done: Done,
    /// The record, back for [`Done::Again`] only.
    again: Option<Arc<R>>,
}

/// What handlers report back to the loop: completions, and decisions on held records.
struct Reports<R> {
    done_tx: mpsc::Sender<Completion<R>>,
    done_rx: mpsc::Receiver<Completion<R>>,
    /// Unbounded because a [`Later`] decides from sync code.
    decide_tx: mpsc::UnboundedSender<Decision>,
    decide_rx: mpsc::UnboundedReceiver<Decision>,
}

/// Partitions to pump once a batch of records or completions is applied.
#[derive(Default)]
struct Touched {
    keys: Vec<PartitionKey>,
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
    partitions: Partitions<H::Record>,
    offsets: OffsetStore,
    in_flight: InFlight,
    tasks: TaskTracker,
    reports: Reports<H::Record>,
    revoke: Option<PendingRevoke>,
    coalesced: Coalesced,
}

impl<H: Handler> Loop<H> {
    fn new(
        spec: Spec,
        consumer: Arc<KafkaConsumer>,
        budget: Arc<Budget>,
        handler: Arc<H>,
        offsets: OffsetStore,
    ) -> Loop<H> {
        // At most max_in_flight tasks exist, each sends one completion: this never blocks.
        let (done_tx, done_rx) = mpsc::channel(spec.max_in_flight + 1);
        let (decide_tx, decide_rx) = mpsc::unbounded_channel();
        Loop {
            spec,
            offsets,
            consumer,
            handler,
            budget,
            partitions: Partitions::new(),
            in_flight: InFlight::default(),
            tasks: TaskTracker::new(),
            reports: Reports { done_tx, done_rx, decide_tx, decide_rx },
            revoke: None,
            coalesced: Coalesced::default(),
        }
    }

    /// Until shutdown; `Err` carries librdkafka's reason when the brokers refused the client.
    async fn run(&mut self, mut rx: mpsc::Receiver<Polled>, shutdown: CancellationToken) -> Result<(), String> {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut commit_tick = tokio::time::interval(self.offsets.interval());
        commit_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut refused = None;
        loop {
            let next_due = self.next_due();
            let revoke_deadline = self.revoke.as_ref().map(|r| r.deadline);
            tokio::select! {
                // Finished work first: it frees capacity and moves offsets.
                biased;
                Some(done) = self.reports.done_rx.recv() => {
                    // Completions that arrived together are applied together and each
                    // partition they touched is scheduled once: under load one pump per
                    // completion (each a scan of the backlog) was the loop's largest cost.
                    let mut next = Some(done);
                    let mut touched = std::mem::take(&mut self.coalesced.touched);
                    for _ in 0..READ_BATCH {
                        let Some(done) = next.take().or_else(|| self.reports.done_rx.try_recv().ok()) else { break };
                        self.complete(done, &mut touched);
                        self.coalesced.freed += 1;
                    }
                    self.coalesced.touched = touched;
                    if self.coalesced.freed >= (self.in_flight.records / COALESCE).max(1) {
                        self.pump_coalesced();
                    } else if self.coalesced.until.is_none() {
                        self.coalesced.until = Some(Instant::now() + Duration::from_millis(COALESCE_MS));
                    }
                }
                _ = sleep_until_opt(self.coalesced.until) => self.pump_coalesced(),
                Some(decision) = self.reports.decide_rx.recv() => self.apply(decision),
                _ = sleep_until_opt(revoke_deadline) => self.finish_revoke(RevokeEnd::GraceOver),
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
                _ = commit_tick.tick() => self.offsets.commit_due(&mut self.partitions, true),
                _ = tick.tick() => {
                    self.publish_gauges();
                    // The budget is the process's: other consumers' completions free it too.
                    if self.partitions.paused(PauseReason::Capacity) > 0 {
                        self.pump_all();
                    }
                }
            }
            self.check_revoke();
            self.offsets.commit_due(&mut self.partitions, false);
        }
        self.drain(refused.is_some()).await;
        refused.map_or(Ok(()), Err)
    }

    /// Applies a handler's report; `touched` collects what must be pumped after.
    fn complete(&mut self, done: Completion<H::Record>, touched: &mut Touched) {
        self.budget.give_back(done.bytes);
        // The endpoint slot is freed whatever became of the partition meanwhile.
        let mut endpoint_was_full = false;
        if let Some(slot) = &done.endpoint {
            self.in_flight.slow -= usize::from(done.slow);
            // Records of some partition waited for this endpoint's slot.
            endpoint_was_full = self.in_flight.crowded.remove(&slot.id()).is_some();
            count_down(&mut self.in_flight.per_endpoint, slot.id());
        }
        let Some(partition) = self.partitions.get_mut(&done.key) else { return };
        if partition.generation != done.generation {
            return; // from an earlier assignment of this partition
        }
        let was_full = self.in_flight.records >= self.spec.max_in_flight;
        partition.in_flight -= 1;
        if let Some(slot) = &done.endpoint {
            // A record held back by the endpoint's share of this partition is pumped below.
            partition.finished(slot, done.slow);
        }
        self.in_flight.records -= 1;
        for key in &done.order {
            // The next record of its key may go (or this one again, once due).
            partition.keys_in_flight.remove(key);
        }
        match done.done {
            Done::Decided => partition.decide(done.offset),
            Done::Later => partition.held += 1,
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
        match done.done {
            Done::Later => self.partitions.held += 1,
            Done::Decided => self.partitions.decided += 1,
            _ => {}
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
        let wake = self.partitions.next_wake_ms()?;
        let wait = (wake - now_ms()).max(0) as u64;
        Some(Instant::now() + Duration::from_millis(wait))
    }

    /// A fresh partition per assigned one, each starting unpaused.
    fn assign(&mut self, assigned: Vec<(String, i32, Option<offset_map::OffsetMap>)>) {
        let (tpl, replaced_in_flight) = self.partitions.assign(assigned);
        // Their completions are from an earlier generation: the slots are freed here.
        self.in_flight.records -= replaced_in_flight;
        // A new assignment starts unpaused, whatever librdkafka remembers of an earlier one.
        if let Err(error) = self.consumer.resume(&tpl) {
            tracing::debug!(%error, "resume of assigned partitions failed");
        }
    }

    /// Takes a record into its partition's backlog; returns the partition to schedule.
    fn accept(&mut self, record: OwnedMessage) -> Option<PartitionKey> {
        self.partitions.accept(record, &self.budget, &*self.handler)
    }

    /// A held record was decided (or let go): count it out, and decide its offset.
    fn apply(&mut self, decision: Decision) {
        let Some(partition) = self.partitions.get_mut(&decision.key) else { return };
        if partition.generation != decision.generation {
            return;
        }
        partition.held -= 1;
        if decision.decided {
            partition.decide(decision.offset);
            self.partitions.decided += 1;
        }
        let was_full = self.partitions.held >= self.spec.max_held as i64;
        self.partitions.held -= 1;
        if was_full {
            self.pump_all();
        }
    }

    fn publish_gauges(&self) {
        let role = self.spec.role.as_str();
        let paused = PauseReason::ALL.map(|r| (r.as_str(), self.partitions.paused(r)));
        metrics::consumer_gauges(role, self.in_flight.records, paused);
        metrics::buffered_bytes(self.budget.used());
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
