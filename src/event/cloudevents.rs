//! CloudEvents in (SPEC "Event types, subscriptions, fan-out"; the CloudEvents
//! Kafka protocol binding 1.0): records written by a CloudEvents SDK are
//! events, read into the same fields as hookrelay's own envelope.
//!
//! - Binary mode: a `ce_specversion` header. Attributes come from the `ce_*`
//!   headers; the record value is the data.
//! - Structured mode: `content-type: application/cloudevents+json`, or a JSON
//!   object value with a `specversion` member and no `url`, `endpoint` or
//!   `payload` (some SDKs label structured records `application/json`). The
//!   object's `data` is the data.
//!
//! `id` becomes the event id, `type`, `source` and `subject` the attributes of
//! the same name, extension attributes the `attributes` map. Such an event
//! names no receiver: it goes by subscription, so its attributes are read
//! strictly, and its data must be JSON (else `invalid_event`). An event
//! without data delivers `null`. Pure: no I/O.

use serde_json::{Map, Value};

use super::attributes::{Attributes, RawAttributes, Strictness};
use super::headers::RecordHeaders;
use super::{valid_id, InvalidEvent};

/// The only CloudEvents version read.
const SPEC_VERSION: &str = "1.0";

/// Context attributes that are neither mapped nor extensions: left out of `attributes`.
const NOT_EXTENSIONS: [&str; 4] = ["specversion", "datacontenttype", "dataschema", "time"];

/// A CloudEvent read from a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudEvent {
    pub id: String,
    pub attributes: Attributes,
    /// The data as JSON text: the request body.
    pub data: bytes::Bytes,
}

/// Which binding mode a record uses, if it is a CloudEvent at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Binary,
    Structured,
}

/// The record's mode, or `None` when it is not a CloudEvent (an ordinary event).
pub fn mode(headers: &RecordHeaders, value: &[u8]) -> Option<Mode> {
    if headers.last("ce_specversion").is_some() {
        return Some(Mode::Binary);
    }
    let structured_type = content_type(headers).is_some_and(|t| t == "application/cloudevents+json");
    (structured_type || looks_structured(value)).then_some(Mode::Structured)
}

/// Reads a record of the given mode.
pub fn read(mode: Mode, headers: &RecordHeaders, value: &[u8]) -> Result<CloudEvent, InvalidEvent> {
    match mode {
        Mode::Binary => binary(headers, value),
        Mode::Structured => structured(value),
    }
}

/// The `content-type` header's media type, lower case, without parameters.
fn content_type(headers: &RecordHeaders) -> Option<String> {
    let (_, value) = headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case(b"content-type")).last()?;
    let text = std::str::from_utf8(value?).ok()?;
    Some(text.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
}

/// A JSON object with `specversion` and none of the envelope's `url`, `endpoint`, `payload`.
fn looks_structured(value: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Probe<'a> {
        #[serde(borrow)]
        specversion: Option<&'a serde_json::value::RawValue>,
        #[serde(borrow)]
        url: Option<&'a serde_json::value::RawValue>,
        #[serde(borrow)]
        endpoint: Option<&'a serde_json::value::RawValue>,
        #[serde(borrow)]
        payload: Option<&'a serde_json::value::RawValue>,
    }
    // Cheap first: only values that mention it are parsed.
    if !value.windows(13).any(|w| w == b"\"specversion\"") {
        return false;
    }
    match serde_json::from_slice::<Probe>(value) {
        Ok(p) => p.specversion.is_some() && p.url.is_none() && p.endpoint.is_none() && p.payload.is_none(),
        Err(_) => false,
    }
}

fn bad(problem: impl Into<String>) -> InvalidEvent {
    InvalidEvent::CloudEvent(problem.into())
}

/// Binary mode: `ce_*` headers, the value is the data.
fn binary(headers: &RecordHeaders, value: &[u8]) -> Result<CloudEvent, InvalidEvent> {
    let mut context = Map::new();
    for (name, value) in headers.iter() {
        let Some(attribute) = name.strip_prefix(b"ce_") else { continue };
        let (Ok(attribute), Ok(value)) =
            (std::str::from_utf8(attribute), std::str::from_utf8(value.unwrap_or_default()))
        else {
            return Err(bad("a ce_ header is not UTF-8"));
        };
        // A repeated header: the last value wins, as for every header the relay reads.
        context.insert(attribute.to_string(), Value::String(value.to_string()));
    }
    if let Some(t) = content_type(headers).filter(|t| !is_json(t)) {
        return Err(bad(format!("data must be JSON, the record's content-type is {t:?}")));
    }
    let data = if value.is_empty() { b"null".as_slice() } else { value };
    serde_json::from_slice::<serde::de::IgnoredAny>(data).map_err(|e| bad(format!("data is not JSON: {e}")))?;
    event_of(context, bytes::Bytes::copy_from_slice(data))
}

/// `application/json`, `text/json` or any `+json` type.
fn is_json(media_type: &str) -> bool {
    matches!(media_type, "application/json" | "text/json") || media_type.ends_with("+json")
}

/// Structured mode: the value is the whole event as a JSON object.
fn structured(value: &[u8]) -> Result<CloudEvent, InvalidEvent> {
    let mut object = match serde_json::from_slice::<Value>(value) {
        Ok(Value::Object(object)) => object,
        Ok(_) => return Err(InvalidEvent::NotObject),
        Err(e) => return Err(InvalidEvent::NotJson(e.to_string())),
    };
    if object.contains_key("data_base64") {
        return Err(bad("data must be JSON (data_base64 holds binary data)"));
    }
    if let Some(Value::String(t)) = object.get("datacontenttype") {
        let t = t.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        if !is_json(&t) {
            return Err(bad(format!("data must be JSON, its datacontenttype is {t:?}")));
        }
    }
    let data = object.remove("data").unwrap_or(Value::Null);
    let data = serde_json::to_vec(&data).map_err(|e| bad(e.to_string()))?;
    // Context attributes of other JSON types are canonically strings (CloudEvents type system).
    let mut context = Map::new();
    for (name, value) in object {
        let text = match value {
            Value::String(s) => s,
            Value::Bool(_) | Value::Number(_) => value.to_string(),
            Value::Null => continue,
            _ => return Err(bad(format!("attribute {name:?} must be a string, number or boolean"))),
        };
        context.insert(name, Value::String(text));
    }
    event_of(context, data.into())
}

/// The event of a CloudEvent's context attributes (all strings) and data.
fn event_of(mut context: Map<String, Value>, data: bytes::Bytes) -> Result<CloudEvent, InvalidEvent> {
    match context.get("specversion").and_then(Value::as_str) {
        Some(SPEC_VERSION) => {}
        Some(other) => return Err(bad(format!("specversion {other:?} is not {SPEC_VERSION:?}"))),
        None => return Err(bad("missing specversion")),
    }
    for required in ["id", "source", "type"] {
        if !context.contains_key(required) {
            return Err(bad(format!("missing {required}")));
        }
    }
    let Some(Value::String(id)) = context.remove("id") else { unreachable!("checked above, all strings") };
    if !valid_id(&id) {
        return Err(InvalidEvent::Field { field: "id", problem: "must be 1 to 256 bytes of visible ASCII".into() });
    }
    let raw = RawAttributes {
        r#type: context.remove("type"),
        source: context.remove("source"),
        subject: context.remove("subject"),
        attributes: None,
    };
    for name in NOT_EXTENSIONS {
        context.remove(name);
    }
    let raw = RawAttributes { attributes: Some(Value::Object(context)), ..raw };
    let (attributes, _) = raw.read(Strictness::Routing)?;
    Ok(CloudEvent { id, attributes, data })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> RecordHeaders {
        RecordHeaders::from_pairs(pairs.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())))
    }

    const BINARY: &[(&str, &str)] = &[
        ("ce_specversion", "1.0"),
        ("ce_id", "evt-1"),
        ("ce_source", "/billing"),
        ("ce_type", "invoice.paid"),
        ("ce_subject", "inv-42"),
        ("ce_time", "2026-12-04T20:00:00Z"),
        ("ce_tenant", "acme"),
        ("content-type", "application/json; charset=utf-8"),
    ];

    fn expected(data: &str) -> CloudEvent {
        CloudEvent {
            id: "evt-1".into(),
            attributes: Attributes {
                r#type: Some("invoice.paid".into()),
                source: Some("/billing".into()),
                subject: Some("inv-42".into()),
                extensions: [("tenant".to_string(), "acme".to_string())].into(),
            },
            data: bytes::Bytes::copy_from_slice(data.as_bytes()),
        }
    }

    #[test]
    fn binary_mode_reads_the_ce_headers_and_the_value_as_data() {
        let h = headers(BINARY);
        let value = br#"{"invoice": 42}"#;
        assert_eq!(mode(&h, value), Some(Mode::Binary));
        assert_eq!(read(Mode::Binary, &h, value).unwrap(), expected(r#"{"invoice": 42}"#), "the data's bytes kept");
        assert_eq!(read(Mode::Binary, &h, b"").unwrap().data, "null", "no data: null");
    }

    #[test]
    fn structured_mode_reads_the_object() {
        let value = br#"{"specversion":"1.0","id":"evt-1","source":"/billing","type":"invoice.paid","subject":"inv-42","time":"2026-12-04T20:00:00Z","datacontenttype":"application/json","tenant":"acme","data":{"invoice":42}}"#;
        let labelled = headers(&[("content-type", "application/cloudevents+json; charset=UTF-8")]);
        assert_eq!(mode(&labelled, value), Some(Mode::Structured));
        assert_eq!(mode(&headers(&[("content-type", "application/json")]), value), Some(Mode::Structured));
        assert_eq!(mode(&RecordHeaders::default(), value), Some(Mode::Structured), "by its shape alone");
        assert_eq!(read(Mode::Structured, &labelled, value).unwrap(), expected(r#"{"invoice":42}"#));
        let numbers = br#"{"specversion":"1.0","id":"e","source":"s","type":"t","seq":7,"flag":true}"#;
        let e = read(Mode::Structured, &labelled, numbers).unwrap();
        assert_eq!((e.attributes.extensions["seq"].as_str(), e.attributes.extensions["flag"].as_str()), ("7", "true"));
        assert_eq!(e.data, "null");
    }

    #[test]
    fn ordinary_events_are_not_cloudevents() {
        let none = RecordHeaders::default();
        for value in [
            r#"{"url":"https://a/x","payload":1}"#,
            r#"{"endpoint":"billing","specversion":"1.0","payload":1}"#,
            r#"{"specversion":"1.0","payload":1,"type":"t"}"#,
            r#"{"url":"https://a/x","payload":{"specversion":"1.0"}}"#,
            "not json \"specversion\"",
        ] {
            assert_eq!(mode(&none, value.as_bytes()), None, "{value}");
        }
    }

    #[test]
    fn bad_cloudevents_are_invalid_events() {
        let with = |extra: &[(&str, &str)], drop: &str| {
            let mut pairs: Vec<(&str, &str)> = BINARY.iter().copied().filter(|(k, _)| *k != drop).collect();
            pairs.extend_from_slice(extra);
            read(Mode::Binary, &headers(&pairs), br#"{"a":1}"#)
        };
        assert!(matches!(with(&[], "ce_id"), Err(InvalidEvent::CloudEvent(e)) if e == "missing id"));
        assert!(matches!(with(&[], "ce_type"), Err(InvalidEvent::CloudEvent(e)) if e == "missing type"));
        assert!(
            matches!(with(&[("ce_specversion", "0.3")], ""), Err(InvalidEvent::CloudEvent(e)) if e.contains("0.3"))
        );
        assert!(matches!(with(&[("ce_type", "a b")], ""), Err(InvalidEvent::Field { field: "type", .. })));
        assert!(matches!(with(&[("ce_Tenant", "x")], ""), Err(InvalidEvent::Field { field: "attributes", .. })));
        assert!(
            matches!(with(&[("content-type", "text/plain")], ""), Err(InvalidEvent::CloudEvent(e)) if e.contains("text/plain"))
        );
        let not_json = read(Mode::Binary, &headers(&BINARY[..7]), b"plain text");
        assert!(matches!(not_json, Err(InvalidEvent::CloudEvent(e)) if e.starts_with("data is not JSON")));
        let structured = |value: &str| read(Mode::Structured, &RecordHeaders::default(), value.as_bytes());
        let base = r#""specversion":"1.0","id":"e","source":"s","type":"t""#;
        assert!(matches!(structured(&format!(r#"{{{base},"data_base64":"AAE="}}"#)), Err(InvalidEvent::CloudEvent(_))));
        assert!(matches!(
            structured(&format!(r#"{{{base},"datacontenttype":"text/xml","data":"<a/>"}}"#)),
            Err(InvalidEvent::CloudEvent(e)) if e.contains("text/xml")
        ));
        assert!(matches!(structured(&format!(r#"{{{base},"ext":{{"a":1}}}}"#)), Err(InvalidEvent::CloudEvent(_))));
        assert!(matches!(structured("[1]"), Err(InvalidEvent::NotObject)));
    }
}
