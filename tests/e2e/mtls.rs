//! Mutual TLS to the brokers: the local broker's listener with
//! `ssl.client.auth=required` (`KAFKA_MTLS_BOOTSTRAP`), a client certificate
//! and key signed by the throwaway CA (`KAFKA_CLIENT_CERT`, `KAFKA_CLIENT_KEY`,
//! `KAFKA_SSL_CA`), all printed by `scripts/kafka.sh up`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::harness::*;

fn run_file(var: &str, name: &str) -> PathBuf {
    std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/kafka/run").join(name))
}

/// A relay config that reads the test's topics through the mutual-TLS listener;
/// `client` is the client certificate and key, if any.
fn mtls_config(topics: &Topics, client: Option<(&Path, &Path)>) -> Config {
    let mtls = std::env::var("KAFKA_MTLS_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:9096".into());
    let ca = run_file("KAFKA_SSL_CA", "ca.crt");
    assert!(ca.is_file(), "no CA certificate at {} (set KAFKA_SSL_CA from `scripts/kafka.sh up`)", ca.display());
    let config = Config::new(topics)
        .set("kafka.brokers", mtls)
        .set("kafka.security_protocol", "ssl")
        .set("kafka.tls.ca_location", ca.display().to_string())
        .set("shutdown.grace", "10s");
    match client {
        Some((cert, key)) => config
            .set("kafka.tls.certificate_location", cert.display().to_string())
            .set("kafka.tls.key_location", key.display().to_string()),
        None => config,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_needs_the_client_certificate() {
    let (cert, key) = (run_file("KAFKA_CLIENT_CERT", "client.crt"), run_file("KAFKA_CLIENT_KEY", "client.key"));
    assert!(
        cert.is_file() && key.is_file(),
        "no client certificate (set KAFKA_CLIENT_CERT/KEY from `scripts/kafka.sh up`)"
    );
    let receiver = Receiver::start(Behaviour::default()).await;
    let topics = Topics::create(1, &[Duration::from_secs(3600)]).await;

    let relay = Relay::start(&mtls_config(&topics, Some((&cert, &key))), &[]).await;
    let value = format!(r#"{{"url":"{}","payload":1,"id":"mtls-1"}}"#, receiver.url("/x"));
    produce(&producer(), &topics.events, None, None, value.as_bytes()).await;
    eventually("delivered through a mutual-TLS connection", Duration::from_secs(30), || {
        receiver.delivered_ids().contains("mtls-1").then_some(())
    })
    .await;
    drop(relay);

    let (_dir, path, _) = write_config(&mtls_config(&topics, None).to_string());
    let mut command = Command::new(binary());
    command.arg("--config").arg(&path).arg("run");
    let output = output_within(command, Duration::from_secs(120)).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(69), "no client certificate exits 69; stderr:\n{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    // Refused at once, not after the connect timeout: the start-up check ends at a failed handshake
    // with "TLS handshake failed"; it gives up on a silent broker after 15 s with "no answer within
    // 15s". The words say which, whatever the machine's load.
    assert!(last.contains("TLS handshake failed") && last.contains("alert"), "the last line says why: {last}");
    assert!(!stderr.contains("no answer within"), "refused, not timed out: {stderr}");
}
