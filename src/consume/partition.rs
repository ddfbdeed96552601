//! One partition's state: its lifecycle, backlog, in-flight counts and pause state (the scheduler is `schedule`).
//!
//! # Lifecycle
//! ```text
//! assigned -> Consuming --revoke or drain--> Draining --in-flight done or grace over--> (removed; offsets committed)
//! ```
//! While Consuming, records wait in the backlog until they are due (retry
//! tiers), a slot is free (per-partition and per-consumer in-flight limits)
//! and their endpoint has room. Draining takes no new work and never resumes.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::offset_map::OffsetMap;
use super::order::KeySet;
use super::ticket::{EndpointSlot, Ticket};
use crate::consume::offsets::OffsetTracker;

/// Counts keyed by [`EndpointSlot::id`] (small integers: the Fx hash, one multiplication, suits them).
pub type IdMap<V> = rustc_hash::FxHashMap<usize, V>;

/// A partition of a topic: its name and number.
pub type PartitionKey = (Arc<str>, i32);

/// Counts one out of `id`'s entry in `counts`, removing the entry at zero (so
/// the map holds only endpoints with something in it).
pub fn count_down(counts: &mut IdMap<usize>, id: usize) {
    if let Some(n) = counts.get_mut(&id) {
        *n -= 1;
        if *n == 0 {
            counts.remove(&id);
        }
    }
}

/// How long before a paused head is due its partition resumes fetching.
/// librdkafka restarts the fetch of a resumed partition at its broker
/// thread's next wake-up (up to about a second when nothing else is being
/// fetched), so resuming exactly at the due time would make the records
/// behind the head late by up to that much. With the lead they are read by
/// then (measured: re-attempt lateness max 939 ms without it, 5 ms with it).
pub const RESUME_LEAD_MS: i64 = 1_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    Consuming,
    /// Revoked or shutting down: no new work, waiting for in-flight records before letting go.
    Draining,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PauseReason {
    /// The read-ahead is full.
    Capacity,
    /// No waiting record is due for a while.
    NotDue,
    /// Records waiting behind their key (`ordering = "key"`) reached their bound.
    Ordered,
}

impl PauseReason {
    pub const ALL: [PauseReason; 3] = [PauseReason::Capacity, PauseReason::NotDue, PauseReason::Ordered];

    pub fn as_str(self) -> &'static str {
        match self {
            PauseReason::Capacity => "capacity",
            PauseReason::NotDue => "not_due",
            PauseReason::Ordered => "ordered",
        }
    }
}

/// A record read but not yet handed to its handler.
pub struct Waiting<R> {
    pub offset: i64,
    /// When the loop read it (ms).
    pub read_ms: i64,
    /// Its share of the process's memory budget.
    pub bytes: usize,
    pub ticket: Ticket,
    /// Behind a pointer, so the scheduler's scan of the backlog stays within a few cache
    /// lines per record whatever the handler keeps (a decoded event is large);
    /// shared, so that a record retried in place ([`super::Done::Again`]) comes back.
    pub record: Arc<R>,
}

/// A partition whose read-ahead stayed full this long is clogged (its records
/// cannot go for now), not merely busy, and is paused. A busy one is not: while
/// every partition's read-ahead is full the loop stops reading instead (see
/// [`Partition::over_read_ahead`]), so librdkafka keeps what it fetched. A
/// pause drops a partition's fetched records and fetches them again on resume
/// (measured in a backlog drain: the broker's CPU per delivery 10x the null
/// pipeline's, and deliveries stalling for half a second at a time).
pub const CLOGGED_AFTER_MS: i64 = 200;

pub struct Partition<R> {
    /// Tells this assignment's completions from a previous one's.
    pub generation: u64,
    pub lifecycle: Lifecycle,
    pub tracker: OffsetTracker,
    pub in_flight: usize,
    /// Records held by the handler ([`super::Done::Later`]), not yet decided or let go.
    /// Briefly -1 when a decision overtakes the completion that reports the hold.
    pub held: i64,
    /// Records read and waiting, in offset order. Added to and taken from
    /// through [`Partition::arrive`], [`Partition::push`], [`Partition::requeue`]
    /// and [`Partition::take`], which keep the two counts below.
    pub backlog: VecDeque<Waiting<R>>,
    /// Records without an order key read before their due time, by (due,
    /// offset), out of the backlog until due ([`Partition::unpark`]): a scan
    /// stepped over each on every pump (a tier partition reads hundreds ahead
    /// of their due times: 15 million steps in one `make profile` run of S3).
    /// Counted as waiting like the backlog's.
    pub parked: BTreeMap<(i64, i64), Waiting<R>>,
    /// Waiting records per endpoint ([`EndpointSlot::id`]): once every record
    /// left in a scan is of an endpoint that cannot go, the scheduler stops.
    pub waiting_by_endpoint: IdMap<usize>,
    /// Waiting records with a due time: with none, no scan for the next one.
    pub timed: usize,
    /// Records in flight per endpoint ([`EndpointSlot::id`]), in this partition.
    pub endpoint_in_flight: IdMap<usize>,
    /// Of those, records of slow endpoints (answers of a second or more).
    pub slow_in_flight: usize,
    /// Order keys of the records in flight here (`ordering = "key"`).
    pub keys_in_flight: KeySet,
    /// Records that waited for their key at the last full scan (see [`Dispatch::key_waiting`](crate::consume::schedule::Dispatch::key_waiting)).
    pub key_waiting: usize,
    /// Since when its read-ahead has been full without a pause (ms).
    pub full_since: Option<i64>,
    pub paused: Option<PauseReason>,
    /// When a waiting record needs the loop's attention (ms), if one waits for time.
    pub wake_ms: Option<i64>,
    /// Cancels this partition's handlers once it is let go: work abandoned
    /// past a revoke's grace must stop, or it would race the next owner.
    pub cancel: CancellationToken,
    /// Offsets the last owner's commit said are decided: skipped when read (see [`super::offset_map`]).
    pub skip: Option<OffsetMap>,
    /// Decided on since its last commit.
    pub dirty: bool,
}

impl<R> Partition<R> {
    /// Decides `offset` (its commit position may move); the partition is then due a commit.
    pub fn decide(&mut self, offset: i64) {
        self.tracker.decide(offset);
        self.dirty = true;
    }

    pub fn new(generation: u64, cancel: CancellationToken) -> Partition<R> {
        Partition {
            generation,
            cancel,
            lifecycle: Lifecycle::Consuming,
            tracker: OffsetTracker::default(),
            in_flight: 0,
            held: 0,
            backlog: VecDeque::new(),
            parked: BTreeMap::new(),
            waiting_by_endpoint: IdMap::default(),
            timed: 0,
            endpoint_in_flight: IdMap::default(),
            slow_in_flight: 0,
            keys_in_flight: KeySet::default(),
            key_waiting: 0,
            full_since: None,
            paused: None,
            wake_ms: None,
            skip: None,
            dirty: false,
        }
    }

    /// Nothing in flight and nothing held: a drain or revoke need not wait for it.
    pub fn is_idle(&self) -> bool {
        self.in_flight == 0 && self.held <= 0
    }

    /// No new work from here on; waiting records are read again by whoever
    /// consumes next. Returns the bytes the dropped records held.
    pub fn stop(&mut self) -> usize {
        self.lifecycle = Lifecycle::Draining;
        self.waiting_by_endpoint.clear();
        self.timed = 0;
        let parked = std::mem::take(&mut self.parked).into_values();
        self.backlog.drain(..).chain(parked).map(|w| w.bytes).sum()
    }

    /// Records waiting: in the backlog or parked until due.
    pub fn waiting(&self) -> usize {
        self.backlog.len() + self.parked.len()
    }

    /// The earliest due time of a parked record (ms).
    pub fn next_parked_ms(&self) -> Option<i64> {
        self.parked.first_key_value().map(|(&(due, _), _)| due)
    }

    /// Counts a record of `endpoint` as started in this partition. `slow` is what
    /// [`LiveLimit::is_slow`](crate::endpoint::limit::LiveLimit::is_slow) said when it started.
    pub fn started(&mut self, endpoint: &EndpointSlot, slow: bool) {
        self.slow_in_flight += usize::from(slow);
        *self.endpoint_in_flight.entry(endpoint.id()).or_default() += 1;
    }

    /// Counts a record of `endpoint` started with `slow` as finished.
    pub fn finished(&mut self, endpoint: &EndpointSlot, slow: bool) {
        if slow {
            self.slow_in_flight = self.slow_in_flight.saturating_sub(1);
        }
        count_down(&mut self.endpoint_in_flight, endpoint.id());
    }

    /// Whether its read-ahead (records waiting for a slot, not for their key) is full.
    pub fn over_read_ahead(&self, read_ahead: usize) -> bool {
        self.waiting().saturating_sub(self.key_waiting) >= read_ahead
    }

    /// Notes when the read-ahead became full, after a pump; returns when it
    /// will count as clogged, if it is full, not paused and not clogged yet.
    /// (A clogged one left unpaused, because no other partition waits to be
    /// read, is paused at the pump after a record for another comes in.)
    pub fn note_full(&mut self, read_ahead: usize, now_ms: i64) -> Option<i64> {
        self.full_since = match self.paused {
            None if self.over_read_ahead(read_ahead) => Some(self.full_since.unwrap_or(now_ms)),
            _ => None,
        };
        self.full_since.map(|since| since + CLOGGED_AFTER_MS).filter(|&at| at > now_ms)
    }

    /// Adds a record read after every one in the backlog.
    pub fn push(&mut self, waiting: Waiting<R>) {
        self.count_in(&waiting);
        self.backlog.push_back(waiting);
    }

    /// Takes in a record just read: parked when it has no order key and is not
    /// due at `now_ms`, otherwise at the backlog's end as [`Partition::push`].
    pub fn arrive(&mut self, waiting: Waiting<R>, now_ms: i64) {
        match waiting.ticket.due_ms {
            Some(due) if due > now_ms && waiting.ticket.order.is_empty() => {
                self.count_in(&waiting);
                self.parked.insert((due, waiting.offset), waiting);
            }
            _ => self.push(waiting),
        }
    }

    /// Moves the parked records due at `now_ms` to their offsets' places in the backlog.
    pub fn unpark(&mut self, now_ms: i64) {
        while let Some(entry) = self.parked.first_entry() {
            if entry.key().0 > now_ms {
                break;
            }
            let waiting = entry.remove();
            self.insert_in_order(waiting);
        }
    }

    /// Puts a record retried in place back at its offset's place in the backlog.
    pub fn requeue(&mut self, waiting: Waiting<R>) {
        self.count_in(&waiting);
        self.insert_in_order(waiting);
    }

    /// Puts a record at its offset's place in the backlog (counted in already).
    fn insert_in_order(&mut self, waiting: Waiting<R>) {
        let at = self.backlog.partition_point(|w| w.offset < waiting.offset);
        self.backlog.insert(at, waiting);
    }

    /// Removes the records `schedule` chose (indices ascending), in backlog order.
    pub fn take(&mut self, chosen: &[usize]) -> Vec<Waiting<R>> {
        let mut taken: Vec<Waiting<R>> =
            chosen.iter().rev().map(|&i| self.backlog.remove(i).expect("chosen index in range")).collect();
        taken.reverse();
        for waiting in &taken {
            self.count_out(waiting);
        }
        taken
    }

    /// Counts a record into the backlog's counts.
    fn count_in(&mut self, waiting: &Waiting<R>) {
        self.timed += usize::from(waiting.ticket.due_ms.is_some());
        if let Some(slot) = &waiting.ticket.endpoint {
            *self.waiting_by_endpoint.entry(slot.id()).or_default() += 1;
        }
    }

    /// Counts a record out of the backlog's counts.
    fn count_out(&mut self, waiting: &Waiting<R>) {
        self.timed -= usize::from(waiting.ticket.due_ms.is_some());
        if let Some(slot) = &waiting.ticket.endpoint {
            count_down(&mut self.waiting_by_endpoint, slot.id());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiting(offset: i64, due_ms: Option<i64>) -> Waiting<()> {
        let ticket = Ticket { due_ms, ..Ticket::default() };
        Waiting { offset, read_ms: 0, bytes: 10, ticket, record: Arc::new(()) }
    }

    #[test]
    fn unparked_records_take_their_offsets_place_and_stop_gives_all_bytes_back() {
        let mut p: Partition<()> = Partition::new(1, CancellationToken::new());
        p.arrive(waiting(0, Some(300)), 100);
        p.arrive(waiting(1, None), 100);
        p.arrive(waiting(2, Some(200)), 100);
        p.arrive(waiting(3, Some(50)), 100);
        let offsets = |p: &Partition<()>| p.backlog.iter().map(|w| w.offset).collect::<Vec<_>>();
        assert_eq!(offsets(&p), vec![1, 3]);
        assert_eq!((p.timed, p.next_parked_ms()), (3, Some(200)));
        p.unpark(199);
        assert_eq!(offsets(&p), vec![1, 3], "nothing due yet");
        p.unpark(300);
        assert_eq!(offsets(&p), vec![0, 1, 2, 3], "in offset order, as if never parked");
        assert_eq!(p.next_parked_ms(), None);
        p.arrive(waiting(4, Some(900)), 300);
        assert_eq!(p.stop(), 50, "parked records' bytes too");
        assert_eq!(p.waiting(), 0);
    }
}
