//! The `endpoint` metric label, bounded: every metric call that takes an endpoint goes through [`endpoint`].
//!
//! Events that carry inline URLs can name any number of hosts (per-tenant
//! subdomains, say); a label per host would grow `/metrics` and Prometheus
//! without bound. Configured endpoint names keep their own label, then the
//! first `delivery.max_endpoint_labels` hosts seen, then [`OTHER`]. Logs, the
//! `hookrelay-endpoint` header and `replay --endpoint` keep the real host.

use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};

/// The label of every host past the bound.
pub const OTHER: &str = "other";

/// Labels the relay writes itself for records that name no endpoint.
const FIXED: [&str; 2] = ["invalid", "unknown"];

/// Which endpoint keys have a label of their own.
#[derive(Debug)]
pub struct EndpointLabels {
    configured: HashSet<String>,
    max_hosts: usize,
    hosts: Mutex<HashSet<String>>,
}

impl EndpointLabels {
    pub fn new(configured: impl IntoIterator<Item = String>, max_hosts: usize) -> EndpointLabels {
        EndpointLabels { configured: configured.into_iter().collect(), max_hosts, hosts: Mutex::default() }
    }

    /// The label of `key`: itself while it is configured, fixed or among the
    /// first `max_hosts` hosts seen; else [`OTHER`].
    pub fn of<'a>(&self, key: &'a str) -> &'a str {
        if self.configured.contains(key) || FIXED.contains(&key) || key == OTHER {
            return key;
        }
        let mut hosts = self.hosts.lock().expect("labels lock poisoned");
        if hosts.contains(key) {
            return key;
        }
        if hosts.len() < self.max_hosts {
            hosts.insert(key.to_string());
            return key;
        }
        OTHER
    }

    /// Whether `key` is a configured endpoint's name.
    pub fn is_configured(&self, key: &str) -> bool {
        self.configured.contains(key)
    }

    /// Whether `key` has a label of its own (its series are not shared).
    pub fn owns(&self, key: &str) -> bool {
        self.of(key) == key && key != OTHER
    }
}

static LABELS: OnceLock<EndpointLabels> = OnceLock::new();

/// Sets the process's labels (at start-up, once); later calls are ignored.
pub fn init(labels: EndpointLabels) {
    let _ = LABELS.set(labels);
}

/// The process's labels: those of [`init`], else the default bound and no configured endpoint.
pub fn get() -> &'static EndpointLabels {
    LABELS.get_or_init(|| EndpointLabels::new([], crate::config::DeliveryConfig::default().max_endpoint_labels))
}

/// The metric label of endpoint `key`.
pub fn endpoint(key: &str) -> &str {
    get().of(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_names_then_the_first_hosts_then_other() {
        let labels = EndpointLabels::new(["billing".to_string()], 2);
        let seen: Vec<&str> =
            ["a.example", "billing", "b.example", "c.example", "a.example", "invalid", "d.example", "b.example"]
                .into_iter()
                .map(|key| labels.of(key))
                .collect();
        assert_eq!(seen, ["a.example", "billing", "b.example", OTHER, "a.example", "invalid", OTHER, "b.example"]);
        assert!(labels.owns("a.example") && labels.owns("billing"));
        assert!(!labels.owns("c.example") && !labels.owns(OTHER));
        assert!(labels.is_configured("billing") && !labels.is_configured("a.example"));
        let none = EndpointLabels::new([], 0);
        assert_eq!(none.of("a.example"), OTHER);
        assert_eq!(none.of("unknown"), "unknown");
    }
}
