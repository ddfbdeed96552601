//! The handbook's worked examples, run as written: every block marked
//! `<!-- example NAME: ... -->` in `docs/src` is executed against the real broker,
//! real local receivers and the real binary, so an example that stops working fails
//! here, naming its page and block. The convention is described for writers in
//! docs/src/development/testing.md ("Worked examples").
//!
//! Markers (an HTML comment on the line before a fenced block, invisible in the book):
//! - `config`: a TOML block, the example's `hookrelay.toml`;
//! - `file NAME`: a block written to `NAME` beside it;
//! - `receiver HOST answers S1 S2 ...`: no block; the receiver that stands for
//!   `https://HOST` answers S1, then S2, ... per event id (the last one from then on);
//! - `receiver HOST holds`: that receiver never answers (until the test ends);
//! - `console`: `$ command` lines, each run with bash in the example's directory,
//!   followed by the lines it prints (stdout, then stderr). `...` in a line matches
//!   any text, a line of only `...` any number of lines; a command shown without
//!   output may print anything. Commands run in order and must exit 0, unless the
//!   next command reads `$?`. A read-only command (`hookrelay trace`, `hookrelay
//!   endpoints list|get`, `curl`) whose output does not match yet is run again until
//!   it does (what a reader does while the relay works), within [`PATIENCE`].
//!   `hookrelay run &` starts the relay in the background, `kill -9 %N` / `kill %N`
//!   stop the Nth one; `export NAME=VALUE` sets NAME for the lines after it.
//!
//! The only substitutions are the documented placeholders: topic names `webhooks.*`
//! (made unique per run), the broker `localhost:9092`, the admin address
//! `localhost:9090`, and each `https://HOST` (a local receiver's `http://127.0.0.1:PORT`).
//! Output is compared after mapping them back, so it reads as on the page. The
//! config gets the broker, a fresh group id, the topics' unique names, its admin
//! address and `delivery.allow_private_networks = true` (the receivers are on
//! 127.0.0.1), and `hookrelay topics ensure` runs before the first command
//! unless the example runs it itself.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::*;

/// How long a read-only command is retried until its output matches.
const PATIENCE: Duration = Duration::from_secs(60);

/// One marked block of a page.
#[derive(Debug, Clone)]
struct Block {
    /// `config`, `file NAME`, `receiver HOST answers ...` or `console`.
    kind: String,
    /// The block's text (empty for `receiver`).
    text: String,
    /// The 1-based line of its marker in the page.
    line: usize,
}

/// The examples of one page, by name, their blocks in page order.
fn examples_of(page: &str) -> BTreeMap<String, Vec<Block>> {
    let lines: Vec<&str> = page.lines().collect();
    let mut examples: BTreeMap<String, Vec<Block>> = BTreeMap::new();
    let mut i = 0;
    while i < lines.len() {
        // A marker shown inside a fenced block (this convention's own documentation) is text.
        let ticks = lines[i].len() - lines[i].trim_start_matches('`').len();
        if ticks >= 3 {
            let fence = &lines[i][..ticks];
            i += 1;
            while i < lines.len() && !lines[i].starts_with(fence) {
                i += 1;
            }
            i += 1;
            continue;
        }
        let Some(marker) =
            lines[i].trim().strip_prefix("<!-- example ").and_then(|rest| rest.strip_suffix("-->")).map(str::trim)
        else {
            i += 1;
            continue;
        };
        let (name, kind) = marker.split_once(':').unwrap_or_else(|| panic!("line {}: marker without ':'", i + 1));
        let (name, kind) = (name.trim().to_string(), kind.trim().to_string());
        let line = i + 1;
        i += 1;
        let mut text = String::new();
        if !kind.starts_with("receiver ") {
            while i < lines.len() && lines[i].trim().is_empty() {
                i += 1;
            }
            assert!(
                i < lines.len() && lines[i].starts_with("```"),
                "line {line}: marker `{marker}` is not followed by a fenced block"
            );
            i += 1;
            while i < lines.len() && !lines[i].starts_with("```") {
                text.push_str(lines[i]);
                text.push('\n');
                i += 1;
            }
            i += 1;
        }
        examples.entry(name).or_default().push(Block { kind, text, line });
    }
    examples
}

/// The `https://HOST` hosts of `text`, in order of first appearance.
fn https_hosts(text: &str) -> Vec<String> {
    let mut hosts = Vec::new();
    for (at, _) in text.match_indices("https://") {
        let host: String = text[at + 8..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '-' || *c == ':')
            .collect();
        if !host.is_empty() && !hosts.contains(&host) {
            hosts.push(host);
        }
    }
    hosts
}

/// Does `actual` (lines) match `expected` (lines, with `...` wildcards)?
fn matches(expected: &[&str], actual: &[&str]) -> bool {
    match expected.split_first() {
        None => actual.is_empty(),
        Some((&"...", rest)) => (0..=actual.len()).any(|skip| matches(rest, &actual[skip..])),
        Some((line, rest)) => !actual.is_empty() && line_matches(line, actual[0]) && matches(rest, &actual[1..]),
    }
}

/// One line with `...` standing for any text; runs of spaces and tabs count as one space
/// (the page aligns columns with spaces, the commands with tabs).
fn line_matches(pattern: &str, line: &str) -> bool {
    let (pattern, line) = (squeeze(pattern), squeeze(line));
    let (pattern, line) = (pattern.as_str(), line.as_str());
    let mut parts = pattern.split("...");
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = line.strip_prefix(first) else { return false };
    let parts: Vec<&str> = parts.collect();
    for (n, part) in parts.iter().enumerate() {
        if n + 1 == parts.len() {
            return rest.ends_with(part);
        }
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.is_empty()
}

fn squeeze(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A console block's commands with their expected output lines.
fn commands(console: &str) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for line in console.lines() {
        match line.strip_prefix("$ ") {
            Some(command) => out.push((command.to_string(), Vec::new())),
            None => out.last_mut().expect("a console block starts with a `$ ` line").1.push(line.to_string()),
        }
    }
    out
}

/// Is `command` safe to run again (it only reads)?
fn read_only(command: &str) -> bool {
    ["hookrelay trace ", "hookrelay endpoints list", "hookrelay endpoints get ", "curl "]
        .iter()
        .any(|p| command.starts_with(p))
}

/// One example being run: its directory, placeholders, receivers and background relays.
struct Run {
    page: String,
    name: String,
    dir: tempfile::TempDir,
    /// (placeholder as on the page, what the test uses), applied forwards to inputs and backwards to output.
    swaps: Vec<(String, String)>,
    receivers: Vec<(String, Receiver)>,
    env: Vec<(String, String)>,
    jobs: Vec<Child>,
    last_exit: i32,
}

impl Run {
    fn forward(&self, text: &str) -> String {
        self.swaps.iter().fold(text.to_string(), |t, (page, ours)| t.replace(page.as_str(), ours))
    }

    /// In the same order as [`Run::forward`]: a receiver's URL is mapped back before its bare address.
    fn backward(&self, text: &str) -> String {
        self.swaps.iter().fold(text.to_string(), |t, (page, ours)| t.replace(ours.as_str(), page))
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("hookrelay.toml")
    }

    fn where_(&self, block: &Block) -> String {
        format!("{} example `{}` (block at line {}, `{}`)", self.page, self.name, block.line, block.kind)
    }

    fn bash(&self, command: &str) -> Command {
        let bin = Path::new(binary()).parent().unwrap().to_path_buf();
        let path = format!("{}:{}:{}", bin.display(), tools_dir().display(), std::env::var("PATH").unwrap_or_default());
        let mut bash = Command::new("bash");
        bash.arg("-c")
            .arg(format!("(exit {}); {command}", self.last_exit))
            .current_dir(self.dir.path())
            .env("PATH", path)
            .env("HOOKRELAY_CONFIG", self.config_path())
            .envs(self.env.iter().cloned())
            .stdin(Stdio::null());
        bash
    }

    fn relay_logs(&self) -> String {
        let mut logs = String::new();
        for n in 1..=self.jobs.len() {
            let log = std::fs::read_to_string(self.dir.path().join(format!("relay-{n}.log"))).unwrap_or_default();
            logs.push_str(&format!(
                "---- relay {n} log:\n{}\n",
                log.lines().rev().take(40).collect::<Vec<_>>().join("\n")
            ));
        }
        logs
    }

    /// Runs one `$` line; panics, naming the page and block, when it does not do what the page says.
    async fn step(&mut self, block: &Block, command: &str, expected: &[String], reads_status: bool) {
        let ours = self.forward(command);
        if command.trim() == "hookrelay run &" {
            let n = self.jobs.len() + 1;
            let log = std::fs::File::create(self.dir.path().join(format!("relay-{n}.log"))).unwrap();
            let child = self.bash("exec hookrelay run").stdout(Stdio::null()).stderr(log).spawn().expect("bash");
            self.jobs.push(child);
            return;
        }
        if let Some(job) = command.strip_prefix("kill -9 %").or_else(|| command.strip_prefix("kill %")) {
            let n: usize =
                job.trim().parse().unwrap_or_else(|_| panic!("{}: bad job in `{command}`", self.where_(block)));
            let place = self.where_(block);
            let child = self.jobs.get_mut(n - 1).unwrap_or_else(|| panic!("{place}: no job %{n}"));
            signal(child, if command.contains("-9") { "KILL" } else { "TERM" });
            child.wait().expect("the relay exits");
            return;
        }
        if let Some(assignment) = command.strip_prefix("export ") {
            let (name, _) = assignment.split_once('=').expect("export NAME=VALUE");
            let out =
                self.bash(&format!("export {}; printf %s \"${name}\"", self.forward(assignment))).output().unwrap();
            self.env.push((name.to_string(), String::from_utf8_lossy(&out.stdout).into_owned()));
            return;
        }
        let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
        let deadline = Instant::now() + PATIENCE;
        loop {
            let output = output_within(self.bash(&ours), Duration::from_secs(120)).await;
            let code = output.status.code().unwrap_or(-1);
            let text = self.backward(&format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ));
            let actual: Vec<&str> = text.lines().collect();
            let ok = (code == 0 || reads_status) && (expected.is_empty() || matches(&expected, &actual));
            if ok {
                self.last_exit = code;
                return;
            }
            if !read_only(command) || Instant::now() >= deadline {
                panic!(
                    "{}: `$ {command}` exited {code} and printed:\n{text}\nthe page expects:\n{}\n{}",
                    self.where_(block),
                    expected.join("\n"),
                    self.relay_logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        for child in &mut self.jobs {
            if let Ok(None) = child.try_wait() {
                signal(child, "TERM");
                let deadline = Instant::now() + Duration::from_secs(10);
                while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                    std::thread::sleep(Duration::from_millis(50));
                }
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Kafka's own command-line tools (`kafka-console-producer.sh`, ...) for the pages'
/// commands: small scripts around the broker's jars (`KAFKA_TOOLS_CLASSPATH`).
fn tools_dir() -> &'static Path {
    static DIR: std::sync::LazyLock<PathBuf> = std::sync::LazyLock::new(|| {
        let classpath = std::env::var("KAFKA_TOOLS_CLASSPATH").unwrap_or_else(|_| {
            let libs = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.cache/kafka"))
                .ok()
                .into_iter()
                .flatten()
                .flatten()
                .find(|e| e.file_name().to_string_lossy().starts_with("libs-"));
            libs.map(|e| format!("{}/*", e.path().display())).unwrap_or_default()
        });
        let dir = std::env::temp_dir().join(format!("hookrelay-example-tools-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (script, class) in [
            ("kafka-console-producer.sh", "org.apache.kafka.tools.ConsoleProducer"),
            ("kafka-console-consumer.sh", "org.apache.kafka.tools.consumer.ConsoleConsumer"),
            ("kafka-consumer-groups.sh", "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand"),
        ] {
            let path = dir.join(script);
            std::fs::write(&path, format!("#!/bin/sh\nexec java -cp '{classpath}' {class} \"$@\"\n")).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        dir
    });
    &DIR
}

/// The example's config: the page's, with the test's broker, group, topics, admin address and private targets.
fn overlay(run: &Run, page_config: &str, prefix: &str) -> String {
    let mut config: toml::Table = run
        .forward(page_config)
        .parse()
        .unwrap_or_else(|e| panic!("{} example `{}`: the config is not TOML: {e}", run.page, run.name));
    let mut set = |path: &str, value: toml::Value, always: bool| {
        let (parents, key) = path.rsplit_once('.').unwrap();
        let mut table = &mut config;
        for part in parents.split('.') {
            table = table.entry(part).or_insert_with(|| toml::Table::new().into()).as_table_mut().unwrap();
        }
        if always || !table.contains_key(key) {
            table.insert(key.to_string(), value);
        }
    };
    set("kafka.brokers", bootstrap().into(), true);
    set("kafka.group_id", format!("{prefix}.group").into(), true);
    set("admin.listen", run.forward("localhost:9090").into(), true);
    set("delivery.allow_private_networks", true.into(), true);
    set("topics.events", vec![format!("{prefix}.events")].into(), false);
    set("topics.dead", format!("{prefix}.dead").into(), false);
    set("topics.attempts", format!("{prefix}.attempts").into(), false);
    set("topics.endpoints", format!("{prefix}.endpoints").into(), false);
    let tiers: Vec<toml::Value> = [("retry-1m", "1m"), ("retry-10m", "10m"), ("retry-1h", "1h")]
        .iter()
        .map(|(t, d)| table([("topic", format!("{prefix}.{t}").into()), ("delay", (*d).into())]).into())
        .collect();
    set("retry.tiers", tiers.into(), false);
    toml::to_string(&config).unwrap()
}

/// Runs example `name` of `page` (a path under docs/src).
async fn run_example(page: &str, name: &str) {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/src").join(page))
        .unwrap_or_else(|e| panic!("{page}: {e}"));
    let blocks = examples_of(&text)
        .remove(name)
        .unwrap_or_else(|| panic!("{page}: no block marked `<!-- example {name}: ... -->`"));
    let prefix = unique("ex");
    let admin = format!("127.0.0.1:{}", free_port());
    let mut run = Run {
        page: page.to_string(),
        name: name.to_string(),
        dir: tempfile::tempdir().unwrap(),
        swaps: vec![
            ("webhooks.".to_string(), format!("{prefix}.")),
            ("localhost:9092".to_string(), bootstrap()),
            ("localhost:9090".to_string(), admin),
        ],
        receivers: Vec::new(),
        env: Vec::new(),
        jobs: Vec::new(),
        last_exit: 0,
    };
    // A receiver per https host, answering as a `receiver` marker says (200 otherwise).
    let all: String = blocks.iter().map(|b| b.text.as_str()).collect();
    for host in https_hosts(&all) {
        let mut behaviour = Behaviour::default();
        if blocks.iter().any(|b| b.kind == format!("receiver {host} holds")) {
            // Every request is held until the test ends: a receiver slower than any timeout here.
            behaviour.hold_marker = Some(String::new());
        }
        if let Some(b) = blocks.iter().find(|b| b.kind.starts_with(&format!("receiver {host} answers "))) {
            let statuses: Vec<u16> =
                b.kind.rsplit("answers ").next().unwrap().split_whitespace().map(|s| s.parse().unwrap()).collect();
            let (last, first) = statuses.split_last().expect("answers S1 S2 ...");
            assert!(
                first.windows(2).all(|w| w[0] == w[1]),
                "{}: answers: one status repeated, then another",
                run.where_(b)
            );
            behaviour.status = *last;
            behaviour.fail_first = first.len();
            behaviour.fail_status = first.first().copied().unwrap_or(*last);
        }
        let receiver = Receiver::start(behaviour).await;
        run.swaps.push((format!("https://{host}"), format!("http://{}", receiver.addr)));
        run.swaps.push((host.clone(), receiver.addr.to_string()));
        run.receivers.push((host, receiver));
    }
    let config = blocks.iter().find(|b| b.kind == "config").map(|b| b.text.clone()).unwrap_or_default();
    std::fs::write(run.config_path(), overlay(&run, &config, &prefix)).unwrap();
    for block in blocks.iter().filter(|b| b.kind.starts_with("file ")) {
        std::fs::write(run.dir.path().join(block.kind[5..].trim()), run.forward(&block.text)).unwrap();
    }
    if !blocks.iter().any(|b| b.kind == "console" && b.text.contains("$ hookrelay topics ensure")) {
        let ensure = run.bash("hookrelay topics ensure").output().unwrap();
        assert!(ensure.status.success(), "topics ensure: {}", String::from_utf8_lossy(&ensure.stderr));
    }
    for block in blocks.iter().filter(|b| b.kind == "console") {
        let steps = commands(&block.text);
        for (n, (command, expected)) in steps.iter().enumerate() {
            let reads_status = steps.get(n + 1).is_some_and(|(next, _)| next.contains("$?"));
            run.step(block, command, expected, reads_status).await;
        }
    }
}

/// Every marked example in `docs/src` is one of the tests below: a new one needs its line here.
#[test]
fn every_marked_example_is_run_by_a_test() {
    let run_here = include_str!("examples.rs");
    let mut missing = Vec::new();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/src");
    let mut pages = vec![root.clone()];
    while let Some(dir) = pages.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                pages.push(path);
            } else if path.extension().is_some_and(|e| e == "md") {
                let page = path.strip_prefix(&root).unwrap().display().to_string();
                for name in examples_of(&std::fs::read_to_string(&path).unwrap()).keys() {
                    if !run_here.contains(&format!("run_example(\"{page}\", \"{name}\")")) {
                        missing.push(format!("{page}: {name}"));
                    }
                }
            }
        }
    }
    assert!(missing.is_empty(), "marked examples no test runs: {missing:?}");
}

#[test]
fn output_patterns_match_as_documented() {
    assert!(matches(&["a ... c"], &["a b c"]));
    assert!(matches(&["...", "z"], &["x", "y", "z"]));
    assert!(matches(&["x", "..."], &["x"]));
    assert!(!matches(&["a ... c"], &["a b d"]));
    assert!(!matches(&["x"], &["x", "y"]));
    assert!(line_matches("sent to ... offset ...", "sent to t partition 0 offset 3"));
    let page = "````markdown\n<!-- example shown: console -->\n````\n<!-- example real: file a.txt -->\n```\nA\n```\n";
    let examples = examples_of(page);
    assert_eq!(examples.keys().collect::<Vec<_>>(), ["real"], "a marker inside a fence is text");
    assert_eq!(examples["real"][0].text, "A\n");
    assert!(matches(
        &["sent to webhooks.events partition ... offset ..."],
        &["sent to webhooks.events partition 4 offset 0"]
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry() {
    run_example("concepts/registry.md", "registry").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions() {
    run_example("concepts/subscriptions.md", "subscriptions").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudevents() {
    run_example("integrations/cloudevents.md", "cloudevents").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempt_log() {
    run_example("concepts/attempt-log.md", "attempt-log").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates() {
    run_example("concepts/duplicates.md", "duplicates").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input() {
    run_example("operations/hostile-input.md", "hostile-input").await;
}
