//! `make bench`: hookrelay measured against a null pipeline and a sink of many
//! endpoints, on the broker at KAFKA_BOOTSTRAP (scenarios S0..S8 of issue 9,
//! S9 of issue 21, S12 of issue 24), each repeated, with the median and spread of every figure
//! and the targets judged on the medians.
//!
//! `cargo run --release --locked --example bench -- [--scenario S0,S2] [--repeat 3]
//!  [--quick] [--scale 0.2] [--load EVENTS_PER_S] [--deadline-secs 150] [--no-build]
//!  [--perf FILE] [--page]`
//!
//! Each run makes its own random topics (deleted afterwards), starts a sink in
//! this process, the null pipeline and/or hookrelay as release child processes
//! (stopped at the end, also on failure), and closes with a ledger: produced =
//! delivered + dead + pending, or the run is VOID and its figures do not count.
//! A table is printed and the figures are written as JSON to `.bench/`
//! (git-ignored); a full run (every scenario, not `--quick`) also writes the
//! docs page `docs/src/results/bench.md`.

mod figures;
mod kafka;
mod ledger;
mod page;
mod procs;
mod report;
mod run;
mod scenario;
mod sink;

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;

use crate::figures::Run;
use crate::scenario::{Drive, Scenario};

pub fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_micros() as u64
}

struct Args {
    scenarios: Option<Vec<String>>,
    scale: Option<f64>,
    deadline: Duration,
    load: Option<f64>,
    repeat: usize,
    quick: bool,
    build: bool,
    perf: Option<PathBuf>,
    page: bool,
}

const USAGE: &str = "[--scenario S0,S2] [--repeat 3] [--quick] [--scale 0.2] [--load N] [--deadline-secs 150] \
                     [--no-build] [--perf FILE] [--page]";

fn args() -> anyhow::Result<Args> {
    let mut out = Args {
        scenarios: None,
        scale: None,
        deadline: Duration::from_secs(150),
        load: None,
        repeat: 3,
        quick: false,
        build: true,
        perf: None,
        page: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or_else(|| anyhow::anyhow!("{arg} needs a value"));
        match arg.as_str() {
            "--scenario" | "--scenarios" => {
                out.scenarios = Some(value()?.split(',').map(|s| s.trim().to_string()).collect())
            }
            "--scale" => out.scale = Some(value()?.parse()?),
            "--deadline-secs" => out.deadline = Duration::from_secs(value()?.parse()?),
            "--load" => out.load = Some(value()?.parse()?).filter(|r: &f64| *r > 0.0),
            "--repeat" => out.repeat = value()?.parse::<usize>()?.max(1),
            "--quick" => out.quick = true,
            "--no-build" => out.build = false,
            "--perf" => out.perf = Some(value()?.into()),
            "--page" => out.page = true,
            other => anyhow::bail!("unknown argument {other}; use {USAGE}"),
        }
    }
    if out.quick {
        out.repeat = 1;
        out.scale = out.scale.or(Some(0.3));
    }
    Ok(out)
}

fn proc_field(file: &str, key: &str) -> Option<String> {
    let text = std::fs::read_to_string(file).ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    Some(line.split_once(':')?.1.trim().to_string())
}

fn mem_total_mib() -> Option<u64> {
    Some(proc_field("/proc/meminfo", "MemTotal")?.split_whitespace().next()?.parse::<u64>().ok()? / 1024)
}

fn git_rev() -> Option<String> {
    let o = std::process::Command::new("git").args(["rev-parse", "--short", "HEAD"]).output().ok()?;
    Some(String::from_utf8_lossy(&o.stdout).trim().to_string()).filter(|s| !s.is_empty())
}

/// The scenarios picked, in order; S1's capacity run goes first when a fixed load must be derived from it.
fn chosen(args: &Args, scale: f64) -> anyhow::Result<Vec<Scenario>> {
    let all = scenario::all(scale, args.deadline);
    let mut chosen: Vec<Scenario> = all
        .iter()
        .filter(|s| args.scenarios.as_ref().is_none_or(|names| names.iter().any(|n| s.matches(n))))
        .cloned()
        .collect();
    anyhow::ensure!(!chosen.is_empty(), "no scenario matches {:?}", args.scenarios);
    if args.load.is_none() && chosen.iter().any(|s| s.drive == Drive::Load) {
        chosen.retain(|s| s.label() != "S1 cap");
        chosen.insert(0, all.into_iter().find(|s| s.label() == "S1 cap").expect("S1 cap is a scenario"));
    }
    Ok(chosen)
}

/// Half of S1's capacity over its counting runs so far (the first round's).
fn derived_load(runs: &[(Run, Option<run::Outcome>, Option<String>)]) -> Option<f64> {
    let rates: Vec<f64> = runs
        .iter()
        .filter(|(r, _, _)| r.label == "S1 cap" && !r.void)
        .filter_map(|(r, _, _)| r.figures.get("rate").copied())
        .collect();
    figures::Stat::of(&rates).map(|s| s.median / 2.0).filter(|l| *l > 0.0)
}

type Done = (Run, Option<run::Outcome>, Option<String>);

async fn run_one(s: &Scenario, repeat: usize, env: &run::Env, load: Option<f64>, started: Instant) -> Done {
    let label = s.label();
    let t = started.elapsed().as_secs_f64();
    eprintln!("[{t:>5.0} s] {label} #{}: {} ({} events) ...", repeat + 1, s.what, s.events);
    let mut record = Run {
        label: label.clone(),
        family: s.name,
        variant: s.variant,
        repeat,
        figures: Default::default(),
        void: true,
    };
    match run::run(s, env, load).await {
        Ok(outcome) => {
            for p in &outcome.phases {
                eprintln!(
                    "          {label} {}: {} delivered in {:.1} s, {:.0}/s, ledger {:?}",
                    p.label,
                    p.ledger.delivered,
                    p.wall_s,
                    figures::rate(p),
                    p.ledger
                );
            }
            record.void = outcome.phases.iter().any(|p| p.ledger.void());
            record.figures = figures::of_outcome(&outcome);
            (record, Some(outcome), None)
        }
        Err(e) => {
            eprintln!("          {label} FAILED: {e:#} (logs in {})", env.out_dir.display());
            (record, None, Some(format!("{e:#}")))
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = args()?;
    let scale = args.scale.unwrap_or(1.0);
    let bootstrap = std::env::var("KAFKA_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:9092".into());
    if args.build {
        procs::build()?;
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out_dir = root.join(".bench");
    std::fs::create_dir_all(&out_dir)?;
    let env = run::Env {
        bootstrap: bootstrap.clone(),
        out_dir: out_dir.clone(),
        broker_pid: procs::broker_pid(&bootstrap),
        perf: args.perf.clone(),
    };
    let chosen = chosen(&args, scale)?;
    let date = time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339)?;
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpu_model = proc_field("/proc/cpuinfo", "model name");
    // Read once at the start: the commit that was built and measured, even if HEAD moves during the run.
    let git = git_rev();
    let header = format!(
        "hookrelay bench {date}, {cores} cores ({}), {} MiB, broker {bootstrap} (pid {}), scale {scale}, {} repeat(s), git {}",
        cpu_model.as_deref().unwrap_or("?"),
        mem_total_mib().unwrap_or(0),
        env.broker_pid.as_deref().unwrap_or("not found"),
        args.repeat,
        git.as_deref().unwrap_or_default()
    );
    eprintln!("{header}");
    let started = Instant::now();
    let mut done: Vec<Done> = Vec::new();
    let mut load = args.load;
    // Rounds of every scenario once: a noisy spell on a shared machine spreads over
    // all scenarios instead of landing on one, so the ratios to S1 hold still. The
    // fixed load is half of S1's capacity in the first round (S1 cap runs first).
    for repeat in 0..args.repeat {
        for s in &chosen {
            if s.drive == Drive::Load && load.is_none() {
                load = derived_load(&done);
                match load {
                    Some(l) => eprintln!(
                        "          offered load for the fixed-load runs: {l:.0} events/s (half of S1's capacity)"
                    ),
                    None => eprintln!("          no S1 capacity measured: the fixed-load runs fail (or give --load)"),
                }
            }
            done.push(run_one(s, repeat, &env, load, started).await);
        }
    }
    let mut runs: Vec<Run> = Vec::new();
    let mut rest = Vec::new();
    for (run, outcome, error) in done {
        runs.push(run);
        rest.push((outcome, error));
    }
    figures::add_vs_s1(&mut runs);
    let summary = figures::summarize(&runs);
    let verdicts = figures::judge(&summary, figures::TARGETS);
    let total_s = started.elapsed().as_secs_f64();
    println!("\n{header}, {total_s:.0} s in all\n{}", report::table(&runs, &summary, &verdicts));
    let failures: Vec<String> = runs
        .iter()
        .zip(&rest)
        .filter_map(|(r, (_, e))| e.as_ref().map(|e| format!("{} #{}: {e}", r.label, r.repeat + 1)))
        .collect();
    for f in &failures {
        println!("FAILED {f}");
    }
    let meta = json!({
        "date": date, "cores": cores, "cpu_model": cpu_model, "mem_total_mib": mem_total_mib(),
        "bootstrap": bootstrap, "broker_pid": env.broker_pid, "scale": scale, "repeat": args.repeat,
        "quick": args.quick, "load": load, "load_given": args.load.is_some(), "deadline_s": args.deadline.as_secs(),
        "git": git, "total_s": total_s, "failures": failures,
    });
    let run_values = runs.iter().zip(&rest).map(|(r, (o, e))| report::run_json(r, o.as_ref(), e.as_deref())).collect();
    let record = report::json(meta, run_values, &summary, &verdicts);
    let text = serde_json::to_string_pretty(&record)?;
    let stamp = date.replace(':', "-");
    std::fs::write(out_dir.join(format!("bench-{stamp}.json")), &text)?;
    std::fs::write(out_dir.join("latest.json"), &text)?;
    println!("JSON: {}", out_dir.join(format!("bench-{stamp}.json")).display());
    if args.page || (args.scenarios.is_none() && !args.quick && args.perf.is_none()) {
        let page = root.join("docs/src/results/bench.md");
        std::fs::create_dir_all(page.parent().expect("a folder"))?;
        std::fs::write(&page, page::render(&record))?;
        println!("page: {}", page.display());
    }
    let void = runs.iter().any(|r| r.void);
    anyhow::ensure!(failures.is_empty() && !void, "a run failed or a ledger is VOID");
    Ok(())
}
