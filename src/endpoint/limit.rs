//! Adaptive concurrency per endpoint: how many requests one receiver gets at once, found from how it answers.
//!
//! AIMD with slow start, in the manner of TCP and Netflix's concurrency-limits:
//! the limit starts low ([`INITIAL`]) and doubles per round trip while the
//! receiver answers without queueing; past the first sign of trouble it grows
//! by one per round trip. It shrinks when the receiver is overloaded: a 429,
//! 503 or 504, a timeout or any transport error (a refused or reset connection, DNS,
//! TLS) halves it, and an answer
//! slower than twice the fastest recent one (queueing at the receiver) takes
//! a tenth off, at most once per round trip. It stays between 1 and the
//! ceiling (`delivery.max_in_flight_per_endpoint` or the endpoint's
//! `max_in_flight`). The limit is per process: every consumer of a replica
//! (events and tiers) shares it.
//! The limit lives in the endpoint's entry of [`super::state::States`], with its pace and circuit.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
#[derive(Debug, Clone)]
pub struct LiveLimit(Arc<Live>);

#[derive(Debug)]
struct Live {
    limit: AtomicUsize,
    rtt_us: AtomicU64,
    /// Tells endpoints apart without hashing their names (see [`LiveLimit::id`]).
    id: usize,
}

/// The next [`LiveLimit::id`].
static NEXT_ID: AtomicUsize = AtomicUsize::new(1);

impl LiveLimit {
    pub fn fixed(limit: usize) -> LiveLimit {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        LiveLimit(Arc::new(Live { limit: AtomicUsize::new(limit), rtt_us: AtomicU64::new(0), id }))
    }
    /// A limit whose endpoint answered in `rtt` (tables of the scheduler).
    pub fn measured(limit: usize, rtt: Duration) -> LiveLimit {
        let live = LiveLimit::fixed(limit);
        live.set_rtt(rtt);
        live
    }
    pub fn get(&self) -> usize {
        self.0.limit.load(Ordering::Relaxed)
    }
    pub(super) fn set(&self, limit: usize) {
        self.0.limit.store(limit, Ordering::Relaxed);
    }
    pub(super) fn set_rtt(&self, rtt: Duration) {
        self.0.rtt_us.store(rtt.as_micros().max(1) as u64, Ordering::Relaxed);
    }
    /// An endpoint whose answers take a second or more (smoothed): its records
    /// hold slots long, so together such endpoints get at most a share of them.
    pub fn is_slow(&self) -> bool {
        self.0.rtt_us.load(Ordering::Relaxed) >= SLOW_RTT_US
    }

    /// How long the `ahead`-th record waiting for this endpoint will wait (ms),
    /// by Little's law: `ahead × round trip / limit`. `None` before the first answer.
    pub fn expected_wait_ms(&self, ahead: usize) -> Option<i64> {
        let rtt_us = self.0.rtt_us.load(Ordering::Relaxed);
        (rtt_us > 0).then(|| (ahead as u64 * rtt_us / self.get().max(1) as u64 / 1000) as i64)
    }
}

impl LiveLimit {
    /// The endpoint's identity for the loop's counts: every record of one
    /// endpoint carries the same live limit (see [`super::state::States::slot`]),
    /// and one that was evicted and came back gets a new one.
    pub fn id(&self) -> usize {
        self.0.id
    }

    /// Does a record's slot (or anything but the endpoint's own entry) still hold it?
    pub(super) fn is_shared(&self) -> bool {
        Arc::strong_count(&self.0) > 1
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
    pub(super) ceiling: f64,
    slow_start: bool,
    min_rtt: Option<f64>,
    pub(super) smoothed_rtt: Option<f64>,
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

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

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
