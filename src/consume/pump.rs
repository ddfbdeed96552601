//! Handing what [`schedule`] chose to handlers: the tasks, the endpoint and
//! partition counts, the pause state, and whether the loop reads more records.

use std::sync::Arc;

use rdkafka::consumer::Consumer;
use rdkafka::TopicPartitionList;

use super::handler::{self, Decider, Done, EndpointSlot, Handler, Work};
use super::partition::{Lifecycle, PauseReason};
use super::schedule::{schedule, Limits, ENDPOINT_SHARE};
use super::{Completion, Loop, Touched};
use crate::app::clock::now_ms;

impl<H: Handler> Loop<H> {
    /// Hands the records `schedule` chose to handlers, then applies its pause state.
    pub(super) fn pump(&mut self, key: &(Arc<str>, i32)) {
        let limits = Limits {
            in_flight_per_partition: self.spec.max_in_flight_per_partition,
            read_ahead: self.spec.max_read_ahead,
            waiting_per_endpoint: self.spec.max_waiting_per_endpoint,
            slow_room: (self.spec.max_in_flight / ENDPOINT_SHARE).saturating_sub(self.slow_in_flight),
            memory_spent: false,
            others_starved: true,
        };
        // At the bound on held records, nothing new starts until some are decided.
        let held_full = self.held >= self.spec.max_held as i64;
        let free = if held_full { 0 } else { self.spec.max_in_flight.saturating_sub(self.in_flight) };
        // Asked only of a partition that may be clogged (the loop's hot path).
        let clog_due = self.partitions.get(key).is_some_and(|p| p.paused.is_none() && p.full_since.is_some());
        let others_starved = clog_due && self.starved_besides(key);
        let Some(partition) = self.partitions.get_mut(key) else { return };
        let limits = Limits {
            memory_spent: self.budget.spent(partition.paused == Some(PauseReason::Capacity)),
            others_starved,
            ..limits
        };
        let load = |slot: &EndpointSlot| self.endpoint_in_flight.get(&slot.id()).copied().unwrap_or(0);
        let now = now_ms();
        let dispatch = schedule(partition, now, limits, free, load);
        let taken = dispatch.take.iter().zip(partition.take(&dispatch.take));
        for (index, waiting) in taken {
            partition.in_flight += 1;
            self.in_flight += 1;
            let work = dispatch.work(*index);
            // A deferral makes no request: it takes no slot of its endpoint.
            let endpoint = waiting.ticket.endpoint.filter(|_| work == Work::Attempt);
            let slow = endpoint.as_ref().is_some_and(|slot| slot.limit.is_slow());
            if let Some(key) = waiting.ticket.order {
                partition.keys_in_flight.insert(key);
            }
            if let Some(slot) = &endpoint {
                *self.endpoint_in_flight.entry(slot.id()).or_default() += 1;
                self.slow_in_flight += usize::from(slow);
                partition.count(slot, slow, true);
                // Its token goes now: the next schedule sees the bucket without it.
                slot.pace.take(now);
            }
            let completion = Completion {
                key: key.clone(),
                endpoint,
                bytes: waiting.bytes,
                slow,
                generation: partition.generation,
                offset: waiting.offset,
                order: waiting.ticket.order,
                done: Done::Abandoned,
                again: None,
            };
            let cancel = partition.cancel.child_token();
            // The way to hold the record past its slot (the failure handler does).
            let decider = Decider {
                tx: self.decide_tx.clone(),
                key: key.clone(),
                generation: partition.generation,
                offset: waiting.offset,
            };
            let record = waiting.record;
            let work = handler::guarded(self.handler.clone(), self.spec.role, record.clone(), work, cancel, decider);
            let done_tx = self.done_tx.clone();
            self.tasks.spawn(async move {
                let done = work.await;
                // Only a record to be worked on again goes back to the loop (dropped here otherwise).
                let again = matches!(done, Done::Again { .. }).then_some(record);
                let _ = done_tx.send(Completion { done, again, ..completion }).await;
            });
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
            self.crowded.insert(*id, ());
        }
        partition.paused = dispatch.pause;
        partition.key_waiting = dispatch.key_waiting;
        // A full partition is looked at again when it would count as clogged.
        let clogged_at = partition.note_full(self.spec.max_read_ahead, now_ms());
        partition.wake_ms = match (dispatch.wake_ms, clogged_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }

    /// Whether an open partition other than `key` has room in its read-ahead.
    fn starved_besides(&self, key: &(Arc<str>, i32)) -> bool {
        let read_ahead = self.spec.max_read_ahead;
        self.partitions.iter().any(|(k, p)| {
            k != key && p.lifecycle == Lifecycle::Consuming && p.paused.is_none() && !p.over_read_ahead(read_ahead)
        })
    }

    /// Whether to read more records: not while every partition that could take
    /// them has a full read-ahead. librdkafka then keeps what it fetched (a
    /// pause would drop it); a partition that stays full is paused, and reading goes on.
    pub(super) fn reading(&self) -> bool {
        let read_ahead = self.spec.max_read_ahead;
        let mut open = self.partitions.values().filter(|p| p.lifecycle == Lifecycle::Consuming && p.paused.is_none());
        let mut any = false;
        let all_full = open.all(|p| {
            any = true;
            p.over_read_ahead(read_ahead)
        });
        !(any && all_full)
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
}
