//! Routes held by a failing produce: which topics, how many records, since when.
//!
//! A produce that fails for any reason but size (missing or unauthorised
//! topic, broker outage) is retried and holds its record's offset: nothing is
//! lost, but the partition stops committing. This makes that visible: the
//! `hookrelay_route_held_*` gauges and `/ready`, which turns 503 once a route
//! has been held longer than `kafka.route_held_not_ready_after`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Every route being held, by a process-wide serial number.
#[derive(Default)]
pub struct Held {
    routes: Mutex<BTreeMap<u64, (String, Instant)>>,
    next: AtomicU64,
}

/// One held route; dropping it (acknowledged, decided or abandoned) releases it.
pub struct HeldRoute {
    held: Arc<Held>,
    serial: u64,
}

impl Drop for HeldRoute {
    fn drop(&mut self) {
        self.held.routes.lock().expect("lock poisoned").remove(&self.serial);
    }
}

/// How the routes to one topic are held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Holding {
    pub records: usize,
    /// Since when the oldest of them is held; zero when none is.
    pub oldest: Duration,
}

impl Held {
    /// A route to `topic` failed and is being retried, from `since`.
    pub fn hold(self: &Arc<Held>, topic: &str, since: Instant) -> HeldRoute {
        let serial = self.next.fetch_add(1, Ordering::Relaxed);
        self.routes.lock().expect("lock poisoned").insert(serial, (topic.to_string(), since));
        HeldRoute { held: self.clone(), serial }
    }

    /// How routes to `topic` are held at `now`.
    pub fn holding(&self, topic: &str, now: Instant) -> Holding {
        let routes = self.routes.lock().expect("lock poisoned");
        routes.values().filter(|(t, _)| t == topic).fold(Holding::default(), |h, (_, since)| Holding {
            records: h.records + 1,
            oldest: h.oldest.max(now.saturating_duration_since(*since)),
        })
    }

    /// The longest any route has been held at `now` (zero when none is).
    pub fn longest(&self, now: Instant) -> Duration {
        let routes = self.routes.lock().expect("lock poisoned");
        routes.values().map(|(_, since)| now.saturating_duration_since(*since)).max().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_route_is_held_until_released() {
        let held = Arc::new(Held::default());
        let t0 = Instant::now();
        let first = held.hold("tier", t0);
        let second = held.hold("tier", t0 + Duration::from_secs(5));
        let dead = held.hold("dead", t0 + Duration::from_secs(8));
        let now = t0 + Duration::from_secs(10);
        assert_eq!(held.holding("tier", now), Holding { records: 2, oldest: Duration::from_secs(10) });
        assert_eq!(held.holding("dead", now), Holding { records: 1, oldest: Duration::from_secs(2) });
        assert_eq!(held.holding("other", now), Holding::default());
        assert_eq!(held.longest(now), Duration::from_secs(10));
        drop(first);
        assert_eq!(held.holding("tier", now), Holding { records: 1, oldest: Duration::from_secs(5) });
        drop((second, dead));
        assert_eq!(held.longest(now), Duration::ZERO);
    }
}
