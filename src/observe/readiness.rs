//! The readiness latch behind `/ready`: ready once every consumer joined its group, never again once a drain starts.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::observe::metrics;
use crate::route::held::Held;

/// Readiness latch: ready once every consumer of the process joined its
/// group; not ready again from the moment a drain starts (SIGTERM). Also not
/// ready while a route has been held by a failing produce for longer than a bound.
#[derive(Clone, Default)]
pub struct Readiness {
    expected: usize,
    joined: Arc<AtomicUsize>,
    draining: Arc<AtomicBool>,
    held: Option<(Arc<Held>, Duration)>,
    /// Not ready while the registry's view is stale (or not yet read to its end).
    registry: Option<Arc<crate::endpoint::registry::Registry>>,
}

/// Why `/ready` answers 503.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotReady {
    Joining,
    Draining,
    /// A route has been held by a failing produce for this long.
    Held(Duration),
    /// The endpoint registry is not read to its end, or its view is older than `registry.max_lag`.
    Registry,
}

impl Readiness {
    pub fn new(consumers: usize) -> Readiness {
        Readiness { expected: consumers, ..Readiness::default() }
    }

    /// One consumer joined its group (called once per consumer).
    pub fn joined_one(&self) {
        self.joined.fetch_add(1, Ordering::SeqCst);
        metrics::get().ready.set(i64::from(self.is_ready()));
    }

    /// The process is shutting down: not ready any more, for good.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
        metrics::get().ready.set(0);
    }

    /// Not ready while a route is held longer than `bound` (not latched: ready again once it goes through).
    pub fn held_bound(self, held: Arc<Held>, bound: Duration) -> Readiness {
        Readiness { held: Some((held, bound)), ..self }
    }

    /// Not ready while `registry`'s view is stale (not latched).
    pub fn registry_bound(self, registry: Option<Arc<crate::endpoint::registry::Registry>>) -> Readiness {
        Readiness { registry, ..self }
    }

    /// Joined and not draining (the `hookrelay_ready` gauge).
    pub fn is_ready(&self) -> bool {
        !self.draining.load(Ordering::SeqCst) && self.joined.load(Ordering::SeqCst) >= self.expected
    }

    /// What `/ready` answers at `now`.
    pub fn check(&self, now: Instant) -> Result<(), NotReady> {
        if self.draining.load(Ordering::SeqCst) {
            return Err(NotReady::Draining);
        }
        if self.joined.load(Ordering::SeqCst) < self.expected {
            return Err(NotReady::Joining);
        }
        if self.registry.as_ref().is_some_and(|r| r.is_stale(crate::app::clock::now_ms())) {
            return Err(NotReady::Registry);
        }
        match &self.held {
            Some((held, bound)) if held.longest(now) > *bound => Err(NotReady::Held(held.longest(now))),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_is_a_latch() {
        let r = Readiness::new(2);
        assert!(!r.is_ready());
        r.joined_one();
        assert!(!r.is_ready(), "one of two consumers joined");
        r.joined_one();
        assert!(r.is_ready());
        r.drain();
        assert!(!r.is_ready(), "draining is not ready");
        r.joined_one();
        assert!(!r.is_ready(), "and stays so");
    }

    #[test]
    fn a_route_held_past_the_bound_is_not_ready_until_it_goes_through() {
        let held = Arc::new(Held::default());
        let r = Readiness::new(1).held_bound(held.clone(), Duration::from_secs(300));
        r.joined_one();
        let t0 = Instant::now();
        assert_eq!(r.check(t0), Ok(()));
        let route = held.hold("tier", t0);
        assert_eq!(r.check(t0 + Duration::from_secs(300)), Ok(()), "held, but not yet past the bound");
        let later = t0 + Duration::from_secs(301);
        assert_eq!(r.check(later), Err(NotReady::Held(Duration::from_secs(301))));
        drop(route);
        assert_eq!(r.check(later), Ok(()));
        r.drain();
        assert_eq!(r.check(later), Err(NotReady::Draining));
    }
}
