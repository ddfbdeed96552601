//! Builds and sends one HTTP attempt: Standard Webhooks headers, timeout, no redirects, target guard. No retry logic.
//!
//! The target guard works at the resolver: with the guard on, the client's
//! DNS resolver drops every non-global address before reqwest connects, so
//! a name that resolves to 10.0.0.1 cannot be smuggled past a check made on
//! the name alone. IP-literal URLs skip DNS and are checked here directly.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::{CONTENT_TYPE, RETRY_AFTER};

use crate::event::Event;
use crate::outcome::Attempt;
use crate::sign;
use crate::target::{check_address, ip_literal, Forbidden};

/// The most of a response body read, for the error record (SPEC: 64 KiB).
pub const MAX_RESPONSE_BODY: usize = 64 * 1024;

/// `user-agent` of every request.
pub const USER_AGENT: &str = concat!("hookrelay/", env!("CARGO_PKG_VERSION"));

/// Sends attempts through one shared client (connection reuse across records).
#[derive(Clone)]
pub struct Deliverer {
    client: reqwest::Client,
    allow_private: bool,
}

impl Deliverer {
    pub fn new(allow_private_networks: bool) -> Result<Deliverer, reqwest::Error> {
        let mut builder = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .redirect(reqwest::redirect::Policy::none())
            // A proxy would be "the address connected to" and defeat the guard.
            .no_proxy()
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(64);
        if !allow_private_networks {
            builder = builder.dns_resolver(Arc::new(GuardedResolver));
        }
        Ok(Deliverer { client: builder.build()?, allow_private: allow_private_networks })
    }

    /// One attempt. `now` is the `webhook-timestamp`.
    pub async fn attempt(&self, event: &Event, now: SystemTime) -> Attempt {
        if !self.allow_private {
            if let Some(ip) = ip_literal(&event.url) {
                if let Err(why) = check_address(ip) {
                    return Attempt::Forbidden(why.to_string());
                }
            }
        }
        let timestamp = now.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        let mut request = self
            .client
            .post(event.url.clone())
            .timeout(event.timeout)
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
