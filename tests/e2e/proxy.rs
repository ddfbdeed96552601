//! Egress through a proxy: a real forward proxy started by the test (HTTP
//! absolute-form requests for http targets, CONNECT tunnels for https),
//! counting what passes. Requests arrive through it, with the proxy
//! credentials; a private target is refused before the proxy sees anything.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use crate::endpoint_tls::{make_certificates, path, MtlsReceiver};
use crate::harness::*;

/// What a proxy saw: the request line (or CONNECT target) and `proxy-authorization` of each request.
#[derive(Debug, Clone)]
struct Seen {
    line: String,
    authorization: Option<String>,
}

/// A forward proxy on 127.0.0.1: one request (or one tunnel) per client connection.
struct Proxy {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Proxy {
    async fn start() -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen_ = seen.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let seen = seen_.clone();
                tokio::spawn(async move {
                    let _ = serve(client, seen).await;
                });
            }
        });
        Proxy { port, seen }
    }

    fn url(&self, credentials: &str) -> String {
        format!("http://{credentials}127.0.0.1:{}", self.port)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn serve(client: TcpStream, seen: Arc<Mutex<Vec<Seen>>>) -> std::io::Result<()> {
    let mut client = BufReader::new(client);
    let mut line = String::new();
    client.read_line(&mut line).await?;
    let mut head = Vec::new();
    let (mut authorization, mut length) = (None, 0usize);
    loop {
        let mut header = String::new();
        if client.read_line(&mut header).await? == 0 || header == "\r\n" {
            break;
        }
        let (name, value) = header.split_once(':').unwrap_or((&header, ""));
        match name.to_ascii_lowercase().as_str() {
            "proxy-authorization" => authorization = Some(value.trim().to_string()),
            "connection" | "proxy-connection" => {}
            lower => {
                if lower == "content-length" {
                    length = value.trim().parse().unwrap_or(0);
                }
                head.push(header);
            }
        }
    }
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or_default().to_string(), parts.next().unwrap_or_default().to_string());
    seen.lock().unwrap().push(Seen { line: format!("{method} {target}"), authorization });
    if method == "CONNECT" {
        let mut upstream = TcpStream::connect(&target).await?;
        client.get_mut().write_all(b"HTTP/1.1 200 Connection established\r\n\r\n").await?;
        tokio::io::copy_bidirectional(client.get_mut(), &mut upstream).await?;
        return Ok(());
    }
    // Absolute form: http://host:port/path -> connect to host:port, send /path.
    let rest = target.strip_prefix("http://").unwrap_or(&target);
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let mut body = vec![0; length];
    client.read_exact(&mut body).await?;
    let mut upstream = TcpStream::connect(authority).await?;
    let mut request = format!("{method} {} HTTP/1.1\r\n", if path.is_empty() { "/" } else { path });
    request.extend(head);
    request.push_str("connection: close\r\n\r\n");
    upstream.write_all(request.as_bytes()).await?;
    upstream.write_all(&body).await?;
    let mut response = Vec::new();
    upstream.read_to_end(&mut response).await?;
    client.get_mut().write_all(&response).await?;
    client.get_mut().shutdown().await
}

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_go_through_the_configured_proxies_with_their_credentials() {
    let receiver = Receiver::start(Behaviour::default()).await;
    let (default_proxy, endpoint_proxy) = (Proxy::start().await, Proxy::start().await);
    let dir = tempfile::tempdir().unwrap();
    make_certificates(dir.path());
    let secure = MtlsReceiver::start(dir.path());
    let topics = Topics::create(1, &[Duration::from_secs(3600)]).await;
    // The receivers are on 127.0.0.1: private networks allowed here (the
    // refusal is the other test).
    let config = Config::new(&topics)
        .set("delivery.proxy", default_proxy.url("relay:pr0xy-s3cret@"))
        .endpoint("routed", &receiver.url("/routed"))
        .set("endpoints.routed.proxy", endpoint_proxy.url(""))
        // https through a CONNECT tunnel, with a client certificate inside it.
        .endpoint("secure", &format!("https://localhost:{}/secure", secure.port))
        .set("endpoints.secure.client_cert", path(dir.path(), "client.crt"))
        .set("endpoints.secure.client_key", path(dir.path(), "client.key"))
        .set("endpoints.secure.ca", path(dir.path(), "ca.crt"));
    let relay = Relay::start(&config, &[]).await;
    let producer = producer();
    let inline = format!(r#"{{"url":"{}","payload":1,"id":"p-1"}}"#, receiver.url("/inline"));
    produce(&producer, &topics.events, None, None, inline.as_bytes()).await;
    produce(&producer, &topics.events, None, None, br#"{"endpoint":"routed","payload":2,"id":"p-2"}"#).await;
    produce(&producer, &topics.events, None, None, br#"{"endpoint":"secure","payload":3,"id":"p-3"}"#).await;

    eventually("all three delivered", Duration::from_secs(20), || {
        let plain = receiver.delivered_ids();
        let secure = secure.accepted.lock().unwrap().len();
        (plain.contains("p-1") && plain.contains("p-2") && secure == 1).then_some(())
    })
    .await;
    let default_seen = default_proxy.seen();
    let lines: Vec<&str> = default_seen.iter().map(|s| s.line.as_str()).collect();
    let (port, secure_port) = (receiver.addr.port(), secure.port);
    assert!(
        lines.contains(&format!("POST http://127.0.0.1:{port}/inline").as_str()),
        "inline URL via delivery.proxy: {lines:?}"
    );
    assert!(
        lines.contains(&format!("CONNECT localhost:{secure_port}").as_str()),
        "https via a CONNECT tunnel: {lines:?}"
    );
    assert_eq!(default_seen.len(), 2, "{default_seen:?}");
    for seen in &default_seen {
        assert_eq!(seen.authorization.as_deref(), Some(basic("relay", "pr0xy-s3cret").as_str()), "{seen:?}");
    }
    let endpoint_seen = endpoint_proxy.seen();
    assert_eq!(endpoint_seen.len(), 1, "the endpoint's own proxy, not the default: {endpoint_seen:?}");
    assert_eq!(endpoint_seen[0].line, format!("POST http://127.0.0.1:{port}/routed"));
    assert_eq!(endpoint_seen[0].authorization, None);
    assert_eq!(*secure.accepted.lock().unwrap(), vec!["hookrelay test client".to_string()], "mTLS through the tunnel");
    assert!(!relay.log_text().contains("pr0xy-s3cret"), "proxy credentials never logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_target_through_a_proxy_is_refused_before_the_proxy() {
    let receiver = Receiver::start(Behaviour::default()).await;
    let proxy = Proxy::start().await;
    let topics = Topics::create(1, &[Duration::from_secs(3600)]).await;
    // The proxy is on 127.0.0.1 too: its address is trusted by configuration;
    // the targets are not.
    let config = Config::new(&topics)
        .set("delivery.allow_private_networks", false)
        .set("delivery.proxy", proxy.url(""))
        .endpoint("named", &format!("http://localhost:{}/named", receiver.addr.port()));
    let _relay = Relay::start(&config, &[]).await;
    let producer = producer();
    let literal = format!(r#"{{"url":"{}","payload":1,"id":"f-1"}}"#, receiver.url("/literal"));
    produce(&producer, &topics.events, None, None, literal.as_bytes()).await;
    produce(&producer, &topics.events, None, None, br#"{"endpoint":"named","payload":2,"id":"f-2"}"#).await;

    let dead = read_topic(&topics.dead, 2, Duration::from_secs(20)).await;
    assert_eq!(dead.len(), 2, "both refused");
    for record in &dead {
        assert_eq!(record.header("hookrelay-reason"), Some("forbidden_target"), "{:?}", record.headers);
    }
    let errors: Vec<&str> = dead.iter().filter_map(|r| r.header("hookrelay-last-error")).collect();
    assert!(
        errors.iter().any(|e| e.contains("localhost resolves to")),
        "the name was resolved and checked: {errors:?}"
    );
    assert!(proxy.seen().is_empty(), "nothing reached the proxy: {:?}", proxy.seen());
    assert_eq!(receiver.count(), 0);
}
