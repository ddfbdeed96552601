//! The one map of per-endpoint state: adaptive limit, pace (rate and `Retry-After` hold) and circuit,
//! evicted together, and the one place that answers "may this endpoint take a record now, and if not, why".
//!
//! The map is per process: every consumer of a replica (events and tiers) shares it. An
//! endpoint's key is its configured name or, for an inline URL, its `host:port` (see
//! [`super::guard`]); the loop's scheduler reads an entry's [`LiveLimit`] and [`Pace`] through
//! the record's slot, a handler takes a [`Permit`] for each attempt.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::circuit::{Admission, Circuit, Transition, Verdict};
use super::limit::{Aimd, LiveLimit, Signal};
use super::pace::{self, Pace};
use crate::app::clock::now_ms;
use crate::config::{CircuitConfig, Config};
use crate::observe::metrics;
use crate::route::outcome::Why;

/// How long an endpoint's state is kept after its last use with nothing
/// holding it: inline URLs can name any number of hosts. One that comes back
/// starts afresh (closed circuit, limit at [`super::limit::INITIAL`], a new [`LiveLimit`]).
pub const IDLE_EVICTION: Duration = Duration::from_secs(600);

/// The state of every endpoint of the process.
pub struct States {
    default_ceiling: usize,
    ceilings: HashMap<String, usize>,
    paces: pace::Rules,
    circuit: CircuitConfig,
    entries: Mutex<HashMap<Arc<str>, Arc<Entry>>>,
    /// Registry endpoints' own ceilings and paces, looked up when their state is made.
    registry: Option<Arc<super::registry::Registry>>,
}

/// One endpoint: its limit, pace and circuit, the requests in flight, and who waits for a slot.
struct Entry {
    aimd: Mutex<Aimd>,
    live: LiveLimit,
    pace: Arc<Pace>,
    circuit: Mutex<Circuit>,
    in_flight: AtomicUsize,
    freed: Notify,
    /// When a record last asked for this endpoint.
    used: Mutex<Instant>,
}

/// Whether an endpoint may take the record whose [`Permit`] is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ready {
    /// Attempt it now.
    Now,
    /// Its pace holds it this long (within `rate_max_wait`): ask again then.
    Wait(Duration),
    /// Pass it on without an attempt.
    Defer(Why),
}

impl States {
    /// Each configured endpoint's own ceiling and pace; others (inline URLs) get `[delivery]`'s.
    pub fn new(config: &Config) -> States {
        let ceilings =
            config.endpoints.iter().filter_map(|(name, e)| e.max_in_flight.map(|n| (name.clone(), n))).collect();
        States {
            default_ceiling: config.delivery.max_in_flight_per_endpoint,
            ceilings,
            paces: pace_rules(config),
            circuit: config.circuit.clone(),
            entries: Mutex::default(),
            registry: None,
        }
    }

    /// The same, with the ceilings and paces of the registry's endpoints.
    pub fn with_registry(self, registry: Option<Arc<super::registry::Registry>>) -> States {
        States { registry, ..self }
    }

    /// Forgets `key`'s state (its registry spec changed host, limits or pace):
    /// the next record starts afresh; records holding the old state finish with it.
    pub fn forget(&self, key: &str) {
        self.entries.lock().expect("endpoint map lock poisoned").remove(key);
    }

    /// How long an open circuit waits before its probe.
    pub fn cool_down(&self) -> Duration {
        self.circuit.cool_down
    }

    fn entry(&self, key: &Arc<str>) -> Arc<Entry> {
        let mut entries = self.entries.lock().expect("endpoint map lock poisoned");
        let entry = entries.entry(key.clone()).or_insert_with(|| {
            let own = self.registry.as_ref().and_then(|r| r.rules_of(key));
            let ceiling = own.and_then(|(c, _)| c).or(self.ceilings.get(&**key).copied());
            let ceiling = ceiling.unwrap_or(self.default_ceiling);
            let rule = own.map_or_else(|| self.paces.of(key), |(_, rule)| rule);
            let aimd = Aimd::new(ceiling);
            metrics::concurrency_limit(key, aimd.limit(), ceiling);
            Arc::new(Entry {
                live: LiveLimit::fixed(aimd.limit()),
                pace: Arc::new(Pace::new(rule, now_ms())),
                aimd: Mutex::new(aimd),
                circuit: Mutex::default(),
                in_flight: AtomicUsize::new(0),
                freed: Notify::new(),
                used: Mutex::new(Instant::now()),
            })
        });
        *entry.used.lock().expect("endpoint lock poisoned") = Instant::now();
        entry.clone()
    }

    /// The endpoint's limit and pace, for a record's slot (one lookup).
    pub fn slot(&self, key: &Arc<str>) -> (LiveLimit, Arc<Pace>) {
        let entry = self.entry(key);
        (entry.live.clone(), entry.pace.clone())
    }

    /// Waits for a slot of `key` (every consumer of the process shares them).
    pub async fn acquire(&self, key: &Arc<str>) -> Permit<'_> {
        let entry = self.entry(key);
        loop {
            {
                // Registered before the check, so a slot freed in between still wakes us.
                let freed = entry.freed.notified();
                let taken = entry.in_flight.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < entry.live.get().max(1)).then_some(n + 1)
                });
                if taken.is_err() {
                    freed.await;
                    continue;
                }
            }
            return Permit { states: self, entry, key: key.clone(), started: Instant::now(), admission: None };
        }
    }

    /// Forgets the endpoints not used for [`IDLE_EVICTION`] that nothing holds
    /// (no permit, no acquire, no record whose slot carries their [`LiveLimit`]:
    /// the loop's scheduler tells endpoints apart by it) and whose circuit is
    /// settled (a probe in flight decides first). Returns them.
    pub fn evict_idle(&self, now: Instant) -> Vec<Arc<str>> {
        let mut evicted = Vec::new();
        self.entries.lock().expect("endpoint map lock poisoned").retain(|key, entry| {
            let held = Arc::strong_count(entry) > 1 || entry.live.is_shared();
            let settled = entry.circuit.lock().expect("circuit lock poisoned").settled(now);
            let used = *entry.used.lock().expect("endpoint lock poisoned");
            let keep = held || !settled || now.saturating_duration_since(used) < IDLE_EVICTION;
            if !keep {
                evicted.push(key.clone());
            }
            keep
        });
        evicted
    }
}

/// Each key of an endpoint's pace is its own or `[delivery]`'s; the rest (inline URLs) get `[delivery]`'s.
fn pace_rules(config: &Config) -> pace::Rules {
    let d = &config.delivery;
    let rule = |rate: Option<pace::Rate>, burst: Option<u32>, max_wait: Option<Duration>| pace::Rule {
        rate,
        burst: burst.or(rate.map(pace::Rate::default_burst)).unwrap_or(1),
        max_wait: max_wait.unwrap_or(d.rate_max_wait),
    };
    let endpoints = config.endpoints.iter().map(|(name, e)| {
        let rate = e.rate_limit.or(d.rate_limit);
        (name.clone(), rule(rate, e.rate_burst.or(d.rate_burst), e.rate_max_wait))
    });
    pace::Rules { default: rule(d.rate_limit, d.rate_burst, None), endpoints: endpoints.collect() }
}

/// A slot of one endpoint for one attempt. Give it back with [`Permit::finish`]; dropped
/// instead (a deferral, a cancelled or dead task), it frees the slot and, if it carried the
/// circuit's probe, lets the next record probe: a half-open circuit never waits for ever.
pub struct Permit<'a> {
    states: &'a States,
    entry: Arc<Entry>,
    key: Arc<str>,
    started: Instant,
    /// What the circuit said in [`Permit::ready`], until [`Permit::finish`] reports.
    admission: Option<Admission>,
}

impl Permit<'_> {
    /// How long since the slot was taken: the attempt's round trip.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// May the endpoint take the record now? Its pace goes first (a record it
    /// holds does not count against the circuit), then its circuit. Also says
    /// whether the circuit changed.
    pub fn ready(&mut self, now_ms: i64, now: Instant) -> (Ready, Option<Transition>) {
        let held_ms = self.entry.pace.held_ms(now_ms);
        if held_ms > self.entry.pace.max_wait_ms() {
            return (Ready::Defer(Why::Pace), None);
        }
        if held_ms > 0 {
            return (Ready::Wait(Duration::from_millis(held_ms as u64)), None);
        }
        let (admission, change) =
            self.entry.circuit.lock().expect("circuit lock poisoned").admit(&self.states.circuit, now);
        if admission == Admission::Defer {
            return (Ready::Defer(Why::Circuit), change);
        }
        self.admission = Some(admission);
        (Ready::Now, change)
    }

    /// A `Retry-After` answer holds the whole endpoint (no request) until `until_ms`.
    pub fn hold(&self, now_ms: i64, until_ms: i64) {
        self.entry.pace.hold(now_ms, until_ms);
    }

    /// Gives the slot back and tells the limit and the circuit what the attempt showed.
    pub fn finish(mut self, signal: Signal, verdict: Verdict) -> Option<Transition> {
        {
            let mut aimd = self.entry.aimd.lock().expect("limit lock poisoned");
            let before = aimd.limit();
            aimd.observe(signal, Instant::now());
            let after = aimd.limit();
            if let Some(rtt) = aimd.smoothed_rtt {
                self.entry.live.set_rtt(Duration::from_secs_f64(rtt));
            }
            if after != before {
                self.entry.live.set(after);
                metrics::concurrency_limit(&self.key, after, aimd.ceiling as usize);
            }
        }
        let admission = self.admission.take()?;
        let mut circuit = self.entry.circuit.lock().expect("circuit lock poisoned");
        circuit.report(&self.states.circuit, admission, verdict, Instant::now())
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if self.admission == Some(Admission::Probe) {
            self.entry.circuit.lock().expect("circuit lock poisoned").probe_abandoned(Instant::now());
        }
        self.entry.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.entry.freed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoint::limit::INITIAL;

    fn states(toml: &str) -> States {
        States::new(&Config::from_toml(toml).unwrap())
    }

    #[test]
    fn idle_endpoints_are_evicted_once_nothing_holds_them() {
        let states = states("");
        let (a, b, c): (Arc<str>, Arc<str>, Arc<str>) = ("a.example".into(), "b.example".into(), "c.example".into());
        let slot = states.slot(&a);
        let permit = futures::executor::block_on(states.acquire(&b));
        states.slot(&c);
        let late = Instant::now() + IDLE_EVICTION + Duration::from_secs(1);
        assert!(states.evict_idle(Instant::now()).is_empty(), "nothing idle yet");
        assert_eq!(states.evict_idle(late), vec![c.clone()], "a record's slot and a permit hold theirs");
        permit.finish(Signal::None, Verdict::Up);
        assert_eq!(states.evict_idle(late), vec![b.clone()]);
        // Once the last record let go of it; a host that comes back starts afresh.
        drop(slot);
        assert_eq!(states.evict_idle(late), vec![a.clone()]);
        assert_eq!(states.slot(&a).0.get(), INITIAL);
    }

    fn fail(states: &States, key: &Arc<str>, now: Instant) {
        let mut permit = futures::executor::block_on(states.acquire(key));
        assert_eq!(permit.ready(now_ms(), now).0, Ready::Now);
        permit.finish(Signal::Overloaded, Verdict::Failed);
    }

    #[test]
    fn an_open_circuit_defers_and_a_dropped_probe_lets_the_next_record_probe() {
        let states = states("[circuit]\nfailure_threshold = 2\ncool_down = \"10s\"\n");
        let key: Arc<str> = "billing".into();
        let t0 = Instant::now();
        fail(&states, &key, t0);
        fail(&states, &key, t0);
        let mut deferred = futures::executor::block_on(states.acquire(&key));
        assert_eq!(deferred.ready(now_ms(), t0).0, Ready::Defer(Why::Circuit));
        drop(deferred);
        // `finish` reports at its own `Instant::now()`: past the cool-down from then.
        let later = Instant::now() + Duration::from_secs(11);
        let mut probe = futures::executor::block_on(states.acquire(&key));
        assert_eq!(probe.ready(now_ms(), later).0, Ready::Now, "the probe");
        let mut other = futures::executor::block_on(states.acquire(&key));
        assert_eq!(other.ready(now_ms(), later).0, Ready::Defer(Why::Circuit), "one probe at a time");
        drop(other);
        // The probe's task dies (a panic, a cancel) without reporting.
        drop(probe);
        let mut next = futures::executor::block_on(states.acquire(&key));
        assert_eq!(next.ready(now_ms(), later).0, Ready::Now, "not half-open for ever");
        assert!(next.finish(Signal::None, Verdict::Up).is_some(), "the new probe closes it");
        let settled = Instant::now() + IDLE_EVICTION + Duration::from_secs(1);
        assert_eq!(states.evict_idle(settled), vec![key], "closed and idle: evicted with its limit");
    }

    #[test]
    fn a_hold_past_max_wait_defers_and_a_short_one_waits() {
        let states = states("[delivery]\nrate_max_wait = \"1s\"\n");
        let key: Arc<str> = "host.example:443".into();
        let mut permit = futures::executor::block_on(states.acquire(&key));
        let now = now_ms();
        permit.hold(now, now + 500);
        assert_eq!(permit.ready(now, Instant::now()).0, Ready::Wait(Duration::from_millis(500)));
        permit.hold(now, now + 5_000);
        assert_eq!(permit.ready(now, Instant::now()).0, Ready::Defer(Why::Pace));
    }

    #[test]
    fn each_pace_key_is_the_endpoints_own_or_the_delivery_default() {
        let config = Config::from_toml(
            "[delivery]\nrate_limit = \"600/m\"\nrate_max_wait = \"5s\"\n\
             [endpoints.own]\nurl = \"https://own.example/\"\nrate_limit = \"20/s\"\nrate_burst = 1\n\
             [endpoints.fallback]\nurl = \"https://fallback.example/\"\nrate_max_wait = \"1s\"\n",
        )
        .unwrap();
        let rules = pace_rules(&config);
        let rule = |rate: &str, burst, secs| pace::Rule {
            rate: Some(rate.parse().unwrap()),
            burst,
            max_wait: Duration::from_secs(secs),
        };
        assert_eq!(rules.of("own"), rule("20/s", 1, 5));
        assert_eq!(rules.of("fallback"), rule("600/m", 10, 1), "one second's worth of 600/m");
        assert_eq!(rules.of("host.example:443"), rule("600/m", 10, 5), "inline URLs get [delivery]'s");
        let none = pace_rules(&Config::default());
        assert_eq!(none.of("any"), pace::Rule::default(), "no rate, 30 s");
    }
}
