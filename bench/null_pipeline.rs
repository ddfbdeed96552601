//! The null pipeline: the least a Kafka-to-webhook forwarder must do, as the
//! bench's baseline. An rdkafka consumer (offsets stored by hand, committed in
//! the background, as hookrelay's consumer does) -> one reqwest POST per record
//! with keep-alive, 512 in flight -> store the offset. No signing, no retries,
//! no dead letters, no limits per endpoint: what hookrelay does on top of this
//! is what the ratio in `make bench` S0 prices.
//!
//! `null_pipeline --brokers B --topic T --group G [--in-flight 512] [--max-secs 600]`;
//! stops on SIGTERM/SIGINT or after --max-secs, committing what it stored.

use std::time::Duration;

use futures::StreamExt;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::ClientConfig;
use serde::Deserialize;
use serde_json::value::RawValue;

#[derive(Deserialize)]
struct Event<'a> {
    url: &'a str,
    #[serde(borrow)]
    payload: &'a RawValue,
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let need = |name: &str| arg(name).ok_or_else(|| anyhow::anyhow!("{name} is required"));
    let (brokers, topic, group) = (need("--brokers")?, need("--topic")?, need("--group")?);
    let in_flight: usize = arg("--in-flight").map_or(Ok(512), |v| v.parse())?;
    let max = Duration::from_secs(arg("--max-secs").map_or(Ok(600), |v| v.parse())?);

    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", &group)
        .set("enable.auto.commit", "true")
        .set("enable.auto.offset.store", "false")
        .set("auto.commit.interval.ms", "1000")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set("queued.max.messages.kbytes", "16384")
        .set("partition.assignment.strategy", "cooperative-sticky")
        .create()?;
    consumer.subscribe(&[&topic])?;
    let client =
        reqwest::Client::builder().timeout(Duration::from_secs(5)).pool_max_idle_per_host(in_flight).build()?;

    let mut failed = 0u64;
    let client = &client;
    // `buffered` keeps `in_flight` POSTs going and yields them in record order,
    // so a stored offset never passes a record still in flight.
    let work = consumer
        .stream()
        .map(|message| async move {
            let message = message?;
            let event: Event<'_> = serde_json::from_slice(message.payload().unwrap_or_default())?;
            let sent = client
                .post(event.url)
                .header("content-type", "application/json")
                .body(event.payload.get().to_owned())
                .send()
                .await;
            let ok = match sent {
                Ok(response) => response.status().is_success() && response.bytes().await.is_ok(),
                Err(_) => false,
            };
            anyhow::Ok((message, ok))
        })
        .buffered(in_flight)
        .for_each(|done| {
            match done {
                Ok((message, ok)) => {
                    failed += u64::from(!ok);
                    let _ = consumer.store_offset_from_message(&message);
                }
                Err(e) => eprintln!("null_pipeline: {e}"),
            }
            futures::future::ready(())
        });
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = work => {}
        _ = tokio::time::sleep(max) => eprintln!("null_pipeline: --max-secs reached"),
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    let _ = consumer.commit_consumer_state(CommitMode::Sync);
    eprintln!("null_pipeline: stopped, {failed} failed POSTs");
    Ok(())
}
