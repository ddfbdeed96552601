//! Letting partitions go: a revoke drains the revoked partitions within `shutdown.grace` and then answers
//! the poll thread with what to commit, which it commits (a shutdown drains them all and commits:
//! `Loop::drain`). Work past the grace is cancelled, not forgotten.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::Consumer;
use rdkafka::TopicPartitionList;
use tokio::time::Instant;

use super::budget::Budget;
use super::handler::Handler;
use super::intake::Partitions;
use super::partition::{Partition, PartitionKey};
use super::Loop;

/// How a revoke ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokeEnd {
    /// Every revoked partition is idle.
    Drained,
    /// The grace period is over: what still runs is cancelled.
    GraceOver,
}

/// A revoke the poll thread is waiting on.
pub struct PendingRevoke {
    partitions: Vec<PartitionKey>,
    ack: std::sync::mpsc::Sender<Option<TopicPartitionList>>,
    pub deadline: Instant,
}

impl PendingRevoke {
    /// Stops the revoked partitions (no new work); returns the revoke and the
    /// ones that were paused, to resume (a paused partition's next owner must fetch).
    pub fn start<R>(
        partitions: &mut Partitions<R>,
        budget: &Budget,
        revoked: Vec<(String, i32)>,
        ack: std::sync::mpsc::Sender<Option<TopicPartitionList>>,
        grace: Duration,
    ) -> (PendingRevoke, TopicPartitionList) {
        let mut keys = Vec::new();
        let mut paused = TopicPartitionList::new();
        for (topic, partition) in revoked {
            let key = (Arc::<str>::from(topic), partition);
            if let Some(p) = partitions.get_mut(&key) {
                // Waiting records and due timers go with the partition: the next
                // owner reads them again from the committed offset.
                budget.give_back(p.stop());
                if p.paused.take().is_some() {
                    paused.add_partition(&key.0, key.1);
                }
            }
            keys.push(key);
        }
        (PendingRevoke { partitions: keys, ack, deadline: Instant::now() + grace }, paused)
    }

    /// The revoked partitions.
    pub fn keys(&self) -> &[PartitionKey] {
        &self.partitions
    }

    /// Whether every revoked partition is idle (or gone).
    pub fn is_drained<R>(&self, partitions: &Partitions<R>) -> bool {
        self.partitions.iter().all(|k| partitions.get(k).is_none_or(Partition::is_idle))
    }

    /// Lets go of the revoked partitions: the callback commits `list` (what is decided
    /// of them) once acknowledged. Returns the records that were still in flight
    /// (cancelled, past the grace).
    pub fn finish<R>(self, partitions: &mut Partitions<R>, end: RevokeEnd, list: TopicPartitionList) -> usize {
        let mut cancelled = 0;
        for key in &self.partitions {
            if let Some(p) = partitions.remove(key) {
                // Whatever still runs for it stops now: the next owner works on these records.
                p.cancel.cancel();
                if end == RevokeEnd::GraceOver && !p.is_idle() {
                    tracing::warn!(
                        topic = &*key.0,
                        partition = key.1,
                        in_flight = p.in_flight,
                        held = p.held,
                        "revoke grace over; cancelled its in-flight records, the new owner reads them again"
                    );
                    cancelled += p.in_flight;
                }
                // Later decisions on its held records find no partition and are ignored.
                partitions.held -= p.held;
            }
        }
        self.acknowledge(Some(list));
        cancelled
    }

    /// Answers the poll thread, which then commits `list` (`None`: nothing, the loop committed).
    pub fn acknowledge(self, list: Option<TopicPartitionList>) {
        let _ = self.ack.send(list);
    }
}

/// The loop's side of a revoke.
impl<H: Handler> Loop<H> {
    pub(super) fn start_revoke(
        &mut self,
        revoked: Vec<(String, i32)>,
        ack: std::sync::mpsc::Sender<Option<TopicPartitionList>>,
    ) {
        // Records held on the revoked partitions are decided before they go, not re-handled by the next owner.
        self.handler.flush();
        let (revoke, paused) = PendingRevoke::start(&mut self.partitions, &self.budget, revoked, ack, self.spec.grace);
        if paused.count() > 0 {
            if let Err(error) = self.consumer.resume(&paused) {
                tracing::debug!(%error, "resume of revoked partitions failed");
            }
        }
        self.revoke = Some(revoke);
    }

    pub(super) fn check_revoke(&mut self) {
        if self.revoke.as_ref().is_some_and(|r| r.is_drained(&self.partitions)) {
            self.finish_revoke(RevokeEnd::Drained);
        }
    }

    pub(super) fn finish_revoke(&mut self, end: RevokeEnd) {
        let Some(revoke) = self.revoke.take() else { return };
        let list = self.offsets.commit_list_of(&mut self.partitions, revoke.keys());
        self.in_flight.records -= revoke.finish(&mut self.partitions, end, list);
    }
}
