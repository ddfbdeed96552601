//! A named endpoint as events use it, from the file or the registry: its URL, signing keys,
//! timeout, headers and ordering, read once from a validated spec.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderName, HeaderValue};

use crate::config::{EndpointConfig, Ordering};
use crate::endpoint::guard::{check_header, parse_target_url};
use crate::endpoint::sign::SigningKey;

/// A named endpoint as events use it (file or registry).
#[derive(Debug, Clone)]
pub(crate) struct NamedEndpoint {
    pub(crate) url: url::Url,
    pub(crate) keys: Arc<[SigningKey]>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) headers: Vec<(HeaderName, HeaderValue)>,
    pub(crate) ordered: bool,
}

impl NamedEndpoint {
    /// From a validated spec; `None` where it does not hold (validation refuses that first).
    pub(crate) fn of(e: &EndpointConfig, default_ordering: Ordering) -> Option<NamedEndpoint> {
        let url = parse_target_url(e.url.expose()).ok()?;
        let headers = e.headers.iter().filter_map(|(k, v)| check_header(k, v.expose()).ok()).collect();
        let ordered = e.ordering.unwrap_or(default_ordering) == Ordering::Key;
        // validate() has parsed every secret already.
        let keys = e.secrets.iter().filter_map(|s| SigningKey::parse(s.expose()).ok()).collect();
        Some(NamedEndpoint { url, keys, timeout: e.timeout, headers, ordered })
    }
}
