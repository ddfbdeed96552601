//! The offset store: what is decided of each partition is committed by the
//! relay itself, each partition's first undecided offset with the decided
//! offsets above it ([`OffsetMap`]) as the commit's metadata (see `commit`).
//!
//! Decisions come from each partition's offset tracker, which takes them in
//! any order: at once for a record its handler decided, later for one the
//! handler held past its slot (a [`Later`](super::Later) decides it; the loop
//! counts held records per partition, since a drain or revoke waits for them).
//! A decision for an assignment that is gone (its generation differs) is
//! ignored: the next owner reads the record again.
//!
//! A commit is due once [`COMMIT_AFTER`] decisions gathered (at least
//! [`MIN_SPACING`] apart) or every `kafka.commit_interval`, at most one in
//! flight per consumer: a committing thread of the consumer's own commits each
//! list synchronously, so the loop never waits on a round trip. A revoke hands
//! its list to the poll thread, which commits it; a close commits at the end of
//! the drain. Both wait for the committing thread first, so an older list cannot
//! land after theirs.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::{Offset, TopicPartitionList};
use tokio::time::Instant;

use super::client::KafkaConsumer;
use super::commit::{commit_sync, CommitState, COMMIT_AFTER, IN_FLIGHT_EXPIRY, MIN_SPACING};
use super::intake::Partitions;
use super::offset_map::{OffsetMap, MAX_METADATA};
use super::partition::{Partition, PartitionKey};
use crate::observe::metrics;

/// How long a close waits for its commit: a synchronous commit waits for the
/// group coordinator without end (brokers gone, or the login refused), and a
/// shutdown must not (CI: a relay whose user was deleted hung 90 s in it).
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// A list for the committing thread; a close waits for its result.
pub struct Job {
    tpl: TopicPartitionList,
    reply: Option<tokio::sync::oneshot::Sender<bool>>,
}

/// Where decided offsets go: the loop's side of committing.
pub struct OffsetStore {
    state: Arc<CommitState>,
    /// To the committing thread; one list at a time (see `busy`).
    tx: std::sync::mpsc::Sender<Job>,
    interval: Duration,
    sent_at: Instant,
    /// The longest map written; halved at each refusal by the broker.
    cap: usize,
}

impl OffsetStore {
    /// Starts the committing thread; it ends once the store is gone.
    pub fn new(
        state: Arc<CommitState>,
        consumer: Arc<KafkaConsumer>,
        interval: Duration,
    ) -> std::io::Result<OffsetStore> {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let done = state.clone();
        let committer = consumer.clone();
        std::thread::Builder::new().name("commit".into()).spawn(move || {
            for Job { tpl, reply } in rx {
                let committed = commit_sync(&committer, &tpl);
                if !committed {
                    done.failed(&tpl);
                }
                done.in_flight.store(false, Ordering::SeqCst);
                if let Some(reply) = reply {
                    let _ = reply.send(committed);
                }
            }
        })?;
        Ok(OffsetStore { state, tx, interval, sent_at: Instant::now(), cap: MAX_METADATA })
    }

    /// How often a commit is due whatever the number of decisions.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Commits the partitions decided on since their last commit (or whose last commit
    /// failed), on the committing thread, when enough decisions gathered or `tick` (the
    /// interval) says so, unless a commit is in flight.
    pub fn commit_due<R>(&mut self, partitions: &mut Partitions<R>, tick: bool) {
        if tick {
            // A commit that failed (mid-rebalance, say) goes again: no new decision may come to carry it.
            for (topic, partition) in self.state.take_failed() {
                if let Some(p) = partitions.get_mut(&(Arc::<str>::from(topic), partition)) {
                    p.dirty = true;
                }
            }
        }
        let enough = partitions.decided >= COMMIT_AFTER && self.sent_at.elapsed() >= MIN_SPACING;
        if !(tick || enough) || self.busy() {
            return;
        }
        let refused = self.take_refused();
        let tpl = self.commit_list(partitions, |_, p| p.dirty, &refused);
        if tpl.count() == 0 {
            return;
        }
        partitions.decided = 0;
        self.sent_at = Instant::now();
        self.state.in_flight.store(true, Ordering::SeqCst);
        if self.tx.send(Job { tpl, reply: None }).is_err() {
            self.state.in_flight.store(false, Ordering::SeqCst);
        }
    }

    /// The commit list of `keys` (for a revoke: the poll thread commits it).
    pub fn commit_list_of<R>(&mut self, partitions: &mut Partitions<R>, keys: &[PartitionKey]) -> TopicPartitionList {
        self.wait_idle();
        let refused = self.take_refused();
        self.commit_list(partitions, |key, _| keys.contains(key), &refused)
    }

    /// Commits every partition now (at the end of a drain), waiting for it at most
    /// [`CLOSE_WAIT`] a try: what is not committed then is read again after a restart.
    pub async fn commit_all<R>(&mut self, partitions: &mut Partitions<R>) {
        let until = Instant::now() + IN_FLIGHT_EXPIRY;
        while self.state.in_flight.load(Ordering::SeqCst) && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let refused = self.take_refused();
        let tpl = self.commit_list(partitions, |_, _| true, &refused);
        partitions.decided = 0;
        if tpl.count() == 0 {
            return;
        }
        // Once more if it failed (mid-rebalance, say); what still fails is read again.
        for _ in 0..2 {
            let (reply, committed) = tokio::sync::oneshot::channel();
            self.state.in_flight.store(true, Ordering::SeqCst);
            if self.tx.send(Job { tpl: tpl.clone(), reply: Some(reply) }).is_err() {
                return;
            }
            match tokio::time::timeout(CLOSE_WAIT, committed).await {
                Ok(Ok(true)) => return,
                Ok(_) => continue,
                Err(_) => {
                    tracing::warn!(
                        wait = ?CLOSE_WAIT,
                        "the closing commit did not come back: what was decided since the last commit is read again"
                    );
                    return;
                }
            }
        }
    }

    /// The commit list of the partitions `which` picks (and that read something):
    /// each one's first undecided offset, with its map as metadata unless refused or too long.
    fn commit_list<R>(
        &self,
        partitions: &mut Partitions<R>,
        which: impl Fn(&PartitionKey, &Partition<R>) -> bool,
        refused: &[(String, i32)],
    ) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        for (key, partition) in partitions.iter_mut().filter(|(k, p)| which(k, p)) {
            partition.dirty = false;
            let tracker = &partition.tracker;
            let Some(position) = tracker.position() else { continue };
            let map = OffsetMap::between(position, tracker.pending_offsets(), tracker.next().unwrap_or(position));
            let was_refused = refused.iter().any(|(t, p)| **t == *key.0 && *p == key.1);
            let metadata = if was_refused { None } else { map.encode(self.cap) };
            if metadata.is_none() {
                metrics::offset_map_overflow(&key.0);
            }
            let mut element = tpl.add_partition(&key.0, key.1);
            if element.set_offset(Offset::Offset(position)).is_ok() {
                element.set_metadata(metadata.unwrap_or_default());
            }
        }
        tpl
    }

    /// Waits (briefly) for the committing thread's commit, so that an older list
    /// cannot land after the one a revoke or close commits.
    fn wait_idle(&self) {
        let until = Instant::now() + IN_FLIGHT_EXPIRY;
        while self.state.in_flight.load(Ordering::SeqCst) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn busy(&self) -> bool {
        self.state.in_flight.load(Ordering::SeqCst) && self.sent_at.elapsed() < IN_FLIGHT_EXPIRY
    }

    fn take_refused(&mut self) -> Vec<(String, i32)> {
        let refused = self.state.take_refused();
        if !refused.is_empty() {
            self.cap /= 2;
            tracing::warn!(
                ?refused,
                cap = self.cap,
                "the broker refused an offset map as too large; committing without it"
            );
        }
        refused
    }
}
#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::sync::mpsc;

    use crate::consume::later::{Decider, Decision, Later};

    fn decider(tx: &mpsc::UnboundedSender<Decision>, offset: i64) -> Decider {
        Decider { tx: tx.clone(), key: (Arc::from("dead"), 0), generation: 7, offset }
    }

    #[test]
    fn a_held_record_reports_once_decided_or_dropped() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let held: Later = decider(&tx, 5).later();
        held.decide();
        let d = rx.try_recv().unwrap();
        assert_eq!((d.offset, d.generation, d.decided), (5, 7, true));
        assert!(rx.try_recv().is_err(), "deciding sends one message, the drop after it none");

        drop(decider(&tx, 6).later());
        let d = rx.try_recv().unwrap();
        assert_eq!((d.offset, d.decided), (6, false), "dropped undecided: let go, so a drain does not wait for it");

        drop(decider(&tx, 7));
        assert!(rx.try_recv().is_err(), "an unused decider says nothing");
    }
}
