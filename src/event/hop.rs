//! The relay's headers on Kafka records: their names, the hop state read from them, the headers written on
//! tier, dead and replayed records, and the dead-letter reader shared by the failure handler and `replay`.
//!
//! Trust boundary: the tier and dead topics are written by the relay only, so
//! their relay headers are believed. An event topic is written by producers,
//! so its relay headers are not ([`trusted_on_event_topic`]): only the ones
//! `replay` writes, and only under a valid seal ([`crate::event::seal`]).

use rdkafka::message::{Header, Message, OwnedHeaders, OwnedMessage};

use crate::event::headers::{self, RecordHeaders};
use crate::event::seal::ReplayKey;
use crate::route::outcome::DeadReason;

/// Names of the headers the relay writes on tier and dead records.
pub mod header {
    pub const ATTEMPT: &str = "hookrelay-attempt";
    pub const FIRST_ATTEMPT_MS: &str = "hookrelay-first-attempt-ms";
    pub const DUE_MS: &str = "hookrelay-due-ms";
    pub const DEADLINE_MS: &str = "hookrelay-deadline-ms";
    pub const ORIGIN_TOPIC: &str = "hookrelay-origin-topic";
    pub const ORIGIN_PARTITION: &str = "hookrelay-origin-partition";
    pub const ORIGIN_OFFSET: &str = "hookrelay-origin-offset";
    pub const LAST_STATUS: &str = "hookrelay-last-status";
    pub const LAST_ERROR: &str = "hookrelay-last-error";
    pub const REASON: &str = "hookrelay-reason";
    /// Not in SPEC's list: the bounded endpoint label, so the failure handler
    /// and `replay --endpoint` need not re-decode the value.
    pub const ENDPOINT: &str = "hookrelay-endpoint";
    /// Not in SPEC's list: timestamp of the original event record (ms), for
    /// the end-to-end latency metric across hops.
    pub const EVENT_MS: &str = "hookrelay-event-ms";
    /// Not in SPEC's list: set by `replay` to `<topic>/<partition>/<offset>` of the dead record.
    pub const REPLAYED_FROM: &str = "hookrelay-replayed-from";
    /// Not in SPEC's list: set by `replay` (with `replay.key`), the seal over
    /// [`super::SEALED`] and the value.
    pub const REPLAY_SIGNATURE: &str = "hookrelay-replay-signature";
    /// Every header the relay owns starts with this.
    pub const PREFIX: &str = "hookrelay-";
}

/// The headers `replay` writes and seals, in the order they are sealed.
pub const SEALED: [&str; 6] = [
    header::ORIGIN_TOPIC,
    header::ORIGIN_PARTITION,
    header::ORIGIN_OFFSET,
    header::DEADLINE_MS,
    header::EVENT_MS,
    header::REPLAYED_FROM,
];

/// The longest `hookrelay-last-error` written (SPEC: at most 1 KiB).
const MAX_ERROR_BYTES: usize = 1024;

/// Where the relay found a record: its own coordinates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coordinates {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

impl Coordinates {
    /// Where `record` was read.
    pub fn of(record: &impl rdkafka::message::Message) -> Coordinates {
        Coordinates { topic: record.topic().to_string(), partition: record.partition(), offset: record.offset() }
    }

    /// The default event id, `<topic>-<partition>-<offset>` of the origin record.
    pub fn default_id(&self) -> String {
        format!("{}-{}-{}", self.topic, self.partition, self.offset)
    }
}

/// The relay's state of a record between hops, carried in its headers.
/// On an event topic (first sight) every field is at its start value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    /// Attempts made so far.
    pub attempts: u32,
    pub first_attempt_ms: Option<i64>,
    pub due_ms: Option<i64>,
    pub deadline_ms: Option<i64>,
    /// The event record this one descends from.
    pub origin: Coordinates,
    /// Timestamp of the original event record, when known.
    pub event_ms: Option<i64>,
    /// The previous attempt's status and error, carried over a deferral.
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
}

impl Hop {
    /// Reads the hop state. `here` is where the record was read, used as the
    /// origin when the record has no origin headers (an event's first hop).
    /// `timestamp_ms` is the record's own timestamp.
    pub fn read(headers: &RecordHeaders, here: Coordinates, timestamp_ms: Option<i64>) -> Hop {
        let get = |name: &str| headers.last(name).map(str::trim);
        let num = |name: &str| get(name).and_then(|v| v.parse::<i64>().ok());
        let origin = match (get(header::ORIGIN_TOPIC), num(header::ORIGIN_PARTITION), num(header::ORIGIN_OFFSET)) {
            (Some(topic), Some(partition), Some(offset)) if !topic.is_empty() => {
                Coordinates { topic: topic.to_string(), partition: partition as i32, offset }
            }
            _ => here,
        };
        Hop {
            attempts: num(header::ATTEMPT).map_or(0, |n| n.clamp(0, u32::MAX as i64) as u32),
            first_attempt_ms: num(header::FIRST_ATTEMPT_MS),
            due_ms: num(header::DUE_MS),
            deadline_ms: num(header::DEADLINE_MS),
            event_ms: num(header::EVENT_MS).or(timestamp_ms),
            last_status: num(header::LAST_STATUS).and_then(|s| u16::try_from(s).ok()),
            last_error: get(header::LAST_ERROR).map(String::from),
            origin,
        }
    }
}

/// Where a record is being written, and what only that place needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// A retry tier; the record is not attempted again before `due_ms`.
    Tier { due_ms: i64 },
    /// The dead topic, for this reason.
    Dead { reason: DeadReason },
}

/// The relay headers of a record about to be written to a tier or the dead topic.
#[derive(Debug, Clone)]
pub struct RelayHeaders<'a> {
    pub hop: &'a Hop,
    pub destination: Destination,
    pub last_status: Option<u16>,
    pub last_error: Option<&'a str>,
    /// The bounded endpoint label (`invalid` for a record that names none).
    pub endpoint: &'a str,
}

impl RelayHeaders<'_> {
    /// The original non-relay headers, then the relay's (overwritten, never appended).
    pub fn write(&self, original: &RecordHeaders) -> OwnedHeaders {
        let hop = self.hop;
        let mut out = Writer(foreign(original, 12));
        out.put(header::ATTEMPT, hop.attempts);
        out.put_some(header::FIRST_ATTEMPT_MS, hop.first_attempt_ms);
        if let Destination::Tier { due_ms } = self.destination {
            out.put(header::DUE_MS, due_ms);
        }
        out.put_some(header::DEADLINE_MS, hop.deadline_ms);
        out.put_origin(&hop.origin);
        out.put_some(header::LAST_STATUS, self.last_status);
        out.put_some(header::LAST_ERROR, self.last_error.map(|e| truncate(e, MAX_ERROR_BYTES)));
        if let Destination::Dead { reason } = self.destination {
            out.put(header::REASON, reason);
        }
        out.put(header::ENDPOINT, self.endpoint);
        out.put_some(header::EVENT_MS, hop.event_ms);
        out.0
    }
}

/// The headers of a replayed record: the original non-relay ones, the origin,
/// a fresh deadline, no attempt count, and where it was replayed from; with a
/// `key`, the seal over those and `value`, without which the relay ignores them.
pub fn replay_headers(
    original: &RecordHeaders,
    hop: &Hop,
    dead: &Coordinates,
    deadline_ms: i64,
    value: &[u8],
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
    let mut out = Writer(foreign(original, SEALED.len() + 1));
    for (name, field) in SEALED.iter().zip(&fields).filter(|(_, field)| !field.is_empty()) {
        out.put(name, field);
    }
    if let Some(key) = key {
        let sealed: Vec<(&str, &[u8])> = SEALED.iter().zip(&fields).map(|(n, f)| (*n, f.as_bytes())).collect();
        out.put(header::REPLAY_SIGNATURE, key.seal(&sealed, value));
    }
    out.0
}

/// The headers of an event-topic record the relay may believe: every foreign
/// one, and of its own only those `replay` wrote, when their seal holds under
/// `key`. Also says how many relay headers were ignored (a producer's forgery,
/// or a replay without a key).
pub fn trusted_on_event_topic(
    headers: &RecordHeaders,
    value: &[u8],
    key: Option<&ReplayKey>,
) -> (RecordHeaders, usize) {
    let sealed = key.is_some_and(|key| {
        let fields: Vec<(&str, &[u8])> =
            SEALED.iter().map(|name| (*name, headers.last(name).unwrap_or_default().as_bytes())).collect();
        headers.last(header::REPLAY_SIGNATURE).is_some_and(|seal| key.verify(&fields, value, seal))
    });
    let prefix = header::PREFIX.as_bytes();
    let believed = |name: &[u8]| !name.starts_with(prefix) || (sealed && SEALED.iter().any(|s| s.as_bytes() == name));
    let (kept, ignored) = headers.split(believed);
    // The seal itself is not "ignored": it did its job.
    let seal = header::REPLAY_SIGNATURE.as_bytes();
    let ignored = ignored.iter().filter(|(name, _)| !(sealed && *name == seal)).count();
    (kept, ignored)
}

/// The headers that are not the relay's, kept byte for byte as they came (keys that are not UTF-8 included).
fn foreign(original: &RecordHeaders, room: usize) -> OwnedHeaders {
    let mut out = OwnedHeaders::new_with_capacity(original.len() + room);
    for (key, value) in original.iter().filter(|(k, _)| !k.starts_with(header::PREFIX.as_bytes())) {
        out = headers::add(out, key, value);
    }
    out
}

/// Appends relay headers, each value in its text form.
struct Writer(OwnedHeaders);

impl Writer {
    fn put(&mut self, key: &str, value: impl std::fmt::Display) {
        let value = value.to_string();
        self.0 = std::mem::replace(&mut self.0, OwnedHeaders::new()).insert(Header { key, value: Some(&value) });
    }
    fn put_some(&mut self, key: &str, value: Option<impl std::fmt::Display>) {
        if let Some(value) = value {
            self.put(key, value);
        }
    }
    fn put_origin(&mut self, origin: &Coordinates) {
        self.put(header::ORIGIN_TOPIC, &origin.topic);
        self.put(header::ORIGIN_PARTITION, origin.partition);
        self.put(header::ORIGIN_OFFSET, origin.offset);
    }
}

/// Cuts `text` to at most `max` bytes on a character boundary.
pub fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// A record's headers, read without assuming UTF-8 keys (rdkafka's accessors panic on others).
pub fn headers_of(record: &OwnedMessage) -> RecordHeaders {
    record.headers().map(|headers| RecordHeaders::read(headers.as_borrowed())).unwrap_or_default()
}

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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_state_comes_from_headers_or_starts_fresh() {
        let here = Coordinates { topic: "webhooks.events".into(), partition: 2, offset: 9 };
        let fresh = Hop::read(&RecordHeaders::default(), here.clone(), Some(1000));
        assert_eq!(fresh.attempts, 0);
        assert_eq!(fresh.origin, here);
        assert_eq!(fresh.event_ms, Some(1000));
        let headers = RecordHeaders::from_pairs([
            (header::ATTEMPT, "1"),
            (header::ATTEMPT, "2"),
            (header::ORIGIN_TOPIC, "orders"),
            (header::ORIGIN_PARTITION, "4"),
            (header::ORIGIN_OFFSET, "77"),
            (header::DUE_MS, "5000"),
            (header::DEADLINE_MS, "9000"),
            (header::FIRST_ATTEMPT_MS, "100"),
            (header::EVENT_MS, "50"),
        ]);
        let hop = Hop::read(&headers, here, Some(4000));
        assert_eq!(hop.attempts, 2, "the last value of a repeated header wins");
        assert_eq!(hop.origin.default_id(), "orders-4-77");
        assert_eq!(
            (hop.due_ms, hop.deadline_ms, hop.first_attempt_ms, hop.event_ms),
            (Some(5000), Some(9000), Some(100), Some(50))
        );
    }

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
    fn relay_headers_replace_old_ones_and_keep_the_rest() {
        let hop =
            Hop::read(&RecordHeaders::default(), Coordinates { topic: "t".into(), partition: 1, offset: 2 }, Some(5));
        let mut odd = OwnedHeaders::new();
        odd = headers::add(odd, b"traceparent", Some(b"00-abc"));
        odd = headers::add(odd, b"\xffnot-utf8", Some(b"\x00\xfe"));
        odd = headers::add(odd, header::ATTEMPT.as_bytes(), Some(b"7"));
        odd = headers::add(odd, b"hookrelay-\xff", Some(b"x"));
        odd = headers::add(odd, header::REASON.as_bytes(), Some(b"old"));
        let original = RecordHeaders::read(odd.as_borrowed());
        let long = "e".repeat(3000);
        let relay = RelayHeaders {
            hop: &hop,
            destination: Destination::Tier { due_ms: 99 },
            last_status: Some(503),
            last_error: Some(&long),
            endpoint: "billing",
        };
        let written = relay.write(&original);
        let raw: Vec<_> = RecordHeaders::read(written.as_borrowed())
            .iter()
            .map(|(k, v)| (k.to_vec(), v.map(<[u8]>::to_vec)))
            .collect();
        assert_eq!(
            raw[..2],
            [
                (b"traceparent".to_vec(), Some(b"00-abc".to_vec())),
                (b"\xffnot-utf8".to_vec(), Some(b"\x00\xfe".to_vec()))
            ],
            "foreign headers first, byte for byte; old relay headers dropped"
        );
        assert!(
            !raw.iter().any(|(k, _)| k == b"hookrelay-\xff"),
            "an odd key in the relay's namespace is the relay's: dropped"
        );
        let tier = pairs(&written);
        let get = |k: &str| values(&tier, k);
        assert_eq!(get("traceparent"), vec!["00-abc"]);
        assert_eq!(get(header::ATTEMPT), vec!["0"]);
        assert!(get(header::REASON).is_empty(), "a tier record has no reason");
        assert_eq!(get(header::DUE_MS), vec!["99"]);
        assert_eq!(get(header::LAST_STATUS), vec!["503"]);
        assert_eq!(get(header::LAST_ERROR)[0].len(), 1024);
        assert_eq!(get(header::ORIGIN_TOPIC), vec!["t"]);
        assert_eq!(get(header::ENDPOINT), vec!["billing"]);
        assert_eq!(get(header::EVENT_MS), vec!["5"]);

        let dead = RelayHeaders { destination: Destination::Dead { reason: DeadReason::Expired }, ..relay };
        let dead = pairs(&dead.write(&original));
        assert_eq!(values(&dead, header::REASON), vec!["expired"]);
        assert!(values(&dead, header::DUE_MS).is_empty(), "a dead record has no due time");
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

        let replayed = pairs(&replay_headers(&dead.headers, &dead.hop, &dead.here, 50_000, value, None));
        let get = |k: &str| values(&replayed, k);
        assert_eq!(get("x-trace"), vec!["1"], "foreign headers are kept");
        assert!(get(header::ATTEMPT).is_empty() && get(header::REASON).is_empty(), "the count starts again");
        assert_eq!(get(header::DEADLINE_MS), vec!["50000"]);
        assert_eq!(get(header::ORIGIN_OFFSET), vec!["41"]);
        assert_eq!(get(header::REPLAYED_FROM), vec!["webhooks.dead/0/7"]);
        assert_eq!(get(header::EVENT_MS), vec!["1000"]);
        assert!(get(header::REPLAY_SIGNATURE).is_empty(), "no key, no seal");
    }

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
        let replayed = owned(&replay_headers(&original, &hop, &dead, 50_000, value, Some(&key)));
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
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("abc", 10), "abc");
    }
}
