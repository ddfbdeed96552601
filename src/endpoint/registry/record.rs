//! A registry record: key = the endpoint name, value = a JSON object with
//! the keys of a `[endpoints.NAME]` table, its secret fields sealed, and two
//! headers: the write time and the tag over name, time and value
//! ([`RegistryKey::tag`]). A tombstone (no value) deletes, and carries a tag too.
//!
//! Secret fields: each of `secrets` (a string, or `{"secret": ..,
//! "not_after": RFC 3339}` while a rotation keeps an old one signing), each
//! value of `headers`, and `url` and `proxy` when they carry credentials
//! (userinfo or a query). The clear spec goes through the same validator as
//! the file's ([`validate_endpoint`]).

use serde_json::{Map, Value};

use super::seal::{RegistryKey, Unsealed, SEALED_PREFIX};
use crate::app::clock::parse_rfc3339_ms;
use crate::config::{validate_endpoint, ConfigError, EndpointConfig, Files, RegistryConfig, REDACTED};

/// Header with the record's write time, ms since the epoch (decimal).
pub const AT_HEADER: &str = "hookrelay-registry-at";
/// Header with the record's tag (base64).
pub const TAG_HEADER: &str = "hookrelay-registry-tag";

/// SPEC: 1-64 bytes of `[a-z0-9._-]`, starting with a letter or digit.
pub fn check_name(name: &str) -> Result<(), String> {
    let legal = name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'));
    let first = name.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if (1..=64).contains(&name.len()) && legal && first {
        Ok(())
    } else {
        Err(format!("endpoint name {name:?} must be 1-64 bytes of [a-z0-9._-], starting with a letter or digit"))
    }
}

/// A registry endpoint: the clear JSON spec, the parsed and validated table,
/// and each secret's `not_after` (ms), in the order of `secrets`.
#[derive(Debug, Clone)]
pub struct Spec {
    pub clear: Value,
    pub endpoint: EndpointConfig,
    pub not_after: Vec<Option<i64>>,
}

fn invalid(key: String, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key, problem: problem.into() }
}

/// The text of `endpoints put --file`: a JSON object, else a TOML table.
pub fn read_text(name: &str, text: &str) -> Result<Value, ConfigError> {
    let key = format!("endpoints.{name}");
    let value = match serde_json::from_str::<Value>(text) {
        Ok(value) => value,
        Err(json) if text.trim_start().starts_with('{') => return Err(invalid(key, format!("not JSON: {json}"))),
        Err(_) => {
            let table: toml::Table =
                toml::from_str(text).map_err(|e| invalid(key.clone(), format!("neither JSON nor TOML: {e}")))?;
            serde_json::to_value(table).map_err(|e| invalid(key.clone(), e.to_string()))?
        }
    };
    if !value.is_object() {
        return Err(invalid(key, "must be a JSON object or a TOML table"));
    }
    Ok(value)
}

/// Parses and validates a clear spec, as the file's `[endpoints.NAME]` is.
pub fn spec_of(name: &str, clear: &Value, registry: &RegistryConfig, files: Files) -> Result<Spec, ConfigError> {
    check_name(name).map_err(|problem| invalid("name".into(), problem))?;
    let key = |field: &str| format!("endpoints.{name}.{field}");
    let mut object = clear.as_object().ok_or_else(|| invalid(key(""), "must be a JSON object"))?.clone();
    if object.get("allow_private_networks") == Some(&Value::Bool(true)) && !registry.allow_private_networks {
        return Err(invalid(key("allow_private_networks"), "needs registry.allow_private_networks = true in the file"));
    }
    let mut not_after = Vec::new();
    if let Some(Value::Array(secrets)) = object.get_mut("secrets") {
        for (i, secret) in secrets.iter_mut().enumerate() {
            let Value::Object(entry) = secret else {
                not_after.push(None);
                continue;
            };
            let field = format!("{}[{i}]", key("secrets"));
            let until = match entry.get("not_after") {
                Some(Value::String(at)) => {
                    Some(parse_rfc3339_ms(at).map_err(|e| invalid(field.clone(), e.to_string()))?)
                }
                None | Some(Value::Null) => None,
                Some(_) => return Err(invalid(field, "not_after must be an RFC 3339 time")),
            };
            let Some(Value::String(value)) = entry.get("secret") else {
                return Err(invalid(field, "needs \"secret\" (a whsec_ string)"));
            };
            if let Some(unknown) = entry.keys().find(|k| !matches!(k.as_str(), "secret" | "not_after")) {
                return Err(invalid(field, format!("unknown field {unknown:?}")));
            }
            not_after.push(until);
            *secret = Value::String(value.clone());
        }
    }
    let endpoint: EndpointConfig = serde_json::from_value(Value::Object(object))
        .map_err(|e| invalid(format!("endpoints.{name}"), e.to_string()))?;
    validate_endpoint(name, &endpoint, files)?;
    Ok(Spec { clear: clear.clone(), endpoint, not_after })
}

/// Whether a URL carries credentials (userinfo, or a query whose values may be tokens).
fn has_credentials(text: &str) -> bool {
    url::Url::parse(text).map_or(true, |u| !u.username().is_empty() || u.password().is_some() || u.query().is_some())
}

/// Applies `f` to each secret string of a spec: `(field, value)` -> new value.
fn each_secret<E>(spec: &mut Map<String, Value>, mut f: impl FnMut(&str, &str) -> Result<String, E>) -> Result<(), E> {
    if let Some(Value::Array(secrets)) = spec.get_mut("secrets") {
        for (i, secret) in secrets.iter_mut().enumerate() {
            let slot = match secret {
                Value::Object(entry) => entry.get_mut("secret"),
                other => Some(other),
            };
            if let Some(Value::String(value)) = slot {
                *value = f(&format!("secrets[{i}]"), value)?;
            }
        }
    }
    if let Some(Value::Object(headers)) = spec.get_mut("headers") {
        for (name, value) in headers.iter_mut() {
            if let Value::String(text) = value {
                *text = f(&format!("headers.{name}"), text)?;
            }
        }
    }
    for field in ["url", "proxy"] {
        if let Some(Value::String(text)) = spec.get_mut(field) {
            if text.starts_with(SEALED_PREFIX) || has_credentials(text) {
                *text = f(field, text)?;
            }
        }
    }
    Ok(())
}

/// The record value of a clear spec: its secret fields sealed.
pub fn seal(key: &RegistryKey, name: &str, clear: &Value) -> Value {
    let mut sealed = clear.as_object().cloned().unwrap_or_default();
    let _ = each_secret::<()>(&mut sealed, |field, value| Ok(key.seal(name, field, value)));
    Value::Object(sealed)
}

/// The clear spec of a record value; every secret field must be sealed.
pub fn open(key: &RegistryKey, name: &str, sealed: &Value) -> Result<Value, Unsealed> {
    let mut clear = sealed.as_object().cloned().unwrap_or_default();
    each_secret(&mut clear, |field, value| key.open(name, field, value))?;
    Ok(Value::Object(clear))
}

/// A spec as `endpoints get` shows it: secret fields redacted, `not_after` kept.
pub fn redacted(clear: &Value) -> Value {
    let mut shown = clear.as_object().cloned().unwrap_or_default();
    let _ = each_secret::<()>(&mut shown, |field, value| {
        Ok(match field {
            "url" | "proxy" => crate::endpoint::guard::redact_url(value),
            _ => REDACTED.to_string(),
        })
    });
    Value::Object(shown)
}

/// Why a registry record was not applied.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("registry.key is not set: records cannot be verified")]
    NoKey,
    #[error("the record key is not an endpoint name: {0}")]
    Name(String),
    #[error("missing or bad {0} header")]
    Header(&'static str),
    #[error(transparent)]
    Unsealed(#[from] Unsealed),
    #[error("value is not a JSON object: {0}")]
    NotJson(String),
    #[error(transparent)]
    Invalid(#[from] ConfigError),
}

/// What a verified record says.
#[derive(Debug)]
pub enum Change {
    Put(Box<Spec>),
    Delete,
}

/// A record as written: value (None = tombstone) and headers.
pub struct Encoded {
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(&'static str, Vec<u8>)>,
}

/// Encodes a put (`Some(clear)`) or a delete (`None`) written at `at_ms`.
pub fn encode(key: &RegistryKey, name: &str, clear: Option<&Value>, at_ms: i64) -> Encoded {
    let value = clear.map(|clear| seal(key, name, clear).to_string().into_bytes());
    let tag = key.tag(name, at_ms, value.as_deref());
    Encoded { value, headers: vec![(AT_HEADER, at_ms.to_string().into_bytes()), (TAG_HEADER, tag.into_bytes())] }
}

/// A record's verified write time and change: the tag checked over the
/// exact value bytes, the secrets opened, the spec validated.
pub fn decode(
    key: Option<&RegistryKey>,
    name: &[u8],
    value: Option<&[u8]>,
    header: impl Fn(&str) -> Option<Vec<u8>>,
    registry: &RegistryConfig,
    files: Files,
) -> Result<(String, i64, Change), Refused> {
    let name = std::str::from_utf8(name).map_err(|_| Refused::Name(String::from_utf8_lossy(name).into_owned()))?;
    check_name(name).map_err(Refused::Name)?;
    let key = key.ok_or(Refused::NoKey)?;
    let at_ms = header(AT_HEADER)
        .and_then(|v| String::from_utf8(v).ok()?.parse::<i64>().ok())
        .ok_or(Refused::Header(AT_HEADER))?;
    let tag = header(TAG_HEADER).and_then(|v| String::from_utf8(v).ok()).ok_or(Refused::Header(TAG_HEADER))?;
    key.verify(name, at_ms, value, &tag)?;
    let Some(value) = value else {
        return Ok((name.to_string(), at_ms, Change::Delete));
    };
    let sealed: Value = serde_json::from_slice(value).map_err(|e| Refused::NotJson(e.to_string()))?;
    if !sealed.is_object() {
        return Err(Refused::NotJson("not an object".into()));
    }
    let clear = open(key, name, &sealed)?;
    let spec = spec_of(name, &clear, registry, files)?;
    Ok((name.to_string(), at_ms, Change::Put(Box::new(spec))))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn key(byte: u8) -> RegistryKey {
        RegistryKey::new(&[byte; 32])
    }

    fn acme() -> Value {
        serde_json::json!({
            "url": "https://acme.example/hooks?token=tok-1",
            "proxy": "http://u:pw-1@proxy.example:3128",
            "secrets": [SECRET, {"secret": "whsec_c2Vjb25kLXNlY3JldC1mb3ItYWNtZQ==", "not_after": "2030-01-01T00:00:00.000Z"}],
            "headers": {"authorization": "Bearer hdr-1"},
            "timeout": "3s",
            "ordering": "key",
        })
    }

    fn header_of(encoded: &Encoded) -> impl Fn(&str) -> Option<Vec<u8>> + '_ {
        |name| encoded.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.clone())
    }

    fn decode_with(key: Option<&RegistryKey>, name: &str, encoded: &Encoded) -> Result<(String, i64, Change), Refused> {
        let config = RegistryConfig::default();
        decode(key, name.as_bytes(), encoded.value.as_deref(), header_of(encoded), &config, Files::Check)
    }

    #[test]
    fn names_follow_the_spec() {
        for good in ["acme", "a", "0-billing.eu_1", &"a".repeat(64)] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "-acme", ".x", "_x", "Acme", "a b", "a/b", &"a".repeat(65), "é"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_record_round_trips_and_its_raw_value_holds_no_secret() {
        let k = key(7);
        let encoded = encode(&k, "acme", Some(&acme()), 1234);
        let raw = String::from_utf8(encoded.value.clone().unwrap()).unwrap();
        for secret in ["pw-1", "tok-1", "MfKQ9r8", "c2Vjb25k", "hdr-1"] {
            assert!(!raw.contains(secret), "{secret} in {raw}");
        }
        assert!(raw.contains("\"timeout\":\"3s\""), "non-secret fields stay readable: {raw}");
        let (name, at, change) = decode_with(Some(&k), "acme", &encoded).unwrap();
        let Change::Put(spec) = change else { panic!("a put") };
        assert_eq!((name.as_str(), at), ("acme", 1234));
        assert_eq!(spec.clear, acme());
        assert_eq!(spec.endpoint.secrets[0].expose(), SECRET);
        assert_eq!(spec.endpoint.headers["authorization"].expose(), "Bearer hdr-1");
        assert_eq!(spec.not_after, vec![None, Some(1_893_456_000_000)]);
        let delete = encode(&k, "acme", None, 1300);
        assert!(matches!(decode_with(Some(&k), "acme", &delete), Ok((_, 1300, Change::Delete))));
    }

    #[test]
    fn tampered_moved_or_unkeyed_records_are_refused() {
        let k = key(7);
        let encoded = encode(&k, "acme", Some(&acme()), 1234);
        // Repointed: the value rewritten by someone without the key.
        let mut value: Value = serde_json::from_slice(encoded.value.as_ref().unwrap()).unwrap();
        value["url"] = "https://evil.example/".into();
        let repointed = Encoded { value: Some(value.to_string().into_bytes()), headers: encoded.headers.clone() };
        assert!(matches!(decode_with(Some(&k), "acme", &repointed), Err(Refused::Unsealed(Unsealed::Tag))));
        assert!(matches!(decode_with(Some(&k), "other", &encoded), Err(Refused::Unsealed(Unsealed::Tag))));
        assert!(matches!(decode_with(Some(&key(8)), "acme", &encoded), Err(Refused::Unsealed(_))));
        assert!(matches!(decode_with(None, "acme", &encoded), Err(Refused::NoKey)));
        let untagged = Encoded { value: encoded.value.clone(), headers: vec![] };
        assert!(matches!(decode_with(Some(&k), "acme", &untagged), Err(Refused::Header(AT_HEADER))));
        let forged_delete = Encoded { value: None, headers: encoded.headers.clone() };
        assert!(decode_with(Some(&k), "acme", &forged_delete).is_err(), "a put's tag does not delete");
        assert!(matches!(decode_with(Some(&k), "Bad Name", &encoded), Err(Refused::Name(_))));
    }

    #[test]
    fn a_spec_is_checked_by_the_files_validator() {
        let config = RegistryConfig::default();
        let cases = [
            (serde_json::json!({"url": "ftp://x.example/"}), "endpoints.x.url"),
            (serde_json::json!({"url": "https://x.example/", "secrets": ["nope"]}), "endpoints.x.secrets[0]"),
            (serde_json::json!({"url": "https://x.example/", "timeout": "0s"}), "endpoints.x.timeout"),
            (serde_json::json!({"url": "https://x.example/", "colour": "red"}), "endpoints.x: unknown field `colour`"),
            (
                serde_json::json!({"url": "https://x.example/", "allow_private_networks": true}),
                "endpoints.x.allow_private_networks",
            ),
            (
                serde_json::json!({"url": "https://x.example/", "secrets": [{"secret": SECRET, "not_after": "soon"}]}),
                "endpoints.x.secrets[0]",
            ),
            (serde_json::json!({"secrets": []}), "endpoints.x: missing field `url`"),
        ];
        for (clear, expected) in cases {
            let err = spec_of("x", &clear, &config, Files::Skip).unwrap_err().to_string();
            assert!(err.starts_with(expected), "{err} does not start with {expected}");
        }
    }

    #[test]
    fn put_reads_json_or_toml_and_get_shows_no_secret() {
        let toml = "url = \"https://acme.example/hooks?token=tok-1\"\nsecrets = [\"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"]\n\
                    [headers]\nauthorization = \"Bearer hdr-1\"\n";
        let from_toml = read_text("acme", toml).unwrap();
        let from_json = read_text("acme", &from_toml.to_string()).unwrap();
        assert_eq!(from_toml, from_json);
        assert!(read_text("acme", "{\"url\": ").unwrap_err().to_string().starts_with("endpoints.acme: not JSON"));
        assert!(read_text("acme", "[1, 2]").is_err());
        let shown = redacted(&acme()).to_string();
        for secret in ["pw-1", "tok-1", "MfKQ9r8", "c2Vjb25k", "hdr-1"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("acme.example") && shown.contains("2030-01-01"), "{shown}");
    }
}
