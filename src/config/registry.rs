//! `[registry]`: endpoints as data, read from the compacted topic `topics.endpoints`.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};

use super::Secret;

/// The shortest accepted `registry.key`, in bytes (after base64).
pub const MIN_KEY_BYTES: usize = 32;

/// How the relay trusts and follows the endpoint registry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryConfig {
    /// Base64 of at least 32 random bytes: authenticates every registry record
    /// and seals its secret fields (AES-256-GCM). The relay and whoever runs
    /// `hookrelay endpoints` need the same key. Default: none (`endpoints put`
    /// refuses, and `run` refuses a registry topic holding records).
    pub key: Option<Secret>,
    /// Let registry specs set `allow_private_networks`. Default false.
    pub allow_private_networks: bool,
    /// A replica whose view of the registry is this far behind the topic's
    /// end stops taking event records and is not ready. Default `30s`.
    #[serde(with = "humantime_serde")]
    pub max_lag: Duration,
    /// How long after its first timestamp an event naming an endpoint this
    /// replica does not know is deferred (no attempt) before it is dead
    /// `invalid_event`, while the registry is on. Default `60s`.
    #[serde(with = "humantime_serde")]
    pub unknown_grace: Duration,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            key: None,
            allow_private_networks: false,
            max_lag: Duration::from_secs(30),
            unknown_grace: Duration::from_secs(60),
        }
    }
}

impl RegistryConfig {
    pub(super) fn validate(&self) -> Result<(), super::ConfigError> {
        let invalid = |problem: String, key: &str| super::ConfigError::Invalid { key: key.into(), problem };
        if let Some(Err(problem)) = self.key_bytes() {
            return Err(invalid(problem, "registry.key"));
        }
        if self.max_lag.is_zero() {
            return Err(invalid("must be more than 0".into(), "registry.max_lag"));
        }
        Ok(())
    }

    /// The key's bytes, or why it is not a key (the problem, for `registry.key: ...`).
    pub fn key_bytes(&self) -> Option<Result<Vec<u8>, String>> {
        self.key.as_ref().map(|key| {
            let bytes = STANDARD.decode(key.expose().trim()).map_err(|_| "must be base64".to_string())?;
            if bytes.len() < MIN_KEY_BYTES {
                return Err(format!("must be base64 of at least {MIN_KEY_BYTES} bytes (has {})", bytes.len()));
            }
            Ok(bytes)
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    fn the_key_is_base64_of_32_bytes_or_more() {
        let err = |toml: &str| Config::from_toml(toml).unwrap_err().to_string();
        assert_eq!(err("[registry]\nkey = \"not base64!\"\n"), "registry.key: must be base64");
        assert!(
            err("[registry]\nkey = \"c2hvcnQ=\"\n").starts_with("registry.key: must be base64 of at least 32 bytes")
        );
        let ok = Config::from_toml("[registry]\nkey = \"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\"\n").unwrap();
        assert_eq!(ok.registry.key_bytes().unwrap().unwrap().len(), 32);
        assert_eq!(ok.topics.endpoints, "webhooks.endpoints");
        let off = Config::from_toml("[topics]\nendpoints = \"\"\n").unwrap();
        assert!(off.topics.endpoints.is_empty(), "\"\" turns the registry off");
        assert!(err("[topics]\nendpoints = \"webhooks.dead\"\n").contains("used for two roles"));
    }
}
