//! The results page of the docs (`docs/src/results/bench.md`), made from the
//! JSON record of one full `make bench` run and overwritten by the next.

use std::fmt::Write;

use serde_json::Value;

use crate::figures::Stat;
use crate::report::{ratio_line, stat, COLUMNS};

fn stat_of(v: &Value) -> Option<Stat> {
    serde_json::from_value(v.clone()).ok()
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn meta_lines(m: &Value) -> String {
    let load = m["load"].as_f64().map_or("-".into(), |l| format!("{} events/s", crate::report::num(l)));
    let load_from =
        if m["load_given"].as_bool() == Some(true) { "given with --load" } else { "half of S1's capacity in this run" };
    format!(
        "- Date: {}\n- Commit: `{}`\n- Machine: {} cores ({}), {} MiB of memory; the broker (Kafka, pid {}) and the \
         sink run on the same cores, and other work on the machine may have run at the same time\n\
         - Repeats: {} per scenario, scale {}, fixed offered load {} ({load_from}); {:.0} minutes in all\n",
        text(&m["date"]),
        text(&m["git"]),
        text(&m["cores"]),
        text(&m["cpu_model"]),
        text(&m["mem_total_mib"]),
        text(&m["broker_pid"]),
        text(&m["repeat"]),
        text(&m["scale"]),
        load,
        m["total_s"].as_f64().unwrap_or(0.0) / 60.0,
    )
}

/// The markdown page for one JSON record (as written by `report::json`).
pub fn render(record: &Value) -> String {
    let mut out = String::from(
        "# Benchmark results\n\n\
         The output of one `make bench` run (the benchmark driver `bench/main.rs`), written from its\n\
         JSON record; every full run overwrites this page. Figures are medians over the repeats with\n\
         the spread (min-max) in brackets; a run whose ledger did not close (produced = delivered +\n\
         dead + pending, lost = 0) is not counted.\n\n",
    );
    out.push_str(&meta_lines(&record["meta"]));
    out.push_str("\n## Figures\n\n| scenario | runs |");
    for (header, _) in COLUMNS {
        let _ = write!(out, " {header} |");
    }
    out.push_str(" ratios |\n|---|---|");
    out.push_str(&"---:|".repeat(COLUMNS.len()));
    out.push_str("---|\n");
    let runs = record["runs"].as_array().cloned().unwrap_or_default();
    for row in record["summary"].as_array().into_iter().flatten() {
        let label = text(&row["label"]);
        let of_label = runs.iter().filter(|r| r["label"] == row["label"]);
        let all = of_label.clone().count();
        let ok = of_label.filter(|r| r["void"] == Value::Bool(false)).count();
        let figures = &row["figures"];
        let _ = write!(out, "| {label} | {ok}/{all} |");
        for (_, figure) in COLUMNS {
            let _ = write!(out, " {} |", stat(stat_of(&figures[figure]).as_ref()));
        }
        let _ = writeln!(out, " {} |", ratio_line(|f| stat_of(figures.get(f)?)));
    }
    out.push_str("\n## Targets (issue 24), judged on medians\n\n| scenario | figure | target | median [min-max] | verdict | what |\n|---|---|---|---|---|---|\n");
    for t in record["targets"].as_array().into_iter().flatten() {
        let target = &t["target"];
        let bound = match (&target["bound"]["AtLeast"], &target["bound"]["AtMost"]) {
            (Value::Number(v), _) => format!(">= {v}"),
            (_, Value::Number(v)) => format!("<= {v}"),
            _ => "-".into(),
        };
        let verdict = match t["holds"].as_bool() {
            Some(true) => "holds",
            Some(false) => "**fails**",
            None => "not measured",
        };
        let _ = writeln!(
            out,
            "| {} | `{}` | {bound} | {} | {verdict} | {} |",
            text(&target["label"]),
            text(&target["figure"]),
            stat(stat_of(&t["stat"]).as_ref()),
            text(&target["what"]),
        );
    }
    out.push_str(
        "\nColumns: deliv/s is unique deliveries over first-to-last delivery; main/s, p50 and p99 are the\n\
         healthy class (the fast, instant or lone endpoints), end to end from the scheduled produce time\n\
         (for a backlog, from the relay's start); CPU-s per 1,000 deliveries; `cap` is a capacity run (a\n\
         backlog drained as fast as it goes), `load` a run at the fixed offered load; `tiered` counts\n\
         records the relay routed to a retry tier.\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::figures::{judge, Run, TARGETS};

    #[test]
    fn the_page_has_the_machine_the_commit_the_table_and_the_verdicts() {
        let runs: Vec<Run> = [0.7, 0.8, 0.75]
            .iter()
            .enumerate()
            .map(|(i, v)| Run {
                label: "S0".into(),
                family: "S0",
                variant: "",
                repeat: i,
                figures: [("rate".to_string(), 9000.0 + i as f64), ("rate_vs_null".to_string(), *v)].into(),
                void: false,
            })
            .collect();
        let summary = crate::figures::summarize(&runs);
        let verdicts = judge(&summary, TARGETS);
        let meta = json!({"date": "2026-12-04T20:00:00Z", "git": "abc1234", "cores": 2, "cpu_model": "Test CPU",
            "mem_total_mib": 24105, "repeat": 3, "scale": 1.0, "load": 6000.0, "total_s": 1500.0});
        let run_values: Vec<Value> = runs.iter().map(|r| json!({"label": r.label, "void": r.void})).collect();
        let page = render(&crate::report::json(meta, run_values, &summary, &verdicts));
        assert!(page.contains("- Date: 2026-12-04T20:00:00Z"), "{page}");
        assert!(page.contains("`abc1234`") && page.contains("2 cores (Test CPU), 24105 MiB"), "{page}");
        assert!(page.contains("6,000 events/s (half of S1's capacity in this run); 25 minutes"), "{page}");
        assert!(page.contains("| S0 | 3/3 | 9,001 [9,000-9,002] |"), "{page}");
        assert!(page.contains("rate_vs_null 0.750 [0.700-0.800]"), "{page}");
        assert!(page.contains("| S0 | `rate_vs_null` | >= 0.9 | 0.750 [0.700-0.800] | **fails** |"), "{page}");
        assert!(page.contains("| S0 | `cpu_vs_null` | <= 1.25 | - | not measured |"), "{page}");
    }
}
