//! Trace context across the hop: a record's `traceparent`/`tracestate` reach
//! every attempt, through the tiers and onto the dead record.

use std::time::Duration;

use crate::harness::*;

const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const STATE: &str = "vendor=opaque,other=1";

/// The trace id of a `traceparent` value.
fn trace_id(traceparent: &str) -> &str {
    traceparent.split('-').nth(1).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_record_trace_context_reaches_every_attempt_and_the_tier_and_dead_records() {
    // The first attempt fails (503), the retry through the tier succeeds.
    let receiver = Receiver::start(Behaviour { fail_first: 1, ..Behaviour::default() }).await;
    let dead_receiver = Receiver::start(Behaviour { status: 410, ..Behaviour::default() }).await;
    let topics = Topics::create(1, &[Duration::from_secs(1)]).await;
    let relay = Relay::start(&Config::new(&topics), &[]).await;
    let producer = producer();
    // The event's own JSON headers name another trace: the record header wins.
    let event = |url: String, id: &str| {
        format!(
            r#"{{"url":"{url}","payload":1,"id":"{id}","headers":{{"traceparent":"00-11111111111111111111111111111111-2222222222222222-01","tracestate":"json=1","x-kept":"yes"}}}}"#
        )
    };
    let headers = [("traceparent", PARENT), ("tracestate", STATE)];
    produce_with_headers(&producer, &topics.events, 0, event(receiver.url("/t"), "tr-1").as_bytes(), &headers).await;
    produce_with_headers(&producer, &topics.events, 0, event(dead_receiver.url("/t"), "tr-2").as_bytes(), &headers)
        .await;

    eventually("delivered on the retry", Duration::from_secs(30), || (receiver.count() >= 2).then_some(())).await;
    let requests = receiver.received();
    assert_eq!(requests.len(), 2, "a failed attempt, then the retry from the tier");
    assert_eq!(requests[0].status, 503);
    assert_eq!(requests[1].status, 200);
    for request in &requests {
        assert_eq!(trace_id(request.header("traceparent")), TRACE_ID, "same trace id on every attempt");
        assert_eq!(request.header("traceparent"), PARENT);
        assert_eq!(request.header("tracestate"), STATE, "the record's tracestate, not the event's");
        assert_eq!(request.header("x-kept"), "yes", "the event's other headers stay");
    }

    let tier = read_topic(&topics.tiers[0].0, 1, Duration::from_secs(20)).await;
    assert_eq!(tier.len(), 1);
    assert_eq!(tier[0].header("traceparent"), Some(PARENT), "the tier record carries the trace");
    assert_eq!(tier[0].header("tracestate"), Some(STATE));
    assert_eq!(tier[0].header_count("traceparent"), 1, "carried, not duplicated");

    let dead = read_topic(&topics.dead, 1, Duration::from_secs(20)).await;
    assert_eq!(dead.len(), 1, "the 410 goes to the dead topic");
    assert_eq!(dead[0].header("hookrelay-reason"), Some("rejected"));
    assert_eq!(dead[0].header("traceparent"), Some(PARENT), "the dead record carries the trace");
    assert_eq!(dead[0].header("tracestate"), Some(STATE));
    assert_eq!(trace_id(dead_receiver.received()[0].header("traceparent")), TRACE_ID);

    // The relay's own log lines about these records carry the trace id.
    let log = relay.log_text();
    let line = |what: &str| log.lines().find(|l| l.contains(what) && l.contains("tr-1")).map(str::to_string);
    for what in ["\"delivered\"", "\"routed to retry tier\""] {
        let line = line(what).unwrap_or_else(|| panic!("no {what} line for tr-1 in:\n{log}"));
        assert!(line.contains(&format!("\"trace_id\":\"{TRACE_ID}\"")), "{line}");
    }
}
