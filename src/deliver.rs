//! Builds and sends one HTTP attempt: Standard Webhooks headers, timeout, no redirects, target guard. No retry logic.
//!
//! The target guard works at the resolver: with the guard on, the client's
//! DNS resolver drops every non-global address before reqwest connects, so
//! a name that resolves to 10.0.0.1 cannot be smuggled past a check made on
//! the name alone. IP-literal URLs skip DNS and are checked here directly.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, SystemTime};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::{CONTENT_TYPE, RETRY_AFTER};

use crate::event::{ip_literal, Event};
use crate::outcome::Attempt;
use crate::sign;

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
    pub fn new(allow_private_networks: bool) -> anyhow::Result<Deliverer> {
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
            Err(error) => attempt_error(&error),
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

fn attempt_error(error: &reqwest::Error) -> Attempt {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
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
    Attempt::Transport(chain.join(": "))
}

/// The guard refused every address of a target.
#[derive(Debug, Clone, thiserror::Error)]
#[error("forbidden target: {0}")]
pub struct Forbidden(String);

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

/// A named special-purpose range (IANA IPv4/IPv6 Special-Purpose Address
/// Registries, RFC 6890 and updates): addresses that are not globally routable.
struct Range {
    net: IpNet,
    name: &'static str,
}

fn v4(a: u8, b: u8, c: u8, d: u8, prefix: u8, name: &'static str) -> Range {
    Range { net: IpNet::V4(Ipv4Net::new(Ipv4Addr::new(a, b, c, d), prefix).expect("valid prefix")), name }
}

fn v6(segments: [u16; 8], prefix: u8, name: &'static str) -> Range {
    let addr = Ipv6Addr::new(
        segments[0],
        segments[1],
        segments[2],
        segments[3],
        segments[4],
        segments[5],
        segments[6],
        segments[7],
    );
    Range { net: IpNet::V6(Ipv6Net::new(addr, prefix).expect("valid prefix")), name }
}

static NON_GLOBAL: LazyLock<Vec<Range>> = LazyLock::new(|| {
    vec![
        v4(0, 0, 0, 0, 8, "\"this network\""),
        v4(10, 0, 0, 0, 8, "private"),
        v4(100, 64, 0, 0, 10, "shared address space (CGNAT)"),
        v4(127, 0, 0, 0, 8, "loopback"),
        v4(169, 254, 0, 0, 16, "link-local"),
        v4(172, 16, 0, 0, 12, "private"),
        v4(192, 0, 0, 0, 24, "IETF protocol assignments"),
        v4(192, 0, 2, 0, 24, "documentation"),
        v4(192, 88, 99, 0, 24, "6to4 relay anycast"),
        v4(192, 168, 0, 0, 16, "private"),
        v4(198, 18, 0, 0, 15, "benchmarking"),
        v4(198, 51, 100, 0, 24, "documentation"),
        v4(203, 0, 113, 0, 24, "documentation"),
        v4(224, 0, 0, 0, 4, "multicast"),
        v4(240, 0, 0, 0, 4, "reserved"),
        v6([0, 0, 0, 0, 0, 0, 0, 0], 128, "unspecified"),
        v6([0, 0, 0, 0, 0, 0, 0, 1], 128, "loopback"),
        v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64, "discard-only"),
        v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 23, "IETF protocol assignments"),
        v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32, "documentation"),
        v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7, "unique local"),
        v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10, "link-local"),
        v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10, "site-local"),
        v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8, "multicast"),
    ]
});

/// Ok when `ip` is a global unicast address; otherwise says which range it is in.
pub fn check_address(ip: IpAddr) -> Result<(), Forbidden> {
    // IPv4-mapped and NAT64 (64:ff9b::/96) addresses carry an IPv4 address:
    // judge that one, so ::ffff:127.0.0.1 is loopback.
    let ip = match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None if v6.segments()[..6] == [0x64, 0xff9b, 0, 0, 0, 0] => {
                let [.., a, b, c, d] = v6.octets();
                IpAddr::V4(Ipv4Addr::new(a, b, c, d))
            }
            None => ip,
        },
        v4 => v4,
    };
    match NON_GLOBAL.iter().find(|range| range.net.contains(&ip)) {
        Some(range) => Err(Forbidden(format!("{ip} ({} address)", range.name))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_global_addresses_are_refused() {
        let refused = [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "198.18.0.1",
            "::1",
            "::",
            "fe80::1",
            "fc00::1",
            "fd12:3456::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
            "2001:db8::1",
        ];
        for ip in refused {
            assert!(check_address(ip.parse().unwrap()).is_err(), "{ip} should be refused");
        }
        let allowed = [
            "1.1.1.1",
            "8.8.8.8",
            "172.32.0.1",
            "192.169.0.1",
            "2606:4700::1111",
            "::ffff:1.1.1.1",
            "64:ff9b::808:808",
        ];
        for ip in allowed {
            assert!(check_address(ip.parse().unwrap()).is_ok(), "{ip} should be allowed");
        }
    }

    #[test]
    fn the_refusal_names_the_range() {
        let why = check_address("169.254.169.254".parse().unwrap()).unwrap_err().to_string();
        assert_eq!(why, "forbidden target: 169.254.169.254 (link-local address)");
    }
}
