//! Revoke: the loop lets go of partitions once their in-flight and held records are
//! decided, or the grace period is over; the poll thread waits for the acknowledgement.

use std::sync::Arc;

use rdkafka::consumer::Consumer;
use rdkafka::TopicPartitionList;
use tokio::time::Instant;

use super::partition::Partition;
use super::{Handler, Loop};

/// A revoke the poll thread is waiting on.
pub(super) struct PendingRevoke {
    pub partitions: Vec<(Arc<str>, i32)>,
    pub ack: std::sync::mpsc::Sender<()>,
    pub deadline: Instant,
}

impl<H: Handler> Loop<H> {
    pub(super) fn start_revoke(&mut self, revoked: Vec<(String, i32)>, ack: std::sync::mpsc::Sender<()>) {
        let mut keys = Vec::new();
        let mut paused = TopicPartitionList::new();
        // Records held on the revoked partitions are decided before they go, not re-handled by the next owner.
        self.handler.flush();
        for (topic, partition) in revoked {
            let key = (Arc::<str>::from(topic), partition);
            if let Some(p) = self.partitions.get_mut(&key) {
                // Waiting records and due timers go with the partition: the next
                // owner reads them again from the committed offset.
                p.stop();
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

    /// Lets go of the revoked partitions: their decided offsets are stored already,
    /// the callback commits them once acknowledged.
    pub(super) fn finish_revoke(&mut self, timed_out: bool) {
        let Some(revoke) = self.revoke.take() else { return };
        for key in &revoke.partitions {
            if let Some(p) = self.partitions.remove(key) {
                if timed_out && !p.is_idle() {
                    tracing::warn!(
                        topic = &*key.0,
                        partition = key.1,
                        in_flight = p.in_flight,
                        held = p.held,
                        "revoke grace over; records will be read again by the new owner"
                    );
                    self.in_flight -= p.in_flight;
                }
                // Later decisions on its held records find no partition and are ignored.
                self.held -= p.held;
            }
        }
        let _ = revoke.ack.send(());
    }
}
