//! [`Partitions`]: the loop's partitions, keyed by [`PartitionKey`], and their
//! intake: a fresh partition per assignment, each record prepared once and put
//! into its partition's backlog, unless the last owner's commit said it is decided.

use std::collections::HashMap;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use rdkafka::message::{Message, OwnedMessage};
use rdkafka::TopicPartitionList;
use tokio_util::sync::CancellationToken;

use super::budget::{record_bytes, Budget};
use super::handler::Handler;
use super::offset_map::OffsetMap;
use super::partition::{Lifecycle, Partition, PartitionKey, PauseReason, Waiting};
use crate::app::clock::now_ms;
use crate::observe::metrics;

/// The partitions of one consumer; derefs to the map.
pub struct Partitions<R> {
    map: HashMap<PartitionKey, Partition<R>>,
    /// Counts assignments, so a completion of an earlier one is told apart.
    generation: u64,
    /// Cancels handlers (abandon) once the grace period is over; each partition's token is a child.
    pub abandon: CancellationToken,
    /// Later records of all partitions (the sum of [`Partition::held`]).
    pub held: i64,
    /// Decisions since the last commit (see `OffsetStore::commit_due`).
    pub decided: usize,
}

impl<R> Partitions<R> {
    pub fn new() -> Partitions<R> {
        Partitions { map: HashMap::new(), generation: 0, abandon: CancellationToken::new(), held: 0, decided: 0 }
    }

    /// Starts a fresh partition per assigned one, each with the map of decided offsets its
    /// last commit carried (to skip); returns them all, to resume, and the records still
    /// in flight of the entries they replaced (a partition assigned again after a revoke
    /// whose ack timed out): their completions belong to an earlier generation and are
    /// ignored, so the caller gives their slots back now.
    pub fn assign(&mut self, assigned: Vec<(String, i32, Option<OffsetMap>)>) -> (TopicPartitionList, usize) {
        let mut tpl = TopicPartitionList::new();
        let mut replaced_in_flight = 0;
        for (topic, partition, skip) in assigned {
            tpl.add_partition(&topic, partition);
            self.generation += 1;
            let mut fresh = Partition::new(self.generation, self.abandon.child_token());
            fresh.skip = skip;
            if let Some(old) = self.map.insert((Arc::<str>::from(topic), partition), fresh) {
                old.cancel.cancel();
                self.held -= old.held;
                replaced_in_flight += old.in_flight;
            }
        }
        (tpl, replaced_in_flight)
    }

    /// Takes a record into its partition's backlog; returns the partition to schedule.
    pub fn accept<H>(&mut self, record: OwnedMessage, budget: &Budget, handler: &H) -> Option<PartitionKey>
    where
        H: Handler<Record = R>,
    {
        let key = (Arc::<str>::from(record.topic()), record.partition());
        let generation = &mut self.generation;
        let abandon = &self.abandon;
        // A record can only come from an assigned partition; be robust anyway.
        let partition = self.map.entry(key.clone()).or_insert_with(|| {
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
                partition.decide(offset);
                self.decided += 1;
                metrics::offsets_skipped(&key.0);
                return None;
            }
            if offset >= skip.end() {
                partition.skip = None;
            }
        }
        let bytes = record_bytes(&record);
        let (ticket, record) = handler.prepare(record);
        let bytes = bytes + handler.held_bytes(&record);
        budget.take(bytes);
        tracing::trace!(topic = &*key.0, partition = key.1, offset, due_ms = ticket.due_ms, "record read");
        // Pending from the moment it is read: a record waiting in the backlog
        // holds the commit position just like one in flight.
        partition.tracker.begin(offset);
        let now = now_ms();
        partition.arrive(Waiting { offset, read_ms: now, bytes, ticket, record: Arc::new(record) }, now);
        Some(key)
    }

    /// The earliest time a consuming partition needs the loop's attention (ms).
    pub fn next_wake_ms(&self) -> Option<i64> {
        self.map.values().filter(|p| p.lifecycle == Lifecycle::Consuming).filter_map(|p| p.wake_ms).min()
    }

    /// Whether an open partition other than `key` has room in its read-ahead.
    pub fn starved_besides(&self, key: &PartitionKey, read_ahead: usize) -> bool {
        self.map.iter().any(|(k, p)| {
            k != key && p.lifecycle == Lifecycle::Consuming && p.paused.is_none() && !p.over_read_ahead(read_ahead)
        })
    }

    /// Whether to read more records: not while every partition that could take
    /// them has a full read-ahead. librdkafka then keeps what it fetched (a
    /// pause would drop it); a partition that stays full is paused, and reading goes on.
    pub fn reading(&self, read_ahead: usize) -> bool {
        let mut open = self.map.values().filter(|p| p.lifecycle == Lifecycle::Consuming && p.paused.is_none());
        let mut any = false;
        let all_full = open.all(|p| {
            any = true;
            p.over_read_ahead(read_ahead)
        });
        !(any && all_full)
    }

    /// Partitions with a backlog or a pause: what a pump of all looks at.
    pub fn with_work(&self) -> Vec<PartitionKey> {
        self.map.iter().filter(|(_, p)| p.waiting() > 0 || p.paused.is_some()).map(|(k, _)| k.clone()).collect()
    }

    /// How many partitions are paused for `reason`.
    pub fn paused(&self, reason: PauseReason) -> usize {
        self.map.values().filter(|p| p.paused == Some(reason)).count()
    }
}

impl<R> Deref for Partitions<R> {
    type Target = HashMap<PartitionKey, Partition<R>>;
    fn deref(&self) -> &Self::Target {
        &self.map
    }
}

impl<R> DerefMut for Partitions<R> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.map
    }
}

#[cfg(test)]
mod tests {
    use futures::future::BoxFuture;
    use tokio_util::sync::CancellationToken;

    use super::super::{Decider, Done, Ticket, Work};
    use super::*;

    #[test]
    fn assigning_a_partition_again_gives_back_the_replaced_entrys_in_flight() {
        let mut partitions = Partitions::<()>::new();
        let (_, replaced) = partitions.assign(vec![("t".into(), 0, None), ("t".into(), 1, None)]);
        assert_eq!(replaced, 0);
        partitions.get_mut(&(Arc::from("t"), 0)).unwrap().in_flight = 3;
        // Revoked, its ack timed out, assigned again: the 3 completions will be from an earlier generation.
        let (_, replaced) = partitions.assign(vec![("t".into(), 0, None)]);
        assert_eq!(replaced, 3, "before: the slots were lost for good");
        assert_eq!(partitions[&(Arc::from("t"), 0)].in_flight, 0);
    }

    /// A handler whose records hold 4,000 bytes besides what was read (a fan-out's legs).
    struct Holding;

    impl Handler for Holding {
        type Record = ();

        fn prepare(&self, _: OwnedMessage) -> (Ticket, ()) {
            (Ticket::default(), ())
        }

        fn held_bytes(&self, _: &()) -> usize {
            4_000
        }

        fn handle(self: Arc<Self>, _: Arc<()>, _: Work, _: CancellationToken, _: Decider) -> BoxFuture<'static, Done> {
            unreachable!("not used by this test")
        }

        fn recover(self: Arc<Self>, _: Arc<()>, _: String, _: CancellationToken) -> BoxFuture<'static, Done> {
            unreachable!("not used by this test")
        }
    }

    #[test]
    fn what_a_record_will_hold_counts_in_the_budget_with_it() {
        let mut partitions = Partitions::<()>::new();
        partitions.assign(vec![("t".into(), 0, None)]);
        let budget = Budget::new(1 << 20);
        let record =
            OwnedMessage::new(Some(vec![b'x'; 100]), None, "t".into(), rdkafka::Timestamp::NotAvailable, 0, 0, None);
        let read = record_bytes(&record);
        partitions.accept(record, &budget, &Holding);
        assert_eq!(budget.used(), read + 4_000);
        assert_eq!(partitions[&(Arc::from("t"), 0)].backlog[0].bytes, read + 4_000, "given back with it");
    }
}
