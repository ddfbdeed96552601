//! The pure scheduler: which waiting records of a partition go now, which
//! are deferred (overflow, pace), whether to pause it and when to wake it.

mod endpoint;

use super::handler::Work;
use super::order::{Gate, KeyGate, KEY_WAITING_FACTOR};
use super::partition::IdMap;
use super::partition::{Lifecycle, Partition, PauseReason, Waiting, CLOGGED_AFTER_MS, RESUME_LEAD_MS};
use super::ticket::EndpointSlot;
use crate::route::outcome::Why;

/// A record past its endpoint's waiting bound is deferred when it would wait
/// this long: by the endpoint's round trip and limit (Little's law), or, before
/// the endpoint ever answered, once it has waited this long. A fast receiver at
/// its limit drains a full read-ahead in milliseconds, so its records never
/// overflow; one that cannot keep up would leave them waiting.
pub const OVERFLOW_AFTER_MS: i64 = 1_000;

/// One endpoint may hold at most 1/ENDPOINT_SHARE of a partition's in-flight slots.
pub const ENDPOINT_SHARE: usize = 2;

/// The limits `schedule` works within.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub in_flight_per_partition: usize,
    /// Records read ahead per partition: the loop stops reading while every
    /// partition has this many; one that stays full [`CLOGGED_AFTER_MS`], or
    /// reaches twice as many, pauses (and resumes at half).
    pub read_ahead: usize,
    /// Due records of one endpoint that may wait for its slots; the rest is deferred.
    pub waiting_per_endpoint: usize,
    /// Records of slow endpoints the whole consumer may still start: together
    /// they hold at most 1/ENDPOINT_SHARE of its slots, as of a partition's.
    pub slow_room: usize,
    /// The process's memory budget is spent (`delivery.max_buffered_bytes`).
    pub memory_spent: bool,
    /// Another open partition of the consumer has room in its read-ahead: a
    /// clogged partition is paused only then, since while every partition is
    /// full the loop reads nothing anyway and a pause would only drop what
    /// librdkafka fetched for it.
    pub others_starved: bool,
}

/// What to do with a partition now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dispatch {
    /// Backlog indices to hand to handlers now, ascending.
    pub take: Vec<usize>,
    /// Which of `take` are overflow to defer rather than attempt (a subset, ascending).
    pub defer: Vec<usize>,
    /// Which of `take` would wait for their endpoint's pace past its `rate_max_wait`, to
    /// defer rather than attempt (a subset, ascending, none of them in `defer`).
    pub paced: Vec<usize>,
    /// Whether the partition should be paused, and why.
    pub pause: Option<PauseReason>,
    /// When to look at the partition again for time's sake (ms).
    pub wake_ms: Option<i64>,
    /// Records left waiting for their key rather than for a slot: behind an
    /// earlier record of their key, or an in-place retry not yet due. They do
    /// not count toward the read-ahead, so a blocked key does not pause the
    /// partition for the other keys; [`KEY_WAITING_FACTOR`] x `read_ahead` bounds them.
    pub key_waiting: usize,
    /// Endpoints ([`EndpointSlot::id`]) whose records wait here because the
    /// endpoint is at its limit in the whole consumer: a completion of one of
    /// them anywhere must schedule this partition again. (Its limit may have
    /// grown by then, so "was it full" cannot be told at the completion.)
    pub crowded: Vec<usize>,
}

impl Dispatch {
    /// What the handler is to do with the record at backlog index `index` (one of `take`).
    pub fn work(&self, index: usize) -> Work {
        match () {
            _ if self.defer.binary_search(&index).is_ok() => Work::Defer(Why::Overflow),
            _ if self.paced.binary_search(&index).is_ok() => Work::Defer(Why::Pace),
            _ => Work::Attempt,
        }
    }
}

/// Decides which waiting records of `partition` go now and its pause state. Pure.
///
/// Any due record is dispatched, not only the head: jitter can make a later
/// record due first, and the offset tracker copes with any order. A record
/// whose endpoint is full waits without taking a slot, so the records behind
/// it for other endpoints can go, up to `waiting_per_endpoint` of them: the
/// ones after that are overflow once they waited [`OVERFLOW_AFTER_MS`], and
/// are taken to be deferred (a deferral is a quick produce, so a receiver that
/// cannot keep up never fills the read-ahead and pauses the partition for the
/// others). `free` is how many more records the
/// whole consumer may start; `endpoint_load` how many each endpoint has in flight.
///
/// Ordered keys (see [`super::order`]): a record behind an earlier record of
/// its key (in flight or waiting) waits, without a slot and never deferred,
/// and does not count toward the read-ahead; nor does an in-place retry
/// waiting for its due time, which never pauses the partition for time.
/// When those reach [`KEY_WAITING_FACTOR`] x `read_ahead` the partition pauses (`Ordered`) until half.
///
/// An endpoint's pace ([`crate::endpoint::pace`]) goes first: a record waits for its
/// token (or for a `Retry-After` hold to end) without taking a slot, and the
/// partition is woken when the next one is due. One that would wait longer
/// than the endpoint's `rate_max_wait` is taken to be deferred at once
/// (`paced`). For an endpoint with a rate this replaces the overflow bound,
/// except that the waiting records of such endpoints keep at most half of the
/// read-ahead together (the rest overflow), so the others are still read. A
/// hold of an endpoint without a rate counts in its overflow's expected wait.
///
/// Pause rules: a partition none of whose waiting records is due within
/// [`RESUME_LEAD_MS`] is paused (and woken that long before the earliest is
/// due); one whose backlog stayed at `read_ahead` for [`CLOGGED_AFTER_MS`]
/// (`full_since`), or reached twice that, is paused until it is down to half.
/// Otherwise it fetches, so that records are at hand when due.
pub fn schedule<R>(
    partition: &Partition<R>,
    now_ms: i64,
    limits: Limits,
    free: usize,
    endpoint_load: impl Fn(&EndpointSlot) -> usize,
) -> Dispatch {
    let consuming = partition.lifecycle == Lifecycle::Consuming;
    let room = limits.in_flight_per_partition.saturating_sub(partition.in_flight).min(free);
    if consuming && room == 0 {
        return no_room(partition, now_ms, limits);
    }
    let mut scan = Scan::new(partition, now_ms, limits, room);
    if consuming {
        for (i, waiting) in partition.backlog.iter().enumerate() {
            if !scan.step(i, waiting, &endpoint_load) {
                break;
            }
        }
    }
    scan.finish(consuming)
}

/// Nothing can start until a slot frees, and its completion pumps again: no
/// scan. (A busy partition is pumped on every record read; scanning its
/// backlog each time was the loop's largest cost in a profile.) Records
/// behind their key are as many as the last scan counted.
fn no_room<R>(partition: &Partition<R>, now_ms: i64, limits: Limits) -> Dispatch {
    let key_waiting = partition.key_waiting.min(partition.backlog.len());
    let left = partition.waiting() - key_waiting;
    let pause = match pause_for_room(partition, now_ms, limits, left, key_waiting) {
        None if partition.paused == Some(PauseReason::NotDue) => Some(PauseReason::NotDue),
        pause => pause,
    };
    Dispatch {
        take: Vec::new(),
        defer: Vec::new(),
        paced: Vec::new(),
        pause,
        wake_ms: partition.wake_ms,
        key_waiting,
        crowded: Vec::new(),
    }
}

/// The pause for room, if any: the read-ahead (`left` records waiting for a
/// slot) is full, or so are the records waiting for their keys.
fn pause_for_room<R>(
    partition: &Partition<R>,
    now_ms: i64,
    limits: Limits,
    left: usize,
    key_waiting: usize,
) -> Option<PauseReason> {
    let full = limits.memory_spent
        || match partition.paused {
            // Hysteresis: a partition paused for capacity resumes at half, not at limit - 1.
            Some(PauseReason::Capacity) => left > limits.read_ahead / 2,
            _ => {
                let clogged = partition.full_since.is_some_and(|since| now_ms - since >= CLOGGED_AFTER_MS);
                let clogged = clogged && limits.others_starved;
                left >= limits.read_ahead.saturating_mul(2) || (left >= limits.read_ahead && clogged)
            }
        };
    // Records behind their keys have a bound of their own, resumed at half too.
    let key_bound = limits.read_ahead.saturating_mul(KEY_WAITING_FACTOR);
    let keys_full = match partition.paused {
        Some(PauseReason::Ordered) => key_waiting > key_bound / 2,
        _ => key_waiting >= key_bound,
    };
    match () {
        _ if full => Some(PauseReason::Capacity),
        _ if keys_full => Some(PauseReason::Ordered),
        _ => None,
    }
}

/// What the scan decides for a due record of an endpoint that has room to be looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    /// Start it now.
    Start,
    /// Hand it over to be deferred without an attempt.
    Defer(Why),
    /// Leave it waiting for its endpoint (a slot, its pace); it keeps the partition due.
    Wait,
}

/// One pass over a partition's backlog: what each record does, and what the
/// pass learned for the pause and the wake-up.
struct Scan<'p, R> {
    partition: &'p Partition<R>,
    now_ms: i64,
    limits: Limits,
    room: usize,
    /// However fast its limit grew, one endpoint holds at most this many of a
    /// partition's slots: a slow but steady receiver cannot take them all.
    share: usize,
    take: Vec<usize>,
    defer: Vec<usize>,
    paced: Vec<usize>,
    /// Records of endpoints with a rate waiting here (all such endpoints), and when the first token is due.
    paced_waiting: usize,
    pace_at: Option<i64>,
    started: IdMap<usize>,
    queued: IdMap<usize>,
    crowded: IdMap<()>,
    /// Slow endpoints together: started in this scan, and waiting.
    slow_started: usize,
    slow_queued: usize,
    due_left: bool,
    /// When a waiting record becomes overflow, if one is still young.
    overflow_at: Option<i64>,
    keys: KeyGate<'p>,
    /// Every slot is taken: from here on only records behind their keys are counted.
    slots_taken: bool,
    /// Endpoints that cannot start a record in this scan and none of whose records
    /// here can overflow: their other records need not be looked at, and once only
    /// theirs are left the scan stops (with one busy receiver, every partition's
    /// backlog is thousands of its records: a scan of each on every pump was a
    /// tenth of the relay's CPU). `open` counts the records left of other endpoints.
    settled: IdMap<()>,
    seen: IdMap<usize>,
    open: usize,
}

impl<'p, R> Scan<'p, R> {
    fn new(partition: &'p Partition<R>, now_ms: i64, limits: Limits, room: usize) -> Scan<'p, R> {
        Scan {
            partition,
            now_ms,
            limits,
            room,
            share: (limits.in_flight_per_partition / ENDPOINT_SHARE).max(1),
            take: Vec::new(),
            defer: Vec::new(),
            paced: Vec::new(),
            paced_waiting: 0,
            pace_at: None,
            started: IdMap::default(),
            queued: IdMap::default(),
            crowded: IdMap::default(),
            slow_started: 0,
            slow_queued: 0,
            due_left: false,
            overflow_at: None,
            keys: KeyGate::new(&partition.keys_in_flight),
            slots_taken: false,
            settled: IdMap::default(),
            seen: IdMap::default(),
            // Parked records too: an endpoint that settles takes all its waiting
            // records off `open`, those parked among them.
            open: partition.waiting(),
        }
    }

    /// Looks at the record at backlog index `i`; `false` once the rest need not be looked at.
    fn step(&mut self, i: usize, waiting: &Waiting<R>, endpoint_load: impl Fn(&EndpointSlot) -> usize) -> bool {
        let ordered = !waiting.ticket.order.is_empty();
        if (self.slots_taken || self.open == 0) && !self.keys.active() {
            // What is left waits for a completion, which pumps again, so the
            // rest of the backlog need not be looked at (unless keys are in play).
            return false;
        }
        let id = waiting.ticket.endpoint.as_ref().map(EndpointSlot::id);
        let is_settled = id.is_some_and(|id| self.settled.contains_key(&id));
        if !is_settled {
            self.open = self.open.saturating_sub(1);
            if let Some(id) = id {
                *self.seen.entry(id).or_default() += 1;
            }
        }
        if self.keys.ask(&waiting.ticket.order) == Gate::Behind {
            return true;
        }
        if waiting.ticket.due_ms.is_some_and(|due| due > self.now_ms) {
            if ordered {
                self.keys.not_due();
            }
            return true;
        }
        if self.slots_taken || is_settled {
            return true;
        }
        if self.take.len() >= self.room {
            self.due_left = true;
            self.slots_taken = true;
            return true;
        }
        let decision = match &waiting.ticket.endpoint {
            Some(slot) => self.decide(waiting, slot, endpoint_load(slot)),
            None => Decision::Start,
        };
        match decision {
            Decision::Start => self.take.push(i),
            Decision::Defer(why) => {
                self.take.push(i);
                if why == Why::Pace {
                    self.paced.push(i)
                } else {
                    self.defer.push(i)
                }
            }
            Decision::Wait => self.due_left = true,
        }
        true
    }

    /// The dispatch: what goes, the pause, and when to look again for time's sake.
    fn finish(self, consuming: bool) -> Dispatch {
        let (partition, now_ms) = (self.partition, self.now_ms);
        // Records of ordered keys retried in place wait for their due time on the
        // events consumer, whose other records are due at once: they never pause
        // the partition for time (the other keys must keep flowing).
        // One pass for both (the backlog may be thousands of records long).
        let (mut next_unordered, mut next_ordered) = (partition.next_parked_ms(), None::<i64>);
        // Parked records are timed too: the backlog is passed over only for others.
        if partition.timed > partition.parked.len() {
            for waiting in &partition.backlog {
                let Some(due) = waiting.ticket.due_ms.filter(|&due| due > now_ms) else { continue };
                let next = if waiting.ticket.order.is_empty() { &mut next_unordered } else { &mut next_ordered };
                *next = Some(next.map_or(due, |at| at.min(due)));
            }
        }
        let waiting_for_time = !self.due_left && next_unordered.is_some_and(|due| due - now_ms > RESUME_LEAD_MS);
        let left = partition.waiting() - self.take.len() - self.keys.waiting;
        let pause = match pause_for_room(partition, now_ms, self.limits, left, self.keys.waiting) {
            _ if !consuming => None,
            Some(pause) => Some(pause),
            None if waiting_for_time => Some(PauseReason::NotDue),
            None => None,
        };
        let lead = if pause == Some(PauseReason::NotDue) { RESUME_LEAD_MS } else { 0 };
        let next_unordered = next_unordered.map(|due| due - lead);
        let wake_ms = [next_unordered, next_ordered, self.overflow_at, self.pace_at].into_iter().flatten().min();
        let crowded = self.crowded.into_keys().collect();
        Dispatch {
            take: self.take,
            defer: self.defer,
            paced: self.paced,
            pause,
            wake_ms,
            key_waiting: self.keys.waiting,
            crowded,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::cell::RefCell;
    use std::collections::HashMap;
    use std::sync::Arc;
    use std::time::Duration;

    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::consume::partition::Waiting;
    use crate::consume::ticket::{EndpointSlot, Ticket};
    use crate::endpoint::limit::LiveLimit;
    use crate::endpoint::pace::{Pace, Rule};

    const NOW: i64 = 1_000_000;
    const LIMITS: Limits = Limits {
        in_flight_per_partition: 4,
        read_ahead: 6,
        waiting_per_endpoint: 8,
        slow_room: usize::MAX,
        memory_spent: false,
        others_starved: true,
    };

    /// Room for everything: only the endpoints' limits hold records back.
    const ROOMY: Limits = Limits {
        in_flight_per_partition: 100,
        read_ahead: 100,
        waiting_per_endpoint: 8,
        slow_room: usize::MAX,
        memory_spent: false,
        others_starved: true,
    };

    fn ticket(due_ms: Option<i64>, endpoint: Option<(&str, usize)>) -> Ticket {
        Ticket {
            due_ms,
            endpoint: endpoint.map(|(key, limit)| slot(key, LiveLimit::fixed(limit))),
            order: Default::default(),
        }
    }

    /// A partition whose backlog holds `tickets`, in offset order, read a while ago.
    pub(crate) fn partition(tickets: Vec<Ticket>) -> Partition<()> {
        let mut p = Partition::new(1, CancellationToken::new());
        for (offset, ticket) in tickets.into_iter().enumerate() {
            p.push(Waiting {
                offset: offset as i64,
                read_ms: NOW - OVERFLOW_AFTER_MS,
                bytes: 0,
                ticket,
                record: std::sync::Arc::new(()),
            });
        }
        p
    }

    thread_local! {
        static LIVE: RefCell<HashMap<String, LiveLimit>> = RefCell::default();
    }

    /// One live limit per endpoint name, as the limiter hands out (the loop tells endpoints apart by it).
    pub(crate) fn slot(key: &str, limit: LiveLimit) -> EndpointSlot {
        let limit = LIVE.with(|l| l.borrow_mut().entry(format!("{key}/{}", limit.get())).or_insert(limit).clone());
        EndpointSlot { key: Arc::from(key), limit, pace: Arc::new(Pace::unlimited()) }
    }

    fn idle(_: &EndpointSlot) -> usize {
        0
    }

    fn named(name: &'static str, n: usize) -> impl Fn(&EndpointSlot) -> usize {
        move |s| if &*s.key == name { n } else { 0 }
    }

    #[test]
    fn due_records_go_up_to_the_partition_and_consumer_limits() {
        let p = partition(vec![Ticket::default(); 5]);
        assert_eq!(schedule(&p, NOW, LIMITS, 100, idle).take, vec![0, 1, 2, 3], "per-partition limit 4");
        assert_eq!(schedule(&p, NOW, LIMITS, 2, idle).take, vec![0, 1], "the consumer has 2 slots free");
        let mut busy = partition(vec![Ticket::default(); 5]);
        busy.in_flight = 3;
        assert_eq!(schedule(&busy, NOW, LIMITS, 100, idle).take, vec![0]);
    }

    #[test]
    fn a_later_record_due_first_goes_first() {
        let p = partition(vec![ticket(Some(NOW + 500), None), ticket(Some(NOW - 1), None), ticket(None, None)]);
        let d = schedule(&p, NOW, LIMITS, 100, idle);
        assert_eq!(d.take, vec![1, 2]);
        assert_eq!(d.pause, None, "due within the resume lead: keep fetching");
        assert_eq!(d.wake_ms, Some(NOW + 500));
    }

    #[test]
    fn a_full_endpoint_waits_without_blocking_the_others() {
        let p = partition(vec![
            ticket(None, Some(("slow", 2))),
            ticket(None, Some(("slow", 2))),
            ticket(None, Some(("fast", 10))),
            ticket(None, Some(("slow", 2))),
        ]);
        let d = schedule(&p, NOW, LIMITS, 100, named("slow", 1));
        assert_eq!(d.take, vec![0, 2], "one slot left for slow, fast goes");
        assert_eq!(d.pause, None);
        let slow = p.backlog[0].ticket.endpoint.as_ref().unwrap().id();
        assert_eq!(d.crowded, vec![slow], "the loop must pump this partition when slow frees a slot anywhere");
        let d = schedule(&p, NOW, LIMITS, 100, named("slow", 0));
        assert_eq!(d.take, vec![0, 1, 2], "both slow slots free");
        assert_eq!(d.crowded, vec![slow], "the third slow record waits for the two it just started");
        let d = schedule(&partition(vec![ticket(None, Some(("fast", 10)))]), NOW, LIMITS, 100, idle);
        assert!(d.crowded.is_empty(), "nothing waits");
    }

    /// As a tier partition reads them: records not due are parked, never
    /// stepped over by a scan, and still decide the pause and the wake-up.
    #[test]
    fn parked_records_pause_wake_and_go_once_due() {
        let mut p = partition(vec![]);
        for (offset, due) in [(0, NOW + 60_000), (1, NOW + 30_000), (2, NOW - 1)] {
            let ticket = ticket(Some(due), None);
            p.arrive(Waiting { offset, read_ms: NOW, bytes: 0, ticket, record: Arc::new(()) }, NOW);
        }
        assert_eq!((p.backlog.len(), p.parked.len(), p.waiting()), (1, 2, 3), "the one due already is not parked");
        let d = schedule(&p, NOW, LIMITS, 100, idle);
        assert_eq!(d.take, vec![0], "only the due one is looked at");
        p.take(&d.take);
        let d = schedule(&p, NOW, LIMITS, 100, idle);
        assert_eq!(d.pause, Some(PauseReason::NotDue));
        assert_eq!(d.wake_ms, Some(NOW + 30_000 - RESUME_LEAD_MS));
        p.unpark(NOW + 30_000);
        assert_eq!(p.backlog.iter().map(|w| w.offset).collect::<Vec<_>>(), vec![1]);
        assert_eq!(schedule(&p, NOW + 30_000, LIMITS, 100, idle).take, vec![0]);
        let mut full = partition(vec![]);
        for offset in 0..ROOMY.read_ahead as i64 * 2 {
            let ticket = ticket(Some(NOW + 1_000), None);
            full.arrive(Waiting { offset, read_ms: NOW, bytes: 0, ticket, record: Arc::new(()) }, NOW);
        }
        assert!(
            full.backlog.is_empty() && full.over_read_ahead(ROOMY.read_ahead),
            "parked records fill the read-ahead"
        );
        assert_eq!(schedule(&full, NOW, ROOMY, 100, idle).pause, Some(PauseReason::Capacity));
    }

    #[test]
    fn nothing_due_for_long_pauses_and_wakes_ahead() {
        let p = partition(vec![ticket(Some(NOW + 60_000), None), ticket(Some(NOW + 30_000), None)]);
        let d = schedule(&p, NOW, LIMITS, 100, idle);
        assert!(d.take.is_empty());
        assert_eq!(d.pause, Some(PauseReason::NotDue));
        assert_eq!(d.wake_ms, Some(NOW + 30_000 - RESUME_LEAD_MS));
        let empty = partition(vec![]);
        let nothing = Dispatch {
            take: vec![],
            defer: vec![],
            paced: vec![],
            pause: None,
            wake_ms: None,
            key_waiting: 0,
            crowded: vec![],
        };
        assert_eq!(schedule(&empty, NOW, LIMITS, 100, idle), nothing);
    }

    #[test]
    fn a_due_record_held_by_a_limit_keeps_the_partition_fetching_for_time() {
        // Not paused for time: a due record waits for a slot, and will go when one frees.
        let p = partition(vec![ticket(None, Some(("slow", 1))), ticket(Some(NOW + 60_000), None)]);
        let d = schedule(&p, NOW, LIMITS, 100, |_| 1);
        assert!(d.take.is_empty());
        assert_eq!(d.pause, None);
    }

    #[test]
    fn past_the_waiting_bound_an_endpoint_overflows_to_deferral() {
        let limits = ROOMY;
        let mut tickets = vec![ticket(None, Some(("slow", 2))); 12];
        tickets.push(ticket(None, Some(("fast", 10))));
        let p = partition(tickets);
        let d = schedule(&p, NOW, limits, 100, named("slow", 2));
        assert_eq!(d.defer, vec![8, 9, 10, 11], "8 slow records wait, the 4 after them are deferred");
        assert_eq!(d.take, vec![8, 9, 10, 11, 12], "the fast record goes, and the deferrals");
        assert_eq!(d.pause, None);
        let room = schedule(&p, NOW, limits, 100, |_| 0);
        assert_eq!(room.defer, vec![10, 11], "2 slow go, the next 8 wait, the last 2 overflow");
        assert_eq!(room.take, vec![0, 1, 10, 11, 12]);
        let tier = partition(vec![ticket(Some(NOW + 60_000), Some(("slow", 2))); 12]);
        assert!(schedule(&tier, NOW, limits, 100, |_| 2).defer.is_empty(), "records not yet due are not overflow");
        let mut young = vec![ticket(None, Some(("slow", 2))); 12];
        young.push(ticket(None, Some(("fast", 10))));
        let mut young = partition(young);
        for (i, w) in young.backlog.iter_mut().enumerate() {
            w.read_ms = NOW - 500 + i as i64;
        }
        let d = schedule(&young, NOW, limits, 100, |_| 2);
        assert!(d.defer.is_empty(), "a record is overflow only once it waited OVERFLOW_AFTER_MS");
        assert_eq!(d.wake_ms, Some(NOW + 500 + 8), "woken when the first one past the bound has waited long enough");
    }

    #[test]
    fn overflow_is_judged_by_the_expected_wait_once_the_endpoint_answered() {
        let limits = ROOMY;
        let measured = |key: &str, rtt_ms| slot(key, LiveLimit::measured(2, std::time::Duration::from_millis(rtt_ms)));
        let fast = Ticket { due_ms: None, endpoint: Some(measured("fast-answering", 1)), order: Default::default() };
        let p = partition(vec![fast; 40]);
        let d = schedule(&p, NOW, limits, 100, |_| 2);
        assert!(d.defer.is_empty(), "40 records at 1 ms and 2 at a time wait 20 ms at most, however long ago read");
        let slow =
            Ticket { due_ms: None, endpoint: Some(measured("slow-answering", 2_000)), order: Default::default() };
        let mut tickets = vec![slow; 12];
        tickets.push(ticket(None, Some(("other", 10))));
        let mut p = partition(tickets);
        for w in p.backlog.iter_mut() {
            w.read_ms = NOW;
        }
        let d = schedule(&p, NOW, limits, 100, |_| 2);
        assert_eq!(d.defer, vec![8, 9, 10, 11], "the 9th would wait 9 s: deferred at once, however young");
    }

    #[test]
    fn a_lone_endpoint_overflows_only_when_the_partition_cannot_read_more() {
        // Nobody waits behind its records and there is room to read: deferring them
        // would protect no one, only send a healthy receiver's backlog a tier late.
        let limits = ROOMY;
        let busy = |rtt_ms| Ticket {
            due_ms: None,
            endpoint: Some(slot("lone", LiveLimit::measured(2, std::time::Duration::from_millis(rtt_ms)))),
            order: Default::default(),
        };
        let p = partition(vec![busy(100); 60]);
        let d = schedule(&p, NOW, limits, 100, |_| 2);
        assert!(d.defer.is_empty(), "60 records at 100 ms, 2 at a time: they wait 3 s, for their own endpoint");
        assert!(d.take.is_empty() && d.pause.is_none(), "they wait, the partition keeps reading");
        let mut tickets = vec![busy(100); 60];
        tickets.push(ticket(None, Some(("behind", 10))));
        let d = schedule(&partition(tickets), NOW, limits, 100, named("lone", 2));
        assert_eq!(d.defer.first(), Some(&19), "with another endpoint behind them, the 20th on would wait a second");
        assert_eq!(d.take.last(), Some(&60), "and the record behind them goes");
        let full = Limits { read_ahead: 60, ..limits };
        let d = schedule(&p, NOW, full, 100, |_| 2);
        assert_eq!(d.defer.first(), Some(&19), "a full read-ahead reads nothing more: the overflow goes");
    }

    #[test]
    fn records_behind_thousands_of_a_blocked_endpoints_are_found() {
        // The scan skips the rest of an endpoint at its limit once none of its records
        // can overflow, and stops once only such records are left: never before another's.
        let measured = slot("busy", LiveLimit::measured(2, std::time::Duration::from_millis(1)));
        let busy = Ticket { due_ms: None, endpoint: Some(measured), order: Default::default() };
        let mut tickets = vec![busy.clone(); 1000];
        tickets.insert(500, ticket(None, Some(("middle", 10))));
        tickets.push(ticket(None, Some(("last", 10))));
        tickets.push(busy.clone());
        let p = partition(tickets);
        assert_eq!(p.waiting_by_endpoint.values().sum::<usize>(), 1003);
        let busy_at_limit = |s: &EndpointSlot| if s.key.as_ref() == "busy" { 2 } else { 0 };
        let d = schedule(&p, NOW, ROOMY, 100, busy_at_limit);
        assert_eq!(d.take, vec![500, 1001], "the other endpoints' records go, wherever they are");
        assert!(d.defer.is_empty(), "1,001 records at 1 ms and 2 at a time wait half a second at most");
        let mut taken = p;
        taken.take(&[500, 1001]);
        assert_eq!(taken.waiting_by_endpoint.values().sum::<usize>(), 1001, "taken records leave the count");
        // Where the last of them could overflow, none is skipped: the tail is deferred as before.
        let p = partition(vec![busy; 3000]);
        let d = schedule(&p, NOW, ROOMY, 100, busy_at_limit);
        assert_eq!(d.defer.first(), Some(&1999), "from the 2,000th on, a record would wait a second");
    }

    #[test]
    fn one_endpoint_holds_at_most_half_of_a_partitions_slots() {
        let limits = Limits { in_flight_per_partition: 8, ..ROOMY };
        let mut tickets = vec![ticket(None, Some(("steady", 1000))); 6];
        tickets.push(ticket(None, Some(("other", 1000))));
        let mut p = partition(tickets);
        assert_eq!(schedule(&p, NOW, limits, 100, idle).take, vec![0, 1, 2, 3, 6], "4 of 8 slots, then the other");
        let key = p.backlog[0].ticket.endpoint.clone().unwrap();
        for _ in 0..3 {
            p.started(&key, false);
        }
        p.in_flight = 3;
        assert_eq!(schedule(&p, NOW, limits, 100, idle).take, vec![0, 6], "3 in flight here already: one more");
        p.finished(&key, false);
        assert_eq!(p.endpoint_in_flight.get(&key.id()), Some(&2));
    }

    #[test]
    fn without_a_free_slot_nothing_goes_and_the_pause_state_holds() {
        let mut p = partition(vec![Ticket::default(); 6]);
        p.in_flight = LIMITS.in_flight_per_partition;
        p.full_since = Some(NOW - CLOGGED_AFTER_MS);
        let d = schedule(&p, NOW, LIMITS, 100, idle);
        assert_eq!((d.take.len(), d.pause), (0, Some(PauseReason::Capacity)), "6 waiting: the read-ahead is clogged");
        let mut waiting = partition(vec![ticket(Some(NOW + 60_000), None)]);
        waiting.in_flight = 1;
        waiting.paused = Some(PauseReason::NotDue);
        waiting.wake_ms = Some(NOW + 59_000);
        let d = schedule(&waiting, NOW, LIMITS, 0, idle);
        assert_eq!((d.pause, d.wake_ms), (Some(PauseReason::NotDue), Some(NOW + 59_000)), "nothing changes");
    }

    #[test]
    fn a_spent_memory_budget_pauses_for_capacity() {
        let p = partition(vec![Ticket::default(); 2]);
        let spent = Limits { memory_spent: true, ..LIMITS };
        let d = schedule(&p, NOW, spent, 100, idle);
        assert_eq!(d.pause, Some(PauseReason::Capacity));
        assert_eq!(d.take, vec![0, 1], "what is read is still worked on");
    }

    #[test]
    fn slow_endpoints_together_hold_at_most_half_the_slots_and_overflow_early() {
        let limits = Limits { in_flight_per_partition: 16, waiting_per_endpoint: 2, ..ROOMY };
        let two_seconds = std::time::Duration::from_secs(2);
        let slow = |key: &str| Ticket {
            due_ms: None,
            endpoint: Some(slot(key, LiveLimit::measured(100, two_seconds))),
            order: Default::default(),
        };
        let mut tickets = Vec::new();
        for key in ["slow-a", "slow-b", "slow-c"] {
            tickets.extend(std::iter::repeat_n(slow(key), 4));
        }
        tickets.push(ticket(None, Some(("fast", 100))));
        let mut p = partition(tickets);
        for w in p.backlog.iter_mut() {
            w.read_ms = NOW;
        }
        let d = schedule(&p, NOW, limits, 100, idle);
        assert_eq!(d.take, vec![0, 1, 2, 3, 4, 5, 6, 7, 10, 11, 12], "8 slow of 16 slots, then the fast one");
        assert_eq!(d.defer, vec![10, 11], "2 slow records may wait; the rest go at once, however young");
        // Slow records of the other partitions hold the consumer's share but 3: 3 start here.
        let consumer_nearly_full = Limits { slow_room: 3, ..limits };
        let d = schedule(&p, NOW, consumer_nearly_full, 100, idle);
        assert_eq!(
            d.take,
            vec![0, 1, 2, 5, 6, 7, 8, 9, 10, 11, 12],
            "3 slow go, 2 wait, 5 overflow, the fast one goes"
        );
        assert_eq!(d.defer, vec![5, 6, 7, 8, 9, 10, 11]);
    }

    #[test]
    fn a_read_ahead_full_for_a_while_or_twice_over_pauses_until_half() {
        let tickets = vec![ticket(None, Some(("slow", 1))); 6];
        let mut full = partition(tickets.clone());
        assert_eq!(schedule(&full, NOW, LIMITS, 100, |_| 1).pause, None, "just full: busy, the loop stops reading");
        assert_eq!(full.note_full(LIMITS.read_ahead, NOW), Some(NOW + CLOGGED_AFTER_MS), "looked at again then");
        assert_eq!(full.note_full(LIMITS.read_ahead, NOW + 50), Some(NOW + CLOGGED_AFTER_MS), "since the first time");
        let later = NOW + CLOGGED_AFTER_MS - 1;
        assert_eq!(schedule(&full, later, LIMITS, 100, |_| 1).pause, None);
        let clogged = NOW + CLOGGED_AFTER_MS;
        assert_eq!(schedule(&full, clogged, LIMITS, 100, |_| 1).pause, Some(PauseReason::Capacity), "clogged");
        let alone = Limits { others_starved: false, ..LIMITS };
        assert_eq!(schedule(&full, clogged, alone, 100, |_| 1).pause, None, "no other partition waits to be read");
        assert_eq!(full.note_full(LIMITS.read_ahead, clogged), None, "clogged already: no wake-up for it");
        let mut twice = partition(vec![Ticket::default(); 12]);
        twice.in_flight = LIMITS.in_flight_per_partition;
        assert_eq!(schedule(&twice, NOW, LIMITS, 100, idle).pause, Some(PauseReason::Capacity), "12 = 2 x 6");
        full.take(&[full.backlog.len() - 1]);
        assert_eq!(full.note_full(LIMITS.read_ahead, NOW), None, "no longer full: forgotten");
        let mut four = partition(tickets[..4].to_vec());
        four.paused = Some(PauseReason::Capacity);
        assert_eq!(schedule(&four, NOW, LIMITS, 100, |_| 1).pause, Some(PauseReason::Capacity), "4 > 6 / 2");
        let mut three = partition(tickets[..3].to_vec());
        three.paused = Some(PauseReason::Capacity);
        assert_eq!(schedule(&three, NOW, LIMITS, 100, |_| 1).pause, None, "resumes at half");
        let five = partition(tickets[..5].to_vec());
        assert_eq!(schedule(&five, NOW, LIMITS, 100, |_| 1).pause, None, "not paused before the limit");
    }

    #[test]
    fn a_draining_partition_dispatches_nothing_and_never_pauses() {
        let mut p = partition(vec![Ticket::default(); 3]);
        p.lifecycle = Lifecycle::Draining;
        let d = schedule(&p, NOW, LIMITS, 100, idle);
        assert_eq!((d.take.len(), d.pause), (0, None));
    }

    /// Records of one endpoint with a pace (a fresh endpoint: full bucket at NOW) and a limit of 100.
    fn paced(key: &str, rate: Option<&str>, burst: u32, max_wait_ms: u64, n: usize) -> Vec<Ticket> {
        let rule = Rule { rate: rate.map(|r| r.parse().unwrap()), burst, max_wait: Duration::from_millis(max_wait_ms) };
        let pace = Arc::new(Pace::new(rule, NOW));
        let slot = EndpointSlot { key: Arc::from(key), limit: LiveLimit::fixed(100), pace };
        vec![Ticket { due_ms: None, endpoint: Some(slot), order: Default::default() }; n]
    }

    #[test]
    fn a_paced_endpoint_waits_for_its_tokens_without_a_slot_and_the_others_go() {
        let mut tickets = paced("paced", Some("20/s"), 1, 30_000, 5);
        tickets.push(ticket(None, Some(("fast", 100))));
        let p = partition(tickets);
        let d = schedule(&p, NOW, ROOMY, 100, idle);
        assert_eq!((d.take, d.defer, d.paced), (vec![0, 5], vec![], vec![]), "one token: one paced record, and fast");
        assert_eq!((d.pause, d.wake_ms), (None, Some(NOW + 50)), "woken when the next token is due");
        let pace = p.backlog[0].ticket.endpoint.as_ref().unwrap().pace.clone();
        pace.take(NOW);
        let d = schedule(&p, NOW + 20, ROOMY, 100, idle);
        assert_eq!((d.take, d.wake_ms), (vec![5], Some(NOW + 50)), "the token went: paced records wait, no slot taken");
        assert_eq!(schedule(&p, NOW + 50, ROOMY, 100, idle).take, vec![0, 5], "the next one at its token");
        let burst = partition(paced("bursty", Some("20/s"), 3, 30_000, 5));
        assert_eq!(schedule(&burst, NOW, ROOMY, 100, idle).take, vec![0, 1, 2], "a burst of 3 goes at once");
    }

    #[test]
    fn a_paced_record_that_would_wait_past_its_max_wait_is_deferred_at_once() {
        let mut tickets = paced("paced", Some("20/s"), 1, 1_000, 40);
        tickets.push(ticket(None, Some(("fast", 100))));
        let p = partition(tickets);
        let d = schedule(&p, NOW, ROOMY, 100, idle);
        let late: Vec<usize> = (21..40).collect();
        assert_eq!(d.paced, late, "the 22nd from now would wait 1050 ms: it and the ones after go on at once");
        assert_eq!(d.take, [vec![0], late.clone(), vec![40]].concat(), "20 wait within the second, fast goes");
        assert!(d.defer.is_empty());
        assert_eq!((d.work(0), d.work(21), d.work(40)), (Work::Attempt, Work::Defer(Why::Pace), Work::Attempt));
        let mut young = partition(paced("paced", Some("20/s"), 1, 30_000, 40));
        for w in young.backlog.iter_mut() {
            w.read_ms = NOW;
        }
        let d = schedule(&young, NOW, ROOMY, 100, idle);
        assert!(d.defer.is_empty() && d.paced.is_empty(), "within the max wait the overflow bound (8) does not apply");
    }

    #[test]
    fn paced_records_keep_at_most_half_the_read_ahead_and_the_rest_overflow() {
        let limits = Limits { read_ahead: 10, ..ROOMY };
        let mut tickets = paced("paced", Some("20/s"), 1, 30_000, 12);
        tickets.push(ticket(None, Some(("fast", 100))));
        let p = partition(tickets);
        let d = schedule(&p, NOW, limits, 100, idle);
        assert_eq!(d.defer, (6..12).collect::<Vec<_>>(), "1 goes, 5 wait (half of 10), the rest overflow");
        assert_eq!(d.take, [vec![0], (6..13).collect()].concat());
        assert_eq!(d.pause, None, "the partition keeps fetching for the others");
    }

    #[test]
    fn a_paced_endpoint_at_its_concurrency_limit_waits_within_its_max_wait() {
        let p = partition(paced("paced", Some("20/s"), 40, 30_000, 40));
        let d = schedule(&p, NOW, ROOMY, 100, |_| 100);
        assert!(d.take.is_empty() && d.pause.is_none(), "tokens but no slot: all wait, none overflow");
    }

    #[test]
    fn a_held_endpoint_starts_nothing_until_the_hold_ends() {
        let mut tickets = paced("held", None, 1, 30_000, 12);
        tickets.push(ticket(None, Some(("fast", 100))));
        let p = partition(tickets);
        let pace = p.backlog[0].ticket.endpoint.as_ref().unwrap().pace.clone();
        pace.hold(NOW, NOW + 3_000);
        let d = schedule(&p, NOW, ROOMY, 100, idle);
        assert_eq!(d.defer, vec![8, 9, 10, 11], "8 wait out the hold, the overflow behind them is deferred");
        assert_eq!(d.take, vec![8, 9, 10, 11, 12], "fast goes");
        assert_eq!(d.wake_ms, Some(NOW + 3_000), "woken when the hold ends");
        assert_eq!(schedule(&p, NOW + 3_000, ROOMY, 100, idle).take.len(), 13, "then all go");
        pace.hold(NOW, NOW + 60_000);
        let d = schedule(&p, NOW, ROOMY, 100, idle);
        assert_eq!(d.paced, (0..12).collect::<Vec<_>>(), "a hold past the max wait defers them all at once");
        let rated = partition(paced("rated", Some("20/s"), 5, 30_000, 3));
        rated.backlog[0].ticket.endpoint.as_ref().unwrap().pace.hold(NOW, NOW + 2_000);
        let d = schedule(&rated, NOW, ROOMY, 100, idle);
        assert_eq!((d.take.len(), d.wake_ms), (0, Some(NOW + 2_000)), "a hold stops a paced endpoint's tokens too");
    }

    #[test]
    fn take_removes_the_chosen_in_order() {
        let mut p = partition(vec![Ticket::default(); 5]);
        let taken: Vec<i64> = p.take(&[1, 3, 4]).iter().map(|w| w.offset).collect();
        assert_eq!(taken, vec![1, 3, 4]);
        assert_eq!(p.backlog.iter().map(|w| w.offset).collect::<Vec<_>>(), vec![0, 2]);
    }
}
