//! The handbook's reference pages against the code: a configuration key, a
//! `hookrelay_*` metric, a CLI command or flag, or a dead reason missing from
//! its page in `docs/src/reference/` fails here. No broker needed.
//!
//! What this uses of the library: `config::Config` (its defaults and serde
//! shape), `observe::metric_names()` and `route::outcome::DeadReason::ALL`; the CLI is read
//! from the built binary's `--help`.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use figment::providers::{Format, Serialized, Toml};
use figment::Figment;
use hookrelay::config::Config;
use serde_json::Value;

fn page(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/src/reference").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The table rows of a page (lines starting with `|`).
fn rows(text: &str) -> Vec<&str> {
    text.lines().filter(|line| line.trim_start().starts_with('|')).collect()
}

/// The cells of a table row, trimmed.
fn cells(row: &str) -> Vec<&str> {
    row.trim().trim_start_matches('|').split('|').map(str::trim).collect()
}

/// The row that names `key` in code in its first cell.
fn row_of<'a>(rows: &[&'a str], key: &str) -> Option<&'a str> {
    let wanted = format!("`{key}`");
    rows.iter().copied().find(|row| cells(row).first() == Some(&wanted.as_str()))
}

/// Tables whose keys are the user's (free-form maps): documented as the table itself.
const MAPS: [&str; 4] =
    ["kafka.properties", "endpoints.<name>.headers", "endpoints.<name>.filter", "notify.sinks[].headers"];

/// Every key path of a config value as the handbook writes it: named endpoints as
/// `endpoints.<name>`, arrays of tables as `[]`, free-form maps as themselves.
fn key_paths(value: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    if MAPS.contains(&prefix) {
        out.insert(prefix.to_string());
        return;
    }
    let tables = |items: &Vec<Value>| !items.is_empty() && items.iter().all(Value::is_object);
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (key, value) in map {
                let key = if prefix == "endpoints" { "<name>" } else { key.as_str() };
                let path = if prefix.is_empty() { key.to_string() } else { format!("{prefix}.{key}") };
                key_paths(value, &path, out);
            }
        }
        Value::Array(items) if tables(items) => {
            for item in items {
                key_paths(item, &format!("{prefix}[]"), out);
            }
        }
        _ => {
            out.insert(prefix.to_string());
        }
    }
}

/// The shipped example with its commented-out keys switched on: it names every
/// key (the unit test `the_shipped_example_shows_every_key` holds it to that).
fn example_with_every_key() -> String {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("hookrelay.example.toml")).unwrap();
    let is_toml = |rest: &str| {
        let header = rest.starts_with('[') && rest.split('#').next().unwrap_or("").trim_end().ends_with(']');
        header || rest.split_once(" = ").is_some_and(|(key, _)| !key.contains(' '))
    };
    let lines: Vec<&str> = text
        .lines()
        .map(|line| match line.strip_prefix("# ") {
            Some(rest) if is_toml(rest) => rest,
            _ => line,
        })
        .collect();
    lines.join("\n")
}

/// The value at a dotted path of the defaults, for the plain scalars a row can show as written.
fn default_at<'a>(defaults: &'a Value, key: &str) -> Option<&'a Value> {
    key.split('.').try_fold(defaults, |value, part| value.get(part))
}

#[test]
fn the_configuration_page_has_every_key_and_its_default() {
    // Extract without validate(): the example's options exclude each other (plaintext vs TLS).
    let config: Config = Figment::from(Serialized::defaults(Config::default()))
        .merge(Toml::string(&example_with_every_key()))
        .extract()
        .expect("every key of the example is a config key");
    let mut keys = BTreeSet::new();
    key_paths(&serde_json::to_value(&config).unwrap(), "", &mut keys);
    assert!(keys.len() > 50, "the example's keys were read: {keys:?}");
    let text = page("configuration.md");
    let rows = rows(&text);
    let missing: Vec<_> = keys.iter().filter(|key| row_of(&rows, key).is_none()).collect();
    assert!(missing.is_empty(), "keys missing from docs/src/reference/configuration.md: {missing:?}");

    // Defaults that are plain numbers, booleans or words must be the row's own.
    let defaults = serde_json::to_value(Config::default()).unwrap();
    let mut wrong = Vec::new();
    for key in &keys {
        let shown = match default_at(&defaults, key) {
            Some(Value::Bool(b)) => format!("`{b}`"),
            Some(Value::Number(n)) => format!("`{n}`"),
            Some(Value::String(s)) if !s.starts_with(|c: char| c.is_ascii_digit()) => format!("`\"{s}\"`"),
            _ => continue,
        };
        let row = row_of(&rows, key).unwrap_or_default();
        let default_cell = cells(row).get(1).copied().unwrap_or("");
        if !default_cell.contains(&shown) {
            wrong.push(format!("{key}: default {shown}, the page says {default_cell:?}"));
        }
    }
    assert!(wrong.is_empty(), "defaults wrong in docs/src/reference/configuration.md: {wrong:#?}");
}

#[test]
fn the_metrics_page_has_every_series() {
    let names = hookrelay::observe::metric_names();
    assert!(names.iter().any(|n| n == "hookrelay_deliveries_total"), "{names:?}");
    let text = page("metrics.md");
    let rows = rows(&text);
    let missing: Vec<_> = names.iter().filter(|name| row_of(&rows, name).is_none()).collect();
    assert!(missing.is_empty(), "metrics missing from docs/src/reference/metrics.md: {missing:?}");
    // And no row names a series the relay does not have.
    let stale: Vec<_> = rows
        .iter()
        .filter_map(|row| cells(row).first().copied())
        .map(|cell| cell.trim_matches('`'))
        .filter(|cell| cell.starts_with("hookrelay_") && !names.iter().any(|n| n == cell))
        .collect();
    assert!(stale.is_empty(), "docs/src/reference/metrics.md names series the relay does not have: {stale:?}");
}

#[test]
fn the_dead_reasons_page_has_every_reason() {
    let text = page("dead-reasons.md");
    let rows = rows(&text);
    let missing: Vec<_> = hookrelay::route::outcome::DeadReason::ALL
        .iter()
        .map(|reason| reason.as_str())
        .filter(|reason| row_of(&rows, reason).is_none())
        .collect();
    assert!(missing.is_empty(), "reasons missing from docs/src/reference/dead-reasons.md: {missing:?}");
}

/// `hookrelay <command...> --help`, its stdout.
fn help(command: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_hookrelay"))
        .args(command)
        .arg("--help")
        .env_remove("HOOKRELAY_CONFIG")
        .output()
        .expect("the binary runs");
    assert!(output.status.success(), "{command:?} --help: {output:?}");
    String::from_utf8(output.stdout).unwrap()
}

/// The first word of each line of a help section (`Commands:`, `Options:`).
fn section<'a>(help: &'a str, title: &str) -> Vec<&'a str> {
    help.lines()
        .skip_while(|line| line.trim() != title)
        .skip(1)
        .take_while(|line| !line.trim().is_empty())
        .filter_map(|line| line.split_whitespace().next())
        .collect()
}

/// The long flags of a help text's `Options:` section.
fn flags(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|line| line.trim() != "Options:")
        .skip(1)
        .take_while(|line| !line.trim().is_empty())
        .flat_map(|line| line.split(|c: char| c.is_whitespace() || c == ',' || c == '='))
        .filter(|word| word.starts_with("--"))
        .map(str::to_string)
        .collect()
}

/// The part of a page under the `## <heading>` heading, up to the next `## `.
fn under<'a>(text: &'a str, heading: &str) -> Option<&'a str> {
    let start = text.find(&format!("\n## {heading}\n"))? + 1;
    let rest = &text[start..];
    let end = rest[3..].find("\n## ").map_or(rest.len(), |i| i + 3);
    Some(&rest[..end])
}

#[test]
fn the_cli_page_has_every_command_and_flag() {
    let text = page("cli.md");
    let top = help(&[]);
    let global = flags(&top);
    assert!(global.contains(&"--config".to_string()), "{top}");
    let globals = under(&text, "Global flags").expect("cli.md has a '## Global flags' section");
    let mut missing: Vec<String> =
        global.iter().filter(|flag| !globals.contains(&format!("`{flag}"))).cloned().collect();

    let mut commands: Vec<Vec<String>> =
        section(&top, "Commands:").into_iter().filter(|c| *c != "help").map(|c| vec![c.to_string()]).collect();
    assert!(commands.len() >= 5, "{top}");
    while let Some(command) = commands.pop() {
        let args: Vec<&str> = command.iter().map(String::as_str).collect();
        let text_of = help(&args);
        let subcommands: Vec<_> = section(&text_of, "Commands:").into_iter().filter(|c| *c != "help").collect();
        if !subcommands.is_empty() {
            commands.extend(subcommands.into_iter().map(|sub| [command.clone(), vec![sub.to_string()]].concat()));
            continue;
        }
        let name = format!("hookrelay {}", command.join(" "));
        let Some(part) = under(&text, &name) else {
            missing.push(format!("section '## {name}'"));
            continue;
        };
        for flag in flags(&text_of).iter().filter(|flag| !global.contains(flag)) {
            if !part.contains(&format!("`{flag}")) {
                missing.push(format!("{name} {flag}"));
            }
        }
    }
    assert!(missing.is_empty(), "missing from docs/src/reference/cli.md: {missing:?}");
}

/// `make drill` turns its ledger lines into the results page (scripts/results.py).
#[test]
fn the_drill_results_page_is_written_from_the_ledger_lines() {
    let dir = tempfile::tempdir().unwrap();
    let (log, page) = (dir.path().join("drill.log"), dir.path().join("drill.md"));
    std::fs::write(
        &log,
        "running 7 tests\n\
         DRILL kill-9 (short)         produced    300  delivered    300  duplicates   112  dead 0  pending 0  lost 0\n\
         DRILL blackholed-receiver    produced   2000  delivered   1000  duplicates     0  dead expired=1000  pending 0  lost 0\n\
         DRILL broker-down-20s       not run: KAFKA_BOOTSTRAP=k:9092 is not a broker scripts/drill.sh started\n\
         DRILL hostile good delivered 2000/2000  p99 90 ms (without the attackers 45 ms)  lost 0\n\
         failures:\n\
         \x20   drill::drill_hostile_input_does_not_hurt_good_traffic\n\
         \n\
         test result: FAILED. 6 passed; 1 failed\n",
    )
    .unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/results.py");
    let output = Command::new("python3").arg(&script).arg("drill").arg(&log).arg(&page).output().expect("python3 runs");
    assert!(output.status.success(), "{output:?}");
    let text = std::fs::read_to_string(&page).unwrap();
    for line in [
        "| `kill-9 (short)` | 300 | 300 | 112 | 0 | 0 | **0** |",
        "| `blackholed-receiver` | 2,000 | 1,000 | 0 | expired 1,000 | 0 | **0** |",
        "Not run: `broker-down-20s`",
        "DRILL hostile good delivered 2000/2000 p99 90 ms (without the attackers 45 ms) lost 0",
        "Failed: `drill::drill_hostile_input_does_not_hurt_good_traffic`.",
        "- result: every drill lost 0; **the run failed**",
        "- commit: ",
        "- machine: ",
        "- date: ",
    ] {
        assert!(text.contains(line), "{line:?} not in the page:\n{text}");
    }
}
