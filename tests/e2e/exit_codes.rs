//! The exit codes of the handbook's table (docs/src/reference/exit-codes.md), one test per code: 0, 1, 64, 69, 130.

use std::io::Write as _;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::harness::*;

/// A port nothing listens on: the connection is refused at once.
const NO_BROKER: &str = "127.0.0.1:1";

fn hookrelay(config: Option<&std::path::Path>, args: &[&str]) -> Output {
    let mut command = Command::new(binary());
    if let Some(path) = config {
        command.arg("--config").arg(path);
    }
    // A hookrelay.toml in the test's working directory must not leak in.
    let dir = tempfile::tempdir().unwrap();
    command.args(args).current_dir(dir.path()).stdin(Stdio::null()).output().expect("run hookrelay")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn usage_errors_exit_64_with_one_line_and_help_exits_0() {
    // The endpoint registry off: with it on, only Kafka can tell whether "billing" is a registry name.
    let (_dir, path, _) = write_config(&format!("[kafka]\nbrokers = \"{NO_BROKER}\"\n[topics]\nendpoints = \"\"\n"));
    let cases: [(&[&str], &str); 7] = [
        (&["run", "--bogus"], "unexpected argument '--bogus'"),
        (&["run", "--role", "nope"], "unknown role \"nope\""),
        (&[], "a command is missing"),
        (&["send", "--payload", "1"], "--url <URL>"),
        // Checked before Kafka is contacted: the broker here does not exist.
        (&["send", "--url", "https://example.com/", "--payload", "{nope"], "--payload is not JSON"),
        (&["send", "--endpoint", "billing", "--payload", "1"], "unknown endpoint \"billing\""),
        (&["replay", "--reason", "bogus"], "unknown reason \"bogus\""),
    ];
    for (args, expected) in cases {
        let output = hookrelay(Some(&path), args);
        let text = stderr(&output);
        assert_eq!(output.status.code(), Some(64), "{args:?}: {text}");
        assert_eq!(text.trim_end().lines().count(), 1, "{args:?}: one line: {text:?}");
        assert!(text.starts_with("hookrelay: ") && text.contains(expected), "{args:?}: {text:?} lacks {expected:?}");
    }
    for (args, expected) in [(&["--help"][..], "Usage: hookrelay"), (&["--version"], "hookrelay 0.1.0")] {
        let output = hookrelay(None, args);
        assert_eq!(output.status.code(), Some(0), "{args:?}");
        assert!(String::from_utf8_lossy(&output.stdout).contains(expected), "{args:?}: {output:?}");
    }
}

/// run, send, replay and topics ensure make the same start-up check: Kafka down is 69, not a hang or 1.
#[test]
fn kafka_unreachable_exits_69_for_every_command_that_needs_it() {
    let (_dir, path, _) = write_config(&format!("[kafka]\nbrokers = \"{NO_BROKER}\"\n"));
    let commands: [&[&str]; 4] = [
        &["run"],
        &["send", "--url", "https://example.com/", "--payload", "1"],
        &["replay", "--dry-run"],
        &["topics", "ensure"],
    ];
    std::thread::scope(|scope| {
        let runs: Vec<_> = commands.iter().map(|args| (args, scope.spawn(|| hookrelay(Some(&path), args)))).collect();
        for (args, run) in runs {
            let output = run.join().unwrap();
            let text = stderr(&output);
            assert_eq!(output.status.code(), Some(69), "{args:?}: {text}");
            let last = text.trim_end().lines().last().unwrap_or_default();
            assert!(last.starts_with(&format!("hookrelay: cannot use Kafka at {NO_BROKER}")), "{args:?}: {text}");
        }
    });
}

/// An error that is neither usage nor Kafka exits 1: here the admin port is taken.
#[test]
fn other_failures_exit_1() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = taken.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hookrelay.toml");
    let mut file = std::fs::File::create(&path).unwrap();
    write!(file, "[kafka]\nbrokers = \"{}\"\n[admin]\nlisten = \"{listen}\"\n", bootstrap()).unwrap();
    let output = hookrelay(Some(&path), &["run"]);
    let text = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    let last = text.trim_end().lines().last().unwrap_or_default();
    assert!(last.contains(&format!("admin server cannot listen on {listen}")), "{text}");
}

/// The first SIGTERM drains (exit 0 when done, tested elsewhere); a second one exits 130 at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_130_during_the_drain() {
    let receiver = Receiver::start(Behaviour { hold_marker: Some("hold-me".into()), ..Behaviour::default() }).await;
    let topics = Topics::create(1, &[Duration::from_secs(3600)]).await;
    // A grace far longer than the test waits: only the second signal can end the drain in time.
    let config = Config::new(&topics).set("shutdown.grace", "10m");
    let mut relay = Relay::start(&config, &[]).await;
    let value = format!(r#"{{"url":"{}","payload":"hold-me","id":"held"}}"#, receiver.url("/x"));
    produce(&producer(), &topics.events, None, None, value.as_bytes()).await;
    eventually("the held request arrives", Duration::from_secs(30), || (receiver.count() == 1).then_some(())).await;
    signal(&relay.child, "TERM");
    eventually("the drain starts", Duration::from_secs(30), || relay.log_text().contains("draining").then_some(()))
        .await;
    assert_eq!(relay.child.try_wait().unwrap(), None, "the drain waits for the held request");
    let code = tokio::task::spawn_blocking(move || {
        let code = relay.terminate(Duration::from_secs(60));
        (code, relay)
    })
    .await
    .unwrap();
    assert_eq!(code.0, Some(130), "log:\n{}", code.1.log_text());
    assert!(code.1.log_text().contains("second signal, exiting now"));
    receiver.release();
}
