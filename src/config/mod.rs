//! Configuration: figment layers (defaults, TOML file, `HOOKRELAY_` env), documented structs, one `validate()`.
//!
//! Every field documents its unit and default. Unknown keys are rejected
//! everywhere (`deny_unknown_fields`), so a typo is an error rather than a
//! silently ignored setting. Secret values have secret types (module
//! `secret`: [`Secret`], [`SecretUrl`], [`Properties`]), which never print
//! them in clear (`Debug` and serialization both redact).

pub mod client;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

pub use self::delivery::{CircuitConfig, DeliveryConfig, EndpointConfig, Ordering, RetryConfig, TierConfig};
use self::error::invalid;
pub use self::error::ConfigError;
pub use self::kafka::{GroupProtocol, KafkaConfig, SaslConfig, SaslMechanism, SecurityProtocol, TlsConfig};
pub use self::notify::{HttpFormat, NotifyConfig, SinkConfig, SmtpTls};
pub use self::registry::RegistryConfig;
pub use self::secret::{is_secret_property, Properties, Secret, SecretUrl, REDACTED};

mod delivery;
mod error;
mod kafka;
mod notify;
mod registry;
mod secret;

/// The file read when `--config` is not given, if it exists.
pub const DEFAULT_CONFIG_FILE: &str = "hookrelay.toml";

/// Environment variables with this prefix override config keys; `__` nests.
pub const ENV_PREFIX: &str = "HOOKRELAY_";

/// Env vars under the prefix that are not config keys (read by the CLI).
const ENV_NOT_KEYS: &[&str] = &["config", "log"];

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
    pub replay: ReplayConfig,
    pub registry: RegistryConfig,
    pub admin: AdminConfig,
    pub shutdown: ShutdownConfig,
}

/// Topic names and how `topics ensure` creates them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TopicsConfig {
    /// Topics upstream services write events to. Default `["webhooks.events"]`.
    pub events: Vec<String>,
    /// Dead letters. Default `webhooks.dead`.
    pub dead: String,
    /// The attempt log: one JSON record per attempt and per decision, keyed by
    /// event id, kept 7 days (`hookrelay trace` reads it). `""` turns it off.
    /// Default `webhooks.attempts`.
    pub attempts: String,
    /// The endpoint registry (compacted): endpoints as data, key = name.
    /// `""` turns the registry off. Default `webhooks.endpoints`.
    pub endpoints: String,
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
            attempts: "webhooks.attempts".into(),
            endpoints: "webhooks.endpoints".into(),
            partitions: 6,
            replication_factor: -1,
            retention: Duration::from_secs(7 * 24 * 3600),
            dead_retention: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

/// `hookrelay replay`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReplayConfig {
    /// Key of the seal `replay` puts on the relay headers it writes (origin,
    /// deadline), at least 16 bytes; the relay believes relay headers on an
    /// event topic only under this seal, so the relay and `replay` need the
    /// same key. Unset: replayed events get a new default id and deadline.
    pub key: Option<Secret>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Address of `/metrics`, `/live`, `/ready`. Default `0.0.0.0:9464`.
    pub listen: SocketAddr,
}

impl TopicsConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.events.is_empty() {
            return Err(invalid("topics.events", "needs at least one topic"));
        }
        Ok(())
    }
}

impl ReplayConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let min = crate::event::seal::MIN_KEY_BYTES;
        if self.key.as_ref().is_some_and(|k| k.expose().len() < min) {
            return Err(invalid("replay.key", format!("must be at least {min} bytes")));
        }
        Ok(())
    }
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

impl ShutdownConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.grace.is_zero() {
            return Err(invalid("shutdown.grace", "must be more than 0"));
        }
        Ok(())
    }
}

/// Whether an endpoint's validation reads the TLS files it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Files {
    /// Read them (the file at load; each replica when it applies a registry record).
    Check,
    /// Leave them (`endpoints put`: the paths are the replicas', not this machine's).
    Skip,
}

/// The one validator of an endpoint's spec, for both sources: a
/// `[endpoints.NAME]` table of the file and a registry record. Each error
/// names the key at fault (`endpoints.NAME.FIELD`).
pub fn validate_endpoint(name: &str, endpoint: &EndpointConfig, files: Files) -> Result<(), ConfigError> {
    endpoint.validate(name, files)
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
        let env = Env::prefixed(ENV_PREFIX).filter(|name| {
            let link = is_kubernetes_service_link(name.as_str());
            if link {
                tracing::debug!(variable = %format!("{ENV_PREFIX}{name}"), "ignored: set by Kubernetes for a Service");
            }
            !link
        });
        figment = figment.merge(env.split("__").ignore(ENV_NOT_KEYS));
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

    /// Every section checks itself, then the checks across sections. Each
    /// error names the key at fault; the first one found is returned.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.kafka.validate()?;
        self.topics.validate()?;
        self.retry.validate()?;
        self.topic_names_are_legal_and_distinct()?;
        self.delivery.validate()?;
        for (name, endpoint) in &self.endpoints {
            endpoint.validate(name, Files::Check)?;
        }
        self.registry.validate()?;
        self.circuit.validate()?;
        self.notify.validate()?;
        self.replay.validate()?;
        self.shutdown.validate()
    }

    /// Event, dead and tier topics are legal Kafka names, each used for one role only.
    fn topic_names_are_legal_and_distinct(&self) -> Result<(), ConfigError> {
        let mut seen = std::collections::BTreeSet::new();
        let registry = Some(&self.topics.endpoints).filter(|t| !t.is_empty());
        let attempts = Some(&self.topics.attempts).filter(|t| !t.is_empty());
        let all_topics =
            self.topics.events.iter().chain(std::iter::once(&self.topics.dead)).chain(registry).chain(attempts);
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
        Ok(())
    }

    /// The effective configuration as TOML, secrets redacted (`check-config`).
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }
}

/// Whether `name` (an env var after the `HOOKRELAY_` prefix) is one Kubernetes
/// injects into every pod of a namespace that has a Service named `hookrelay`
/// (unless the pod sets `enableServiceLinks: false`): `SERVICE_HOST`,
/// `SERVICE_PORT`, `SERVICE_PORT_<port name>`, `PORT`, `PORT_<n>_<TCP|UDP|SCTP>`
/// and that followed by `_PROTO`, `_PORT` or `_ADDR`. They are not config keys;
/// refusing them (as every other unknown key is refused) would crash-loop the pod.
fn is_kubernetes_service_link(name: &str) -> bool {
    let name = name.to_ascii_uppercase();
    let word = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if name == "SERVICE_HOST" || name == "SERVICE_PORT" || name == "PORT" {
        return true;
    }
    if let Some(port_name) = name.strip_prefix("SERVICE_PORT_") {
        return word(port_name);
    }
    let Some(rest) = name.strip_prefix("PORT_") else { return false };
    let Some((number, rest)) = rest.split_once('_') else { return false };
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let (protocol, suffix) = rest.split_once('_').unwrap_or((rest, ""));
    matches!(protocol, "TCP" | "UDP" | "SCTP") && matches!(suffix, "" | "PROTO" | "PORT" | "ADDR")
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
        let text = include_str!("../../hookrelay.example.toml");
        let config = Config::from_toml(text).unwrap();
        assert!(config.endpoints.contains_key("billing"));
        assert_eq!(config.retry.tiers.len(), 3);
        assert_eq!(config.notify.sinks.len(), 1);
    }

    /// Every key path of `value`; the elements of an array of tables share their array's path.
    fn key_paths(value: &serde_json::Value, prefix: &str, out: &mut std::collections::BTreeSet<String>) {
        let tables = |items: &Vec<serde_json::Value>| !items.is_empty() && items.iter().all(|v| v.is_object());
        match value {
            serde_json::Value::Object(map) if !map.is_empty() => {
                for (key, value) in map {
                    key_paths(value, &format!("{prefix}.{key}"), out);
                }
            }
            serde_json::Value::Array(items) if tables(items) => {
                for item in items {
                    key_paths(item, prefix, out);
                }
            }
            _ => {
                out.insert(prefix.to_string());
            }
        }
    }

    /// The example is the reference: with its commented-out keys switched on,
    /// it names every key the config has (a new key must be added to it).
    #[test]
    fn the_shipped_example_shows_every_key() {
        let text = include_str!("../../hookrelay.example.toml");
        let is_toml = |rest: &str| {
            let header = rest.starts_with('[') && rest.split('#').next().unwrap_or("").trim_end().ends_with(']');
            header || rest.split_once(" = ").is_some_and(|(key, _)| !key.contains(' '))
        };
        let uncommented: String = text
            .lines()
            .map(|line| match line.strip_prefix("# ") {
                Some(rest) if is_toml(rest) => rest,
                _ => line,
            })
            .collect::<Vec<_>>()
            .join("\n");
        let written: toml::Value = toml::from_str(&uncommented).expect("the uncommented example is TOML");
        // Extract without validate(): the example's options exclude each other (plaintext vs TLS).
        let config: Config = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::string(&uncommented))
            .extract()
            .expect("every key of the example is a config key");
        let (mut shown, mut all) = (Default::default(), Default::default());
        key_paths(&serde_json::to_value(&written).unwrap(), "", &mut shown);
        key_paths(&serde_json::to_value(&config).unwrap(), "", &mut all);
        let missing: Vec<_> = all.difference(&shown).collect();
        assert!(missing.is_empty(), "keys missing from hookrelay.example.toml: {missing:?}");
        let has = |kind: fn(&SinkConfig) -> bool| config.notify.sinks.iter().any(kind);
        assert!(has(|s| matches!(s, SinkConfig::Http { .. })), "an http sink");
        assert!(has(|s| matches!(s, SinkConfig::Email { .. })), "an email sink");
        assert!(has(|s| matches!(s, SinkConfig::Log)), "a log sink");
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API returns its own error type
    fn the_deploy_configs_parse() {
        Config::from_toml(include_str!("../../deploy/compose/hookrelay.toml")).unwrap();
        // In Kubernetes the SASL credentials come from a Secret, as env vars.
        figment::Jail::expect_with(|jail| {
            jail.create_file("k8s.toml", include_str!("../../deploy/kubernetes/base/hookrelay.toml"))?;
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
            ("[replay]\nkey = \"short\"\n", "replay.key"),
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

    /// The issue's config: every secret it printed in clear, by kind.
    #[test]
    fn secrets_are_redacted_by_kind() {
        let config = Config::from_toml(
            r#"
            [kafka.properties]
            "sasl.password" = "s3cret-1"
            "ssl.key.password" = "s3cret-2"
            "sasl.jaas.config" = "s3cret-3"
            "sasl.oauthbearer.client.secret" = "s3cret-4"
            "linger.ms" = "20"
            [endpoints.billing]
            url = "https://billing.example.com/hooks?token=s3cret-5&v=1"
            headers = { authorization = "Bearer s3cret-6", x-tenant = "s3cret-7" }
            [[notify.sinks]]
            kind = "http"
            format = "slack"
            url = "https://hooks.slack.com/services/T0/B0/s3cret-8"
            headers = { authorization = "s3cret-9" }
            [[notify.sinks]]
            kind = "email"
            host = "smtp.example.com"
            username = "ops"
            password = "s3cret-10"
            from = "relay@example.com"
            to = ["ops@example.com"]
            "#,
        )
        .unwrap();
        for shown in [config.to_redacted_toml(), format!("{config:?}")] {
            assert!(!shown.contains("s3cret"), "{shown}");
            assert!(shown.contains("linger.ms") && shown.contains("\"20\""), "other properties are shown: {shown}");
            assert!(shown.contains("https://billing.example.com/hooks?token=<redacted>&v=<redacted>"), "{shown}");
        }
        let err = Config::from_toml("[endpoints.x]\nurl = \"https://u:s3cret@a.example/?token=s3cret\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("endpoints.x.url") && !err.contains("s3cret"), "{err}");
    }

    #[test]
    fn endpoint_tls_files_and_proxies_are_checked_at_load() {
        let endpoint = |extra: &str| format!("[endpoints.x]\nurl = \"https://x.example/\"\n{extra}");
        let cases = [
            (
                "client_cert = \"/nonexistent/c.pem\"\nclient_key = \"/nonexistent/k.pem\"\n",
                "endpoints.x.client_cert: cannot read /nonexistent/c.pem",
            ),
            (
                "client_cert = \"/nonexistent/c.pem\"\n",
                "endpoints.x.client_cert: client_cert and client_key go together",
            ),
            ("ca = \"/nonexistent/ca.pem\"\n", "endpoints.x.ca: cannot read /nonexistent/ca.pem"),
            ("proxy = \"socks5://u:s3cret@p:1080\"\n", "endpoints.x.proxy: must be an http:// or https:// URL"),
        ];
        for (extra, expected) in cases {
            let err = Config::from_toml(&endpoint(extra)).unwrap_err().to_string();
            assert!(err.starts_with(expected), "{extra:?} gave {err:?}");
            assert!(!err.contains("s3cret") && !err.contains('\n'), "{err}");
        }
        let err = Config::from_toml("[delivery]\nproxy = \"p:3128\"\n").unwrap_err().to_string();
        assert!(err.starts_with("delivery.proxy"), "{err}");
    }

    #[test]
    fn a_bad_ordering_is_one_clear_line() {
        for toml in
            ["[delivery]\nordering = \"fifo\"\n", "[endpoints.x]\nurl = \"https://x.example/\"\nordering = \"keys\"\n"]
        {
            let err = Config::from_toml(toml).unwrap_err().to_string();
            assert!(err.contains("ordering") && err.contains("`none`") && err.contains("`key`"), "{err}");
            assert!(!err.contains('\n'), "{err}");
        }
        let config = Config::from_toml("[endpoints.x]\nurl = \"https://x.example/\"\nordering = \"key\"\n").unwrap();
        assert_eq!(config.endpoints["x"].ordering, Some(Ordering::Key));
        assert_eq!(config.delivery.ordering, Ordering::None, "default none");
    }

    #[test]
    fn bad_pace_values_are_refused_with_the_key() {
        let endpoint = |extra: &str| format!("[endpoints.x]\nurl = \"https://x.example/\"\n{extra}");
        let cases = [
            (endpoint("rate_limit = \"0/s\"\n"), "endpoints.x.rate_limit", "\"0/s\" is not a rate"),
            (endpoint("rate_limit = \"abc\"\n"), "endpoints.x.rate_limit", "like \"20/s\" or \"600/m\""),
            ("[delivery]\nrate_limit = \"5/h\"\n".to_string(), "delivery.rate_limit", "\"5/h\" is not a rate"),
            (endpoint("rate_burst = 0\n"), "endpoints.x.rate_burst", "must be at least 1"),
            ("[delivery]\nrate_burst = 0\n".to_string(), "delivery.rate_burst", "must be at least 1"),
            (endpoint("rate_max_wait = \"soon\"\n"), "endpoints.x.rate_max_wait", "soon"),
        ];
        for (text, key, problem) in cases {
            let err = Config::from_toml(&text).unwrap_err().to_string();
            assert!(err.contains(key) && err.contains(problem) && !err.contains('\n'), "{text:?} gave {err:?}");
        }
        let ok =
            Config::from_toml(&endpoint("rate_limit = \"600/m\"\nrate_burst = 3\nrate_max_wait = \"0s\"\n")).unwrap();
        assert_eq!(ok.endpoints["x"].rate_limit.map(|r| r.to_string()).as_deref(), Some("600/m"));
        assert!(ok.to_redacted_toml().contains("rate_limit = \"600/m\""), "check-config shows it as written");
    }

    #[test]
    fn proxy_credentials_are_redacted() {
        let config = Config::from_toml(
            "[delivery]\nproxy = \"http://egress:s3cret@proxy.internal:3128\"\n\
             [endpoints.x]\nurl = \"https://x.example/\"\nproxy = \"https://u:s3cret-2@other.internal:8443\"\n",
        )
        .unwrap();
        for shown in [config.to_redacted_toml(), format!("{config:?}")] {
            assert!(!shown.contains("s3cret"), "{shown}");
            assert!(shown.contains("proxy.internal:3128") && shown.contains("other.internal:8443"), "{shown}");
        }
    }

    #[test]
    fn kubernetes_service_links_are_recognised_and_nothing_else() {
        let links = [
            "SERVICE_HOST",
            "SERVICE_PORT",
            "SERVICE_PORT_METRICS",
            "SERVICE_PORT_ADMIN_HTTP",
            "PORT",
            "PORT_9464_TCP",
            "PORT_9464_TCP_PROTO",
            "PORT_9464_TCP_PORT",
            "PORT_9464_TCP_ADDR",
            "PORT_53_UDP_ADDR",
            "port_9464_tcp_addr",
        ];
        for name in links {
            assert!(is_kubernetes_service_link(name), "{name}");
        }
        let keys = [
            "KAFKA__BROKERS",
            "KAFKA_BROKERS",
            "SERVICE_HOSTS",
            "SERVICE_PORT_",
            "SERVICE_PORT_A__B.C",
            "PORT_",
            "PORT_X_TCP",
            "PORT_9464",
            "PORT_9464_HTTP",
            "PORT_9464_TCP_HOST",
            "ADMIN__LISTEN",
        ];
        for name in keys {
            assert!(!is_kubernetes_service_link(name), "{name}");
        }
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API returns its own error type
    fn a_kubernetes_service_named_hookrelay_does_not_break_the_config() {
        figment::Jail::expect_with(|jail| {
            let injected = [
                ("HOOKRELAY_SERVICE_HOST", "10.96.0.12"),
                ("HOOKRELAY_SERVICE_PORT", "9464"),
                ("HOOKRELAY_SERVICE_PORT_METRICS", "9464"),
                ("HOOKRELAY_PORT", "tcp://10.96.0.12:9464"),
                ("HOOKRELAY_PORT_9464_TCP", "tcp://10.96.0.12:9464"),
                ("HOOKRELAY_PORT_9464_TCP_PROTO", "tcp"),
                ("HOOKRELAY_PORT_9464_TCP_PORT", "9464"),
                ("HOOKRELAY_PORT_9464_TCP_ADDR", "10.96.0.12"),
            ];
            for (name, value) in injected {
                jail.set_env(name, value);
            }
            jail.set_env("HOOKRELAY_KAFKA__BROKERS", "env:9092");
            let config = Config::load(None).map_err(|e| e.to_string())?;
            assert_eq!(config.kafka.brokers, "env:9092", "real keys still apply");
            // Any other unknown key is still refused.
            jail.set_env("HOOKRELAY_SERVICE_HOSTNAME", "x");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.contains("service_hostname"), "{err}");
            Ok(())
        });
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
