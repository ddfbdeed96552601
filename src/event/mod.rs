//! Record value -> [`Event`]: decode and validate the JSON envelope (SPEC "The event").
//!
//! A decode error is final: the record goes to the dead topic with reason
//! `invalid_event` and the error text in `hookrelay-last-error`.

pub mod dead_letter;
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

pub(crate) use self::named::NamedEndpoint;
use crate::app::clock::parse_rfc3339_ms;
use crate::config::{Config, Ordering};
use crate::endpoint::guard::{check_header, endpoint_key, parse_target_url, BadHeader, BadUrl};
use crate::endpoint::sign::SigningKey;

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
    pub keys: Arc<[SigningKey]>,
    /// `retry_until`, in ms since the epoch.
    pub retry_until_ms: Option<i64>,
    pub max_attempts: Option<u32>,
    /// Its endpoint keeps each record key's order (`ordering = "key"`).
    pub ordered: bool,
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
        }
    }

    /// The same, with the names of `registry` besides the file's (the file's win).
    pub fn with_registry(self, registry: Option<Arc<crate::endpoint::registry::Registry>>) -> Endpoints {
        Endpoints { registry, ..self }
    }

    /// Decodes and validates one record value. `default_id` is used when the event has no `id`.
    pub fn decode(&self, value: &[u8], default_id: impl FnOnce() -> String) -> Result<Event, InvalidEvent> {
        let envelope = Envelope::parse(value)?;
        let payload = envelope.payload.ok_or(InvalidEvent::MissingPayload)?;
        let body = payload.get().as_bytes();
        if body.len() > self.max_payload_bytes {
            return Err(InvalidEvent::PayloadTooLarge { size: body.len(), limit: self.max_payload_bytes });
        }
        let Target { url, endpoint_key, keys, timeout: endpoint_timeout, mut headers, ordered } =
            self.target(&envelope)?;
        for (name, value) in envelope.headers.unwrap_or_default() {
            let (name, value) = check_header(&name, &value)?;
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
            Some(text) => Some(parse_rfc3339_ms(&text).map_err(|e| field("retry_until", e.to_string()))?),
            None => None,
        };
        let id = match envelope.id {
            // It is sent as the `webhook-id` header on every attempt: an id that
            // cannot be a header value would fail every attempt until expiry.
            Some(id) if !valid_id(&id) => {
                return Err(field("id", "must be 1 to 256 bytes of visible ASCII (0x21-0x7E)"))
            }
            Some(id) => id,
            None => default_id(),
        };
        let endpoint_name = envelope.endpoint.is_some().then(|| endpoint_key.clone());
        Ok(Event {
            id,
            url,
            endpoint_key,
            endpoint_name,
            body: bytes::Bytes::copy_from_slice(body),
            headers,
            timeout,
            keys,
            retry_until_ms,
            max_attempts: envelope.max_attempts,
            ordered,
        })
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
            (None, Some(name)) => {
                let registered = || self.registry.as_ref()?.lookup(name);
                let endpoint = self.named.get(name).cloned().or_else(registered);
                let endpoint = endpoint.ok_or_else(|| InvalidEvent::UnknownEndpoint(name.clone()))?;
                Ok(Target {
                    url: endpoint.url.clone(),
                    endpoint_key: Arc::from(name.as_str()),
                    keys: endpoint.keys.clone(),
                    timeout: endpoint.timeout,
                    headers: endpoint.headers.clone(),
                    ordered: endpoint.ordered,
                })
            }
            _ => Err(InvalidEvent::Target),
        }
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

/// SPEC: an `id` is 1-256 bytes of visible ASCII (0x21-0x7E).
fn valid_id(id: &str) -> bool {
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
    headers: Option<BTreeMap<String, String>>,
    timeout_ms: Option<u64>,
    retry_until: Option<String>,
    max_attempts: Option<u32>,
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
    fn event_ids_come_from_the_value_when_present() {
        assert_eq!(event_id(Some(br#"{"id":"evt_9","payload":1}"#)), Some("evt_9".into()));
        assert_eq!(event_id(Some(b"not json")), None);
        assert_eq!(event_id(None), None);
    }
}
