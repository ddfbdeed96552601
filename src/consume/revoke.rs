//! Letting partitions go: a revoke drains the revoked partitions within `shutdown.grace` and then answers
//! the poll thread with what to commit; a shutdown drains them all and commits. Work past the grace is cancelled, not forgotten.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::Consumer;
use rdkafka::TopicPartitionList;
use tokio::time::Instant;

use super::handler::Handler;
use super::partition::Partition;
use super::{Loop, Touched};

/// A revoke the poll thread is waiting on.
pub(super) struct PendingRevoke {
    partitions: Vec<(Arc<str>, i32)>,
    ack: std::sync::mpsc::Sender<Option<TopicPartitionList>>,
    pub(super) deadline: Instant,
}

impl<H: Handler> Loop<H> {
    /// Stop fetching, give in-flight work the grace period, abandon the rest, store what is decided.
    pub(super) async fn drain(&mut self) {
        tracing::info!(role = self.spec.role.as_str(), in_flight = self.in_flight, "draining");
        if let Ok(assignment) = self.consumer.assignment() {
            let _ = self.consumer.pause(&assignment);
        }
        for partition in self.partitions.values_mut() {
            // No new work and no resume from here on; waiting records are read again after a restart.
            self.budget.give_back(partition.stop());
            partition.paused = None;
        }
        // Held records are decided by the handler: ask it to do so now, not at its own pace.
        self.handler.flush();
        let deadline = Instant::now() + self.spec.grace;
        while self.in_flight > 0 || self.held > 0 {
            tokio::select! {
                // Draining partitions take no new work: nothing to pump after.
                Some(done) = self.done_rx.recv() => self.complete(done, &mut Touched::default()),
                Some(decision) = self.decide_rx.recv() => self.apply(decision),
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        if self.held > 0 {
            tracing::warn!(
                role = self.spec.role.as_str(),
                held = self.held,
                "grace period over, held records stay undecided"
            );
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
                self.complete(done, &mut Touched::default());
            }
        }
        // Closing: what is decided is committed now, with its map (a revoke waiting on this too).
        self.commit_all();
        if let Some(revoke) = self.revoke.take() {
            let _ = revoke.ack.send(None);
        }
        self.publish_gauges();
    }

    pub(super) fn start_revoke(
        &mut self,
        revoked: Vec<(String, i32)>,
        ack: std::sync::mpsc::Sender<Option<TopicPartitionList>>,
    ) {
        let mut keys = Vec::new();
        let mut paused = TopicPartitionList::new();
        // Records held on the revoked partitions are decided before they go, not re-handled by the next owner.
        self.handler.flush();
        for (topic, partition) in revoked {
            let key = (Arc::<str>::from(topic), partition);
            if let Some(p) = self.partitions.get_mut(&key) {
                // Waiting records and due timers go with the partition: the next
                // owner reads them again from the committed offset.
                self.budget.give_back(p.stop());
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

    pub(super) fn check_revoke(&mut self) {
        let drained = self
            .revoke
            .as_ref()
            .is_some_and(|r| r.partitions.iter().all(|k| self.partitions.get(k).is_none_or(Partition::is_idle)));
        if drained {
            self.finish_revoke(false);
        }
    }

    /// Lets go of the revoked partitions: the callback commits what is decided of them
    /// (the list sent with the acknowledgement).
    pub(super) fn finish_revoke(&mut self, timed_out: bool) {
        let Some(revoke) = self.revoke.take() else { return };
        let list = self.commit_list_of(&revoke.partitions);
        for key in &revoke.partitions {
            if let Some(p) = self.partitions.remove(key) {
                // Whatever still runs for it stops now: the next owner works on these records.
                p.cancel.cancel();
                if timed_out && !p.is_idle() {
                    tracing::warn!(
                        topic = &*key.0,
                        partition = key.1,
                        in_flight = p.in_flight,
                        held = p.held,
                        "revoke grace over; cancelled its in-flight records, the new owner reads them again"
                    );
                    self.in_flight -= p.in_flight;
                }
                // Later decisions on its held records find no partition and are ignored.
                self.held -= p.held;
            }
        }
        let _ = revoke.ack.send(Some(list));
    }
}
