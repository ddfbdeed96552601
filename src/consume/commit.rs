//! Explicit commits: each partition's first undecided offset, with the decided offsets above it
//! ([`OffsetMap`]) as the commit's metadata; and reading them back on assignment.
//!
//! librdkafka's auto-commit commits a partition only when its stored offset
//! moved, so a map growing behind a pinned head would never be written, and
//! `commit_consumer_state` commits without metadata. So the loop commits
//! itself: once [`COMMIT_AFTER`] decisions gathered or every
//! `kafka.commit_interval`, whichever comes first, at most one commit in flight
//! per consumer (later decisions wait for the next); on revoke (on the poll
//! thread, with the list the loop hands it) and on close.
//!
//! The loop does not wait for those commits: a thread of the consumer's own
//! commits each list synchronously. An asynchronous commit's result comes back
//! as an event in the consumer's queue, behind every record already fetched
//! (megabytes in a backlog): waiting for it held the next commit back for
//! seconds (make drill kill -9: the maps of the last commit covered 11 to 21
//! records of the 1,650 delivered before the kill).
//!
//! A map longer than the cap, or one the broker refuses (OFFSET_METADATA_TOO_LARGE),
//! degrades to the offset alone, counted in `hookrelay_offset_map_overflow_total`:
//! never an error, never a stop. A refusal also halves this consumer's cap.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::topic_partition_list::TopicPartitionListElem;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use super::offset_map::OffsetMap;
use crate::observe::metrics;

/// Decisions that make a commit due before the interval is over: what a crash
/// sends again is then about this many (plus what was in flight), not a whole
/// interval's worth. At thousands of decisions a second that is tens of commits
/// a second, fewer where a commit's round trip is longer (one in flight at a time).
/// At 64 and ten a second, make drill three-replicas (a kill among them, 400
/// deliveries a second per replica) sent 17 to 67 of 3,000 again over runs.
pub(super) const COMMIT_AFTER: usize = 32;

/// Commits after [`COMMIT_AFTER`] decisions are at least this far apart: at
/// 30,000 decisions a second one every 64 cost make bench S0 13 % more CPU per
/// delivery (against the null pipeline, 1.42 -> 1.60: some 470 commits a
/// second); twenty a second do not show.
pub(super) const MIN_SPACING: Duration = Duration::from_millis(50);

/// A commit that has not come back after this long no longer holds the next one back
/// (it waits in line behind it).
pub(super) const IN_FLIGHT_EXPIRY: Duration = Duration::from_secs(5);

/// How long the poll thread waits for the committed offsets of an assignment.
const COMMITTED_TIMEOUT: Duration = Duration::from_secs(10);

/// Shared by the loop and the poll thread's commit callback.
#[derive(Default)]
pub struct CommitState {
    pub(super) in_flight: AtomicBool,
    /// Partitions whose commit the broker refused as too large, to commit again without the map.
    refused: Mutex<Vec<(String, i32)>>,
    /// Partitions of a commit that failed (IllegalGeneration mid-rebalance, say), to commit again.
    failed: Mutex<Vec<(String, i32)>>,
}

impl CommitState {
    /// The result of an asynchronous commit (the poll thread's commit callback).
    pub fn done(&self, result: &KafkaResult<()>, offsets: &TopicPartitionList) {
        let elements = offsets.elements();
        let mut refused: Vec<_> = elements
            .iter()
            .filter(|e| e.error().as_ref().err().is_some_and(too_large))
            .map(|e| (e.topic().to_string(), e.partition()))
            .collect();
        if refused.is_empty() && result.as_ref().err().is_some_and(too_large) {
            refused = elements.iter().map(|e| (e.topic().to_string(), e.partition())).collect();
        }
        match result {
            Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(error) => tracing::debug!(%error, "commit failed"),
        }
        if !refused.is_empty() {
            self.refused.lock().unwrap_or_else(|e| e.into_inner()).extend(refused);
        }
        self.in_flight.store(false, Ordering::SeqCst);
    }
}

impl CommitState {
    /// Partitions whose map the broker refused since the last call.
    pub(super) fn take_refused(&self) -> Vec<(String, i32)> {
        std::mem::take(&mut *self.refused.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Records that the commit of `tpl` failed: its partitions are committed again.
    pub(super) fn failed(&self, tpl: &TopicPartitionList) {
        let partitions = tpl.elements().iter().map(|e| (e.topic().to_string(), e.partition())).collect::<Vec<_>>();
        self.failed.lock().unwrap_or_else(|e| e.into_inner()).extend(partitions);
    }

    /// Partitions whose commit failed since the last call.
    pub(super) fn take_failed(&self) -> Vec<(String, i32)> {
        std::mem::take(&mut *self.failed.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

fn too_large(error: &KafkaError) -> bool {
    error.rdkafka_error_code() == Some(RDKafkaErrorCode::OffsetMetadataTooLarge)
}

/// Commits `tpl` and waits; a map the broker refuses as too large is committed again without it.
/// Returns whether the offsets were committed.
pub fn commit_sync<C: ConsumerContext>(consumer: &BaseConsumer<C>, tpl: &TopicPartitionList) -> bool {
    if tpl.count() == 0 {
        return true;
    }
    match consumer.commit(tpl, CommitMode::Sync) {
        Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => true,
        Err(error) if too_large(&error) => {
            let mut plain = TopicPartitionList::new();
            for element in tpl.elements() {
                if metadata_of(&element).is_some_and(|m| !m.is_empty()) {
                    metrics::offset_map_overflow(element.topic());
                }
                let _ = plain.add_partition_offset(element.topic(), element.partition(), element.offset());
            }
            match consumer.commit(&plain, CommitMode::Sync) {
                Ok(()) => true,
                Err(error) => {
                    tracing::warn!(%error, "commit failed");
                    false
                }
            }
        }
        Err(error) => {
            tracing::warn!(%error, "commit failed");
            false
        }
    }
}

/// An element's metadata, or `None` when it is not UTF-8: rdkafka's `metadata()`
/// panics then (metadata another client wrote, say), and such metadata is not ours.
/// The panic is caught here; the default hook still prints it once.
pub fn metadata_of(element: &TopicPartitionListElem<'_>) -> Option<String> {
    std::panic::catch_unwind(AssertUnwindSafe(|| element.metadata().to_owned())).ok()
}

/// The maps of decided offsets committed for `assigned` (its order), read from the group
/// coordinator on the poll thread; `None` where there is none or it is not ours.
pub fn committed_maps<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    assigned: &TopicPartitionList,
) -> Vec<Option<OffsetMap>> {
    let committed = match consumer.committed_offsets(assigned.clone(), COMMITTED_TIMEOUT) {
        Ok(committed) => committed,
        Err(error) => {
            tracing::warn!(%error, "committed offsets not read: records decided above them may be delivered again");
            return vec![None; assigned.count()];
        }
    };
    let map = |e: &TopicPartitionListElem<'_>| {
        let found = committed.find_partition(e.topic(), e.partition())?;
        let Offset::Offset(offset) = found.offset() else { return None };
        let map = OffsetMap::decode(&metadata_of(&found)?, offset)?;
        (!map.is_empty()).then_some(map)
    };
    assigned.elements().iter().map(map).collect()
}
