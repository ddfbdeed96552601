//! Assignments and records from the poll thread into partition state: a fresh partition per assignment,
//! each record prepared once and put into its partition's backlog, unless the last owner's commit said it is decided.

use std::sync::Arc;

use rdkafka::consumer::Consumer;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::TopicPartitionList;

use super::budget::RECORD_OVERHEAD;
use super::handler::Handler;
use super::offset_map::OffsetMap;
use super::partition::{Lifecycle, Partition, Waiting};
use super::Loop;
use crate::app::clock::now_ms;
use crate::observe::metrics;

impl<H: Handler> Loop<H> {
    pub(super) fn assign(&mut self, assigned: Vec<(String, i32, Option<OffsetMap>)>) {
        let mut tpl = TopicPartitionList::new();
        for (topic, partition, skip) in assigned {
            tpl.add_partition(&topic, partition);
            self.generation += 1;
            let mut fresh = Partition::new(self.generation, self.abandon.child_token());
            fresh.skip = skip;
            if let Some(old) = self.partitions.insert((Arc::<str>::from(topic), partition), fresh) {
                old.cancel.cancel();
                self.held -= old.held;
            }
        }
        // A new assignment starts unpaused, whatever librdkafka remembers of an earlier one.
        if let Err(error) = self.consumer.resume(&tpl) {
            tracing::debug!(%error, "resume of assigned partitions failed");
        }
    }

    /// Takes a record into its partition's backlog; returns the partition to schedule.
    pub(super) fn accept(&mut self, record: OwnedMessage) -> Option<(Arc<str>, i32)> {
        let key = (Arc::<str>::from(record.topic()), record.partition());
        let generation = &mut self.generation;
        let abandon = &self.abandon;
        // A record can only come from an assigned partition; be robust anyway.
        let partition = self.partitions.entry(key.clone()).or_insert_with(|| {
            *generation += 1;
            Partition::new(*generation, abandon.child_token())
        });
        if partition.lifecycle != Lifecycle::Consuming {
            return None; // not ours any more: the next owner reads it again
        }
        let offset = record.offset();
        if let Some(skip) = &partition.skip {
            if skip.contains(offset) {
                // Decided by the last owner (its commit's map): decided here too, not delivered again.
                partition.tracker.begin(offset);
                partition.tracker.decide(offset);
                partition.dirty = true;
                self.commits.decisions += 1;
                metrics::offsets_skipped(&key.0);
                return None;
            }
            if offset >= skip.end() {
                partition.skip = None;
            }
        }
        let bytes = record.payload().map_or(0, <[u8]>::len) + record.key().map_or(0, <[u8]>::len) + RECORD_OVERHEAD;
        self.budget.take(bytes);
        let (ticket, record) = self.handler.prepare(record);
        tracing::trace!(topic = &*key.0, partition = key.1, offset, due_ms = ticket.due_ms, "record read");
        // Pending from the moment it is read: a record waiting in the backlog
        // holds the commit position just like one in flight.
        partition.tracker.begin(offset);
        partition.push(Waiting { offset, read_ms: now_ms(), bytes, ticket, record: Arc::new(record) });
        Some(key)
    }
}
