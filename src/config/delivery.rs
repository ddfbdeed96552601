//! `[retry]`, `[delivery]`, `[circuit]` and `[endpoints.*]`: how and how often a webhook is attempted.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::{invalid, ConfigError};
use super::secret::{Secret, SecretUrl};
use crate::endpoint::egress;
use crate::endpoint::guard::{check_header, parse_target_url};
use crate::endpoint::pace::Rate;
use crate::endpoint::sign::SigningKey;
use crate::endpoint::subscription::{Filter, TypePattern};

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

impl RetryConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.tiers.is_empty() {
            return Err(invalid("retry.tiers", "needs at least one tier"));
        }
        for (i, tier) in self.tiers.iter().enumerate() {
            if tier.delay.is_zero() {
                return Err(invalid(format!("retry.tiers[{i}].delay"), "must be more than 0"));
            }
            if i > 0 && tier.delay < self.tiers[i - 1].delay {
                return Err(invalid(format!("retry.tiers[{i}].delay"), "the ladder's delays must not shrink"));
            }
        }
        if !(0.0..=0.1).contains(&self.jitter) {
            return Err(invalid("retry.jitter", "must be between 0 and 0.1 (10 % of the tier delay)"));
        }
        if self.max_age.is_zero() {
            return Err(invalid("retry.max_age", "must be more than 0"));
        }
        Ok(())
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
    /// Records worked on at once per consumer (all partitions), and fan-out legs
    /// delivered at once per process. Default 1024.
    pub max_in_flight: usize,
    /// Records worked on at once per partition. Default 512.
    pub max_in_flight_per_partition: usize,
    /// Ceiling of the adaptive concurrency limit of one endpoint (name, or URL
    /// host:port), per process: the limit starts at 16 and follows how the
    /// receiver answers, never above this. Default 1024.
    pub max_in_flight_per_endpoint: usize,
    /// Records read ahead per partition while they wait for their due time,
    /// their endpoint or a slot; reaching it pauses the partition. Default 2048
    /// (more than one fetch of a partition: librdkafka hands records over in runs of a fetch).
    pub max_read_ahead_per_partition: usize,
    /// Bytes of records read and not yet decided (read-ahead plus in flight),
    /// per process: past it every partition pauses until it is below 90 %.
    /// A record counts its payload, key and headers, and 4 KiB per fan-out leg.
    /// An integer or a size (`"128MiB"`). Default 128 MiB.
    pub max_buffered_bytes: bytesize::ByteSize,
    /// Records of one endpoint that may wait in one partition for a free slot
    /// of that endpoint; the overflow is deferred to the next tier (no attempt
    /// counted, deadline kept), so a receiver that cannot keep up does not
    /// hold the partition for everyone else. At least 8. Default 32. An
    /// endpoint with a `rate_limit` is bounded by `rate_max_wait` instead.
    pub max_waiting_per_endpoint: usize,
    /// Inline-URL hosts that get their own `endpoint` metric label, first
    /// come first served; later hosts share the label `other` (configured
    /// endpoints always have their own). Logs and headers keep the real
    /// host. Default 100.
    pub max_endpoint_labels: usize,
    /// Egress proxy (`http://` or `https://`, `user:password@` allowed, shown
    /// redacted) for every endpoint without a `proxy` of its own and for
    /// inline URLs. Default: none (direct; proxies from the environment are ignored).
    #[serde(default)]
    pub proxy: Option<SecretUrl>,
    /// Requests per second or minute (`"20/s"`, `"600/m"`) to each endpoint
    /// without a `rate_limit` of its own and to each inline-URL host, per
    /// replica (a token bucket). Default: none.
    #[serde(default)]
    pub rate_limit: Option<Rate>,
    /// Requests that may go at once after a quiet time (the bucket's size).
    /// Default: one second's worth of the rate, at least 1.
    #[serde(default)]
    pub rate_burst: Option<u32>,
    /// A record that would wait longer than this for its endpoint's pace (its
    /// rate, or a `Retry-After` hold) is deferred to the next tier at once,
    /// without an attempt. Default `30s`.
    #[serde(with = "humantime_serde")]
    pub rate_max_wait: Duration,
    /// Delivery order for endpoints without an `ordering` of their own and
    /// for inline URLs: `"none"` (records worked on concurrently) or `"key"`
    /// (one at a time per Kafka record key, in offset order). Default `"none"`.
    pub ordering: Ordering,
    /// Most headers an event's `headers` may hold; past it the event is
    /// `invalid_event`. At most 1024. Default 64.
    pub max_event_headers: usize,
    /// Most bytes (names plus values) an event's `headers` may hold; past it
    /// the event is `invalid_event`. An integer or a size. Default 16 KiB.
    pub max_event_header_bytes: bytesize::ByteSize,
    /// Most bytes of Kafka record headers an event-topic record may carry;
    /// past it the record is dead `invalid_event` (its value and key kept,
    /// its headers dropped). Tier records the relay wrote are not bound by
    /// it. An integer or a size. Default 64 KiB.
    pub max_record_header_bytes: bytesize::ByteSize,
    /// The longest one `Retry-After` holds its whole endpoint; the record
    /// that got the answer still waits its full `Retry-After`, up to its
    /// deadline. Default `60s`.
    #[serde(with = "humantime_serde")]
    pub max_hold: Duration,
    /// The most endpoints one event may fan out to (legs per record); above
    /// it the record is dead `invalid_event` with the count. A leg holds about
    /// 4 KiB while it runs (counted in `max_buffered_bytes`). Default 1000.
    pub max_fanout: usize,
}

/// Whether records of one endpoint keep their order (SPEC: `ordering = "none" | "key"`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ordering {
    /// Records are worked on concurrently and may arrive in any order.
    #[default]
    None,
    /// Records with the same Kafka record key are delivered one at a time in
    /// offset order, retried in place by the events consumer (records
    /// without a key are unordered).
    Key,
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
            max_in_flight_per_partition: 512,
            max_in_flight_per_endpoint: 1024,
            max_read_ahead_per_partition: 2048,
            max_buffered_bytes: bytesize::ByteSize::mib(128),
            max_waiting_per_endpoint: 32,
            max_endpoint_labels: 100,
            proxy: None,
            ordering: Ordering::None,
            rate_limit: None,
            rate_burst: None,
            rate_max_wait: crate::endpoint::pace::DEFAULT_MAX_WAIT,
            max_event_headers: 64,
            max_event_header_bytes: bytesize::ByteSize::kib(16),
            max_record_header_bytes: bytesize::ByteSize::kib(64),
            max_hold: Duration::from_secs(60),
            max_fanout: 1000,
        }
    }
}

impl DeliveryConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.timeout.is_zero() {
            return Err(invalid("delivery.timeout", "must be more than 0"));
        }
        for status in &self.permanent_statuses {
            if !(100..=599).contains(status) || (200..300).contains(status) {
                return Err(invalid("delivery.permanent_statuses", format!("{status} is not a failure status")));
            }
        }
        // A record larger than the whole budget could never be read.
        if self.max_buffered_bytes.as_u64() < 2 * self.max_payload_bytes as u64 {
            return Err(invalid("delivery.max_buffered_bytes", "must be at least twice delivery.max_payload_bytes"));
        }
        let limits = [
            ("delivery.max_in_flight", self.max_in_flight),
            ("delivery.max_in_flight_per_partition", self.max_in_flight_per_partition),
            ("delivery.max_in_flight_per_endpoint", self.max_in_flight_per_endpoint),
            ("delivery.max_read_ahead_per_partition", self.max_read_ahead_per_partition),
            ("delivery.max_payload_bytes", self.max_payload_bytes),
            ("delivery.max_fanout", self.max_fanout),
        ];
        for (key, value) in limits {
            if value == 0 {
                return Err(invalid(key, "must be more than 0"));
            }
        }
        if self.max_waiting_per_endpoint < 8 {
            return Err(invalid("delivery.max_waiting_per_endpoint", "must be at least 8"));
        }
        // Each header of an attempt is one entry of the request's header map (bounded by http).
        if self.max_event_headers > 1024 {
            return Err(invalid("delivery.max_event_headers", "must be at most 1024"));
        }
        if self.max_hold.is_zero() {
            return Err(invalid("delivery.max_hold", "must be more than 0"));
        }
        if let Some(proxy) = &self.proxy {
            egress::proxy(proxy.expose()).map_err(|e| invalid("delivery.proxy", e.to_string()))?;
        }
        if self.rate_burst == Some(0) {
            return Err(invalid("delivery.rate_burst", "must be at least 1"));
        }
        for (i, secret) in self.signing_secrets.iter().enumerate() {
            SigningKey::parse(secret.expose())
                .map_err(|e| invalid(format!("delivery.signing_secrets[{i}]"), e.to_string()))?;
        }
        Ok(())
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

impl CircuitConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.enabled && self.failure_threshold == 0 {
            return Err(invalid("circuit.failure_threshold", "must be more than 0"));
        }
        Ok(())
    }
}

/// A named receiver.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    /// Target URL, http or https. Query values are shown redacted.
    pub url: SecretUrl,
    /// `whsec_` secrets; several = several signatures (rotation without downtime).
    #[serde(default)]
    pub secrets: Vec<Secret>,
    /// Attempt timeout for this endpoint. Default: `delivery.timeout`.
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// Headers added to every request to this endpoint. Values are shown
    /// redacted: a reader cannot tell which are credentials.
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
    /// Concurrent requests to this endpoint. Default: `delivery.max_in_flight_per_endpoint`.
    #[serde(default)]
    pub max_in_flight: Option<usize>,
    /// Client certificate (PEM, chain allowed) for receivers that require
    /// mutual TLS; goes with `client_key`. Default: none.
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    /// The client certificate's private key (PKCS#8 PEM, unencrypted). Default: none.
    #[serde(default)]
    pub client_key: Option<PathBuf>,
    /// CA certificates (PEM) trusted for this endpoint besides the system's. Default: none.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// Egress proxy for this endpoint, as `delivery.proxy`. Default: `delivery.proxy`.
    #[serde(default)]
    pub proxy: Option<SecretUrl>,
    /// This endpoint's rate, as `delivery.rate_limit`. Default: `delivery.rate_limit`.
    #[serde(default)]
    pub rate_limit: Option<Rate>,
    /// This endpoint's burst, as `delivery.rate_burst`. Default: `delivery.rate_burst`.
    #[serde(default)]
    pub rate_burst: Option<u32>,
    /// This endpoint's longest wait for its pace. Default: `delivery.rate_max_wait`.
    #[serde(default, with = "humantime_serde")]
    pub rate_max_wait: Option<Duration>,
    /// Delivery order for this endpoint, as `delivery.ordering`. Default: `delivery.ordering`.
    #[serde(default)]
    pub ordering: Option<Ordering>,
    /// Let this endpoint reach loopback, private, link-local and other
    /// non-global addresses (inline URLs stay guarded unless
    /// `delivery.allow_private_networks`). Default false.
    #[serde(default)]
    pub allow_private_networks: bool,
    /// Event types this endpoint subscribes to: exact (`"invoice.paid"`) or a
    /// prefix ending in `*` (`"invoice.*"`). Default: none (with a `filter`:
    /// every type; without one, the endpoint subscribes to nothing).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub types: Vec<String>,
    /// A CloudEvents subscription filter (`exact`, `prefix`, `suffix`, `all`,
    /// `any`, `not`) over the event's `type`, `id`, `source`, `subject` and
    /// `attributes`, e.g. `{ exact = { tenant = "acme" } }`. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<Filter>,
}

impl EndpointConfig {
    /// Checks the endpoint called `name` (`endpoints.<name>.*` in errors).
    pub(super) fn validate(&self, name: &str, files: super::Files) -> Result<(), ConfigError> {
        let key = |field: &str| format!("endpoints.{name}.{field}");
        parse_target_url(self.url.expose()).map_err(|e| invalid(key("url"), e.to_string()))?;
        for (i, secret) in self.secrets.iter().enumerate() {
            SigningKey::parse(secret.expose())
                .map_err(|e| invalid(format!("{}[{i}]", key("secrets")), e.to_string()))?;
        }
        if self.timeout.is_some_and(|t| t.is_zero()) {
            return Err(invalid(key("timeout"), "must be more than 0"));
        }
        if self.max_in_flight == Some(0) {
            return Err(invalid(key("max_in_flight"), "must be more than 0"));
        }
        for (header, value) in &self.headers {
            check_header(header, value.expose()).map_err(|e| invalid(key("headers"), e.to_string()))?;
        }
        if files == super::Files::Check {
            egress::identity_of(self.client_cert.as_deref(), self.client_key.as_deref())
                .map_err(|e| invalid(key("client_cert"), e.to_string()))?;
            if let Some(ca) = &self.ca {
                egress::ca(ca).map_err(|e| invalid(key("ca"), e.to_string()))?;
            }
        } else if self.client_cert.is_some() != self.client_key.is_some() {
            return Err(invalid(key("client_cert"), "client_cert and client_key go together"));
        }
        if let Some(proxy) = &self.proxy {
            egress::proxy(proxy.expose()).map_err(|e| invalid(key("proxy"), e.to_string()))?;
        }
        if self.rate_burst == Some(0) {
            return Err(invalid(key("rate_burst"), "must be at least 1"));
        }
        for (i, entry) in self.types.iter().enumerate() {
            TypePattern::parse(entry).map_err(|e| invalid(format!("{}[{i}]", key("types")), e))?;
        }
        if let Some(filter) = &self.filter {
            filter.validate().map_err(|e| invalid(key("filter"), e))?;
        }
        Ok(())
    }
}
