//! Events as a producer might write them, for the decoder's properties:
//! arbitrary JSON, valid events, near-valid ones (mutated bytes, wrong types,
//! bad URLs, ids and headers), and valid ones with exactly one field broken.

use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{Map, Value};

use super::nasty_text;
use crate::endpoint::guard::{parse_target_url, RESERVED_HEADERS};

/// The endpoint table's `max_payload_bytes` (see `decode::endpoints`).
pub const MAX_PAYLOAD: usize = 65_536;
/// Put in URL query values and header values: an error text must never show it.
pub const SECRET: &str = "s3cr3t-MARKER";

/// JSON leaves without huge strings (those come per field), nested a few levels.
pub fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f).map(Value::Number)),
        "[\\x00-\\x7f]{0,20}".prop_map(Value::String),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 40, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..6).prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

const FIELDS: &[&str] = &["url", "endpoint", "payload", "id", "headers", "timeout_ms", "retry_until", "max_attempts"];

fn key() -> impl Strategy<Value = String> {
    prop_oneof![select(FIELDS).prop_map(String::from), any::<String>()]
}

fn string(s: impl Strategy<Value = String>) -> impl Strategy<Value = Value> {
    s.prop_map(Value::String)
}

fn valid_url() -> BoxedStrategy<Value> {
    let generated = (
        select(vec!["http", "https", "HTTPS"]),
        "[a-z0-9]([a-z0-9-]{0,15}[a-z0-9])?(\\.[a-z]{2,5}){0,2}",
        prop::option::of(1u16..),
        "[a-zA-Z0-9/._~%-]{0,30}",
    )
        .prop_map(|(scheme, host, port, path)| {
            let port = port.map(|p| format!(":{p}")).unwrap_or_default();
            format!("{scheme}://{host}{port}/{path}?token={SECRET}&a=1")
        });
    let fixed = select(vec![
        "http://127.0.0.1:8080/x",
        "https://[::1]/hooks",
        "https://xn--caf-dma.example/",
        "https://café.example/ünïcode path",
        "http://a.example/?k=v#frag",
    ])
    .prop_map(String::from);
    // A generated host can still be refused (an all-digit label is an IPv4 part): only valid ones here.
    prop_oneof![generated, fixed].prop_filter("valid", |u| parse_target_url(u).is_ok()).prop_map(Value::String).boxed()
}

fn bad_url() -> BoxedStrategy<Value> {
    prop_oneof![
        select(vec![
            "ftp://a.example/x",
            "https://user:pw@a.example/",
            "https://user@a.example/",
            "http://",
            "https://a b/",
            "file:///etc/passwd",
            "http://[::1",
            "javascript:alert(1)",
            "//a.example/x",
            "https:",
            "",
            "mailto:a@b.example",
            "https://a.example:99999/",
        ])
        .prop_map(|u| Value::String(format!("{u}?token={SECRET}"))),
        string(nasty_text()),
    ]
    .boxed()
}

/// An id of SPEC's alphabet with one character it does not allow, anywhere in it.
fn bad_id() -> BoxedStrategy<Value> {
    let outside = prop_oneof![0u8..0x21, Just(0x7Fu8)].prop_map(char::from);
    let outside = prop_oneof![
        outside,
        Just('\t'),
        Just(' '),
        Just('é'),
        Just('\u{85}'),
        any::<char>().prop_filter("not ASCII", |c| !c.is_ascii())
    ];
    prop_oneof![
        ("[!-~]{0,30}", outside, any::<prop::sample::Index>()).prop_map(|(id, c, at): (String, char, _)| {
            let at = at.index(id.len() + 1);
            Value::String(format!("{}{c}{}", &id[..at], &id[at..]))
        }),
        Just(Value::String(String::new())),
        "[!-~]{257,600}".prop_map(Value::String),
    ]
    .boxed()
}

fn header_name() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9!#$%&'*+.^_`|~-]{1,30}"
}

fn valid_headers() -> BoxedStrategy<Value> {
    let value = prop_oneof!["[ -~]{0,40}", Just(format!("Bearer {SECRET}"))];
    prop::collection::vec(
        (
            header_name().prop_filter("not reserved", |n| !RESERVED_HEADERS.contains(&n.to_ascii_lowercase().as_str())),
            value,
        ),
        0..5,
    )
    .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k, Value::String(v))).collect()))
    .boxed()
}

/// A header map with exactly one header the decoder must refuse.
fn bad_headers() -> BoxedStrategy<Value> {
    let bad_name = prop_oneof![
        select(RESERVED_HEADERS).prop_map(String::from),
        Just("Webhook-Signature".to_string()),
        Just(String::new()),
        "[a-z]{0,5}[ :\"(),/;<=>?@\\[\\]{}\\x00-\\x1f\\x7f][a-z]{0,5}",
        "[a-z]{0,5}[é😀\u{85}][a-z]{0,5}",
    ];
    // Control characters but tab; not non-ASCII, which HTTP allows (obs-text) and the decoder accepts.
    let bad_value = "[ -~é]{0,10}[\\x00-\\x08\\x0a-\\x1f\\x7f][ -~é]{0,10}";
    prop_oneof![
        bad_name.prop_map(|n| Value::Object([(n, Value::String(SECRET.into()))].into_iter().collect())),
        (header_name(), bad_value).prop_map(|(n, v)| {
            Value::Object([(format!("x-{n}"), Value::String(format!("{SECRET}{v}")))].into_iter().collect())
        }),
    ]
    .boxed()
}

fn rfc3339() -> impl Strategy<Value = String> {
    (1970u32..2200, 1u32..13, 1u32..29, 0u32..24, 0u32..60, 0u32..60, select(vec!["Z", "+01:00", "-09:30"]))
        .prop_map(|(y, mo, d, h, mi, s, z)| format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}{z}"))
}

/// Absent, valid or broken, for each field: events that are nearly right.
pub fn near_valid() -> impl Strategy<Value = Vec<u8>> {
    fn field(valid: BoxedStrategy<Value>, broken: BoxedStrategy<Value>) -> BoxedStrategy<Option<Value>> {
        prop_oneof![1 => Just(None), 4 => valid.prop_map(Some), 2 => broken.prop_map(Some)].boxed()
    }
    let wrong = || json().boxed();
    let fields = (
        field(valid_url(), prop_oneof![bad_url(), wrong()].boxed()),
        field(Just(Value::from("billing")).boxed(), prop_oneof![string(nasty_text()), wrong()].boxed()),
        field(json().boxed(), (60_000usize..70_000).prop_map(|n| Value::String("p".repeat(n))).boxed()),
        field("[!-~]{1,256}".prop_map(Value::String).boxed(), prop_oneof![bad_id(), wrong()].boxed()),
        field(valid_headers(), prop_oneof![bad_headers(), wrong()].boxed()),
        field(
            (1u64..=300_000).prop_map(Value::from).boxed(),
            prop_oneof![
                Just(Value::from(0)),
                (300_001u64..).prop_map(Value::from),
                any::<i64>().prop_map(Value::from),
                Just(Value::from(1.5)),
                wrong()
            ]
            .boxed(),
        ),
        field(rfc3339().prop_map(Value::String).boxed(), prop_oneof![string(nasty_text()), wrong()].boxed()),
        field(
            any::<u32>().prop_map(Value::from).boxed(),
            prop_oneof![(u32::MAX as u64 + 1..).prop_map(Value::from), (i64::MIN..0).prop_map(Value::from), wrong()]
                .boxed(),
        ),
    );
    let extra = prop::option::of((any::<String>(), json()));
    (fields, extra, mutation()).prop_map(
        |((url, endpoint, payload, id, headers, timeout, retry, max), extra, mutate)| {
            let mut object = Map::new();
            for (name, value) in FIELDS.iter().zip([url, endpoint, payload, id, headers, timeout, retry, max]) {
                if let Some(value) = value {
                    object.insert(name.to_string(), value);
                }
            }
            if let Some((name, value)) = extra {
                object.entry(name).or_insert(value);
            }
            mutate.apply(serde_json::to_vec(&Value::Object(object)).unwrap())
        },
    )
}

/// What is done to an event's text: mostly nothing; else cut short, a byte
/// changed or inserted, or a field given twice.
#[derive(Debug, Clone)]
enum Mutation {
    None,
    Cut(prop::sample::Index),
    Set(prop::sample::Index, u8),
    Insert(prop::sample::Index, u8),
    Twice(&'static str),
}

impl Mutation {
    fn apply(&self, mut v: Vec<u8>) -> Vec<u8> {
        match self {
            Mutation::None => {}
            Mutation::Cut(at) => v.truncate(at.index(v.len() + 1)),
            Mutation::Set(at, b) => {
                let i = at.index(v.len());
                v[i] = *b;
            }
            Mutation::Insert(at, b) => v.insert(at.index(v.len() + 1), *b),
            Mutation::Twice(field) => {
                let mut out = format!(r#"{{"{field}":"dup","#).into_bytes();
                out.extend_from_slice(v.get(1..).unwrap_or_default());
                v = out;
            }
        }
        v
    }
}

fn mutation() -> impl Strategy<Value = Mutation> {
    use prop::sample::Index;
    prop_oneof![
        6 => Just(Mutation::None),
        1 => any::<Index>().prop_map(Mutation::Cut),
        1 => (any::<Index>(), any::<u8>()).prop_map(|(at, b)| Mutation::Set(at, b)),
        1 => (any::<Index>(), any::<u8>()).prop_map(|(at, b)| Mutation::Insert(at, b)),
        1 => select(FIELDS).prop_map(Mutation::Twice),
    ]
}

/// A valid event: a target, a payload and any valid choice of the other fields.
#[derive(Debug, Clone)]
pub struct Valid {
    pub object: Map<String, Value>,
}

pub fn valid() -> impl Strategy<Value = Valid> {
    (
        prop_oneof![valid_url().prop_map(|u| ("url", u)), Just(("endpoint", Value::from("billing")))],
        json(),
        prop::option::of("[!-~]{1,256}"),
        prop::option::of(valid_headers()),
        prop::option::of(1u64..=300_000),
        prop::option::of(rfc3339()),
        prop::option::of(any::<u32>()),
        prop::option::of((any::<String>().prop_filter("unknown", |k| !FIELDS.contains(&k.as_str())), json())),
    )
        .prop_map(|((target, url), payload, id, headers, timeout, retry, max, extra)| {
            let mut object = Map::new();
            object.insert(target.into(), url);
            object.insert("payload".into(), payload);
            let fields = [
                ("id", id.map(Value::from)),
                ("headers", headers),
                ("timeout_ms", timeout.map(Value::from)),
                ("retry_until", retry.map(Value::from)),
                ("max_attempts", max.map(Value::from)),
            ];
            for (name, value) in fields {
                if let Some(value) = value {
                    object.insert(name.into(), value);
                }
            }
            if let Some((name, value)) = extra {
                object.insert(name, value);
            }
            Valid { object }
        })
}

/// One way to break a valid event, and the error it must give.
#[derive(Debug, Clone, Copy)]
pub enum Break {
    Id,
    Url,
    BothTargets,
    NoTarget,
    UnknownEndpoint,
    NoPayload,
    HugePayload,
    Header,
    Timeout,
    RetryUntil,
}

impl Break {
    pub const ALL: [Break; 10] = {
        use Break::*;
        [Id, Url, BothTargets, NoTarget, UnknownEndpoint, NoPayload, HugePayload, Header, Timeout, RetryUntil]
    };
}

pub fn broken() -> impl Strategy<Value = (Valid, Break, Value)> {
    use Break::*;
    let how = select(Break::ALL.to_vec());
    let bad_timeout = prop_oneof![Just(0u64), 300_001u64..].prop_map(Value::from).boxed();
    let bad_time = prop_oneof![nasty_text(), Just("2030-01-01".to_string()), Just("2030-13-01T00:00:00Z".to_string())];
    (valid(), how, bad_id(), bad_url(), bad_headers(), bad_timeout, bad_time, nasty_text())
        .prop_map(|(valid, how, id, url, headers, timeout, time, name)| {
            let value = match how {
                Id => id,
                Url => url,
                Header => headers,
                Timeout => timeout,
                RetryUntil => Value::String(time),
                UnknownEndpoint => Value::String(if name == "billing" { String::new() } else { name }),
                _ => Value::Null,
            };
            (valid, how, value)
        })
        // A nasty text that happens to be a valid time or URL is not a broken field.
        .prop_filter("really broken", |(_, how, value)| match (how, value) {
            (Break::RetryUntil, Value::String(t)) => crate::app::clock::parse_rfc3339_ms(t).is_err(),
            (Break::Url, Value::String(u)) => parse_target_url(u).is_err(),
            _ => true,
        })
}

pub fn apply(valid: &Valid, how: Break, value: Value) -> Map<String, Value> {
    let mut o = valid.object.clone();
    let target = |o: &mut Map<String, Value>| {
        o.remove("url");
        o.remove("endpoint");
    };
    match how {
        Break::Id => drop(o.insert("id".into(), value)),
        Break::Url => {
            target(&mut o);
            o.insert("url".into(), value);
        }
        Break::BothTargets => {
            o.insert("url".into(), "https://a.example/".into());
            o.insert("endpoint".into(), "billing".into());
        }
        Break::NoTarget => target(&mut o),
        Break::UnknownEndpoint => {
            target(&mut o);
            o.insert("endpoint".into(), value);
        }
        Break::NoPayload => drop(o.remove("payload")),
        Break::HugePayload => drop(o.insert("payload".into(), Value::String("p".repeat(MAX_PAYLOAD)))),
        Break::Header => drop(o.insert("headers".into(), value)),
        Break::Timeout => drop(o.insert("timeout_ms".into(), value)),
        Break::RetryUntil => drop(o.insert("retry_until".into(), value)),
    }
    o
}
