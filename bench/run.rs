//! Runs one scenario: topics, sink, events, the null pipeline and/or hookrelay,
//! measurements while they work, then the ledger and clean-up.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::kafka::{self, Batch, DeadWatch, Topics};
use crate::ledger::{self, Ledger};
use crate::procs::{self, Managed, ProcStats};
use crate::scenario::{self, Scenario};
use crate::sink::{Seen, Sink};

pub struct Env {
    pub bootstrap: String,
    pub out_dir: PathBuf,
    pub broker_pid: Option<String>,
    /// Record the relay with `perf record` into this file (make profile).
    pub perf: Option<PathBuf>,
}

/// What one process (null pipeline or hookrelay) did in a scenario.
pub struct Phase {
    pub label: &'static str,
    pub seen: Seen,
    pub wall_s: f64,
    pub timed_out: bool,
    pub process: ProcStats,
    pub broker_cpu_s: Option<f64>,
    pub driver_cpu_s: f64,
    /// (seconds since start, RSS MiB), sampled every second.
    pub rss: Vec<(f64, f64)>,
    pub ledger: Ledger,
    /// Records the relay routed to a retry tier (its /metrics at the end); None for the null pipeline.
    pub tiered: Option<f64>,
    /// From the relay's start to ready (it reads its registry first), seconds; None for the null pipeline.
    pub ready_s: Option<f64>,
    /// How long the relay took to read its registry to the end, as it logged it (S11).
    pub registry_ms: Option<f64>,
}

pub struct Outcome {
    pub scenario: Scenario,
    /// The offered load of a fixed-load run (events/s).
    pub load: Option<f64>,
    pub produced: u64,
    pub produce_s: f64,
    pub phases: Vec<Phase>,
}

fn self_cpu() -> f64 {
    procs::stats("self").map_or(0.0, |s| s.cpu_s)
}

fn broker_cpu(env: &Env) -> Option<f64> {
    procs::stats(env.broker_pid.as_deref()?).map(|s| s.cpu_s)
}

/// Runs one scenario; `load` (events/s) is used by a fixed-load scenario and required there.
pub async fn run(s: &Scenario, env: &Env, load: Option<f64>) -> anyhow::Result<Outcome> {
    let load = if s.backlog() {
        None
    } else {
        Some(load.ok_or_else(|| anyhow::anyhow!("{} needs an offered load", s.label()))?)
    };
    let base = format!("bench-{}-{:x}-{}", std::process::id(), rand::random::<u32>(), s.name.to_lowercase());
    let topics = Topics::named(&base);
    kafka::create_topics(&env.bootstrap, &topics.all(), s.partitions).await?;
    let result = run_on(s, env, &topics, load).await;
    let mut made = topics.all();
    if s.registry > 0 {
        made.push(topics.registry.clone());
    }
    kafka::delete_topics(&env.bootstrap, &made).await;
    result
}

async fn run_on(s: &Scenario, env: &Env, topics: &Topics, load: Option<f64>) -> anyhow::Result<Outcome> {
    let dir = tempfile::tempdir()?;
    let (acceptor, ca) = if s.tls {
        let (ca, identity) = procs::make_tls(dir.path())?;
        (Some(tokio_native_tls::TlsAcceptor::from(native_tls::TlsAcceptor::new(identity)?)), Some(ca))
    } else {
        (None, None)
    };
    let sink = Sink::start(&s.endpoints, acceptor, s.fanout).await?;
    // A fan-out (S9) counts each leg as a delivery: the ledger is over event x leg.
    let legs = if s.fanout { s.endpoints.len() as u64 } else { 1 };
    let batch = Batch {
        bootstrap: env.bootstrap.clone(),
        topic: topics.events.clone(),
        partitions: s.partitions,
        count: s.events,
        payload_bytes: s.payload_bytes,
        urls: sink.urls.clone(),
        rate: load,
        fanout: s.fanout,
        named: s.registry,
    };
    if s.registry > 0 {
        kafka::write_registry(&env.bootstrap, &topics.registry, s.registry, &sink.urls[0]).await?;
    }
    let mut outcome = Outcome { scenario: s.clone(), load, produced: 0, produce_s: 0.0, phases: Vec::new() };
    let mut producing = None;
    if s.backlog() {
        let (ok, failed, took) = tokio::task::spawn_blocking(move || kafka::produce(&batch)).await??;
        anyhow::ensure!(failed == 0, "{failed} events not acknowledged by the broker");
        (outcome.produced, outcome.produce_s) = (ok, took);
    } else {
        producing = Some(batch);
    }

    if s.null_baseline {
        let group = format!("{}.null", topics.group);
        let log = env.out_dir.join(format!("{}-null.log", s.name));
        let (broker0, driver0) = (broker_cpu(env), self_cpu());
        sink.start_clock();
        let started = Instant::now();
        let max = s.deadline + Duration::from_secs(30);
        let mut null = procs::spawn_null(&env.bootstrap, &topics.events, &group, max, &log, ca.as_deref())?;
        let mut rss = Vec::new();
        let expected = outcome.produced * legs;
        let timed_out = wait(&sink, &mut null, None, expected, started, s.deadline, &mut rss).await?;
        let phase = finish("null", null, None, started, timed_out, rss, broker0, driver0, env).await;
        let pending = pending_in(&env.bootstrap, &topics.events, &group, &[], legs)?;
        let seen = sink.take();
        let ledger = ledger::close(expected, &seen.ids, seen.duplicates, &[], &pending);
        outcome.phases.push(Phase { seen, ledger, ..phase });
    }

    let log = env.out_dir.join(format!("{}-hookrelay.log", s.name));
    let config = scenario::relay_config(s, &env.bootstrap, topics, &sink.urls);
    if s.backlog() {
        sink.start_clock();
    }
    let spawned = Instant::now();
    let (mut relay, admin) = procs::spawn_relay(&config, dir.path(), &log, ca.as_deref())?;
    procs::wait_ready(&mut relay, admin, Duration::from_secs(90)).await?;
    let ready_s = spawned.elapsed().as_secs_f64();
    let perf = env.perf.as_deref().map(|out| procs::spawn_perf(&relay.pid(), out)).transpose()?;
    let dead_watch = DeadWatch::start(&env.bootstrap, &topics.dead, legs)?;
    let (broker0, driver0) = (broker_cpu(env), self_cpu());
    let started = Instant::now();
    let mut rss = Vec::new();
    let timed_out = if let Some(batch) = producing {
        // Watch the relay while producing, so an early exit is seen and RSS sampled.
        let (ok, failed, took) = {
            let producer = tokio::task::spawn_blocking(move || kafka::produce(&batch));
            let watch = wait(&sink, &mut relay, Some(&dead_watch), u64::MAX, started, s.deadline, &mut rss);
            tokio::select! {
                produced = producer => produced??,
                result = watch => {
                    result?;
                    anyhow::bail!("the deadline passed before all events were produced (lower --load or raise --deadline-secs)");
                }
            }
        };
        anyhow::ensure!(failed == 0, "{failed} events not acknowledged by the broker");
        (outcome.produced, outcome.produce_s) = (ok, took);
        let left = s.deadline.saturating_sub(started.elapsed());
        wait(&sink, &mut relay, Some(&dead_watch), outcome.produced * legs, Instant::now(), left, &mut rss).await?
    } else {
        wait(&sink, &mut relay, Some(&dead_watch), outcome.produced * legs, started, s.deadline, &mut rss).await?
    };
    drop(dead_watch);
    if let Some(mut perf) = perf {
        tokio::task::spawn_blocking(move || perf.stop()).await.ok();
    }
    let phase = finish("hookrelay", relay, Some(admin), started, timed_out, rss, broker0, driver0, env).await;
    let registry_ms = registry_load_ms(&std::fs::read_to_string(&log).unwrap_or_default());
    let phase = Phase { ready_s: Some(ready_s), registry_ms, ..phase };
    let tiers: Vec<String> = topics.tiers.iter().map(|(t, _)| t.clone()).collect();
    let pending = pending_in(&env.bootstrap, &topics.events, &topics.group, &tiers, legs)?;
    let dead: Vec<(u64, Option<String>)> = kafka::read_ids(&env.bootstrap, &topics.dead, &HashMap::new())?
        .into_iter()
        .filter_map(|r| Some((r.id?, r.reason, r.endpoint)))
        .flat_map(|(id, reason, endpoint)| {
            kafka::deliveries(id, endpoint.as_deref(), legs).into_iter().map(move |d| (d, reason.clone()))
        })
        .collect();
    let seen = sink.take();
    let ledger = ledger::close(outcome.produced * legs, &seen.ids, seen.duplicates, &dead, &pending);
    outcome.phases.push(Phase { seen, ledger, ..phase });
    Ok(outcome)
}

/// Waits until every produced event is delivered or dead, the deadline passes
/// (true is returned), or the process exits (an error). Samples RSS every second.
async fn wait(
    sink: &Sink,
    process: &mut Managed,
    dead: Option<&DeadWatch>,
    produced: u64,
    started: Instant,
    deadline: Duration,
    rss: &mut Vec<(f64, f64)>,
) -> anyhow::Result<bool> {
    let mut next_sample = Instant::now();
    loop {
        if Instant::now() >= next_sample {
            if let Some(stats) = process.stats() {
                rss.push((started.elapsed().as_secs_f64(), stats.rss_mib));
            }
            next_sample += Duration::from_secs(1);
        }
        let dead_only = dead.map_or(0, |d| d.ids.lock().unwrap().iter().filter(|id| !sink.delivered(**id)).count());
        if (sink.unique() + dead_only) as u64 >= produced {
            return Ok(false);
        }
        anyhow::ensure!(!process.exited(), "{} exited during the run", process.name);
        if started.elapsed() >= deadline {
            return Ok(true);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Reads the process's figures while it is alive, then stops it.
#[allow(clippy::too_many_arguments)]
async fn finish(
    label: &'static str,
    mut process: Managed,
    admin: Option<std::net::SocketAddr>,
    started: Instant,
    timed_out: bool,
    rss: Vec<(f64, f64)>,
    broker0: Option<f64>,
    driver0: f64,
    env: &Env,
) -> Phase {
    let wall_s = started.elapsed().as_secs_f64();
    let stats = process.stats().unwrap_or_default();
    let broker_cpu_s = broker_cpu(env).zip(broker0).map(|(now, then)| now - then);
    let driver_cpu_s = self_cpu() - driver0;
    let tiered = match admin {
        Some(admin) => procs::metric_sum(admin, "hookrelay_retries_routed_total").await,
        None => None,
    };
    tokio::task::spawn_blocking(move || process.stop()).await.ok();
    Phase {
        label,
        seen: Seen::default(),
        wall_s,
        timed_out,
        process: stats,
        broker_cpu_s,
        driver_cpu_s,
        rss,
        ledger: Ledger::default(),
        tiered,
        ready_s: None,
        registry_ms: None,
    }
}

/// The `ms` of the relay's log line "registry read to its end" (JSON lines), if any.
fn registry_load_ms(log: &str) -> Option<f64> {
    let line = log.lines().find(|l| l.contains("registry read to its end"))?;
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    value["fields"]["ms"].as_f64()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_registry_load_time_is_read_from_the_relays_log() {
        let log = concat!(
            r#"{"level":"INFO","fields":{"message":"admin server listening"}}"#,
            "\n",
            r#"{"level":"INFO","fields":{"message":"registry read to its end","applied":10000,"ms":1234}}"#,
        );
        assert_eq!(super::registry_load_ms(log), Some(1234.0));
        assert_eq!(super::registry_load_ms("no such line"), None);
    }
}

/// Deliveries still waiting: in the tier topics, or past the group's committed
/// offsets on the events topic (every leg of such an event, for a fan-out).
fn pending_in(bootstrap: &str, events: &str, group: &str, tiers: &[String], legs: u64) -> anyhow::Result<HashSet<u64>> {
    let committed = kafka::committed(bootstrap, group, events)?;
    let mut read = kafka::read_ids(bootstrap, events, &committed)?;
    for tier in tiers {
        read.extend(kafka::read_ids(bootstrap, tier, &HashMap::new())?);
    }
    Ok(read.into_iter().filter_map(|r| Some(kafka::deliveries(r.id?, r.endpoint.as_deref(), legs))).flatten().collect())
}
