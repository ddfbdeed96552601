//! Where a webhook may go: URL rules, the headers an event may not set, the endpoint key of a URL, and the
//! address ranges the target guard refuses. A leaf: config, event and deliver all use it, it uses none of them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::LazyLock;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use reqwest::header::{HeaderName, HeaderValue};

/// Headers the event may not set: the signature, and what the relay controls.
pub const RESERVED_HEADERS: &[&str] = &[
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

/// A target URL that is refused, with the reason. It is shown redacted
/// ([`redact_url`]): the text reaches `hookrelay-last-error`, logs and stderr.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{:?}: {problem}", redact_url(url))]
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

/// `url` as it may be shown: userinfo and query values replaced by
/// `<redacted>`, the fragment dropped; an unparsable text is wholly redacted
/// (no telling which part of it is a credential).
pub fn redact_url(text: &str) -> String {
    const REDACTED: &str = "<redacted>";
    let Ok(url) = url::Url::parse(text) else {
        return REDACTED.to_string();
    };
    let Some(host) = url.host_str() else {
        return REDACTED.to_string();
    };
    let mut out = format!("{}://", url.scheme());
    if !url.username().is_empty() || url.password().is_some() {
        out.push_str(REDACTED);
        out.push('@');
    }
    out.push_str(host);
    if let Some(port) = url.port() {
        out.push_str(&format!(":{port}"));
    }
    out.push_str(url.path());
    if let Some(query) = url.query() {
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) => format!("{name}={REDACTED}"),
                // A bare `?abcdef` may itself be the token.
                None => REDACTED.to_string(),
            })
            .collect();
        out.push('?');
        out.push_str(&pairs.join("&"));
    }
    out
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
        v6([0, 0, 0, 0, 0, 0, 0, 0], 96, "IPv4-compatible (deprecated)"),
        v6([0, 0, 0, 0, 0xffff, 0, 0, 0], 96, "SIIT IPv4-translated"),
        v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48, "local-use NAT64"),
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
    // A transition address carries an IPv4 address that a gateway or relay on
    // the path would reach: judge that one, so ::ffff:127.0.0.1 is loopback
    // and 2002:7f00:1:: is a 6to4 way to 127.0.0.1.
    if let IpAddr::V6(v6) = ip {
        if let Some((v4, how)) = embedded_ipv4(v6) {
            return match non_global(IpAddr::V4(v4)) {
                Some(name) => Err(Forbidden(format!("{ip} ({how} of {v4}, {name} address)"))),
                None => Ok(()),
            };
        }
    }
    match non_global(ip) {
        Some(name) => Err(Forbidden(format!("{ip} ({name} address)"))),
        None => Ok(()),
    }
}

fn non_global(ip: IpAddr) -> Option<&'static str> {
    NON_GLOBAL.iter().find(|range| range.net.contains(&ip)).map(|range| range.name)
}

/// The IPv4 address an IPv6 transition address leads to, and the mechanism's
/// name: IPv4-mapped (`::ffff:0:0/96`), well-known NAT64 (`64:ff9b::/96`,
/// RFC 6052), 6to4 (`2002::/16`, RFC 3056: bits 16..48) and Teredo
/// (`2001::/32`, RFC 4380: the client's address is the last 32 bits, inverted).
fn embedded_ipv4(ip: Ipv6Addr) -> Option<(Ipv4Addr, &'static str)> {
    let s = ip.segments();
    let o = ip.octets();
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some((v4, "IPv4-mapped"));
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some((Ipv4Addr::new(o[12], o[13], o[14], o[15]), "NAT64"));
    }
    if s[0] == 0x2002 {
        return Some((Ipv4Addr::new(o[2], o[3], o[4], o[5]), "6to4"));
    }
    if s[..2] == [0x2001, 0] {
        let client = u32::from_be_bytes([o[12], o[13], o[14], o[15]]) ^ 0xffff_ffff;
        let client = Ipv4Addr::from(client);
        // A Teredo address with a global client still falls in 2001::/23
        // (IETF protocol assignments), refused below: no exception is made.
        if non_global(IpAddr::V4(client)).is_some() {
            return Some((client, "Teredo"));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_shown_without_their_credentials() {
        let cases = [
            ("https://a.example/hook", "https://a.example/hook"),
            ("http://a.example:8080/h?token=s3cret&v=2#frag", "http://a.example:8080/h?token=<redacted>&v=<redacted>"),
            ("https://user:s3cret@a.example/", "https://<redacted>@a.example/"),
            ("https://a.example/?s3cret", "https://a.example/?<redacted>"),
            ("not a url s3cret", "<redacted>"),
        ];
        for (url, shown) in cases {
            assert_eq!(redact_url(url), shown);
        }
        let refused = parse_target_url("https://user:s3cret@a.example/?token=s3cret").unwrap_err().to_string();
        assert!(!refused.contains("s3cret") && refused.contains("credentials"), "{refused}");
    }

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
            // IPv4-compatible (deprecated), any embedded address.
            "::127.0.0.1",
            "::8.8.8.8",
            // SIIT IPv4-translated, any embedded address.
            "::ffff:0:127.0.0.1",
            "::ffff:0:8.8.8.8",
            // Local-use NAT64, any embedded address.
            "64:ff9b:1::7f00:1",
            "64:ff9b:1:ffff::808:808",
            // Well-known NAT64 of a non-global address.
            "64:ff9b::127.0.0.1",
            "64:ff9b::c0a8:101",
            // 6to4 of a non-global address.
            "2002:7f00:1::1",
            "2002:a00:1::",
            "2002:a9fe:a9fe:1234::1",
            "2002:c0a8:101::",
            // Teredo with a non-global client (last 32 bits inverted):
            // 0x80ffffFE ^ 0xffffffff = 127.0.0.1, 0xf5fffffe = 10.0.0.1.
            "2001:0:4136:e378:8000:63bf:80ff:fffe",
            "2001::f5ff:fffe",
            // Teredo with a global client (8.8.8.8): 2001::/23 (IETF protocol assignments).
            "2001:0:4136:e378:8000:63bf:f7f7:f7f7",
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
            // 6to4 of a global address (8.8.8.8).
            "2002:808:808::1",
        ];
        for ip in allowed {
            assert!(check_address(ip.parse().unwrap()).is_ok(), "{ip} should be allowed");
        }
    }

    #[test]
    fn the_refusal_names_the_range() {
        let why = check_address("169.254.169.254".parse().unwrap()).unwrap_err().to_string();
        assert_eq!(why, "forbidden target: 169.254.169.254 (link-local address)");
        let why = check_address("2002:7f00:1::1".parse().unwrap()).unwrap_err().to_string();
        assert_eq!(why, "forbidden target: 2002:7f00:1::1 (6to4 of 127.0.0.1, loopback address)");
        let why = check_address("2001::f5ff:fffe".parse().unwrap()).unwrap_err().to_string();
        assert_eq!(why, "forbidden target: 2001::f5ff:fffe (Teredo of 10.0.0.1, private address)");
        let why = check_address("::ffff:127.0.0.1".parse().unwrap()).unwrap_err().to_string();
        assert_eq!(why, "forbidden target: ::ffff:127.0.0.1 (IPv4-mapped of 127.0.0.1, loopback address)");
    }
}
