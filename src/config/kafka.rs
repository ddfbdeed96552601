//! `[kafka]`: how to reach the brokers (bootstrap, group, TLS, SASL, pass-through properties).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::{invalid, ConfigError};
use super::secret::{Properties, Secret};

/// How to reach the brokers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap servers, comma separated. Default `127.0.0.1:9092`.
    pub brokers: String,
    /// Consumer group of the event topics. Tier consumers use
    /// `<group_id>.<tier topic>`, the failure handler `<group_id>.dead`.
    /// Default `hookrelay`.
    pub group_id: String,
    /// `plaintext` (default), `ssl`, `sasl_plaintext` or `sasl_ssl`.
    pub security_protocol: SecurityProtocol,
    /// SASL credentials; required when the protocol is `sasl_*`.
    pub sasl: Option<SaslConfig>,
    /// TLS files; used when the protocol is `ssl` or `sasl_ssl`.
    pub tls: TlsConfig,
    /// How often decided offsets are committed. Default `1s`.
    #[serde(with = "humantime_serde")]
    pub commit_interval: Duration,
    /// How often librdkafka statistics (consumer lag) are gathered. Default `5s`.
    #[serde(with = "humantime_serde")]
    pub statistics_interval: Duration,
    /// How long a route (tier or dead record) may be held by a failing
    /// produce (missing or unauthorised topic, broker outage) before `/ready`
    /// answers 503. Default `5m`: longer than a broker restart or a leader
    /// election, short enough that a rollout stops before it spreads.
    #[serde(with = "humantime_serde")]
    pub route_held_not_ready_after: Duration,
    /// Consumer group protocol: `classic` (cooperative-sticky assignor, default)
    /// or `consumer` (KIP-848, Kafka 4.x brokers).
    pub group_protocol: GroupProtocol,
    /// Any other librdkafka property, passed through unchanged and applied
    /// last. Values of credential-like names are shown redacted.
    pub properties: Properties,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "127.0.0.1:9092".into(),
            group_id: "hookrelay".into(),
            security_protocol: SecurityProtocol::Plaintext,
            sasl: None,
            tls: TlsConfig::default(),
            commit_interval: Duration::from_secs(1),
            statistics_interval: Duration::from_secs(5),
            route_held_not_ready_after: Duration::from_secs(300),
            group_protocol: GroupProtocol::Classic,
            properties: Properties::default(),
        }
    }
}

impl KafkaConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.brokers.trim().is_empty() {
            return Err(invalid("kafka.brokers", "must not be empty"));
        }
        if self.group_id.trim().is_empty() {
            return Err(invalid("kafka.group_id", "must not be empty"));
        }
        if self.security_protocol.uses_sasl() && self.sasl.is_none() {
            return Err(invalid("kafka.sasl", "is required when kafka.security_protocol is sasl_*"));
        }
        if !self.security_protocol.uses_tls() && self.tls.ca_location.is_some() {
            return Err(invalid("kafka.tls", "is set but kafka.security_protocol does not use TLS"));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecurityProtocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    pub fn as_librdkafka(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "plaintext",
            SecurityProtocol::Ssl => "ssl",
            SecurityProtocol::SaslPlaintext => "sasl_plaintext",
            SecurityProtocol::SaslSsl => "sasl_ssl",
        }
    }
    pub(super) fn uses_sasl(self) -> bool {
        matches!(self, SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl)
    }
    pub(super) fn uses_tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupProtocol {
    Classic,
    Consumer,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaslConfig {
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    pub mechanism: SaslMechanism,
    pub username: String,
    pub password: Secret,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SaslMechanism {
    #[serde(rename = "PLAIN")]
    Plain,
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

impl SaslMechanism {
    pub fn as_librdkafka(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// TLS to the brokers. Paths are PEM files; unset means the system default.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// CA bundle that signs the brokers' certificates.
    pub ca_location: Option<PathBuf>,
    /// Client certificate, for mutual TLS.
    pub certificate_location: Option<PathBuf>,
    /// Client private key, for mutual TLS.
    pub key_location: Option<PathBuf>,
    /// Password of the private key, if it is encrypted.
    pub key_password: Option<Secret>,
}
