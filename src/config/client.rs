//! librdkafka settings shared by every client: brokers, TLS, SASL, pass-through properties.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, ClientContext};

use crate::config::{GroupProtocol, KafkaConfig};

/// Settings every client (consumer, producer, admin) gets.
pub fn client_config(kafka: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &kafka.brokers)
        .set("client.id", concat!("hookrelay/", env!("CARGO_PKG_VERSION")))
        .set("security.protocol", kafka.security_protocol.as_librdkafka());
    if let Some(sasl) = &kafka.sasl {
        c.set("sasl.mechanism", sasl.mechanism.as_librdkafka())
            .set("sasl.username", &sasl.username)
            .set("sasl.password", sasl.password.expose());
    }
    let tls = &kafka.tls;
    let files = [
        ("ssl.ca.location", &tls.ca_location),
        ("ssl.certificate.location", &tls.certificate_location),
        ("ssl.key.location", &tls.key_location),
    ];
    for (key, path) in files {
        if let Some(path) = path {
            c.set(key, path.to_string_lossy());
        }
    }
    if let Some(password) = &tls.key_password {
        c.set("ssl.key.password", password.expose());
    }
    c
}

/// Applies `kafka.properties` last, so operators can tune anything.
pub(crate) fn with_properties(mut c: ClientConfig, kafka: &KafkaConfig) -> ClientConfig {
    for (key, value) in kafka.properties.expose() {
        c.set(key, value);
    }
    c
}

/// librdkafka's prefetch per consumer (`queued.max.messages.kbytes`): 8 MiB.
/// A replica runs five consumers by default, so 40 MiB of prefetch beside
/// `delivery.max_buffered_bytes` (128 MiB) stays well inside the shipped 512 Mi
/// container limit.
const PREFETCH_KBYTES: &str = "8192";

/// A group consumer that commits only offsets the relay stored itself.
pub fn consumer_config(kafka: &KafkaConfig, group_id: &str) -> ClientConfig {
    let mut c = client_config(kafka);
    c.set("group.id", group_id)
        // The relay commits itself, with the map of decided offsets as the
        // commit's metadata (see consume::commit); librdkafka's auto-commit
        // would commit only a moved offset, and without the map.
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        // A new group must not skip records that were already written.
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set("statistics.interval.ms", kafka.statistics_interval.as_millis().to_string())
        // Bounds the prefetch per partition; the relay's own limits bound the rest.
        .set("queued.max.messages.kbytes", PREFETCH_KBYTES)
        // Once the prefetch queue is below that bound again, fetch within
        // 10 ms, not librdkafka's default second: in a backlog drain the relay
        // empties the queue well within a second and then waited for records
        // (make bench S0: 5,856/s -> 8,207/s in back-to-back runs; no memory cost).
        .set("fetch.queue.backoff.ms", "10");
    match kafka.group_protocol {
        GroupProtocol::Classic => {
            c.set("partition.assignment.strategy", "cooperative-sticky");
        }
        GroupProtocol::Consumer => {
            c.set("group.protocol", "consumer");
        }
    }
    with_properties(c, kafka)
}

/// An idempotent producer with `acks=all`: an acknowledged record is durable and written once.
pub fn producer_config(kafka: &KafkaConfig) -> ClientConfig {
    with_properties(producer_base(kafka), kafka)
}

/// The router's producer: as [`producer_config`], taking records of up to
/// `message_max_bytes` (see [`crate::route::sizes`]); `kafka.properties` still wins.
pub fn sized_producer_config(kafka: &KafkaConfig, message_max_bytes: usize) -> ClientConfig {
    let mut c = producer_base(kafka);
    c.set("message.max.bytes", message_max_bytes.to_string());
    with_properties(c, kafka)
}

fn producer_base(kafka: &KafkaConfig) -> ClientConfig {
    let mut c = client_config(kafka);
    c.set("enable.idempotence", "true").set("acks", "all").set("linger.ms", "5").set("compression.type", "lz4");
    c
}

/// An admin or metadata client.
pub fn admin_config(kafka: &KafkaConfig) -> ClientConfig {
    with_properties(client_config(kafka), kafka)
}

/// Kafka could not be reached, or refused us; the CLI exits 69 (EX_UNAVAILABLE).
#[derive(Debug, thiserror::Error)]
#[error("cannot use Kafka at {brokers}: {why}")]
pub struct Unavailable {
    pub brokers: String,
    pub why: String,
}

/// How the brokers refused this client; every other error is transient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The TLS handshake failed (wrong CA, say): fatal at start-up.
    Tls,
    /// Wrong credentials, or an authorisation the client needs was denied.
    Access,
    /// librdkafka's own fatal error (the idempotent producer, say).
    Fatal,
}

impl Refusal {
    /// The one list of error codes that mean "the brokers will not have us".
    pub fn of(code: RDKafkaErrorCode) -> Option<Refusal> {
        match code {
            RDKafkaErrorCode::SSL => Some(Refusal::Tls),
            RDKafkaErrorCode::Authentication
            | RDKafkaErrorCode::SaslAuthenticationFailed
            | RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::GroupAuthorizationFailed => Some(Refusal::Access),
            RDKafkaErrorCode::Fatal => Some(Refusal::Fatal),
            _ => None,
        }
    }

    /// A transport error that is the broker refusing our TLS handshake: with
    /// TLS 1.3 a broker that requires a client certificate sends its alert
    /// ("alert certificate required", "alert bad certificate") after the
    /// client thinks the handshake is done, so librdkafka reports a failed
    /// receive, not an SSL error. Its text is the only sign.
    fn of_transport(code: RDKafkaErrorCode, reason: &str) -> Option<Refusal> {
        let transport = matches!(code, RDKafkaErrorCode::BrokerTransportFailure);
        (transport && reason.contains("SSL routines") && reason.contains(" alert ")).then_some(Refusal::Tls)
    }
}

/// Remembers the errors librdkafka reports while the connection is checked.
#[derive(Default)]
struct CheckContext {
    /// The latest error's reason.
    error: Mutex<Option<String>>,
    /// The first refusal (failed TLS handshake or login); a later generic
    /// error such as "1/1 brokers are down" must not hide it.
    refused: Mutex<Option<(Refusal, String)>>,
}

impl ClientContext for CheckContext {
    fn error(&self, error: KafkaError, reason: &str) {
        let code = error.rdkafka_error_code();
        let refusal = code.and_then(|code| Refusal::of(code).or_else(|| Refusal::of_transport(code, reason)));
        if let Some(refusal @ (Refusal::Tls | Refusal::Access)) = refusal {
            self.refused.lock().expect("lock poisoned").get_or_insert_with(|| (refusal, reason.to_string()));
        }
        *self.error.lock().expect("lock poisoned") = Some(reason.to_string());
    }
}

impl ConsumerContext for CheckContext {}

/// Connects and fetches metadata, so that a wrong address, TLS setting or
/// password fails at start with the broker's own words, not later as a hang.
/// An authentication failure or a failed TLS handshake (say, a broker
/// certificate the CA did not sign) ends the check at once; an unreachable
/// broker after `timeout`. Blocking: call it from a blocking context.
pub fn check_connection(kafka: &KafkaConfig, timeout: Duration) -> Result<(), Unavailable> {
    let unavailable = |why: String| Unavailable { brokers: kafka.brokers.clone(), why };
    let client: BaseConsumer<CheckContext> =
        admin_config(kafka).create_with_context(CheckContext::default()).map_err(|e| unavailable(e.to_string()))?;
    let deadline = Instant::now() + timeout;
    loop {
        let fetched = client.fetch_metadata(None, Duration::from_millis(500));
        // Serves the error callbacks librdkafka queued meanwhile.
        let _ = client.poll(Duration::ZERO);
        let refused = client.context().refused.lock().expect("lock poisoned").clone();
        let reported = client.context().error.lock().expect("lock poisoned").clone();
        match (fetched, refused, reported) {
            (Ok(_), _, _) => return Ok(()),
            (Err(_), Some((Refusal::Tls, reason)), _) => {
                return Err(unavailable(format!("TLS handshake failed: {reason}")));
            }
            (Err(_), Some((_, reason)), _) => {
                return Err(unavailable(format!("authentication failed: {reason}")));
            }
            (Err(error), None, reported) if Instant::now() >= deadline => {
                let why = reported.unwrap_or_else(|| error.to_string());
                return Err(unavailable(format!("no answer within {timeout:?}: {why}")));
            }
            (Err(_), None, _) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn security_settings_reach_librdkafka() {
        let config = Config::from_toml(
            r#"
            [kafka]
            brokers = "b1:9094,b2:9094"
            security_protocol = "sasl_ssl"
            properties = { "socket.keepalive.enable" = "true", "linger.ms" = "20" }
            [kafka.sasl]
            mechanism = "SCRAM-SHA-512"
            username = "relay"
            password = "pw"
            [kafka.tls]
            ca_location = "/etc/ca.pem"
            "#,
        )
        .unwrap();
        let c = producer_config(&config.kafka);
        assert_eq!(c.get("bootstrap.servers"), Some("b1:9094,b2:9094"));
        assert_eq!(c.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(c.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert_eq!(c.get("sasl.username"), Some("relay"));
        assert_eq!(c.get("sasl.password"), Some("pw"));
        assert_eq!(c.get("ssl.ca.location"), Some("/etc/ca.pem"));
        assert_eq!(c.get("socket.keepalive.enable"), Some("true"));
        assert_eq!(c.get("linger.ms"), Some("20"), "pass-through properties apply last");
        assert_eq!(c.get("acks"), Some("all"));
        let sized = sized_producer_config(&config.kafka, 2_000_000);
        assert_eq!(sized.get("message.max.bytes"), Some("2000000"));
        assert_eq!(sized.get("linger.ms"), Some("20"));
        let consumer = consumer_config(&config.kafka, "g");
        assert_eq!(consumer.get("enable.auto.offset.store"), Some("false"));
        assert_eq!(consumer.get("partition.assignment.strategy"), Some("cooperative-sticky"));
    }

    #[test]
    fn a_refusal_is_not_hidden_by_the_errors_after_it() {
        let context = CheckContext::default();
        context.error(KafkaError::Global(RDKafkaErrorCode::BrokerTransportFailure), "connection refused");
        context.error(KafkaError::Global(RDKafkaErrorCode::SSL), "SSL handshake failed: certificate verify failed");
        context.error(KafkaError::Global(RDKafkaErrorCode::AllBrokersDown), "1/1 brokers are down");
        context.error(KafkaError::Global(RDKafkaErrorCode::SSL), "a later handshake");
        let refused = context.refused.lock().unwrap().clone();
        assert_eq!(refused, Some((Refusal::Tls, "SSL handshake failed: certificate verify failed".to_string())));
        let latest = context.error.lock().unwrap().clone();
        assert_eq!(latest.as_deref(), Some("a later handshake"));
    }

    #[test]
    fn a_broker_that_wants_a_client_certificate_is_a_tls_refusal() {
        let context = CheckContext::default();
        context.error(KafkaError::Global(RDKafkaErrorCode::BrokerTransportFailure), "Connection refused");
        let alert = "ssl://127.0.0.1:9096/bootstrap: Receive failed: error:0A000412:SSL routines::sslv3 alert bad \
                     certificate: SSL alert number 42 (after 0ms in state APIVERSION_QUERY)";
        context.error(KafkaError::Global(RDKafkaErrorCode::BrokerTransportFailure), alert);
        let refused = context.refused.lock().unwrap().clone();
        assert_eq!(refused, Some((Refusal::Tls, alert.to_string())));
    }
}
