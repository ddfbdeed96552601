//! Builds and sends one HTTP attempt: Standard Webhooks headers, timeout, no redirects, target guard,
//! the client of the endpoint (client certificate, CA, proxy). No retry logic.
//!
//! The target guard works at the resolver: with the guard on, the client's
//! DNS resolver drops every non-global address before reqwest connects, so
//! a name that resolves to 10.0.0.1 cannot be smuggled past a check made on
//! the name alone. IP-literal URLs skip DNS and are checked here directly.
//! Through a proxy the client only resolves the proxy (trusted by
//! configuration); the target's name is resolved and checked here before
//! the request, since the proxy's own lookup is out of reach.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::{CONTENT_TYPE, RETRY_AFTER};

use crate::config::{Config, EndpointConfig, SecretUrl};
use crate::endpoint::egress::{self, EgressError};
use crate::endpoint::guard::{check_address, ip_literal, Forbidden};
use crate::endpoint::sign;
use crate::event::Event;
use crate::route::outcome::Attempt;

/// The most of a response body read, for the error record (SPEC: 64 KiB).
pub const MAX_RESPONSE_BODY: usize = 64 * 1024;

/// `user-agent` of every request.
pub const USER_AGENT: &str = concat!("hookrelay/", env!("CARGO_PKG_VERSION"));

/// Sends attempts: through one shared client (connection reuse across
/// records), or the own client of an endpoint with TLS settings or a proxy.
#[derive(Clone)]
pub struct Deliverer {
    shared: Egress,
    /// Endpoints (by name) with a client certificate, a CA or a proxy of their own.
    endpoints: Arc<HashMap<String, Egress>>,
    /// Registry endpoints (by name) with a client of their own, set as their records are applied.
    registered: Arc<std::sync::RwLock<HashMap<String, Egress>>>,
    default_proxy: Option<SecretUrl>,
    idle: usize,
    allow_private: bool,
}

/// One HTTP client and whether it goes through a proxy.
#[derive(Clone)]
struct Egress {
    client: reqwest::Client,
    proxied: bool,
}

/// An endpoint's client could not be built (the config was validated, so a
/// file changed in between or the TLS backend refused it).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{key}: {error}")]
    Egress { key: String, error: EgressError },
    #[error("{key}: cannot build the HTTP client: {error}")]
    Build { key: String, error: reqwest::Error },
}

impl Deliverer {
    /// The shared client (through `delivery.proxy` if set) and one client per
    /// endpoint that has its own TLS settings or proxy.
    pub fn new(config: &Config) -> Result<Deliverer, ClientError> {
        let allow_private = config.delivery.allow_private_networks;
        let default_proxy = config.delivery.proxy.as_ref();
        // A connection per request in flight stays open between requests: with fewer
        // kept, every request past that count opened (and the receiver accepted) a
        // new connection, which was an eighth of the relay's CPU with one busy receiver.
        let ceiling = config.endpoints.values().filter_map(|e| e.max_in_flight);
        let idle = ceiling.fold(config.delivery.max_in_flight_per_endpoint, usize::max);
        let shared = build("delivery", allow_private, default_proxy, None, Vec::new(), idle)?;
        let mut endpoints = HashMap::new();
        for (name, endpoint) in &config.endpoints {
            if let Some(egress) = own_client(name, endpoint, allow_private, default_proxy, idle)? {
                endpoints.insert(name.clone(), egress);
            }
        }
        Ok(Deliverer {
            shared,
            endpoints: Arc::new(endpoints),
            registered: Arc::default(),
            default_proxy: default_proxy.cloned(),
            idle,
            allow_private,
        })
    }

    /// Sets (or, with `None`, forgets) the own client of registry endpoint
    /// `name`; one without TLS settings or a proxy uses the shared client.
    pub fn set_registered(&self, name: &str, endpoint: Option<&EndpointConfig>) -> Result<(), ClientError> {
        let built = match endpoint {
            Some(e) => own_client(name, e, self.allow_private, self.default_proxy.as_ref(), self.idle)?,
            None => None,
        };
        let mut registered = self.registered.write().expect("client lock poisoned");
        match built {
            Some(egress) => registered.insert(name.to_string(), egress),
            None => registered.remove(name),
        };
        Ok(())
    }

    fn registered(&self, name: &str) -> Option<Egress> {
        self.registered.read().expect("client lock poisoned").get(name).cloned()
    }

    /// One attempt. `now` is the `webhook-timestamp`.
    pub async fn attempt(&self, event: &Event, now: SystemTime) -> Attempt {
        let started = Instant::now();
        let registered;
        let egress = match &event.endpoint_name {
            Some(name) => match self.endpoints.get(&**name) {
                Some(own) => own,
                None => {
                    registered = self.registered(name);
                    registered.as_ref().unwrap_or(&self.shared)
                }
            },
            None => &self.shared,
        };
        if !self.allow_private {
            if let Some(ip) = ip_literal(&event.url) {
                if let Err(why) = check_address(ip) {
                    return Attempt::Forbidden(why.to_string());
                }
            } else if egress.proxied {
                // The proxy resolves the name and connects, out of the
                // resolver's reach: check the target's addresses here.
                if let Err(refused) = check_before_proxy(event).await {
                    return refused;
                }
            }
        }
        let timestamp = now.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        let mut request = egress
            .client
            .post(event.url.clone())
            // The timeout is the whole attempt's, the check before a proxy included.
            .timeout(event.timeout.saturating_sub(started.elapsed()))
            .header(CONTENT_TYPE, "application/json")
            .header("webhook-id", event.id.as_str())
            .header("webhook-timestamp", timestamp);
        if !event.keys.is_empty() {
            request =
                request.header("webhook-signature", sign::signature(&event.keys, &event.id, timestamp, &event.body));
        }
        for (name, value) in &event.headers {
            request = request.header(name, value);
        }
        match request.body(event.body.clone()).send().await {
            Ok(response) => read_response(response).await,
            Err(error) => attempt_error(error, &event.endpoint_key),
        }
    }
}

async fn read_response(mut response: reqwest::Response) -> Attempt {
    let status = response.status().as_u16();
    let retry_after = response.headers().get(RETRY_AFTER).and_then(|v| v.to_str().ok()).map(String::from);
    let mut body = Vec::new();
    // The body only feeds the error record: a failure while reading it does
    // not change the outcome, which the status already decided.
    while body.len() < MAX_RESPONSE_BODY {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk[..chunk.len().min(MAX_RESPONSE_BODY - body.len())]),
            Ok(None) | Err(_) => break,
        }
    }
    Attempt::Response { status, retry_after, body: String::from_utf8_lossy(&body).into_owned() }
}

/// The error text of a failed request. reqwest's own text ends with the
/// full URL, query tokens included: it is dropped and the endpoint (name or
/// host) is named instead, as this text reaches `hookrelay-last-error`, logs
/// and notifications.
fn attempt_error(error: reqwest::Error, endpoint: &str) -> Attempt {
    let error = error.without_url();
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&error);
    let mut chain = Vec::new();
    while let Some(e) = source {
        if let Some(forbidden) = e.downcast_ref::<Forbidden>() {
            return Attempt::Forbidden(forbidden.to_string());
        }
        chain.push(e.to_string());
        source = e.source();
    }
    if error.is_timeout() {
        return Attempt::Timeout;
    }
    chain.dedup();
    if let Some(first) = chain.first_mut() {
        first.push_str(&format!(" to {endpoint}"));
    }
    Attempt::Transport(chain.join(": "))
}

/// A client: the guard in its resolver unless private networks are allowed
/// (through a proxy it only ever resolves the proxy, which is trusted by
/// configuration: the target is checked by [`check_before_proxy`]); it keeps
/// up to `idle` connections per host open between requests.
/// The own client of an endpoint with a client certificate, a CA or a proxy; `None` without.
fn own_client(
    name: &str,
    endpoint: &EndpointConfig,
    allow_private: bool,
    default_proxy: Option<&SecretUrl>,
    idle: usize,
) -> Result<Option<Egress>, ClientError> {
    if endpoint.client_cert.is_none() && endpoint.ca.is_none() && endpoint.proxy.is_none() {
        return Ok(None);
    }
    let key = format!("endpoints.{name}");
    let egress_error = |error| ClientError::Egress { key: key.clone(), error };
    let identity =
        egress::identity_of(endpoint.client_cert.as_deref(), endpoint.client_key.as_deref()).map_err(egress_error)?;
    let cas = endpoint.ca.as_deref().map(egress::ca).transpose().map_err(egress_error)?;
    let proxy = endpoint.proxy.as_ref().or(default_proxy);
    build(&key, allow_private, proxy, identity, cas.unwrap_or_default(), idle).map(Some)
}

fn build(
    key: &str,
    allow_private: bool,
    proxy: Option<&SecretUrl>,
    identity: Option<reqwest::Identity>,
    cas: Vec<reqwest::Certificate>,
    idle: usize,
) -> Result<Egress, ClientError> {
    let mut builder = reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .redirect(reqwest::redirect::Policy::none())
        // Proxies from the environment would be "the address connected to"
        // and defeat the guard: only a configured proxy is used.
        .no_proxy()
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(idle);
    if let Some(proxy) = proxy {
        let proxy = egress::proxy(proxy.expose())
            .map_err(|error| ClientError::Egress { key: format!("{key}.proxy"), error })?;
        builder = builder.proxy(proxy);
    } else if !allow_private {
        builder = builder.dns_resolver(Arc::new(GuardedResolver));
    }
    if let Some(identity) = identity {
        builder = builder.identity(identity);
    }
    for ca in cas {
        builder = builder.add_root_certificate(ca);
    }
    let client = builder.build().map_err(|error| ClientError::Build { key: key.to_string(), error })?;
    Ok(Egress { client, proxied: proxy.is_some() })
}

/// Resolves the target's name as the proxy will and refuses it when any of
/// its addresses is not global. A rebinding between this lookup and the
/// proxy's is the proxy's to stop (handbook: integrations/proxy.md).
async fn check_before_proxy(event: &Event) -> Result<(), Attempt> {
    let host = event.url.host_str().unwrap_or_default();
    let port = event.url.port_or_known_default().unwrap_or(443);
    let lookup = tokio::time::timeout(event.timeout, tokio::net::lookup_host((host, port)));
    let addresses: Vec<SocketAddr> = match lookup.await {
        Err(_) => return Err(Attempt::Timeout),
        Ok(Err(error)) => {
            let endpoint = &event.endpoint_key;
            return Err(Attempt::Transport(format!("cannot resolve the target to check it: {error} to {endpoint}")));
        }
        Ok(Ok(addresses)) => addresses.collect(),
    };
    if addresses.is_empty() {
        return Err(Attempt::Transport(format!("the target has no address to {}", event.endpoint_key)));
    }
    for address in addresses {
        check_address(address.ip()).map_err(|why| Attempt::Forbidden(format!("{host} resolves to {why}")))?;
    }
    Ok(())
}

/// Resolves with the system resolver, then keeps only global addresses.
struct GuardedResolver;

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let host = name.as_str().to_string();
            let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refused = None;
            let allowed: Vec<SocketAddr> = resolved
                .into_iter()
                .filter(|addr| match check_address(addr.ip()) {
                    Ok(()) => true,
                    Err(why) => {
                        refused = Some(why);
                        false
                    }
                })
                .collect();
            if allowed.is_empty() {
                let why = refused.map_or_else(|| "no address".to_string(), |w| w.to_string());
                return Err(Box::new(Forbidden(format!("{host} resolves to {why}"))) as _);
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}
