//! The relay's headers on Kafka records: their names, the hop state read from
//! them, and the headers written on tier and dead records. Which of them the
//! relay believes on an event topic, and the ones `replay` writes, are in
//! [`crate::event::trust`]; the dead-letter reader is [`crate::event::dead_letter`].

use rdkafka::message::{Header, Message, OwnedHeaders, OwnedMessage};

use crate::event::headers::{self, RecordHeaders};
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
    /// [`crate::event::trust::SEALED`] and the value.
    pub const REPLAY_SIGNATURE: &str = "hookrelay-replay-signature";
    /// Every header the relay owns starts with this.
    pub const PREFIX: &str = "hookrelay-";
}

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

/// The headers that are not the relay's, kept byte for byte as they came (keys that are not UTF-8 included).
pub(super) fn foreign(original: &RecordHeaders, room: usize) -> OwnedHeaders {
    let mut out = OwnedHeaders::new_with_capacity(original.len() + room);
    for (key, value) in original.iter().filter(|(k, _)| !k.starts_with(header::PREFIX.as_bytes())) {
        out = headers::add(out, key, value);
    }
    out
}

/// Appends relay headers, each value in its text form.
pub(super) struct Writer(pub(super) OwnedHeaders);

impl Writer {
    pub(super) fn put(&mut self, key: &str, value: impl std::fmt::Display) {
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
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("abc", 10), "abc");
    }
}
