//! Every series an alert or the dashboard reads exists from start-up, at 0, for each known label value.

use std::time::Duration;

use crate::harness::*;

#[tokio::test]
async fn the_alerted_series_exist_at_zero_from_start_up() {
    let topics = Topics::create(1, &[Duration::from_secs(1)]).await;
    let config = Config::new(&topics)
        .endpoint("billing", "http://127.0.0.1:9/hook")
        .push("notify.sinks", table([("kind", "http".into()), ("url", "http://127.0.0.1:9/notify".into())]));
    let relay = Relay::start(&config, &[]).await;
    let text = relay.metrics().await;
    let (tier, dead) = (&topics.tiers[0].0, &topics.dead);
    let zero = [
        format!(r#"hookrelay_produce_failures_total{{topic="{tier}"}}"#),
        format!(r#"hookrelay_produce_failures_total{{topic="{dead}"}}"#),
        format!(r#"hookrelay_retries_routed_total{{tier="{tier}"}}"#),
        format!(r#"hookrelay_route_held_seconds{{topic="{tier}"}}"#),
        format!(r#"hookrelay_route_held_records{{topic="{dead}"}}"#),
        r#"hookrelay_dead_letters_total{reason="too_large"}"#.to_string(),
        r#"hookrelay_dead_letters_total{reason="invalid_event"}"#.to_string(),
        r#"hookrelay_deliveries_total{endpoint="billing",outcome="dead"}"#.to_string(),
        r#"hookrelay_circuit_state{endpoint="billing"}"#.to_string(),
        r#"hookrelay_endpoint_overflow_total{endpoint="billing"}"#.to_string(),
        r#"hookrelay_dead_letters_handled_total{endpoint="billing",reason="expired"}"#.to_string(),
        r#"hookrelay_attempt_duration_seconds_count{endpoint="billing"}"#.to_string(),
        r#"hookrelay_notifications_total{outcome="failed",sink="http"}"#.to_string(),
        r#"hookrelay_notifications_total{outcome="gave_up",sink="http"}"#.to_string(),
        r#"hookrelay_paused_partitions{reason="capacity",role="events"}"#.to_string(),
        r#"hookrelay_paused_partitions{reason="capacity",role="dead"}"#.to_string(),
        r#"hookrelay_in_flight_records{role="retry"}"#.to_string(),
        "hookrelay_attempt_log_dropped_total".to_string(),
        r#"hookrelay_endpoint_oldest_waiting_seconds{endpoint="billing"}"#.to_string(),
    ];
    for series in zero {
        assert_eq!(metric(&text, &series), Some(0.0), "{series} in:\n{text}");
    }
}
