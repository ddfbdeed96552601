//! Configuration: figment layers (defaults, TOML file, `HOOKRELAY_` env), documented structs, one `validate()`.
//!
//! Every field documents its unit and default. Unknown keys are rejected
//! everywhere (`deny_unknown_fields`), so a typo is an error rather than a
//! silently ignored setting. Secrets are wrapped in [`Secret`], which never
//! prints its value (`Debug`, `Display` and serialization all redact).

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use crate::sign::SigningKey;

/// The file read when `--config` is not given, if it exists.
pub const DEFAULT_CONFIG_FILE: &str = "hookrelay.toml";

/// Environment variables with this prefix override config keys; `__` nests.
pub const ENV_PREFIX: &str = "HOOKRELAY_";

/// Env vars under the prefix that are not config keys (read by the CLI).
const ENV_NOT_KEYS: &[&str] = &["config", "log"];

/// Why a configuration was refused. The CLI prints it on one line and exits 64.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {0} does not exist")]
    Missing(PathBuf),
    #[error("{0}")]
    Parse(String),
    #[error("{key}: {problem}")]
    Invalid { key: String, problem: String },
}

fn invalid(key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key: key.into(), problem: problem.into() }
}

/// The whole configuration. `Default` is the built-in layer.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub kafka: KafkaConfig,
    pub topics: TopicsConfig,
    pub retry: RetryConfig,
    pub delivery: DeliveryConfig,
    pub circuit: CircuitConfig,
    /// Named endpoints, referenced by events with `"endpoint": "<name>"`.
    pub endpoints: BTreeMap<String, EndpointConfig>,
    pub notify: NotifyConfig,
    pub admin: AdminConfig,
    pub shutdown: ShutdownConfig,
}

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
    /// Consumer group protocol: `classic` (cooperative-sticky assignor, default)
    /// or `consumer` (KIP-848, Kafka 4.x brokers).
    pub group_protocol: GroupProtocol,
    /// Any other librdkafka property, passed through unchanged and applied last.
    pub properties: BTreeMap<String, String>,
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
            group_protocol: GroupProtocol::Classic,
            properties: BTreeMap::new(),
        }
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
    fn uses_sasl(self) -> bool {
        matches!(self, SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl)
    }
    fn uses_tls(self) -> bool {
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

/// Topic names and how `topics ensure` creates them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TopicsConfig {
    /// Topics upstream services write events to. Default `["webhooks.events"]`.
    pub events: Vec<String>,
    /// Dead letters. Default `webhooks.dead`.
    pub dead: String,
    /// Partitions for topics that `topics ensure` creates. Default 6.
    pub partitions: i32,
    /// Replication factor for created topics; -1 = the broker's default. Default -1.
    pub replication_factor: i32,
    /// Retention of the event and tier topics. Default `7d`.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// Retention of the dead topic. Default `30d`.
    #[serde(with = "humantime_serde")]
    pub dead_retention: Duration,
}

impl Default for TopicsConfig {
    fn default() -> Self {
        TopicsConfig {
            events: vec!["webhooks.events".into()],
            dead: "webhooks.dead".into(),
            partitions: 6,
            replication_factor: -1,
            retention: Duration::from_secs(7 * 24 * 3600),
            dead_retention: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

/// The retry ladder and when to give up.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Deadline after the first attempt, for events without `retry_until`. Default `24h`.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// Cap on attempts; 0 = no cap (the deadline decides). Default 0.
    pub max_attempts: u32,
    /// Largest random delay added to a tier's delay, as a fraction of it
    /// (SPEC: jitter only adds, at most 10 %). Default 0.1.
    pub jitter: f64,
    /// The ladder, in order; the last tier repeats until the deadline.
    pub tiers: Vec<TierConfig>,
}

impl Default for RetryConfig {
    fn default() -> Self {
        let tier = |topic: &str, secs| TierConfig { topic: topic.into(), delay: Duration::from_secs(secs) };
        RetryConfig {
            max_age: Duration::from_secs(24 * 3600),
            max_attempts: 0,
            jitter: 0.1,
            tiers: vec![
                tier("webhooks.retry-1m", 60),
                tier("webhooks.retry-10m", 600),
                tier("webhooks.retry-1h", 3600),
            ],
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierConfig {
    /// The delay topic.
    pub topic: String,
    /// How long a record waits in this tier before its next attempt.
    #[serde(with = "humantime_serde")]
    pub delay: Duration,
}

/// How one HTTP attempt is made.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// Timeout of a whole attempt, unless the endpoint or event says otherwise. Default `5s`.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Allow loopback, private, link-local and other non-global targets. Default false.
    pub allow_private_networks: bool,
    /// Statuses that are final (dead letter, reason `rejected`). Default `[410]`.
    pub permanent_statuses: Vec<u16>,
    /// Largest accepted `payload`, in bytes. Default 1048576 (1 MiB).
    pub max_payload_bytes: usize,
    /// `whsec_` secrets used for events that give a `url` instead of an endpoint.
    pub signing_secrets: Vec<Secret>,
    /// Records worked on at once per consumer (all partitions). Default 1024.
    pub max_in_flight: usize,
    /// Records worked on at once per partition. Default 128.
    pub max_in_flight_per_partition: usize,
    /// Concurrent requests to one endpoint (name, or URL host). Default 64.
    pub max_in_flight_per_endpoint: usize,
    /// Records read ahead per partition while they wait for their due time,
    /// their endpoint or a slot; reaching it pauses the partition. Default 256.
    pub max_read_ahead_per_partition: usize,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            timeout: Duration::from_secs(5),
            allow_private_networks: false,
            permanent_statuses: vec![410],
            max_payload_bytes: 1024 * 1024,
            signing_secrets: Vec::new(),
            max_in_flight: 1024,
            max_in_flight_per_partition: 128,
            max_in_flight_per_endpoint: 64,
            max_read_ahead_per_partition: 256,
        }
    }
}

/// The per-endpoint circuit breaker.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CircuitConfig {
    /// Turn the breaker on. Default true.
    pub enabled: bool,
    /// Consecutive retryable failures that open the circuit. Default 10.
    pub failure_threshold: u32,
    /// How long an open circuit defers records before one probe is let through. Default `30s`.
    #[serde(with = "humantime_serde")]
    pub cool_down: Duration,
}

impl Default for CircuitConfig {
    fn default() -> Self {
        CircuitConfig { enabled: true, failure_threshold: 10, cool_down: Duration::from_secs(30) }
    }
}

/// A named receiver.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    /// Target URL, http or https.
    pub url: String,
    /// `whsec_` secrets; several = several signatures (rotation without downtime).
    #[serde(default)]
    pub secrets: Vec<Secret>,
    /// Attempt timeout for this endpoint. Default: `delivery.timeout`.
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// Headers added to every request to this endpoint.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Concurrent requests to this endpoint. Default: `delivery.max_in_flight_per_endpoint`.
    #[serde(default)]
    pub max_in_flight: Option<usize>,
}

/// The failure handler's notifications.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    /// Dead letters of one endpoint within this window make one message. Default `1m`.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// How long a failing sink keeps retrying one message before giving up. Default `5m`.
    #[serde(with = "humantime_serde")]
    pub give_up_after: Duration,
    /// Where messages go. Default: one `log` sink.
    pub sinks: Vec<SinkConfig>,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            window: Duration::from_secs(60),
            give_up_after: Duration::from_secs(300),
            sinks: vec![SinkConfig::Log],
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum SinkConfig {
    /// JSON POST to an operator URL.
    Http {
        url: String,
        /// `json` (default) or `slack` (`{"text": ...}`).
        #[serde(default)]
        format: HttpFormat,
        /// Extra request headers (for an auth token, say).
        #[serde(default)]
        headers: BTreeMap<String, Secret>,
    },
    /// SMTP.
    Email {
        /// SMTP server host.
        host: String,
        /// Default 587 for starttls, 465 for tls, 25 for none.
        #[serde(default)]
        port: Option<u16>,
        /// `starttls` (default), `tls` or `none`.
        #[serde(default)]
        tls: SmtpTls,
        #[serde(default)]
        username: Option<String>,
        #[serde(default)]
        password: Option<Secret>,
        from: String,
        to: Vec<String>,
    },
    /// A structured log line per message (every dead record is logged anyway).
    Log,
}

impl SinkConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            SinkConfig::Http { .. } => "http",
            SinkConfig::Email { .. } => "email",
            SinkConfig::Log => "log",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HttpFormat {
    #[default]
    Json,
    Slack,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpTls {
    #[default]
    Starttls,
    Tls,
    None,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Address of `/metrics`, `/live`, `/ready`. Default `0.0.0.0:9464`.
    pub listen: SocketAddr,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig { listen: SocketAddr::from(([0, 0, 0, 0], 9464)) }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    /// Time to finish in-flight work on SIGTERM or on a partition revoke. Default `20s`.
    #[serde(with = "humantime_serde")]
    pub grace: Duration,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig { grace: Duration::from_secs(20) }
    }
}

/// A secret string: never printed, logged or serialized in clear.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The clear value; call only where it is used (signing, login).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("<redacted>")
    }
}

impl Config {
    /// Loads defaults, then the file (`path`, or `hookrelay.toml` if present),
    /// then `HOOKRELAY_` environment variables, and validates the result.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        match path {
            Some(path) if !path.exists() => return Err(ConfigError::Missing(path.to_path_buf())),
            Some(path) => figment = figment.merge(Toml::file_exact(path)),
            None if Path::new(DEFAULT_CONFIG_FILE).exists() => {
                figment = figment.merge(Toml::file_exact(DEFAULT_CONFIG_FILE))
            }
            None => {}
        }
        figment = figment.merge(Env::prefixed(ENV_PREFIX).split("__").ignore(ENV_NOT_KEYS));
        let config: Config = figment.extract().map_err(|e| ConfigError::Parse(one_line(&e)))?;
        config.validate()?;
        Ok(config)
    }

    /// Parses a TOML document on top of the defaults, without env (tests, examples).
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let config: Config = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::string(text))
            .extract()
            .map_err(|e| ConfigError::Parse(one_line(&e)))?;
        config.validate()?;
        Ok(config)
    }

    /// Cross-field checks. Each error names the key at fault.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.kafka.brokers.trim().is_empty() {
            return Err(invalid("kafka.brokers", "must not be empty"));
        }
        if self.kafka.group_id.trim().is_empty() {
            return Err(invalid("kafka.group_id", "must not be empty"));
        }
        if self.kafka.security_protocol.uses_sasl() && self.kafka.sasl.is_none() {
            return Err(invalid("kafka.sasl", "is required when kafka.security_protocol is sasl_*"));
        }
        if !self.kafka.security_protocol.uses_tls() && self.kafka.tls.ca_location.is_some() {
            return Err(invalid("kafka.tls", "is set but kafka.security_protocol does not use TLS"));
        }
        if self.topics.events.is_empty() {
            return Err(invalid("topics.events", "needs at least one topic"));
        }
        if self.retry.tiers.is_empty() {
            return Err(invalid("retry.tiers", "needs at least one tier"));
        }
        let mut seen = std::collections::BTreeSet::new();
        let all_topics = self.topics.events.iter().chain(std::iter::once(&self.topics.dead));
        for topic in all_topics.chain(self.retry.tiers.iter().map(|t| &t.topic)) {
            // Kafka's rule: 1 to 249 characters of [a-zA-Z0-9._-], not "." or "..".
            let legal = topic.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
            if topic.is_empty() || topic.len() > 249 || !legal || topic == "." || topic == ".." {
                return Err(invalid("topics", format!("{topic:?} is not a legal Kafka topic name")));
            }
            if !seen.insert(topic) {
                return Err(invalid("topics", format!("topic {topic:?} is used for two roles")));
            }
        }
        for (i, tier) in self.retry.tiers.iter().enumerate() {
            if tier.delay.is_zero() {
                return Err(invalid(format!("retry.tiers[{i}].delay"), "must be more than 0"));
            }
            if i > 0 && tier.delay < self.retry.tiers[i - 1].delay {
                return Err(invalid(format!("retry.tiers[{i}].delay"), "the ladder's delays must not shrink"));
            }
        }
        if !(0.0..=0.1).contains(&self.retry.jitter) {
            return Err(invalid("retry.jitter", "must be between 0 and 0.1 (10 % of the tier delay)"));
        }
        if self.retry.max_age.is_zero() {
            return Err(invalid("retry.max_age", "must be more than 0"));
        }
        if self.delivery.timeout.is_zero() {
            return Err(invalid("delivery.timeout", "must be more than 0"));
        }
        for status in &self.delivery.permanent_statuses {
            if !(100..=599).contains(status) || (200..300).contains(status) {
                return Err(invalid("delivery.permanent_statuses", format!("{status} is not a failure status")));
            }
        }
        let limits = [
            ("delivery.max_in_flight", self.delivery.max_in_flight),
            ("delivery.max_in_flight_per_partition", self.delivery.max_in_flight_per_partition),
            ("delivery.max_in_flight_per_endpoint", self.delivery.max_in_flight_per_endpoint),
            ("delivery.max_read_ahead_per_partition", self.delivery.max_read_ahead_per_partition),
            ("delivery.max_payload_bytes", self.delivery.max_payload_bytes),
        ];
        for (key, value) in limits {
            if value == 0 {
                return Err(invalid(key, "must be more than 0"));
            }
        }
        for (i, secret) in self.delivery.signing_secrets.iter().enumerate() {
            SigningKey::parse(secret.expose())
                .map_err(|e| invalid(format!("delivery.signing_secrets[{i}]"), e.to_string()))?;
        }
        for (name, endpoint) in &self.endpoints {
            let key = |field: &str| format!("endpoints.{name}.{field}");
            crate::event::parse_target_url(&endpoint.url).map_err(|e| invalid(key("url"), e))?;
            for (i, secret) in endpoint.secrets.iter().enumerate() {
                SigningKey::parse(secret.expose())
                    .map_err(|e| invalid(format!("{}[{i}]", key("secrets")), e.to_string()))?;
            }
            if endpoint.timeout.is_some_and(|t| t.is_zero()) {
                return Err(invalid(key("timeout"), "must be more than 0"));
            }
            if endpoint.max_in_flight == Some(0) {
                return Err(invalid(key("max_in_flight"), "must be more than 0"));
            }
            for (header, value) in &endpoint.headers {
                crate::event::check_header(header, value).map_err(|e| invalid(key("headers"), e))?;
            }
        }
        if self.circuit.enabled && self.circuit.failure_threshold == 0 {
            return Err(invalid("circuit.failure_threshold", "must be more than 0"));
        }
        if self.notify.window.is_zero() {
            return Err(invalid("notify.window", "must be more than 0"));
        }
        for (i, sink) in self.notify.sinks.iter().enumerate() {
            let key = format!("notify.sinks[{i}]");
            match sink {
                SinkConfig::Http { url, .. } => {
                    let parsed = url::Url::parse(url).map_err(|e| invalid(&key, format!("url: {e}")))?;
                    if !matches!(parsed.scheme(), "http" | "https") {
                        return Err(invalid(key, "url must be http or https"));
                    }
                }
                SinkConfig::Email { to, from, username, password, .. } => {
                    if to.is_empty() {
                        return Err(invalid(key, "email sink needs at least one `to` address"));
                    }
                    for address in to.iter().chain(std::iter::once(from)) {
                        address
                            .parse::<lettre::message::Mailbox>()
                            .map_err(|e| invalid(&key, format!("address {address:?}: {e}")))?;
                    }
                    if username.is_some() != password.is_some() {
                        return Err(invalid(key, "username and password go together"));
                    }
                }
                SinkConfig::Log => {}
            }
        }
        if self.shutdown.grace.is_zero() {
            return Err(invalid("shutdown.grace", "must be more than 0"));
        }
        Ok(())
    }

    /// The effective configuration as TOML, secrets redacted (`check-config`).
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }
}

/// Figment errors can span lines; the CLI contract is one line.
fn one_line(error: &figment::Error) -> String {
    error.to_string().split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_contract() {
        let c = Config::default();
        assert_eq!(c.kafka.brokers, "127.0.0.1:9092");
        assert_eq!(c.kafka.group_id, "hookrelay");
        assert_eq!(c.topics.events, vec!["webhooks.events".to_string()]);
        assert_eq!(c.topics.dead, "webhooks.dead");
        let tiers: Vec<_> = c.retry.tiers.iter().map(|t| (t.topic.as_str(), t.delay.as_secs())).collect();
        assert_eq!(tiers, vec![("webhooks.retry-1m", 60), ("webhooks.retry-10m", 600), ("webhooks.retry-1h", 3600)]);
        assert_eq!(c.retry.max_age, Duration::from_secs(86400));
        assert_eq!(c.retry.max_attempts, 0);
        assert_eq!(c.delivery.timeout, Duration::from_secs(5));
        assert!(!c.delivery.allow_private_networks);
        assert_eq!(c.delivery.permanent_statuses, vec![410]);
        assert_eq!(c.delivery.max_payload_bytes, 1_048_576);
        assert_eq!(c.notify.window, Duration::from_secs(60));
        assert_eq!(c.admin.listen.to_string(), "0.0.0.0:9464");
        assert_eq!(c.shutdown.grace, Duration::from_secs(20));
        c.validate().unwrap();
    }

    #[test]
    fn the_shipped_example_parses() {
        let text = include_str!("../hookrelay.example.toml");
        let config = Config::from_toml(text).unwrap();
        assert!(config.endpoints.contains_key("billing"));
        assert_eq!(config.retry.tiers.len(), 3);
        assert_eq!(config.notify.sinks.len(), 1);
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API returns its own error type
    fn the_deploy_configs_parse() {
        Config::from_toml(include_str!("../deploy/compose/hookrelay.toml")).unwrap();
        // In Kubernetes the SASL credentials come from a Secret, as env vars.
        figment::Jail::expect_with(|jail| {
            jail.create_file("k8s.toml", include_str!("../deploy/kubernetes/base/hookrelay.toml"))?;
            jail.set_env("HOOKRELAY_KAFKA__SASL__USERNAME", "hookrelay");
            jail.set_env("HOOKRELAY_KAFKA__SASL__PASSWORD", "from-a-secret");
            let config = Config::load(Some(Path::new("k8s.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(config.kafka.sasl.as_ref().map(|s| s.password.expose()), Some("from-a-secret"));
            assert_eq!(config.shutdown.grace, Duration::from_secs(20), "terminationGracePeriodSeconds depends on it");
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_are_errors() {
        let err = Config::from_toml("[kafka]\nbrokerz = \"x:1\"\n").unwrap_err().to_string();
        assert!(err.contains("brokerz"), "{err}");
        let err = Config::from_toml("[nope]\n").unwrap_err().to_string();
        assert!(err.contains("nope"), "{err}");
    }

    #[test]
    fn cross_field_errors_name_the_key() {
        let cases = [
            ("[[retry.tiers]]\ntopic = \"a\"\ndelay = \"0s\"\n", "retry.tiers[0].delay"),
            ("[delivery]\nsigning_secrets = [\"nope\"]\n", "delivery.signing_secrets[0]"),
            ("[endpoints.x]\nurl = \"ftp://x\"\n", "endpoints.x.url"),
            ("[delivery]\npermanent_statuses = [200]\n", "delivery.permanent_statuses"),
            ("[topics]\ndead = \"webhooks.events\"\n", "topics"),
            ("[topics]\ndead = \"dead letters\"\n", "topics"),
            ("[kafka]\nsecurity_protocol = \"sasl_ssl\"\n", "kafka.sasl"),
            ("[retry]\njitter = 0.5\n", "retry.jitter"),
        ];
        for (text, key) in cases {
            let err = Config::from_toml(text).unwrap_err().to_string();
            assert!(err.starts_with(key), "{text:?} gave {err:?}");
        }
    }

    #[test]
    fn secrets_are_redacted_everywhere() {
        let config = Config::from_toml(
            "[delivery]\nsigning_secrets = [\"whsec_c2VjcmV0LXZhbHVlLTEyMzQ=\"]\n\
             [kafka]\nsecurity_protocol = \"sasl_plaintext\"\n\
             [kafka.sasl]\nmechanism = \"PLAIN\"\nusername = \"u\"\npassword = \"hunter2\"\n",
        )
        .unwrap();
        let shown = format!("{} {:?}", config.to_redacted_toml(), config);
        assert!(!shown.contains("c2VjcmV0"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("<redacted>"));
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API returns its own error type
    fn env_overrides_nest_with_double_underscore() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("hookrelay.toml", "[kafka]\nbrokers = \"file:9092\"\n")?;
            jail.set_env("HOOKRELAY_KAFKA__BROKERS", "env:9092");
            jail.set_env("HOOKRELAY_DELIVERY__TIMEOUT", "3s");
            jail.set_env("HOOKRELAY_CONFIG", "ignored-by-figment");
            let config = Config::load(None).map_err(|e| e.to_string())?;
            assert_eq!(config.kafka.brokers, "env:9092");
            assert_eq!(config.delivery.timeout, Duration::from_secs(3));
            Ok(())
        });
    }
}
