//! One attempt-log record: the JSON the relay writes and `trace` reads back (SPEC "What happened to event X").

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize, Serializer};

/// The largest `error`, in bytes (SPEC: at most 1 KiB).
pub const MAX_ERROR_BYTES: usize = 1024;

/// What became of the record at this step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Logged {
    Delivered,
    /// Failed and routed to a tier (or retried in place, for an ordered key).
    Retry,
    Dead,
    /// Passed on without an attempt: circuit open, paced, overflow.
    Deferred,
}

impl Logged {
    pub fn as_str(self) -> &'static str {
        match self {
            Logged::Delivered => "delivered",
            Logged::Retry => "retry",
            Logged::Dead => "dead",
            Logged::Deferred => "deferred",
        }
    }
}

/// `topic/partition/offset`, written without an intermediate string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct At<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
}

impl<'a> At<'a> {
    /// Where `record` was read.
    pub fn of(record: &'a impl rdkafka::message::Message) -> At<'a> {
        At { topic: record.topic(), partition: record.partition(), offset: record.offset() }
    }
}

impl fmt::Display for At<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.topic, self.partition, self.offset)
    }
}

impl Serialize for At<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// One record as written: borrowed from the relay's own state, so that writing
/// it costs one serialization into a reused buffer. Field order is the SPEC's.
#[derive(Debug, Clone, Serialize)]
pub struct Written<'a> {
    pub id: &'a str,
    pub endpoint: &'a str,
    pub attempt: u32,
    pub at: &'a str,
    pub outcome: Logged,
    pub status: Option<u16>,
    pub duration_ms: Option<u64>,
    #[serde(serialize_with = "scrubbed")]
    pub error: Option<&'a str>,
    pub tier: Option<&'a str>,
    pub reason: Option<&'a str>,
    pub record: Option<At<'a>>,
    pub to: Option<At<'a>>,
    pub relay: &'a str,
}

/// One record as read back by `trace` (and by anyone: every field is plain JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Read {
    pub id: String,
    pub endpoint: String,
    pub attempt: u32,
    pub at: String,
    pub outcome: Logged,
    pub status: Option<u16>,
    pub duration_ms: Option<u64>,
    pub error: Option<String>,
    pub tier: Option<String>,
    pub reason: Option<String>,
    pub record: Option<String>,
    pub to: Option<String>,
    pub relay: String,
}

/// Milliseconds of an attempt, for `duration_ms`.
pub fn millis(took: Duration) -> u64 {
    took.as_millis().min(u64::MAX as u128) as u64
}

fn scrubbed<S: Serializer>(error: &Option<&str>, serializer: S) -> Result<S::Ok, S::Error> {
    match error {
        Some(text) => serializer.serialize_str(&scrub(text)),
        None => serializer.serialize_none(),
    }
}

/// An error as the log may keep it: one line, every URL without its userinfo,
/// query and fragment (where tokens and passwords ride), at most
/// [`MAX_ERROR_BYTES`] cut on a character boundary. Pure.
pub fn scrub(text: &str) -> Cow<'_, str> {
    let clean = text.len() <= MAX_ERROR_BYTES && !text.contains("://") && !text.contains(['\n', '\r', '\t']);
    if clean {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len().min(MAX_ERROR_BYTES));
    let mut rest = text;
    while let Some(found) = rest.find("://") {
        // The scheme runs back to the last character that cannot be in one.
        let scheme_start = rest[..found]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
            .map_or(0, |i| i + 1);
        let after = found + 3;
        let end = rest[after..].find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | '`'));
        let end = end.map_or(rest.len(), |e| after + e);
        out.push_str(&rest[..scheme_start]);
        out.push_str(&without_secrets(&rest[scheme_start..end], found - scheme_start));
        rest = &rest[end..];
    }
    out.push_str(rest);
    let one_line: String = out.split_whitespace().collect::<Vec<_>>().join(" ");
    Cow::Owned(crate::event::hop::truncate(&one_line, MAX_ERROR_BYTES).to_string())
}

/// `scheme://user:pass@host/path?query#fragment` -> `scheme://host/path`;
/// `colon` is where `://` starts. Punctuation that closes a sentence or a
/// parenthesis (reqwest writes "for url (...)") is not part of the URL.
fn without_secrets(url: &str, colon: usize) -> String {
    let body = url.trim_end_matches([')', ']', ',', ';', '.']);
    let trailing = &url[body.len()..];
    let authority_start = colon + 3;
    let rest = &body[authority_start..];
    let (authority, tail) = rest.split_at(rest.find(['/', '?', '#']).unwrap_or(rest.len()));
    let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    let path = tail.split(['?', '#']).next().unwrap_or_default();
    format!("{}{host}{path}{trailing}", &body[..authority_start])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_lose_userinfo_query_and_newlines() {
        let cases = [
            ("HTTP 503", "HTTP 503"),
            (
                "error sending request for url (https://user:pw@hooks.example.com/in?token=s3cret#frag)",
                "error sending request for url (https://hooks.example.com/in)",
            ),
            ("posting to http://h.example/?a=1 failed", "posting to http://h.example/ failed"),
            ("see https://a:b@h.example:8443", "see https://h.example:8443"),
            ("line one\nline two\r\n\tthree", "line one line two three"),
            ("bad url: x://tok@h/p?q", "bad url: x://h/p"),
        ];
        for (raw, expected) in cases {
            assert_eq!(scrub(raw), expected, "{raw:?}");
        }
    }

    #[test]
    fn errors_are_at_most_one_kib_on_a_char_boundary() {
        let long = "é".repeat(2000);
        let cut = scrub(&long);
        assert!(cut.len() <= MAX_ERROR_BYTES && cut.len() > MAX_ERROR_BYTES - 2);
        assert!(cut.chars().all(|c| c == 'é'));
    }

    #[test]
    fn a_record_serializes_with_the_spec_fields_and_reads_back() {
        let record = At { topic: "webhooks.events", partition: 2, offset: 41 };
        let to = At { topic: "webhooks.retry-1m", partition: 0, offset: 7 };
        let written = Written {
            id: "evt-1",
            endpoint: "billing",
            attempt: 1,
            at: "2026-12-04T18:30:00.120Z",
            outcome: Logged::Retry,
            status: Some(503),
            duration_ms: Some(12),
            error: Some("HTTP 503 from https://u:p@billing.example/?token=x"),
            tier: Some("webhooks.retry-1m"),
            reason: None,
            record: Some(record),
            to: Some(to),
            relay: "relay-0",
        };
        let json = serde_json::to_string(&written).unwrap();
        assert_eq!(
            json,
            "{\"id\":\"evt-1\",\"endpoint\":\"billing\",\"attempt\":1,\"at\":\"2026-12-04T18:30:00.120Z\",\
             \"outcome\":\"retry\",\"status\":503,\"duration_ms\":12,\"error\":\"HTTP 503 from https://billing.example/\",\
             \"tier\":\"webhooks.retry-1m\",\"reason\":null,\"record\":\"webhooks.events/2/41\",\
             \"to\":\"webhooks.retry-1m/0/7\",\"relay\":\"relay-0\"}"
        );
        let read: Read = serde_json::from_str(&json).unwrap();
        assert_eq!((read.outcome, read.to.as_deref()), (Logged::Retry, Some("webhooks.retry-1m/0/7")));
    }
}
