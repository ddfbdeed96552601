//! TLS to the brokers: the local broker's SSL listener (`KAFKA_SSL_BOOTSTRAP`,
//! certificate signed by the throwaway CA at `KAFKA_SSL_CA`, both printed by
//! `scripts/kafka.sh up`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::*;

fn ssl_bootstrap() -> String {
    std::env::var("KAFKA_SSL_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:9095".into())
}

fn ssl_ca() -> PathBuf {
    std::env::var_os("KAFKA_SSL_CA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/kafka/run/ca.crt"))
}

/// A relay config that reads the test's topics through the SSL listener, trusting `ca`.
fn ssl_config(topics: &Topics, ca: &Path) -> Config {
    Config::new(topics)
        .set("kafka.brokers", ssl_bootstrap())
        .set("kafka.security_protocol", "ssl")
        .set("kafka.tls.ca_location", ca.display().to_string())
        .set("shutdown.grace", "10s")
}

/// Makes a self-signed CA that signed nothing, in `dir`; returns its certificate.
fn stranger_ca(dir: &Path) -> PathBuf {
    let cert = dir.join("stranger-ca.crt");
    let output = Command::new("openssl")
        .args(["req", "-x509", "-new", "-nodes", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"])
        .arg("-keyout")
        .arg(dir.join("stranger-ca.key"))
        .arg("-out")
        .arg(&cert)
        .args(["-days", "1", "-subj", "/CN=a CA that signed no broker"])
        .stdin(Stdio::null())
        .output()
        .expect("openssl (needed to make a throwaway CA)");
    assert!(output.status.success(), "openssl failed: {}", String::from_utf8_lossy(&output.stderr));
    cert
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_the_brokers_works_and_a_wrong_ca_fails_fast() {
    let ca = ssl_ca();
    assert!(ca.is_file(), "no CA certificate at {} (set KAFKA_SSL_CA from `scripts/kafka.sh up`)", ca.display());
    let receiver = Receiver::start(Behaviour::default()).await;
    let topics = Topics::create(1, &[Duration::from_secs(3600)]).await;

    let good = ssl_config(&topics, &ca);
    let relay = Relay::start(&good, &[]).await;
    let value = format!(r#"{{"url":"{}","payload":1,"id":"tls-1"}}"#, receiver.url("/x"));
    produce(&producer(), &topics.events, None, None, value.as_bytes()).await;
    eventually("delivered through a TLS connection", Duration::from_secs(20), || {
        receiver.delivered_ids().contains("tls-1").then_some(())
    })
    .await;
    drop(relay);

    let dir = tempfile::tempdir().unwrap();
    let bad = ssl_config(&topics, &stranger_ca(dir.path()));
    let (_dir, path, _) = write_config(&bad.to_string());
    let started = Instant::now();
    let output = Command::new(binary()).arg("--config").arg(&path).arg("run").stdin(Stdio::null()).output().unwrap();
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(69), "an untrusted broker certificate exits 69; stderr:\n{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.contains("TLS handshake failed"), "the last line says why: {last}");
    assert!(last.contains("certificate verify failed"), "the last line names the cause: {last}");
    assert!(took < Duration::from_secs(20), "refused in {took:?}, not a hang");
}
