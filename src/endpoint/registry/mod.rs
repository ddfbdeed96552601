//! The endpoint registry: endpoints as data, in the compacted topic
//! `topics.endpoints` (SPEC "Endpoints as data").
//!
//! ```text
//! hookrelay endpoints put ──► registry topic (key = name, sealed + tagged value)
//!                                  │ every replica, no group (follow)
//!                                  ▼
//!                  Registry: name -> Arc<Entry> ──► Endpoints::decode (lookup)
//!                                  └─ a change of host or limits resets circuit / limit / pace
//! ```
//! - `seal`: `registry.key`, AES-256-GCM for secret fields, the record tag.
//! - `record`: the record's format, the spec codec (one validator with the file), names.
//! - `follow`: reads the topic to its end before any role consumes, then follows it.
//!
//! A record that does not verify or validate is refused (counted, logged),
//! and the previous spec of its name stays. Events resolve a name when they
//! are decoded and keep what they got (an `Arc` of keys, the URL): records
//! in flight finish with the spec they started with.

pub mod follow;
mod metrics;
pub mod record;
pub mod seal;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering as AtomicOrdering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::app::clock::now_ms;
use crate::config::{Config, Ordering};
use crate::endpoint::pace;
use crate::endpoint::sign::SigningKey;
use crate::event::named::NamedEndpoint;

pub use self::record::{Change, Spec};
pub use self::seal::RegistryKey;

/// One registry endpoint as applied.
#[derive(Debug)]
pub struct Entry {
    /// The record's write time (a record older than the applied one is a replay: refused).
    pub at_ms: i64,
    pub spec: Spec,
    /// The endpoint key of its URL (host:port): a change resets circuit, limit and pace.
    pub host: String,
    named: NamedEndpoint,
    /// Each signing key with its `not_after` (ms), to drop expired ones at lookup.
    keys: Vec<(SigningKey, Option<i64>)>,
    /// Its own concurrency ceiling, if it sets one.
    pub ceiling: Option<usize>,
    /// Its pace: its own keys, else `[delivery]`'s.
    pub pace: pace::Rule,
}

/// What applying a record changed, for the per-endpoint state kept elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// New, or only secrets/headers/timeouts changed: circuit, limit and pace stay.
    Kept,
    /// Its limits or pace changed: the limit and pace start afresh, the circuit stays.
    Limits,
    /// Its URL host changed, or it was deleted: circuit, limit and pace start afresh.
    Host,
    /// Refused: nothing changed.
    Refused,
}

/// The live view of the registry, shared by every consumer of the process.
pub struct Registry {
    entries: RwLock<HashMap<String, Arc<Entry>>>,
    /// The file's names: the file wins, a registry record for one is refused.
    file: std::collections::HashSet<String>,
    default_ordering: Ordering,
    delivery: crate::config::DeliveryConfig,
    grace_ms: i64,
    max_lag: Duration,
    /// When the view was last known to reach the topic's end (ms), or 0 before the first read.
    caught_up_ms: AtomicI64,
    /// The topic could be read.
    up: AtomicBool,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").field("endpoints", &self.len()).finish()
    }
}

impl Registry {
    /// An empty view for `config` (the registry on).
    pub fn new(config: &Config) -> Registry {
        Registry {
            entries: RwLock::default(),
            file: config.endpoints.keys().cloned().collect(),
            default_ordering: config.delivery.ordering,
            delivery: config.delivery.clone(),
            grace_ms: config.registry.unknown_grace.as_millis() as i64,
            max_lag: config.registry.max_lag,
            caught_up_ms: AtomicI64::new(0),
            up: AtomicBool::new(false),
        }
    }

    /// How many endpoints it holds.
    pub fn len(&self) -> usize {
        self.entries.read().expect("registry lock poisoned").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The entry of `name`, if any.
    pub fn get(&self, name: &str) -> Option<Arc<Entry>> {
        self.entries.read().expect("registry lock poisoned").get(name).cloned()
    }

    /// Every entry, by name.
    pub fn all(&self) -> Vec<(String, Arc<Entry>)> {
        let entries = self.entries.read().expect("registry lock poisoned");
        let mut all: Vec<_> = entries.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// The endpoint `name` as an event uses it now: secrets past their `not_after` left out.
    pub(crate) fn lookup(&self, name: &str) -> Option<NamedEndpoint> {
        let entry = self.get(name)?;
        if entry.keys.iter().all(|(_, until)| until.is_none()) {
            return Some(entry.named.clone());
        }
        let now = now_ms();
        let keys = entry.keys.iter().filter(|(_, until)| until.is_none_or(|t| now < t)).map(|(k, _)| k.clone());
        Some(NamedEndpoint { keys: keys.collect(), ..entry.named.clone() })
    }

    /// Applies one verified change written at `at_ms`.
    pub fn apply(&self, name: &str, at_ms: i64, change: Change) -> Effect {
        if self.file.contains(name) {
            return Effect::Refused;
        }
        let mut entries = self.entries.write().expect("registry lock poisoned");
        let before = entries.get(name).cloned();
        if before.as_ref().is_some_and(|e| at_ms < e.at_ms) {
            // An older record than the one applied: a replay of a superseded spec.
            return Effect::Refused;
        }
        let spec = match change {
            Change::Delete => {
                return match entries.remove(name) {
                    Some(_) => Effect::Host,
                    None => Effect::Kept,
                };
            }
            Change::Put(spec) => *spec,
        };
        let Some(entry) = self.entry(at_ms, spec) else { return Effect::Refused };
        let effect = match &before {
            None => Effect::Kept,
            Some(old) if old.host != entry.host => Effect::Host,
            Some(old) if old.ceiling != entry.ceiling || old.pace != entry.pace => Effect::Limits,
            Some(_) => Effect::Kept,
        };
        entries.insert(name.to_string(), Arc::new(entry));
        effect
    }

    fn entry(&self, at_ms: i64, spec: Spec) -> Option<Entry> {
        let e = &spec.endpoint;
        let named = NamedEndpoint::of(e, self.default_ordering)?;
        let keys = e.secrets.iter().zip(&spec.not_after).filter_map(|(s, until)| {
            // validate_endpoint parsed every secret already.
            Some((SigningKey::parse(s.expose()).ok()?, *until))
        });
        let d = &self.delivery;
        let rate = e.rate_limit.or(d.rate_limit);
        let pace = pace::Rule {
            rate,
            burst: e.rate_burst.or(d.rate_burst).or(rate.map(pace::Rate::default_burst)).unwrap_or(1),
            max_wait: e.rate_max_wait.unwrap_or(d.rate_max_wait),
        };
        Some(Entry {
            at_ms,
            host: crate::endpoint::guard::endpoint_key(&named.url),
            keys: keys.collect(),
            named,
            ceiling: e.max_in_flight,
            pace,
            spec,
        })
    }

    /// `registry.unknown_grace` in ms.
    pub fn grace_ms(&self) -> i64 {
        self.grace_ms
    }

    /// The view reached the topic's end at `now_ms`.
    pub fn caught_up(&self, now_ms: i64) {
        self.caught_up_ms.store(now_ms, AtomicOrdering::SeqCst);
    }

    /// Whether the topic could be read (`hookrelay_registry_up`).
    pub fn set_up(&self, up: bool) {
        self.up.store(up, AtomicOrdering::SeqCst);
    }

    pub fn is_up(&self) -> bool {
        self.up.load(AtomicOrdering::SeqCst)
    }

    /// Whether the view is more than `registry.max_lag` behind (or never reached the end).
    pub fn is_stale(&self, now_ms: i64) -> bool {
        let at = self.caught_up_ms.load(AtomicOrdering::SeqCst);
        at == 0 || now_ms - at > self.max_lag.as_millis() as i64
    }

    /// Waits until the view is fresh; false if cancelled first.
    pub async fn wait_fresh(&self, cancel: &tokio_util::sync::CancellationToken) -> bool {
        while self.is_stale(now_ms()) {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                _ = cancel.cancelled() => return false,
            }
        }
        true
    }

    /// The ceiling and pace of a registry endpoint (for the limiter).
    pub fn rules_of(&self, name: &str) -> Option<(Option<usize>, pace::Rule)> {
        self.get(name).map(|e| (e.ceiling, e.pace))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Files, RegistryConfig};

    fn spec(value: serde_json::Value) -> Box<Spec> {
        Box::new(record::spec_of("acme", &value, &RegistryConfig::default(), Files::Skip).unwrap())
    }

    #[test]
    fn changes_say_what_per_endpoint_state_survives() {
        let registry = Registry::new(&Config::default());
        let a = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let put = |at, v| registry.apply("acme", at, Change::Put(spec(v)));
        assert_eq!(put(1, serde_json::json!({"url": "https://a.example/", "secrets": [a]})), Effect::Kept);
        assert_eq!(registry.lookup("acme").unwrap().keys.len(), 1);
        let headers = serde_json::json!({"url": "https://a.example/x", "headers": {"x-a": "1"}});
        assert_eq!(put(2, headers), Effect::Kept, "same host, new path and headers");
        assert_eq!(put(3, serde_json::json!({"url": "https://a.example/", "rate_limit": "5/s"})), Effect::Limits);
        assert_eq!(put(2, serde_json::json!({"url": "https://old.example/"})), Effect::Refused, "older");
        assert_eq!(put(4, serde_json::json!({"url": "https://b.example/", "rate_limit": "5/s"})), Effect::Host);
        assert_eq!(registry.lookup("acme").unwrap().url.as_str(), "https://b.example/");
        assert_eq!(registry.apply("acme", 5, Change::Delete), Effect::Host);
        assert!(registry.lookup("acme").is_none());
    }

    #[test]
    fn the_view_is_stale_until_read_and_past_max_lag() {
        let registry = Registry::new(&Config::from_toml("[registry]\nmax_lag = \"30s\"\n").unwrap());
        assert!(registry.is_stale(1_000_000), "never read to its end");
        registry.caught_up(1_000_000);
        assert!(!registry.is_stale(1_000_000 + 30_000));
        assert!(registry.is_stale(1_000_000 + 30_001), "more than max_lag behind");
    }

    #[test]
    fn a_file_name_is_never_taken_from_the_registry() {
        let config = Config::from_toml("[endpoints.acme]\nurl = \"https://file.example/\"\n").unwrap();
        let registry = Registry::new(&config);
        let change = Change::Put(spec(serde_json::json!({"url": "https://evil.example/"})));
        assert_eq!(registry.apply("acme", 1, change), Effect::Refused);
        assert!(registry.lookup("acme").is_none());
    }

    #[test]
    fn expired_secrets_stop_signing() {
        let registry = Registry::new(&Config::default());
        let old = serde_json::json!({"secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "not_after": "2001-01-01T00:00:00Z"});
        let kept = serde_json::json!({"secret": "whsec_c2Vjb25kLXNlY3JldC1mb3ItYWNtZQ==", "not_after": "2999-01-01T00:00:00Z"});
        let value = serde_json::json!({"url": "https://a.example/", "secrets": [old, kept, "whsec_dGhpcmQtc2VjcmV0LWZvci1hY21lLW9r"]});
        registry.apply("acme", 1, Change::Put(spec(value)));
        assert_eq!(registry.lookup("acme").unwrap().keys.len(), 2);
    }
}
