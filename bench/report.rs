//! Figures from the runs: percentiles, ratios, the printed table and the JSON record.

use serde_json::{json, Value};

use crate::run::{Outcome, Phase};
use crate::sink::ClassStats;

/// The p-th percentile (0..=1) in milliseconds, nearest rank; None without samples.
pub fn percentile_ms(sorted_us: &[u64], p: f64) -> Option<f64> {
    if sorted_us.is_empty() {
        return None;
    }
    let rank = ((p * sorted_us.len() as f64).ceil() as usize).clamp(1, sorted_us.len());
    Some(sorted_us[rank - 1] as f64 / 1000.0)
}

fn sorted(class: &ClassStats) -> Vec<u64> {
    let mut v = class.latencies_us.clone();
    v.sort_unstable();
    v
}

/// The class a scenario is judged by: the fast endpoints, or the one instant endpoint.
fn main_class(phase: &Phase) -> Option<&ClassStats> {
    phase.seen.class("fast").or_else(|| phase.seen.class("instant"))
}

fn rate(phase: &Phase) -> f64 {
    phase.seen.window().filter(|w| !w.is_zero()).map_or(0.0, |w| phase.seen.ids.len() as f64 / w.as_secs_f64())
}

fn per_1k(cpu_s: f64, delivered: u64) -> Option<f64> {
    (delivered > 0).then(|| cpu_s / (delivered as f64 / 1000.0))
}

fn relay(o: &Outcome) -> Option<&Phase> {
    o.phases.iter().find(|p| p.label == "hookrelay")
}

fn null(o: &Outcome) -> Option<&Phase> {
    o.phases.iter().find(|p| p.label == "null")
}

fn main_p99(phase: &Phase) -> Option<f64> {
    main_class(phase).and_then(|c| percentile_ms(&sorted(c), 0.99))
}

/// The ratios each scenario is judged by (see issue 9's targets).
pub fn ratios(o: &Outcome, all: &[Outcome]) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    let Some(r) = relay(o) else { return out };
    if let Some(n) = null(o) {
        out.push(("rate_vs_null".into(), rate(r) / rate(n)));
        if let (Some(a), Some(b)) =
            (per_1k(r.process.cpu_s, r.ledger.delivered), per_1k(n.process.cpu_s, n.ledger.delivered))
        {
            out.push(("cpu_per_1k_vs_null".into(), a / b));
        }
    }
    let s1 = all.iter().find(|x| x.scenario.name == "S1").and_then(relay);
    if let (Some(s1), true) = (s1, ["S2", "S3", "S4", "S6", "S7"].contains(&o.scenario.name)) {
        if let (Some(mine), Some(base)) = (main_class(r), main_class(s1)) {
            out.push(("fast_rate_vs_s1".into(), mine.rate() / base.rate()));
        }
        if let (Some(mine), Some(base)) = (main_p99(r), main_p99(s1)) {
            out.push(("fast_p99_vs_s1".into(), mine / base));
        }
    }
    if o.scenario.name == "S5" && r.rss.len() >= 4 {
        let quarter = r.rss[r.rss.len() / 4].1;
        let last = r.rss.last().map_or(0.0, |x| x.1);
        out.push(("rss_end_vs_quarter".into(), last / quarter));
    }
    out
}

fn ms(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| if v < 10.0 { format!("{v:.1}") } else { format!("{v:.0}") })
}

fn row(name: &str, o: &Outcome, p: &Phase, ratios: &[(String, f64)]) -> String {
    let main = main_class(p);
    let lat = main.map(sorted).unwrap_or_default();
    let delivered = p.ledger.delivered;
    let l = &p.ledger;
    let ledger = if l.void() {
        format!("VOID lost {}", l.lost)
    } else {
        format!("ok: {} dead {} pend {} dup", l.dead_total, l.pending, l.duplicates)
    };
    let ratios: Vec<String> = ratios.iter().map(|(k, v)| format!("{k} {v:.2}")).collect();
    format!(
        "{name:<9} {:>8} {:>8.0} {:>8.0} {:>7} {:>7} {:>7} {:>6.0} {:>6} {:>6} {:>6}  {ledger:<28} {}{}",
        o.produced,
        rate(p),
        main.map_or(0.0, ClassStats::rate),
        ms(percentile_ms(&lat, 0.5)),
        ms(percentile_ms(&lat, 0.99)),
        ms(percentile_ms(&lat, 0.999)),
        p.process.peak_rss_mib,
        cpu(per_1k(p.process.cpu_s, delivered)),
        cpu(p.broker_cpu_s.and_then(|c| per_1k(c, delivered))),
        cpu(per_1k(p.driver_cpu_s, delivered)),
        ratios.join(", "),
        if p.timed_out { " (deadline reached)" } else { "" },
    )
}

fn cpu(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.3}"))
}

pub fn table(outcomes: &[Outcome]) -> String {
    let mut out = format!(
        "{:<9} {:>8} {:>8} {:>8} {:>7} {:>7} {:>7} {:>6} {:>6} {:>6} {:>6}  {:<28} {}\n",
        "scenario",
        "produced",
        "deliv/s",
        "main/s",
        "p50ms",
        "p99ms",
        "p99.9ms",
        "RSSMiB",
        "relay",
        "broker",
        "sink",
        "ledger",
        "ratios"
    );
    for o in outcomes {
        for p in &o.phases {
            let name =
                if p.label == "null" { format!("{} null", o.scenario.name) } else { o.scenario.name.to_string() };
            let ratios = if p.label == "null" { Vec::new() } else { ratios(o, outcomes) };
            out.push_str(&row(&name, o, p, &ratios));
            out.push('\n');
        }
    }
    out.push_str(
        "deliv/s: unique deliveries / first-to-last delivery; main/s and p50..p99.9: the fast (or instant) endpoints,\n\
         end-to-end from the scheduled produce time; relay/broker/sink: CPU-s per 1,000 deliveries (relay = the\n\
         process measured, hookrelay or the null pipeline); RSSMiB: its peak (VmHWM).\n",
    );
    for o in outcomes {
        for p in &o.phases {
            for c in &p.seen.classes {
                let lat = sorted(c);
                out.push_str(&format!(
                    "  {} {:<9} {:<10} {:>8} delivered {:>8.0}/s  p50 {} p99 {} p99.9 {} ms\n",
                    o.scenario.name,
                    p.label,
                    c.name,
                    c.delivered(),
                    c.rate(),
                    ms(percentile_ms(&lat, 0.5)),
                    ms(percentile_ms(&lat, 0.99)),
                    ms(percentile_ms(&lat, 0.999)),
                ));
            }
            if !p.ledger.dead.is_empty() {
                out.push_str(&format!("  {} {:<9} dead by reason: {:?}\n", o.scenario.name, p.label, p.ledger.dead));
            }
        }
    }
    out
}

fn phase_json(p: &Phase) -> Value {
    let delivered = p.ledger.delivered;
    let classes: Vec<Value> = p
        .seen
        .classes
        .iter()
        .map(|c| {
            let lat = sorted(c);
            json!({
                "class": c.name, "delivered": c.delivered(), "rate": c.rate(),
                "p50_ms": percentile_ms(&lat, 0.5), "p99_ms": percentile_ms(&lat, 0.99), "p999_ms": percentile_ms(&lat, 0.999),
            })
        })
        .collect();
    json!({
        "process": p.label, "wall_s": p.wall_s, "deadline_reached": p.timed_out,
        "rate": rate(p), "requests": p.seen.requests, "classes": classes,
        "cpu_s": p.process.cpu_s, "cpu_s_per_1k": per_1k(p.process.cpu_s, delivered),
        "peak_rss_mib": p.process.peak_rss_mib,
        "broker_cpu_s": p.broker_cpu_s, "broker_cpu_s_per_1k": p.broker_cpu_s.and_then(|c| per_1k(c, delivered)),
        "sink_cpu_s": p.driver_cpu_s, "sink_cpu_s_per_1k": per_1k(p.driver_cpu_s, delivered),
        "rss_mib_over_time": p.rss, "ledger": p.ledger, "void": p.ledger.void(),
    })
}

pub fn json(outcomes: &[Outcome], meta: Value) -> Value {
    let scenarios: Vec<Value> = outcomes
        .iter()
        .map(|o| {
            let s = &o.scenario;
            json!({
                "name": s.name, "what": s.what, "events": s.events, "partitions": s.partitions,
                "payload_bytes": s.payload_bytes, "endpoints": s.endpoints.len(), "tls": s.tls,
                "produced": o.produced, "produce_s": o.produce_s,
                "phases": o.phases.iter().map(phase_json).collect::<Vec<_>>(),
                "ratios": ratios(o, outcomes).into_iter().map(|(k, v)| (k, json!(v))).collect::<serde_json::Map<String, Value>>(),
            })
        })
        .collect();
    json!({ "meta": meta, "scenarios": scenarios })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<u64> = (1..=1000).map(|i| i * 1000).collect();
        assert_eq!(percentile_ms(&v, 0.5), Some(500.0));
        assert_eq!(percentile_ms(&v, 0.99), Some(990.0));
        assert_eq!(percentile_ms(&v, 0.999), Some(999.0));
        assert_eq!(percentile_ms(&[7000], 0.999), Some(7.0));
        assert_eq!(percentile_ms(&[], 0.5), None);
    }
}
