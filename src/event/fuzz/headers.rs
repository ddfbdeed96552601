//! Record headers as producers and other clients may write them (keys and
//! values of any bytes, repeated, empty, huge, null) through the byte-keyed
//! reader and writer ([`crate::event::headers`]), the hop state, the relay headers on
//! tier and dead records, the replay seal, the dead-letter reader and the
//! trace context: nothing panics, foreign headers are kept byte for byte, the
//! relay's own are overwritten (never appended), and what is written reads back.

use proptest::prelude::*;
use proptest::sample::select;
use rdkafka::message::OwnedHeaders;

use super::{config, nasty_bytes, nasty_text};
use crate::event::dead_letter::DeadLetter;
use crate::event::headers::{self, RecordHeaders};
use crate::event::hop::{header, truncate, Coordinates, Destination, Hop, RelayHeaders};
use crate::event::seal::ReplayKey;
use crate::event::trace_context::{valid_traceparent, TraceContext};
use crate::event::trust::{replay_headers, trusted_on_event_topic, SEALED};
use crate::route::outcome::DeadReason;

type Pairs = Vec<(Vec<u8>, Option<Vec<u8>>)>;

const RELAY: &[&str] = &[
    header::ATTEMPT,
    header::FIRST_ATTEMPT_MS,
    header::DUE_MS,
    header::DEADLINE_MS,
    header::ORIGIN_TOPIC,
    header::ORIGIN_PARTITION,
    header::ORIGIN_OFFSET,
    header::LAST_STATUS,
    header::LAST_ERROR,
    header::REASON,
    header::ENDPOINT,
    header::EVENT_MS,
    header::REPLAYED_FROM,
    header::REPLAY_SIGNATURE,
];

fn key() -> impl Strategy<Value = Vec<u8>> {
    let relay = select(RELAY).prop_map(|k| k.as_bytes().to_vec());
    let named = select(vec!["traceparent", "TraceParent", "tracestate", "content-type", "hookrelay-", "x"]);
    prop_oneof![
        4 => nasty_bytes(),
        3 => relay,
        1 => named.prop_map(|k| k.as_bytes().to_vec()),
        1 => nasty_bytes().prop_map(|tail| [header::PREFIX.as_bytes(), &tail].concat()),
    ]
}

fn value() -> impl Strategy<Value = Option<Vec<u8>>> {
    let numeric = prop_oneof![
        select(vec!["0", "1", " 12 ", "-1", "99999999999999999999", "1e3", "", "+5", "0x10", "\t7\n", "2147483648"])
            .prop_map(String::from),
        any::<i64>().prop_map(|n| n.to_string()),
        select(DeadReason::ALL.to_vec()).prop_map(|r| r.as_str().to_string()),
    ];
    prop_oneof![1 => Just(None), 4 => nasty_bytes().prop_map(Some), 2 => numeric.prop_map(|n| Some(n.into_bytes()))]
}

fn pairs() -> impl Strategy<Value = Pairs> {
    prop::collection::vec((key(), value()), 0..12)
}

/// The headers as a client writes them (any key bytes), then as the relay reads them.
fn write(pairs: &Pairs) -> OwnedHeaders {
    pairs.iter().fold(OwnedHeaders::new(), |h, (k, v)| headers::add(h, k, v.as_deref()))
}

fn read(headers: &OwnedHeaders) -> RecordHeaders {
    RecordHeaders::read(headers.as_borrowed())
}

fn raw(headers: &RecordHeaders) -> Pairs {
    headers.iter().map(|(k, v)| (k.to_vec(), v.map(<[u8]>::to_vec))).collect()
}

/// librdkafka's header names are C strings: a key ends at its first NUL byte.
fn cut(key: &[u8]) -> Vec<u8> {
    key.split(|b| *b == 0).next().unwrap_or_default().to_vec()
}

fn is_relay(key: &[u8]) -> bool {
    key.starts_with(header::PREFIX.as_bytes())
}

fn topic() -> impl Strategy<Value = String> {
    // Kafka's legal topic names.
    "[a-zA-Z0-9._-]{1,249}"
}

fn coordinates() -> impl Strategy<Value = Coordinates> {
    (topic(), any::<i32>(), any::<i64>()).prop_map(|(topic, partition, offset)| Coordinates {
        topic,
        partition,
        offset,
    })
}

fn hop() -> impl Strategy<Value = Hop> {
    use prop::option::of;
    (any::<u32>(), of(any::<i64>()), of(any::<i64>()), coordinates(), of(any::<i64>())).prop_map(
        |(attempts, first_attempt_ms, deadline_ms, origin, event_ms)| Hop {
            attempts,
            first_attempt_ms,
            due_ms: None,
            deadline_ms,
            origin,
            event_ms,
            last_status: None,
            last_error: None,
        },
    )
}

fn destination() -> impl Strategy<Value = Destination> {
    prop_oneof![
        any::<i64>().prop_map(|due_ms| Destination::Tier { due_ms }),
        select(DeadReason::ALL.to_vec()).prop_map(|reason| Destination::Dead { reason }),
    ]
}

/// What the relay itself would write: the hop, where to, the last attempt, the endpoint label.
#[derive(Debug, Clone)]
struct Written {
    hop: Hop,
    destination: Destination,
    last_status: Option<u16>,
    last_error: Option<String>,
    endpoint: String,
}

impl Written {
    fn relay(&self) -> RelayHeaders<'_> {
        RelayHeaders {
            hop: &self.hop,
            destination: self.destination,
            last_status: self.last_status,
            last_error: self.last_error.as_deref(),
            endpoint: &self.endpoint,
        }
    }
}

fn written() -> impl Strategy<Value = Written> {
    (hop(), destination(), any::<Option<u16>>(), prop::option::of(nasty_text()), any::<String>()).prop_map(
        |(hop, destination, last_status, last_error, endpoint)| Written {
            hop,
            destination,
            last_status,
            last_error,
            endpoint,
        },
    )
}

/// Foreign headers first, byte for byte and in order; then the relay's, each once.
fn check_layout(original: &RecordHeaders, out: &RecordHeaders) -> Result<usize, TestCaseError> {
    let foreign: Pairs = raw(original).into_iter().filter(|(k, _)| !is_relay(k)).collect();
    let out = raw(out);
    prop_assert_eq!(&out[..foreign.len().min(out.len())], &foreign[..], "foreign headers kept as they came");
    let mut relay: Vec<&[u8]> = out[foreign.len()..].iter().map(|(k, _)| k.as_slice()).collect();
    prop_assert!(relay.iter().all(|k| is_relay(k)), "only relay headers after the foreign ones");
    let count = relay.len();
    relay.sort_unstable();
    relay.dedup();
    prop_assert_eq!(relay.len(), count, "a relay header twice");
    Ok(count)
}

proptest! {
    #![proptest_config(config(500))]

    #[test]
    fn fuzz_headers_any_bytes_read_back_as_written(pairs in pairs()) {
        let read = read(&write(&pairs));
        let expected: Pairs = pairs.iter().map(|(k, v)| (cut(k), v.clone())).collect();
        prop_assert_eq!(raw(&read), expected.clone());
        for (name, _) in &expected {
            let Ok(name) = std::str::from_utf8(name) else { continue };
            let last = expected.iter().rev().find(|(k, _)| k == name.as_bytes()).unwrap();
            let text = std::str::from_utf8(last.1.as_deref().unwrap_or_default()).ok();
            prop_assert_eq!(read.last(name), text, "the last value of {:?}, if UTF-8", name);
        }
        let (relay, foreign) = read.split(is_relay);
        prop_assert_eq!(relay.len() + foreign.len(), read.len());
        prop_assert!(relay.iter().all(|(k, _)| is_relay(k)) && foreign.iter().all(|(k, _)| !is_relay(k)));
    }

    #[test]
    fn fuzz_hop_read_never_panics(pairs in pairs(), here in coordinates(), timestamp in any::<Option<i64>>()) {
        let headers = read(&write(&pairs));
        let hop = Hop::read(&headers, here.clone(), timestamp);
        let num = |name: &str| headers.last(name).and_then(|v| v.trim().parse::<i64>().ok());
        let topic = headers.last(header::ORIGIN_TOPIC).map(str::trim).filter(|t| !t.is_empty());
        if topic.is_none() || num(header::ORIGIN_PARTITION).is_none() || num(header::ORIGIN_OFFSET).is_none() {
            prop_assert_eq!(&hop.origin, &here, "no complete origin: the record's own place");
        }
        prop_assert_eq!(hop.attempts as i64, num(header::ATTEMPT).unwrap_or(0).clamp(0, u32::MAX as i64));
        prop_assert_eq!(hop.event_ms, num(header::EVENT_MS).or(timestamp));
        let _ = hop.origin.default_id();
    }

    #[test]
    fn fuzz_relay_headers_overwrite_and_read_back(original in pairs(), w in written(), here in coordinates()) {
        let original = read(&write(&original));
        let out = read(&w.relay().write(&original));
        check_layout(&original, &out)?;
        let hop = Hop::read(&out, here.clone(), None);
        let expected_due = match w.destination {
            Destination::Tier { due_ms } => Some(due_ms),
            Destination::Dead { .. } => None,
        };
        prop_assert_eq!(
            (hop.attempts, hop.first_attempt_ms, hop.due_ms, hop.deadline_ms, &hop.origin, hop.event_ms),
            (w.hop.attempts, w.hop.first_attempt_ms, expected_due, w.hop.deadline_ms, &w.hop.origin, w.hop.event_ms)
        );
        prop_assert_eq!(hop.last_status, w.last_status);
        let error = w.last_error.as_deref().map(|e| truncate(e, 1024).trim());
        prop_assert_eq!(hop.last_error.as_deref(), error);
        prop_assert_eq!(out.last(header::ENDPOINT), Some(w.endpoint.as_str()));
        let reason = match w.destination {
            Destination::Dead { reason } => Some(reason.as_str()),
            Destination::Tier { .. } => None,
        };
        prop_assert_eq!(out.last(header::REASON), reason);
        // The next hop writes over the same record: the same headers, none appended.
        let again = Written { hop: Hop { due_ms: None, last_status: None, last_error: None, ..hop }, ..w.clone() };
        prop_assert_eq!(raw(&read(&again.relay().write(&out))), raw(&out));
    }

    #[test]
    fn fuzz_event_topic_headers_are_not_believed(pairs in pairs(), value in nasty_bytes(), key in any::<bool>()) {
        let headers = read(&write(&pairs));
        let key = key.then(|| ReplayKey::new("0123456789abcdef-replay"));
        let (kept, ignored) = trusted_on_event_topic(&headers, &value, key.as_ref());
        let foreign: Pairs = raw(&headers).into_iter().filter(|(k, _)| !is_relay(k)).collect();
        prop_assert_eq!(raw(&kept), foreign);
        prop_assert_eq!(ignored, headers.len() - kept.len());
    }

    #[test]
    fn fuzz_a_replay_seal_holds_for_its_headers_only(
        original in pairs(),
        hop in hop(),
        dead in coordinates(),
        deadline in any::<i64>(),
        value in nasty_bytes(),
        key in "[ -~]{16,40}",
        here in coordinates(),
        timestamp in any::<Option<i64>>(),
        forged in (select(SEALED.to_vec()), nasty_bytes()),
    ) {
        let key = ReplayKey::new(&key);
        let original = read(&write(&original));
        let replayed = read(&replay_headers(&original, &hop, &dead, deadline, &value, None, Some(&key)));
        let relay = check_layout(&original, &replayed)?;
        prop_assert_eq!(replayed.last(header::ATTEMPT), None, "the count starts again");
        let (kept, ignored) = trusted_on_event_topic(&replayed, &value, Some(&key));
        prop_assert_eq!(ignored, 0);
        let read_back = Hop::read(&kept, here.clone(), timestamp);
        prop_assert_eq!(&read_back.origin, &hop.origin);
        prop_assert_eq!(read_back.deadline_ms, Some(deadline));
        prop_assert_eq!(read_back.event_ms, hop.event_ms.or(timestamp));
        prop_assert_eq!(read_back.attempts, 0);

        // Another value: nothing of the relay's is believed.
        let other = [&value[..], b"!"].concat();
        let (kept, ignored) = trusted_on_event_topic(&replayed, &other, Some(&key));
        prop_assert_eq!(ignored, relay);
        prop_assert_eq!(&Hop::read(&kept, here.clone(), None).origin, &here);

        // A sealed header given again with another value: the seal no longer holds.
        let (name, forged) = forged;
        // (The seal covers each sealed header's text, "" when absent or not UTF-8.)
        let text = |v: Option<&str>| v.unwrap_or_default().to_string();
        let same = text(replayed.last(name)) == text(std::str::from_utf8(&forged).ok());
        let mut with_forged = raw(&replayed);
        with_forged.push((name.as_bytes().to_vec(), Some(forged)));
        let with_forged = read(&write(&with_forged));
        let (_, ignored) = trusted_on_event_topic(&with_forged, &value, Some(&key));
        prop_assert!(same || ignored == relay + 1, "{} forged: {} ignored of {}", name, ignored, relay + 1);
    }

    #[test]
    fn fuzz_dead_letters_read_any_record(
        pairs in pairs(),
        payload in prop::option::of(prop_oneof![nasty_bytes(), "\\{\"id\":\"[ -~]{0,20}\",\"payload\":1\\}".prop_map(String::into_bytes)]),
        at in coordinates(),
        timestamp in any::<i64>(),
        w in prop::option::of(written()),
    ) {
        // Either whatever a producer wrote to the dead topic, or what the relay wrote there.
        let headers = match &w {
            Some(w) => w.relay().write(&read(&write(&pairs))),
            None => write(&pairs),
        };
        let record = rdkafka::message::OwnedMessage::new(
            payload.clone(),
            None,
            at.topic.clone(),
            rdkafka::Timestamp::CreateTime(timestamp),
            at.partition,
            at.offset,
            Some(headers),
        );
        let dead = DeadLetter::read(&record);
        let id = crate::event::event_id(payload.as_deref());
        prop_assert_eq!(&dead.id, &id.unwrap_or_else(|| dead.hop.origin.default_id()));
        prop_assert_eq!(dead.endpoint.as_str(), dead.headers.last(header::ENDPOINT).unwrap_or("unknown"));
        prop_assert_eq!(&dead.here, &at);
        if let Some(w) = &w {
            if let Destination::Dead { reason } = w.destination {
                prop_assert_eq!(dead.reason, Some(reason));
            }
            prop_assert_eq!(&dead.endpoint, &w.endpoint);
            prop_assert_eq!(dead.last_status, w.last_status);
            prop_assert_eq!(&dead.hop.origin, &w.hop.origin);
        }
    }

    #[test]
    fn fuzz_trace_context_from_any_headers(
        pairs in pairs(),
        parent in prop::option::of((
            "[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}(-[ -~]{0,10})?",
            select(vec!["traceparent", "TRACEPARENT"]),
            prop::option::of((any::<prop::sample::Index>(), any::<u8>())),
        )),
        state in prop::option::of(nasty_bytes()),
    ) {
        let mut pairs = pairs;
        if let Some((mut parent, name, flip)) = parent.map(|(p, n, f)| (p.into_bytes(), n, f)) {
            if let Some((at, byte)) = flip {
                let i = at.index(parent.len());
                parent[i] = byte;
            }
            pairs.push((name.as_bytes().to_vec(), Some(parent)));
        }
        if let Some(state) = state {
            pairs.push((b"tracestate".to_vec(), Some(state)));
        }
        if let Some(context) = TraceContext::of(&read(&write(&pairs))) {
            prop_assert!(valid_traceparent(context.traceparent.as_bytes()));
            let id = context.trace_id();
            prop_assert!(id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()), "{id:?}");
            let mut headers = Vec::new();
            context.apply(&mut headers);
            prop_assert!(!headers.is_empty());
        }
    }
}
