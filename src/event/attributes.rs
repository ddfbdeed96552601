//! An event's attributes (SPEC "Event types, subscriptions, fan-out"): `type`,
//! `source`, `subject` and the `attributes` map, which subscriptions match.
//!
//! On an event that names its receiver (`url` or `endpoint`) they are only
//! carried: a malformed one is dropped and counted, never `invalid_event`
//! (producers that already send such fields must not start failing). On an
//! event that fans out by subscription they decide who gets it, so a
//! malformed one makes the event invalid.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{valid_id, InvalidEvent};

/// The longest attribute name in the `attributes` map (SPEC: 1-20 of `[a-z0-9]`).
const MAX_ATTRIBUTE_NAME: usize = 20;

/// The attributes an event carries; every field optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attributes {
    /// 1-256 bytes of visible ASCII (as an id).
    pub r#type: Option<String>,
    pub source: Option<String>,
    pub subject: Option<String>,
    /// Extension attributes: names of 1-20 `[a-z0-9]`, string values.
    pub extensions: BTreeMap<String, String>,
}

/// The attribute fields as the envelope holds them, before validation.
#[derive(Debug, Default, serde::Deserialize)]
pub(super) struct RawAttributes {
    #[serde(rename = "type")]
    pub(super) r#type: Option<Value>,
    pub(super) source: Option<Value>,
    pub(super) subject: Option<Value>,
    pub(super) attributes: Option<Value>,
}

/// How a malformed attribute is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Strictness {
    /// The event names its receiver: drop it and count it.
    Carried,
    /// The event fans out by subscription: it is invalid.
    Routing,
}

impl RawAttributes {
    /// Validated attributes and how many malformed ones were dropped
    /// (always 0 with [`Strictness::Routing`], which fails instead).
    pub(super) fn read(self, strictness: Strictness) -> Result<(Attributes, usize), InvalidEvent> {
        let mut ignored = 0;
        let r#type = keep("type", type_of(self.r#type), strictness, &mut ignored)?;
        let source = keep("source", string(self.source), strictness, &mut ignored)?;
        let subject = keep("subject", string(self.subject), strictness, &mut ignored)?;
        let extensions = keep("attributes", extensions(self.attributes), strictness, &mut ignored)?;
        let extensions = extensions.unwrap_or_default();
        Ok((Attributes { r#type, source, subject, extensions }, ignored))
    }
}

/// A checked field: kept, or (malformed) dropped and counted, or the event's error.
fn keep<T>(
    field: &'static str,
    checked: Result<Option<T>, String>,
    strictness: Strictness,
    ignored: &mut usize,
) -> Result<Option<T>, InvalidEvent> {
    match checked {
        Ok(value) => Ok(value),
        Err(problem) if strictness == Strictness::Routing => Err(InvalidEvent::Field { field, problem }),
        Err(_) => {
            *ignored += 1;
            Ok(None)
        }
    }
}

fn string(value: Option<Value>) -> Result<Option<String>, String> {
    match value {
        None => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(_) => Err("must be a string".into()),
    }
}

fn type_of(value: Option<Value>) -> Result<Option<String>, String> {
    match string(value)? {
        Some(text) if !valid_id(&text) => Err("must be 1 to 256 bytes of visible ASCII (0x21-0x7E)".into()),
        text => Ok(text),
    }
}

/// SPEC: an attribute name is 1-20 of `[a-z0-9]`.
pub(crate) fn valid_attribute_name(name: &str) -> bool {
    (1..=MAX_ATTRIBUTE_NAME).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

fn extensions(value: Option<Value>) -> Result<Option<BTreeMap<String, String>>, String> {
    let Some(value) = value else { return Ok(None) };
    let Value::Object(map) = value else { return Err("must be an object of string values".into()) };
    let mut out = BTreeMap::new();
    for (name, value) in map {
        if !valid_attribute_name(&name) {
            return Err(format!("attribute name {name:?} must be 1 to 20 of [a-z0-9]"));
        }
        let Value::String(value) = value else { return Err(format!("attribute {name:?} must be a string")) };
        out.insert(name, value);
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(json: &str) -> RawAttributes {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn well_formed_attributes_are_read() {
        let json =
            r#"{"type":"invoice.paid","source":"/billing","subject":"inv-42","attributes":{"tenant":"acme","r2":"x"}}"#;
        for strictness in [Strictness::Carried, Strictness::Routing] {
            let (a, ignored) = raw(json).read(strictness).unwrap();
            assert_eq!(ignored, 0);
            assert_eq!(a.r#type.as_deref(), Some("invoice.paid"));
            assert_eq!(a.source.as_deref(), Some("/billing"));
            assert_eq!(a.subject.as_deref(), Some("inv-42"));
            assert_eq!(a.extensions.get("tenant").map(String::as_str), Some("acme"));
            assert_eq!(a.extensions.len(), 2);
        }
        assert_eq!(raw("{}").read(Strictness::Routing).unwrap(), (Attributes::default(), 0));
    }

    #[test]
    fn malformed_attributes_are_dropped_when_carried_and_invalid_when_routing() {
        let long = format!(r#"{{"type":"{}"}}"#, "a".repeat(257));
        let cases: &[(&str, &str)] = &[
            (r#"{"type":1}"#, "type"),
            (r#"{"type":""}"#, "type"),
            (r#"{"type":"a b"}"#, "type"),
            (&long, "type"),
            (r#"{"source":["x"]}"#, "source"),
            (r#"{"subject":{}}"#, "subject"),
            (r#"{"attributes":"x"}"#, "attributes"),
            (r#"{"attributes":{"Tenant":"x"}}"#, "attributes"),
            (r#"{"attributes":{"":"x"}}"#, "attributes"),
            (r#"{"attributes":{"a_b":"x"}}"#, "attributes"),
            (r#"{"attributes":{"abcdefghijklmnopqrstu":"x"}}"#, "attributes"),
            (r#"{"attributes":{"n":1}}"#, "attributes"),
        ];
        for (json, field) in cases {
            let (carried, ignored) = raw(json).read(Strictness::Carried).unwrap();
            assert_eq!((carried, ignored), (Attributes::default(), 1), "{json}");
            match raw(json).read(Strictness::Routing) {
                Err(InvalidEvent::Field { field: f, .. }) => assert_eq!(f, *field, "{json}"),
                other => panic!("{json} gave {other:?}"),
            }
        }
        // The well-formed ones stay when another is dropped.
        let (a, ignored) = raw(r#"{"type":"t.x","source":7,"subject":"s"}"#).read(Strictness::Carried).unwrap();
        assert_eq!((a.r#type.as_deref(), a.source, a.subject.as_deref(), ignored), (Some("t.x"), None, Some("s"), 1));
    }

    #[test]
    fn an_attribute_name_of_twenty_is_valid() {
        assert!(valid_attribute_name("abcdefghij0123456789"));
        assert!(!valid_attribute_name("abcdefghij0123456789x"));
    }
}
