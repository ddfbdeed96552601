//! Records of ordered keys, retried in place by the events consumer (SPEC: the one exception to "not retried
//! in place"): what they keep between attempts, and when the next one is due.
//!
//! Tier consumers may run on other replicas and share no per-key state, so a
//! record of an ordered key never goes to a tier: the tier `plan` chose gives
//! only its delay, as a timer, and the record goes back into its partition's
//! backlog ([`Done::Again`](crate::consume::Done::Again)) with its key behind it.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::event::hop::Hop;

/// The hop state of an ordered record after its last attempt in place (attempts,
/// first attempt, deadline, last status and error), kept in the record itself:
/// the loop hands the same record back for the next attempt.
#[derive(Debug, Default)]
pub struct Kept(Mutex<Option<Hop>>);

impl Kept {
    /// The hop state to work from: the last attempt's, else the one the record was read with.
    pub fn hop(&self, read: &Hop) -> Hop {
        self.lock().clone().unwrap_or_else(|| read.clone())
    }

    pub fn keep(&self, hop: Hop) {
        *self.lock() = Some(hop);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Hop>> {
        // One attempt at a time holds it, briefly; a poisoned lock still holds a whole `Hop`.
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// What a fan-out record with ordered legs keeps between its runs in place
/// (it is one record, retried whole): the legs decided, never sent again, and
/// each ordered leg that waits in place, with its hop state and due time.
#[derive(Debug, Default)]
pub struct Legs(Mutex<HashMap<Box<str>, Leg>>);

/// One leg's state in [`Legs`].
#[derive(Debug, Clone)]
pub enum Leg {
    /// Delivered, routed to a tier or dead: done.
    Decided,
    /// An ordered leg retried in place once `due_ms`.
    Again { hop: Hop, due_ms: i64 },
}

impl Legs {
    pub fn get(&self, endpoint: &str) -> Option<Leg> {
        self.lock().get(endpoint).cloned()
    }

    pub fn set(&self, endpoint: &str, leg: Leg) {
        self.lock().insert(Box::from(endpoint), leg);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Box<str>, Leg>> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// When the in-place retry is due, given the due time of the tier route `plan`
/// chose (deadline and attempts already checked there). A circuit deferral
/// waits no longer than the circuit's cool-down, when it lets a probe through. Pure.
pub fn due_ms(tier_due_ms: i64, deferred: bool, now_ms: i64, cool_down_ms: i64) -> i64 {
    if deferred {
        tier_due_ms.min(now_ms + cool_down_ms)
    } else {
        tier_due_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::hop::Coordinates;

    #[test]
    fn the_tier_delay_is_the_timer_and_a_deferral_waits_for_the_probe() {
        // (tier due, deferred, cool-down) -> due, at now = 1000
        let cases = [(61_000, false, 30_000, 61_000), (61_000, true, 30_000, 31_000), (2_000, true, 30_000, 2_000)];
        for (tier, deferred, cool_down, expected) in cases {
            assert_eq!(due_ms(tier, deferred, 1_000, cool_down), expected, "{tier} {deferred} {cool_down}");
        }
    }

    #[test]
    fn the_kept_hop_wins_over_the_one_read() {
        let origin = Coordinates { topic: "t".into(), partition: 0, offset: 7 };
        let read = Hop::read(&Default::default(), origin, None);
        let kept = Kept::default();
        assert_eq!(kept.hop(&read).attempts, 0);
        kept.keep(Hop { attempts: 2, last_status: Some(503), ..read.clone() });
        let hop = kept.hop(&read);
        assert_eq!((hop.attempts, hop.last_status), (2, Some(503)));
    }
}
