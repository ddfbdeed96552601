//! Adaptive concurrency per endpoint: how many requests one receiver gets at once, found from how it answers.
//!
//! AIMD with slow start, in the manner of TCP and Netflix's concurrency-limits:
//! the limit starts low ([`INITIAL`]) and doubles per round trip while the
//! receiver answers without queueing; past the first sign of trouble it grows
//! by one per round trip. It shrinks when the receiver is overloaded: a 429,
//! 503 or 504, a timeout or a refused connection halves it, and an answer
//! slower than twice the fastest recent one (queueing at the receiver) takes
//! a tenth off, at most once per round trip. It stays between 1 and the
//! ceiling (`delivery.max_in_flight_per_endpoint` or the endpoint's
//! `max_in_flight`). The limit is per process: every consumer of a replica
//! (events and tiers) shares it.
//! Each endpoint's [`Pace`] (its rate and `Retry-After` hold) is kept, and
//! forgotten when idle, with its limit.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::app::clock::now_ms;
use crate::endpoint::pace::{self, Pace};
use crate::observe::metrics;

/// Where the limit starts: low enough not to flood a receiver that was never seen.
pub const INITIAL: usize = 16;

/// Answers this much slower than the fastest recent one (smoothed over the
/// last answers, and by more than [`QUEUEING_SLACK`]) mean the receiver queues.
const QUEUEING_FACTOR: f64 = 2.0;

/// Below this, slower answers are not the receiver queueing: on a busy machine
/// the relay's own wait for a CPU adds tens of milliseconds to a loopback
/// answer (measured: a 60,000-record backlog to an instant receiver settled at
/// a limit of about 35 and 3,500/s with 10 ms here, while 512 requests in
/// flight drained it at 19,500/s).
const QUEUEING_SLACK: f64 = 0.100;

/// A round trip this long makes an endpoint slow (see [`LiveLimit::is_slow`]).
const SLOW_RTT_US: u64 = 1_000_000;

/// Weight of the newest answer in the smoothed round trip.
const SMOOTHING: f64 = 0.1;

/// The fastest recent answer is forgotten this fast (per answer), so a receiver
/// that became slower for good is judged against its new normal.
const MIN_RTT_DRIFT: f64 = 1.001;

/// An endpoint's limit and smoothed round trip, which the loop reads while the limiter changes them.
#[derive(Debug, Clone, Default)]
pub struct LiveLimit(Arc<(AtomicUsize, AtomicU64)>);

impl LiveLimit {
    pub fn fixed(limit: usize) -> LiveLimit {
        LiveLimit(Arc::new((AtomicUsize::new(limit), AtomicU64::new(0))))
    }
    /// A limit whose endpoint answered in `rtt` (tables of the scheduler).
    pub fn measured(limit: usize, rtt: Duration) -> LiveLimit {
        let live = LiveLimit::fixed(limit);
        live.set_rtt(rtt);
        live
    }
    pub fn get(&self) -> usize {
        self.0 .0.load(Ordering::Relaxed)
    }
    fn set(&self, limit: usize) {
        self.0 .0.store(limit, Ordering::Relaxed);
    }
    fn set_rtt(&self, rtt: Duration) {
        self.0 .1.store(rtt.as_micros().max(1) as u64, Ordering::Relaxed);
    }
    /// An endpoint whose answers take a second or more (smoothed): its records
    /// hold slots long, so together such endpoints get at most a share of them.
    pub fn is_slow(&self) -> bool {
        self.0 .1.load(Ordering::Relaxed) >= SLOW_RTT_US
    }

    /// How long the `ahead`-th record waiting for this endpoint will wait (ms),
    /// by Little's law: `ahead × round trip / limit`. `None` before the first answer.
    pub fn expected_wait_ms(&self, ahead: usize) -> Option<i64> {
        let rtt_us = self.0 .1.load(Ordering::Relaxed);
        (rtt_us > 0).then(|| (ahead as u64 * rtt_us / self.get().max(1) as u64 / 1000) as i64)
    }
}

impl LiveLimit {
    /// Tells endpoints apart without hashing their names: every record of one
    /// endpoint carries the same live limit (see [`Limiter::live`]).
    pub fn id(&self) -> usize {
        Arc::as_ptr(&self.0) as usize
    }
}

impl PartialEq for LiveLimit {
    fn eq(&self, other: &LiveLimit) -> bool {
        self.get() == other.get()
    }
}

impl Eq for LiveLimit {}

/// What one attempt told about the receiver's capacity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Signal {
    /// It answered, in this long.
    Answered(Duration),
    /// 429, 503, 504, a timeout or a refused connection.
    Overloaded,
    /// Nothing learnt (the guard refused the target, or the attempt was abandoned).
    None,
}

/// The pure state of one endpoint's limit.
#[derive(Debug, Clone, PartialEq)]
pub struct Aimd {
    limit: f64,
    ceiling: f64,
    slow_start: bool,
    min_rtt: Option<f64>,
    smoothed_rtt: Option<f64>,
    last_decrease: Option<Instant>,
}

impl Aimd {
    pub fn new(ceiling: usize) -> Aimd {
        let ceiling = ceiling.max(1) as f64;
        let limit = (INITIAL as f64).min(ceiling);
        Aimd { limit, ceiling, slow_start: true, min_rtt: None, smoothed_rtt: None, last_decrease: None }
    }

    pub fn limit(&self) -> usize {
        self.limit as usize
    }

    /// Applies one attempt's signal at `now`.
    pub fn observe(&mut self, signal: Signal, now: Instant) {
        match signal {
            Signal::None => {}
            Signal::Overloaded => self.decrease(0.5, now),
            Signal::Answered(rtt) => {
                let rtt = rtt.as_secs_f64().max(1e-6);
                let min = self.min_rtt.map_or(rtt, |m| (m * MIN_RTT_DRIFT).min(rtt));
                self.min_rtt = Some(min);
                let smoothed = self.smoothed_rtt.map_or(rtt, |s| s + SMOOTHING * (rtt - s));
                self.smoothed_rtt = Some(smoothed);
                if smoothed > min * QUEUEING_FACTOR && smoothed - min > QUEUEING_SLACK {
                    self.decrease(0.9, now);
                } else if self.slow_start {
                    // One more per answer: twice the limit per round trip.
                    self.limit = (self.limit + 1.0).min(self.ceiling);
                } else {
                    // One more per round trip.
                    self.limit = (self.limit + 1.0 / self.limit).min(self.ceiling);
                }
            }
        }
    }

    fn decrease(&mut self, factor: f64, now: Instant) {
        self.slow_start = false;
        // Answers to requests sent before the last decrease say nothing new:
        // one decrease per round trip, or every in-flight failure would halve it again.
        let round_trip = Duration::from_secs_f64(self.min_rtt.unwrap_or(0.1).max(0.01));
        if self.last_decrease.is_some_and(|at| now.duration_since(at) < round_trip) {
            return;
        }
        self.last_decrease = Some(now);
        self.limit = (self.limit * factor).max(1.0);
    }
}

/// How long an endpoint's limit is kept after its last use with nothing in
/// flight: inline URLs can name any number of hosts. One that comes back
/// starts again from [`INITIAL`], with a new [`LiveLimit`].
pub const IDLE_EVICTION: Duration = Duration::from_secs(600);

/// One endpoint: its limit, the requests in flight, and who waits for a slot.
struct Endpoint {
    aimd: Mutex<Aimd>,
    live: LiveLimit,
    /// Its rate and `Retry-After` hold, kept (and forgotten) with its limit.
    pace: Arc<Pace>,
    in_flight: AtomicUsize,
    freed: Notify,
    /// When a record last asked for this endpoint.
    used: Mutex<Instant>,
}

/// The limits of every endpoint of the process.
pub struct Limiter {
    default_ceiling: usize,
    ceilings: HashMap<String, usize>,
    paces: pace::Rules,
    endpoints: Mutex<HashMap<Arc<str>, Arc<Endpoint>>>,
    /// Registry endpoints' own ceilings and paces, looked up when their state is made.
    registry: Option<Arc<crate::endpoint::registry::Registry>>,
}

impl Limiter {
    /// `ceilings` are the configured endpoints' own; others get `default_ceiling`.
    pub fn new(default_ceiling: usize, ceilings: HashMap<String, usize>) -> Limiter {
        Limiter {
            default_ceiling,
            ceilings,
            paces: pace::Rules::default(),
            endpoints: Mutex::default(),
            registry: None,
        }
    }

    /// The same, with each endpoint's pace set by `rules` (without: no rate, `Retry-After` holds only).
    pub fn paced(self, rules: pace::Rules) -> Limiter {
        Limiter { paces: rules, ..self }
    }

    /// The same, with the ceilings and paces of the registry's endpoints.
    pub fn with_registry(self, registry: Option<Arc<crate::endpoint::registry::Registry>>) -> Limiter {
        Limiter { registry, ..self }
    }

    /// Forgets `key`'s limit and pace (its registry spec changed them): the
    /// next record starts afresh; records holding the old ones finish with them.
    pub fn forget(&self, key: &str) {
        self.endpoints.lock().expect("limiter lock poisoned").remove(key);
    }

    fn endpoint(&self, key: &Arc<str>) -> Arc<Endpoint> {
        let mut endpoints = self.endpoints.lock().expect("limiter lock poisoned");
        endpoints
            .entry(key.clone())
            .or_insert_with(|| {
                let own = self.registry.as_ref().and_then(|r| r.rules_of(key));
                let ceiling = own.and_then(|(c, _)| c).or(self.ceilings.get(&**key).copied());
                let ceiling = ceiling.unwrap_or(self.default_ceiling);
                let rule = own.map_or_else(|| self.paces.of(key), |(_, rule)| rule);
                let aimd = Aimd::new(ceiling);
                metrics::concurrency_limit(key, aimd.limit(), ceiling);
                Arc::new(Endpoint {
                    live: LiveLimit::fixed(aimd.limit()),
                    pace: Arc::new(Pace::new(rule, now_ms())),
                    aimd: Mutex::new(aimd),
                    in_flight: AtomicUsize::new(0),
                    freed: Notify::new(),
                    used: Mutex::new(Instant::now()),
                })
            })
            .clone()
            .touched()
    }

    /// Forgets the endpoints not used for [`IDLE_EVICTION`] that nothing
    /// holds: no permit, no acquire, and no record whose slot carries their
    /// [`LiveLimit`] (the loop's scheduler tells endpoints apart by its
    /// address, so a record holding an old one keeps counting against it).
    /// Returns them.
    pub fn evict_idle(&self, now: Instant) -> Vec<Arc<str>> {
        let mut evicted = Vec::new();
        self.endpoints.lock().expect("limiter lock poisoned").retain(|key, endpoint| {
            let held = Arc::strong_count(endpoint) > 1 || Arc::strong_count(&endpoint.live.0) > 1;
            let used = *endpoint.used.lock().expect("limit lock poisoned");
            let keep = held || now.saturating_duration_since(used) < IDLE_EVICTION;
            if !keep {
                evicted.push(key.clone());
            }
            keep
        });
        evicted
    }

    /// The endpoint's current limit, as the loop reads it.
    pub fn live(&self, key: &Arc<str>) -> LiveLimit {
        self.endpoint(key).live.clone()
    }

    /// The endpoint's limit and pace, for a record's slot (one lookup).
    pub fn slot(&self, key: &Arc<str>) -> (LiveLimit, Arc<Pace>) {
        let endpoint = self.endpoint(key);
        (endpoint.live.clone(), endpoint.pace.clone())
    }

    /// Waits for a slot of `key` (every consumer of the process shares them).
    pub async fn acquire(&self, key: &Arc<str>) -> Permit {
        let endpoint = self.endpoint(key);
        loop {
            {
                // Registered before the check, so a slot freed in between still wakes us.
                let freed = endpoint.freed.notified();
                let taken = endpoint.in_flight.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < endpoint.live.get().max(1)).then_some(n + 1)
                });
                if taken.is_err() {
                    freed.await;
                    continue;
                }
            }
            return Permit { endpoint, key: key.clone(), started: Instant::now() };
        }
    }
}

impl Endpoint {
    fn touched(self: Arc<Endpoint>) -> Arc<Endpoint> {
        *self.used.lock().expect("limit lock poisoned") = Instant::now();
        self
    }
}

/// A slot of one endpoint; give it back with [`Permit::finish`] (or drop it).
pub struct Permit {
    endpoint: Arc<Endpoint>,
    key: Arc<str>,
    started: Instant,
}

impl Permit {
    /// How long since the slot was taken: the attempt's round trip.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// The endpoint's pace (a `Retry-After` holds it).
    pub fn pace(&self) -> &Pace {
        &self.endpoint.pace
    }

    /// Gives the slot back and adjusts the limit by what the attempt showed.
    pub fn finish(self, signal: Signal) {
        let mut aimd = self.endpoint.aimd.lock().expect("limit lock poisoned");
        let before = aimd.limit();
        aimd.observe(signal, Instant::now());
        let after = aimd.limit();
        if let Some(rtt) = aimd.smoothed_rtt {
            self.endpoint.live.set_rtt(Duration::from_secs_f64(rtt));
        }
        if after != before {
            self.endpoint.live.set(after);
            metrics::concurrency_limit(&self.key, after, aimd.ceiling as usize);
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.endpoint.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.endpoint.freed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn idle_endpoints_are_evicted_once_nothing_holds_them() {
        let limiter = Limiter::new(64, HashMap::new());
        let (a, b, c): (Arc<str>, Arc<str>, Arc<str>) = ("a.example".into(), "b.example".into(), "c.example".into());
        let slot = limiter.live(&a);
        let permit = futures::executor::block_on(limiter.acquire(&b));
        limiter.live(&c);
        let late = Instant::now() + IDLE_EVICTION + Duration::from_secs(1);
        assert!(limiter.evict_idle(Instant::now()).is_empty(), "nothing idle yet");
        assert_eq!(limiter.evict_idle(late), vec![c.clone()], "a record's slot and a permit hold theirs");
        permit.finish(Signal::None);
        assert_eq!(limiter.evict_idle(late), vec![b.clone()]);
        // Once the last record let go of it; a host that comes back starts afresh.
        drop(slot);
        assert_eq!(limiter.evict_idle(late), vec![a.clone()]);
        let fresh = limiter.live(&a);
        assert_eq!(fresh.get(), INITIAL);
    }

    #[test]
    fn a_fast_receiver_doubles_per_round_trip_up_to_the_ceiling() {
        let mut a = Aimd::new(1024);
        let t = Instant::now();
        assert_eq!(a.limit(), INITIAL);
        for _ in 0..16 {
            a.observe(Signal::Answered(MS), t);
        }
        assert_eq!(a.limit(), 32, "one round trip of 16 answers doubles it");
        for _ in 0..5000 {
            a.observe(Signal::Answered(MS), t);
        }
        assert_eq!(a.limit(), 1024, "never past the ceiling");
    }

    #[test]
    fn overload_halves_once_per_round_trip_then_growth_is_additive() {
        let mut a = Aimd::new(1024);
        let t = Instant::now();
        for _ in 0..48 {
            a.observe(Signal::Answered(10 * MS), t);
        }
        assert_eq!(a.limit(), 64);
        a.observe(Signal::Overloaded, t);
        assert_eq!(a.limit(), 32);
        a.observe(Signal::Overloaded, t + MS);
        assert_eq!(a.limit(), 32, "a second failure within the same round trip says nothing new");
        a.observe(Signal::Overloaded, t + 20 * MS);
        assert_eq!(a.limit(), 16);
        // A round trip's worth of answers (about the limit) adds one.
        for _ in 0..17 {
            a.observe(Signal::Answered(10 * MS), t + 40 * MS);
        }
        assert_eq!(a.limit(), 17, "after trouble: one more per round trip");
    }

    #[test]
    fn queueing_at_the_receiver_shrinks_the_limit() {
        let mut a = Aimd::new(1024);
        let t = Instant::now();
        for _ in 0..16 {
            a.observe(Signal::Answered(100 * MS), t);
        }
        assert_eq!(a.limit(), 32);
        a.observe(Signal::Answered(500 * MS), t);
        assert_eq!(a.limit(), 33, "one slow answer is smoothed away");
        for _ in 0..10 {
            a.observe(Signal::Answered(500 * MS), t);
        }
        assert_eq!(a.limit(), 30, "answers staying five times slower than its best: a tenth off (34 -> 30), once");
        let mut busy = Aimd::new(1024);
        for i in 0..100 {
            busy.observe(Signal::Answered(if i < 10 { MS } else { 40 * MS }), t);
        }
        assert_eq!(busy.limit(), 116, "tens of milliseconds on a busy machine are not the receiver queueing");
        let mut noisy = Aimd::new(1024);
        for i in 0..100 {
            noisy.observe(Signal::Answered(Duration::from_micros(if i % 2 == 0 { 300 } else { 2_000 })), t);
        }
        assert_eq!(noisy.limit(), 116, "sub-millisecond jitter on loopback is not queueing");
        let mut steady = Aimd::new(1024);
        for _ in 0..100 {
            steady.observe(Signal::Answered(2000 * MS), t);
        }
        assert_eq!(steady.limit(), 116, "slow but steady is not overload");
    }

    #[test]
    fn the_limit_stays_between_one_and_the_ceiling() {
        let mut a = Aimd::new(4);
        assert_eq!(a.limit(), 4, "starts at the ceiling when the ceiling is low");
        let t = Instant::now();
        for i in 0..20 {
            a.observe(Signal::Overloaded, t + i * Duration::from_secs(1));
        }
        assert_eq!(a.limit(), 1);
        a.observe(Signal::None, t);
        assert_eq!(a.limit(), 1);
    }
}
