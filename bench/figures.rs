//! The figures of each run, their median and spread over the repeats, and the
//! targets judged on the medians. Pure (no I/O), so the judgement is tested.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::run::{Outcome, Phase};
use crate::sink::ClassStats;

/// Named figures of one run (`rate`, `p99_ms`, `rate_vs_null`, ...).
pub type Figures = BTreeMap<String, f64>;

/// One run of one scenario: its figures, and whether they count.
pub struct Run {
    pub label: String,
    pub family: &'static str,
    pub variant: &'static str,
    pub repeat: usize,
    pub figures: Figures,
    /// The ledger did not close (lost != 0) or the run failed: its figures do not count.
    pub void: bool,
}

/// The p-th percentile (0..=1) in milliseconds, nearest rank; None without samples.
pub fn percentile_ms(sorted_us: &[u64], p: f64) -> Option<f64> {
    if sorted_us.is_empty() {
        return None;
    }
    let rank = ((p * sorted_us.len() as f64).ceil() as usize).clamp(1, sorted_us.len());
    Some(sorted_us[rank - 1] as f64 / 1000.0)
}

pub fn sorted(class: &ClassStats) -> Vec<u64> {
    let mut v = class.latencies_us.clone();
    v.sort_unstable();
    v
}

/// The class a scenario is judged by: the fast endpoints, the one instant endpoint or S12's lone one.
pub const MAIN_CLASSES: [&str; 3] = ["fast", "instant", "lone"];

pub fn main_class(phase: &Phase) -> Option<&ClassStats> {
    MAIN_CLASSES.iter().find_map(|name| phase.seen.class(name))
}

/// Unique deliveries per second, first to last delivery.
pub fn rate(phase: &Phase) -> f64 {
    phase.seen.window().filter(|w| !w.is_zero()).map_or(0.0, |w| phase.seen.ids.len() as f64 / w.as_secs_f64())
}

pub fn per_1k(cpu_s: f64, delivered: u64) -> Option<f64> {
    (delivered > 0).then(|| cpu_s / (delivered as f64 / 1000.0))
}

fn phase_figures(p: &Phase, prefix: &str, out: &mut Figures) {
    let mut put = |k: &str, v: Option<f64>| {
        if let Some(v) = v.filter(|v| v.is_finite()) {
            out.insert(format!("{prefix}{k}"), v);
        }
    };
    let delivered = p.ledger.delivered;
    put("rate", Some(rate(p)));
    put("cpu_per_1k", per_1k(p.process.cpu_s, delivered));
    put("peak_rss_mib", Some(p.process.peak_rss_mib));
    if let Some(main) = main_class(p) {
        let lat = sorted(main);
        put("main_rate", Some(main.rate()));
        put("p50_ms", percentile_ms(&lat, 0.5));
        put("p99_ms", percentile_ms(&lat, 0.99));
        put("p999_ms", percentile_ms(&lat, 0.999));
    }
    put("broker_per_1k", p.broker_cpu_s.and_then(|c| per_1k(c, delivered)));
    put("sink_per_1k", per_1k(p.driver_cpu_s, delivered));
    put("tiered", p.tiered);
    put("ready_ms", p.ready_s.map(|s| s * 1000.0));
    put("registry_load_ms", p.registry_ms);
    put("dead", Some(p.ledger.dead_total as f64));
    put("pending", Some(p.ledger.pending as f64));
    put("lost", Some(p.ledger.lost as f64));
}

/// The figures of one run: hookrelay's, the null pipeline's (`null_*`) and the ratios within the run.
pub fn of_outcome(o: &Outcome) -> Figures {
    let mut f = Figures::new();
    let relay = o.phases.iter().find(|p| p.label == "hookrelay");
    if let Some(r) = relay {
        phase_figures(r, "", &mut f);
    }
    if let Some(n) = o.phases.iter().find(|p| p.label == "null") {
        phase_figures(n, "null_", &mut f);
    }
    let ratio = |a: Option<&f64>, b: Option<&f64>| a.zip(b).filter(|(_, b)| **b > 0.0).map(|(a, b)| a / b);
    if let Some(v) = ratio(f.get("rate"), f.get("null_rate")) {
        f.insert("rate_vs_null".into(), v);
    }
    if let Some(v) = ratio(f.get("cpu_per_1k"), f.get("null_cpu_per_1k")) {
        f.insert("cpu_vs_null".into(), v);
    }
    if let (Some(load), Some(r)) = (o.load, relay) {
        f.insert("offered".into(), load);
        // Delivered rate over the rate the same events were scheduled at: 1.0 when
        // the class keeps up with what it is offered, whatever the producer's own pace.
        if let Some(main) = main_class(r).filter(|m| m.offered_rate() > 0.0) {
            f.insert("main_vs_offered".into(), main.rate() / main.offered_rate());
        }
    }
    if let Some(r) = relay.filter(|r| o.scenario.name == "S5" && r.rss.len() >= 4) {
        let quarter = r.rss[r.rss.len() / 4].1;
        let last = r.rss.last().map_or(0.0, |x| x.1);
        f.insert("rss_end_vs_quarter".into(), last / quarter);
    }
    f
}

/// Families whose main class is compared with S1's (same variant: capacity with capacity, load with load).
pub const VS_S1: [&str; 5] = ["S2", "S3", "S4", "S6", "S7"];

/// Adds `main_vs_s1` and `p99_vs_s1` to the runs of [`VS_S1`]: each run against the median of S1's counting runs;
/// and `rate_vs_s1`, `rss_vs_s1` to S9's, against S1's capacity runs.
pub fn add_vs_s1(runs: &mut [Run]) {
    let bases: Vec<(Option<f64>, Option<f64>)> = runs
        .iter()
        .map(|r| (median_of(runs, "S1", r.variant, "main_rate"), median_of(runs, "S1", r.variant, "p99_ms")))
        .collect();
    // S9 (fan-out, a backlog) against S1's capacity run: deliveries/s and peak RSS.
    let (s1_rate, s1_rss) = (median_of(runs, "S1", "cap", "rate"), median_of(runs, "S1", "cap", "peak_rss_mib"));
    for run in runs.iter_mut().filter(|r| r.family == "S9") {
        add_ratio(run, "rate_vs_s1", "rate", s1_rate);
        add_ratio(run, "rss_vs_s1", "peak_rss_mib", s1_rss);
    }
    add_within_family(runs);
    for (run, (rate, p99)) in runs.iter_mut().zip(bases) {
        if VS_S1.contains(&run.family) {
            add_ratio(run, "main_vs_s1", "main_rate", rate);
            add_ratio(run, "p99_vs_s1", "p99_ms", p99);
        }
    }
}

/// Ratios between the variants of one family: S10's log on against the median of
/// its log-off runs (`rate_vs_off`, `cpu_vs_off`), S11's registry against the
/// median of its inline-URL runs (`rss_extra_mib`, the registry's memory).
fn add_within_family(runs: &mut [Run]) {
    let (off_rate, off_cpu) = (median_of(runs, "S10", "off", "rate"), median_of(runs, "S10", "off", "cpu_per_1k"));
    let file_rss = median_of(runs, "S11", "file", "peak_rss_mib");
    for run in runs.iter_mut() {
        match (run.family, run.variant) {
            ("S10", "on") => {
                add_ratio(run, "rate_vs_off", "rate", off_rate);
                add_ratio(run, "cpu_vs_off", "cpu_per_1k", off_cpu);
            }
            ("S11", "registry") => {
                if let (Some(mine), Some(base)) = (run.figures.get("peak_rss_mib").copied(), file_rss) {
                    run.figures.insert("rss_extra_mib".into(), mine - base);
                }
            }
            _ => {}
        }
    }
}

/// The median of `figure` over the counting runs of one family's variant.
fn median_of(runs: &[Run], family: &str, variant: &str, figure: &str) -> Option<f64> {
    let values: Vec<f64> = runs
        .iter()
        .filter(|r| r.family == family && r.variant == variant && !r.void)
        .filter_map(|r| r.figures.get(figure).copied())
        .collect();
    Stat::of(&values).map(|s| s.median)
}

/// Adds `name` = the run's `figure` over `base`, when both are there and `base` is positive.
fn add_ratio(run: &mut Run, name: &str, figure: &str, base: Option<f64>) {
    if let (Some(mine), Some(base)) = (run.figures.get(figure).copied(), base.filter(|b| *b > 0.0)) {
        run.figures.insert(name.into(), mine / base);
    }
}

/// Median and spread (min..max) of one figure over the counting runs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, serde::Deserialize)]
pub struct Stat {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl Stat {
    /// None without values; the median of an even count is the mean of the middle two.
    pub fn of(values: &[f64]) -> Option<Stat> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let mid = v.len() / 2;
        let median = if v.len() % 2 == 0 { (v[mid - 1] + v[mid]) / 2.0 } else { v[mid] };
        Some(Stat { median, min: v[0], max: v[v.len() - 1], n: v.len() })
    }
}

/// label -> figure -> stat, over the runs that count, labels in the order they ran.
pub type Summary = Vec<(String, BTreeMap<String, Stat>)>;

pub fn summarize(runs: &[Run]) -> Summary {
    let mut out: Summary = Vec::new();
    for run in runs {
        if !out.iter().any(|(l, _)| *l == run.label) {
            out.push((run.label.clone(), BTreeMap::new()));
        }
    }
    for (label, stats) in &mut out {
        let counting: Vec<&Run> = runs.iter().filter(|r| r.label == *label && !r.void).collect();
        let names: std::collections::BTreeSet<&String> = counting.iter().flat_map(|r| r.figures.keys()).collect();
        for name in names {
            let values: Vec<f64> = counting.iter().filter_map(|r| r.figures.get(name).copied()).collect();
            if let Some(s) = Stat::of(&values) {
                stats.insert(name.clone(), s);
            }
        }
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum Bound {
    AtLeast(f64),
    AtMost(f64),
}

/// A target of issue 24, judged on the median of one figure of one scenario run.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Target {
    pub label: &'static str,
    pub figure: &'static str,
    pub bound: Bound,
    pub what: &'static str,
}

const fn at_least(label: &'static str, figure: &'static str, v: f64, what: &'static str) -> Target {
    Target { label, figure, bound: Bound::AtLeast(v), what }
}

const fn at_most(label: &'static str, figure: &'static str, v: f64, what: &'static str) -> Target {
    Target { label, figure, bound: Bound::AtMost(v), what }
}

const OFFERED: &str = "healthy endpoints get what is offered";
const P99: &str = "healthy p99 end to end vs S1 at the same load";

/// Issue 24's targets: capacity (point 3), isolation at the fixed load (point 2), the lone endpoint (point 0).
pub const TARGETS: &[Target] = &[
    at_least("S0", "rate_vs_null", 0.9, "rate vs the null pipeline"),
    at_most("S0", "cpu_vs_null", 1.25, "CPU per delivery vs the null pipeline"),
    at_least("S2 cap", "main_vs_s1", 0.9, "healthy class capacity vs S1"),
    at_least("S3 cap", "main_vs_s1", 0.8, "healthy class capacity vs S1"),
    at_least("S6 cap", "rate_vs_null", 0.8, "HTTPS rate vs the null pipeline over the same TLS"),
    at_least("S7 cap", "main_vs_s1", 0.9, "healthy class capacity vs S1"),
    at_least("S2 load", "main_vs_offered", 0.98, OFFERED),
    at_most("S2 load", "p99_vs_s1", 1.5, P99),
    at_least("S3 load", "main_vs_offered", 0.98, OFFERED),
    at_most("S3 load", "p99_vs_s1", 1.5, P99),
    at_least("S4 load", "main_vs_offered", 0.98, OFFERED),
    at_most("S4 load", "p99_vs_s1", 1.5, P99),
    at_least("S7 load", "main_vs_offered", 0.98, OFFERED),
    at_most("S7 load", "p99_vs_s1", 1.5, P99),
    at_least("S9", "rate_vs_s1", 0.9, "fan-out deliveries/s vs S1 cap's"),
    at_most("S9", "rss_vs_s1", 1.1, "fan-out peak RSS vs S1 cap's"),
    at_least("S10 on", "rate_vs_off", 0.9, "rate with the attempt log vs without"),
    at_most("S10 on", "cpu_vs_off", 1.15, "CPU per delivery with the attempt log vs without"),
    at_most("S11 registry", "registry_load_ms", 5000.0, "10,000 registry endpoints read at start-up, ms"),
    at_most("S11 registry", "rss_extra_mib", 64.0, "their peak RSS over inline URLs, MiB"),
    at_least("S12 20ms", "rate_vs_null", 0.8, "lone 20 ms endpoint vs the null pipeline"),
    at_most("S12 20ms", "tiered", 0.0, "records deferred to a tier"),
    at_least("S12 100ms", "rate_vs_null", 0.8, "lone 100 ms endpoint vs the null pipeline"),
    at_most("S12 100ms", "tiered", 0.0, "records deferred to a tier"),
];

/// A target with its median and spread, and whether it holds (None: not measured in this run).
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub target: Target,
    pub stat: Option<Stat>,
    pub holds: Option<bool>,
}

pub fn judge(summary: &Summary, targets: &[Target]) -> Vec<Verdict> {
    targets
        .iter()
        .filter_map(|t| {
            let (_, stats) = summary.iter().find(|(l, _)| l == t.label)?;
            let stat = stats.get(t.figure).copied();
            let holds = stat.map(|s| match t.bound {
                Bound::AtLeast(v) => s.median >= v,
                Bound::AtMost(v) => s.median <= v,
            });
            Some(Verdict { target: *t, stat, holds })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(label: &str, family: &'static str, variant: &'static str, void: bool, figures: &[(&str, f64)]) -> Run {
        Run {
            label: label.into(),
            family,
            variant,
            repeat: 0,
            figures: figures.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            void,
        }
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<u64> = (1..=1000).map(|i| i * 1000).collect();
        assert_eq!(percentile_ms(&v, 0.5), Some(500.0));
        assert_eq!(percentile_ms(&v, 0.99), Some(990.0));
        assert_eq!(percentile_ms(&v, 0.999), Some(999.0));
        assert_eq!(percentile_ms(&[7000], 0.999), Some(7.0));
        assert_eq!(percentile_ms(&[], 0.5), None);
    }

    #[test]
    fn median_and_spread() {
        assert_eq!(Stat::of(&[3.0, 1.0, 2.0]), Some(Stat { median: 2.0, min: 1.0, max: 3.0, n: 3 }));
        assert_eq!(Stat::of(&[4.0, 1.0]), Some(Stat { median: 2.5, min: 1.0, max: 4.0, n: 2 }));
        assert_eq!(Stat::of(&[f64::NAN, 5.0]).map(|s| (s.median, s.n)), Some((5.0, 1)));
        assert_eq!(Stat::of(&[]), None);
    }

    #[test]
    fn s10_on_is_judged_against_its_off_runs_and_s11_registry_against_inline_urls() {
        let mut runs = vec![
            run("S10 on", "S10", "on", false, &[("rate", 900.0), ("cpu_per_1k", 0.11)]),
            run("S10 off", "S10", "off", false, &[("rate", 1000.0), ("cpu_per_1k", 0.10)]),
            run("S10 off", "S10", "off", true, &[("rate", 1.0), ("cpu_per_1k", 9.0)]),
            run("S11 file", "S11", "file", false, &[("peak_rss_mib", 100.0)]),
            run("S11 registry", "S11", "registry", false, &[("peak_rss_mib", 150.0), ("registry_load_ms", 900.0)]),
        ];
        add_vs_s1(&mut runs);
        assert!((runs[0].figures["rate_vs_off"] - 0.9).abs() < 1e-9);
        assert!((runs[0].figures["cpu_vs_off"] - 1.1).abs() < 1e-9);
        assert!(!runs[1].figures.contains_key("rate_vs_off"));
        assert_eq!(runs[4].figures["rss_extra_mib"], 50.0);
        let verdicts = judge(&summarize(&runs), TARGETS);
        let holds = |figure: &str| verdicts.iter().find(|v| v.target.figure == figure).and_then(|v| v.holds);
        assert_eq!(
            (holds("rate_vs_off"), holds("cpu_vs_off"), holds("registry_load_ms"), holds("rss_extra_mib")),
            (Some(true), Some(true), Some(true), Some(true))
        );
    }

    #[test]
    fn void_runs_do_not_count_and_ratios_to_s1_use_its_median_of_the_same_variant() {
        let mut runs = vec![
            run("S1 cap", "S1", "cap", false, &[("main_rate", 1000.0), ("p99_ms", 10.0)]),
            run("S1 cap", "S1", "cap", false, &[("main_rate", 3000.0), ("p99_ms", 30.0)]),
            run("S1 cap", "S1", "cap", true, &[("main_rate", 99_999.0), ("p99_ms", 1.0)]),
            run("S1 load", "S1", "load", false, &[("main_rate", 500.0), ("p99_ms", 100.0)]),
            run("S2 cap", "S2", "cap", false, &[("main_rate", 1800.0), ("p99_ms", 40.0)]),
            run("S2 load", "S2", "load", false, &[("main_rate", 490.0), ("p99_ms", 160.0)]),
            run("S0", "S0", "", false, &[("rate_vs_null", 0.7), ("cpu_vs_null", 1.2)]),
        ];
        add_vs_s1(&mut runs);
        // S1 cap's median over its two counting runs is 2,000/s and 20 ms; the void run is left out.
        assert_eq!(runs[4].figures["main_vs_s1"], 0.9);
        assert_eq!(runs[4].figures["p99_vs_s1"], 2.0);
        assert_eq!(runs[5].figures["main_vs_s1"], 0.98);
        assert_eq!(runs[5].figures["p99_vs_s1"], 1.6);
        assert!(!runs[0].figures.contains_key("main_vs_s1"));
        let summary = summarize(&runs);
        let labels: Vec<&str> = summary.iter().map(|(l, _)| l.as_str()).collect();
        assert_eq!(labels, ["S1 cap", "S1 load", "S2 cap", "S2 load", "S0"]);
        assert_eq!(summary[0].1["main_rate"], Stat { median: 2000.0, min: 1000.0, max: 3000.0, n: 2 });

        let verdicts = judge(&summary, TARGETS);
        let holds = |label: &str, figure: &str| {
            verdicts.iter().find(|v| v.target.label == label && v.target.figure == figure).and_then(|v| v.holds)
        };
        assert_eq!(holds("S2 cap", "main_vs_s1"), Some(true)); // 0.9 >= 0.9
        assert_eq!(holds("S2 load", "p99_vs_s1"), Some(false)); // 1.6 > 1.5
        assert_eq!(holds("S0", "rate_vs_null"), Some(false));
        assert_eq!(holds("S0", "cpu_vs_null"), Some(true));
        assert_eq!(holds("S2 load", "main_vs_offered"), None); // not measured: no verdict either way
                                                               // Targets of scenarios that did not run are left out.
        assert!(verdicts.iter().all(|v| !v.target.label.starts_with("S12")));
    }
}
