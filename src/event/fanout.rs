//! Events that name no receiver (SPEC "Event types, subscriptions, fan-out"):
//! an envelope with a `type` and neither `url` nor `endpoint`, or a
//! CloudEvent. Such an event goes to every subscribed endpoint, one leg each;
//! [`Endpoints::leg`] makes the [`Event`] of one leg, sharing the payload.

use std::sync::Arc;

use super::attributes::Attributes;
use super::cloudevents;
use super::headers::RecordHeaders;
use super::{Endpoints, Event, InvalidEvent, Own};

/// A record's event: for one receiver, or for every subscribed endpoint.
#[derive(Debug, Clone)]
pub enum Decoded {
    /// It names its `url` or `endpoint`.
    One(Event),
    /// It fans out by subscription.
    Fanout(Fanout),
}

/// An event that fans out: what every leg shares.
#[derive(Debug, Clone)]
pub struct Fanout {
    /// Read strictly: its `type` is set.
    pub attributes: Attributes,
    /// The payload, held once for every leg (a clone is a reference count).
    pub body: bytes::Bytes,
    pub own: Own,
}

impl Endpoints {
    /// Decodes a record: a CloudEvent (binary or structured mode, by its
    /// headers and value) or hookrelay's envelope. `default_id` is used when
    /// an envelope has no `id`.
    pub fn decode_record(
        &self,
        headers: &RecordHeaders,
        value: &[u8],
        default_id: impl FnOnce() -> String,
    ) -> Result<Decoded, InvalidEvent> {
        let Some(mode) = cloudevents::mode(headers, value) else {
            return self.decode_envelope(value, default_id);
        };
        let event = cloudevents::read(mode, headers, value)?;
        if event.data.len() > self.max_payload_bytes {
            return Err(InvalidEvent::PayloadTooLarge { size: event.data.len(), limit: self.max_payload_bytes });
        }
        let own = Own { id: event.id, headers: Vec::new(), timeout: None, retry_until_ms: None, max_attempts: None };
        Ok(Decoded::Fanout(Fanout { attributes: event.attributes, body: event.data, own }))
    }

    /// Whether the named endpoint (file, else registry) keeps its keys' order.
    pub fn ordered(&self, endpoint: &str) -> bool {
        match self.named.get(endpoint) {
            Some(named) => named.ordered,
            None => self.registry.as_ref().and_then(|r| r.lookup(endpoint)).is_some_and(|e| e.ordered),
        }
    }

    /// The leg of `fanout` to the named endpoint (file, else registry): the
    /// endpoint's URL, secrets, headers and timeout, the event's own headers
    /// and timeout winning, and the shared payload.
    pub fn leg(&self, fanout: &Fanout, endpoint: &str) -> Result<Event, InvalidEvent> {
        let target = self.named_target(endpoint)?;
        let name = Some(Arc::clone(&target.endpoint_key));
        Ok(self.event_of(target, fanout.own.clone(), name, fanout.body.clone(), fanout.attributes.clone(), 0))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::event::tests::endpoints_with;

    fn decode(value: &str) -> Result<Decoded, InvalidEvent> {
        endpoints_with(64).decode_record(&RecordHeaders::default(), value.as_bytes(), || "t-0-7".into())
    }

    fn fanout(value: &str) -> Fanout {
        match decode(value) {
            Ok(Decoded::Fanout(f)) => f,
            other => panic!("{value} gave {other:?}"),
        }
    }

    #[test]
    fn a_type_without_a_receiver_fans_out() {
        let f = fanout(
            r#"{"type":"invoice.paid","attributes":{"tenant":"acme"},"payload":{"n":1},"headers":{"x-a":"1"},"timeout_ms":250}"#,
        );
        assert_eq!(f.attributes.r#type.as_deref(), Some("invoice.paid"));
        assert_eq!(f.own.id, "t-0-7");
        assert_eq!(&f.body[..], br#"{"n":1}"#);
        assert_eq!(f.attributes.extensions["tenant"], "acme");
        let leg = endpoints_with(64).leg(&f, "billing").unwrap();
        assert_eq!(leg.url.as_str(), "https://billing.example.com/hooks");
        assert_eq!(leg.endpoint_name.as_deref(), Some("billing"));
        assert_eq!(leg.timeout, Duration::from_millis(250), "the event's timeout wins");
        assert_eq!(leg.id, "t-0-7", "every leg has the event's id");
        assert_eq!(leg.body.as_ptr(), f.body.as_ptr(), "the payload is shared, not copied");
        let names: Vec<&str> = leg.headers.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["x-tenant", "webhook-type", "x-a"], "the endpoint's headers, the type, then the event's");
        assert!(matches!(endpoints_with(64).leg(&f, "nope"), Err(InvalidEvent::UnknownEndpoint(_))));
    }

    #[test]
    fn a_fan_out_event_is_read_strictly() {
        for (value, field) in [
            (r#"{"type":"a b","payload":1}"#, "type"),
            (r#"{"type":"t","attributes":{"A":"x"},"payload":1}"#, "attributes"),
            (r#"{"type":"t","source":1,"payload":1}"#, "source"),
        ] {
            assert!(matches!(decode(value), Err(InvalidEvent::Field { field: f, .. }) if f == field), "{value}");
        }
        assert!(matches!(decode(r#"{"type":"t"}"#), Err(InvalidEvent::MissingPayload)));
        assert!(matches!(decode(r#"{"payload":1}"#), Err(InvalidEvent::Target)), "no type: as before");
        assert!(
            matches!(decode(r#"{"url":"https://a/x","type":"a b","payload":1}"#), Ok(Decoded::One(e)) if e.ignored_attributes == 1),
            "beside a url: carried"
        );
        // The single-receiver decoder keeps refusing it until the relay fans out.
        assert!(matches!(
            endpoints_with(64).decode(br#"{"type":"t","payload":1}"#, || "x".into()),
            Err(InvalidEvent::Target)
        ));
    }

    #[test]
    fn cloudevents_fan_out() {
        let headers = RecordHeaders::from_pairs([
            ("ce_specversion", "1.0"),
            ("ce_id", "evt-9"),
            ("ce_source", "/s"),
            ("ce_type", "invoice.paid"),
        ]);
        let endpoints = endpoints_with(64);
        let Ok(Decoded::Fanout(f)) = endpoints.decode_record(&headers, br#"{"n":1}"#, || "x".into()) else {
            panic!("a binary-mode CloudEvent fans out")
        };
        assert_eq!((f.own.id.as_str(), &f.body[..]), ("evt-9", &br#"{"n":1}"#[..]));
        let structured = br#"{"specversion":"1.0","id":"evt-8","source":"/s","type":"t","data":[1]}"#;
        let Ok(Decoded::Fanout(f)) = endpoints.decode_record(&RecordHeaders::default(), structured, || "x".into())
        else {
            panic!("a structured CloudEvent fans out")
        };
        assert_eq!((f.own.id.as_str(), &f.body[..]), ("evt-8", &b"[1]"[..]));
        let big = format!(r#"{{"n":"{}"}}"#, "x".repeat(64));
        let too_large = endpoints.decode_record(&headers, big.as_bytes(), || "x".into());
        assert!(matches!(too_large, Err(InvalidEvent::PayloadTooLarge { .. })));
    }

    /// A leg's [`Event`] and its heap, the part of `relay::fanout::LEG_BYTES`
    /// besides the leg's future (3,184 B measured): within the 912 B left.
    #[test]
    fn a_leg_costs_what_the_budget_counts() {
        use std::mem::size_of;
        let f = fanout(
            r#"{"id":"evt-2026-12-04-000001","type":"invoice.paid","source":"/billing","attributes":{"tenant":"acme"},"payload":{"n":1},"headers":{"x-request-id":"5f0c2e7a-93b1"}}"#,
        );
        let leg = endpoints_with(64).leg(&f, "billing").unwrap();
        let strings = |s: &Option<String>| s.as_ref().map_or(0, String::capacity);
        let a = &leg.attributes;
        let heap = leg.id.capacity()
            + leg.url.as_str().len()
            + leg.headers.capacity() * size_of::<(reqwest::header::HeaderName, reqwest::header::HeaderValue)>()
            + leg.headers.iter().map(|(n, v)| n.as_str().len() + v.len()).sum::<usize>()
            + strings(&a.r#type)
            + strings(&a.source)
            + strings(&a.subject)
            // A BTreeMap entry: its two Strings and their bytes (a node holds up to 11).
            + a.extensions.iter().map(|(k, v)| 2 * size_of::<String>() + k.len() + v.len()).sum::<usize>();
        let event = size_of::<Event>() + heap;
        println!("a leg's Event: {} B + heap {heap} B = {event} B", size_of::<Event>());
        assert!(event <= crate::relay::fanout::LEG_BYTES - 3_184, "{event} B");
    }
}
