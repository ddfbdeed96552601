//! Fan-out (SPEC "Event types, subscriptions, fan-out"): an event with a
//! `type` and no receiver goes to every endpoint whose subscription matches
//! it, one leg each. Every leg is a delivery of its own (its endpoint's
//! secrets, headers, timeout, limit, pace and circuit; its own tier records,
//! which name the leg's endpoint in `hookrelay-endpoint`, and its own dead
//! letter); the legs run concurrently, share the payload's bytes, and the
//! source record is decided once every leg is. No match: decided at once,
//! counted unmatched.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::{Notify, Semaphore};

use futures::future::join_all;

use super::in_place::{self, Leg};
use super::*;
use crate::consume::order::{order_key, Order};
use crate::consume::schedule::OVERFLOW_AFTER_MS;
use crate::endpoint::subscription::Subject;
use crate::event::hop::header;
use crate::event::{Decoded, Fanout};
use crate::route::outcome::Why;

/// What one leg holds while it runs, counted in `delivery.max_buffered_bytes`
/// with its record (whose payload all the legs share). Measured: the leg's
/// future in `fan_out` (its `deliver`, attempt and route, what `join_all`
/// keeps for it) is 3,184 B (`size_of_val`, dev build), its [`Event`] 384 B
/// plus its heap (id, URL, headers, attributes: 481 B for a leg with three
/// headers and one attribute, the test `a_leg_costs_what_the_budget_counts`).
pub const LEG_BYTES: usize = 4096;

/// Legs in flight per endpoint, in this process. A slow subscriber must not
/// hold the other subscribers' legs by filling the partitions' in-flight
/// slots with records that wait for it: past its limit plus
/// `delivery.max_waiting_per_endpoint`, a leg expected to wait
/// [`OVERFLOW_AFTER_MS`] or more for its endpoint is deferred to the next tier
/// without an attempt, and one for an endpoint that has not answered yet waits
/// for a place up to [`OVERFLOW_AFTER_MS`], then is deferred: the overflow rule
/// of single deliveries. One that keeps up takes its legs: in bench S9 (a
/// backlog, 10 endpoints at 5 ms) deferring past the bound alone sent 18,899
/// of 20,000 legs through a tier.
#[derive(Debug)]
pub struct LegLoad {
    in_flight: Mutex<HashMap<Arc<str>, Load>>,
    /// The process's legs in flight, at most `delivery.max_in_flight` as its
    /// records are: a leg takes a place before it is made (see `fan_out`).
    places: Semaphore,
}

impl LegLoad {
    pub fn new(max_in_flight: usize) -> LegLoad {
        LegLoad { in_flight: Mutex::default(), places: Semaphore::new(max_in_flight) }
    }
}

/// One endpoint's legs in flight, and what a leg waiting for a place awaits.
type Load = (usize, Arc<Notify>);

/// One leg counted in its endpoint's load until dropped.
struct Counted<'a> {
    load: &'a LegLoad,
    endpoint: Arc<str>,
}

impl LegLoad {
    /// Counts a leg of `endpoint` when `room` (given the `n` legs of it in
    /// flight) says yes; when it says wait, once a leg of it ends, up to
    /// [`OVERFLOW_AFTER_MS`]. `None`: deferred.
    async fn enter(&self, endpoint: &Arc<str>, room: impl Fn(usize) -> Room) -> Option<Counted<'_>> {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(OVERFLOW_AFTER_MS as u64);
        loop {
            let freed = {
                let mut in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
                let (n, freed) = in_flight.entry(endpoint.clone()).or_default();
                match room(*n) {
                    Room::Yes => {
                        *n += 1;
                        return Some(Counted { load: self, endpoint: endpoint.clone() });
                    }
                    Room::Wait => freed.clone(),
                    Room::No => return None,
                }
            };
            // A leg that ends meanwhile leaves a permit in `freed`: none is missed.
            tokio::time::timeout_at(deadline, freed.notified()).await.ok()?;
        }
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        let mut in_flight = self.load.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((n, freed)) = in_flight.get_mut(&self.endpoint) {
            *n -= 1;
            freed.notify_one();
            if *n == 0 {
                in_flight.remove(&self.endpoint);
            }
        }
    }
}

/// Whether a leg may join the legs of its endpoint in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Room {
    Yes,
    /// Not yet known: wait for a place (see [`LegLoad::enter`]).
    Wait,
    /// Deferred to the next tier.
    No,
}

/// Whether a leg may join the `n` legs of its endpoint in flight: within the
/// endpoint's `limit` plus `waiting`; past it when the endpoint is expected
/// (Little's law on its measured round trip) to take it within
/// [`OVERFLOW_AFTER_MS`]; not when it is expected to take longer; and before
/// the endpoint's first answer, once a place is free. Pure.
fn leg_room(n: usize, limit: usize, waiting: usize, expected_wait_ms: impl FnOnce(usize) -> Option<i64>) -> Room {
    if n < limit + waiting {
        return Room::Yes;
    }
    match expected_wait_ms(n + 1 - limit.min(n + 1)) {
        Some(wait) if wait < OVERFLOW_AFTER_MS => Room::Yes,
        Some(_) => Room::No,
        None => Room::Wait,
    }
}

/// What `prepare` decoded: one event (or why not), or a fan-out.
pub(super) struct Decode {
    pub(super) event: Result<Event, InvalidEvent>,
    pub(super) fanout: Option<Fanout>,
}

impl Relay {
    /// Decodes a record. A fan-out event is the one leg `leg` names (see
    /// [`Relay::leg_of`]: a tier record's, or a sealed replay's); else it fans out.
    pub(super) fn decode(
        &self,
        headers: &RecordHeaders,
        leg: Option<&str>,
        value: &[u8],
        default_id: impl FnOnce() -> String,
    ) -> Decode {
        let endpoints = &self.shared.endpoints;
        match endpoints.decode_record(headers, value, default_id) {
            Ok(Decoded::One(event)) => Decode { event: Ok(event), fanout: None },
            Err(invalid) => Decode { event: Err(invalid), fanout: None },
            Ok(Decoded::Fanout(fanout)) => match leg {
                Some(name) => Decode { event: endpoints.leg(&fanout, name), fanout: None },
                // Never read: `process` fans out first.
                None => Decode { event: Err(InvalidEvent::Target), fanout: Some(fanout) },
            },
        }
    }

    /// The leg a record carries, if it is one: on a tier, the endpoint its
    /// `hookrelay-endpoint` header names (the relay wrote it); on an event
    /// topic only a replayed leg's, when the replay seal holds over it
    /// (`trusted` is what [`trusted_on_event_topic`] kept), so a producer
    /// cannot address one subscriber of a fan-out by a header.
    pub(super) fn leg_of(&self, headers: &RecordHeaders, trusted: Option<&RecordHeaders>) -> Option<Box<str>> {
        let believed = if self.tier.is_some() { Some(headers) } else { trusted };
        believed?.last(header::ENDPOINT).map(Box::from)
    }

    /// A record's order keys and what its legs will hold (see [`Relay::legs_of`]).
    /// Ordered per key on the event topics only: tier records (from before the
    /// endpoint was ordered) are past keeping an order. No key, no order. A
    /// fan-out's record has a key per ordered leg.
    pub(super) fn order_of(
        &self,
        event: &Result<Event, InvalidEvent>,
        fanout: Option<&Fanout>,
        key: Option<&[u8]>,
    ) -> (Order, usize) {
        match (fanout, event, self.tier, key) {
            (Some(fanout), ..) => {
                let (bytes, order) = self.legs_of(fanout, key);
                (order, bytes)
            }
            (None, Ok(e), None, Some(key)) if e.ordered => (Box::new([order_key(&e.endpoint_key, key)]), 0),
            _ => (Order::default(), 0),
        }
    }

    /// What the legs of `fanout` will hold, [`LEG_BYTES`] each, counted when the
    /// record is read (none over `delivery.max_fanout`: it goes dead unfanned),
    /// and its order keys: one per matching endpoint that keeps its keys' order,
    /// for a record with a key on an event topic. The legs are matched again
    /// when it is worked on, after a registry change maybe a few more or less:
    /// an estimate, as the rest of the budget is, and an order kept for the
    /// endpoints that were ordered when it was read.
    fn legs_of(&self, fanout: &Fanout, key: Option<&[u8]>) -> (usize, Order) {
        let shared = &*self.shared;
        let index = shared.subscriptions.index();
        let names = index.matching(&Subject::from(fanout));
        if names.len() > shared.max_fanout {
            return (0, Order::default());
        }
        let order = match (key, self.tier) {
            (Some(key), None) => {
                names.iter().filter(|name| shared.endpoints.ordered(name)).map(|name| order_key(name, key)).collect()
            }
            _ => Order::default(),
        };
        (names.len() * LEG_BYTES, order)
    }

    /// One leg per matching endpoint, concurrently; decided once every leg is.
    pub(super) async fn fan_out(&self, prepared: &Prepared, fanout: &Fanout, cancel: &CancellationToken) -> Done {
        let shared = &*self.shared;
        let Prepared { record, headers, hop, .. } = prepared;
        let original = Original { key: record.key(), value: record.payload(), headers };
        let index = shared.subscriptions.index();
        let names = index.matching(&Subject::from(fanout));
        if names.is_empty() {
            metrics::event_unmatched(record.topic(), &fanout.own.id, fanout.attributes.r#type.as_deref());
            return Done::Decided;
        }
        if names.len() > shared.max_fanout {
            let error =
                format!("the event matches {} endpoints, over delivery.max_fanout {}", names.len(), shared.max_fanout);
            let relay = RelayHeaders {
                hop,
                destination: Destination::Dead { reason: DeadReason::InvalidEvent },
                last_status: None,
                last_error: Some(&error),
                endpoint: "invalid",
            };
            let log = Entry::without_attempt(&fanout.own.id, "invalid", hop.attempts, At::of(record), Some(&error));
            return self.send_dead(&original, relay, &log, cancel).await;
        }
        metrics::fanned_out(names.len());
        // A leg waits for a place in the process before it is made: the records
        // in flight times their legs were all made at once, 3 KiB each (bench S9,
        // 1,024 records of 10 legs: peak RSS 1.20x S1's).
        let legs = names.iter().map(|name| async move {
            // A record retried in place for an ordered leg runs again: what is decided is not sent again.
            let kept = prepared.legs.as_ref().map(|legs| legs.get(name));
            let hop = match kept {
                Some(Some(Leg::Decided)) => return Done::Decided,
                Some(Some(Leg::Again { due_ms, .. })) if due_ms > now_ms() => return Done::Again { due_ms },
                Some(Some(Leg::Again { hop, .. })) => hop,
                _ => hop.clone(),
            };
            let _place = tokio::select! {
                place = shared.leg_load.places.acquire() => place,
                _ = cancel.cancelled() => return Done::Abandoned,
            };
            Box::pin(self.leg(prepared, fanout, name, hop, cancel)).await
        });
        let done = join_all(legs).await;
        if done.iter().any(|d| matches!(d, Done::Abandoned)) {
            // Read again later: the legs that were delivered may repeat (same webhook-id).
            return Done::Abandoned;
        }
        // Back in place, holding its offset and its keys, until every ordered leg is decided.
        match done.iter().filter_map(|d| if let Done::Again { due_ms } = d { Some(*due_ms) } else { None }).min() {
            Some(due_ms) => Done::Again { due_ms },
            None => Done::Decided,
        }
    }

    /// One leg, from its attempt to its route. An ordered leg of a record that
    /// keeps its legs ([`Prepared::legs`]) is retried in place as an ordered
    /// record is; what became of it is kept for the record's next run.
    async fn leg(
        &self,
        prepared: &Prepared,
        fanout: &Fanout,
        name: &str,
        hop: Hop,
        cancel: &CancellationToken,
    ) -> Done {
        let shared = &*self.shared;
        let mut event = match shared.endpoints.leg(fanout, name) {
            Ok(event) => event,
            // Matched a moment ago, deleted since: nothing to deliver to.
            Err(_) => return Done::Decided,
        };
        if let Some(context) = &prepared.trace {
            context.apply(&mut event.headers);
        }
        let (limit, _) = shared.states.slot(&event.endpoint_key, event.endpoint_name.is_none());
        let room = |n| leg_room(n, limit.get(), shared.max_waiting_per_endpoint, |a| limit.expected_wait_ms(a));
        let counted = shared.leg_load.enter(&event.endpoint_key, room).await;
        let work = if counted.is_some() { Work::Attempt } else { Work::Defer(Why::Overflow) };
        let in_place = prepared.legs.as_ref().filter(|_| event.ordered).map(|_| in_place::Kept::default());
        let done = self.deliver(prepared, hop.clone(), &event, work, in_place.as_ref(), cancel).await;
        if let Some(legs) = &prepared.legs {
            match (&done, &in_place) {
                (Done::Again { due_ms }, Some(kept)) => {
                    legs.set(name, Leg::Again { hop: kept.hop(&hop), due_ms: *due_ms })
                }
                (Done::Abandoned, _) => {}
                _ => legs.set(name, Leg::Decided),
            }
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leg_past_the_bound_waits_only_for_an_endpoint_that_keeps_up() {
        // (legs in flight, expected wait of the leg past the limit: None before the first answer, room)
        let cases: &[(usize, Option<i64>, Room)] = &[
            (0, None, Room::Yes),
            (9, None, Room::Yes),       // limit 2 + waiting 8: the 10th fits
            (10, None, Room::Wait),     // past it, nothing measured yet: waits for a place
            (10, Some(999), Room::Yes), // a fast endpoint: waits its turn
            (500, Some(250), Room::Yes),
            (10, Some(1_000), Room::No), // a slow one: deferred
        ];
        for &(n, wait, room) in cases {
            assert_eq!(leg_room(n, 2, 8, |_| wait), room, "{n} in flight, expected {wait:?}");
        }
        // The wait asked for is the new leg's place behind the limit.
        let mut asked = None;
        leg_room(10, 2, 8, |ahead| {
            asked = Some(ahead);
            None
        });
        assert_eq!(asked, Some(9));
    }

    #[tokio::test]
    async fn a_waiting_leg_takes_a_freed_place_or_is_deferred_after_a_second() {
        let load = LegLoad::new(8);
        let b: Arc<str> = Arc::from("b");
        let one = |n: usize| if n < 1 { Room::Yes } else { Room::Wait };
        let first = load.enter(&b, one).await.expect("room for one");
        let started = std::time::Instant::now();
        // The first leg ends once the second waits: the second takes its place.
        let (second, ()) = tokio::join!(load.enter(&b, one), async {
            tokio::task::yield_now().await;
            drop(first);
        });
        assert!(second.is_some(), "the freed place is taken");
        assert!(started.elapsed().as_millis() < OVERFLOW_AFTER_MS as u128, "without waiting out the second");
        let started = std::time::Instant::now();
        assert!(load.enter(&b, one).await.is_none(), "no place freed: deferred");
        assert!(started.elapsed().as_millis() >= OVERFLOW_AFTER_MS as u128, "after OVERFLOW_AFTER_MS");
    }
}
