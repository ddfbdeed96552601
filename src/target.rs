//! Where a webhook may go: URL rules, the headers an event may not set, the endpoint key of a URL, and the
//! address ranges the target guard refuses. A leaf: config, event and deliver all use it, it uses none of them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::LazyLock;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use reqwest::header::{HeaderName, HeaderValue};

/// Headers the event may not set: the signature, and what the relay controls.
const RESERVED_HEADERS: &[&str] = &[
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "content-type",
    "content-length",
    "host",
    "transfer-encoding",
    "connection",
    "user-agent",
];

/// A target URL that is refused, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{url:?}: {problem}")]
pub struct BadUrl {
    url: String,
    problem: String,
}

/// An extra request header that is refused, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadHeader(String);

/// Parses and checks a target URL: http or https, with a host, no credentials.
pub fn parse_target_url(text: &str) -> Result<url::Url, BadUrl> {
    let bad = |problem: String| BadUrl { url: text.to_string(), problem };
    let url = url::Url::parse(text).map_err(|e| bad(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("scheme must be http or https".into()));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("no host".into()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("credentials in the URL are not allowed, use headers".into()));
    }
    Ok(url)
}

/// Checks one extra request header: a valid name and value, not reserved.
pub fn check_header(name: &str, value: &str) -> Result<(HeaderName, HeaderValue), BadHeader> {
    let parsed =
        HeaderName::from_bytes(name.as_bytes()).map_err(|_| BadHeader(format!("{name:?} is not a header name")))?;
    if RESERVED_HEADERS.contains(&parsed.as_str()) {
        return Err(BadHeader(format!("{name:?} is set by the relay and may not be overridden")));
    }
    let value = HeaderValue::from_str(value)
        .map_err(|_| BadHeader(format!("value of {name:?} is not a valid header value")))?;
    Ok((parsed, value))
}

/// The label of an inline URL: its host, with the port when one is written
/// (two services on one host are two endpoints). Never the path or query.
pub fn endpoint_key(url: &url::Url) -> String {
    let host = url.host_str().unwrap_or("unknown");
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    }
}

/// True when the host of `url` is an IP literal (reqwest then skips DNS).
pub fn ip_literal(url: &url::Url) -> Option<IpAddr> {
    match url.host()? {
        url::Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
        url::Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
        url::Host::Domain(_) => None,
    }
}

/// The guard refused every address of a target.
#[derive(Debug, Clone, thiserror::Error)]
#[error("forbidden target: {0}")]
pub struct Forbidden(pub(crate) String);

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
