//! W3C trace context across the hop: a record's `traceparent` and `tracestate`
//! headers go on every attempt's request.
//!
//! Tier and dead records keep them already (the relay copies every header
//! that is not its own), so every hop and every retry carries the same trace.
//! The record's headers win over the event's JSON `headers`: the record
//! header is what the producer's tracing set, the JSON is the producer's
//! business payload. A `traceparent` that is not W3C-valid is ignored (the
//! W3C rule for a malformed parent: start over rather than guess), and then
//! the event's own headers stay as they are.

use reqwest::header::{HeaderName, HeaderValue};

use crate::event::headers::RecordHeaders;

/// Header names (W3C Trace Context, level 1).
pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";

/// The longest `tracestate` passed on (W3C: at least 512 bytes must be kept;
/// 32 members of up to 256 bytes each is the most there can be).
const MAX_TRACESTATE: usize = 8192;

/// The trace context a record carries, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    pub traceparent: HeaderValue,
    pub tracestate: Option<HeaderValue>,
}

impl TraceContext {
    /// The context of a record's headers (names compared without case; the
    /// last of repeated headers counts), if it has a valid `traceparent`.
    pub fn of(headers: &RecordHeaders) -> Option<TraceContext> {
        let last = |name: &str| {
            let found = headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name.as_bytes())).last();
            found.map(|(_, v)| v.unwrap_or_default())
        };
        let parent = last(TRACEPARENT)?;
        if !valid_traceparent(parent) {
            return None;
        }
        let traceparent = HeaderValue::from_bytes(parent).ok()?;
        let tracestate = last(TRACESTATE)
            .filter(|v| !v.is_empty() && v.len() <= MAX_TRACESTATE)
            .and_then(|v| HeaderValue::from_bytes(v).ok());
        Some(TraceContext { traceparent, tracestate })
    }

    /// The trace id (32 lowercase hex digits), for logs.
    pub fn trace_id(&self) -> &str {
        // Bytes 3..35 are hex by validation, but not the whole value: a later
        // version's tail may hold any header bytes (obs-text too), which
        // `to_str` refuses; so only the id's own bytes are read.
        std::str::from_utf8(self.traceparent.as_bytes().get(3..35).unwrap_or_default()).unwrap_or_default()
    }

    /// Puts this context on a request's headers, replacing the event's own
    /// `traceparent` and `tracestate` (a `tracestate` belongs to its parent,
    /// so the event's is dropped even when the record has none).
    pub fn apply(&self, headers: &mut Vec<(HeaderName, HeaderValue)>) {
        headers.retain(|(name, _)| name != TRACEPARENT && name != TRACESTATE);
        headers.push((HeaderName::from_static(TRACEPARENT), self.traceparent.clone()));
        if let Some(state) = &self.tracestate {
            headers.push((HeaderName::from_static(TRACESTATE), state.clone()));
        }
    }
}

/// W3C `traceparent`: `version-traceid-parentid-flags`, lowercase hex, 2-32-16-2
/// digits; version `ff` and all-zero ids are invalid; a version above `00`
/// may carry more fields after the flags (`-...`), version `00` may not.
pub fn valid_traceparent(value: &[u8]) -> bool {
    let hex = |s: &[u8]| s.iter().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b));
    let zero = |s: &[u8]| s.iter().all(|b| *b == b'0');
    if value.len() < 55 {
        return false;
    }
    let (version, trace_id, parent_id, flags) = (&value[0..2], &value[3..35], &value[36..52], &value[53..55]);
    let dashes = value[2] == b'-' && value[35] == b'-' && value[52] == b'-';
    let tail_ok = match value.len() {
        55 => true,
        _ => version != b"00" && value[55] == b'-',
    };
    dashes
        && tail_ok
        && hex(version)
        && version != b"ff"
        && hex(trace_id)
        && !zero(trace_id)
        && hex(parent_id)
        && !zero(parent_id)
        && hex(flags)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn h(k: &str, v: &str) -> (String, Vec<u8>) {
        (k.to_string(), v.as_bytes().to_vec())
    }

    #[test]
    fn traceparent_validity() {
        let cases = [
            (PARENT, true),
            ("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more", true),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more", false),
            ("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", false),
            ("00-00000000000000000000000000000000-00f067aa0ba902b7-01", false),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", false),
            ("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", false),
            ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7", false),
            ("00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", false),
            ("", false),
        ];
        for (value, valid) in cases {
            assert_eq!(valid_traceparent(value.as_bytes()), valid, "{value}");
        }
    }

    #[test]
    fn the_record_context_wins_over_the_event_headers() {
        let context = TraceContext::of(&RecordHeaders::from_pairs([
            h("other", "x"),
            h("Traceparent", PARENT),
            h("tracestate", "a=1"),
        ]))
        .unwrap();
        assert_eq!(context.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        let value = |s: &'static str| HeaderValue::from_static(s);
        let mut headers = vec![
            (HeaderName::from_static("traceparent"), value("00-11111111111111111111111111111111-2222222222222222-00")),
            (HeaderName::from_static("tracestate"), value("event=1")),
            (HeaderName::from_static("x-kept"), value("yes")),
        ];
        context.apply(&mut headers);
        let shown: Vec<_> = headers.iter().map(|(k, v)| (k.as_str(), v.to_str().unwrap())).collect();
        assert_eq!(shown, vec![("x-kept", "yes"), ("traceparent", PARENT), ("tracestate", "a=1")]);

        // Without its own tracestate, the record's parent still drops the event's state.
        let context = TraceContext::of(&RecordHeaders::from_pairs([h("traceparent", PARENT)])).unwrap();
        let mut headers = vec![(HeaderName::from_static("tracestate"), value("event=1"))];
        context.apply(&mut headers);
        assert_eq!(headers.len(), 1);
        assert_eq!(headers[0].1, PARENT);
    }

    /// Found by `fuzz_trace_context_from_any_headers`: `trace_id` read the id out
    /// of the whole value as text, and a later version's tail with a byte of
    /// 0x80-0xFF (a valid header value) made it panic in the record's span.
    #[test]
    fn a_later_version_with_a_non_ascii_tail_has_a_trace_id() {
        let parent = b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-t\x80il";
        let context = TraceContext::of(&RecordHeaders::from_pairs([("traceparent", &parent[..])])).unwrap();
        assert_eq!(context.traceparent.as_bytes(), parent, "the tail is carried as it came");
        assert_eq!(context.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
    }

    #[test]
    fn no_context_without_a_valid_traceparent() {
        assert_eq!(TraceContext::of(&RecordHeaders::default()), None);
        assert_eq!(TraceContext::of(&RecordHeaders::from_pairs([h("tracestate", "a=1")])), None);
        assert_eq!(
            TraceContext::of(&RecordHeaders::from_pairs([h("traceparent", "garbage"), h("tracestate", "a=1")])),
            None
        );
        // The last of repeated headers counts.
        let context =
            TraceContext::of(&RecordHeaders::from_pairs([h("traceparent", "garbage"), h("traceparent", PARENT)]))
                .unwrap();
        assert_eq!(context.traceparent, PARENT);
    }
}
