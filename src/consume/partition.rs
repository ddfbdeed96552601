//! One partition's state and the pure scheduler: which waiting records go now, whether to pause, when to wake.
//!
//! # Lifecycle
//! ```text
//! assigned -> Consuming --revoke or drain--> Draining --in-flight done or grace over--> (removed; offsets committed)
//! ```
//! While Consuming, records wait in the backlog until they are due (retry
//! tiers), a slot is free (per-partition and per-consumer in-flight limits)
//! and their endpoint has room. Draining takes no new work and never resumes.

use std::collections::{HashMap, VecDeque};

use tokio_util::sync::CancellationToken;

use super::handler::Ticket;
use crate::offsets::OffsetTracker;

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
}

impl PauseReason {
    pub const ALL: [PauseReason; 2] = [PauseReason::Capacity, PauseReason::NotDue];

    pub fn as_str(self) -> &'static str {
        match self {
            PauseReason::Capacity => "capacity",
            PauseReason::NotDue => "not_due",
        }
    }
}

/// A record read but not yet handed to its handler.
pub struct Waiting<R> {
    pub offset: i64,
    pub ticket: Ticket,
    pub record: R,
}

pub struct Partition<R> {
    /// Tells this assignment's completions from a previous one's.
    pub generation: u64,
    pub lifecycle: Lifecycle,
    pub tracker: OffsetTracker,
    pub in_flight: usize,
    pub backlog: VecDeque<Waiting<R>>,
    pub paused: Option<PauseReason>,
    /// When a waiting record needs the loop's attention (ms), if one waits for time.
    pub wake_ms: Option<i64>,
    /// Cancels this partition's handlers once it is let go: work abandoned
    /// past a revoke's grace must stop, or it would race the next owner.
    pub cancel: CancellationToken,
}

impl<R> Partition<R> {
    pub fn new(generation: u64, cancel: CancellationToken) -> Partition<R> {
        Partition {
            generation,
            cancel,
            lifecycle: Lifecycle::Consuming,
            tracker: OffsetTracker::default(),
            in_flight: 0,
            backlog: VecDeque::new(),
            paused: None,
            wake_ms: None,
        }
    }

    /// No new work from here on; waiting records are read again by whoever consumes next.
    pub fn stop(&mut self) {
        self.lifecycle = Lifecycle::Draining;
        self.backlog.clear();
    }

    /// Removes the records `schedule` chose (indices ascending), in backlog order.
    pub fn take(&mut self, chosen: &[usize]) -> Vec<Waiting<R>> {
        let mut taken: Vec<Waiting<R>> =
            chosen.iter().rev().map(|&i| self.backlog.remove(i).expect("chosen index in range")).collect();
        taken.reverse();
        taken
    }
}

/// The limits `schedule` works within.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub in_flight_per_partition: usize,
    /// Records read ahead per partition before it pauses (resumes at half).
    pub read_ahead: usize,
}

/// What to do with a partition now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dispatch {
    /// Backlog indices to hand to handlers now, ascending.
    pub take: Vec<usize>,
    /// Whether the partition should be paused, and why.
    pub pause: Option<PauseReason>,
    /// When to look at the partition again for time's sake (ms).
    pub wake_ms: Option<i64>,
}

/// Decides which waiting records of `partition` go now and its pause state. Pure.
///
/// Any due record is dispatched, not only the head: jitter can make a later
/// record due first, and the offset tracker copes with any order. A record
/// whose endpoint is full waits without taking a slot, so the records behind
/// it for other endpoints can go. `free` is how many more records the whole
/// consumer may start; `endpoint_load` how many each endpoint has in flight.
///
/// Pause rules: a partition none of whose waiting records is due within
/// [`RESUME_LEAD_MS`] is paused (and woken that long before the earliest is
/// due); one whose backlog reached `read_ahead` is paused until it is down to
/// half. Otherwise it fetches, so that records are at hand when due.
pub fn schedule<R>(
    partition: &Partition<R>,
    now_ms: i64,
    limits: Limits,
    free: usize,
    endpoint_load: impl Fn(&str) -> usize,
) -> Dispatch {
    let consuming = partition.lifecycle == Lifecycle::Consuming;
    let mut take = Vec::new();
    let mut started: HashMap<&str, usize> = HashMap::new();
    let room = limits.in_flight_per_partition.saturating_sub(partition.in_flight).min(free);
    let mut due_left = false;
    for (i, waiting) in partition.backlog.iter().enumerate() {
        if !consuming {
            break;
        }
        if waiting.ticket.due_ms.is_some_and(|due| due > now_ms) {
            continue;
        }
        let endpoint_full =
            waiting.ticket.endpoint.as_ref().is_some_and(|slot| {
                endpoint_load(&slot.key) + started.get(&*slot.key).copied().unwrap_or(0) >= slot.limit
            });
        if endpoint_full || take.len() >= room {
            due_left = true;
            continue;
        }
        if let Some(slot) = &waiting.ticket.endpoint {
            *started.entry(&*slot.key).or_default() += 1;
        }
        take.push(i);
    }
    let next_due = partition.backlog.iter().filter_map(|w| w.ticket.due_ms).filter(|&due| due > now_ms).min();
    let waiting_for_time = !due_left && next_due.is_some_and(|due| due - now_ms > RESUME_LEAD_MS);
    let left = partition.backlog.len() - take.len();
    let full = match partition.paused {
        // Hysteresis: a partition paused for capacity resumes at half, not at limit - 1.
        Some(PauseReason::Capacity) => left > limits.read_ahead / 2,
        _ => left >= limits.read_ahead,
    };
    let pause = match () {
        _ if !consuming => None,
        _ if full => Some(PauseReason::Capacity),
        _ if waiting_for_time => Some(PauseReason::NotDue),
        _ => None,
    };
    let wake_ms = next_due.map(|due| if pause == Some(PauseReason::NotDue) { due - RESUME_LEAD_MS } else { due });
    Dispatch { take, pause, wake_ms }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::consume::handler::EndpointSlot;

    const NOW: i64 = 1_000_000;
    const LIMITS: Limits = Limits { in_flight_per_partition: 4, read_ahead: 6 };

    fn ticket(due_ms: Option<i64>, endpoint: Option<(&str, usize)>) -> Ticket {
        Ticket { due_ms, endpoint: endpoint.map(|(key, limit)| EndpointSlot { key: Arc::from(key), limit }) }
    }

    fn partition(tickets: Vec<Ticket>) -> Partition<()> {
        let mut p = Partition::new(1, CancellationToken::new());
        for (offset, ticket) in tickets.into_iter().enumerate() {
            p.backlog.push_back(Waiting { offset: offset as i64, ticket, record: () });
        }
        p
    }

    fn idle(_: &str) -> usize {
        0
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
        let d = schedule(&p, NOW, LIMITS, 100, |e| if e == "slow" { 1 } else { 0 });
        assert_eq!(d.take, vec![0, 2], "one slot left for slow, fast goes");
        assert_eq!(d.pause, None);
    }

    #[test]
    fn nothing_due_for_long_pauses_and_wakes_ahead() {
        let p = partition(vec![ticket(Some(NOW + 60_000), None), ticket(Some(NOW + 30_000), None)]);
        let d = schedule(&p, NOW, LIMITS, 100, idle);
        assert!(d.take.is_empty());
        assert_eq!(d.pause, Some(PauseReason::NotDue));
        assert_eq!(d.wake_ms, Some(NOW + 30_000 - RESUME_LEAD_MS));
        let empty = partition(vec![]);
        assert_eq!(schedule(&empty, NOW, LIMITS, 100, idle), Dispatch { take: vec![], pause: None, wake_ms: None });
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
    fn a_full_read_ahead_pauses_until_half() {
        let tickets = vec![ticket(None, Some(("slow", 1))); 6];
        let full = partition(tickets.clone());
        assert_eq!(schedule(&full, NOW, LIMITS, 100, |_| 1).pause, Some(PauseReason::Capacity));
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

    #[test]
    fn take_removes_the_chosen_in_order() {
        let mut p = partition(vec![Ticket::default(); 5]);
        let taken: Vec<i64> = p.take(&[1, 3, 4]).iter().map(|w| w.offset).collect();
        assert_eq!(taken, vec![1, 3, 4]);
        assert_eq!(p.backlog.iter().map(|w| w.offset).collect::<Vec<_>>(), vec![0, 2]);
    }
}
