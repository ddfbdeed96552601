//! The scenarios (issue 9's S0..S8, issue 21's S9, issue 22's S10, issue 20's S11, issue 24's S12): what each sends where,
//! sized for the default `make bench` (every scenario, 3 repeats, under 30
//! minutes on 2 cores) and scaled by `--scale`.
//!
//! S1..S4, S6 and S7 run twice: a capacity run (the backlog on the topic before
//! the relay starts, drained as fast as it goes) and a run at a fixed offered
//! load (produced while the relay runs, at `--load`, by default half of S1's
//! capacity measured first in the same run). To add a scenario, push one more
//! [`Scenario`] in [`all`] (and its targets in `figures::TARGETS`).

use std::time::Duration;

use crate::sink::{Endpoint, Profile};

/// How the events reach the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drive {
    /// All events on the topic before the relay starts: capacity.
    Backlog,
    /// Produced while the relay runs, at the run's fixed load (events/s).
    Load,
}

#[derive(Debug, Clone)]
pub struct Scenario {
    /// The family (`--scenario S2` picks every variant of S2).
    pub name: &'static str,
    /// `cap`, `load`, `20ms`, ... or empty when the family has one variant.
    pub variant: &'static str,
    pub what: &'static str,
    pub events: u64,
    pub partitions: i32,
    pub payload_bytes: usize,
    pub endpoints: Vec<Endpoint>,
    pub drive: Drive,
    /// Also run the null pipeline on the same backlog, before hookrelay.
    pub null_baseline: bool,
    pub tls: bool,
    /// Failing endpoints: a short deadline so their events end dead within the run.
    pub short_deadline: bool,
    /// Give up waiting for the last deliveries after this long (the ledger then counts them pending).
    pub deadline: Duration,
    /// Events with a `type` and no receiver, to which every endpoint subscribes
    /// (named endpoints `n0`, `n1`, ...): each event is one delivery per endpoint.
    pub fanout: bool,
    /// The attempt log on (the default a user gets), or off (`topics.attempts = ""`, S10's baseline).
    pub attempt_log: bool,
    /// Endpoints in a registry topic (`t0`, `t1`, ... all to the sink's first URL)
    /// that the events name round-robin (S11); 0 = events with inline URLs.
    pub registry: usize,
}

impl Scenario {
    /// What the table and the targets call this run: `S2 load`, `S0`.
    pub fn label(&self) -> String {
        if self.variant.is_empty() {
            self.name.to_string()
        } else {
            format!("{} {}", self.name, self.variant)
        }
    }

    /// Whether `--scenario` picks it: by family (`S2`) or by label (`S2 load`, `s2-load`).
    pub fn matches(&self, wanted: &str) -> bool {
        let norm = |s: &str| s.to_uppercase().replace(['-', '_', ' '], "");
        norm(wanted) == norm(self.name) || norm(wanted) == norm(&self.label())
    }

    pub fn backlog(&self) -> bool {
        self.drive == Drive::Backlog
    }
}

const FAST: Profile = Profile::Delay(Duration::from_millis(5));

fn endpoints(n: usize, special: &[(usize, &'static str, Profile)]) -> Vec<Endpoint> {
    let mut out = vec![Endpoint { class: "fast", profile: FAST }; n];
    let mut at = 0;
    for &(count, class, profile) in special {
        for e in &mut out[at..at + count] {
            *e = Endpoint { class, profile };
        }
        at += count;
    }
    out
}

/// The capacity and the fixed-load variant of a scenario of many endpoints.
fn both(s: Scenario) -> [Scenario; 2] {
    let cap = Scenario { variant: "cap", drive: Drive::Backlog, ..s.clone() };
    [cap, Scenario { variant: "load", drive: Drive::Load, null_baseline: false, ..s }]
}

/// S12: every event of a backlog to one receiver (one host:port) answering in `delay`.
fn lone(variant: &'static str, delay: Duration, events: u64, base: &Scenario) -> Scenario {
    Scenario {
        name: "S12",
        variant,
        what: "backlog to one endpoint with latency, null pipeline then hookrelay",
        events,
        endpoints: vec![Endpoint { class: "lone", profile: Profile::Delay(delay) }],
        null_baseline: true,
        ..base.clone()
    }
}

/// All scenarios, in the order they run, event counts multiplied by `scale`
/// (at least 100 each; S12 keeps at least 10,000, the shape issue 24 asks).
pub fn all(scale: f64, deadline: Duration) -> Vec<Scenario> {
    let n = |base: f64| ((base * scale).round() as u64).max(100);
    let instant = vec![Endpoint { class: "instant", profile: Profile::Delay(Duration::ZERO) }];
    let base = Scenario {
        name: "",
        variant: "",
        what: "",
        events: 0,
        partitions: 6,
        payload_bytes: 500,
        endpoints: Vec::new(),
        drive: Drive::Backlog,
        null_baseline: false,
        tls: false,
        short_deadline: false,
        deadline,
        fanout: false,
        attempt_log: true,
        registry: 0,
    };
    let s1 = Scenario {
        name: "S1",
        what: "100 endpoints at 5 ms",
        events: n(20_000.0),
        endpoints: endpoints(100, &[]),
        ..base.clone()
    };
    let s2 = Scenario {
        name: "S2",
        what: "S1 with 10 endpoints of 100 at 2 s",
        endpoints: endpoints(100, &[(10, "slow", Profile::Delay(Duration::from_secs(2)))]),
        ..s1.clone()
    };
    let s12 = n(10_000.0).max(10_000);
    let mut out = vec![Scenario {
        name: "S0",
        what: "backlog to one instant endpoint, null pipeline then hookrelay",
        events: n(60_000.0),
        endpoints: instant.clone(),
        null_baseline: true,
        ..base.clone()
    }];
    out.extend(both(s1.clone()));
    out.extend(both(s2.clone()));
    out.extend(both(Scenario {
        name: "S3",
        what: "S1 with 20 endpoints of 100 always 500",
        endpoints: endpoints(100, &[(20, "failing", Profile::Fail(1.0))]),
        short_deadline: true,
        ..s1.clone()
    }));
    out.extend(both(Scenario {
        name: "S4",
        what: "S1 with one endpoint refused and one blackholed",
        endpoints: endpoints(100, &[(1, "refused", Profile::Refused), (1, "blackhole", Profile::Blackhole)]),
        short_deadline: true,
        ..s1.clone()
    }));
    out.push(Scenario {
        name: "S5",
        what: "a large backlog caught up, one instant endpoint, RSS over time",
        events: n(300_000.0),
        endpoints: instant.clone(),
        deadline: deadline * 3,
        ..base.clone()
    });
    // The capacity run also drains the backlog with the null pipeline over the same TLS.
    out.extend(both(Scenario {
        name: "S6",
        what: "S1 over HTTPS (the bench's own CA)",
        tls: true,
        null_baseline: true,
        ..s1
    }));
    out.extend(both(Scenario { name: "S7", what: "S2 on a one-partition topic", partitions: 1, ..s2 }));
    out.push(Scenario {
        name: "S8",
        what: "S0 with 256 KiB payloads",
        events: n(1_000.0),
        payload_bytes: 256 * 1024,
        endpoints: instant.clone(),
        null_baseline: true,
        ..base.clone()
    });
    // S1's deliveries from a tenth of the records: one event, ten subscribed
    // endpoints at 5 ms (issue 21: at least 0.9x S1's deliveries/s, RSS within S1's + 10 %).
    out.push(Scenario {
        name: "S9",
        what: "fan-out: one event -> 10 subscribed endpoints at 5 ms",
        events: n(2_000.0),
        endpoints: endpoints(10, &[]),
        fanout: true,
        ..base.clone()
    });
    // The attempt log's cost: S0's backlog with the log on (the default) and off,
    // alternating runs (issue 22: rate at least 0.9x, CPU per delivery at most 1.15x).
    let s10 = Scenario {
        name: "S10",
        what: "S0 without the null pipeline, the attempt log on vs off",
        events: n(60_000.0),
        endpoints: instant.clone(),
        ..base.clone()
    };
    out.push(Scenario { variant: "on", ..s10.clone() });
    out.push(Scenario { variant: "off", attempt_log: false, ..s10 });
    // 10,000 registry endpoints (issue 20: loaded in under 5 s, under 64 MiB): the
    // same events to inline URLs, then each to one of the registry's endpoints by name.
    let s11 = Scenario {
        name: "S11",
        what: "10,000 registry endpoints vs inline URLs, one event each",
        events: n(10_000.0).max(10_000),
        endpoints: instant,
        ..base.clone()
    };
    out.push(Scenario { variant: "file", ..s11.clone() });
    out.push(Scenario { variant: "registry", registry: 10_000, ..s11 });
    out.push(lone("20ms", Duration::from_millis(20), s12, &base));
    out.push(lone("100ms", Duration::from_millis(100), s12, &base));
    out
}

/// The relay's config for a scenario: default settings but for the topics, the
/// private-network guard (the sink is on 127.0.0.1), short tiers, and where
/// needed a short deadline and a payload limit that fits; for a fan-out, one
/// named endpoint per sink URL (`n0`, `n1`, ...) subscribed to the bench's type.
pub fn relay_config(s: &Scenario, bootstrap: &str, topics: &crate::kafka::Topics, urls: &[String]) -> String {
    let mut out = format!(
        "[kafka]\nbrokers = \"{bootstrap}\"\ngroup_id = \"{}\"\n[topics]\nevents = [\"{}\"]\ndead = \"{}\"\n",
        topics.group, topics.events, topics.dead
    );
    if !s.attempt_log {
        out.push_str("attempts = \"\"\n");
    }
    if s.registry > 0 {
        out.push_str(&format!(
            "endpoints = \"{}\"\n[registry]\nkey = \"{}\"\n",
            topics.registry,
            crate::kafka::REGISTRY_KEY
        ));
    }
    if s.short_deadline {
        out.push_str("[retry]\nmax_age = \"10s\"\n");
    }
    for (topic, delay) in &topics.tiers {
        out.push_str(&format!("[[retry.tiers]]\ntopic = \"{topic}\"\ndelay = \"{delay}\"\n"));
    }
    out.push_str("[delivery]\nallow_private_networks = true\n");
    if s.payload_bytes * 2 > 1024 * 1024 {
        out.push_str(&format!("max_payload_bytes = {}\n", s.payload_bytes * 2));
    }
    // Knob experiments: lines for the relay's [delivery] table, e.g.
    // BENCH_DELIVERY="max_read_ahead_per_partition = 4096".
    if let Ok(extra) = std::env::var("BENCH_DELIVERY") {
        out.push_str(&extra.replace(';', "\n"));
        out.push('\n');
    }
    // Last: these tables close [delivery].
    if s.fanout {
        for (k, url) in urls.iter().enumerate() {
            let types = crate::kafka::FANOUT_TYPE;
            out.push_str(&format!("[endpoints.n{k}]\nurl = \"{url}\"\ntypes = [\"{types}\"]\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scenario_is_sized_and_has_its_endpoint_classes() {
        let all = all(0.01, Duration::from_secs(60));
        let labels: Vec<_> = all.iter().map(Scenario::label).collect();
        assert_eq!(
            labels,
            [
                "S0",
                "S1 cap",
                "S1 load",
                "S2 cap",
                "S2 load",
                "S3 cap",
                "S3 load",
                "S4 cap",
                "S4 load",
                "S5",
                "S6 cap",
                "S6 load",
                "S7 cap",
                "S7 load",
                "S8",
                "S9",
                "S10 on",
                "S10 off",
                "S11 file",
                "S11 registry",
                "S12 20ms",
                "S12 100ms"
            ]
        );
        assert!(all.iter().all(|s| s.events >= 100));
        let by = |label: &str| all.iter().find(|s| s.label() == label).unwrap();
        let s2 = by("S2 load");
        assert_eq!(s2.endpoints.iter().filter(|e| e.class == "slow").count(), 10);
        assert_eq!(s2.endpoints.len(), 100);
        assert_eq!((s2.drive, by("S2 cap").drive), (Drive::Load, Drive::Backlog));
        assert_eq!(by("S7 cap").partitions, 1);
        assert_eq!(by("S3 cap").endpoints.iter().filter(|e| e.class == "failing").count(), 20);
        // The TLS null baseline drains the capacity backlog; a fixed load has no null run.
        assert!(by("S6 cap").null_baseline && by("S6 cap").tls && !by("S6 load").null_baseline);
        // S12 keeps its 10,000-event backlog on 6 partitions to one endpoint at any scale.
        for s in [by("S12 20ms"), by("S12 100ms")] {
            assert_eq!((s.events, s.partitions, s.endpoints.len(), s.null_baseline), (10_000, 6, 1, true));
        }
    }

    #[test]
    fn picked_by_family_or_label() {
        let all = all(1.0, Duration::from_secs(60));
        let s2_load = all.iter().find(|s| s.label() == "S2 load").unwrap();
        assert!(s2_load.matches("S2") && s2_load.matches("s2-load") && s2_load.matches("S2 load"));
        assert!(!s2_load.matches("S2 cap") && !s2_load.matches("S1"));
        assert_eq!(all.iter().filter(|s| s.matches("S12")).count(), 2);
    }

    #[test]
    fn s9_subscribes_every_endpoint_to_the_bench_type() {
        let all = all(1.0, Duration::from_secs(60));
        let s9 = all.iter().find(|s| s.label() == "S9").unwrap();
        assert!(s9.fanout && s9.endpoints.len() == 10);
        let s1 = all.iter().find(|s| s.label() == "S1 cap").unwrap();
        assert_eq!(s9.events * 10, s1.events, "S1's deliveries from a tenth of the records");
        let topics = crate::kafka::Topics::named("b");
        let urls: Vec<String> = (0..10).map(|k| format!("http://127.0.0.1:{}/hook", 9000 + k)).collect();
        let text = relay_config(s9, "localhost:9092", &topics, &urls);
        let config = hookrelay::config::Config::from_toml(&text).expect("the relay reads it");
        assert_eq!(config.endpoints.len(), 10);
        assert!(config.delivery.allow_private_networks);
        assert!(!relay_config(s1, "localhost:9092", &topics, &urls).contains("[endpoints."));
    }

    #[test]
    fn s10_turns_the_log_off_and_s11_reads_a_registry() {
        let all = all(1.0, Duration::from_secs(60));
        let by = |label: &str| all.iter().find(|s| s.label() == label).unwrap();
        let topics = crate::kafka::Topics::named("b");
        let urls = vec!["http://127.0.0.1:9000/hook".to_string()];
        let read = |s: &Scenario| {
            hookrelay::config::Config::from_toml(&relay_config(s, "localhost:9092", &topics, &urls)).unwrap()
        };
        assert_eq!(read(by("S10 on")).topics.attempts, "webhooks.attempts", "the default a user gets");
        assert_eq!(read(by("S10 off")).topics.attempts, "");
        let registry = read(by("S11 registry"));
        assert_eq!(registry.topics.endpoints, topics.registry);
        assert!(registry.registry.key.is_some());
        assert_eq!((by("S11 registry").registry, by("S11 file").registry), (10_000, 0));
        assert_eq!(by("S11 registry").events, 10_000, "one event per endpoint");
    }
}
