//! Handing what [`schedule`] chose to handlers: the tasks, the endpoint and
//! partition counts, the pause state, and whether the loop reads more records.

use rdkafka::consumer::Consumer;
use rdkafka::TopicPartitionList;

use super::handler::{Done, Handler, Work};
use super::later::Decider;
use super::panics;
use super::partition::IdMap;
use super::partition::{PartitionKey, PauseReason, Waiting};
use super::schedule::{schedule, Limits, ENDPOINT_SHARE};
use super::ticket::EndpointSlot;
use super::{Completion, Loop, Touched};
use crate::app::clock::now_ms;

impl<H: Handler> Loop<H> {
    /// Hands the records `schedule` chose to handlers, then applies its pause state.
    pub(super) fn pump(&mut self, key: &PartitionKey) {
        let (limits, free) = self.limits(key);
        let Some(partition) = self.partitions.get_mut(key) else { return };
        let limits =
            Limits { memory_spent: self.budget.spent(partition.paused == Some(PauseReason::Capacity)), ..limits };
        let load = |slot: &EndpointSlot| self.in_flight.per_endpoint.get(&slot.id()).copied().unwrap_or(0);
        let now = now_ms();
        partition.unpark(now);
        let dispatch = schedule(partition, now, limits, free, load);
        let mut started = Vec::with_capacity(dispatch.take.len());
        let taken = dispatch.take.iter().zip(partition.take(&dispatch.take));
        for (index, mut waiting) in taken {
            partition.in_flight += 1;
            self.in_flight.records += 1;
            let work = dispatch.work(*index);
            // A deferral makes no request: it takes no slot of its endpoint.
            let endpoint = waiting.ticket.endpoint.take().filter(|_| work == Work::Attempt);
            let slow = endpoint.as_ref().is_some_and(|slot| slot.limit.is_slow());
            partition.keys_in_flight.extend(waiting.ticket.order.iter().copied());
            if let Some(slot) = &endpoint {
                *self.in_flight.per_endpoint.entry(slot.id()).or_default() += 1;
                self.in_flight.slow += usize::from(slow);
                partition.started(slot, slow);
                // Its token goes now: the next schedule sees the bucket without it.
                slot.pace.take(now);
            }
            started.push(Started { waiting, work, endpoint, slow, cancel: partition.cancel.child_token() });
        }
        if partition.paused.is_some() != dispatch.pause.is_some() {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition(&key.0, key.1);
            let applied = if dispatch.pause.is_some() { self.consumer.pause(&tpl) } else { self.consumer.resume(&tpl) };
            if let Err(error) = applied {
                tracing::warn!(topic = &*key.0, partition = key.1, %error, "pause/resume failed");
            }
        }
        for id in &dispatch.crowded {
            self.in_flight.crowded.insert(*id, ());
        }
        partition.paused = dispatch.pause;
        partition.key_waiting = dispatch.key_waiting;
        // A full partition is looked at again when it would count as clogged.
        let clogged_at = partition.note_full(self.spec.max_read_ahead, now_ms());
        partition.wake_ms = match (dispatch.wake_ms, clogged_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let generation = partition.generation;
        for start in started {
            self.spawn(key, generation, start);
        }
    }

    /// The scheduler's limits for `key` (all but the memory budget, which needs
    /// the partition), and how many records the whole consumer may start.
    fn limits(&self, key: &PartitionKey) -> (Limits, usize) {
        // At the bound on held records, nothing new starts until some are decided.
        let held_full = self.partitions.held >= self.spec.max_held as i64;
        let free = if held_full { 0 } else { self.spec.max_in_flight.saturating_sub(self.in_flight.records) };
        // Asked only of a partition that may be clogged (the loop's hot path).
        let clog_due = self.partitions.get(key).is_some_and(|p| p.paused.is_none() && p.full_since.is_some());
        let limits = Limits {
            in_flight_per_partition: self.spec.max_in_flight_per_partition,
            read_ahead: self.spec.max_read_ahead,
            waiting_per_endpoint: self.spec.max_waiting_per_endpoint,
            slow_room: (self.spec.max_in_flight / ENDPOINT_SHARE).saturating_sub(self.in_flight.slow),
            memory_spent: false,
            others_starved: clog_due && self.partitions.starved_besides(key, self.spec.max_read_ahead),
        };
        (limits, free)
    }

    /// Runs a started record's handler as a task, which reports back on the completion channel.
    fn spawn(&self, key: &PartitionKey, generation: u64, start: Started<H::Record>) {
        let Started { waiting, work, endpoint, slow, cancel } = start;
        let completion = Completion {
            key: key.clone(),
            endpoint,
            bytes: waiting.bytes,
            slow,
            generation,
            offset: waiting.offset,
            order: waiting.ticket.order.clone(),
            done: Done::Abandoned,
            again: None,
        };
        // The way to hold the record past its slot (the failure handler does).
        let decider =
            Decider { tx: self.reports.decide_tx.clone(), key: key.clone(), generation, offset: waiting.offset };
        let record = waiting.record;
        let work = panics::guarded(self.handler.clone(), self.spec.role, record.clone(), work, cancel, decider);
        let done_tx = self.reports.done_tx.clone();
        self.tasks.spawn(async move {
            let done = work.await;
            // Only a record to be worked on again goes back to the loop (dropped here otherwise).
            let again = matches!(done, Done::Again { .. }).then_some(record);
            let _ = done_tx.send(Completion { done, again, ..completion }).await;
        });
    }

    /// Whether to read more records (see [`Partitions::reading`](super::intake::Partitions::reading)).
    pub(super) fn reading(&self) -> bool {
        self.partitions.reading(self.spec.max_read_ahead)
    }

    /// Pumps the partitions records or completions touched, each once.
    pub(super) fn pump_touched(&mut self, mut touched: Touched) {
        if touched.all {
            return self.pump_all();
        }
        touched.keys.sort();
        touched.keys.dedup();
        for key in touched.keys {
            self.pump(&key);
        }
    }

    /// Pumps every partition with a backlog (a timer fired, or capacity came back).
    pub(super) fn pump_all(&mut self) {
        for key in self.partitions.with_work() {
            self.pump(&key);
        }
    }
}

/// What is in flight in the whole consumer.
#[derive(Default)]
pub(super) struct InFlight {
    /// Records handed to handlers and not yet back.
    pub(super) records: usize,
    /// Of those, per endpoint ([`EndpointSlot::id`]).
    pub(super) per_endpoint: IdMap<usize>,
    /// Of those, records of slow endpoints (see [`Limits::slow_room`]).
    pub(super) slow: usize,
    /// Endpoints some partition's records wait for ([`Dispatch::crowded`](super::schedule::Dispatch::crowded)).
    pub(super) crowded: IdMap<()>,
}

/// A record taken from the backlog, counted in, and about to go to its handler.
struct Started<R> {
    waiting: Waiting<R>,
    work: Work,
    endpoint: Option<EndpointSlot>,
    slow: bool,
    cancel: tokio_util::sync::CancellationToken,
}
