//! The dead-letter reader shared by the failure handler and `replay`.

use rdkafka::message::{Message, OwnedMessage};

use crate::event::headers::RecordHeaders;
use crate::event::hop::{header, headers_of, Coordinates, Hop};
use crate::event::{Decoded, Endpoints};
use crate::route::outcome::DeadReason;

/// What the failure handler and `replay` read off a record of the dead topic.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// Where the dead record itself was read.
    pub here: Coordinates,
    /// The hop state it carries (origin, attempts, event time).
    pub hop: Hop,
    /// The event's `id`, else the default id of its origin record.
    pub id: String,
    /// The endpoint label, `unknown` when missing.
    pub endpoint: String,
    /// `None` when the header is missing or not a known reason.
    pub reason: Option<DeadReason>,
    pub last_error: Option<String>,
    pub last_status: Option<u16>,
    /// When it was written to the dead topic (ms), if the record says.
    pub at_ms: Option<i64>,
    /// Its headers, for re-producing it.
    pub headers: RecordHeaders,
}

impl DeadLetter {
    pub fn read(record: &OwnedMessage) -> DeadLetter {
        let headers = headers_of(record);
        let here = Coordinates::of(record);
        let at_ms = record.timestamp().to_millis();
        let hop = Hop::read(&headers, here.clone(), at_ms);
        let get = |name: &str| headers.last(name).map(String::from);
        DeadLetter {
            id: crate::event::event_id(record.payload()).unwrap_or_else(|| hop.origin.default_id()),
            endpoint: get(header::ENDPOINT).unwrap_or_else(|| "unknown".into()),
            reason: get(header::REASON).and_then(|r| DeadReason::parse(&r)),
            last_error: get(header::LAST_ERROR),
            last_status: hop.last_status,
            at_ms,
            here,
            hop,
            headers,
        }
    }

    /// The endpoint of the fan-out leg this dead record is, or `None` when it
    /// is not a leg: its value fans out by subscription (read as the relay
    /// reads it, with its CloudEvents headers) and the relay named the leg's
    /// endpoint. A fan-out record dead before any leg (over `max_fanout`, a
    /// header bomb, a panic) is named `invalid` and is no leg: replayed, it fans out.
    pub fn leg<'a>(&'a self, endpoints: &Endpoints, value: &[u8]) -> Option<&'a str> {
        let endpoint = self.headers.last(header::ENDPOINT).filter(|e| *e != "invalid")?;
        let decoded = endpoints.decode_record(&self.headers, value, || self.hop.origin.default_id());
        matches!(decoded, Ok(Decoded::Fanout(_))).then_some(endpoint)
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::message::OwnedHeaders;

    use super::*;
    use crate::event::hop::{Destination, RelayHeaders};
    use crate::event::trust::replay_headers;

    fn pairs(headers: &OwnedHeaders) -> Vec<(String, String)> {
        let read = RecordHeaders::read(headers.as_borrowed());
        read.iter()
            .map(|(k, v)| (String::from_utf8_lossy(k).into_owned(), String::from_utf8_lossy(v.unwrap()).into_owned()))
            .collect()
    }

    fn values<'a>(pairs: &'a [(String, String)], name: &str) -> Vec<&'a str> {
        pairs.iter().filter(|(key, _)| key == name).map(|(_, v)| v.as_str()).collect()
    }

    #[test]
    fn a_dead_letter_reads_back_what_the_relay_wrote() {
        let origin = Coordinates { topic: "orders".into(), partition: 3, offset: 41 };
        let mut hop = Hop::read(&RecordHeaders::default(), origin, Some(1_000));
        hop.attempts = 4;
        let relay = RelayHeaders {
            hop: &hop,
            destination: Destination::Dead { reason: DeadReason::MaxAttempts },
            last_status: Some(500),
            last_error: Some("HTTP 500: boom"),
            endpoint: "billing",
        };
        let headers = relay.write(&RecordHeaders::from_pairs([("x-trace", "1")]));
        let value = br#"{"endpoint":"billing","payload":1}"#;
        let record = OwnedMessage::new(
            Some(value.to_vec()),
            Some(b"k".to_vec()),
            "webhooks.dead".into(),
            rdkafka::Timestamp::CreateTime(9_000),
            0,
            7,
            Some(headers),
        );
        let dead = DeadLetter::read(&record);
        assert_eq!(dead.id, "orders-3-41", "no id in the value: the origin's default id");
        assert_eq!(dead.endpoint, "billing");
        assert_eq!(dead.reason, Some(DeadReason::MaxAttempts));
        assert_eq!((dead.last_status, dead.last_error.as_deref()), (Some(500), Some("HTTP 500: boom")));
        assert_eq!((dead.hop.attempts, dead.hop.event_ms, dead.at_ms), (4, Some(1_000), Some(9_000)));
        assert_eq!(dead.here, Coordinates { topic: "webhooks.dead".into(), partition: 0, offset: 7 });

        let replayed = pairs(&replay_headers(&dead.headers, &dead.hop, &dead.here, 50_000, value, None, None));
        let get = |k: &str| values(&replayed, k);
        assert_eq!(get("x-trace"), vec!["1"], "foreign headers are kept");
        assert!(get(header::ATTEMPT).is_empty() && get(header::REASON).is_empty(), "the count starts again");
        assert_eq!(get(header::DEADLINE_MS), vec!["50000"]);
        assert_eq!(get(header::ORIGIN_OFFSET), vec!["41"]);
        assert_eq!(get(header::REPLAYED_FROM), vec!["webhooks.dead/0/7"]);
        assert_eq!(get(header::EVENT_MS), vec!["1000"]);
        assert!(get(header::REPLAY_SIGNATURE).is_empty(), "no key, no seal");
    }

    #[test]
    fn a_dead_fan_out_leg_is_known_by_its_value_and_endpoint() {
        let endpoints = crate::event::tests::endpoints_with(1024);
        let letter = |endpoint: Option<&str>| {
            let headers = endpoint.map_or_else(OwnedHeaders::new, |e| {
                OwnedHeaders::new().insert(rdkafka::message::Header { key: header::ENDPOINT, value: Some(e) })
            });
            let record = OwnedMessage::new(
                None,
                None,
                "webhooks.dead".into(),
                rdkafka::Timestamp::CreateTime(9_000),
                0,
                7,
                Some(headers),
            );
            DeadLetter::read(&record)
        };
        let fans_out = br#"{"type":"invoice.paid","payload":1}"#;
        let named = br#"{"endpoint":"billing","payload":1}"#;
        let cases: &[(Option<&str>, &[u8], Option<&str>)] = &[
            (Some("b"), fans_out, Some("b")),
            (Some("invalid"), fans_out, None),
            (None, fans_out, None),
            (Some("billing"), named, None),
            (Some("b"), b"not json", None),
        ];
        for &(endpoint, value, expected) in cases {
            assert_eq!(letter(endpoint).leg(&endpoints, value), expected, "{endpoint:?} {value:?}");
        }
    }
}
