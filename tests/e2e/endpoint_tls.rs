//! Client certificates per endpoint: a receiver that requires mutual TLS
//! (OpenSSL, verify peer, fail without a certificate) takes the relay's
//! certificate, and refuses a request without one, which is a retryable
//! failure with a clear error. Certificates are made by the test with the
//! `openssl` CLI: a throwaway CA, a server and a client certificate.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openssl::ssl::{SslAcceptor, SslFiletype, SslMethod, SslVerifyMode};

use crate::harness::*;

fn openssl(args: &[&str], dir: &Path) {
    let output =
        Command::new("openssl").args(args).current_dir(dir).stdin(Stdio::null()).output().expect("openssl CLI");
    assert!(output.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
}

/// A CA, then `server` (for localhost and 127.0.0.1) and `client` certificates
/// signed by it, in `dir`: `<name>.crt` and `<name>.key` (PKCS#8).
pub fn make_certificates(dir: &Path) {
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    let mut ca = vec!["req", "-x509", "-new"];
    ca.extend(ec);
    ca.extend(["-keyout", "ca.key", "-out", "ca.crt", "-days", "1", "-subj", "/CN=hookrelay test CA"]);
    openssl(&ca, dir);
    for (name, extension) in [
        ("server", "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"),
        ("client", "extendedKeyUsage=clientAuth\n"),
    ] {
        let (key, csr, crt, ext) =
            (format!("{name}.key"), format!("{name}.csr"), format!("{name}.crt"), format!("{name}.ext"));
        std::fs::write(dir.join(&ext), extension).unwrap();
        let subject = format!("/CN=hookrelay test {name}");
        let mut request = vec!["req", "-new"];
        request.extend(ec);
        request.extend(["-keyout", &key, "-out", &csr, "-subj", &subject]);
        openssl(&request, dir);
        openssl(
            &["x509", "-req", "-in", &csr, "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-out", &crt]
                .into_iter()
                .chain(["-days", "1", "-extfile", &ext])
                .collect::<Vec<_>>(),
            dir,
        );
    }
}

/// A receiver that requires a client certificate signed by the test CA.
pub struct MtlsReceiver {
    pub port: u16,
    /// The client certificate subjects of the requests it answered (200).
    pub accepted: Arc<Mutex<Vec<String>>>,
    /// Handshakes it refused.
    refused: Arc<AtomicUsize>,
}

impl MtlsReceiver {
    pub fn start(dir: &Path) -> MtlsReceiver {
        let mut acceptor = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server()).unwrap();
        acceptor.set_private_key_file(dir.join("server.key"), SslFiletype::PEM).unwrap();
        acceptor.set_certificate_chain_file(dir.join("server.crt")).unwrap();
        acceptor.set_ca_file(dir.join("ca.crt")).unwrap();
        acceptor.set_verify(SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT);
        let acceptor = Arc::new(acceptor.build());
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let refused = Arc::new(AtomicUsize::new(0));
        let (accepted_, refused_) = (accepted.clone(), refused.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (acceptor, accepted, refused) = (acceptor.clone(), accepted_.clone(), refused_.clone());
                std::thread::spawn(move || {
                    let Ok(mut tls) = acceptor.accept(stream) else {
                        refused.fetch_add(1, Ordering::SeqCst);
                        return;
                    };
                    let subject = tls
                        .ssl()
                        .peer_certificate()
                        .and_then(|c| c.subject_name().entries().next().and_then(|e| e.data().to_string().ok()))
                        .unwrap_or_default();
                    // One request: headers, then content-length bytes of body.
                    let mut reader = BufReader::new(&mut tls);
                    let mut length = 0;
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        if let Some((name, value)) = line.split_once(':') {
                            if name.eq_ignore_ascii_case("content-length") {
                                length = value.trim().parse().unwrap_or(0);
                            }
                        }
                    }
                    let mut body = vec![0; length];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    accepted.lock().unwrap().push(subject);
                    let _ = tls.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
                    let _ = tls.shutdown();
                });
            }
        });
        MtlsReceiver { port, accepted, refused }
    }
}

pub fn path(dir: &Path, name: &str) -> String {
    dir.join(name).display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_requires_a_client_certificate_takes_the_relays_and_refuses_none() {
    let dir = tempfile::tempdir().unwrap();
    make_certificates(dir.path());
    let receiver = MtlsReceiver::start(dir.path());
    let topics = Topics::create(1, &[Duration::from_secs(3600)]).await;
    let url = format!("https://localhost:{}/hooks", receiver.port);
    let config = Config::new(&topics)
        .endpoint("secure", &url)
        .set("endpoints.secure.client_cert", path(dir.path(), "client.crt"))
        .set("endpoints.secure.client_key", path(dir.path(), "client.key"))
        .set("endpoints.secure.ca", path(dir.path(), "ca.crt"))
        // The same receiver, trusted, but without a client certificate.
        .endpoint("nocert", &url)
        .set("endpoints.nocert.ca", path(dir.path(), "ca.crt"));
    let _relay = Relay::start(&config, &[]).await;
    let producer = producer();
    produce(&producer, &topics.events, None, None, br#"{"endpoint":"secure","payload":1,"id":"m-1"}"#).await;
    produce(&producer, &topics.events, None, None, br#"{"endpoint":"nocert","payload":2,"id":"m-2"}"#).await;

    eventually("the relay's certificate accepted", Duration::from_secs(20), || {
        (!receiver.accepted.lock().unwrap().is_empty()).then_some(())
    })
    .await;
    let tier = read_topic(&topics.tiers[0].0, 1, Duration::from_secs(20)).await;
    assert_eq!(tier.len(), 1, "the request without a certificate is retried");
    let error = tier[0].header("hookrelay-last-error").unwrap_or_default();
    eprintln!("hookrelay-last-error without a client certificate: {error}");
    assert!(error.contains("nocert"), "the error names the endpoint: {error}");
    // In TLS 1.3 the client finishes its handshake before the server checks
    // the (missing) certificate: it reads the server's alert if it arrives
    // before the request is written, else the connection is reset under it.
    let why = ["certificate required", "Connection reset by peer"];
    assert!(why.iter().any(|w| error.contains(w)), "the error says why: {error}");
    assert!(tier[0].value.ends_with(br#""id":"m-2"}"#));
    assert_eq!(*receiver.accepted.lock().unwrap(), vec!["hookrelay test client".to_string()], "only m-1 got in");
    assert!(receiver.refused.load(Ordering::SeqCst) >= 1, "the handshake without a certificate was refused");
    assert!(read_topic(&topics.dead, 1, Duration::from_secs(2)).await.is_empty(), "nothing dead");
}

#[test]
fn a_client_certificate_that_does_not_load_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing: PathBuf = dir.path().join("missing.crt");
    let topics = Topics {
        events: "e".into(),
        tiers: vec![("e.retry".into(), Duration::from_secs(60))],
        dead: "e.dead".into(),
        group: "g".into(),
    };
    let config = Config::new(&topics)
        .endpoint("secure", "https://localhost:1/")
        .set("endpoints.secure.client_cert", missing.display().to_string())
        .set("endpoints.secure.client_key", missing.display().to_string());
    let (_dir, path, _) = write_config(&config.to_string());
    let output = Command::new(binary()).arg("--config").arg(&path).arg("check-config").output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(64), "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.contains("endpoints.secure.client_cert: cannot read") && last.contains("missing.crt"), "{stderr}");
}
