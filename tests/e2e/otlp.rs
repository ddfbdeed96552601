//! Span export: with `OTEL_EXPORTER_OTLP_ENDPOINT` set, the relay's spans for
//! a record join the record's trace and reach an OTLP/HTTP collector (a
//! small one in the test, taking the JSON encoding).

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;

use crate::harness::*;

const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN: &str = "00f067aa0ba902b7";

/// Every span the collector got: (trace id, span id, parent span id, name).
type Spans = Arc<Mutex<Vec<(String, String, String, String)>>>;

async fn collect(State(spans): State<Spans>, body: Bytes) -> &'static str {
    let export: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
    for resource in export["resourceSpans"].as_array().into_iter().flatten() {
        for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
            for span in scope["spans"].as_array().into_iter().flatten() {
                let row =
                    (text(&span["traceId"]), text(&span["spanId"]), text(&span["parentSpanId"]), text(&span["name"]));
                spans.lock().unwrap().push(row);
            }
        }
    }
    "{}"
}

/// The relay process, killed when dropped.
struct Running {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_join_the_records_trace_and_are_exported_over_otlp() {
    let spans: Spans = Arc::default();
    let app = axum::Router::new().route("/v1/traces", axum::routing::post(collect)).with_state(spans.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.ok() });

    let receiver = Receiver::start(Behaviour { fail_first: 1, ..Behaviour::default() }).await;
    let topics = Topics::create(1, &[Duration::from_secs(1)]).await;
    let (dir, path, admin) = write_config(&Config::new(&topics).to_string());
    let log = std::fs::File::create(dir.path().join("relay.log")).unwrap();
    let child = Command::new(binary())
        .arg("--config")
        .arg(&path)
        .arg("run")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{collector}"))
        .env("OTEL_BSP_SCHEDULE_DELAY", "200")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let _relay = Running { child, _dir: dir };
    let ready = format!("http://{admin}/ready");
    eventually_async("the relay ready", Duration::from_secs(60), || async {
        reqwest::get(&ready).await.is_ok_and(|r| r.status().is_success()).then_some(())
    })
    .await;

    let value = format!(r#"{{"url":"{}","payload":1,"id":"ot-1"}}"#, receiver.url("/o"));
    produce_with_headers(&producer(), &topics.events, 0, value.as_bytes(), &[("traceparent", PARENT)]).await;
    eventually("delivered on the retry", Duration::from_secs(30), || (receiver.count() >= 2).then_some(())).await;
    for request in receiver.received() {
        assert_eq!(request.header("traceparent"), PARENT, "the request carries the record's context");
    }
    let exported = eventually("spans of both hops exported", Duration::from_secs(30), || {
        let spans = spans.lock().unwrap().clone();
        let records = spans.iter().filter(|s| s.3 == "record").count();
        let attempts = spans.iter().filter(|s| s.3 == "attempt").count();
        (records >= 2 && attempts >= 2).then_some(spans)
    })
    .await;
    let ours: Vec<_> = exported.iter().filter(|s| s.0 == TRACE_ID).collect();
    let records: Vec<_> = ours.iter().filter(|s| s.3 == "record").collect();
    assert_eq!(records.len(), 2, "one record span per hop, in the record's trace: {exported:?}");
    for record in &records {
        assert_eq!(record.2, PARENT_SPAN, "a child of the producer's span: {record:?}");
    }
    for name in ["attempt", "route"] {
        let children: Vec<_> = ours.iter().filter(|s| s.3 == name).collect();
        assert_eq!(children.len(), 2, "{name} on both hops: {exported:?}");
        for child in children {
            assert!(records.iter().any(|r| r.1 == child.2), "{name} inside a record span: {child:?}");
        }
    }
}
