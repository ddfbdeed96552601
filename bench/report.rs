//! The printed table (medians and spreads over the repeats), the targets, and
//! the JSON record of every run.

use serde_json::{json, Value};

use crate::figures::{self, Bound, Run, Stat, Summary, Verdict};
use crate::run::{Outcome, Phase};

/// `12,348` style for rates, one decimal for small values, three for CPU figures.
pub fn num(v: f64) -> String {
    let a = v.abs();
    if a >= 1000.0 {
        let s = format!("{:.0}", a);
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        format!("{}{out}", if v < 0.0 { "-" } else { "" })
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 || a == 0.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// `median [min-max]`, or the median alone for one run.
pub fn stat(s: Option<&Stat>) -> String {
    match s {
        None => "-".into(),
        Some(s) if s.n == 1 || s.min == s.max => num(s.median),
        Some(s) => format!("{} [{}-{}]", num(s.median), num(s.min), num(s.max)),
    }
}

/// The columns of the table: (header, figure).
pub const COLUMNS: [(&str, &str); 8] = [
    ("deliv/s", "rate"),
    ("main/s", "main_rate"),
    ("p50 ms", "p50_ms"),
    ("p99 ms", "p99_ms"),
    ("relay CPU-s/1k", "cpu_per_1k"),
    ("broker CPU-s/1k", "broker_per_1k"),
    ("peak RSS MiB", "peak_rss_mib"),
    ("null deliv/s", "null_rate"),
];

/// Figures printed on the ratio line under a scenario's row.
pub const RATIOS: &[&str] = &[
    "rate_vs_null",
    "cpu_vs_null",
    "main_vs_s1",
    "p99_vs_s1",
    "offered",
    "main_vs_offered",
    "tiered",
    "dead",
    "rss_end_vs_quarter",
    "rate_vs_s1",
    "rss_vs_s1",
    "rate_vs_off",
    "cpu_vs_off",
    "registry_load_ms",
    "rss_extra_mib",
];

/// The [`RATIOS`] a scenario has, `name median [min-max]`, comma-separated (no dead count when none died).
pub fn ratio_line(get: impl Fn(&str) -> Option<Stat>) -> String {
    let parts: Vec<String> = RATIOS
        .iter()
        .filter_map(|f| Some((f, get(f)?)))
        .filter(|(f, s)| **f != "dead" || s.max > 0.0)
        .map(|(f, s)| format!("{f} {}", stat(Some(&s))))
        .collect();
    parts.join(", ")
}

fn counts(runs: &[Run], label: &str) -> (usize, usize) {
    let all = runs.iter().filter(|r| r.label == label).count();
    (runs.iter().filter(|r| r.label == label && !r.void).count(), all)
}

pub fn bound(b: Bound) -> String {
    match b {
        Bound::AtLeast(v) => format!(">= {v}"),
        Bound::AtMost(v) => format!("<= {v}"),
    }
}

pub fn verdict_word(v: &Verdict) -> &'static str {
    match v.holds {
        Some(true) => "holds",
        Some(false) => "FAILS",
        None => "not measured",
    }
}

pub fn table(runs: &[Run], summary: &Summary, verdicts: &[Verdict]) -> String {
    let mut out = format!("{:<12} {:>5}", "scenario", "runs");
    for (header, _) in COLUMNS {
        out.push_str(&format!(" {header:>22}"));
    }
    out.push('\n');
    for (label, stats) in summary {
        let (ok, all) = counts(runs, label);
        out.push_str(&format!("{label:<12} {:>5}", format!("{ok}/{all}")));
        for (_, figure) in COLUMNS {
            out.push_str(&format!(" {:>22}", stat(stats.get(figure))));
        }
        out.push('\n');
        let ratios = ratio_line(|f| stats.get(f).copied());
        if !ratios.is_empty() {
            out.push_str(&format!("{:<18} {ratios}\n", ""));
        }
    }
    out.push_str(
        "median [min-max] over the runs whose ledger closed (runs: counted/run). deliv/s: unique deliveries /\n\
         first-to-last delivery; main/s, p50, p99: the healthy class (fast, instant or lone endpoints), end to end\n\
         from the scheduled produce time (a backlog: from the relay's start); CPU-s per 1,000 deliveries.\n\n",
    );
    out.push_str("targets (judged on medians):\n");
    for v in verdicts {
        let t = &v.target;
        out.push_str(&format!(
            "  {:<12} {:<16} {:<8} {:<22} {:<13} {}\n",
            t.label,
            t.figure,
            bound(t.bound),
            stat(v.stat.as_ref()),
            verdict_word(v),
            t.what
        ));
    }
    out
}

fn phase_json(p: &Phase) -> Value {
    let classes: Vec<Value> = p
        .seen
        .classes
        .iter()
        .map(|c| {
            let lat = figures::sorted(c);
            json!({
                "class": c.name, "delivered": c.delivered(), "rate": c.rate(),
                "p50_ms": figures::percentile_ms(&lat, 0.5), "p99_ms": figures::percentile_ms(&lat, 0.99),
                "p999_ms": figures::percentile_ms(&lat, 0.999),
            })
        })
        .collect();
    json!({
        "process": p.label, "wall_s": p.wall_s, "deadline_reached": p.timed_out,
        "requests": p.seen.requests, "classes": classes, "cpu_s": p.process.cpu_s,
        "broker_cpu_s": p.broker_cpu_s, "sink_cpu_s": p.driver_cpu_s,
        "rss_mib_over_time": p.rss, "ledger": p.ledger, "void": p.ledger.void(), "tiered": p.tiered,
    })
}

/// One run in the JSON record: its figures and, when it ran, its phases in detail.
pub fn run_json(run: &Run, outcome: Option<&Outcome>, error: Option<&str>) -> Value {
    let detail = outcome.map(|o| {
        let s = &o.scenario;
        json!({
            "what": s.what, "events": s.events, "partitions": s.partitions, "payload_bytes": s.payload_bytes,
            "endpoints": s.endpoints.len(), "tls": s.tls, "load": o.load, "produced": o.produced,
            "produce_s": o.produce_s, "phases": o.phases.iter().map(phase_json).collect::<Vec<_>>(),
        })
    });
    json!({
        "label": run.label, "repeat": run.repeat, "void": run.void, "error": error,
        "figures": run.figures, "detail": detail,
    })
}

pub fn json(meta: Value, runs: Vec<Value>, summary: &Summary, verdicts: &[Verdict]) -> Value {
    let summary: Vec<Value> =
        summary.iter().map(|(label, stats)| json!({ "label": label, "figures": stats })).collect();
    json!({ "meta": meta, "summary": summary, "targets": verdicts, "runs": runs })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_spreads_read_at_a_glance() {
        assert_eq!(num(12348.4), "12,348");
        assert_eq!(num(1234567.0), "1,234,567");
        assert_eq!(num(512.4), "512");
        assert_eq!(num(15.26), "15.3");
        assert_eq!(num(1.256), "1.26");
        assert_eq!(num(0.0941), "0.094");
        assert_eq!(num(0.0), "0.0");
        let s = Stat { median: 0.78, min: 0.75, max: 0.8, n: 3 };
        assert_eq!(stat(Some(&s)), "0.780 [0.750-0.800]");
        assert_eq!(stat(Some(&Stat { n: 1, ..s })), "0.780");
        assert_eq!(stat(None), "-");
    }
}
