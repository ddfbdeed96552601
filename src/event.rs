//! Record -> [`Event`]: decode and validate the JSON envelope, and read the relay's hop state from headers.
//!
//! A decode error is final: the record goes to the dead topic with reason
//! `invalid_event` and the error text in `hookrelay-last-error`.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderName, HeaderValue};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::config::{Config, EndpointConfig};
use crate::sign::SigningKey;

/// Names of the headers the relay writes on tier and dead records.
pub mod header {
    pub const ATTEMPT: &str = "hookrelay-attempt";
    pub const FIRST_ATTEMPT_MS: &str = "hookrelay-first-attempt-ms";
    pub const DUE_MS: &str = "hookrelay-due-ms";
    pub const DEADLINE_MS: &str = "hookrelay-deadline-ms";
    pub const ORIGIN_TOPIC: &str = "hookrelay-origin-topic";
    pub const ORIGIN_PARTITION: &str = "hookrelay-origin-partition";
    pub const ORIGIN_OFFSET: &str = "hookrelay-origin-offset";
    pub const LAST_STATUS: &str = "hookrelay-last-status";
    pub const LAST_ERROR: &str = "hookrelay-last-error";
    pub const REASON: &str = "hookrelay-reason";
    /// Not in SPEC's list: the bounded endpoint label, so the failure handler
    /// and `replay --endpoint` need not re-decode the value.
    pub const ENDPOINT: &str = "hookrelay-endpoint";
    /// Not in SPEC's list: timestamp of the original event record (ms), for
    /// the end-to-end latency metric across hops.
    pub const EVENT_MS: &str = "hookrelay-event-ms";
    /// Not in SPEC's list: set by `replay` to `<topic>/<partition>/<offset>` of the dead record.
    pub const REPLAYED_FROM: &str = "hookrelay-replayed-from";
    /// Every header the relay owns starts with this.
    pub const PREFIX: &str = "hookrelay-";
}

/// Headers the event may not set: the signature, and what the relay controls.
const RESERVED_HEADERS: &[&str] = &[
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "content-type",
    "content-length",
    "host",
    "transfer-encoding",
    "connection",
    "user-agent",
];

/// The longest per-event timeout accepted (`timeout_ms`): 5 minutes.
const MAX_TIMEOUT_MS: u64 = 300_000;

/// Why a record is not a valid event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidEvent {
    #[error("value is not JSON: {0}")]
    NotJson(String),
    #[error("value is not a JSON object")]
    NotObject,
    #[error("event needs exactly one of \"url\" and \"endpoint\"")]
    Target,
    #[error("unknown endpoint {0:?}")]
    UnknownEndpoint(String),
    #[error("bad url: {0}")]
    Url(String),
    #[error("missing \"payload\"")]
    MissingPayload,
    #[error("payload is {size} bytes, over the limit of {limit}")]
    PayloadTooLarge { size: usize, limit: usize },
    #[error("bad header: {0}")]
    Header(String),
    #[error("bad field {field:?}: {problem}")]
    Field { field: &'static str, problem: String },
}

/// Where the relay found a record: its own coordinates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coordinates {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

impl Coordinates {
    /// Where `record` was read.
    pub fn of(record: &impl rdkafka::message::Message) -> Coordinates {
        Coordinates { topic: record.topic().to_string(), partition: record.partition(), offset: record.offset() }
    }

    /// The default event id, `<topic>-<partition>-<offset>` of the origin record.
    pub fn default_id(&self) -> String {
        format!("{}-{}-{}", self.topic, self.partition, self.offset)
    }
}

/// The relay's state of a record between hops, carried in its headers.
/// On an event topic (first sight) every field is at its start value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    /// Attempts made so far.
    pub attempts: u32,
    pub first_attempt_ms: Option<i64>,
    pub due_ms: Option<i64>,
    pub deadline_ms: Option<i64>,
    /// The event record this one descends from.
    pub origin: Coordinates,
    /// Timestamp of the original event record, when known.
    pub event_ms: Option<i64>,
    /// The previous attempt's status and error, carried over a deferral.
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
}

/// The last value of a header (a repeated header's last value wins), if it is UTF-8.
pub fn last_header<'a>(headers: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a str> {
    headers.iter().rev().find(|(k, _)| k == name).and_then(|(_, v)| std::str::from_utf8(v).ok())
}

impl Hop {
    /// Reads the hop state. `here` is where the record was read, used as the
    /// origin when the record has no origin headers (an event's first hop).
    /// `timestamp_ms` is the record's own timestamp.
    pub fn read(headers: &[(String, Vec<u8>)], here: Coordinates, timestamp_ms: Option<i64>) -> Hop {
        let get = |name: &str| last_header(headers, name).map(str::trim);
        let num = |name: &str| get(name).and_then(|v| v.parse::<i64>().ok());
        let origin = match (get(header::ORIGIN_TOPIC), num(header::ORIGIN_PARTITION), num(header::ORIGIN_OFFSET)) {
            (Some(topic), Some(partition), Some(offset)) if !topic.is_empty() => {
                Coordinates { topic: topic.to_string(), partition: partition as i32, offset }
            }
            _ => here,
        };
        Hop {
            attempts: num(header::ATTEMPT).map_or(0, |n| n.clamp(0, u32::MAX as i64) as u32),
            first_attempt_ms: num(header::FIRST_ATTEMPT_MS),
            due_ms: num(header::DUE_MS),
            deadline_ms: num(header::DEADLINE_MS),
            event_ms: num(header::EVENT_MS).or(timestamp_ms),
            last_status: num(header::LAST_STATUS).and_then(|s| u16::try_from(s).ok()),
            last_error: get(header::LAST_ERROR).map(String::from),
            origin,
        }
    }
}

/// A validated event, ready to deliver.
#[derive(Debug, Clone)]
pub struct Event {
    pub id: String,
    pub url: url::Url,
    /// Bounded label for metrics, limits and the circuit: endpoint name or URL host.
    pub endpoint_key: Arc<str>,
    /// The payload's JSON text exactly as the producer wrote it: the request body.
    pub body: Vec<u8>,
    /// Endpoint headers, then event headers (the event's win).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub timeout: Duration,
    pub keys: Arc<[SigningKey]>,
    /// `retry_until`, in ms since the epoch.
    pub retry_until_ms: Option<i64>,
    pub max_attempts: Option<u32>,
}

/// The endpoint table, with secrets decoded once at start-up.
#[derive(Debug, Clone)]
pub struct Endpoints {
    named: BTreeMap<String, NamedEndpoint>,
    default_keys: Arc<[SigningKey]>,
    default_timeout: Duration,
    max_payload_bytes: usize,
}

#[derive(Debug, Clone)]
struct NamedEndpoint {
    url: url::Url,
    keys: Arc<[SigningKey]>,
    timeout: Option<Duration>,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl Endpoints {
    /// Builds the table from a validated config.
    pub fn new(config: &Config) -> Endpoints {
        let keys = |secrets: &[crate::config::Secret]| -> Arc<[SigningKey]> {
            // validate() has parsed every secret already.
            secrets.iter().filter_map(|s| SigningKey::parse(s.expose()).ok()).collect()
        };
        let named = config
            .endpoints
            .iter()
            .filter_map(|(name, e): (&String, &EndpointConfig)| {
                let url = parse_target_url(&e.url).ok()?;
                let headers = e.headers.iter().filter_map(|(k, v)| check_header(k, v).ok()).collect();
                Some((name.clone(), NamedEndpoint { url, keys: keys(&e.secrets), timeout: e.timeout, headers }))
            })
            .collect();
        Endpoints {
            named,
            default_keys: keys(&config.delivery.signing_secrets),
            default_timeout: config.delivery.timeout,
            max_payload_bytes: config.delivery.max_payload_bytes,
        }
    }

    /// The endpoint key of a record value without validating the rest: cheap,
    /// for scheduling. `None` when the value names no usable target.
    pub fn peek_key(&self, value: &[u8]) -> Option<Arc<str>> {
        #[derive(Deserialize)]
        struct Target<'a> {
            #[serde(borrow)]
            url: Option<std::borrow::Cow<'a, str>>,
            #[serde(borrow)]
            endpoint: Option<std::borrow::Cow<'a, str>>,
        }
        match serde_json::from_slice::<Target<'_>>(value).ok()? {
            Target { url: Some(url), endpoint: None } => Some(endpoint_key(&url::Url::parse(&url).ok()?).into()),
            Target { url: None, endpoint: Some(name) } if self.named.contains_key(&*name) => Some(Arc::from(&*name)),
            _ => None,
        }
    }

    /// Decodes and validates one record value. `default_id` is used when the event has no `id`.
    pub fn decode(&self, value: &[u8], default_id: impl FnOnce() -> String) -> Result<Event, InvalidEvent> {
        let envelope: Envelope<'_> = match serde_json::from_slice(value) {
            Ok(envelope) => envelope,
            Err(e) if e.classify() == serde_json::error::Category::Data => {
                // Valid JSON of the wrong shape: say which, rather than serde's text.
                return match serde_json::from_slice::<serde_json::Value>(value) {
                    Ok(serde_json::Value::Object(_)) => Err(InvalidEvent::NotJson(e.to_string())),
                    Ok(_) => Err(InvalidEvent::NotObject),
                    Err(e) => Err(InvalidEvent::NotJson(e.to_string())),
                };
            }
            Err(e) => return Err(InvalidEvent::NotJson(e.to_string())),
        };
        let payload = envelope.payload.ok_or(InvalidEvent::MissingPayload)?;
        let body = payload.get().as_bytes();
        if body.len() > self.max_payload_bytes {
            return Err(InvalidEvent::PayloadTooLarge { size: body.len(), limit: self.max_payload_bytes });
        }
        let (url, endpoint_key, keys, endpoint_timeout, mut headers) = match (envelope.url, envelope.endpoint) {
            (Some(url), None) => {
                let url = parse_target_url(&url).map_err(InvalidEvent::Url)?;
                let key: Arc<str> = endpoint_key(&url).into();
                (url, key, self.default_keys.clone(), None, Vec::new())
            }
            (None, Some(name)) => {
                let endpoint = self.named.get(&name).ok_or_else(|| InvalidEvent::UnknownEndpoint(name.clone()))?;
                (
                    endpoint.url.clone(),
                    Arc::from(name.as_str()),
                    endpoint.keys.clone(),
                    endpoint.timeout,
                    endpoint.headers.clone(),
                )
            }
            _ => return Err(InvalidEvent::Target),
        };
        for (name, value) in envelope.headers.unwrap_or_default() {
            let (name, value) = check_header(&name, &value).map_err(InvalidEvent::Header)?;
            headers.retain(|(existing, _)| existing != name);
            headers.push((name, value));
        }
        let timeout = match envelope.timeout_ms {
            Some(0) => return Err(field("timeout_ms", "must be more than 0")),
            Some(ms) if ms > MAX_TIMEOUT_MS => return Err(field("timeout_ms", "must be at most 300000")),
            Some(ms) => Duration::from_millis(ms),
            None => endpoint_timeout.unwrap_or(self.default_timeout),
        };
        let retry_until_ms = match envelope.retry_until {
            Some(text) => Some(parse_rfc3339_ms(&text).map_err(|e| field("retry_until", e))?),
            None => None,
        };
        let id = match envelope.id {
            Some(id) if id.is_empty() || id.len() > 256 => return Err(field("id", "must be 1 to 256 characters")),
            Some(id) => id,
            None => default_id(),
        };
        Ok(Event {
            id,
            url,
            endpoint_key,
            body: body.to_vec(),
            headers,
            timeout,
            keys,
            retry_until_ms,
            max_attempts: envelope.max_attempts,
        })
    }
}

fn field(field: &'static str, problem: impl Into<String>) -> InvalidEvent {
    InvalidEvent::Field { field, problem: problem.into() }
}

/// The JSON envelope. Unknown fields are ignored, so producers may add metadata.
#[derive(Deserialize)]
struct Envelope<'a> {
    url: Option<String>,
    endpoint: Option<String>,
    #[serde(borrow, default, deserialize_with = "present")]
    payload: Option<&'a RawValue>,
    id: Option<String>,
    headers: Option<BTreeMap<String, String>>,
    timeout_ms: Option<u64>,
    retry_until: Option<String>,
    max_attempts: Option<u32>,
}

/// `"payload": null` is a payload (JSON null); only a missing field is `None`.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// The event's own `id`, if the value is an event that has one.
pub fn event_id(value: Option<&[u8]>) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Id {
        id: Option<String>,
    }
    serde_json::from_slice::<Id>(value?).ok()?.id
}

/// Parses and checks a target URL: http or https, with a host, no credentials.
pub fn parse_target_url(text: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(text).map_err(|e| format!("{text:?}: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("{text:?}: scheme must be http or https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{text:?}: no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!("{text:?}: credentials in the URL are not allowed, use headers"));
    }
    Ok(url)
}

/// Checks one extra request header: a valid name and value, not reserved.
pub fn check_header(name: &str, value: &str) -> Result<(HeaderName, HeaderValue), String> {
    let parsed = HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("{name:?} is not a header name"))?;
    if RESERVED_HEADERS.contains(&parsed.as_str()) {
        return Err(format!("{name:?} is set by the relay and may not be overridden"));
    }
    let value = HeaderValue::from_str(value).map_err(|_| format!("value of {name:?} is not a valid header value"))?;
    Ok((parsed, value))
}

/// The label of an inline URL: its host, with the port when one is written
/// (two services on one host are two endpoints). Never the path or query.
pub fn endpoint_key(url: &url::Url) -> String {
    let host = url.host_str().unwrap_or("unknown");
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    }
}

/// RFC 3339 -> ms since the epoch (any offset).
pub fn parse_rfc3339_ms(text: &str) -> Result<i64, String> {
    let at = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("{text:?} is not an RFC 3339 time: {e}"))?;
    Ok((at.unix_timestamp_nanos() / 1_000_000) as i64)
}

/// True when the host of `url` is an IP literal (reqwest then skips DNS).
pub fn ip_literal(url: &url::Url) -> Option<IpAddr> {
    match url.host()? {
        url::Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
        url::Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
        url::Host::Domain(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints() -> Endpoints {
        let config = Config::from_toml(
            r#"
            [delivery]
            max_payload_bytes = 64
            signing_secrets = ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]
            timeout = "5s"
            [endpoints.billing]
            url = "https://billing.example.com/hooks"
            timeout = "3s"
            headers = { "x-tenant" = "acme" }
            "#,
        )
        .unwrap();
        Endpoints::new(&config)
    }

    fn decode(value: &str) -> Result<Event, InvalidEvent> {
        endpoints().decode(value.as_bytes(), || "t-0-7".to_string())
    }

    #[test]
    fn a_url_event_keeps_its_payload_bytes() {
        let e = decode(r#"{"url":"https://a.example/x","payload": {"b" : [1, 2]} }"#).unwrap();
        assert_eq!(e.body, br#"{"b" : [1, 2]}"#);
        assert_eq!(e.id, "t-0-7");
        assert_eq!(&*e.endpoint_key, "a.example");
        let e = decode(r#"{"url":"http://a.example:8080/x?token=secret","payload":1}"#).unwrap();
        assert_eq!(&*e.endpoint_key, "a.example:8080", "host and port, never the path or query");
        assert_eq!(e.timeout, Duration::from_secs(5));
        assert_eq!(e.keys.len(), 1);
    }

    #[test]
    fn an_endpoint_event_takes_the_endpoint_settings() {
        let e = decode(r#"{"endpoint":"billing","payload":null,"id":"evt_1","headers":{"x-tenant":"other","x-a":"b"},"timeout_ms":250,"retry_until":"2030-01-01T00:00:00+01:00","max_attempts":3}"#).unwrap();
        assert_eq!(e.url.as_str(), "https://billing.example.com/hooks");
        assert_eq!(&*e.endpoint_key, "billing");
        assert_eq!(e.body, b"null");
        assert_eq!(e.id, "evt_1");
        assert_eq!(e.timeout, Duration::from_millis(250));
        assert_eq!(e.retry_until_ms, Some(1_893_452_400_000));
        assert_eq!(e.max_attempts, Some(3));
        let mut headers: Vec<_> = e.headers.iter().map(|(k, v)| (k.as_str(), v.to_str().unwrap())).collect();
        headers.sort();
        assert_eq!(headers, vec![("x-a", "b"), ("x-tenant", "other")], "the event's value replaces the endpoint's");
        assert!(e.keys.is_empty(), "the endpoint has no secrets of its own");
    }

    #[test]
    fn invalid_events_say_why() {
        type Expect = fn(&InvalidEvent) -> bool;
        let cases: &[(&str, Expect)] = &[
            ("not json", |e| matches!(e, InvalidEvent::NotJson(_))),
            ("[1,2]", |e| matches!(e, InvalidEvent::NotObject)),
            (r#""text""#, |e| matches!(e, InvalidEvent::NotObject)),
            (r#"{"payload":1}"#, |e| matches!(e, InvalidEvent::Target)),
            (r#"{"url":"https://a/x","endpoint":"billing","payload":1}"#, |e| matches!(e, InvalidEvent::Target)),
            (r#"{"endpoint":"nope","payload":1}"#, |e| matches!(e, InvalidEvent::UnknownEndpoint(_))),
            (r#"{"url":"ftp://a/x","payload":1}"#, |e| matches!(e, InvalidEvent::Url(_))),
            (r#"{"url":"not a url","payload":1}"#, |e| matches!(e, InvalidEvent::Url(_))),
            (r#"{"url":"https://a/x"}"#, |e| matches!(e, InvalidEvent::MissingPayload)),
            (
                r#"{"url":"https://a/x","payload":"0123456789012345678901234567890123456789012345678901234567890123"}"#,
                |e| matches!(e, InvalidEvent::PayloadTooLarge { .. }),
            ),
            (r#"{"url":"https://a/x","payload":1,"headers":{"webhook-signature":"x"}}"#, |e| {
                matches!(e, InvalidEvent::Header(_))
            }),
            (r#"{"url":"https://a/x","payload":1,"headers":{"bad name":"x"}}"#, |e| {
                matches!(e, InvalidEvent::Header(_))
            }),
            (r#"{"url":"https://a/x","payload":1,"headers":{"x-a":"line\nbreak"}}"#, |e| {
                matches!(e, InvalidEvent::Header(_))
            }),
            (r#"{"url":"https://a/x","payload":1,"headers":{"x-a":1}}"#, |e| matches!(e, InvalidEvent::NotJson(_))),
            (r#"{"url":"https://a/x","payload":1,"retry_until":"tomorrow"}"#, |e| {
                matches!(e, InvalidEvent::Field { field: "retry_until", .. })
            }),
            (r#"{"url":"https://a/x","payload":1,"timeout_ms":0}"#, |e| {
                matches!(e, InvalidEvent::Field { field: "timeout_ms", .. })
            }),
            (r#"{"url":"https://u:p@a/x","payload":1}"#, |e| matches!(e, InvalidEvent::Url(_))),
        ];
        for (value, expected) in cases {
            let err = decode(value).expect_err(value);
            assert!(expected(&err), "{value} gave {err:?}");
        }
    }

    #[test]
    fn peek_key_agrees_with_decode() {
        let e = endpoints();
        for value in [
            r#"{"url":"http://a.example:8080/x","payload":1}"#,
            r#"{"endpoint":"billing","payload":1}"#,
            r#"{"url":"https://b.example/y","payload":{"big":[1,2,3]}}"#,
        ] {
            let decoded = e.decode(value.as_bytes(), || "id".into()).unwrap();
            assert_eq!(e.peek_key(value.as_bytes()), Some(decoded.endpoint_key), "{value}");
        }
        assert_eq!(e.peek_key(b"not json"), None);
        assert_eq!(e.peek_key(br#"{"endpoint":"nope","payload":1}"#), None);
    }

    #[test]
    fn event_ids_come_from_the_value_when_present() {
        assert_eq!(event_id(Some(br#"{"id":"evt_9","payload":1}"#)), Some("evt_9".into()));
        assert_eq!(event_id(Some(b"not json")), None);
        assert_eq!(event_id(None), None);
    }

    #[test]
    fn hop_state_comes_from_headers_or_starts_fresh() {
        let here = Coordinates { topic: "webhooks.events".into(), partition: 2, offset: 9 };
        let fresh = Hop::read(&[], here.clone(), Some(1000));
        assert_eq!(fresh.attempts, 0);
        assert_eq!(fresh.origin, here);
        assert_eq!(fresh.event_ms, Some(1000));
        let h = |k: &str, v: &str| (k.to_string(), v.as_bytes().to_vec());
        let headers = vec![
            h(header::ATTEMPT, "1"),
            h(header::ATTEMPT, "2"),
            h(header::ORIGIN_TOPIC, "orders"),
            h(header::ORIGIN_PARTITION, "4"),
            h(header::ORIGIN_OFFSET, "77"),
            h(header::DUE_MS, "5000"),
            h(header::DEADLINE_MS, "9000"),
            h(header::FIRST_ATTEMPT_MS, "100"),
            h(header::EVENT_MS, "50"),
        ];
        let hop = Hop::read(&headers, here, Some(4000));
        assert_eq!(hop.attempts, 2, "the last value of a repeated header wins");
        assert_eq!(hop.origin.default_id(), "orders-4-77");
        assert_eq!(
            (hop.due_ms, hop.deadline_ms, hop.first_attempt_ms, hop.event_ms),
            (Some(5000), Some(9000), Some(100), Some(50))
        );
    }
}
