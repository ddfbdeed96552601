//! `make bench`: hookrelay measured against a null pipeline and a sink of many
//! endpoints, on the broker at KAFKA_BOOTSTRAP (scenarios S0..S8 of issue 9).
//!
//! `cargo run --release --locked --example bench -- [--scenario S0,S2] [--scale 0.2]
//!  [--deadline-secs 150] [--rate EVENTS_PER_S] [--no-build]`
//!
//! Each scenario makes its own random topics (deleted afterwards), starts a sink
//! in this process, the null pipeline and/or hookrelay as release child processes
//! (stopped at the end, also on failure), and closes with a ledger: produced =
//! delivered + dead + pending, or the run is VOID. A table is printed and the
//! figures are written as JSON to `.bench/` (git-ignored).

mod kafka;
mod ledger;
mod procs;
mod report;
mod run;
mod scenario;
mod sink;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;

pub fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_micros() as u64
}

struct Args {
    scenarios: Option<Vec<String>>,
    scale: f64,
    deadline: Duration,
    rate: Option<f64>,
    build: bool,
}

fn args() -> anyhow::Result<Args> {
    let mut out = Args { scenarios: None, scale: 1.0, deadline: Duration::from_secs(150), rate: None, build: true };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or_else(|| anyhow::anyhow!("{arg} needs a value"));
        match arg.as_str() {
            "--scenario" | "--scenarios" => {
                out.scenarios = Some(value()?.split(',').map(|s| s.trim().to_uppercase()).collect())
            }
            "--scale" => out.scale = value()?.parse()?,
            "--deadline-secs" => out.deadline = Duration::from_secs(value()?.parse()?),
            "--rate" => out.rate = Some(value()?.parse()?).filter(|r: &f64| *r > 0.0),
            "--no-build" => out.build = false,
            other => anyhow::bail!(
                "unknown argument {other}; use [--scenario S0,S2] [--scale 0.2] [--deadline-secs 150] [--rate N] [--no-build]"
            ),
        }
    }
    Ok(out)
}

fn mem_total_mib() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 =
        meminfo.lines().find_map(|l| l.strip_prefix("MemTotal:"))?.split_whitespace().next()?.parse().ok()?;
    Some(kib / 1024)
}

fn git_rev() -> Option<String> {
    let o = std::process::Command::new("git").args(["rev-parse", "--short", "HEAD"]).output().ok()?;
    Some(String::from_utf8_lossy(&o.stdout).trim().to_string()).filter(|s| !s.is_empty())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = args()?;
    let bootstrap = std::env::var("KAFKA_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:9092".into());
    if args.build {
        procs::build()?;
    }
    let out_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".bench");
    std::fs::create_dir_all(&out_dir)?;
    let env = run::Env {
        bootstrap: bootstrap.clone(),
        out_dir: out_dir.clone(),
        rate: args.rate,
        broker_pid: procs::broker_pid(&bootstrap),
    };
    let chosen: Vec<_> = scenario::all(args.scale, args.deadline)
        .into_iter()
        .filter(|s| args.scenarios.as_ref().is_none_or(|names| names.iter().any(|n| n == s.name)))
        .collect();
    anyhow::ensure!(!chosen.is_empty(), "no scenario matches {:?}", args.scenarios);
    let date = time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339)?;
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let header = format!(
        "hookrelay bench {date}, {cores} cores, {} MiB, broker {bootstrap} (pid {}), scale {}, git {}",
        mem_total_mib().unwrap_or(0),
        env.broker_pid.as_deref().unwrap_or("not found"),
        args.scale,
        git_rev().unwrap_or_default()
    );
    eprintln!("{header}");
    let started = std::time::Instant::now();
    let mut outcomes = Vec::new();
    let mut failures = Vec::new();
    for s in &chosen {
        eprintln!("[{:>5.0} s] {}: {} ({} events) ...", started.elapsed().as_secs_f64(), s.name, s.what, s.events);
        match run::run(s, &env).await {
            Ok(outcome) => {
                for p in &outcome.phases {
                    eprintln!(
                        "          {} {}: {} delivered in {:.1} s, ledger {:?}",
                        s.name, p.label, p.ledger.delivered, p.wall_s, p.ledger
                    );
                }
                outcomes.push(outcome);
            }
            Err(e) => {
                eprintln!("          {} FAILED: {e:#} (logs in {})", s.name, out_dir.display());
                failures.push(format!("{}: {e:#}", s.name));
            }
        }
    }
    let table = report::table(&outcomes);
    println!("\n{header}, {:.0} s in all\n{table}", started.elapsed().as_secs_f64());
    for f in &failures {
        println!("FAILED {f}");
    }
    let meta = json!({
        "date": date, "cores": cores, "mem_total_mib": mem_total_mib(), "bootstrap": bootstrap,
        "scale": args.scale, "rate": args.rate, "deadline_s": args.deadline.as_secs(), "git": git_rev(),
        "total_s": started.elapsed().as_secs_f64(), "failures": failures,
    });
    let record = serde_json::to_string_pretty(&report::json(&outcomes, meta))?;
    let stamp = date.replace(':', "-");
    std::fs::write(out_dir.join(format!("bench-{stamp}.json")), &record)?;
    std::fs::write(out_dir.join("latest.json"), &record)?;
    println!("JSON: {}", out_dir.join(format!("bench-{stamp}.json")).display());
    let void = outcomes.iter().flat_map(|o| &o.phases).any(|p| p.ledger.void());
    anyhow::ensure!(failures.is_empty() && !void, "a scenario failed or a ledger is VOID");
    Ok(())
}
