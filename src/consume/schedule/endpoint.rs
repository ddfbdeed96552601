//! What the scan decides for a due record of one endpoint: start it, leave
//! it waiting for a slot or its pace, or defer it (overflow, pace) when
//! waiting would hold others back.

use super::{Decision, Scan, ENDPOINT_SHARE, OVERFLOW_AFTER_MS};
use crate::consume::partition::Waiting;
use crate::consume::ticket::EndpointSlot;
use crate::route::outcome::Why;

impl<R> Scan<'_, R> {
    /// A due record of `slot`'s endpoint, with `load` of its records in flight in the whole consumer.
    pub(super) fn decide(&mut self, waiting: &Waiting<R>, slot: &EndpointSlot, load: usize) -> Decision {
        let (id, now_ms, ordered) = (slot.id(), self.now_ms, !waiting.ticket.order.is_empty());
        let starting = self.started.get(&id).copied().unwrap_or(0);
        let here = self.partition.endpoint_in_flight.get(&id).copied().unwrap_or(0) + starting;
        // Behind the records of its endpoint that go or wait before it in this partition
        // (counted only for a rate: the scan is the loop's hot path).
        let pace_wait = match slot.pace.is_paced() {
            true => slot.pace.wait_ms(now_ms, starting + self.queued.get(&id).copied().unwrap_or(0) + 1),
            false => slot.pace.held_ms(now_ms),
        };
        // An ordered record waits for its pace however long: it is never deferred.
        if pace_wait > slot.pace.max_wait_ms() && !ordered {
            return Decision::Defer(Why::Pace);
        }
        // Slow endpoints together hold at most a share of the partition's slots, and
        // their records waiting here are bounded together: however many such
        // endpoints a partition carries, the others keep slots and read-ahead.
        let slow = slot.limit.is_slow();
        let slow_full = slow
            && (self.partition.slow_in_flight + self.slow_started >= self.share
                || self.slow_started >= self.limits.slow_room);
        // At its limit in the whole consumer: a completion of the endpoint in
        // any partition is what frees it, so the loop is told (see `crowded`).
        let at_limit = load + starting >= slot.limit.get();
        if at_limit {
            self.crowded.insert(id, ());
        }
        if !(pace_wait > 0 || at_limit || here >= self.share || slow_full) {
            *self.started.entry(id).or_default() += 1;
            self.slow_started += usize::from(slow);
            return Decision::Start;
        }
        if pace_wait > 0 {
            self.pace_at = Some(self.pace_at.map_or(now_ms + pace_wait, |at| at.min(now_ms + pace_wait)));
        }
        if ordered {
            // Never deferred: a deferral would let the next record of its key overtake it.
            return Decision::Wait;
        }
        if slot.pace.is_paced() {
            self.paced_waiting += 1;
            if self.paced_waiting > self.limits.read_ahead / ENDPOINT_SHARE {
                return Decision::Defer(Why::Overflow);
            }
            *self.queued.entry(id).or_default() += 1;
            return Decision::Wait;
        }
        self.overflow(waiting, slot, slow, pace_wait)
    }

    /// A record that must wait for its endpoint: past the endpoint's waiting
    /// bound, and expected to wait [`OVERFLOW_AFTER_MS`], it overflows.
    fn overflow(&mut self, waiting: &Waiting<R>, slot: &EndpointSlot, slow: bool, pace_wait: i64) -> Decision {
        let (id, now_ms, bound) = (slot.id(), self.now_ms, self.limits.waiting_per_endpoint);
        let ahead = {
            let ahead = self.queued.entry(id).or_default();
            *ahead += 1;
            *ahead
        };
        self.slow_queued += usize::from(slow);
        // Deferring helps only someone this endpoint holds up: with nobody else
        // waiting here and room to read, its records wait for its own slots, so a
        // lone endpoint is served as fast as its latency and limit allow.
        let protects = self.protects_others(id);
        let past_bound = protects && (ahead > bound || (slow && self.slow_queued > bound));
        // A hold adds to the wait (and before the endpoint ever answered, is all of it).
        let expected = |ahead| match slot.limit.expected_wait_ms(ahead) {
            wait if pace_wait == 0 => wait,
            wait => Some(wait.unwrap_or(0) + pace_wait),
        };
        let overflows_at = match past_bound.then(|| expected(ahead)) {
            // A slow endpoint's record past the bound would wait at least a round trip.
            _ if past_bound && slow => now_ms,
            None => i64::MAX,
            Some(Some(wait)) if wait >= OVERFLOW_AFTER_MS => now_ms,
            Some(Some(_)) => i64::MAX,
            Some(None) => waiting.read_ms + OVERFLOW_AFTER_MS,
        };
        if past_bound && overflows_at <= now_ms {
            return Decision::Defer(Why::Overflow);
        }
        if past_bound && overflows_at < i64::MAX {
            self.overflow_at = Some(self.overflow_at.map_or(overflows_at, |at| at.min(overflows_at)));
        }
        // Blocked for the rest of this scan (its count here and in the consumer
        // only grow): settled, unless a later record of it could still overflow
        // (one of a slow or held endpoint may, however few wait).
        let total = self.partition.waiting_by_endpoint.get(&id).filter(|_| !slow && pace_wait == 0);
        if let Some(&total) = total {
            let left = total.saturating_sub(self.seen.get(&id).copied().unwrap_or(0));
            let most = ahead + left;
            let may_overflow = protects && most > bound && expected(most).is_none_or(|wait| wait >= OVERFLOW_AFTER_MS);
            if !may_overflow {
                self.settled.insert(id, ());
                self.open = self.open.saturating_sub(left);
            }
        }
        Decision::Wait
    }

    /// Would deferring a record of endpoint `id` help anyone? Only while records
    /// of other endpoints (or of none) wait in this partition behind its own, or
    /// while the partition cannot read more (its read-ahead or the memory budget full).
    fn protects_others(&self, id: usize) -> bool {
        let partition = self.partition;
        let own = partition.waiting_by_endpoint.get(&id).copied().unwrap_or(0);
        own < partition.waiting() || partition.waiting() >= self.limits.read_ahead || self.limits.memory_spent
    }
}
