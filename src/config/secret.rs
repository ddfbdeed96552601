//! The types of secret config values: each one redacts itself in `Debug` and
//! in serialization (`check-config`), so a new field of a secret kind cannot
//! forget to. What counts as secret goes by kind, not by a list of fields:
//! whole secrets ([`Secret`]: passwords, signing secrets, header values,
//! notification sink URLs), URLs whose userinfo and query values are secret
//! ([`SecretUrl`]), and pass-through Kafka properties whose names say they
//! hold a credential ([`Properties`]).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// How a redacted value is shown.
pub const REDACTED: &str = "<redacted>";

/// A secret string: never printed, logged or serialized in clear.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The clear value; call only where it is used (signing, login, a request).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{REDACTED}\"")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(REDACTED)
    }
}

/// A URL shown with its userinfo and query values redacted (a `?token=` is a
/// credential); scheme, host, port, path and query names stay readable.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct SecretUrl(String);

impl SecretUrl {
    pub fn new(value: impl Into<String>) -> Self {
        SecretUrl(value.into())
    }
    /// The clear URL; call only where it is used (the request).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", crate::endpoint::guard::redact_url(&self.0))
    }
}

impl Serialize for SecretUrl {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&crate::endpoint::guard::redact_url(&self.0))
    }
}

/// Pass-through librdkafka properties; the values of those whose names say
/// they hold a credential are redacted (see [`is_secret_property`]).
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Properties(BTreeMap<String, String>);

impl Properties {
    /// The properties in clear, to hand to librdkafka.
    pub fn expose(&self) -> impl Iterator<Item = (&String, &String)> {
        self.0.iter()
    }

    fn shown(&self) -> BTreeMap<&str, &str> {
        self.0.iter().map(|(k, v)| (k.as_str(), if is_secret_property(k) { REDACTED } else { v.as_str() })).collect()
    }
}

impl FromIterator<(String, String)> for Properties {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> Self {
        Properties(iter.into_iter().collect())
    }
}

impl fmt::Debug for Properties {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.shown()).finish()
    }
}

impl Serialize for Properties {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.shown().serialize(serializer)
    }
}

/// True for a librdkafka property that holds a credential: its name carries
/// `password`, `secret`, `key` or `token` (`sasl.password`,
/// `ssl.key.password`, `ssl.key.pem`, ...), or it is `sasl.jaas.config` or
/// one of `sasl.oauthbearer.*`. Erring on the side of hiding: a hidden path
/// (`ssl.key.location`) costs little, a shown password costs much.
pub fn is_secret_property(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["password", "secret", "key", "token"].iter().any(|word| name.contains(word))
        || name == "sasl.jaas.config"
        || name.starts_with("sasl.oauthbearer.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_properties_are_known_by_name() {
        let secret = [
            "sasl.password",
            "ssl.key.password",
            "ssl.keystore.password",
            "ssl.key.pem",
            "sasl.jaas.config",
            "sasl.oauthbearer.config",
            "sasl.oauthbearer.client.id",
            "sasl.oauthbearer.client.secret",
            "SASL.PASSWORD",
            "some.token",
        ];
        for name in secret {
            assert!(is_secret_property(name), "{name} should be redacted");
        }
        for name in ["linger.ms", "sasl.username", "socket.keepalive.enable", "ssl.endpoint.identification.algorithm"] {
            assert!(!is_secret_property(name), "{name} should be shown");
        }
    }

    #[test]
    fn each_secret_kind_redacts_itself() {
        let properties: Properties = [("sasl.password", "hunter2"), ("linger.ms", "20")]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .into_iter()
            .collect();
        let shown = format!("{properties:?} {}", toml::to_string(&properties).unwrap());
        assert!(!shown.contains("hunter2") && shown.contains("linger.ms") && shown.contains("20"), "{shown}");
        let url = SecretUrl::new("https://a.example:8443/hook?token=abc&v=2");
        assert_eq!(format!("{url:?}"), "\"https://a.example:8443/hook?token=<redacted>&v=<redacted>\"");
        assert_eq!(format!("{:?}", Secret::new("hunter2")), "\"<redacted>\"");
    }
}
