//! Exit codes stay true mid-run: a SCRAM user deleted while the relay runs is
//! refused at its next re-authentication (the broker's `SASL_REAUTH` listener,
//! `connections.max.reauth.ms=2000`, `KAFKA_SASL_REAUTH_BOOTSTRAP`), and the
//! relay exits 69 as it would at start-up. The user is made and deleted with
//! the broker's own `kafka.admin.ConfigCommand` (`KAFKA_TOOLS_CLASSPATH`):
//! rdkafka has no AlterUserScramCredentials.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::harness::*;

/// Runs `kafka-configs` on the user's SCRAM-SHA-256 credential: `add` with `password`, or delete.
fn scram(user: &str, password: Option<&str>) {
    let classpath = std::env::var("KAFKA_TOOLS_CLASSPATH").unwrap_or_else(|_| {
        let libs = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.cache/kafka"))
            .expect("no .cache/kafka: set KAFKA_TOOLS_CLASSPATH from `scripts/kafka.sh up`")
            .filter_map(Result::ok)
            .find(|e| e.file_name().to_string_lossy().starts_with("libs-"))
            .expect("no cached Kafka jars: set KAFKA_TOOLS_CLASSPATH from `scripts/kafka.sh up`");
        format!("{}/*", libs.path().display())
    });
    let change = match password {
        Some(password) => {
            vec!["--add-config".to_string(), format!("SCRAM-SHA-256=[iterations=4096,password={password}]")]
        }
        None => vec!["--delete-config".to_string(), "SCRAM-SHA-256".to_string()],
    };
    let output = Command::new(std::env::var("JAVA").unwrap_or_else(|_| "java".into()))
        .args(["-cp", &classpath, "kafka.admin.ConfigCommand", "--bootstrap-server", &bootstrap(), "--alter"])
        .args(&change)
        .args(["--entity-type", "users", "--entity-name", user])
        .stdin(Stdio::null())
        .output()
        .expect("java (needed for the broker's ConfigCommand)");
    assert!(
        output.status.success(),
        "ConfigCommand {change:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_refused_mid_run_exits_69_with_the_reason() {
    let reauth = std::env::var("KAFKA_SASL_REAUTH_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:9097".into());
    let user = unique("doomed");
    let password = format!("pw-{}", rand::random::<u64>());
    tokio::task::block_in_place(|| scram(&user, Some(&password)));
    let receiver = Receiver::start(Behaviour::default()).await;
    let topics = Topics::create(1, &[Duration::from_secs(3600)]).await;
    let config = Config::new(&topics)
        .set("kafka.brokers", reauth)
        .set("kafka.security_protocol", "sasl_plaintext")
        .set("kafka.sasl.mechanism", "SCRAM-SHA-256")
        .set("kafka.sasl.username", user.as_str())
        .set("kafka.sasl.password", password.as_str())
        .set("shutdown.grace", "5s");
    // The user was just made: the broker may need a moment to know it.
    let mut relay = Relay::start(&config, &[]).await;
    let value = format!(r#"{{"url":"{}","payload":1,"id":"before"}}"#, receiver.url("/x"));
    produce(&producer(), &topics.events, None, None, value.as_bytes()).await;
    eventually("delivered while the user exists", Duration::from_secs(30), || {
        receiver.delivered_ids().contains("before").then_some(())
    })
    .await;

    tokio::task::block_in_place(|| scram(&user, None));
    // A timeout panics with the relay's log (printed by its drop).
    let code = eventually("the relay exits after its user was deleted", Duration::from_secs(90), || {
        relay.child.try_wait().unwrap().map(|status| status.code())
    })
    .await;
    let log = relay.log_text();
    assert_eq!(code, Some(69), "a refusal mid-run exits 69 like one at start-up; log:\n{log}");
    let last = log.lines().last().unwrap_or_default();
    assert!(last.contains("cannot use Kafka at"), "the last line says the brokers refused: {last}");
    assert!(last.contains("SASL authentication error"), "the last line has librdkafka's reason: {last}");
}
