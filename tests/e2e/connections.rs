//! Connections to a receiver are reused: the relay opens about as many as it
//! has requests in flight to it, not one per request past a small pool.

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

use crate::harness::*;

/// A receiver that answers 200 after `delay` and counts the connections it accepted,
/// the requests it answered (by `webhook-id`) and the most it held at once.
#[derive(Default)]
struct Counts {
    connections: AtomicUsize,
    now: AtomicUsize,
    most: AtomicUsize,
    ids: Mutex<HashSet<String>>,
}

async fn counting_receiver(delay: Duration) -> (String, Arc<Counts>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind receiver");
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let counts = Arc::new(Counts::default());
    let shared = counts.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            shared.connections.fetch_add(1, Ordering::SeqCst);
            let counts = shared.clone();
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let counts = counts.clone();
                async move {
                    let now = counts.now.fetch_add(1, Ordering::SeqCst) + 1;
                    counts.most.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(delay).await;
                    let id = request.headers().get("webhook-id").and_then(|v| v.to_str().ok()).unwrap_or("");
                    counts.ids.lock().unwrap().insert(id.to_string());
                    counts.now.fetch_sub(1, Ordering::SeqCst);
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                }
            });
            tokio::spawn(async move {
                let _ =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    (url, counts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_to_a_busy_receiver_are_reused() {
    // 50 ms answers: the adaptive limit grows past 64 requests in flight within a second.
    let (url, counts) = counting_receiver(Duration::from_millis(50)).await;
    let topics = Topics::create(6, &[Duration::from_secs(60)]).await;
    let relay = Relay::start(&Config::new(&topics), &[]).await;
    let producer = producer();
    let n = 6000;
    let values: Vec<String> =
        (0..n).map(|i| format!(r#"{{"url":"{url}","payload":{{"n":{i}}},"id":"c-{i}"}}"#)).collect();
    for chunk in values.chunks(500) {
        let sends = chunk.iter().map(|value| produce(&producer, &topics.events, None, None, value.as_bytes()));
        futures::future::join_all(sends).await;
    }
    eventually("every event delivered", Duration::from_secs(90), || {
        (counts.ids.lock().unwrap().len() == n).then_some(())
    })
    .await;
    let (connections, most) = (counts.connections.load(Ordering::SeqCst), counts.most.load(Ordering::SeqCst));
    eprintln!("{connections} connections for {n} events, at most {most} requests at once");
    // More than 64 at once, so a pool of 64 idle connections would have been too small.
    assert!(most > 64, "the relay held {most} requests at once: too few to tell");
    // A new connection only when every open one is busy, so they follow the requests
    // at once (a few hundred, plus those raced for while connecting), not the events.
    // With 64 kept idle, every request past 64 at once opened its own: 2,038
    // connections for these 6,000 events, 755 at once (599 for 3,000 under a
    // whole test run's load with them reused, 355 at once).
    assert!(connections <= n / 4, "{connections} connections for {n} events, at most {most} requests at once");
    drop(relay);
}
