//! Record value -> [`Event`]: decode and validate the JSON envelope (SPEC "The event").
//!
//! A decode error is final: the record goes to the dead topic with reason
//! `invalid_event` and the error text in `hookrelay-last-error`.

pub mod attributes;
pub mod cloudevents;
pub mod dead_letter;
pub mod fanout;
#[cfg(test)]
mod fuzz;
pub mod headers;
pub mod hop;
pub mod named;
pub mod seal;
pub mod trace_context;
pub mod trust;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderName, HeaderValue};
use serde::Deserialize;
use serde_json::value::RawValue;

use self::attributes::{Attributes, RawAttributes, Strictness};
pub use self::fanout::{Decoded, Fanout};
pub(crate) use self::named::NamedEndpoint;
use crate::app::clock::parse_rfc3339_ms;
use crate::config::{Config, Ordering};
use crate::endpoint::guard::{check_header, endpoint_key, parse_target_url, BadHeader, BadUrl};
use crate::endpoint::sign::SigningKey;

/// The request header that carries the event's `type`.
pub const WEBHOOK_TYPE: &str = "webhook-type";

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
    Url(#[from] BadUrl),
    #[error("missing \"payload\"")]
    MissingPayload,
    #[error("payload is {size} bytes, over the limit of {limit}")]
    PayloadTooLarge { size: usize, limit: usize },
    #[error("bad header: {0}")]
    Header(#[from] BadHeader),
    #[error("bad field {field:?}: {problem}")]
    Field { field: &'static str, problem: String },
    #[error("bad CloudEvent: {0}")]
    CloudEvent(String),
    #[error("record headers are {size} bytes, over the limit of {limit}: dropped")]
    RecordHeadersTooLarge { size: usize, limit: usize },
}

/// A validated event, ready to deliver.
#[derive(Debug, Clone)]
pub struct Event {
    pub id: String,
    pub url: url::Url,
    /// Bounded label for metrics, limits and the circuit: endpoint name or URL host.
    pub endpoint_key: Arc<str>,
    /// The configured endpoint's name; `None` for an inline `url`.
    pub endpoint_name: Option<Arc<str>>,
    /// The payload's JSON text exactly as the producer wrote it: the request body,
    /// shared by every attempt (a clone is a reference count, not a copy).
    pub body: bytes::Bytes,
    /// Endpoint headers, then event headers (the event's win).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub timeout: Duration,
    /// The endpoint's own timeout (or `delivery.timeout`): a timeout counts
    /// against the endpoint's circuit and limit only when `timeout` is at
    /// least this (SPEC "Hostile input"), so a producer's `timeout_ms: 1`
    /// cannot open a circuit every tenant shares.
    pub endpoint_timeout: Duration,
    pub keys: Arc<[SigningKey]>,
    /// `retry_until`, in ms since the epoch.
    pub retry_until_ms: Option<i64>,
    pub max_attempts: Option<u32>,
    /// Its endpoint keeps each record key's order (`ordering = "key"`).
    pub ordered: bool,
    /// `type`, `source`, `subject` and `attributes`, as far as well-formed.
    pub attributes: Attributes,
    /// Malformed attributes dropped from an event that names its receiver
    /// (counted by the relay, never `invalid_event`).
    pub ignored_attributes: usize,
}

/// The endpoint table, with secrets decoded once at start-up.
#[derive(Debug, Clone)]
pub struct Endpoints {
    named: BTreeMap<String, NamedEndpoint>,
    /// The endpoint registry, when it is on: names the file does not define.
    registry: Option<Arc<crate::endpoint::registry::Registry>>,
    default_keys: Arc<[SigningKey]>,
    default_timeout: Duration,
    max_payload_bytes: usize,
    /// `delivery.ordering` is `"key"`: for inline URLs.
    default_ordered: bool,
    /// `delivery.max_event_headers` and `delivery.max_event_header_bytes`.
    limits: HeaderLimits,
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
            .filter_map(|(name, e)| Some((name.clone(), NamedEndpoint::of(e, config.delivery.ordering)?)))
            .collect();
        Endpoints {
            named,
            registry: None,
            default_keys: keys(&config.delivery.signing_secrets),
            default_timeout: config.delivery.timeout,
            max_payload_bytes: config.delivery.max_payload_bytes,
            default_ordered: config.delivery.ordering == Ordering::Key,
            limits: HeaderLimits {
                count: config.delivery.max_event_headers,
                bytes: usize::try_from(config.delivery.max_event_header_bytes.as_u64()).unwrap_or(usize::MAX),
            },
        }
    }

    /// The same, with the names of `registry` besides the file's (the file's win).
    pub fn with_registry(self, registry: Option<Arc<crate::endpoint::registry::Registry>>) -> Endpoints {
        Endpoints { registry, ..self }
    }

    /// Decodes and validates one record value. `default_id` is used when the event has no `id`.
    /// An event that names no receiver is `InvalidEvent::Target` here (see [`Endpoints::decode_record`]).
    pub fn decode(&self, value: &[u8], default_id: impl FnOnce() -> String) -> Result<Event, InvalidEvent> {
        match self.decode_envelope(value, default_id)? {
            Decoded::One(event) => Ok(event),
            Decoded::Fanout(_) => Err(InvalidEvent::Target),
        }
    }

    /// The envelope: an event for its `url` or `endpoint`, or one that fans
    /// out (a `type` and neither `url` nor `endpoint`).
    fn decode_envelope(&self, value: &[u8], default_id: impl FnOnce() -> String) -> Result<Decoded, InvalidEvent> {
        let mut envelope = Envelope::parse(value)?;
        let fans_out = envelope.url.is_none() && envelope.endpoint.is_none() && envelope.r#type.is_some();
        let strictness = if fans_out { Strictness::Routing } else { Strictness::Carried };
        let (attributes, ignored_attributes) = envelope.raw_attributes().read(strictness)?;
        let payload = envelope.payload.ok_or(InvalidEvent::MissingPayload)?;
        let body = payload.get().as_bytes();
        if body.len() > self.max_payload_bytes {
            return Err(InvalidEvent::PayloadTooLarge { size: body.len(), limit: self.max_payload_bytes });
        }
        let body = bytes::Bytes::copy_from_slice(body);
        if fans_out {
            let own = Own::of(&mut envelope, self.limits, default_id)?;
            return Ok(Decoded::Fanout(Fanout { attributes, body, own }));
        }
        let target = self.target(&envelope)?;
        let own = Own::of(&mut envelope, self.limits, default_id)?;
        let endpoint_name = envelope.endpoint.is_some().then(|| target.endpoint_key.clone());
        Ok(Decoded::One(self.event_of(target, own, endpoint_name, body, attributes, ignored_attributes)))
    }

    /// The event of a receiver and the event's own fields (its headers and timeout win).
    fn event_of(
        &self,
        target: Target,
        own: Own,
        endpoint_name: Option<Arc<str>>,
        body: bytes::Bytes,
        attributes: Attributes,
        ignored_attributes: usize,
    ) -> Event {
        let Target { url, endpoint_key, keys, timeout: endpoint_timeout, mut headers, ordered } = target;
        // The event's type reaches the receiver (outside the signed content,
        // as every header); a header of that name set by the endpoint or the event wins.
        let webhook_type = HeaderName::from_static(WEBHOOK_TYPE);
        let typed = attributes.r#type.as_deref().and_then(|t| HeaderValue::from_str(t).ok());
        if let (Some(value), false) = (typed, headers.iter().any(|(n, _)| *n == webhook_type)) {
            headers.push((webhook_type, value));
        }
        merge_headers(&mut headers, own.headers);
        let endpoint_timeout = endpoint_timeout.unwrap_or(self.default_timeout);
        Event {
            id: own.id,
            url,
            endpoint_key,
            endpoint_name,
            body,
            headers,
            timeout: own.timeout.unwrap_or(endpoint_timeout),
            endpoint_timeout,
            keys,
            retry_until_ms: own.retry_until_ms,
            max_attempts: own.max_attempts,
            ordered,
            attributes,
            ignored_attributes,
        }
    }

    /// Where the event goes: its inline `url` with the defaults, or its named `endpoint`.
    fn target(&self, envelope: &Envelope<'_>) -> Result<Target, InvalidEvent> {
        match (&envelope.url, &envelope.endpoint) {
            (Some(url), None) => {
                let url = parse_target_url(url)?;
                Ok(Target {
                    endpoint_key: endpoint_key(&url).into(),
                    url,
                    keys: self.default_keys.clone(),
                    timeout: None,
                    headers: Vec::new(),
                    ordered: self.default_ordered,
                })
            }
            (None, Some(name)) => self.named_target(name),
            _ => Err(InvalidEvent::Target),
        }
    }

    /// A named endpoint (file, else registry) as a receiver.
    fn named_target(&self, name: &str) -> Result<Target, InvalidEvent> {
        let registered = || self.registry.as_ref()?.lookup(name);
        let endpoint = self.named.get(name).cloned().or_else(registered);
        let endpoint = endpoint.ok_or_else(|| InvalidEvent::UnknownEndpoint(name.to_string()))?;
        Ok(Target {
            url: endpoint.url,
            endpoint_key: Arc::from(name),
            keys: endpoint.keys,
            timeout: endpoint.timeout,
            headers: endpoint.headers,
            ordered: endpoint.ordered,
        })
    }
}

/// An event's receiver before the event's own fields apply.
struct Target {
    url: url::Url,
    /// See [`Event::endpoint_key`].
    endpoint_key: Arc<str>,
    keys: Arc<[SigningKey]>,
    /// The endpoint's timeout, if it sets one.
    timeout: Option<Duration>,
    /// The endpoint's headers.
    headers: Vec<(HeaderName, HeaderValue)>,
    ordered: bool,
}

/// An event's own fields beside its receiver, checked.
#[derive(Debug, Clone)]
pub struct Own {
    pub id: String,
    /// The event's `headers`; they replace an endpoint's of the same name.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// `timeout_ms`; `None`: the endpoint's, else `delivery.timeout`.
    pub timeout: Option<Duration>,
    /// `retry_until`, in ms since the epoch.
    pub retry_until_ms: Option<i64>,
    pub max_attempts: Option<u32>,
}

/// `delivery.max_event_headers` and `delivery.max_event_header_bytes`.
#[derive(Debug, Clone, Copy)]
struct HeaderLimits {
    count: usize,
    bytes: usize,
}

impl Own {
    fn of(
        envelope: &mut Envelope<'_>,
        limits: HeaderLimits,
        default_id: impl FnOnce() -> String,
    ) -> Result<Own, InvalidEvent> {
        let headers = own_headers(envelope.headers.take().unwrap_or_default(), limits)?;
        let timeout = match envelope.timeout_ms {
            Some(0) => return Err(field("timeout_ms", "must be more than 0")),
            Some(ms) if ms > MAX_TIMEOUT_MS => return Err(field("timeout_ms", "must be at most 300000")),
            Some(ms) => Some(Duration::from_millis(ms)),
            None => None,
        };
        let retry_until_ms = match envelope.retry_until.take() {
            Some(text) => Some(parse_rfc3339_ms(&text).map_err(|e| field("retry_until", e.to_string()))?),
            None => None,
        };
        let id = match envelope.id.take() {
            // It is sent as the `webhook-id` header on every attempt: an id that
            // cannot be a header value would fail every attempt until expiry.
            Some(id) if !valid_id(&id) => {
                return Err(field("id", "must be 1 to 256 bytes of visible ASCII (0x21-0x7E)"))
            }
            Some(id) => id,
            None => default_id(),
        };
        Ok(Own { id, headers, timeout, retry_until_ms, max_attempts: envelope.max_attempts })
    }
}

/// The event's `headers`, checked, within `limits`: a header bomb is refused
/// by its size before any header is parsed. Names are case-insensitive: of
/// two that differ in case the later wins.
fn own_headers(event: EventHeaders, limits: HeaderLimits) -> Result<Vec<(HeaderName, HeaderValue)>, InvalidEvent> {
    if event.seen > limits.count {
        return Err(field("headers", format!("{} headers, over the limit of {}", event.seen, limits.count)));
    }
    let event = event.kept;
    let bytes: usize = event.iter().map(|(name, value)| name.len() + value.len()).sum();
    if bytes > limits.bytes {
        return Err(field("headers", format!("{bytes} bytes, over the limit of {}", limits.bytes)));
    }
    let mut headers = Vec::with_capacity(event.len());
    for (name, value) in event {
        let (name, value) = check_header(&name, &value)?;
        headers.push((name, value));
    }
    let mut merged = Vec::with_capacity(headers.len());
    merge_headers(&mut merged, headers);
    Ok(merged)
}

/// Adds `later` after `headers`, a name in both taking `later`'s value in
/// place. Linear: names are matched through a map.
fn merge_headers(headers: &mut Vec<(HeaderName, HeaderValue)>, later: Vec<(HeaderName, HeaderValue)>) {
    let mut at: std::collections::HashMap<HeaderName, usize> =
        headers.iter().enumerate().map(|(i, (name, _))| (name.clone(), i)).collect();
    for (name, value) in later {
        match at.get(&name) {
            Some(&i) => headers[i].1 = value,
            None => {
                at.insert(name.clone(), headers.len());
                headers.push((name, value));
            }
        }
    }
}

/// SPEC: an `id` is 1-256 bytes of visible ASCII (0x21-0x7E).
pub(crate) fn valid_id(id: &str) -> bool {
    (1..=256).contains(&id.len()) && id.bytes().all(|b| (0x21..=0x7E).contains(&b))
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
    headers: Option<EventHeaders>,
    timeout_ms: Option<u64>,
    retry_until: Option<String>,
    max_attempts: Option<u32>,
    #[serde(rename = "type")]
    r#type: Option<serde_json::Value>,
    source: Option<serde_json::Value>,
    subject: Option<serde_json::Value>,
    attributes: Option<serde_json::Value>,
}

impl Envelope<'_> {
    /// The attribute fields, taken out for [`RawAttributes::read`].
    fn raw_attributes(&mut self) -> RawAttributes {
        RawAttributes {
            r#type: self.r#type.take(),
            source: self.source.take(),
            subject: self.subject.take(),
            attributes: self.attributes.take(),
        }
    }
}

impl<'a> Envelope<'a> {
    fn parse(value: &'a [u8]) -> Result<Envelope<'a>, InvalidEvent> {
        match serde_json::from_slice(value) {
            Ok(envelope) => Ok(envelope),
            Err(e) if e.classify() == serde_json::error::Category::Data => {
                // Valid JSON of the wrong shape: say which, rather than serde's text.
                match serde_json::from_slice::<serde_json::Value>(value) {
                    Ok(serde_json::Value::Object(_)) => Err(InvalidEvent::NotJson(e.to_string())),
                    Ok(_) => Err(InvalidEvent::NotObject),
                    Err(e) => Err(InvalidEvent::NotJson(e.to_string())),
                }
            }
            Err(e) => Err(InvalidEvent::NotJson(e.to_string())),
        }
    }
}

/// An event's `headers` as read: at most [`MAX_EVENT_HEADERS`] kept (the most
/// `delivery.max_event_headers` allows), the rest only counted. A header bomb
/// of 60,000 names is refused by its count without 60,000 strings allocated
/// into a map first (14.6 ms per 0.8 MB bomb in a release build, which the
/// consumer loop spent before the count was checked).
#[derive(Default)]
struct EventHeaders {
    kept: BTreeMap<String, String>,
    /// Entries in the JSON object, duplicates included.
    seen: usize,
}

/// The most headers an event may carry under any config (`delivery.max_event_headers`' ceiling).
pub const MAX_EVENT_HEADERS: usize = 1024;

impl<'de> Deserialize<'de> for EventHeaders {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<EventHeaders, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = EventHeaders;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object of header names to string values")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<EventHeaders, A::Error> {
                let mut headers = EventHeaders::default();
                while headers.seen < MAX_EVENT_HEADERS {
                    let Some((name, value)) = map.next_entry::<String, String>()? else { return Ok(headers) };
                    headers.kept.insert(name, value);
                    headers.seen += 1;
                }
                while map.next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?.is_some() {
                    headers.seen += 1;
                }
                Ok(headers)
            }
        }
        d.deserialize_map(Visit)
    }
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The endpoint table of the decoder's tests (and of its fuzzing): one
    /// configured endpoint, `billing`, and `max_payload_bytes` as given.
    pub(crate) fn endpoints_with(max_payload_bytes: usize) -> Endpoints {
        let config = Config::from_toml(&format!(
            r#"
            [delivery]
            max_payload_bytes = {max_payload_bytes}
            signing_secrets = ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]
            timeout = "5s"
            [endpoints.billing]
            url = "https://billing.example.com/hooks"
            timeout = "3s"
            headers = {{ "x-tenant" = "acme" }}
            "#
        ))
        .unwrap();
        Endpoints::new(&config)
    }

    fn endpoints() -> Endpoints {
        endpoints_with(64)
    }

    fn decode(value: &str) -> Result<Event, InvalidEvent> {
        endpoints().decode(value.as_bytes(), || "t-0-7".to_string())
    }

    #[test]
    fn a_url_event_keeps_its_payload_bytes() {
        let e = decode(r#"{"url":"https://a.example/x","payload": {"b" : [1, 2]} }"#).unwrap();
        assert_eq!(&e.body[..], br#"{"b" : [1, 2]}"#);
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
        assert_eq!(&e.body[..], b"null");
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
    fn ordering_is_the_endpoints_else_the_delivery_default() {
        let table = |default: &str| {
            let config = Config::from_toml(&format!(
                "[delivery]\n{default}\n[endpoints.own]\nurl = \"https://a.example/\"\nordering = \"key\"\n\
                 [endpoints.plain]\nurl = \"https://b.example/\"\nordering = \"none\"\n\
                 [endpoints.inherits]\nurl = \"https://c.example/\"\n"
            ))
            .unwrap();
            let endpoints = Endpoints::new(&config);
            let ordered = |value: &str| endpoints.decode(value.as_bytes(), || "t-0-1".into()).unwrap().ordered;
            [
                ordered(r#"{"endpoint":"own","payload":1}"#),
                ordered(r#"{"endpoint":"plain","payload":1}"#),
                ordered(r#"{"endpoint":"inherits","payload":1}"#),
                ordered(r#"{"url":"https://d.example/","payload":1}"#),
            ]
        };
        assert_eq!(table(""), [true, false, false, false], "default none");
        assert_eq!(table("ordering = \"key\""), [true, false, true, true], "delivery.ordering is the default");
    }

    #[test]
    fn invalid_events_say_why() {
        type Expect = fn(&InvalidEvent) -> bool;
        let bad_id: Expect = |e| matches!(e, InvalidEvent::Field { field: "id", .. });
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
            (r#"{"url":"https://a/x","payload":1,"id":""}"#, bad_id),
            (r#"{"url":"https://a/x","payload":1,"id":"evt\u0001"}"#, bad_id),
            (r#"{"url":"https://a/x","payload":1,"id":"line\nbreak"}"#, bad_id),
            (r#"{"url":"https://a/x","payload":1,"id":"a b"}"#, bad_id),
            (r#"{"url":"https://a/x","payload":1,"id":"del\u007f"}"#, bad_id),
            (r#"{"url":"https://a/x","payload":1,"id":"caf\u00e9"}"#, bad_id),
        ];
        for (value, expected) in cases {
            let err = decode(value).expect_err(value);
            assert!(expected(&err), "{value} gave {err:?}");
        }
    }

    #[test]
    fn an_id_of_visible_ascii_up_to_256_bytes_is_valid() {
        let with_id =
            |id: &str| decode(&format!(r#"{{"url":"https://a/x","payload":1,"id":{}}}"#, serde_json::json!(id)));
        let edges = format!("!{}~", "a".repeat(254));
        assert_eq!(with_id(&edges).unwrap().id, edges, "256 bytes, 0x21 and 0x7E included");
        assert!(matches!(with_id(&"a".repeat(257)), Err(InvalidEvent::Field { field: "id", .. })));
    }

    #[test]
    fn event_headers_are_bounded_in_count_and_bytes_and_merged_in_linear_time() {
        let with_headers = |headers: serde_json::Value| {
            decode(&serde_json::json!({"endpoint": "billing", "payload": 1, "headers": headers}).to_string())
        };
        let many: serde_json::Map<_, _> = (0..65).map(|i| (format!("x-h{i}"), "v".into())).collect();
        let err = with_headers(many.into()).unwrap_err();
        assert_eq!(err.to_string(), "bad field \"headers\": 65 headers, over the limit of 64");
        let big = serde_json::json!({"x-big": "v".repeat(16 * 1024)});
        assert!(matches!(with_headers(big), Err(InvalidEvent::Field { field: "headers", .. })));
        let at_limit: serde_json::Map<_, _> = (0..64).map(|i| (format!("x-h{i}"), "v".into())).collect();
        let e = with_headers(at_limit.into()).unwrap();
        assert_eq!(e.headers.len(), 65, "the endpoint's x-tenant and 64 of the event's");
        // A bomb of 100k unique names (about 1.3 MB) is refused by its count,
        // without the quadratic merge: well under a second even in debug builds.
        let bomb: serde_json::Map<_, _> = (0..100_000).map(|i| (format!("x-{i}"), "v".into())).collect();
        let started = std::time::Instant::now();
        let err = with_headers(bomb.into()).unwrap_err().to_string();
        assert_eq!(
            err, "bad field \"headers\": 100000 headers, over the limit of 64",
            "every entry counted, 1024 kept"
        );
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
        // Case-insensitive duplicates merge into one header (the later wins).
        let e = with_headers(serde_json::json!({"X-Tenant": "upper", "x-a": "b"})).unwrap();
        let tenants: Vec<_> = e.headers.iter().filter(|(n, _)| n == "x-tenant").collect();
        assert_eq!(tenants.len(), 1);
    }

    #[test]
    fn the_endpoint_timeout_is_kept_besides_the_events_own() {
        let e = decode(r#"{"endpoint":"billing","payload":1,"timeout_ms":1}"#).unwrap();
        assert_eq!((e.timeout, e.endpoint_timeout), (Duration::from_millis(1), Duration::from_secs(3)));
        let e = decode(r#"{"url":"https://a.example/","payload":1}"#).unwrap();
        assert_eq!((e.timeout, e.endpoint_timeout), (Duration::from_secs(5), Duration::from_secs(5)));
    }

    #[test]
    fn attributes_beside_a_receiver_are_carried_and_malformed_ones_dropped() {
        let e = decode(r#"{"endpoint":"billing","payload":1,"type":"invoice.paid","subject":"inv-42","attributes":{"tenant":"acme"}}"#).unwrap();
        assert_eq!(e.attributes.r#type.as_deref(), Some("invoice.paid"));
        assert_eq!(e.attributes.subject.as_deref(), Some("inv-42"));
        assert_eq!(e.attributes.extensions["tenant"], "acme");
        assert_eq!(e.ignored_attributes, 0);
        let sent = e.headers.iter().find(|(n, _)| n == WEBHOOK_TYPE).map(|(_, v)| v.to_str().unwrap());
        assert_eq!(sent, Some("invoice.paid"), "the type reaches the receiver");
        let own =
            decode(r#"{"url":"https://a/x","payload":1,"type":"t.a","headers":{"webhook-type":"mine"}}"#).unwrap();
        let sent: Vec<_> =
            own.headers.iter().filter(|(n, _)| n == WEBHOOK_TYPE).map(|(_, v)| v.to_str().unwrap()).collect();
        assert_eq!(sent, ["mine"], "the event's own header wins");
        // Never invalid_event: the event is delivered without them, and they are counted.
        let e = decode(
            r#"{"url":"https://a/x","payload":1,"type":"has space","source":3,"attributes":{"Bad":"x"},"subject":"s"}"#,
        )
        .unwrap();
        assert_eq!(e.attributes.r#type, None);
        assert_eq!(e.attributes.source, None);
        assert!(e.attributes.extensions.is_empty());
        assert_eq!(e.attributes.subject.as_deref(), Some("s"));
        assert_eq!(e.ignored_attributes, 3);
    }

    #[test]
    fn event_ids_come_from_the_value_when_present() {
        assert_eq!(event_id(Some(br#"{"id":"evt_9","payload":1}"#)), Some("evt_9".into()));
        assert_eq!(event_id(Some(b"not json")), None);
        assert_eq!(event_id(None), None);
    }
}
