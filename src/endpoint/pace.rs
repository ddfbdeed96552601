//! The pace a receiver can take: `rate_limit` as a token bucket per endpoint, and the hold of a `Retry-After`.
//!
//! Every endpoint of a process has one [`Pace`], shared by the events and the
//! tier consumers (so the rate is per replica). The partition scheduler asks
//! it how long a record would wait ([`Pace::wait_ms`]) and takes a token when
//! the record is dispatched ([`Pace::take`]): records above the rate wait in
//! the read-ahead without an in-flight slot, and one that would wait longer
//! than `rate_max_wait` is deferred at once. A `429` or `503` with
//! `Retry-After` holds the endpoint ([`Pace::hold`]): no record of it starts
//! before the hold ends, paced or not.
//!
//! The bucket may go into debt: two consumers that each saw the last token
//! both take it, and the next token comes that much later, so the long-run
//! rate stays exact.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// A timer that fires this late does not lower the rate: the bucket keeps up
/// to this much refill beyond its burst (at most half a token, so never a
/// request more at once). Without it, each wake-up a few ms late cost its
/// lateness: measured 200 records at 20/s with a burst of 1 in 10.37 s, not
/// 9.95 s (about 2 ms per wake-up on a busy machine).
const LATE_MS: f64 = 10.0;

/// The default `rate_max_wait` (SPEC).
pub const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(30);

/// A `rate_limit`: `count` records per second or per minute (`"20/s"`, `"600/m"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Rate {
    pub count: u32,
    pub per: Per,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Per {
    Second,
    Minute,
}

/// Why a `rate_limit` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a rate: write a whole number above 0 per second or per minute, like \"20/s\" or \"600/m\"")]
pub struct BadRate(String);

impl Rate {
    /// Records per millisecond.
    pub fn per_ms(self) -> f64 {
        let ms = match self.per {
            Per::Second => 1_000.0,
            Per::Minute => 60_000.0,
        };
        f64::from(self.count) / ms
    }

    /// The default `rate_burst`: one second's worth, at least 1.
    pub fn default_burst(self) -> u32 {
        match self.per {
            Per::Second => self.count,
            Per::Minute => self.count.div_ceil(60),
        }
    }
}

impl std::str::FromStr for Rate {
    type Err = BadRate;

    fn from_str(text: &str) -> Result<Rate, BadRate> {
        let bad = || BadRate(text.to_string());
        let (count, per) = text.trim().split_once('/').ok_or_else(bad)?;
        let per = match per.trim() {
            "s" => Per::Second,
            "m" => Per::Minute,
            _ => return Err(bad()),
        };
        let count: u32 = count.trim().parse().map_err(|_| bad())?;
        if count == 0 {
            return Err(bad());
        }
        Ok(Rate { count, per })
    }
}

impl TryFrom<String> for Rate {
    type Error = BadRate;
    fn try_from(text: String) -> Result<Rate, BadRate> {
        text.parse()
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let per = match self.per {
            Per::Second => "s",
            Per::Minute => "m",
        };
        write!(f, "{}/{per}", self.count)
    }
}

impl From<Rate> for String {
    fn from(rate: Rate) -> String {
        rate.to_string()
    }
}

/// One endpoint's pace settings, after defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// `None`: no rate limit (a `Retry-After` still holds the endpoint).
    pub rate: Option<Rate>,
    /// Tokens the bucket holds at most (`rate_burst`).
    pub burst: u32,
    /// A record that would wait longer than this is deferred (`rate_max_wait`).
    pub max_wait: Duration,
}

impl Default for Rule {
    fn default() -> Rule {
        Rule { rate: None, burst: 1, max_wait: DEFAULT_MAX_WAIT }
    }
}

/// The rule of every endpoint: configured endpoints' own, and the default for the rest (inline URLs).
#[derive(Debug, Clone, Default)]
pub struct Rules {
    pub default: Rule,
    pub endpoints: HashMap<String, Rule>,
}

impl Rules {
    pub fn of(&self, key: &str) -> Rule {
        self.endpoints.get(key).copied().unwrap_or(self.default)
    }
}

/// A token bucket, in milliseconds. Pure: the caller says what time it is.
///
/// `tokens` is the count at `at_ms`; it grows by `per_ms` per millisecond up
/// to `cap` (the burst, and `LATE_MS` of refill). `at_ms` may lie ahead (a
/// hold): no token grows before it.
#[derive(Debug, Clone, PartialEq)]
pub struct Bucket {
    per_ms: f64,
    cap: f64,
    tokens: f64,
    at_ms: i64,
}

impl Bucket {
    /// A full bucket at `now_ms`.
    pub fn new(rate: Rate, burst: u32, now_ms: i64) -> Bucket {
        let (per_ms, burst) = (rate.per_ms(), f64::from(burst.max(1)));
        Bucket { per_ms, cap: burst + (LATE_MS * per_ms).min(0.5), tokens: burst, at_ms: now_ms }
    }

    /// Tokens at `at` (never before `at_ms`), and the time they are counted at.
    fn at(&self, now_ms: i64) -> (f64, i64) {
        if now_ms <= self.at_ms {
            return (self.tokens, self.at_ms);
        }
        let grown = self.tokens + (now_ms - self.at_ms) as f64 * self.per_ms;
        (grown.min(self.cap), now_ms)
    }

    /// How long from `now_ms` until the `n`-th record from now (1 = the next) may start, in ms; 0 = now.
    pub fn wait_ms(&self, now_ms: i64, n: usize) -> i64 {
        let (tokens, from) = self.at(now_ms);
        let short = n as f64 - tokens;
        // Within a nanosecond is now: float rounding must not cost a wake-up of 1 ms.
        let grow = ((short / self.per_ms) - 1e-6).ceil().max(0.0) as i64;
        from - now_ms + grow
    }

    /// Takes one token at `now_ms` (into debt if there is none).
    pub fn take(&mut self, now_ms: i64) {
        let (tokens, at) = self.at(now_ms);
        self.tokens = tokens - 1.0;
        self.at_ms = at;
    }

    /// No token before `until_ms`; then one, and the rate from there (the
    /// receiver asked for a pause, not for a burst at its end; a debt is
    /// forgiven, the pause was longer).
    pub fn hold(&mut self, now_ms: i64, until_ms: i64) {
        if until_ms <= self.at_ms.max(now_ms) {
            return;
        }
        self.tokens = 1.0;
        self.at_ms = until_ms;
    }
}

/// One endpoint's pace in a process: its bucket (if it has a rate), its hold, its max wait.
#[derive(Debug)]
pub struct Pace {
    bucket: Option<Mutex<Bucket>>,
    max_wait_ms: i64,
    /// No request before this (ms since the epoch): a `Retry-After`.
    held_until_ms: AtomicI64,
}

/// A pace is equal to itself only: each endpoint of a process has its own.
impl PartialEq for Pace {
    fn eq(&self, other: &Pace) -> bool {
        std::ptr::eq(self, other)
    }
}

impl Eq for Pace {}

impl Pace {
    pub fn new(rule: Rule, now_ms: i64) -> Pace {
        Pace {
            bucket: rule.rate.map(|rate| Mutex::new(Bucket::new(rate, rule.burst, now_ms))),
            max_wait_ms: rule.max_wait.as_millis().min(i64::MAX as u128) as i64,
            held_until_ms: AtomicI64::new(0),
        }
    }

    /// Neither a rate nor a hold (tables).
    pub fn unlimited() -> Pace {
        Pace::new(Rule::default(), 0)
    }

    /// Whether the endpoint has a `rate_limit`.
    pub fn is_paced(&self) -> bool {
        self.bucket.is_some()
    }

    /// `rate_max_wait`, in ms.
    pub fn max_wait_ms(&self) -> i64 {
        self.max_wait_ms
    }

    /// How long the `n`-th record of the endpoint from now (1 = the next)
    /// waits for the pace, in ms: for its token, or for the hold to end. 0 = it may start now.
    pub fn wait_ms(&self, now_ms: i64, n: usize) -> i64 {
        let held = self.held_ms(now_ms);
        match &self.bucket {
            Some(bucket) => bucket.lock().expect("pace lock poisoned").wait_ms(now_ms, n).max(held),
            None => held,
        }
    }

    /// How long the endpoint is still held by a `Retry-After`, in ms (0 = not held).
    pub fn held_ms(&self, now_ms: i64) -> i64 {
        (self.held_until_ms.load(Ordering::Relaxed) - now_ms).max(0)
    }

    /// A record of the endpoint was dispatched: one token goes.
    pub fn take(&self, now_ms: i64) {
        if let Some(bucket) = &self.bucket {
            bucket.lock().expect("pace lock poisoned").take(now_ms);
        }
    }

    /// Holds the endpoint until `until_ms` (a later hold wins; an earlier one changes nothing).
    pub fn hold(&self, now_ms: i64, until_ms: i64) {
        self.held_until_ms.fetch_max(until_ms, Ordering::Relaxed);
        if let Some(bucket) = &self.bucket {
            bucket.lock().expect("pace lock poisoned").hold(now_ms, until_ms);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(text: &str) -> Rate {
        text.parse().unwrap()
    }

    #[test]
    fn rates_parse_per_second_and_per_minute_and_nothing_else() {
        assert_eq!(rate("20/s"), Rate { count: 20, per: Per::Second });
        assert_eq!(rate(" 600 / m "), Rate { count: 600, per: Per::Minute });
        for bad in ["0/s", "abc", "5/h", "20", "/s", "-1/s", "1.5/s", "20/sec", ""] {
            let error = bad.parse::<Rate>().unwrap_err().to_string();
            assert!(error.contains("like \"20/s\""), "{bad}: {error}");
        }
        assert_eq!(rate("600/m").to_string(), "600/m");
    }

    #[test]
    fn the_default_burst_is_one_seconds_worth_and_at_least_one() {
        let table = [("20/s", 20), ("1/s", 1), ("600/m", 10), ("90/m", 2), ("30/m", 1), ("1/m", 1)];
        for (text, burst) in table {
            assert_eq!(rate(text).default_burst(), burst, "{text}");
        }
    }

    #[test]
    fn the_bucket_starts_full_and_refills_at_the_rate_up_to_the_burst() {
        // (burst, tokens taken at 0, now, n) -> wait in ms, at 20/s (one token per 50 ms).
        let table: [(u32, usize, i64, usize, i64); 9] = [
            (1, 0, 0, 1, 0),       // full: the first goes now
            (1, 0, 0, 2, 50),      // the second waits a token
            (1, 1, 0, 1, 50),      // after the one token went
            (1, 1, 20, 1, 30),     // part of it grew back
            (1, 1, 50, 1, 0),      // all of it
            (1, 0, 10_000, 2, 40), // a long idle time fills up to the burst (and 10 ms of lateness)
            (5, 0, 0, 5, 0),       // a burst of 5 goes at once
            (5, 0, 0, 7, 100),     // the 7th waits two tokens
            (5, 7, 0, 1, 150),     // two in debt: three tokens to grow
        ];
        for (burst, taken, now, n, wait) in table {
            let mut bucket = Bucket::new(rate("20/s"), burst, 0);
            for _ in 0..taken {
                bucket.take(0);
            }
            assert_eq!(bucket.wait_ms(now, n), wait, "burst {burst}, {taken} taken, at {now}, record {n}");
        }
        let slow = Bucket::new(rate("30/m"), 1, 0);
        assert_eq!(slow.wait_ms(0, 2), 2_000, "30/m: one every two seconds");
    }

    #[test]
    fn taking_on_time_keeps_the_rate_exact() {
        // A loop that dispatches whenever the bucket says: 200 records at 20/s with a burst of 1.
        let mut bucket = Bucket::new(rate("20/s"), 1, 0);
        let mut now = 0;
        let mut started = Vec::new();
        while started.len() < 200 {
            now += bucket.wait_ms(now, 1);
            bucket.take(now);
            started.push(now);
        }
        assert_eq!(started[199] - started[0], 199 * 50, "199 intervals of 50 ms");
        // The same, each wake-up 3 ms late: the lateness is not lost.
        let mut bucket = Bucket::new(rate("20/s"), 1, 0);
        let (mut now, mut started) = (0, Vec::new());
        while started.len() < 200 {
            now += bucket.wait_ms(now, 1) + 3;
            bucket.take(now);
            started.push(now);
        }
        assert_eq!(started[199] - started[0], 199 * 50, "late wake-ups do not lower the rate");
        let idle = Bucket::new(rate("20/s"), 1, 0);
        assert_eq!(idle.wait_ms(60_000, 2), 40, "after a quiet time, at most 10 ms early: never two at once");
    }

    #[test]
    fn a_hold_starts_nothing_before_its_end_then_one_and_the_rate() {
        let mut bucket = Bucket::new(rate("20/s"), 10, 0);
        bucket.hold(0, 3_000);
        assert_eq!(bucket.wait_ms(0, 1), 3_000, "nothing before the end of the hold");
        assert_eq!(bucket.wait_ms(3_000, 1), 0, "one at its end");
        assert_eq!(bucket.wait_ms(3_000, 2), 50, "then the rate, not a burst of 10");
        bucket.hold(100, 1_000);
        assert_eq!(bucket.wait_ms(100, 1), 2_900, "an earlier hold changes nothing");
    }

    #[test]
    fn a_pace_without_a_rate_waits_only_for_a_hold() {
        let pace = Pace::new(Rule { rate: None, burst: 1, max_wait: Duration::from_secs(5) }, 0);
        assert!(!pace.is_paced());
        assert_eq!((pace.wait_ms(0, 1000), pace.max_wait_ms()), (0, 5_000));
        pace.take(0);
        pace.hold(1_000, 4_000);
        assert_eq!((pace.wait_ms(1_000, 1), pace.wait_ms(4_000, 1)), (3_000, 0));
        let paced = Pace::new(Rule { rate: Some(rate("2/s")), burst: 1, max_wait: DEFAULT_MAX_WAIT }, 0);
        paced.take(0);
        assert_eq!(paced.wait_ms(0, 2), 1_000, "the second from now needs two tokens at 500 ms each");
        paced.hold(0, 2_000);
        assert_eq!(paced.wait_ms(0, 1), 2_000);
        assert_eq!(paced.held_ms(500), 1_500);
    }
}
