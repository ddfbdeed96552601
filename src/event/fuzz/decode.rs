//! The decoder (`Endpoints::decode`) over arbitrary bytes, arbitrary JSON and
//! near-valid events: it never panics; what it accepts holds SPEC's rules (id,
//! URL, headers, sizes); what it refuses says why on one line, without the
//! secrets an event may carry in its URL query or header values.

use std::time::Duration;

use proptest::prelude::*;
use proptest::sample::select;
use serde_json::Value;

use super::config;
use super::events::{apply, broken, json, near_valid, valid, Break, MAX_PAYLOAD, SECRET};
use crate::endpoint::guard::{parse_target_url, RESERVED_HEADERS};
use crate::event::{Endpoints, Event, InvalidEvent};

/// The endpoint table every case decodes against.
fn endpoints() -> Endpoints {
    crate::event::tests::endpoints_with(MAX_PAYLOAD)
}

const DEFAULT_ID: &str = "t-0-7";

fn decode(value: &[u8]) -> Result<Event, InvalidEvent> {
    endpoints().decode(value, || DEFAULT_ID.to_string())
}

/// SPEC: an id is 1-256 bytes of visible ASCII.
fn spec_id(id: &str) -> bool {
    (1..=256).contains(&id.len()) && id.bytes().all(|b| (0x21..=0x7E).contains(&b))
}

/// What holds for every decode, whatever the input.
fn check(result: &Result<Event, InvalidEvent>) -> Result<(), TestCaseError> {
    match result {
        Ok(e) => {
            prop_assert!(spec_id(&e.id), "id {:?}", e.id);
            prop_assert!(matches!(e.url.scheme(), "http" | "https"));
            prop_assert!(e.url.host_str().is_some_and(|h| !h.is_empty()));
            prop_assert!(e.url.username().is_empty() && e.url.password().is_none());
            prop_assert!(parse_target_url(e.url.as_str()).is_ok(), "{} does not parse again", e.url);
            let mut names: Vec<&str> = e.headers.iter().map(|(n, _)| n.as_str()).collect();
            for (name, value) in &e.headers {
                prop_assert!(!RESERVED_HEADERS.contains(&name.as_str()), "reserved {name}");
                // RFC 9110 field content: no CR, LF, NUL or other control but tab (obs-text, 0x80-0xFF, is allowed).
                prop_assert!(value.as_bytes().iter().all(|b| *b == b'\t' || (*b >= 0x20 && *b != 0x7f)), "{value:?}");
            }
            names.sort_unstable();
            names.dedup();
            prop_assert_eq!(names.len(), e.headers.len(), "a header name twice");
            prop_assert!(e.body.len() <= MAX_PAYLOAD);
            prop_assert!(serde_json::from_slice::<&serde_json::value::RawValue>(&e.body).is_ok(), "body is JSON");
            prop_assert!(e.timeout > Duration::ZERO && e.timeout <= Duration::from_secs(300));
        }
        Err(e) => {
            let text = e.to_string();
            prop_assert!(!text.trim().is_empty(), "{e:?} has no reason");
            prop_assert!(!text.contains(['\n', '\r']), "{text:?} is not one line");
            prop_assert!(!text.contains(SECRET), "{text:?} shows a secret");
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(1000))]

    #[test]
    fn fuzz_decode_arbitrary_bytes(value in prop::collection::vec(any::<u8>(), 0..300)) {
        check(&decode(&value))?;
    }

    #[test]
    fn fuzz_decode_arbitrary_json(value in json()) {
        check(&decode(&serde_json::to_vec(&value).unwrap()))?;
    }
}

proptest! {
    #![proptest_config(config(500))]

    #[test]
    fn fuzz_decode_near_valid_events(value in near_valid()) {
        check(&decode(&value))?;
    }

    #[test]
    fn fuzz_decode_valid_events_as_written(valid in valid()) {
        let text = serde_json::to_vec(&Value::Object(valid.object.clone())).unwrap();
        let result = decode(&text);
        check(&result)?;
        let o = &valid.object;
        let payload = serde_json::to_string(&o["payload"]).unwrap();
        if payload.len() > MAX_PAYLOAD {
            prop_assert!(matches!(result, Err(InvalidEvent::PayloadTooLarge { .. })), "{result:?}");
            return Ok(());
        }
        let e = result.map_err(|e| TestCaseError::fail(format!("{e}")))?;
        prop_assert_eq!(&e.id, o.get("id").and_then(Value::as_str).unwrap_or(DEFAULT_ID));
        prop_assert_eq!(e.body, payload.into_bytes());
        match o.get("url").and_then(Value::as_str) {
            Some(url) => prop_assert_eq!(e.url, url::Url::parse(url).unwrap()),
            None => prop_assert_eq!(e.url.as_str(), "https://billing.example.com/hooks"),
        }
        let default_timeout = if o.contains_key("endpoint") { 3_000 } else { 5_000 };
        let timeout = o.get("timeout_ms").and_then(Value::as_u64).unwrap_or(default_timeout);
        prop_assert_eq!(e.timeout, Duration::from_millis(timeout));
        prop_assert_eq!(e.max_attempts, o.get("max_attempts").and_then(Value::as_u64).map(|n| n as u32));
        let retry = o.get("retry_until").and_then(Value::as_str).map(|t| crate::app::clock::parse_rfc3339_ms(t).unwrap());
        prop_assert_eq!(e.retry_until_ms, retry);
        // Each event header is sent under its lowercase name; of two that differ only in case,
        // the later in the decoder's (sorted) order wins.
        let given: std::collections::BTreeMap<&str, &str> = o
            .get("headers")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .map(|(n, v)| (n.as_str(), v.as_str().unwrap()))
            .collect();
        for name in given.keys() {
            let lower = name.to_ascii_lowercase();
            let later = given.iter().rev().find(|(n, _)| n.to_ascii_lowercase() == lower).unwrap().1;
            let sent = e.headers.iter().find(|(n, _)| n.as_str() == lower).map(|(_, v)| v.as_bytes());
            prop_assert_eq!(sent, Some(later.as_bytes()), "{}", name);
        }
    }

    #[test]
    fn fuzz_decode_one_broken_field_is_named((valid, how, value) in broken()) {
        let text = serde_json::to_vec(&Value::Object(apply(&valid, how, value))).unwrap();
        let result = decode(&text);
        check(&result)?;
        let err = match result {
            Ok(e) => return Err(TestCaseError::fail(format!("{how:?} accepted as {e:?}"))),
            Err(err) => err,
        };
        let expected = match how {
            Break::Id => matches!(err, InvalidEvent::Field { field: "id", .. }),
            Break::Url => matches!(err, InvalidEvent::Url(_)),
            Break::BothTargets | Break::NoTarget => matches!(err, InvalidEvent::Target),
            Break::UnknownEndpoint => matches!(err, InvalidEvent::UnknownEndpoint(_)),
            Break::NoPayload => matches!(err, InvalidEvent::MissingPayload),
            Break::HugePayload => matches!(err, InvalidEvent::PayloadTooLarge { .. }),
            Break::Header => matches!(err, InvalidEvent::Header(_)),
            Break::Timeout => matches!(err, InvalidEvent::Field { field: "timeout_ms", .. }),
            Break::RetryUntil => matches!(err, InvalidEvent::Field { field: "retry_until", .. }),
        };
        prop_assert!(expected, "{:?} gave {:?}", how, err);
    }

    #[test]
    fn fuzz_event_id_never_panics(value in prop_oneof![prop::collection::vec(any::<u8>(), 0..200), near_valid()]) {
        let id = crate::event::event_id(Some(&value));
        if let Ok(Event { id: decoded, .. }) = decode(&value) {
            // The failure handler names a dead letter by the id the decoder would have used.
            prop_assert!(id.is_none_or(|id| id == decoded));
        }
    }
}

proptest! {
    // Each case is a value of up to 300 KB: fewer of them by default.
    #![proptest_config(config(200))]

    #[test]
    fn fuzz_decode_deep_nesting_is_refused_without_overflow(
        depth in 1usize..50_000,
        open in select(vec!["[", "{\"a\":"]),
        place in select(vec!["payload", "id", "headers", "extra"]),
    ) {
        let close = if open == "[" { "]" } else { "}" };
        let nested = format!("{}1{}", open.repeat(depth), close.repeat(depth));
        let value = match place {
            "payload" => format!(r#"{{"url":"https://a.example/","payload":{nested}}}"#),
            _ => format!(r#"{{"url":"https://a.example/","payload":1,"{place}":{nested}}}"#),
        };
        let result = decode(value.as_bytes());
        check(&result)?;
        // serde_json's recursion limit (128) refuses a deep typed field before any
        // stack runs out; the payload (kept as raw text) and an unknown field are
        // skipped over without recursion, at any depth: the payload is the body as written.
        match place {
            "id" | "headers" if depth > 200 => prop_assert!(result.is_err()),
            "payload" => prop_assert!(
                result.is_ok() || matches!(result, Err(InvalidEvent::PayloadTooLarge { .. })),
                "{:?}", result.err()
            ),
            _ => {}
        }
        let _ = crate::event::event_id(Some(value.as_bytes()));
    }
}
