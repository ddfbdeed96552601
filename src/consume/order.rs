//! Per-key order within a partition (`ordering = "key"`): which waiting records of an ordered key may be looked at. Pure.
//!
//! A record with an order key (its endpoint's name and its Kafka record key,
//! hashed) goes only when no record of the same key is in flight in its
//! partition and no earlier record of that key still waits in the backlog.
//! The backlog is in offset order, so a scan front to back that lets the first
//! record of each key through, and no other, keeps each key's offset order:
//! also across in-place retries, because a retried record goes back into the
//! backlog at its offset and blocks its key again until it is due.

use std::hash::{Hash, Hasher};

/// The order key of a record of an ordered endpoint: its endpoint and its
/// Kafka record key, hashed (see `order::order_key`).
pub type OrderKey = u64;

/// The order keys of a record: none (unordered; no allocation), one (a record
/// to an ordered endpoint), or one per ordered leg of a fan-out, which goes
/// only when each of its keys would let it.
pub type Order = Box<[OrderKey]>;

/// Order keys are hashes already: the Fx hash (one multiplication) spreads them.
pub type KeySet = rustc_hash::FxHashSet<OrderKey>;

/// The order key of a record with Kafka key `record_key` to `endpoint`. A
/// collision (1 in 2^64 per pair) would only serialise two keys, never reorder one.
pub fn order_key(endpoint: &str, record_key: &[u8]) -> OrderKey {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    endpoint.hash(&mut hasher);
    record_key.hash(&mut hasher);
    hasher.finish()
}

/// Waiting records behind their key, per partition, at most this many times
/// `max_read_ahead_per_partition`: they do not count toward the read-ahead
/// (other keys keep flowing), so they need a bound of their own.
pub const KEY_WAITING_FACTOR: usize = 4;

/// What one scan of a backlog knows about keys.
#[derive(Debug)]
pub struct KeyGate<'a> {
    /// Keys of records in flight in this partition.
    in_flight: &'a KeySet,
    /// Keys whose first waiting record this scan has seen (taken or not).
    seen: KeySet,
    /// Records of this scan that wait for their key, not for a slot: behind an
    /// earlier record of their key, or an in-place retry not yet due.
    pub waiting: usize,
}

/// Whether a record may be looked at further.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Unordered, or the first of its key: the usual rules (due, slots) decide.
    Open,
    /// An earlier record of its key is in flight or waits: it waits too.
    Behind,
}

impl<'a> KeyGate<'a> {
    pub fn new(in_flight: &'a KeySet) -> KeyGate<'a> {
        KeyGate { in_flight, seen: KeySet::default(), waiting: 0 }
    }

    /// Asks for the record with order keys `keys`, in backlog order. The first
    /// record of a key not in flight is let through and blocks its key for
    /// the rest of the scan, whether it goes now or not. A record of several
    /// keys (a fan-out's ordered legs) goes when it is the first of each, and
    /// blocks each of them either way: a later record of any one of its keys
    /// must not overtake it.
    pub fn ask(&mut self, keys: &[OrderKey]) -> Gate {
        let mut behind = false;
        for &key in keys {
            behind |= self.in_flight.contains(&key) | !self.seen.insert(key);
        }
        if behind {
            self.waiting += 1;
            return Gate::Behind;
        }
        Gate::Open
    }

    /// The record let through for `key` waits for its own due time (an in-place retry).
    pub fn not_due(&mut self) {
        self.waiting += 1;
    }

    /// Whether any ordered record was seen or is in flight: a scan that stops
    /// early for want of slots still counts the records behind their keys.
    pub fn active(&self) -> bool {
        !self.in_flight.is_empty() || !self.seen.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_record_of_each_key_goes_and_the_rest_wait_behind_it() {
        // (in flight, the backlog's keys in offset order) -> the gates, and how many wait for their key.
        type Case = (&'static [u64], &'static [Option<u64>], &'static [Gate], usize);
        use Gate::{Behind, Open};
        let cases: &[Case] = &[
            (&[], &[Some(1), Some(2), Some(1), Some(2)], &[Open, Open, Behind, Behind], 2),
            (&[1], &[Some(1), Some(2), Some(1)], &[Behind, Open, Behind], 2),
            (&[], &[None, None, Some(3), None], &[Open, Open, Open, Open], 0),
            (&[7], &[None, Some(8)], &[Open, Open], 0),
            (&[], &[], &[], 0),
        ];
        for (in_flight, keys, gates, waiting) in cases {
            let in_flight: KeySet = in_flight.iter().copied().collect();
            let mut gate = KeyGate::new(&in_flight);
            let got: Vec<Gate> = keys.iter().map(|k| gate.ask(k.as_slice())).collect();
            assert_eq!(&got, gates, "{in_flight:?} {keys:?}");
            assert_eq!(gate.waiting, *waiting, "{in_flight:?} {keys:?}");
        }
    }

    #[test]
    fn a_record_of_several_keys_goes_first_of_each_and_blocks_each() {
        // (in flight, the backlog's keys in offset order) -> the gates: a fan-out's
        // record carries one key per ordered leg.
        use Gate::{Behind, Open};
        type Case = (&'static [u64], &'static [&'static [u64]], &'static [Gate]);
        let cases: &[Case] = &[
            // {1,2} behind 1; the record of 2 after it must not overtake it.
            (&[], &[&[1], &[1, 2], &[2]], &[Open, Behind, Behind]),
            (&[], &[&[1, 2], &[3], &[2, 3]], &[Open, Open, Behind]),
            (&[2], &[&[1, 2], &[1]], &[Behind, Behind]),
            (&[], &[&[], &[1, 2], &[]], &[Open, Open, Open]),
        ];
        for (in_flight, keys, gates) in cases {
            let in_flight: KeySet = in_flight.iter().copied().collect();
            let mut gate = KeyGate::new(&in_flight);
            let got: Vec<Gate> = keys.iter().map(|k| gate.ask(k)).collect();
            assert_eq!(&got, gates, "{in_flight:?} {keys:?}");
        }
    }

    /// The scheduler's rules for ordered records (`schedule::schedule`), by table.
    mod schedule {
        use crate::consume::partition::{Partition, PauseReason, Waiting, RESUME_LEAD_MS};
        use crate::consume::schedule::tests::{self, slot};
        use crate::consume::schedule::{schedule, Limits};
        use crate::consume::ticket::Ticket;
        use crate::endpoint::limit::LiveLimit;

        const NOW: i64 = 1_000_000;
        /// Read-ahead 4: at most 16 records behind keys.
        const LIMITS: Limits = Limits {
            in_flight_per_partition: 8,
            read_ahead: 4,
            waiting_per_endpoint: 8,
            slow_room: usize::MAX,
            memory_spent: false,
            others_starved: true,
        };

        /// Records of endpoint `e` (limit 2, so that it can be full) with order keys; `due` in ms from now.
        fn partition(records: &[(Option<u64>, Option<i64>)]) -> Partition<()> {
            let ticket = |&(order, due): &(Option<u64>, Option<i64>)| Ticket {
                due_ms: due.map(|d| NOW + d),
                endpoint: Some(slot("e", LiveLimit::fixed(2))),
                order: order.into_iter().collect(),
            };
            tests::partition(records.iter().map(ticket).collect())
        }

        #[test]
        fn one_record_per_key_goes_and_the_rest_wait_behind_it() {
            type Case = (&'static str, &'static [(Option<u64>, Option<i64>)], &'static [u64], &'static [usize], usize);
            let cases: &[Case] = &[
                ("one per key", &[(Some(1), None), (Some(1), None), (Some(2), None), (Some(2), None)], &[], &[0, 2], 2),
                ("key 1 in flight: only key 2", &[(Some(1), None), (Some(2), None), (Some(1), None)], &[1], &[1], 2),
                ("behind a not-due retry", &[(Some(1), Some(5_000)), (Some(1), None), (Some(2), None)], &[], &[2], 2),
                ("a due retry goes first", &[(Some(1), Some(-1)), (Some(1), None)], &[], &[0], 1),
                ("no key: unordered", &[(None, None), (None, None), (None, None)], &[], &[0, 1], 0),
            ];
            for (name, records, in_flight, take, key_waiting) in cases {
                let mut p = partition(records);
                p.keys_in_flight.extend(in_flight.iter().copied());
                let d = schedule(&p, NOW, LIMITS, 100, |_| 0);
                assert_eq!(&d.take, take, "{name}");
                assert_eq!(d.key_waiting, *key_waiting, "{name}");
                assert!(d.defer.is_empty(), "{name}");
            }
        }

        #[test]
        fn an_ordered_record_waiting_for_its_endpoint_is_never_deferred() {
            // 20 keys of an endpoint that is full, in a full read-ahead (so an overflow
            // would let the partition read on): unordered, 8 wait and 12 overflow; ordered, all wait.
            let unordered: Vec<_> = (0..20).map(|_| (None, None)).collect();
            let ordered: Vec<_> = (0..20).map(|k| (Some(k), None)).collect();
            let limits = Limits { read_ahead: 20, in_flight_per_partition: 100, ..LIMITS };
            assert_eq!(schedule(&partition(&unordered), NOW, limits, 100, |_| 2).defer.len(), 12);
            let d = schedule(&partition(&ordered), NOW, limits, 100, |_| 2);
            assert!(d.take.is_empty() && d.defer.is_empty(), "{d:?}");
            assert_eq!(d.pause, None);
        }

        #[test]
        fn records_behind_a_key_do_not_fill_the_read_ahead_but_have_a_bound_of_their_own() {
            // Key 1 in flight with 10 records behind it, read-ahead 4: key 2 still flows, no pause.
            let mut records = vec![(Some(1), None); 10];
            records.push((Some(2), None));
            let mut p = partition(&records);
            p.keys_in_flight.insert(1);
            let d = schedule(&p, NOW, LIMITS, 100, |_| 0);
            assert_eq!((d.take.clone(), d.pause, d.key_waiting), (vec![10], None, 10));
            // At the bound (16) the partition pauses, visibly, and resumes at half.
            let mut p = partition(&vec![(Some(1), None); 16]);
            p.keys_in_flight.insert(1);
            assert_eq!(schedule(&p, NOW, LIMITS, 100, |_| 0).pause, Some(PauseReason::Ordered));
            let mut p = partition(&vec![(Some(1), None); 9]);
            p.keys_in_flight.insert(1);
            p.paused = Some(PauseReason::Ordered);
            assert_eq!(schedule(&p, NOW, LIMITS, 100, |_| 0).pause, Some(PauseReason::Ordered), "9 > 16 / 2");
            p.take(&[p.backlog.len() - 1]);
            assert_eq!(schedule(&p, NOW, LIMITS, 100, |_| 0).pause, None, "resumes at half");
        }

        #[test]
        fn an_in_place_retry_wakes_the_loop_at_its_due_time_without_pausing_for_time() {
            let p = partition(&[(Some(1), Some(60_000)), (Some(1), None)]);
            let d = schedule(&p, NOW, LIMITS, 100, |_| 0);
            assert!(d.take.is_empty());
            assert_eq!(d.pause, None, "other keys' records keep coming");
            assert_eq!(d.wake_ms, Some(NOW + 60_000), "no resume lead: the partition is not paused");
            // An unordered tier record far ahead still pauses for time, as before.
            let tier = partition(&[(None, Some(60_000))]);
            let d = schedule(&tier, NOW, LIMITS, 100, |_| 0);
            assert_eq!((d.pause, d.wake_ms), (Some(PauseReason::NotDue), Some(NOW + 60_000 - RESUME_LEAD_MS)));
        }

        #[test]
        fn a_record_retried_in_place_goes_back_at_its_offset() {
            let mut p = partition(&[(Some(1), None), (Some(2), None), (Some(1), None), (Some(3), None)]);
            let taken = p.take(&[0, 1]);
            let first = taken.into_iter().next().unwrap();
            p.requeue(Waiting { ticket: Ticket { due_ms: Some(NOW + 1_000), ..first.ticket.clone() }, ..first });
            assert_eq!(p.backlog.iter().map(|w| w.offset).collect::<Vec<_>>(), vec![0, 2, 3]);
            let d = schedule(&p, NOW, LIMITS, 100, |_| 0);
            assert_eq!(d.take, vec![2], "key 1 waits behind its retry, key 3 goes");
            assert_eq!(d.wake_ms, Some(NOW + 1_000));
        }

        #[test]
        fn without_free_slots_records_behind_keys_are_still_counted_and_not_read_ahead() {
            // Room for 1: key 1's head goes; the scan goes on counting what waits behind keys.
            let mut records = vec![(Some(1), None); 6];
            records.push((Some(2), None));
            let p = partition(&records);
            let d = schedule(&p, NOW, LIMITS, 1, |_| 0);
            assert_eq!((d.take.clone(), d.key_waiting, d.pause), (vec![0], 5, None), "key 2 waits for a slot: 1 < 4");
        }
    }

    #[test]
    fn an_order_key_is_the_endpoint_and_the_record_key() {
        assert_eq!(order_key("billing", b"customer-1"), order_key("billing", b"customer-1"));
        assert_ne!(order_key("billing", b"customer-1"), order_key("billing", b"customer-2"));
        assert_ne!(order_key("billing", b"customer-1"), order_key("crm", b"customer-1"));
        assert_ne!(order_key("ab", b"c"), order_key("a", b"bc"), "the endpoint's end is marked");
    }
}
