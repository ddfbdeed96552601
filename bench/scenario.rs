//! The scenarios (S0..S8 of issue 9): what each sends where, scaled by `--scale`.

use std::time::Duration;

use crate::sink::{Endpoint, Profile};

#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: &'static str,
    pub what: &'static str,
    pub events: u64,
    pub partitions: i32,
    pub payload_bytes: usize,
    pub endpoints: Vec<Endpoint>,
    /// All events on the topic before the relay starts (else produced while it runs).
    pub backlog: bool,
    /// Also run the null pipeline on the same backlog, before hookrelay.
    pub null_baseline: bool,
    pub tls: bool,
    /// Failing endpoints: a short deadline so their events end dead within the run.
    pub short_deadline: bool,
    /// Give up waiting for the last deliveries after this long (the ledger then counts them pending).
    pub deadline: Duration,
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

/// All scenarios, sizes multiplied by `scale` (at least 100 events each).
pub fn all(scale: f64, deadline: Duration) -> Vec<Scenario> {
    let n = |base: f64| ((base * scale).round() as u64).max(100);
    let instant = vec![Endpoint { class: "instant", profile: Profile::Delay(Duration::ZERO) }];
    let base = Scenario {
        name: "",
        what: "",
        events: 0,
        partitions: 6,
        payload_bytes: 500,
        endpoints: Vec::new(),
        backlog: false,
        null_baseline: false,
        tls: false,
        short_deadline: false,
        deadline,
    };
    let s1 = Scenario {
        name: "S1",
        what: "100 endpoints at 5 ms",
        events: n(30_000.0),
        endpoints: endpoints(100, &[]),
        ..base.clone()
    };
    let s2 = Scenario {
        name: "S2",
        what: "S1 with 10 endpoints of 100 at 2 s",
        endpoints: endpoints(100, &[(10, "slow", Profile::Delay(Duration::from_secs(2)))]),
        ..s1.clone()
    };
    vec![
        Scenario {
            name: "S0",
            what: "backlog to one instant endpoint, null pipeline then hookrelay",
            events: n(100_000.0),
            endpoints: instant.clone(),
            backlog: true,
            null_baseline: true,
            ..base.clone()
        },
        s1.clone(),
        s2.clone(),
        Scenario {
            name: "S3",
            what: "S1 with 20 endpoints of 100 always 500",
            endpoints: endpoints(100, &[(20, "failing", Profile::Fail(1.0))]),
            short_deadline: true,
            ..s1.clone()
        },
        Scenario {
            name: "S4",
            what: "S1 with one endpoint refused and one blackholed",
            endpoints: endpoints(100, &[(1, "refused", Profile::Refused), (1, "blackhole", Profile::Blackhole)]),
            short_deadline: true,
            ..s1.clone()
        },
        Scenario {
            name: "S5",
            what: "1,000,000-event backlog caught up, one instant endpoint, RSS over time",
            events: n(1_000_000.0),
            endpoints: instant.clone(),
            backlog: true,
            deadline: deadline * 3,
            ..base.clone()
        },
        Scenario { name: "S6", what: "S1 over HTTPS (the bench's own CA)", tls: true, ..s1 },
        Scenario { name: "S7", what: "S2 on a one-partition topic", partitions: 1, ..s2 },
        Scenario {
            name: "S8",
            what: "S0 with 256 KiB payloads",
            events: n(1_000.0),
            payload_bytes: 256 * 1024,
            endpoints: instant,
            backlog: true,
            null_baseline: true,
            ..base
        },
    ]
}

/// The relay's config for a scenario: default settings but for the topics, the
/// private-network guard (the sink is on 127.0.0.1), short tiers, and where
/// needed a short deadline and a payload limit that fits.
pub fn relay_config(s: &Scenario, bootstrap: &str, topics: &crate::kafka::Topics) -> String {
    let mut out = format!(
        "[kafka]\nbrokers = \"{bootstrap}\"\ngroup_id = \"{}\"\n[topics]\nevents = [\"{}\"]\ndead = \"{}\"\n",
        topics.group, topics.events, topics.dead
    );
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
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scenario_is_sized_and_has_its_endpoint_classes() {
        let all = all(0.01, Duration::from_secs(60));
        let names: Vec<_> = all.iter().map(|s| s.name).collect();
        assert_eq!(names, ["S0", "S1", "S2", "S3", "S4", "S5", "S6", "S7", "S8"]);
        assert!(all.iter().all(|s| s.events >= 100));
        let s2 = &all[2];
        assert_eq!(s2.endpoints.iter().filter(|e| e.class == "slow").count(), 10);
        assert_eq!(s2.endpoints.len(), 100);
        assert_eq!(all[7].partitions, 1);
        assert_eq!(all[3].endpoints.iter().filter(|e| e.class == "failing").count(), 20);
    }
}
