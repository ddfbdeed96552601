//! The trust boundary of relay headers. The tier and dead topics are written
//! by the relay only, so their relay headers are believed. An event topic is
//! written by producers, so its relay headers are not
//! ([`trusted_on_event_topic`]): only the ones `replay` writes
//! ([`replay_headers`]), and only under a valid seal ([`crate::event::seal`]).
//! A replayed fan-out leg also has its endpoint sealed ([`LEG`]), so the relay
//! re-drives that leg alone instead of fanning the event out again.

use rdkafka::message::OwnedHeaders;

use crate::event::headers::RecordHeaders;
use crate::event::hop::{foreign, header, Coordinates, Hop, Writer};
use crate::event::seal::ReplayKey;

/// The headers `replay` writes and seals, in the order they are sealed.
pub const SEALED: [&str; 6] = [
    header::ORIGIN_TOPIC,
    header::ORIGIN_PARTITION,
    header::ORIGIN_OFFSET,
    header::DEADLINE_MS,
    header::EVENT_MS,
    header::REPLAYED_FROM,
];

/// Sealed after [`SEALED`] when the replayed record is one leg of a fan-out:
/// the leg's endpoint. Only when present, so that a replay that is not a leg
/// is sealed (and verified) exactly as before legs existed.
pub const LEG: &str = header::ENDPOINT;

/// The fields a seal covers, in order: [`SEALED`]'s, then the leg's endpoint if any.
fn sealed_fields<'a>(values: &'a [String], leg: Option<&'a str>) -> Vec<(&'a str, &'a [u8])> {
    let mut fields: Vec<(&str, &[u8])> = SEALED.iter().zip(values).map(|(n, f)| (*n, f.as_bytes())).collect();
    fields.extend(leg.map(|leg| (LEG, leg.as_bytes())));
    fields
}

/// The headers of a replayed record: the original non-relay ones, the origin,
/// a fresh deadline, no attempt count, where it was replayed from, and for a
/// fan-out leg its endpoint; with a `key`, the seal over those and `value`,
/// without which the relay ignores them.
pub fn replay_headers(
    original: &RecordHeaders,
    hop: &Hop,
    dead: &Coordinates,
    deadline_ms: i64,
    value: &[u8],
    leg: Option<&str>,
    key: Option<&ReplayKey>,
) -> OwnedHeaders {
    // The end-to-end latency of a replayed delivery still counts from the original event.
    let event_ms = hop.event_ms.map(|ms| ms.to_string()).unwrap_or_default();
    let fields = [
        hop.origin.topic.clone(),
        hop.origin.partition.to_string(),
        hop.origin.offset.to_string(),
        deadline_ms.to_string(),
        event_ms,
        format!("{}/{}/{}", dead.topic, dead.partition, dead.offset),
    ];
    let mut out = Writer(foreign(original, SEALED.len() + 2));
    for (name, field) in SEALED.iter().zip(&fields).filter(|(_, field)| !field.is_empty()) {
        out.put(name, field);
    }
    if let Some(leg) = leg {
        out.put(LEG, leg);
    }
    if let Some(key) = key {
        out.put(header::REPLAY_SIGNATURE, key.seal(&sealed_fields(&fields, leg), value));
    }
    out.0
}

/// The headers of an event-topic record the relay may believe: every foreign
/// one, and of its own only those `replay` wrote, when their seal holds under
/// `key`. Also says how many relay headers were ignored (a producer's forgery,
/// or a replay without a key). A [`LEG`] header is part of the seal whenever it
/// is present: adding one to a sealed replay, or taking one off, breaks the seal.
pub fn trusted_on_event_topic(
    headers: &RecordHeaders,
    value: &[u8],
    key: Option<&ReplayKey>,
) -> (RecordHeaders, usize) {
    let sealed = key.is_some_and(|key| {
        let values: Vec<String> = SEALED.iter().map(|name| headers.last(name).unwrap_or_default().into()).collect();
        let fields = sealed_fields(&values, headers.last(LEG));
        headers.last(header::REPLAY_SIGNATURE).is_some_and(|seal| key.verify(&fields, value, seal))
    });
    let prefix = header::PREFIX.as_bytes();
    let ours = |name: &[u8]| SEALED.iter().chain([&LEG]).any(|s| s.as_bytes() == name);
    let believed = |name: &[u8]| !name.starts_with(prefix) || (sealed && ours(name));
    let (kept, ignored) = headers.split(believed);
    // The seal itself is not "ignored": it did its job.
    let seal = header::REPLAY_SIGNATURE.as_bytes();
    let ignored = ignored.iter().filter(|(name, _)| !(sealed && *name == seal)).count();
    (kept, ignored)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owned(headers: &OwnedHeaders) -> RecordHeaders {
        RecordHeaders::read(headers.as_borrowed())
    }

    #[test]
    fn a_producer_cannot_set_the_relay_state_on_an_event_topic() {
        let here = Coordinates { topic: "webhooks.events".into(), partition: 0, offset: 5 };
        let forged = RecordHeaders::from_pairs([
            ("traceparent", "00-abc"),
            (header::ATTEMPT, "99"),
            (header::DEADLINE_MS, "1"),
            (header::ORIGIN_TOPIC, "webhooks.events"),
            (header::ORIGIN_PARTITION, "0"),
            (header::ORIGIN_OFFSET, "1"),
            (header::REPLAY_SIGNATURE, "Zm9yZ2Vk"),
        ]);
        let key = ReplayKey::new("0123456789abcdef-replay");
        for key in [None, Some(&key)] {
            let (kept, ignored) = trusted_on_event_topic(&forged, b"{}", key);
            assert_eq!(kept, RecordHeaders::from_pairs([("traceparent", "00-abc")]));
            assert_eq!(ignored, 6);
            let hop = Hop::read(&kept, here.clone(), Some(7));
            assert_eq!((hop.attempts, hop.deadline_ms), (0, None));
            assert_eq!(hop.origin.default_id(), "webhooks.events-0-5", "its own id, not offset 1's");
        }
    }

    #[test]
    fn a_sealed_replay_keeps_its_origin_and_deadline() {
        let key = ReplayKey::new("0123456789abcdef-replay");
        let origin = Coordinates { topic: "orders".into(), partition: 3, offset: 41 };
        let hop = Hop::read(&RecordHeaders::default(), origin, Some(1_000));
        let dead = Coordinates { topic: "webhooks.dead".into(), partition: 0, offset: 7 };
        let value = br#"{"url":"https://a.example/","payload":1}"#;
        let original = RecordHeaders::from_pairs([("x-trace", "1")]);
        let replayed = owned(&replay_headers(&original, &hop, &dead, 50_000, value, None, Some(&key)));
        let here = Coordinates { topic: "orders".into(), partition: 1, offset: 900 };

        let (kept, ignored) = trusted_on_event_topic(&replayed, value, Some(&key));
        assert_eq!(ignored, 0);
        let read = Hop::read(&kept, here.clone(), Some(60_000));
        assert_eq!(read.origin.default_id(), "orders-3-41", "the id survives the replay");
        assert_eq!((read.deadline_ms, read.event_ms, read.attempts), (Some(50_000), Some(1_000), 0));

        // The same headers on another value, under another key, or without a key are not believed.
        for (value, key) in [
            (&b"{}"[..], Some(&key)),
            (&value[..], Some(&ReplayKey::new("another key, 16+ bytes"))),
            (&value[..], None),
        ] {
            let (kept, ignored) = trusted_on_event_topic(&replayed, value, key);
            assert_eq!(ignored, SEALED.len() + 1);
            assert_eq!(Hop::read(&kept, here.clone(), None).origin.default_id(), "orders-1-900");
        }
        // Changing one sealed header breaks the seal.
        let moved = RecordHeaders::from_pairs(
            replayed
                .iter()
                .map(|(k, v)| (k.to_vec(), v.unwrap_or_default().to_vec()))
                .chain([(header::ORIGIN_OFFSET.as_bytes().to_vec(), b"40".to_vec())]),
        );
        assert_eq!(Hop::read(&trusted_on_event_topic(&moved, value, Some(&key)).0, here, None).origin.offset, 900);
    }

    #[test]
    fn a_replayed_leg_keeps_its_endpoint_under_the_seal() {
        let key = ReplayKey::new("0123456789abcdef-replay");
        let origin = Coordinates { topic: "orders".into(), partition: 0, offset: 9 };
        let hop = Hop::read(&RecordHeaders::default(), origin, Some(1_000));
        let dead = Coordinates { topic: "webhooks.dead".into(), partition: 0, offset: 3 };
        let value = br#"{"type":"invoice.paid","payload":1}"#;
        let leg = owned(&replay_headers(&RecordHeaders::default(), &hop, &dead, 50_000, value, Some("b"), Some(&key)));
        let (kept, ignored) = trusted_on_event_topic(&leg, value, Some(&key));
        assert_eq!((kept.last(LEG), ignored), (Some("b"), 0), "the leg's endpoint is believed");

        // Without a key, or with the endpoint changed, added or taken off, no relay header is believed.
        let edit = |headers: &RecordHeaders, leg: Option<&str>| {
            let others = headers.iter().filter(|(k, _)| *k != LEG.as_bytes());
            let pairs = others.map(|(k, v)| (k.to_vec(), v.unwrap_or_default().to_vec()));
            RecordHeaders::from_pairs(pairs.chain(leg.map(|l| (LEG.as_bytes().to_vec(), l.as_bytes().to_vec()))))
        };
        let not_a_leg = owned(&replay_headers(&RecordHeaders::default(), &hop, &dead, 50_000, value, None, Some(&key)));
        for (headers, key) in [
            (leg.clone(), None),
            (edit(&leg, Some("a")), Some(&key)),
            (edit(&leg, None), Some(&key)),
            (edit(&not_a_leg, Some("b")), Some(&key)),
        ] {
            let (kept, _) = trusted_on_event_topic(&headers, value, key);
            assert_eq!(kept.last(LEG), None, "{headers:?}");
            assert_eq!(kept.last(header::ORIGIN_OFFSET), None, "the seal is broken: none of its headers holds");
        }
        // A replay that is not a leg verifies as it did before legs were sealed.
        assert_eq!(trusted_on_event_topic(&not_a_leg, value, Some(&key)).1, 0);
    }
}
